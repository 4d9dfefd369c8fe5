//! Which key a request is limited under.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use integration_core::ext::IntegrationName;

/// The name a request is rate limited under. Every caller of one key shares its quotas, its server
/// pause and its concurrency cap.
///
/// Cheap to clone (an `Arc<str>`).
///
/// ```
/// use integration_ratelimit::RateLimitKey;
///
/// let key = RateLimitKey::from("github");
/// assert_eq!(key.as_str(), "github");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimitKey(Arc<str>);

impl RateLimitKey {
    /// A key.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Debug for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for RateLimitKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RateLimitKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for RateLimitKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&IntegrationName> for RateLimitKey {
    /// The key shares the name's string (no copy).
    fn from(name: &IntegrationName) -> Self {
        Self(name.as_arc().clone())
    }
}

/// Chooses the key of a request. `None` lets the request through unlimited (a health check, say).
///
/// Implemented by [`DefaultKey`] and by any `Fn(&http::Request<B>) -> Option<RateLimitKey>` closure.
pub trait MakeKey<B> {
    /// The key of `request`.
    fn make_key(&self, request: &http::Request<B>) -> Option<RateLimitKey>;
}

/// The default key: the request's [`IntegrationName`] extension, else the URI's authority
/// (`api.github.com`), else `"default"`.
///
/// ```
/// use integration_core::ext::IntegrationName;
/// use integration_ratelimit::{DefaultKey, MakeKey, RateLimitKey};
///
/// let mut request = http::Request::get("https://api.github.com/user").body(()).unwrap();
/// assert_eq!(DefaultKey.make_key(&request), Some(RateLimitKey::from("api.github.com")));
/// request.extensions_mut().insert(IntegrationName::new("github"));
/// assert_eq!(DefaultKey.make_key(&request), Some(RateLimitKey::from("github")));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultKey;

impl<B> MakeKey<B> for DefaultKey {
    fn make_key(&self, request: &http::Request<B>) -> Option<RateLimitKey> {
        if let Some(name) = IntegrationName::of(request) {
            return Some(name.into());
        }
        Some(match request.uri().authority() {
            Some(authority) => RateLimitKey::from(authority.as_str()),
            None => RateLimitKey::from("default"),
        })
    }
}

impl<B, F> MakeKey<B> for F
where
    F: Fn(&http::Request<B>) -> Option<RateLimitKey>,
{
    fn make_key(&self, request: &http::Request<B>) -> Option<RateLimitKey> {
        self(request)
    }
}
