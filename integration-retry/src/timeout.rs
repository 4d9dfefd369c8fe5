//! [`AttemptTimeoutLayer`]: the timeout of one attempt, clipped to the total deadline.

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

use crate::error::InvalidTimeouts;
use crate::timed::{Expiry, Timed, instant_after};

/// Checks that an attempt timeout fits inside a total deadline: both greater than zero and
/// `attempt <= total`.
///
/// # Errors
///
/// [`InvalidTimeouts`] otherwise.
///
/// ```
/// use integration_retry::validate_timeouts;
/// use std::time::Duration;
///
/// assert!(validate_timeouts(Duration::from_secs(5), Duration::from_secs(30)).is_ok());
/// let error = validate_timeouts(Duration::from_secs(60), Duration::from_secs(30)).unwrap_err();
/// assert_eq!(error.attempt(), Duration::from_secs(60));
/// ```
pub fn validate_timeouts(attempt: Duration, total: Duration) -> Result<(), InvalidTimeouts> {
    if attempt.is_zero() || total.is_zero() || attempt > total {
        return Err(InvalidTimeouts::new(attempt, total));
    }
    Ok(())
}

/// Bounds each attempt: the inner call fails with
/// [`AttemptTimeout`](integration_core::error::AttemptTimeout) when it takes longer than the attempt
/// timeout, which the retry layer classifies as retryable (for idempotent requests).
///
/// The effective timeout is `min(attempt timeout, time left before the request's` [`Deadline`]`)`.
/// When the deadline is the tighter bound and passes, the error is
/// [`DeadlineExceeded`](integration_core::error::DeadlineExceeded) instead: retrying cannot help, and
/// the caller learns the true cause.
///
/// Goes inside [`RetryLayer`](crate::RetryLayer) (each attempt gets its own timeout), right above the
/// transport.
///
/// ```
/// use integration_retry::AttemptTimeoutLayer;
/// use std::time::Duration;
///
/// let layer = AttemptTimeoutLayer::within(Duration::from_secs(5), Duration::from_secs(30)).unwrap();
/// assert_eq!(layer.timeout(), Duration::from_secs(5));
/// assert!(AttemptTimeoutLayer::within(Duration::from_secs(31), Duration::from_secs(30)).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    /// Each attempt gets at most `timeout` (and never more than the request's deadline leaves).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// An attempt timeout checked against the total deadline it must fit in.
    ///
    /// # Errors
    ///
    /// [`InvalidTimeouts`] when `attempt > total` or either is zero.
    pub fn within(attempt: Duration, total: Duration) -> Result<Self, InvalidTimeouts> {
        validate_timeouts(attempt, total)?;
        Ok(Self::new(attempt))
    }

    /// The attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeoutService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`AttemptTimeoutLayer`]. (Named `AttemptTimeoutService` so it does not clash with
/// core's [`AttemptTimeout`](integration_core::error::AttemptTimeout) error.)
///
/// # Errors
///
/// The inner error, boxed; [`AttemptTimeout`](integration_core::error::AttemptTimeout) when the
/// attempt timeout passes; [`DeadlineExceeded`](integration_core::error::DeadlineExceeded) when the
/// request's deadline passes first (the inner service is not called when it had passed already).
#[derive(Clone)]
pub struct AttemptTimeoutService<S> {
    inner: S,
    timeout: Duration,
}

impl<S> AttemptTimeoutService<S> {
    /// Wraps `inner` with an attempt timeout of `timeout`.
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

impl<S: fmt::Debug> fmt::Debug for AttemptTimeoutService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptTimeoutService")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for AttemptTimeoutService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AttemptTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // One clock read for the attempt's end and the deadline's check (issue 19).
        let now = Instant::now();
        let attempt_end = instant_after(now, self.timeout);
        let (until, expiry) = match Deadline::of(&request) {
            Some(deadline) if deadline.is_expired_at(now) => {
                return AttemptTimeoutFuture {
                    inner: Timed::expired(Expiry::Deadline),
                };
            }
            Some(deadline) if deadline.instant() < attempt_end => {
                (deadline.instant(), Expiry::Deadline)
            }
            _ => (attempt_end, Expiry::Attempt(self.timeout)),
        };
        // The timer first and the inner call last, straight into the returned future: one call
        // site, and no intermediate value for the inner future to be copied through (issue 19).
        let sleep = tokio::time::sleep_until(until);
        AttemptTimeoutFuture {
            inner: Timed::Running {
                future: self.inner.call(request),
                sleep,
                expiry,
            },
        }
    }
}

pin_project! {
    /// The future of [`AttemptTimeoutService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct AttemptTimeoutFuture<F> {
        #[pin]
        inner: Timed<F>,
    }
}

impl<F> fmt::Debug for AttemptTimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptTimeoutFuture")
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for AttemptTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
