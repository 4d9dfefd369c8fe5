//! Why the gateway could not start.

use std::fmt;
use std::io;

use integration_core::BoxError;

/// The gateway could not start: an address that cannot be bound, a configuration that does not
/// load, caller authentication without a usable token.
///
/// Once serving, the gateway does not fail: per-request problems become responses, and a
/// configuration that stops loading leaves the last good one in force.
#[derive(Debug)]
pub struct GatewayError {
    kind: Kind,
    message: String,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bind,
    Config,
    CallerAuth,
}

impl GatewayError {
    pub(crate) fn bind(address: std::net::SocketAddr, source: io::Error) -> Self {
        GatewayError {
            kind: Kind::Bind,
            message: format!("cannot listen on {address}"),
            source: Some(source.into()),
        }
    }

    pub(crate) fn config(message: impl Into<String>, source: Option<BoxError>) -> Self {
        GatewayError {
            kind: Kind::Config,
            message: message.into(),
            source,
        }
    }

    pub(crate) fn caller_auth(message: impl Into<String>) -> Self {
        GatewayError {
            kind: Kind::CallerAuth,
            message: message.into(),
            source: None,
        }
    }

    /// An address could not be bound.
    pub fn is_bind(&self) -> bool {
        self.kind == Kind::Bind
    }

    /// The configuration (file, database, Redis URL) could not be loaded or is invalid.
    pub fn is_config(&self) -> bool {
        self.kind == Kind::Config
    }

    /// Caller authentication is on but has no usable token.
    pub fn is_caller_auth(&self) -> bool {
        self.kind == Kind::CallerAuth
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source is not repeated here: it is `source()`, for whoever prints the chain.
        f.write_str(&self.message)
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// An error and its sources on one line (`a: b: c`), for logs.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message: do not say it twice.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
