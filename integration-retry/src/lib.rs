//! Retries that are safe, bounded and honest, a total deadline, an attempt timeout and a circuit
//! breaker, as tower layers over any `http::Request<B>` service.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use integration_core::ext::Attempts;
//! use integration_retry::{
//!     AttemptTimeoutLayer, BreakerPolicy, CircuitBreakerLayer, DeadlineLayer, RetryLayer, RetryPolicy,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An upstream that fails twice with 503, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let upstream = tower::service_fn(move |_request: Request<String>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(30)))
//!     .layer(RetryLayer::new(
//!         RetryPolicy::default().with_throttle_base(Duration::from_millis(10)),
//!     ))
//!     .layer(CircuitBreakerLayer::new(BreakerPolicy::default()))
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(5)))
//!     .service(upstream);
//!
//! let response = client
//!     .oneshot(Request::get("https://api.example.com/items").body(String::new()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let attempts = response.extensions().get::<Attempts>().unwrap();
//! assert_eq!(attempts.count(), 3);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```
//!
//! # The rules
//!
//! [`RetryLayer`] follows the retry rules of the design, each pinned by a test named after it:
//!
//! - **Only what is safe.** GET, HEAD, OPTIONS, TRACE, PUT and DELETE are retried; POST and PATCH
//!   only with an `Idempotency-Key` header (the policy can add a UUID one, the same on every attempt)
//!   or an [`Idempotent(true)`](integration_core::ext::Idempotent) extension. A failure to connect
//!   (nothing was sent) is retried for every method, and so is a call whose credential could not be
//!   obtained (a transient auth failure), after the auth layer's cool-down.
//! - **Only what may pass.** Connect errors, resets, attempt timeouts, 408, 429, 500, 502, 503 and
//!   504 are retried; other answers are handed back as they are (the classifier is replaceable).
//! - **A 401 once.** A 401 whose response carries
//!   [`CredentialInvalidated`](integration_core::ext::CredentialInvalidated) (set by the auth layer
//!   after it dropped a credential that can be renewed: OAuth, JWT) is replayed exactly once,
//!   whatever the method; it spends neither an attempt nor budget. A 401 without the marker (a static
//!   API key, Basic or bearer token, which a replay would only repeat) is returned as it is.
//! - **Backoff with full jitter**, `rand(0, min(cap, base * 2^n))`, from 100 ms (1 s after a 429 or
//!   503) up to 20 s; decorrelated jitter as an option.
//! - **`Retry-After` is never undercut**: the wait is `max(backoff, hint)`.
//! - **Never sleep into a timeout.** When the wait would pass the request's
//!   [`Deadline`](integration_core::ext::Deadline), the call fails at once with
//!   [`DeadlineExceeded`](integration_core::error::DeadlineExceeded) carrying the hint; when the hint
//!   passes [`max_retry_after`](RetryPolicy::with_max_retry_after) (60 s), with
//!   [`RateLimited`](integration_core::error::RateLimited) carrying it.
//! - **A budget stops retry storms**: [`RetryBudget`] allows retries for at most 20 % of calls over
//!   10 s, with a floor of 10 per second; past it, calls fail fast with
//!   [`BudgetExhausted`](integration_core::error::BudgetExhausted). A full outage costs at most
//!   1.2 attempts per call; at 35 % failed attempts about 80 % of calls succeed (65 % on the first
//!   try). A retry after a 429 is not charged: it waits out the server's throttle, paced by the
//!   rate limiter, and is no storm. See [`RetryBudget`] for the figures and the options.
//! - **A circuit breaker that never makes things worse**: [`CircuitBreakerLayer`] opens when half
//!   the attempts of the last 2 s fail (at least 100 of them; below that, 10 failures in a row),
//!   stays open 5 s, and closes on the majority of 5 half-open probes. See [`BreakerPolicy`] for
//!   the state machine and why.
//! - **Honest accounts.** Every attempt carries [`Attempt`](integration_core::ext::Attempt) in its
//!   request; the final response carries [`Attempts`](integration_core::ext::Attempts) (count, reasons,
//!   time waited); a final error is an [`integration_core::Error`] with
//!   [`attempts()`](integration_core::Error::attempts).
//! - **Streaming bodies are sent once.** A request whose body cannot be copied
//!   ([`TryCloneBody`](integration_core::TryCloneBody) says `None`) is never retried.
//! - **Connections are kept.** The body of a retried answer (a 503's page) is read out and discarded
//!   during the backoff, up to 64 KiB, so its keep-alive connection goes back to the pool instead
//!   of being closed: under an outage, retries do not pay a new connection (and TLS handshake) each.
//!
//! # Metrics and events
//!
//! Counters [`ATTEMPTS`](integration_core::names::ATTEMPTS),
//! [`RETRIES`](integration_core::names::RETRIES) (label [`REASON`](integration_core::names::REASON)),
//! [`RETRY_BUDGET_EXHAUSTED`](integration_core::names::RETRY_BUDGET_EXHAUSTED),
//! [`BREAKER_REJECTIONS`](integration_core::names::BREAKER_REJECTIONS) and the gauge
//! [`BREAKER_STATE`](integration_core::names::BREAKER_STATE), all labelled with
//! [`INTEGRATION`](integration_core::names::INTEGRATION), go through the `metrics` facade. Each retry
//! decision emits a `tracing` event (debug for a retry, info for a refusal) with the attempt, the
//! reason and the wait; never a header or a body.
//!
//! # Where the layers go
//!
//! Outermost first, as the facade assembles them:
//!
//! ```text
//! LogLayer               one span per logical call
//! DeadlineLayer          total deadline, written into the request
//! RetryLayer             attempts, backoff, Retry-After, budget
//! CircuitBreakerLayer    each attempt judged; refused attempts end the retries
//! RateLimitLayer         one permit per attempt
//! AuthLayer              fresh credential per attempt; marks a 401 CredentialInvalidated
//! AttemptTimeoutLayer    per attempt, clipped to the deadline
//! transport
//! ```
//!
//! The deadline goes outside the retry so that it covers every attempt and every wait; the attempt
//! timeout inside, so that each attempt gets its own.
//!
//! # Sharing state
//!
//! Clones of a [`RetryLayer`] share one [`RetryBudget`]; clones of a [`CircuitBreakerLayer`] share one
//! [`BreakerRegistry`]. A rebuilt stack keeps them with [`RetryLayer::with_budget`] and
//! [`CircuitBreakerLayer::with_registry`].
//!
//! # Feature flags
//!
//! This crate has no optional features.

pub mod breaker;
mod budget;
mod deadline;
mod error;
pub mod future;
mod layer;
mod policy;
mod service;
mod timed;
mod timeout;
mod window;

pub use breaker::{
    BreakerPolicy, BreakerRegistry, BreakerState, CircuitBreaker, CircuitBreakerLayer,
};
pub use budget::RetryBudget;
pub use deadline::{DeadlineLayer, DeadlineService};
pub use error::InvalidTimeouts;
pub use layer::RetryLayer;
pub use policy::{Backoff, Jitter, RetryPolicy};
pub use service::Retry;
pub use timeout::{AttemptTimeoutLayer, AttemptTimeoutService, validate_timeouts};

use integration_core::ext::IntegrationName;
use metrics::SharedString;

/// The `integration.name` label of a request's metrics (`unknown` when the request has no name).
fn integration_label(name: Option<&IntegrationName>) -> SharedString {
    match name {
        // The name's own shared string: no copy per call.
        Some(name) => SharedString::from(name.as_arc().clone()),
        None => SharedString::const_str("unknown"),
    }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
