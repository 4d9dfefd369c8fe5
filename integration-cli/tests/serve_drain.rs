//! `integration serve` as a process: SIGTERM drains and exits 0; caller authentication is off only
//! when asked.

mod process;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_at_once_serves_the_grace_period_and_exits_0() {
    let upstream = upstream().await;
    let dir = workdir(upstream);
    let (port, admin_port) = (free_port(), free_port());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut gateway = spawn_gateway(dir.path(), "drain", port, admin_port, "3s");
    let caller = caller();
    wait_ready(&caller, admin, &mut gateway).await;
    call(&caller, addr).await.unwrap();

    sigterm(&gateway);
    // Readiness fails at once (the first answer after the signal is handled)...
    let mut not_ready = false;
    for _ in 0..100 {
        if status_of(&caller, admin, "/readyz").await == Some(503) {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_ready, "{}", log_of(dir.path(), "drain"));
    // ...while calls are still served.
    for _ in 0..5 {
        call(&caller, addr).await.unwrap();
    }
    assert_eq!(status_of(&caller, admin, "/healthz").await, Some(200));
    let status = wait_exit(&mut gateway, Duration::from_secs(60))
        .await
        .expect("the gateway exits within its drain bound");
    assert!(
        status.success(),
        "{status}: {}",
        log_of(dir.path(), "drain")
    );
    assert!(log_of(dir.path(), "drain").contains("drained"));
}

#[test]
fn without_a_token_file_the_gateway_refuses_to_start_unless_told_auth_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[integrations.x]\nbase_url = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_integration"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .env_remove("INTEGRATION_CALLER_TOKEN_FILE")
        .env_remove("INTEGRATION_CALLER_AUTH")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--caller-token-file"), "{stderr}");
}
