//! OAuth 2.0 providers through the `oauth2` crate, driven by the injected [`TokenTransport`]:
//! [`ClientCredentials`] and [`RefreshToken`] (with rotation).

use std::fmt;
use std::sync::{Arc, Mutex};

use integration_core::error::AuthFailed;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope,
    TokenResponse as _, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::cache::{FetchFuture, FetchedToken, TokenCache, TokenCacheConfig, TokenSource};
use crate::error::{endpoint, sanitize, token_error};
use crate::store::{MemoryTokenStore, TokenStore};
use crate::transport::{TokenTransport, TransportError};

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// How the client authenticates itself at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `Authorization: Basic` with the client id and secret (the RFC's recommendation; the default).
    #[default]
    BasicHeader,
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
}

/// What both OAuth grants share: the client, its endpoint, scopes, extra parameters, the transport.
#[derive(Clone)]
struct OAuthSettings {
    token_url: Url,
    client_id: String,
    client_secret: Option<SecretString>,
    client_auth: ClientAuth,
    scopes: Vec<String>,
    params: Vec<(String, String)>,
    transport: TokenTransport,
}

impl OAuthSettings {
    fn client(&self) -> OAuthClient {
        let mut client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()))
            .set_auth_type(match self.client_auth {
                ClientAuth::BasicHeader => AuthType::BasicAuth,
                ClientAuth::RequestBody => AuthType::RequestBody,
            });
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        client
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.scopes.iter().cloned().map(Scope::new)
    }

    /// Describes a failed token request without any secret: the provider's code and a sanitised
    /// description, or what kind of failure it was.
    fn error(
        &self,
        error: RequestTokenError<TransportError, BasicErrorResponse>,
        extra_secret: Option<&SecretString>,
    ) -> AuthFailed {
        let secrets: Vec<&SecretString> = self.client_secret.iter().chain(extra_secret).collect();
        let failed = match error {
            RequestTokenError::ServerResponse(response) => token_error(
                response.error().as_ref(),
                response.error_description().map(String::as_str),
                &secrets,
            ),
            RequestTokenError::Request(TransportError(error)) => AuthFailed::transient(format!(
                "token endpoint unreachable: {}",
                sanitize(&error.to_string(), &secrets)
            )),
            // The body of an unparsable answer may hold anything, tokens included: never shown.
            RequestTokenError::Parse(..) => {
                AuthFailed::transient("token endpoint answered with an unreadable response")
            }
            RequestTokenError::Other(message) => AuthFailed::transient(format!(
                "token request failed: {}",
                sanitize(&message, &secrets)
            )),
        };
        failed.with_endpoint(endpoint(&self.token_url))
    }

    fn describe(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("client_auth", &self.client_auth)
            .field("scopes", &self.scopes)
            .field(
                "params",
                &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            );
    }
}

async fn send(
    transport: &TokenTransport,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TransportError> {
    transport.send(request).await.map_err(TransportError)
}

fn fetched(response: &BasicTokenResponse) -> FetchedToken {
    FetchedToken {
        access_token: SecretString::from(response.access_token().secret().clone()),
        token_type: response.token_type().as_ref().to_owned(),
        expires_in: response.expires_in(),
    }
}

#[derive(Clone)]
struct ClientCredentialsSource(OAuthSettings);

impl fmt::Debug for ClientCredentialsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ClientCredentialsSource");
        self.0.describe(&mut s);
        s.finish()
    }
}

impl TokenSource for ClientCredentialsSource {
    fn fetch<'a>(&'a self, _store: &'a dyn TokenStore, _key: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let settings = &self.0;
            let client = settings.client();
            let transport = settings.transport.clone();
            let http = move |request: oauth2::HttpRequest| {
                let transport = transport.clone();
                async move { send(&transport, request).await }
            };
            let mut request = client
                .exchange_client_credentials()
                .add_scopes(settings.scopes());
            for (name, value) in &settings.params {
                request = request.add_extra_param(name.as_str(), value.as_str());
            }
            let response = request
                .request_async(&http)
                .await
                .map_err(|error| settings.error(error, None))?;
            Ok(fetched(&response))
        })
    }
}

/// Shared plumbing of the cached OAuth/JWT providers: the settings live until the first lookup, the
/// cache is rebuilt by every `with_*` (configure before cloning).
#[derive(Clone)]
pub(crate) struct CacheSetup {
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) key: Option<String>,
    pub(crate) config: TokenCacheConfig,
}

impl CacheSetup {
    pub(crate) fn new() -> Self {
        Self {
            store: Arc::new(MemoryTokenStore::new()),
            key: None,
            config: TokenCacheConfig::default(),
        }
    }

    pub(crate) fn build(&self, source: impl TokenSource, default_key: String) -> TokenCache {
        TokenCache::with_config(
            source,
            self.key.clone().unwrap_or(default_key),
            Arc::clone(&self.store),
            self.config.clone(),
        )
    }
}

/// The extra token-request parameters as a store-key part (`audience=a&resource=r`): they shape the
/// token (an Auth0 `audience`, an Azure `resource`), so two providers that differ in them must not
/// share one.
pub(crate) fn params_key(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A short one-way fingerprint of a secret (the first 8 bytes of its SHA-256, in hex), for a store
/// key: the same secret names the same tokens in every replica, different secrets (two users'
/// refresh tokens) never do, and the key, which appears in logs and in Redis, reveals nothing.
pub(crate) fn fingerprint(secret: &SecretString) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(secret.expose_secret().as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// OAuth 2.0 client credentials grant (RFC 6749 §4.4): the service's own token, cached and refreshed
/// once for everyone.
///
/// # Clone
///
/// Clones share one token cache. Configure with the `with_*` methods first: each of them starts a
/// new, empty cache.
///
/// ```
/// use integration_auth::{AuthLayer, ClientAuth, ClientCredentials, TokenTransport, Url};
/// use secrecy::SecretString;
///
/// # let transport = TokenTransport::from_fn(|_| async { Err("offline".into()) });
/// let provider = ClientCredentials::new(
///     Url::parse("https://auth.example.com/oauth/token").unwrap(),
///     "my-client",
///     SecretString::from("client-secret"),
///     transport,
/// )
/// .with_scopes(["read:orders", "write:orders"])
/// .with_audience("https://api.example.com")
/// .with_client_auth(ClientAuth::RequestBody);
/// let layer = AuthLayer::new(provider);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    settings: OAuthSettings,
    setup: CacheSetup,
    cache: TokenCache,
}

impl ClientCredentials {
    /// A client credentials provider: `client_id` and `client_secret` at `token_url`, token requests
    /// through `transport`, tokens in memory, client authentication by Basic header.
    pub fn new(
        token_url: Url,
        client_id: impl Into<String>,
        client_secret: SecretString,
        transport: TokenTransport,
    ) -> Self {
        let settings = OAuthSettings {
            token_url,
            client_id: client_id.into(),
            client_secret: Some(client_secret),
            client_auth: ClientAuth::default(),
            scopes: Vec::new(),
            params: Vec::new(),
            transport,
        };
        let setup = CacheSetup::new();
        let cache = Self::build(&settings, &setup);
        Self {
            settings,
            setup,
            cache,
        }
    }

    fn build(settings: &OAuthSettings, setup: &CacheSetup) -> TokenCache {
        let key = format!(
            "client_credentials:{}:{}:{}:{}",
            settings.token_url,
            settings.client_id,
            settings.scopes.join(" "),
            params_key(&settings.params)
        );
        setup.build(ClientCredentialsSource(settings.clone()), key)
    }

    fn rebuilt(mut self) -> Self {
        self.cache = Self::build(&self.settings, &self.setup);
        self
    }

    /// Requests these scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings
            .scopes
            .extend(scopes.into_iter().map(Into::into));
        self.rebuilt()
    }

    /// Adds the `audience` parameter (Auth0, Okta).
    #[must_use]
    pub fn with_audience(self, audience: impl Into<String>) -> Self {
        self.with_param("audience", audience)
    }

    /// Adds the `resource` parameter (RFC 8707, Azure AD v1).
    #[must_use]
    pub fn with_resource(self, resource: impl Into<String>) -> Self {
        self.with_param("resource", resource)
    }

    /// Adds any other form parameter to the token request.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.params.push((name.into(), value.into()));
        self.rebuilt()
    }

    /// How the client authenticates (default: Basic header).
    #[must_use]
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.settings.client_auth = client_auth;
        self.rebuilt()
    }
}

cached_grant!(
    ClientCredentials,
    store: "Keeps tokens in `store` (Redis: shared by every replica).",
    key: "Names the token in the store (default: grant, token URL, client id, scopes and extra parameters).",
);

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ClientCredentials");
        self.settings.describe(&mut s);
        s.field("key", &self.cache.key()).finish()
    }
}

struct RefreshTokenSource {
    settings: OAuthSettings,
    initial: SecretString,
    /// A rotated refresh token the store did not take yet: it comes before the store's (older) one.
    unsaved: Mutex<Option<SecretString>>,
}

impl fmt::Debug for RefreshTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RefreshTokenSource");
        self.settings.describe(&mut s);
        s.field("refresh_token", &"[REDACTED]").finish()
    }
}

fn persist_failed(error: &integration_core::BoxError) -> AuthFailed {
    AuthFailed::transient(format!(
        "the rotated refresh token could not be saved: {}",
        sanitize(&error.to_string(), &[])
    ))
}

impl RefreshTokenSource {
    fn unsaved(&self) -> std::sync::MutexGuard<'_, Option<SecretString>> {
        self.unsaved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn current(&self, store: &dyn TokenStore, key: &str) -> Result<SecretString, AuthFailed> {
        let pending = self.unsaved().clone();
        if let Some(pending) = pending {
            store
                .save_refresh_token(key, &pending)
                .await
                .map_err(|e| persist_failed(&e))?;
            *self.unsaved() = None;
            return Ok(pending);
        }
        // Never fall back to the initial token when the store cannot be read: it may have been rotated
        // away, and sending an old refresh token again can revoke the whole grant.
        let stored = store.load_refresh_token(key).await.map_err(|e| {
            AuthFailed::transient(format!(
                "the refresh token could not be read from the store: {}",
                sanitize(&e.to_string(), &[])
            ))
        })?;
        Ok(stored.unwrap_or_else(|| self.initial.clone()))
    }
}

impl TokenSource for RefreshTokenSource {
    fn fetch<'a>(&'a self, store: &'a dyn TokenStore, key: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let settings = &self.settings;
            let current = self.current(store, key).await?;
            let client = settings.client();
            let transport = settings.transport.clone();
            let http = move |request: oauth2::HttpRequest| {
                let transport = transport.clone();
                async move { send(&transport, request).await }
            };
            let refresh_token = oauth2::RefreshToken::new(current.expose_secret().to_owned());
            let mut request = client
                .exchange_refresh_token(&refresh_token)
                .add_scopes(settings.scopes());
            for (name, value) in &settings.params {
                request = request.add_extra_param(name.as_str(), value.as_str());
            }
            let response = request
                .request_async(&http)
                .await
                .map_err(|error| settings.error(error, Some(&current)))?;
            if let Some(rotated) = response.refresh_token()
                && rotated.secret() != current.expose_secret()
            {
                // Persist the rotated refresh token before the new access token is used: once the
                // provider rotated, the old one is dead, and losing the new one would lose the grant.
                let rotated = SecretString::from(rotated.secret().clone());
                *self.unsaved() = Some(rotated.clone());
                store
                    .save_refresh_token(key, &rotated)
                    .await
                    .map_err(|e| persist_failed(&e))?;
                *self.unsaved() = None;
            }
            Ok(fetched(&response))
        })
    }
}

/// OAuth 2.0 refresh token grant (RFC 6749 §6) with rotation: access tokens from a long-lived refresh
/// token; a rotated refresh token is saved in the store before the new access token is used, and the
/// old one is never sent again.
///
/// The refresh token given here seeds the store: once a rotated one was saved, the store's wins (in
/// every replica sharing it).
///
/// # Clone
///
/// Clones share one token cache. Configure with the `with_*` methods first.
///
/// ```
/// use integration_auth::{RefreshToken, TokenTransport, Url};
/// use secrecy::SecretString;
///
/// # let transport = TokenTransport::from_fn(|_| async { Err("offline".into()) });
/// let provider = RefreshToken::new(
///     Url::parse("https://auth.example.com/oauth/token").unwrap(),
///     "my-client",
///     SecretString::from("refresh-token-from-consent"),
///     transport,
/// )
/// .with_client_secret(SecretString::from("client-secret"));
/// # let _ = provider;
/// ```
#[derive(Clone)]
pub struct RefreshToken {
    settings: OAuthSettings,
    initial: SecretString,
    setup: CacheSetup,
    cache: TokenCache,
}

impl RefreshToken {
    /// A refresh token provider for a public client (no client secret; add one with
    /// [`with_client_secret`](Self::with_client_secret)).
    pub fn new(
        token_url: Url,
        client_id: impl Into<String>,
        refresh_token: SecretString,
        transport: TokenTransport,
    ) -> Self {
        let settings = OAuthSettings {
            token_url,
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuth::default(),
            scopes: Vec::new(),
            params: Vec::new(),
            transport,
        };
        let setup = CacheSetup::new();
        let cache = Self::build(&settings, &refresh_token, &setup);
        Self {
            settings,
            initial: refresh_token,
            setup,
            cache,
        }
    }

    fn build(settings: &OAuthSettings, initial: &SecretString, setup: &CacheSetup) -> TokenCache {
        // The refresh token stands for one user's grant: two providers of one client (two tenants,
        // two users) must not share tokens, so its fingerprint is part of the key. The initial token
        // is the one configured, so the key stays the same after rotations.
        let key = format!(
            "refresh_token:{}:{}:{}:{}:{}",
            settings.token_url,
            settings.client_id,
            settings.scopes.join(" "),
            params_key(&settings.params),
            fingerprint(initial)
        );
        setup.build(
            RefreshTokenSource {
                settings: settings.clone(),
                initial: initial.clone(),
                unsaved: Mutex::new(None),
            },
            key,
        )
    }

    fn rebuilt(mut self) -> Self {
        self.cache = Self::build(&self.settings, &self.initial, &self.setup);
        self
    }

    /// A confidential client's secret.
    #[must_use]
    pub fn with_client_secret(mut self, client_secret: SecretString) -> Self {
        self.settings.client_secret = Some(client_secret);
        self.rebuilt()
    }

    /// How the client authenticates (default: Basic header).
    #[must_use]
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.settings.client_auth = client_auth;
        self.rebuilt()
    }

    /// Requests these scopes (a subset of the grant's).
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings
            .scopes
            .extend(scopes.into_iter().map(Into::into));
        self.rebuilt()
    }

    /// Adds a form parameter to the token request.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.params.push((name.into(), value.into()));
        self.rebuilt()
    }
}

cached_grant!(
    RefreshToken,
    store: "Keeps tokens and the rotated refresh token in `store`.",
    key: "Names the tokens in the store (default: grant, token URL, client id, scopes, extra parameters and a one-way fingerprint of the initial refresh token).",
);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RefreshToken");
        self.settings.describe(&mut s);
        s.field("refresh_token", &"[REDACTED]")
            .field("key", &self.cache.key())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Store keys name tokens shared by replicas: a replica on this version must find the tokens
    /// that one on the previous version (SHA-256 through ring) stored, so the fingerprint is pinned
    /// to the SHA-256 test vector of "abc" (FIPS 180-2), whichever crate computes it.
    #[test]
    fn fingerprint_is_the_first_eight_bytes_of_sha256_in_hex() {
        assert_eq!(fingerprint(&SecretString::from("abc")), "ba7816bf8f01cfea");
    }
}
