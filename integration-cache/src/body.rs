//! The response body of the cache: stored bytes, an upstream body, or both (the part read while
//! deciding whether it fits the cap, then the rest, streamed).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use integration_core::BoxError;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from [`Cache`](crate::Cache): a stored body, or the upstream's.
    pub struct CacheBody<B> {
        prefix: VecDeque<Bytes>,
        #[pin]
        rest: Option<B>,
        // The upstream body after a part of it was read (pinned on the heap for that read).
        read: Option<Pin<Box<B>>>,
    }
}

impl<B> CacheBody<B> {
    /// A body of stored bytes.
    pub fn full(bytes: Bytes) -> Self {
        let mut prefix = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            prefix.push_back(bytes);
        }
        Self {
            prefix,
            rest: None,
            read: None,
        }
    }

    /// The upstream's body, passed through.
    pub fn upstream(body: B) -> Self {
        Self {
            prefix: VecDeque::new(),
            rest: Some(body),
            read: None,
        }
    }

    /// Bytes already read from `rest`, then the rest of it.
    pub(crate) fn partial(prefix: Vec<Bytes>, rest: Pin<Box<B>>) -> Self {
        Self {
            prefix: prefix.into_iter().filter(|b| !b.is_empty()).collect(),
            rest: None,
            read: Some(rest),
        }
    }

    /// Whether the body comes from the cache whole (no upstream body behind it).
    pub fn is_cached(&self) -> bool {
        self.rest.is_none() && self.read.is_none()
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBody")
            .field(
                "buffered",
                &self.prefix.iter().map(Bytes::len).sum::<usize>(),
            )
            .field("streaming", &!self.is_cached())
            .finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(bytes) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(read) = this.read.as_mut() {
            return read.as_mut().poll_frame(cx).map_err(Into::into);
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
            && self.read.as_ref().is_none_or(|read| read.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let behind = match (&self.rest, &self.read) {
            (Some(rest), _) => rest.size_hint(),
            (None, Some(read)) => read.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        // The upper bound first: `set_lower` panics above the current upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = behind.upper() {
            hint.set_upper(upper + buffered);
        }
        hint.set_lower(behind.lower() + buffered);
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// Regression: the size hint of a stored body set its lower bound above the upper bound of an
    /// empty one (`http-body` panics), failing every hit through the facade.
    #[tokio::test]
    async fn regression_size_hints_are_exact_for_stored_and_partial_bodies() {
        let stored = CacheBody::<Full<Bytes>>::full(Bytes::from_static(b"four"));
        assert_eq!(stored.size_hint().exact(), Some(4));
        assert!(stored.is_cached());
        let partial = CacheBody::partial(
            vec![Bytes::from_static(b"ab")],
            Box::pin(Full::new(Bytes::from_static(b"cde"))),
        );
        assert_eq!(partial.size_hint().exact(), Some(5));
        assert_eq!(partial.collect().await.unwrap().to_bytes(), "abcde");
    }
}
