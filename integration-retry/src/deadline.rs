//! [`DeadlineLayer`]: the total deadline of a logical call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use integration_core::BoxError;
use integration_core::ext::Deadline;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::timed::{Expiry, Timed};

/// Gives every call a total deadline, every attempt and every wait included.
///
/// Writes the [`Deadline`] into the request extensions (tightening one already there, never
/// loosening it), so the retry layer never sleeps past it, the rate limiter never waits past it and
/// the attempt timeout is clipped to it. When it passes, the call fails with
/// [`DeadlineExceeded`](integration_core::error::DeadlineExceeded), whatever the inner layers were
/// doing (an attempt, a backoff, a wait for a permit).
///
/// Goes outside [`RetryLayer`](crate::RetryLayer): the deadline covers all attempts.
///
/// The layer's future ends with the response head; the body is read after it. The facade
/// (`integration-client`) writes the call's [`Deadline`] into the request before the stack (this
/// layer keeps it, as it only tightens) and bounds the reading of the body by the same instant. A
/// stack of your own can do the same: read the [`Deadline`] extension it sent and bound the body by
/// it.
///
/// ```
/// use integration_retry::DeadlineLayer;
/// use std::time::Duration;
///
/// let layer = DeadlineLayer::new(Duration::from_secs(30));
/// assert_eq!(layer.timeout(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// A total deadline of `timeout` from the moment the call enters the layer.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The total timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`DeadlineLayer`]. (Named `DeadlineService` so it does not clash with core's
/// [`Deadline`] extension.)
///
/// # Errors
///
/// The inner error, boxed, or [`DeadlineExceeded`](integration_core::error::DeadlineExceeded) when
/// the deadline passes first (the inner service is not called when it had passed already).
#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    timeout: Duration,
}

impl<S> DeadlineService<S> {
    /// Wraps `inner` with a total deadline of `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
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
}

impl<S: fmt::Debug> fmt::Debug for DeadlineService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineService")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // One clock read for the deadline and the check (issue 19).
        let now = Instant::now();
        let deadline = Deadline::after_from(now, self.timeout).tighten(&mut request);
        if deadline.is_expired_at(now) {
            return DeadlineFuture {
                inner: Timed::expired(Expiry::Deadline),
            };
        }
        // The timer first and the inner call last, straight into the returned future: no
        // intermediate value for the inner future to be copied through (issue 19).
        let sleep = tokio::time::sleep_until(deadline.instant());
        DeadlineFuture {
            inner: Timed::Running {
                future: self.inner.call(request),
                sleep,
                expiry: Expiry::Deadline,
            },
        }
    }
}

pin_project! {
    /// The future of [`DeadlineService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: Timed<F>,
    }
}

impl<F> fmt::Debug for DeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
