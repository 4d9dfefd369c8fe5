//! The decision itself, shared by the memory store and mirrored line by line in the Redis script.

use http::StatusCode;

use crate::policy::{Quota, RateLimitPolicy};
use crate::store::memory::nanos;
use crate::store::{Decision, Observation};
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

const SECOND: u64 = 1_000_000_000;

/// How fast a new key's probe grows: its rate is multiplied by this every second (see
/// [`Learned::probe`]).
pub(crate) const PROBE_GROWTH: f64 = 16.0;

/// `Learned::probe_start` of a key whose probe ended without a throttle.
const PROBE_OVER: u64 = 1;

/// How long a key's learned state is kept after its last throttle (memory eviction, Redis expiry).
pub(crate) const LEARNED_TTL: u64 = 600 * SECOND;

/// The settings of adaptation as the decision uses them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Adapt {
    pub(crate) min_rate: f64,
    pub(crate) decrease: f64,
    pub(crate) increase: f64,
    /// The slowest quota's sustained rate, infinite without a quota.
    pub(crate) cap: f64,
    /// The probe's initial window (the policy's `initial_window`); zero: no probe.
    pub(crate) window: f64,
}

impl Adapt {
    pub(crate) fn of(policy: &RateLimitPolicy) -> Option<Self> {
        let adaptation = policy.adaptation()?;
        Some(Self {
            min_rate: adaptation.min_rate(),
            decrease: adaptation.decrease(),
            increase: adaptation.increase(),
            cap: policy.rate_cap(),
            window: policy.initial_window() as f64,
        })
    }
}

/// What a key has learned from the server: its CUBIC rate, the pace of the server's own counters, and
/// the measured rate of its permits. All zero for a key that never saw a signal. Mirrored field by
/// field in the Redis script's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Learned {
    /// The rate (per second) the curve flattens at; zero: no learned rate.
    pub(crate) w_max: f64,
    /// The rate right after the last decrease.
    pub(crate) r0: f64,
    /// When the curve starts (the end of the pause of the last decrease): answers to requests sent
    /// before it change nothing.
    pub(crate) start: u64,
    /// When the last decrease happened.
    pub(crate) epoch: u64,
    /// The theoretical arrival time of the learned rate's GCRA (burst 1).
    pub(crate) tat: u64,
    /// Permits granted in the current and the previous one-second bucket, and the current bucket.
    pub(crate) bucket: u64,
    pub(crate) previous: u32,
    pub(crate) current: u32,
    /// Pacing from the server's counters: one permit per `pace_interval` until `pace_until`.
    pub(crate) pace_interval: u64,
    pub(crate) pace_until: u64,
    pub(crate) pace_tat: u64,
    /// The spacing of permits past `pace_until`, in the server's next window: the narrowest
    /// `pace_interval` of the current window.
    pub(crate) pace_next: u64,
    /// When the key's probe started (its first permit); zero: not yet; 1 (`PROBE_OVER`): over
    /// without a throttle (the server's counters took over).
    pub(crate) probe_start: u64,
    /// Permits granted while probing.
    pub(crate) probe_sent: u32,
}

impl Learned {
    /// The learned rate at `now` (the probe's before the first throttle), `None` when there is none
    /// or it has grown to the cap.
    pub(crate) fn rate(&self, now: u64, adapt: &Adapt) -> Option<f64> {
        if self.w_max <= 0.0 {
            return self.probe(now, adapt);
        }
        let rate = cubic(self.w_max, self.r0, now.saturating_sub(self.start), adapt);
        (rate < adapt.cap).then_some(rate)
    }

    /// The probe of a key that has never been throttled: its first `window` permits at once, then a
    /// rate of `window` per second multiplied by [`PROBE_GROWTH`] every second, until the first
    /// throttle (which learns the server's rate from it, see [`probe_estimate`](Self::probe_estimate)),
    /// or until the server's counters take over. A slow start in rate: TCP's, clocked by the
    /// answers, doubles thousands of times a second against a server a millisecond away, so its first
    /// loss tells only the server's burst; this one's tells its rate. It costs nothing once it no
    /// longer binds (about a second past the key's demand). `None` when not probing.
    pub(crate) fn probe(&self, now: u64, adapt: &Adapt) -> Option<f64> {
        if self.w_max > 0.0
            || self.probe_start <= PROBE_OVER
            || adapt.window <= 0.0
            || f64::from(self.probe_sent) < adapt.window
        {
            return None;
        }
        let t = now.saturating_sub(self.probe_start) as f64 / SECOND as f64;
        let rate = (adapt.window * PROBE_GROWTH.powf(t)).max(adapt.min_rate);
        (rate < adapt.cap).then_some(rate)
    }

    /// The server's sustained rate as the probe's first throttle tells it, `None` when the key was
    /// not probing or the throttle hit its first window (which tells only the server's burst).
    ///
    /// A server limiter (a GCRA, a token bucket) that accepted the first window at once has a burst
    /// of about `window`; the probe's rate crossed the server's `R` and, from there, the excess over
    /// `R` filled that burst and the throttle followed. Two readings of it, each low where the other
    /// is right, so the larger wins:
    /// - counted: the permits sent beyond the first window per second of probing, `R` when the
    ///   server's burst never filled again (a probe crossing `R` early);
    /// - shaped: the `R` at which an exponential probe, reaching `at` when the throttled request
    ///   left, overshoots by `window`: `at (1 - x + x ln x) = window ln G` with `x = R / at`; right
    ///   when the server's burst filled again while the probe was below `R`.
    ///
    /// Measured against a server GCRA of 50/s burst 10 (issue 13): the seed was 21-30/s from the
    /// send rate of the first milliseconds, and the curve took seconds to climb to 50.
    pub(crate) fn probe_estimate(&self, sent: u64, adapt: &Adapt) -> Option<f64> {
        if self.w_max > 0.0
            || self.probe_start <= PROBE_OVER
            || adapt.window <= 0.0
            || f64::from(self.probe_sent) <= adapt.window
            || sent <= self.probe_start
        {
            return None;
        }
        let t = (sent - self.probe_start) as f64 / SECOND as f64;
        let ln_g = PROBE_GROWTH.ln();
        let grown = PROBE_GROWTH.powf(t);
        // Permits are counted when granted, some for later: at most what the probe allowed by then.
        let allowed = adapt.window + adapt.window * (grown - 1.0) / ln_g;
        let counted = (f64::from(self.probe_sent).min(allowed) - adapt.window) / t;
        let at = adapt.window * grown;
        let shaped = at * overshoot_ratio(adapt.window * ln_g / at);
        Some(counted.max(shaped).min(adapt.cap).max(adapt.min_rate))
    }

    /// The learned rate for the gauge: the rate, or the cap once grown back to it; `None` for a key
    /// that never learned one.
    pub(crate) fn gauge(&self, now: u64, adapt: &Adapt) -> Option<f64> {
        (self.w_max > 0.0).then(|| self.rate(now, adapt).unwrap_or(adapt.cap))
    }

    /// Permits granted over the last second or so (the previous bucket weighted by how much of it
    /// is still within one second of `now`).
    ///
    /// Permits the server's pace reserved ahead of `now` may have moved the newest bucket past
    /// `now`'s: then the busier of the two buckets counted is the rate the key is sending at (the
    /// older one, `now`'s or later, holds a whole second of them). Weighting it as the past second,
    /// as before, made the rate a fraction of the real one late in a second (issue 13).
    pub(crate) fn measured(&self, now: u64) -> f64 {
        let bucket = now / SECOND;
        if self.bucket > bucket {
            return f64::from(self.previous.max(self.current));
        }
        let (previous, current) = match bucket.saturating_sub(self.bucket) {
            0 => (self.previous, self.current),
            1 => (self.current, 0),
            _ => (0, 0),
        };
        let into = (now % SECOND) as f64 / SECOND as f64;
        f64::from(previous) * (1.0 - into) + f64::from(current)
    }

    fn count(&mut self, send: u64) {
        let bucket = send / SECOND;
        match bucket.checked_sub(self.bucket) {
            Some(0) => self.current = self.current.saturating_add(1),
            Some(1) => {
                self.previous = self.current;
                self.current = 1;
                self.bucket = bucket;
            }
            Some(_) => {
                self.previous = 0;
                self.current = 1;
                self.bucket = bucket;
            }
            // A permit reserved earlier than the newest one counted: count it in the newest bucket.
            None => self.current = self.current.saturating_add(1),
        }
    }

    /// The instant after which this state carries no information.
    pub(crate) fn busy_until(&self) -> u64 {
        let learned = if self.w_max > 0.0 {
            self.epoch.saturating_add(LEARNED_TTL)
        } else {
            0
        };
        // A key that probed keeps that while in use: a new probe only after LEARNED_TTL idle.
        let probed = if self.probe_start > 0 {
            (self.bucket + 1)
                .saturating_mul(SECOND)
                .saturating_add(LEARNED_TTL)
        } else {
            0
        };
        learned
            .max(probed)
            .max(self.tat)
            .max(self.pace_until)
            .max(self.pace_tat)
    }
}

/// `x` in `(0, 1]` with `1 - x + x ln x = y` (decreasing in `x`), by 60 bisections (the Redis script
/// does the same steps); 0 for `y >= 1`.
pub(crate) fn overshoot_ratio(y: f64) -> f64 {
    // NaN and `y >= 1` alike: no ratio.
    if y.is_nan() || y >= 1.0 {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if 1.0 - mid + mid * mid.ln() > y {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// CUBIC's rate `t` nanoseconds into the curve: `w_max + C (t - K)^3`, `K = cbrt((w_max - r0) / C)`,
/// at least `min_rate`.
pub(crate) fn cubic(w_max: f64, r0: f64, t: u64, adapt: &Adapt) -> f64 {
    let k = ((w_max - r0).max(0.0) / adapt.increase).cbrt();
    let t = t as f64 / SECOND as f64;
    (w_max + adapt.increase * (t - k).powi(3)).max(adapt.min_rate)
}

/// How far ahead of `now` a quota without state starts: the whole emission intervals that fit in one
/// second, at most its tolerance, so a new key's first second goes at the quota's pace.
pub(crate) fn cold_start(quota: &Quota) -> u64 {
    let interval = quota.interval_nanos().max(1);
    let held = (SECOND / interval).saturating_mul(interval);
    quota.tolerance_nanos().min(held)
}

fn interval(rate: f64) -> u64 {
    // Rounded up: rounding never sends faster than the rate.
    (SECOND as f64 / rate).ceil().min(u64::MAX as f64) as u64
}

/// Decides one call at `now`: waits out a server pause that fits the bounds, then takes one permit from
/// every quota, and of the learned rate and the server's pace if any, at the earliest instant all of
/// them allow (`send`), as GCRA does for an arrival at `send`: quota `i` allows it when
/// `tat_i - tau_i <= send`, and its TAT becomes `max(tat_i, send) + T_i`. The learned rate and the
/// server's pace are GCRAs with a burst of 1.
///
/// Reserving at `send` rather than at `now` keeps the GCRA bound over send times: over any window of
/// length `w`, at most `burst + w / T` permits of each quota are used; and it serves callers in
/// arrival order, each at its own instant.
///
/// `tats` is resized to the number of quotas. A quota the key has no state for (a new key, or a quota
/// added by a reload) starts with the permits of one second held back from its burst (as many
/// whole emission intervals as fit in a second, at most its tolerance): a new key's first second
/// goes at the quota's pace, and the burst builds up while the key is idle. With the default burst
/// of a per-second quota (burst = rate) that is no burst at all (issue 13: a fresh 45/s quota sent
/// 45 calls in its first millisecond against a server allowing a burst of 10, which answered 35 of
/// them 429); a quota whose interval is a second or more (100 an hour) keeps its whole burst, since
/// holding back its tolerance would space a fresh key's calls 36 s apart.
/// Nothing changes on a denial.
pub(crate) fn decide(
    tats: &mut Vec<u64>,
    pause: Pause,
    learned: &mut Learned,
    quotas: &[Quota],
    adapt: Option<&Adapt>,
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
    let known = tats.len();
    for quota in quotas.iter().skip(known) {
        tats.push(now.saturating_add(cold_start(quota)));
    }
    tats.truncate(quotas.len());
    let mut send = quotas
        .iter()
        .zip(tats.iter())
        .map(|(quota, &tat)| tat.saturating_sub(quota.tolerance_nanos()))
        .fold(earliest, u64::max);
    let rate = adapt.and_then(|adapt| learned.rate(now, adapt));
    // The probe of a key never throttled is a courtesy to a server whose limit is not known yet,
    // as the slow-start window is: a call it would hold past its wait bound goes without it rather
    // than fail, and leaves the probe's pace as it was. (With `max_wait` 0, the layer's default, a
    // fresh key refused every call past its first window for about a second with no limit
    // anywhere: found by the criterion benchmark of the layer.)
    let mut probe_skipped = false;
    if rate.is_some() {
        let paced = send.max(learned.tat);
        probe_skipped = learned.w_max <= 0.0 && paced - now > bounds.max_wait;
        if !probe_skipped {
            send = paced;
        }
    }
    let rate = rate.filter(|_| !probe_skipped);
    // The server's counters pace the permits of its current window. Callers past them go on past
    // the reset at the next window's pace (`pace_next`), until the next window's answers set the
    // next pace: they never all leave at the reset (issue 13: 14 of the 64 met the new window's
    // limit there).
    // A caller the pace would hold past its wait bound is not refused for it: it waits for the
    // reset instead, as before the pace was kept past it (a queue past the reset longer than
    // `max_wait` refused 65 % of the chaos suite's ratelimit-headers calls before they were sent).
    let mut paced = false;
    if adapt.is_some()
        && (learned.pace_until > send || (learned.pace_until > 0 && learned.pace_tat > send))
    {
        let slot = send.max(learned.pace_tat);
        if slot < learned.pace_until || slot - now <= bounds.max_wait {
            send = slot;
            paced = true;
        } else {
            send = send.max(learned.pace_until);
        }
    }
    let wait = send - now;
    if wait > bounds.max_wait {
        return Decision::Denied {
            retry_after: Duration::from_nanos(wait),
            by_server: false,
            status: None,
        };
    }
    for (quota, tat) in quotas.iter().zip(tats.iter_mut()) {
        // While a learned rate is in force the quota's burst stays empty, so that the rate growing
        // back to the quota hands over to the quota's pace, not to a burst saved up meanwhile.
        let from = if rate.is_some() {
            send.saturating_add(quota.tolerance_nanos())
        } else {
            send
        };
        *tat = (*tat).max(from).saturating_add(quota.interval_nanos());
    }
    if let Some(adapt) = adapt {
        if rate.is_some() {
            // The spacing is the rate's at the permit's own instant, not at the decision: a queue
            // reserved at once (64 callers after a pause) follows the curve as it grows, instead
            // of keeping its lowest point for seconds. Grown to the cap by then: the cap's spacing
            // (the quota governs from there).
            let at_send = learned.rate(send, adapt).unwrap_or(adapt.cap);
            learned.tat = learned.tat.max(send).saturating_add(interval(at_send));
        }
        if learned.w_max <= 0.0 && adapt.window > 0.0 {
            if learned.probe_start == 0 {
                learned.probe_start = send.max(PROBE_OVER + 1);
            }
            learned.probe_sent = learned.probe_sent.saturating_add(1);
            // The first window's last permit: the probe's pace starts after it.
            if rate.is_none()
                && !probe_skipped
                && let Some(next) = learned.probe(send, adapt)
            {
                learned.tat = learned.tat.max(send).saturating_add(interval(next));
            }
        }
        if paced {
            // Within the server's window, its pace; but the next slot is never past the window's
            // reset (the next window starts there), and from there on the next window's pace
            // applies: the last of a window's intervals (its few remaining permits over the time to
            // the reset, which `RateLimit` states in whole seconds) spaced a queue 1 s apart past
            // the reset (issue 13: refused calls in one run of the chaos suite in eight).
            let next_window = match learned.pace_next {
                0 => learned.pace_interval,
                next => next,
            };
            let next = if send < learned.pace_until {
                send.saturating_add(learned.pace_interval)
                    .min(learned.pace_until.max(send.saturating_add(next_window)))
            } else {
                send.saturating_add(next_window)
            };
            learned.pace_tat = learned.pace_tat.max(next);
        }
        learned.count(send);
    }
    Decision::Granted {
        wait: Duration::from_nanos(wait),
    }
}

/// What a response told the limiter about a key.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Signal {
    /// The pause it asks of every caller, nanoseconds (zero: none).
    pub(crate) pause: u64,
    pub(crate) status: Option<StatusCode>,
    /// A throttle answer (429, or 503 with `Retry-After`): the rate decreases.
    pub(crate) throttled: bool,
    /// How long ago the request was sent, nanoseconds.
    pub(crate) age: u64,
    /// The server's counters: permits remaining and nanoseconds to the reset.
    pub(crate) remaining: Option<(u64, u64)>,
}

impl Signal {
    pub(crate) fn of(observation: &Observation) -> Self {
        Self {
            pause: nanos(observation.pause),
            status: Some(observation.status),
            throttled: observation.throttled,
            age: nanos(observation.sent_ago),
            remaining: observation
                .remaining
                .map(|(remaining, reset)| (remaining, nanos(reset))),
        }
    }
}

/// Applies a response's signal at `now`: extends the pause; on a pause or a throttle, empties every
/// quota's burst (the first permit after the pause, then one per emission interval); on a throttle
/// to a request sent since the last decrease, decreases the learned rate; and paces from the
/// server's counters.
pub(crate) fn observe(
    tats: &mut Vec<u64>,
    pause: &mut Pause,
    learned: &mut Learned,
    quotas: &[Quota],
    adapt: Option<&Adapt>,
    now: u64,
    signal: Signal,
) {
    let until = now.saturating_add(signal.pause);
    if signal.pause > 0 && until > pause.until {
        *pause = Pause {
            until,
            status: signal.status,
        };
    }
    if signal.pause > 0 || signal.throttled {
        let resume = pause.until.max(now);
        tats.resize(quotas.len(), 0);
        for (quota, tat) in quotas.iter().zip(tats.iter_mut()) {
            *tat = (*tat).max(resume.saturating_add(quota.tolerance_nanos()));
        }
        learned.tat = learned.tat.max(resume);
        learned.pace_tat = learned.pace_tat.max(resume);
        let sent = now.saturating_sub(signal.age);
        if let Some(adapt) = adapt
            && signal.throttled
            // One decrease per congestion event: a request sent before the curve started (before
            // the decrease, or during its pause by a replica that had reserved its permit before
            // the pause reached it) was part of the event that caused the decrease (issue 13: four
            // replicas sharing a key decreased two or three times for one wave, and spent seconds
            // at 15-22/s against a server allowing 50/s).
            && (learned.w_max <= 0.0 || sent >= learned.start)
        {
            if let Some(estimate) = learned.probe_estimate(sent, adapt) {
                // The server's rate, as the probe measured it: the curve flattens there.
                learned.w_max = estimate;
                learned.r0 = (estimate * adapt.decrease).max(adapt.min_rate);
            } else {
                let at_loss = learned
                    .rate(now, adapt)
                    .filter(|_| learned.w_max > 0.0)
                    .unwrap_or_else(|| learned.measured(now).min(adapt.cap))
                    .max(adapt.min_rate);
                // RFC 8312 fast convergence: a loss below the previous maximum means the share
                // shrank.
                learned.w_max = if at_loss < learned.w_max {
                    at_loss * (1.0 + adapt.decrease) / 2.0
                } else {
                    at_loss
                };
                learned.r0 = (at_loss * adapt.decrease).max(adapt.min_rate);
            }
            learned.start = resume;
            learned.epoch = now;
        }
    }
    if let (Some(_), Some((remaining, reset))) = (adapt, signal.remaining)
        && remaining > 0
        && reset > 0
    {
        let interval = reset / remaining;
        // The next window's pace: the narrowest of this window's readings (its first ones: most
        // permits over the whole window), new once the window is over. Not the server's stated
        // policy (`q=50;w=1`: 20 ms): at exactly the server's rate, a window boundary that drifted
        // against the pace let one permit too many into a window, and its last answers, `r=0` with
        // the reset in whole seconds, paused the key for up to a second (the simulation of the test
        // `a_key_paced_by_the_servers_counters_converges_at_any_phase` took 8.4-10.3 s for its 300
        // calls at the policy's pace, 6.2-7.0 s at this one).
        learned.pace_next = if learned.pace_next == 0 || now >= learned.pace_until {
            interval
        } else {
            learned.pace_next.min(interval)
        };
        learned.pace_interval = interval;
        learned.pace_until = now.saturating_add(reset);
        // The server's counters say more than a probe: it ends (or never starts).
        if learned.w_max <= 0.0 {
            learned.probe_start = PROBE_OVER;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn grant(tats: &mut Vec<u64>, quotas: &[Quota], now: u64, max_wait: u64) -> Option<u64> {
        let bounds = Bounds {
            max_wait,
            max_server_pause: u64::MAX,
        };
        match decide(
            tats,
            Pause::default(),
            &mut Learned::default(),
            quotas,
            None,
            now,
            bounds,
        ) {
            Decision::Granted { wait } => Some(now + wait.as_nanos() as u64),
            Decision::Denied { .. } => None,
        }
    }

    /// Regression (issue 13): a fresh quota of 45/s with burst 45 sent 45 calls in its first
    /// millisecond against a server with a burst of 10. A new key's burst starts empty: its first
    /// permit at once, the next ones at the quota's pace.
    #[test]
    fn a_new_key_starts_with_its_burst_empty() {
        let quota = Quota::new(10, Duration::from_secs(1), 3).unwrap();
        let mut tats = Vec::new();
        let now = 5 * SECOND;
        assert_eq!(grant(&mut tats, &[quota], now, 0), Some(now));
        assert_eq!(grant(&mut tats, &[quota], now, 0), None);
        assert_eq!(
            grant(&mut tats, &[quota], now, SECOND),
            Some(now + SECOND / 10)
        );
        assert_eq!(
            grant(&mut tats, &[quota], now, SECOND),
            Some(now + 2 * SECOND / 10)
        );
    }

    #[test]
    fn an_idle_key_gets_its_burst_then_the_rate() {
        let quota = Quota::new(10, Duration::from_secs(1), 3).unwrap();
        let mut tats = Vec::new();
        // Used once, then idle long enough for the burst to build up.
        assert!(grant(&mut tats, &[quota], SECOND, 0).is_some());
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

    const MS: u64 = 1_000_000;

    fn adapt(cap: f64) -> Adapt {
        Adapt {
            min_rate: 0.5,
            decrease: 0.7,
            increase: 0.4,
            cap,
            window: 0.0,
        }
    }

    /// A key's whole state, driven like the memory store drives it.
    #[derive(Default)]
    struct Key {
        tats: Vec<u64>,
        pause: Pause,
        learned: Learned,
    }

    impl Key {
        fn acquire(&mut self, quotas: &[Quota], adapt: &Adapt, now: u64) -> Option<u64> {
            let bounds = Bounds {
                max_wait: 3_600 * SECOND,
                max_server_pause: u64::MAX,
            };
            let learned = &mut self.learned;
            match decide(
                &mut self.tats,
                self.pause,
                learned,
                quotas,
                Some(adapt),
                now,
                bounds,
            ) {
                Decision::Granted { wait } => Some(now + wait.as_nanos() as u64),
                Decision::Denied { .. } => None,
            }
        }

        fn throttle(&mut self, quotas: &[Quota], adapt: &Adapt, now: u64, pause: u64, age: u64) {
            let signal = Signal {
                pause,
                status: Some(StatusCode::TOO_MANY_REQUESTS),
                throttled: true,
                age,
                remaining: None,
            };
            self.observe(quotas, adapt, now, signal);
        }

        fn observe(&mut self, quotas: &[Quota], adapt: &Adapt, now: u64, signal: Signal) {
            observe(
                &mut self.tats,
                &mut self.pause,
                &mut self.learned,
                quotas,
                Some(adapt),
                now,
                signal,
            );
        }
    }

    /// Regression (issue 13): when a server pause ended, every waiter and the whole burst went at
    /// the same instant. A throttle now empties the burst: after the pause, one permit per interval.
    #[test]
    fn a_throttle_empties_the_burst_and_the_key_resumes_at_its_pace() {
        let quota = Quota::new(10, Duration::from_secs(1), 10).unwrap();
        let adapt = Adapt {
            cap: f64::INFINITY,
            ..adapt(f64::INFINITY)
        };
        let mut key = Key::default();
        let now = 10 * SECOND;
        key.throttle(&[quota], &adapt, now, SECOND, 0);
        let sends: Vec<u64> = (0..5)
            .map(|_| key.acquire(&[quota], &adapt, now).unwrap() - now)
            .collect();
        // The learned rate (0.5/s: nothing was sent before the throttle) paces harder than the
        // quota; without adaptation the quota's own pace applies (next test).
        assert!(sends.windows(2).all(|w| w[1] > w[0]), "{sends:?}");
        assert_eq!(sends[0], SECOND);

        let mut tats = Vec::new();
        let mut pause = Pause::default();
        let mut learned = Learned::default();
        let signal = Signal {
            pause: SECOND,
            status: Some(StatusCode::TOO_MANY_REQUESTS),
            throttled: true,
            age: 0,
            remaining: None,
        };
        observe(
            &mut tats,
            &mut pause,
            &mut learned,
            &[quota],
            None,
            now,
            signal,
        );
        let bounds = Bounds {
            max_wait: 60 * SECOND,
            max_server_pause: u64::MAX,
        };
        let sends: Vec<u64> = (0..4)
            .map(
                |_| match decide(&mut tats, pause, &mut learned, &[quota], None, now, bounds) {
                    Decision::Granted { wait } => wait.as_nanos() as u64,
                    Decision::Denied { .. } => panic!("denied"),
                },
            )
            .collect();
        assert_eq!(
            sends,
            vec![
                SECOND,
                SECOND + 100 * MS,
                SECOND + 200 * MS,
                SECOND + 300 * MS
            ]
        );
    }

    /// A key without a quota that sent `permits` at once at `now` (5 s), the first answered 429
    /// with a 1 s pause 1 ms later.
    fn one_wave_throttled(permits: u32, adapt: &Adapt) -> Key {
        let mut key = Key::default();
        let now = 5 * SECOND;
        for _ in 0..permits {
            assert_eq!(key.acquire(&[], adapt, now), Some(now));
        }
        key.throttle(&[], adapt, now + MS, SECOND, MS);
        key
    }

    #[test]
    fn the_first_throttle_learns_from_the_measured_rate_and_stragglers_do_not_decrease_again() {
        let adapt = adapt(f64::INFINITY);
        let now = 5 * SECOND;
        let mut key = one_wave_throttled(64, &adapt);
        let learned = key.learned;
        assert_eq!(learned.w_max, 64.0);
        assert!((learned.r0 - 44.8).abs() < 1e-9, "{learned:?}");
        // 53 more 429s to the same wave: sent before the decrease, they change nothing.
        for _ in 0..53 {
            key.throttle(&[], &adapt, now + 2 * MS, SECOND, 2 * MS);
        }
        assert_eq!(key.learned.w_max, 64.0);
        assert_eq!(key.learned.epoch, now + MS);
        // After the pause: paced at 44.8/s, in order.
        let first = key.acquire(&[], &adapt, now + 3 * MS).unwrap();
        let second = key.acquire(&[], &adapt, now + 3 * MS).unwrap();
        // The stragglers' Retry-After extended the pause.
        assert_eq!(first, now + 2 * MS + SECOND);
        assert_eq!(
            second - first,
            interval(key.learned.rate(first, &adapt).unwrap())
        );
        assert!(interval(44.9) < second - first && second - first <= interval(44.8));
        // A lower loss later: fast convergence lowers w_max below it.
        let later = now + 3 * SECOND;
        let at = key.learned.rate(later, &adapt).unwrap();
        key.throttle(&[], &adapt, later, SECOND, MS);
        assert!(at < 64.0);
        assert!((key.learned.w_max - at * 0.85).abs() < 1e-9);
    }

    /// Regression (issue 13, the chaos suite's shared-limit scenario: four replicas sharing a key in
    /// Redis took 10.8 s for an ideal of 5.8): a replica that had reserved its permit before the
    /// pause of a throttle reached it sent its request during the pause; its 429, sent after the
    /// decrease, decreased the rate a second time for the same wave.
    #[test]
    fn a_throttle_to_a_request_sent_during_the_pause_does_not_decrease_again() {
        let adapt = adapt(f64::INFINITY);
        let now = 5 * SECOND;
        let mut key = one_wave_throttled(50, &adapt);
        let learned = key.learned;
        assert_eq!(learned.w_max, 50.0);
        assert_eq!(learned.start, now + MS + SECOND);
        // Sent 10 ms into the pause, answered 429 (with its own Retry-After) 1 ms later.
        key.throttle(&[], &adapt, now + 12 * MS, SECOND, MS);
        assert_eq!(key.learned.w_max, 50.0);
        assert_eq!(key.learned.r0, learned.r0);
        // A request sent after the pause is a new signal.
        let after = key.learned.start + 100 * MS;
        key.throttle(&[], &adapt, after, SECOND, MS);
        assert!(key.learned.w_max < 50.0, "{:?}", key.learned);
    }

    #[test]
    fn the_rate_grows_back_to_the_quota_then_the_quota_governs() {
        let quota = Quota::per_second(45).unwrap();
        let adapt = adapt(quota.sustained_rate());
        let mut key = Key::default();
        for _ in 0..45 {
            key.acquire(&[quota], &adapt, SECOND);
        }
        key.throttle(&[quota], &adapt, SECOND + MS, SECOND, MS);
        // Capped at the quota's rate when learning from the measured rate.
        assert_eq!(key.learned.w_max, 45.0);
        let start = key.learned.start;
        assert!(key.learned.rate(start, &adapt).unwrap() < 45.0);
        assert_eq!(key.learned.rate(start + 10 * SECOND, &adapt), None);
        assert_eq!(key.learned.gauge(start + 10 * SECOND, &adapt), Some(45.0));
    }

    /// A key told by the server's counters that 10 permits remain for 500 ms, at `now` = 1 s, then
    /// asked for 12 permits at once within `max_wait`: the state after, and each permit's wait.
    fn twelve_paced_by_counters(max_wait: u64) -> (Vec<u64>, Pause, Learned, Vec<u64>) {
        let adapt = adapt(f64::INFINITY);
        let (mut tats, mut pause, mut learned) = (Vec::new(), Pause::default(), Learned::default());
        let signal = Signal {
            pause: 0,
            status: Some(StatusCode::OK),
            throttled: false,
            age: 0,
            remaining: Some((10, 500 * MS)),
        };
        observe(
            &mut tats,
            &mut pause,
            &mut learned,
            &[],
            Some(&adapt),
            SECOND,
            signal,
        );
        let bounds = Bounds {
            max_wait,
            max_server_pause: u64::MAX,
        };
        let mut sends = Vec::new();
        for _ in 0..12 {
            match decide(
                &mut tats,
                pause,
                &mut learned,
                &[],
                Some(&adapt),
                SECOND,
                bounds,
            ) {
                Decision::Granted { wait } => sends.push(wait.as_nanos() as u64),
                Decision::Denied { .. } => panic!("refused: {sends:?}"),
            }
        }
        (tats, pause, learned, sends)
    }

    #[test]
    /// Regression (issue 13, found by the chaos suite's ratelimit-headers scenario): a caller the
    /// server's pace would hold past its wait bound was refused before being sent (65 % of that
    /// scenario's calls); it now waits for the reset instead.
    fn a_caller_the_pace_would_hold_past_its_wait_waits_for_the_reset() {
        let (_, _, _, sends) = twelve_paced_by_counters(520 * MS);
        // Ten at the pace, the eleventh at its next slot (500 ms, within the bound), the twelfth
        // (its slot at 550 ms is past the bound) at the reset, not refused.
        let mut expected: Vec<u64> = (0..11).map(|i| i * 50 * MS).collect();
        expected.push(500 * MS);
        assert_eq!(sends, expected);
    }

    #[test]
    fn the_servers_counters_pace_the_key() {
        let adapt = adapt(f64::INFINITY);
        let now = SECOND;
        let (mut tats, pause, mut learned, sends) = twelve_paced_by_counters(60 * SECOND);
        let bounds = Bounds {
            max_wait: 60 * SECOND,
            max_server_pause: u64::MAX,
        };
        // 10 remaining over 500 ms: one per 50 ms; the callers past them keep that pace past the
        // reset (regression, issue 13: they all left at the reset, into the next window's limit)
        // until the next window's answers set the next pace.
        let expected: Vec<u64> = (0..12).map(|i| i * 50 * MS).collect();
        assert_eq!(sends, expected);
        // A caller arriving after the reset is not paced by the old window.
        let later = now + SECOND;
        match decide(
            &mut tats,
            pause,
            &mut learned,
            &[],
            Some(&adapt),
            later,
            bounds,
        ) {
            Decision::Granted { wait } => assert_eq!(wait, Duration::ZERO),
            Decision::Denied { .. } => panic!("denied"),
        }
    }

    fn probing(cap: f64) -> Adapt {
        Adapt {
            window: 10.0,
            ..adapt(cap)
        }
    }

    /// A server GCRA (rate per second, burst) over the given send instants: the first rejected one.
    fn first_rejected(sends: &[u64], rate: f64, burst: u32) -> Option<u64> {
        let interval = (SECOND as f64 / rate) as u64;
        let tolerance = interval * u64::from(burst - 1);
        let mut tat = 0u64;
        for &send in sends {
            let next = tat.max(send);
            if next - send > tolerance {
                return Some(send);
            }
            tat = next + interval;
        }
        None
    }

    /// Regression (issue 13): after the first throttle the learned rate was seeded from the send
    /// rate of the first milliseconds (21-30/s against a server allowing 50/s) and the curve took
    /// seconds to climb back. A new key now probes in rate, and its first throttle tells the server's
    /// rate: 64 callers at once against a GCRA of 50/s burst 10 learn about 50/s.
    #[test]
    fn the_probes_first_throttle_learns_the_servers_rate() {
        for (rate, burst) in [(50.0, 10), (20.0, 10), (200.0, 10), (50.0, 12)] {
            let adapt = probing(f64::INFINITY);
            let mut key = Key::default();
            let now = 7 * SECOND;
            let sends: Vec<u64> = (0..400)
                .map(|_| key.acquire(&[], &adapt, now).unwrap())
                .collect();
            // The first window at once, then the probe's pace, growing.
            assert!(sends[..10].iter().all(|&send| send == now), "{sends:?}");
            assert!(sends.windows(2).all(|w| w[1] >= w[0]));
            let rejected = first_rejected(&sends, rate, burst).expect("the probe passes the limit");
            key.throttle(&[], &adapt, rejected + MS, SECOND, MS);
            let learned = key.learned.w_max;
            assert!(
                learned >= rate * 0.9 && learned <= rate * 1.15,
                "{rate}/s burst {burst}: learned {learned}"
            );
            assert!((key.learned.r0 - learned * 0.7).abs() < 1e-9);
        }
    }

    /// Regression (issue 13): 54 callers reserved their permits after a pause at the rate of that
    /// instant, so the last of them waited seconds while the curve had long grown. Each permit is
    /// now spaced at the rate of its own instant.
    #[test]
    fn a_queue_reserved_at_once_follows_the_curve() {
        let adapt = probing(f64::INFINITY);
        let mut key = Key::default();
        let now = 3 * SECOND;
        let sends: Vec<u64> = (0..64)
            .map(|_| key.acquire(&[], &adapt, now).unwrap() - now)
            .collect();
        // At the probe's first rate (10/s) the 64th would leave at 5.4 s; growing 16-fold a second,
        // it leaves within the second.
        assert!(sends[63] < SECOND + SECOND / 10, "{sends:?}");
        let gaps: Vec<u64> = sends[10..].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|w| w[1] <= w[0]), "{gaps:?}");
    }

    /// Regression (found by the facade's throttle test, one run in six): a permit reserved for an
    /// instant when the probe had grown past the quota was spaced at the probe's rate at the
    /// decision (10/s), so 64 callers at once against a 45/s quota were reserved 5 s ahead and most
    /// refused after `max_wait`. Past the cap the spacing is the cap's.
    #[test]
    fn a_queue_reserved_past_the_cap_is_spaced_at_the_cap() {
        let quota = Quota::per_second(45).unwrap();
        let adapt = probing(quota.sustained_rate());
        let mut key = Key::default();
        let now = 3 * SECOND;
        let sends: Vec<u64> = (0..64)
            .map(|_| key.acquire(&[quota], &adapt, now).unwrap() - now)
            .collect();
        assert!(sends[63] < 2 * SECOND, "{sends:?}");
        let last_gap = sends[63] - sends[62];
        assert_eq!(last_gap, quota.interval_nanos(), "{sends:?}");
    }

    #[test]
    fn a_throttle_in_the_first_window_or_the_servers_counters_end_the_probe() {
        // Within the first window nothing is known of the rate: the measured rate, as before.
        let adapt = probing(f64::INFINITY);
        let mut key = Key::default();
        let now = 3 * SECOND;
        for _ in 0..10 {
            key.acquire(&[], &adapt, now);
        }
        key.throttle(&[], &adapt, now + MS, SECOND, MS);
        assert_eq!(key.learned.w_max, 10.0);
        // The server's counters: no probe.
        let mut key = Key::default();
        for _ in 0..10 {
            key.acquire(&[], &adapt, now);
        }
        let signal = Signal {
            remaining: Some((100, SECOND)),
            ..Signal::default()
        };
        key.observe(&[], &adapt, now, signal);
        assert_eq!(key.learned.rate(now + MS, &adapt), None);
        assert_eq!(key.learned.probe_estimate(now + MS, &adapt), None);
    }

    /// What [`counters_closed_loop`] saw: calls that succeeded, calls refused before being sent,
    /// requests answered after the first answer and those of them answered 429.
    #[derive(Debug)]
    struct LoopOutcome {
        succeeded: u32,
        refused: u32,
        after_first: u32,
        throttled_after_first: u32,
        /// From the first call to the last answer, ms.
        elapsed_ms: u64,
    }

    /// The chaos suite's ratelimit-headers scenario, deterministic: 300 calls, 64 callers in a closed
    /// loop, against a server allowing 50 requests per fixed 1 s window (its windows start `phase`
    /// into the second of this key's buckets) that answers every request 1 ms after it is sent with
    /// `RateLimit: r=<remaining>;t=<whole seconds to the reset, rounded up>`, 429 without
    /// `Retry-After` past its limit. The client side does what the layer does with those: the
    /// remaining count less the key's other requests in flight; none left (or a 429): a pause until
    /// the reset; a 429 is retried at once (3 attempts); `max_wait` 5 s, adaptation at its defaults.
    fn counters_closed_loop(phase: u64) -> LoopOutcome {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;

        const LATENCY: u64 = MS;
        let adapt = probing(f64::INFINITY);
        let bounds = Bounds {
            max_wait: 5 * SECOND,
            max_server_pause: 600 * SECOND,
        };
        let mut key = Key::default();
        let (mut window_start, mut used) = (phase, 0u64);
        /// (instant, caller, what, sent, attempt): what is 0 acquire, 1 the answer of a request
        /// sent at `sent`, 2 the end of a wait.
        type Event = (u64, u32, u8, u64, u32);
        let mut events: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
        let start = 3 * SECOND;
        let mut launched = 0u32;
        for caller in 0..64 {
            events.push(Reverse((start, caller, 0, 0, 1)));
            launched += 1;
        }
        let mut in_flight = 0u64;
        let mut first_answer: Option<u64> = None;
        let mut outcome = LoopOutcome {
            succeeded: 0,
            refused: 0,
            after_first: 0,
            throttled_after_first: 0,
            elapsed_ms: 0,
        };
        let mut guard = 0;
        while let Some(Reverse((now, caller, what, sent, attempt))) = events.pop() {
            guard += 1;
            assert!(guard < 1_000_000, "the simulation does not end");
            let mut next_call = false;
            if what == 0 {
                match decide(
                    &mut key.tats,
                    key.pause,
                    &mut key.learned,
                    &[],
                    Some(&adapt),
                    now,
                    bounds,
                ) {
                    Decision::Granted { wait } if wait.is_zero() => {
                        in_flight += 1;
                        events.push(Reverse((now + LATENCY, caller, 1, now, attempt)));
                    }
                    Decision::Granted { wait } => {
                        let send = now + wait.as_nanos() as u64;
                        events.push(Reverse((send, caller, 2, 0, attempt)));
                    }
                    Decision::Denied { .. } => {
                        outcome.refused += 1;
                        next_call = true;
                    }
                }
            } else if what == 2 {
                // After a wait: a pause that started meanwhile sends the call back in line.
                if key.pause.until > now {
                    events.push(Reverse((now, caller, 0, 0, attempt)));
                } else {
                    in_flight += 1;
                    events.push(Reverse((now + LATENCY, caller, 1, now, attempt)));
                }
            } else {
                in_flight -= 1;
                outcome.elapsed_ms = (now - start) / MS;
                // The server decides when the request arrives, half way.
                let at = sent + LATENCY / 2;
                while at >= window_start + SECOND {
                    window_start += SECOND;
                    used = 0;
                }
                let allowed = used < 50;
                if allowed {
                    used += 1;
                }
                let remaining = 50 - used;
                let reset = (window_start + SECOND - at).div_ceil(SECOND) * SECOND;
                if first_answer.is_some_and(|first| sent >= first) {
                    outcome.after_first += 1;
                    outcome.throttled_after_first += u32::from(!allowed);
                }
                first_answer.get_or_insert(now);
                let left = remaining.saturating_sub(in_flight);
                let signal = Signal {
                    pause: if !allowed || left == 0 { reset } else { 0 },
                    status: Some(if allowed {
                        StatusCode::OK
                    } else {
                        StatusCode::TOO_MANY_REQUESTS
                    }),
                    throttled: !allowed,
                    age: now - sent,
                    remaining: (allowed && left > 0).then_some((left, reset)),
                };
                key.observe(&[], &adapt, now, signal);
                if allowed {
                    outcome.succeeded += 1;
                    next_call = true;
                } else if attempt < 3 {
                    events.push(Reverse((now, caller, 0, 0, attempt + 1)));
                } else {
                    next_call = true;
                }
            }
            if next_call && launched < 300 {
                launched += 1;
                events.push(Reverse((now, caller, 0, 0, 1)));
            }
        }
        outcome
    }

    /// Regression (issue 13, the chaos suite's ratelimit-headers scenario failing about one run in
    /// eight: one 429 about 2 s in, then 140 calls refused "rate limited by the client quota"). The
    /// server's last answers of a window (`r=1;t=1`: one permit over the reset rounded up to a
    /// second) set the pace to one a second, and the queue kept it past the reset for seconds: every
    /// caller within `max_wait` reserved a slot a second apart. Then a 429 seeded the learned rate
    /// from the permits measured over the last second, which those reservations into the next
    /// second made a fraction of the real figure (the older bucket weighted as the past when it was
    /// the present). Past the reset the queue now goes at the next window's pace, and the measured
    /// rate counts reservations ahead as the rate they are at. In this simulation, before: 13 of the
    /// 28 phases refused 129 to 182 calls each, 9 more had 1.7 to 2.7 % of their requests answered
    /// 429, the other 6 took 10.2 to 11.1 s; now all 300 calls succeed at every phase, with at most
    /// one 429, in 6.2 to 7.0 s.
    #[test]
    fn a_key_paced_by_the_servers_counters_converges_at_any_phase() {
        for phase in (0..1_000).step_by(37).map(|ms| ms * MS) {
            let outcome = counters_closed_loop(phase);
            assert_eq!(outcome.refused, 0, "phase {phase}: {outcome:?}");
            assert_eq!(outcome.succeeded, 300, "phase {phase}: {outcome:?}");
            assert!(
                outcome.throttled_after_first * 100 <= outcome.after_first,
                "phase {phase}: {outcome:?}"
            );
            // 50 at once, then 250 at 50/s: 5 s at best; the reset in whole seconds costs some.
            assert!(outcome.elapsed_ms <= 7_500, "phase {phase}: {outcome:?}");
        }
    }

    /// Regression (issue 13): permits reserved a second ahead moved the newest bucket past `now`'s,
    /// and the older bucket, weighted as the past second, counted for a tenth of itself at 0.9 s
    /// into one: 60 permits at 50/s measured as 10/s.
    #[test]
    fn the_measured_rate_counts_permits_reserved_ahead_at_their_rate() {
        let mut learned = Learned::default();
        let now = 3 * SECOND + 900 * MS;
        for i in 0..60 {
            learned.count(now + i * 20 * MS);
        }
        assert_eq!(learned.measured(now), 50.0);
        // Once `now` is in the newest bucket, the usual weighting.
        assert_eq!(learned.measured(5 * SECOND + 500 * MS), 50.0 * 0.5 + 5.0);
    }

    /// Regression (found by the criterion benchmark of the layer): with `max_wait` 0 (the layer's
    /// default) a fresh key's probe refused every call past its first window, for about a second,
    /// with no limit anywhere. The probe is a courtesy, as the slow-start window: a call it would
    /// hold past its bound goes at once, and does not push the probe's pace further out.
    #[test]
    fn the_probe_never_refuses_a_call_it_would_hold_past_its_wait() {
        let adapt = probing(f64::INFINITY);
        let mut key = Key::default();
        let now = 3 * SECOND;
        let bounds = |max_wait| Bounds {
            max_wait,
            max_server_pause: u64::MAX,
        };
        for i in 0..100 {
            let decision = decide(
                &mut key.tats,
                key.pause,
                &mut key.learned,
                &[],
                Some(&adapt),
                now,
                bounds(0),
            );
            assert!(
                matches!(decision, Decision::Granted { wait } if wait.is_zero()),
                "call {i}: {decision:?}"
            );
        }
        // A caller that may wait still follows the probe, whose pace those calls did not push out:
        // the first window's pace (10/s) from its last permit.
        let decision = decide(
            &mut key.tats,
            key.pause,
            &mut key.learned,
            &[],
            Some(&adapt),
            now,
            bounds(10 * SECOND),
        );
        match decision {
            Decision::Granted { wait } => assert_eq!(wait, Duration::from_millis(100)),
            Decision::Denied { .. } => panic!("{decision:?}"),
        }
    }

    #[test]
    fn overshoot_ratio_solves_its_equation() {
        for y in [0.001, 0.1, 0.23, 0.5, 0.9] {
            let x = overshoot_ratio(y);
            assert!((1.0 - x + x * x.ln() - y).abs() < 1e-9, "{y}: {x}");
        }
        assert_eq!(overshoot_ratio(1.0), 0.0);
        assert_eq!(overshoot_ratio(f64::NAN), 0.0);
    }

    /// Events on one key: (gap in ms, what happens) with 0 acquire, 1 throttle with a pause, 2 a
    /// throttle without a pause, 3 the server's counters.
    fn events() -> impl Strategy<Value = Vec<(u64, u8, u64)>> {
        prop::collection::vec((0u64..2_000, 0u8..4, 0u64..3_000), 1..300)
    }

    proptest! {
        /// The learned rate is never above the quota's rate and never below the minimum, whatever
        /// the server says and when (a quota below the minimum wins: the quota then governs alone).
        #[test]
        fn the_learned_rate_stays_between_the_minimum_and_the_quota(
            rate in 1u32..200,
            with_quota in any::<bool>(),
            min_rate in 0.01f64..5.0,
            decrease in 0.1f64..0.95,
            increase in 0.01f64..5.0,
            window in prop::sample::select(vec![0.0, 1.0, 10.0]),
            events in events(),
        ) {
            let quotas: Vec<Quota> = if with_quota {
                vec![Quota::per_second(rate).unwrap()]
            } else {
                Vec::new()
            };
            let cap = if with_quota { f64::from(rate) } else { f64::INFINITY };
            let adapt = Adapt { min_rate, decrease, increase, cap, window };
            let mut key = Key::default();
            let mut now = 1_000 * SECOND;
            for (gap, event, extra) in events {
                now += gap * MS;
                match event {
                    0 => { key.acquire(&quotas, &adapt, now); }
                    1 => key.throttle(&quotas, &adapt, now, extra * MS, extra * MS / 2),
                    2 => key.throttle(&quotas, &adapt, now, 0, extra * MS),
                    _ => {
                        let signal = Signal {
                            remaining: Some((extra + 1, (gap + 1) * MS)),
                            ..Signal::default()
                        };
                        key.observe(&quotas, &adapt, now, signal);
                    }
                }
                for later in [0, 10 * MS, SECOND, 30 * SECOND] {
                    if let Some(learned) = key.learned.rate(now + later, &adapt) {
                        prop_assert!(learned >= min_rate, "{learned} below {min_rate}");
                        prop_assert!(learned < cap, "{learned} above {cap}");
                    }
                    if let Some(gauge) = key.learned.gauge(now + later, &adapt) {
                        // A quota below the minimum wins: the quota is the hard bound.
                        prop_assert!(gauge >= min_rate.min(cap) && gauge <= cap);
                    }
                }
            }
        }

        /// Waiters leave in arrival order, and while a learned rate is in force, never two at once:
        /// each permit is at or after the one granted before it, strictly after under a rate.
        #[test]
        fn waiters_leave_in_arrival_order_at_the_keys_pace(
            rate in 1u32..100,
            burst in 1u32..20,
            window in prop::sample::select(vec![0.0, 1.0, 10.0]),
            events in events(),
        ) {
            let quotas = [Quota::new(rate, Duration::from_secs(1), burst).unwrap()];
            let adapt = Adapt { window, ..adapt(f64::from(rate)) };
            let mut key = Key::default();
            let mut now = 1_000 * SECOND;
            let mut last: Option<u64> = None;
            for (gap, event, extra) in events {
                now += gap * MS / 10;
                if event == 1 {
                    key.throttle(&quotas, &adapt, now, extra * MS, 0);
                    continue;
                }
                let paced = key.learned.rate(now, &adapt).is_some() || key.pause.until > now;
                if let Some(send) = key.acquire(&quotas, &adapt, now) {
                    prop_assert!(send >= key.pause.until.min(send));
                    if let Some(last) = last {
                        prop_assert!(send >= last, "{send} before {last}");
                        if paced && key.learned.rate(now, &adapt).is_some() {
                            prop_assert!(send > last, "two permits at {send}");
                        }
                    }
                    last = Some(send);
                }
            }
        }
    }
}
