//! Helpers of the process-level tests: the real `integration` binary, a loopback upstream, and an
//! HTTP caller.

#![allow(dead_code, unreachable_pub)] // each test file uses a part of them

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The shared token of these tests' callers.
pub const TOKEN: &str = "process-test-token-31c9";

/// The body the upstream answers.
pub const UPSTREAM_BODY: &str = "{\"ok\":true}";

pub type Caller = HttpClient<HttpConnector, Empty<Bytes>>;

pub fn caller() -> Caller {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// A port free right now on 127.0.0.1 (the system's choice, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback upstream answering every request with [`UPSTREAM_BODY`], for as long as the test runs.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        Bytes::from_static(UPSTREAM_BODY.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A directory with the gateway's configuration (one integration, `echo`, at `upstream`) and the
/// callers' token file.
pub fn workdir(upstream: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[integrations.echo]\nbase_url = \"http://{upstream}/\"\ntimeout = \"10s\"\n\
             rate_limit = {{ quotas = [{{ rate = 100000, per = \"1s\" }}] }}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("caller-token"), format!("{TOKEN}\n")).unwrap();
    dir
}

/// Starts `integration serve` with the configuration of `dir`; its log goes to `dir/<name>.log`.
pub fn spawn_gateway(dir: &Path, name: &str, port: u16, admin_port: u16, grace: &str) -> Child {
    let log = std::fs::File::create(log_path(dir, name)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_integration"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .arg("--caller-token-file")
        .arg(dir.join("caller-token"))
        .args(["--drain-grace", grace, "--drain-timeout", "20s"])
        .env("RUST_LOG", "info,integration_log=warn")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// What a gateway process wrote, for a failure message.
pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(log_path(dir, name)).unwrap_or_default()
}

/// Sends SIGTERM (through `kill(1)`: the workspace forbids the unsafe a direct call would take).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The status of `GET http://addr/path`, or `None` when nothing answered.
pub async fn status_of(caller: &Caller, addr: SocketAddr, path: &str) -> Option<u16> {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), caller.request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

/// Waits (a minute at most: a loaded machine starts slowly) until the admin port says ready.
pub async fn wait_ready(caller: &Caller, admin: SocketAddr, child: &mut Child) {
    for _ in 0..600 {
        if status_of(caller, admin, "/readyz").await == Some(200) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway exited before it was ready: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway at {admin} was not ready within a minute");
}

/// Waits (`bound` at most) for the process to exit, returning its status.
pub async fn wait_exit(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// One call through the gateway: `Ok` only for a 200 with the upstream's body.
pub async fn call(caller: &Caller, addr: SocketAddr) -> Result<(), String> {
    let request = Request::get(format!("http://{addr}/echo/item"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), caller.request(request))
        .await
        .map_err(|_| "no answer in 20 s".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status == 200 && body == UPSTREAM_BODY {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}
