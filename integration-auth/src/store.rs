//! Where tokens live between refreshes: in this process ([`MemoryTokenStore`]) or shared by every
//! replica (`RedisTokenStore`, feature `redis`).
//!
//! A store keeps, per key, the current access token (expiring with the token), the current refresh
//! token (when the grant rotates them) and a refresh lock with a TTL. The token cache uses it so:
//! read the store; if no usable token, take the lock, read again (another replica may have refreshed
//! while we waited), fetch, write the rotated refresh token first, then the access token, release.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_core::BoxError;
use secrecy::SecretString;
use tokio::time::Instant;

/// The boxed future of a store operation (stores are used on the refresh path only, never per request).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// An access token as a store keeps it.
#[derive(Clone)]
pub struct StoredToken {
    /// The token's id, shared by every replica that reads it (not a secret).
    pub id: u128,
    /// The token.
    pub access_token: SecretString,
    /// The token type the endpoint gave (`Bearer` when it gave none).
    pub token_type: String,
    /// How long the token may still be used before a refresh is due (its lifetime minus the cache's
    /// skew): on save, from now; on load, what remains. `None` when the endpoint gave no lifetime.
    /// Stores expire the token after it (Redis: `PX`).
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A held refresh lock; give it back with [`TokenStore::unlock`]. It expires by itself after its TTL,
/// so a replica that dies while refreshing does not block the others for longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLock {
    key: String,
    owner: u128,
}

impl StoreLock {
    /// A lock on `key` held by `owner` (a random value only the holder knows).
    pub fn new(key: impl Into<String>, owner: u128) -> Self {
        Self {
            key: key.into(),
            owner,
        }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder's token (compared on unlock, so a lock that expired and was taken by someone else is
    /// not released by its former holder).
    pub fn owner(&self) -> u128 {
        self.owner
    }
}

/// Storage for tokens, refresh tokens and refresh locks. Implement it for another backend; the
/// methods take the cache key the provider chose (no secret in it).
pub trait TokenStore: fmt::Debug + Send + Sync + 'static {
    /// The current access token under `key`, if any and not expired.
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>>;

    /// Replaces the access token under `key`; it expires after `token.expires_in`.
    fn save<'a>(&'a self, key: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()>;

    /// The current refresh token under `key`, if one was saved.
    fn load_refresh_token<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SecretString>>;

    /// Replaces the refresh token under `key` (the grant rotated it). Must be durable before it
    /// returns: the caller uses the new access token only afterwards.
    fn save_refresh_token<'a>(
        &'a self,
        key: &'a str,
        refresh_token: &'a SecretString,
    ) -> StoreFuture<'a, ()>;

    /// Takes the refresh lock for `key` for at most `ttl`; `None` when someone else holds it.
    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<StoreLock>>;

    /// Releases a lock if it is still ours.
    fn unlock(&self, lock: StoreLock) -> StoreFuture<'_, ()>;
}

#[derive(Default)]
struct Entries {
    tokens: HashMap<String, (StoredToken, Option<Instant>)>,
    refresh_tokens: HashMap<String, SecretString>,
    locks: HashMap<String, (u128, Instant)>,
}

/// Tokens in this process' memory: the default store, shared by every clone of a provider (and by
/// every provider given the same store).
///
/// # Clone
///
/// Clones share the entries.
///
/// ```
/// use integration_auth::{MemoryTokenStore, TokenStore};
/// use secrecy::SecretString;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryTokenStore::new();
/// store.save_refresh_token("crm", &SecretString::from("r2")).await.unwrap();
/// assert!(store.load_refresh_token("crm").await.unwrap().is_some());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryTokenStore {
    entries: Arc<Mutex<Entries>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain maps; the data is
        // still consistent per entry.
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut entries)
    }
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tokens, refresh) = self.with(|e| (e.tokens.len(), e.refresh_tokens.len()));
        f.debug_struct("MemoryTokenStore")
            .field("tokens", &tokens)
            .field("refresh_tokens", &refresh)
            .finish()
    }
}

impl TokenStore for MemoryTokenStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        let now = Instant::now();
        let found = self.with(|e| match e.tokens.get(key) {
            Some((token, Some(expires_at))) if *expires_at <= now => {
                let _ = token;
                e.tokens.remove(key);
                None
            }
            Some((token, expires_at)) => {
                let mut token = token.clone();
                token.expires_in = expires_at.map(|at| at.saturating_duration_since(now));
                Some(token)
            }
            None => None,
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(&'a self, key: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        let expires_at = token.expires_in.map(|ttl| Instant::now() + ttl);
        self.with(|e| e.tokens.insert(key.to_owned(), (token.clone(), expires_at)));
        Box::pin(std::future::ready(Ok(())))
    }

    fn load_refresh_token<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SecretString>> {
        let found = self.with(|e| e.refresh_tokens.get(key).cloned());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save_refresh_token<'a>(
        &'a self,
        key: &'a str,
        refresh_token: &'a SecretString,
    ) -> StoreFuture<'a, ()> {
        self.with(|e| {
            e.refresh_tokens
                .insert(key.to_owned(), refresh_token.clone())
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<StoreLock>> {
        let now = Instant::now();
        let owner = uuid::Uuid::new_v4().as_u128();
        let taken = self.with(|e| match e.locks.get(key) {
            Some((_, until)) if *until > now => None,
            _ => {
                e.locks.insert(key.to_owned(), (owner, now + ttl));
                Some(StoreLock::new(key, owner))
            }
        });
        Box::pin(std::future::ready(Ok(taken)))
    }

    fn unlock(&self, lock: StoreLock) -> StoreFuture<'_, ()> {
        self.with(|e| {
            if e.locks.get(lock.key()).map(|(owner, _)| *owner) == Some(lock.owner()) {
                e.locks.remove(lock.key());
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_tokens_expire_with_their_lifetime() {
        let store = MemoryTokenStore::new();
        let token = StoredToken {
            id: 7,
            access_token: SecretString::from("t"),
            token_type: "Bearer".into(),
            expires_in: Some(Duration::from_secs(10)),
        };
        store.save("k", &token).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        let loaded = store.load("k").await.unwrap().unwrap();
        assert_eq!(loaded.id, 7);
        assert_eq!(loaded.expires_in, Some(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(store.load("k").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_lock_is_exclusive_until_released_or_expired() {
        let store = MemoryTokenStore::new();
        let ttl = Duration::from_secs(5);
        let lock = store.try_lock("k", ttl).await.unwrap().unwrap();
        assert!(store.try_lock("k", ttl).await.unwrap().is_none());
        store.unlock(lock).await.unwrap();
        let _held = store.try_lock("k", ttl).await.unwrap().unwrap();
        tokio::time::advance(ttl).await;
        assert!(store.try_lock("k", ttl).await.unwrap().is_some());
    }
}
