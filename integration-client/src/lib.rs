//! One client for every third-party HTTP API: auth, rate limits, retries, logging and live
//! configuration, assembled from tower layers.
//!
//! A [`Client`] holds named APIs. Each is described by an
//! [`IntegrationConfig`](integration_config::IntegrationConfig) (base URL, default headers, timeouts,
//! and a section per layer) and served by its own tower stack, built in the order below. Requests are
//! built from an [`Api`] handle; responses come back with their status, headers, body (capped when
//! read whole) and the number of attempts the call took. Errors are one type,
//! [`integration_core::Error`], that always names the integration.
//!
//! # Quick start
//!
//! ```
//! use integration_client::Client;
//! use integration_config::{IntegrationConfig, Secret};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = wiremock::MockServer::start().await;
//! # wiremock::Mock::given(wiremock::matchers::path("/users/octocat"))
//! #     .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({"login": "octocat"})))
//! #     .mount(&server)
//! #     .await;
//! # let base_url = server.uri(); // "https://api.github.com" in real life
//! let client = Client::builder()
//!     .api(
//!         "github",
//!         IntegrationConfig::builder(base_url)
//!             .user_agent("acme-backend/1.0")
//!             .bearer(Secret::new("ghp_example")) // usually Secret::from_env("GITHUB_TOKEN")
//!             .max_attempts(4)
//!             .build()?,
//!     )
//!     .build()?;
//!
//! let user: serde_json::Value = client
//!     .api("github")?
//!     .get("/users/octocat")
//!     .send()
//!     .await?
//!     .error_for_status()?
//!     .json()
//!     .await?;
//! assert_eq!(user["login"], "octocat");
//! # Ok(())
//! # }
//! ```
//!
//! The same integration in TOML, loaded with
//! [`Config::from_toml_str`](integration_config::Config::from_toml_str) or
//! [`Config::from_file`](integration_config::Config::from_file) and given to [`Client::from_config`]:
//!
//! ```toml
//! [integrations.github]
//! base_url = "https://api.github.com"
//! user_agent = "acme-backend/1.0"
//! auth = { type = "bearer", token = "${env:GITHUB_TOKEN}" }
//! retry = { max_attempts = 4 }
//! ```
//!
//! `cargo run -p integration-client --example tour` shows every layer at work against a loopback fake
//! API (a burst through the whole stack, an attempt timeout and a deadline firing, the circuit breaker
//! opening and closing again), with a short summary; `-- --raw-metrics` adds the Prometheus
//! exposition.
//!
//! # Beyond JSON
//!
//! What a reqwest user reaches for is here too: per-request
//! [`bearer_auth`](RequestBuilder::bearer_auth) and [`basic_auth`](RequestBuilder::basic_auth)
//! (replacing the integration's own credential for that request), [`multipart`] uploads streamed
//! from files, [`RequestBuilder::try_clone`], [`Response::url`] (the final URL after redirects),
//! [`Response::remote_addr`] and [`Response::bytes_stream`].
//!
//! # The stack
//!
//! [`stack::build_stack`] assembles each API's stack, outermost first:
//!
//! | layer | crate | does |
//! | --- | --- | --- |
//! | `LogLayer` | `integration-log` | one span per logical call, final outcome, `http.client.request.duration` |
//! | `DeadlineLayer` | `integration-retry` | total deadline (`timeout`), written into the request; the [`Response`] carries it onto the body |
//! | `RetryLayer` | `integration-retry` | attempts, backoff, `Retry-After`, budget, idempotency rules |
//! | `CircuitBreakerLayer` | `integration-retry` | fail fast while the upstream is known broken |
//! | `RateLimitLayer` | `integration-ratelimit` | one permit per attempt; server throttle pauses |
//! | `AuthLayer` | `integration-auth` | a fresh credential per attempt; a 401 invalidates it |
//! | `AttemptLogLayer` | `integration-log` | one span per attempt (at `debug` by default: `log.attempt_span_level`) |
//! | `AttemptTimeoutLayer` | `integration-retry` | bound on one attempt (`attempt_timeout`) |
//! | [`Transport`](transport::Transport) | here | pooled hyper connections (a pool of its own), rustls, HTTP/1.1 and HTTP/2, decompression, safe redirects |
//!
//! The stack is boxed once at the top ([`stack::HttpService`]); [`Api::service`] hands it out for
//! users who compose their own, and [`Client::from_service`] builds a client over any tower service.
//!
//! # Safety rails
//!
//! - Paths join under the base URL; a path that could leave it (absolute or scheme-relative URL, `..`
//!   raw or percent-encoded, backslashes) is refused with
//!   [`ErrorKind::Request`](integration_core::ErrorKind::Request) before anything is sent.
//! - Certificates are always verified (webpki roots by default; platform roots and extra CAs by
//!   option); client certificates by option. There is no switch to turn verification off.
//! - Redirects are bounded (10), never go from `https` to `http`, and drop `Authorization`, cookies,
//!   API-key headers and every header the auth layer set (it marks them sensitive, whatever their
//!   name) when the origin changes.
//! - An integration's credential is redacted under any name: a header the auth layer set by its
//!   sensitive mark, an API key's header or query parameter (`?appid=`) by the name configured, which
//!   the facade puts on the integration's deny list.
//! - [`Response::bytes`], [`text`](Response::text) and [`json`](Response::json) stop at the
//!   integration's `max_response_bytes` (10 MiB by default). A body that does not decode fails with a
//!   [`JsonError`] as the source: the field's path, line and column, never the body's content.
//!
//! # Live configuration
//!
//! [`Client::update`] applies a new [`Config`](integration_config::Config): only integrations whose
//! configuration changed are rebuilt, each section's state (rate limiter, retry budget, breaker, token
//! cache) is kept when that section is unchanged, the swap is atomic (calls in flight finish on the old
//! stack), and a removed integration answers new calls with a clear error. [`Client::shutdown`] stops
//! taking calls and waits, up to a bound, for those in flight.
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `redis` | off | `store = "redis"` for rate limits and tokens, the `[redis]` section opened by [`Client::connect`], `ClientBuilder::redis`; enables `redis` on `integration-core`, `integration-auth` and `integration-ratelimit` |
//! | `postgres` | off | `integration_config::PgStore` and its LISTEN/NOTIFY watch, to feed [`Client::follow`]; enables `postgres` on `integration-config` |
//! | `full` | off | both |
//!
//! With no feature every integration runs in memory and the build compiles neither a Redis client nor
//! a database driver. A configuration that asks for a store this build lacks (`store = "redis"`, a
//! `[redis]` section given to [`Client::connect`]) is refused with [`ErrorKind::Config`](integration_core::ErrorKind::Config) and a
//! [`FeatureDisabled`](integration_core::error::FeatureDisabled) source naming the key and the
//! feature; it never falls back to memory silently. The README's "Cargo features" section gives what
//! each feature costs.
//!
//! TLS is rustls with the `ring` provider only (passed explicitly, so a second provider elsewhere in
//! the build cannot cause a runtime panic); HTTP/1.1 and HTTP/2 are both compiled in; decompression
//! covers gzip, deflate and brotli.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod decode;
mod graphql;
pub mod multipart;
mod path;
mod pool;
mod proxy;
mod redirect;
mod request;
mod response;
pub mod stack;
pub mod transport;

pub use client::{Api, Client, ClientBuilder, UpdateReport};
pub use decode::JsonError;
pub use graphql::{GraphQlError, GraphQlErrorItem, GraphQlRequest, OperationKind, operation_kind};
pub use integration_cache::CacheStatus;
pub use redirect::is_credential_header;
pub use request::{RequestBuilder, SendFuture};
pub use response::{BytesStream, Response, ResponseBody};

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
