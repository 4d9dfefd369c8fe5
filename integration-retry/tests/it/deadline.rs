//! The total deadline and the attempt timeout.

use std::io;
use std::time::Duration;

use http::StatusCode;
use integration_core::error::{AttemptTimeout, DeadlineExceeded};
use integration_core::ext::{Attempts, Deadline};
use integration_core::{Error, RetryReason};
use integration_retry::{
    AttemptTimeoutLayer, DeadlineLayer, Jitter, RetryBudget, RetryLayer, RetryPolicy,
    validate_timeouts,
};
use tokio::time::Instant;
use tower::ServiceBuilder;

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn the_deadline_layer_writes_the_deadline_into_the_request() {
    let start = Instant::now();
    let (call, mut handle) =
        spawn_call(DeadlineLayer::new(Duration::from_secs(10)), request("GET"));
    let sent = answer(&mut handle, status(200)).await;
    assert_eq!(
        Deadline::of(&sent).map(Deadline::instant),
        Some(start + Duration::from_secs(10))
    );
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_deadline_layer_tightens_and_never_loosens() {
    let start = Instant::now();
    let mut early = request("GET");
    early
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let (call, mut handle) = spawn_call(DeadlineLayer::new(Duration::from_secs(10)), early);
    let sent = answer(&mut handle, status(200)).await;
    assert_eq!(
        Deadline::of(&sent).map(Deadline::instant),
        Some(start + Duration::from_secs(2))
    );
    call.await.unwrap().unwrap();

    let mut late = request("GET");
    late.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(60)));
    let (call, mut handle) = spawn_call(DeadlineLayer::new(Duration::from_secs(10)), late);
    let sent = answer(&mut handle, status(200)).await;
    assert_eq!(
        Deadline::of(&sent).map(Deadline::instant),
        Some(start + Duration::from_secs(10))
    );
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_deadline_fails_the_call_while_inner_layers_wait() {
    let start = Instant::now();
    let (call, mut handle) = spawn_call(DeadlineLayer::new(Duration::from_secs(3)), request("GET"));
    // The upstream never answers.
    let (_request, _pending) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(error.is::<DeadlineExceeded>());
    assert!(Error::from(error).is_deadline());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_covers_every_attempt_and_every_wait() {
    let layers = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(2)))
        .layer(
            RetryLayer::new(
                RetryPolicy::default()
                    .with_jitter(Jitter::fixed(0.5))
                    .with_max_attempts(10),
            )
            .with_budget(RetryBudget::unlimited()),
        );
    let start = Instant::now();
    let (call, mut handle) = spawn_call(layers, request("GET"));
    answer(&mut handle, status(500)).await;
    // The second attempt hangs past the deadline.
    let (_request, _pending) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert!(error.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

/// A request whose deadline has passed already fails at once, and nothing is sent: through the
/// attempt timeout, and through the deadline layer's own check (each reads the clock once for its
/// timer and this check).
#[tokio::test(start_paused = true)]
async fn an_expired_deadline_fails_without_calling_the_inner_service() {
    async fn fails_at_once<L>(layer: L)
    where
        L: tower::Layer<tower_test::mock::Mock<Req, Res>>,
        L::Service: tower::Service<Req, Response = Res, Error = integration_core::BoxError>
            + Send
            + 'static,
        <L::Service as tower::Service<Req>>::Future: Send,
    {
        let mut request = request("GET");
        request
            .extensions_mut()
            .insert(Deadline::after(Duration::ZERO));
        let (call, mut handle) = spawn_call(layer, request);
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is::<DeadlineExceeded>(), "{error}");
        assert_no_more_attempts(&mut handle).await;
    }
    fails_at_once(AttemptTimeoutLayer::new(Duration::from_secs(1))).await;
    fails_at_once(DeadlineLayer::new(Duration::from_secs(10))).await;
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_fails_a_slow_attempt() {
    let start = Instant::now();
    let (call, mut handle) = spawn_call(
        AttemptTimeoutLayer::new(Duration::from_millis(500)),
        request("GET"),
    );
    let (_request, _pending) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    let timeout = error
        .downcast_ref::<AttemptTimeout>()
        .expect("AttemptTimeout");
    assert_eq!(timeout.after(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_is_clipped_to_the_remaining_deadline() {
    let start = Instant::now();
    let mut request = request("GET");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(200)));
    let (call, mut handle) = spawn_call(AttemptTimeoutLayer::new(Duration::from_secs(5)), request);
    let (_request, _pending) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert!(error.is::<DeadlineExceeded>(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn an_answer_in_time_passes_through_the_attempt_timeout() {
    let (call, mut handle) = spawn_call(
        AttemptTimeoutLayer::new(Duration::from_secs(1)),
        request("GET"),
    );
    answer(&mut handle, status(204)).await;
    assert_eq!(
        call.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let (call, mut handle) = spawn_call(
        AttemptTimeoutLayer::new(Duration::from_secs(1)),
        request("GET"),
    );
    fail(
        &mut handle,
        io::Error::from(io::ErrorKind::ConnectionRefused),
    )
    .await;
    assert!(Error::from(call.await.unwrap().unwrap_err()).is_connect());
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_retried() {
    let layers = ServiceBuilder::new()
        .layer(
            RetryLayer::new(RetryPolicy::default().with_jitter(Jitter::fixed(0.5)))
                .with_budget(RetryBudget::unlimited()),
        )
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(1)));
    let (call, mut handle) = spawn_call(layers, request("GET"));
    let (_first, _hanging) = handle.next_request().await.unwrap();
    answer(&mut handle, status(200)).await;
    let response = call.await.unwrap().unwrap();
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.reasons(), &[RetryReason::Timeout]);
}

#[test]
fn an_attempt_timeout_larger_than_the_total_is_refused() {
    let error =
        AttemptTimeoutLayer::within(Duration::from_secs(31), Duration::from_secs(30)).unwrap_err();
    assert_eq!(error.attempt(), Duration::from_secs(31));
    assert_eq!(error.total(), Duration::from_secs(30));
    assert!(error.to_string().contains("at most the total deadline"));
    assert!(validate_timeouts(Duration::ZERO, Duration::from_secs(1)).is_err());
    assert!(validate_timeouts(Duration::from_secs(30), Duration::from_secs(30)).is_ok());
    let layer =
        AttemptTimeoutLayer::within(Duration::from_secs(5), Duration::from_secs(30)).unwrap();
    assert_eq!(layer.timeout(), Duration::from_secs(5));
}
