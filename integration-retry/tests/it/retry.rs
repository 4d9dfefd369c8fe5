//! The retry rules, one test each, on a paused clock with tower-test mocks.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use integration_core::body::Body;
use integration_core::error::{BudgetExhausted, DeadlineExceeded, RateLimited};
use integration_core::ext::{
    Attempt, Attempts, CredentialInvalidated, Deadline, IDEMPOTENCY_KEY, Idempotent,
    IntegrationName,
};
use integration_core::testing::capture;
use integration_core::{BoxError, Error, ErrorKind, RetryReason, names};
use integration_retry::{Backoff, DeadlineLayer, Jitter, RetryBudget, RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;
use tracing::Level;

use crate::common::*;

/// Jitter at one half: every full-jitter delay is half its ceiling.
fn half() -> RetryPolicy {
    RetryPolicy::default().with_jitter(Jitter::fixed(0.5))
}

fn layer(policy: RetryPolicy) -> RetryLayer {
    RetryLayer::new(policy).with_budget(RetryBudget::unlimited())
}

fn attempts_of(response: &Res) -> Attempts {
    response
        .extensions()
        .get::<Attempts>()
        .cloned()
        .expect("the final response carries Attempts")
}

fn error_of(outcome: Outcome) -> Error {
    let boxed = outcome.expect_err("an error");
    *boxed
        .downcast::<Error>()
        .expect("a boxed integration_core::Error")
}

#[tokio::test(start_paused = true)]
async fn safe_methods_are_retried() {
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        let (call, mut handle) = spawn_call(layer(half()), request(method));
        answer(&mut handle, status(503)).await;
        answer(&mut handle, status(503)).await;
        answer(&mut handle, status(200)).await;
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(attempts_of(&response).count(), 3, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_without_key_are_sent_once() {
    for method in ["POST", "PATCH"] {
        let (call, mut handle) = spawn_call(layer(half()), request(method));
        answer(&mut handle, status(503)).await;
        let response = call.await.unwrap().unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method}"
        );
        assert_eq!(attempts_of(&response).count(), 1, "{method}");
        assert_no_more_attempts(&mut handle).await;
    }
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_are_retried_with_an_idempotency_key() {
    for method in ["POST", "PATCH"] {
        let mut request = request(method);
        request
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, "order-42".parse().unwrap());
        let (call, mut handle) = spawn_call(layer(half()), request);
        answer(&mut handle, status(502)).await;
        let second = answer(&mut handle, status(201)).await;
        assert_eq!(second.headers()[IDEMPOTENCY_KEY], "order-42");
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{method}");
        assert_eq!(attempts_of(&response).count(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_are_retried_with_the_idempotent_flag() {
    for method in ["POST", "PATCH"] {
        let mut request = request(method);
        request.extensions_mut().insert(Idempotent(true));
        let (call, mut handle) = spawn_call(layer(half()), request);
        answer(&mut handle, status(500)).await;
        answer(&mut handle, status(200)).await;
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn idempotent_false_makes_even_a_get_final() {
    let mut request = request("GET");
    request.extensions_mut().insert(Idempotent(false));
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(503)).await;
    assert_eq!(attempts_of(&call.await.unwrap().unwrap()).count(), 1);
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn added_idempotency_key_is_the_same_on_every_attempt() {
    let policy = half().with_idempotency_key(true);
    let (call, mut handle) = spawn_call(layer(policy), request("POST"));
    let first = answer(&mut handle, status(503)).await;
    let second = answer(&mut handle, status(503)).await;
    let third = answer(&mut handle, status(200)).await;
    let key = first.headers()[IDEMPOTENCY_KEY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "a UUID: {key}");
    assert_eq!(uuid::Uuid::parse_str(&key).unwrap().get_version_num(), 4);
    assert_eq!(second.headers()[IDEMPOTENCY_KEY], key.as_str());
    assert_eq!(third.headers()[IDEMPOTENCY_KEY], key.as_str());
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_existing_idempotency_key_is_kept() {
    let mut request = request("POST");
    request
        .headers_mut()
        .insert(IDEMPOTENCY_KEY, "mine".parse().unwrap());
    let (call, mut handle) = spawn_call(layer(half().with_idempotency_key(true)), request);
    let sent = answer(&mut handle, status(200)).await;
    assert_eq!(sent.headers()[IDEMPOTENCY_KEY], "mine");
    assert_eq!(sent.headers().get_all(IDEMPOTENCY_KEY).iter().count(), 1);
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_for_every_method() {
    for method in ["GET", "PUT", "POST", "PATCH", "CONNECT"] {
        let (call, mut handle) = spawn_call(layer(half()), request(method));
        fail(
            &mut handle,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        )
        .await;
        answer(&mut handle, status(200)).await;
        let response = call.await.unwrap().unwrap();
        assert_eq!(
            attempts_of(&response).reasons(),
            &[RetryReason::Connect],
            "{method}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn resets_are_retried_only_for_idempotent_requests() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    fail(&mut handle, io::Error::from(io::ErrorKind::ConnectionReset)).await;
    answer(&mut handle, status(200)).await;
    assert_eq!(
        attempts_of(&call.await.unwrap().unwrap()).reasons(),
        &[RetryReason::Reset]
    );

    let (call, mut handle) = spawn_call(layer(half()), request("POST"));
    fail(&mut handle, io::Error::from(io::ErrorKind::ConnectionReset)).await;
    let error = error_of(call.await.unwrap());
    assert_eq!(error.attempts(), 1);
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn status_table_retryable_and_final_statuses() {
    for code in [408, 429, 500, 502, 503, 504] {
        let (call, mut handle) = spawn_call(layer(half()), request("GET"));
        answer(&mut handle, status(code)).await;
        answer(&mut handle, status(200)).await;
        let response = call.await.unwrap().unwrap();
        assert_eq!(attempts_of(&response).count(), 2, "{code} is retried");
    }
    for code in [200, 204, 301, 400, 403, 404, 409, 422, 501, 505] {
        let (call, mut handle) = spawn_call(layer(half()), request("GET"));
        answer(&mut handle, status(code)).await;
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(attempts_of(&response).count(), 1, "{code} is final");
        assert_no_more_attempts(&mut handle).await;
    }
}

#[tokio::test(start_paused = true)]
async fn final_error_status_is_returned_as_the_response_with_attempts() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    // The default of 4 attempts.
    for _ in 0..4 {
        answer(&mut handle, status(502)).await;
    }
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let attempts = attempts_of(&response);
    assert_eq!(attempts.count(), 4);
    assert_eq!(
        attempts.reasons(),
        &[
            RetryReason::ServerError,
            RetryReason::ServerError,
            RetryReason::ServerError
        ]
    );
    // Jitter 1/2, base 100 ms: 50 ms, 100 ms then 200 ms.
    assert_eq!(attempts.waited(), Duration::from_millis(350));
    assert_no_more_attempts(&mut handle).await;
}

fn unauthorized(invalidated: bool) -> Res {
    let mut response = status(401);
    if invalidated {
        response.extensions_mut().insert(CredentialInvalidated);
    }
    response
}

#[tokio::test(start_paused = true)]
async fn a_401_with_credential_invalidated_is_replayed_exactly_once() {
    // A POST without a key: the replay happens whatever the method, and even with retries off.
    let policy = half().with_max_attempts(1);
    let (call, mut handle) = spawn_call(layer(policy), request("POST"));
    let start = Instant::now();
    answer(&mut handle, unauthorized(true)).await;
    let replay = answer(&mut handle, unauthorized(true)).await;
    assert_eq!(Attempt::of(&replay).get(), 2);
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        attempts_of(&response).reasons(),
        &[RetryReason::Unauthorized]
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a fresh credential needs no backoff"
    );
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_401_replay_then_success() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    answer(&mut handle, unauthorized(true)).await;
    answer(&mut handle, status(200)).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts_of(&response).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_without_the_marker_is_returned_as_is() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    answer(&mut handle, unauthorized(false)).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(attempts_of(&response).count(), 1);
    assert_no_more_attempts(&mut handle).await;
}

/// Records the instant of each attempt while answering with `responses`.
async fn attempt_times(handle: &mut Handle, responses: Vec<Res>) -> Vec<Duration> {
    let start = Instant::now();
    let mut times = Vec::new();
    for response in responses {
        let (_, send) = handle.next_request().await.expect("an attempt");
        times.push(start.elapsed());
        send.send_response(response);
    }
    times
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_rand_times_min_cap_base_times_two_to_the_n() {
    let policy = half()
        .with_max_attempts(6)
        .with_cap(Duration::from_millis(500));
    let (call, mut handle) = spawn_call(layer(policy), request("GET"));
    let times = attempt_times(
        &mut handle,
        vec![
            status(500),
            status(500),
            status(500),
            status(500),
            status(500),
            status(200),
        ],
    )
    .await;
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.5 * min(500 ms, 100 ms * 2^n) for n = 0..5: the cap binds from n = 3.
    let expected = [50, 100, 200, 250, 250].map(Duration::from_millis);
    assert_eq!(gaps, expected);
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn full_jitter_draws_each_delay_from_the_injected_randomness() {
    let samples = Arc::new(AtomicUsize::new(0));
    let seen = samples.clone();
    let script = [0.0, 0.9];
    let policy = RetryPolicy::default().with_jitter(Jitter::from_fn(move || {
        script[seen.fetch_add(1, Ordering::SeqCst) % 2]
    }));
    let (call, mut handle) = spawn_call(layer(policy), request("GET"));
    let times = attempt_times(&mut handle, vec![status(500), status(500), status(200)]).await;
    assert_eq!(times[1] - times[0], Duration::ZERO);
    assert_eq!(times[2] - times[1], Duration::from_millis(180));
    assert_eq!(samples.load(Ordering::SeqCst), 2);
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_stays_between_base_and_three_times_the_previous() {
    let policy = RetryPolicy::default()
        .with_jitter(Jitter::fixed(0.5))
        .with_backoff(Backoff::DecorrelatedJitter)
        .with_max_attempts(4);
    let (call, mut handle) = spawn_call(layer(policy), request("GET"));
    let times = attempt_times(
        &mut handle,
        vec![status(500), status(500), status(500), status(200)],
    )
    .await;
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // previous = 100 ms: 100 + (300 - 100) / 2 = 200; then 100 + (600 - 100) / 2 = 350;
    // then 100 + (1050 - 100) / 2 = 575.
    assert_eq!(gaps, [200, 350, 575].map(Duration::from_millis));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn throttling_answers_back_off_from_the_throttle_base() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    let times = attempt_times(&mut handle, vec![status(429), status(503), status(200)]).await;
    // 0.5 * 1 s, then 0.5 * 2 s.
    assert_eq!(times[1] - times[0], Duration::from_millis(500));
    assert_eq!(times[2] - times[1], Duration::from_secs(1));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_never_undercut() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    let times = attempt_times(
        &mut handle,
        vec![
            status_retry_after(429, 2),
            status_retry_after(503, 0),
            status(200),
        ],
    )
    .await;
    // The hint (2 s) beats the backoff (500 ms); then the backoff (1 s) beats the hint (0 s).
    assert_eq!(times[1] - times[0], Duration::from_secs(2));
    assert_eq!(times[2] - times[1], Duration::from_secs(1));
    let response = call.await.unwrap().unwrap();
    assert_eq!(attempts_of(&response).waited(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_hint_past_the_deadline_fails_at_once_with_the_hint() {
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    request
        .extensions_mut()
        .insert(IntegrationName::new("stripe"));
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status_retry_after(429, 10)).await;
    let error = error_of(call.await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once, no sleep");
    assert_eq!(error.kind(), ErrorKind::Deadline);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(10)));
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.integration(), Some("stripe"));
    let typed = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<DeadlineExceeded>())
        .expect("DeadlineExceeded is the cause");
    assert_eq!(typed.retry_after(), Some(Duration::from_secs(10)));
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_backoff_past_the_deadline_fails_at_once() {
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    let start = Instant::now();
    // Backoff after a 503: 0.5 * 1 s = 500 ms, more than the 300 ms left.
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(503)).await;
    let error = error_of(call.await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(error.is_deadline());
    assert_eq!(error.retry_after(), Some(Duration::from_millis(500)));
}

#[tokio::test(start_paused = true)]
async fn a_hint_past_max_retry_after_fails_at_once_with_rate_limited() {
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    answer(&mut handle, status_retry_after(429, 3600)).await;
    let error = error_of(call.await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    let typed = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<RateLimited>())
        .expect("RateLimited is the cause");
    assert!(typed.is_by_server());
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_into_a_timeout() {
    // The deadline layer outside the retry: a 2 s hint against a 1 s deadline fails at once with the
    // hint rather than sleeping 1 s and timing out.
    let layers = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(layer(half()));
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layers, request("GET"));
    let sent = answer(&mut handle, status_retry_after(503, 2)).await;
    assert!(
        Deadline::of(&sent).is_some(),
        "the deadline reached the attempt"
    );
    let error = error_of(call.await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(error.is_deadline());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
}

/// The retry layer keeps its copy of the request as a `RequestCopy` (issue 19), which holds our own
/// extensions by value and any other in a copy of the map: whichever way, every attempt carries
/// every extension of the request, the caller's too, and every header and the body.
#[tokio::test(start_paused = true)]
async fn every_attempt_carries_every_extension_of_the_request() {
    #[derive(Clone, Debug, PartialEq)]
    struct Callers(u32);
    let deadline = Deadline::after(Duration::from_secs(60));
    for with_callers in [false, true] {
        let mut request = request("PUT");
        request
            .headers_mut()
            .insert("x-tenant", "t1".parse().unwrap());
        request.extensions_mut().insert(IntegrationName::new("crm"));
        request.extensions_mut().insert(deadline);
        request.extensions_mut().insert(Idempotent(true));
        if with_callers {
            request.extensions_mut().insert(Callers(7));
        }
        let (call, mut handle) = spawn_call(layer(half()), request);
        let first = answer(&mut handle, status(503)).await;
        let second = answer(&mut handle, status(503)).await;
        let third = answer(&mut handle, status(200)).await;
        for (number, sent) in [(1, &first), (2, &second), (3, &third)] {
            let case = format!("attempt {number}, caller's extension: {with_callers}");
            assert_eq!(Attempt::of(sent).get(), number, "{case}");
            assert_eq!(IntegrationName::of(sent).unwrap().as_str(), "crm", "{case}");
            assert_eq!(Deadline::of(sent), Some(deadline), "{case}");
            assert_eq!(
                sent.extensions().get::<Idempotent>(),
                Some(&Idempotent(true)),
                "{case}"
            );
            let callers = with_callers.then_some(Callers(7));
            assert_eq!(
                sent.extensions().get::<Callers>(),
                callers.as_ref(),
                "{case}"
            );
            assert_eq!(sent.headers()["x-tenant"], "t1", "{case}");
            assert_eq!(sent.method(), "PUT", "{case}");
            assert_eq!(sent.body(), "payload", "{case}");
        }
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_its_attempt_number() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    let first = answer(&mut handle, status(500)).await;
    let second = answer(&mut handle, status(500)).await;
    let third = answer(&mut handle, status(200)).await;
    assert_eq!(
        [first, second, third].map(|r| Attempt::of(&r).get()),
        [1, 2, 3]
    );
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn final_error_carries_attempts_and_integration_name() {
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    let (call, mut handle) = spawn_call(layer(half()), request);
    for _ in 0..4 {
        fail(
            &mut handle,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        )
        .await;
    }
    let error = error_of(call.await.unwrap());
    assert!(error.is_connect());
    assert_eq!(error.attempts(), 4);
    assert_eq!(error.integration(), Some("github"));
    assert!(
        error
            .to_string()
            .starts_with("integration `github`, attempt 4:"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_final_error_that_is_not_retryable_is_returned_after_one_attempt() {
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    fail(&mut handle, "some protocol error").await;
    let error = error_of(call.await.unwrap());
    assert_eq!(error.kind(), ErrorKind::Other);
    assert_eq!(error.attempts(), 1);
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_sent_once_and_never_retried() {
    let (service, mut handle) = mock::pair::<http::Request<Body>, Res>();
    let service = layer(half()).layer(service);
    let body = Body::streaming(http_body_util::Full::new(bytes::Bytes::from_static(
        b"chunk",
    )));
    let request = http::Request::put("https://api.example.com/upload")
        .body(body)
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(503));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_of(&response).count(), 1);
    let next = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(!matches!(next, Ok(Some(_))));
}

#[tokio::test(start_paused = true)]
async fn a_bytes_body_is_replayed_on_every_attempt() {
    let (service, mut handle) = mock::pair::<http::Request<Body>, Res>();
    let service = layer(half()).layer(service);
    let request = http::Request::put("https://api.example.com/items/1")
        .body(Body::from("{\"name\":\"x\"}"))
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    for code in [503, 200] {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.body().as_bytes().unwrap(), "{\"name\":\"x\"}");
        send.send_response(status(code));
    }
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn waits_for_readiness_again_before_each_retry() {
    let (service, mut handle) = mock::pair::<Req, Res>();
    handle.allow(1);
    let mut service = layer(half()).layer(service);
    let task = tokio::spawn(async move {
        service.ready().await?;
        service.call(request("GET")).await
    });
    let first = answer(&mut handle, status(503)).await;
    assert_eq!(first.method(), http::Method::GET);
    // The backoff (50 ms) passes, then the retry waits for the mock to allow another call: the mock
    // panics if `call` comes before `poll_ready`, so a clone called unready would fail this test.
    let blocked = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(
        blocked.is_err(),
        "no attempt before the inner service is ready"
    );
    assert!(!task.is_finished());
    handle.allow(1);
    answer(&mut handle, status(200)).await;
    let response = task.await.unwrap().unwrap();
    assert_eq!(attempts_of(&response).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_fails_fast_and_is_counted() {
    let recorder = recorder();
    let _guard = metrics::set_default_local_recorder(recorder);
    // No floor and no share: not a single retry.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.0);
    let layer = RetryLayer::new(half()).with_budget(budget);
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    let (call, mut handle) = spawn_call(layer, request);
    answer(&mut handle, status(503)).await;
    let error = error_of(call.await.unwrap());
    assert!(error.is_budget_exhausted());
    assert_eq!(error.kind(), ErrorKind::BudgetExhausted);
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(error.attempts(), 1);
    assert!(std::error::Error::source(&error).is_some_and(|source| source.is::<BudgetExhausted>()));
    assert_eq!(
        recorder.counter(
            names::RETRY_BUDGET_EXHAUSTED,
            &[(names::INTEGRATION, "github")]
        ),
        1
    );
    assert_no_more_attempts(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_clones_and_rebuilt_layers() {
    // One retry allowed in total (floor 1/s over 1 s, no share).
    let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.0);
    let first = RetryLayer::new(half()).with_budget(budget);
    let rebuilt = RetryLayer::new(half()).with_budget(first.budget().clone());

    let (call, mut handle) = spawn_call(first.clone(), request("GET"));
    answer(&mut handle, status(503)).await;
    answer(&mut handle, status(200)).await;
    call.await.unwrap().unwrap();

    let (call, mut handle) = spawn_call(rebuilt, request("GET"));
    answer(&mut handle, status(503)).await;
    assert!(error_of(call.await.unwrap()).is_budget_exhausted());
}

/// The attempts counter reuses its key per thread: each integration is still counted under its own
/// label, and a later recorder on the same thread gets its own counts, complete.
#[tokio::test(start_paused = true)]
async fn attempts_are_counted_per_integration_into_the_recorder_in_force() {
    for run in 0..2 {
        let recorder = recorder();
        let _guard = metrics::set_default_local_recorder(recorder);
        for name in ["github", "stripe", "github"] {
            let mut request = request("GET");
            request.extensions_mut().insert(IntegrationName::new(name));
            let (call, mut handle) = spawn_call(layer(half()), request);
            answer(&mut handle, status(200)).await;
            call.await.unwrap().unwrap();
        }
        let github = recorder.counter(names::ATTEMPTS, &[(names::INTEGRATION, "github")]);
        let stripe = recorder.counter(names::ATTEMPTS, &[(names::INTEGRATION, "stripe")]);
        assert_eq!((github, stripe), (2, 1), "run {run}");
        assert_eq!(recorder.counter(names::ATTEMPTS, &[]), 3, "run {run}");
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_and_retries_are_counted_by_reason() {
    let recorder = recorder();
    let _guard = metrics::set_default_local_recorder(recorder);
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(429)).await;
    answer(&mut handle, status(502)).await;
    answer(&mut handle, status(200)).await;
    call.await.unwrap().unwrap();
    let github = (names::INTEGRATION, "github");
    assert_eq!(recorder.counter(names::ATTEMPTS, &[github]), 3);
    assert_eq!(recorder.counter(names::RETRIES, &[github]), 2);
    assert_eq!(
        recorder.counter(names::RETRIES, &[github, (names::REASON, "throttled")]),
        1
    );
    assert_eq!(
        recorder.counter(names::RETRIES, &[github, (names::REASON, "server_error")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_inner_readiness_error_ends_the_call_with_attempts() {
    let (service, mut handle) = mock::pair::<Req, Res>();
    let service = layer(half()).layer(service);
    let call = tokio::spawn(service.oneshot(request("GET")));
    answer(&mut handle, status(503)).await;
    handle.send_error("inner service broke");
    let outcome: Result<Res, BoxError> = call.await.unwrap();
    let error = error_of(outcome);
    assert_eq!(error.attempts(), 2);
}

/// Regression: under a loaded `cargo test`, the expected DEBUG event was sometimes not captured: the
/// test had a thread-local subscriber, and tracing's process-wide interest cache let other tests'
/// threads (without one) switch the callsite off. The capture of `integration_core::testing` is
/// correct under parallel tests.
#[tokio::test(start_paused = true)]
async fn retry_decisions_are_traced_without_headers_or_bodies() {
    let captured = capture(Level::DEBUG);

    let mut request = request("GET");
    request
        .headers_mut()
        .insert("authorization", "Bearer secret-token".parse().unwrap());
    *request.body_mut() = "password=hunter2".to_owned();
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(502)).await;
    answer(&mut handle, status_retry_after(429, 3600)).await;
    assert!(call.await.unwrap().is_err());

    let retrying = captured.event("retrying").expect("the retry is traced");
    assert_eq!(retrying.level, Level::DEBUG);
    assert_eq!(retrying.field("attempt"), Some("1"), "{captured:?}");
    assert_eq!(retrying.field("reason"), Some("server_error"));
    assert_eq!(retrying.field("wait_ms"), Some("50"));
    let refused = captured
        .event("not retrying: the server asked for a wait longer than max_retry_after")
        .expect("the refusal is traced");
    assert_eq!(refused.field("retry_after_ms"), Some("3600000"));
    assert!(!captured.contains("secret-token"), "{captured:?}");
    assert!(!captured.contains("hunter2"), "{captured:?}");
}

/// Regression: a token endpoint that failed once failed the call, though the request was never
/// sent. A transient auth failure is retried, whatever the method, no sooner than the cool-down it
/// carries; a permanent one is final.
#[tokio::test(start_paused = true)]
async fn a_transient_auth_failure_is_retried_after_its_cool_down_for_any_method() {
    use integration_core::error::AuthFailed;
    let (call, mut handle) = spawn_call(layer(half()), request("POST"));
    let start = Instant::now();
    fail(
        &mut handle,
        AuthFailed::transient("token endpoint answered 503")
            .with_retry_after(Duration::from_millis(900)),
    )
    .await;
    answer(&mut handle, status(201)).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        attempts_of(&response).reasons(),
        &[RetryReason::CredentialUnavailable]
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        start.elapsed()
    );

    // A cool-down longer than max_retry_after: the auth failure itself, not a rate limit.
    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    fail(
        &mut handle,
        AuthFailed::transient("token endpoint down").with_retry_after(Duration::from_secs(3600)),
    )
    .await;
    let error = error_of(call.await.unwrap());
    assert_eq!(error.kind(), ErrorKind::Auth, "{error:#}");
    assert_eq!(error.attempts(), 1);
    assert_no_more_attempts(&mut handle).await;

    let (call, mut handle) = spawn_call(layer(half()), request("GET"));
    fail(
        &mut handle,
        AuthFailed::permanent("invalid_grant", "refresh token revoked"),
    )
    .await;
    let error = error_of(call.await.unwrap());
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert_eq!(error.attempts(), 1);
    assert_no_more_attempts(&mut handle).await;
}

/// Regression: a retry was counted (in `Attempts` and the retries metric) when it was planned, so a
/// call cancelled during its backoff reported a retry that never began.
#[tokio::test(start_paused = true)]
async fn a_call_cancelled_during_its_backoff_counts_no_retry() {
    let recorder = recorder();
    let _guard = metrics::set_default_local_recorder(recorder);
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    let (call, mut handle) = spawn_call(layer(half()), request);
    answer(&mut handle, status(503)).await;
    // The retry waits its backoff (half of 100 ms); the caller gives up first.
    tokio::time::advance(Duration::from_millis(10)).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let github = (names::INTEGRATION, "github");
    assert_eq!(recorder.counter(names::ATTEMPTS, &[github]), 1);
    assert_eq!(recorder.counter(names::RETRIES, &[github]), 0);
    assert_no_more_attempts(&mut handle).await;
}

/// Regression: when the retry layer refused to retry after an error (budget spent, no time left
/// before the deadline), the attempt's own error was dropped: the caller read "retry budget
/// exhausted" without learning that the connection had been refused.
#[tokio::test(start_paused = true)]
async fn a_refused_retry_keeps_the_attempts_error_as_its_cause() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.0);
    let layer = RetryLayer::new(half()).with_budget(budget);
    let (call, mut handle) = spawn_call(layer, request("GET"));
    fail(
        &mut handle,
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connection refused by upstream",
        ),
    )
    .await;
    let error = error_of(call.await.unwrap());
    assert_eq!(error.kind(), ErrorKind::BudgetExhausted);
    assert_eq!(error.attempts(), 1);
    let chain = format!("{error:#}");
    assert!(
        chain.contains("retry budget exhausted")
            && chain.contains("connection refused by upstream"),
        "{chain}"
    );
    assert!(
        std::error::Error::source(&error).is_some_and(|cause| cause.is::<io::Error>()),
        "{error:?}"
    );
}
