//! The shared vocabulary of the API integration layer: one error type, one response classifier, one
//! throttle-signal parser, the request extensions every layer reads, and a body that can be replayed.
//!
//! Every layer crate (`integration-auth`, `integration-ratelimit`, `integration-retry`,
//! `integration-log`) depends on this crate and nothing else of ours, so a layer taken alone into a
//! plain `tower::ServiceBuilder` still speaks the same language as the full client.
//!
//! # Classifying a response
//!
//! The retry rules of the design live in [`classify::DefaultClassifier`]: which methods are safe to
//! repeat, which statuses are worth another attempt, and what the server asked us to wait.
//!
//! ```
//! use http::{HeaderMap, Method, StatusCode};
//! use integration_core::classify::{Classification, Classify, DefaultClassifier, RequestMeta, RetryReason};
//! use std::time::{Duration, SystemTime};
//!
//! let classifier = DefaultClassifier::new();
//! let get = RequestMeta::new(Method::GET);
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "2".parse().unwrap());
//!
//! // A throttled GET is retried, no sooner than the server asked.
//! let outcome = classifier.classify_response(&get, StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::UNIX_EPOCH);
//! assert_eq!(outcome.retry_reason(), Some(RetryReason::Throttled));
//! assert_eq!(outcome.retry_after(), Some(Duration::from_secs(2)));
//!
//! // The same answer to a POST without an idempotency key is final: it may have been processed.
//! let post = RequestMeta::new(Method::POST);
//! let outcome = classifier.classify_response(&post, StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), SystemTime::UNIX_EPOCH);
//! assert!(matches!(outcome, Classification::Fail { .. }));
//!
//! // With an Idempotency-Key it is safe again.
//! let keyed = RequestMeta::new(Method::POST).with_idempotent(true);
//! let outcome = classifier.classify_response(&keyed, StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), SystemTime::UNIX_EPOCH);
//! assert!(outcome.is_retryable());
//! ```
//!
//! # Parsing throttle signals
//!
//! ```
//! use http::HeaderMap;
//! use integration_core::throttle::ThrottleSignal;
//! use std::time::{Duration, SystemTime};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("ratelimit-policy", "\"default\";q=100;w=60".parse().unwrap());
//! headers.insert("ratelimit", "\"default\";r=0;t=30".parse().unwrap());
//! let signal = ThrottleSignal::from_headers(&headers, SystemTime::UNIX_EPOCH);
//! assert_eq!(signal.remaining, Some(0));
//! // Nothing remains until the window resets: every caller of the key pauses for 30 s.
//! assert_eq!(signal.pause(), Some(Duration::from_secs(30)));
//! ```
//!
//! # Redacting secrets
//!
//! [`redact::Redactor`] is the one redaction engine: the logging layer re-exports it, and
//! [`Error`] runs every foreign cause through its text rule before showing it.
//!
//! ```
//! use integration_core::{Error, ErrorKind};
//! use std::io;
//!
//! let cause = io::Error::other("GET https://api.example.com/v1?api_key=s3cr3t failed; Authorization: Bearer eyJhbGc");
//! let error = Error::new(ErrorKind::Other).with_integration("stripe").with_source(cause);
//! assert_eq!(
//!     format!("{error:#}"),
//!     "integration `stripe`: request failed: GET https://api.example.com/v1?api_key=[REDACTED] failed; Authorization: [REDACTED]"
//! );
//! assert!(!format!("{error:?}").contains("s3cr3t"));
//! ```
//!
//! # Feature flags
//!
//! - `redis` (off): [`SharedRedis`](crate::redis::SharedRedis), the one bounded way every Redis-backed layer talks to
//!   Redis (command and connection timeouts, outage noticed at once, return probed in the
//!   background). The layer crates with a Redis store turn it on.
//! - `test-util` (off): `redact::Redactor::calls`, a count of redactions, for tests that show a
//!   disabled log level formats nothing; and `testing`, a capture of `tracing` spans and events
//!   that stays correct when tests run in parallel (why a thread-local subscriber per test does
//!   not is explained there). Meant for dev-dependencies only.

pub mod authority;
pub mod body;
pub mod classify;
pub mod error;
pub mod ext;
pub mod kept;
pub mod names;
pub mod redact;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod throttle;

pub use body::{Body, TryCloneBody};
pub use classify::{Classification, Classify, DefaultClassifier, RequestMeta, RetryReason};
pub use error::{BoxError, Error, ErrorKind};
pub use throttle::ThrottleSignal;
