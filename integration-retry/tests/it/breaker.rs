//! The circuit breaker.

use std::io;
use std::time::Duration;

use integration_core::error::CircuitOpen;
use integration_core::ext::{CredentialInvalidated, IntegrationName};
use integration_core::{Error, names};
use integration_retry::breaker::default_key;
use integration_retry::{
    BreakerPolicy, BreakerState, CircuitBreakerLayer, Jitter, RetryBudget, RetryLayer, RetryPolicy,
};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_test::mock;

use crate::common::*;

const KEY: &str = "github|api.example.com";

fn github(method: &str) -> Req {
    let mut request = request(method);
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    request
}

fn policy() -> BreakerPolicy {
    BreakerPolicy::default()
        .with_jitter(Jitter::fixed(0.5))
        .with_open_duration(Duration::from_secs(10))
        .with_open_jitter(0.2)
}

/// A breaker over one mock; every call goes through `call_with`.
struct Harness {
    layer: CircuitBreakerLayer,
    service: mock::Mock<Req, Res>,
    handle: Handle,
}

impl Harness {
    fn new(policy: BreakerPolicy) -> Self {
        let (service, handle) = mock::pair::<Req, Res>();
        Self {
            layer: CircuitBreakerLayer::new(policy),
            service,
            handle,
        }
    }

    /// Sends a call and answers it with `response`; `Err` when the breaker refused it.
    async fn call_with(&mut self, request: Req, response: Res) -> Outcome {
        let service = self.layer.layer(self.service.clone());
        let call = tokio::spawn(service.oneshot(request));
        tokio::task::yield_now().await;
        if call.is_finished() {
            return call.await.unwrap();
        }
        answer(&mut self.handle, response).await;
        call.await.unwrap()
    }

    fn state(&self) -> Option<BreakerState> {
        self.layer.state(KEY)
    }
}

fn refused(outcome: &Outcome) -> Option<&CircuitOpen> {
    outcome
        .as_ref()
        .err()
        .and_then(|error| error.downcast_ref::<CircuitOpen>())
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let mut harness = Harness::new(policy().with_consecutive_failures(3));
    for _ in 0..2 {
        assert!(harness.call_with(github("GET"), status(503)).await.is_ok());
        assert_eq!(harness.state(), Some(BreakerState::Closed));
    }
    assert!(harness.call_with(github("GET"), status(503)).await.is_ok());
    assert_eq!(harness.state(), Some(BreakerState::Open));
    let outcome = harness.call_with(github("GET"), status(200)).await;
    let open = refused(&outcome).expect("refused while open");
    // 10 s lengthened by 0.2 * 0.5 of it.
    assert_eq!(open.retry_after(), Some(Duration::from_secs(11)));
    assert_no_more_attempts(&mut harness.handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let mut harness = Harness::new(policy().with_consecutive_failures(3));
    for _ in 0..5 {
        harness.call_with(github("GET"), status(503)).await.unwrap();
        harness.call_with(github("GET"), status(503)).await.unwrap();
        harness.call_with(github("GET"), status(200)).await.unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn opens_on_the_failure_ratio_over_the_window_with_a_minimum_throughput() {
    let policy = policy()
        .with_consecutive_failures(0)
        .with_failure_ratio(0.5)
        .with_min_throughput(10);
    let mut harness = Harness::new(policy);
    // 4 failures in 9 calls: under the minimum throughput, whatever the ratio.
    for i in 0..9 {
        let code = if i % 2 == 0 { 200 } else { 500 };
        harness
            .call_with(github("GET"), status(code))
            .await
            .unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));
    // The tenth call, a failure: 5 of 10.
    harness.call_with(github("GET"), status(500)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn failures_leave_the_window_as_it_slides() {
    let policy = policy()
        .with_consecutive_failures(0)
        .with_failure_ratio(0.5)
        .with_min_throughput(4)
        .with_window(Duration::from_secs(10));
    let mut harness = Harness::new(policy);
    for _ in 0..3 {
        harness.call_with(github("GET"), status(500)).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The old failures expired: 1 failure in 4 calls now.
    for code in [200, 200, 200, 500] {
        harness
            .call_with(github("GET"), status(code))
            .await
            .unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn half_open_with_one_probe_lets_exactly_one_through() {
    let mut harness = Harness::new(
        policy()
            .with_consecutive_failures(1)
            .with_half_open_probes(1),
    );
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(harness.state(), Some(BreakerState::HalfOpen));

    // The probe goes out and hangs; a second call meanwhile is refused.
    let probe = tokio::spawn(
        harness
            .layer
            .layer(harness.service.clone())
            .oneshot(github("GET")),
    );
    let (_request, send) = harness.handle.next_request().await.unwrap();
    let outcome = harness.call_with(github("GET"), status(200)).await;
    assert!(refused(&outcome).is_some(), "only one probe");
    send.send_response(status(200));
    probe.await.unwrap().unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Closed));
    assert!(harness.call_with(github("GET"), status(200)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_a_jittered_period() {
    let policy = policy()
        .with_consecutive_failures(1)
        .with_half_open_probes(1)
        .with_jitter(Jitter::fixed(0.0));
    let mut harness = Harness::new(policy);
    harness.call_with(github("GET"), status(503)).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
    let outcome = harness.call_with(github("GET"), status(200)).await;
    assert_eq!(
        refused(&outcome).unwrap().retry_after(),
        Some(Duration::from_secs(10))
    );
}

#[tokio::test(start_paused = true)]
async fn the_open_period_is_jittered_by_the_injected_randomness() {
    for (sample, expected) in [(0.0, 10_000), (0.5, 11_000), (0.75, 11_500)] {
        let policy = policy()
            .with_consecutive_failures(1)
            .with_jitter(Jitter::fixed(sample));
        let mut harness = Harness::new(policy);
        harness.call_with(github("GET"), status(500)).await.unwrap();
        let outcome = harness.call_with(github("GET"), status(200)).await;
        let retry_after = refused(&outcome).unwrap().retry_after().unwrap();
        assert_eq!(retry_after.as_millis(), expected, "{sample}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_releases_its_reservation() {
    let mut harness = Harness::new(
        policy()
            .with_consecutive_failures(1)
            .with_half_open_probes(1),
    );
    harness.call_with(github("GET"), status(503)).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    let probe = tokio::spawn(
        harness
            .layer
            .layer(harness.service.clone())
            .oneshot(github("GET")),
    );
    let (_request, _send) = harness.handle.next_request().await.unwrap();
    probe.abort();
    let _ = probe.await;
    // Another call may probe now.
    assert!(harness.call_with(github("GET"), status(200)).await.is_ok());
    assert_eq!(harness.state(), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn only_retryable_failures_count() {
    let mut harness = Harness::new(policy().with_consecutive_failures(2));
    for code in [400, 404, 409, 422, 501, 505] {
        harness
            .call_with(github("GET"), status(code))
            .await
            .unwrap();
        harness
            .call_with(github("GET"), status(code))
            .await
            .unwrap();
    }
    let mut unauthorized = status(401);
    unauthorized.extensions_mut().insert(CredentialInvalidated);
    harness
        .call_with(github("GET"), unauthorized)
        .await
        .unwrap();
    harness.call_with(github("GET"), status(401)).await.unwrap();
    // No credential: nothing reached the upstream, which says nothing of its health.
    for _ in 0..3 {
        let service = harness.layer.layer(harness.service.clone());
        let call = tokio::spawn(service.oneshot(github("GET")));
        fail(
            &mut harness.handle,
            integration_core::error::AuthFailed::transient("token endpoint down"),
        )
        .await;
        call.await.unwrap().unwrap_err();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));
    // A POST's 503 counts too: the upstream's health does not depend on the method.
    harness
        .call_with(github("POST"), status(503))
        .await
        .unwrap();
    harness.call_with(github("GET"), status(504)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
}

/// Rule: a throttling answer (429) is neither a success nor a failure. The upstream is healthy and
/// asks us to slow down; the rate limiter pauses the key, the breaker stays out of it.
#[tokio::test(start_paused = true)]
async fn a_429_does_not_open_the_breaker() {
    // By the consecutive trigger: a long run of 429s, with and without Retry-After.
    let mut harness = Harness::new(policy().with_consecutive_failures(2));
    for _ in 0..10 {
        harness.call_with(github("GET"), status(429)).await.unwrap();
        harness
            .call_with(github("GET"), status_retry_after(429, 1))
            .await
            .unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));

    // Neither a success: a 429 between two failures does not reset the consecutive count.
    harness.call_with(github("GET"), status(503)).await.unwrap();
    harness.call_with(github("GET"), status(429)).await.unwrap();
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));

    // By the ratio: 429s are not calls of the window. 4 failures in 10 calls (40 %) stay closed
    // however many 429s come; counted as failures, the second 429 would make it 6 in 12 and open it.
    let policy = policy()
        .with_consecutive_failures(0)
        .with_failure_ratio(0.5)
        .with_min_throughput(10);
    let mut harness = Harness::new(policy);
    for _ in 0..4 {
        harness.call_with(github("GET"), status(500)).await.unwrap();
    }
    for _ in 0..6 {
        harness.call_with(github("GET"), status(200)).await.unwrap();
    }
    for _ in 0..50 {
        harness.call_with(github("GET"), status(429)).await.unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Closed));
}

/// A 503 with `Retry-After` is overload or maintenance, not a throttle of this client: it counts.
#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_counts_as_a_failure() {
    let mut harness = Harness::new(policy().with_consecutive_failures(2));
    for _ in 0..2 {
        harness
            .call_with(github("GET"), status_retry_after(503, 1))
            .await
            .unwrap();
    }
    assert_eq!(harness.state(), Some(BreakerState::Open));
}

/// A half-open probe answered 429 proves nothing either way: the breaker stays half-open and the
/// next call probes in its place.
#[tokio::test(start_paused = true)]
async fn a_probe_answered_429_leaves_the_breaker_half_open() {
    let mut harness = Harness::new(
        policy()
            .with_consecutive_failures(1)
            .with_half_open_probes(1),
    );
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
    tokio::time::advance(Duration::from_secs(11)).await;
    harness.call_with(github("GET"), status(429)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::HalfOpen));
    harness.call_with(github("GET"), status(200)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn connect_errors_count_as_failures() {
    let mut harness = Harness::new(policy().with_consecutive_failures(2));
    for _ in 0..2 {
        let service = harness.layer.layer(harness.service.clone());
        let call = tokio::spawn(service.oneshot(github("POST")));
        fail(
            &mut harness.handle,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        )
        .await;
        assert!(Error::from(call.await.unwrap().unwrap_err()).is_connect());
    }
    assert_eq!(harness.state(), Some(BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn keys_separate_integrations_and_hosts() {
    let mut harness = Harness::new(policy().with_consecutive_failures(1));
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.state(), Some(BreakerState::Open));
    // Same host, another integration: its own breaker.
    let mut other = request("GET");
    other
        .extensions_mut()
        .insert(IntegrationName::new("stripe"));
    assert!(harness.call_with(other, status(200)).await.is_ok());
    // Same integration, another host.
    let mut elsewhere = github("GET");
    *elsewhere.uri_mut() = "https://uploads.example.com/x".parse().unwrap();
    assert!(harness.call_with(elsewhere, status(200)).await.is_ok());
    assert_eq!(
        harness.layer.state("stripe|api.example.com"),
        Some(BreakerState::Closed)
    );
    assert_eq!(
        default_key(&"http://h/".parse().unwrap(), &http::Extensions::new()),
        "|h"
    );
}

#[tokio::test(start_paused = true)]
async fn a_custom_key_closure_groups_requests() {
    let policy = policy()
        .with_consecutive_failures(1)
        .with_key(|uri, _| uri.path().split('/').nth(1).unwrap_or("").to_owned());
    let mut harness = Harness::new(policy);
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(harness.layer.state("v1"), Some(BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn the_number_of_keys_is_bounded() {
    let mut harness = Harness::new(policy().with_max_keys(3));
    for i in 0..10 {
        let mut request = request("GET");
        *request.uri_mut() = format!("https://host{i}.example.com/").parse().unwrap();
        harness.call_with(request, status(200)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(harness.layer.registry().len(), 3);
    // The most recent keys are kept.
    assert!(harness.layer.state("|host9.example.com").is_some());
    assert!(harness.layer.state("|host0.example.com").is_none());
}

#[tokio::test(start_paused = true)]
async fn the_registry_is_shared_by_clones_and_rebuilt_layers() {
    let mut harness = Harness::new(policy().with_consecutive_failures(1));
    harness.call_with(github("GET"), status(503)).await.unwrap();
    let rebuilt =
        CircuitBreakerLayer::new(policy()).with_registry(harness.layer.registry().clone());
    assert_eq!(rebuilt.state(KEY), Some(BreakerState::Open));
    assert_eq!(harness.layer.clone().state(KEY), Some(BreakerState::Open));
    harness.layer = rebuilt;
    let outcome = harness.call_with(github("GET"), status(200)).await;
    assert!(refused(&outcome).is_some());
}

#[tokio::test(start_paused = true)]
async fn state_is_exported_as_a_gauge_and_rejections_are_counted() {
    let recorder = recorder();
    let _guard = metrics::set_default_local_recorder(recorder);
    let mut harness = Harness::new(
        policy()
            .with_consecutive_failures(1)
            .with_half_open_probes(1),
    );
    let labels = [
        (names::INTEGRATION, "github"),
        (names::SERVER_ADDRESS, "api.example.com"),
    ];
    harness.call_with(github("GET"), status(200)).await.unwrap();
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &labels), Some(0.0));
    harness.call_with(github("GET"), status(503)).await.unwrap();
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &labels), Some(2.0));
    for _ in 0..3 {
        let outcome = harness.call_with(github("GET"), status(200)).await;
        assert!(refused(&outcome).is_some());
    }
    assert_eq!(
        recorder.counter(names::BREAKER_REJECTIONS, &[(names::INTEGRATION, "github")]),
        3
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    let probe = tokio::spawn(
        harness
            .layer
            .layer(harness.service.clone())
            .oneshot(github("GET")),
    );
    let (_request, send) = harness.handle.next_request().await.unwrap();
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &labels), Some(1.0));
    send.send_response(status(200));
    probe.await.unwrap().unwrap();
    assert_eq!(recorder.gauge(names::BREAKER_STATE, &labels), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_ends_the_retries() {
    let breaker = CircuitBreakerLayer::new(policy().with_consecutive_failures(1));
    let layers = ServiceBuilder::new()
        .layer(
            RetryLayer::new(RetryPolicy::default().with_jitter(Jitter::fixed(0.5)))
                .with_budget(RetryBudget::unlimited()),
        )
        .layer(breaker.clone());
    let (call, mut handle) = spawn_call(layers, github("GET"));
    answer(&mut handle, status(503)).await;
    let error = Error::from(call.await.unwrap().unwrap_err());
    assert!(error.is_circuit_open());
    assert_eq!(error.attempts(), 2);
    assert_eq!(error.integration(), Some("github"));
    assert_eq!(breaker.state(KEY), Some(BreakerState::Open));
}
