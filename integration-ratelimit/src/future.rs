//! The response future of [`RateLimit`](crate::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use integration_core::error::RateLimited;
use integration_core::ext::Deadline;
use integration_core::{BoxError, names};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use crate::flight::{Answer, Flight, InFlight};
use crate::key::RateLimitKey;
use crate::limiter::{Pending, RateLimiter, learned_rate_gauge, read_signal, rejection};
use crate::policy::RateLimitPolicy;
use crate::store::{Decision, Observation, StoreFuture};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): waits for a concurrency slot and a
    /// permit of the request's key (up to the bound), calls the inner service, then applies the
    /// response's throttle signal to the key.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        // Where the call is. Neither the inner future nor a timer is held in it: every change of
        // state moves the whole enum, and with the inner future in it each change copied the
        // future of every layer below (~700 instructions of memcpy a call, issue 19).
        state: State<S::Response>,
        // The inner service's future, from the call to its answer.
        #[pin]
        inner: Option<S::Future>,
        // The reserved service and the request, while the call waits (for a slot, the store or a
        // permit). A call granted at once is sent from `RateLimit::call` and keeps neither: the
        // future, moved by every layer above, is smaller by a request and a service (issue 19).
        unsent: Option<Box<Unsent<S, B>>>,
        limit: Option<Limit>,
    }
}

/// A call not sent yet: the service `poll_ready` reserved, and the request.
struct Unsent<S, B> {
    service: S,
    request: Request<B>,
}

/// The steps of a limited call. The waits' timers and the response kept while a pause is
/// recorded are boxed: they are rare, and inline they would make every change of state copy them.
enum State<R> {
    // Waiting for a concurrency slot of the key, until `timer` (the end of the bound).
    Concurrency {
        semaphore: PollSemaphore,
        timer: Pin<Box<Sleep>>,
        since: Instant,
    },
    // A key that never had an answer: waiting for a slot of its slow-start window, until
    // `timer` (the end of the bound; then the call goes on to the quota without one).
    SlowStart {
        semaphore: PollSemaphore,
        timer: Pin<Box<Sleep>>,
        since: Instant,
    },
    // Ready to ask the store for a permit.
    Acquire,
    // The store (Redis) is deciding.
    Acquiring {
        future: StoreFuture<Decision>,
    },
    // Permit reserved; sending once the wait is over.
    Waiting {
        sleep: Pin<Box<Sleep>>,
    },
    // After a wait: a server pause may have started meanwhile (another caller's 429); then the
    // reserved permit is given up and a new one taken after the pause, in turn.
    Recheck,
    // Permit in hand: poll the inner service's readiness and call it.
    Ready,
    // The inner future (`ResponseFuture::inner`) runs.
    Called,
    // Writing a server pause to the store before handing the response back.
    Recording {
        future: StoreFuture<()>,
        response: Option<Box<R>>,
    },
    Failed {
        error: Option<BoxError>,
    },
    Done,
}

/// What a limited call carries between its steps.
struct Limit {
    limiter: RateLimiter,
    key: RateLimitKey,
    label: Arc<str>,
    policy: Arc<RateLimitPolicy>,
    /// The end of the bound: `max_wait` (and the deadline) measured from the call.
    wait_until: Instant,
    waited: Duration,
    permit: Option<OwnedSemaphorePermit>,
    /// When the request went to the inner service.
    sent: Option<Instant>,
    /// The key's calls in flight and slow start (`None`: the table of keys is full).
    flight: Option<Arc<Flight>>,
    /// A slot of the key's slow-start window, held until the answer.
    slot: Option<OwnedSemaphorePermit>,
    /// This call counted in flight, from the send to the answer.
    in_flight: Option<InFlight>,
}

impl Limit {
    fn reject(&self, error: RateLimited, reason: &'static str) -> BoxError {
        metrics::counter!(
            names::RATE_LIMIT_REJECTIONS,
            names::INTEGRATION => self.label.clone(),
            names::REASON => reason
        )
        .increment(1);
        tracing::debug!(
            { names::INTEGRATION } = %self.label,
            key = %self.key,
            reason,
            retry_after = ?error.retry_after(),
            "rate limited"
        );
        Box::new(error)
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>> + Clone,
{
    /// A call without a key: sent at once through `service`, which `poll_ready` reserved.
    pub(crate) fn unlimited(service: &mut S, request: Request<B>) -> Self {
        Self {
            state: State::Called,
            inner: Some(service.call(request)),
            unsent: None,
            limit: None,
        }
    }

    /// A call of `key`: sent at once through `service` (which `poll_ready` reserved) when its permit
    /// is granted without a wait; otherwise the reserved service is taken along, a clone of it left
    /// in its place for the next `poll_ready`.
    pub(crate) fn limited(
        service: &mut S,
        request: Request<B>,
        limiter: RateLimiter,
        key: RateLimitKey,
        label: Arc<str>,
        policy: Arc<RateLimitPolicy>,
        deadline: Option<Deadline>,
    ) -> Self {
        // One clock read for the wait's bound and the decision (issue 19): the policy's longest
        // wait, cut short by the call's deadline.
        let now = Instant::now();
        let mut max_wait = policy.max_wait();
        if let Some(deadline) = deadline {
            max_wait = max_wait.min(deadline.instant().saturating_duration_since(now));
        }
        let mut limit = Limit {
            wait_until: now + max_wait,
            limiter,
            key,
            label,
            policy,
            waited: Duration::ZERO,
            permit: None,
            sent: None,
            flight: None,
            slot: None,
            in_flight: None,
        };
        limit.flight = limit
            .limiter
            .flight(&limit.key, limit.policy.initial_window());
        let mut state = match limit.policy.max_concurrency() {
            None => slow_start(&mut limit),
            Some(max) => {
                let semaphore = limit.limiter.semaphore(&limit.key, max);
                match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => {
                        limit.permit = Some(permit);
                        slow_start(&mut limit)
                    }
                    Err(_) if max_wait.is_zero() => State::Failed {
                        error: Some(limit.reject(RateLimited::new(None), "concurrency")),
                    },
                    Err(_) => State::Concurrency {
                        semaphore: PollSemaphore::new(semaphore),
                        timer: Box::pin(sleep(max_wait)),
                        since: now,
                    },
                }
            }
        };
        if matches!(state, State::Acquire) {
            // Ask the store now: the memory store decides at once, and a permit granted without a
            // wait is sent from here through `service`, which `poll_ready` reserved.
            state = acquire(&mut limit, max_wait);
        }
        if matches!(state, State::Ready) {
            let inner = send(&mut limit, service, request, now);
            return Self {
                state: State::Called,
                inner: Some(inner),
                unsent: None,
                limit: Some(limit),
            };
        }
        // Waiting: this call keeps the reserved service, and leaves a clone (not ready yet) for
        // the next call, a clone that is never called before its own `poll_ready`.
        let clone = service.clone();
        let service = std::mem::replace(service, clone);
        Self {
            state,
            inner: None,
            unsent: Some(Box::new(Unsent { service, request })),
            limit: Some(limit),
        }
    }
}

/// Asks the store for a permit that may wait `max_wait` (what is left until `limit.wait_until`):
/// the state after its decision, or while it decides.
///
/// `limited` passes the wait it computed from the instant it read, which `send` is given too when
/// a call goes through at once: three clock reads a call were one, and one measure of the time
/// left (issue 19).
fn acquire<R>(limit: &mut Limit, max_wait: Duration) -> State<R> {
    match limit
        .limiter
        .start(&limit.key, limit.policy.clone(), max_wait)
    {
        Pending::Ready(decision, rate) => {
            if let Some(rate) = rate {
                learned_rate_gauge(limit.label.clone(), rate);
            }
            decided(limit, decision)
        }
        Pending::Waiting(future) => State::Acquiring { future },
    }
}

/// Sends the request through a ready `service` at `now`, with its permit: the wait is recorded, and
/// the call counted in flight from now.
fn send<S: Service<Request<B>>, B>(
    limit: &mut Limit,
    service: &mut S,
    request: Request<B>,
    now: Instant,
) -> S::Future {
    if !limit.waited.is_zero() {
        metrics::histogram!(names::THROTTLE_WAIT, names::INTEGRATION => limit.label.clone())
            .record(limit.waited.as_secs_f64());
    }
    limit.sent = Some(now);
    limit.in_flight = limit.flight.as_ref().map(Flight::sent);
    service.call(request)
}

/// The state after the concurrency slot: a slot of the key's slow-start window while it has one,
/// then the permit.
fn slow_start<R>(limit: &mut Limit) -> State<R> {
    let Some(slots) = limit.flight.as_ref().and_then(|flight| flight.slots()) else {
        return State::Acquire;
    };
    match slots.clone().try_acquire_owned() {
        Ok(slot) => {
            limit.slot = Some(slot);
            State::Acquire
        }
        Err(_) => {
            let now = Instant::now();
            State::SlowStart {
                semaphore: PollSemaphore::new(slots),
                timer: Box::pin(tokio::time::sleep_until(limit.wait_until.max(now))),
                since: now,
            }
        }
    }
}

/// The state after a decision.
fn decided<R>(limit: &mut Limit, decision: Result<Decision, BoxError>) -> State<R> {
    match decision {
        Ok(Decision::Granted { wait }) if wait.is_zero() => State::Ready,
        Ok(Decision::Granted { wait }) => {
            limit.waited += wait;
            State::Waiting {
                sleep: Box::pin(sleep(wait)),
            }
        }
        Ok(Decision::Denied {
            retry_after,
            by_server,
            status,
        }) => {
            let reason = if by_server { "server_pause" } else { "quota" };
            State::Failed {
                error: Some(limit.reject(rejection(retry_after, by_server, status), reason)),
            }
        }
        Err(error) => State::Failed { error: Some(error) },
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state {
                State::Concurrency {
                    semaphore,
                    timer,
                    since,
                } => {
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    match semaphore.poll_acquire(cx) {
                        Poll::Ready(Some(permit)) => {
                            limit.permit = Some(permit);
                            limit.waited += since.elapsed();
                            slow_start(limit)
                        }
                        // The semaphore is never closed; treat it like a full one.
                        Poll::Ready(None) | Poll::Pending => {
                            ready!(timer.as_mut().poll(cx));
                            State::Failed {
                                error: Some(limit.reject(RateLimited::new(None), "concurrency")),
                            }
                        }
                    }
                }
                State::SlowStart {
                    semaphore,
                    timer,
                    since,
                } => {
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    match semaphore.poll_acquire(cx) {
                        Poll::Ready(slot) => {
                            // `None`: slow start ended (closed) while this call waited.
                            limit.slot = slot;
                            limit.waited += since.elapsed();
                            State::Acquire
                        }
                        Poll::Pending => {
                            ready!(timer.as_mut().poll(cx));
                            // The window is a courtesy to the server, not a limit: past the bound
                            // the call goes on to the quota (which decides within what is left).
                            limit.waited += since.elapsed();
                            State::Acquire
                        }
                    }
                }
                State::Acquire => {
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    let max_wait = limit.wait_until.saturating_duration_since(Instant::now());
                    acquire(limit, max_wait)
                }
                State::Acquiring { future } => {
                    let decision = ready!(future.as_mut().poll(cx));
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    decided(limit, decision)
                }
                State::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    State::Recheck
                }
                State::Recheck => {
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    match limit.limiter.local_pause(&limit.key) {
                        None => State::Ready,
                        Some((left, status)) => {
                            let fits = left <= limit.policy.max_server_pause()
                                && Instant::now() + left <= limit.wait_until;
                            if fits {
                                // Not `sleep(left)`: every waiter would leave at the pause's end at
                                // once. Taking a new permit puts this call in line after the pause,
                                // at the key's pace (the pause emptied the burst); callers re-enter
                                // in the order of their reserved permits, so arrival order holds.
                                State::Acquire
                            } else {
                                let error = RateLimited::by_server(Some(left), status);
                                State::Failed {
                                    error: Some(limit.reject(error, "server_pause")),
                                }
                            }
                        }
                    }
                }
                State::Ready => {
                    let unsent = this
                        .unsent
                        .as_mut()
                        .expect("an unsent call keeps its request");
                    if let Err(error) = ready!(unsent.service.poll_ready(cx)) {
                        *this.state = State::Done;
                        return Poll::Ready(Err(error.into()));
                    }
                    let Unsent {
                        mut service,
                        request,
                    } = *this.unsent.take().expect("checked above");
                    let limit = this.limit.as_mut().expect("a limited call has its limit");
                    this.inner
                        .set(Some(send(limit, &mut service, request, Instant::now())));
                    State::Called
                }
                State::Called => {
                    let future = this.inner.as_mut().as_pin_mut();
                    let result = ready!(future.expect("called before this state").poll(cx));
                    this.inner.set(None);
                    if let Some(limit) = this.limit.as_mut() {
                        // The call is over: free the concurrency and slow-start slots, and stop
                        // counting it in flight.
                        limit.permit = None;
                        limit.slot = None;
                        limit.in_flight = None;
                    }
                    let response = match result {
                        Ok(response) => response,
                        Err(error) => {
                            *this.state = State::Done;
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let Some(limit) = this.limit.as_mut() else {
                        *this.state = State::Done;
                        return Poll::Ready(Ok(response));
                    };
                    let read = read_signal(response.status(), response.headers());
                    if let Some(flight) = &limit.flight {
                        let status = response.status();
                        let answer = match read {
                            Some(read) if read.throttled || !read.pause.is_zero() => {
                                Answer::Throttled
                            }
                            _ if status.is_server_error()
                                || status == http::StatusCode::TOO_MANY_REQUESTS =>
                            {
                                Answer::Other
                            }
                            _ => Answer::Success,
                        };
                        if flight.answered(answer) {
                            tracing::debug!(
                                { names::INTEGRATION } = %limit.label,
                                key = %limit.key,
                                ?answer,
                                "slow start over"
                            );
                        }
                    }
                    let Some(mut read) = read else {
                        *this.state = State::Done;
                        return Poll::Ready(Ok(response));
                    };
                    // The server's remaining count does not know of this limiter's other calls in
                    // flight: they spend it too. None left for new calls: wait for the reset.
                    if let (Some((remaining, reset)), Some(flight)) =
                        (read.remaining, &limit.flight)
                    {
                        match remaining.saturating_sub(flight.in_flight() as u64) {
                            0 => {
                                read.pause = read.pause.max(reset);
                                read.remaining = None;
                            }
                            left => read.remaining = Some((left, reset)),
                        }
                    }
                    if let Some(source) = read.source {
                        metrics::counter!(
                            names::THROTTLE_SIGNALS,
                            names::INTEGRATION => limit.label.clone(),
                            names::SOURCE => source
                        )
                        .increment(1);
                        tracing::debug!(
                            { names::INTEGRATION } = %limit.label,
                            key = %limit.key,
                            source,
                            pause = ?read.pause,
                            status = response.status().as_u16(),
                            "server throttle signal: pausing and slowing the key"
                        );
                    }
                    let mut observation = Observation::new(
                        limit.key.clone(),
                        limit.policy.clone(),
                        response.status(),
                    );
                    observation.pause = read.pause;
                    observation.throttled = read.throttled;
                    observation.remaining = read.remaining;
                    observation.sent_ago = limit.sent.map_or(Duration::ZERO, |sent| sent.elapsed());
                    let (future, rate) = limit.limiter.start_observe(observation);
                    if let Some(rate) = rate {
                        learned_rate_gauge(limit.label.clone(), rate);
                    }
                    match future {
                        None => {
                            *this.state = State::Done;
                            return Poll::Ready(Ok(response));
                        }
                        Some(future) => State::Recording {
                            future,
                            response: Some(Box::new(response)),
                        },
                    }
                }
                State::Recording { future, response } => {
                    // A failed write is the store's concern (the Redis store falls back); the response
                    // goes back to the caller either way.
                    let _ = ready!(future.as_mut().poll(cx));
                    let response = *response.take().expect("the response is returned once");
                    *this.state = State::Done;
                    return Poll::Ready(Ok(response));
                }
                State::Failed { error } => {
                    let error = error.take().expect("the error is returned once");
                    *this.state = State::Done;
                    return Poll::Ready(Err(error));
                }
                State::Done => panic!("ResponseFuture polled after completion"),
            };
            *this.state = next;
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Concurrency { .. } => "waiting for a concurrency slot",
            State::SlowStart { .. } => "waiting for a slot of the slow-start window",
            State::Acquire => "acquiring",
            State::Acquiring { .. } => "asking the store",
            State::Waiting { .. } => "waiting for the permit",
            State::Recheck => "checking for a server pause",
            State::Ready => "ready",
            State::Called => "called",
            State::Recording { .. } => "recording a server pause",
            State::Failed { .. } => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("key", &self.limit.as_ref().map(|limit| &limit.key))
            .finish()
    }
}
