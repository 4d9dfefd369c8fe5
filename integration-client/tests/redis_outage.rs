//! Issue 13 (part 4) through the facade: a Redis that every `store = "redis"` section shares (the
//! limiter and the OAuth token store) is killed under a steady load, or is absent at start. Each test
//! starts a `redis-server` of its own on a free loopback port (killed and restarted by the test,
//! never the machine's shared one), and the upstream and token endpoint are a wiremock server of its
//! own that records when each call arrives.
//!
//! `REDIS_OUTAGE_SECS` (default 4) lengthens the outage for a run by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_client::Client;
use integration_config::Config;
use integration_core::testing::RedisServer;
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// An upstream recording the arrival of each `GET` (offset from `start`), and a token endpoint
/// handing out tokens that live `token_lifetime` seconds (so they are refreshed every half of it).
async fn upstream(
    start: Instant,
    arrivals: Arc<Mutex<Vec<Duration>>>,
    token_lifetime: u64,
) -> (MockServer, Arc<AtomicUsize>) {
    let server = MockServer::start().await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(json!({
                "access_token": format!("token-{n}"),
                "token_type": "Bearer",
                "expires_in": token_lifetime,
            }))
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(move |_: &Request| {
            arrivals.lock().unwrap().push(start.elapsed());
            ResponseTemplate::new(200)
        })
        .mount(&server)
        .await;
    (server, fetches)
}

fn config(redis_url: &str, server: &MockServer, extra_redis: &str) -> Config {
    let text = format!(
        r#"
        [redis]
        url = "{redis_url}"
        key_prefix = "outage-{unique}"
        {extra_redis}

        [integrations.api]
        base_url = "{uri}"
        retry = {{ max_attempts = 1 }}
        rate_limit = {{ quotas = [{{ rate = 50, per = "1s" }}], max_wait = "1s", store = "redis" }}
        auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token", client_id = "app", client_secret = "s", store = "redis" }}
        "#,
        unique = uuid::Uuid::new_v4().simple(),
        uri = server.uri(),
    );
    Config::from_toml_str(&text).unwrap()
}

/// What one call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Refused by the quota (80 offered for 50 allowed: expected for a share of the calls).
    RateLimited,
    /// Anything else: an outage that cost a call.
    Failed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_costs_no_call_and_never_passes_the_quota() {
    let outage = Duration::from_secs(
        std::env::var("REDIS_OUTAGE_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(4),
    );
    let mut redis = RedisServer::start().expect("own redis-server");
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    // Tokens live 4 s: refreshed every 2 s, so refreshes fall due during the outage.
    let (server, fetches) = upstream(start, arrivals.clone(), 4).await;
    let client = Client::connect(config(&redis.url(), &server, ""))
        .await
        .expect("client");

    let kill_at = Duration::from_secs(3);
    let restart_at = kill_at + outage;
    let run_for = restart_at + Duration::from_secs(4);
    let max_wait = Duration::from_secs(1);
    // Open loop: 80 calls a second whatever happens to earlier ones.
    let load = tokio::spawn({
        let client = client.clone();
        async move {
            let mut calls = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_micros(12_500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while start.elapsed() < run_for {
                tick.tick().await;
                let client = client.clone();
                calls.push(tokio::spawn(async move {
                    let launched = Instant::now();
                    let result = client.api("api").unwrap().get("/work").send().await;
                    let outcome = match result {
                        Ok(response) if response.status() == 200 => Outcome::Ok,
                        Err(error) if error.is_rate_limited() => Outcome::RateLimited,
                        _ => Outcome::Failed,
                    };
                    (launched - start, launched.elapsed(), outcome)
                }));
            }
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.unwrap());
            }
            results
        }
    });
    tokio::time::sleep_until(start + kill_at).await;
    tokio::task::block_in_place(|| redis.kill());
    tokio::time::sleep_until(start + restart_at).await;
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let results = load.await.unwrap();

    let count = |outcome| results.iter().filter(|(_, _, o)| *o == outcome).count();
    let (ok, limited, failed) = (
        count(Outcome::Ok),
        count(Outcome::RateLimited),
        count(Outcome::Failed),
    );
    let slowest = results.iter().map(|(_, took, _)| *took).max().unwrap();
    let mut per_second = vec![0usize; run_for.as_secs() as usize + 2];
    for at in arrivals.lock().unwrap().iter() {
        per_second[at.as_secs() as usize] += 1;
    }
    println!(
        "{} calls offered at 80/s, Redis killed at {kill_at:?} for {outage:?}: {ok} ok, {limited} \
         refused by the quota, {failed} failed; slowest call {slowest:?}; {} token fetches; \
         upstream calls per second: {per_second:?}",
        results.len(),
        fetches.load(Ordering::SeqCst)
    );
    assert_eq!(failed, 0, "calls failed for another reason than the quota");
    // Nobody waits past max_wait (plus the call itself and a token fetch, on a loaded machine).
    assert!(
        slowest <= max_wait + Duration::from_secs(1),
        "a call took {slowest:?}"
    );
    // The first two seconds hold the initial burst allowance (50, on top of the rate: calls granted in
    // the first second with a wait of up to max_wait arrive in the second); every later stretch is
    // within the quota + 5 %, before, during and after the outage.
    //
    // Counted where the upstream sees them, so a call granted just before a second's end and
    // delivered late lands in the next one: on a loaded machine (two CPU hogs) one run counted
    // [.., 47, 54, 46, ..] around the restart, 147 for 3 s of a 50/s quota. Any two consecutive
    // seconds are held to twice the quota + 5 %, which a burst at a switch (the quota's whole burst,
    // +50 in one second, as before the fix) breaks at once, while a few calls delivered across a
    // boundary do not; and each second alone to the quota + 20 %.
    let full_seconds = run_for.as_secs() as usize;
    let judged = &per_second[2..full_seconds];
    for (offset, &calls) in judged.iter().enumerate() {
        assert!(
            calls as f64 <= 50.0 * 1.2,
            "{calls} upstream calls in second {} (quota 50/s): {per_second:?}",
            offset + 2
        );
    }
    for (offset, pair) in judged.windows(2).enumerate() {
        let calls = pair[0] + pair[1];
        assert!(
            calls as f64 <= 2.0 * 50.0 * 1.05,
            "{calls} upstream calls in seconds {} and {} (quota 50/s): {per_second:?}",
            offset + 2,
            offset + 3
        );
    }
    // And never a stall: during the outage the local share (the whole quota, one replica) serves.
    let first_down = kill_at.as_secs() as usize + 1;
    for second in first_down..restart_at.as_secs() as usize {
        assert!(
            per_second[second] >= 25,
            "{} upstream calls in second {second} of the outage: {per_second:?}",
            per_second[second]
        );
    }
    assert!(
        fetches.load(Ordering::SeqCst) >= 3,
        "tokens were refreshed during the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_at_start_the_client_serves_on_the_fallbacks_and_joins_redis_later() {
    // A port of its own with nothing on it yet: started once to hold the port, then killed.
    let mut redis = RedisServer::start().expect("own redis-server");
    redis.kill();
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (server, _fetches) = upstream(start, arrivals, 3600).await;
    let config = config(&redis.url(), &server, "");

    let began = Instant::now();
    let client = Client::connect(config.clone())
        .await
        .expect("starts without Redis");
    let response = client
        .api("api")
        .unwrap()
        .get("/first")
        .send()
        .await
        .unwrap();
    let served_in = began.elapsed();
    assert_eq!(response.status(), 200);
    println!("Redis absent: Client::connect and a first call took {served_in:?}");
    assert!(
        served_in <= Duration::from_secs(2),
        "the client served after {served_in:?}"
    );

    // Configured to require Redis, the same start fails, and says why.
    let required = self::config(&redis.url(), &server, "required = true");
    let error = Client::connect(required).await.unwrap_err();
    assert!(error.is_connect(), "{error:#}");
    assert!(error.to_string().contains("required"), "{error:#}");

    // Redis arrives: the limiter moves to it (its quota key appears there) without a restart.
    redis.restart().unwrap();
    let prefix = config.redis.as_ref().unwrap().key_prefix.clone();
    let raw = redis::Client::open(redis.url()).unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = client.api("api").unwrap().get("/later").send().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}:*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if keys.iter().any(|key| key.ends_with(":q0")) {
            break;
        }
        assert!(Instant::now() < deadline, "the client never used Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
