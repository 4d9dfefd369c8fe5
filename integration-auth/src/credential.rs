//! What a provider hands the layer: a [`Credential`] that applies itself to a request, and the
//! [`CredentialProvider`] trait every scheme implements (ours and users' own).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use integration_core::BoxError;
use integration_core::error::AuthFailed;
use integration_core::ext::{Attempt, IntegrationName};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

/// Where a credential goes on a request.
#[derive(Clone)]
enum Placement {
    /// A header whose whole value is the secret (`Authorization: Bearer ...` is stored in full),
    /// made once (see [`secret_header_value`]); `None` when the secret cannot be a header value.
    Header(HeaderName, Option<HeaderValue>),
    /// A query parameter.
    Query(Arc<str>, SecretString),
}

/// A credential ready to be put on a request: a header, a query parameter, or both.
///
/// Cheap to clone (one reference count). A header's secret is made into its header value once, in
/// a buffer zeroed when the credential and the last request carrying it are dropped; each request
/// refers to that buffer rather than copying the secret. The header value is marked sensitive so
/// HTTP/2 never indexes it and the log layer redacts it. A query parameter's secret is held in a
/// [`SecretString`] and copied into the URI by [`apply`](Credential::apply). `Debug` shows where
/// the credential goes, never its value.
///
/// Every credential carries an id, unique in the process (or, for shared tokens, the id the store
/// gave the token): [`CredentialProvider::invalidate`] compares ids so that many concurrent 401s for
/// the same token cause one refresh, and a 401 for an older token does not throw away a newer one.
///
/// ```
/// use integration_auth::Credential;
/// use secrecy::SecretString;
///
/// let credential = Credential::bearer(SecretString::from("s3cr3t-token"));
/// let mut request = http::Request::new(());
/// credential.apply(&mut request).unwrap();
/// assert_eq!(request.headers()["authorization"], "Bearer s3cr3t-token");
/// assert!(!format!("{credential:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct Credential {
    inner: Arc<Inner>,
}

struct Inner {
    id: u128,
    placements: Vec<Placement>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u128 {
    u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Credential {
    fn from_placement(placement: Placement) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: next_id(),
                placements: vec![placement],
            }),
        }
    }

    /// A header whose value is the secret, e.g. `X-API-Key: <secret>`.
    pub fn header(name: HeaderName, value: SecretString) -> Self {
        Self::from_placement(Placement::Header(name, secret_header_value(&value)))
    }

    /// A query parameter whose value is the secret, e.g. `?api_key=<secret>`.
    pub fn query(name: impl Into<Arc<str>>, value: SecretString) -> Self {
        Self::from_placement(Placement::Query(name.into(), value))
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: SecretString) -> Self {
        Self::bearer_with_type("Bearer", &token)
    }

    /// `Authorization: <token_type> <token>`, for token types other than `Bearer` (`token_type` is
    /// what the token endpoint said; `bearer` in any case is written `Bearer`).
    pub fn bearer_with_type(token_type: &str, token: &SecretString) -> Self {
        let scheme = if token_type.eq_ignore_ascii_case("bearer") {
            "Bearer"
        } else {
            token_type
        };
        let value = SecretString::from(format!("{scheme} {}", token.expose_secret()));
        Self::header(AUTHORIZATION, value)
    }

    /// `Authorization: Basic base64(username:password)` (RFC 7617).
    pub fn basic(username: &str, password: &SecretString) -> Self {
        use base64::Engine as _;
        let raw = SecretString::from(format!("{username}:{}", password.expose_secret()));
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw.expose_secret());
        Self::header(
            AUTHORIZATION,
            SecretString::from(format!("Basic {encoded}")),
        )
    }

    /// The same credential with another id: a token read back from a shared store keeps the id the
    /// store gave it, so every replica names the same token alike.
    #[must_use]
    pub fn with_id(self, id: u128) -> Self {
        let placements = self.inner.placements.clone();
        Self {
            inner: Arc::new(Inner { id, placements }),
        }
    }

    /// Adds another placement (a credential may need a header and a query parameter).
    #[must_use]
    pub fn and(self, other: &Credential) -> Self {
        let mut placements = self.inner.placements.clone();
        placements.extend(other.inner.placements.iter().cloned());
        Self {
            inner: Arc::new(Inner {
                id: self.inner.id,
                placements,
            }),
        }
    }

    /// The id that [`CredentialProvider::invalidate`] compares.
    pub fn id(&self) -> u128 {
        self.inner.id
    }

    /// True when both are the same credential (same id).
    pub fn same_as(&self, other: &Credential) -> bool {
        self.inner.id == other.inner.id
    }

    /// Puts the credential on `request`: headers are replaced (a replayed request never carries two),
    /// a query parameter of the same name is replaced.
    ///
    /// # Errors
    ///
    /// [`AuthFailed`] (transient) when the secret cannot be a header value (a control character) or
    /// the URI cannot take the parameter. The error never contains the secret.
    pub fn apply<B>(&self, request: &mut http::Request<B>) -> Result<(), AuthFailed> {
        for placement in &self.inner.placements {
            match placement {
                Placement::Header(name, value) => {
                    let value = value.clone().ok_or_else(|| {
                        AuthFailed::transient(format!(
                            "the credential for header `{name}` is not a valid header value"
                        ))
                    })?;
                    request.headers_mut().insert(name.clone(), value);
                }
                Placement::Query(name, value) => {
                    set_query_param(request, name, value.expose_secret())?;
                }
            }
        }
        Ok(())
    }
}

fn set_query_param<B>(
    request: &mut http::Request<B>,
    name: &str,
    value: &str,
) -> Result<(), AuthFailed> {
    let uri = request.uri();
    let path = uri.path();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(existing) = uri.query() {
        for (key, val) in url::form_urlencoded::parse(existing.as_bytes()) {
            if key != name {
                query.append_pair(&key, &val);
            }
        }
    }
    query.append_pair(name, value);
    let path_and_query = format!("{path}?{}", query.finish());
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| {
        AuthFailed::transient(format!(
            "query parameter `{name}` could not be added to the URI"
        ))
    })?);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| {
        AuthFailed::transient(format!(
            "query parameter `{name}` could not be added to the URI"
        ))
    })?;
    Ok(())
}

/// The header value of a secret, made once per credential, marked sensitive (HTTP/2 never indexes
/// it, the log layer redacts it); `None` when the secret is not a valid header value (a control
/// character), which [`Credential::apply`] reports.
///
/// Its bytes sit in one buffer that every request carrying the credential shares (a clone is a
/// reference count) and that is zeroed when the last of them is dropped. Made on every `apply`, as
/// it was, the value cost a copy of the secret and an allocation a request, then a second one when
/// the retry layer's spare copy of the request first shared it (about 700 instructions a call,
/// issue 19), and each copy was freed without being zeroed.
fn secret_header_value(secret: &SecretString) -> Option<HeaderValue> {
    let owned = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(owned)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Where<'a>(&'a [Placement]);
        impl fmt::Debug for Where<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for placement in self.0 {
                    match placement {
                        Placement::Header(name, _) => list.entry(&format_args!("header {name}")),
                        Placement::Query(name, _) => list.entry(&format_args!("query {name}")),
                    };
                }
                list.finish()
            }
        }
        f.debug_struct("Credential")
            .field("id", &self.inner.id)
            .field("placements", &Where(&self.inner.placements))
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// What a provider knows about the request it signs.
///
/// Built by the layer from the request, which it borrows: providers use it for metrics labels and,
/// for per-request schemes (signatures), the method and URI. A provider whose lookup outlives the
/// call (a token fetch) copies what it needs, as [`TokenCache`](crate::TokenCache) does with the
/// integration's name. Borrowed rather than copied, the context of a static key costs nothing a
/// call (issue 19: a URI copy and a name's reference count, ~250 instructions).
#[derive(Clone, Copy)]
pub struct AuthContext<'a> {
    integration: Option<&'a IntegrationName>,
    attempt: Attempt,
    method: &'a http::Method,
    uri: &'a http::Uri,
}

/// The method and URI of a detached context.
static DETACHED_METHOD: http::Method = http::Method::GET;
static DETACHED_URI: std::sync::LazyLock<http::Uri> = std::sync::LazyLock::new(http::Uri::default);

impl<'a> AuthContext<'a> {
    /// The context of `request`.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        Self {
            integration: IntegrationName::of(request),
            attempt: Attempt::of(request),
            method: request.method(),
            uri: request.uri(),
        }
    }

    /// The integration named on the request, if any.
    pub fn integration(&self) -> Option<&'a IntegrationName> {
        self.integration
    }

    /// Which attempt of the logical call this is.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The request method.
    pub fn method(&self) -> &'a http::Method {
        self.method
    }

    /// The request URI (it may hold query parameters: never log it whole).
    pub fn uri(&self) -> &'a http::Uri {
        self.uri
    }
}

impl AuthContext<'static> {
    /// A context for a request outside any integration (tests, warm-up calls): a `GET` of `/`.
    pub fn detached() -> Self {
        Self {
            integration: None,
            attempt: Attempt::FIRST,
            method: &DETACHED_METHOD,
            uri: &DETACHED_URI,
        }
    }
}

impl fmt::Debug for AuthContext<'_> {
    /// The URI's host only: its query or userinfo may hold a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("integration", &self.integration)
            .field("attempt", &self.attempt)
            .field("method", &self.method)
            .field("host", &self.uri.host())
            .finish()
    }
}

/// The future of a credential lookup: ready at once (a static key, a fresh cached token: no
/// allocation) or boxed (a lookup that has to wait for a token endpoint or a store).
///
/// A box is the honest type for an async lookup through a trait object; it is wrapped in this named
/// `#[must_use]` struct so the representation can change without breaking users.
#[must_use = "futures do nothing unless polled"]
pub struct CredentialFuture {
    kind: Kind,
}

type BoxedLookup = Pin<Box<dyn Future<Output = Result<Credential, BoxError>> + Send + 'static>>;

enum Kind {
    Ready(Option<Result<Credential, BoxError>>),
    Boxed(BoxedLookup),
}

impl CredentialFuture {
    /// A lookup that is already done.
    pub fn ready(result: Result<Credential, BoxError>) -> Self {
        Self {
            kind: Kind::Ready(Some(result)),
        }
    }

    /// A lookup that has to wait.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<Credential, BoxError>> + Send + 'static,
    {
        Self {
            kind: Kind::Boxed(Box::pin(future)),
        }
    }

    /// Takes the result if the lookup finished without waiting (the layer's fast path).
    pub fn take_ready(&mut self) -> Option<Result<Credential, BoxError>> {
        match &mut self.kind {
            Kind::Ready(result) => result.take(),
            Kind::Boxed(_) => None,
        }
    }
}

impl Future for CredentialFuture {
    type Output = Result<Credential, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            Kind::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("CredentialFuture polled after completion"),
            ),
            Kind::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for CredentialFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.kind {
            Kind::Ready(_) => "ready",
            Kind::Boxed(_) => "pending",
        };
        f.debug_struct("CredentialFuture")
            .field("state", &state)
            .finish()
    }
}

/// A source of credentials: API keys, tokens that refresh themselves, or a user's own scheme.
///
/// Object safe: the layer holds an `Arc<dyn CredentialProvider>`. The future returned by
/// [`credential`](CredentialProvider::credential) must not borrow `self` (clone what it needs, e.g. an
/// inner `Arc`).
///
/// # Errors
///
/// A lookup fails with a boxed error, [`AuthFailed`] for ours: `AuthFailed::permanent(code, ..)` when
/// retrying cannot help (`invalid_grant`, `invalid_client`), transient otherwise.
///
/// ```
/// use integration_auth::{AuthContext, Credential, CredentialFuture, CredentialProvider};
/// use secrecy::SecretString;
///
/// /// A scheme of our own: the tenant id in a header, the key in another.
/// #[derive(Debug)]
/// struct TenantKey { tenant: String, key: SecretString }
///
/// impl CredentialProvider for TenantKey {
///     fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
///         let tenant = Credential::header("x-tenant".parse().unwrap(), self.tenant.clone().into());
///         let key = Credential::header("x-key".parse().unwrap(), self.key.clone());
///         CredentialFuture::ready(Ok(tenant.and(&key)))
///     }
/// }
/// ```
pub trait CredentialProvider: fmt::Debug + Send + Sync + 'static {
    /// The credential for the request described by `ctx`.
    fn credential(&self, ctx: &AuthContext<'_>) -> CredentialFuture;

    /// The upstream rejected `rejected` (a 401): forget it if it is still the current one, so the
    /// next lookup fetches a fresh one. A no-op for static credentials (the default).
    fn invalidate(&self, rejected: &Credential) {
        let _ = rejected;
    }

    /// Whether, after [`invalidate`](CredentialProvider::invalidate), this provider can produce a
    /// *different* credential: true for tokens that are fetched or signed (OAuth, JWT), false (the
    /// default) for a static API key, Basic or bearer token.
    ///
    /// The auth layer replays a 401 (and marks it
    /// [`CredentialInvalidated`](integration_core::ext::CredentialInvalidated) for a retry layer)
    /// only when this is true: replaying the very credential the upstream has just refused cannot
    /// succeed, and would send a request that is not idempotent (a POST) twice. A provider of your
    /// own whose credential changes after a rejection (a token of its own cache) returns true.
    fn can_renew(&self) -> bool {
        false
    }

    /// The key this provider's tokens are cached under in its [`TokenStore`](crate::TokenStore)
    /// (no secret in it), for inspecting the cache; `None` (the default) for a provider without one.
    fn cache_key(&self) -> Option<&str> {
        None
    }
}

impl<P: CredentialProvider + ?Sized> CredentialProvider for Arc<P> {
    fn credential(&self, ctx: &AuthContext<'_>) -> CredentialFuture {
        (**self).credential(ctx)
    }

    fn invalidate(&self, rejected: &Credential) {
        (**self).invalidate(rejected);
    }

    fn can_renew(&self) -> bool {
        (**self).can_renew()
    }

    fn cache_key(&self) -> Option<&str> {
        (**self).cache_key()
    }
}

impl<P: CredentialProvider + ?Sized> CredentialProvider for Box<P> {
    fn credential(&self, ctx: &AuthContext<'_>) -> CredentialFuture {
        (**self).credential(ctx)
    }

    fn invalidate(&self, rejected: &Credential) {
        (**self).invalidate(rejected);
    }

    fn can_renew(&self) -> bool {
        (**self).can_renew()
    }

    fn cache_key(&self) -> Option<&str> {
        (**self).cache_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context is the request's own method, URI, name and attempt (borrowed, not copies), and
    /// its `Debug` shows the host but no query or userinfo.
    #[test]
    fn an_auth_context_reads_the_request_and_shows_no_credential() {
        let mut request =
            http::Request::post("https://user:pass-word@api.example.com/v1/charges?api_key=k-e-y")
                .body(())
                .unwrap();
        request
            .extensions_mut()
            .insert(IntegrationName::new("payments"));
        request.extensions_mut().insert(Attempt::new(2));
        let ctx = AuthContext::of(&request);
        assert!(std::ptr::eq(ctx.uri(), request.uri()));
        assert_eq!(ctx.method(), http::Method::POST);
        assert_eq!(
            ctx.integration().map(IntegrationName::as_str),
            Some("payments")
        );
        assert_eq!(ctx.attempt(), Attempt::new(2));
        let shown = format!("{ctx:?}");
        assert!(shown.contains("api.example.com"), "{shown}");
        for secret in ["pass-word", "k-e-y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }

        let detached = AuthContext::detached();
        assert_eq!(detached.method(), http::Method::GET);
        assert_eq!(detached.uri(), "/");
        assert!(detached.integration().is_none());
        assert_eq!(detached.attempt(), Attempt::FIRST);
    }

    #[test]
    fn query_credential_replaces_a_parameter_of_the_same_name() {
        let credential = Credential::query("api_key", SecretString::from("k&1"));
        let mut request = http::Request::get("https://api.example.com/v1/items?page=2&api_key=old")
            .body(())
            .unwrap();
        credential.apply(&mut request).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "https://api.example.com/v1/items?page=2&api_key=k%261"
        );
    }

    #[test]
    fn basic_encodes_username_and_password() {
        let credential = Credential::basic("Aladdin", &SecretString::from("open sesame"));
        let mut request = http::Request::new(());
        credential.apply(&mut request).unwrap();
        assert_eq!(
            request.headers()[AUTHORIZATION],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn a_bad_header_value_fails_without_echoing_it() {
        let credential = Credential::bearer(SecretString::from("bad\nsecret"));
        let error = credential.apply(&mut http::Request::new(())).unwrap_err();
        assert!(!error.to_string().contains("secret"));
        assert!(!format!("{error:?}").contains("secret"));
    }

    /// Issue 19: the header value is made once per credential, and every request shares its
    /// bytes (before, each `apply` copied the secret into a new allocation). Shared bytes have
    /// one address.
    #[test]
    fn every_request_shares_the_credentials_one_header_value() {
        let credential = Credential::header(
            HeaderName::from_static("x-api-key"),
            SecretString::from("k3y-value"),
        );
        let mut first = http::Request::new(());
        let mut second = http::Request::new(());
        credential.apply(&mut first).unwrap();
        credential.clone().apply(&mut second).unwrap();
        let (a, b) = (
            &first.headers()["x-api-key"],
            &second.headers()["x-api-key"],
        );
        assert_eq!(a, "k3y-value");
        assert!(a.is_sensitive() && b.is_sensitive());
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        // A replay (the retry layer's copy) carries the same value, still sensitive.
        let replay = first.headers().clone();
        assert!(replay["x-api-key"].is_sensitive());
        assert_eq!(
            replay["x-api-key"].as_bytes().as_ptr(),
            a.as_bytes().as_ptr()
        );
        // The request's value outlives the credential.
        drop(credential);
        assert_eq!(second.headers()["x-api-key"], "k3y-value");
    }
}
