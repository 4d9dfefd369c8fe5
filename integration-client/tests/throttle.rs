//! Issue 13: rate limits that converge on what the server allows, through the whole stack the
//! facade builds (log, deadline, retry, breaker, rate limit, transport), on the real clock, against
//! a server-side GCRA limiter of the test's own: 50 requests per second, burst 10, answering 429
//! with `Retry-After: 1` (what nginx `limit_req` does).
//!
//! The figures are printed; run with `--nocapture` to see them. Elapsed time is asserted loosely
//! (the machine is shared): at most twice the ideal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_client::Client;
use integration_config::Config;
use tokio::time::Instant;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

const RATE: u64 = 50;

/// The load tests of this file run one at a time: each needs the two cores to itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const BURST: u64 = 10;
const CALLS: usize = 300;
const CONCURRENCY: usize = 64;

/// A GCRA limiter, server side: admits a request when its theoretical arrival time is at most
/// `tau = T * (burst - 1)` ahead of now.
struct Gcra {
    start: Instant,
    tat: Mutex<Duration>,
    attempts: AtomicUsize,
    throttled: AtomicUsize,
}

impl Gcra {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            tat: Mutex::new(Duration::ZERO),
            attempts: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        })
    }
}

struct Responder(Arc<Gcra>);

impl Respond for Responder {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let gcra = &self.0;
        gcra.attempts.fetch_add(1, Ordering::Relaxed);
        let interval = Duration::from_secs(1) / RATE as u32;
        let tau = interval * (BURST as u32 - 1);
        let now = gcra.start.elapsed();
        let mut tat = gcra.tat.lock().unwrap();
        let next = (*tat).max(now);
        if next - now > tau {
            gcra.throttled.fetch_add(1, Ordering::Relaxed);
            return ResponseTemplate::new(429).insert_header("retry-after", "1");
        }
        *tat = next + interval;
        ResponseTemplate::new(200).set_body_string("ok")
    }
}

/// What a run saw.
#[derive(Debug)]
struct Figures {
    succeeded: usize,
    failures: BTreeMap<String, usize>,
    attempts: usize,
    throttled: usize,
    elapsed: Duration,
}

impl Figures {
    fn throttled_share(&self) -> f64 {
        self.throttled as f64 / self.attempts as f64
    }
}

/// The ideal: the burst at once, then one call per interval.
fn ideal() -> Duration {
    Duration::from_secs(1) * (CALLS as u32 - BURST as u32) / RATE as u32
}

/// 300 calls from 64 concurrent callers through a client built from `rate_limit` and `retry` TOML.
async fn run(label: &str, extra: &str) -> Figures {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = MockServer::start().await;
    let gcra = Gcra::new();
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(Responder(gcra.clone()))
        .mount(&server)
        .await;
    let text = format!(
        r#"
        [integrations.upstream]
        base_url = "{uri}"
        {extra}
        "#,
        uri = server.uri()
    );
    let client = Client::from_config(Config::from_toml_str(&text).unwrap()).unwrap();
    let api = client.api("upstream").unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < CALLS {
                    let outcome = match api.get("/items").send().await {
                        Ok(response) if response.status().is_success() => Ok(()),
                        Ok(response) => Err(format!("status {}", response.status().as_u16())),
                        Err(error) => Err(format!("{:?}", error.kind())),
                    };
                    outcomes.push(outcome);
                }
                outcomes
            })
        })
        .collect();
    let mut succeeded = 0;
    let mut failures = BTreeMap::new();
    for worker in workers {
        for outcome in worker.await.unwrap() {
            match outcome {
                Ok(()) => succeeded += 1,
                Err(kind) => *failures.entry(kind).or_insert(0) += 1,
            }
        }
    }
    let figures = Figures {
        succeeded,
        failures,
        attempts: gcra.attempts.load(Ordering::Relaxed),
        throttled: gcra.throttled.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    };
    println!(
        "{label}: {}/{CALLS} succeeded, failures {:?}; {} attempts, {} answered 429 ({:.1} %); \
         {:.2} s = {:.2}x the ideal {:.2} s",
        figures.succeeded,
        figures.failures,
        figures.attempts,
        figures.throttled,
        100.0 * figures.throttled_share(),
        figures.elapsed.as_secs_f64(),
        figures.elapsed.as_secs_f64() / ideal().as_secs_f64(),
        ideal().as_secs_f64(),
    );
    figures
}

/// No local quota, the facade's defaults except the retry budget.
///
/// The budget is off here: the retry budget engineer's change (issue 13 part 3, throttled retries
/// do not spend the budget) is not in this branch, and at the default budget the throttled retries
/// of the first wave fail `retry_budget_exhausted` for reasons that are not the limiter's. The
/// figure at full defaults is printed by the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quota_the_client_converges_on_the_servers_rate() {
    let figures = run("no quota, budget off", "retry = { budget = false }").await;
    assert!(
        figures.succeeded * 100 >= CALLS * 99,
        "at least 99 % succeed: {figures:?}"
    );
    // Issue 13: at most 10 % of attempts answered 429. Slow start (on by default) sends 10 at
    // once, then probes in rate; its first throttle tells the server's rate, where the learned
    // rate starts: 1 of 301 attempts answered 429 measured (55-64 with slow start off, the first
    // wave of 64 meeting the server's burst of 10).
    assert!(
        figures.throttled * 10 <= figures.attempts,
        "at most 10 % of attempts answered 429: {figures:?}"
    );
    // Issue 13 asks 1.3x (the chaos suite's server-limit row checks it): 1.23x-1.24x measured
    // here (1.9x-2.1x when the learned rate was seeded from the send rate of the first
    // milliseconds). Asserted loosely, the machine being shared: it catches a stall.
    assert!(figures.elapsed <= ideal() * 2, "{figures:?}");
}

/// The same at full defaults (the retry budget on), printed for the report; asserted only as far
/// as the limiter goes: nothing fails for a reason of the limiter's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quota_at_full_defaults() {
    let figures = run("no quota, defaults", "").await;
    assert!(
        !figures.failures.contains_key("RateLimited"),
        "the limiter refused no call: {figures:?}"
    );
}

/// A local quota of 45 per second with the default burst (45).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_quota_under_the_servers_no_429_reaches_a_caller() {
    let figures = run(
        "quota 45/s, budget off",
        "rate_limit = { quotas = [{ rate = 45, per = \"1s\" }] }\nretry = { budget = false }",
    )
    .await;
    assert_eq!(figures.succeeded, CALLS, "{figures:?}");
    assert!(figures.failures.is_empty(), "{figures:?}");
    // Issue 13: at most 2 % of attempts answered 429 (0 measured: a new key's quota starts with
    // its burst held back, and slow start sends 10 at once).
    assert!(figures.throttled * 50 <= figures.attempts, "{figures:?}");
    assert!(figures.elapsed <= ideal() * 2, "{figures:?}");
}
