//! The benchmark harness end to end: the server in its own process, and every scenario's client
//! completing calls against it. Speed is not asserted here (DESIGN.md: benchmarks measure it);
//! `cargo xtask bench --smoke` runs the drivers themselves.

use integration_tests::bench::load::Caller;
use integration_tests::bench::scenario::{
    FacadeNoLayers, FullStack, OurTransport, PeerStack, PoolSettings, RateLimitStore, RawHyper,
    RawHyperConn, RawHyperSpan, Reqwest, full_stack_toml_with_quota,
};
use integration_tests::bench::server::{BODY, ServerProcess};
use std::path::Path;

fn server() -> ServerProcess {
    ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_bench")), 1)
        .expect("the bench server starts")
}

async fn calls_succeed(caller: impl Caller, name: &str) {
    for _ in 0..5 {
        if let Err(error) = caller.call().await {
            panic!("{name}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_server_runs_in_its_own_process_and_answers_the_fixed_body() {
    let server = server();
    assert_ne!(server.id(), std::process::id());
    let url = format!("http://{}/v1/item", server.addr());
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), BODY);
    let missing = reqwest::get(format!("http://{}/elsewhere", server.addr()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_server_process_ends_with_its_handle() {
    let server = server();
    let pid = server.id();
    drop(server);
    // Killed and reaped: nothing is left behind, not even a zombie.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} outlived its handle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn every_peer_scenario_completes_calls() {
    let server = server();
    let pool = PoolSettings::default();
    calls_succeed(RawHyper::new(server.addr(), &pool), "raw-hyper").await;
    calls_succeed(Reqwest::new(server.addr(), &pool).unwrap(), "reqwest").await;
    calls_succeed(PeerStack::new(server.addr(), &pool).unwrap(), "peer-stack").await;
    calls_succeed(RawHyperSpan::new(server.addr(), &pool), "raw-hyper-span").await;
    let conn = RawHyperConn::new(server.addr(), &pool);
    calls_succeed(conn.clone(), "raw-hyper-conn").await;
    // A pool, not a connection a call: five calls one after the other went over one connection.
    assert_eq!(conn.connections_kept(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_breakdown_scenarios_complete_calls() {
    let server = server();
    let pool = PoolSettings::default();
    calls_succeed(
        OurTransport::new(server.addr(), &pool).unwrap(),
        "our-transport",
    )
    .await;
    calls_succeed(
        FacadeNoLayers::new(server.addr(), &pool).unwrap(),
        "facade-no-layers",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_full_stack_scenarios_complete_calls_in_memory_and_in_redis() {
    let server = server();
    let pool = PoolSettings::default();
    let memory = FullStack::new(server.addr(), &pool, RateLimitStore::Memory)
        .await
        .unwrap();
    calls_succeed(memory, "full-stack").await;

    let url = integration_core::testing::redis_url();
    let store = || RateLimitStore::Redis {
        url: url.clone(),
        key_prefix: format!("integration-tests-bench-{:08x}", fastrand::u32(..)),
        command_timeout: integration_config::DEFAULT_REDIS_COMMAND_TIMEOUT,
    };
    let redis = FullStack::new(server.addr(), &pool, store())
        .await
        .unwrap_or_else(|error| panic!("Redis at {url} must be running for this test: {error}"));
    calls_succeed(redis, "full-stack-redis").await;

    // The limiter really goes to Redis, with no silent local fallback: two clients (two replicas)
    // on one prefix share a quota of 3 a minute, so the second client is refused at once.
    let shared = store();
    let toml = full_stack_toml_with_quota(
        server.addr(),
        &pool,
        &shared,
        "rate = 3, per = \"60s\"",
        "0s",
    );
    let first = FullStack::from_toml(&toml, &pool, shared.clone())
        .await
        .unwrap();
    let second = FullStack::from_toml(&toml, &pool, shared).await.unwrap();
    for _ in 0..3 {
        first.call().await.unwrap();
    }
    let refused = second.call().await.unwrap_err();
    let error = refused
        .downcast_ref::<integration_core::Error>()
        .unwrap_or_else(|| panic!("not a facade error: {refused}"));
    assert!(error.is_rate_limited(), "{error}");
}

/// A `REDIS_URL` may carry a password: the error of an unreachable Redis shows the URL with its
/// userinfo redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_unreachable_redis_is_named_without_its_password() {
    let pool = PoolSettings::default();
    let store = RateLimitStore::Redis {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        url: "redis://bench:hunter2@127.0.0.1:1".to_owned(),
        key_prefix: "integration-tests-bench-unreachable".to_owned(),
        command_timeout: integration_config::DEFAULT_REDIS_COMMAND_TIMEOUT,
    };
    let addr = "127.0.0.1:9".parse().unwrap();
    let error = FullStack::new(addr, &pool, store)
        .await
        .expect_err("nothing listens on port 1")
        .to_string();
    assert!(!error.contains("hunter2"), "{error}");
    assert!(
        error.contains("redis://[REDACTED]:[REDACTED]@127.0.0.1:1"),
        "{error}"
    );
}

/// The floor scenario (8) stands for the full stack's call span only while it makes the same span:
/// the same name, target and level, and the same fields with the same values, the status code
/// included. A field the log layer's call span gives a value and the floor does not fails here
/// (a field declared empty and never recorded costs a fmt subscriber nothing).
#[tokio::test(flavor = "current_thread")]
async fn the_floor_scenario_makes_the_span_the_full_stack_makes() {
    use integration_core::testing::capture;
    let server = server();
    let pool = PoolSettings::default();
    let full = FullStack::new(server.addr(), &pool, RateLimitStore::Memory)
        .await
        .unwrap();
    let floor = RawHyperSpan::new(server.addr(), &pool);

    let capturing = capture(tracing::Level::INFO);
    full.call().await.unwrap();
    let ours = capturing.captured().spans();
    drop(capturing);
    let capturing = capture(tracing::Level::INFO);
    floor.call().await.unwrap();
    let theirs = capturing.captured().spans();
    drop(capturing);

    let [ours] = ours.as_slice() else {
        panic!("the full stack made {} spans at info: {ours:?}", ours.len());
    };
    let [theirs] = theirs.as_slice() else {
        panic!("the floor made {} spans at info: {theirs:?}", theirs.len());
    };
    assert_eq!(
        (&theirs.name, &theirs.target, theirs.level),
        (&ours.name, &ours.target, ours.level)
    );
    assert_eq!(theirs.fields, ours.fields);
    assert_eq!(ours.field("http.response.status_code"), Some("200"));
}
