//! The response of a call: status, headers, attempts, and a body read whole under a cap or streamed.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Limited};
use integration_core::error::{BodyTimeout, BodyTooLarge};
use integration_core::ext::{Attempts, IntegrationName};
use integration_core::throttle::ThrottleSignal;
use integration_core::{BoxError, Error, ErrorKind};
use integration_log::LogBody;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};
use tower_http::follow_redirect::RequestUri;

use crate::transport::TransportBody;

/// The response body type of every stack the facade assembles.
///
/// One type for every body: the facade's stacks end in different services (the pooled transport, a
/// test's `service_fn`, a user's own stack through [`Client::from_service`](crate::Client::from_service)),
/// and layers such as logging wrap the body in their own types. The body of the stack the facade
/// builds from configuration (without a cache) is held as it is: its type is known here, and most
/// calls have it (issue 19: one allocation a call fewer). Any other body is boxed once, at the top
/// of the stack. `Unsync` because a body is only ever polled by one task; requiring `Sync` would
/// refuse some streaming bodies for no gain.
///
/// # Deadline
///
/// The body of a [`Response`] carries the call's deadline (see [`Response::body_deadline`]): once
/// it passes while the body waits for more data, reading fails with
/// [`BodyTimeout`] (kind [`ErrorKind::Timeout`]) and the connection is dropped. Data already
/// received is still handed out; only a wait past the deadline fails.
pub struct ResponseBody {
    inner: Inner,
    deadline: Option<BodyDeadline>,
}

/// The configured stack's body as it is, or any other body boxed.
type Inner = Either<StackBody, UnsyncBoxBody<Bytes, BoxError>>;

/// The body of the stack `stack::build_stack` assembles without a cache: the call's log layer over
/// the attempt's over the transport.
type StackBody = LogBody<LogBody<TransportBody>>;

/// Any body but the configured stack's, boxed.
fn boxed<B>(body: B) -> Inner
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Either::Right(body.map_err(Into::into).boxed_unsync())
}

/// The deadline of a body: the instant, the timer (made on the first wait, so a body that never
/// waits costs no timer) and whether it fired.
struct BodyDeadline {
    at: Instant,
    /// The body's own read timeout, when it has one instead of the call's deadline.
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl ResponseBody {
    /// Boxes any body with `Bytes` data.
    pub fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The stack's own body is kept as it is; a type known at compile time, so the check
        // costs nothing at run time.
        let mut body = Some(body);
        let any: &mut dyn Any = &mut body;
        if let Some(stack) = any
            .downcast_mut::<Option<StackBody>>()
            .and_then(Option::take)
        {
            return Self {
                inner: Either::Left(stack),
                deadline: None,
            };
        }
        Self {
            inner: boxed(body.expect("taken only when it is the stack's body")),
            deadline: None,
        }
    }

    /// Whether the body is held boxed (any body but the configured stack's).
    #[cfg(test)]
    fn is_boxed(&self) -> bool {
        matches!(self.inner, Either::Right(_))
    }

    /// The same body, failing with [`BodyTimeout`] when it waits for data past `at` (`timeout`: the
    /// body's own read timeout, for the error's message; `None`: the call's deadline). `None` for
    /// `at` takes the deadline off.
    pub(crate) fn with_deadline(mut self, at: Option<Instant>, timeout: Option<Duration>) -> Self {
        self.deadline = at.map(|at| BodyDeadline {
            at,
            timeout,
            sleep: None,
            expired: false,
        });
        self
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.as_ref().map(|d| d.at)
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new(http_body_util::Empty::new())
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        Self::new(http_body_util::Full::new(bytes))
    }
}

impl From<String> for ResponseBody {
    fn from(text: String) -> Self {
        Self::from(Bytes::from(text))
    }
}

impl From<&'static str> for ResponseBody {
    fn from(text: &'static str) -> Self {
        Self::from(Bytes::from_static(text.as_bytes()))
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("size_hint", &self.size_hint())
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.deadline.as_ref().is_some_and(|d| d.expired) {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(deadline) = &mut this.deadline else {
            return polled;
        };
        if polled.is_ready() {
            return polled;
        }
        // Waiting for data: no further than the deadline.
        let sleep = deadline
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.at)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        deadline.expired = true;
        let error = match deadline.timeout {
            Some(timeout) => BodyTimeout::after(timeout),
            None => BodyTimeout::new(),
        };
        // Drop the connection's body now: it is not read to the end, so it is not reused.
        this.inner = boxed(http_body_util::Empty::<Bytes>::new());
        Poll::Ready(Some(Err(Box::new(error))))
    }

    fn is_end_stream(&self) -> bool {
        self.deadline.as_ref().is_some_and(|d| d.expired) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response of a call made with [`RequestBuilder::send`](crate::RequestBuilder::send).
///
/// The status is not checked: a 404 is a response. Call [`error_for_status`](Response::error_for_status)
/// to turn 4xx and 5xx into an [`Error`]. Reading the body whole ([`bytes`](Response::bytes),
/// [`text`](Response::text), [`json`](Response::json)) stops at the integration's
/// `max_response_bytes` (10 MiB by default) with an [`ErrorKind::Body`] error; [`chunk`](Response::chunk)
/// and [`into_body`](Response::into_body) stream without a cap.
///
/// # Deadline
///
/// The call's total deadline (the integration's `timeout`, or the request's own
/// [`timeout`](crate::RequestBuilder::timeout) when earlier) covers the body too: reading it with
/// [`bytes`](Response::bytes), [`text`](Response::text), [`json`](Response::json),
/// [`chunk`](Response::chunk) or through [`into_body`](Response::into_body) fails with an
/// [`ErrorKind::Timeout`] error ([`BodyTimeout`] as the source) once the body waits for data past
/// it. A streaming download that needs longer takes its own read timeout with
/// [`with_body_timeout`](Response::with_body_timeout), or none with
/// [`without_body_deadline`](Response::without_body_deadline).
pub struct Response {
    inner: http::Response<ResponseBody>,
    integration: IntegrationName,
    max_bytes: usize,
    /// The URL sent: the final URL unless the stack recorded another (a redirect followed).
    sent: http::Uri,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the headers: they may carry cookies or tokens.
        f.debug_struct("Response")
            .field("integration", &self.integration)
            .field("status", &self.inner.status())
            .field("version", &self.inner.version())
            .field("attempts", &self.attempts())
            .finish_non_exhaustive()
    }
}

/// How far ahead of the data received [`read_to_end`] sizes its buffer from a promised length.
const MAX_AHEAD: usize = 1 << 20;

/// Reads `body` to its end and returns its data: a body of one data frame (a small answer, read
/// with its head) as that frame's bytes, neither copied nor gathered; the frames of a longer one
/// joined into one buffer, sized from the body's length when it says it. Trailers are ignored.
///
/// `http_body_util`'s `Collected` kept every frame in a `VecDeque` first, an allocation and ~540
/// instructions a call even for one frame (issue 19).
async fn read_to_end<B>(mut body: B) -> Result<Bytes, B::Error>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(buffer) = &mut joined {
            buffer.extend_from_slice(&data);
            continue;
        }
        match first.take() {
            None => first = Some(data),
            Some(head) => {
                // The rest, as far as the body tells (a `Content-Length`; `Limited` clips it to the
                // cap), and at most 1 MiB ahead of the data: a length promised is not data received.
                let known = usize::try_from(body.size_hint().lower())
                    .map_or(MAX_AHEAD, |n| n.min(MAX_AHEAD));
                let seen = head.len() + data.len();
                let mut buffer = BytesMut::with_capacity(seen.saturating_add(known));
                buffer.extend_from_slice(&head);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(match joined {
        Some(buffer) => buffer.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// The attempts a call took, as the retry layer recorded them in the response's extensions (1 when
/// no retry layer recorded any).
fn attempts_in(extensions: &http::Extensions) -> u32 {
    extensions.get::<Attempts>().map_or(1, |a| a.count().max(1))
}

impl Response {
    pub(crate) fn new(
        inner: http::Response<ResponseBody>,
        integration: IntegrationName,
        max_bytes: usize,
        sent: http::Uri,
    ) -> Self {
        Self {
            inner,
            integration,
            max_bytes,
            sent,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The HTTP version the response came over (`HTTP/2.0` when the server chose it by ALPN).
    pub fn version(&self) -> Version {
        self.inner.version()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The response extensions (the retry layer's [`Attempts`] record, among others).
    pub fn extensions(&self) -> &http::Extensions {
        self.inner.extensions()
    }

    /// How the integration's cache answered (`hit`, `miss`, `stale`, `revalidated`, `bypass`); `None`
    /// when the integration has no cache. The `x-cache` of this client.
    ///
    /// ```
    /// # use integration_client::CacheStatus;
    /// # fn show(response: &integration_client::Response) {
    /// if response.cache_status().is_some_and(CacheStatus::is_from_cache) {
    ///     println!("served from the cache");
    /// }
    /// # }
    /// ```
    pub fn cache_status(&self) -> Option<integration_cache::CacheStatus> {
        self.inner
            .extensions()
            .get::<integration_cache::CacheStatus>()
            .copied()
    }

    /// Whether the body came from the cache (a hit, a stale answer or a revalidated entry).
    pub fn from_cache(&self) -> bool {
        self.cache_status()
            .is_some_and(integration_cache::CacheStatus::is_from_cache)
    }

    /// The integration that answered.
    pub fn integration(&self) -> &str {
        self.integration.as_str()
    }

    /// Attempts the call took (1 when no retry layer recorded any).
    pub fn attempts(&self) -> u32 {
        attempts_in(self.inner.extensions())
    }

    /// The instant by which the body must have been read (see [the type's docs](Response#deadline)):
    /// the call's deadline unless changed; `None` when the body has no deadline.
    pub fn body_deadline(&self) -> Option<Instant> {
        self.inner.body().deadline()
    }

    /// Gives the body a read timeout of its own, `timeout` from now, in place of the call's deadline
    /// (later or earlier): for a download that may take longer than the call's `timeout`.
    ///
    /// ```
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|_: http::Request<Body>| async {
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from("a large file")))
    /// # });
    /// # let client = Client::from_service("files", "https://files.example/", upstream)?;
    /// let response = client.api("files")?.get("/export.csv").timeout(Duration::from_secs(5)).send().await?;
    /// let mut download = response.with_body_timeout(Duration::from_secs(600));
    /// while let Some(chunk) = download.chunk().await? {
    ///     // write the chunk somewhere
    /// #   let _ = chunk;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_body_timeout(self, timeout: Duration) -> Self {
        self.map_body(|body| body.with_deadline(Some(Instant::now() + timeout), Some(timeout)))
    }

    /// Takes the deadline off the body: it is read for as long as the upstream keeps sending. For a
    /// stream with no natural end (events, a feed), with a bound of the caller's own.
    #[must_use]
    pub fn without_body_deadline(self) -> Self {
        self.map_body(|body| body.with_deadline(None, None))
    }

    fn map_body(self, f: impl FnOnce(ResponseBody) -> ResponseBody) -> Self {
        let Self {
            inner,
            integration,
            max_bytes,
            sent,
        } = self;
        Self {
            inner: inner.map(f),
            integration,
            max_bytes,
            sent,
        }
    }

    /// The cap applied by [`bytes`](Response::bytes), [`text`](Response::text) and
    /// [`json`](Response::json).
    pub fn max_body_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Turns a 4xx or 5xx response into an [`ErrorKind::Status`] error carrying the status, the
    /// integration, the attempts and the server's `Retry-After` hint. The error never holds the body or
    /// the headers.
    ///
    /// # Errors
    ///
    /// The status error, for 4xx and 5xx.
    pub fn error_for_status(self) -> Result<Self, Error> {
        let status = self.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return Ok(self);
        }
        Err(self.status_error())
    }

    /// Like [`error_for_status`](Response::error_for_status), without consuming the response.
    ///
    /// # Errors
    ///
    /// The status error, for 4xx and 5xx.
    pub fn error_for_status_ref(&self) -> Result<&Self, Error> {
        let status = self.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return Ok(self);
        }
        Err(self.status_error())
    }

    #[allow(clippy::disallowed_methods)] // `Retry-After` may be an HTTP-date: compared to the wall clock.
    fn status_error(&self) -> Error {
        let mut error = Error::status_error(self.status())
            .with_integration(self.integration.clone())
            .with_attempts(self.attempts());
        let signal = ThrottleSignal::from_headers(self.headers(), SystemTime::now());
        if let Some(wait) = signal.retry_after.or_else(|| signal.pause()) {
            error = error.with_retry_after(wait);
        }
        error
    }

    fn body_error(&self, source: impl Into<BoxError>) -> Error {
        Error::from_boxed(source.into())
            .with_integration(self.integration.clone())
            .with_attempts(self.attempts())
    }

    /// Reads the whole body, up to the cap.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Body`] past the cap (with [`BodyTooLarge`] as the source) or when the connection
    /// breaks while reading; [`ErrorKind::Timeout`] (with [`BodyTimeout`] as the source) when the
    /// body's deadline passes first (see [Deadline](Response#deadline)).
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let limit = self.max_bytes;
        if let Some(length) = self.inner.body().size_hint().exact()
            && length > limit as u64
        {
            return Err(self.body_error(BodyTooLarge::new(limit)));
        }
        // The attempts are looked up only for an error: the extensions are kept until the body is
        // read (the rest of the head is dropped now), and the name is moved, not copied (issue 19).
        let (mut head, body) = self.inner.into_parts();
        let extensions = std::mem::take(&mut head.extensions);
        drop(head);
        let integration = self.integration;
        let context = move |e: Error| {
            e.with_integration(integration)
                .with_attempts(attempts_in(&extensions))
        };
        match read_to_end(Limited::new(body, limit)).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(context(
                Error::from_boxed(Box::new(BodyTooLarge::new(limit))),
            )),
            Err(e) => {
                let error = Error::from_boxed(e);
                // A failure while reading is a body error whatever the transport said about it.
                let error = if error.kind() == ErrorKind::Other {
                    Error::new(ErrorKind::Body)
                        .with_message("reading the response body failed")
                        .with_source(error)
                } else {
                    error
                };
                Err(context(error))
            }
        }
    }

    /// Reads the whole body (up to the cap) as UTF-8 text; invalid sequences become `U+FFFD`.
    ///
    /// # Errors
    ///
    /// As [`bytes`](Response::bytes).
    pub async fn text(self) -> Result<String, Error> {
        let bytes = self.bytes().await?;
        Ok(match String::from_utf8(bytes.to_vec()) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Reads the whole body (up to the cap) and decodes it as JSON.
    ///
    /// # Errors
    ///
    /// As [`bytes`](Response::bytes), and [`ErrorKind::Body`] when the JSON does not decode into `T`:
    /// the message and the [`JsonError`](crate::JsonError) source give the category, the path of the
    /// field, the line and column and what was expected, never the content.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let integration = self.integration.clone();
        let attempts = self.attempts();
        let bytes = self.bytes().await?;
        crate::JsonError::decode(&bytes).map_err(|e| {
            Error::new(ErrorKind::Body)
                .with_message(format!("response is not the expected JSON ({e})"))
                .with_source(e)
                .with_integration(integration)
                .with_attempts(attempts)
        })
    }

    /// The next chunk of the body, streaming and uncapped; `None` at the end.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Body`] when the connection breaks while reading; [`ErrorKind::Timeout`] when the
    /// body's deadline passes first (see [Deadline](Response#deadline)).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match self.inner.body_mut().frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
                Some(Err(e)) => {
                    return Err(read_error(e, &self.integration, self.attempts()));
                }
            }
        }
    }

    /// The body, to stream it (it implements [`http_body::Body`]); no cap applies, the body's
    /// deadline does (see [Deadline](Response#deadline)).
    pub fn into_body(self) -> ResponseBody {
        self.inner.into_body()
    }

    /// The final URL of the call: the one the response came from, after any redirect followed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};
    /// # let server = MockServer::start().await;
    /// # Mock::given(path("/old")).respond_with(ResponseTemplate::new(301).insert_header("location", "/new")).mount(&server).await;
    /// # Mock::given(path("/new")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    /// use integration_client::Client;
    /// use integration_config::IntegrationConfig;
    ///
    /// let client = Client::builder().api("docs", IntegrationConfig::builder(server.uri()).build()?).build()?;
    /// let response = client.api("docs")?.get("/old").send().await?;
    /// assert_eq!(response.url().path(), "/new");
    /// # Ok(())
    /// # }
    /// ```
    pub fn url(&self) -> &http::Uri {
        // Recorded by a redirect follower (the transport's, or tower-http's in a stack given by the
        // user) when it followed one; else the URL sent.
        self.inner
            .extensions()
            .get::<RequestUri>()
            .map_or(&self.sent, |uri| &uri.0)
    }

    /// The address of the peer the response came from, when the transport knows it (the pooled
    /// transport does, through its connector's connection info); `None` for other stacks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
    /// # let server = MockServer::start().await;
    /// # Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    /// use integration_client::Client;
    /// use integration_config::IntegrationConfig;
    ///
    /// let client = Client::builder().api("api", IntegrationConfig::builder(server.uri()).build()?).build()?;
    /// let response = client.api("api")?.get("/").send().await?;
    /// assert_eq!(response.remote_addr(), Some(*server.address()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner
            .extensions()
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .map(hyper_util::client::legacy::connect::HttpInfo::remote_addr)
    }

    /// The body as a [`Stream`](futures_core::Stream) of chunks, uncapped; the body's deadline
    /// applies (see [Deadline](Response#deadline)): a chunk that does not come before it ends the
    /// stream with an [`ErrorKind::Timeout`] error. Take a longer one first with
    /// [`with_body_timeout`](Response::with_body_timeout) for a long download.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// # use integration_client::{Client, ResponseBody};
    /// # use integration_core::Body;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), integration_core::Error> {
    /// # let upstream = tower::service_fn(|_: http::Request<Body>| async {
    /// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from("a,b\n1,2\n")))
    /// # });
    /// # let client = Client::from_service("files", "https://files.example/", upstream)?;
    /// let response = client.api("files")?.get("/export.csv").send().await?;
    /// let mut stream = response.with_body_timeout(Duration::from_secs(600)).bytes_stream();
    /// let mut size = 0;
    /// while let Some(chunk) = stream.next().await {
    ///     size += chunk?.len();
    /// }
    /// assert_eq!(size, 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bytes_stream(self) -> BytesStream {
        let attempts = self.attempts();
        BytesStream {
            body: self.inner.into_body(),
            integration: self.integration,
            attempts,
        }
    }

    /// The underlying `http::Response`, with the final URL (see [`Response::url`]) in its
    /// extensions as tower-http's `RequestUri`.
    pub fn into_http(mut self) -> http::Response<ResponseBody> {
        if self.inner.extensions().get::<RequestUri>().is_none() {
            self.inner.extensions_mut().insert(RequestUri(self.sent));
        }
        self.inner
    }
}

/// A failure while reading a body, as the caller sees it: a body error unless it says more (a
/// timeout), naming the integration and the attempts.
fn read_error(error: BoxError, integration: &IntegrationName, attempts: u32) -> Error {
    let error = Error::from_boxed(error);
    let error = if error.kind() == ErrorKind::Other {
        Error::new(ErrorKind::Body)
            .with_message("reading the response body failed")
            .with_source(error)
    } else {
        error
    };
    error
        .with_integration(integration.clone())
        .with_attempts(attempts)
}

/// The body of a [`Response`] as a [`Stream`](futures_core::Stream) of `Bytes` chunks: see
/// [`Response::bytes_stream`]. Ends after the first error.
#[must_use = "streams do nothing unless polled"]
pub struct BytesStream {
    body: ResponseBody,
    integration: IntegrationName,
    attempts: u32,
}

impl fmt::Debug for BytesStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesStream")
            .field("integration", &self.integration)
            .field("body", &self.body)
            .finish()
    }
}

impl futures_core::Stream for BytesStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = &mut *self;
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Trailers: not part of the byte stream.
                }
                Some(Err(e)) => {
                    return Poll::Ready(Some(Err(read_error(e, &this.integration, this.attempts))));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, None)
    }
}

#[cfg(test)]
mod tests {
    use integration_config::IntegrationConfig;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::Client;

    /// Issue 19: the body of the stack built from configuration is held as it is, not boxed (one
    /// allocation a call fewer); any other stack's body (a cache in the stack, a user's service) is
    /// boxed. Every one of them reads the same.
    #[tokio::test]
    async fn the_configured_stacks_body_is_kept_unboxed_and_every_body_reads_alike() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
            .mount(&server)
            .await;
        let plain = IntegrationConfig::builder(server.uri()).build().unwrap();
        let mut cached = plain.clone();
        cached.cache.enabled = true;
        let client = Client::builder()
            .api("plain", plain)
            .api("cached", cached)
            .service(
                "user",
                "http://user.test/",
                tower::service_fn(|_request: http::Request<integration_core::Body>| async {
                    Ok::<_, BoxError>(http::Response::new(ResponseBody::from("hello")))
                }),
            )
            .build()
            .unwrap();
        for (name, boxed) in [("plain", false), ("cached", true), ("user", true)] {
            let response = client.api(name).unwrap().get("/").send().await.unwrap();
            assert_eq!(response.inner.body().is_boxed(), boxed, "{name}");
            assert_eq!(response.bytes().await.unwrap(), "hello", "{name}");
        }
    }
}
