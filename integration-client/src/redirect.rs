//! The transport's redirect follower: bounded, credential-stripping across origins, never
//! downgrading, replaying a body only when it is replayable.
//!
//! It does what tower-http's `FollowRedirect` did for the transport (the same method and body
//! rules, the same `RequestUri` on a redirected response), except that a response that was not
//! redirected gets no `RequestUri`: tower-http inserted one into every response (a URI copy and a
//! box a call, issue 19), and the facade knows the URL it sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use http::uri::Scheme;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body as _;
use hyper::body::Incoming;
use integration_core::body::HeadersCopy;
use integration_core::{Body, BoxError, Error, ErrorKind};
use integration_log::redact::Redactor;
use tower_http::follow_redirect::RequestUri;
use tower_service::Service;

use crate::transport::{PoolFuture, SharedPool};

/// The default bound on redirects followed for one request.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// True for a request header that carries a credential, by the log crate's redaction rule
/// ([`Redactor`]'s name rule): `Authorization`, `Proxy-Authorization`, `Cookie`, and API-key style
/// headers (`X-Api-Key`, `Api-Key`, `X-Auth-Token`, anything with `token`, `secret`, `apikey`...).
///
/// One rule for what is hidden in logs and what is dropped on a cross-origin redirect. The redirect
/// policy also drops, whatever its name, every header whose value is marked sensitive
/// (`HeaderValue::set_sensitive`): the auth layer marks every header it sets, so an API key in
/// `X-Passphrase` never reaches another origin either.
pub fn is_credential_header(name: &HeaderName) -> bool {
    Redactor::default().is_sensitive(name.as_str())
}

/// What the follower needs besides the request: the bound and the rule for credential headers.
/// Shared by every call of a transport (one reference count a call).
#[derive(Debug, Clone)]
pub(crate) struct RedirectPolicy {
    max: usize,
    redactor: Redactor,
}

impl RedirectPolicy {
    pub(crate) fn new(max: usize, redactor: Redactor) -> Self {
        Self { max, redactor }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn is_sensitive(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        self.redactor.is_sensitive_header(name, value)
    }

    /// Whether the hop from `previous` to `location`, the `followed + 1`-th, may be made: never
    /// from `https` to anything else, never past the bound. Answers whether it leaves the origin.
    fn allow(&self, followed: usize, previous: &Uri, location: &Uri) -> Result<bool, BoxError> {
        if previous.scheme() == Some(&Scheme::HTTPS) && location.scheme() != Some(&Scheme::HTTPS) {
            return Err(Box::new(
                Error::new(ErrorKind::Request)
                    .with_message("redirect from https to http refused (downgrade)"),
            ));
        }
        if followed >= self.max {
            return Err(Box::new(
                Error::new(ErrorKind::Request)
                    .with_message(format!("too many redirects (limit {})", self.max)),
            ));
        }
        Ok(origin(previous) != origin(location))
    }

    /// Drops every credential header (by name, or marked sensitive). Run on the headers carried
    /// forward once a hop leaves its origin, so that once dropped they stay dropped for every
    /// later hop, even one that returns to the first origin.
    fn strip_credentials(&self, headers: &mut HeaderMap) {
        let mut sensitive: Vec<HeaderName> = headers
            .iter()
            .filter(|(name, value)| self.is_sensitive(name, value))
            .map(|(name, _)| name.clone())
            .collect();
        sensitive.dedup();
        for name in sensitive {
            headers.remove(name);
        }
    }
}

fn origin(uri: &Uri) -> (Option<&str>, Option<&str>, Option<u16>) {
    let scheme = uri.scheme_str();
    let port = uri
        .port_u16()
        .or(integration_core::authority::default_port(scheme));
    (scheme, uri.host(), port)
}

/// The headers that describe a body: dropped with the body when a redirect turns the request
/// into a `GET`.
const PAYLOAD_HEADERS: [HeaderName; 4] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    TRANSFER_ENCODING,
];

/// What a redirect needs of the request last sent: the request consumed by the connection, kept
/// from before it was sent (no extensions: a redirected request goes to the connection pool, which
/// reads none).
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Headers,
    /// The body to send again: `None` when it cannot be replayed (a stream), and then a redirect
    /// that would resend it is not followed: the 3xx response is the answer.
    body: Option<Body>,
    policy: RedirectPolicy,
    /// Redirects followed so far.
    followed: usize,
}

impl Replay {
    fn of(request: &Request<Body>, policy: &RedirectPolicy) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: Headers::Copy(HeadersCopy::of(request.headers())),
            body: replayable(request.body()),
            policy: policy.clone(),
            followed: 0,
        }
    }

    /// The next request for a redirect `response`, or `None` when it is the answer: not a
    /// redirect, no usable `Location`, or a body that cannot be sent again. An error when the
    /// policy refuses the hop.
    fn next<B>(&mut self, response: &Response<B>) -> Result<Option<Request<Body>>, BoxError> {
        if !response.status().is_redirection() {
            return Ok(None);
        }
        self.follow(response)
    }

    /// [`next`](Self::next) for a `3xx` response.
    ///
    /// Out of line and cold: inlined into the follower's `poll`, its temporaries (the next request,
    /// its headers, the resolved `Location`) sized that frame, on every call's path down the stack,
    /// for a rare hop (with the connect-error mapping, `transport::pool_error`: 2,296 bytes, now
    /// 1,864; issue 19).
    #[cold]
    #[inline(never)]
    fn follow<B>(&mut self, response: &Response<B>) -> Result<Option<Request<Body>>, BoxError> {
        match response.status() {
            // User agents may change POST to GET (RFC 9110, 15.4.2 and 15.4.3); they all do.
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND if self.method == Method::POST => {
                self.method = Method::GET;
                self.drop_body();
            }
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => {}
            // A GET (or HEAD) of the other resource (RFC 9110, 15.4.4).
            StatusCode::SEE_OTHER => {
                if self.method != Method::HEAD {
                    self.method = Method::GET;
                }
                self.drop_body();
            }
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {}
            _ => return Ok(None),
        }
        let Some(body) = self.body.take() else {
            return Ok(None);
        };
        let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
            .and_then(|location| resolve(location, &self.uri))
        else {
            return Ok(None);
        };
        let cross_origin = self.policy.allow(self.followed, &self.uri, &location)?;
        self.followed += 1;
        if cross_origin {
            self.policy.strip_credentials(self.headers.map());
        }
        self.uri = location;
        self.body = replayable(&body);
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.map().clone();
        Ok(Some(request))
    }

    /// No body from now on, and none of the headers that described it.
    fn drop_body(&mut self) {
        self.body = Some(Body::empty());
        let headers = self.headers.map();
        for name in &PAYLOAD_HEADERS {
            headers.remove(name);
        }
    }
}

/// The headers of the request last sent: a [`HeadersCopy`] (one allocation, issue 19) until a
/// redirect is followed, which makes it the map the next hops edit and send.
enum Headers {
    Copy(HeadersCopy),
    Map(HeaderMap),
}

impl Headers {
    /// The headers as a map, made from the copy the first time.
    fn map(&mut self) -> &mut HeaderMap {
        if let Headers::Copy(copy) = self {
            let map = std::mem::take(copy).into_map();
            *self = Headers::Map(map);
        }
        match self {
            Headers::Map(map) => map,
            Headers::Copy(_) => unreachable!("made a map above"),
        }
    }
}

/// A copy of `body` to send again, when it can be made.
fn replayable(body: &Body) -> Option<Body> {
    if body.size_hint().exact() == Some(0) {
        Some(Body::empty())
    } else {
        body.try_clone()
    }
}

/// `location` (absolute, or relative to `base`) as an absolute URI.
fn resolve(location: &str, base: &Uri) -> Option<Uri> {
    let base = url::Url::parse(&base.to_string()).ok()?;
    let resolved = base.join(location).ok()?;
    Uri::try_from(String::from(resolved)).ok()
}

/// The follower's future: the hop in flight, and what the next hop needs.
pub(crate) struct Follow {
    hop: Hop,
    pool: SharedPool,
    // Kept with a bound of zero too: a redirect is then an error, not the answer (as
    // `TransportBuilder::max_redirects` says).
    replay: Replay,
}

/// Where the follower is.
// The request is held by value until the first poll (that is the point: see `Follow::start`);
// boxing it would be an allocation a call to make the other variants smaller.
#[allow(clippy::large_enum_variant)]
enum Hop {
    /// The first hop's request, sent on the first poll.
    Unsent(Request<Body>),
    /// A hop's response future.
    Sent(PoolFuture),
    /// Only for the instant the first request is taken out to be sent.
    Sending,
}

impl Follow {
    /// Sends `request` through the pool on the first poll, keeping what a redirect would need. The
    /// pool is always ready (it waits for a connection inside the call): no hop waits for
    /// `poll_ready`.
    ///
    /// On the first poll rather than here: here is the bottom of every layer's `call`, each of
    /// whose frames holds the future it is building, so the stack memory the pool's request
    /// future (then hyper-util's, ~1.3 KB) was built in before its box was seldom in the
    /// first-level cache; a poll's frames are small. callgrind: ~25 fewer data cache misses a call
    /// (issue 19).
    pub(crate) fn start(pool: SharedPool, request: Request<Body>, policy: &RedirectPolicy) -> Self {
        let replay = Replay::of(&request, policy);
        Self {
            hop: Hop::Unsent(request),
            pool,
            replay,
        }
    }
}

impl Future for Follow {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the pool's response future is boxed inside it).
        let this = self.get_mut();
        loop {
            let hop = match &mut this.hop {
                Hop::Sent(hop) => hop,
                Hop::Unsent(_) => {
                    let Hop::Unsent(request) = std::mem::replace(&mut this.hop, Hop::Sending)
                    else {
                        unreachable!("matched above")
                    };
                    this.hop = Hop::Sent(this.pool.call(request));
                    continue;
                }
                Hop::Sending => unreachable!("replaced before any return"),
            };
            let mut response = ready!(Pin::new(hop).poll(cx))?;
            let replay = &mut this.replay;
            match replay.next(&response)? {
                Some(request) => this.hop = Hop::Sent(this.pool.call(request)),
                None => {
                    if replay.followed > 0 {
                        // The URL the response came from, for `Response::url`: only a redirected
                        // response needs it, the facade knows the URL it sent.
                        response
                            .extensions_mut()
                            .insert(RequestUri(replay.uri.clone()));
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_recognised() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "api-key",
            "x-auth-token",
            "x-client-secret",
            "apikey",
        ] {
            assert!(
                is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in [
            "accept",
            "content-type",
            "user-agent",
            "idempotency-key",
            "author",
        ] {
            assert!(
                !is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    /// Regression (issue 14, part 1): an API key in `X-Passphrase` went to another origin on a
    /// redirect, since only names the redaction rule guesses were dropped; the auth layer marks the
    /// value sensitive, and a sensitive value is dropped whatever its name.
    #[test]
    fn regression_a_sensitive_header_is_dropped_across_origins_whatever_its_name() {
        let request = || {
            let mut key = HeaderValue::from_static("k-123");
            key.set_sensitive(true);
            http::Request::builder()
                .uri("http://127.0.0.1:2000/landing")
                .header("x-passphrase", key)
                .header("x-trace", "t-1")
                .body(Body::empty())
                .unwrap()
        };
        let policy = RedirectPolicy::new(5, Redactor::default());
        let mut cross = Replay::of(&request(), &policy);
        let hop = cross
            .next(&redirect(307, "http://127.0.0.2:2000/elsewhere"))
            .unwrap()
            .unwrap();
        assert!(!hop.headers().contains_key("x-passphrase"));
        assert_eq!(hop.headers()["x-trace"], "t-1", "only credentials go");

        let mut same = Replay::of(&request(), &policy);
        let hop = same.next(&redirect(307, "/next")).unwrap().unwrap();
        assert_eq!(
            hop.headers()["x-passphrase"],
            "k-123",
            "same origin keeps it"
        );
    }

    #[test]
    fn default_ports_make_the_same_origin() {
        let a: http::Uri = "https://example.com/a".parse().unwrap();
        let b: http::Uri = "https://example.com:443/b".parse().unwrap();
        let c: http::Uri = "https://example.com:8443/b".parse().unwrap();
        assert_eq!(origin(&a), origin(&b));
        assert_ne!(origin(&a), origin(&c));
    }

    fn redirect(status: u16, location: &str) -> Response<()> {
        Response::builder()
            .status(status)
            .header(LOCATION, location)
            .body(())
            .unwrap()
    }

    fn post(body: Body) -> Request<Body> {
        Request::post("http://api.example/v1/orders?x=1")
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, "7")
            .header("x-trace", "t-1")
            .body(body)
            .unwrap()
    }

    async fn text(body: Body) -> String {
        use http_body_util::BodyExt;
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// 303 makes any method but HEAD a GET without a body or the headers that described it; 301
    /// and 302 do so for a POST only; 307 and 308 resend the method and the body as they were.
    #[tokio::test]
    async fn each_status_keeps_or_changes_the_method_and_body_as_rfc_9110_says() {
        let policy = RedirectPolicy::new(5, Redactor::default());
        for (status, method, expect_method, body_kept) in [
            (303, Method::POST, Method::GET, false),
            (303, Method::PUT, Method::GET, false),
            (303, Method::HEAD, Method::HEAD, false),
            (301, Method::POST, Method::GET, false),
            (302, Method::POST, Method::GET, false),
            (301, Method::PUT, Method::PUT, true),
            (302, Method::DELETE, Method::DELETE, true),
            (307, Method::POST, Method::POST, true),
            (308, Method::PATCH, Method::PATCH, true),
        ] {
            let mut request = post(Body::from("{\"a\":1}"));
            *request.method_mut() = method.clone();
            let mut replay = Replay::of(&request, &policy);
            let hop = replay
                .next(&redirect(status, "/v2/orders"))
                .unwrap()
                .unwrap_or_else(|| panic!("{status} {method} is followed"));
            let case = format!("{status} {method}");
            assert_eq!(hop.method(), expect_method, "{case}");
            assert_eq!(hop.uri(), "http://api.example/v2/orders", "{case}");
            assert_eq!(hop.headers()["x-trace"], "t-1", "{case}");
            assert_eq!(
                hop.headers().contains_key(CONTENT_TYPE),
                body_kept,
                "{case}"
            );
            assert_eq!(
                hop.headers().contains_key(CONTENT_LENGTH),
                body_kept,
                "{case}"
            );
            let expect_body = if body_kept { "{\"a\":1}" } else { "" };
            assert_eq!(text(hop.into_body()).await, expect_body, "{case}");
        }
    }

    /// A body that cannot be sent again is not: the redirect that would resend it is the answer.
    /// One that a redirect drops (303) does not stop it. A second hop replays the body again.
    #[tokio::test]
    async fn a_body_is_replayed_on_every_hop_only_when_it_can_be() {
        let policy = RedirectPolicy::new(5, Redactor::default());
        let stream = || {
            Body::streaming(http_body_util::Full::new(bytes::Bytes::from_static(
                b"chunk",
            )))
        };
        let mut replay = Replay::of(&post(stream()), &policy);
        assert!(replay.next(&redirect(307, "/v2")).unwrap().is_none());
        let mut replay = Replay::of(&post(stream()), &policy);
        let hop = replay.next(&redirect(303, "/v2")).unwrap().unwrap();
        assert_eq!(hop.method(), Method::GET);

        let mut replay = Replay::of(&post(Body::from("payload")), &policy);
        let first = replay.next(&redirect(307, "/v2")).unwrap().unwrap();
        let second = replay.next(&redirect(308, "/v3")).unwrap().unwrap();
        assert_eq!(text(first.into_body()).await, "payload");
        assert_eq!(second.uri(), "http://api.example/v3");
        assert_eq!(text(second.into_body()).await, "payload");
    }

    /// Relative locations resolve against the hop that answered; a response that is not a
    /// redirect, or a redirect without a usable `Location`, is the answer.
    #[test]
    fn locations_resolve_against_the_last_hop_and_others_are_answers() {
        let policy = RedirectPolicy::new(5, Redactor::default());
        let mut replay = Replay::of(&post(Body::empty()), &policy);
        for (location, expect) in [
            ("b/c", "http://api.example/v1/b/c"),
            ("../up", "http://api.example/v1/up"),
            ("?page=2", "http://api.example/v1/up?page=2"),
            ("//other.example/x", "http://other.example/x"),
            ("https://secure.example/y", "https://secure.example/y"),
        ] {
            let hop = replay.next(&redirect(307, location)).unwrap().unwrap();
            assert_eq!(hop.uri(), expect, "{location}");
        }
        assert_eq!(replay.followed, 5);

        let mut replay = Replay::of(&post(Body::empty()), &policy);
        for status in [200, 204, 304, 300, 404, 500] {
            assert!(
                replay.next(&redirect(status, "/x")).unwrap().is_none(),
                "{status}"
            );
        }
        let no_location = Response::builder().status(302).body(()).unwrap();
        assert!(replay.next(&no_location).unwrap().is_none());
        let not_utf8 = Response::builder()
            .status(302)
            .header(LOCATION, HeaderValue::from_bytes(b"/\xff").unwrap())
            .body(())
            .unwrap();
        assert!(replay.next(&not_utf8).unwrap().is_none());
        assert_eq!(replay.followed, 0);
    }

    /// The bound counts hops; a downgrade from https is refused whatever the count.
    #[test]
    fn the_bound_and_a_downgrade_are_errors() {
        let policy = RedirectPolicy::new(2, Redactor::default());
        let mut replay = Replay::of(&post(Body::empty()), &policy);
        assert!(replay.next(&redirect(307, "/a")).unwrap().is_some());
        assert!(
            replay
                .next(&redirect(307, "https://api.example/b"))
                .unwrap()
                .is_some()
        );
        let error = replay.next(&redirect(307, "/c")).unwrap_err();
        assert!(
            error.to_string().contains("too many redirects (limit 2)"),
            "{error}"
        );

        let policy = RedirectPolicy::new(5, Redactor::default());
        let mut replay = Replay::of(&post(Body::empty()), &policy);
        replay
            .next(&redirect(307, "https://api.example/secure"))
            .unwrap();
        let error = replay
            .next(&redirect(307, "http://api.example/plain"))
            .unwrap_err();
        assert!(error.to_string().contains("downgrade"), "{error}");
    }

    /// A bound of zero turns following off: a redirect that would be followed is an error (as
    /// `TransportBuilder::max_redirects` documents), one that would not is the answer.
    #[test]
    fn with_a_bound_of_zero_a_redirect_is_an_error() {
        let policy = RedirectPolicy::new(0, Redactor::default());
        let mut replay = Replay::of(&post(Body::empty()), &policy);
        let error = replay.next(&redirect(302, "/elsewhere")).unwrap_err();
        assert!(
            error.to_string().contains("too many redirects (limit 0)"),
            "{error}"
        );
        let no_location = Response::builder().status(302).body(()).unwrap();
        assert!(replay.next(&no_location).unwrap().is_none());
    }

    /// Credentials dropped on leaving the origin stay dropped on the way back.
    #[test]
    fn credentials_dropped_across_origins_stay_dropped() {
        let policy = RedirectPolicy::new(5, Redactor::default());
        let mut request = post(Body::empty());
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_static("Bearer t"));
        let mut replay = Replay::of(&request, &policy);
        let same = replay.next(&redirect(307, "/same")).unwrap().unwrap();
        assert_eq!(same.headers()["authorization"], "Bearer t");
        let away = replay
            .next(&redirect(307, "http://other.example/away"))
            .unwrap()
            .unwrap();
        assert!(!away.headers().contains_key("authorization"));
        let back = replay
            .next(&redirect(307, "http://api.example/back"))
            .unwrap()
            .unwrap();
        assert!(!back.headers().contains_key("authorization"));
        assert_eq!(back.headers()["x-trace"], "t-1");
    }
}
