//! The typed errors of this crate.
//!
//! The cache adds no failure to a call: an upstream error passes through unchanged (or is answered
//! from a stale entry), and a store that cannot answer makes the call a miss. The error here is a
//! configuration error.

use std::error::Error as StdError;
use std::fmt;

/// A cache setting that cannot be used (a TTL override whose pattern is not a glob).
///
/// ```
/// use std::time::Duration;
/// use integration_cache::TtlOverride;
///
/// let error = TtlOverride::new("/v1/[", Duration::from_secs(1)).unwrap_err();
/// assert_eq!(error.to_string(), "invalid cache configuration: a TTL override's pattern is not a glob");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    reason: &'static str,
}

impl InvalidConfig {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache configuration: {}", self.reason)
    }
}

impl StdError for InvalidConfig {}
