use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, Uri};
use integration_core::BoxError;
use integration_core::authority::AuthorityCache;
use integration_core::ext::{Attempt, IntegrationName};
use integration_core::names;
use tokio::time::Instant;
use tower_service::Service;
use tracing::field::{Empty, display};
use tracing::{Level, Span};

use crate::body::{BodyBytes, LogBody};
use crate::future::{Pending, ResponseFuture};
use crate::policy::LogPolicy;
use crate::redact::{BodyKind, Redactor};
use crate::traceparent;

/// Whether a [`Log`] service records a logical call or one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Call,
    Attempt,
}

/// The service of [`LogLayer`](crate::LogLayer) (call scope) and
/// [`AttemptLogLayer`](crate::AttemptLogLayer) (attempt scope).
///
/// Its response body is a [`LogBody`] that captures the textual body as it streams.
pub struct Log<S> {
    inner: S,
    policy: Arc<LogPolicy>,
    scope: Scope,
}

impl<S> Log<S> {
    pub(crate) fn new(inner: S, policy: Arc<LogPolicy>, scope: Scope) -> Self {
        Self {
            inner,
            policy,
            scope,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Log<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            scope: self.scope,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Log<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("scope", &self.scope)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Log<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: BodyBytes,
    ResBody: http_body::Body,
{
    type Response = Response<LogBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Logging reserves nothing: readiness is the inner service's.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let policy = &*self.policy;
        // Whether any span or event of the call can be recorded: when not, nothing below is
        // formatted, copied or timed for the logs.
        let logs = policy.logs_enabled();
        if !logs && !policy.metrics && !policy.propagate_traceparent {
            // The disabled path: the inner call, untouched, and a body wrapper that passes frames
            // through.
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let start = Instant::now();
        let attempt = Attempt::of(&request);
        let integration = IntegrationName::of(&request).cloned();
        let trace = if policy.propagate_traceparent {
            match self.scope {
                Scope::Call => traceparent::start_call(&mut request, &policy.ids),
                Scope::Attempt => traceparent::start_attempt(&mut request, &policy.ids),
            }
        } else {
            None
        };
        let target = Target::of(&request, &policy.targets);

        // Every field known now is given at creation: one `new_span` for the subscriber to format,
        // rather than one `record` (and one more formatting pass) per field. The values are built
        // only when the span is enabled; the URL is redacted only when a subscriber formats it.
        let span = if logs {
            // OpenTelemetry sets `http.request.resend_count` only on a resent request.
            let resend_count =
                (self.scope == Scope::Attempt && attempt.get() > 1).then(|| attempt.get() - 1);
            make_span(
                self.scope,
                policy.span_level,
                request.method(),
                SpanFields {
                    method: method_attribute(request.method()),
                    host: target.host.as_deref(),
                    port: target.port,
                    url: display(LazyUrl(&policy.redactor, request.uri())),
                    integration: integration.as_ref().map(IntegrationName::as_str),
                    resend_count,
                },
            )
        } else {
            Span::none()
        };

        // A failure's event carries its URL itself: the line must stand alone even when the span's
        // level is filtered out (a cheap clone: the URI's parts are reference-counted). Without
        // logs there is no event to carry it.
        let uri = logs.then(|| request.uri().clone());
        let inner = if logs {
            let _entered = span.enter();
            log_request(policy, &request, attempt, trace);
            self.inner.call(request)
        } else {
            self.inner.call(request)
        };
        ResponseFuture::new(
            inner,
            Pending {
                span,
                start,
                policy: self.policy.clone(),
                scope: self.scope,
                method: target.method,
                host: target.host,
                integration,
                uri,
                attempt: (self.scope == Scope::Attempt).then(|| attempt.get()),
            },
        )
    }
}

/// What the metrics and spans need to know about where a request goes.
struct Target {
    method: Method,
    host: Option<Arc<str>>,
    port: Option<u16>,
}

impl Target {
    fn of<B>(request: &Request<B>, cache: &TargetCache) -> Self {
        let uri = request.uri();
        let (host, port) = match host_port(cache, uri) {
            Some((host, port)) => (Some(host), port),
            // A relative URI: the `Host` header says where it goes.
            None => match request.headers().get(HOST).and_then(|h| h.to_str().ok()) {
                Some(value) => match value.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                        (Some(Arc::from(host)), port.parse().ok())
                    }
                    _ => (Some(Arc::from(value)), None),
                },
                None => (None, None),
            },
        };
        Self {
            method: request.method().clone(),
            host,
            port,
        }
    }
}

/// The host and port of the last authority (and scheme) a policy's services saw.
///
/// A stack calls one upstream: its call and attempt layers, on every call, would otherwise parse
/// the same authority (`Uri::host`, `Uri::port_u16`: ~700 instructions) and allocate the same host
/// `Arc<str>` twice a call (issue 19).
pub(crate) type TargetCache = AuthorityCache<(Arc<str>, Option<u16>), 1>;

/// The host and port (explicit, or the scheme's default) of an absolute `uri`; `None` for a
/// relative one.
fn host_port(cache: &TargetCache, uri: &Uri) -> Option<(Arc<str>, Option<u16>)> {
    cache.get_or_make(uri, |authority, default_port| {
        Some((
            Arc::from(authority.host()),
            authority.port_u16().or(default_port),
        ))
    })
}

/// The `http.request.method` attribute: the method, or `_OTHER` for methods outside RFC 9110 and
/// PATCH, as OpenTelemetry asks (it keeps the cardinality of the attribute bounded).
pub(crate) fn method_attribute(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Formats a redacted URL only when a subscriber records it.
pub(crate) struct LazyUrl<'a>(pub(crate) &'a Redactor, pub(crate) &'a Uri);

impl fmt::Display for LazyUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_url(self.1, f)
    }
}

/// Formats a redacted, capped body only when a subscriber records it.
pub(crate) struct LazyBody<'a> {
    pub(crate) redactor: &'a Redactor,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) bytes: &'a [u8],
}

impl fmt::Display for LazyBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redactor.redact_body(self.content_type, self.bytes))
    }
}

/// The content type of a textual, unencoded body: `None` when the body is not to be captured.
pub(crate) fn capturable_type(headers: &HeaderMap) -> Option<&str> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING)
        && encoding != "identity"
    {
        return None;
    }
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    BodyKind::of(Some(content_type)).map(|_| content_type)
}

fn log_request<B: BodyBytes>(
    policy: &LogPolicy,
    request: &Request<B>,
    attempt: Attempt,
    trace: Option<traceparent::TraceContext>,
) {
    if !enabled_at!(policy.request_level) {
        return;
    }
    let redactor = &policy.redactor;
    let headers = policy
        .capture_headers
        .then(|| display(redactor.redact_headers(request.headers())));
    let bytes = request.body().body_bytes();
    let size = bytes.map(<[u8]>::len);
    let limit = policy.body_limit;
    let body = match (policy.capture_bodies, bytes) {
        (true, Some(bytes)) if !bytes.is_empty() => {
            capturable_type(request.headers()).map(|content_type| {
                display(LazyBody {
                    redactor,
                    content_type: Some(content_type),
                    bytes: &bytes[..bytes.len().min(limit)],
                })
            })
        }
        _ => None,
    };
    let truncated = size.map(|size| size > limit);
    event_at!(
        policy.request_level,
        attempt = attempt.get(),
        "http.request.headers" = headers,
        "http.request.body" = body,
        "http.request.body.size" = size,
        "http.request.body.truncated" = truncated,
        traceparent = trace.map(display),
        "request"
    );
}

/// The values of a span's fields known when the call starts.
struct SpanFields<'a> {
    method: &'static str,
    host: Option<&'a str>,
    port: Option<u16>,
    url: tracing::field::DisplayValue<LazyUrl<'a>>,
    integration: Option<&'a str>,
    resend_count: Option<u32>,
}

// The string attributes are display values, not `&str`: a `fmt` subscriber records a `&str` by its
// `Debug` form, escaping it character by character and quoting it, on every call (~450
// instructions of the call's ~59k, issue 19); as display values they print unquoted, as the other
// crates' `integration.name = %..` fields do. Unescaped, none can break a line: the method is one of
// `method_attribute`'s tokens, the host comes from a parsed authority or a `Host` value that
// `to_str` accepted (visible ASCII, no CR or LF). `otel.*` fields stay `&str`: OpenTelemetry bridges
// read them with `record_str`.
macro_rules! span_at {
    ($level:ident, $name:literal, $fields:ident, $($kind:tt)*) => {
        tracing::span!(
            target: "integration_log",
            Level::$level,
            $name,
            $($kind)*
            { names::HTTP_REQUEST_METHOD } = display($fields.method),
            { names::SERVER_ADDRESS } = $fields.host.map(display),
            { names::SERVER_PORT } = $fields.port,
            { names::URL_FULL } = $fields.url,
            { names::INTEGRATION } = $fields.integration.map(display),
            { names::HTTP_REQUEST_RESEND_COUNT } = $fields.resend_count,
            { names::HTTP_RESPONSE_STATUS_CODE } = Empty,
            { names::ERROR_TYPE } = Empty,
            // Recorded by `integration-cache` when a cache layer answers inside this span.
            { names::CACHE_STATUS } = Empty,
            otel.status_code = Empty,
        )
    };
}

macro_rules! span_by_level {
    ($level:expr, $name:literal, $fields:ident, $($kind:tt)*) => {
        match $level {
            Level::ERROR => span_at!(ERROR, $name, $fields, $($kind)*),
            Level::WARN => span_at!(WARN, $name, $fields, $($kind)*),
            Level::INFO => span_at!(INFO, $name, $fields, $($kind)*),
            Level::DEBUG => span_at!(DEBUG, $name, $fields, $($kind)*),
            _ => span_at!(TRACE, $name, $fields, $($kind)*),
        }
    };
}

macro_rules! span_by_method {
    ($level:expr, $method:expr, $fields:ident, $($kind:tt)*) => {
        match method_attribute($method) {
            "GET" => span_by_level!($level, "GET", $fields, $($kind)*),
            "HEAD" => span_by_level!($level, "HEAD", $fields, $($kind)*),
            "POST" => span_by_level!($level, "POST", $fields, $($kind)*),
            "PUT" => span_by_level!($level, "PUT", $fields, $($kind)*),
            "DELETE" => span_by_level!($level, "DELETE", $fields, $($kind)*),
            "CONNECT" => span_by_level!($level, "CONNECT", $fields, $($kind)*),
            "OPTIONS" => span_by_level!($level, "OPTIONS", $fields, $($kind)*),
            "TRACE" => span_by_level!($level, "TRACE", $fields, $($kind)*),
            "PATCH" => span_by_level!($level, "PATCH", $fields, $($kind)*),
            _ => span_by_level!($level, "HTTP", $fields, $($kind)*),
        }
    };
}

/// The span of a call or an attempt, named after the method as OpenTelemetry asks (`HTTP` for other
/// methods). Span names must be static in `tracing`, hence one callsite per method and level.
///
/// The call span is OpenTelemetry's logical `internal` parent; each attempt is a `client` span
/// (`otel.kind = "client"`). The call span carries no `otel.kind`: `internal` is OpenTelemetry's
/// default kind, and a field the span is created with is formatted on every call by a `fmt`
/// subscriber (about 1,700 instructions a call, issue 19).
fn make_span(scope: Scope, level: Level, method: &Method, fields: SpanFields<'_>) -> Span {
    match scope {
        Scope::Call => span_by_method!(level, method, fields,),
        Scope::Attempt => span_by_method!(level, method, fields, otel.kind = "client",),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use integration_core::testing::capture;
    use tower::{ServiceBuilder, ServiceExt};
    use tracing_subscriber::filter::LevelFilter;

    use super::*;
    use crate::LogLayer;

    async fn one_call(redactor: &Redactor) {
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(
                LogPolicy::default().with_redactor(redactor.clone()),
            ))
            .service_fn(|_request: Request<String>| async {
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .header("set-cookie", "session=abc")
                    .body(r#"{"token":"abc"}"#.to_owned())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
        let request = Request::post("https://api.example.test/v1/items?api_key=abc")
            .header("authorization", "Bearer abc")
            .header("content-type", "application/json")
            .body(r#"{"password":"abc"}"#.to_owned())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }

    /// Issue 19: a response whose line is off (a success, at the defaults) is recorded without
    /// entering the call span once more (an enter and an exit cost the subscriber ~280
    /// instructions); a response whose line is on enters it for that line.
    #[tokio::test]
    async fn a_response_whose_line_is_off_does_not_enter_the_span_again() {
        async fn enters(success_level: Level) -> u64 {
            let captured = capture(LevelFilter::INFO);
            let service = ServiceBuilder::new()
                .layer(LogLayer::new(
                    LogPolicy::default().with_success_level(success_level),
                ))
                .service_fn(|_request: Request<String>| async {
                    Ok::<_, Infallible>(Response::new(String::from("ok")))
                });
            let request = Request::get("https://api.example.test/v1/items")
                .body(String::new())
                .unwrap();
            let response = service.oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap();
            let spans = captured.span_named("GET");
            assert_eq!(spans.len(), 1);
            spans[0].enters
        }
        // The call (the request's line and the inner call), then the one poll of the inner future.
        assert_eq!(enters(Level::DEBUG).await, 2);
        assert_eq!(enters(Level::INFO).await, 3);
    }

    /// Nothing is formatted when its level is off: with every span and event of the call below the
    /// subscriber's level, the redactor is never invoked.
    #[tokio::test]
    async fn nothing_is_formatted_when_its_level_is_off() {
        let redactor = Redactor::default();
        {
            let _captured = capture(LevelFilter::WARN);
            one_call(&redactor).await;
        }
        assert_eq!(
            redactor.calls(),
            0,
            "a disabled level must cost no redaction"
        );

        // The same call with every level on: URL, headers, request and response bodies are redacted.
        {
            let _captured = capture(LevelFilter::TRACE);
            one_call(&redactor).await;
        }
        assert!(redactor.calls() >= 4, "calls: {}", redactor.calls());
    }

    #[test]
    fn method_attribute_bounds_cardinality() {
        assert_eq!(method_attribute(&Method::PATCH), "PATCH");
        assert_eq!(
            method_attribute(&Method::from_bytes(b"PURGE").unwrap()),
            "_OTHER"
        );
    }

    #[test]
    fn relative_uris_take_the_host_header() {
        let request = Request::get("/v1/x")
            .header("host", "api.example.test:8080")
            .body(())
            .unwrap();
        let cache = TargetCache::default();
        let target = Target::of(&request, &cache);
        assert_eq!(target.host.as_deref(), Some("api.example.test"));
        assert_eq!(target.port, Some(8080));
        let request = Request::get("https://api.example.test/x").body(()).unwrap();
        assert_eq!(Target::of(&request, &cache).port, Some(443));
    }

    /// Regression guard of the target cache (issue 19): whatever was called before, a request's
    /// host and port are its own, the scheme's default port and the host's case included.
    #[test]
    fn the_target_cache_answers_for_each_request() {
        let cache = TargetCache::default();
        let cases = [
            ("https://api.example.test/x", "api.example.test", Some(443)),
            (
                "https://api.example.test/y?q=1",
                "api.example.test",
                Some(443),
            ),
            ("http://api.example.test/x", "api.example.test", Some(80)),
            (
                "http://api.example.test:8080/x",
                "api.example.test",
                Some(8080),
            ),
            (
                "http://API.example.test:8080/x",
                "API.example.test",
                Some(8080),
            ),
            ("https://[::1]:9443/x", "[::1]", Some(9443)),
            ("https://api.example.test/x", "api.example.test", Some(443)),
        ];
        for _ in 0..2 {
            for (uri, host, port) in cases {
                let request = Request::get(uri).body(()).unwrap();
                let target = Target::of(&request, &cache);
                assert_eq!(target.host.as_deref(), Some(host), "{uri}");
                assert_eq!(target.port, port, "{uri}");
                let uncached = Target::of(&request, &TargetCache::default());
                assert_eq!(uncached.host, target.host, "{uri}");
            }
        }
    }
}

#[cfg(test)]
mod readiness {
    use tower_test::mock;

    use super::*;
    use crate::LogLayer;

    /// Logging reserves nothing: `poll_ready` is the inner service's, and the request reaches the
    /// inner service unchanged (without propagation).
    #[tokio::test]
    async fn readiness_and_requests_pass_through() {
        let (mut service, mut handle) =
            mock::spawn_layer::<Request<String>, Response<String>, _>(LogLayer::default());
        handle.allow(0);
        assert!(service.poll_ready().is_pending());
        handle.allow(1);
        assert!(service.poll_ready().is_ready());
        let response = service.call(
            Request::get("https://a.test/")
                .body("hi".to_owned())
                .unwrap(),
        );
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.uri(), "https://a.test/");
        assert_eq!(request.body(), "hi");
        assert!(request.headers().is_empty());
        send.send_response(Response::new("ok".to_owned()));
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
    }
}
