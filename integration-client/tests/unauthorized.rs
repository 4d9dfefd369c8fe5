//! Issue 14, part 3, through the facade: a 401 is replayed once, and only where the provider can
//! produce a different credential (OAuth, JWT); a static key, Basic or bearer is never replayed.

mod common;

use common::{fast_at, mount_first_token_answer, mount_token_endpoint, oauth_client, token_answer};
use integration_client::Client;
use integration_config::{IntegrationConfigBuilder, Secret};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An integration at `server` authenticated by `auth`, with fast retries and five attempts: room
/// for a replay.
fn client(
    server: &MockServer,
    auth: fn(IntegrationConfigBuilder) -> IntegrationConfigBuilder,
) -> Client {
    let mut config = fast_at(&server.uri(), auth);
    config.retry.max_attempts = 5;
    common::client("api", config)
}

/// Regression (issue 14, part 3): with Basic, a static bearer or an API key, a 401 was replayed once
/// with the same credential: a POST without an idempotency key reached the server twice. The server
/// must see one request, and the caller gets the 401.
#[tokio::test]
async fn regression_a_static_credential_is_never_replayed_on_401() {
    type Auth = fn(IntegrationConfigBuilder) -> IntegrationConfigBuilder;
    let schemes: [(&str, Auth); 4] = [
        ("basic", |b| b.basic("user", Secret::new("pw"))),
        ("bearer", |b| b.bearer(Secret::new("tok"))),
        ("api key header", |b| {
            b.api_key_header("X-Passphrase", Secret::new("k-123"))
        }),
        ("api key query", |b| {
            b.api_key_query("appid", Secret::new("k-123"))
        }),
    ];
    for (scheme, auth) in schemes {
        for verb in ["POST", "GET"] {
            let server = MockServer::start().await;
            Mock::given(method(verb))
                .and(path("/orders"))
                .respond_with(ResponseTemplate::new(401))
                .expect(1)
                .named(format!("{scheme} {verb}"))
                .mount(&server)
                .await;
            let api = client(&server, auth);
            let api = api.api("api").unwrap();
            let request = match verb {
                "POST" => api.post("/orders").body("{}"),
                _ => api.get("/orders"),
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{scheme} {verb}");
            assert_eq!(response.attempts(), 1, "{scheme} {verb}");
            let error = response.error_for_status().unwrap_err();
            assert_eq!(error.status(), Some(http::StatusCode::UNAUTHORIZED));
            server.verify().await;
        }
    }
}

/// OAuth can produce a different credential: the 401 invalidates the token, a new one is fetched,
/// and the request (a POST without an idempotency key: the 401 came before the upstream acted on it)
/// is replayed exactly once, with the new token.
#[tokio::test]
async fn oauth_replays_a_401_once_with_a_new_token() {
    let server = MockServer::start().await;
    mount_first_token_answer(&server, token_answer("tok-1")).await;
    mount_token_endpoint(&server, "tok-2", 1).await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let client = oauth_client(
        &server,
        "shop",
        r#"retry = { max_attempts = 5, base = "1ms", cap = "5ms" }"#,
    );
    let response = client
        .api("shop")
        .unwrap()
        .post("/orders")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.attempts(), 2);
    server.verify().await;
}
