//! The configuration model of the API integration layer, its validation, and its sources: TOML files,
//! environment overrides and PostgreSQL with live reload.
//!
//! This crate holds data, not behaviour: the facade (`integration-client`) turns an [`IntegrationConfig`]
//! into a tower stack. One model serves every source, and validation reports every problem with its path
//! before anything is applied.
//!
//! ```
//! use integration_config::{AuthConfig, Config};
//! use secrecy::ExposeSecret;
//! use std::time::Duration;
//!
//! let config = Config::from_toml_str(r#"
//!     [defaults]
//!     timeout = "30s"
//!
//!     [integrations.github]
//!     base_url = "https://api.github.com"
//!     user_agent = "acme-backend/1.0"
//!     headers = { Accept = "application/vnd.github+json" }
//!     attempt_timeout = "10s"
//!
//!     [integrations.github.auth]
//!     type = "bearer"
//!     token = "${file:/dev/null}"   # usually ${env:GITHUB_TOKEN} or ${file:/run/secrets/github}
//!
//!     [integrations.github.rate_limit]
//!     quotas = [{ rate = 10, per = "1s" }, { rate = 5000, per = "1h" }]
//!
//!     [integrations.github.retry]
//!     max_attempts = 4
//!     budget = false
//! "#);
//! // An empty token is refused, with its path.
//! let err = config.unwrap_err();
//! assert_eq!(err.to_string(), "invalid configuration:\nintegrations.github.auth.token: must not be empty");
//! ```
//!
//! # Reference
//!
//! Every key, with its type, default, bounds and meaning, an example of each auth type and the
//! environment overrides: `docs/CONFIGURATION.md` at the root of the repository (a test fails when
//! a field of the model is missing from it).
//!
//! # Sources
//!
//! - [`Config::from_toml_str`] and [`Config::from_file`] read TOML alone;
//!   [`Config::from_file_with_env`] (or [`ConfigDocument`]) also applies environment overrides
//!   (`APP_INTEGRATIONS__STRIPE__RETRY__MAX_ATTEMPTS=5`) to the tree before typing; an existing
//!   integration is matched ignoring case and with `_` for `-` (`MY_API` reaches `my-api`).
//! - `PgStore` (feature `postgres`): versioned rows in PostgreSQL with a history table, optimistic
//!   concurrency, and a `watch` of validated [`Snapshot`]s fed by LISTEN/NOTIFY and a periodic poll.
//!
//! # Secrets
//!
//! [`Secret`] values are references (`${env:NAME}`, `${file:/path}`) resolved at load. They never appear
//! in `Debug` or in serialized output, and plaintext secrets are refused by the PostgreSQL store.
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `postgres` | off | `PgStore` (versioned rows, history, embedded migrations), its LISTEN/NOTIFY `watch`, `WatchHandle` and `WatchOptions`; `sqlx` with the `postgres` driver |
//! | `test-util` | off | `testing`: a schema per test and a TCP fault proxy (implies `postgres`); never for production |
//!
//! The model, its validation, TOML and environment sources need no feature: without `postgres` this
//! crate compiles no database driver.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod model;
mod secret;
mod snapshot;
mod source;
#[cfg(feature = "postgres")]
mod store;
mod validate;
#[cfg(feature = "postgres")]
mod watch;

#[cfg(feature = "test-util")]
pub mod testing;

pub use model::limits;
pub use model::{
    AdaptiveConfig, ApiKeyAuth, AuthConfig, BasicAuth, BearerAuth, BreakerConfig, BudgetConfig,
    CacheConfig, CacheCredentials, CacheOverride, ClientAuth, Config, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_INITIAL_WINDOW, DEFAULT_JWT_TTL, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_SERVER_PAUSE,
    DEFAULT_MAX_WAIT, DEFAULT_REDIS_COMMAND_TIMEOUT, DEFAULT_REDIS_CONNECT_TIMEOUT,
    DEFAULT_REDIS_KEY_PREFIX, DEFAULT_SKEW, DEFAULT_TIMEOUT, IntegrationConfig,
    IntegrationConfigBuilder, Jitter, JwtAlgorithm, JwtAuth, JwtBearerGrant, LogConfig, LogLevel,
    OAuth2ClientCredentials, OAuth2RefreshToken, ProxyConfig, ProxyServer, QuotaConfig,
    RateLimitConfig, RedisConfig, RetryConfig, StoreKind, TlsConfig,
};
pub use secret::{REDACTED_MARKER, Secret, SecretError, SecretSource};
pub use snapshot::Snapshot;
pub use source::{ConfigDocument, ConfigError};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::{
    Change, ChangeKind, DEFAULT_SCHEMA, HistoryEntry, PgStore, StoreError, StoredIntegration,
};
pub use validate::{ValidationError, ValidationErrors};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use watch::{
    DEFAULT_MAX_BACKOFF, DEFAULT_POLL_INTERVAL, Rejection, WatchHandle, WatchOptions, WatchStatus,
};
