//! Wall-clock timing of CI steps and service probes.

use std::time::{Duration, Instant};

/// The current instant, to measure how long a step or a probe took.
///
/// The workspace bans `std::time::Instant::now` so that library code uses tokio's pausable clock.
/// xtask has no tokio and measures real processes and real sockets, so the std clock is the right
/// one here; this is the only place that reads it.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// `12.3 s`: how a step's duration is printed.
pub(crate) fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// `0.4 ms`: how a probe's round trip is printed.
pub(crate) fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(secs(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(secs(Duration::ZERO), "0.0 s");
        assert_eq!(millis(Duration::from_micros(420)), "0.4 ms");
        assert_eq!(millis(Duration::from_secs(2)), "2000.0 ms");
    }
}
