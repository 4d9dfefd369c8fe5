//! Building and sending a request.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use integration_core::ext::{
    Deadline, IDEMPOTENCY_KEY, Idempotent, IntegrationName, OwnCredential,
};
use integration_core::{Body, Error, ErrorKind};
use serde::Serialize;
use tower::Service as _;

use crate::client::Api;
use crate::response::{Response, ResponseBody};
use crate::stack::HttpService;

/// A request being built; send it with [`send`](RequestBuilder::send).
///
/// Mistakes made while building (a header value that is not valid, a body that does not serialize)
/// are kept and returned by `send`, so the builder chains without `?` at every step.
///
/// # Paths
///
/// The path is joined under the API's base URL, prefix included (`https://api.example.com/v1/` +
/// `/users` is `https://api.example.com/v1/users`). A path that would leave the base is refused with
/// [`ErrorKind::Request`] before anything is sent: an absolute URL, a scheme-relative one (`//host`),
/// a `.` or `..` segment (also percent-encoded), a backslash, a fragment. A `?query` in the path is
/// kept; [`query`](RequestBuilder::query) adds more.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    api: Api,
    method: Method,
    path: String,
    query: Vec<String>,
    headers: HeaderMap,
    body: Body,
    idempotent: Option<bool>,
    timeout: Option<Duration>,
    error: Option<Error>,
    /// Set by `bearer_auth`/`basic_auth`: the request's own credential replaces the integration's.
    own_credential: bool,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the headers or the query (the path's own `?query` included): they may carry secrets.
        let path = self
            .path
            .split_once('?')
            .map_or(&*self.path, |(path, _)| path);
        f.debug_struct("RequestBuilder")
            .field("api", &self.api.name())
            .field("method", &self.method)
            .field("path", &path)
            .field("body", &self.body)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Room left after a path for the base's path and the query: `send` joins them in the path's own
/// buffer, and most joins fit without growing it (one allocation a call fewer than a copy, issue 19).
const PATH_ROOM: usize = 48;

/// `path` in a buffer with [`PATH_ROOM`] to spare.
fn path_buffer(path: &str) -> String {
    let mut buffer = String::with_capacity(path.len() + PATH_ROOM);
    buffer.push_str(path);
    buffer
}

impl RequestBuilder {
    pub(crate) fn new(api: Api, method: Method, path: &str) -> Self {
        Self {
            api,
            method,
            path: path_buffer(path),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Body::empty(),
            idempotent: None,
            timeout: None,
            error: None,
            own_credential: false,
        }
    }

    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error.with_integration(self.api.name.clone()));
        }
    }

    /// Adds query parameters, serialized with `serde_urlencoded` (a struct, a map, or a slice of
    /// pairs).
    ///
    /// ```
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|r: http::Request<Body>| async move {
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(r.uri().to_string())))
    /// # });
    /// # let client = Client::from_service("search", "https://search.example/", upstream)?;
    /// let url = client.api("search")?.get("/q").query(&[("term", "tower layers"), ("page", "2")]).send().await?.text().await?;
    /// assert_eq!(url, "https://search.example/q?term=tower+layers&page=2");
    /// # Ok(())
    /// # }
    /// ```
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        match serde_urlencoded::to_string(query) {
            Ok(encoded) if encoded.is_empty() => {}
            Ok(encoded) => self.query.push(encoded),
            Err(e) => self.fail(
                Error::new(ErrorKind::Request)
                    .with_message("query parameters do not serialize")
                    .with_source(e),
            ),
        }
        self
    }

    /// Adds a header (after the API's default headers, replacing a default of the same name).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        let name = match name.try_into() {
            Ok(name) => name,
            Err(e) => {
                self.fail(
                    Error::new(ErrorKind::Request)
                        .with_message("invalid header name")
                        .with_source(e.into()),
                );
                return self;
            }
        };
        match value.try_into() {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(e) => self.fail(
                Error::new(ErrorKind::Request)
                    // The name is safe to show, the value is not.
                    .with_message(format!("invalid value for header `{name}`"))
                    .with_source(e.into()),
            ),
        }
        self
    }

    /// Adds every header of `headers`.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        let mut last: Option<HeaderName> = None;
        for (name, value) in headers {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                self.headers.append(name.clone(), value);
            }
        }
        self
    }

    /// Sends `value` as JSON (`Content-Type: application/json` unless set).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = Body::from(bytes);
                self.default_content_type("application/json");
            }
            Err(e) => self.fail(
                Error::new(ErrorKind::Request)
                    .with_message("body does not serialize to JSON")
                    .with_source(e),
            ),
        }
        self
    }

    /// Sends `value` as a form (`Content-Type: application/x-www-form-urlencoded` unless set).
    pub fn form<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(encoded) => {
                self.body = Body::from(encoded);
                self.default_content_type("application/x-www-form-urlencoded");
            }
            Err(e) => self.fail(
                Error::new(ErrorKind::Request)
                    .with_message("body does not serialize to a form")
                    .with_source(e),
            ),
        }
        self
    }

    /// Sends these bytes as the body. Bytes are replayable: a retry sends them again.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::from(body.into());
        self
    }

    /// Sends a streaming body; it is sent once, so the request is never retried after it may have
    /// reached the upstream.
    pub fn body_stream(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    fn default_content_type(&mut self, value: &'static str) {
        if !self.headers.contains_key(CONTENT_TYPE) {
            self.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(value));
        }
    }

    /// Sets the `Idempotency-Key` header: the upstream deduplicates, so a POST or PATCH becomes safe
    /// to retry. The same key goes with every attempt.
    pub fn idempotency_key(self, key: impl AsRef<str>) -> Self {
        let key = key.as_ref().to_owned();
        let mut this = self;
        this.headers.remove(IDEMPOTENCY_KEY);
        this.header(IDEMPOTENCY_KEY, key)
    }

    /// Sets a fresh random (UUID v4) `Idempotency-Key`.
    pub fn with_idempotency_key(self) -> Self {
        self.idempotency_key(uuid::Uuid::new_v4().to_string())
    }

    /// States whether the request may be sent more than once, overriding what its method implies:
    /// `true` for a POST the API documents as idempotent, `false` to never retry once it may have been
    /// sent, even a GET.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// The total deadline of this call, every attempt and wait and the reading of the response body
    /// included; tightens the integration's own `timeout` (the earlier wins). See
    /// [`Response`'s deadline](crate::Response#deadline) for a body that needs longer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends `Authorization: Bearer <token>` with this request, in place of the integration's own
    /// credential.
    ///
    /// The value is marked sensitive: it is redacted in every log, span and error, and dropped on a
    /// redirect to another origin. The integration's configured `auth` is not applied to this
    /// request (its header would replace this one), and a 401 is the answer: the caller's token is
    /// never replayed. Call it last when other headers set `Authorization`.
    ///
    /// ```
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|r: http::Request<Body>| async move {
    /// #     let seen = r.headers()["authorization"].to_str().unwrap().to_owned();
    /// #     assert!(r.headers()["authorization"].is_sensitive());
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(seen)))
    /// # });
    /// # let client = Client::from_service("github", "https://api.github.com/", upstream)?;
    /// // A call on behalf of one user, with that user's token.
    /// let seen = client.api("github")?.get("/user").bearer_auth("gho_user_token").send().await?.text().await?;
    /// assert_eq!(seen, "Bearer gho_user_token");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bearer_auth<T: fmt::Display>(self, token: T) -> Self {
        self.own_authorization(format!("Bearer {token}"))
    }

    /// Sends `Authorization: Basic <base64(username:password)>` with this request (`username:`
    /// without a password), in place of the integration's own credential; see
    /// [`bearer_auth`](RequestBuilder::bearer_auth) for how it is protected and how it replaces the
    /// integration's `auth`.
    ///
    /// ```
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|r: http::Request<Body>| async move {
    /// #     let seen = r.headers()["authorization"].to_str().unwrap().to_owned();
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(seen)))
    /// # });
    /// # let client = Client::from_service("legacy", "https://legacy.example/", upstream)?;
    /// let seen = client.api("legacy")?.get("/report").basic_auth("ana", Some("s3cret")).send().await?.text().await?;
    /// assert_eq!(seen, "Basic YW5hOnMzY3JldA==");
    /// # Ok(())
    /// # }
    /// ```
    pub fn basic_auth<U: fmt::Display, P: fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        use base64::Engine as _;
        let pair = match password {
            Some(password) => format!("{username}:{password}"),
            None => format!("{username}:"),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        self.own_authorization(format!("Basic {encoded}"))
    }

    fn own_authorization(mut self, value: String) -> Self {
        match HeaderValue::try_from(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.headers.insert(http::header::AUTHORIZATION, value);
                self.own_credential = true;
            }
            // The error says nothing of the value: it is a secret.
            Err(_) => self.fail(
                Error::new(ErrorKind::Request)
                    .with_message("the per-request credential is not a valid header value"),
            ),
        }
        self
    }

    /// Sends `form` as `multipart/form-data` (the `Content-Type` with its boundary is set, replacing
    /// any other). A form of text and bytes parts is replayable; one with a file or a stream is sent
    /// once (see [`multipart`](crate::multipart)).
    pub fn multipart(mut self, form: crate::multipart::Form) -> Self {
        let (content_type, body) = form.into_body();
        self.headers.insert(CONTENT_TYPE, content_type);
        self.body = body;
        self
    }

    /// A copy of this builder, to send the same request again; `None` when its body is a stream
    /// that cannot be replayed, or when it holds a mistake that [`send`](RequestBuilder::send) would
    /// report.
    ///
    /// ```
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|_: http::Request<Body>| async {
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from("ok")))
    /// # });
    /// # let client = Client::from_service("hooks", "https://hooks.example/", upstream)?;
    /// let ping = client.api("hooks")?.post("/ping").json(&serde_json::json!({ "n": 1 }));
    /// let again = ping.try_clone().expect("a JSON body replays");
    /// ping.send().await?;
    /// again.send().await?;
    ///
    /// let stream = client.api("hooks")?.post("/upload").body_stream(Body::streaming(http_body_util::Empty::new()));
    /// assert!(stream.try_clone().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Option<Self> {
        if self.error.is_some() {
            return None;
        }
        Some(Self {
            api: self.api.clone(),
            method: self.method.clone(),
            path: path_buffer(&self.path),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.try_clone()?,
            idempotent: self.idempotent,
            timeout: self.timeout,
            error: None,
            own_credential: self.own_credential,
        })
    }

    /// Builds the `http::Request` that [`send`](RequestBuilder::send) would send, without sending it.
    ///
    /// # Errors
    ///
    /// The first mistake made while building, a refused path ([`ErrorKind::Request`]), or
    /// [`ErrorKind::Config`] when the API was removed.
    pub fn build(mut self) -> Result<Request<Body>, Error> {
        let (request, _) = self.build_parts()?;
        Ok(request)
    }

    /// The request, its parts taken out of the builder (which is left empty): the builder is not
    /// moved, so `SendFuture` builds from the one it holds without copying it (issue 19).
    fn build_parts(&mut self) -> Result<(Request<Body>, BuiltFor), Error> {
        let name = self.api.name.clone();
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let entry = self.api.current_entry()?;
        // The path's buffer becomes the URI's path and query (the base's path written over its
        // leading `/`): no copy of it.
        let uri = entry
            .base
            .join_uri(std::mem::take(&mut self.path), &self.query)
            .map_err(|e| e.with_integration(name.clone()))?;
        // A request's own header replaces the API's default of the same name: the builder's map is
        // sent as it is, with the defaults it does not name added (rather than a copy of the
        // defaults the builder's headers are appended to: one map, and its allocations, fewer a
        // call, issue 19).
        let mut headers = std::mem::take(&mut self.headers);
        for key in entry.default_headers.keys() {
            if !headers.contains_key(key) {
                for value in entry.default_headers.get_all(key) {
                    headers.append(key.clone(), value.clone());
                }
            }
        }
        let mut request = Request::new(std::mem::take(&mut self.body));
        *request.method_mut() = std::mem::take(&mut self.method);
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let extensions = request.extensions_mut();
        extensions.insert(name.clone());
        if let Some(flag) = self.idempotent {
            extensions.insert(Idempotent(flag));
        }
        if self.own_credential {
            extensions.insert(OwnCredential);
        }
        let deadline = self.timeout.map(Deadline::after);
        // The call's deadline, known here so that it can cover the response body too: the
        // request's own timeout or the integration's, the earlier. Written into the request, the
        // deadline layer keeps it (it only ever tightens), so head and body end at the same instant.
        let configured = entry
            .config
            .as_ref()
            .map(|config| Deadline::after(config.timeout));
        let call_deadline = match (deadline, configured) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(call_deadline) = call_deadline {
            extensions.insert(call_deadline);
        }
        Ok((
            request,
            BuiltFor {
                entry,
                deadline,
                call_deadline,
            },
        ))
    }

    /// Sends the request through the API's stack and waits for the response headers. The call's
    /// deadline goes on with the [`Response`]: it covers reading the body as well.
    ///
    /// The returned [`SendFuture`] does nothing until it is awaited (polled).
    ///
    /// # Errors
    ///
    /// The future's error: an [`Error`] naming the integration (and the attempts, when a retry
    /// layer counted them): a mistake made while building, a refused path ([`ErrorKind::Request`]),
    /// a removed API or a client shutting down, or whatever the stack failed with (connect,
    /// timeout, deadline, rate limit, circuit open, auth...). An error status is not an error
    /// here: see [`Response::error_for_status`].
    pub fn send(self) -> SendFuture {
        SendFuture {
            state: SendState::Start(self),
        }
    }

    /// What the first poll of [`SendFuture`] does: the client entered, the request built (the
    /// builder left empty), its call started on the API's stack when the stack is ready.
    fn start(&mut self, cx: &mut std::task::Context<'_>) -> Result<Sending, Error> {
        use std::task::Poll;
        let name = self.api.name.clone();
        let guard = self
            .api
            .client
            .shared
            .enter()
            .map_err(|e| e.with_integration(name.clone()))?;
        let (request, built) = self.build_parts()?;
        // For `Response::url` when the stack records no final URL (a redirect follower does when
        // it followed one): the URL sent. A clone of shared bytes.
        let sent_uri = request.uri().clone();
        // A clone of the stack that an earlier call has made its call with (see `Services`), called
        // here when it is ready, as it is unless a layer reserves in `poll_ready`, and given back
        // at once: only the stack's boxed future is kept, not the service and the request beside
        // it (`tower::util::Oneshot`, 288 bytes, issue 19).
        let mut service = built.entry.service.take();
        let call = match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let future = service.call(request);
                built.entry.service.give_back(service);
                Call::Called(future)
            }
            Poll::Ready(Err(error)) => return Err(Error::from_boxed(error).with_integration(name)),
            Poll::Pending => Call::NotReady(Box::new(NotReady {
                service,
                request: Some(request),
                entry: built.entry.clone(),
            })),
        };
        Ok(Sending {
            call,
            timeout: built
                .deadline
                .map(|deadline| Box::pin(tokio::time::sleep_until(deadline.instant()))),
            name,
            max_response_bytes: built.entry.max_response_bytes,
            call_deadline: built.call_deadline,
            sent_uri,
            _guard: guard,
        })
    }
}

/// The future of [`RequestBuilder::send`]: the [`Response`] once its head has arrived, or an
/// [`Error`] naming the integration.
///
/// Nothing is done until it is first polled: the client is entered, the request built and its call
/// started then, so a request's timeout counts from its first poll, as an `async fn`'s would.
///
/// A named future rather than an `async fn`'s: it holds the builder until its first poll, then only
/// what the call needs (the stack's boxed future, the integration's name, the URL sent, the
/// request's own timer, boxed, as few requests set one). The `async fn`'s state machine kept the
/// builder, the request, the stack's service and an unboxed timer side by side: 1,384 bytes,
/// copied with every move of the future; this one is the builder's size (issue 19). A stack not
/// ready at the first poll keeps its service and the request, boxed, until it is.
///
/// ```
/// # use integration_client::Client;
/// # use integration_config::IntegrationConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder()
///     .api("example", IntegrationConfig::builder("https://api.example.com/v1/").build()?)
///     .build()?;
/// // A named type: it can be kept in a struct or a collection before it is awaited.
/// let pending: integration_client::SendFuture = client.api("example")?.get("/users").send();
/// drop(pending); // nothing was sent
/// # Ok(())
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture {
    state: SendState,
}

enum SendState {
    Start(RequestBuilder),
    Sending(Sending),
    Done,
}

/// The stack's call.
enum Call {
    /// The stack was not ready at the first poll.
    NotReady(Box<NotReady>),
    Called(<HttpService as tower::Service<Request<Body>>>::Future),
}

/// A call whose stack was not ready at its first poll.
struct NotReady {
    /// The clone of the stack that `poll_ready` is asked again.
    service: HttpService,
    /// The request it is called with once ready.
    request: Option<Request<Body>>,
    /// Where the clone is given back once called.
    entry: std::sync::Arc<crate::client::ApiEntry>,
}

impl Call {
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<http::Response<ResponseBody>, integration_core::BoxError>> {
        use std::task::Poll;
        if let Call::NotReady(waiting) = self {
            match waiting.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {
                    let request = waiting.request.take().expect("called once, then `Called`");
                    let future = waiting.service.call(request);
                    let Call::NotReady(waiting) = std::mem::replace(self, Call::Called(future))
                    else {
                        unreachable!("matched above")
                    };
                    let NotReady { service, entry, .. } = *waiting;
                    entry.service.give_back(service);
                }
            }
        }
        match self {
            Call::Called(future) => future.as_mut().poll(cx),
            Call::NotReady(_) => unreachable!("replaced above"),
        }
    }
}

/// A started call: what it needs until its response head arrives.
struct Sending {
    call: Call,
    /// The request's own timeout, as a timer.
    timeout: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    name: IntegrationName,
    max_response_bytes: usize,
    /// The deadline of the whole call, body included: the request's or the integration's, the
    /// earlier.
    call_deadline: Option<Deadline>,
    sent_uri: http::Uri,
    /// Counts the call as in flight for [`Client::shutdown`](crate::Client::shutdown): dropped
    /// with the call, when its head arrives, it fails, or the future is dropped.
    _guard: crate::client::InFlightGuard,
}

impl Sending {
    fn finish(
        self,
        outcome: Result<http::Response<ResponseBody>, integration_core::BoxError>,
    ) -> Result<Response, Error> {
        let Sending {
            name,
            max_response_bytes,
            call_deadline,
            sent_uri,
            ..
        } = self;
        match outcome {
            Ok(response) => {
                let deadline = call_deadline.map(|d| d.instant());
                Ok(Response::new(
                    response.map(|body| body.with_deadline(deadline, None)),
                    name,
                    max_response_bytes,
                    sent_uri,
                ))
            }
            Err(error) => Err(Error::from_boxed(error).with_integration(name)),
        }
    }
}

impl fmt::Debug for SendFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            SendState::Start(builder) => {
                return f.debug_tuple("SendFuture").field(builder).finish();
            }
            SendState::Sending(sending) => sending.name.as_str(),
            SendState::Done => "done",
        };
        f.debug_tuple("SendFuture").field(&state).finish()
    }
}

impl std::future::Future for SendFuture {
    type Output = Result<Response, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        if let SendState::Start(builder) = &mut this.state {
            match builder.start(cx) {
                Ok(sending) => this.state = SendState::Sending(sending),
                Err(error) => {
                    this.state = SendState::Done;
                    return Poll::Ready(Err(error));
                }
            }
        }
        let SendState::Sending(sending) = &mut this.state else {
            panic!("`SendFuture` polled after completion");
        };
        let outcome = match sending.call.poll(cx) {
            Poll::Ready(outcome) => outcome,
            // The call first, as `tokio::time::timeout` does: a head that is ready wins over a
            // timer that has just fired.
            Poll::Pending => {
                let expired = sending
                    .timeout
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                let name = sending.name.clone();
                // The call, its connection and the in-flight count are let go now.
                this.state = SendState::Done;
                return Poll::Ready(Err(Error::from_boxed(Box::new(
                    integration_core::error::DeadlineExceeded::new(),
                ))
                .with_integration(name)));
            }
        };
        let SendState::Sending(sending) = std::mem::replace(&mut this.state, SendState::Done)
        else {
            unreachable!("matched above")
        };
        Poll::Ready(sending.finish(outcome))
    }
}

struct BuiltFor {
    entry: std::sync::Arc<crate::client::ApiEntry>,
    /// The request's own timeout, as a deadline.
    deadline: Option<Deadline>,
    /// The deadline of the whole call, body included: the request's or the integration's, the
    /// earlier.
    call_deadline: Option<Deadline>,
}
