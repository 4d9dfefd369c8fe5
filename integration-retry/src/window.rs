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
    slot: Duration,
}

impl<const N: usize> SlidingCounts<N> {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            slots: [[0; N]; SLOTS],
            current: 0,
            started: None,
            slot: (window / SLOTS as u32).max(Duration::from_millis(1)),
        }
    }

    /// Moves the current slot forward to `now`, clearing every slot that left the window.
    pub(crate) fn advance(&mut self, now: Instant) {
        let Some(started) = self.started else {
            self.started = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(started);
        if elapsed < self.slot {
            return;
        }
        let steps = elapsed.as_nanos() / self.slot.as_nanos();
        for _ in 0..steps.min(SLOTS as u128) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = [0; N];
        }
        // Keep the slot grid aligned to the first use, so expiry is regular.
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.started = Some(started + self.slot.saturating_mul(steps));
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
}
