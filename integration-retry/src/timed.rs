//! The race between an inner future and a timer that both time layers run.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use integration_core::BoxError;
use integration_core::error::{AttemptTimeout, DeadlineExceeded};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Which failure the timer means when it fires.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expiry {
    /// The total deadline passed.
    Deadline,
    /// The attempt timeout (of this duration) passed.
    Attempt(Duration),
}

impl Expiry {
    pub(crate) fn error(self) -> BoxError {
        match self {
            Expiry::Deadline => Box::new(DeadlineExceeded::new()),
            Expiry::Attempt(after) => Box::new(AttemptTimeout::new(after)),
        }
    }
}

/// `now + duration`, or about 30 years from `now` when that cannot be represented (as tokio's own
/// `sleep` reads a `Duration::MAX`): a timeout meant as "endless" must not overflow and panic.
pub(crate) fn instant_after(now: Instant, duration: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(duration)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

pin_project! {
    #[project = TimedProj]
    pub(crate) enum Timed<F> {
        Running { #[pin] future: F, #[pin] sleep: Sleep, expiry: Expiry },
        // Failed before the inner service was called.
        Expired { expiry: Expiry },
    }
}

impl<F> Timed<F> {
    pub(crate) fn expired(expiry: Expiry) -> Self {
        Timed::Expired { expiry }
    }
}

impl<F, T, E> Future for Timed<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimedProj::Running {
                future,
                sleep,
                expiry,
            } => {
                // The inner future first: an answer that is ready wins over a timer that is too.
                if let Poll::Ready(result) = future.poll(cx) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                match sleep.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(expiry.error())),
                    Poll::Pending => Poll::Pending,
                }
            }
            TimedProj::Expired { expiry } => Poll::Ready(Err(expiry.error())),
        }
    }
}
