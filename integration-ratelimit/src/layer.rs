use std::fmt;

use tower_layer::Layer;

use crate::key::DefaultKey;
use crate::limiter::RateLimiter;
use crate::service::RateLimit;

/// Applies a [`RateLimiter`] to every call of the inner service: one permit of every quota of the
/// request's key per call, the server's throttle signals obeyed by every caller of the key.
///
/// The key comes from [`DefaultKey`] (the request's `IntegrationName`, else its URI authority) or from
/// a closure given to [`with_key`](Self::with_key).
///
/// # Clone
///
/// Clones (and every service they build) share the limiter: one set of quotas per key.
///
/// ```
/// use http::Request;
/// use integration_ratelimit::{Quota, RateLimitKey, RateLimitLayer, RateLimitPolicy, RateLimiter};
///
/// let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::per_second(10).unwrap()]));
/// // One key per tenant, read from a header.
/// let layer = RateLimitLayer::new(limiter).with_key(|request: &Request<String>| {
///     let tenant = request.headers().get("x-tenant")?.to_str().ok()?;
///     Some(RateLimitKey::from(format!("tenant:{tenant}")))
/// });
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<K = DefaultKey> {
    limiter: RateLimiter,
    make_key: K,
}

impl RateLimitLayer {
    /// A layer over `limiter`, keyed by [`DefaultKey`].
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            make_key: DefaultKey,
        }
    }
}

impl<K> RateLimitLayer<K> {
    /// The same layer with another way to choose the key (any [`MakeKey`](crate::MakeKey), such as a
    /// closure `Fn(&http::Request<B>) -> Option<RateLimitKey>`; `None` lets a request through
    /// unlimited).
    pub fn with_key<K2>(self, make_key: K2) -> RateLimitLayer<K2> {
        RateLimitLayer {
            limiter: self.limiter,
            make_key,
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<K> fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("make_key", &std::any::type_name::<K>())
            .finish()
    }
}

impl<S, K: Clone> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.make_key.clone())
    }
}
