//! Where entries live: [`CacheStore::memory`] for one process, `CacheStore::redis` (feature
//! `redis`) for every replica.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::entry::Entry;
use crate::key::{EntryKey, UrlKey};

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryConfig;
#[cfg(feature = "redis")]
pub use redis::RedisConfig;

/// What a lookup found: the entry (if any, and not invalidated), and the generation of its URL,
/// which an entry stored after this lookup carries (the Redis store refuses an entry whose URL was
/// invalidated since).
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    pub(crate) entry: Option<Arc<Entry>>,
    pub(crate) generation: u64,
}

/// The store of a [`CacheLayer`](crate::CacheLayer).
///
/// # Clone
///
/// Clones share the entries: give one store to every layer that should share a cache (the facade
/// gives one per integration).
#[derive(Clone)]
pub struct CacheStore {
    inner: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(memory::MemoryStore),
    #[cfg(feature = "redis")]
    Redis(redis::RedisStore),
}

impl CacheStore {
    /// A store in this process' memory, bounded in bytes and entries.
    ///
    /// ```
    /// use integration_cache::{CacheStore, MemoryConfig};
    ///
    /// let store = CacheStore::memory(MemoryConfig::new().with_max_bytes(16 << 20).with_max_entries(5_000));
    /// assert_eq!(store.stored_bytes(), Some(0));
    /// ```
    pub fn memory(config: MemoryConfig) -> Self {
        Self {
            inner: Backend::Memory(memory::MemoryStore::new(config)),
        }
    }

    /// A store in Redis, shared by every replica that uses the same Redis, `prefix` and
    /// [`HashKey`](crate::HashKey), through `redis` (bounded calls; while Redis is unavailable every
    /// lookup is a miss and nothing is stored, at no cost to the call).
    ///
    /// ```no_run
    /// use integration_cache::{CacheStore, RedisConfig};
    /// use integration_core::redis::{SharedRedis, SharedRedisConfig};
    ///
    /// let redis = SharedRedis::open("redis://127.0.0.1:6379", SharedRedisConfig::new())?;
    /// let store = CacheStore::redis(redis, RedisConfig::new("myapp:cache"));
    /// # let _ = store;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(redis: integration_core::redis::SharedRedis, config: RedisConfig) -> Self {
        Self {
            inner: Backend::Redis(redis::RedisStore::new(redis, config)),
        }
    }

    /// The bytes the entries are charged for (memory store; `None` for Redis, which Redis reports).
    pub fn stored_bytes(&self) -> Option<u64> {
        match &self.inner {
            Backend::Memory(store) => Some(store.stored_bytes()),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// Whether two handles share the same entries.
    pub fn ptr_eq(&self, other: &CacheStore) -> bool {
        match (&self.inner, &other.inner) {
            (Backend::Memory(a), Backend::Memory(b)) => a.ptr_eq(b),
            #[cfg(feature = "redis")]
            (Backend::Redis(a), Backend::Redis(b)) => a.ptr_eq(b),
            #[cfg(feature = "redis")]
            _ => false,
        }
    }

    pub(crate) async fn get(&self, key: &EntryKey) -> Lookup {
        match &self.inner {
            Backend::Memory(store) => store.get(key),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.get(key).await,
        }
    }

    /// Stores `entry` for `ttl`. The memory store stores at once; the Redis store in the
    /// background (a miss never waits for Redis).
    pub(crate) fn put(&self, key: EntryKey, entry: Arc<Entry>, ttl: Duration) {
        match &self.inner {
            Backend::Memory(store) => store.put(key, entry, ttl),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.put(key, entry, ttl),
        }
    }

    /// Invalidates every entry of `url` (RFC 9111 4.4), in every partition.
    pub(crate) async fn invalidate(&self, url: UrlKey) {
        match &self.inner {
            Backend::Memory(store) => store.invalidate(url),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.invalidate(url).await,
        }
    }
}

impl fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Backend::Memory(store) => f.debug_tuple("CacheStore").field(store).finish(),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => f.debug_tuple("CacheStore").field(store).finish(),
        }
    }
}
