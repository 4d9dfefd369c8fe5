//! The retry budget: retries may be at most a share of recent requests, plus a small floor.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::window::SlidingCounts;

/// A retry budget shared by every clone of a [`RetryLayer`](crate::RetryLayer) and every service it
/// built: each logical call deposits, each retry withdraws, and a retry is refused once retries in the
/// last `window` would exceed `ratio` of the calls in it plus a floor of `min_per_second * window`.
///
/// This is the algorithm of tower's `TpsBudget` and of Finagle's and Envoy's retry budgets: a full
/// outage costs at most `1 + ratio` attempts per call at steady load (plus the floor), instead of
/// `max_attempts` times the traffic. The floor lets a quiet client still retry a few requests.
///
/// Written here rather than taken from `tower::retry::budget::TpsBudget` because that one reads
/// `std::time::Instant`, which `tokio::time::pause()` cannot drive; this one runs on tokio's clock, so
/// tests on a paused clock see windows expire.
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
    state: Mutex<State>,
}

/// Counter 0: deposits (calls); counter 1: withdrawals (retries).
type State = SlidingCounts<2>;
const DEPOSITS: usize = 0;
const WITHDRAWALS: usize = 1;

impl Default for RetryBudget {
    /// Retries at most 20 % of requests over 10 s, with a floor of 10 retries per second.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// A budget over `window` (at least 1 s), allowing `ratio` retries per call (clamped to
    /// `0.0..=1000.0`) plus `min_per_second` retries per second of window regardless of traffic.
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
                state: Mutex::new(SlidingCounts::new(window)),
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
            let [deposits, withdrawals] = state.totals();
            let allowed = ratio * deposits as f64 + floor;
            if (withdrawals + 1) as f64 <= allowed {
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
            let [deposits, withdrawals] = state.totals();
            let allowed = (ratio * deposits as f64 + floor).floor();
            (allowed - withdrawals as f64).max(0.0) as u64
        })
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.shared.window
    }

    /// The share of calls that may be retried.
    pub fn ratio(&self) -> f64 {
        self.shared.ratio
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
    async fn unlimited_never_refuses() {
        let budget = RetryBudget::unlimited();
        for _ in 0..100_000 {
            assert!(budget.withdraw());
        }
    }
}
