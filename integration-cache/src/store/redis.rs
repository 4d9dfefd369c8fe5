//! The Redis store: entries shared by every replica, through `SharedRedis` (feature `redis`).
//!
//! Keys, for an entry and for its URL's generation, share one hash tag (the URL's keyed hash), so a
//! lookup is one `MGET` of both, in one round trip, on one Redis Cluster slot:
//!
//! ```text
//! {prefix}:{<url hash>}:<method and partition hash>   the entry (metadata, then the body)
//! {prefix}:{<url hash>}:g                             the URL's generation (INCR on invalidation)
//! ```
//!
//! An entry records the generation it was looked up under; once an unsafe method bumped the
//! generation, every older entry of the URL, in every partition, is refused on read. The generation
//! outlives every entry of its URL (its TTL is the longest entry TTL plus an hour), so it never
//! expires under an entry it invalidated.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use integration_core::redis::SharedRedis;

use super::Lookup;
use crate::entry::Entry;
use crate::key::{EntryKey, UrlKey, hex};

/// The settings of a Redis store.
///
/// ```
/// use std::time::Duration;
/// use integration_cache::RedisConfig;
///
/// let config = RedisConfig::new("myapp:cache").with_max_entry_bytes(256 * 1024);
/// assert_eq!(config.prefix(), "myapp:cache");
/// assert_eq!(config.max_ttl(), Duration::from_secs(24 * 3600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    prefix: String,
    max_entry_bytes: usize,
    max_ttl: Duration,
}

impl RedisConfig {
    /// Default cap on one stored entry (body and metadata): 512 KiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: usize = 512 * 1024;
    /// Default longest TTL of an entry: 1 day.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

    /// Keys under `prefix`; entries up to 512 KiB, kept at most a day.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            max_ttl: Self::DEFAULT_MAX_TTL,
        }
    }

    /// Entries larger than `bytes` are not stored.
    #[must_use]
    pub fn with_max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// No entry is kept longer than `ttl` (at least 1 s).
    #[must_use]
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cap on one entry.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// The longest TTL of an entry.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    fn entry_key(&self, key: &EntryKey) -> String {
        format!(
            "{}:{{{}}}:{}",
            self.prefix,
            hex(&key.url.0),
            hex(&key.variant)
        )
    }

    fn generation_key(&self, url: &UrlKey) -> String {
        format!("{}:{{{}}}:g", self.prefix, hex(&url.0))
    }
}

#[derive(Clone)]
pub(crate) struct RedisStore {
    redis: SharedRedis,
    config: Arc<RedisConfig>,
}

impl RedisStore {
    pub(crate) fn new(redis: SharedRedis, config: RedisConfig) -> Self {
        Self {
            redis,
            config: Arc::new(config),
        }
    }

    /// One round trip: the entry and its URL's generation. Redis unavailable (or an answer that is
    /// not an entry): a miss.
    pub(crate) async fn get(&self, key: &EntryKey) -> Lookup {
        let entry_key = self.config.entry_key(key);
        let generation_key = self.config.generation_key(&key.url);
        let answer = self
            .redis
            .run(|mut connection| async move {
                ::redis::cmd("MGET")
                    .arg(&entry_key)
                    .arg(&generation_key)
                    .query_async::<(Option<Vec<u8>>, Option<u64>)>(&mut connection)
                    .await
            })
            .await;
        let Ok((bytes, generation)) = answer else {
            return Lookup::default();
        };
        let generation = generation.unwrap_or(0);
        let entry = bytes
            .and_then(Entry::decode)
            .filter(|entry| entry.generation == generation)
            .map(Arc::new);
        Lookup { entry, generation }
    }

    /// Stores in the background (bounded by the command timeout): a miss never waits for Redis.
    pub(crate) fn put(&self, key: EntryKey, entry: Arc<Entry>, ttl: Duration) {
        let ttl = ttl.min(self.config.max_ttl);
        let Some(bytes) = entry.encode() else { return };
        if bytes.len() > self.config.max_entry_bytes || ttl.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let entry_key = self.config.entry_key(&key);
        let redis = self.redis.clone();
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        runtime.spawn(async move {
            let _ = redis
                .run(|mut connection| async move {
                    ::redis::cmd("SET")
                        .arg(&entry_key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(millis)
                        .query_async::<()>(&mut connection)
                        .await
                })
                .await;
        });
    }

    /// Bumps the URL's generation: every entry of it stored before is refused from now on.
    pub(crate) async fn invalidate(&self, url: UrlKey) {
        let generation_key = self.config.generation_key(&url);
        let keep = self.config.max_ttl + Duration::from_secs(3600);
        let millis = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .redis
            .run(|mut connection| async move {
                ::redis::pipe()
                    .atomic()
                    .cmd("INCR")
                    .arg(&generation_key)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&generation_key)
                    .arg(millis)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
    }

    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.redis)
            .field("config", &self.config)
            .finish()
    }
}
