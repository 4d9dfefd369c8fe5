//! Issue 14, part 3, through the facade: a 401 is replayed once, and only where the provider can
//! produce a different credential (OAuth, JWT); a static key, Basic or bearer is never replayed.

use std::time::Duration;

use integration_client::Client;
use integration_config::{Config, IntegrationConfig, IntegrationConfigBuilder, Secret};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An integration at `server` authenticated by `auth`, with fast retries and five attempts: room
/// for a replay.
fn client(
    server: &MockServer,
    auth: fn(IntegrationConfigBuilder) -> IntegrationConfigBuilder,
) -> Client {
    let mut config = auth(IntegrationConfig::builder(server.uri()))
        .build()
        .unwrap();
    config.retry.max_attempts = 5;
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    Client::builder().api("api", config).build().unwrap()
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
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "tok-2", "token_type": "Bearer", "expires_in": 3600
        })))
        .expect(1)
        .mount(&server)
        .await;
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
    let text = format!(
        r#"
        [integrations.shop]
        base_url = "{uri}"
        retry = {{ max_attempts = 5, base = "1ms", cap = "5ms" }}
        auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token", client_id = "app", client_secret = "s3cr3t" }}
        "#,
        uri = server.uri()
    );
    let client = Client::from_config(Config::from_toml_str(&text).unwrap()).unwrap();
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
