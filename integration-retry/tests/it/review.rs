//! Regression tests from the review of the crate: rules that no test pinned, and bugs that were
//! fixed. Each test names the rule or the bug.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use integration_core::error::{AttemptTimeout, CircuitOpen};
use integration_core::ext::{Attempts, Deadline, IntegrationName};
use integration_core::names;
use integration_core::{ErrorKind, RetryReason};
use integration_retry::{
    AttemptTimeoutLayer, BreakerPolicy, BreakerState, CircuitBreakerLayer, DeadlineLayer, Jitter,
    RetryBudget, RetryLayer, RetryPolicy,
};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_test::mock;

use crate::common::*;

fn layer(policy: RetryPolicy) -> RetryLayer {
    RetryLayer::new(policy).with_budget(RetryBudget::unlimited())
}

/// Jitter at one half: every full-jitter delay is half its ceiling.
fn half() -> RetryPolicy {
    RetryPolicy::default().with_jitter(Jitter::fixed(0.5))
}

fn attempts_of(response: &Res) -> Attempts {
    response
        .extensions()
        .get::<Attempts>()
        .cloned()
        .expect("the final response carries Attempts")
}

fn with_header(mut response: Res, name: &'static str, value: &str) -> Res {
    response.headers_mut().insert(name, value.parse().unwrap());
    response
}

/// The outcome of a call that must end without another attempt: a call that went on to retry
/// would wait for an answer for ever, so it fails here instead of hanging the test.
async fn ended(call: tokio::task::JoinHandle<Outcome>) -> integration_core::Error {
    let outcome = tokio::time::timeout(Duration::from_secs(24 * 3600), call)
        .await
        .expect("the call ended at once instead of retrying")
        .unwrap();
    integration_core::Error::from(outcome.expect_err("an error"))
}

/// The gap between the first and the second attempt of a GET answered `first`, then 200.
async fn gap_after(policy: RetryPolicy, first: Res) -> (Duration, Res) {
    let (call, mut handle) = spawn_call(layer(policy), request("GET"));
    let start = Instant::now();
    answer(&mut handle, first).await;
    let (_, send) = handle.next_request().await.expect("a second attempt");
    let gap = start.elapsed();
    send.send_response(status(200));
    (gap, call.await.unwrap().unwrap())
}

// ---- Retry-After as an HTTP-date ----

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_measured_against_the_date_header_and_never_undercut() {
    // `Date` and `Retry-After` 7 s apart, both far in the past of the wall clock: the hint is the
    // difference (the response's own clock), not "now".
    let answer = with_header(
        with_header(status(503), "date", "Mon, 01 Jul 2024 12:00:00 GMT"),
        "retry-after",
        "Mon, 01 Jul 2024 12:00:07 GMT",
    );
    let (gap, response) = gap_after(half(), answer).await;
    assert_eq!(gap, Duration::from_secs(7));
    assert_eq!(attempts_of(&response).waited(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_in_the_past_means_now() {
    // A date long past (and no `Date` header): retry now, that is after the plain backoff
    // (0.5 * 1 s after a 503), neither failing nor waiting longer.
    let answer = with_header(status(503), "retry-after", "Sun, 06 Nov 1994 08:49:37 GMT");
    let (gap, response) = gap_after(half(), answer).await;
    assert_eq!(gap, Duration::from_millis(500));
    assert_eq!(attempts_of(&response).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_in_the_future_of_the_wall_clock_is_honoured() {
    // No `Date` header: the date is measured against the wall clock. One day ahead is past the 60 s
    // cap, so the call fails at once with the hint, which proves the date was read as a delay from
    // now (not ignored, not read as zero).
    #[allow(clippy::disallowed_methods)]
    // The header speaks in dates: the wall clock is the reference.
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    let answer = with_header(
        status(429),
        "retry-after",
        &httpdate::fmt_http_date(tomorrow),
    );
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    crate::common::answer(&mut handle, answer).await;
    let error = ended(call).await;
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    let hint = error.retry_after().expect("the hint");
    assert!(
        hint > Duration::from_secs(86_300) && hint <= Duration::from_secs(86_400),
        "{hint:?}"
    );
}

// ---- The cap on honoured Retry-After (default 60 s) ----

#[tokio::test(start_paused = true)]
async fn retry_after_equal_to_the_default_cap_of_60_s_is_honoured() {
    let (gap, _) = gap_after(half(), status_retry_after(429, 60)).await;
    assert_eq!(gap, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn retry_after_just_past_the_default_cap_of_60_s_fails_at_once_with_the_hint() {
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    answer(&mut handle, status_retry_after(429, 61)).await;
    let error = ended(call).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(61)));
    assert_no_more_attempts(&mut handle).await;
}

// ---- Never sleep into the deadline: the boundary ----

#[tokio::test(start_paused = true)]
async fn a_wait_exactly_as_long_as_the_time_left_fails_at_once() {
    // Backoff after a 503: 0.5 * 1 s = 500 ms, exactly the time left. Sleeping would send the next
    // attempt at the deadline itself, that is into the timeout.
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(503)).await;
    let error = ended(call).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(error.is_deadline(), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(500)));
}

// ---- The design's budget defaults ----

#[tokio::test(start_paused = true)]
async fn default_budget_is_20_percent_over_10_s_with_a_floor_of_10_per_second() {
    let budget = RetryBudget::default();
    assert_eq!(budget.window(), Duration::from_secs(10));
    assert_eq!(budget.min_per_second(), 10);
    assert_eq!(budget.ratio(), 0.2);

    // Without traffic, the floor alone: 10 per second over the 10 s window.
    let quiet = RetryBudget::default();
    for n in 0..100 {
        assert!(quiet.withdraw(), "retry {n} is within the floor");
    }
    assert!(!quiet.withdraw(), "the 101st retry passes the floor");

    // With 1000 calls in the window: the floor plus 20 % of them.
    let busy = RetryBudget::default();
    for _ in 0..1000 {
        busy.deposit();
    }
    assert_eq!(busy.remaining(), 300);
    for _ in 0..300 {
        assert!(busy.withdraw());
    }
    assert!(!busy.withdraw());

    // Everything leaves the window after 10 s: the floor is back, the calls are forgotten.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(busy.remaining(), 100);
}

// ---- The 401 replay is not a failure retry ----

#[tokio::test(start_paused = true)]
async fn a_401_replay_spends_no_budget() {
    // A budget that allows not a single retry: the credential replay still happens, and the
    // budget is untouched afterwards.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.0);
    let layer = RetryLayer::new(half()).with_budget(budget);
    let (call, mut handle) = spawn_call(layer, request("GET"));
    let mut unauthorized = status(401);
    unauthorized
        .extensions_mut()
        .insert(integration_core::ext::CredentialInvalidated);
    answer(&mut handle, unauthorized).await;
    answer(&mut handle, status(200)).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        attempts_of(&response).reasons(),
        &[RetryReason::Unauthorized]
    );
}

// ---- Bug: an "endless" timeout panicked ----

#[tokio::test(start_paused = true)]
async fn regression_attempt_timeout_of_duration_max_does_not_panic() {
    // `Instant::now() + Duration::MAX` overflowed and panicked in `call`: a configuration that means
    // "no attempt timeout" brought the caller's task down.
    let (call, mut handle) = spawn_call(AttemptTimeoutLayer::new(Duration::MAX), request("GET"));
    answer(&mut handle, status(204)).await;
    assert_eq!(
        call.await
            .expect("the call must not panic")
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(start_paused = true)]
async fn regression_attempt_timeout_of_duration_max_is_still_clipped_to_the_deadline() {
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let start = Instant::now();
    let (call, mut handle) = spawn_call(AttemptTimeoutLayer::new(Duration::MAX), request);
    let (_request, _pending) = handle.next_request().await.unwrap();
    let error = call.await.expect("no panic").unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(
        error.is::<integration_core::error::DeadlineExceeded>(),
        "{error}"
    );
    assert!(!error.is::<AttemptTimeout>());
}

#[tokio::test(start_paused = true)]
async fn regression_deadline_layer_of_duration_max_does_not_panic() {
    // `Deadline::after(Duration::MAX)` overflowed the same way.
    let layers = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::MAX))
        .layer(layer(half()));
    let (call, mut handle) = spawn_call(layers, request("GET"));
    let sent = answer(&mut handle, status(503)).await;
    assert!(Deadline::of(&sent).is_some());
    answer(&mut handle, status(200)).await;
    let response = call.await.expect("the call must not panic").unwrap();
    assert_eq!(attempts_of(&response).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn regression_breaker_open_duration_of_duration_max_does_not_panic() {
    // `Duration::MAX.mul_f64(..)` and `now + period` panicked inside the registry's lock when the
    // breaker opened: "stay open until restarted" crashed the call that tripped it.
    let layer = CircuitBreakerLayer::new(
        BreakerPolicy::default()
            .with_consecutive_failures(1)
            .with_open_duration(Duration::MAX)
            .with_jitter(Jitter::fixed(0.5)),
    );
    let (service, mut handle) = mock::pair::<Req, Res>();
    let mut github = request("GET");
    github
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    let call = tokio::spawn(layer.layer(service.clone()).oneshot(github.clone_shape()));
    answer(&mut handle, status(503)).await;
    let response = call.await.expect("the call must not panic").unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        layer.state("github|api.example.com"),
        Some(BreakerState::Open)
    );
    // Still open a year later.
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    let refused = layer
        .layer(service)
        .oneshot(github)
        .await
        .expect_err("refused");
    assert!(refused.is::<CircuitOpen>());
}

// ---- Bug: a forgotten breaker kept exporting its last state ----

#[tokio::test(start_paused = true)]
async fn regression_a_forgotten_breaker_reports_closed_on_its_gauge() {
    // Past `max_keys` the least recently used breaker is forgotten, which behaves as closed; its
    // gauge kept saying "open" (2) for ever, an alert that could never clear.
    let recorder = recorder();
    let _guard = metrics::set_default_local_recorder(recorder);
    let layer = CircuitBreakerLayer::new(
        BreakerPolicy::default()
            .with_consecutive_failures(1)
            .with_max_keys(1),
    );
    let (service, mut handle) = mock::pair::<Req, Res>();
    let to = |host: &str| {
        let mut request = request("GET");
        *request.uri_mut() = format!("https://{host}/").parse().unwrap();
        request
            .extensions_mut()
            .insert(IntegrationName::new("github"));
        request
    };
    let first = tokio::spawn(layer.layer(service.clone()).oneshot(to("a.example.com")));
    answer(&mut handle, status(503)).await;
    first.await.unwrap().unwrap();
    let a = [
        (names::INTEGRATION, "github"),
        (names::SERVER_ADDRESS, "a.example.com"),
    ];
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &a), Some(2.0));

    tokio::time::advance(Duration::from_millis(1)).await;
    let second = tokio::spawn(layer.layer(service).oneshot(to("b.example.com")));
    answer(&mut handle, status(200)).await;
    second.await.unwrap().unwrap();
    assert_eq!(layer.state("github|a.example.com"), None, "forgotten");
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &a), Some(0.0));
}

trait CloneShape {
    fn clone_shape(&self) -> Self;
}

impl CloneShape for Req {
    fn clone_shape(&self) -> Self {
        let mut copy = Req::new(self.body().clone());
        *copy.method_mut() = self.method().clone();
        *copy.uri_mut() = self.uri().clone();
        *copy.headers_mut() = self.headers().clone();
        *copy.extensions_mut() = self.extensions().clone();
        copy
    }
}
