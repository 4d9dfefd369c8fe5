//! Cache keys: keyed hashes (HMAC-SHA256) of the URL, the method and the credential identity.
//!
//! No key, in memory or in Redis, holds a URL or a credential: a URL's query may carry an API key,
//! and a reader of Redis must not be able to test guesses of a credential against its keys, hence a
//! keyed hash rather than a plain one.

use std::fmt;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, Method, Request, header};
use ring::hmac;

/// The secret key of the keyed hashes.
///
/// Every process has a random one ([`HashKey::process`]): entries in memory, and in Redis those of
/// this process, are found under it. Replicas sharing a Redis store must be given the same key
/// ([`HashKey::new`], from a secret they share) to find each other's entries.
#[derive(Clone)]
pub struct HashKey {
    key: hmac::Key,
}

impl HashKey {
    /// A key from shared secret bytes (at least 32 are recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// This process' random key (made once, on first use).
    ///
    /// # Panics
    ///
    /// When the operating system gives no random bytes.
    pub fn process() -> Self {
        static KEY: OnceLock<HashKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let rng = ring::rand::SystemRandom::new();
            let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                .expect("the operating system gives random bytes");
            HashKey { key }
        })
        .clone()
    }

    fn sign(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in parts {
            // Length-prefixed, so that no two different part lists sign the same bytes.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        let mut out = [0; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey([REDACTED])")
    }
}

/// The key of every entry of one URL (all methods, variants and partitions): what an unsafe method
/// invalidates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UrlKey(pub(crate) [u8; 16]);

/// The key of one entry: its URL, and a hash of the method and the credential partition.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EntryKey {
    pub(crate) url: UrlKey,
    pub(crate) variant: [u8; 16],
}

impl fmt::Debug for UrlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", hex(&self.url.0), hex(&self.variant))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Whether a header carries a credential: `Authorization`, `Proxy-Authorization`, `Cookie`, a value
/// marked sensitive, or one of `extra`.
pub(crate) fn is_credential(
    name: &HeaderName,
    value: &http::HeaderValue,
    extra: &[HeaderName],
) -> bool {
    *name == header::AUTHORIZATION
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::COOKIE
        || value.is_sensitive()
        || extra.contains(name)
}

/// The credential identity a request carries (the sorted `name: value` lines of its credential
/// headers), after `base` (the stack's own identity, when its credential is added below the cache).
/// `None` when there is neither.
pub(crate) fn identity(
    headers: &HeaderMap,
    base: Option<&[u8]>,
    extra: &[HeaderName],
) -> Option<Vec<u8>> {
    let mut lines: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(name, value)| is_credential(name, value, extra))
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    if lines.is_empty() && base.is_none() {
        return None;
    }
    lines.sort_unstable();
    let mut out = Vec::new();
    if let Some(base) = base {
        out.extend_from_slice(&(base.len() as u64).to_be_bytes());
        out.extend_from_slice(base);
    }
    for (name, value) in lines {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    Some(out)
}

/// The URL of a request as the cache names it: its absolute URI, or the `Host` header and its path
/// when the URI is relative.
pub(crate) fn effective_uri<B>(request: &Request<B>) -> String {
    let uri = request.uri();
    if uri.authority().is_some() {
        return uri.to_string();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("//{host}{path}")
}

impl HashKey {
    pub(crate) fn url_key(&self, scope: &str, uri: &str) -> UrlKey {
        UrlKey(self.sign(&[b"url", scope.as_bytes(), uri.as_bytes()]))
    }

    /// The partition of an identity: `None` is the shared partition.
    pub(crate) fn entry_key(
        &self,
        url: UrlKey,
        method: &Method,
        identity: Option<&[u8]>,
    ) -> EntryKey {
        let variant = match identity {
            Some(identity) => {
                let partition = self.sign(&[b"credential", identity]);
                self.sign(&[b"variant", method.as_str().as_bytes(), &partition])
            }
            None => self.sign(&[b"variant", method.as_str().as_bytes(), b"shared"]),
        };
        EntryKey { url, variant }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_order_free_and_never_mix_with_the_shared_partition() {
        let key = HashKey::new(b"k");
        let url = key.url_key("x", "https://a/b");
        let mut one = HeaderMap::new();
        one.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        one.insert(header::COOKIE, "s=1".parse().unwrap());
        let mut two = HeaderMap::new();
        two.insert(header::COOKIE, "s=1".parse().unwrap());
        two.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        let a = identity(&one, None, &[]).unwrap();
        assert_eq!(a, identity(&two, None, &[]).unwrap());
        assert!(identity(&HeaderMap::new(), None, &[]).is_none());
        let shared = key.entry_key(url, &Method::GET, None);
        assert_ne!(key.entry_key(url, &Method::GET, Some(&a)), shared);
        assert_ne!(
            key.entry_key(url, &Method::GET, Some(&a)),
            key.entry_key(url, &Method::HEAD, Some(&a))
        );
        // Keys show no credential and no URL.
        let shown = format!("{:?}", key.entry_key(url, &Method::GET, Some(&a)));
        assert!(!shown.contains("Bearer") && !shown.contains("https"));
        assert_eq!(format!("{key:?}"), "HashKey([REDACTED])");
    }

    #[test]
    fn a_sensitive_or_named_header_is_a_credential() {
        let mut headers = HeaderMap::new();
        let mut value = http::HeaderValue::from_static("k1");
        value.set_sensitive(true);
        headers.insert("x-secret", value);
        headers.insert("x-api-key", "k2".parse().unwrap());
        headers.insert("accept", "json".parse().unwrap());
        let named = HeaderName::from_static("x-api-key");
        let identity = identity(&headers, None, std::slice::from_ref(&named)).unwrap();
        let text = String::from_utf8(identity).unwrap();
        assert_eq!(text, "x-api-key: k2\nx-secret: k1\n");
    }
}
