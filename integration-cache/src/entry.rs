//! A stored response: its RFC 9111 policy (from `http-cache-semantics`), its body, its stale windows,
//! and how it is written to a store that keeps bytes.

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike, ResponseLike};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::key::is_credential;

/// The cache's clock: wall time (which `http-cache-semantics` and the response's dates speak in),
/// advanced by tokio's clock so that a paused clock drives every rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    system: SystemTime,
    instant: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        // The one wall-clock reading: the cache compares against the `Date` and `Expires` headers
        // of responses, which speak in dates. Time then advances by tokio's clock.
        #[allow(clippy::disallowed_methods)]
        let system = SystemTime::now();
        Self {
            system,
            instant: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.system + self.instant.elapsed()
    }
}

/// The request as the cache sees and stores it: no credential header, and a URI without its query
/// (the entry's key, a keyed hash of the whole URI, already tells URLs apart; a query may carry an
/// API key, which must not be stored).
pub(crate) struct RequestView {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestView {
    pub(crate) fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extra: &[HeaderName],
    ) -> Self {
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if !is_credential(name, value, extra) {
                kept.append(name.clone(), value.clone());
            }
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            uri.path()
                .parse()
                .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/")),
        );
        let uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
        Self {
            method: method.clone(),
            uri,
            headers: kept,
        }
    }
}

impl RequestLike for RequestView {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }

    fn is_same_uri(&self, other: &Uri) -> bool {
        self.uri == *other
    }

    fn method(&self) -> &Method {
        &self.method
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// A response head, with the freshness of a TTL override when one applies.
pub(crate) struct ResponseView<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
}

impl ResponseLike for ResponseView<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The response directives the cache acts on beyond `http-cache-semantics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never served stale.
    pub(crate) revalidate: bool,
    /// `public`, `s-maxage` or `must-revalidate`: a shared cache may store the answer to a
    /// credentialed request (RFC 9111 3.5).
    pub(crate) allows_authenticated: bool,
}

impl Directives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                };
                match name.to_ascii_lowercase().as_str() {
                    "stale-while-revalidate" => out.stale_while_revalidate = seconds(),
                    "stale-if-error" => out.stale_if_error = seconds(),
                    "must-revalidate" => {
                        out.revalidate = true;
                        out.allows_authenticated = true;
                    }
                    "proxy-revalidate" | "no-cache" => out.revalidate = true,
                    "public" | "s-maxage" => out.allows_authenticated = true,
                    _ => {}
                }
            }
        }
        out
    }
}

/// The response headers a TTL override makes: the server's freshness replaced by `max-age=ttl`;
/// `no-store`, `private` and every other directive kept.
pub(crate) fn override_headers(headers: &HeaderMap, ttl: Duration) -> HeaderMap {
    let mut out = headers.clone();
    let mut directives: Vec<String> = Vec::new();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let name = directive
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !directive.is_empty()
                && !matches!(
                    name.as_str(),
                    "max-age" | "s-maxage" | "no-cache" | "must-revalidate" | "proxy-revalidate"
                )
            {
                directives.push(directive.to_owned());
            }
        }
    }
    directives.push(format!("max-age={}", ttl.as_secs()));
    out.remove(header::EXPIRES);
    out.remove(header::PRAGMA);
    out.remove(header::AGE);
    if let Ok(value) = HeaderValue::from_str(&directives.join(", ")) {
        out.insert(header::CACHE_CONTROL, value);
    }
    out
}

/// The stale windows an entry gets: the response's own directives, else the configuration's; none
/// when the response must be revalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Windows {
    pub(crate) while_revalidate: Duration,
    pub(crate) if_error: Duration,
}

impl Windows {
    pub(crate) fn new(
        directives: Directives,
        configured_swr: Option<Duration>,
        configured_sie: Option<Duration>,
    ) -> Self {
        if directives.revalidate {
            return Self::default();
        }
        Self {
            while_revalidate: directives
                .stale_while_revalidate
                .or(configured_swr)
                .unwrap_or_default(),
            if_error: directives
                .stale_if_error
                .or(configured_sie)
                .unwrap_or_default(),
        }
    }

    fn longest(&self) -> Duration {
        self.while_revalidate.max(self.if_error)
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Serialize, Deserialize)]
struct Meta {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    policy: CachePolicy,
    fresh_until: SystemTime,
    windows: Windows,
    generation: u64,
}

/// One stored response.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The stored response's status and headers (served as they are when stale).
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) policy: CachePolicy,
    pub(crate) body: Bytes,
    /// When it turns stale (the response time plus its freshness lifetime).
    pub(crate) fresh_until: SystemTime,
    pub(crate) windows: Windows,
    /// The generation of its URL when it was looked up before storing (see the stores).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) generation: u64,
}

impl Entry {
    pub(crate) fn new(
        head: (StatusCode, HeaderMap),
        policy: CachePolicy,
        body: Bytes,
        now: SystemTime,
        windows: Windows,
        generation: u64,
    ) -> Self {
        let fresh_until = now + policy.time_to_live(now);
        Self {
            status: head.0,
            headers: head.1,
            policy,
            body,
            fresh_until,
            windows,
            generation,
        }
    }

    /// How long it has been stale (zero while fresh).
    pub(crate) fn staleness(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fresh_until).unwrap_or_default()
    }

    /// How long a store keeps it: its remaining freshness plus its stale windows, capped.
    pub(crate) fn ttl(&self, now: SystemTime, cap: Duration) -> Duration {
        let fresh = self.fresh_until.duration_since(now).unwrap_or_default();
        (fresh + self.windows.longest()).min(cap)
    }

    /// The bytes it takes in a store: its body and (roughly) its headers.
    pub(crate) fn weight(&self) -> usize {
        self.body.len() + 512
    }

    /// The options of the policy of a response stored for a `shared` partition or a private one.
    pub(crate) fn options(shared: bool) -> CacheOptions {
        CacheOptions {
            shared,
            ..CacheOptions::default()
        }
    }

    /// `IC1`, the metadata's length (u32), the metadata (JSON), the body.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let meta = serde_json::to_vec(&Meta {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            policy: self.policy.clone(),
            fresh_until: self.fresh_until,
            windows: self.windows,
            generation: self.generation,
        })
        .ok()?;
        let mut out = BytesMut::with_capacity(7 + meta.len() + self.body.len());
        out.put_slice(b"IC1");
        out.put_u32(u32::try_from(meta.len()).ok()?);
        out.put_slice(&meta);
        out.put_slice(&self.body);
        Some(out.to_vec())
    }

    /// The entry written by [`encode`](Self::encode); `None` for anything else.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn decode(bytes: Vec<u8>) -> Option<Self> {
        let mut bytes = Bytes::from(bytes);
        if bytes.len() < 7 || &bytes[..3] != b"IC1" {
            return None;
        }
        bytes.advance(3);
        let len = bytes.get_u32() as usize;
        if bytes.len() < len {
            return None;
        }
        let meta: Meta = serde_json::from_slice(&bytes[..len]).ok()?;
        bytes.advance(len);
        let mut headers = HeaderMap::with_capacity(meta.headers.len());
        for (name, value) in meta.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(&value).ok()?,
            );
        }
        Some(Self {
            status: StatusCode::from_u16(meta.status).ok()?,
            headers,
            policy: meta.policy,
            body: bytes,
            fresh_until: meta.fresh_until,
            windows: meta.windows,
            generation: meta.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_and_windows() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            "max-age=5, stale-while-revalidate=30, stale-if-error=\"600\""
                .parse()
                .unwrap(),
        );
        let directives = Directives::parse(&headers);
        assert_eq!(
            Windows::new(directives, None, Some(Duration::from_secs(1))),
            Windows {
                while_revalidate: Duration::from_secs(30),
                if_error: Duration::from_secs(600),
            }
        );
        headers.append(header::CACHE_CONTROL, "must-revalidate".parse().unwrap());
        let directives = Directives::parse(&headers);
        assert_eq!(
            Windows::new(directives, Some(Duration::from_secs(9)), None),
            Windows::default()
        );
    }

    #[test]
    fn an_override_replaces_freshness_and_keeps_no_store() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            "no-cache, no-store, max-age=0".parse().unwrap(),
        );
        headers.insert(header::EXPIRES, "0".parse().unwrap());
        let out = override_headers(&headers, Duration::from_secs(60));
        assert_eq!(out[header::CACHE_CONTROL], "no-store, max-age=60");
        assert!(!out.contains_key(header::EXPIRES));
    }

    #[test]
    fn an_entry_round_trips_through_bytes_and_garbage_is_refused() {
        let request = RequestView::new(
            &Method::GET,
            &"https://a.test/x?api_key=s3cr3t".parse().unwrap(),
            &HeaderMap::new(),
            &[],
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
        let response = ResponseView {
            status: StatusCode::OK,
            headers: &headers,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let policy = CachePolicy::new_options(&request, &response, now, Entry::options(true));
        let head = (StatusCode::OK, headers.clone());
        let entry = Entry::new(
            head,
            policy,
            Bytes::from_static(b"body"),
            now,
            Windows::default(),
            7,
        );
        let bytes = entry.encode().unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cr3t"),
            "a query is never stored"
        );
        let back = Entry::decode(bytes).unwrap();
        assert_eq!(back.body, entry.body);
        assert_eq!(back.fresh_until, now + Duration::from_secs(60));
        assert_eq!(back.generation, 7);
        assert_eq!(back.headers, headers);
        assert!(Entry::decode(b"IC1\0\0\0\x09{}".to_vec()).is_none());
        assert!(Entry::decode(b"nonsense".to_vec()).is_none());
    }
}
