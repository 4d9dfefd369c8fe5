//! The token cache: tokens reused until shortly before they expire, one refresh for any number of
//! concurrent callers, shared through a [`TokenStore`] across replicas.
//!
//! # How a lookup goes
//!
//! * **Fast path**: the cached token is loaded with one atomic read (`ArcSwap`); while it is fresh the
//!   lookup is ready at once, with no lock, no await and no allocation.
//! * **Refresh** (no token, or past its refresh point): the caller takes the single-flight gate, a
//!   `tokio::sync::Mutex<()>`. It is the one lock held across the token request, on purpose: it *is*
//!   the single flight. Every other caller that needs a token queues on it instead of sending its own
//!   request, and when it gets the gate finds the fresh token in the cache and returns at once. No
//!   other lock is held across an await: the cached value, the rejected id and the cool-down sit
//!   behind short `std::sync` critical sections or the `ArcSwap`.
//! * Holding the gate, the cache reads the store (another replica may have a token), takes the
//!   store's refresh lock (with a TTL), reads again, and only then asks the token endpoint. The new
//!   token is saved in the store before it is used; a rotated refresh token was saved before that.
//! * A failed refresh starts a short cool-down (default 1 s) during which lookups fail at once with
//!   the same error: a broken token endpoint is not hammered by every request. A transient error
//!   carries what is left of the cool-down as its `retry_after`, so the retry layer tries the call
//!   again once a refresh may be made (the request was never sent, so any method may).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use integration_core::error::AuthFailed;
use integration_core::ext::IntegrationName;
use integration_core::names;
use secrecy::SecretString;
use tokio::time::Instant;

use crate::credential::{AuthContext, Credential, CredentialFuture, CredentialProvider};
use crate::store::{MemoryTokenStore, StoreLock, StoredToken, TokenStore};

/// A token as a [`TokenSource`] fetched it.
#[derive(Clone)]
pub struct FetchedToken {
    /// The access token.
    pub access_token: SecretString,
    /// The token type (`Bearer` when the endpoint gave none).
    pub token_type: String,
    /// The lifetime the endpoint gave (`expires_in`), if any.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedToken")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The future of a token fetch.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<FetchedToken, AuthFailed>> + Send + 'a>>;

/// Fetches a new access token from wherever tokens come from (a token endpoint, a signer).
///
/// The cache calls it with the single-flight gate and the store's refresh lock held, so at most one
/// fetch per key runs at a time across replicas. A source that rotates refresh tokens saves the new
/// one in `store` under `key` before it returns.
pub trait TokenSource: fmt::Debug + Send + Sync + 'static {
    /// Fetches a token.
    ///
    /// # Errors
    ///
    /// [`AuthFailed`]: permanent with the provider's code for `invalid_grant` / `invalid_client`,
    /// transient otherwise. The description must hold no secret.
    fn fetch<'a>(&'a self, store: &'a dyn TokenStore, key: &'a str) -> FetchFuture<'a>;
}

/// Where the jitter of the refresh skew comes from: a function returning a number in `[0, 1)`.
///
/// Random by default; tests inject a constant.
#[derive(Clone)]
pub struct Jitter(Arc<dyn Fn() -> f64 + Send + Sync>);

impl Jitter {
    /// Uniformly random (`fastrand`).
    pub fn random() -> Self {
        Self(Arc::new(fastrand::f64))
    }

    /// No jitter: the skew is exactly the configured one.
    pub fn none() -> Self {
        Self(Arc::new(|| 0.0))
    }

    /// Jitter from a function; values are clamped to `[0, 1]`.
    pub fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn sample(&self) -> f64 {
        let value = (self.0)();
        if value.is_nan() {
            0.0
        } else {
            value.clamp(0.0, 1.0)
        }
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Jitter")
    }
}

/// How a [`TokenCache`] behaves. Plain values with defaults; `with_*` to change them.
///
/// ```
/// use integration_auth::TokenCacheConfig;
/// use std::time::Duration;
///
/// let config = TokenCacheConfig::new()
///     .with_skew(Duration::from_secs(30))
///     .with_background_refresh(true);
/// assert_eq!(config.skew(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct TokenCacheConfig {
    skew: Duration,
    jitter: Jitter,
    cooldown: Duration,
    background_refresh: bool,
    lock_ttl: Duration,
    lock_poll: Duration,
    integration: Option<IntegrationName>,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(60),
            jitter: Jitter::random(),
            cooldown: Duration::from_secs(1),
            background_refresh: false,
            lock_ttl: Duration::from_secs(30),
            lock_poll: Duration::from_millis(50),
            integration: None,
        }
    }
}

impl TokenCacheConfig {
    /// The defaults: skew 60 s plus up to a quarter of it in jitter, cool-down 1 s, no background
    /// refresh, a 30 s store lock polled every 50 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token is refreshed this long before it expires, plus a jitter of up to a quarter of it (so
    /// replicas and caches do not all refresh at the same instant). Capped at half the token's
    /// lifetime.
    #[must_use]
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Where the jitter comes from.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long lookups fail at once after a failed refresh (default 1 s).
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Refresh in the background, half a skew before the refresh point, so callers never wait for a
    /// token once the first one was fetched.
    #[must_use]
    pub fn with_background_refresh(mut self, enabled: bool) -> Self {
        self.background_refresh = enabled;
        self
    }

    /// The TTL of the store's refresh lock (default 30 s): a replica that dies mid-refresh blocks the
    /// others at most this long.
    #[must_use]
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How often a replica waiting for another's refresh looks at the store again (default 50 ms).
    #[must_use]
    pub fn with_lock_poll(mut self, every: Duration) -> Self {
        self.lock_poll = every;
        self
    }

    /// The integration named in metrics (default: the one on the request).
    #[must_use]
    pub fn with_integration(mut self, name: impl Into<IntegrationName>) -> Self {
        self.integration = Some(name.into());
        self
    }

    /// The configured skew.
    pub fn skew(&self) -> Duration {
        self.skew
    }

    /// The configured cool-down.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    fn margin(&self, lifetime: Duration) -> Duration {
        let jittered = self.skew + self.skew.mul_f64(self.jitter.sample() / 4.0);
        jittered.min(lifetime / 2)
    }
}

struct Cached {
    credential: Credential,
    refresh_at: Option<Instant>,
}

impl Cached {
    fn is_fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

/// A single-flight cache of access tokens over a [`TokenSource`] and a [`TokenStore`].
///
/// The OAuth and JWT providers are built on it; use it directly to cache tokens from a scheme of your
/// own. It is itself a [`CredentialProvider`].
///
/// ```
/// use integration_auth::{AuthContext, FetchFuture, FetchedToken, TokenCache, TokenSource, TokenStore};
/// use secrecy::SecretString;
/// use std::time::Duration;
///
/// /// A vendor's own session login, cached like any token.
/// #[derive(Debug)]
/// struct SessionLogin;
///
/// impl TokenSource for SessionLogin {
///     fn fetch<'a>(&'a self, _store: &'a dyn TokenStore, _key: &'a str) -> FetchFuture<'a> {
///         Box::pin(async {
///             Ok(FetchedToken {
///                 access_token: SecretString::from("session-abc"),
///                 token_type: "Bearer".into(),
///                 expires_in: Some(Duration::from_secs(900)),
///             })
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = TokenCache::new(SessionLogin, "vendor:session");
/// let first = cache.get(&AuthContext::detached()).await.unwrap();
/// let second = cache.get(&AuthContext::detached()).await.unwrap();
/// assert!(first.same_as(&second), "fetched once, then cached");
/// # }
/// ```
///
/// # Clone
///
/// Clones share one cache (one token, one gate, one cool-down).
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    source: Box<dyn TokenSource>,
    store: Arc<dyn TokenStore>,
    key: String,
    config: TokenCacheConfig,
    current: ArcSwapOption<Cached>,
    rejected: Mutex<Option<u128>>,
    failure: Mutex<Option<(Instant, AuthFailed)>>,
    gate: tokio::sync::Mutex<()>,
    background: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.background).take() {
            handle.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data replaced whole; a panic elsewhere leaves them consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TokenCache {
    /// A cache over `source`, with its own [`MemoryTokenStore`] and the default config. `key` names the
    /// token in the store (no secret in it: e.g. `"github:client_credentials:my-client"`).
    pub fn new(source: impl TokenSource, key: impl Into<String>) -> Self {
        Self::with_config(
            source,
            key,
            Arc::new(MemoryTokenStore::new()),
            TokenCacheConfig::default(),
        )
    }

    /// A cache over `source` sharing `store` (Redis: every replica), with `config`.
    pub fn with_config(
        source: impl TokenSource,
        key: impl Into<String>,
        store: Arc<dyn TokenStore>,
        config: TokenCacheConfig,
    ) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                source: Box::new(source),
                store,
                key: key.into(),
                config,
                current: ArcSwapOption::empty(),
                rejected: Mutex::new(None),
                failure: Mutex::new(None),
                gate: tokio::sync::Mutex::new(()),
                background: Mutex::new(None),
            }),
        }
    }

    /// The store key of this cache's token.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The config.
    pub fn config(&self) -> &TokenCacheConfig {
        &self.inner.config
    }

    /// The current credential: at once when the cached token is fresh, else after one shared refresh.
    pub fn get(&self, ctx: &AuthContext<'_>) -> CredentialFuture {
        let now = Instant::now();
        if let Some(cached) = self.inner.current.load().as_ref()
            && cached.is_fresh(now)
        {
            return CredentialFuture::ready(Ok(cached.credential.clone()));
        }
        if let Some(error) = self.inner.cooling_down(now) {
            return CredentialFuture::ready(Err(Box::new(error)));
        }
        let inner = Arc::clone(&self.inner);
        let integration = self
            .inner
            .config
            .integration
            .clone()
            .or_else(|| ctx.integration().cloned());
        CredentialFuture::new(async move {
            inner
                .refresh(integration, None)
                .await
                .map_err(|error| Box::new(error) as integration_core::BoxError)
        })
    }

    /// Forgets `rejected` if it is still the cached token (compare and invalidate: a 401 for an older
    /// token leaves a newer one alone, and many 401s for one token cause one refresh). A token in the
    /// store with the same id is not used again either.
    pub fn invalidate(&self, rejected: &Credential) {
        let current = self.inner.current.load();
        if let Some(cached) = current.as_ref()
            && cached.credential.same_as(rejected)
        {
            *lock(&self.inner.rejected) = Some(rejected.id());
            let _ = self.inner.current.compare_and_swap(&current, None);
        }
    }
}

impl CredentialProvider for TokenCache {
    fn credential(&self, ctx: &AuthContext<'_>) -> CredentialFuture {
        self.get(ctx)
    }

    fn invalidate(&self, rejected: &Credential) {
        TokenCache::invalidate(self, rejected);
    }

    /// A token is fetched anew after a rejection: a 401 is worth one replay.
    fn can_renew(&self) -> bool {
        true
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.current.load().is_some();
        f.debug_struct("TokenCache")
            .field("source", &self.inner.source)
            .field("store", &self.inner.store)
            .field("key", &self.inner.key)
            .field("config", &self.inner.config)
            .field("cached", &cached)
            .finish()
    }
}

/// Logs a failed store operation: at `warn`, except while the store's Redis is unavailable, whose
/// outage its connection logs once (not once per refresh).
fn store_trouble(key: &str, error: &(dyn std::error::Error + 'static), what: &'static str) {
    #[cfg(feature = "redis")]
    let outage = error
        .downcast_ref::<integration_core::redis::RedisCallError>()
        .is_some_and(integration_core::redis::RedisCallError::is_unavailable);
    #[cfg(not(feature = "redis"))]
    let outage = false;
    if outage {
        tracing::debug!(key, error = %error, "{what}");
    } else {
        tracing::warn!(key, error = %error, "{what}");
    }
}

fn outcome_of(error: &AuthFailed) -> &'static str {
    match error.code() {
        Some("invalid_grant") => "invalid_grant",
        Some("invalid_client") => "invalid_client",
        _ => "error",
    }
}

/// `error`, telling the retry layer when the next refresh may be tried; a permanent failure is
/// final whatever the wait, so it carries none.
fn cooled(error: &AuthFailed, wait: Duration) -> AuthFailed {
    if error.is_permanent() {
        error.clone()
    } else {
        error.clone().with_retry_after(wait)
    }
}

impl CacheInner {
    fn cooling_down(&self, now: Instant) -> Option<AuthFailed> {
        match &*lock(&self.failure) {
            // The retry layer waits out what is left of the cool-down before trying again.
            Some((until, error)) if now < *until => Some(cooled(error, *until - now)),
            _ => None,
        }
    }

    /// A stored token is usable unless a 401 rejected it, the background refresh is replacing it
    /// (`skip`), or it has no time left.
    fn usable(&self, token: &StoredToken, skip: Option<u128>) -> bool {
        let rejected = *lock(&self.rejected);
        Some(token.id) != rejected
            && Some(token.id) != skip
            && token.expires_in.is_none_or(|left| !left.is_zero())
    }

    fn adopt(&self, token: &StoredToken) -> Arc<Cached> {
        let credential =
            Credential::bearer_with_type(&token.token_type, &token.access_token).with_id(token.id);
        let cached = Arc::new(Cached {
            credential,
            refresh_at: token.expires_in.map(|left| Instant::now() + left),
        });
        self.current.store(Some(Arc::clone(&cached)));
        cached
    }

    /// One refresh, or the one another caller just made. `expected` is set by the background task:
    /// refresh even though the token is still fresh, if it is still that token.
    async fn refresh(
        self: &Arc<Self>,
        integration: Option<IntegrationName>,
        expected: Option<u128>,
    ) -> Result<Credential, AuthFailed> {
        // The single-flight gate: held across the token request on purpose (see the module docs).
        let _gate = self.gate.lock().await;
        let now = Instant::now();
        if let Some(cached) = self.current.load_full() {
            let replaced = expected.is_some_and(|id| id != cached.credential.id());
            if replaced || (expected.is_none() && cached.is_fresh(now)) {
                return Ok(cached.credential.clone());
            }
        }
        if let Some(error) = self.cooling_down(now) {
            return Err(error);
        }
        match self.refresh_locked(integration.as_ref(), expected).await {
            Ok(cached) => {
                *lock(&self.failure) = None;
                self.schedule_background(&cached, integration);
                Ok(cached.credential.clone())
            }
            Err(error) => {
                *lock(&self.failure) = Some((Instant::now() + self.config.cooldown, error.clone()));
                Err(cooled(&error, self.config.cooldown))
            }
        }
    }

    async fn load_usable(&self, skip: Option<u128>) -> Option<StoredToken> {
        match self.store.load(&self.key).await {
            Ok(Some(token)) if self.usable(&token, skip) => Some(token),
            Ok(_) => None,
            Err(error) => {
                store_trouble(
                    &self.key,
                    &*error,
                    "token store unreadable; refreshing locally",
                );
                None
            }
        }
    }

    async fn refresh_locked(
        &self,
        integration: Option<&IntegrationName>,
        skip: Option<u128>,
    ) -> Result<Arc<Cached>, AuthFailed> {
        // Another replica (or another cache on the same store) may hold a usable token.
        let lock = loop {
            if let Some(token) = self.load_usable(skip).await {
                return Ok(self.adopt(&token));
            }
            match self.store.try_lock(&self.key, self.config.lock_ttl).await {
                Ok(Some(lock)) => break Some(lock),
                Ok(None) => tokio::time::sleep(self.config.lock_poll).await,
                Err(error) => {
                    store_trouble(
                        &self.key,
                        &*error,
                        "token store lock unavailable; refreshing without it",
                    );
                    break None;
                }
            }
        };
        // Read again under the lock: whoever held it before us may have just saved a token.
        if let Some(token) = self.load_usable(skip).await {
            self.release(lock).await;
            return Ok(self.adopt(&token));
        }
        let result = self.fetch(integration).await;
        let result = match result {
            Ok(token) => {
                if let Err(error) = self.store.save(&self.key, &token).await {
                    store_trouble(
                        &self.key,
                        &*error,
                        "token store write failed; token kept in this process only",
                    );
                }
                Ok(self.adopt(&token))
            }
            Err(error) => Err(error),
        };
        self.release(lock).await;
        result
    }

    async fn release(&self, lock: Option<StoreLock>) {
        if let Some(lock) = lock
            && let Err(error) = self.store.unlock(lock).await
        {
            store_trouble(
                &self.key,
                &*error,
                "token store lock release failed; it expires by itself",
            );
        }
    }

    async fn fetch(
        &self,
        integration: Option<&IntegrationName>,
    ) -> Result<StoredToken, AuthFailed> {
        let name = integration.map_or("", IntegrationName::as_str).to_owned();
        let result = self.source.fetch(&*self.store, &self.key).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => outcome_of(error),
        };
        metrics::counter!(names::TOKEN_REFRESHES, names::OUTCOME => outcome, names::INTEGRATION => name.clone())
            .increment(1);
        match result {
            Ok(fetched) => {
                tracing::debug!(integration = %name, key = %self.key, expires_in = ?fetched.expires_in, "token refreshed");
                let usable_for = fetched
                    .expires_in
                    .map(|lifetime| lifetime.saturating_sub(self.config.margin(lifetime)));
                Ok(StoredToken {
                    id: uuid::Uuid::new_v4().as_u128(),
                    access_token: fetched.access_token,
                    token_type: fetched.token_type,
                    expires_in: usable_for,
                })
            }
            Err(error) => {
                tracing::warn!(integration = %name, key = %self.key, error = %error, "token refresh failed");
                Err(error)
            }
        }
    }

    fn schedule_background(
        self: &Arc<Self>,
        cached: &Cached,
        integration: Option<IntegrationName>,
    ) {
        if !self.config.background_refresh {
            return;
        }
        let Some(refresh_at) = cached.refresh_at else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lead = self.config.skew / 2;
        let wake_at = refresh_at.checked_sub(lead).unwrap_or(refresh_at);
        let id = cached.credential.id();
        let weak: Weak<Self> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(wake_at).await;
            if let Some(inner) = weak.upgrade() {
                // Errors are counted and logged by the refresh; callers see them (and the cool-down).
                let _ = inner.refresh(integration, Some(id)).await;
            }
        });
        if let Some(previous) = lock(&self.background).replace(task.abort_handle()) {
            previous.abort();
        }
    }
}
