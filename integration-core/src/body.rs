//! The request body of the integration layer: replayable when it is bytes, streamed once when it is not.
//!
//! Retries need to send the same body again. [`Body`] made from bytes is cheap to clone (a reference
//! count, no copy); a streaming body cannot be replayed, so [`Body::try_clone`] says `None` and the retry
//! layer sends such a request exactly once. [`Body::buffer`] turns a stream into a replayable body when it
//! fits under a cap.
//!
//! ```
//! use integration_core::body::{Body, TryCloneBody};
//!
//! let body = Body::from("{\"amount\":100}");
//! let again = body.try_clone_body().expect("bytes replay");
//! assert_eq!(again.as_bytes().map(|b| &b[..]), Some(&b"{\"amount\":100}"[..]));
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

use crate::error::{BodyTooLarge, BoxError};
use crate::ext::{Attempt, Deadline, Idempotent, IntegrationName, OwnCredential};

/// A request body: empty, bytes (replayable), or a stream (sent once).
pub struct Body {
    kind: Kind,
}

enum Kind {
    /// Bytes; `None` once polled out.
    Full(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// A body that streams from any `http_body::Body`. It is sent once and never retried.
    pub fn streaming<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Stream(body.map_err(Into::into).boxed()),
        }
    }

    /// Reads a body to its end and returns a replayable body, failing with [`BodyTooLarge`] past `limit`
    /// bytes (before reading the rest).
    ///
    /// # Errors
    ///
    /// [`BodyTooLarge`] past the cap, or the stream's own error.
    pub async fn buffer<B>(body: B, limit: usize) -> Result<Body, BoxError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let limited = http_body_util::Limited::new(body, limit);
        match limited.collect().await {
            Ok(collected) => Ok(Body::from(collected.to_bytes())),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(Box::new(BodyTooLarge::new(limit)))
            }
            Err(error) => Err(error),
        }
    }

    /// The bytes, when this body is replayable and has not been polled out.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref(),
            Kind::Stream(_) => None,
        }
    }

    /// True for bytes and empty bodies: they can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Full(_))
    }

    /// A copy for another attempt; `None` for a streaming body.
    pub fn try_clone(&self) -> Option<Body> {
        match &self.kind {
            Kind::Full(bytes) => Some(Body {
                kind: Kind::Full(bytes.clone()),
            }),
            Kind::Stream(_) => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the content: a body may hold secrets.
        match &self.kind {
            Kind::Full(None) => f.write_str("Body::Empty"),
            Kind::Full(Some(bytes)) => write!(f, "Body::Bytes({} bytes)", bytes.len()),
            Kind::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Body::empty();
        }
        Self {
            kind: Kind::Full(Some(bytes)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::from(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Body::from(Bytes::from_static(bytes))
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Body::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(stream) => stream.size_hint(),
        }
    }
}

/// A body that may be copied for another attempt.
///
/// The retry layer is generic over the request body; it replays a request only when its body says it
/// can. Implemented for [`Body`] and for the common in-memory bodies.
pub trait TryCloneBody: Sized {
    /// A copy for another attempt, or `None` when this body can be sent only once.
    fn try_clone_body(&self) -> Option<Self>;
}

impl TryCloneBody for Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.try_clone()
    }
}

macro_rules! clone_body {
    ($($ty:ty),* $(,)?) => {
        $(impl TryCloneBody for $ty {
            fn try_clone_body(&self) -> Option<Self> {
                Some(self.clone())
            }
        })*
    };
}

clone_body!(
    (),
    Bytes,
    String,
    Vec<u8>,
    &'static str,
    http_body_util::Full<Bytes>,
    http_body_util::Empty<Bytes>,
);

/// A copy of `request` for another attempt: method, URI, version, headers, extensions and body. `None`
/// when the body cannot be replayed.
///
/// A copy kept in case it is needed (a retry's spare) is cheaper as a [`RequestCopy`].
pub fn try_clone_request<B: TryCloneBody>(request: &http::Request<B>) -> Option<http::Request<B>> {
    let body = request.body().try_clone_body()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// A copy of a request kept to send it again (a retry, a replay), made by [`RequestCopy::of`] and
/// turned back into a request by [`RequestCopy::into_request`]: the request [`try_clone_request`]
/// would have made, method, URI, version, headers, extensions and body.
///
/// It is cheaper to keep. A request's extension map is copied as a new map, a new table and one new
/// box per extension (four allocations for the facade's two extensions, each freed again when no
/// retry came: ~900 instructions a call, issue 19). The extensions this workspace's layers set
/// ([`IntegrationName`], [`Deadline`], [`Attempt`], [`Idempotent`], [`OwnCredential`]) are kept
/// here by value instead, and put back in a new map only when the copy is sent. A request with
/// any other extension keeps a copy of its whole map, as [`try_clone_request`] does. The headers
/// are kept as a [`HeadersCopy`], one allocation instead of a map's two.
///
/// ```
/// use integration_core::body::{Body, RequestCopy};
/// use integration_core::ext::IntegrationName;
///
/// let mut request = http::Request::post("https://api.example.com/v1/charges")
///     .header("content-type", "application/json")
///     .body(Body::from("{\"amount\":100}"))
///     .unwrap();
/// request.extensions_mut().insert(IntegrationName::new("payments"));
///
/// let copy = RequestCopy::of(&request).expect("a body of bytes replays");
/// let again = copy.into_request();
/// assert_eq!(again.method(), request.method());
/// assert_eq!(again.uri(), request.uri());
/// assert_eq!(again.headers(), request.headers());
/// assert_eq!(IntegrationName::of(&again), IntegrationName::of(&request));
/// assert_eq!(again.body().as_bytes(), request.body().as_bytes());
/// ```
pub struct RequestCopy<B> {
    // The request's parts one by one rather than an `http::request::Parts`: its empty header map and
    // extension map would make the copy, kept in the retry layer's future, 104 bytes larger, and
    // every layer above moves that future (issue 19).
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeadersCopy,
    /// The request's extensions, rebuilt into a map by [`RequestCopy::into_request`].
    extensions: CopiedExtensions,
    body: B,
}

impl<B: TryCloneBody> RequestCopy<B> {
    /// A copy of `request`, or `None` when its body cannot be replayed.
    pub fn of(request: &http::Request<B>) -> Option<Self> {
        let body = request.body().try_clone_body()?;
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: HeadersCopy::of(request.headers()),
            extensions: CopiedExtensions::of(request.extensions()),
            body,
        })
    }
}

impl<B> RequestCopy<B> {
    /// The request this copy was made of, to be sent.
    pub fn into_request(self) -> http::Request<B> {
        let mut request = http::Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.into_map();
        *request.extensions_mut() = self.extensions.into_map();
        request
    }
}

impl<B> fmt::Debug for RequestCopy<B> {
    /// The method and host only: the headers, the query and the userinfo may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCopy")
            .field("method", &self.method)
            .field("host", &self.uri.host())
            .finish_non_exhaustive()
    }
}

/// A copy of a header map kept to send it again: each name and value, in the map's order, in one
/// allocation, turned back into a map by [`HeadersCopy::into_map`].
///
/// A `HeaderMap`'s own clone is two allocations (its index table and its entries) and the copy of
/// every hash and link between entries; a request kept for a retry or a redirect that is seldom
/// sent again pays for both on every call and for their freeing after (issue 19). The map is made
/// only when the copy is sent. Values keep their [sensitive](HeaderValue::is_sensitive) flag.
///
/// ```
/// use http::HeaderMap;
/// use http::header::{ACCEPT, AUTHORIZATION, HeaderValue};
/// use integration_core::body::HeadersCopy;
///
/// let mut headers = HeaderMap::new();
/// headers.append(ACCEPT, HeaderValue::from_static("application/json"));
/// headers.append(ACCEPT, HeaderValue::from_static("text/plain"));
/// let mut token = HeaderValue::from_static("Bearer t");
/// token.set_sensitive(true);
/// headers.insert(AUTHORIZATION, token);
///
/// let copy = HeadersCopy::of(&headers);
/// assert_eq!(copy.len(), 3);
/// let again = copy.into_map();
/// assert_eq!(again, headers);
/// assert!(again[AUTHORIZATION].is_sensitive());
/// ```
#[derive(Clone, Default)]
pub struct HeadersCopy {
    entries: Vec<(HeaderName, HeaderValue)>,
}

impl HeadersCopy {
    /// A copy of `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut entries = Vec::with_capacity(headers.len());
        // A plain loop: `extend` over the map's iterator measured ~45 instructions a header more
        // (callgrind, full stack, issue 19).
        for (name, value) in headers {
            entries.push((name.clone(), value.clone()));
        }
        Self { entries }
    }

    /// How many values the copy holds (a name with two values counts twice, as
    /// [`HeaderMap::len`] does).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the copy holds no header.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The header map copied: the same names and values, in the same order.
    pub fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.entries.len());
        for (name, value) in self.entries {
            map.append(name, value);
        }
        map
    }
}

impl fmt::Debug for HeadersCopy {
    /// The number of values only: a value may be a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadersCopy")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A request's extensions as a [`RequestCopy`] keeps them.
enum CopiedExtensions {
    /// Only extensions of this workspace's types: kept by value.
    Known(KnownExtensions),
    /// Some other type among them: a copy of the whole map.
    Map(http::Extensions),
}

impl CopiedExtensions {
    fn of(extensions: &http::Extensions) -> Self {
        match KnownExtensions::of(extensions) {
            Some(known) => Self::Known(known),
            None => Self::Map(extensions.clone()),
        }
    }

    fn into_map(self) -> http::Extensions {
        match self {
            Self::Known(known) => known.into_map(),
            Self::Map(map) => map,
        }
    }
}

/// The extensions this workspace's layers set on a request, by value.
#[derive(Default)]
struct KnownExtensions {
    integration: Option<IntegrationName>,
    deadline: Option<Deadline>,
    attempt: Option<Attempt>,
    idempotent: Option<Idempotent>,
    own_credential: Option<OwnCredential>,
}

impl KnownExtensions {
    /// The known extensions of `extensions`, or `None` when it holds any other. Looked up in the
    /// order the facade sets them, until as many are found as the map holds (each lookup ~40
    /// instructions).
    fn of(extensions: &http::Extensions) -> Option<Self> {
        let len = extensions.len();
        let mut known = Self::default();
        let mut found = 0;
        macro_rules! take {
            ($($field:ident),+) => {$(
                if found < len {
                    known.$field = extensions.get().cloned();
                    found += usize::from(known.$field.is_some());
                }
            )+};
        }
        take!(integration, deadline, attempt, idempotent, own_credential);
        (found == len).then_some(known)
    }

    fn into_map(self) -> http::Extensions {
        let mut map = http::Extensions::new();
        if let Some(value) = self.integration {
            map.insert(value);
        }
        if let Some(value) = self.deadline {
            map.insert(value);
        }
        if let Some(value) = self.attempt {
            map.insert(value);
        }
        if let Some(value) = self.idempotent {
            map.insert(value);
        }
        if let Some(value) = self.own_credential {
            map.insert(value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn stream(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        Body::streaming(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn bytes_replay_and_stream_does_not() {
        let body = Body::from("hello");
        let copy = body.try_clone().unwrap();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
        assert!(stream(&["a"]).try_clone().is_none());
        assert!(!stream(&["a"]).is_replayable());
    }

    #[tokio::test]
    async fn buffer_makes_a_stream_replayable_under_the_cap() {
        let body = Body::buffer(stream(&["ab", "cd"]), 4).await.unwrap();
        assert!(body.is_replayable());
        assert_eq!(body.as_bytes().unwrap(), "abcd");
        let error = Body::buffer(stream(&["ab", "cde"]), 4).await.unwrap_err();
        assert_eq!(error.downcast_ref::<BodyTooLarge>().unwrap().limit(), 4);
    }

    #[test]
    fn debug_never_shows_content() {
        assert_eq!(
            format!("{:?}", Body::from("password=hunter2")),
            "Body::Bytes(16 bytes)"
        );
    }

    #[test]
    fn empty_body_is_end_of_stream_with_exact_size() {
        use http_body::Body as _;
        let body = Body::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert_eq!(Body::from("abc").size_hint().exact(), Some(3));
    }

    #[test]
    fn cloned_request_keeps_everything() {
        let mut request = http::Request::post("https://api.example.com/v1/charges")
            .header("idempotency-key", "k1")
            .body(Body::from("x"))
            .unwrap();
        request
            .extensions_mut()
            .insert(crate::ext::IntegrationName::new("stripe"));
        let copy = try_clone_request(&request).unwrap();
        assert_eq!(copy.method(), request.method());
        assert_eq!(copy.uri(), request.uri());
        assert_eq!(copy.headers(), request.headers());
        assert_eq!(
            crate::ext::IntegrationName::of(&copy).unwrap().as_str(),
            "stripe"
        );
        let streaming = http::Request::new(stream(&["a"]));
        assert!(try_clone_request(&streaming).is_none());
    }

    /// An extension of a type of the caller's.
    #[derive(Clone, Debug, PartialEq)]
    struct Callers(&'static str);

    /// A request with every extension kind a copy distinguishes: none, the facade's two, all five
    /// known ones, and a known one beside a type of the caller's.
    fn requests_with_extensions() -> Vec<(&'static str, http::Request<Body>)> {
        use crate::ext::{Attempt, Deadline, Idempotent, IntegrationName, OwnCredential};
        let request = || {
            http::Request::put("https://api.example.com/v1/items/7?x=1")
                .version(http::Version::HTTP_2)
                .header("content-type", "application/json")
                .header("x-one", "a")
                .header("x-one", "b")
                .body(Body::from("{}"))
                .unwrap()
        };
        let deadline = Deadline::after(std::time::Duration::from_secs(5));
        let none = request();
        let mut facade = request();
        facade.extensions_mut().insert(IntegrationName::new("crm"));
        facade.extensions_mut().insert(deadline);
        let mut all = request();
        all.extensions_mut().insert(IntegrationName::new("crm"));
        all.extensions_mut().insert(deadline);
        all.extensions_mut().insert(Attempt::new(2));
        all.extensions_mut().insert(Idempotent(true));
        all.extensions_mut().insert(OwnCredential);
        let mut foreign = request();
        foreign.extensions_mut().insert(Attempt::new(3));
        foreign.extensions_mut().insert(Callers("mine"));
        vec![
            ("none", none),
            ("facade", facade),
            ("all", all),
            ("foreign", foreign),
        ]
    }

    /// `RequestCopy` (issue 19) makes the request `try_clone_request` makes, whatever the
    /// extensions: each of them, of our types or the caller's, is in the copy with its value.
    #[tokio::test]
    async fn a_request_copy_is_the_request_try_clone_request_makes() {
        use crate::ext::{Attempt, Deadline, Idempotent, IntegrationName, OwnCredential};
        for (case, request) in requests_with_extensions() {
            let cloned = try_clone_request(&request).unwrap();
            let copy = RequestCopy::of(&request).unwrap().into_request();
            assert_eq!(copy.method(), cloned.method(), "{case}");
            assert_eq!(copy.uri(), cloned.uri(), "{case}");
            assert_eq!(copy.version(), cloned.version(), "{case}");
            assert_eq!(copy.headers(), cloned.headers(), "{case}");
            assert_eq!(copy.extensions().len(), cloned.extensions().len(), "{case}");
            let ext = copy.extensions();
            let want = cloned.extensions();
            assert_eq!(
                ext.get::<IntegrationName>(),
                want.get::<IntegrationName>(),
                "{case}"
            );
            assert_eq!(ext.get::<Deadline>(), want.get::<Deadline>(), "{case}");
            assert_eq!(ext.get::<Attempt>(), want.get::<Attempt>(), "{case}");
            assert_eq!(ext.get::<Idempotent>(), want.get::<Idempotent>(), "{case}");
            assert_eq!(
                ext.get::<OwnCredential>(),
                want.get::<OwnCredential>(),
                "{case}"
            );
            assert_eq!(ext.get::<Callers>(), want.get::<Callers>(), "{case}");
            let body = copy.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "{}", "{case}");
        }
        let streaming = http::Request::new(stream(&["a"]));
        assert!(RequestCopy::of(&streaming).is_none());
    }

    /// The saving is taken where it can be: extensions of our types only are kept by value (no map
    /// copied), and a caller's type makes the copy keep the whole map, which is what keeps it.
    #[test]
    fn only_our_extensions_are_kept_by_value() {
        for (case, request) in requests_with_extensions() {
            let copy = RequestCopy::of(&request).unwrap();
            let by_value = matches!(copy.extensions, CopiedExtensions::Known(_));
            assert_eq!(by_value, case != "foreign", "{case}");
        }
    }

    /// The copy is the map, entry by entry and in order: several values of a name, names of our
    /// own, the sensitive flag; and an empty map stays empty.
    #[test]
    fn a_headers_copy_is_the_map_in_its_order() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-trace", http::HeaderValue::from_static("t-1"));
        headers.append("accept", http::HeaderValue::from_static("application/json"));
        headers.append("x-trace", http::HeaderValue::from_static("t-2"));
        let mut secret = http::HeaderValue::from_static("k-e-y");
        secret.set_sensitive(true);
        headers.append("x-api-key", secret);
        headers.append("accept", http::HeaderValue::from_static("text/plain"));
        let copy = HeadersCopy::of(&headers);
        assert_eq!(copy.len(), headers.len());
        let again = copy.clone().into_map();
        assert_eq!(again, headers);
        let entries = |map: &http::HeaderMap| {
            map.iter()
                .map(|(name, value)| (name.clone(), value.clone(), value.is_sensitive()))
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&again), entries(&headers));
        assert!(again["x-api-key"].is_sensitive());
        assert!(!format!("{copy:?}").contains("k-e-y"));

        let empty = HeadersCopy::of(&http::HeaderMap::new());
        assert!(empty.is_empty());
        assert!(empty.into_map().is_empty());
    }

    #[test]
    fn a_request_copy_shows_no_credential() {
        let request = http::Request::get("https://user:pass-word@api.example.com/v1?api_key=k-e-y")
            .header("authorization", "Bearer secret-token")
            .body(Body::empty())
            .unwrap();
        let shown = format!("{:?}", RequestCopy::of(&request).unwrap());
        for secret in ["secret-token", "pass-word", "k-e-y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("api.example.com"), "{shown}");
    }
}
