//! The futures of this crate's services, named so they can be stored and boxed by callers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use integration_core::TryCloneBody;
use integration_core::body::RequestCopy;
use integration_core::classify::{Classification, RequestMeta, RetryReason};
use integration_core::error::{BudgetExhausted, DeadlineExceeded, RateLimited};
use integration_core::ext::{Attempt, Attempts, CredentialInvalidated, Deadline, IntegrationName};
use integration_core::{BoxError, Error, names};
use metrics::SharedString;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::service::Shared;

pub use crate::breaker::BreakerFuture;
pub use crate::deadline::DeadlineFuture;
pub use crate::timeout::AttemptTimeoutFuture;

pin_project! {
    /// The future of [`Retry`](crate::Retry): one logical call, every attempt and wait included.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B, ResB>
    where
        S: Service<Request<B>>,
    {
        state: State<S::Future>,
        // The body of a retried answer (a 503, say), read to its end during the backoff so that
        // its connection goes back to the pool instead of being closed. Boxed: only a retry after
        // an answer needs it, and inline it made the future, moved by every layer above, larger
        // by a whole response body on every call (issue 19).
        drain: Option<Pin<Box<ResB>>>,
        drained: usize,
        service: S,
        retry: RetryState<B>,
    }
}

/// The most of a retried answer's body read (and discarded) to keep its connection: a longer body
/// is dropped, which closes the connection, as reading it would cost more than a new one.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Where a call is. The attempt's future and the backoff's timer are boxed: inline, the attempt
/// (every layer below this one: 696 bytes in the facade's stack) made this future as much larger,
/// the layers above moved it, and the facade's box of the whole stack's future, at 1.6 KB, was past
/// the allocator's per-thread cache (1,032 bytes in glibc): a slow allocation and a slower free on
/// every call. Two small boxes cost less than one large one (issue 19). The timer's box is made
/// only for a retry.
enum State<F> {
    /// An attempt is in flight.
    Called { future: Pin<Box<F>> },
    /// Waiting out the backoff before the next attempt.
    Waiting { sleep: Pin<Box<Sleep>> },
    /// Waiting for the inner service to be ready for the next attempt.
    Ready,
}

impl<S, B, ResB> ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(future: S::Future, service: S, retry: RetryState<B>) -> Self {
        Self {
            state: State::Called {
                future: Box::pin(future),
            },
            drain: None,
            drained: 0,
            service,
            retry,
        }
    }
}

impl<S, B, ResB> fmt::Debug for ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.retry.attempts)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: TryCloneBody,
    ResB: http_body::Body,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        loop {
            match this.state {
                State::Called { future } => {
                    let next = match ready!(future.as_mut().poll(cx)) {
                        Ok(response) => this.retry.on_response(response),
                        Err(error) => this.retry.on_error(error.into()),
                    };
                    let wait = match next {
                        Next::Return(output) => return Poll::Ready(output),
                        Next::Retry(wait) => wait,
                        Next::RetryAfter(wait, response) => {
                            if !wait.is_zero() && !response.body().is_end_stream() {
                                *this.drained = 0;
                                *this.drain = Some(Box::pin(response.into_body()));
                            }
                            wait
                        }
                    };
                    *this.state = if wait.is_zero() {
                        State::Ready
                    } else {
                        State::Waiting {
                            sleep: Box::pin(tokio::time::sleep(wait)),
                        }
                    };
                }
                State::Waiting { sleep } => {
                    drain(this.drain, this.drained, cx);
                    ready!(sleep.as_mut().poll(cx));
                    *this.state = State::Ready;
                }
                State::Ready => {
                    // What is left of the last answer's body: dropped (its connection closed).
                    *this.drain = None;
                    // The attempt begins: counted now, not when it was planned, so a call
                    // cancelled during the backoff reports no attempt it never began. (Idempotent:
                    // readiness may take several polls.)
                    this.retry.commit_retry();
                    if let Err(error) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(this.retry.finish_error(error.into())));
                    }
                    *this.state = State::Called {
                        future: next_attempt(this.service, this.retry),
                    };
                }
            }
        }
    }
}

/// A retry's attempt, called on `service` (ready) with the spare copy of the request, and boxed.
///
/// Out of line and cold: the attempt's future is built in this function's frame, which is gone
/// before the attempt is polled. Inlined, its temporaries (the request, the attempt's future on its
/// way into the box) sized the retry future's `poll` frame (1,464 bytes, now 536), which every
/// call's path down the stack holds, stack memory that pushed other data out of the first-level
/// cache (issue 19).
#[cold]
#[inline(never)]
fn next_attempt<S, B>(service: &mut S, retry: &mut RetryState<B>) -> Pin<Box<S::Future>>
where
    S: Service<Request<B>>,
    B: TryCloneBody,
{
    let mut request = retry
        .spare
        .take()
        .expect("a retry is only planned with a spare copy of the request")
        .into_request();
    // Keep a copy for the attempt after this one.
    retry.spare = RequestCopy::of(&request);
    request
        .extensions_mut()
        .insert(Attempt::new(retry.attempts.count()));
    retry.shared.count_attempt(&retry.label);
    Box::pin(service.call(request))
}

/// Reads a retried answer's body while the backoff runs, discarding it, until its end (the
/// connection can be pooled), an error or [`DRAIN_LIMIT`] (then it is dropped, as before).
fn drain<ResB: http_body::Body>(
    body: &mut Option<Pin<Box<ResB>>>,
    drained: &mut usize,
    cx: &mut Context<'_>,
) {
    loop {
        let Some(inner) = body.as_mut() else {
            return;
        };
        match inner.as_mut().poll_frame(cx) {
            Poll::Pending => return,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *drained = drained.saturating_add(bytes::Buf::remaining(data));
                }
                if *drained > DRAIN_LIMIT {
                    *body = None;
                }
            }
            // The end (the connection is free again) or a broken body: nothing more to read.
            Poll::Ready(None | Some(Err(_))) => *body = None,
        }
    }
}

/// What happens after an attempt.
enum Next<T> {
    Return(Result<T, BoxError>),
    Retry(Duration),
    /// A retry after an answer, whose body is read out during the wait.
    RetryAfter(Duration, T),
}

/// What to do with a retryable outcome.
enum Plan {
    Retry(Duration),
    /// No retry left (attempts or a body that cannot be replayed): hand back the outcome as it is.
    GiveUp,
    /// Refuse to retry with this typed error.
    Fail(BoxError),
}

/// Everything a logical call remembers between attempts.
pub(crate) struct RetryState<B> {
    shared: Arc<Shared>,
    /// A copy of the request for the next attempt; `None` when the body cannot be replayed.
    spare: Option<RequestCopy<B>>,
    meta: RequestMeta,
    attempts: Attempts,
    /// Backoff retries made (the credential replay excluded).
    retries: u32,
    previous: Option<Duration>,
    reauthenticated: bool,
    /// The retry decided and not sent yet: its reason and wait.
    planned: Option<(RetryReason, Duration)>,
    /// The attempt in flight is a retry charged to the budget: refunded unless it fails (when the
    /// budget refunds; see `RetryBudget::with_refunds`).
    charged: bool,
    integration: Option<IntegrationName>,
    deadline: Option<Deadline>,
    label: SharedString,
}

impl<B> RetryState<B> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        spare: Option<RequestCopy<B>>,
        meta: RequestMeta,
        integration: Option<IntegrationName>,
        deadline: Option<Deadline>,
        label: SharedString,
    ) -> Self {
        Self {
            shared,
            spare,
            meta,
            attempts: Attempts::first(),
            retries: 0,
            previous: None,
            reauthenticated: false,
            planned: None,
            charged: false,
            integration,
            deadline,
            label,
        }
    }

    fn on_response<ResB>(&mut self, response: Response<ResB>) -> Next<Response<ResB>> {
        let status = response.status();
        let classification = self.shared.policy.classifier().classify_response(
            &self.meta,
            status,
            response.headers(),
            wall_clock(),
        );
        self.settle(&classification);
        match classification {
            Classification::Reauthenticate => {
                let invalidated = response
                    .extensions()
                    .get::<CredentialInvalidated>()
                    .is_some();
                let expired = self.deadline.is_some_and(Deadline::is_expired);
                if invalidated && !self.reauthenticated && self.spare.is_some() && !expired {
                    // The upstream refused the credential before acting on the request and the auth
                    // layer dropped it: one replay with a fresh one, whatever the method. It is not a
                    // failure retry, so it spends neither an attempt of `max_attempts` nor budget.
                    self.reauthenticated = true;
                    self.record(RetryReason::Unauthorized, Duration::ZERO);
                    return Next::Retry(Duration::ZERO);
                }
                Next::Return(Ok(self.finish_response(response)))
            }
            Classification::Retry {
                reason,
                retry_after,
            } => match self.plan(reason, retry_after, Some(status)) {
                Plan::Retry(wait) => Next::RetryAfter(wait, response),
                Plan::GiveUp => Next::Return(Ok(self.finish_response(response))),
                Plan::Fail(error) => Next::Return(Err(self.finish_error(error))),
            },
            _ => Next::Return(Ok(self.finish_response(response))),
        }
    }

    fn on_error<T>(&mut self, error: BoxError) -> Next<T> {
        let classification = self
            .shared
            .policy
            .classifier()
            .classify_error(&self.meta, &*error);
        self.settle(&classification);
        match classification {
            Classification::Retry {
                reason,
                retry_after,
            } => match self.plan(reason, retry_after, None) {
                Plan::Retry(wait) => Next::Retry(wait),
                Plan::GiveUp => Next::Return(Err(self.finish_error(error))),
                Plan::Fail(refusal) => {
                    // The refusal says why there is no retry; the attempt's error, kept as its
                    // cause, says why one was wanted (a refused connection, a token endpoint down).
                    let refusal = Error::from_boxed(refusal).with_source(error);
                    Next::Return(Err(self.finish_error(Box::new(refusal))))
                }
            },
            _ => Next::Return(Err(self.finish_error(error))),
        }
    }

    /// Settles the budget for the attempt that just ended: a charged retry that did not fail (it
    /// was served, answered for good, or throttled) is refunded. See [`RetryBudget`], "What it
    /// bounds".
    ///
    /// [`RetryBudget`]: crate::RetryBudget
    fn settle(&mut self, classification: &Classification) {
        if std::mem::take(&mut self.charged) && !is_charged_failure(classification) {
            self.shared.budget.refund();
        }
    }

    /// Decides whether and when a retryable outcome is retried.
    fn plan(
        &mut self,
        reason: RetryReason,
        hint: Option<Duration>,
        status: Option<StatusCode>,
    ) -> Plan {
        let policy = &self.shared.policy;
        let attempt = self.attempts.count();
        if self.retries.saturating_add(1) >= policy.max_attempts() {
            tracing::debug!(
                attempt,
                reason = reason.as_str(),
                "not retrying: no attempt left"
            );
            return Plan::GiveUp;
        }
        if self.spare.is_none() {
            tracing::debug!(
                attempt,
                reason = reason.as_str(),
                "not retrying: the request body cannot be replayed"
            );
            return Plan::GiveUp;
        }
        let backoff = policy.backoff_delay(self.retries, self.previous, policy.base_for(status));
        // Never sooner than the server asked.
        let wait = hint.map_or(backoff, |hint| hint.max(backoff));
        if let Some(hint) = hint
            && hint > policy.max_retry_after()
            && reason == RetryReason::CredentialUnavailable
        {
            // Our own auth layer's cool-down, not the server's: the credential failure is the
            // honest answer, not a rate limit.
            tracing::info!(
                attempt,
                reason = reason.as_str(),
                retry_after_ms = millis(hint),
                "not retrying: no credential before max_retry_after"
            );
            return Plan::GiveUp;
        }
        if let Some(hint) = hint
            && hint > policy.max_retry_after()
        {
            tracing::info!(
                attempt,
                reason = reason.as_str(),
                retry_after_ms = millis(hint),
                "not retrying: the server asked for a wait longer than max_retry_after"
            );
            return Plan::Fail(Box::new(RateLimited::by_server(Some(hint), status)));
        }
        if let Some(deadline) = self.deadline
            && wait >= deadline.remaining()
        {
            tracing::info!(
                attempt,
                reason = reason.as_str(),
                wait_ms = millis(wait),
                remaining_ms = millis(deadline.remaining()),
                "not retrying: the wait would pass the deadline"
            );
            return Plan::Fail(Box::new(DeadlineExceeded::would_wait(
                hint.unwrap_or(wait),
                status,
            )));
        }
        // A throttled retry is paced by the server's signal and the rate limiter, not a storm: it
        // is not charged (see `RetryBudget`, "What it bounds").
        let charge = reason != RetryReason::Throttled;
        if charge && !self.shared.budget.withdraw() {
            metrics::counter!(names::RETRY_BUDGET_EXHAUSTED, names::INTEGRATION => self.label.clone())
                .increment(1);
            tracing::info!(
                attempt,
                reason = reason.as_str(),
                "not retrying: retry budget exhausted"
            );
            return Plan::Fail(Box::new(BudgetExhausted::new(status)));
        }
        self.charged = charge;
        self.retries += 1;
        self.previous = Some(backoff);
        self.record(reason, wait);
        Plan::Retry(wait)
    }

    /// A retry is decided: logged now, counted when it is sent ([`Self::commit_retry`]).
    fn record(&mut self, reason: RetryReason, wait: Duration) {
        let attempt = self.attempts.count();
        self.planned = Some((reason, wait));
        tracing::debug!(
            attempt,
            next_attempt = attempt + 1,
            reason = reason.as_str(),
            wait_ms = millis(wait),
            "retrying"
        );
    }

    /// The planned retry begins: it joins the call's [`Attempts`] and the retry metric.
    fn commit_retry(&mut self) {
        if let Some((reason, wait)) = self.planned.take() {
            self.attempts.record_retry(reason, wait);
            metrics::counter!(
                names::RETRIES,
                names::INTEGRATION => self.label.clone(),
                names::REASON => reason.as_str()
            )
            .increment(1);
        }
    }

    fn finish_response<ResB>(&mut self, mut response: Response<ResB>) -> Response<ResB> {
        response
            .extensions_mut()
            .insert(std::mem::take(&mut self.attempts));
        response
    }

    pub(crate) fn finish_error(&mut self, error: BoxError) -> BoxError {
        let mut error = Error::from_boxed(error).with_attempts(self.attempts.count());
        if let Some(name) = &self.integration {
            error = error.with_integration(name.clone());
        }
        Box::new(error)
    }
}

/// True for an outcome that a charged retry pays for: a retryable failure of the upstream (or of
/// the way to it). Successes, final answers and throttling are refunded.
fn is_charged_failure(classification: &Classification) -> bool {
    matches!(
        classification,
        Classification::Retry { reason, .. } if *reason != RetryReason::Throttled
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// `Retry-After` may be an HTTP-date, measured against the wall clock when the response has no `Date`.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use integration_core::Body;

    use super::*;

    /// A service whose future is `N` bytes.
    #[derive(Clone)]
    struct Fixed<const N: usize>;

    struct Padded<const N: usize>([u8; N]);

    impl<const N: usize> Future for Padded<N> {
        type Output = Result<Response<Body>, Infallible>;

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(Response::new(Body::from(self.0.len().to_string()))))
        }
    }

    impl<const N: usize> Service<Request<Body>> for Fixed<N> {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Padded<N>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<Body>) -> Padded<N> {
            Padded([0; N])
        }
    }

    /// The attempt's future is boxed: the retry future is as large over a stack whose future is
    /// 4 KB as over one of 8 bytes, so the layers above it, and the box the facade makes of the
    /// whole, do not grow with the layers below (issue 19: past 1,032 bytes, glibc's per-thread
    /// cache no longer serves that box).
    #[test]
    fn the_attempt_future_is_not_inline() {
        let small = std::mem::size_of::<ResponseFuture<Fixed<8>, Body, Body>>();
        let large = std::mem::size_of::<ResponseFuture<Fixed<4096>, Body, Body>>();
        assert_eq!(small, large);
        assert!(small < 1024, "{small} bytes");
    }
}
