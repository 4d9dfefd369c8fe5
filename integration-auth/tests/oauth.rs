//! OAuth providers against a wiremock token endpoint, through the layer in a plain ServiceBuilder.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Upstream, exact, get, oauth_error, rotated, token, token_url, transport};
use futures_util::future::join_all;
use integration_auth::{
    AuthLayer, ClientAuth, ClientCredentials, CredentialProvider, MemoryTokenStore, RefreshToken,
    StoreFuture, StoreLock, StoredToken, TokenStore,
};
use integration_core::error::AuthFailed;
use integration_core::ext::CredentialInvalidated;
use secrecy::{ExposeSecret, SecretString};
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer};

fn client_credentials(server: &MockServer) -> ClientCredentials {
    ClientCredentials::new(
        token_url(server),
        "client-1",
        SecretString::from("client-secret-value"),
        transport(),
    )
    .with_cache_config(exact())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_with_an_empty_cache_share_one_token_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-1", 3600).set_delay(Duration::from_millis(100)))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = Upstream::accepting(&["Bearer tok-1"]);
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(client_credentials(&server)))
        .service(upstream.service());

    let calls = (0..100).map(|_| {
        let service = service.clone();
        tokio::spawn(async move { service.oneshot(get()).await.unwrap() })
    });
    for response in join_all(calls).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), "Bearer tok-1");
    }
    assert_eq!(upstream.calls(), 100);
    server.verify().await;
}

/// Regression (load): with a token living 2 s on the real clock, "still fresh" failed when more
/// than 2 s passed between the first call and the second on a loaded machine. The token now lives
/// a minute and the clock is paused between the two cached calls, then advanced past the expiry:
/// no real time passes where freshness is asserted, and the refresh still goes over real sockets.
#[tokio::test]
async fn an_expired_token_is_refreshed_exactly_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-1", 60))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let provider = client_credentials(&server).with_cache_config(exact().with_skew(Duration::ZERO));
    let upstream = Upstream::default();
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream.service());

    let first = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.body(), "Bearer tok-1");
    // Still fresh: no token request (a cached call does no I/O, so the paused clock cannot move).
    tokio::time::pause();
    let again = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(again.body(), "Bearer tok-1");

    // Past the expiry; the clock runs again for the refresh (its timeout is on tokio's clock).
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    let calls = (0..20).map(|_| service.clone().oneshot(get()));
    for response in join_all(calls).await {
        assert_eq!(response.unwrap().body(), "Bearer tok-2");
    }
    server.verify().await;
}

/// A store that records the order of refresh-token writes, for the rotation test.
#[derive(Debug, Clone)]
struct RecordingStore {
    inner: MemoryTokenStore,
    events: Arc<Mutex<Vec<String>>>,
}

impl TokenStore for RecordingStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        self.inner.load(key)
    }
    fn save<'a>(&'a self, key: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        self.inner.save(key, token)
    }
    fn load_refresh_token<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SecretString>> {
        self.inner.load_refresh_token(key)
    }
    fn save_refresh_token<'a>(
        &'a self,
        key: &'a str,
        refresh_token: &'a SecretString,
    ) -> StoreFuture<'a, ()> {
        self.events
            .lock()
            .unwrap()
            .push(format!("saved {}", refresh_token.expose_secret()));
        self.inner.save_refresh_token(key, refresh_token)
    }
    fn try_lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<StoreLock>> {
        self.inner.try_lock(key, ttl)
    }
    fn unlock(&self, lock: StoreLock) -> StoreFuture<'_, ()> {
        self.inner.unlock(lock)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_persisted_before_use_and_the_old_one_is_never_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=refresh-1"))
        .respond_with(rotated("access-1", "refresh-2", 2))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("refresh_token=refresh-2"))
        .respond_with(rotated("access-2", "refresh-3", 3600))
        .expect(1)
        .mount(&server)
        .await;

    let events = Arc::new(Mutex::new(Vec::new()));
    let store = RecordingStore {
        inner: MemoryTokenStore::new(),
        events: Arc::clone(&events),
    };
    let provider = RefreshToken::new(
        token_url(&server),
        "client-1",
        SecretString::from("refresh-1"),
        transport(),
    )
    .with_store(Arc::new(store.clone()))
    .with_cache_config(exact().with_skew(Duration::ZERO));

    let upstream_events = Arc::clone(&events);
    let upstream = tower::service_fn(move |request: http::Request<String>| {
        let events = Arc::clone(&upstream_events);
        async move {
            let auth = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned();
            events.lock().unwrap().push(format!("used {auth}"));
            Ok::<_, std::convert::Infallible>(http::Response::new(auth))
        }
    });
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream);

    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().body(),
        "Bearer access-1"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().body(),
        "Bearer access-2"
    );

    assert_eq!(
        *events.lock().unwrap(),
        [
            "saved refresh-2",
            "used Bearer access-1",
            "saved refresh-3",
            "used Bearer access-2"
        ]
    );
    // The old refresh token went exactly once, and refresh-2 exactly once (the mocks' `expect(1)`).
    let requests = server.received_requests().await.unwrap();
    let sent_first = requests
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("refresh_token=refresh-1"))
        .count();
    assert_eq!(sent_first, 1);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_fails_without_retry_and_with_its_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(oauth_error(
            "invalid_grant",
            "refresh token refresh-secret-1 was revoked",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let provider = RefreshToken::new(
        token_url(&server),
        "client-1",
        SecretString::from("refresh-secret-1"),
        transport(),
    );
    let upstream = Upstream::default();
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream.service());

    let error = service.clone().oneshot(get()).await.unwrap_err();
    let failed = error.downcast_ref::<AuthFailed>().expect("an AuthFailed");
    assert!(failed.is_permanent());
    assert_eq!(failed.code(), Some("invalid_grant"));
    assert!(!failed.to_string().contains("refresh-secret-1"), "{failed}");
    let core = integration_core::Error::from(error);
    assert!(core.is_auth());

    // Within the cool-down the same answer comes back at once, without another token request.
    let error = service.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<AuthFailed>().unwrap().code(),
        Some("invalid_grant")
    );
    assert_eq!(upstream.calls(), 0, "nothing is sent without a credential");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_is_final_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(oauth_error(
            "invalid_client",
            "client authentication failed",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(client_credentials(&server)))
        .service(Upstream::default().service());
    let error = service.oneshot(get()).await.unwrap_err();
    let failed = error.downcast_ref::<AuthFailed>().unwrap();
    assert!(failed.is_permanent());
    assert_eq!(failed.code(), Some("invalid_client"));
    server.verify().await;
}

async fn two_tokens(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-1", 3600))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .with_priority(2)
        .mount(server)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_triggers_one_refresh_and_one_replay() {
    let server = MockServer::start().await;
    two_tokens(&server).await;
    let upstream = Upstream::accepting(&["Bearer tok-2"]);
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(client_credentials(&server)))
        .service(upstream.service());

    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "Bearer tok-2");
    assert!(
        response
            .extensions()
            .get::<CredentialInvalidated>()
            .is_none()
    );
    assert_eq!(
        *upstream.seen.lock().unwrap(),
        ["Bearer tok-1", "Bearer tok-2"]
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_the_replay_is_final() {
    let server = MockServer::start().await;
    two_tokens(&server).await;
    let upstream = Upstream::accepting(&["Bearer never"]);
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(client_credentials(&server)))
        .service(upstream.service());
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(upstream.calls(), 2, "exactly one replay");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replay_a_401_is_marked_for_the_retry_layer() {
    let server = MockServer::start().await;
    two_tokens(&server).await;
    let upstream = Upstream::accepting(&["Bearer tok-2"]);
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(client_credentials(&server)).replay_on_unauthorized(false))
        .service(upstream.service());

    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .extensions()
            .get::<CredentialInvalidated>()
            .is_some()
    );
    // What the retry layer's replay sees: a fresh token.
    let replay = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(upstream.calls(), 2);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_for_one_token_cause_one_refresh() {
    let server = MockServer::start().await;
    two_tokens(&server).await;
    let provider = client_credentials(&server);
    // tok-1 is cached before the calls start, so all 20 carry it.
    let warm = provider
        .credential(&integration_auth::AuthContext::detached())
        .await
        .unwrap();
    // A slow upstream that refuses tok-1: all 20 are in flight before the first 401 comes back.
    let upstream = tower::service_fn(|request: http::Request<String>| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let auth = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        let status = if auth == "Bearer tok-2" { 200 } else { 401 };
        Ok::<_, std::convert::Infallible>(
            http::Response::builder().status(status).body(auth).unwrap(),
        )
    });
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream);
    let calls = (0..20).map(|_| service.clone().oneshot(get()));
    for response in join_all(calls).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), "Bearer tok-2");
    }
    drop(warm);
    // One token request for tok-1, one refresh for tok-2: `expect(1)` on each.
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_send_scopes_audience_and_basic_client_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(header(
            "authorization",
            "Basic Y2xpZW50LTE6Y2xpZW50LXNlY3JldC12YWx1ZQ==",
        ))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("scope=read+write"))
        .and(body_string_contains(
            "audience=https%3A%2F%2Fapi.example.com",
        ))
        .and(body_string_contains("resource=urn%3Aapi"))
        .respond_with(token("tok-1", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let provider = client_credentials(&server)
        .with_scopes(["read", "write"])
        .with_audience("https://api.example.com")
        .with_resource("urn:api");
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(Upstream::default().service());
    assert_eq!(service.oneshot(get()).await.unwrap().status(), 200);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_can_authenticate_in_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("client_id=client-1"))
        .and(body_string_contains("client_secret=client-secret-value"))
        .respond_with(token("tok-1", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let provider = client_credentials(&server).with_client_auth(ClientAuth::RequestBody);
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(Upstream::default().service());
    assert_eq!(service.oneshot(get()).await.unwrap().status(), 200);
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_is_a_transient_auth_failure() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = integration_auth::Url::parse(&format!("http://127.0.0.1:{port}/token")).unwrap();
    let provider = ClientCredentials::new(
        url,
        "client-1",
        SecretString::from("client-secret-value"),
        transport(),
    );
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(Upstream::default().service());
    let error = service.oneshot(get()).await.unwrap_err();
    let failed = error.downcast_ref::<AuthFailed>().unwrap();
    assert!(!failed.is_permanent());
    assert!(failed.to_string().contains("unreachable"), "{failed}");
}
