//! Names the gateway speaks: paths of the admin endpoints, headers it adds, metrics it records.
//!
//! The Kubernetes manifests under `deploy/kubernetes/` use these paths and the default ports; a
//! test holds them to it.

/// Liveness: `200` while the process serves its admin port.
pub const HEALTHZ_PATH: &str = "/healthz";

/// Readiness: `200` once the configuration is loaded and until a drain starts, `503` otherwise.
pub const READYZ_PATH: &str = "/readyz";

/// Prometheus metrics of the gateway and of every integration's stack.
pub const METRICS_PATH: &str = "/metrics";

/// The read-only admin view: every integration and what the gateway saw of it;
/// `/integrations/<name>` for one.
pub const INTEGRATIONS_PATH: &str = "/integrations";

/// Response header: the integration that served the call.
pub const INTEGRATION_HEADER: &str = "x-integration-name";

/// Response header: how many attempts the call took (retries included).
pub const ATTEMPTS_HEADER: &str = "x-integration-attempts";

/// Counter: requests answered, by `integration.name` and `http.response.status_code`.
pub const REQUESTS: &str = "integration.gateway.requests";

/// Histogram: time from a request's arrival to its response head, in seconds, by `integration.name`.
pub const REQUEST_DURATION: &str = "integration.gateway.request.duration";

/// Counter: requests refused before anything was spent, by `reason` (`missing_token`,
/// `wrong_token`, `unknown_integration`).
pub const REFUSED: &str = "integration.gateway.refused";

/// Gauge: requests being served.
pub const IN_FLIGHT: &str = "integration.gateway.in_flight";

/// Gauge: 1 while draining.
pub const DRAINING: &str = "integration.gateway.draining";
