//! Metric and span-field names, defined once for every layer.
//!
//! Metric names follow OpenTelemetry's HTTP client conventions where one exists
//! (`http.client.request.duration`) and an `integration.` prefix elsewhere. Exporters translate the dots
//! (Prometheus shows `http_client_request_duration_seconds`). Durations are recorded in seconds.
//!
//! ```
//! use integration_core::names;
//! assert_eq!(names::HTTP_CLIENT_REQUEST_DURATION, "http.client.request.duration");
//! ```

/// Histogram, seconds: one logical call, every attempt and wait included.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// Histogram, seconds: one attempt on the wire.
pub const ATTEMPT_DURATION: &str = "integration.attempt.duration";
/// Counter: attempts sent (first attempts and retries).
pub const ATTEMPTS: &str = "integration.attempts";
/// Counter: retries, labelled by [`REASON`].
pub const RETRIES: &str = "integration.retries";
/// Counter: retries refused because the retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "integration.retry.budget_exhausted";
/// Histogram, seconds: time spent waiting for a rate-limit permit or a server throttle pause.
pub const THROTTLE_WAIT: &str = "integration.ratelimit.wait";
/// Every duration histogram the layers record: [`HTTP_CLIENT_REQUEST_DURATION`],
/// [`ATTEMPT_DURATION`], [`THROTTLE_WAIT`]. Give each of them [`DURATION_BUCKETS`] in your exporter.
pub const DURATION_HISTOGRAMS: [&str; 3] = [
    HTTP_CLIENT_REQUEST_DURATION,
    ATTEMPT_DURATION,
    THROTTLE_WAIT,
];

/// OpenTelemetry's advised bucket boundaries for `http.client.request.duration`, in seconds, for
/// every one of [`DURATION_HISTOGRAMS`].
///
/// Set them in the exporter: with `metrics-exporter-prometheus`, an exporter left at its defaults
/// renders a histogram as a client-side summary, whose quantiles cannot be aggregated across
/// replicas and whose sketch costs about 1,200 instructions a sample to maintain (two samples a call:
/// more than any layer but logging, issue 19); with buckets a sample is a counter increment.
///
/// ```
/// use integration_core::names::{DURATION_BUCKETS, DURATION_HISTOGRAMS};
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
///
/// let mut prometheus = PrometheusBuilder::new();
/// for name in DURATION_HISTOGRAMS {
///     prometheus = prometheus
///         .set_buckets_for_metric(Matcher::Full(name.to_owned()), DURATION_BUCKETS)
///         .expect("the boundaries are not empty");
/// }
/// let recorder = prometheus.build_recorder();
/// # drop(recorder);
/// ```
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Counter: calls refused by the rate limiter instead of waiting.
pub const RATE_LIMIT_REJECTIONS: &str = "integration.ratelimit.rejections";
/// Counter: server throttle signals applied to a key (labelled by [`SOURCE`]: `retry_after`, `remaining`).
pub const THROTTLE_SIGNALS: &str = "integration.ratelimit.server_signals";
/// Gauge, permits per second: the sending rate a rate limiter learned for a key from the server's
/// throttle answers (adaptive throttling), capped at the key's quota once it has grown back. Set
/// while the key has a learned rate.
pub const RATE_LIMIT_LEARNED_RATE: &str = "integration.ratelimit.learned_rate";
/// Gauge: 1 while a Redis-backed limiter runs on its local fallback, 0 otherwise.
pub const RATE_LIMIT_FALLBACK: &str = "integration.ratelimit.fallback";
/// Counter: keys a Redis-backed limiter's fallback decided for that it could not remember to seed
/// back into Redis (the set of keys waiting for their seed was full).
pub const RATE_LIMIT_REJOIN_DROPPED: &str = "integration.ratelimit.rejoin_dropped";
/// Gauge: 1 while Redis answers, 0 while it is unavailable (set on each transition).
pub const REDIS_AVAILABLE: &str = "integration.redis.available";
/// Counter: Redis availability transitions, labelled by [`OUTCOME`] (`lost`, `restored`).
pub const REDIS_TRANSITIONS: &str = "integration.redis.transitions";
/// Gauge: circuit breaker state, 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "integration.circuit_breaker.state";
/// Counter: calls refused by an open circuit breaker.
pub const BREAKER_REJECTIONS: &str = "integration.circuit_breaker.rejections";
/// Counter: token fetches and refreshes, labelled by [`OUTCOME`] (`ok`, `error`, `invalid_grant`...).
pub const TOKEN_REFRESHES: &str = "integration.auth.token_refreshes";
/// Counter: configuration reloads, labelled by [`OUTCOME`] (`applied`, `rejected`, `unreachable`).
pub const CONFIG_RELOADS: &str = "integration.config.reloads";

/// Label and span field: the integration's name.
pub const INTEGRATION: &str = "integration.name";
/// Label and span field: the HTTP method.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// Label and span field: the response status code.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// Label and span field: the upstream host.
pub const SERVER_ADDRESS: &str = "server.address";
/// Span field: the upstream port.
pub const SERVER_PORT: &str = "server.port";
/// Span field: the URL with secrets removed.
pub const URL_FULL: &str = "url.full";
/// Span field: how many times the request was re-sent (attempt number minus one).
pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
/// Label and span field: the status code of an error answer (`"503"`, as OpenTelemetry asks), else
/// the [`ErrorKind::as_str`](crate::ErrorKind::as_str) of the failure (`"timeout"`, `"connect"`).
pub const ERROR_TYPE: &str = "error.type";
/// Label: why something happened (a retry reason).
pub const REASON: &str = "reason";
/// Label: how something ended.
pub const OUTCOME: &str = "outcome";
/// Label: where a signal came from.
pub const SOURCE: &str = "source";

/// Counter: calls answered by a fresh cached response (`integration-cache`).
pub const CACHE_HITS: &str = "integration.cache.hits";
/// Counter: calls the cache could not answer; the upstream did.
pub const CACHE_MISSES: &str = "integration.cache.misses";
/// Counter: calls answered by a stale cached response (stale-while-revalidate or stale-if-error).
pub const CACHE_STALE: &str = "integration.cache.stale";
/// Counter: cached responses confirmed by a 304 from the upstream.
pub const CACHE_REVALIDATED: &str = "integration.cache.revalidated";
/// Counter: calls the cache did not take part in (unsafe methods, range requests, `no-store`).
pub const CACHE_BYPASSES: &str = "integration.cache.bypasses";
/// Gauge, bytes: what the entries of a memory cache store are charged for.
pub const CACHE_STORED_BYTES: &str = "integration.cache.stored_bytes";
/// Span field of the call span: how the cache answered (`hit`, `miss`, `stale`, `revalidated`,
/// `bypass`).
pub const CACHE_STATUS: &str = "cache.status";
