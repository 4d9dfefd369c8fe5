//! The retry budget: retries may be at most a share of recent requests, plus a small floor.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::window::SlidingCounts;

/// A retry budget shared by every clone of a [`RetryLayer`](crate::RetryLayer) and every service it
/// built: each logical call deposits, each retry withdraws (a throttled one excepted, see below),
/// and a retry is refused once the retries of the last `window` would exceed `ratio` of the calls
/// in it plus a floor of `min_per_second * window`.
///
/// # What it bounds, and what it allows
///
/// It is the algorithm of tower's `TpsBudget` and of Finagle's and Envoy's retry budgets:
///
/// - **A full outage**: attempts per call stay at or under `1 + ratio` at steady load (1.2 with the
///   defaults, plus the floor's share: 100 retries per 10 s, 0.01 attempts per call at 1,000
///   calls/s), instead of `max_attempts` times the traffic.
/// - **A partial failure**: with a share `p` of attempts failing independently, a call wants
///   `p + p^2 + ... + p^(max_attempts-1)` retries. While that stays under `ratio` (plus the floor)
///   every retry is allowed: up to `p` = 0.17 at the defaults (0.2, 4 attempts), so at 11 %
///   failures (10 % 503 and 1 % dropped connections) a call wants 0.12 retries and `p^4`: 99.98 %
///   of calls succeed (99.87 % with 3 attempts, `p^3`). Past it the budget spends `ratio` retries per call, each
///   succeeding with `1 - p`, and about `(1 - p) * (1 + ratio)` of calls succeed: at 35 %
///   failures, 78 % (measured: 79.6 % with 4 attempts in `tests/it/budget.rs`, 79.1 % against a
///   loopback server with 30 % 503 and 5 % dropped connections in `tests/load.rs`), where first
///   tries alone give 65 %. A partial failure is often an overload, which more traffic feeds: the
///   budget keeps the upstream's load at 1.2 times the calls whatever fails.
/// - **Refunds, measured and left off.** [`with_refunds(true)`](Self::with_refunds) pays back a
///   retry whose attempt did not fail, so only failed retries are charged (gRPC's retry throttling
///   also credits successes). At 35 % failures it lets every retry through: 98.1 % of calls
///   succeed, but at 1.50 attempts per call (`tests/it/budget.rs`), past the 1.25 a partly failing
///   upstream should see; a full outage is bounded as without. It suits upstreams whose failures
///   are known not to be load (a flaky network path).
/// - **Throttled retries are free.** A retry after a 429 ([`RetryReason::Throttled`]) is not
///   charged: the upstream is up and asked this client to slow down. The retry waits at least as
///   long as asked (`Retry-After`, or the throttle backoff), and below the retry layer the rate
///   limiter pauses the key on the signal and paces every attempt after it, so throttled retries
///   go at the server's pace and are bounded by `max_attempts` and the deadline: no storm.
///   Charging them failed calls `retry_budget_exhausted` that were only waiting their turn. A 503
///   *with* `Retry-After` is charged like any 5xx: it is what an upstream in maintenance answers
///   to everything, and exempting it would lift the outage bound (it is still paced by the rate
///   limiter). An upstream that throttles with 503s instead of 429s can say so with a classifier
///   ([`RetryPolicy::with_classifier`](crate::RetryPolicy::with_classifier)) that returns
///   [`RetryReason::Throttled`] for them.
///
/// A refund goes into the window at the time of the retry's outcome, and only while the window
/// holds more withdrawals than refunds: a refund never becomes credit for retries not yet taken.
///
/// Written here rather than taken from `tower::retry::budget::TpsBudget` because that one reads
/// `std::time::Instant`, which `tokio::time::pause()` cannot drive; this one runs on tokio's clock, so
/// tests on a paused clock see windows expire.
///
/// [`RetryReason::Throttled`]: integration_core::classify::RetryReason::Throttled
///
/// # Clone
///
/// Clones share one budget: pass a clone to [`RetryLayer::with_budget`](crate::RetryLayer::with_budget)
/// so a rebuilt stack keeps spending from the same account.
///
/// ```
/// use integration_retry::RetryBudget;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // No floor: retries only as 50 % of calls.
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5);
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// // Refunds are off by default: a retry that succeeded stays charged.
/// budget.refund();
/// assert!(!budget.withdraw());
/// // With refunds, it is paid back.
/// let budget = budget.with_refunds(true);
/// for _ in 0..2 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// budget.refund();
/// assert!(budget.withdraw());
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    shared: Arc<Shared>,
}

struct Shared {
    window: Duration,
    min_per_second: u32,
    ratio: f64,
    refunds: bool,
    state: Mutex<State>,
}

/// Counter 0: deposits (calls); counter 1: withdrawals (retries); counter 2: refunds (retries that
/// did not fail).
type State = SlidingCounts<3>;
const DEPOSITS: usize = 0;
const WITHDRAWALS: usize = 1;
const REFUNDS: usize = 2;

/// Retries charged: withdrawals not refunded, never below zero.
fn charged(totals: [u64; 3]) -> u64 {
    totals[WITHDRAWALS].saturating_sub(totals[REFUNDS])
}

impl Default for RetryBudget {
    /// Retries at most 20 % of requests over 10 s, with a floor of 10 retries per second; refunds
    /// off (every charged retry stays charged).
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// A budget over `window` (at least 1 s), allowing `ratio` unrefunded retries per call (clamped
    /// to `0.0..=1000.0`) plus `min_per_second` retries per second of window regardless of traffic.
    /// Refunds are off; see [`with_refunds`](Self::with_refunds).
    pub fn new(window: Duration, min_per_second: u32, ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1000.0)
        };
        let window = window.max(Duration::from_secs(1));
        Self {
            shared: Arc::new(Shared {
                window,
                min_per_second,
                ratio,
                refunds: false,
                state: Mutex::new(SlidingCounts::new(window)),
            }),
        }
    }

    /// With `true`, [`refund`](Self::refund) pays back a retry whose attempt did not fail; with
    /// `false` (the default) every charged retry stays charged, as in tower's `TpsBudget`. See
    /// "What it bounds" above for what each allows. Returns a new budget with the same settings
    /// and an empty account, not shared with clones of `self`.
    #[must_use]
    pub fn with_refunds(self, refunds: bool) -> Self {
        let shared = &self.shared;
        Self {
            shared: Arc::new(Shared {
                window: shared.window,
                min_per_second: shared.min_per_second,
                ratio: shared.ratio,
                refunds,
                state: Mutex::new(SlidingCounts::new(shared.window)),
            }),
        }
    }

    /// A budget that never refuses (the attempt limit alone bounds retries).
    pub fn unlimited() -> Self {
        Self::new(Duration::from_secs(1), u32::MAX, 1000.0)
    }

    /// Records a call (done by the retry layer once per logical call).
    pub fn deposit(&self) {
        self.with_state(|state| state.add(DEPOSITS, 1));
    }

    /// Takes one retry from the budget: `true` when allowed (and recorded), `false` when spent.
    pub fn withdraw(&self) -> bool {
        let floor = self.floor();
        let ratio = self.shared.ratio;
        self.with_state(|state| {
            let totals = state.totals();
            let allowed = ratio * totals[DEPOSITS] as f64 + floor;
            if (charged(totals) + 1) as f64 <= allowed {
                state.add(WITHDRAWALS, 1);
                true
            } else {
                false
            }
        })
    }

    /// Retries still allowed right now.
    pub fn remaining(&self) -> u64 {
        let floor = self.floor();
        let ratio = self.shared.ratio;
        self.with_state(|state| {
            let totals = state.totals();
            let allowed = (ratio * totals[DEPOSITS] as f64 + floor).floor();
            (allowed - charged(totals) as f64).max(0.0) as u64
        })
    }

    /// Pays back one retry taken with [`withdraw`](Self::withdraw) whose attempt did not fail (done
    /// by the retry layer); nothing when refunds are off.
    pub fn refund(&self) {
        if self.shared.refunds {
            self.with_state(|state| {
                // A refund whose withdrawal already left the window pays back nothing: refunds
                // never become credit for retries that were not taken.
                let totals = state.totals();
                if totals[REFUNDS] < totals[WITHDRAWALS] {
                    state.add(REFUNDS, 1);
                }
            });
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.shared.window
    }

    /// The share of calls that may be retried.
    pub fn ratio(&self) -> f64 {
        self.shared.ratio
    }

    /// Whether successful retries are refunded.
    pub fn refunds(&self) -> bool {
        self.shared.refunds
    }

    /// The floor, in retries per second.
    pub fn min_per_second(&self) -> u32 {
        self.shared.min_per_second
    }

    /// True when `self` and `other` are the same budget (clones of one another).
    pub fn ptr_eq(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn floor(&self) -> f64 {
        f64::from(self.shared.min_per_second) * self.shared.window.as_secs_f64()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic while holding this lock cannot leave the counters inconsistent: keep going.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.advance(Instant::now());
        f(&mut state)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.shared.window)
            .field("min_per_second", &self.shared.min_per_second)
            .field("ratio", &self.shared.ratio)
            .field("refunds", &self.shared.refunds)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(Duration::from_secs(1), 3, 0.0);
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        assert_eq!(budget.remaining(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn old_deposits_and_withdrawals_leave_the_window() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        // The deposits expired with the withdrawals: nothing to spend.
        assert!(!budget.withdraw());
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_account() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        let clone = budget.clone();
        budget.deposit();
        assert!(clone.withdraw());
        assert!(!budget.withdraw());
        assert!(budget.ptr_eq(&clone));
        assert!(!budget.ptr_eq(&RetryBudget::default()));
    }

    #[tokio::test(start_paused = true)]
    async fn refunds_pay_back_retries_that_did_not_fail() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2).with_refunds(true);
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        budget.refund();
        assert_eq!(budget.remaining(), 1);
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        // A refund with no withdrawal in the window (it expired first) is no credit.
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2).with_refunds(true);
        for _ in 0..5 {
            budget.refund();
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn without_refunds_every_retry_is_charged() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
        assert!(!budget.refunds());
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        budget.refund();
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_refuses() {
        let budget = RetryBudget::unlimited();
        for _ in 0..100_000 {
            assert!(budget.withdraw());
        }
    }
}
