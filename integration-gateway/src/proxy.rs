//! The gateway's listener: `/<integration>/<path>` through that integration's stack.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use integration_client::ResponseBody;
use integration_core::names::{HTTP_RESPONSE_STATUS_CODE, INTEGRATION, REASON};
use integration_core::{Body, Error, ErrorKind};
use tokio::time::Instant;

use crate::names::{
    ATTEMPTS_HEADER, IN_FLIGHT, INTEGRATION_HEADER, REFUSED, REQUEST_DURATION, REQUESTS,
};
use crate::state::Shared;

/// The body of every answer of the gateway's listener: the upstream's, streamed, or the gateway's
/// own small JSON.
pub(crate) type GatewayBody = Either<ResponseBody, Full<Bytes>>;

/// Headers that belong to one connection, not to the message (RFC 9110 section 7.6.1), and `host`,
/// which names the gateway.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, those the `Connection` header names included.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// A small JSON answer of the gateway itself.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<GatewayBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The status the gateway answers with when the stack failed, and whether a `Retry-After` applies.
///
/// - the upstream could not be reached or broke (`connect`, `other`, `body`), or no credential
///   could be had for it (`auth`): `502 Bad Gateway`;
/// - the stack held the call back to protect the upstream (`rate_limited`, `circuit_open`,
///   `retry_budget_exhausted`) or the gateway is shutting down (`cancelled`): `503 Service
///   Unavailable`, with `Retry-After` when known;
/// - an attempt or the call's deadline ran out (`timeout`, `deadline_exceeded`): `504 Gateway
///   Timeout`;
/// - the path would leave the integration's base URL (`request`): `400 Bad Request`;
/// - the integration was removed while the call started (`config`): `404 Not Found`.
pub(crate) fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::RateLimited
        | ErrorKind::CircuitOpen
        | ErrorKind::BudgetExhausted
        | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout | ErrorKind::Deadline => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Request => StatusCode::BAD_REQUEST,
        ErrorKind::Config => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn error_response(error: &Error, name: &str) -> Response<GatewayBody> {
    let status = status_for(error.kind());
    let mut response = json_response(
        status,
        &serde_json::json!({
            "error": error.kind().as_str(),
            "message": error.to_string(),
            "integration": name,
            "attempts": error.attempts(),
        }),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE
        && let Some(after) = error.retry_after()
    {
        // Whole seconds, rounded up: never ask the caller back before the stack would take it.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn refused(reason: &'static str, status: StatusCode, message: String) -> Response<GatewayBody> {
    metrics::counter!(REFUSED, REASON => reason).increment(1);
    json_response(
        status,
        &serde_json::json!({ "error": reason, "message": message }),
    )
}

/// Splits `/<integration>/<rest>?query` into the name and the path (with its query) to send.
fn route(uri: &http::Uri) -> Option<(&str, String)> {
    let path = uri.path().strip_prefix('/')?;
    let (name, rest) = path.split_once('/').unwrap_or((path, ""));
    if name.is_empty() {
        return None;
    }
    let mut target = format!("/{rest}");
    if let Some(query) = uri.query() {
        target.push('?');
        target.push_str(query);
    }
    Some((name, target))
}

/// Serves one request of the gateway's listener.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, std::convert::Infallible> {
    let mut response = answer(&shared, request).await;
    if shared.is_closing() {
        // The listener is closed: this connection ends after this answer, announced, so that the
        // caller never sends on a connection we are about to close.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<GatewayBody> {
    // Callers first: a refused caller learns nothing (not even which integrations exist) and
    // spends nothing (no body read, no permit, no upstream call).
    if let Err(refusal) = shared.caller.check(request.headers()) {
        let mut response = refused(
            refusal.as_str(),
            StatusCode::UNAUTHORIZED,
            "the gateway requires the callers' shared token".to_owned(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"integration-gateway\""),
        );
        return response;
    }
    let Some((name, target)) = route(request.uri()) else {
        return refused(
            "unknown_integration",
            StatusCode::NOT_FOUND,
            "the path names no integration: use /<integration>/<path>".to_owned(),
        );
    };
    let name = name.to_owned();
    let api = match shared.client.api(&name) {
        Ok(api) => api,
        Err(error) => {
            return refused(
                "unknown_integration",
                StatusCode::NOT_FOUND,
                error.to_string(),
            );
        }
    };
    let mut tracked = Tracked::begin(shared, &name);
    let (status, failure, response) = forward(shared, &api, &name, target, request).await;
    tracked.outcome = Some((status, failure));
    drop(tracked);
    response
}

/// Counts one forwarded request from its start to its answer; dropped early (the caller went away
/// and hyper dropped the request's future), it still counts, as `499` / `cancelled`.
struct Tracked<'a> {
    shared: &'a Shared,
    name: &'a str,
    started: Instant,
    outcome: Option<(StatusCode, Option<(&'static str, String)>)>,
}

impl<'a> Tracked<'a> {
    fn begin(shared: &'a Shared, name: &'a str) -> Self {
        shared.begin(name);
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Tracked {
            shared,
            name,
            started: Instant::now(),
            outcome: None,
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        let (status, failure) = self.outcome.take().unwrap_or_else(|| {
            (
                StatusCode::from_u16(499).expect("499 is a valid status code"),
                Some(("cancelled", "the caller left before the answer".to_owned())),
            )
        });
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
        metrics::histogram!(REQUEST_DURATION, INTEGRATION => self.name.to_owned())
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(
            REQUESTS,
            INTEGRATION => self.name.to_owned(),
            HTTP_RESPONSE_STATUS_CODE => status.as_str().to_owned()
        )
        .increment(1);
        self.shared.end(self.name, status.as_u16(), failure);
    }
}

type Forwarded = (
    StatusCode,
    Option<(&'static str, String)>,
    Response<GatewayBody>,
);

async fn forward(
    shared: &Shared,
    api: &integration_client::Api,
    name: &str,
    target: String,
    request: Request<Incoming>,
) -> Forwarded {
    let (parts, incoming) = request.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(shared.caller.header());
    let body = match request_body(incoming, shared.replay_buffer).await {
        Ok(body) => body,
        Err(error) => {
            let response = json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "body",
                    "message": format!("the request body could not be read: {error}"),
                    "integration": name,
                }),
            );
            return (
                StatusCode::BAD_REQUEST,
                Some(("body", error.to_string())),
                response,
            );
        }
    };
    let sent = api
        .request(parts.method, &target)
        .headers(headers)
        .body_stream(body)
        .send()
        .await;
    match sent {
        Ok(upstream) => {
            let attempts = upstream.attempts();
            let mut response = upstream.into_http().map(Either::Left);
            strip_hop_by_hop(response.headers_mut());
            let headers = response.headers_mut();
            headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
            if let Ok(value) = HeaderValue::from_str(name) {
                headers.insert(INTEGRATION_HEADER, value);
            }
            (response.status(), None, response)
        }
        Err(error) => {
            let mut response = error_response(&error, name);
            response
                .headers_mut()
                .insert(ATTEMPTS_HEADER, HeaderValue::from(error.attempts()));
            if let Ok(value) = HeaderValue::from_str(name) {
                response.headers_mut().insert(INTEGRATION_HEADER, value);
            }
            (
                response.status(),
                Some((error.kind().as_str(), error.to_string())),
                response,
            )
        }
    }
}

/// The caller's body as the stack takes it: empty, read whole when its announced length is at most
/// `replay_buffer` (so that a retry can send it again), streamed otherwise (sent once).
async fn request_body(
    incoming: Incoming,
    replay_buffer: usize,
) -> Result<Body, integration_core::BoxError> {
    if incoming.is_end_stream() {
        return Ok(Body::empty());
    }
    match incoming.size_hint().exact() {
        Some(length) if usize::try_from(length).is_ok_and(|l| l <= replay_buffer) => {
            Body::buffer(incoming, replay_buffer).await
        }
        _ => Ok(Body::streaming(incoming)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_segment_names_the_integration_and_the_rest_is_sent() {
        let uri: http::Uri = "/github/users/octocat?per_page=5".parse().unwrap();
        assert_eq!(
            route(&uri),
            Some(("github", "/users/octocat?per_page=5".to_owned()))
        );
        let uri: http::Uri = "/github".parse().unwrap();
        assert_eq!(route(&uri), Some(("github", "/".to_owned())));
        let uri: http::Uri = "/".parse().unwrap();
        assert_eq!(route(&uri), None);
        let uri: http::Uri = "//users".parse().unwrap();
        assert_eq!(route(&uri), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace-hop"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-trace-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn each_error_kind_maps_to_its_gateway_status() {
        use ErrorKind::*;
        for (kind, status) in [
            (Connect, 502),
            (Other, 502),
            (Auth, 502),
            (Body, 502),
            (Status, 502),
            (RateLimited, 503),
            (CircuitOpen, 503),
            (BudgetExhausted, 503),
            (Cancelled, 503),
            (Timeout, 504),
            (Deadline, 504),
            (Request, 400),
            (Config, 404),
        ] {
            assert_eq!(status_for(kind).as_u16(), status, "{kind}");
        }
    }

    #[test]
    fn a_503_carries_the_retry_after_rounded_up() {
        let error = Error::new(ErrorKind::RateLimited)
            .with_retry_after(std::time::Duration::from_millis(1_200));
        let response = error_response(&error, "github");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
