//! End to end, on the real clock: an upstream (wiremock) that answers 429 to any request above 50 in
//! the current one-second window, and a burst of 1,000 calls through the layer paced just under
//! that quota.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use integration_core::ext::IntegrationName;
use integration_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy, RateLimiter};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

const LIMIT: usize = 50;
const CALLS: usize = 1_000;
/// The client's quota: the upstream's less a tenth.
const PACE: u32 = 45;

/// 50 requests per fixed one-second window, counted from the first request; above that, 429 with
/// `Retry-After` until the window ends. Every answer carries `X-RateLimit-Limit`, `-Remaining` and
/// `-Reset` (seconds to the end of the window), as GitHub-style APIs do.
struct FixedWindow {
    state: Mutex<Option<(Instant, u64, usize)>>,
    throttled: AtomicUsize,
}

impl Respond for FixedWindow {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let (start, window, count) = state.get_or_insert((now, 0, 0));
        let elapsed = now.duration_since(*start);
        let current = elapsed.as_secs();
        if current != *window {
            *window = current;
            *count = 0;
        }
        *count += 1;
        let reset = Duration::from_secs(current + 1) - elapsed;
        let reset = format!("{:.3}", reset.as_secs_f64());
        if *count > LIMIT {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return ResponseTemplate::new(429)
                .insert_header("retry-after", reset.as_str())
                .insert_header("x-ratelimit-limit", LIMIT.to_string().as_str())
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.as_str());
        }
        ResponseTemplate::new(200)
            .insert_header("x-ratelimit-limit", LIMIT.to_string().as_str())
            .insert_header(
                "x-ratelimit-remaining",
                (LIMIT - *count).to_string().as_str(),
            )
            .insert_header("x-ratelimit-reset", reset.as_str())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_calls_at_the_upstreams_quota_sees_no_429() {
    let server = MockServer::start().await;
    let upstream = std::sync::Arc::new(FixedWindow {
        state: Mutex::new(None),
        throttled: AtomicUsize::new(0),
    });
    Mock::given(method("GET"))
        .respond_with(ArcResponder(upstream.clone()))
        .mount(&server)
        .await;

    // The upstream's quota less a tenth, evenly spaced (burst 1), waiting as long as the burst
    // needs. Regression (load): at exactly the upstream's 50 per second, a request that reached
    // the upstream a little sooner after its permit than the first one did landed in the window
    // before and made it 51 (7 of 1,000 answered 429 on a loaded machine): pacing at a quota
    // leaves no room for the jitter of the way to the server. A tenth (5 permits, 100 ms a
    // window) is the margin a client keeps in practice.
    let policy = RateLimitPolicy::new([Quota::new(PACE, Duration::from_secs(1), 1).unwrap()])
        .with_max_wait(Duration::from_secs(60));
    let limiter = RateLimiter::memory(policy);
    let transport = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(transport);

    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut request = Request::get(format!("{}/items/{i}", server.uri()))
                .body(Empty::<Bytes>::new())
                .unwrap();
            request
                .extensions_mut()
                .insert(IntegrationName::new("upstream"));
            let service = service.clone();
            tokio::spawn(async move {
                let response = service
                    .oneshot(request)
                    .await
                    .expect("every call completes");
                let status = response.status();
                let _ = response.into_body().collect().await;
                status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    let too_many = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(too_many, 0, "no 429 reached the caller");
    assert_eq!(
        upstream.throttled.load(Ordering::Relaxed),
        0,
        "the upstream never throttled"
    );
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    // 1,000 calls at 45 per second take about 22 s: the limiter paced them rather than dropping any.
    let paced = Duration::from_secs_f64((CALLS - 1) as f64 / f64::from(PACE));
    assert!(elapsed >= paced, "{elapsed:?}, paced {paced:?}");
}

/// Shares one responder between the mock and the test's assertions.
struct ArcResponder(std::sync::Arc<FixedWindow>);

impl Respond for ArcResponder {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}
