//! W3C Trace Context propagation: the `traceparent` header of outgoing requests.
//!
//! With [`LogPolicy::with_traceparent`](crate::LogPolicy::with_traceparent), the call layer gives a
//! request without a `traceparent` header a fresh trace id and span id
//! (`00-<32 hex>-<16 hex>-01`) and records the [`TraceContext`] in the request's extensions; the
//! attempt layer then gives every attempt its own span id under that trace id. A `traceparent` set
//! by the caller (or by an OpenTelemetry propagator upstream of these layers) is never overwritten.

use std::fmt;

use http::{HeaderName, HeaderValue};

use crate::policy::IdSource;

/// The `traceparent` header name.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace id and a span id, as carried by a `traceparent` header we generated.
///
/// ```
/// use integration_log::traceparent::TraceContext;
///
/// let context = TraceContext::new(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7);
/// assert_eq!(context.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
}

impl TraceContext {
    /// A context with these ids (both must be non-zero to be valid on the wire).
    pub fn new(trace_id: u128, span_id: u64) -> Self {
        Self { trace_id, span_id }
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The span id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The `traceparent` header value, sampled flag set.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.to_string())
            .expect("hex digits and dashes are a valid header value")
    }

    /// The context a layer of this crate recorded in a request, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<TraceContext> {
        request.extensions().get::<TraceContext>().copied()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

/// Call scope: a fresh context for a request that carries none.
pub(crate) fn start_call<B>(
    request: &mut http::Request<B>,
    ids: &IdSource,
) -> Option<TraceContext> {
    if request.headers().contains_key(TRACEPARENT) {
        return None;
    }
    let context = TraceContext::new(ids.u128(), ids.u64());
    request
        .headers_mut()
        .insert(TRACEPARENT, context.header_value());
    request.extensions_mut().insert(context);
    Some(context)
}

/// Attempt scope: a fresh span id per attempt, under the call's trace id when the call layer set the
/// header; the caller's own header is left alone.
pub(crate) fn start_attempt<B>(
    request: &mut http::Request<B>,
    ids: &IdSource,
) -> Option<TraceContext> {
    let ours = TraceContext::of(request);
    let trace_id = match (request.headers().get(TRACEPARENT), ours) {
        (None, Some(call)) => call.trace_id,
        (None, None) => ids.u128(),
        (Some(value), Some(call)) if value == call.header_value() => call.trace_id,
        (Some(_), _) => return None,
    };
    let context = TraceContext::new(trace_id, ids.u64());
    request
        .headers_mut()
        .insert(TRACEPARENT, context.header_value());
    Some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites_the_callers_traceparent() {
        let ids = IdSource::Thread;
        let theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut request = http::Request::builder()
            .header("traceparent", theirs)
            .body(())
            .unwrap();
        assert_eq!(start_call(&mut request, &ids), None);
        assert_eq!(start_attempt(&mut request, &ids), None);
        assert_eq!(request.headers()["traceparent"], theirs);
    }

    #[test]
    fn attempts_share_the_calls_trace_id_with_their_own_span_ids() {
        let ids = IdSource::Thread;
        let mut request = http::Request::new(());
        let call = start_call(&mut request, &ids).unwrap();
        let mut first = request.clone_shape();
        let mut second = request.clone_shape();
        let a = start_attempt(&mut first, &ids).unwrap();
        let b = start_attempt(&mut second, &ids).unwrap();
        assert_eq!(a.trace_id(), call.trace_id());
        assert_eq!(b.trace_id(), call.trace_id());
        assert_ne!(a.span_id(), b.span_id());
        let header = first.headers()["traceparent"].to_str().unwrap();
        assert_eq!(header.len(), 55);
        assert!(header.starts_with(&format!("00-{:032x}-", call.trace_id())));
        assert!(header.ends_with("-01"));
    }

    trait CloneShape {
        fn clone_shape(&self) -> Self;
    }
    impl CloneShape for http::Request<()> {
        fn clone_shape(&self) -> Self {
            let mut copy = http::Request::new(());
            *copy.headers_mut() = self.headers().clone();
            *copy.extensions_mut() = self.extensions().clone();
            copy
        }
    }
}
