//! An RFC 9111 HTTP cache for API clients: a tower layer over any `http` service, memory or Redis
//! store, credential-partitioned keys, coalescing, stale-while-revalidate and stale-if-error.
//!
//! [`CacheLayer`] answers a request from a stored response when RFC 9111 allows it (the rules come
//! from the `http-cache-semantics` crate, not from rules of our own) and otherwise calls the inner
//! service, storing what may be stored. Third-party APIs are slow, metered and rate limited: a
//! response that may be reused is served without spending a call.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use integration_cache::{CacheConfig, CacheLayer, CacheStatus, CacheStore, MemoryConfig};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), integration_core::BoxError> {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counted = calls.clone();
//! let store = CacheStore::memory(MemoryConfig::new());
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(store, CacheConfig::new()))
//!     .service(tower::service_fn(move |_request: Request<String>| {
//!         counted.fetch_add(1, Ordering::SeqCst);
//!         async {
//!             let response = Response::builder()
//!                 .header("cache-control", "max-age=60")
//!                 .body(Full::new(Bytes::from_static(b"{\"rate\": 1.08}")))
//!                 .unwrap();
//!             Ok::<_, Infallible>(response)
//!         }
//!     }));
//!
//! for expected in [CacheStatus::Miss, CacheStatus::Hit] {
//!     let request = Request::get("https://api.example.com/rates/eur").body(String::new())?;
//!     let response = client.ready().await?.call(request).await?;
//!     assert_eq!(CacheStatus::of(&response), Some(expected));
//!     assert_eq!(response.into_body().collect().await?.to_bytes(), "{\"rate\": 1.08}");
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1, "the second call never reached the upstream");
//! # Ok(())
//! # }
//! ```
//!
//! # RFC 9111 behaviours
//!
//! Each row is pinned by a test of `tests/rfc9111.rs` (named in the last column) on a paused clock.
//!
//! | behaviour | what the cache does | test |
//! | --- | --- | --- |
//! | freshness (`max-age`, `s-maxage`, `Expires`) | served without a call while fresh | `fresh_responses_are_served_until_max_age` |
//! | `no-store` (response or request) | never stored; the request's also bypasses | `no_store_is_never_stored` |
//! | `private` | stored only in a credential's own partition, never in the shared one | `private_is_stored_only_in_a_credential_partition` |
//! | credentials (3.5) | each credential has its own partition (keyed hash); in [`CredentialMode::Shared`], stored only with `public`, `s-maxage` or `must-revalidate` | `credentials_never_see_each_others_entries`, `shared_mode_stores_authenticated_answers_only_when_allowed` |
//! | `Vary` | a stored variant serves only requests with the same nominated headers | `vary_selects_the_variant` |
//! | revalidation (4.3) | a stale entry with `ETag`/`Last-Modified` is revalidated with `If-None-Match`/`If-Modified-Since`; a 304 refreshes it | `a_304_refreshes_the_stored_entry` |
//! | `must-revalidate`, `no-cache` | never served stale, not even on an error | `must_revalidate_is_never_served_stale` |
//! | invalidation (4.4) | a 2xx/3xx answer to POST, PUT, DELETE or PATCH invalidates every entry of the URL, in every partition | `unsafe_methods_invalidate_the_url` |
//! | stale-while-revalidate (RFC 5861) | served stale at once while one background call refreshes | `stale_while_revalidate_serves_and_refreshes_once` |
//! | stale-if-error (RFC 5861) | served stale when the upstream errs, times out, is behind an open breaker, or answers 500/502/503/504 | `stale_if_error_serves_when_the_upstream_fails` |
//! | TTL override | a fixed freshness for matching paths, **beyond the server's word** | `a_ttl_override_goes_beyond_the_servers_word` |
//! | body cap | a larger body is streamed through, not stored | `a_body_over_the_cap_streams_through_uncached` |
//! | coalescing | concurrent misses of a key make one upstream call | `hundred_concurrent_misses_make_one_call` |
//!
//! Only `GET` and `HEAD` are cached; a request with `Range` bypasses the cache. One variant is kept
//! per URL, method and partition: a request whose `Vary` headers differ replaces it.
//!
//! # Credentials
//!
//! A request carries credentials when it has `Authorization`, `Proxy-Authorization`, `Cookie`, a
//! header marked sensitive, or a header named by [`CacheConfig::with_credential_header`]; and always
//! when the layer was given the identity of a credential added below it
//! ([`CacheLayer::with_identity`]). In [`CredentialMode::Partition`] (the default) its entries live
//! in a partition keyed by an HMAC-SHA256 of the credential (never the credential): no other
//! credential, nor an anonymous request, can read them (`tests/credential_props.rs` checks it over
//! random call sequences). In [`CredentialMode::Shared`] a credentialed request is stored, and
//! served, only entries RFC 9111 3.5 lets a shared cache keep for credentialed requests. No
//! credential header, and no query, is stored with an entry.
//!
//! # Stores
//!
//! - [`CacheStore::memory`]: bounded in bytes and entries (a `moka` cache).
//! - `CacheStore::redis` (feature `redis`): shared by replicas through
//!   `integration_core::redis::SharedRedis`; one round trip for a hit; entries capped in size; TTL =
//!   freshness plus the stale windows; keys prefixed and hash-tagged (`prefix:{url}:variant`) for
//!   Redis Cluster. While Redis is unavailable the cache steps aside: every call goes upstream, none
//!   waits for Redis, and `SharedRedis` logs one line and counts one metric per transition.
//!
//! # Where it goes in a stack
//!
//! Outermost first, as the facade (`integration-client`) assembles it:
//!
//! ```text
//! LogLayer -> CacheLayer -> DeadlineLayer -> RetryLayer -> CircuitBreakerLayer -> RateLimitLayer
//!          -> AuthLayer -> attempt timeout -> transport
//! ```
//!
//! Inside the log layer, so every call has its span (with `cache.status`) and metrics, hits
//! included; outside the deadline, retry, breaker and limiter, so a hit spends no permit and no
//! attempt, and stale-if-error sees the final outcome of the retries (a timeout, an open breaker).
//! Above the auth layer, the stack's credential is not on the request: the facade gives its identity
//! with [`CacheLayer::with_identity`].
//!
//! # Observability
//!
//! Every response carries a [`CacheStatus`] extension. The status is recorded in the field
//! `cache.status` of the current span (the call span of `integration-log`). Counters, labelled with
//! `integration.name`: `integration.cache.hits`, `integration.cache.misses`,
//! `integration.cache.stale`, `integration.cache.revalidated`, `integration.cache.bypasses`; the gauge
//! `integration.cache.stored_bytes` (memory store).
//!
//! # Feature flags
//!
//! - `redis` (off): the Redis store, through `integration-core`'s `redis` feature.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod body;
mod config;
mod entry;
mod error;
mod flight;
pub mod future;
mod key;
mod layer;
mod service;
mod status;
pub mod store;

pub use body::CacheBody;
pub use config::{CacheConfig, CredentialMode, TtlOverride};
pub use error::InvalidConfig;
pub use key::HashKey;
pub use layer::CacheLayer;
pub use service::Cache;
pub use status::CacheStatus;
#[cfg(feature = "redis")]
pub use store::RedisConfig;
pub use store::{CacheStore, MemoryConfig};
