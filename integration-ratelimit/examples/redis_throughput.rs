//! Measures the Redis store: permits per second on one key with concurrent callers, and Redis round
//! trips per call (from `INFO commandstats`: `EVALSHA` and `SCRIPT LOAD` calls made during the run).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p integration-ratelimit --example redis_throughput [callers] [seconds]
//! ```
//!
//! The quota is set far above what one key can reach, so every call is granted and the figure is the
//! store's own throughput (one atomic script per call), not the quota. The commandstats counters are
//! server-wide: run it on an otherwise idle Redis for exact round-trip figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use integration_ratelimit::{
    Quota, RateLimitKey, RateLimitPolicy, RateLimiter, RedisOptions, RedisStore,
};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

async fn command_calls(connection: &mut ConnectionManager, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let callers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str()).expect("a valid REDIS_URL");
    let connection = ConnectionManager::new(client)
        .await
        .unwrap_or_else(|error| panic!("Redis at {url} is unreachable: {error}"));
    let mut stats = connection.clone();

    let prefix = format!(
        "ratelimit-bench:{}:{}",
        std::process::id(),
        fastrand::u64(..)
    );
    let policy = RateLimitPolicy::new([
        Quota::new(u32::MAX, Duration::from_secs(1), u32::MAX).unwrap(),
        Quota::new(u32::MAX, Duration::from_secs(60), u32::MAX).unwrap(),
    ]);
    // A generous timeout: this measures Redis, not the fallback.
    let options = RedisOptions::new().with_timeout(Duration::from_secs(1));
    let store = RedisStore::new(connection, prefix, options);
    let limiter = RateLimiter::with_redis_store(store.clone(), policy);
    let key = RateLimitKey::from("one-key");

    // Warm up: loads the script once (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA) if the server lacks it.
    limiter.acquire(&key).await.expect("warm-up permit");

    let evalsha_before = command_calls(&mut stats, "evalsha").await;
    let load_before = command_calls(&mut stats, "script|load").await;
    let eval_before = command_calls(&mut stats, "eval").await;
    let store_calls_before = store.redis_calls();

    let granted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (limiter, key, granted) = (limiter.clone(), key.clone(), granted.clone());
            tokio::spawn(async move {
                while start.elapsed() < run_for {
                    if limiter.acquire(&key).await.is_ok() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let granted = granted.load(Ordering::Relaxed);

    let evalsha = command_calls(&mut stats, "evalsha").await - evalsha_before;
    let loads = command_calls(&mut stats, "script|load").await - load_before;
    let evals = command_calls(&mut stats, "eval").await - eval_before;
    let store_calls = store.redis_calls() - store_calls_before;
    let round_trips = evalsha + loads + evals;

    println!("callers: {callers}, quotas per key: 2, run: {elapsed:.2} s");
    println!(
        "permits granted: {granted} ({:.0} per second)",
        granted as f64 / elapsed
    );
    println!(
        "store calls to Redis: {store_calls}; fallback used: {}",
        store.is_on_fallback()
    );
    println!(
        "server commands during the run: EVALSHA {evalsha}, SCRIPT LOAD {loads}, EVAL {evals}"
    );
    println!(
        "Redis round trips per permit: {:.3}",
        round_trips as f64 / granted.max(1) as f64
    );
}
