//! What layers derive from a request's authority, made once per authority rather than on every call.
//!
//! A stack calls one upstream, or a few: parsing the same authority and formatting or allocating the
//! same value from it on every call is work thrown away (issue 19: the log layer's host and port,
//! ~700 instructions and an allocation a call; the transport's `Host` header, ~2,300). An
//! [`AuthorityCache`] keeps the values of the last `N` authorities, keyed by the authority's exact
//! text (user information included, case kept) and the request scheme's [`default_port`]. Its lock
//! is only tried: a cache another thread holds is passed by, and the value made as if it were
//! absent, so a call never waits for it.
//!
//! ```
//! use integration_core::authority::{AuthorityCache, default_port};
//!
//! let hosts: AuthorityCache<String, 4> = AuthorityCache::new();
//! let uri: http::Uri = "https://api.example.com:443/v1".parse().unwrap();
//! let make = |authority: &http::uri::Authority, default: Option<u16>| {
//!     let port = authority.port_u16().filter(|&port| Some(port) != default);
//!     Some(match port {
//!         Some(port) => format!("{}:{port}", authority.host()),
//!         None => authority.host().to_owned(),
//!     })
//! };
//! assert_eq!(hosts.get_or_make(&uri, make).as_deref(), Some("api.example.com"));
//! // Relative: no authority, nothing made.
//! assert_eq!(hosts.get_or_make(&"/v1".parse().unwrap(), make), None);
//! assert_eq!(default_port(Some("http")), Some(80));
//! ```

use std::fmt;
use std::sync::Mutex;

use http::Uri;
use http::uri::Authority;

/// The port a URL of `scheme` means when it names none: 80 for `http`, 443 for `https`, `None` for
/// any other scheme or none.
pub fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

/// The values made from the last `N` authorities (see the [module](self)); the oldest is replaced
/// once `N` are kept.
pub struct AuthorityCache<V, const N: usize> {
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    kept: Vec<Entry<V>>,
    /// The entry the next new authority replaces once the cache is full.
    next: usize,
}

struct Entry<V> {
    default_port: Option<u16>,
    authority: Authority,
    value: V,
}

impl<V, const N: usize> AuthorityCache<V, N> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(Entries {
                kept: Vec::new(),
                next: 0,
            }),
        }
    }
}

impl<V, const N: usize> Default for AuthorityCache<V, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The number of authorities kept, never the authorities (they may hold user information).
impl<V, const N: usize> fmt::Debug for AuthorityCache<V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.entries.try_lock().map(|entries| entries.kept.len());
        f.debug_struct("AuthorityCache")
            .field("capacity", &N)
            .field("kept", &kept.ok())
            .finish()
    }
}

impl<V: Clone, const N: usize> AuthorityCache<V, N> {
    /// The value of `uri`'s authority: the one kept, or `make(authority, default port of the
    /// scheme)`, kept for the next calls when it is `Some`. `None` for a relative `uri`.
    pub fn get_or_make(
        &self,
        uri: &Uri,
        make: impl FnOnce(&Authority, Option<u16>) -> Option<V>,
    ) -> Option<V> {
        let authority = uri.authority()?;
        let default_port = default_port(uri.scheme_str());
        if let Ok(entries) = self.entries.try_lock()
            && let Some(entry) = entries.kept.iter().find(|entry| {
                // Byte for byte (not `Authority`'s case-insensitive `==`): what is made from it
                // keeps the case the request was sent with.
                entry.authority.as_str() == authority.as_str() && entry.default_port == default_port
            })
        {
            return Some(entry.value.clone());
        }
        let value = make(authority, default_port)?;
        if N > 0
            && let Ok(mut entries) = self.entries.try_lock()
        {
            let entry = Entry {
                default_port,
                authority: authority.clone(),
                value: value.clone(),
            };
            if entries.kept.len() < N {
                entries.kept.push(entry);
            } else {
                let next = entries.next;
                entries.kept[next] = entry;
                entries.next = (next + 1) % N;
            }
        }
        Some(value)
    }

    /// How many authorities are kept.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .kept
            .len()
    }

    /// Whether no authority is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn made(cache: &AuthorityCache<String, 2>, uri: &str, calls: &Cell<u32>) -> Option<String> {
        cache.get_or_make(&uri.parse().unwrap(), |authority, default| {
            calls.set(calls.get() + 1);
            Some(format!("{}|{default:?}", authority.as_str()))
        })
    }

    #[test]
    fn a_value_is_made_once_per_authority_and_scheme_until_replaced() {
        let cache = AuthorityCache::<String, 2>::new();
        let calls = Cell::new(0);
        assert_eq!(
            made(&cache, "http://a.example/x", &calls).unwrap(),
            "a.example|Some(80)"
        );
        assert_eq!(
            made(&cache, "http://a.example/y", &calls).unwrap(),
            "a.example|Some(80)"
        );
        assert_eq!(calls.get(), 1, "the second call found it kept");
        // Another scheme's default port, another case, other user information: other keys.
        assert_eq!(
            made(&cache, "https://a.example/", &calls).unwrap(),
            "a.example|Some(443)"
        );
        assert_eq!(
            made(&cache, "http://A.example/", &calls).unwrap(),
            "A.example|Some(80)"
        );
        assert_eq!(calls.get(), 3);
        assert_eq!(cache.len(), 2, "never more than N");
        // `http://a.example` was the oldest and is gone; `http://A.example` is kept.
        made(&cache, "http://a.example/", &calls);
        made(&cache, "http://A.example/", &calls);
        assert_eq!(calls.get(), 4);
        assert_eq!(made(&cache, "/relative", &calls), None);
        assert_eq!(calls.get(), 4, "nothing is made for a relative URI");
    }

    #[test]
    fn nothing_made_is_nothing_kept_and_debug_shows_no_authority() {
        let cache = AuthorityCache::<String, 2>::new();
        let uri: Uri = "http://user:hunter2@a.example/".parse().unwrap();
        assert_eq!(cache.get_or_make(&uri, |_, _| None), None);
        assert!(cache.is_empty());
        cache.get_or_make(&uri, |_, _| Some("a.example".to_owned()));
        let debug = format!("{cache:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("a.example"),
            "{debug}"
        );
        assert!(debug.contains("kept: Some(1)"), "{debug}");
    }

    #[test]
    fn the_default_ports() {
        assert_eq!(default_port(Some("https")), Some(443));
        assert_eq!(default_port(Some("http")), Some(80));
        assert_eq!(default_port(Some("ws")), None);
        assert_eq!(default_port(None), None);
    }
}
