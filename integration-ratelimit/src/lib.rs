//! Client-side rate limiting for HTTP APIs: GCRA quotas per key, in memory or in Redis, that obey the
//! server's throttle signals.
//!
//! [`RateLimitLayer`] gives every call a permit from each quota of its key (for example 10 per second
//! *and* 5,000 per hour), waits for it up to a bound or fails fast with
//! [`RateLimited`](integration_core::error::RateLimited) saying when to come back, caps the calls in
//! flight per key, and reads every response's throttle signal (`Retry-After` on 429 and 503,
//! `RateLimit`/`RateLimit-Policy`, `X-RateLimit-*`, parsed by `integration-core`): a pause until the
//! reset applies to every caller of the key, in this process and, with the Redis store, in every replica.
//!
//! # Before the first answer
//!
//! - **A new key's first second goes at the quota's pace.** A quota's burst builds up while its key
//!   is idle; a key never seen starts with one second's permits held back, so a per-second quota
//!   at its default burst has none (45 calls of a fresh 45/s quota spread over the second, not sent
//!   in one instant against a server whose own burst is 10), while a quota whose interval is a
//!   second or more (100 an hour) keeps its whole burst.
//! - **Slow start** ([`RateLimitPolicy::with_initial_window`], 10 by default, 0 off): a key that
//!   has never been throttled sends its first 10 calls at once, then probes in rate (10 per second,
//!   growing 16-fold a second) until its first throttle, which tells the server's rate: the
//!   learned rate starts there. Before the key's first answer at most 10 of its calls are in flight
//!   in this process. Both cost nothing once they no longer bind.
//!
//! # After a throttle
//!
//! - **Paced resumption.** A throttle signal also empties the key's burst: when the pause ends, the
//!   key's callers leave in arrival order, one per emission interval of its pace, never all at once
//!   (a caller that had reserved its permit before the pause began takes a new one after it, in turn).
//! - **Adaptive throttling** ([`Adaptation`], on by default): each key learns a sending rate from the
//!   server, as the AWS SDKs' adaptive retry mode does. A 429, or a 503 with `Retry-After`, lowers it
//!   (to 0.7 of the rate the key was sending at); it grows back along a CUBIC curve from the end of the
//!   pause; it never passes the slowest quota (once it reaches it, the quota alone governs again) and
//!   never drops below a floor. A key without a quota gets its first learned rate at its first
//!   throttle, from the rate of permits it measured over the last second. Where the server sends
//!   `RateLimit` or `X-RateLimit-Remaining` with a reset, the key is paced from them directly: the
//!   remaining permits spread evenly over the time to the reset, less this process's other calls
//!   of the key in flight (which the server has not counted yet; none left: the key waits for the
//!   reset); callers queued past the reset go on at the next window's pace (the narrowest spacing of
//!   the window's answers), not all at once. With the Redis store the learned
//!   state lives in the key's Redis hash, read and written by the same one-round-trip script, so
//!   every replica paces by it.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use integration_core::error::RateLimited;
//! use integration_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy, RateLimiter};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), integration_core::BoxError> {
//! // 2 calls per second, burst of 2; no waiting: a call over the quota fails at once.
//! let policy = RateLimitPolicy::new([Quota::per_second(2)?]).with_max_wait(Duration::ZERO);
//! let limiter = RateLimiter::memory(policy);
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter.clone()))
//!     .service(tower::service_fn(|_request: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! // A new key's burst is empty: one call now, the next one 500 ms later.
//! let request = Request::get("https://api.example.com/").body(String::new())?;
//! client.ready().await?.call(request).await?;
//! let request = Request::get("https://api.example.com/").body(String::new())?;
//! let error = client.ready().await?.call(request).await.unwrap_err();
//! let limited = error.downcast_ref::<RateLimited>().expect("a typed rate-limit error");
//! assert_eq!(limited.retry_after(), Some(Duration::from_millis(500)));
//!
//! // Idle for a second, the key has its burst of 2.
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! for _ in 0..2 {
//!     let request = Request::get("https://api.example.com/").body(String::new())?;
//!     let response = client.ready().await?.call(request).await?;
//!     assert_eq!(response.status(), StatusCode::OK);
//! }
//! let request = Request::get("https://api.example.com/").body(String::new())?;
//! let error = client.ready().await?.call(request).await.unwrap_err();
//! let limited = error.downcast_ref::<RateLimited>().expect("a typed rate-limit error");
//! assert_eq!(limited.retry_after(), Some(Duration::from_millis(500)));
//!
//! // Quotas change at runtime; the state of every key carries over.
//! limiter.set_policy(RateLimitPolicy::new([Quota::per_second(100)?]));
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes in a stack
//!
//! Outermost first, as the facade (`integration-client`) assembles it:
//!
//! ```text
//! LogLayer -> DeadlineLayer -> RetryLayer -> CircuitBreakerLayer -> RateLimitLayer -> AuthLayer
//!          -> attempt timeout -> transport
//! ```
//!
//! Inside the retry layer, so **every attempt takes a permit** (a retry is a request the upstream
//! counts), and inside the deadline layer, so a wait never passes the request's
//! [`Deadline`](integration_core::ext::Deadline): the bound on a wait is the policy's `max_wait`
//! shortened by the deadline. Outside auth, so a refused call never costs a token fetch. The retry layer
//! sees a `RateLimited` error with its `retry_after`, and the same 429 that paused the key.
//!
//! # Stores
//!
//! - [`MemoryStore`]: one process; sharded, no lock across an `.await`, bounded in keys.
//! - `RedisStore` (feature `redis`): every replica; one atomic Lua script per call on Redis's clock, cluster-safe keys,
//!   server pauses shared, and a local fallback at this replica's share of the quota when Redis is
//!   unreachable. Redis is reached through `integration_core::redis::SharedRedis`: every call is
//!   bounded (50 ms), an outage is noticed at the first failure and costs later calls no round trip,
//!   and neither switch passes the quota (the fallback starts from the last state Redis granted, and
//!   each key is seeded back into Redis before its first decision there).
//! - Anything else through [`store::RateLimitStore`].
//!
//! # Metrics
//!
//! Through the `metrics` facade, labelled with `integration.name` (the request's `IntegrationName`,
//! else the key): `integration.ratelimit.wait` (histogram, seconds, calls that waited),
//! `integration.ratelimit.rejections` (counter, `reason` = `quota`, `server_pause`, `concurrency`),
//! `integration.ratelimit.server_signals` (counter, `source` = `retry_after`, `remaining`, or
//! `throttle` for a 429 without a usable hint), `integration.ratelimit.learned_rate` (gauge, permits
//! per second, while the key has a learned rate; the quota's rate once grown back to it) and
//! `integration.ratelimit.fallback` (gauge, 1 while a Redis store limits locally).
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `redis` | off | `RedisStore`, `RedisOptions` and `RateLimiter::redis`: quotas and server pauses shared by replicas through Redis; the `redis` crate and `integration-core/redis` |
//!
//! Without features the crate compiles no Redis client: [`MemoryStore`] or a
//! [`store::RateLimitStore`] of your own.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod error;
mod flight;
pub mod future;
mod gcra;
mod key;
mod layer;
mod limiter;
mod policy;
mod service;
pub mod store;

pub use error::{InvalidAdaptation, InvalidQuota};
pub use key::{DefaultKey, MakeKey, RateLimitKey};
pub use layer::RateLimitLayer;
pub use limiter::{RateLimiter, server_pause};
pub use policy::{Adaptation, Quota, RateLimitPolicy};
pub use service::RateLimit;
pub use store::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::{RedisOptions, RedisStore, SharedKeyState};
