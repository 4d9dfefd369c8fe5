//! Behaviour rules of the layer, pinned on tokio's paused clock.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::BoxError;
use integration_core::error::RateLimited;
use integration_core::ext::{Deadline, IntegrationName};
use integration_ratelimit::{Quota, RateLimitKey, RateLimitLayer, RateLimitPolicy, RateLimiter};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// What the upstream saw: when each request arrived (seconds since the test started), and its path.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(f64, String)>>>);

impl Log {
    fn times(&self) -> Vec<f64> {
        self.0.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

type Reply = fn(&str) -> Response<String>;

fn ok(_: &str) -> Response<String> {
    Response::new(String::new())
}

/// An upstream that logs every request and answers with `reply(path)`.
fn upstream(
    start: Instant,
    log: Log,
    reply: Reply,
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |request: Request<String>| {
        let log = log.clone();
        async move {
            let path = request.uri().path().to_owned();
            log.0
                .lock()
                .unwrap()
                .push((start.elapsed().as_secs_f64(), path.clone()));
            Ok::<_, Infallible>(reply(&path))
        }
    })
}

fn request(path: &str) -> Request<String> {
    let mut request = Request::get(format!("https://api.example.com{path}"))
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("example"));
    request
}

fn limited(error: &BoxError) -> &RateLimited {
    error
        .downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("expected RateLimited, got {error}"))
}

fn stack(
    limiter: &RateLimiter,
    log: &Log,
    reply: Reply,
) -> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone()))
        .service(upstream(Instant::now(), log.clone(), reply))
}

/// Sends `n` calls at once, each through its own clone of `service`; returns their results in order.
async fn burst<S>(service: &S, n: usize, path: &str) -> Vec<Result<Response<String>, BoxError>>
where
    S: Service<Request<String>, Response = Response<String>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(service.clone().oneshot(request(path))))
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_its_permit_up_to_max_wait() {
    let policy = RateLimitPolicy::new([Quota::per_second(1).unwrap()]).with_max_wait(secs(5));
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    let results = burst(&service, 3, "/").await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(log.times(), vec![0.0, 1.0, 2.0]);
}

#[tokio::test(start_paused = true)]
async fn with_max_wait_zero_a_call_over_the_quota_fails_fast_with_retry_after() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::per_second(1).unwrap()]));
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    let start = Instant::now();
    let results = burst(&service, 2, "/").await;
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err();
    let limited = limited(error);
    assert!(!limited.is_by_server());
    assert_eq!(limited.retry_after(), Some(secs(1)));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "failing fast means no wait"
    );
    assert_eq!(log.len(), 1, "the refused call never reached the upstream");
    // The typed error converts to the core error with its hint.
    let error = integration_core::Error::from(results.into_iter().nth(1).unwrap().unwrap_err());
    assert!(error.is_rate_limited());
    assert_eq!(error.retry_after(), Some(secs(1)));
}

/// Regression (found by the criterion benchmark): a fresh key with the layer's defaults (no quota,
/// `max_wait` 0, slow start on) refused every call past its first window, because the rate probe
/// would have held it. The probe is a courtesy: with nothing to wait for, every call goes at once.
#[tokio::test(start_paused = true)]
async fn with_max_wait_zero_the_probe_of_a_fresh_key_refuses_no_call() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]));
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    let start = Instant::now();
    for round in 0..3 {
        let results = burst(&service, 20, "/").await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {:?}",
            results.iter().filter_map(|r| r.as_ref().err()).next()
        );
    }
    assert_eq!(log.len(), 60);
    assert_eq!(start.elapsed(), Duration::ZERO, "no call waited");
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_bound_fails_fast_with_the_hint() {
    let policy = RateLimitPolicy::new([Quota::per_second(1).unwrap()])
        .with_max_wait(Duration::from_millis(1500));
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    let start = Instant::now();
    let mut results = burst(&service, 3, "/").await;
    let third = results.pop().unwrap().unwrap_err();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(limited(&third).retry_after(), Some(secs(2)));
    assert_eq!(log.times(), vec![0.0, 1.0]);
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_gets_its_burst_back() {
    let quota = Quota::new(10, secs(1), 5).unwrap();
    let limiter = RateLimiter::memory(RateLimitPolicy::new([quota]));
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    // A new key's burst starts empty: one permit, the next one interval later.
    let results = burst(&service, 6, "/").await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(
        limited(results[1].as_ref().unwrap_err()).retry_after(),
        Some(Duration::from_millis(100))
    );
    // Idle for half a second, it has built up its burst of 5.
    tokio::time::advance(Duration::from_millis(500)).await;
    let results = burst(&service, 6, "/").await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
}

#[tokio::test(start_paused = true)]
async fn every_quota_of_a_key_applies_together() {
    // 2 per second and 5 per minute; a caller tries every 100 ms for 70 s and never waits.
    let policy =
        RateLimitPolicy::new([Quota::per_second(2).unwrap(), Quota::per_minute(5).unwrap()]);
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let mut service = stack(&limiter, &log, ok);
    for _ in 0..700 {
        let _ = service.ready().await.unwrap().call(request("/")).await;
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // A new key's first second goes at each quota's pace: the second's burst is empty (one per
    // 500 ms from the start); the minute's interval (12 s) is longer than a second, so its burst is
    // whole: its 5 permits, then one per 12 s.
    let times: Vec<f64> = log
        .times()
        .iter()
        .map(|t| (t * 10.0).round() / 10.0)
        .collect();
    assert_eq!(
        times,
        vec![0.0, 0.5, 1.0, 1.5, 2.0, 12.0, 24.0, 36.0, 48.0, 60.0]
    );
}

/// An upstream that throttles `/throttle` with `Retry-After: 5`.
fn throttles(path: &str) -> Response<String> {
    match path {
        "/throttle" => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "5")
            .body(String::new())
            .unwrap(),
        "/hour" => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "3600")
            .body(String::new())
            .unwrap(),
        "/exhausted" => Response::builder()
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", "2")
            .body(String::new())
            .unwrap(),
        "/malformed" => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "soon")
            .header("x-ratelimit-remaining", "-1")
            .body(String::new())
            .unwrap(),
        "/moved" => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header("retry-after", "60")
            .body(String::new())
            .unwrap(),
        _ => Response::new(String::new()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_pause_applies_to_every_caller_of_the_key() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_max_wait(secs(10)));
    let log = Log::default();
    // Two services built from the same limiter: two parts of a program calling the same API.
    let first = stack(&limiter, &log, throttles);
    let second = stack(&limiter, &log, throttles);
    let response = first.clone().oneshot(request("/throttle")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the 429 itself goes back to the caller (the retry layer decides about it)"
    );
    let results = burst(&second, 3, "/").await;
    assert!(results.iter().all(Result::is_ok));
    // Nobody went during the pause. After it, the key's learned rate spaces the waiters: one call
    // had been sent in the second before the 429, so the curve starts at 0.7 of it; each permit is
    // spaced at the curve's rate at its own instant: 1/0.7 s, then 1/1.056 s (1.43 s along it).
    let times: Vec<f64> = log
        .times()
        .iter()
        .map(|t| (t * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(times, vec![0.0, 5.0, 6.429, 7.376]);
}

#[tokio::test(start_paused = true)]
async fn without_adaptation_or_quota_the_waiters_leave_together_when_the_pause_ends() {
    let policy = RateLimitPolicy::new([])
        .with_max_wait(secs(10))
        .with_adaptation(None);
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    service.clone().oneshot(request("/throttle")).await.unwrap();
    let results = burst(&service, 3, "/").await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(log.times(), vec![0.0, 5.0, 5.0, 5.0]);
}

/// An upstream that logs every request and answers `/throttle` after 500 ms with a 429
/// (Retry-After 5); every other path succeeds at once.
fn order_upstream(
    start: Instant,
    log: Log,
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |request: Request<String>| {
        let log = log.clone();
        async move {
            let path = request.uri().path().to_owned();
            log.0
                .lock()
                .unwrap()
                .push((start.elapsed().as_secs_f64(), path.clone()));
            if path == "/throttle" {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok::<_, Infallible>(throttles(&path))
        }
    })
}

/// Regression (issue 13): a caller that had reserved its permit before another caller's 429 slept
/// out the pause and then went at its end together with every other such caller, whatever the
/// key's pace. Now it takes a new permit after the pause, in turn.
#[tokio::test(start_paused = true)]
async fn callers_waiting_when_a_pause_starts_leave_after_it_at_the_keys_pace_in_order() {
    // One per second, burst 1; no adaptation, so the pace after the pause is the quota's.
    let policy = RateLimitPolicy::new([Quota::new(1, secs(1), 1).unwrap()])
        .with_max_wait(secs(30))
        .with_adaptation(None);
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone()))
        .service(order_upstream(Instant::now(), log.clone()));
    // The first call goes at t=0 and is answered at 0.5 s: a 429 pausing the key until 5.5 s. The
    // four others had reserved t=1..4 meanwhile.
    let mut tasks = vec![tokio::spawn(service.clone().oneshot(request("/throttle")))];
    for i in 0..4 {
        tasks.push(tokio::spawn(
            service.clone().oneshot(request(&format!("/{i}"))),
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let log = log.0.lock().unwrap().clone();
    let paths: Vec<&str> = log.iter().map(|(_, path)| path.as_str()).collect();
    assert_eq!(paths, vec!["/throttle", "/0", "/1", "/2", "/3"]);
    let times: Vec<f64> = log.iter().map(|(t, _)| *t).collect();
    // Not [0, 5.5, 5.5, 5.5, 5.5]: after the pause one per second, in arrival order.
    assert_eq!(times, vec![0.0, 5.5, 6.5, 7.5, 8.5]);
}

#[tokio::test(start_paused = true)]
async fn after_a_throttle_a_key_without_quota_leaves_in_arrival_order_one_at_a_time() {
    // Without slow start, so the 20 calls go at once and the throttle learns from their rate (the
    // probe's estimate is pinned in `gcra`'s tests).
    let limiter = RateLimiter::memory(
        RateLimitPolicy::new([])
            .with_max_wait(secs(60))
            .with_initial_window(0),
    );
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    // 20 calls in the second before the 429: the learned rate starts at 0.7 x 20 = 14 per second.
    let results = burst(&service, 20, "/").await;
    assert!(results.iter().all(Result::is_ok));
    service.clone().oneshot(request("/throttle")).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| tokio::spawn(service.clone().oneshot(request(&format!("/w{i}")))))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let log = log.0.lock().unwrap().clone();
    let waiters: Vec<(f64, String)> = log.into_iter().skip(21).collect();
    let paths: Vec<String> = waiters.iter().map(|(_, p)| p.clone()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("/w{i}")).collect();
    assert_eq!(paths, expected, "arrival order");
    assert!((waiters[0].0 - 5.0).abs() < 1e-6, "{waiters:?}");
    for pair in waiters.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        // 1/14 s apart at first; each permit is spaced at the curve's rate at its own instant, so
        // the gaps shrink as the curve climbs towards 20/s (K = 2.5 s).
        assert!(gap > 0.05 && gap < 0.0715, "{waiters:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_pause_does_not_touch_other_keys() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_max_wait(secs(10)));
    let log = Log::default();
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(limiter.clone()).with_key(|request: &Request<String>| {
                let tenant = request.headers().get("x-tenant")?.to_str().ok()?;
                Some(RateLimitKey::from(format!("tenant:{tenant}")))
            }),
        )
        .service(upstream(Instant::now(), log.clone(), throttles));
    let call = |path: &str, tenant: &str| {
        let mut request = request(path);
        request
            .headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        service.clone().oneshot(request)
    };
    call("/throttle", "a").await.unwrap();
    call("/", "b").await.unwrap();
    assert_eq!(log.times(), vec![0.0, 0.0], "tenant b is not paused");
    call("/", "a").await.unwrap();
    assert_eq!(log.times(), vec![0.0, 0.0, 5.0], "tenant a is");
}

#[tokio::test(start_paused = true)]
async fn a_pause_longer_than_max_server_pause_fails_fast_with_the_servers_hint() {
    let policy = RateLimitPolicy::new([])
        .with_max_wait(secs(7200))
        .with_max_server_pause(Duration::from_secs(600));
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    service.clone().oneshot(request("/hour")).await.unwrap();
    tokio::time::advance(secs(100)).await;
    let start = Instant::now();
    let error = service.clone().oneshot(request("/")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let limited = limited(&error);
    assert!(limited.is_by_server());
    assert_eq!(limited.retry_after(), Some(secs(3500)));
    assert_eq!(limited.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(log.len(), 1);
    // Once the hour is over the key works again.
    tokio::time::advance(secs(3500)).await;
    service.clone().oneshot(request("/")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_pause_longer_than_max_wait_fails_fast_as_by_server() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_max_wait(secs(1)));
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    service.clone().oneshot(request("/throttle")).await.unwrap();
    let error = service.clone().oneshot(request("/")).await.unwrap_err();
    let limited = limited(&error);
    assert!(limited.is_by_server());
    assert_eq!(limited.retry_after(), Some(secs(5)));
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_with_a_reset_pauses_the_key() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_max_wait(secs(10)));
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    let response = service
        .clone()
        .oneshot(request("/exhausted"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    service.clone().oneshot(request("/")).await.unwrap();
    assert_eq!(log.times(), vec![0.0, 2.0]);
}

#[tokio::test(start_paused = true)]
async fn malformed_signals_and_retry_after_outside_429_and_503_are_ignored() {
    // Without adaptation: a 429 slows an adaptive key even without a usable hint (next test).
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_adaptation(None));
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    service
        .clone()
        .oneshot(request("/malformed"))
        .await
        .unwrap();
    service.clone().oneshot(request("/moved")).await.unwrap();
    service.clone().oneshot(request("/")).await.unwrap();
    assert_eq!(log.times(), vec![0.0, 0.0, 0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_a_usable_hint_pauses_nothing_but_slows_an_adaptive_key() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([]).with_max_wait(secs(10)));
    let log = Log::default();
    let service = stack(&limiter, &log, throttles);
    service
        .clone()
        .oneshot(request("/malformed"))
        .await
        .unwrap();
    let results = burst(&service, 3, "/").await;
    assert!(results.iter().all(Result::is_ok));
    let times: Vec<f64> = log
        .times()
        .iter()
        .map(|t| (t * 1000.0).round() / 1000.0)
        .collect();
    // No pause (the next call goes at once), then the learned curve from 0.7 per second, each
    // permit spaced at the curve's rate at its own instant.
    assert_eq!(times, vec![0.0, 0.0, 1.429, 2.376]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_never_passes_the_request_deadline() {
    let policy = RateLimitPolicy::new([Quota::new(1, secs(1), 1).unwrap()]).with_max_wait(secs(10));
    let limiter = RateLimiter::memory(policy);
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    service.clone().oneshot(request("/")).await.unwrap();
    // The next permit is 1 s away; this call must be done within 500 ms.
    let mut hurried = request("/");
    hurried
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    let start = Instant::now();
    let error = service.clone().oneshot(hurried).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "fails at once, never sleeps into the deadline"
    );
    assert_eq!(limited(&error).retry_after(), Some(secs(1)));
    // With a deadline that leaves room, the same call waits.
    let mut patient = request("/");
    patient.extensions_mut().insert(Deadline::after(secs(3)));
    service.clone().oneshot(patient).await.unwrap();
    assert_eq!(log.times(), vec![0.0, 1.0]);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_cap_bounds_calls_in_flight_per_key() {
    let policy = RateLimitPolicy::new([])
        .with_max_wait(secs(10))
        .with_max_concurrency(NonZeroUsize::new(2));
    let limiter = RateLimiter::memory(policy);
    let in_flight = Arc::new(Mutex::new((0usize, 0usize)));
    let upstream = {
        let in_flight = in_flight.clone();
        tower::service_fn(move |_request: Request<String>| {
            let in_flight = in_flight.clone();
            async move {
                {
                    let mut counts = in_flight.lock().unwrap();
                    counts.0 += 1;
                    counts.1 = counts.1.max(counts.0);
                }
                tokio::time::sleep(secs(1)).await;
                in_flight.lock().unwrap().0 -= 1;
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone()))
        .service(upstream);
    let start = Instant::now();
    let results = burst(&service, 5, "/").await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        in_flight.lock().unwrap().1,
        2,
        "never more than 2 in flight"
    );
    assert_eq!(start.elapsed(), secs(3));

    // Failing fast: a call that finds the cap reached is refused at once.
    limiter.set_policy(RateLimitPolicy::new([]).with_max_concurrency(NonZeroUsize::new(1)));
    let results = burst(&service, 2, "/").await;
    assert!(results[0].is_ok());
    assert!(
        limited(results[1].as_ref().unwrap_err())
            .retry_after()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reports_the_inner_services_readiness() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::per_second(10).unwrap()]));
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<String>, Response<String>, _>(RateLimitLayer::new(
            limiter,
        ));
    handle.allow(0);
    tokio_test_pending(&mut service);
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    // The permit is taken inside the response future: the inner service is called when it is polled.
    let response = tokio::spawn(service.call(request("/users")));
    let (received, send) = handle.next_request().await.unwrap();
    assert_eq!(received.uri().path(), "/users");
    send.send_response(Response::new("done".to_owned()));
    assert_eq!(response.await.unwrap().unwrap().into_body(), "done");
}

fn tokio_test_pending<T, U>(service: &mut tower_test::mock::Spawn<T>)
where
    T: Service<U>,
{
    assert!(service.poll_ready().is_pending());
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_keeps_each_keys_state() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::new(1, secs(10), 1).unwrap()]));
    let log = Log::default();
    let service = stack(&limiter, &log, ok);
    service.clone().oneshot(request("/")).await.unwrap();
    // The reload doubles the rate: the permit used 0 s ago still counts, so the next is 5 s away, not now.
    limiter.set_policy(RateLimitPolicy::new([Quota::new(2, secs(10), 1).unwrap()]));
    let error = service.clone().oneshot(request("/")).await.unwrap_err();
    assert_eq!(limited(&error).retry_after(), Some(secs(10)));
    assert_eq!(limiter.policy().quotas()[0].rate(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_is_not_limited() {
    let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::per_second(1).unwrap()]));
    let log = Log::default();
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(limiter).with_key(|request: &Request<String>| {
                (request.uri().path() != "/health").then(|| RateLimitKey::from("api"))
            }),
        )
        .service(upstream(Instant::now(), log.clone(), ok));
    let results = burst(&service, 5, "/health").await;
    assert!(results.iter().all(Result::is_ok));
}
