//! The rolling restart on loopback: an open loop of 1,000 requests a second through the gateway
//! while a second gateway process starts on the same port (SO_REUSEPORT) and the first gets
//! SIGTERM. Not one request may fail.
//!
//! `GATEWAY_ROLLING_SECS` sets the length of the run (10 s by default, for CI; the figure
//! is 60 s, run by hand in release: `GATEWAY_ROLLING_SECS=60 cargo test --release -p
//! integration-cli --test serve_rolling_restart -- --nocapture`). `GATEWAY_ROLLING_RATE` sets the
//! rate: 1,000 a second by default in release; 200 in a debug build, where the unoptimised
//! gateway on a shared two-core CI machine cannot keep up with 1,000 and the test would measure
//! the machine, not the drain.
//!
//! The callers hold at most [`MAX_IN_FLIGHT`] requests at once (as a real client's pool does): a
//! request due while they are all taken waits for one, and its wait is part of its time, so the
//! loop stays open; without the cap a stall would open thousands of connections.

mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use process::*;
use tokio::time::{Instant, MissedTickBehavior};

/// Requests in flight at most, over all callers.
const MAX_IN_FLIGHT: usize = 128;

/// The default rate: see the module's docs.
const DEFAULT_RATE: u64 = if cfg!(debug_assertions) { 200 } else { 1_000 };

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let secs = env_or("GATEWAY_ROLLING_SECS", 10).max(4);
    let rate = env_or("GATEWAY_ROLLING_RATE", DEFAULT_RATE).max(1);
    let upstream = upstream().await;
    let dir = workdir(upstream);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (admin_a, admin_b) = (free_port(), free_port());
    let caller = caller();
    let mut first = spawn_gateway(dir.path(), "first", port, admin_a, "2s");
    wait_ready(&caller, ([127, 0, 0, 1], admin_a).into(), &mut first).await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let load = {
        let (ok, failed, first_failure, caller) = (
            ok.clone(),
            failed.clone(),
            first_failure.clone(),
            caller.clone(),
        );
        tokio::spawn(async move {
            // Open loop: one request due every 1/rate s whatever the answers do; late ticks are
            // sent at once (Burst), so a stall does not lower the offered load.
            let total = secs * rate;
            let mut ticks =
                tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut calls = Vec::with_capacity(usize::try_from(total).unwrap());
            for _ in 0..total {
                ticks.tick().await;
                let (ok, failed, first_failure, caller) = (
                    ok.clone(),
                    failed.clone(),
                    first_failure.clone(),
                    caller.clone(),
                );
                let permits = permits.clone();
                calls.push(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.unwrap();
                    match call(&caller, addr).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            first_failure.lock().unwrap().get_or_insert(error);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }));
            }
            for call in calls {
                call.await.unwrap();
            }
            total
        })
    };
    let started = Instant::now();
    // A third of the way in: the second process takes the same port, then the first is told to go.
    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    let mut second = spawn_gateway(dir.path(), "second", port, admin_b, "2s");
    wait_ready(&caller, ([127, 0, 0, 1], admin_b).into(), &mut second).await;
    let before_sigterm = ok.load(Ordering::Relaxed);
    sigterm(&first);
    let exit = wait_exit(&mut first, Duration::from_secs(60))
        .await
        .expect("the first gateway exits within its drain bound");
    let drained_at = started.elapsed();
    let total = load.await.unwrap();
    let finished_at = started.elapsed();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "rolling restart: {total} requests offered at {rate}/s over {secs} s: {ok} ok, {failed} \
         failed, the last answered after {finished_at:?} ({before_sigterm} ok before SIGTERM; the \
         first process exited with {exit} after {drained_at:?})"
    );
    sigterm(&second);
    let second_exit = wait_exit(&mut second, Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}: {}", log_of(dir.path(), "first"));
    assert_eq!(
        failed,
        0,
        "first failure: {:?}\nfirst: {}\nsecond: {}",
        first_failure.lock().unwrap(),
        log_of(dir.path(), "first"),
        log_of(dir.path(), "second")
    );
    assert_eq!(ok, total);
    assert!(second_exit.is_some_and(|s| s.success()));
}
