//! Quotas and the policy that groups them.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::error::{InvalidAdaptation, InvalidQuota};

/// One GCRA quota: `rate` permits per `period`, with up to `burst` of them at once.
///
/// The Generic Cell Rate Algorithm spaces permits by the emission interval `T = period / rate` and lets
/// a caller run ahead of that schedule by the tolerance `tau = T * (burst - 1)`. Over any window of
/// length `w` it grants at most `burst + w / T` permits, and a key that stayed idle long enough gets its
/// full burst back. The state per key is one instant (the theoretical arrival time), so it fits in one
/// Redis string.
///
/// ```
/// use std::time::Duration;
/// use integration_ratelimit::Quota;
///
/// let quota = Quota::new(10, Duration::from_secs(1), 5).unwrap();
/// assert_eq!(quota.emission_interval(), Duration::from_millis(100));
/// assert_eq!(quota.tolerance(), Duration::from_millis(400));
///
/// assert!(Quota::new(0, Duration::from_secs(1), 1).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    rate: u32,
    period: Duration,
    burst: u32,
}

impl Quota {
    /// `rate` permits per `period`, `burst` at once.
    ///
    /// # Errors
    ///
    /// [`InvalidQuota`] when `rate` or `burst` is zero or `period` is zero.
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self, InvalidQuota> {
        if rate == 0 {
            return Err(InvalidQuota::new("rate must be at least 1"));
        }
        if burst == 0 {
            return Err(InvalidQuota::new("burst must be at least 1"));
        }
        if period.is_zero() {
            return Err(InvalidQuota::new("period must be longer than zero"));
        }
        Ok(Self {
            rate,
            period,
            burst,
        })
    }

    /// `rate` permits per second with a burst of `rate`.
    ///
    /// # Errors
    ///
    /// [`InvalidQuota`] when `rate` is zero.
    pub fn per_second(rate: u32) -> Result<Self, InvalidQuota> {
        Self::new(rate, Duration::from_secs(1), rate)
    }

    /// `rate` permits per minute with a burst of `rate`.
    ///
    /// # Errors
    ///
    /// [`InvalidQuota`] when `rate` is zero.
    pub fn per_minute(rate: u32) -> Result<Self, InvalidQuota> {
        Self::new(rate, Duration::from_secs(60), rate)
    }

    /// The same quota with another burst.
    ///
    /// # Errors
    ///
    /// [`InvalidQuota`] when `burst` is zero.
    pub fn with_burst(self, burst: u32) -> Result<Self, InvalidQuota> {
        Self::new(self.rate, self.period, burst)
    }

    /// Permits per period.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The period the rate is counted over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Permits available at once to an idle key.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `T = period / rate`: the spacing of permits at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos())
    }

    /// `tau = T * (burst - 1)`: how far ahead of the sustained schedule a key may run.
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance_nanos())
    }

    /// The emission interval in nanoseconds, rounded up so rounding never grants more than the quota.
    pub(crate) fn interval_nanos(&self) -> u64 {
        let period = self.period.as_nanos();
        let rate = u128::from(self.rate);
        u64::try_from(period.div_ceil(rate)).unwrap_or(u64::MAX)
    }

    pub(crate) fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos()
            .saturating_mul(u64::from(self.burst - 1))
    }

    /// The sustained rate in permits per second (`rate / period`).
    pub(crate) fn sustained_rate(&self) -> f64 {
        f64::from(self.rate) / self.period.as_secs_f64()
    }

    /// This quota divided among `replicas` processes: rate and burst divided (rounded down), each at
    /// least 1. Used by the Redis store's local fallback.
    ///
    /// ```
    /// use integration_ratelimit::Quota;
    ///
    /// let quota = Quota::per_second(50).unwrap();
    /// let share = quota.share(4);
    /// assert_eq!((share.rate(), share.burst()), (12, 12));
    /// assert_eq!(Quota::per_second(2).unwrap().share(4).rate(), 1);
    /// ```
    #[must_use]
    pub fn share(&self, replicas: u32) -> Self {
        let replicas = replicas.max(1);
        Self {
            rate: (self.rate / replicas).max(1),
            period: self.period,
            burst: (self.burst / replicas).max(1),
        }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Quota({}/{:?}, burst {})",
            self.rate, self.period, self.burst
        )
    }
}

/// What the rate limiter enforces for every key: its quotas, how long a call may wait, how long a
/// server pause may be before it becomes an error, and how many calls may be in flight.
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use integration_ratelimit::{Quota, RateLimitPolicy};
///
/// // 10 per second and 100 per minute together; wait up to 2 s for a permit; 4 calls in flight.
/// let policy = RateLimitPolicy::new([
///     Quota::per_second(10).unwrap(),
///     Quota::per_minute(100).unwrap(),
/// ])
/// .with_max_wait(Duration::from_secs(2))
/// .with_max_concurrency(NonZeroUsize::new(4));
/// assert_eq!(policy.quotas().len(), 2);
/// assert_eq!(policy.max_server_pause(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    quotas: Vec<Quota>,
    max_wait: Duration,
    max_server_pause: Duration,
    max_concurrency: Option<NonZeroUsize>,
    adaptation: Option<Adaptation>,
    initial_window: usize,
}

impl RateLimitPolicy {
    /// The default slow-start window of a key that has never been throttled: 10, TCP's initial
    /// window. The first 10 calls of a new key go at once, then its probe's rate grows from 10 per
    /// second until the first throttle, which tells the server's rate (see
    /// [`with_initial_window`](Self::with_initial_window)). It was off for a while (issue 13):
    /// the callers it held back met a learned rate seeded low, from the send rate of the first
    /// milliseconds, and were refused after `max_wait` in about one run in three of the facade's
    /// `throttle` test.
    pub const DEFAULT_INITIAL_WINDOW: usize = 10;

    /// The default bound on a server pause: 10 minutes.
    pub const DEFAULT_MAX_SERVER_PAUSE: Duration = Duration::from_secs(600);

    /// Every call takes a permit from each of `quotas`. No waiting (`max_wait` zero: fail fast), server
    /// pauses up to [`DEFAULT_MAX_SERVER_PAUSE`](Self::DEFAULT_MAX_SERVER_PAUSE), no concurrency cap.
    ///
    /// Adaptive throttling is on with [`Adaptation::default`]; turn it off with
    /// [`with_adaptation(None)`](Self::with_adaptation).
    ///
    /// No quota at all is allowed: the limiter then only obeys the server's throttle signals (and the
    /// concurrency cap, if set), and learns a rate from them.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        Self {
            quotas: quotas.into_iter().collect(),
            max_wait: Duration::ZERO,
            max_server_pause: Self::DEFAULT_MAX_SERVER_PAUSE,
            max_concurrency: None,
            adaptation: Some(Adaptation::default()),
            initial_window: Self::DEFAULT_INITIAL_WINDOW,
        }
    }

    /// How each key's sending rate adapts to the server's throttle signals (see [`Adaptation`]);
    /// `None` turns adaptation off: the key then only pauses on a signal, and after the pause its
    /// waiters leave at the pace of its quotas (all at once without a quota).
    #[must_use]
    pub fn with_adaptation(mut self, adaptation: Option<Adaptation>) -> Self {
        self.adaptation = adaptation;
        self
    }

    /// The slow start of a key that has never had an answer, as TCP's initial window: at most
    /// `window` calls of the key in flight before its first answer, one more per success (doubling
    /// per round of answers), until a throttle signal (the key's pause and learned rate take over)
    /// or until the window no longer binds (then it is dropped, for good). Default
    /// [`DEFAULT_INITIAL_WINDOW`](Self::DEFAULT_INITIAL_WINDOW); 0 turns slow start off.
    ///
    /// The window is kept in this process, also with the Redis store, where each replica takes its
    /// share (`window` divided by [`RedisOptions::with_expected_replicas`](crate::RedisOptions::with_expected_replicas),
    /// at least 1), as the fallback does for quotas. A call waits for a slot within its wait bound,
    /// then goes on to the quota rather than fail. The same holds for the probe in rate that the
    /// window starts: a call the probe would hold past its wait bound goes without it (with
    /// `max_wait` 0, the probe never delays a call).
    ///
    /// ```
    /// use integration_ratelimit::RateLimitPolicy;
    ///
    /// assert_eq!(RateLimitPolicy::default().initial_window(), 10);
    /// assert_eq!(RateLimitPolicy::default().with_initial_window(0).initial_window(), 0);
    /// ```
    #[must_use]
    pub fn with_initial_window(mut self, window: usize) -> Self {
        self.initial_window = window;
        self
    }

    /// The slow-start window (0: off).
    pub fn initial_window(&self) -> usize {
        self.initial_window
    }

    /// The adaptation in force, if any.
    pub fn adaptation(&self) -> Option<&Adaptation> {
        self.adaptation.as_ref()
    }

    /// The highest rate adaptation may reach: the sustained rate (per second) of the slowest quota,
    /// infinite without a quota.
    pub(crate) fn rate_cap(&self) -> f64 {
        self.quotas
            .iter()
            .map(Quota::sustained_rate)
            .fold(f64::INFINITY, f64::min)
    }

    /// How long a call may wait for its permit (and for a server pause to end) before it fails with
    /// `RateLimited`. Zero means fail fast. The request's `Deadline` shortens it further.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The longest server pause that callers wait out; a longer one makes every call of the key fail
    /// fast with `RateLimited::by_server` carrying the server's hint, until it ends.
    #[must_use]
    pub fn with_max_server_pause(mut self, max_server_pause: Duration) -> Self {
        self.max_server_pause = max_server_pause;
        self
    }

    /// At most `max` calls of one key in flight in this process (`None`: no cap). The cap is local
    /// even with the Redis store: it protects this process and the upstream's per-connection limits; a
    /// slot is held from before the permit is taken until the inner service's response arrives. A call
    /// that cannot get a slot within its wait bound fails with `RateLimited` (no hint).
    #[must_use]
    pub fn with_max_concurrency(mut self, max: Option<NonZeroUsize>) -> Self {
        self.max_concurrency = max;
        self
    }

    /// The quotas, in order. The state of a key's `i`-th quota survives a policy change that keeps a
    /// quota at position `i`.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The longest wait for a permit.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The longest server pause waited out.
    pub fn max_server_pause(&self) -> Duration {
        self.max_server_pause
    }

    /// The cap on calls in flight per key.
    pub fn max_concurrency(&self) -> Option<NonZeroUsize> {
        self.max_concurrency
    }

    /// The policy with every quota divided among `replicas` (see [`Quota::share`]).
    #[must_use]
    pub fn share(&self, replicas: u32) -> Self {
        Self {
            quotas: self.quotas.iter().map(|q| q.share(replicas)).collect(),
            ..self.clone()
        }
    }
}

impl Default for RateLimitPolicy {
    /// No quota: only the server's signals are obeyed.
    fn default() -> Self {
        Self::new([])
    }
}

/// Adaptive throttling of a key's sending rate: a CUBIC-like rate, as the AWS SDKs' adaptive retry
/// mode has it, learned from the server's throttle answers.
///
/// - **Decrease.** A 429, or a 503 with `Retry-After`, to a request sent after the end of the pause
///   of the key's last decrease sets the key's rate to `decrease` times the rate it was sending at
///   (the learned rate, or the measured rate of permits over the last second if the key had none).
///   Answers to requests sent before the last decrease, or during its pause (a replica's permit
///   reserved before the pause reached it), belong to the same congestion event and change nothing.
/// - **Increase.** From the end of the server's pause, the rate grows back along CUBIC's curve,
///   `w_max + increase * (t - K)^3`, `K = cbrt((w_max - r0) / increase)`: quickly at first, flat near
///   `w_max` (the rate of the last throttle, lowered to `(1 + decrease) / 2` of it when it was lower
///   than the one before: RFC 8312's fast convergence), then faster again, probing for more. It is a
///   function of the time since the last throttle, so it grows while calls succeed, whatever their
///   number, and every replica sharing the key in Redis computes the same rate.
/// - **Bounds.** Never below `min_rate`; never above the slowest quota's sustained rate: once the
///   curve reaches it, the quotas alone govern again (bursts included). Without a quota the key has no
///   rate until its first throttle, then the learned one.
/// - **Paced by the server's counters.** A response that says what remains of the server's window
///   (`RateLimit`, `RateLimit-Remaining`, `X-RateLimit-Remaining` with a reset) paces the key
///   directly: its remaining permits spread evenly over the time to the reset. Callers queued past
///   the reset go on at the next window's pace (the narrowest spacing the current window's answers
///   gave, its first ones: most permits over the whole window), never all at once at the reset, and
///   never at the spacing of the window's last answers (`r=1;t=1`: one a second) either.
///
/// While a learned rate is in force, the key's permits are spaced at that rate (no burst).
///
/// ```
/// use integration_ratelimit::{Adaptation, Quota, RateLimitPolicy};
///
/// let adaptation = Adaptation::new(1.0, 0.5, 0.4).unwrap();
/// let policy = RateLimitPolicy::new([Quota::per_second(45).unwrap()])
///     .with_adaptation(Some(adaptation));
/// assert_eq!(policy.adaptation().unwrap().decrease(), 0.5);
/// assert!(Adaptation::new(0.0, 0.5, 0.4).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation {
    min_rate: f64,
    decrease: f64,
    increase: f64,
}

impl Adaptation {
    /// The default floor: half a permit per second (the AWS SDKs' minimum fill rate).
    pub const DEFAULT_MIN_RATE: f64 = 0.5;
    /// The default multiplicative decrease: 0.7 (CUBIC's beta).
    pub const DEFAULT_DECREASE: f64 = 0.7;
    /// The default scale of the growth curve: 0.4 (CUBIC's C).
    pub const DEFAULT_INCREASE: f64 = 0.4;
    /// Bounds of `min_rate`, permits per second.
    pub const MIN_RATE_RANGE: (f64, f64) = (0.01, 1_000_000.0);
    /// Bounds of `decrease`.
    pub const DECREASE_RANGE: (f64, f64) = (0.1, 0.95);
    /// Bounds of `increase`.
    pub const INCREASE_RANGE: (f64, f64) = (0.01, 100.0);

    /// Adaptation with a floor of `min_rate` permits per second, a multiplicative `decrease` on a
    /// throttle and the growth scale `increase`.
    ///
    /// # Errors
    ///
    /// [`InvalidAdaptation`] when a value is outside its range ([`MIN_RATE_RANGE`](Self::MIN_RATE_RANGE),
    /// [`DECREASE_RANGE`](Self::DECREASE_RANGE), [`INCREASE_RANGE`](Self::INCREASE_RANGE)) or not a
    /// number.
    pub fn new(min_rate: f64, decrease: f64, increase: f64) -> Result<Self, InvalidAdaptation> {
        let within = |value: f64, (low, high): (f64, f64)| value >= low && value <= high;
        if !within(min_rate, Self::MIN_RATE_RANGE) {
            return Err(InvalidAdaptation::new(
                "min_rate must be between 0.01 and 1000000 per second",
            ));
        }
        if !within(decrease, Self::DECREASE_RANGE) {
            return Err(InvalidAdaptation::new(
                "decrease must be between 0.1 and 0.95",
            ));
        }
        if !within(increase, Self::INCREASE_RANGE) {
            return Err(InvalidAdaptation::new(
                "increase must be between 0.01 and 100",
            ));
        }
        Ok(Self {
            min_rate,
            decrease,
            increase,
        })
    }

    /// The floor of the learned rate, permits per second.
    pub fn min_rate(&self) -> f64 {
        self.min_rate
    }

    /// The factor a throttle multiplies the rate by.
    pub fn decrease(&self) -> f64 {
        self.decrease
    }

    /// The scale of the growth curve (CUBIC's C, in permits per second per second cubed).
    pub fn increase(&self) -> f64 {
        self.increase
    }
}

impl Default for Adaptation {
    fn default() -> Self {
        Self {
            min_rate: Self::DEFAULT_MIN_RATE,
            decrease: Self::DEFAULT_DECREASE,
            increase: Self::DEFAULT_INCREASE,
        }
    }
}
