//! The response future of [`Cache`](crate::Cache), and the decisions it carries out.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};
use integration_core::BoxError;
use integration_core::ext::IntegrationName;
use integration_core::names;
use tower_service::Service;

use crate::body::CacheBody;
use crate::config::CredentialMode;
use crate::entry::{Directives, Entry, RequestView, ResponseView, Windows, override_headers};
use crate::flight::{self, Join};
use crate::key::{EntryKey, effective_uri, identity};
use crate::layer::Shared;
use crate::status::CacheStatus;

/// How long an entry that can only be revalidated (no freshness, but a validator) is kept.
const VALIDATOR_TTL: Duration = Duration::from_secs(600);

/// The response future of [`Cache`](crate::Cache).
///
/// A box: a lookup is an async store call (a Redis round trip) before the inner service is called,
/// and the flow (lookup, coalescing, revalidation, stale serving) is several awaits long. The named
/// type lets it change without changing the API.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<B> {
    inner: BoxFuture<'static, Result<Response<CacheBody<B>>, BoxError>>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response<CacheBody<B>>, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<CacheBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// What one call needs to know about its request, computed once.
struct Call {
    key: EntryKey,
    view: RequestView,
    /// The request carried a credential (its own or the stack's identity).
    credentialed: bool,
    /// The entry lives in a partition of its own identity (private-cache semantics).
    private: bool,
    /// The override TTL of the path, if any.
    override_ttl: Option<Duration>,
    label: Arc<str>,
}

fn label<B>(shared: &Shared, request: &Request<B>) -> Arc<str> {
    match IntegrationName::of(request) {
        Some(name) => name.as_arc().clone(),
        None => shared.scope.clone(),
    }
}

fn finish<B>(mut response: Response<B>, status: CacheStatus, label: &str) -> Response<B> {
    status.record(label);
    response.extensions_mut().insert(status);
    response
}

fn request_directive(headers: &HeaderMap, names: &[&str]) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            names.iter().any(|n| name.eq_ignore_ascii_case(n))
        })
}

pub(crate) async fn respond<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Default + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let label = label(&shared, &request);
    let scope = IntegrationName::of(&request).map_or(&*shared.scope, IntegrationName::as_str);
    let url = shared.key.url_key(scope, &effective_uri(&request));
    let method = request.method().clone();

    if method != Method::GET && method != Method::HEAD {
        let unsafe_method = !matches!(method, Method::OPTIONS | Method::TRACE);
        let response = inner
            .call(request)
            .await
            .map_err(|error| -> BoxError { error.into() })?;
        let status = response.status();
        // RFC 9111 4.4: a non-error answer to an unsafe method invalidates the URL's entries.
        if unsafe_method && (status.is_success() || status.is_redirection()) {
            shared.store.invalidate(url).await;
        }
        return Ok(finish(
            response.map(CacheBody::upstream),
            CacheStatus::Bypass,
            &label,
        ));
    }
    if request.headers().contains_key(header::RANGE)
        || request_directive(request.headers(), &["no-store"])
    {
        let response = inner
            .call(request)
            .await
            .map_err(|error| -> BoxError { error.into() })?;
        return Ok(finish(
            response.map(CacheBody::upstream),
            CacheStatus::Bypass,
            &label,
        ));
    }

    let config = &shared.config;
    let extra = config.credential_headers();
    let identity = identity(request.headers(), shared.identity.as_deref(), extra);
    let private = identity.is_some() && config.credentials() == CredentialMode::Partition;
    let key = shared.key.entry_key(
        url,
        &method,
        if private { identity.as_deref() } else { None },
    );
    let call = Call {
        key,
        view: RequestView::new(&method, request.uri(), request.headers(), extra),
        credentialed: identity.is_some(),
        private,
        override_ttl: config.override_for(request.uri().path()),
        label,
    };

    let lookup = shared.store.get(&call.key).await;
    let generation = lookup.generation;
    let now = shared.clock.now();
    let mut stale = None;
    // In the shared partition, a credentialed request takes only an entry a shared cache could
    // have stored for a credentialed request (RFC 9111 3.5): an answer to an anonymous request may
    // not be what this credential would get.
    let usable = |entry: &Arc<Entry>| {
        !call.credentialed || call.private || Directives::parse(&entry.headers).allows_authenticated
    };
    if let Some(entry) = lookup.entry.filter(usable) {
        match entry.policy.before_request(&call.view, now) {
            BeforeRequest::Fresh(parts) => {
                let response = Response::from_parts(parts, CacheBody::full(entry.body.clone()));
                return Ok(finish(response, CacheStatus::Hit, &call.label));
            }
            BeforeRequest::Stale {
                request: conditional,
                matches: true,
            } => {
                let staleness = entry.staleness(now);
                let swr = entry.windows.while_revalidate;
                if !swr.is_zero()
                    && staleness <= swr
                    && !request_directive(request.headers(), &["no-cache", "max-age"])
                {
                    refresh_in_background(&shared, &inner, &request, &call, &entry, generation);
                    let response = stale_response(&entry, now);
                    return Ok(finish(response, CacheStatus::Stale, &call.label));
                }
                stale = Some((entry, conditional.headers));
            }
            // Another variant (Vary) or method: a miss, whose answer replaces it.
            BeforeRequest::Stale { matches: false, .. } => {}
        }
    }

    match shared.flights.join(call.key) {
        Join::Leader(guard) => {
            let fetched = fetch(&shared, inner, request, &call, stale, generation).await;
            match fetched {
                Ok((response, status, stored)) => {
                    guard.finish(stored);
                    Ok(finish(response, status, &call.label))
                }
                Err(error) => {
                    drop(guard);
                    Err(error)
                }
            }
        }
        Join::Follower(receiver) => {
            if let Some(entry) = flight::follow(receiver).await.filter(usable) {
                let now = shared.clock.now();
                if let BeforeRequest::Fresh(parts) = entry.policy.before_request(&call.view, now) {
                    let response = Response::from_parts(parts, CacheBody::full(entry.body.clone()));
                    return Ok(finish(response, CacheStatus::Hit, &call.label));
                }
            }
            // The leader stored nothing this request may use (it failed, was cancelled, or its
            // answer may not be stored): go upstream alone.
            let (response, status, _) =
                fetch(&shared, inner, request, &call, stale, generation).await?;
            Ok(finish(response, status, &call.label))
        }
    }
}

/// A stale entry as served: its stored head, its current `Age`.
fn stale_response<B>(entry: &Entry, now: SystemTime) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::full(entry.body.clone()));
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers.clone();
    if let Ok(age) = HeaderValue::from_str(&entry.policy.age(now).as_secs().to_string()) {
        response.headers_mut().insert(header::AGE, age);
    }
    response
}

/// The upstream failures stale-if-error covers (RFC 5861 4): an error, or a 500, 502, 503 or 504.
fn is_upstream_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

type Fetched<B> = (Response<CacheBody<B>>, CacheStatus, Option<Arc<Entry>>);

/// Calls the upstream (conditionally, when a stale entry has validators) and stores what may be
/// stored. With a stale entry: a 304 refreshes it, and a failure is answered with it within its
/// stale-if-error window.
async fn fetch<S, ReqBody, ResBody>(
    shared: &Shared,
    mut inner: S,
    mut request: Request<ReqBody>,
    call: &Call,
    stale: Option<(Arc<Entry>, HeaderMap)>,
    generation: u64,
) -> Result<Fetched<ResBody>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if let Some((_, conditional)) = &stale {
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(value) = conditional.get(&name) {
                request.headers_mut().insert(name, value.clone());
            }
        }
    }
    let result = inner
        .call(request)
        .await
        .map_err(|error| -> BoxError { error.into() });
    let now = shared.clock.now();
    let serve_stale = |entry: &Arc<Entry>| {
        let window = entry.windows.if_error;
        !window.is_zero() && entry.staleness(now) <= window
    };
    let response = match (result, &stale) {
        (Err(error), Some((entry, _))) if serve_stale(entry) => {
            tracing::debug!(error = %error, "upstream failed: serving a stale entry (stale-if-error)");
            return Ok((stale_response(entry, now), CacheStatus::Stale, None));
        }
        (Err(error), _) => return Err(error),
        (Ok(response), Some((entry, _)))
            if is_upstream_failure(response.status()) && serve_stale(entry) =>
        {
            return Ok((stale_response(entry, now), CacheStatus::Stale, None));
        }
        (Ok(response), _) => response,
    };

    if let (StatusCode::NOT_MODIFIED, Some((entry, _))) = (response.status(), &stale) {
        let head = ResponseView {
            status: response.status(),
            headers: response.headers(),
        };
        if let AfterResponse::NotModified(policy, parts) =
            entry.policy.after_response(&call.view, &head, now)
        {
            let directives = Directives::parse(&parts.headers);
            let windows = windows(shared, directives);
            let refreshed = Arc::new(Entry::new(
                (parts.status, parts.headers.clone()),
                policy,
                entry.body.clone(),
                now,
                windows,
                generation,
            ));
            store(shared, call, &refreshed, now);
            let response = Response::from_parts(parts, CacheBody::full(entry.body.clone()));
            return Ok((response, CacheStatus::Revalidated, Some(refreshed)));
        }
    }
    store_response(shared, call, response, now, generation).await
}

fn windows(shared: &Shared, directives: Directives) -> Windows {
    let config = &shared.config;
    Windows::new(
        directives,
        config.stale_while_revalidate(),
        config.stale_if_error(),
    )
}

fn store(shared: &Shared, call: &Call, entry: &Arc<Entry>, now: SystemTime) {
    let mut ttl = entry.ttl(now, shared.config.max_ttl());
    let has_validator = entry.headers.contains_key(header::ETAG)
        || entry.headers.contains_key(header::LAST_MODIFIED);
    if has_validator {
        ttl = ttl.max(VALIDATOR_TTL.min(shared.config.max_ttl()));
    }
    if ttl.is_zero() {
        return;
    }
    shared.store.put(call.key, entry.clone(), ttl);
    // Settled on each store (a miss, never a hit): the pending work is what this insert added.
    if let Some(bytes) = shared.store.stored_bytes() {
        metrics::gauge!(names::CACHE_STORED_BYTES, names::INTEGRATION => call.label.to_string())
            .set(bytes as f64);
    }
}

/// Whether the response may be stored for this call, with the policy it is stored under.
fn storable_policy(
    shared: &Shared,
    call: &Call,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<(CachePolicy, Directives)> {
    let overridden;
    let headers = match call.override_ttl {
        Some(ttl) => {
            overridden = override_headers(headers, ttl);
            &overridden
        }
        None => headers,
    };
    let directives = Directives::parse(headers);
    let extra = shared.config.credential_headers();
    if call.credentialed && !call.private {
        // RFC 9111 3.5, in the partition every caller shares.
        if !directives.allows_authenticated {
            return None;
        }
        // Stored requests carry no credential: a variant chosen by one could not be told apart.
        let varies_on_credential = headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|name| {
                name == "*"
                    || name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("cookie")
                    || name.eq_ignore_ascii_case("proxy-authorization")
                    || extra.iter().any(|e| name.eq_ignore_ascii_case(e.as_str()))
            });
        if varies_on_credential {
            return None;
        }
    }
    let response = ResponseView { status, headers };
    let policy =
        CachePolicy::new_options(&call.view, &response, now, Entry::options(!call.private));
    policy.is_storable().then_some((policy, directives))
}

/// Stores the upstream's answer when it may be stored and its body fits the cap; passes it through
/// otherwise.
async fn store_response<B>(
    shared: &Shared,
    call: &Call,
    response: Response<B>,
    now: SystemTime,
    generation: u64,
) -> Result<Fetched<B>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Some((policy, directives)) =
        storable_policy(shared, call, response.status(), response.headers(), now)
    else {
        return Ok((response.map(CacheBody::upstream), CacheStatus::Miss, None));
    };
    let cap = shared.config.max_body_bytes();
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Ok((response.map(CacheBody::upstream), CacheStatus::Miss, None));
    }
    let (parts, body) = response.into_parts();
    let mut body = Box::pin(body);
    let mut buffered = BytesMut::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not stored
                };
                if buffered.len() + data.len() > cap {
                    // Too large to store: hand out what was read, then stream the rest.
                    let body = CacheBody::partial(vec![buffered.freeze(), data], body);
                    return Ok((Response::from_parts(parts, body), CacheStatus::Miss, None));
                }
                buffered.extend_from_slice(&data);
            }
        }
    }
    let body = buffered.freeze();
    let windows = windows(shared, directives);
    let entry = Arc::new(Entry::new(
        (parts.status, parts.headers.clone()),
        policy,
        body.clone(),
        now,
        windows,
        generation,
    ));
    store(shared, call, &entry, now);
    Ok((
        Response::from_parts(parts, CacheBody::full(body)),
        CacheStatus::Miss,
        Some(entry),
    ))
}

/// Refreshes a stale entry in the background (stale-while-revalidate), one refresh per key at a
/// time, with a clone of the inner service made ready first.
fn refresh_in_background<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    inner: &S,
    request: &Request<ReqBody>,
    call: &Call,
    entry: &Arc<Entry>,
    generation: u64,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Default + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let Some(guard) = shared.flights.try_lead(call.key) else {
        return; // a refresh of this key is already under way
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut refresh = Request::new(ReqBody::default());
    *refresh.method_mut() = request.method().clone();
    *refresh.uri_mut() = request.uri().clone();
    *refresh.version_mut() = request.version();
    *refresh.headers_mut() = request.headers().clone();
    if let Some(name) = IntegrationName::of(request) {
        refresh.extensions_mut().insert(name.clone());
    }
    let conditional = match entry.policy.before_request(&call.view, shared.clock.now()) {
        BeforeRequest::Stale { request, .. } => request.headers,
        BeforeRequest::Fresh(_) => HeaderMap::new(),
    };
    let call = Call {
        key: call.key,
        view: RequestView::new(
            refresh.method(),
            refresh.uri(),
            refresh.headers(),
            shared.config.credential_headers(),
        ),
        credentialed: call.credentialed,
        private: call.private,
        override_ttl: call.override_ttl,
        label: call.label.clone(),
    };
    let shared = shared.clone();
    let mut inner = inner.clone();
    let entry = entry.clone();
    runtime.spawn(async move {
        if futures_util::future::poll_fn(|cx| inner.poll_ready(cx))
            .await
            .is_err()
        {
            return;
        }
        // The refreshed entry (or none) ends the flight; the response is not read by anyone.
        let stale = Some((entry, conditional));
        if let Ok((_, _, stored)) = fetch(&shared, inner, refresh, &call, stale, generation).await {
            guard.finish(stored);
        }
    });
}
