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
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

use crate::error::{BodyTooLarge, BoxError};

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
}
