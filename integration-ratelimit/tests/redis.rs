//! The Redis store against a real Redis: the shared instance at `REDIS_URL` (every test under its own
//! key prefix), and a private `redis-server` this file starts and kills for the outage test.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use integration_core::error::RateLimited;
use integration_ratelimit::store::{Acquire, Decision, Observation, RateLimitStore};
use integration_ratelimit::{
    MemoryStore, Quota, RateLimitKey, RateLimitLayer, RateLimitPolicy, RateLimiter, RedisOptions,
    RedisStore,
};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use integration_core::redis::{SharedRedis, SharedRedisConfig};
use integration_core::testing::{RedisServer, redis_url};

/// Options for tests on the shared Redis: a generous timeout, so a loaded machine does not send a test
/// to the fallback (the fallback has tests of its own).
fn options() -> RedisOptions {
    RedisOptions::new().with_timeout(Duration::from_millis(500))
}

/// Redis's clock and ours, and the milliseconds a hint is rounded to.
const SLACK: Duration = Duration::from_millis(20);

async fn connect(url: &str) -> ConnectionManager {
    let client =
        redis::Client::open(url).unwrap_or_else(|error| panic!("invalid Redis URL {url}: {error}"));
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap_or_else(|error| panic!("Redis at {url} is unreachable: {error}"))
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    format!(
        "ratelimit-test:{test}:{}:{}",
        std::process::id(),
        fastrand::u64(..)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_sharing_a_key_never_grant_more_than_the_quota() {
    let url = redis_url();
    let prefix = prefix("four-replicas");
    // Regression (load): with a burst of 5 (a quarter second of permits), a loaded machine that
    // left all sixteen callers off the CPU for longer than that lost permits for good, and the
    // "uses the shared quota fully" bound failed. A burst of a second's worth keeps every permit
    // through such a stall; the ceiling below counts it.
    let quota = Quota::new(20, Duration::from_secs(1), 20).unwrap();
    let policy = RateLimitPolicy::new([quota]);
    let mut replicas = Vec::new();
    for _ in 0..4 {
        // Each replica has its own connection, as separate processes would.
        let options = RedisOptions::new()
            .with_expected_replicas(4)
            .with_timeout(Duration::from_millis(500));
        let store = RedisStore::new(connect(&url).await, prefix.clone(), options);
        replicas.push((
            store.clone(),
            RateLimiter::with_redis_store(store, policy.clone()),
        ));
    }
    let granted = Arc::new(AtomicUsize::new(0));
    let key = RateLimitKey::from("shared");
    let start = Instant::now();
    let run_for = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for (_, limiter) in &replicas {
        for _ in 0..4 {
            let (limiter, granted, key) = (limiter.clone(), granted.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    if limiter.acquire(&key).await.is_ok() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let granted = granted.load(Ordering::Relaxed) as f64;
    // Every decision was made on Redis's clock between the first call and the last answer.
    let ceiling = 20.0 + 20.0 * elapsed;
    eprintln!("four replicas: {granted} permits in {elapsed:.2} s (ceiling {ceiling:.1})");
    assert!(
        granted <= ceiling,
        "{granted} permits in {elapsed:.2} s, quota allows {ceiling:.1}"
    );
    assert!(
        granted >= 20.0 * 3.0 * 0.9,
        "{granted} permits in {elapsed:.2} s: the four replicas should use the shared quota fully"
    );
    for (store, _) in &replicas {
        assert!(!store.is_on_fallback(), "every decision came from Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_replica_pauses_the_others() {
    let url = redis_url();
    let prefix = prefix("shared-pause");
    let policy = RateLimitPolicy::new([Quota::per_second(100).unwrap()]);
    let throttled = RateLimiter::redis(
        connect(&url).await,
        prefix.clone(),
        policy.clone(),
        options(),
    );
    let other = RateLimiter::redis(
        connect(&url).await,
        prefix.clone(),
        policy.clone().with_max_wait(Duration::from_secs(5)),
        options(),
    );
    let fail_fast = RateLimiter::redis(connect(&url).await, prefix, policy, options());

    // Replica one calls the API and gets a 429 with Retry-After: 3.
    let upstream_429 = tower::service_fn(|_request: Request<String>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", PAUSE.as_secs().to_string())
                .body(String::new())
                .unwrap(),
        )
    });
    let request = || {
        Request::get("https://api.example.com/")
            .body(String::new())
            .unwrap()
    };
    // The pause starts while this call is in flight, so no sooner than `before_429`: the bounds
    // below are measured from there and hold however slow a loaded machine makes each step.
    let before_429 = Instant::now();
    let response = ServiceBuilder::new()
        .layer(RateLimitLayer::new(throttled))
        .service(upstream_429)
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let after_429 = Instant::now();

    // Replica three fails fast with the server's hint and status.
    let error = ServiceBuilder::new()
        .layer(RateLimitLayer::new(fail_fast))
        .service(tower::service_fn(|_request: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
        .oneshot(request())
        .await
        .unwrap_err();
    let limited = error.downcast_ref::<RateLimited>().expect("RateLimited");
    assert!(limited.is_by_server());
    assert_eq!(limited.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    let hint = limited.retry_after().unwrap();
    // Regression (load): `hint > 1.5 s` failed when more than half a second passed between the 429
    // and this call. The pause ends no sooner than `PAUSE` after `before_429`.
    let since = before_429.elapsed();
    assert!(
        hint <= PAUSE && hint + since + SLACK >= PAUSE,
        "hint {hint:?}, {since:?} after the 429 was asked for"
    );

    // Replica two waits the pause out before its call reaches the upstream.
    let asked = Instant::now();
    let response = ServiceBuilder::new()
        .layer(RateLimitLayer::new(other))
        .service(tower::service_fn(|_request: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The pause ends no sooner than `PAUSE` after `before_429` (measured from `after_429`, a slow
    // 429 call made the wait look short).
    let waited = before_429.elapsed();
    assert!(waited + SLACK >= PAUSE, "waited only {waited:?}");
    // And no later than the pause's end plus a wake-up: the pause ends by `after_429 + PAUSE`, so
    // replica two waits at most what was left of it when it asked. Regression (load): the bound was
    // `after_429 + 3 s`, which also counted the fail-fast call of replica three in between; on a
    // loaded machine that round trip alone could take most of the second. The slack is half the
    // pause: a wait of a second pause (a pause applied twice) still fails the test.
    let left = (after_429 + PAUSE).saturating_duration_since(asked);
    let waited = asked.elapsed();
    assert!(
        waited <= left + PAUSE / 2,
        "waited {waited:?} where {left:?} of the pause was left"
    );
}

/// The server's pause in `a_429_seen_by_one_replica_pauses_the_others`.
const PAUSE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_applies_every_quota_of_a_key_together() {
    let url = redis_url();
    // 5 per second (burst 5) and 8 per minute (burst 8). A new key's first second goes at each
    // quota's pace: the second's burst is empty; the minute's interval (7.5 s) is longer than a
    // second, so its burst is whole.
    let policy = RateLimitPolicy::new([
        Quota::per_second(5).unwrap(),
        Quota::new(8, Duration::from_secs(60), 8).unwrap(),
    ]);
    let limiter = RateLimiter::redis(
        connect(&url).await,
        prefix("windows"),
        policy,
        RedisOptions::new().with_timeout(Duration::from_millis(500)),
    );
    let key = RateLimitKey::from("k");
    let first = Instant::now();
    let mut at_once = 0;
    for _ in 0..10 {
        at_once += usize::from(limiter.acquire(&key).await.is_ok());
    }
    // No burst of the second's quota for a new key (issue 13): its first permit, and its pace over
    // the time the ten calls took.
    let took = first.elapsed().as_secs_f64();
    assert!(
        at_once >= 1 && at_once as f64 <= 1.0 + 5.0 * took,
        "{at_once} of 10 in {took:.3} s: the second's pace"
    );
    let later = hammer(&limiter, &key, Duration::from_millis(1500)).await;
    assert_eq!(
        at_once + later,
        8,
        "then the minute's burst of 8, and nothing more for 7.5 s"
    );
    let refused = limiter.acquire(&key).await.unwrap_err();
    let hint = refused.retry_after().unwrap();
    // The minute's quota grants its ninth permit 7.5 s after its first, which came after `first`.
    let since = first.elapsed();
    assert!(
        hint <= Duration::from_millis(7500) && hint + since + SLACK >= Duration::from_millis(7500),
        "hint {hint:?}, {since:?} after the first call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_hash_tagged_and_expire() {
    let url = redis_url();
    let prefix = prefix("keys");
    let mut connection = connect(&url).await;
    let store = RedisStore::new(connection.clone(), prefix.clone(), options());
    let policy = RateLimitPolicy::new([
        Quota::per_second(10).unwrap(),
        Quota::per_minute(100).unwrap(),
    ]);
    let limiter = RateLimiter::with_redis_store(store.clone(), policy);
    let key = RateLimitKey::from("tenant-7");
    limiter.acquire(&key).await.unwrap();
    limiter
        .observe(&key, StatusCode::SERVICE_UNAVAILABLE, &{
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", "1".parse().unwrap());
            headers
        })
        .await
        .unwrap();
    let q0 = store.quota_key(&key, 0);
    let q1 = store.quota_key(&key, 1);
    let pause = store.pause_key(&key);
    let learned = store.learned_key(&key);
    assert_eq!(q0, format!("{{{prefix}:tenant-7}}:q0"));
    assert_eq!(learned, format!("{{{prefix}:tenant-7}}:learned"));
    let slots: Vec<i64> = futures_slots(&mut connection, &[&q0, &q1, &pause, &learned]).await;
    assert!(
        slots.windows(2).all(|pair| pair[0] == pair[1]),
        "one slot: {slots:?}"
    );
    for redis_key in [&q0, &q1, &pause, &learned] {
        let ttl: i64 = connection.pttl(redis_key).await.unwrap();
        assert!(ttl > 0, "{redis_key} expires (pttl {ttl})");
    }
    let status: String = connection.get(&pause).await.unwrap();
    assert_eq!(status, "503");
}

async fn futures_slots(connection: &mut ConnectionManager, keys: &[&String]) -> Vec<i64> {
    let mut slots = Vec::new();
    for key in keys {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key.as_str())
            .query_async(connection)
            .await
            .unwrap_or_else(|_| crc16_slot(key));
        slots.push(slot);
    }
    slots
}

/// The cluster slot of a key, for servers without cluster support compiled in: CRC16 of the hash tag.
fn crc16_slot(key: &str) -> i64 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let data = tagged.unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    i64::from(crc % 16384)
}

/// Calls `acquire` every 5 ms for `run_for`; returns the permits granted.
async fn hammer(limiter: &RateLimiter, key: &RateLimitKey, run_for: Duration) -> usize {
    let start = Instant::now();
    let mut granted = 0;
    while start.elapsed() < run_for {
        if limiter.acquire(key).await.is_ok() {
            granted += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_the_local_share_and_recovers() {
    let mut server = RedisServer::start().expect("own redis-server");
    let connection = SharedRedis::open(
        &server.url(),
        SharedRedisConfig::new().with_probe_interval(Duration::from_millis(200)),
    )
    .unwrap();
    let options = RedisOptions::new()
        .with_timeout(Duration::from_millis(200))
        .with_expected_replicas(4);
    let store = RedisStore::new(connection, "outage", options);
    // 40 per second shared by 4 replicas: 10 per second each while Redis is away.
    let policy = RateLimitPolicy::new([Quota::per_second(40).unwrap()]);
    let limiter = RateLimiter::with_redis_store(store.clone(), policy);

    // On Redis: a new key's burst starts empty, so its first permit, then one per 25 ms.
    let key = RateLimitKey::from("api");
    let first = Instant::now();
    let mut granted = 0;
    for _ in 0..45 {
        granted += usize::from(limiter.acquire(&key).await.is_ok());
    }
    let took = first.elapsed().as_secs_f64();
    assert!(
        granted >= 1 && granted as f64 <= 1.0 + (40.0 * took).ceil(),
        "{granted} of 45 on Redis in {took:.3} s"
    );
    assert!(!store.is_on_fallback());

    server.kill();
    let fresh = RateLimitKey::from("after-outage");
    let start = Instant::now();
    let granted = hammer(&limiter, &fresh, Duration::from_secs(1)).await;
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!("fallback: {granted} permits in {elapsed:.2} s at a share of 10/s");
    assert!(
        store.is_on_fallback(),
        "Redis is down: the store says it runs on its fallback"
    );
    // Never no limit: at most the local share (a key first seen on the fallback gets no burst: one
    // permit, then 10 per second); and not zero either.
    assert!(
        granted as f64 <= 1.0 + 10.0 * elapsed && granted >= 9,
        "{granted} permits in {elapsed:.2} s on the fallback"
    );

    // Redis returns, empty (no script loaded: the first EVALSHA meets NOSCRIPT and loads it).
    server.restart().unwrap();
    let recovered = Instant::now();
    while store.is_on_fallback() {
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "never went back to Redis"
        );
        let _ = limiter.acquire(&RateLimitKey::from("probe")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = RateLimitKey::from("back");
    limiter.acquire(&back).await.unwrap();
    let mut check = connect(&server.url()).await;
    let state: Option<String> = check.get(store.quota_key(&back, 0)).await.unwrap();
    assert!(
        state.is_some(),
        "the decision after recovery was made on Redis"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_reloaded_after_a_script_flush() {
    // A private server: flushing scripts on the shared instance would disturb other tests.
    let server = RedisServer::start().expect("own redis-server");
    let mut connection = connect(&server.url()).await;
    let store = RedisStore::new(connection.clone(), "noscript", options());
    // Waiting allowed: a new key's second permit comes 200 ms after its first.
    let limiter = RateLimiter::with_redis_store(
        store.clone(),
        RateLimitPolicy::new([Quota::per_second(5).unwrap()]).with_max_wait(Duration::from_secs(5)),
    );
    let key = RateLimitKey::from("k");
    limiter.acquire(&key).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();
    limiter.acquire(&key).await.unwrap();
    assert!(
        !store.is_on_fallback(),
        "NOSCRIPT was handled by reloading, not by falling back"
    );
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let calls = |name: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Each call is one EVALSHA; on NOSCRIPT (first call on a fresh server, and after the flush) the
    // script is loaded once and the EVALSHA repeated.
    assert_eq!(calls("evalsha"), 4, "{info}");
    assert_eq!(calls("script|load"), 2, "{info}");
    assert_eq!(
        calls("eval"),
        0,
        "the script text is never sent with EVAL: {info}"
    );
}

/// Adaptive throttling with the Redis store: a 429 seen by one replica lowers the rate every
/// replica paces by (the learned state lives in the key's Redis hash, in the acquisition script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_learned_by_one_replica_paces_the_others() {
    let url = redis_url();
    let prefix = prefix("learned");
    let policy = RateLimitPolicy::new([]).with_max_wait(Duration::from_secs(10));
    let first = RateLimiter::redis(
        connect(&url).await,
        prefix.clone(),
        policy.clone(),
        options(),
    );
    let second = RateLimiter::redis(connect(&url).await, prefix.clone(), policy, options());
    let key = RateLimitKey::from("shared");
    // 20 permits in the second before the throttle, then a 429 with a 200 ms pause: the learned
    // rate starts at 0.7 x 20 = 14 per second.
    for _ in 0..20 {
        first.acquire(&key).await.unwrap();
    }
    let mut headers = HeaderMap::new();
    headers.insert("retry-after-ms", "200".parse().unwrap());
    // Taken before the 429 is observed: the pause ends 200 ms after the observation, so at least
    // 200 ms after `start` however late this thread is scheduled.
    let start = Instant::now();
    first
        .observe(&key, StatusCode::TOO_MANY_REQUESTS, &headers)
        .await
        .unwrap();
    // The other replica, which never saw the 429, waits for the pause and then spaces its
    // permits by about 1/14 s, a little less as the rate grows back (no pacing would be ~1 ms).
    let mut sends = Vec::new();
    for _ in 0..4 {
        second.acquire(&key).await.unwrap();
        sends.push(start.elapsed().as_secs_f64());
    }
    assert!(sends[0] >= 0.19, "waited for the pause: {sends:?}");
    // Asserted on the last permit, not on each gap: on a loaded machine a permit returned late
    // shortens the next gap (its slot was reserved from the scheduled time, not the late one),
    // which once failed a gap of 50 ms; lateness can only make the last permit later. At a rate of
    // at most 20 a second (the learned rate grows back from 14 towards w_max 20), the three permits
    // after the first are at least 150 ms after the pause.
    assert!(
        sends[3] >= 0.2 + 3.0 * 0.05 - 0.005,
        "paced at the learned rate: {sends:?}"
    );
    let mut connection = connect(&url).await;
    let store = RedisStore::new(connection.clone(), prefix, options());
    let w_max: f64 = connection.hget(store.learned_key(&key), "w").await.unwrap();
    assert!((w_max - 20.0).abs() < 1.0, "w_max {w_max}");
}

/// The most permits granted in any window of `window` among the sorted `sends` (offsets in seconds).
fn busiest_window(sends: &[f64], window: f64) -> (usize, f64) {
    let mut best = (0, 0.0);
    let mut start = 0;
    for end in 0..sends.len() {
        while sends[end] - sends[start] >= window {
            start += 1;
        }
        if end + 1 - start > best.0 {
            best = (end + 1 - start, sends[start]);
        }
    }
    best
}

/// Issue 13 (part 4), the limiter alone: a Redis outage passed the quota at each switch (80 and 69
/// calls/s going to the fallback, 64 and 80 coming back, for a quota of 50/s): the fallback started
/// with an empty state (a fresh burst), and Redis came back empty (another fresh burst). Now the
/// fallback starts from the last state Redis granted and the key is seeded into Redis before its
/// first decision there: no one-second window, before, during or after the outage, holds more than
/// the quota (+5 %, +1 for the window's edge), plus what a stall of the offer earned back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_never_passes_the_quota_at_either_switch() {
    let mut server = RedisServer::start().expect("own redis-server");
    let connection = SharedRedis::open(
        &server.url(),
        SharedRedisConfig::new()
            .with_command_timeout(Duration::from_millis(200))
            .with_probe_interval(Duration::from_millis(100)),
    )
    .unwrap();
    let options = RedisOptions::new().with_timeout(Duration::from_millis(200));
    let store = RedisStore::new(connection, "switches", options);
    // 20 per second, burst 20: every switch that hands out a fresh burst doubles a second's count.
    let policy =
        RateLimitPolicy::new([Quota::per_second(20).unwrap()]).with_max_wait(Duration::ZERO);
    let limiter = RateLimiter::with_redis_store(store.clone(), policy);
    let start = Instant::now();
    // One caller offers a permit request every 5 ms for 6.5 s, without a pause: a pause in the offer
    // would let GCRA earn back burst, which is no fault of a switch.
    let offer = tokio::spawn(async move {
        let key = RateLimitKey::from("api");
        let (mut granted, mut offered) = (Vec::new(), Vec::new());
        while start.elapsed() < Duration::from_millis(6_500) {
            offered.push(start.elapsed().as_secs_f64());
            if limiter.acquire(&key).await.is_ok() {
                granted.push(start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (granted, offered)
    });
    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
    assert!(!store.is_on_fallback());
    tokio::task::block_in_place(|| server.kill());
    let killed_at = start.elapsed().as_secs_f64();
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    assert!(store.is_on_fallback(), "Redis is down");
    tokio::task::block_in_place(|| server.restart()).unwrap();
    let restarted_at = start.elapsed().as_secs_f64();
    let (sends, offered) = offer.await.unwrap();
    assert!(!store.is_on_fallback(), "back on Redis");

    // The first second holds the initial burst (20 + 20): judge every window after it.
    let after_burst: Vec<f64> = sends.iter().copied().filter(|&at| at >= 1.0).collect();
    let (most, at) = busiest_window(&after_burst, 1.0);
    // A stall of the offer (the command timeout while Redis is first found down, or the caller not
    // scheduled on a loaded machine: run 5 of five under two CPU hogs saw 23 permits in a second
    // after a stall) lets GCRA earn back one permit per 50 ms of it, rightly: the quota's burst is
    // 20. What the second before the window and the window itself earned that way is allowed on
    // top; a fresh burst at a switch (+20) is still well past it.
    let stalled: f64 = offered
        .windows(2)
        .filter(|pair| pair[1] >= at - 1.0 && pair[0] < at + 1.0)
        .map(|pair| (pair[1] - pair[0] - 0.010).max(0.0))
        .sum();
    let earned = (20.0 * stalled).floor();
    println!(
        "{} permits in 6.5 s; Redis killed at {killed_at:.2} s, back at {restarted_at:.2} s; \
         busiest second after the first: {most} permits from {at:.2} s; the offer stalled \
         {stalled:.3} s around it",
        sends.len()
    );
    assert!(
        most as f64 <= 20.0 * 1.05 + 1.0 + earned,
        "{most} permits in the second from {at:.2} s (quota 20/s, {earned} earned back by a \
         {stalled:.3} s stall): a switch passed the quota"
    );
    // And the limiter kept granting through both switches (never no permit for long).
    assert!(
        sends.len() as f64 >= 20.0 + 20.0 * 5.0,
        "{} permits in 6.5 s",
        sends.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_the_shared_pause_and_quotas_without_changing_them() {
    let url = redis_url();
    let prefix = prefix("inspect");
    let policy = RateLimitPolicy::new([
        Quota::new(10, Duration::from_secs(1), 5).unwrap(),
        Quota::new(100, Duration::from_secs(60), 100).unwrap(),
    ]);
    let limiter = RateLimiter::redis(connect(&url).await, prefix, policy, options());
    let store = limiter.redis_store().expect("a Redis limiter").clone();
    let key = RateLimitKey::from("inspected");

    let untouched = store.inspect(&key, 2).await.unwrap();
    assert_eq!(untouched.pause, None);
    assert_eq!(untouched.quotas, [Duration::ZERO, Duration::ZERO]);

    limiter.acquire(&key).await.unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", "30".parse().unwrap());
    limiter
        .observe(&key, StatusCode::TOO_MANY_REQUESTS, &headers)
        .await
        .expect("a pause");

    let state = store.inspect(&key, 2).await.unwrap();
    let pause = state.pause.expect("the server pause is visible");
    // Bounds, not times: whatever the machine's load, the pause read is at most what was asked
    // and no less than what a generous 20 s of scheduling delay would leave.
    assert!(
        pause <= Duration::from_secs(30) && pause > Duration::from_secs(10),
        "{pause:?}"
    );
    assert_eq!(state.pause_status, Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(state.quotas.len(), 2);
    assert!(
        state.quotas.iter().all(|busy| *busy > Duration::ZERO),
        "a permit was taken from each quota: {:?}",
        state.quotas
    );
    let again = store.inspect(&key, 2).await.unwrap();
    assert!(again.pause.unwrap() <= pause, "inspecting changes nothing");
    assert!(
        RateLimiter::memory(RateLimitPolicy::new([]))
            .redis_store()
            .is_none()
    );
}

/// The observe path during a Redis outage: a throttle signal observed while Redis is down is
/// applied on the fallback at once (this replica obeys it), marks the key for rejoin, and is
/// written into Redis with the key's seed when Redis returns, so every replica obeys it then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_observed_during_an_outage_is_seeded_into_redis_on_its_return() {
    let mut server = RedisServer::start().expect("own redis-server");
    let connection = SharedRedis::open(
        &server.url(),
        SharedRedisConfig::new().with_probe_interval(Duration::from_millis(200)),
    )
    .unwrap();
    let options = RedisOptions::new().with_timeout(Duration::from_millis(200));
    let store = RedisStore::new(connection, "observe-outage", options);
    // Waits up to 2 s: the 60 s pause is refused at once, with the server's hint.
    let policy = RateLimitPolicy::new([]).with_max_wait(Duration::from_secs(2));
    let limiter = RateLimiter::with_redis_store(store.clone(), policy);
    let key = RateLimitKey::from("throttled");
    limiter.acquire(&key).await.unwrap();

    server.kill();
    let down = Instant::now();
    while !store.is_on_fallback() {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "never noticed the outage"
        );
        let _ = limiter.acquire(&RateLimitKey::from("probe")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", "60".parse().unwrap());
    let paused = limiter
        .observe(&key, StatusCode::TOO_MANY_REQUESTS, &headers)
        .await;
    assert_eq!(paused, Some(Duration::from_secs(60)));
    // Obeyed on the fallback at once.
    let refused = limiter.acquire(&key).await.unwrap_err();
    assert!(refused.is_by_server(), "{refused:?}");

    server.restart().expect("own redis-server restarts");
    let back = Instant::now();
    while store.is_on_fallback() {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "never went back to Redis"
        );
        let _ = limiter.acquire(&RateLimitKey::from("probe")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted Redis is empty; the key's first call there seeds it with the pause.
    let mut check = connect(&server.url()).await;
    let before: i64 = check.pttl(store.pause_key(&key)).await.unwrap();
    assert!(before < 0, "Redis came back empty (pttl {before})");
    let refused = limiter.acquire(&key).await.unwrap_err();
    assert!(refused.is_by_server(), "{refused:?}");
    let hint = refused.retry_after().unwrap();
    assert!(
        hint > Duration::from_secs(30) && hint <= Duration::from_secs(60),
        "{hint:?}"
    );
    let seeded: i64 = check.pttl(store.pause_key(&key)).await.unwrap();
    assert!(
        seeded > 30_000 && seeded <= 60_000,
        "the pause is in Redis for every replica (pttl {seeded} ms)"
    );
    server.kill();
}

/// When (seconds after the first) each of six callers of `key` in a row called, and the send instant
/// the store granted it,
/// after the server's counters said 40 permits remain for 1 s, then, from a later answer of the
/// same window, 1 for 1 s (`RateLimit` states the reset in whole seconds, so the last answers of a
/// window read `r=1;t=1`). A send instant is the call's plus its wait, so that time passing between
/// the calls (a loaded machine) does not shift it.
async fn sends_after_a_window_runs_out(
    store: &dyn RateLimitStore,
    key: &RateLimitKey,
) -> Vec<(f64, f64)> {
    let policy = Arc::new(RateLimitPolicy::new([]).with_max_wait(Duration::from_secs(10)));
    for remaining in [40, 1] {
        let mut observation = Observation::new(key.clone(), policy.clone(), StatusCode::OK);
        observation.remaining = Some((remaining, Duration::from_secs(1)));
        store.observe(observation).await.unwrap();
    }
    let mut sends = Vec::new();
    let first = Instant::now();
    for _ in 0..6 {
        let called = first.elapsed().as_secs_f64();
        let acquire = Acquire {
            key: key.clone(),
            policy: policy.clone(),
            max_wait: Duration::from_secs(10),
        };
        match store.acquire(acquire).await.unwrap() {
            Decision::Granted { wait } => sends.push((called, called + wait.as_secs_f64())),
            Decision::Denied { retry_after, .. } => panic!("refused, retry after {retry_after:?}"),
        }
    }
    sends
}

/// Regression (issue 13, the chaos suite's ratelimit-headers scenario failing one run in eight):
/// the last interval of a server's window (one permit over the reset rounded up to a second) paced
/// the queue past the reset, one caller a second, for as long as `max_wait` allowed. Past the reset
/// the queue now goes at the next window's pace (the narrowest of this window's readings, 25 ms
/// here); the Redis script and the memory store agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_servers_reset_the_queue_keeps_the_next_windows_pace_in_redis_as_in_memory() {
    let url = redis_url();
    let prefix = prefix("next-window");
    let redis = RedisStore::new(connect(&url).await, prefix, options());
    let memory = MemoryStore::new();
    let key = RateLimitKey::from("paced");
    for (name, store) in [
        ("redis", &redis as &dyn RateLimitStore),
        ("memory", &memory as &dyn RateLimitStore),
    ] {
        let sends = sends_after_a_window_runs_out(store, &key).await;
        // The window's last permit at once, the next at its reset (1 s on), then 25 ms apart
        // (before: 1 s apart, the sixth 4 s after the reset). A call made after its slot is
        // granted at once. A send instant here is the call's instant plus the wait on Redis's
        // clock, taken a round trip later: a millisecond or two of error either way.
        let slack = SLACK.as_secs_f64();
        assert!(sends[0].1 <= slack, "{name}: {sends:?}");
        assert!((sends[1].1 - 1.0).abs() <= slack, "{name}: {sends:?}");
        for pair in sends[1..].windows(2) {
            let ((_, before), (called, send)) = (pair[0], pair[1]);
            assert!(send - before >= 0.02, "{name}: {sends:?}");
            assert!(
                send <= (before + 0.025).max(called) + slack,
                "{name}: {sends:?}"
            );
        }
    }
}

/// Regression (issue 13, the chaos suite's shared-limit scenario: 10.8 s for an ideal of 5.8): a
/// replica that had reserved its permit before another replica's throttle paused the key sent its
/// request during the pause, and that request's 429 decreased the shared rate a second time for
/// the same wave. The script now ignores throttles to requests sent before the curve started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_to_a_request_sent_during_the_pause_does_not_decrease_the_shared_rate_again() {
    let url = redis_url();
    let prefix = prefix("one-decrease");
    let mut connection = connect(&url).await;
    let first = RedisStore::new(connection.clone(), prefix.clone(), options());
    let second = RedisStore::new(connect(&url).await, prefix, options());
    let key = RateLimitKey::from("shared");
    let policy = Arc::new(RateLimitPolicy::new([]).with_max_wait(Duration::from_secs(10)));
    for _ in 0..30 {
        let acquire = Acquire {
            key: key.clone(),
            policy: policy.clone(),
            max_wait: Duration::from_secs(10),
        };
        first.acquire(acquire).await.unwrap();
    }
    let throttle = |sent_ago: Duration| {
        let mut observation =
            Observation::new(key.clone(), policy.clone(), StatusCode::TOO_MANY_REQUESTS);
        observation.throttled = true;
        observation.pause = Duration::from_secs(1);
        observation.sent_ago = sent_ago;
        observation
    };
    first
        .observe(throttle(Duration::from_millis(1)))
        .await
        .unwrap();
    let learned_key = first.learned_key(&key);
    let w_max: f64 = connection.hget(&learned_key, "w").await.unwrap();
    assert!(w_max > 0.0, "the first throttle set a rate");
    // The other replica's request, sent into the pause just now, answered 429.
    second.observe(throttle(Duration::ZERO)).await.unwrap();
    let after: f64 = connection.hget(&learned_key, "w").await.unwrap();
    assert_eq!(after, w_max, "decreased again for the same wave");
}

/// Regression (found by the criterion benchmark of the layer): with `max_wait` 0 a fresh key's
/// probe refused every call past its first window. The probe is a courtesy, as in memory: a call it
/// would hold past its bound goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_never_refuses_a_call_it_would_hold_past_its_wait_in_redis() {
    let url = redis_url();
    let store = RedisStore::new(connect(&url).await, prefix("probe-courtesy"), options());
    let key = RateLimitKey::from("fresh");
    let policy = Arc::new(RateLimitPolicy::new([]));
    for call in 0..30 {
        let acquire = Acquire {
            key: key.clone(),
            policy: policy.clone(),
            max_wait: Duration::ZERO,
        };
        match store.acquire(acquire).await.unwrap() {
            Decision::Granted { wait } => assert!(wait.is_zero(), "call {call}: {wait:?}"),
            Decision::Denied { retry_after, .. } => {
                panic!("call {call} refused, retry after {retry_after:?}")
            }
        }
    }
}
