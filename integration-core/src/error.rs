//! The one error type of the integration layer, and the small typed errors each layer returns.
//!
//! Layers return their failures as small typed errors (below), boxed into [`BoxError`] like any tower
//! middleware, so they compose with other tower layers. The facade (or a user's own stack) turns any
//! [`BoxError`] into an [`Error`] with [`Error::from`], which recognises our typed errors, the
//! transport's (hyper-util connect errors, hyper's, io errors) and tower's `Elapsed`.
//!
//! ```
//! use integration_core::{BoxError, Error, ErrorKind};
//! use integration_core::error::RateLimited;
//! use std::time::Duration;
//!
//! let boxed: BoxError = Box::new(RateLimited::new(Some(Duration::from_secs(3))));
//! let error = Error::from(boxed).with_integration("stripe").with_attempts(2);
//! assert_eq!(error.kind(), ErrorKind::RateLimited);
//! assert!(error.is_rate_limited());
//! assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
//! assert_eq!(error.to_string(), "integration `stripe`, attempt 2: rate limited by the client quota; retry after 3s");
//! ```

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::classify::RetryReason;
use crate::ext::IntegrationName;
use crate::redact;

/// The boxed error every tower layer here speaks: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, in a form a program can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No connection could be made: DNS, refused, TLS handshake. Nothing was sent.
    Connect,
    /// One attempt took longer than the attempt timeout, or the response body was still being read
    /// when the call's deadline passed ([`BodyTimeout`]).
    Timeout,
    /// The total deadline of the call passed (or would have, had we waited as asked).
    Deadline,
    /// The upstream answered with an error status.
    Status,
    /// A rate limit stopped the call: the client's quota, or the server's throttle signal.
    RateLimited,
    /// The circuit breaker is open for this upstream.
    CircuitOpen,
    /// The retry budget is spent: retrying now would feed a retry storm.
    BudgetExhausted,
    /// No credential could be had, or the upstream's token endpoint refused (`invalid_grant`).
    Auth,
    /// The configuration is invalid or names something unknown.
    Config,
    /// The request could not be built: a bad URL, a path leaving its origin, a body that would not encode.
    Request,
    /// Reading or decoding a body failed, or it was larger than its cap.
    Body,
    /// The call was cancelled (the client is shutting down, or the connection was dropped by us).
    Cancelled,
    /// Anything else: the connection broke after the request was sent, a protocol error.
    Other,
}

impl ErrorKind {
    /// A short snake_case name, stable for metrics labels and `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Deadline => "deadline_exceeded",
            ErrorKind::Status => "status",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::BudgetExhausted => "retry_budget_exhausted",
            ErrorKind::Auth => "auth",
            ErrorKind::Config => "config",
            ErrorKind::Request => "request",
            ErrorKind::Body => "body",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of any error, found the way [`Error::from_boxed`] finds it, without taking the
    /// error: our typed errors, an [`Error`] anywhere in the chain (one of kind
    /// [`Other`](ErrorKind::Other) defers to its causes), hyper-util's connect errors, hyper's
    /// errors, io errors and tower's `Elapsed`; [`Other`](ErrorKind::Other) for anything else.
    ///
    /// For a layer that passes an error through unchanged but still labels it (logs, metrics).
    ///
    /// ```
    /// use integration_core::ErrorKind;
    /// use integration_core::error::CircuitOpen;
    /// use std::io;
    ///
    /// assert_eq!(ErrorKind::of(&CircuitOpen::new(None)), ErrorKind::CircuitOpen);
    /// assert_eq!(ErrorKind::of(&io::Error::from(io::ErrorKind::ConnectionRefused)), ErrorKind::Connect);
    /// assert_eq!(ErrorKind::of(&io::Error::other("protocol error")), ErrorKind::Other);
    /// ```
    pub fn of(error: &(dyn StdError + 'static)) -> ErrorKind {
        inspect(error).kind
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Connect => "could not connect",
            ErrorKind::Timeout => "attempt timed out",
            ErrorKind::Deadline => "deadline exceeded",
            ErrorKind::Status => "upstream answered with an error status",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::CircuitOpen => "circuit breaker is open",
            ErrorKind::BudgetExhausted => "retry budget exhausted",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Request => "invalid request",
            ErrorKind::Body => "body error",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Other => "request failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of a call through the integration layer.
///
/// Opaque on purpose: match on [`kind()`](Error::kind) or the `is_*` predicates, read the context
/// ([`integration()`](Error::integration), [`attempts()`](Error::attempts), [`status()`](Error::status),
/// [`retry_after()`](Error::retry_after)) and walk [`source()`](std::error::Error::source) for the cause.
///
/// `Display` says which integration, which attempt and why, in one line, from our own words only. The
/// alternate form (`{:#}`) appends the chain of causes, and `Debug` shows the cause's own `Debug`.
/// A foreign cause (the transport's, a user's service's) may put anything in its message, so its text
/// goes through the [text rule](crate::redact#what-is-redacted-where) of the one redaction engine
/// first: a URL's userinfo and secret query parameters, `Bearer <token>` credentials and
/// `password=...`-style pairs are shown as `[REDACTED]`. Our typed errors' messages hold no secret and
/// are shown as they are.
///
/// ```
/// use integration_core::{Error, ErrorKind};
/// use std::io;
///
/// let cause = io::Error::other("connect to https://app:hunter2@db.example.com failed");
/// let error = Error::new(ErrorKind::Connect).with_source(cause);
/// assert_eq!(error.to_string(), "could not connect");
/// assert_eq!(format!("{error:#}"), "could not connect: connect to https://[REDACTED]@db.example.com failed");
/// assert!(!format!("{error:?}").contains("hunter2"));
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    integration: Option<IntegrationName>,
    attempts: u32,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    message: Option<Cow<'static, str>>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with no context yet.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                integration: None,
                attempts: 0,
                status: None,
                retry_after: None,
                message: None,
                source: None,
            }),
        }
    }

    /// An error status from the upstream (`kind() == Status`).
    pub fn status_error(status: StatusCode) -> Self {
        Self::new(ErrorKind::Status).with_status(status)
    }

    /// Names the integration (kept if already set by an inner layer).
    #[must_use]
    pub fn with_integration(mut self, name: impl Into<IntegrationName>) -> Self {
        if self.inner.integration.is_none() {
            self.inner.integration = Some(name.into());
        }
        self
    }

    /// Records how many attempts the call took.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    /// Records the upstream's status.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Records when trying again makes sense.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner.retry_after = Some(retry_after);
        self
    }

    /// A short detail for `Display`. It must never contain a secret: no header values, bodies or queries.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.inner.message = Some(message.into());
        self
    }

    /// Sets the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The integration the call belonged to, when known.
    pub fn integration(&self) -> Option<&str> {
        self.inner.integration.as_ref().map(IntegrationName::as_str)
    }

    /// Attempts made before this error (0 when unknown, e.g. a failure before the first attempt).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// The upstream's HTTP status, for status errors and throttling answers.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// When trying again makes sense, if anyone said: the server's `Retry-After`, the quota's next
    /// permit, the breaker's reopening.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// True for [`ErrorKind::Connect`].
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }

    /// True for [`ErrorKind::Timeout`] and [`ErrorKind::Deadline`]: the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout | ErrorKind::Deadline)
    }

    /// True for [`ErrorKind::Deadline`].
    pub fn is_deadline(&self) -> bool {
        self.inner.kind == ErrorKind::Deadline
    }

    /// True for [`ErrorKind::Status`].
    pub fn is_status(&self) -> bool {
        self.inner.kind == ErrorKind::Status
    }

    /// True for [`ErrorKind::RateLimited`].
    pub fn is_rate_limited(&self) -> bool {
        self.inner.kind == ErrorKind::RateLimited
    }

    /// True for [`ErrorKind::CircuitOpen`].
    pub fn is_circuit_open(&self) -> bool {
        self.inner.kind == ErrorKind::CircuitOpen
    }

    /// True for [`ErrorKind::BudgetExhausted`].
    pub fn is_budget_exhausted(&self) -> bool {
        self.inner.kind == ErrorKind::BudgetExhausted
    }

    /// True for [`ErrorKind::Auth`].
    pub fn is_auth(&self) -> bool {
        self.inner.kind == ErrorKind::Auth
    }

    /// True for [`ErrorKind::Config`].
    pub fn is_config(&self) -> bool {
        self.inner.kind == ErrorKind::Config
    }

    /// True for [`ErrorKind::Request`].
    pub fn is_request(&self) -> bool {
        self.inner.kind == ErrorKind::Request
    }

    /// True for [`ErrorKind::Body`].
    pub fn is_body(&self) -> bool {
        self.inner.kind == ErrorKind::Body
    }

    /// True for [`ErrorKind::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }

    /// Converts any boxed error into an [`Error`], recognising the typed errors of our layers, an
    /// [`Error`] boxed by an inner layer (returned as it was), hyper-util's connect errors, hyper's
    /// errors, io errors and tower's `Elapsed` anywhere in the source chain.
    pub fn from_boxed(error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(error) => return *error,
            Err(error) => error,
        };
        let facts = inspect(&*error);
        let mut out = Error::new(facts.kind);
        out.inner.status = facts.status;
        out.inner.retry_after = facts.retry_after;
        if typed_facts(&*error).is_some() {
            // Our typed errors say precisely what happened, in words that hold no secret.
            out.inner.message = Some(Cow::Owned(error.to_string()));
        }
        out.inner.source = Some(error);
        out
    }
}

impl From<BoxError> for Error {
    fn from(error: BoxError) -> Self {
        Error::from_boxed(error)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(name) = &self.inner.integration {
            d.field("integration", name);
        }
        if self.inner.attempts > 0 {
            d.field("attempts", &self.inner.attempts);
        }
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(retry_after) = self.inner.retry_after {
            d.field("retry_after", &retry_after);
        }
        if let Some(message) = &self.inner.message {
            d.field("message", message);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", &RedactedDebug(&**source));
        }
        d.finish()
    }
}

/// True for the errors whose messages are ours, and so hold no secret: [`Error`] (which redacts its
/// own causes) and the typed errors of this module.
fn is_ours(error: &(dyn StdError + 'static)) -> bool {
    error.is::<Error>() || typed_facts(error).is_some()
}

/// A cause's `Debug`, through the default text rule when the cause is foreign.
struct RedactedDebug<'a>(&'a (dyn StdError + 'static));

impl fmt::Debug for RedactedDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_ours(self.0) {
            return fmt::Debug::fmt(self.0, f);
        }
        // The whole `Debug` at once: a foreign error's `Debug` usually nests its own causes'.
        let text = if f.alternate() {
            format!("{:#?}", self.0)
        } else {
            format!("{:?}", self.0)
        };
        f.write_str(&redact::default_text(&text))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        match (&inner.integration, inner.attempts) {
            (Some(name), 0) => write!(f, "integration `{name}`: ")?,
            (Some(name), n) => write!(f, "integration `{name}`, attempt {n}: ")?,
            (None, 0) => {}
            (None, n) => write!(f, "attempt {n}: ")?,
        }
        match (&inner.message, inner.kind, inner.status) {
            (Some(message), _, _) => f.write_str(message)?,
            (None, ErrorKind::Status, Some(status)) => write!(f, "upstream answered {status}")?,
            (None, kind, _) => f.write_str(kind.describe())?,
        }
        if inner.kind != ErrorKind::Status
            && let Some(status) = inner.status
        {
            write!(f, " (upstream answered {status})")?;
        }
        if let Some(retry_after) = inner.retry_after {
            write!(f, "; retry after {}", DisplayDuration(retry_after))?;
        }
        if f.alternate() {
            let mut source = StdError::source(self);
            while let Some(cause) = source {
                let text = cause.to_string();
                if inner.message.as_deref() != Some(text.as_str()) {
                    if is_ours(cause) {
                        write!(f, ": {text}")?;
                    } else {
                        write!(f, ": {}", redact::default_text(&text))?;
                    }
                }
                source = cause.source();
            }
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Formats a duration the way people read it: `3s`, `1.5s`, `250ms`.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.as_secs() > 0 && d.subsec_millis() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_secs() > 0 {
            write!(f, "{:.1}s", d.as_secs_f64())
        } else {
            write!(f, "{}ms", d.as_millis())
        }
    }
}

/// What [`inspect`] learned about an error chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) kind: ErrorKind,
    /// How the retry rules see the failure, when it is one they know.
    pub(crate) retry: Option<RetryReason>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) retry_after: Option<Duration>,
}

/// Walks an error chain and recognises what it is, outermost knowledge first.
pub(crate) fn inspect(error: &(dyn StdError + 'static)) -> Facts {
    let mut facts = Facts {
        kind: ErrorKind::Other,
        retry: None,
        status: None,
        retry_after: None,
    };
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(ours) = e.downcast_ref::<Error>() {
            facts.kind = ours.kind();
            facts.status = ours.status();
            facts.retry_after = ours.retry_after();
            facts.retry = match ours.kind() {
                ErrorKind::Connect => Some(RetryReason::Connect),
                ErrorKind::Timeout => Some(RetryReason::Timeout),
                _ => None,
            };
            if ours.kind() != ErrorKind::Other {
                return facts;
            }
        } else if let Some(typed) = typed_facts(e) {
            return typed;
        } else if e.is::<tower::timeout::error::Elapsed>() {
            facts.kind = ErrorKind::Timeout;
            facts.retry = Some(RetryReason::Timeout);
            return facts;
        } else if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                facts.kind = ErrorKind::Connect;
                facts.retry = Some(RetryReason::Connect);
                return facts;
            }
        } else if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() {
                facts.retry = Some(RetryReason::Reset);
                return facts;
            }
            if hyper.is_canceled() {
                // The pool gave the request back before it reached the wire.
                facts.retry = Some(RetryReason::Reset);
                return facts;
            }
            if hyper.is_timeout() {
                facts.kind = ErrorKind::Timeout;
                facts.retry = Some(RetryReason::Timeout);
                return facts;
            }
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::ConnectionRefused
                | Io::AddrNotAvailable
                | Io::HostUnreachable
                | Io::NetworkUnreachable => {
                    facts.kind = ErrorKind::Connect;
                    facts.retry = Some(RetryReason::Connect);
                }
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::UnexpectedEof => {
                    facts.retry = Some(RetryReason::Reset);
                }
                Io::TimedOut => {
                    facts.kind = ErrorKind::Timeout;
                    facts.retry = Some(RetryReason::Timeout);
                }
                _ => {}
            }
            return facts;
        }
        current = e.source();
    }
    facts
}

fn typed_facts(e: &(dyn StdError + 'static)) -> Option<Facts> {
    let facts = |kind, retry_after, status| Facts {
        kind,
        retry: None,
        status,
        retry_after,
    };
    if let Some(e) = e.downcast_ref::<RateLimited>() {
        return Some(facts(ErrorKind::RateLimited, e.retry_after, e.status));
    }
    if let Some(e) = e.downcast_ref::<CircuitOpen>() {
        return Some(facts(ErrorKind::CircuitOpen, e.retry_after, None));
    }
    if let Some(e) = e.downcast_ref::<BudgetExhausted>() {
        return Some(facts(ErrorKind::BudgetExhausted, None, e.status));
    }
    if let Some(e) = e.downcast_ref::<DeadlineExceeded>() {
        return Some(facts(ErrorKind::Deadline, e.retry_after, e.status));
    }
    if e.is::<AttemptTimeout>() {
        return Some(Facts {
            kind: ErrorKind::Timeout,
            retry: Some(RetryReason::Timeout),
            status: None,
            retry_after: None,
        });
    }
    if let Some(e) = e.downcast_ref::<AuthFailed>() {
        // No credential, so the request was never sent: a transient failure may pass (the retry
        // layer waits for the cool-down it carries); a permanent one cannot.
        return Some(Facts {
            kind: ErrorKind::Auth,
            retry: (!e.permanent).then_some(RetryReason::CredentialUnavailable),
            status: None,
            retry_after: e.retry_after,
        });
    }
    if e.is::<BodyTooLarge>() {
        return Some(facts(ErrorKind::Body, None, None));
    }
    if e.is::<FeatureDisabled>() {
        return Some(facts(ErrorKind::Config, None, None));
    }
    if e.is::<ConnectFailed>() {
        return Some(Facts {
            kind: ErrorKind::Connect,
            retry: Some(RetryReason::Connect),
            status: None,
            retry_after: None,
        });
    }
    if e.is::<BodyTimeout>() {
        // After the response head: the retry layer has already let the call go, nothing to retry.
        return Some(facts(ErrorKind::Timeout, None, None));
    }
    None
}

/// A rate limit stopped the call: the client's own quota said no (or would have made it wait longer
/// than allowed), or the server's throttle signal paused the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Option<Duration>,
    status: Option<StatusCode>,
    by_server: bool,
}

impl RateLimited {
    /// The client quota refused; a permit is free again after `retry_after`, when known.
    pub fn new(retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            status: None,
            by_server: false,
        }
    }

    /// The server throttled the key (a 429, a 503 with `Retry-After`, remaining zero) and asked for a
    /// wait longer than this client accepts.
    pub fn by_server(retry_after: Option<Duration>, status: Option<StatusCode>) -> Self {
        Self {
            retry_after,
            status,
            by_server: true,
        }
    }

    /// When to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The upstream's status, when the server did the throttling.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// True when the upstream's signal, not the client's quota, did the limiting.
    pub fn is_by_server(&self) -> bool {
        self.by_server
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.by_server {
            f.write_str("rate limited by the upstream")
        } else {
            f.write_str("rate limited by the client quota")
        }
    }
}

impl StdError for RateLimited {}

/// The circuit breaker is open: the upstream failed too often lately, so the call was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// Open until `retry_after` from now, when known.
    pub fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// When the breaker lets a probe through.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker is open; the call was not sent")
    }
}

impl StdError for CircuitOpen {}

/// The retry budget is spent: the call failed in a way worth retrying, but retries already exceed
/// their share of traffic, so it fails fast instead of feeding a retry storm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetExhausted {
    status: Option<StatusCode>,
}

impl BudgetExhausted {
    /// The budget refused a retry after an attempt that ended with `status` (None for a transport error).
    pub fn new(status: Option<StatusCode>) -> Self {
        Self { status }
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("retry budget exhausted; not retrying")
    }
}

impl StdError for BudgetExhausted {}

/// The total deadline passed, or the wait the next attempt needs would pass it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    retry_after: Option<Duration>,
    status: Option<StatusCode>,
}

impl DeadlineExceeded {
    /// The deadline passed.
    pub fn new() -> Self {
        Self {
            retry_after: None,
            status: None,
        }
    }

    /// The next attempt would have to wait `retry_after` (after an answer of `status`), which is past
    /// the deadline: failing now instead of sleeping into the timeout.
    pub fn would_wait(retry_after: Duration, status: Option<StatusCode>) -> Self {
        Self {
            retry_after: Some(retry_after),
            status,
        }
    }

    /// The wait that did not fit, when that is why.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl Default for DeadlineExceeded {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(_) => {
                f.write_str("deadline exceeded: the next attempt would have to wait past it")
            }
            None => f.write_str("deadline exceeded"),
        }
    }
}

impl StdError for DeadlineExceeded {}

/// One attempt took longer than the attempt timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTimeout {
    after: Duration,
}

impl AttemptTimeout {
    /// The attempt was abandoned after `after`.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long the attempt was given.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {}", DisplayDuration(self.after))
    }
}

impl StdError for AttemptTimeout {}

/// No credential could be obtained or the upstream refused it for good.
///
/// Carries the provider's OAuth error code (`invalid_grant`, `invalid_client`) when there is one, and a
/// description that the auth layer has checked holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailed {
    code: Option<Cow<'static, str>>,
    description: Cow<'static, str>,
    permanent: bool,
    retry_after: Option<Duration>,
    endpoint: Option<Cow<'static, str>>,
}

impl AuthFailed {
    /// A failure that may pass (the token endpoint was down, say).
    pub fn transient(description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: None,
            description: description.into(),
            permanent: false,
            retry_after: None,
            endpoint: None,
        }
    }

    /// A final refusal with the provider's error code (`invalid_grant`, `invalid_client`): retrying
    /// cannot help until someone fixes the credential.
    pub fn permanent(
        code: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            code: Some(code.into()),
            description: description.into(),
            permanent: true,
            retry_after: None,
            endpoint: None,
        }
    }

    /// The same failure, with when a new attempt to get a credential may be made (the auth
    /// layer's cool-down after a failed refresh). A transient failure is retried by the retry
    /// layer, no sooner than this.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The same failure, naming the token endpoint that failed. Give the URL without its query
    /// (which may carry a credential) and without userinfo; [`Display`](fmt::Display) shows it:
    ///
    /// ```
    /// use integration_core::error::AuthFailed;
    ///
    /// let error = AuthFailed::transient("token endpoint answered 503 Service Unavailable")
    ///     .with_endpoint("https://auth.example.com/oauth/token");
    /// assert_eq!(
    ///     error.to_string(),
    ///     "authentication failed at https://auth.example.com/oauth/token: token endpoint answered 503 Service Unavailable"
    /// );
    /// ```
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<Cow<'static, str>>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The token endpoint that failed, when known.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// When a new attempt to get a credential may be made, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The provider's error code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        match &self.code {
            Some(code) => write!(f, " ({code}): {}", self.description),
            None => write!(f, ": {}", self.description),
        }
    }
}

impl StdError for AuthFailed {}

/// Why a connection could not be made, in a word or two: what [`ConnectFailed`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectCause {
    /// The host answered that nothing listens on the port.
    Refused,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed because the server's certificate was not accepted (unknown issuer,
    /// expired, not valid for the name).
    TlsCertificate,
    /// The TLS handshake failed for another reason (no common protocol or cipher, an alert).
    Tls,
    /// The connection (TCP or TLS) was not made within the connect timeout.
    TimedOut,
    /// No route to the host or its network.
    Unreachable,
    /// The proxy answered the `CONNECT` with an error status (it will not reach the host).
    ProxyRefused,
    /// The proxy asked for credentials (`407 Proxy Authentication Required`): none were configured,
    /// or it refused those sent.
    ProxyAuth,
    /// Any other cause; the source chain says more.
    Other,
}

impl ConnectCause {
    /// The cause in a few words (`connection refused`, `DNS lookup failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectCause::Refused => "connection refused",
            ConnectCause::Dns => "DNS lookup failed",
            ConnectCause::TlsCertificate => "TLS certificate rejected",
            ConnectCause::Tls => "TLS handshake failed",
            ConnectCause::TimedOut => "timed out",
            ConnectCause::Unreachable => "host unreachable",
            ConnectCause::ProxyRefused => "the proxy refused the tunnel",
            ConnectCause::ProxyAuth => "the proxy requires authentication",
            ConnectCause::Other => "connection failed",
        }
    }
}

impl fmt::Display for ConnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// No connection could be made: names the host and port and the short cause, so that the one line
/// of `Display` says where and why. Nothing was sent, so it is retryable for every method.
///
/// Only the host and port are kept, never the URL's userinfo, path or query. The transport's own
/// error is the [`source`](StdError::source).
///
/// ```
/// use integration_core::{BoxError, Error, ErrorKind};
/// use integration_core::error::{ConnectCause, ConnectFailed};
///
/// let error = Error::from(Box::new(ConnectFailed::new("api.example.com", 443, ConnectCause::Refused)) as BoxError)
///     .with_integration("x")
///     .with_attempts(3);
/// assert_eq!(error.kind(), ErrorKind::Connect);
/// assert_eq!(
///     error.to_string(),
///     "integration `x`, attempt 3: could not connect to api.example.com:443 (connection refused)"
/// );
/// ```
pub struct ConnectFailed {
    host: String,
    port: u16,
    cause: ConnectCause,
    proxy: Option<(String, u16)>,
    source: Option<BoxError>,
}

impl ConnectFailed {
    /// A failure to connect to `host:port` because of `cause`.
    pub fn new(host: impl Into<String>, port: u16, cause: ConnectCause) -> Self {
        Self {
            host: host.into(),
            port,
            cause,
            proxy: None,
            source: None,
        }
    }

    /// The same failure, met on the way through the proxy at `host:port` (only its host and port
    /// are kept: never its credentials).
    ///
    /// ```
    /// use integration_core::error::{ConnectCause, ConnectFailed};
    ///
    /// let failed = ConnectFailed::new("api.example.com", 443, ConnectCause::Refused)
    ///     .with_proxy("proxy.corp", 3128);
    /// assert_eq!(failed.proxy(), Some(("proxy.corp", 3128)));
    /// assert_eq!(
    ///     failed.to_string(),
    ///     "could not connect to api.example.com:443 through the proxy proxy.corp:3128 (connection refused)"
    /// );
    /// ```
    #[must_use]
    pub fn with_proxy(mut self, host: impl Into<String>, port: u16) -> Self {
        self.proxy = Some((host.into(), port));
        self
    }

    /// The proxy the connection went through, when there was one: its host and port.
    pub fn proxy(&self) -> Option<(&str, u16)> {
        self.proxy
            .as_ref()
            .map(|(host, port)| (host.as_str(), *port))
    }

    /// The same failure with the transport's error as its source.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The host that could not be reached.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Why.
    pub fn cause(&self) -> ConnectCause {
        self.cause
    }
}

impl fmt::Debug for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ConnectFailed");
        d.field("host", &self.host)
            .field("port", &self.port)
            .field("cause", &self.cause);
        if let Some(proxy) = &self.proxy {
            d.field("proxy", proxy);
        }
        if let Some(source) = &self.source {
            // The transport's words, through the text rule like any foreign cause.
            d.field("source", &RedactedDebug(&**source));
        }
        d.finish()
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An IPv6 literal is already bracketed by `http::Uri::host`.
        write!(f, "could not connect to {}:{}", self.host, self.port)?;
        if let Some((host, port)) = &self.proxy {
            write!(f, " through the proxy {host}:{port}")?;
        }
        write!(f, " ({})", self.cause)
    }
}

impl StdError for ConnectFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A body was larger than the cap set for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: usize,
}

impl BodyTooLarge {
    /// The body passed `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The cap in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body is larger than its cap of {} bytes", self.limit)
    }
}

impl StdError for BodyTooLarge {}

/// The response body was still being read when its deadline passed: the call's total deadline by
/// default, which covers the body as well as the head, or a read timeout of its own.
///
/// ```
/// use integration_core::{BoxError, Error, ErrorKind};
/// use integration_core::error::BodyTimeout;
///
/// let error = Error::from(Box::new(BodyTimeout::new()) as BoxError).with_integration("slow");
/// assert_eq!(error.kind(), ErrorKind::Timeout);
/// assert!(error.is_timeout());
/// assert_eq!(
///     error.to_string(),
///     "integration `slow`: reading the response body timed out: the call's deadline passed"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyTimeout {
    after: Option<Duration>,
}

impl BodyTimeout {
    /// The call's deadline passed while the body was being read.
    pub fn new() -> Self {
        Self::default()
    }

    /// A read timeout of the body's own (`after`, set once the head had arrived) passed.
    pub fn after(after: Duration) -> Self {
        Self { after: Some(after) }
    }

    /// The body's own read timeout, when it had one rather than the call's deadline.
    pub fn timeout(&self) -> Option<Duration> {
        self.after
    }
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.after {
            Some(after) => write!(
                f,
                "reading the response body timed out after {}",
                DisplayDuration(after)
            ),
            None => f.write_str("reading the response body timed out: the call's deadline passed"),
        }
    }
}

impl StdError for BodyTimeout {}

/// The configuration asks for something this build left out: `store = "redis"` without the `redis`
/// cargo feature, for instance. Names the configuration key and the feature to enable, so the fix is
/// in the message; it is never silently ignored.
///
/// ```
/// use integration_core::{BoxError, Error, ErrorKind};
/// use integration_core::error::FeatureDisabled;
///
/// let error = Error::from(
///     Box::new(FeatureDisabled::new("integrations.github.rate_limit.store", "redis")) as BoxError,
/// );
/// assert_eq!(error.kind(), ErrorKind::Config);
/// assert_eq!(
///     error.to_string(),
///     "integrations.github.rate_limit.store: needs the `redis` cargo feature, which this build \
///      does not have (enable `redis` on integration-client, or `full`)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureDisabled {
    key: Cow<'static, str>,
    feature: &'static str,
}

impl FeatureDisabled {
    /// `key` (a configuration path) needs the cargo feature `feature`.
    pub fn new(key: impl Into<Cow<'static, str>>, feature: &'static str) -> Self {
        Self {
            key: key.into(),
            feature,
        }
    }

    /// The configuration key that asked for it (`integrations.github.rate_limit.store`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The cargo feature to enable (`redis`, `postgres`).
    pub fn feature(&self) -> &'static str {
        self.feature
    }
}

impl fmt::Display for FeatureDisabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: needs the `{}` cargo feature, which this build does not have (enable `{}` on \
             integration-client, or `full`)",
            self.key, self.feature, self.feature
        )
    }
}

impl StdError for FeatureDisabled {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn boxed(e: impl StdError + Send + Sync + 'static) -> BoxError {
        Box::new(e)
    }

    #[test]
    fn recognises_every_typed_layer_error() {
        let cases: Vec<(BoxError, ErrorKind)> = vec![
            (boxed(RateLimited::new(None)), ErrorKind::RateLimited),
            (boxed(CircuitOpen::new(None)), ErrorKind::CircuitOpen),
            (
                boxed(BudgetExhausted::new(None)),
                ErrorKind::BudgetExhausted,
            ),
            (boxed(DeadlineExceeded::new()), ErrorKind::Deadline),
            (
                boxed(AttemptTimeout::new(Duration::from_secs(1))),
                ErrorKind::Timeout,
            ),
            (
                boxed(AuthFailed::transient("token endpoint down")),
                ErrorKind::Auth,
            ),
            (boxed(BodyTooLarge::new(10)), ErrorKind::Body),
            (boxed(BodyTimeout::new()), ErrorKind::Timeout),
            (
                boxed(
                    ConnectFailed::new("h", 1, ConnectCause::Refused)
                        .with_source(io::Error::from(io::ErrorKind::ConnectionRefused)),
                ),
                ErrorKind::Connect,
            ),
            (
                boxed(tower::timeout::error::Elapsed::new()),
                ErrorKind::Timeout,
            ),
            (
                boxed(io::Error::from(io::ErrorKind::ConnectionRefused)),
                ErrorKind::Connect,
            ),
            (
                boxed(io::Error::from(io::ErrorKind::TimedOut)),
                ErrorKind::Timeout,
            ),
            (
                boxed(io::Error::from(io::ErrorKind::ConnectionReset)),
                ErrorKind::Other,
            ),
        ];
        for (error, kind) in cases {
            let shown = error.to_string();
            let error = Error::from(error);
            assert_eq!(error.kind(), kind, "{shown}");
            assert!(error.source().is_some(), "{shown} keeps its cause");
        }
    }

    #[test]
    fn kind_of_a_borrowed_error_matches_from_boxed() {
        let cases: Vec<(BoxError, ErrorKind)> = vec![
            (boxed(RateLimited::new(None)), ErrorKind::RateLimited),
            (boxed(CircuitOpen::new(None)), ErrorKind::CircuitOpen),
            (
                boxed(BudgetExhausted::new(None)),
                ErrorKind::BudgetExhausted,
            ),
            (boxed(DeadlineExceeded::new()), ErrorKind::Deadline),
            (
                boxed(AttemptTimeout::new(Duration::from_secs(1))),
                ErrorKind::Timeout,
            ),
            (boxed(AuthFailed::transient("down")), ErrorKind::Auth),
            (boxed(BodyTooLarge::new(1)), ErrorKind::Body),
            (
                boxed(tower::timeout::error::Elapsed::new()),
                ErrorKind::Timeout,
            ),
            (
                boxed(io::Error::from(io::ErrorKind::ConnectionRefused)),
                ErrorKind::Connect,
            ),
            (
                boxed(io::Error::from(io::ErrorKind::ConnectionReset)),
                ErrorKind::Other,
            ),
            (
                boxed(Error::status_error(StatusCode::BAD_GATEWAY).with_integration("x")),
                ErrorKind::Status,
            ),
            (boxed(io::Error::other("opaque")), ErrorKind::Other),
        ];
        for (error, kind) in cases {
            assert_eq!(ErrorKind::of(&*error), kind, "{error}");
            assert_eq!(Error::from(error).kind(), kind);
        }
        // An `Error` of kind Other defers to what its chain says.
        let wrapped = Error::new(ErrorKind::Other)
            .with_source(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(ErrorKind::of(&wrapped), ErrorKind::Connect);
    }

    #[test]
    fn a_boxed_error_comes_back_as_it_was() {
        let original = Error::new(ErrorKind::Config)
            .with_message("integrations.stripe.base_url: must be an absolute URL")
            .with_integration("stripe");
        let again = Error::from(Box::new(original) as BoxError);
        assert!(again.is_config());
        assert_eq!(again.integration(), Some("stripe"));
    }

    #[test]
    fn finds_the_kind_deep_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let error = Error::from(boxed(Wrapper(io::ErrorKind::ConnectionRefused.into())));
        assert!(error.is_connect());
    }

    #[test]
    fn display_names_integration_attempt_and_reason() {
        let error = Error::status_error(StatusCode::SERVICE_UNAVAILABLE)
            .with_integration("github")
            .with_attempts(3)
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(
            error.to_string(),
            "integration `github`, attempt 3: upstream answered 503 Service Unavailable; retry after 1.5s"
        );
        let error = Error::from(boxed(DeadlineExceeded::would_wait(
            Duration::from_secs(3600),
            Some(StatusCode::TOO_MANY_REQUESTS),
        )))
        .with_integration("stripe")
        .with_attempts(1);
        assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(
            error.to_string(),
            "integration `stripe`, attempt 1: deadline exceeded: the next attempt would have to wait past it (upstream answered 429 Too Many Requests); retry after 3600s"
        );
        assert_eq!(
            format!("{error:#}"),
            "integration `stripe`, attempt 1: deadline exceeded: the next attempt would have to wait past it (upstream answered 429 Too Many Requests); retry after 3600s"
        );
    }

    /// A foreign error with a chain of its own: `Display` holds only its own words, `Debug` nests.
    #[derive(Debug)]
    struct Transport {
        message: String,
        cause: io::Error,
    }

    impl fmt::Display for Transport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl StdError for Transport {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.cause)
        }
    }

    /// The shapes in which a secret turns up in a transport's or a user's error message.
    fn leaky_messages(secret: &str) -> Vec<String> {
        vec![
            format!(
                "error sending request for url (https://x.test/v1/items?api_key={secret}&page=2)"
            ),
            format!("GET https://x.test/?access_token={secret} failed"),
            format!("connect to https://app:{secret}@db.x.test:5432/main failed"),
            format!("postgres://{secret}@db.x.test/main unreachable"),
            format!("upstream rejected Authorization: Bearer {secret}"),
            format!("invalid header value Bearer {secret}"),
            format!("login failed with password={secret}; giving up"),
            format!(r#"body was {{"client_secret": "{secret}", "id": 1}}"#),
        ]
    }

    /// The errors a foreign message reaches `Error` in: directly, deep in a foreign chain, and
    /// under an `Error` wrapped by another.
    fn carriers(message: &str) -> Vec<Error> {
        let transport = || Transport {
            message: "transport failed".to_owned(),
            cause: io::Error::other(message.to_owned()),
        };
        vec![
            Error::from(boxed(io::Error::other(message.to_owned()))),
            Error::new(ErrorKind::Other)
                .with_integration("x")
                .with_attempts(2)
                .with_source(io::Error::new(io::ErrorKind::ConnectionReset, message)),
            Error::from(boxed(Transport {
                message: message.to_owned(),
                cause: io::Error::from(io::ErrorKind::ConnectionRefused),
            })),
            Error::from(boxed(transport())),
            Error::new(ErrorKind::Request).with_source(Error::from(boxed(transport()))),
        ]
    }

    proptest::proptest! {
        /// Rule: no secret is ever printed by an `Error`, whatever a foreign cause put in its message.
        #[test]
        fn a_secret_in_a_foreign_cause_is_never_printed(
            secret in "[A-Za-z0-9][A-Za-z0-9._~-]{11,40}",
        ) {
            for message in leaky_messages(&secret) {
                for error in carriers(&message) {
                    for shown in [
                        error.to_string(),
                        format!("{error:#}"),
                        format!("{error:?}"),
                        format!("{error:#?}"),
                    ] {
                        proptest::prop_assert!(!shown.contains(&secret), "{message:?} shown as {shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn foreign_causes_are_redacted_and_ours_shown_as_they_are() {
        let error = Error::new(ErrorKind::Other)
            .with_integration("github")
            .with_source(io::Error::other(
                "GET https://api.test/u?token=SECRET1&page=2: Authorization: Bearer SECRET2",
            ));
        assert_eq!(
            format!("{error:#}"),
            "integration `github`: request failed: GET https://api.test/u?token=[REDACTED]&page=2: \
             Authorization: [REDACTED]"
        );
        assert_eq!(
            format!("{error:?}"),
            r#"Error { kind: Other, integration: "github", source: Custom { kind: Other, error: "GET https://api.test/u?token=[REDACTED]&page=2: Authorization: [REDACTED]" } }"#
        );
        // Our typed errors' words are kept whole, even those the text rule would take for a
        // credential (`Token <8+ characters>`).
        let error = Error::from(boxed(AuthFailed::transient("Token revocation pending")));
        assert_eq!(
            format!("{error:#}"),
            "authentication failed: Token revocation pending"
        );
        assert!(format!("{error:?}").contains("Token revocation pending"));
        // Display's first line is ours only: the foreign text never reaches it.
        let error = Error::from(boxed(io::Error::other("password=SECRET3")));
        assert_eq!(error.to_string(), "request failed");
    }

    #[test]
    fn the_integration_set_first_wins() {
        let error = Error::new(ErrorKind::Other)
            .with_integration("inner")
            .with_integration("outer");
        assert_eq!(error.integration(), Some("inner"));
    }

    #[test]
    fn predicates_match_kinds() {
        let kinds = [
            (ErrorKind::Connect, Error::is_connect as fn(&Error) -> bool),
            (ErrorKind::Timeout, Error::is_timeout),
            (ErrorKind::Deadline, Error::is_deadline),
            (ErrorKind::Status, Error::is_status),
            (ErrorKind::RateLimited, Error::is_rate_limited),
            (ErrorKind::CircuitOpen, Error::is_circuit_open),
            (ErrorKind::BudgetExhausted, Error::is_budget_exhausted),
            (ErrorKind::Auth, Error::is_auth),
            (ErrorKind::Config, Error::is_config),
            (ErrorKind::Request, Error::is_request),
            (ErrorKind::Body, Error::is_body),
            (ErrorKind::Cancelled, Error::is_cancelled),
        ];
        for (kind, predicate) in kinds {
            assert!(predicate(&Error::new(kind)), "{kind}");
            assert!(!predicate(&Error::new(ErrorKind::Other)), "{kind}");
        }
        // A deadline is also a timeout to callers that only ask `is_timeout`.
        assert!(Error::new(ErrorKind::Deadline).is_timeout());
    }
}
