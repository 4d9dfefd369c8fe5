//! No secret in the Debug output of any provider, credential, store or token.

mod common;

use std::sync::Arc;

use common::{token_url, transport};
use integration_auth::{
    ApiKey, AuthContext, AuthLayer, Basic, Bearer, ClientCredentials, Credential,
    CredentialProvider, FetchedToken, JwtAssertion, JwtBearerGrant, JwtClaims, JwtSigner,
    MemoryTokenStore, RefreshToken, StoredToken, TokenStore,
};
use secrecy::SecretString;
use tower::Layer;
use wiremock::MockServer;

const CLIENT_SECRET: &str = "cs-0123456789-secret";
const REFRESH: &str = "rt-0123456789-secret";
const ACCESS: &str = "at-0123456789-secret";
const API_KEY: &str = "ak-0123456789-secret";
const PASSWORD: &str = "pw-0123456789-secret";
const HMAC: &str = "hm-0123456789-secret-of-enough-length";
const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");

const SECRETS: &[&str] = &[CLIENT_SECRET, REFRESH, ACCESS, API_KEY, PASSWORD, HMAC];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks a secret: {text}");
    }
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("MII"),
        "{what} leaks the PEM: {text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_provider_credential_and_store_formats_without_a_secret() {
    let server = MockServer::start().await;
    let url = token_url(&server);
    let hmac = JwtSigner::hs256(&SecretString::from(HMAC));
    let rsa = JwtSigner::rs256_pem(&SecretString::from(RSA_PRIVATE)).unwrap();
    let store = MemoryTokenStore::new();
    store
        .save(
            "k",
            &StoredToken {
                id: 1,
                access_token: SecretString::from(ACCESS),
                token_type: "Bearer".into(),
                expires_in: None,
            },
        )
        .await
        .unwrap();
    store
        .save_refresh_token("k", &SecretString::from(REFRESH))
        .await
        .unwrap();
    let providers: Vec<Box<dyn CredentialProvider>> = vec![
        Box::new(ApiKey::new(SecretString::from(API_KEY))),
        Box::new(ApiKey::query("api_key", SecretString::from(API_KEY))),
        Box::new(Basic::new("user", SecretString::from(PASSWORD))),
        Box::new(Bearer::new(SecretString::from(ACCESS))),
        Box::new(
            ClientCredentials::new(
                url.clone(),
                "client-1",
                SecretString::from(CLIENT_SECRET),
                transport(),
            )
            .with_store(Arc::new(store.clone())),
        ),
        Box::new(
            RefreshToken::new(
                url.clone(),
                "client-1",
                SecretString::from(REFRESH),
                transport(),
            )
            .with_client_secret(SecretString::from(CLIENT_SECRET)),
        ),
        Box::new(JwtAssertion::new(hmac.clone(), JwtClaims::new("app"))),
        Box::new(JwtAssertion::new(rsa.clone(), JwtClaims::new("app")).per_request()),
        Box::new(JwtBearerGrant::new(
            url,
            rsa,
            JwtClaims::new("svc"),
            transport(),
        )),
    ];
    for provider in &providers {
        assert_clean("provider Debug", &format!("{provider:?} {provider:#?}"));
        if let Ok(credential) = provider.credential(&AuthContext::detached()).await {
            assert_clean("credential Debug", &format!("{credential:?}"));
        }
    }
    let layer = AuthLayer::new(Bearer::new(SecretString::from(ACCESS)));
    assert_clean("layer Debug", &format!("{layer:?}"));
    let service = layer.layer(tower::service_fn(|_: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let _ = &service;
    assert_clean(
        "credential Debug",
        &format!("{:?}", Credential::bearer(SecretString::from(ACCESS))),
    );
    assert_clean("signer Debug", &format!("{hmac:?}"));
    assert_clean("store Debug", &format!("{store:?}"));
    let loaded = store.load("k").await.unwrap().unwrap();
    assert_clean("stored token Debug", &format!("{loaded:?}"));
    let fetched = FetchedToken {
        access_token: SecretString::from(ACCESS),
        token_type: "Bearer".into(),
        expires_in: None,
    };
    assert_clean("fetched token Debug", &format!("{fetched:?}"));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "current_thread")]
async fn the_redis_store_and_its_errors_format_without_a_secret() {
    use integration_auth::RedisTokenStore;
    let url = integration_core::testing::redis_url();
    let redis = RedisTokenStore::connect(&url, "test-auth-debug")
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} (REDIS_URL) is unreachable: {e:#}"));
    assert_clean("redis store Debug", &format!("{redis:?}"));
    let bad = RedisTokenStore::connect("redis://:pw-0123456789-secret@", "x")
        .await
        .unwrap_err();
    assert_clean("redis connect error", &format!("{bad} {bad:?}"));
}
