use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use integration_core::BoxError;
use integration_core::ext::{Deadline, IntegrationName};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::key::{DefaultKey, MakeKey};
use crate::limiter::RateLimiter;

/// The rate-limited service built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// # Where the wait happens
///
/// The key of a request is only known in `call`, so the permit cannot be taken in `poll_ready`.
/// `poll_ready` reports the inner service's readiness; `call` moves that ready service into the
/// response future, which then, in order: takes a concurrency slot of the key (if capped), takes the
/// key's permit (waiting for it, or for a server pause to end, up to the bound), polls the inner
/// service's readiness again and calls it. The wait is therefore inside the response future, and the
/// inner service's readiness is respected. The bound is the policy's `max_wait`, shortened by the
/// request's [`Deadline`]; a call that cannot be served within it fails at once with a boxed
/// [`RateLimited`](integration_core::error::RateLimited) carrying when to come back.
///
/// The concurrency slot is held until the inner service's response (its head) arrives.
///
/// A response that carries a throttle signal is handed back once the signal is recorded: at once with
/// the memory store, after one Redis round trip (bounded by the store's timeout) with the Redis store.
///
/// After a wait, the call checks again for a server pause that started meanwhile (another caller's
/// 429). If there is one, it gives up the permit it reserved and takes a new one after the pause, in
/// turn and at the key's pace (the pause emptied the burst), rather than leaving with every other
/// waiter at the pause's end. With the Redis store that check reads the pauses this process has seen
/// (it costs no round trip); pauses reported by other replicas are seen by the next acquisition.
///
/// Every response is read for its signal; one that carries one (a pause, a 429 or a 503 with
/// `Retry-After`, the server's remaining count with a reset) is applied to the key (see
/// [`Adaptation`](crate::Adaptation)), with the Redis store in one more round trip.
///
/// # Clone
///
/// Clones share the limiter.
pub struct RateLimit<S, K = DefaultKey> {
    inner: S,
    limiter: RateLimiter,
    make_key: K,
}

impl<S, K> RateLimit<S, K> {
    /// Limits `inner` with `limiter`, keying requests with `make_key`.
    pub fn new(inner: S, limiter: RateLimiter, make_key: K) -> Self {
        Self {
            inner,
            limiter,
            make_key,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S: Clone, K: Clone> Clone for RateLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            make_key: self.make_key.clone(),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    K: MakeKey<ReqBody>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service in `self` is the one `poll_ready` found ready; a fresh clone may not be. A call
        // sent at once uses it here; a call that waits takes it along (the future calls it after
        // the wait) and leaves a clone for the next `poll_ready` (see `ResponseFuture::limited`).
        let Some(key) = self.make_key.make_key(&request) else {
            return ResponseFuture::unlimited(&mut self.inner, request);
        };
        let label = match IntegrationName::of(&request) {
            Some(name) => name.as_arc().clone(),
            None => key.shared(),
        };
        let policy = self.limiter.policy();
        let deadline = Deadline::of(&request);
        ResponseFuture::limited(
            &mut self.inner,
            request,
            self.limiter.clone(),
            key,
            label,
            policy,
            deadline,
        )
    }
}
