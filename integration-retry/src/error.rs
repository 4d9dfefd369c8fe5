//! Errors of this crate's own making. The failures the layers return at run time are
//! `integration_core`'s typed errors (`DeadlineExceeded`, `AttemptTimeout`, `BudgetExhausted`,
//! `RateLimited`, `CircuitOpen`), boxed; this module holds the configuration errors.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// An attempt timeout that does not fit inside the total deadline (or a zero duration).
///
/// Returned by [`validate_timeouts`](crate::validate_timeouts) and
/// [`AttemptTimeoutLayer::within`](crate::AttemptTimeoutLayer::within).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTimeouts {
    attempt: Duration,
    total: Duration,
}

impl InvalidTimeouts {
    pub(crate) fn new(attempt: Duration, total: Duration) -> Self {
        Self { attempt, total }
    }

    /// The attempt timeout that was refused.
    pub fn attempt(&self) -> Duration {
        self.attempt
    }

    /// The total deadline it had to fit in.
    pub fn total(&self) -> Duration {
        self.total
    }
}

impl fmt::Display for InvalidTimeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempt.is_zero() || self.total.is_zero() {
            f.write_str("timeouts must be greater than zero")
        } else {
            write!(
                f,
                "attempt timeout ({:?}) must be at most the total deadline ({:?})",
                self.attempt, self.total
            )
        }
    }
}

impl StdError for InvalidTimeouts {}
