//! What a [`LogLayer`](crate::LogLayer) records and at which levels.

use std::fmt;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use tracing::Level;
use tracing::level_filters::LevelFilter;

use crate::handles::Handles;
use crate::redact::Redactor;
use crate::service::TargetCache;

/// The default cap of a body capture, in bytes.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024;

/// How one integration is logged: levels by outcome, what is captured, the redactor, propagation.
///
/// Plain values, so the facade builds it from its configuration model. The defaults:
///
/// | setting | default |
/// | --- | --- |
/// | span level | `INFO` |
/// | request event | `DEBUG` |
/// | success | `DEBUG` |
/// | success after retries | `INFO` |
/// | 4xx answer | `WARN` |
/// | 5xx answer | `ERROR` |
/// | error (transport, timeout, a layer's refusal) | `ERROR` |
/// | headers captured | yes (redacted) |
/// | bodies captured | yes (redacted, textual types only, capped at [`DEFAULT_BODY_LIMIT`]) |
/// | `traceparent` propagation | off |
/// | duration metrics | on |
///
/// When no span or event of the policy can be recorded (every level filtered out) and metrics are
/// off, a call through the layer does no logging work at all: no clock read, no span, no copy of
/// the URL, no capture (see [`LogPolicy::with_metrics`]).
///
/// ```
/// use integration_log::{LogPolicy, redact::Redactor};
/// use tracing::Level;
///
/// let policy = LogPolicy::new()
///     .with_success_level(Level::INFO)
///     .with_bodies(false)
///     .with_redactor(Redactor::default().deny(["x-customer-ref"]))
///     .with_traceparent(true);
/// assert_eq!(policy.success_level(), Level::INFO);
/// assert!(!policy.captures_bodies());
/// ```
#[derive(Clone)]
pub struct LogPolicy {
    pub(crate) redactor: Redactor,
    pub(crate) span_level: Level,
    pub(crate) request_level: Level,
    pub(crate) success_level: Level,
    pub(crate) retried_level: Level,
    pub(crate) client_error_level: Level,
    pub(crate) server_error_level: Level,
    pub(crate) error_level: Level,
    pub(crate) capture_headers: bool,
    pub(crate) capture_bodies: bool,
    pub(crate) body_limit: usize,
    pub(crate) propagate_traceparent: bool,
    pub(crate) metrics: bool,
    pub(crate) ids: IdSource,
    /// The duration histograms' handles, shared by the clones of the policy.
    pub(crate) handles: Arc<Handles>,
    /// The host and port of the last authority called, shared by the clones of the policy.
    pub(crate) targets: Arc<TargetCache>,
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            redactor: Redactor::default(),
            span_level: Level::INFO,
            request_level: Level::DEBUG,
            success_level: Level::DEBUG,
            retried_level: Level::INFO,
            client_error_level: Level::WARN,
            server_error_level: Level::ERROR,
            error_level: Level::ERROR,
            capture_headers: true,
            capture_bodies: true,
            body_limit: DEFAULT_BODY_LIMIT,
            propagate_traceparent: false,
            metrics: true,
            ids: IdSource::Thread,
            handles: Arc::default(),
            targets: Arc::default(),
        }
    }
}

impl LogPolicy {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// The redactor every log line and span field of this layer goes through.
    #[must_use]
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// The level of the spans (call and attempt).
    #[must_use]
    pub fn with_span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// The level of the event logged when a request is sent (with its headers and body).
    #[must_use]
    pub fn with_request_level(mut self, level: Level) -> Self {
        self.request_level = level;
        self
    }

    /// The level of a success (2xx, 3xx) that needed no retry.
    #[must_use]
    pub fn with_success_level(mut self, level: Level) -> Self {
        self.success_level = level;
        self
    }

    /// The level of a success that needed retries (the response carries
    /// [`Attempts`](integration_core::ext::Attempts) with retries).
    #[must_use]
    pub fn with_retried_level(mut self, level: Level) -> Self {
        self.retried_level = level;
        self
    }

    /// The level of a 4xx answer.
    #[must_use]
    pub fn with_client_error_level(mut self, level: Level) -> Self {
        self.client_error_level = level;
        self
    }

    /// The level of a 5xx answer.
    #[must_use]
    pub fn with_server_error_level(mut self, level: Level) -> Self {
        self.server_error_level = level;
        self
    }

    /// The level of an error: transport failure, timeout, a layer's refusal (rate limit, breaker).
    #[must_use]
    pub fn with_error_level(mut self, level: Level) -> Self {
        self.error_level = level;
        self
    }

    /// Whether request and response headers are logged (always redacted).
    #[must_use]
    pub fn with_headers(mut self, capture: bool) -> Self {
        self.capture_headers = capture;
        self
    }

    /// Whether request and response bodies of textual types are logged (always redacted and capped).
    #[must_use]
    pub fn with_bodies(mut self, capture: bool) -> Self {
        self.capture_bodies = capture;
        self
    }

    /// The cap of a body capture, in bytes.
    #[must_use]
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Whether a W3C `traceparent` header is added to outgoing requests that have none.
    #[must_use]
    pub fn with_traceparent(mut self, propagate: bool) -> Self {
        self.propagate_traceparent = propagate;
        self
    }

    /// Whether the duration histograms (`http.client.request.duration` per call, the attempt
    /// duration per attempt) are recorded. On by default; with no `metrics` recorder installed they
    /// go to a no-op recorder, which still costs a clock read and a label lookup per call: turn them
    /// off where nothing collects them.
    #[must_use]
    pub fn with_metrics(mut self, record: bool) -> Self {
        self.metrics = record;
        self
    }

    /// Generates trace and span ids from a seeded generator (deterministic tests) instead of the
    /// thread-local one.
    #[must_use]
    pub fn with_id_seed(mut self, seed: u64) -> Self {
        self.ids = IdSource::Seeded(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))));
        self
    }

    /// The redactor.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The span level.
    pub fn span_level(&self) -> Level {
        self.span_level
    }

    /// The request event's level.
    pub fn request_level(&self) -> Level {
        self.request_level
    }

    /// The level of a plain success.
    pub fn success_level(&self) -> Level {
        self.success_level
    }

    /// The level of a success after retries.
    pub fn retried_level(&self) -> Level {
        self.retried_level
    }

    /// The level of a 4xx answer.
    pub fn client_error_level(&self) -> Level {
        self.client_error_level
    }

    /// The level of a 5xx answer.
    pub fn server_error_level(&self) -> Level {
        self.server_error_level
    }

    /// The level of an error.
    pub fn error_level(&self) -> Level {
        self.error_level
    }

    /// True when headers are logged.
    pub fn captures_headers(&self) -> bool {
        self.capture_headers
    }

    /// True when bodies are logged.
    pub fn captures_bodies(&self) -> bool {
        self.capture_bodies
    }

    /// The body capture cap, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// True when `traceparent` is propagated.
    pub fn propagates_traceparent(&self) -> bool {
        self.propagate_traceparent
    }

    /// True when the duration histograms are recorded.
    pub fn records_metrics(&self) -> bool {
        self.metrics
    }

    /// Whether the current subscriber could record any span or event of this policy.
    ///
    /// The global maximum level is read first (one atomic load); only when it lets the policy's
    /// most severe level through are the span and event callsites asked, each answering from
    /// tracing's cached interest. Filters are taken to be monotonic in level, as tracing's are: an
    /// event at the policy's most severe level is recorded if any of its events is.
    pub(crate) fn logs_enabled(&self) -> bool {
        let most_severe_event = self
            .request_level
            .min(self.success_level)
            .min(self.retried_level)
            .min(self.client_error_level)
            .min(self.server_error_level)
            .min(self.error_level)
            // The cancellation event's fixed level.
            .min(Level::DEBUG);
        if most_severe_event.min(self.span_level) > LevelFilter::current() {
            return false;
        }
        span_enabled_at!(self.span_level) || event_enabled_at!(most_severe_event)
    }

    /// The level of a response with `status` after `retries` retries.
    pub fn level_for_status(&self, status: StatusCode, retries: u32) -> Level {
        if status.is_server_error() {
            self.server_error_level
        } else if status.is_client_error() {
            self.client_error_level
        } else if retries > 0 {
            self.retried_level
        } else {
            self.success_level
        }
    }
}

impl fmt::Debug for LogPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogPolicy")
            .field("redactor", &self.redactor)
            .field("span_level", &self.span_level)
            .field("request_level", &self.request_level)
            .field("success_level", &self.success_level)
            .field("retried_level", &self.retried_level)
            .field("client_error_level", &self.client_error_level)
            .field("server_error_level", &self.server_error_level)
            .field("error_level", &self.error_level)
            .field("capture_headers", &self.capture_headers)
            .field("capture_bodies", &self.capture_bodies)
            .field("body_limit", &self.body_limit)
            .field("propagate_traceparent", &self.propagate_traceparent)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// Where trace and span ids come from.
#[derive(Clone)]
pub(crate) enum IdSource {
    /// fastrand's thread-local generator.
    Thread,
    /// A seeded generator, shared by the clones of the policy.
    Seeded(Arc<Mutex<fastrand::Rng>>),
}

impl IdSource {
    /// A random non-zero `u128` (an all-zero id is invalid in W3C trace context).
    pub(crate) fn u128(&self) -> u128 {
        loop {
            let id = match self {
                IdSource::Thread => fastrand::u128(..),
                IdSource::Seeded(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).u128(..),
            };
            if id != 0 {
                return id;
            }
        }
    }

    /// A random non-zero `u64`.
    pub(crate) fn u64(&self) -> u64 {
        loop {
            let id = match self {
                IdSource::Thread => fastrand::u64(..),
                IdSource::Seeded(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).u64(..),
            };
            if id != 0 {
                return id;
            }
        }
    }
}
