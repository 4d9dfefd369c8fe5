//! The decision itself, shared by the memory store and mirrored line by line in the Redis script.

use http::StatusCode;

use crate::policy::Quota;
use crate::store::Decision;
use std::time::Duration;

/// Bounds of one acquisition, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) max_wait: u64,
    pub(crate) max_server_pause: u64,
}

/// A key's server pause: until when, and the status that caused it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pause {
    pub(crate) until: u64,
    pub(crate) status: Option<StatusCode>,
}

/// Decides one call at `now`: waits out a server pause that fits the bounds, then takes one permit from
/// every quota at the earliest instant all of them allow (`send`), as GCRA does for an arrival at `send`:
/// quota `i` allows it when `tat_i - tau_i <= send`, and its TAT becomes `max(tat_i, send) + T_i`.
///
/// Reserving at `send` rather than at `now` keeps the GCRA bound over send times: over any window of
/// length `w`, at most `burst + w / T` permits of each quota are used.
///
/// `tats` is resized to the number of quotas (a new quota starts idle). Nothing changes on a denial.
pub(crate) fn decide(
    tats: &mut Vec<u64>,
    pause: Pause,
    quotas: &[Quota],
    now: u64,
    bounds: Bounds,
) -> Decision {
    let mut earliest = now;
    if pause.until > now {
        let left = pause.until - now;
        if left > bounds.max_server_pause || left > bounds.max_wait {
            return Decision::Denied {
                retry_after: Duration::from_nanos(left),
                by_server: true,
                status: pause.status,
            };
        }
        earliest = pause.until;
    }
    tats.resize(quotas.len(), 0);
    let send = quotas
        .iter()
        .zip(tats.iter())
        .map(|(quota, &tat)| tat.saturating_sub(quota.tolerance_nanos()))
        .fold(earliest, u64::max);
    let wait = send - now;
    if wait > bounds.max_wait {
        return Decision::Denied {
            retry_after: Duration::from_nanos(wait),
            by_server: false,
            status: None,
        };
    }
    for (quota, tat) in quotas.iter().zip(tats.iter_mut()) {
        *tat = (*tat).max(send).saturating_add(quota.interval_nanos());
    }
    Decision::Granted {
        wait: Duration::from_nanos(wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const SECOND: u64 = 1_000_000_000;

    fn grant(tats: &mut Vec<u64>, quotas: &[Quota], now: u64, max_wait: u64) -> Option<u64> {
        let bounds = Bounds {
            max_wait,
            max_server_pause: u64::MAX,
        };
        match decide(tats, Pause::default(), quotas, now, bounds) {
            Decision::Granted { wait } => Some(now + wait.as_nanos() as u64),
            Decision::Denied { .. } => None,
        }
    }

    #[test]
    fn an_idle_key_gets_its_burst_then_the_rate() {
        let quota = Quota::new(10, Duration::from_secs(1), 3).unwrap();
        let mut tats = Vec::new();
        let now = 5 * SECOND;
        for _ in 0..3 {
            assert_eq!(grant(&mut tats, &[quota], now, 0), Some(now));
        }
        assert_eq!(grant(&mut tats, &[quota], now, 0), None);
        // The next permit is one emission interval later.
        assert_eq!(
            grant(&mut tats, &[quota], now, SECOND),
            Some(now + SECOND / 10)
        );
    }

    #[test]
    fn a_denial_changes_nothing() {
        let quota = Quota::new(1, Duration::from_secs(1), 1).unwrap();
        let mut tats = Vec::new();
        assert!(grant(&mut tats, &[quota], SECOND, 0).is_some());
        let before = tats.clone();
        assert!(grant(&mut tats, &[quota], SECOND, 0).is_none());
        assert_eq!(tats, before);
    }

    /// Arrivals: (gap since the previous arrival in ms, how long the caller accepts to wait in ms).
    fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..400, prop_oneof![Just(0u64), 0u64..3_000]), 1..400)
    }

    fn quotas() -> impl Strategy<Value = Vec<Quota>> {
        prop::collection::vec(
            (1u32..50, 1u64..5_000, 1u32..20).prop_map(|(rate, ms, burst)| {
                Quota::new(rate, Duration::from_millis(ms), burst).unwrap()
            }),
            1..4,
        )
    }

    proptest! {
        /// GCRA never grants more than burst + rate x elapsed, over any window of send times.
        #[test]
        fn gcra_never_grants_more_than_burst_plus_rate_times_elapsed(
            quotas in quotas(),
            arrivals in arrivals(),
        ) {
            let mut tats = Vec::new();
            let mut now = 1_000 * SECOND;
            let mut sends = Vec::new();
            for (gap, max_wait) in arrivals {
                now += gap * 1_000_000;
                if let Some(send) = grant(&mut tats, &quotas, now, max_wait * 1_000_000) {
                    prop_assert!(send >= now);
                    sends.push(send);
                }
            }
            sends.sort_unstable();
            for quota in &quotas {
                let interval = quota.interval_nanos() as u128;
                for (i, &start) in sends.iter().enumerate() {
                    for (j, &end) in sends.iter().enumerate().skip(i) {
                        let granted = (j - i + 1) as u128;
                        // granted <= burst + (end - start) / T, in integers.
                        let allowed = u128::from(quota.burst()) * interval + u128::from(end - start);
                        prop_assert!(
                            granted * interval <= allowed,
                            "{quota:?}: {granted} permits between {start} and {end}"
                        );
                    }
                }
            }
        }
    }
}
