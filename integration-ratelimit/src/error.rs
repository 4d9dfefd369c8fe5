//! The typed errors of this crate.
//!
//! A call refused by the limiter fails with [`integration_core::error::RateLimited`] (boxed), which the
//! facade turns into an `integration_core::Error` of kind `RateLimited`. The errors here are
//! configuration errors.

use std::error::Error as StdError;
use std::fmt;

/// A quota that cannot be enforced: a zero rate, a zero burst or a zero period.
///
/// ```
/// use std::time::Duration;
/// use integration_ratelimit::Quota;
///
/// let error = Quota::new(10, Duration::ZERO, 1).unwrap_err();
/// assert_eq!(error.to_string(), "invalid quota: period must be longer than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQuota {
    reason: &'static str,
}

impl InvalidQuota {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong, in a few words (`"rate must be at least 1"`).
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quota: {}", self.reason)
    }
}

impl StdError for InvalidQuota {}

/// Adaptation settings out of their bounds (see [`Adaptation::new`](crate::Adaptation::new)).
///
/// ```
/// use integration_ratelimit::Adaptation;
///
/// let error = Adaptation::new(1.0, 1.5, 0.4).unwrap_err();
/// assert_eq!(error.to_string(), "invalid adaptation: decrease must be between 0.1 and 0.95");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAdaptation {
    reason: &'static str,
}

impl InvalidAdaptation {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidAdaptation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid adaptation: {}", self.reason)
    }
}

impl StdError for InvalidAdaptation {}
