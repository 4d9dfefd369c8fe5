//! JWT providers through `jsonwebtoken`: a self-signed assertion presented as the bearer token
//! ([`JwtAssertion`], GitHub App style) and the RFC 7523 JWT bearer grant ([`JwtBearerGrant`],
//! service-account style).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_core::error::AuthFailed;
use integration_core::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::TokenResponse as _;
use oauth2::basic::{BasicErrorResponse, BasicTokenResponse};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

use crate::cache::{FetchFuture, FetchedToken, TokenCache, TokenCacheConfig, TokenSource};
use crate::credential::{AuthContext, Credential, CredentialFuture, CredentialProvider};
use crate::error::{endpoint, sanitize, token_error};
use crate::oauth::CacheSetup;
use crate::store::TokenStore;
use crate::transport::TokenTransport;

/// A private key (RSA, EC, Ed25519) or shared secret (HMAC) that signs JWTs: [`JwtSigner::new`] for
/// every algorithm, the `hs256`/`rs256_pem`/`es256_pem` shorthands for the common ones.
///
/// # Clone
///
/// Clones share the key.
///
/// ```
/// use integration_auth::JwtSigner;
/// use secrecy::SecretString;
///
/// let signer = JwtSigner::hs256(&SecretString::from("a shared secret of enough length"));
/// assert_eq!(signer.algorithm(), jsonwebtoken::Algorithm::HS256);
/// assert!(JwtSigner::rs256_pem(&SecretString::from("not a key")).is_err());
/// ```
#[derive(Clone)]
pub struct JwtSigner {
    key: Arc<EncodingKey>,
    algorithm: Algorithm,
    key_id: Option<String>,
}

fn invalid_key(what: &'static str) -> Error {
    // Never the key or the parser's message (it may quote the input).
    Error::new(ErrorKind::Config).with_message(what)
}

impl JwtSigner {
    /// RS256 with an RSA private key in PEM (PKCS#1 or PKCS#8).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the PEM is not an RSA private key.
    pub fn rs256_pem(pem: &SecretString) -> Result<Self, Error> {
        let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
            .map_err(|_| invalid_key("invalid RS256 key: expected an RSA private key in PEM"))?;
        Ok(Self::from_key(key, Algorithm::RS256))
    }

    /// ES256 with a P-256 private key in PEM (PKCS#8).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the PEM is not an EC private key.
    pub fn es256_pem(pem: &SecretString) -> Result<Self, Error> {
        let key = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes()).map_err(|_| {
            invalid_key("invalid ES256 key: expected a P-256 private key in PKCS#8 PEM")
        })?;
        Ok(Self::from_key(key, Algorithm::ES256))
    }

    /// A signer for any algorithm jsonwebtoken's `rust_crypto` backend signs with: `key` is the
    /// shared secret for HS256/384/512, an RSA private key in PEM (PKCS#1 or PKCS#8) for
    /// RS256/384/512 and PS256/384/512, an EC private key in PKCS#8 PEM for ES256 (P-256) and
    /// ES384 (P-384), an Ed25519 private key in PKCS#8 PEM for EdDSA.
    ///
    /// ```
    /// use integration_auth::JwtSigner;
    /// use jsonwebtoken::Algorithm;
    /// use secrecy::SecretString;
    ///
    /// let secret = SecretString::from("a shared secret of enough length");
    /// let signer = JwtSigner::new(Algorithm::HS512, &secret).unwrap();
    /// assert_eq!(signer.algorithm(), Algorithm::HS512);
    /// // A key of the wrong family is refused without quoting it.
    /// let error = JwtSigner::new(Algorithm::EdDSA, &secret).unwrap_err();
    /// assert!(!error.to_string().contains("shared secret"));
    /// ```
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the key is not one of the algorithm's family.
    pub fn new(algorithm: Algorithm, key: &SecretString) -> Result<Self, Error> {
        use Algorithm::{
            ES256, ES384, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512,
        };
        let pem = key.expose_secret().as_bytes();
        let key = match algorithm {
            HS256 | HS384 | HS512 => Ok(EncodingKey::from_secret(pem)),
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(pem)
                .map_err(|_| invalid_key("invalid key: expected an RSA private key in PEM")),
            ES256 | ES384 => EncodingKey::from_ec_pem(pem).map_err(|_| {
                invalid_key(
                    "invalid key: expected an EC private key (P-256 or P-384) in PKCS#8 PEM",
                )
            }),
            EdDSA => EncodingKey::from_ed_pem(pem).map_err(|_| {
                invalid_key("invalid key: expected an Ed25519 private key in PKCS#8 PEM")
            }),
            // `Algorithm` is non-exhaustive: one added later is refused until it is wired here.
            _ => Err(invalid_key("this JWT algorithm is not supported")),
        }?;
        Ok(Self::from_key(key, algorithm))
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &SecretString) -> Self {
        Self::from_key(
            EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            Algorithm::HS256,
        )
    }

    fn from_key(key: EncodingKey, algorithm: Algorithm) -> Self {
        Self {
            key: Arc::new(key),
            algorithm,
            key_id: None,
        }
    }

    /// Names the key in the JWT header (`kid`).
    #[must_use]
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `claims` issued now: `iat` (backdated), `exp`, a unique `jti`, and the configured `iss`,
    /// `sub`, `aud` and extra claims. `default_audience` is used when the claims name none.
    ///
    /// # Errors
    ///
    /// [`AuthFailed`] (transient) if signing fails.
    pub fn sign(
        &self,
        claims: &JwtClaims,
        default_audience: Option<&str>,
    ) -> Result<SecretString, AuthFailed> {
        let now = unix_now();
        let mut map = claims.extra.clone();
        map.insert("iss".into(), Value::from(claims.issuer.clone()));
        if let Some(subject) = &claims.subject {
            map.insert("sub".into(), Value::from(subject.clone()));
        }
        if let Some(audience) = claims.audience.as_deref().or(default_audience) {
            map.insert("aud".into(), Value::from(audience));
        }
        map.insert(
            "iat".into(),
            Value::from(now.saturating_sub(claims.backdate.as_secs())),
        );
        map.insert(
            "exp".into(),
            Value::from(now.saturating_add(claims.lifetime.as_secs())),
        );
        map.insert("jti".into(), Value::from(uuid::Uuid::new_v4().to_string()));
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.key_id);
        jsonwebtoken::encode(&header, &map, &self.key)
            .map(SecretString::from)
            .map_err(|_| AuthFailed::transient("signing the JWT failed"))
    }
}

#[allow(clippy::disallowed_methods)] // JWT `iat`/`exp` are wall-clock dates (RFC 7519 NumericDate).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The claims of a signed assertion. `iat`, `exp` and `jti` are set at signing.
///
/// ```
/// use integration_auth::JwtClaims;
/// use std::time::Duration;
///
/// // A GitHub App: the app id as issuer, at most 10 minutes.
/// let claims = JwtClaims::new("123456").with_lifetime(Duration::from_secs(540));
/// assert_eq!(claims.lifetime(), Duration::from_secs(540));
/// ```
#[derive(Debug, Clone)]
pub struct JwtClaims {
    issuer: String,
    subject: Option<String>,
    audience: Option<String>,
    lifetime: Duration,
    backdate: Duration,
    extra: Map<String, Value>,
}

impl JwtClaims {
    /// Claims issued by `issuer`, valid 5 minutes, `iat` backdated 60 s against clock drift (as GitHub
    /// recommends).
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            subject: None,
            audience: None,
            lifetime: Duration::from_secs(300),
            backdate: Duration::from_secs(60),
            extra: Map::new(),
        }
    }

    /// The `sub` claim.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The `aud` claim (for the bearer grant it defaults to the token URL).
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How long each assertion is valid (`exp - now`).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How far `iat` is set in the past.
    #[must_use]
    pub fn with_backdate(mut self, backdate: Duration) -> Self {
        self.backdate = backdate;
        self
    }

    /// Another claim (Google's `scope`, say). The registered claims above win over these.
    #[must_use]
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// The lifetime of each assertion.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

#[derive(Debug, Clone)]
struct AssertionSource {
    signer: JwtSigner,
    claims: JwtClaims,
}

impl TokenSource for AssertionSource {
    fn fetch<'a>(&'a self, _store: &'a dyn TokenStore, _key: &'a str) -> FetchFuture<'a> {
        let result = self
            .signer
            .sign(&self.claims, None)
            .map(|jwt| FetchedToken {
                access_token: jwt,
                token_type: "Bearer".to_owned(),
                expires_in: Some(self.claims.lifetime),
            });
        Box::pin(std::future::ready(result))
    }
}

/// A self-signed JWT as the bearer token (GitHub App style): signed per request, or cached until near
/// its expiry (the default).
///
/// # Clone
///
/// Clones share the cache.
///
/// ```
/// use integration_auth::{AuthContext, CredentialProvider, JwtAssertion, JwtClaims, JwtSigner};
/// use secrecy::SecretString;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let signer = JwtSigner::hs256(&SecretString::from("a shared secret of enough length"));
/// let provider = JwtAssertion::new(signer, JwtClaims::new("my-app").with_audience("api"));
/// let credential = provider.credential(&AuthContext::detached()).await.unwrap();
/// let mut request = http::Request::new(());
/// credential.apply(&mut request).unwrap();
/// assert!(request.headers()["authorization"].to_str().unwrap().starts_with("Bearer ey"));
/// # }
/// ```
#[derive(Clone)]
pub struct JwtAssertion {
    source: AssertionSource,
    cache: Option<TokenCache>,
}

impl JwtAssertion {
    /// Assertions signed by `signer` with `claims`, cached until near expiry (in memory).
    pub fn new(signer: JwtSigner, claims: JwtClaims) -> Self {
        let source = AssertionSource { signer, claims };
        let cache = Self::cache_for(&source, TokenCacheConfig::default());
        Self {
            source,
            cache: Some(cache),
        }
    }

    fn cache_for(source: &AssertionSource, config: TokenCacheConfig) -> TokenCache {
        let key = format!("jwt_assertion:{}", source.claims.issuer);
        CacheSetup {
            config,
            ..CacheSetup::new()
        }
        .build(source.clone(), key)
    }

    /// A fresh assertion (new `jti`, `iat`) for every request.
    #[must_use]
    pub fn per_request(mut self) -> Self {
        self.cache = None;
        self
    }

    /// Cached assertions with this cache behaviour.
    #[must_use]
    pub fn with_cache_config(mut self, config: TokenCacheConfig) -> Self {
        self.cache = Some(Self::cache_for(&self.source, config));
        self
    }
}

impl CredentialProvider for JwtAssertion {
    fn credential(&self, ctx: &AuthContext<'_>) -> CredentialFuture {
        match &self.cache {
            Some(cache) => cache.get(ctx),
            None => CredentialFuture::ready(
                self.source
                    .signer
                    .sign(&self.source.claims, None)
                    .map(Credential::bearer)
                    .map_err(Into::into),
            ),
        }
    }

    fn invalidate(&self, rejected: &Credential) {
        if let Some(cache) = &self.cache {
            cache.invalidate(rejected);
        }
    }

    /// A new assertion (new `jti`, `iat`) is signed after a rejection: a 401 is worth one replay.
    fn can_renew(&self) -> bool {
        true
    }
}

impl fmt::Debug for JwtAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAssertion")
            .field("signer", &self.source.signer)
            .field("claims", &self.source.claims)
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

/// The grant type of RFC 7523 §2.1.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Debug, Clone)]
struct BearerGrantSource {
    token_url: Url,
    signer: JwtSigner,
    claims: JwtClaims,
    scopes: Vec<String>,
    params: Vec<(String, String)>,
    transport: TokenTransport,
}

impl BearerGrantSource {
    async fn exchange(&self) -> Result<FetchedToken, AuthFailed> {
        let assertion = self
            .signer
            .sign(&self.claims, Some(self.token_url.as_str()))?;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", JWT_BEARER_GRANT);
            form.append_pair("assertion", assertion.expose_secret());
            if !self.scopes.is_empty() {
                form.append_pair("scope", &self.scopes.join(" "));
            }
            for (name, value) in &self.params {
                form.append_pair(name, value);
            }
            form.finish()
        };
        let request = http::Request::post(self.token_url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(form.into_bytes())
            .map_err(|_| AuthFailed::transient("the token request could not be built"))?;
        let secrets = [&assertion];
        // Every failure from here on is the token endpoint's: the error names it.
        let at = |error: AuthFailed| error.with_endpoint(endpoint(&self.token_url));
        let response = self.transport.send(request).await.map_err(|error| {
            at(AuthFailed::transient(format!(
                "token endpoint unreachable: {}",
                sanitize(&error.to_string(), &secrets)
            )))
        })?;
        let status = response.status();
        if status.is_success() {
            let token: BasicTokenResponse =
                serde_json::from_slice(response.body()).map_err(|_| {
                    at(AuthFailed::transient(
                        "token endpoint answered with an unreadable response",
                    ))
                })?;
            return Ok(FetchedToken {
                access_token: SecretString::from(token.access_token().secret().clone()),
                token_type: token.token_type().as_ref().to_owned(),
                expires_in: token.expires_in(),
            });
        }
        match serde_json::from_slice::<BasicErrorResponse>(response.body()) {
            Ok(error) => Err(at(token_error(
                error.error().as_ref(),
                error.error_description().map(String::as_str),
                &secrets,
            ))),
            Err(_) => Err(at(AuthFailed::transient(format!(
                "token endpoint answered {status}"
            )))),
        }
    }
}

impl TokenSource for BearerGrantSource {
    fn fetch<'a>(&'a self, _store: &'a dyn TokenStore, _key: &'a str) -> FetchFuture<'a> {
        Box::pin(self.exchange())
    }
}

/// The JWT bearer grant (RFC 7523 §2.1, service-account style): a signed assertion exchanged at a
/// token endpoint for an access token, cached and refreshed once for everyone.
///
/// The assertion's `aud` defaults to the token URL.
///
/// # Clone
///
/// Clones share one token cache. Configure with the `with_*` methods first.
///
/// ```
/// use integration_auth::{JwtBearerGrant, JwtClaims, JwtSigner, TokenTransport, Url};
/// use secrecy::SecretString;
///
/// # let transport = TokenTransport::from_fn(|_| async { Err("offline".into()) });
/// let signer = JwtSigner::hs256(&SecretString::from("a shared secret of enough length"));
/// let claims = JwtClaims::new("svc@project.example").with_claim("scope", "read");
/// let provider = JwtBearerGrant::new(
///     Url::parse("https://oauth2.example.com/token").unwrap(),
///     signer,
///     claims,
///     transport,
/// );
/// # let _ = provider;
/// ```
#[derive(Clone)]
pub struct JwtBearerGrant {
    source: BearerGrantSource,
    setup: CacheSetup,
    cache: TokenCache,
}

impl JwtBearerGrant {
    /// Assertions signed by `signer` with `claims`, exchanged at `token_url` through `transport`.
    pub fn new(
        token_url: Url,
        signer: JwtSigner,
        claims: JwtClaims,
        transport: TokenTransport,
    ) -> Self {
        let source = BearerGrantSource {
            token_url,
            signer,
            claims,
            scopes: Vec::new(),
            params: Vec::new(),
            transport,
        };
        let setup = CacheSetup::new();
        let cache = Self::build(&source, &setup);
        Self {
            source,
            setup,
            cache,
        }
    }

    fn build(source: &BearerGrantSource, setup: &CacheSetup) -> TokenCache {
        // Everything that shapes the token: with domain-wide delegation the subject is the user the
        // service account acts for, and two subjects must never share a token.
        let key = format!(
            "jwt_bearer:{}:{}:{}:{}:{}:{}",
            source.token_url,
            source.claims.issuer,
            source.claims.subject.as_deref().unwrap_or(""),
            source.claims.audience.as_deref().unwrap_or(""),
            source.scopes.join(" "),
            crate::oauth::params_key(&source.params)
        );
        setup.build(source.clone(), key)
    }

    fn rebuilt(mut self) -> Self {
        self.cache = Self::build(&self.source, &self.setup);
        self
    }

    /// Requests these scopes (the `scope` form parameter).
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.source
            .scopes
            .extend(scopes.into_iter().map(Into::into));
        self.rebuilt()
    }

    /// Adds a form parameter to the token request.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.source.params.push((name.into(), value.into()));
        self.rebuilt()
    }
}

cached_grant!(
    JwtBearerGrant,
    store: "Keeps tokens in `store` (Redis: shared by every replica).",
    key: "Names the token in the store (default: token URL, issuer, subject, audience, scopes and extra parameters).",
);

impl fmt::Debug for JwtBearerGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBearerGrant")
            .field("token_url", &self.source.token_url.as_str())
            .field("signer", &self.source.signer)
            .field("claims", &self.source.claims)
            .field("scopes", &self.source.scopes)
            .field("key", &self.cache.key())
            .finish()
    }
}
