//! Regression: providers that share a token store (Redis, across integrations of one client) must not
//! share a token unless they would fetch the same one. The default store keys left out what shapes a
//! token: the refresh token (one user's grant), the JWT bearer grant's subject (the user a service
//! account acts for) and audience, and the extra parameters (`audience`, `resource`). Two tenants of one
//! OAuth client then got each other's access tokens.
//!
//! Each test: the token endpoint answers `tok-1` to the first request and `tok-2` to the second; two
//! providers that differ only in one of those settings, on one store, must fetch one token each.

mod common;

use std::sync::Arc;

use common::{Upstream, exact, token, token_url, transport};
use integration_auth::{
    AuthLayer, ClientCredentials, CredentialProvider, JwtBearerGrant, JwtClaims, JwtSigner,
    MemoryTokenStore, RefreshToken, TokenStore,
};
use secrecy::SecretString;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

/// `tok-1`, then `tok-2`, each exactly once.
async fn two_tokens() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-1", 3600))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    server
}

async fn authorization(provider: impl CredentialProvider + 'static) -> String {
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(Upstream::default().service());
    service.oneshot(common::get()).await.unwrap().into_body()
}

fn shared_store() -> Arc<dyn TokenStore> {
    Arc::new(MemoryTokenStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refresh_tokens_of_one_client_never_share_an_access_token() {
    let server = two_tokens().await;
    let store = shared_store();
    let user = |refresh: &str| {
        RefreshToken::new(
            token_url(&server),
            "shared-client",
            SecretString::from(refresh.to_owned()),
            transport(),
        )
        .with_store(Arc::clone(&store))
        .with_cache_config(exact())
    };
    assert_eq!(authorization(user("rt-tenant-a")).await, "Bearer tok-1");
    assert_eq!(authorization(user("rt-tenant-b")).await, "Bearer tok-2");
    // The same refresh token (another replica of tenant a) does share: no third request.
    assert_eq!(authorization(user("rt-tenant-a")).await, "Bearer tok-1");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_for_two_audiences_never_share_a_token() {
    let server = two_tokens().await;
    let store = shared_store();
    let api = |audience: &str| {
        ClientCredentials::new(
            token_url(&server),
            "shared-client",
            SecretString::from("client-secret-value"),
            transport(),
        )
        .with_audience(audience)
        .with_store(Arc::clone(&store))
        .with_cache_config(exact())
    };
    assert_eq!(
        authorization(api("https://orders.example")).await,
        "Bearer tok-1"
    );
    assert_eq!(
        authorization(api("https://billing.example")).await,
        "Bearer tok-2"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_grants_for_two_subjects_never_share_a_token() {
    let server = two_tokens().await;
    let store = shared_store();
    let acting_for = |subject: &str| {
        JwtBearerGrant::new(
            token_url(&server),
            JwtSigner::hs256(&SecretString::from("an-hmac-secret-of-some-length")),
            JwtClaims::new("service-account@example.iam").with_subject(subject.to_owned()),
            transport(),
        )
        .with_store(Arc::clone(&store))
        .with_cache_config(exact())
    };
    assert_eq!(
        authorization(acting_for("alice@example.com")).await,
        "Bearer tok-1"
    );
    assert_eq!(
        authorization(acting_for("bob@example.com")).await,
        "Bearer tok-2"
    );
    server.verify().await;
}

/// The fingerprint in the key is one-way: the refresh token itself appears nowhere in the store's key
/// (keys are logged and visible to anyone who can list Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_never_appears_in_its_store_key() {
    let server = MockServer::start().await;
    let provider = RefreshToken::new(
        token_url(&server),
        "shared-client",
        SecretString::from("rt-very-secret-value"),
        transport(),
    );
    let printed = format!("{provider:?}");
    assert!(printed.contains("refresh_token:"), "{printed}");
    assert!(!printed.contains("rt-very-secret-value"), "{printed}");
}
