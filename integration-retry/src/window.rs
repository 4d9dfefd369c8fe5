//! A sliding window of counters on tokio's clock, cut into slots that expire one at a time.

use std::time::Duration;

use tokio::time::Instant;

/// Slots the window is cut into.
const SLOTS: usize = 10;

/// `N` counters summed over the last `window` (to a slot's precision: `window / 10`).
#[derive(Debug, Clone)]
pub(crate) struct SlidingCounts<const N: usize> {
    slots: [[u64; N]; SLOTS],
    current: usize,
    /// When the current slot started; `None` before first use.
    started: Option<Instant>,
    /// When the current slot ends (`started + slot`): a call inside it compares two instants
    /// instead of measuring the time since `started` (issue 19: ~50 instructions, twice a call).
    ends: Option<Instant>,
    slot: Duration,
}

impl<const N: usize> SlidingCounts<N> {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            slots: [[0; N]; SLOTS],
            current: 0,
            started: None,
            ends: None,
            slot: (window / SLOTS as u32).max(Duration::from_millis(1)),
        }
    }

    /// Moves the current slot forward to `now`, clearing every slot that left the window.
    pub(crate) fn advance(&mut self, now: Instant) {
        if self.ends.is_some_and(|ends| now < ends) {
            return;
        }
        let Some(started) = self.started else {
            self.start_at(now);
            return;
        };
        let elapsed = now.saturating_duration_since(started);
        if elapsed < self.slot {
            // `ends` could not be represented (a window near `Instant`'s limit): measured instead.
            return;
        }
        let steps = elapsed.as_nanos() / self.slot.as_nanos();
        for _ in 0..steps.min(SLOTS as u128) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = [0; N];
        }
        // Keep the slot grid aligned to the first use, so expiry is regular.
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.start_at(started + self.slot.saturating_mul(steps));
    }

    fn start_at(&mut self, started: Instant) {
        self.started = Some(started);
        self.ends = started.checked_add(self.slot);
    }

    /// Adds `n` to counter `index` in the current slot.
    pub(crate) fn add(&mut self, index: usize, n: u64) {
        let counter = &mut self.slots[self.current][index];
        *counter = counter.saturating_add(n);
    }

    /// Every counter summed over the window.
    pub(crate) fn totals(&self) -> [u64; N] {
        let mut totals = [0u64; N];
        for slot in &self.slots {
            for (total, count) in totals.iter_mut().zip(slot) {
                *total = total.saturating_add(*count);
            }
        }
        totals
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.slots = [[0; N]; SLOTS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_expire_slot_by_slot() {
        let mut counts = SlidingCounts::<1>::new(Duration::from_secs(10));
        counts.advance(Instant::now());
        counts.add(0, 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        counts.advance(Instant::now());
        counts.add(0, 3);
        assert_eq!(counts.totals(), [8]);
        tokio::time::advance(Duration::from_secs(6)).await;
        counts.advance(Instant::now());
        assert_eq!(counts.totals(), [3]);
        tokio::time::advance(Duration::from_secs(60)).await;
        counts.advance(Instant::now());
        assert_eq!(counts.totals(), [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_ends_exactly_one_slot_after_it_started() {
        // 10 slots of 1 s: a count added in the first slot leaves the window 10 slots later, not
        // a nanosecond before (the end of a slot is compared, no longer measured: issue 19).
        let mut counts = SlidingCounts::<1>::new(Duration::from_secs(10));
        let start = Instant::now();
        counts.advance(start);
        counts.add(0, 1);
        counts.advance(start + Duration::from_millis(999));
        counts.add(0, 2);
        counts.advance(start + Duration::from_secs(1));
        counts.add(0, 4);
        assert_eq!(counts.totals(), [7]);
        counts.advance(start + Duration::from_secs(10) - Duration::from_nanos(1));
        assert_eq!(counts.totals(), [7]);
        counts.advance(start + Duration::from_secs(10));
        assert_eq!(
            counts.totals(),
            [4],
            "the first slot (1 + 2) left the window"
        );
        counts.advance(start + Duration::from_secs(11));
        assert_eq!(counts.totals(), [0]);
    }
}
