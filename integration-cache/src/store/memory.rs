//! The memory store: a `moka` cache bounded in bytes and entries.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use super::Lookup;
use crate::entry::Entry;
use crate::key::{EntryKey, UrlKey};

/// The bounds of a memory store.
///
/// ```
/// use integration_cache::MemoryConfig;
///
/// let config = MemoryConfig::new().with_max_bytes(1 << 20).with_max_entries(100);
/// assert_eq!(config.max_entries(), 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    max_bytes: u64,
    max_entries: u64,
}

impl MemoryConfig {
    /// Default bound on stored bytes: 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// Default bound on entries: 10 000.
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

    /// The defaults: 64 MiB, 10 000 entries.
    pub fn new() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }

    /// At most `bytes` of bodies and headers (at least 1).
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// At most `entries` entries (at least 1).
    #[must_use]
    pub fn with_max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The bound on bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The bound on entries.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct Stored {
    entry: Arc<Entry>,
    ttl: Duration,
}

/// Each entry lives for its own TTL (freshness plus stale windows), on moka's clock: it only frees
/// memory; which entry is fresh or stale is decided on the cache's (tokio's) clock.
struct PerEntry;

impl Expiry<EntryKey, Stored> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &EntryKey,
        value: &Stored,
        _at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &EntryKey,
        value: &Stored,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone)]
pub(crate) struct MemoryStore {
    cache: Arc<Cache<EntryKey, Stored>>,
    config: MemoryConfig,
}

impl MemoryStore {
    pub(crate) fn new(config: MemoryConfig) -> Self {
        // Both bounds through one weigher: every entry weighs at least `max_bytes / max_entries`,
        // so no more than `max_entries` fit in `max_bytes`.
        let floor = (config.max_bytes / config.max_entries).max(1);
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_key: &EntryKey, value: &Stored| {
                let weight = (value.entry.weight() as u64).max(floor);
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntry)
            // Invalidation of a URL reaches every partition of it (RFC 9111 4.4): a predicate
            // over the key, applied to reads at once and to the stored entries in the background.
            .support_invalidation_closures()
            .build();
        Self {
            cache: Arc::new(cache),
            config,
        }
    }

    pub(crate) fn get(&self, key: &EntryKey) -> Lookup {
        Lookup {
            entry: self.cache.get(key).map(|stored| stored.entry),
            generation: 0,
        }
    }

    pub(crate) fn put(&self, key: EntryKey, entry: Arc<Entry>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        self.cache.insert(key, Stored { entry, ttl });
    }

    pub(crate) fn invalidate(&self, url: UrlKey) {
        // Fails only when invalidation closures were not enabled, which `new` does.
        let _ = self
            .cache
            .invalidate_entries_if(move |key, _| key.url == url);
    }

    /// The bytes charged, once pending inserts and evictions are applied.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &other.cache)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};
    use http_cache_semantics::CachePolicy;

    use super::*;
    use crate::entry::{RequestView, ResponseView, Windows};
    use crate::key::HashKey;

    fn entry(body: usize) -> Arc<Entry> {
        let request = RequestView::new(
            &Method::GET,
            &"https://a.test/".parse().unwrap(),
            &HeaderMap::new(),
            &[],
        );
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        let response = ResponseView {
            status: StatusCode::OK,
            headers: &headers,
        };
        let now = SystemTime::UNIX_EPOCH;
        let policy = CachePolicy::new_options(&request, &response, now, Entry::options(true));
        let body = Bytes::from(vec![b'x'; body]);
        let head = (StatusCode::OK, headers.clone());
        Arc::new(Entry::new(head, policy, body, now, Windows::default(), 0))
    }

    #[test]
    fn the_store_is_bounded_in_entries_and_in_bytes() {
        let hash = HashKey::new(b"k");
        let key = |n: usize| {
            let url = hash.url_key("", &format!("https://a.test/{n}"));
            hash.entry_key(url, &Method::GET, None)
        };
        // Small entries: the entry bound binds.
        let store = MemoryStore::new(
            MemoryConfig::new()
                .with_max_bytes(1 << 20)
                .with_max_entries(4),
        );
        for n in 0..50 {
            store.put(key(n), entry(10), Duration::from_secs(60));
        }
        store.stored_bytes();
        assert!(
            store.cache.entry_count() <= 4,
            "{}",
            store.cache.entry_count()
        );
        // Large entries: the byte bound binds.
        let store = MemoryStore::new(
            MemoryConfig::new()
                .with_max_bytes(10_000)
                .with_max_entries(1_000),
        );
        for n in 0..50 {
            store.put(key(n), entry(2_000), Duration::from_secs(60));
        }
        assert!(store.stored_bytes() <= 10_000);
        assert!(store.cache.entry_count() <= 5);
    }
}
