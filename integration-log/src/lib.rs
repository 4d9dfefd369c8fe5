//! Tracing spans with OpenTelemetry's HTTP client names, redacted request/response logs with capped
//! body capture, and call/attempt duration metrics, as tower layers for any `http` client service.
//!
//! - [`LogLayer`]: one span per logical call, named after the method (`GET`), with
//!   `http.request.method`, `server.address`, `server.port`, `url.full` (secrets removed),
//!   `http.response.status_code`, `http.request.resend_count`, `error.type` and `integration.name`
//!   (OpenTelemetry's `internal` kind, its default: the span carries no `otel.kind` field);
//!   a request event, a response event at a level chosen by the outcome ([`LogPolicy`]), the response
//!   body captured *while it streams* (textual types only, capped, redacted), and the
//!   `http.client.request.duration` histogram.
//! - [`AttemptLogLayer`]: the same for each attempt, as a child `client` span (`otel.kind = "client"`),
//!   with `integration.attempt.duration` and optional W3C `traceparent` propagation
//!   ([`traceparent`]).
//! - [`redact::Redactor`]: the one redaction engine (re-exported from `integration_core::redact`, where
//!   `integration_core::Error` uses it too), used by every log path here and by the facade.
//!
//! Nothing is formatted when its level is off: URLs, headers and bodies are redacted and formatted
//! lazily, when a subscriber records them, and a response body is teed only when its event is enabled.
//! When no span or event of the policy can be recorded at all (the global maximum level, then the
//! callsites, say so) the layer creates no span, copies no URL and captures nothing; with
//! [`LogPolicy::with_metrics`]`(false)` as well it does not even read the clock. Measured by
//! `cargo bench -p integration-tests --bench middleware -- 'middleware/(inner|log)'`: the fully
//! disabled layer adds about 0.1 µs to a call (`log/off-no-metrics`), the duration histogram into
//! a Prometheus recorder about 0.6 µs (`log/off`).
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use integration_core::ext::IntegrationName;
//! use integration_log::{LogLayer, LogPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), integration_core::BoxError> {
//! let service = ServiceBuilder::new()
//!     .layer(LogLayer::new(LogPolicy::default()))
//!     .service_fn(|_request: Request<String>| async {
//!         let response = Response::builder()
//!             .header("content-type", "application/json")
//!             .body(r#"{"id":1,"access_token":"never logged"}"#.to_owned())?;
//!         Ok::<_, http::Error>(response)
//!     });
//!
//! let mut request = Request::get("https://api.example.com/v1/items?api_key=s3cr3t")
//!     .header("authorization", "Bearer s3cr3t")
//!     .body(String::new())?;
//! request.extensions_mut().insert(IntegrationName::new("example"));
//!
//! // Under a subscriber, this logs a `GET` span with url.full =
//! // "https://api.example.com/v1/items?api_key=[REDACTED]", and the body as
//! // {"id":1,"access_token":"[REDACTED]"} once it has been read.
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes in a stack
//!
//! Outermost to innermost, as the facade (`integration-client`) assembles it:
//!
//! ```text
//! LogLayer               <- this crate: call span, final outcome, http.client.request.duration
//! DeadlineLayer
//! RetryLayer
//! CircuitBreakerLayer
//! RateLimitLayer
//! AuthLayer
//! AttemptLogLayer        <- this crate: attempt span, integration.attempt.duration, traceparent
//! AttemptTimeout
//! transport
//! ```
//!
//! [`LogLayer`] goes outermost so its span covers every attempt and wait, and its response sees the
//! retry layer's [`Attempts`](integration_core::ext::Attempts). [`AttemptLogLayer`] goes inside the auth
//! layer so the credential it logs (redacted) is the one sent, and around the attempt timeout so a
//! timed-out attempt is recorded with `error.type = "timeout"`.
//!
//! # Metrics
//!
//! Every metric name of [`integration_core::names`], what it measures and which layer emits it.
//! Durations are in seconds. [`describe_metrics`] registers the descriptions and units with the
//! installed recorder. Give the duration histogram names ([`names::DURATION_HISTOGRAMS`]) the
//! bucket boundaries of [`names::DURATION_BUCKETS`] in your exporter: a Prometheus exporter left at
//! its defaults keeps client-side summaries, which cannot be aggregated across replicas and cost a
//! quantile sketch per sample.
//!
//! | name | type | unit | labels | emitted by |
//! | --- | --- | --- | --- | --- |
//! | `http.client.request.duration` | histogram | seconds | `http.request.method`, `server.address`, `http.response.status_code`, `error.type`, `integration.name` | [`LogLayer`] (per call, at the response head or the error) |
//! | `integration.attempt.duration` | histogram | seconds | same as above | [`AttemptLogLayer`] (per attempt) |
//! | `integration.attempts` | counter | attempts | `integration.name` | `RetryLayer` (integration-retry) |
//! | `integration.retries` | counter | retries | `integration.name`, `reason` | `RetryLayer` |
//! | `integration.retry.budget_exhausted` | counter | calls | `integration.name` | `RetryLayer` |
//! | `integration.ratelimit.wait` | histogram | seconds | `integration.name` | `RateLimitLayer` (integration-ratelimit) |
//! | `integration.ratelimit.rejections` | counter | calls | `integration.name` | `RateLimitLayer` |
//! | `integration.ratelimit.server_signals` | counter | signals | `integration.name`, `source` | `RateLimitLayer` |
//! | `integration.ratelimit.fallback` | gauge | 0/1 | `integration.name` | `RateLimitLayer` with its Redis store |
//! | `integration.circuit_breaker.state` | gauge | 0 closed, 1 half-open, 2 open | `integration.name`, `server.address` | `CircuitBreakerLayer` (integration-retry) |
//! | `integration.circuit_breaker.rejections` | counter | calls | `integration.name` | `CircuitBreakerLayer` |
//! | `integration.auth.token_refreshes` | counter | refreshes | `integration.name`, `outcome` | `AuthLayer` token cache (integration-auth) |
//! | `integration.config.reloads` | counter | reloads | `outcome` | configuration reloader (integration-config, integration-client) |
//!
//! Labels are omitted when unknown: `http.response.status_code` without a response, `error.type` on
//! success, `integration.name` without an [`IntegrationName`](integration_core::ext::IntegrationName)
//! in the request. `error.type` is the status code (`"503"`) for an error answer, else
//! [`ErrorKind::as_str`](integration_core::ErrorKind::as_str) (`"timeout"`, `"connect"`,
//! `"rate_limited"`, `"cancelled"`...). Methods outside RFC 9110 and PATCH are labelled `_OTHER`.
//!
//! # Events
//!
//! All events and spans use the target `integration_log`. Under the span, the layer emits:
//!
//! | message | level | fields |
//! | --- | --- | --- |
//! | `request` | [`LogPolicy::request_level`] | `attempt`, `http.request.headers`, `http.request.body`, `http.request.body.size`, `http.request.body.truncated`, `traceparent` |
//! | `response` | by outcome ([`LogPolicy::level_for_status`]) | `integration.name`, `http.request.method`, `url.full` (4xx/5xx only), `http.response.status_code`, `error.type`, `elapsed_ms`, `attempts`, `retry.reasons`, `retry.waited_ms`, `http.response.headers` |
//! | `failed` | [`LogPolicy::error_level`] (or by status) | `integration.name`, `http.request.method`, `url.full`, `error.type`, `error` (redacted chain), `elapsed_ms`, `attempts` |
//! | `response body` | the response's level | `integration.name`, `http.response.body`, `http.response.body.size`, `http.response.body.truncated`, `http.response.body.complete`, `http.response.body.failed` |
//! | `cancelled before a response` | `DEBUG` | `error.type`, `elapsed_ms` |
//!
//! A failure's event names its integration, method and URL itself, so the line stands alone even when
//! the span's level is filtered out.
//!
//! # Feature flags
//!
//! This crate has no optional features.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[macro_use]
mod macros;

pub mod body;
pub mod future;
mod handles;
mod layer;
mod policy;
pub mod redact;
mod service;
pub mod traceparent;

pub use body::{BodyBytes, LogBody};
pub use layer::{AttemptLogLayer, LogLayer};
pub use policy::{DEFAULT_BODY_LIMIT, LogPolicy};
pub use redact::{REDACTED, Redactor};
pub use service::Log;

use integration_core::names;
use metrics::Unit;

/// Registers the description and unit of every metric in [`integration_core::names`] with the
/// installed `metrics` recorder, so exporters show them (Prometheus `# HELP` lines and units).
///
/// Call it once after installing the recorder.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        names::HTTP_CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of a logical HTTP client call, every attempt and wait included."
    );
    metrics::describe_histogram!(
        names::ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of one attempt on the wire."
    );
    metrics::describe_counter!(
        names::ATTEMPTS,
        Unit::Count,
        "Attempts sent, first attempts and retries."
    );
    metrics::describe_counter!(names::RETRIES, Unit::Count, "Retries, by reason.");
    metrics::describe_counter!(
        names::RETRY_BUDGET_EXHAUSTED,
        Unit::Count,
        "Retries refused because the retry budget was spent."
    );
    metrics::describe_histogram!(
        names::THROTTLE_WAIT,
        Unit::Seconds,
        "Time spent waiting for a rate-limit permit or a server throttle pause."
    );
    metrics::describe_counter!(
        names::RATE_LIMIT_REJECTIONS,
        Unit::Count,
        "Calls refused by the rate limiter instead of waiting."
    );
    metrics::describe_counter!(
        names::THROTTLE_SIGNALS,
        Unit::Count,
        "Server throttle signals applied to a key, by source."
    );
    metrics::describe_gauge!(
        names::RATE_LIMIT_FALLBACK,
        "1 while a Redis-backed limiter runs on its local fallback, 0 otherwise."
    );
    metrics::describe_gauge!(
        names::BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open."
    );
    metrics::describe_counter!(
        names::BREAKER_REJECTIONS,
        Unit::Count,
        "Calls refused by an open circuit breaker."
    );
    metrics::describe_counter!(
        names::TOKEN_REFRESHES,
        Unit::Count,
        "Token fetches and refreshes, by outcome."
    );
    metrics::describe_counter!(
        names::CONFIG_RELOADS,
        Unit::Count,
        "Configuration reloads, by outcome."
    );
}

#[cfg(test)]
mod tests {
    use integration_core::names;

    /// The crate docs' metric table names every metric of `integration_core::names`.
    #[test]
    fn metric_table_lists_every_metric_name() {
        let docs = include_str!("lib.rs");
        for name in [
            names::HTTP_CLIENT_REQUEST_DURATION,
            names::ATTEMPT_DURATION,
            names::ATTEMPTS,
            names::RETRIES,
            names::RETRY_BUDGET_EXHAUSTED,
            names::THROTTLE_WAIT,
            names::RATE_LIMIT_REJECTIONS,
            names::THROTTLE_SIGNALS,
            names::RATE_LIMIT_FALLBACK,
            names::BREAKER_STATE,
            names::BREAKER_REJECTIONS,
            names::TOKEN_REFRESHES,
            names::CONFIG_RELOADS,
        ] {
            assert!(
                docs.contains(&format!("//! | `{name}` |")),
                "{name} is missing from the metric table"
            );
        }
    }
}
