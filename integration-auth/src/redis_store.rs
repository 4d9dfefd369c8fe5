//! Tokens in Redis, shared by every replica.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use integration_core::redis::{SharedRedis, SharedRedisConfig};
use integration_core::{BoxError, Error, ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::store::{StoreFuture, StoreLock, StoredToken, TokenStore};

/// Deletes the lock only if it still holds our owner token (it may have expired and been taken).
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Tokens in Redis, so the replicas of a service share them and refresh them once between them.
///
/// Per token key the store uses three Redis keys under its prefix, hash-tagged so they live in one
/// cluster slot: `{prefix:key}:token` (expiring with the token), `{prefix:key}:refresh` (the current
/// refresh token) and `{prefix:key}:lock` (the refresh lock, `SET NX PX` with a random owner, released
/// by a compare-and-delete script). Give each store its own prefix.
///
/// # Redis down
///
/// Every operation goes through a [`SharedRedis`]: bounded by its command timeout (50 ms by
/// default), and failing at once, with no round trip, while Redis is known to be unavailable. The
/// token cache treats a failed operation as "nothing shared": the token it holds keeps serving, and a
/// refresh that falls due proceeds in this process without the shared lock and keeps its token in
/// memory. Nothing waits for Redis to come back; the outage is logged once by the connection.
///
/// # Clone
///
/// Clones share the connection (and with it the view of whether Redis is up).
///
/// ```no_run
/// use std::sync::Arc;
/// use integration_auth::{ClientCredentials, RedisTokenStore, TokenTransport, Url};
/// use secrecy::SecretString;
///
/// # async fn run(transport: TokenTransport) -> Result<(), integration_core::Error> {
/// let store = RedisTokenStore::connect("redis://127.0.0.1:6379", "billing-service").await?;
/// let provider = ClientCredentials::new(
///     Url::parse("https://auth.example.com/oauth/token").unwrap(),
///     "billing",
///     SecretString::from("client-secret"),
///     transport,
/// )
/// .with_store(Arc::new(store));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisTokenStore {
    connection: SharedRedis,
    prefix: Arc<str>,
    unlock: Arc<redis::Script>,
    cipher: Option<Arc<Cipher>>,
}

/// Marks an encrypted value: version 1 is AES-256-GCM, `base64(nonce || ciphertext || tag)`.
const SEALED: &str = "enc1:";

/// AES-256-GCM (ring) with a random 96-bit nonce per write and the Redis key as associated data, so
/// a value copied to another key does not decrypt.
struct Cipher {
    key: ring::aead::LessSafeKey,
    random: ring::rand::SystemRandom,
}

impl Cipher {
    fn new(key: &SecretString) -> Result<Self, Error> {
        use base64::Engine as _;
        let invalid = || {
            Error::new(ErrorKind::Config)
                .with_message("the token store encryption key must be 32 bytes, base64-encoded")
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| invalid())?;
        let bytes = secrecy::SecretSlice::from(bytes);
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes.expose_secret())
            .map_err(|_| invalid())?;
        Ok(Self {
            key: ring::aead::LessSafeKey::new(unbound),
            random: ring::rand::SystemRandom::new(),
        })
    }

    fn seal(&self, redis_key: &str, plaintext: &SecretString) -> Result<String, BoxError> {
        use base64::Engine as _;
        use ring::rand::SecureRandom as _;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| BoxError::from("no randomness for a nonce"))?;
        let mut sealed = plaintext.expose_secret().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(redis_key.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| BoxError::from("encrypting a token failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    fn open(&self, redis_key: &str, value: &str) -> Result<SecretString, BoxError> {
        use base64::Engine as _;
        let unreadable = || {
            BoxError::from("a token in the Redis store does not decrypt with the configured key")
        };
        let encoded = value.strip_prefix(SEALED).ok_or_else(unreadable)?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| unreadable())?;
        if bytes.len() < ring::aead::NONCE_LEN {
            return Err(unreadable());
        }
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        nonce.copy_from_slice(&bytes[..ring::aead::NONCE_LEN]);
        let plaintext = self
            .key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(redis_key.as_bytes()),
                &mut bytes[ring::aead::NONCE_LEN..],
            )
            .map_err(|_| unreadable())?;
        let text = std::str::from_utf8(plaintext).map_err(|_| unreadable())?;
        Ok(SecretString::from(text.to_owned()))
    }
}

/// What [`RedisTokenStore::inspect`] found under one key: never the token itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenState {
    /// A token is cached (the next call uses it without a fetch).
    pub cached: bool,
    /// How long the cached token is still used (its lifetime minus the skew); `None` when none is
    /// cached or it has no expiry.
    pub expires_in: Option<Duration>,
    /// A refresh token is kept (refresh-token grants).
    pub refresh_token: bool,
    /// A replica holds the refresh lock: a fetch is under way.
    pub refreshing: bool,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    id: String,
    access_token: String,
    token_type: String,
}

fn boxed(error: integration_core::redis::RedisCallError) -> BoxError {
    Box::new(error)
}

impl RedisTokenStore {
    /// A store on Redis at `url` (a `redis://` URL) with keys under `prefix` and the default bounds
    /// ([`SharedRedisConfig`]: 50 ms per operation, 500 ms per connection attempt). It asks Redis once,
    /// bounded; when Redis does not answer, the store is still returned (the outage is logged once)
    /// and tokens stay in this process until Redis is back. Use [`new`](Self::new) to share one
    /// connection with other users, or for other bounds.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed URL, which it does not show (it may hold
    /// a password).
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, Error> {
        let connection = SharedRedis::open(url, SharedRedisConfig::new()).map_err(|_| {
            Error::new(ErrorKind::Config)
                .with_message("the Redis URL of the token store is invalid")
        })?;
        connection.check().await;
        Ok(Self::new(connection, prefix))
    }

    /// A store over `connection` (a [`SharedRedis`], or a `redis` connection manager given the default
    /// bounds), with keys under `prefix`.
    pub fn new(connection: impl Into<SharedRedis>, prefix: impl Into<String>) -> Self {
        Self {
            connection: connection.into(),
            prefix: prefix.into().into(),
            unlock: Arc::new(redis::Script::new(UNLOCK)),
            cipher: None,
        }
    }

    /// Encrypts tokens and refresh tokens at rest with AES-256-GCM under `key` (32 bytes,
    /// base64-encoded, from configuration: e.g. `openssl rand -base64 32`). Every replica sharing the
    /// prefix needs the same key; a value that does not decrypt is treated as absent (the token is
    /// fetched again and overwritten).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the key is not 32 base64-encoded bytes.
    pub fn with_encryption_key(mut self, key: &SecretString) -> Result<Self, Error> {
        self.cipher = Some(Arc::new(Cipher::new(key)?));
        Ok(self)
    }

    /// Writes `plaintext` as stored under `redis_key`: sealed when a key is configured.
    fn encode(&self, redis_key: &str, plaintext: &SecretString) -> Result<SecretString, BoxError> {
        match &self.cipher {
            Some(cipher) => cipher.seal(redis_key, plaintext).map(SecretString::from),
            None => Ok(plaintext.clone()),
        }
    }

    fn decode(&self, redis_key: &str, stored: String) -> Result<SecretString, BoxError> {
        match &self.cipher {
            Some(cipher) => cipher.open(redis_key, &stored),
            None => Ok(SecretString::from(stored)),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection, shared with every other user of it.
    pub fn connection(&self) -> &SharedRedis {
        &self.connection
    }

    fn key(&self, key: &str, what: &str) -> String {
        format!("{{{}:{key}}}:{what}", self.prefix)
    }

    /// Whether a token is cached under `key` and when it expires, whether a refresh token is kept
    /// and whether a refresh is under way (its lock held), read without reading any of them: only
    /// `PTTL` and `EXISTS`, so no token leaves Redis. For operators (`integration status`).
    ///
    /// `key` is the provider's cache key ([`CredentialProvider::cache_key`](crate::CredentialProvider::cache_key)).
    ///
    /// ```no_run
    /// use integration_auth::RedisTokenStore;
    ///
    /// # async fn run() -> Result<(), integration_core::Error> {
    /// let store = RedisTokenStore::connect("redis://127.0.0.1:6379", "billing-service").await?;
    /// let state = store.inspect("client_credentials:https://auth.example.com/token:billing::").await?;
    /// match (state.cached, state.expires_in) {
    ///     (true, Some(left)) => println!("a token is cached for {left:?} more"),
    ///     (true, None) => println!("a token is cached, with no expiry"),
    ///     (false, _) => println!("no token cached: the next call fetches one"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// An [`Other`](ErrorKind::Other) error when Redis is unavailable or does not answer in time.
    pub async fn inspect(&self, key: &str) -> Result<TokenState, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL")
            .arg(self.key(key, "token"))
            .cmd("EXISTS")
            .arg(self.key(key, "refresh"))
            .cmd("EXISTS")
            .arg(self.key(key, "lock"));
        let (ttl, refresh, lock): (i64, i64, i64) = self
            .connection
            .run(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
            .map_err(|error| {
                Error::new(ErrorKind::Other)
                    .with_message("the token store in Redis could not be read")
                    .with_source(error)
            })?;
        Ok(TokenState {
            // -2: no such key; -1: a key without expiry (the endpoint gave no lifetime).
            cached: ttl != -2,
            expires_in: u64::try_from(ttl).ok().map(Duration::from_millis),
            refresh_token: refresh > 0,
            refreshing: lock > 0,
        })
    }

    async fn load_token(&self, key: &str) -> Result<Option<StoredToken>, BoxError> {
        let redis_key = self.key(key, "token");
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&redis_key).cmd("PTTL").arg(&redis_key);
        let (value, ttl): (Option<String>, i64) = self
            .connection
            .run(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
            .map_err(boxed)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let value = self.decode(&redis_key, value)?;
        let entry: Entry = serde_json::from_str(value.expose_secret())
            .map_err(|_| BoxError::from("a token in the Redis store is unreadable"))?;
        let id = u128::from_str_radix(&entry.id, 16)
            .map_err(|_| BoxError::from("a token in the Redis store has an unreadable id"))?;
        let expires_in = match ttl {
            // No expiry set: the endpoint gave no lifetime.
            -1 => None,
            ms if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            // Expired between the two commands.
            _ => return Ok(None),
        };
        Ok(Some(StoredToken {
            id,
            access_token: SecretString::from(entry.access_token),
            token_type: entry.token_type,
            expires_in,
        }))
    }

    async fn save_token(&self, key: &str, token: &StoredToken) -> Result<(), BoxError> {
        let entry = Entry {
            id: format!("{:x}", token.id),
            access_token: token.access_token.expose_secret().to_owned(),
            token_type: token.token_type.clone(),
        };
        let redis_key = self.key(key, "token");
        let value = self.encode(
            &redis_key,
            &SecretString::from(serde_json::to_string(&entry)?),
        )?;
        drop(entry);
        let mut command = redis::cmd("SET");
        command.arg(&redis_key).arg(value.expose_secret());
        if let Some(ttl) = token.expires_in {
            // Redis refuses a zero TTL: a token with no time left is written with the smallest.
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            command.arg("PX").arg(ms);
        }
        self.connection
            .run(|mut connection| async move { command.query_async::<()>(&mut connection).await })
            .await
            .map_err(boxed)
    }
}

impl fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.prefix)
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenStore for RedisTokenStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(self.load_token(key))
    }

    fn save<'a>(&'a self, key: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        Box::pin(self.save_token(key, token))
    }

    fn load_refresh_token<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SecretString>> {
        Box::pin(async move {
            let redis_key = self.key(key, "refresh");
            let mut command = redis::cmd("GET");
            command.arg(&redis_key);
            let value: Option<String> = self
                .connection
                .run(|mut connection| async move { command.query_async(&mut connection).await })
                .await
                .map_err(boxed)?;
            value.map(|v| self.decode(&redis_key, v)).transpose()
        })
    }

    fn save_refresh_token<'a>(
        &'a self,
        key: &'a str,
        refresh_token: &'a SecretString,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let redis_key = self.key(key, "refresh");
            let value = self.encode(&redis_key, refresh_token)?;
            let mut command = redis::cmd("SET");
            command.arg(&redis_key).arg(value.expose_secret());
            self.connection
                .run(|mut connection| async move { command.query_async::<()>(&mut connection).await })
                .await
                .map_err(boxed)
        })
    }

    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<StoreLock>> {
        Box::pin(async move {
            let owner = uuid::Uuid::new_v4().as_u128();
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut command = redis::cmd("SET");
            command
                .arg(self.key(key, "lock"))
                .arg(format!("{owner:x}"))
                .arg("NX")
                .arg("PX")
                .arg(ms);
            let taken: Option<String> = self
                .connection
                .run(|mut connection| async move { command.query_async(&mut connection).await })
                .await
                .map_err(boxed)?;
            Ok(taken.map(|_| StoreLock::new(key, owner)))
        })
    }

    fn unlock(&self, lock: StoreLock) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut invocation = self.unlock.prepare_invoke();
            invocation
                .key(self.key(lock.key(), "lock"))
                .arg(format!("{:x}", lock.owner()));
            self.connection
                .run(|mut connection| async move {
                    invocation.invoke_async::<i64>(&mut connection).await
                })
                .await
                .map_err(boxed)?;
            Ok(())
        })
    }
}
