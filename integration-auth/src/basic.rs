//! Static credentials: an API key (header or query parameter), HTTP Basic, a static bearer token.
//!
//! Each builds its [`Credential`] once; a lookup is ready at once and allocates nothing.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use secrecy::SecretString;

use crate::credential::{AuthContext, Credential, CredentialFuture, CredentialProvider};

/// The header an API key goes in by default.
pub const DEFAULT_API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// An API key in a header (`X-API-Key` by default) or a query parameter.
///
/// ```
/// use integration_auth::{ApiKey, AuthContext, CredentialProvider};
/// use secrecy::SecretString;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let key = ApiKey::query("api_key", SecretString::from("k-123"));
/// let credential = key.credential(&AuthContext::detached()).await.unwrap();
/// let mut request = http::Request::get("https://api.example.com/v1/items?page=2").body(()).unwrap();
/// credential.apply(&mut request).unwrap();
/// assert_eq!(request.uri().query(), Some("page=2&api_key=k-123"));
/// # }
/// ```
#[derive(Clone)]
pub struct ApiKey {
    credential: Credential,
    location: Location,
}

#[derive(Clone)]
enum Location {
    Header(HeaderName),
    Query(Arc<str>),
}

impl ApiKey {
    /// The key in the `X-API-Key` header.
    pub fn new(key: SecretString) -> Self {
        Self::header(DEFAULT_API_KEY_HEADER, key)
    }

    /// The key in the header `name`.
    pub fn header(name: HeaderName, key: SecretString) -> Self {
        Self {
            credential: Credential::header(name.clone(), key),
            location: Location::Header(name),
        }
    }

    /// The key in the query parameter `name`.
    pub fn query(name: impl Into<Arc<str>>, key: SecretString) -> Self {
        let name = name.into();
        Self {
            credential: Credential::query(Arc::clone(&name), key),
            location: Location::Query(name),
        }
    }
}

impl CredentialProvider for ApiKey {
    fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
        CredentialFuture::ready(Ok(self.credential.clone()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ApiKey");
        match &self.location {
            Location::Header(name) => s.field("header", name),
            Location::Query(name) => s.field("query", name),
        };
        s.field("key", &"[REDACTED]").finish()
    }
}

/// HTTP Basic authentication (RFC 7617).
///
/// ```
/// use integration_auth::{AuthContext, Basic, CredentialProvider};
/// use secrecy::SecretString;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let basic = Basic::new("sk_test_123", SecretString::from(""));
/// let credential = basic.credential(&AuthContext::detached()).await.unwrap();
/// let mut request = http::Request::new(());
/// credential.apply(&mut request).unwrap();
/// assert_eq!(request.headers()["authorization"], "Basic c2tfdGVzdF8xMjM6");
/// # }
/// ```
#[derive(Clone)]
pub struct Basic {
    username: String,
    credential: Credential,
}

impl Basic {
    /// `username` and `password` (Stripe-style APIs put the key in the username and leave the
    /// password empty).
    pub fn new(username: impl Into<String>, password: SecretString) -> Self {
        let username = username.into();
        Self {
            credential: Credential::basic(&username, &password),
            username,
        }
    }
}

impl CredentialProvider for Basic {
    fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
        CredentialFuture::ready(Ok(self.credential.clone()))
    }
}

impl fmt::Debug for Basic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Basic")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// A static bearer token: `Authorization: Bearer <token>` (a personal access token, say).
///
/// ```
/// use integration_auth::{AuthLayer, Bearer};
/// use secrecy::SecretString;
///
/// let layer = AuthLayer::new(Bearer::new(SecretString::from("ghp_example")));
/// assert!(!format!("{layer:?}").contains("ghp_example"));
/// ```
#[derive(Clone)]
pub struct Bearer {
    credential: Credential,
}

impl Bearer {
    /// The token.
    pub fn new(token: SecretString) -> Self {
        Self {
            credential: Credential::bearer(token),
        }
    }
}

impl CredentialProvider for Bearer {
    fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
        CredentialFuture::ready(Ok(self.credential.clone()))
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("token", &"[REDACTED]")
            .finish()
    }
}
