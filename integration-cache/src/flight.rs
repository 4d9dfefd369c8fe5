//! Coalescing: concurrent misses for one key make one upstream call.
//!
//! The first caller of a key leads a flight; later callers follow it and wait for what it stored.
//! A leader that fails, stores nothing or is dropped (cancelled) ends its flight with nothing, and
//! its followers go upstream themselves: a follower never hangs on a leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::entry::Entry;
use crate::key::EntryKey;

#[derive(Clone)]
pub(crate) enum Flight {
    Pending,
    Done(Option<Arc<Entry>>),
}

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<EntryKey, watch::Receiver<Flight>>>,
}

pub(crate) enum Join {
    Leader(FlightGuard),
    Follower(watch::Receiver<Flight>),
}

impl Flights {
    /// Leads the flight of `key`, or follows the one in progress.
    pub(crate) fn join(self: &Arc<Self>, key: EntryKey) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(receiver) = map.get(&key) {
            return Join::Follower(receiver.clone());
        }
        let (sender, receiver) = watch::channel(Flight::Pending);
        map.insert(key, receiver);
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key,
            sender,
        })
    }

    /// Leads the flight of `key` if none is in progress (a background refresh: one at a time).
    pub(crate) fn try_lead(self: &Arc<Self>, key: EntryKey) -> Option<FlightGuard> {
        match self.join(key) {
            Join::Leader(guard) => Some(guard),
            Join::Follower(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Waits for the leader's entry; `None` when it stored none, failed or was cancelled.
pub(crate) async fn follow(mut receiver: watch::Receiver<Flight>) -> Option<Arc<Entry>> {
    let result = receiver
        .wait_for(|flight| matches!(flight, Flight::Done(_)))
        .await;
    match result.as_deref() {
        Ok(Flight::Done(entry)) => entry.clone(),
        _ => None,
    }
}

/// A flight's leadership: ends the flight when finished or dropped.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: EntryKey,
    sender: watch::Sender<Flight>,
}

impl FlightGuard {
    /// Hands `entry` to the followers and ends the flight.
    pub(crate) fn finish(self, entry: Option<Arc<Entry>>) {
        self.sender.send_replace(Flight::Done(entry));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        {
            let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
            {
                map.remove(&self.key);
            }
        }
        if matches!(*self.sender.borrow(), Flight::Pending) {
            self.sender.send_replace(Flight::Done(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::HashKey;

    fn key() -> EntryKey {
        let hash = HashKey::new(b"k");
        hash.entry_key(hash.url_key("", "https://a/"), &http::Method::GET, None)
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers_and_the_key() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(guard) = flights.join(key()) else {
            panic!("the first caller leads")
        };
        let Join::Follower(receiver) = flights.join(key()) else {
            panic!("the second follows")
        };
        assert!(flights.try_lead(key()).is_none(), "one flight at a time");
        let waiter = tokio::spawn(follow(receiver));
        drop(guard);
        assert!(waiter.await.unwrap().is_none());
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.join(key()), Join::Leader(_)));
    }
}
