use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::{Acquire, Decision, Observation, RateLimitStore, StoreFuture};
use crate::gcra::{self, Adapt, Bounds, Learned, Pause, Signal};
use crate::key::RateLimitKey;
use crate::policy::{Quota, RateLimitPolicy};

const SHARDS: usize = 32;

/// One shard's keys. foldhash, seeded at random per process (keys may come from requests, so a
/// fixed seed could be flooded), rather than SipHash: two hashes a call, the shard's and the map's,
/// cost ~300 instructions with SipHash (issue 19).
type Shard = HashMap<RateLimitKey, Entry, foldhash::fast::RandomState>;

/// Keys and their GCRA state in this process: sharded maps behind short `std` mutexes (never held across
/// an `.await`: every decision is synchronous), bounded in size.
///
/// # Memory
///
/// At most [`max_keys`](Self::with_max_keys) keys (default 100,000). A key whose permits have all
/// been earned back and that has no server pause in force is evicted first when a shard is full
/// (it then starts over as a new key, its first second at the quota's pace: eviction only makes a
/// key stricter). If every key of a full shard is busy, the one closest to idle is dropped: that key may briefly get more than its quota, which is the price
/// of a bound on memory.
///
/// # Clone
///
/// Clones share the same keys.
///
/// ```
/// use std::time::Duration;
/// use integration_ratelimit::{MemoryStore, Quota, RateLimitKey};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let store = MemoryStore::new().with_max_keys(10_000);
/// let quota = Quota::per_second(2).unwrap();
/// let key = RateLimitKey::from("github");
/// // A new key's burst is empty: one permit now, the next in half a second.
/// assert!(store.try_acquire(&key, &[quota]).is_ok());
/// assert_eq!(store.try_acquire(&key, &[quota]), Err(Duration::from_millis(500)));
/// // Idle for a second, it has built up its burst of 2.
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert!(store.try_acquire(&key, &[quota]).is_ok());
/// assert!(store.try_acquire(&key, &[quota]).is_ok());
/// // The burst is spent: the next permit is free in half a second.
/// assert_eq!(store.try_acquire(&key, &[quota]), Err(Duration::from_millis(500)));
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    hasher: foldhash::fast::RandomState,
    max_keys_per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Entry {
    tats: Vec<u64>,
    pause: Pause,
    learned: Learned,
}

impl Entry {
    /// The instant after which the entry carries no information.
    fn busy_until(&self) -> u64 {
        self.tats
            .iter()
            .copied()
            .fold(self.pause.until, u64::max)
            .max(self.learned.busy_until())
    }
}

impl MemoryStore {
    /// The default bound on keys.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// An empty store holding at most [`DEFAULT_MAX_KEYS`](Self::DEFAULT_MAX_KEYS) keys.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_MAX_KEYS)
    }

    /// The same store bound to at most `max_keys` keys (at least one per shard). Call it before use:
    /// it returns a fresh, empty store.
    #[must_use]
    pub fn with_max_keys(self, max_keys: usize) -> Self {
        Self::with_capacity(max_keys)
    }

    fn with_capacity(max_keys: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                hasher: foldhash::fast::RandomState::default(),
                max_keys_per_shard: max_keys.div_ceil(SHARDS).max(1),
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            }),
        }
    }

    /// The most keys this store holds.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys_per_shard * SHARDS
    }

    /// Keys currently held (idle ones included until evicted).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).len())
            .sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a permit of every quota of `key` now, or says how long until one is free. Server pauses are
    /// obeyed (their remaining time is the error).
    ///
    /// # Errors
    ///
    /// The time until a permit would be free, when none is free now.
    pub fn try_acquire(&self, key: &RateLimitKey, quotas: &[Quota]) -> Result<(), Duration> {
        let bounds = Bounds {
            max_wait: 0,
            max_server_pause: u64::MAX,
        };
        match self.decide(key, quotas, None, bounds) {
            Decision::Granted { .. } => Ok(()),
            Decision::Denied { retry_after, .. } => Err(retry_after),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.inner.epoch))
    }

    /// Decides one acquisition of `key` now; with `adapt`, under the key's learned rate and the
    /// server's pace. Returns the decision and the learned rate in force, if any.
    pub(crate) fn decide(
        &self,
        key: &RateLimitKey,
        quotas: &[Quota],
        adapt: Option<&Adapt>,
        bounds: Bounds,
    ) -> Decision {
        self.decide_learning(key, quotas, adapt, bounds).0
    }

    pub(crate) fn decide_learning(
        &self,
        key: &RateLimitKey,
        quotas: &[Quota],
        adapt: Option<&Adapt>,
        bounds: Bounds,
    ) -> (Decision, Option<f64>) {
        let now = self.now();
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(key.as_str()) {
            let decision = gcra::decide(
                &mut entry.tats,
                entry.pause,
                &mut entry.learned,
                quotas,
                adapt,
                now,
                bounds,
            );
            let rate = adapt.and_then(|adapt| entry.learned.gauge(now, adapt));
            return (decision, rate);
        }
        let mut entry = Entry::default();
        let decision = gcra::decide(
            &mut entry.tats,
            entry.pause,
            &mut entry.learned,
            quotas,
            adapt,
            now,
            bounds,
        );
        if matches!(decision, Decision::Granted { .. }) {
            self.insert(&mut shard, key.clone(), entry, now);
        }
        (decision, None)
    }

    /// Applies a response's signal to `key` (see `gcra::observe`); returns the learned rate after it.
    pub(crate) fn apply(
        &self,
        key: &RateLimitKey,
        policy: &RateLimitPolicy,
        signal: Signal,
    ) -> Option<f64> {
        let now = self.now();
        let adapt = Adapt::of(policy);
        let mut shard = self.shard(key);
        let quotas = policy.quotas();
        if let Some(entry) = shard.get_mut(key.as_str()) {
            gcra::observe(
                &mut entry.tats,
                &mut entry.pause,
                &mut entry.learned,
                quotas,
                adapt.as_ref(),
                now,
                signal,
            );
            return adapt.and_then(|adapt| entry.learned.gauge(now, &adapt));
        }
        let mut entry = Entry::default();
        gcra::observe(
            &mut entry.tats,
            &mut entry.pause,
            &mut entry.learned,
            quotas,
            adapt.as_ref(),
            now,
            signal,
        );
        let rate = adapt.and_then(|adapt| entry.learned.gauge(now, &adapt));
        if entry.busy_until() > now {
            self.insert(&mut shard, key.clone(), entry, now);
        }
        rate
    }

    /// Pauses `key` for `pause` (extending, never shortening, a pause in force), without emptying
    /// its burst or touching its learned rate: a pause another replica reported.
    pub(crate) fn apply_pause(
        &self,
        key: &RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) {
        let now = self.now();
        let until = now.saturating_add(nanos(pause));
        let mut shard = self.shard(key);
        match shard.get_mut(key.as_str()) {
            Some(entry) => {
                if until > entry.pause.until {
                    entry.pause = Pause { until, status };
                }
            }
            None => {
                let entry = Entry {
                    pause: Pause { until, status },
                    ..Entry::default()
                };
                self.insert(&mut shard, key.clone(), entry, now);
            }
        }
    }

    /// The server pause in force for `key`, if any: time left and the status that started it.
    pub(crate) fn pause_left(&self, key: &RateLimitKey) -> Option<(Duration, Option<StatusCode>)> {
        let now = self.now();
        let shard = self.shard(key);
        let pause = shard.get(key.as_str())?.pause;
        (pause.until > now).then(|| (Duration::from_nanos(pause.until - now), pause.status))
    }

    /// Raises the TAT of each of `quotas` for `key` to at least `floor(quota)` (nanoseconds on this
    /// store's clock, see [`now`](Self::now)); never lowers one. The Redis store seeds its fallback so:
    /// the fallback never starts with a burst allowance nobody knows to be free.
    #[cfg(feature = "redis")]
    pub(crate) fn raise(
        &self,
        key: &RateLimitKey,
        quotas: &[Quota],
        floor: impl Fn(&Quota) -> u64,
    ) {
        let now = self.now();
        let raise = |tats: &mut Vec<u64>| {
            tats.resize(quotas.len(), 0);
            for (quota, tat) in quotas.iter().zip(tats.iter_mut()) {
                *tat = (*tat).max(floor(quota));
            }
        };
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(key.as_str()) {
            raise(&mut entry.tats);
            return;
        }
        let mut entry = Entry::default();
        raise(&mut entry.tats);
        if entry.busy_until() > now {
            self.insert(&mut shard, key.clone(), entry, now);
        }
    }

    /// The earliest instant (on this store's clock) at which `key` has a permit of every one of
    /// `quotas`, server pauses aside; `None` for a key this store does not hold. Used by the Redis
    /// store to seed a key back into Redis.
    #[cfg(feature = "redis")]
    pub(crate) fn next_permit(&self, key: &RateLimitKey, quotas: &[Quota]) -> Option<u64> {
        let shard = self.shard(key);
        let entry = shard.get(key.as_str())?;
        Some(
            quotas
                .iter()
                .zip(entry.tats.iter())
                .map(|(quota, &tat)| tat.saturating_sub(quota.tolerance_nanos()))
                .fold(0, u64::max),
        )
    }

    fn shard(&self, key: &RateLimitKey) -> MutexGuard<'_, Shard> {
        let index = self.inner.hasher.hash_one(key.as_str()) as usize % SHARDS;
        lock(&self.inner.shards[index])
    }

    fn insert(&self, shard: &mut Shard, key: RateLimitKey, entry: Entry, now: u64) {
        if shard.len() >= self.inner.max_keys_per_shard {
            shard.retain(|_, entry| entry.busy_until() > now);
        }
        if shard.len() >= self.inner.max_keys_per_shard {
            let closest_to_idle = shard
                .iter()
                .min_by_key(|(_, entry)| entry.busy_until())
                .map(|(key, _)| key.clone());
            if let Some(victim) = closest_to_idle {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard cannot leave an entry half-written (every update is a plain store),
    // so a poisoned shard is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

impl RateLimitStore for MemoryStore {
    fn acquire(&self, acquire: Acquire) -> StoreFuture<Decision> {
        let bounds = Bounds {
            max_wait: nanos(acquire.max_wait),
            max_server_pause: nanos(acquire.policy.max_server_pause()),
        };
        let adapt = Adapt::of(&acquire.policy);
        let decision = self.decide(
            &acquire.key,
            acquire.policy.quotas(),
            adapt.as_ref(),
            bounds,
        );
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn pause(
        &self,
        key: RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) -> StoreFuture<()> {
        self.apply_pause(&key, pause, status);
        Box::pin(std::future::ready(Ok(())))
    }

    fn observe(&self, observation: Observation) -> StoreFuture<()> {
        self.apply(
            &observation.key,
            &observation.policy,
            Signal::of(&observation),
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_evicted_first_and_memory_stays_bounded() {
        let store = MemoryStore::new().with_max_keys(SHARDS * 4);
        let quota = Quota::per_second(1).unwrap();
        for i in 0..10_000 {
            let _ = store.try_acquire(&RateLimitKey::from(format!("tenant-{i}")), &[quota]);
        }
        assert!(store.len() <= store.max_keys(), "{} keys", store.len());
        // One second later every key is idle; new keys evict them and the count stays bounded.
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..1_000 {
            let _ = store.try_acquire(&RateLimitKey::from(format!("other-{i}")), &[quota]);
        }
        assert!(store.len() <= store.max_keys());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_key_survives_a_flood_of_idle_ones() {
        let store = MemoryStore::new().with_max_keys(SHARDS * 8);
        let slow = Quota::new(1, Duration::from_secs(3600), 1).unwrap();
        let fast = Quota::new(1000, Duration::from_secs(1), 1).unwrap();
        let busy = RateLimitKey::from("busy");
        store.try_acquire(&busy, &[slow]).unwrap();
        for i in 0..5_000 {
            tokio::time::advance(Duration::from_millis(2)).await;
            let _ = store.try_acquire(&RateLimitKey::from(format!("idle-{i}")), &[fast]);
        }
        // The busy key kept its state: still no permit for about an hour.
        assert!(store.try_acquire(&busy, &[slow]).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_only_ever_extends() {
        let store = MemoryStore::new();
        let key = RateLimitKey::from("k");
        store.apply_pause(&key, Duration::from_secs(10), None);
        store.apply_pause(&key, Duration::from_secs(2), None);
        assert_eq!(store.try_acquire(&key, &[]), Err(Duration::from_secs(10)));
    }
}
