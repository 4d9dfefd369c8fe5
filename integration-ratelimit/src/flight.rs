//! Calls of each key in flight in this process, and the slow start of a key that has never had an
//! answer.
//!
//! # Slow start
//!
//! A key's quota (or the server's limit, when there is no quota) says nothing about how many calls
//! may go before the first answer: 64 callers of a new key would all leave at once, and a server
//! with a burst of 10 answers 54 of them 429. As TCP's initial window, a key that has never had an
//! answer lets at most [`initial_window`](crate::RateLimitPolicy::with_initial_window) calls be in
//! flight (10 by default, TCP's choice; 0 turns it off); each success widens the window by one,
//! so it doubles per round of answers, like TCP's slow start. (The same setting starts the key's
//! probe in rate, in the shared state: see `gcra::Learned::probe`.) It ends:
//!
//! - on a throttle signal (a 429, a 503 with `Retry-After`, a server pause): the key's pause and its
//!   learned rate take over, and the callers waiting for the window go to them;
//! - or when it no longer binds: at a success, less than half the window is in use (demand is below
//!   it), so a key called one at a time leaves slow start at its first answer and pays nothing in
//!   steady state.
//!
//! A call waits for the window within its wait bound (`max_wait`, the deadline); past it, it goes
//! on to the quota rather than fail: the window is a courtesy to the server, not a limit of ours.
//! The window is per process, also with the Redis store: it only covers the instants before a key's
//! first answer, and sharing it would cost a round trip per call for that. With the Redis store each
//! replica takes its share of the window (divided by the expected replicas, as the fallback divides a
//! quota), so replicas starting together send about one window between them.
//!
//! # Memory
//!
//! At most [`MAX_KEYS`] keys are tracked; a key beyond that gets no slow start and no in-flight count
//! (its `RateLimit` remaining is then taken as the server says it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::key::RateLimitKey;

/// The most keys tracked for slow start and calls in flight.
pub(crate) const MAX_KEYS: usize = 4_096;

/// Window sizes past which slow start ends whatever the demand.
const MAX_WINDOW: usize = 1 << 16;

/// The per-key table.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    // foldhash, randomly seeded per process, rather than SipHash: looked up on every call (issue 19).
    table: Mutex<HashMap<RateLimitKey, Arc<Flight>, foldhash::fast::RandomState>>,
}

/// One key: its calls in flight, and its slow-start window while the key is in slow start.
#[derive(Debug)]
pub(crate) struct Flight {
    in_flight: AtomicUsize,
    /// `Some` while in slow start: the window's slots, and its size.
    window: Mutex<Option<Window>>,
}

#[derive(Debug)]
struct Window {
    slots: Arc<Semaphore>,
    size: usize,
}

/// How a call's answer ends its part of the slow start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A throttle signal: slow start ends.
    Throttled,
    /// A success: the window widens by one.
    Success,
    /// Anything else (an error, a 5xx): the slot is given back.
    Other,
}

impl Flights {
    /// The key's entry, created on first sight with a slow-start window of `initial` slots (none for
    /// zero). `None` when the table is full.
    pub(crate) fn get(&self, key: &RateLimitKey, initial: usize) -> Option<Arc<Flight>> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = table.get(key.as_str()) {
            return Some(flight.clone());
        }
        if table.len() >= MAX_KEYS {
            return None;
        }
        let window = (initial > 0).then(|| Window {
            slots: Arc::new(Semaphore::new(initial)),
            size: initial,
        });
        let flight = Arc::new(Flight {
            in_flight: AtomicUsize::new(0),
            window: Mutex::new(window),
        });
        table.insert(key.clone(), flight.clone());
        Some(flight)
    }
}

impl Flight {
    /// The slow-start slots to wait for, `None` when the key is not (or no longer) in slow start.
    pub(crate) fn slots(&self) -> Option<Arc<Semaphore>> {
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.as_ref().map(|window| window.slots.clone())
    }

    /// True while the key is in slow start.
    #[cfg(test)]
    fn is_starting(&self) -> bool {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Counts a call in flight until the guard drops.
    pub(crate) fn sent(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Calls of the key in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Applies an answer to the window (the caller's slot, if it held one, is already given back).
    /// Returns true when slow start ended with this answer.
    pub(crate) fn answered(&self, answer: Answer) -> bool {
        let mut guard = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(window) = guard.as_mut() else {
            return false;
        };
        let end = match answer {
            Answer::Throttled => true,
            Answer::Success => {
                window.size += 1;
                window.slots.add_permits(1);
                // Less than half the window in use: demand is below it, it no longer binds.
                window.slots.available_permits() * 2 > window.size || window.size >= MAX_WINDOW
            }
            Answer::Other => false,
        };
        if end {
            // Waiters see a closed semaphore and go on to the quota.
            window.slots.close();
            *guard = None;
        }
        end
    }
}

/// A call in flight, counted until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Flight>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_success_widens_the_window_until_it_no_longer_binds() {
        let flights = Flights::default();
        let key = RateLimitKey::from("k");
        let flight = flights.get(&key, 2).unwrap();
        let slots = flight.slots().unwrap();
        let first = slots.clone().try_acquire_owned().unwrap();
        let second = slots.clone().try_acquire_owned().unwrap();
        assert!(slots.clone().try_acquire_owned().is_err());
        // One answer with nobody waiting: its slot comes back and one more opens (3 wide, 2 free,
        // 1 in use): demand is below the window, which no longer binds.
        drop(first);
        assert!(flight.answered(Answer::Success));
        assert!(!flight.is_starting());
        assert!(slots.is_closed());
        drop(second);
        // A key seen again keeps its state: no new slow start.
        assert!(flights.get(&key, 2).unwrap().slots().is_none());
    }

    #[test]
    fn a_throttle_ends_slow_start_and_zero_turns_it_off() {
        let flights = Flights::default();
        let flight = flights.get(&RateLimitKey::from("a"), 10).unwrap();
        let _held: Vec<_> = (0..10)
            .map(|_| flight.slots().unwrap().try_acquire_owned().unwrap())
            .collect();
        assert!(!flight.answered(Answer::Other));
        assert!(flight.is_starting());
        assert!(flight.answered(Answer::Throttled));
        assert!(flight.slots().is_none());
        let off = flights.get(&RateLimitKey::from("b"), 0).unwrap();
        assert!(off.slots().is_none());
    }

    #[test]
    fn calls_in_flight_are_counted_until_their_guard_drops() {
        let flights = Flights::default();
        let key = RateLimitKey::from("k");
        let flight = flights.get(&key, 0).unwrap();
        let one = flight.sent();
        let two = flight.sent();
        assert_eq!(flight.in_flight(), 2);
        drop(one);
        assert_eq!(flight.in_flight(), 1);
        drop(two);
        assert_eq!(flights.get(&key, 0).unwrap().in_flight(), 0);
    }
}
