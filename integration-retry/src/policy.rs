//! The retry policy: how many attempts, how long to wait between them, which outcomes are worth
//! another attempt, and the injectable randomness behind the jitter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use integration_core::classify::{Classify, DefaultClassifier};

/// The source of randomness behind every jitter in this crate: a function returning a number in
/// `[0, 1)`.
///
/// The default draws from [`fastrand`]. Tests inject a fixed or scripted source so every delay is
/// known in advance.
///
/// # Clone
///
/// Cheap: clones share the same function.
///
/// ```
/// use integration_retry::Jitter;
///
/// let midpoint = Jitter::fixed(0.5);
/// assert_eq!(midpoint.sample(), 0.5);
/// let random = Jitter::default();
/// assert!((0.0..1.0).contains(&random.sample()));
/// ```
#[derive(Clone)]
pub struct Jitter(Arc<dyn Fn() -> f64 + Send + Sync>);

impl Jitter {
    /// Randomness from `fastrand` (the default).
    pub fn random() -> Self {
        Self(Arc::new(fastrand::f64))
    }

    /// Randomness from `f`. Values outside `[0, 1)` (and NaN) are clamped into it.
    pub fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Always `value` (clamped into `[0, 1)`): deterministic delays for tests.
    pub fn fixed(value: f64) -> Self {
        Self(Arc::new(move || value))
    }

    /// One sample in `[0, 1)`.
    pub fn sample(&self) -> f64 {
        let value = (self.0)();
        if value.is_nan() || value < 0.0 {
            0.0
        } else if value >= 1.0 {
            // The largest f64 below 1.
            1.0 - f64::EPSILON / 2.0
        } else {
            value
        }
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::random()
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Jitter")
    }
}

/// How the wait before a retry grows with each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backoff {
    /// `rand(0, min(cap, base * 2^n))` for retry `n` (0 for the first retry): AWS's "full jitter".
    /// Spreads retries best and is the default.
    #[default]
    FullJitter,
    /// `min(cap, rand(base, previous * 3))`, starting from `previous = base`: AWS's "decorrelated
    /// jitter". Never shorter than `base`.
    DecorrelatedJitter,
}

/// Everything the [`RetryLayer`](crate::RetryLayer) decides with, as plain values.
///
/// | setting | default |
/// | --- | --- |
/// | [`max_attempts`](Self::with_max_attempts) | 4 (the first attempt included: three retries) |
/// | [`base`](Self::with_base) | 100 ms |
/// | [`cap`](Self::with_cap) | 20 s |
/// | [`throttle_base`](Self::with_throttle_base) | 1 s, for 429 and 503 answers |
/// | [`max_retry_after`](Self::with_max_retry_after) | 60 s |
/// | [`backoff`](Self::with_backoff) | [`Backoff::FullJitter`] |
/// | [`classifier`](Self::with_classifier) | [`DefaultClassifier`] |
/// | [`add_idempotency_key`](Self::with_idempotency_key) | `false` |
/// | [`jitter`](Self::with_jitter) | [`Jitter::random`] |
///
/// # Why four attempts
///
/// Three retries, as Polly's default and as issue 12 measured. A call fails only when every attempt
/// does: with a share `p` of attempts failing independently, `p^max_attempts` of calls fail. An
/// upstream answering 503 to 10 % of requests and dropping 1 % of connections (`p` = 0.11) fails
/// 0.11^3 = 0.13 % of calls with three attempts, which misses a 99.9 % promise, and 0.11^4 =
/// 0.015 % with four (99.98 % succeed). The fourth attempt costs nothing where it matters for load:
/// the [`RetryBudget`](crate::RetryBudget) still bounds a full outage to 1.2 attempts per call, and at
/// 11 % failures a call wants `p + p^2 + p^3` = 0.12 retries, under the budget's 0.2.
///
/// ```
/// use integration_retry::{Backoff, RetryPolicy};
/// use std::time::Duration;
///
/// assert_eq!(RetryPolicy::default().max_attempts(), 4);
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_base(Duration::from_millis(50))
///     .with_backoff(Backoff::DecorrelatedJitter)
///     .with_idempotency_key(true);
/// assert_eq!(policy.max_attempts(), 5);
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    throttle_base: Duration,
    max_retry_after: Duration,
    backoff: Backoff,
    classifier: Arc<dyn Classify>,
    add_idempotency_key: bool,
    jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
            throttle_base: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            backoff: Backoff::FullJitter,
            classifier: Arc::new(DefaultClassifier::new()),
            add_idempotency_key: false,
            jitter: Jitter::random(),
        }
    }
}

impl RetryPolicy {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in total, the first included; 1 turns retries off (0 is read as 1).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The base of the exponential backoff.
    #[must_use]
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The longest backoff, before jitter.
    #[must_use]
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The base used after a throttling answer (429, 503): the upstream asked us to slow down, so the
    /// backoff starts higher.
    #[must_use]
    pub fn with_throttle_base(mut self, throttle_base: Duration) -> Self {
        self.throttle_base = throttle_base;
        self
    }

    /// The longest `Retry-After` honoured. A longer hint fails the call at once with
    /// [`RateLimited`](integration_core::error::RateLimited) carrying the hint.
    #[must_use]
    pub fn with_max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }

    /// The backoff shape.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Replaces the classifier that decides which outcomes are worth another attempt.
    #[must_use]
    pub fn with_classifier(mut self, classifier: Arc<dyn Classify>) -> Self {
        self.classifier = classifier;
        self
    }

    /// When `true`, a POST or PATCH without an `Idempotency-Key` header gets a UUID v4 one, the same on
    /// every attempt, which makes it safe to retry (the upstream must honour the header).
    #[must_use]
    pub fn with_idempotency_key(mut self, add: bool) -> Self {
        self.add_idempotency_key = add;
        self
    }

    /// Replaces the randomness behind the jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Attempts in total, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff base.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The backoff cap.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The backoff base after a throttling answer.
    pub fn throttle_base(&self) -> Duration {
        self.throttle_base
    }

    /// The longest `Retry-After` honoured.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The backoff shape.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The classifier.
    pub fn classifier(&self) -> &Arc<dyn Classify> {
        &self.classifier
    }

    /// Whether POST and PATCH get an `Idempotency-Key` when they have none.
    pub fn adds_idempotency_key(&self) -> bool {
        self.add_idempotency_key
    }

    /// The randomness behind the jitter.
    pub fn jitter(&self) -> &Jitter {
        &self.jitter
    }

    /// The base that applies after an answer of `status`: [`throttle_base`](Self::throttle_base) for
    /// 429 and 503, [`base`](Self::base) otherwise (and for transport errors).
    pub fn base_for(&self, status: Option<StatusCode>) -> Duration {
        match status {
            Some(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
                self.throttle_base
            }
            _ => self.base,
        }
    }

    /// The backoff before retry `retry` (0 for the first retry), given the `previous` backoff (for
    /// decorrelated jitter; `None` before the first retry) and the `base` that applies.
    ///
    /// Full jitter: `rand(0, min(cap, base * 2^retry))`. Decorrelated jitter:
    /// `min(cap, rand(base, previous * 3))`. Both never exceed `cap`.
    ///
    /// ```
    /// use integration_retry::{Jitter, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default().with_jitter(Jitter::fixed(0.5));
    /// let base = Duration::from_millis(100);
    /// // Third retry: half of min(20 s, 100 ms * 4).
    /// assert_eq!(policy.backoff_delay(2, None, base), Duration::from_millis(200));
    /// ```
    pub fn backoff_delay(
        &self,
        retry: u32,
        previous: Option<Duration>,
        base: Duration,
    ) -> Duration {
        let sample = self.jitter.sample();
        match self.backoff {
            Backoff::FullJitter => {
                let ceiling = exponential(base, retry).min(self.cap);
                ceiling.mul_f64(sample)
            }
            Backoff::DecorrelatedJitter => {
                let low = base.min(self.cap);
                let high = previous
                    .unwrap_or(base)
                    .saturating_mul(3)
                    .max(low)
                    .min(self.cap);
                (low + (high - low).mul_f64(sample)).min(self.cap)
            }
        }
    }
}

/// `base * 2^n`, saturating.
fn exponential(base: Duration, n: u32) -> Duration {
    match 2u32.checked_pow(n) {
        Some(factor) => base.saturating_mul(factor),
        None => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_clamped_into_the_unit_interval() {
        assert_eq!(Jitter::fixed(-1.0).sample(), 0.0);
        assert_eq!(Jitter::fixed(f64::NAN).sample(), 0.0);
        assert!(Jitter::fixed(1.0).sample() < 1.0);
        assert!(Jitter::fixed(7.0).sample() < 1.0);
    }

    #[test]
    fn full_jitter_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default().with_jitter(Jitter::fixed(0.999_999));
        let base = policy.base();
        let d = |n| policy.backoff_delay(n, None, base);
        assert!(d(0) <= Duration::from_millis(100) && d(0) > Duration::from_millis(99));
        assert!(d(3) <= Duration::from_millis(800) && d(3) > Duration::from_millis(799));
        assert!(d(40) <= Duration::from_secs(20) && d(40) > Duration::from_millis(19_999));
        assert!(d(u32::MAX) <= Duration::from_secs(20));
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_previous() {
        let policy = RetryPolicy::default()
            .with_backoff(Backoff::DecorrelatedJitter)
            .with_jitter(Jitter::fixed(0.0));
        let base = policy.base();
        assert_eq!(policy.backoff_delay(0, None, base), base);
        let policy = policy.with_jitter(Jitter::fixed(0.999_999_9));
        let high = policy.backoff_delay(1, Some(Duration::from_secs(1)), base);
        assert!(high > Duration::from_millis(2_999) && high <= Duration::from_secs(3));
        let capped = policy.backoff_delay(9, Some(Duration::from_secs(100)), base);
        assert!(capped > Duration::from_millis(19_990) && capped <= Duration::from_secs(20));
    }

    #[test]
    fn throttling_answers_use_the_throttle_base() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.base_for(Some(StatusCode::TOO_MANY_REQUESTS)),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.base_for(Some(StatusCode::SERVICE_UNAVAILABLE)),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.base_for(Some(StatusCode::BAD_GATEWAY)),
            Duration::from_millis(100)
        );
        assert_eq!(policy.base_for(None), Duration::from_millis(100));
    }

    #[test]
    fn zero_attempts_reads_as_one() {
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }
}
