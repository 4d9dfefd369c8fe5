//! Request and response extensions that the layers share.
//!
//! The facade writes the request-side extensions once per logical call; each layer reads the ones it
//! needs, so a layer used alone works from whatever the caller inserted (or its own defaults).
//!
//! ```
//! use integration_core::ext::{Attempt, IntegrationName};
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(IntegrationName::new("github"));
//! request.extensions_mut().insert(Attempt::FIRST);
//! assert_eq!(IntegrationName::of(&request).map(|n| n.as_str()), Some("github"));
//! assert_eq!(Attempt::of(&request).get(), 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::RetryReason;

/// The name of the integration a request belongs to (`"github"`, `"stripe"`).
///
/// Cheap to clone. Used as the default rate-limit key, the metrics label and the error context.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntegrationName(Arc<str>);

impl IntegrationName {
    /// A name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the shared string it is stored in: clone it for a key or a metric label that
    /// keeps the name, with no new allocation.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use integration_core::ext::IntegrationName;
    ///
    /// let name = IntegrationName::new("github");
    /// let label: Arc<str> = name.as_arc().clone();
    /// assert!(Arc::ptr_eq(&label, name.as_arc()));
    /// ```
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The name carried by a request, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<&IntegrationName> {
        request.extensions().get::<IntegrationName>()
    }
}

impl fmt::Debug for IntegrationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IntegrationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for IntegrationName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for IntegrationName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// Which attempt of a logical call this request is, starting at 1.
///
/// The retry layer sets it on every attempt; layers inside it (rate limit, auth, logging of the
/// attempt) read it. Absent means the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(u32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(1);

    /// Attempt number `n`; 0 is read as 1.
    pub fn new(n: u32) -> Self {
        Self(n.max(1))
    }

    /// The attempt number, starting at 1.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The attempt after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The attempt number of a request (1 when absent).
    pub fn of<B>(request: &http::Request<B>) -> Attempt {
        request
            .extensions()
            .get::<Attempt>()
            .copied()
            .unwrap_or(Attempt::FIRST)
    }
}

impl Default for Attempt {
    fn default() -> Self {
        Self::FIRST
    }
}

/// The instant by which the whole logical call must be over, every attempt and every wait included.
///
/// Written by the deadline layer (or by the caller); the retry layer never sleeps past it, the rate
/// limiter never waits past it, and the attempt timeout is clipped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// A deadline `timeout` from now (tokio's clock).
    ///
    /// A timeout too long to be represented (`Duration::MAX`, to mean "no deadline") is read as
    /// about 30 years, as tokio's own `sleep` does, instead of overflowing.
    pub fn after(timeout: Duration) -> Self {
        Self::after_from(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now`, read as [`after`](Deadline::after) reads it: for a layer
    /// that has read the clock already.
    ///
    /// ```
    /// use std::time::Duration;
    /// use integration_core::ext::Deadline;
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let deadline = Deadline::after_from(now, Duration::from_secs(5));
    /// assert_eq!(deadline.instant() - now, Duration::from_secs(5));
    /// assert!(Deadline::after_from(now, Duration::MAX).instant() > now);
    /// ```
    pub fn after_from(now: Instant, timeout: Duration) -> Self {
        Self(instant_after(now, timeout))
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left before the deadline (zero when passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// True when the deadline has passed.
    pub fn is_expired(self) -> bool {
        self.is_expired_at(Instant::now())
    }

    /// True when the deadline has passed at `now`: for a layer that has read the clock already.
    ///
    /// ```
    /// use std::time::Duration;
    /// use integration_core::ext::Deadline;
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let deadline = Deadline::after_from(now, Duration::from_secs(1));
    /// assert!(!deadline.is_expired_at(now));
    /// assert!(deadline.is_expired_at(now + Duration::from_secs(1)));
    /// ```
    pub fn is_expired_at(self, now: Instant) -> bool {
        now >= self.0
    }

    /// The deadline of a request, if one was set.
    pub fn of<B>(request: &http::Request<B>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }

    /// The earlier of the request's deadline and `self`, written back into the request.
    pub fn tighten<B>(self, request: &mut http::Request<B>) -> Deadline {
        match Deadline::of(request) {
            // Already there: no second write (an insert boxes the value anew and drops the old
            // box; through the facade, whose deadline is set first, this is every call).
            Some(existing) if existing <= self => existing,
            _ => {
                request.extensions_mut().insert(self);
                self
            }
        }
    }
}

/// `now + duration`, or about 30 years from `now` when that cannot be represented.
fn instant_after(now: Instant, duration: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(duration)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

/// The name of the header that carries an idempotency key (`Idempotency-Key`, as the IETF draft and
/// Stripe name it).
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The caller's explicit statement that a request is safe to send more than once, whatever its method
/// (for a POST endpoint that the API documents as idempotent, say).
///
/// `Idempotent(false)` is the opposite: never retry this request after it may have been sent, even a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Idempotent(pub bool);

/// Request extension: the request carries its own credential (a per-request `Authorization` set by
/// the caller, as the facade's `bearer_auth`/`basic_auth` do), which replaces the integration's.
///
/// The auth layer sends such a request as it is: it looks no credential up, sets no header, and
/// never replays its 401 (the caller's credential cannot be renewed by the layer). The header
/// itself should be marked sensitive (`HeaderValue::set_sensitive`), so that it is redacted in every
/// log and dropped on a cross-origin redirect like any credential the auth layer sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnCredential;

/// The response-side record of how a logical call went: attempts made and why each retry happened.
///
/// The retry layer inserts it into the final response's extensions; errors carry the same count in
/// [`Error::attempts`](crate::Error::attempts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    count: u32,
    reasons: Vec<RetryReason>,
    waited: Duration,
}

impl Attempts {
    /// One attempt, no retry.
    pub fn first() -> Self {
        Self {
            count: 1,
            reasons: Vec::new(),
            waited: Duration::ZERO,
        }
    }

    /// Records a retry: the reason the previous attempt was repeated and the wait before the next.
    pub fn record_retry(&mut self, reason: RetryReason, waited: Duration) {
        self.count = self.count.saturating_add(1);
        self.reasons.push(reason);
        self.waited = self.waited.saturating_add(waited);
    }

    /// Attempts made (at least 1 once a request was tried).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Retries made, `count() - 1`.
    pub fn retries(&self) -> u32 {
        self.count.saturating_sub(1)
    }

    /// Why each retry happened, in order.
    pub fn reasons(&self) -> &[RetryReason] {
        &self.reasons
    }

    /// Total time spent waiting between attempts.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Response extension set by the auth layer when the upstream rejected the credential (401), the
/// layer invalidated it, and the provider can produce a different one (OAuth, JWT): a replay will
/// carry a fresh credential. A static API key, Basic or bearer token never gets the marker, so its
/// 401 is never replayed.
///
/// The retry layer replays such a response exactly once, whatever the request method, since the
/// upstream refused the request before acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialInvalidated;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_zero_reads_as_first() {
        assert_eq!(Attempt::new(0), Attempt::FIRST);
        assert_eq!(Attempt::FIRST.next().get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_tighten_keeps_the_earlier() {
        let mut request = http::Request::new(());
        let late = Deadline::after(Duration::from_secs(10));
        let early = Deadline::after(Duration::from_secs(1));
        assert_eq!(late.tighten(&mut request), late);
        assert_eq!(Deadline::of(&request), Some(late), "written when absent");
        assert_eq!(early.tighten(&mut request), early);
        assert_eq!(Deadline::of(&request), Some(early), "written when earlier");
        assert_eq!(late.tighten(&mut request), early);
        assert_eq!(Deadline::of(&request), Some(early));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(early.is_expired());
        assert_eq!(early.remaining(), Duration::ZERO);
    }

    /// Regression: `Instant::now() + Duration::MAX` overflowed, so a deadline meant as "none"
    /// panicked in every layer that set one.
    #[tokio::test(start_paused = true)]
    async fn regression_deadline_after_duration_max_does_not_overflow() {
        let endless = Deadline::after(Duration::MAX);
        assert!(!endless.is_expired());
        assert!(endless.remaining() > Duration::from_secs(86_400 * 365 * 29));
        // Still later than any representable, shorter deadline it is tightened against.
        let mut request = http::Request::new(());
        let soon = Deadline::after(Duration::from_secs(1));
        assert_eq!(endless.tighten(&mut request), endless);
        assert_eq!(soon.tighten(&mut request), soon);
    }

    #[test]
    fn attempts_record_reasons_and_waits() {
        let mut attempts = Attempts::first();
        attempts.record_retry(RetryReason::Throttled, Duration::from_secs(2));
        attempts.record_retry(RetryReason::ServerError, Duration::from_millis(100));
        assert_eq!(attempts.count(), 3);
        assert_eq!(attempts.retries(), 2);
        assert_eq!(
            attempts.reasons(),
            &[RetryReason::Throttled, RetryReason::ServerError]
        );
        assert_eq!(attempts.waited(), Duration::from_millis(2100));
    }
}
