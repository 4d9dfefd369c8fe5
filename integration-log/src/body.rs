//! The response body of [`Log`](crate::Log), which captures a textual body as it streams, and the
//! [`BodyBytes`] trait that lets the layer show a replayable request body.

use std::fmt;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use integration_core::ext::IntegrationName;
use integration_core::names;
use pin_project_lite::pin_project;
use tracing::{Level, Span};

use crate::redact::Redactor;
use crate::service::LazyBody;

/// A request body whose bytes the layer can read without consuming it, to log it.
///
/// Implemented for [`integration_core::Body`] (bytes when replayable, nothing for a stream), the
/// in-memory body types, and the `http-body-util` types. A body that returns `None` is logged by size
/// hint only. For a body type of another crate, return `None` from a newtype, or convert to
/// [`integration_core::Body`].
pub trait BodyBytes {
    /// The whole body, when it is in memory.
    fn body_bytes(&self) -> Option<&[u8]>;
}

impl BodyBytes for integration_core::Body {
    fn body_bytes(&self) -> Option<&[u8]> {
        self.as_bytes().map(|bytes| &bytes[..])
    }
}

impl BodyBytes for Bytes {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl BodyBytes for String {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl BodyBytes for Vec<u8> {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl BodyBytes for &'static str {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl BodyBytes for &'static [u8] {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl BodyBytes for () {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(&[])
    }
}

impl<D> BodyBytes for http_body_util::Empty<D> {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(&[])
    }
}

/// `Full` does not lend its bytes: logged without its content.
impl<D> BodyBytes for http_body_util::Full<D> {
    fn body_bytes(&self) -> Option<&[u8]> {
        None
    }
}

/// A stream: logged without its content.
impl<D, E> BodyBytes for http_body_util::combinators::BoxBody<D, E> {
    fn body_bytes(&self) -> Option<&[u8]> {
        None
    }
}

/// A stream: logged without its content.
impl<D, E> BodyBytes for http_body_util::combinators::UnsyncBoxBody<D, E> {
    fn body_bytes(&self) -> Option<&[u8]> {
        None
    }
}

pin_project! {
    /// A response body that tees up to the policy's cap of a textual body into a buffer while it
    /// streams, and logs the capture (redacted) when the body ends, fails or is dropped. The body is
    /// never buffered for logging: frames pass through as they come.
    pub struct LogBody<B> {
        #[pin]
        inner: B,
        // Boxed: a capture is rare (bodies are captured only when the policy asks and the level is
        // on), and inline its ~140 bytes were carried by every response, which every layer above
        // moves by value: two log layers made each call copy ~4 KB more (issue 19).
        capture: Option<Box<Capture>>,
    }
}

impl<B> LogBody<B> {
    pub(crate) fn new(inner: B, capture: Option<Capture>) -> Self {
        Self {
            inner,
            capture: capture.map(Box::new),
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// True when this body is being captured for the log.
    pub fn is_capturing(&self) -> bool {
        self.capture.is_some()
    }
}

impl<B> fmt::Debug for LogBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBody")
            .field("capturing", &self.capture.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: http_body::Body> http_body::Body for LogBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(capture) = this.capture {
            let ended = match &polled {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        capture.push(data);
                    }
                    this.inner.is_end_stream().then_some(Ended::Complete)
                }
                Some(Err(_)) => Some(Ended::Failed),
                None => Some(Ended::Complete),
            };
            if let Some(ended) = ended {
                capture.finish(ended);
                *this.capture = None;
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Complete,
    Failed,
    Dropped,
}

/// The capture of one response body.
pub(crate) struct Capture {
    buffer: Vec<u8>,
    limit: usize,
    seen: u64,
    content_type: String,
    level: Level,
    redactor: Redactor,
    span: Span,
    integration: Option<IntegrationName>,
    done: bool,
}

impl Capture {
    pub(crate) fn new(
        content_type: String,
        limit: usize,
        level: Level,
        redactor: Redactor,
        span: Span,
        integration: Option<IntegrationName>,
    ) -> Self {
        Self {
            buffer: Vec::new(),
            limit,
            seen: 0,
            content_type,
            level,
            redactor,
            span,
            integration,
            done: false,
        }
    }

    fn push(&mut self, data: &impl Buf) {
        self.seen = self.seen.saturating_add(data.remaining() as u64);
        let mut room = self.limit.saturating_sub(self.buffer.len());
        if room == 0 {
            return;
        }
        let mut slices = [IoSlice::new(&[]); 16];
        let filled = data.chunks_vectored(&mut slices);
        let mut covered = 0;
        for slice in &slices[..filled] {
            covered += slice.len();
            let take = slice.len().min(room);
            self.buffer.extend_from_slice(&slice[..take]);
            room -= take;
            if room == 0 {
                return;
            }
        }
        if covered < data.remaining() {
            // More chunks than one vectored read lends: stop here rather than splice the capture.
            self.limit = self.buffer.len();
        }
    }

    fn finish(&mut self, ended: Ended) {
        if self.done {
            return;
        }
        self.done = true;
        let _entered = self.span.enter();
        event_at!(
            self.level,
            { names::INTEGRATION } = self
                .integration
                .as_ref()
                .map(|name| tracing::field::display(name.as_str())),
            "http.response.body" = tracing::field::display(LazyBody {
                redactor: &self.redactor,
                content_type: Some(&self.content_type),
                bytes: &self.buffer,
            }),
            "http.response.body.size" = self.seen,
            "http.response.body.truncated" = self.seen > self.buffer.len() as u64,
            "http.response.body.complete" = ended == Ended::Complete,
            "http.response.body.failed" = ended == Ended::Failed,
            "response body"
        );
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish(Ended::Dropped);
    }
}
