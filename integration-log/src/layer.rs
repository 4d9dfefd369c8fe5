use std::sync::Arc;

use tower_layer::Layer;

use crate::policy::LogPolicy;
use crate::service::{Log, Scope};

/// Wraps a service in one span per **logical call**: place it outermost, above the retry layer.
///
/// The span is named after the method (`GET`), carries OpenTelemetry's HTTP client attributes and
/// the integration's name, and ends with the final outcome; the layer logs the request, the
/// response with its headers, the response body as it streams (capped, redacted), and records
/// [`HTTP_CLIENT_REQUEST_DURATION`](integration_core::names::HTTP_CLIENT_REQUEST_DURATION).
///
/// ```
/// use integration_log::{LogLayer, LogPolicy};
/// use tower::ServiceBuilder;
///
/// let service = ServiceBuilder::new()
///     .layer(LogLayer::new(LogPolicy::default()))
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = service;
/// ```
///
/// # Clone
///
/// Clones share one [`LogPolicy`] (and its redactor).
#[derive(Debug, Clone)]
pub struct LogLayer {
    policy: Arc<LogPolicy>,
}

impl LogLayer {
    /// A call-scope layer with this policy.
    pub fn new(policy: LogPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &LogPolicy {
        &self.policy
    }
}

impl Default for LogLayer {
    fn default() -> Self {
        Self::new(LogPolicy::default())
    }
}

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Log::new(inner, self.policy.clone(), Scope::Call)
    }
}

/// Wraps a service in one span per **attempt**: place it just outside the transport, inside the auth
/// layer, so each attempt (and the credential it carried, redacted) is seen.
///
/// The span is a child of the call span of [`LogLayer`], named after the method, with
/// `http.request.resend_count` from the request's [`Attempt`](integration_core::ext::Attempt) (set
/// on a resent request only, as OpenTelemetry asks; the call span's says how many resends the call
/// took, also only when there were any); the
/// layer records [`ATTEMPT_DURATION`](integration_core::names::ATTEMPT_DURATION) and, with
/// propagation on, gives each attempt its own `traceparent` span id.
///
/// ```
/// use integration_log::{AttemptLogLayer, LogPolicy};
/// use tower::ServiceBuilder;
///
/// let service = ServiceBuilder::new()
///     .layer(AttemptLogLayer::new(LogPolicy::default().with_bodies(false)))
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = service;
/// ```
///
/// # Clone
///
/// Clones share one [`LogPolicy`].
#[derive(Debug, Clone)]
pub struct AttemptLogLayer {
    policy: Arc<LogPolicy>,
}

impl AttemptLogLayer {
    /// An attempt-scope layer with this policy.
    pub fn new(policy: LogPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &LogPolicy {
        &self.policy
    }
}

impl Default for AttemptLogLayer {
    fn default() -> Self {
        Self::new(LogPolicy::default())
    }
}

impl<S> Layer<S> for AttemptLogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Log::new(inner, self.policy.clone(), Scope::Attempt)
    }
}
