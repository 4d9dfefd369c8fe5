//! Issue 13, on the real clock: the limiter converges on what a server allows, against limiters of
//! the test's own (wiremock responders), with callers that send a throttled call again (as the
//! retry layer would; here the limiter alone decides when it goes).
//!
//! The figures are printed; run with `--nocapture` to see them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use integration_core::BoxError;
use integration_core::error::RateLimited;
use integration_core::ext::IntegrationName;
use integration_ratelimit::{RateLimitLayer, RateLimitPolicy, RateLimiter};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

type Service =
    BoxCloneSyncService<Request<Empty<Bytes>>, http::Response<hyper::body::Incoming>, BoxError>;

const RATE: u32 = 50;

/// The load tests of this file run one at a time: each needs the two cores to itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CALLS: usize = 300;
const CONCURRENCY: usize = 64;

/// What the upstream saw: arrival times (seconds) and which were answered 429.
#[derive(Default)]
struct Seen {
    arrivals: Mutex<Vec<(f64, bool)>>,
}

impl Seen {
    fn attempts(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
    fn throttled(&self) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| *t)
            .count()
    }
    /// The most requests that arrived within any one second.
    #[cfg(feature = "redis")]
    fn busiest_second(&self) -> usize {
        let mut times: Vec<f64> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect();
        times.sort_by(f64::total_cmp);
        let mut best = 0;
        let mut from = 0;
        for to in 0..times.len() {
            while times[to] - times[from] >= 1.0 {
                from += 1;
            }
            best = best.max(to - from + 1);
        }
        best
    }
}

/// A server-side GCRA: 50 per second, burst 10, 429 with `Retry-After: 1`.
#[cfg(feature = "redis")]
struct Gcra {
    start: Instant,
    tat: Mutex<Duration>,
    seen: Arc<Seen>,
}

#[cfg(feature = "redis")]
impl Respond for Gcra {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let interval = Duration::from_secs(1) / RATE;
        let tau = interval * 9;
        let now = self.start.elapsed();
        let mut tat = self.tat.lock().unwrap();
        let next = (*tat).max(now);
        let throttled = next - now > tau;
        self.seen
            .arrivals
            .lock()
            .unwrap()
            .push((now.as_secs_f64(), throttled));
        if throttled {
            return ResponseTemplate::new(429).insert_header("retry-after", "1");
        }
        *tat = next + interval;
        ResponseTemplate::new(200)
    }
}

/// A fixed window of 50 per second that says so on every answer, in the IETF form:
/// `RateLimit-Policy: "default";q=50;w=1` and `RateLimit: "default";r=<remaining>;t=<reset>`; above
/// the limit, 429 with `Retry-After` to the end of the window.
struct Window {
    start: Instant,
    state: Mutex<(u64, u32)>,
    seen: Arc<Seen>,
}

impl Respond for Window {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let now = self.start.elapsed();
        let mut state = self.state.lock().unwrap();
        let window = now.as_secs();
        if state.0 != window {
            *state = (window, 0);
        }
        state.1 += 1;
        let throttled = state.1 > RATE;
        self.seen
            .arrivals
            .lock()
            .unwrap()
            .push((now.as_secs_f64(), throttled));
        let reset = (Duration::from_secs(window + 1) - now).as_secs_f64();
        let remaining = RATE.saturating_sub(state.1);
        let template = if throttled {
            ResponseTemplate::new(429).insert_header("retry-after", format!("{reset:.3}").as_str())
        } else {
            ResponseTemplate::new(200)
        };
        template
            .insert_header(
                "ratelimit-policy",
                format!("\"default\";q={RATE};w=1").as_str(),
            )
            .insert_header(
                "ratelimit",
                format!("\"default\";r={remaining};t={reset:.3}").as_str(),
            )
    }
}

/// What the callers saw.
#[derive(Debug, Default)]
struct Callers {
    succeeded: usize,
    failed: usize,
    /// Attempts sent after some caller had received an answer, and those of them answered 429.
    attempts_after_first_answer: usize,
    throttled_after_first_answer: usize,
}

/// `CALLS` calls from `CONCURRENCY` callers spread over `services`; a call answered 429 or refused
/// by the limiter goes again (up to 20 times).
async fn drive(url: &str, services: Vec<Service>) -> (Callers, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let service = services[i % services.len()].clone();
            let next = next.clone();
            let answered = answered.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut callers = Callers::default();
                while next.fetch_add(1, Ordering::Relaxed) < CALLS {
                    let mut ok = false;
                    for _ in 0..20 {
                        let mut request = Request::get(format!("{url}/items"))
                            .body(Empty::<Bytes>::new())
                            .unwrap();
                        request
                            .extensions_mut()
                            .insert(IntegrationName::new("upstream"));
                        let informed = answered.load(Ordering::Relaxed);
                        match service.clone().oneshot(request).await {
                            Ok(response) => {
                                answered.store(true, Ordering::Relaxed);
                                let status = response.status();
                                let _ = response.into_body().collect().await;
                                if informed {
                                    callers.attempts_after_first_answer += 1;
                                }
                                if status == StatusCode::OK {
                                    ok = true;
                                    break;
                                }
                                if informed {
                                    callers.throttled_after_first_answer += 1;
                                }
                            }
                            Err(error) => {
                                let limited = error
                                    .downcast_ref::<RateLimited>()
                                    .unwrap_or_else(|| panic!("unexpected error {error}"));
                                let wait =
                                    limited.retry_after().unwrap_or(Duration::from_millis(100));
                                tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                            }
                        }
                    }
                    if ok {
                        callers.succeeded += 1;
                    } else {
                        callers.failed += 1;
                    }
                }
                callers
            })
        })
        .collect();
    let mut total = Callers::default();
    for worker in workers {
        let callers = worker.await.unwrap();
        total.succeeded += callers.succeeded;
        total.failed += callers.failed;
        total.attempts_after_first_answer += callers.attempts_after_first_answer;
        total.throttled_after_first_answer += callers.throttled_after_first_answer;
    }
    (total, start.elapsed())
}

fn service(limiter: RateLimiter) -> Service {
    let transport = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter))
            .service(transport)
            .map_err(Into::into),
    )
}

fn policy() -> RateLimitPolicy {
    // No quota; waits long enough for any pause the server asks.
    RateLimitPolicy::new([]).with_max_wait(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_sends_ratelimit_headers_paces_the_key() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = MockServer::start().await;
    let seen = Arc::new(Seen::default());
    Mock::given(method("GET"))
        .respond_with(Window {
            start: Instant::now(),
            state: Mutex::new((0, 0)),
            seen: seen.clone(),
        })
        .mount(&server)
        .await;
    let (callers, elapsed) =
        drive(&server.uri(), vec![service(RateLimiter::memory(policy()))]).await;
    let share =
        callers.throttled_after_first_answer as f64 / callers.attempts_after_first_answer as f64;
    println!(
        "RateLimit headers: {}/{CALLS} succeeded; {} attempts, {} answered 429; after the first \
         answer {} attempts, {} answered 429 ({:.2} %); {:.2} s (ideal {:.2} s)",
        callers.succeeded,
        seen.attempts(),
        seen.throttled(),
        callers.attempts_after_first_answer,
        callers.throttled_after_first_answer,
        100.0 * share,
        elapsed.as_secs_f64(),
        (CALLS as f64 - f64::from(RATE)) / f64::from(RATE),
    );
    assert_eq!(callers.succeeded, CALLS, "{callers:?}");
    // Issue 13: at most 1 % of attempts answered 429 after the first response. Regression: the
    // first answers told a `remaining` that the calls still in flight had already spent (1.2 % to
    // 5 % measured); the limiter now subtracts its calls in flight, and slow start keeps the first
    // wave to 10. A count, not a time: it holds however slowly a loaded machine runs the callers.
    assert!(share <= 0.01, "{share:.4}: {callers:?}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_limiters_sharing_redis_converge_together_on_one_upstream_limit() {
    use integration_ratelimit::RedisOptions;
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    let _alone = ONE_AT_A_TIME.lock().await;
    let url = integration_core::testing::redis_url();
    let prefix = format!(
        "ratelimit-test:converge:{}:{}",
        std::process::id(),
        fastrand::u64(..)
    );
    let server = MockServer::start().await;
    let seen = Arc::new(Seen::default());
    Mock::given(method("GET"))
        .respond_with(Gcra {
            start: Instant::now(),
            tat: Mutex::new(Duration::ZERO),
            seen: seen.clone(),
        })
        .mount(&server)
        .await;
    let mut services = Vec::new();
    for _ in 0..4 {
        // Each limiter has its own connection, as separate processes would.
        let client = redis::Client::open(url.as_str()).unwrap();
        let config =
            ConnectionManagerConfig::new().set_connection_timeout(Some(Duration::from_millis(500)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        // A generous timeout, so a loaded machine does not send a limiter to its fallback.
        let options = RedisOptions::new()
            .with_timeout(Duration::from_millis(500))
            .with_expected_replicas(4);
        services.push(service(RateLimiter::redis(
            connection,
            prefix.clone(),
            policy(),
            options,
        )));
    }
    let (callers, elapsed) = drive(&server.uri(), services).await;
    let share = seen.throttled() as f64 / seen.attempts() as f64;
    println!(
        "4 limiters, one Redis: {}/{CALLS} succeeded; {} attempts, {} answered 429 ({:.1} %), {} \
         of them after the first answer; busiest second {} attempts (limit {RATE}/s, burst 10); \
         {:.2} s (ideal {:.2} s)",
        callers.succeeded,
        seen.attempts(),
        seen.throttled(),
        100.0 * share,
        callers.throttled_after_first_answer,
        seen.busiest_second(),
        elapsed.as_secs_f64(),
        f64::from(CALLS as u32 - 10) / f64::from(RATE),
    );
    assert_eq!(callers.succeeded, CALLS, "{callers:?}");
    // Issue 13: at most 5 % of attempts answered 429. Regression: the first wave (64 calls at
    // once, nothing known yet) met the server's burst of 10 and drew about 54 429s; with slow
    // start off by default the bounds here were loosened to 10 % after the first answer and 25 %
    // in all. Slow start (on by default) now sends the key's first window once for all four (the
    // probe is in the shared state), and its first throttle tells the server's rate: measured 2.0 %
    // and 2.3 % in all (6 and 7 of about 306), 3 and 4 after the first answer. Asserted on counts,
    // which hold whatever the interleaving on a loaded machine.
    let after = callers.throttled_after_first_answer as f64
        / callers.attempts_after_first_answer.max(1) as f64;
    assert!(
        after <= 0.05,
        "{after:.4} after the first answer; {callers:?}"
    );
    assert!(
        share <= 0.05,
        "{} 429s of {} attempts; {callers:?}",
        seen.throttled(),
        seen.attempts()
    );
}
