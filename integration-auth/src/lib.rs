//! Authentication for HTTP API calls as a tower layer: credentials that refresh themselves.
//!
//! [`AuthLayer`] puts a credential on every request from a [`CredentialProvider`]: an API key
//! ([`ApiKey`], header or query parameter), HTTP [`Basic`], a static [`Bearer`] token, OAuth 2.0
//! [`ClientCredentials`] and [`RefreshToken`] (with rotation, through the `oauth2` crate), a
//! self-signed JWT ([`JwtAssertion`]) or the RFC 7523 [`JwtBearerGrant`] (through `jsonwebtoken`), or a
//! scheme of your own. Tokens are cached in a [`TokenCache`] until shortly before they expire, and any
//! number of concurrent callers share one refresh. With a `RedisTokenStore` (feature `redis`) the
//! replicas of a service share tokens too, and refresh them once between them.
//!
//! ```
//! use std::convert::Infallible;
//! use integration_auth::{ApiKey, AuthLayer};
//! use secrecy::SecretString;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), integration_core::BoxError> {
//! // Any `http` service: here one that answers with the key it was given.
//! let upstream = tower::service_fn(|request: http::Request<String>| async move {
//!     let key = request.headers()["x-api-key"].to_str().unwrap().to_owned();
//!     Ok::<_, Infallible>(http::Response::new(key))
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(ApiKey::new(SecretString::from("k-123"))))
//!     .service(upstream);
//!
//! let response = service.oneshot(http::Request::new(String::new())).await?;
//! assert_eq!(response.body(), "k-123");
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes in a stack
//!
//! Outermost first: `LogLayer`, `DeadlineLayer`, `RetryLayer`, `CircuitBreakerLayer`,
//! `RateLimitLayer`, **`AuthLayer`**, the attempt timeout, the transport.
//!
//! * Inside the retry layer, so every attempt is signed with the credential current at that moment
//!   (a replay after a 401 carries the refreshed token).
//! * Inside the rate limiter, so each attempt takes its permit before it is signed, and a token
//!   request is never made for an attempt the limiter refuses.
//! * Outside the attempt timeout, so waiting for a token refresh does not eat into the time of the
//!   attempt it is for (the total deadline still bounds both).
//!
//! On a 401 the layer invalidates the credential it sent. Where the provider can produce a different
//! credential ([`CredentialProvider::can_renew`]: OAuth, JWT), it marks the response with
//! [`CredentialInvalidated`](integration_core::ext::CredentialInvalidated) and the retry layer replays
//! it once with a fresh credential; used alone, the layer makes that single replay itself
//! ([`AuthLayer::replay_on_unauthorized`], on by default; the facade turns it off). A static API key,
//! Basic or bearer token is never replayed: the same credential would be refused again, and a POST
//! would reach the upstream twice.
//!
//! A request that carries its own credential, marked with
//! [`OwnCredential`](integration_core::ext::OwnCredential) (the facade's per-request `bearer_auth` and
//! `basic_auth` do so), replaces the provider's: the layer sends it as it is and never replays its 401.
//!
//! # Token endpoints and their transport
//!
//! This crate depends on no HTTP client. Token requests go through a [`TokenTransport`] built from any
//! tower HTTP service (the facade passes the same pooled hyper client it uses for API calls) or a
//! closure. Token requests are bounded by a timeout (10 s by default).
//!
//! # Token cache
//!
//! * A token is used until `expires_in` minus a skew (60 s by default, plus up to a quarter of it in
//!   injectable jitter, at most half the lifetime).
//! * Single flight: one refresh for any number of concurrent callers (see [`cache`]); with a
//!   [`TokenStore`] shared by replicas, a lock with a TTL before the refresh and a second read after
//!   taking it.
//! * Optional background refresh before expiry ([`TokenCacheConfig::with_background_refresh`]).
//! * After a failed refresh, a cool-down (1 s by default) during which lookups fail at once; a
//!   transient failure carries the cool-down left as its `retry_after`, and the facade's retry layer
//!   tries the call again after it (no credential means nothing was sent, whatever the method).
//! * `invalid_grant`, `invalid_client` (and the other RFC 6749 §5.2 codes) are final:
//!   [`AuthFailed::permanent`](integration_core::error::AuthFailed::permanent) with the provider's
//!   code. Descriptions from the token endpoint are sanitised: no secret is ever echoed.
//! * A rotated refresh token is written to the store before the new access token is used.
//!
//! # Secrets
//!
//! Every secret is a `secrecy` type from construction to the moment it is written into a request,
//! where every header the layer sets is marked sensitive (`HeaderValue::set_sensitive`), whatever its
//! name: HTTP/2 never indexes it, the logs redact it and the facade's redirects drop it on a change of
//! origin, as they do for a name the redaction rule knows (`Authorization`, `X-API-Key`). No `Debug` or `Display` of a provider, a credential,
//! a store or an error shows one, and none reaches a span, a log line or a metric label.
//!
//! # Metrics
//!
//! [`TOKEN_REFRESHES`](integration_core::names::TOKEN_REFRESHES), a counter labelled with
//! [`OUTCOME`](integration_core::names::OUTCOME) (`ok`, `error`, `invalid_grant`, `invalid_client`) and
//! [`INTEGRATION`](integration_core::names::INTEGRATION).
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `redis` | off | `RedisTokenStore`: tokens shared by replicas through Redis, encrypted at rest with AES-256-GCM (`ring`) when given a key; the `redis` crate and `integration-core/redis` |
//!
//! Without features the crate compiles no Redis client; tokens live in a [`MemoryTokenStore`] or a
//! [`TokenStore`] of your own. It uses `oauth2` without its default features (no reqwest) and
//! `jsonwebtoken` with the `rust_crypto` backend.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;
mod basic;
pub mod cache;
mod credential;
mod error;
pub mod future;
mod jwt;
mod layer;
mod oauth;
#[cfg(feature = "redis")]
mod redis_store;
mod service;
mod store;
mod transport;

pub use basic::{ApiKey, Basic, Bearer, DEFAULT_API_KEY_HEADER};
pub use cache::{FetchFuture, FetchedToken, Jitter, TokenCache, TokenCacheConfig, TokenSource};
pub use credential::{AuthContext, Credential, CredentialFuture, CredentialProvider};
/// The JWT signing algorithms ([`JwtSigner::new`]), re-exported from `jsonwebtoken` so that callers
/// need not depend on it.
pub use jsonwebtoken::Algorithm as JwtAlgorithm;
pub use jwt::{JwtAssertion, JwtBearerGrant, JwtClaims, JwtSigner};
pub use layer::AuthLayer;
pub use oauth::{ClientAuth, ClientCredentials, RefreshToken};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::{RedisTokenStore, TokenState};
pub use service::Auth;
pub use store::{MemoryTokenStore, StoreFuture, StoreLock, StoredToken, TokenStore};
pub use transport::{TokenRequest, TokenResponse, TokenTransport};
pub use url::Url;
