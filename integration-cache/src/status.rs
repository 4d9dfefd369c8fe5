//! Where a response came from: [`CacheStatus`], recorded on the response, the call span and the
//! metrics.

use std::fmt;

use http::Response;
use integration_core::names;

/// How the cache answered a call; a response extension on every response of a
/// [`Cache`](crate::Cache) service, the `cache.status` field of the call span, and the counter it
/// adds to.
///
/// ```
/// use integration_cache::CacheStatus;
///
/// let response = http::Response::builder().extension(CacheStatus::Hit).body(()).unwrap();
/// assert_eq!(CacheStatus::of(&response), Some(CacheStatus::Hit));
/// assert!(CacheStatus::Hit.is_from_cache());
/// assert_eq!(CacheStatus::Revalidated.as_str(), "revalidated");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// A fresh stored response; the upstream was not called.
    Hit,
    /// No usable stored response: the upstream answered (and the answer was stored if it may be).
    Miss,
    /// A stale stored response, served within its stale-while-revalidate window (while one
    /// background call refreshes it) or its stale-if-error window (the upstream failed).
    Stale,
    /// A stored response the upstream confirmed with a 304; the stored entry was refreshed.
    Revalidated,
    /// The cache did not take part: a method it does not cache (an unsafe one also invalidates
    /// the URL's entries), a range request, or a request with `no-store`.
    Bypass,
}

impl CacheStatus {
    /// The status's name, as on the span and in `x-cache`-style headers: `hit`, `miss`, `stale`,
    /// `revalidated`, `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Bypass => "bypass",
        }
    }

    /// Whether the body came from the cache (a hit, a stale serve or a revalidation).
    pub fn is_from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated
        )
    }

    /// The status recorded on `response`, if it went through a cache.
    pub fn of<B>(response: &Response<B>) -> Option<CacheStatus> {
        response.extensions().get::<CacheStatus>().copied()
    }

    fn metric(self) -> &'static str {
        match self {
            CacheStatus::Hit => names::CACHE_HITS,
            CacheStatus::Miss => names::CACHE_MISSES,
            CacheStatus::Stale => names::CACHE_STALE,
            CacheStatus::Revalidated => names::CACHE_REVALIDATED,
            CacheStatus::Bypass => names::CACHE_BYPASSES,
        }
    }

    /// Records the status on the current span (the call span, under the facade) and its counter.
    pub(crate) fn record(self, integration: &str) {
        tracing::Span::current().record(names::CACHE_STATUS, self.as_str());
        metrics::counter!(self.metric(), names::INTEGRATION => integration.to_owned()).increment(1);
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
