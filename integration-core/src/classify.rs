//! Response classification: is this outcome a success, worth another attempt, or final?
//!
//! [`DefaultClassifier`] implements the retry rules of the design:
//!
//! | outcome | idempotent request | POST/PATCH without key |
//! | --- | --- | --- |
//! | failed to connect (nothing sent) | retry | retry |
//! | no credential: a transient auth failure (nothing sent), after its cool-down | retry | retry |
//! | no credential: a permanent auth failure (`invalid_grant`...) | fail | fail |
//! | connection reset before a response, attempt timeout | retry | fail |
//! | 408, 429, 500, 502, 503, 504 | retry | fail |
//! | 401, credential renewable (OAuth, JWT: the auth layer marked it [`CredentialInvalidated`](crate::ext::CredentialInvalidated)) | re-authenticate, replay once | re-authenticate, replay once |
//! | 401, static credential (API key, Basic, bearer: no marker) | fail | fail |
//! | other 4xx, 501, 505, other 5xx | fail | fail |
//! | 1xx, 2xx, 3xx | success | success |
//!
//! Idempotent means GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any request with an `Idempotency-Key`
//! header or an explicit [`Idempotent`] flag. `Idempotent(false)` makes even a
//! GET final once it may have been sent.
//!
//! A replaceable [`Classify`] trait lets an integration teach the layers its own dialect (an API that
//! answers 200 with an error body, a 409 that means "try again").

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use crate::error::{ErrorKind, inspect};
use crate::ext::{IDEMPOTENCY_KEY, Idempotent};
use crate::throttle::ThrottleSignal;

/// What a classifier needs to know about the request: its method and whether it is safe to repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    method: Method,
    idempotent: Option<bool>,
}

impl RequestMeta {
    /// A request with `method`, idempotent by its method alone.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            idempotent: None,
        }
    }

    /// States explicitly whether the request may be sent more than once.
    #[must_use]
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Reads method, `Idempotency-Key` header and [`Idempotent`] extension from a request.
    pub fn from_request<B>(request: &http::Request<B>) -> Self {
        let idempotent = match request.extensions().get::<Idempotent>() {
            Some(Idempotent(flag)) => Some(*flag),
            // The header is looked up only where it changes the answer: a method idempotent by
            // itself stays so (a header lookup a call fewer, issue 19).
            None if !is_idempotent_method(request.method())
                && request.headers().contains_key(IDEMPOTENCY_KEY) =>
            {
                Some(true)
            }
            None => None,
        };
        Self {
            method: request.method().clone(),
            idempotent,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// True when the request may be repeated after it may have reached the upstream.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
            .unwrap_or_else(|| is_idempotent_method(&self.method))
    }
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE: the methods RFC 9110 calls idempotent.
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Why an attempt is worth repeating. Also the `reason` label of the retry metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// No connection could be made; nothing was sent.
    Connect,
    /// The connection broke before a response came.
    Reset,
    /// The attempt timed out.
    Timeout,
    /// The upstream answered 408 Request Timeout.
    RequestTimeout,
    /// The upstream throttled: 429 Too Many Requests.
    Throttled,
    /// The upstream failed: 500, 502, 503 or 504.
    ServerError,
    /// The upstream refused the credential (401) and a fresh one was fetched.
    Unauthorized,
    /// No credential could be obtained for the attempt (the token endpoint was down or answered
    /// with a transient error): the request was never sent, so any method may try again, no sooner
    /// than the auth layer's cool-down.
    CredentialUnavailable,
}

impl RetryReason {
    /// A short snake_case name, stable for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::RequestTimeout => "request_timeout",
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Unauthorized => "unauthorized",
            RetryReason::CredentialUnavailable => "credential_unavailable",
        }
    }

    /// True when nothing reached the upstream, so any method may be retried.
    pub fn nothing_was_sent(self) -> bool {
        matches!(
            self,
            RetryReason::Connect | RetryReason::CredentialUnavailable
        )
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an outcome is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailReason {
    /// It would have been retried, but the request is not idempotent and may have been processed.
    NotIdempotent(RetryReason),
    /// The status is not worth repeating (4xx other than 401/408/429, 501, 505, ...).
    Status(StatusCode),
    /// The error is not worth repeating (a local rate limit, an open breaker, a bad request...).
    Error(ErrorKind),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::NotIdempotent(reason) => {
                write!(f, "{reason}, but the request is not idempotent")
            }
            FailReason::Status(status) => write!(f, "status {status} is final"),
            FailReason::Error(kind) => write!(f, "{kind} is final"),
        }
    }
}

/// The verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Classification {
    /// Done: hand the response to the caller.
    Success,
    /// Worth another attempt, no sooner than `retry_after` when the server said so.
    Retry {
        /// Why.
        reason: RetryReason,
        /// The server's hint (`Retry-After`, or a rate-limit reset when nothing remains).
        retry_after: Option<Duration>,
    },
    /// The upstream refused the credential: replay once with a fresh one.
    Reauthenticate,
    /// Final: hand the outcome to the caller.
    Fail {
        /// Why it is final.
        reason: FailReason,
        /// The server's hint, kept so the caller knows when to come back.
        retry_after: Option<Duration>,
    },
}

impl Classification {
    /// True for [`Classification::Retry`] and [`Classification::Reauthenticate`].
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Classification::Retry { .. } | Classification::Reauthenticate
        )
    }

    /// The retry reason, for retryable outcomes (`Unauthorized` for re-authentication).
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            Classification::Retry { reason, .. } => Some(*reason),
            Classification::Reauthenticate => Some(RetryReason::Unauthorized),
            _ => None,
        }
    }

    /// The server's hint of when to try again, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Classification::Retry { retry_after, .. }
            | Classification::Fail { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Decides what an attempt's outcome means. Implement it to teach the layers an API's own dialect.
///
/// # Example
///
/// An API that answers 409 when a resource is briefly locked:
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use integration_core::classify::{Classification, Classify, DefaultClassifier, RequestMeta, RetryReason};
/// use std::time::SystemTime;
///
/// #[derive(Debug)]
/// struct LockAware(DefaultClassifier);
///
/// impl Classify for LockAware {
///     fn classify_response(&self, request: &RequestMeta, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Classification {
///         if status == StatusCode::CONFLICT && request.is_idempotent() {
///             return Classification::Retry { reason: RetryReason::ServerError, retry_after: None };
///         }
///         self.0.classify_response(request, status, headers, now)
///     }
///     fn classify_error(&self, request: &RequestMeta, error: &(dyn std::error::Error + 'static)) -> Classification {
///         self.0.classify_error(request, error)
///     }
/// }
/// ```
pub trait Classify: fmt::Debug + Send + Sync + 'static {
    /// Classifies a response by its status and headers. `now` is the wall clock, used only when a
    /// header speaks in dates and the response has no `Date`.
    fn classify_response(
        &self,
        request: &RequestMeta,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Classification;

    /// Classifies a failure of the inner service (transport or layer error).
    fn classify_error(
        &self,
        request: &RequestMeta,
        error: &(dyn StdError + 'static),
    ) -> Classification;
}

/// The design's retry rules (see the [module docs](self) for the table).
#[derive(Debug, Clone, Default)]
pub struct DefaultClassifier {
    _private: (),
}

impl DefaultClassifier {
    /// The default rules.
    pub fn new() -> Self {
        Self { _private: () }
    }
}

fn gate(
    request: &RequestMeta,
    reason: RetryReason,
    retry_after: Option<Duration>,
) -> Classification {
    if reason.nothing_was_sent() || request.is_idempotent() {
        Classification::Retry {
            reason,
            retry_after,
        }
    } else {
        Classification::Fail {
            reason: FailReason::NotIdempotent(reason),
            retry_after,
        }
    }
}

impl Classify for DefaultClassifier {
    fn classify_response(
        &self,
        request: &RequestMeta,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Classification {
        if !(status.is_client_error() || status.is_server_error()) {
            return Classification::Success;
        }
        let signal = ThrottleSignal::from_headers(headers, now);
        match status {
            StatusCode::UNAUTHORIZED => Classification::Reauthenticate,
            StatusCode::REQUEST_TIMEOUT => {
                gate(request, RetryReason::RequestTimeout, signal.retry_after)
            }
            StatusCode::TOO_MANY_REQUESTS => gate(request, RetryReason::Throttled, signal.pause()),
            StatusCode::SERVICE_UNAVAILABLE => {
                gate(request, RetryReason::ServerError, signal.pause())
            }
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => {
                gate(request, RetryReason::ServerError, signal.retry_after)
            }
            _ => Classification::Fail {
                reason: FailReason::Status(status),
                retry_after: signal.retry_after,
            },
        }
    }

    fn classify_error(
        &self,
        request: &RequestMeta,
        error: &(dyn StdError + 'static),
    ) -> Classification {
        let facts = inspect(error);
        match facts.retry {
            Some(reason) => gate(request, reason, facts.retry_after),
            None => Classification::Fail {
                reason: FailReason::Error(facts.kind),
                retry_after: facts.retry_after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{AttemptTimeout, AuthFailed, CircuitOpen, RateLimited};
    use std::io;

    const ALL_METHODS: [&str; 9] = [
        "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT",
    ];

    fn meta(method: &str) -> RequestMeta {
        RequestMeta::new(Method::from_bytes(method.as_bytes()).unwrap())
    }

    fn idempotent_by_method(method: &str) -> bool {
        matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    fn classify(method: &RequestMeta, status: u16) -> Classification {
        DefaultClassifier::new().classify_response(
            method,
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            SystemTime::UNIX_EPOCH,
        )
    }

    /// Every method against every status from 100 to 599: the table of the module docs, exhaustively.
    #[test]
    fn classification_table_every_method_every_status() {
        for method in ALL_METHODS {
            for flag in [None, Some(true), Some(false)] {
                let mut request = meta(method);
                if let Some(flag) = flag {
                    request = request.with_idempotent(flag);
                }
                let idempotent = flag.unwrap_or_else(|| idempotent_by_method(method));
                for status in 100..600u16 {
                    let outcome = classify(&request, status);
                    let expected_reason = match status {
                        408 => Some(RetryReason::RequestTimeout),
                        429 => Some(RetryReason::Throttled),
                        500 | 502 | 503 | 504 => Some(RetryReason::ServerError),
                        _ => None,
                    };
                    match (status, expected_reason) {
                        (100..=399, _) => assert_eq!(outcome, Classification::Success),
                        (401, _) => assert_eq!(outcome, Classification::Reauthenticate),
                        (_, Some(reason)) if idempotent => assert_eq!(
                            outcome,
                            Classification::Retry {
                                reason,
                                retry_after: None
                            },
                            "{method} {status}"
                        ),
                        (_, Some(reason)) => assert_eq!(
                            outcome,
                            Classification::Fail {
                                reason: FailReason::NotIdempotent(reason),
                                retry_after: None
                            },
                            "{method} {status}"
                        ),
                        (_, None) => assert_eq!(
                            outcome,
                            Classification::Fail {
                                reason: FailReason::Status(StatusCode::from_u16(status).unwrap()),
                                retry_after: None
                            },
                            "{method} {status}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn not_retryable_statuses_named_by_the_design() {
        for status in [400, 403, 404, 409, 422, 501, 505] {
            assert!(!classify(&meta("GET"), status).is_retryable(), "{status}");
        }
    }

    #[test]
    fn idempotency_key_header_makes_post_retryable() {
        let request = http::Request::post("/charges")
            .header("Idempotency-Key", "3f1c")
            .body(())
            .unwrap();
        let meta = RequestMeta::from_request(&request);
        assert!(meta.is_idempotent());
        assert!(classify(&meta, 503).is_retryable());
        // A method idempotent by itself (the header is not looked up for it) stays so, with or
        // without the header.
        for method in ["GET", "PUT", "DELETE"] {
            for key in [None, Some("3f1c")] {
                let mut request = http::Request::builder().method(method);
                if let Some(key) = key {
                    request = request.header("Idempotency-Key", key);
                }
                let meta = RequestMeta::from_request(&request.body(()).unwrap());
                assert!(meta.is_idempotent(), "{method} {key:?}");
            }
        }
    }

    #[test]
    fn explicit_flag_wins_over_method_and_key() {
        let mut request = http::Request::get("/x")
            .header("Idempotency-Key", "3f1c")
            .body(())
            .unwrap();
        request.extensions_mut().insert(Idempotent(false));
        assert!(!RequestMeta::from_request(&request).is_idempotent());
        let mut request = http::Request::post("/x").body(()).unwrap();
        request.extensions_mut().insert(Idempotent(true));
        assert!(RequestMeta::from_request(&request).is_idempotent());
    }

    #[test]
    fn retry_after_hint_is_carried_even_when_final() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        let outcome = DefaultClassifier::new().classify_response(
            &meta("POST"),
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(7)));
        assert!(!outcome.is_retryable());
    }

    #[test]
    fn a_429_without_retry_after_uses_the_rate_limit_reset() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset", "12".parse().unwrap());
        let outcome = DefaultClassifier::new().classify_response(
            &meta("GET"),
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(12)));
    }

    fn classify_error(method: &str, error: impl StdError + 'static) -> Classification {
        DefaultClassifier::new().classify_error(&meta(method), &error)
    }

    #[test]
    fn connect_failures_retry_for_every_method() {
        for method in ALL_METHODS {
            let outcome = classify_error(method, io::Error::from(io::ErrorKind::ConnectionRefused));
            assert_eq!(
                outcome.retry_reason(),
                Some(RetryReason::Connect),
                "{method}"
            );
        }
    }

    #[test]
    fn resets_and_timeouts_retry_only_idempotent_requests() {
        for method in ALL_METHODS {
            for (error, reason) in [
                (
                    Box::new(io::Error::from(io::ErrorKind::ConnectionReset)) as BoxedStd,
                    RetryReason::Reset,
                ),
                (
                    Box::new(AttemptTimeout::new(Duration::from_secs(1))),
                    RetryReason::Timeout,
                ),
                (
                    Box::new(tower::timeout::error::Elapsed::new()),
                    RetryReason::Timeout,
                ),
            ] {
                let outcome = DefaultClassifier::new().classify_error(&meta(method), &*error);
                if idempotent_by_method(method) {
                    assert_eq!(outcome.retry_reason(), Some(reason), "{method}");
                } else {
                    assert_eq!(
                        outcome,
                        Classification::Fail {
                            reason: FailReason::NotIdempotent(reason),
                            retry_after: None
                        }
                    );
                }
            }
        }
    }

    type BoxedStd = Box<dyn StdError + 'static>;

    /// Regression: a token endpoint that failed once made the call fail, though the request was
    /// never sent and the next refresh might have worked.
    #[test]
    fn a_transient_auth_failure_is_retried_for_any_method_after_its_cool_down() {
        let error = AuthFailed::transient("token endpoint answered 503")
            .with_retry_after(Duration::from_millis(700));
        for method in ALL_METHODS {
            let outcome = DefaultClassifier::new().classify_error(&meta(method), &error);
            assert_eq!(
                outcome,
                Classification::Retry {
                    reason: RetryReason::CredentialUnavailable,
                    retry_after: Some(Duration::from_millis(700)),
                },
                "{method}"
            );
        }
        let wrapped = crate::Error::from(crate::BoxError::from(error));
        assert_eq!(wrapped.kind(), ErrorKind::Auth);
        assert_eq!(wrapped.retry_after(), Some(Duration::from_millis(700)));
    }

    #[test]
    fn layer_errors_are_final() {
        for (error, kind) in [
            (
                Box::new(RateLimited::new(Some(Duration::from_secs(1)))) as BoxedStd,
                ErrorKind::RateLimited,
            ),
            (Box::new(CircuitOpen::new(None)), ErrorKind::CircuitOpen),
            (
                Box::new(AuthFailed::permanent(
                    "invalid_grant",
                    "refresh token revoked",
                )),
                ErrorKind::Auth,
            ),
        ] {
            let outcome = DefaultClassifier::new().classify_error(&meta("GET"), &*error);
            assert!(
                matches!(outcome, Classification::Fail { reason: FailReason::Error(k), .. } if k == kind),
                "{outcome:?}"
            );
        }
    }
}
