use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::CacheConfig;
use crate::entry::Clock;
use crate::flight::Flights;
use crate::key::HashKey;
use crate::service::Cache;
use crate::store::CacheStore;

/// Caches the responses of the inner service per RFC 9111, in a [`CacheStore`].
///
/// # Clone
///
/// Clones (and every service they build) share the store, the in-flight misses (coalescing) and
/// the background refreshes.
///
/// ```
/// use integration_cache::{CacheConfig, CacheLayer, CacheStore, HashKey, MemoryConfig};
///
/// let layer = CacheLayer::new(CacheStore::memory(MemoryConfig::new()), CacheConfig::new())
///     // Replicas sharing a Redis store share this key; one process needs none.
///     .with_hash_key(HashKey::new(b"a secret shared by the replicas, 32+ bytes"))
///     // The stack adds this credential below the cache: its entries are partitioned by it.
///     .with_identity(b"account-42".to_vec())
///     .with_scope("github");
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: CacheStore,
    pub(crate) config: CacheConfig,
    pub(crate) key: HashKey,
    pub(crate) identity: Option<Vec<u8>>,
    pub(crate) scope: Arc<str>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) clock: Clock,
}

impl CacheLayer {
    /// A cache over `store` with `config`, keyed with this process' [`HashKey`].
    pub fn new(store: CacheStore, config: CacheConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                key: HashKey::process(),
                identity: None,
                scope: Arc::from(""),
                flights: Arc::default(),
                clock: Clock::new(),
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Shared)) -> Self {
        let shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            store: shared.store.clone(),
            config: shared.config.clone(),
            key: shared.key.clone(),
            identity: shared.identity.clone(),
            scope: shared.scope.clone(),
            flights: Arc::default(),
            clock: shared.clock,
        });
        let mut shared = shared;
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Keys entries with `key` (HMAC-SHA256): replicas sharing a Redis store must share it.
    #[must_use]
    pub fn with_hash_key(self, key: HashKey) -> Self {
        self.map(|shared| shared.key = key)
    }

    /// The credential identity of the stack below (its API key, token or account), for a cache
    /// placed above the layer that adds the credential: every entry goes to the partition of this
    /// identity (together with any credential the request carries itself). Only its keyed hash is
    /// kept.
    #[must_use]
    pub fn with_identity(self, identity: Vec<u8>) -> Self {
        self.map(|shared| shared.identity = Some(identity))
    }

    /// Names the entries' scope (the integration) when the request carries no
    /// [`IntegrationName`](integration_core::ext::IntegrationName): two scopes never share an entry.
    #[must_use]
    pub fn with_scope(self, scope: impl Into<Arc<str>>) -> Self {
        self.map(|shared| shared.scope = scope.into())
    }

    /// The store.
    pub fn store(&self) -> &CacheStore {
        &self.shared.store
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .field("scope", &self.shared.scope)
            .field(
                "identity",
                &self.shared.identity.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.shared.clone())
    }
}
