//! The one redaction engine, [`integration_core::redact`], re-exported where the logging layer's
//! users look for it.
//!
//! There is a single implementation, in `integration-core`, so that a log line, a span field, the
//! facade's redirect rule and an [`integration_core::Error`]'s own `Debug` and `{:#}` all hide the
//! same secrets the same way. Everything here *is* the core item: a [`Redactor`] built from either
//! path is the same type. See [`integration_core::redact`] for the name rule, what is redacted where,
//! and the limits.
//!
//! ```
//! use integration_log::redact::Redactor;
//!
//! let redactor = Redactor::default().deny(["x-customer-ref"]).allow(["x-request-key"]);
//! let uri: http::Uri = "https://u:p@api.example.com/v1/items?api_key=s3cr3t&page=2".parse().unwrap();
//! assert_eq!(
//!     redactor.redact_url(&uri),
//!     "https://[REDACTED]:[REDACTED]@api.example.com/v1/items?api_key=[REDACTED]&page=2"
//! );
//! let body = br#"{"user":{"name":"ana","password":"hunter2"},"tokens":[{"refresh_token":"r1"}]}"#;
//! assert_eq!(
//!     redactor.redact_body(Some("application/json"), body),
//!     r#"{"user":{"name":"ana","password":"[REDACTED]"},"tokens":"[REDACTED]"}"#
//! );
//! assert!(redactor.is_sensitive("X-Customer-Ref"));
//! assert!(!redactor.is_sensitive("x-request-key"));
//!
//! // The very type core's errors and every other crate use.
//! let _: integration_core::redact::Redactor = redactor;
//! ```

pub use integration_core::redact::*;
