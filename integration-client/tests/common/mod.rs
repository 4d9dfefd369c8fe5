//! Setups shared by the facade's end-to-end test files: integrations with fast retries, and OAuth
//! client-credentials integrations against a wiremock token endpoint.

use std::time::Duration;

use integration_client::Client;
use integration_config::{Config, IntegrationConfig, IntegrationConfigBuilder};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An integration at `base_url`, configured by `auth` (any builder step), with fast retries.
pub(crate) fn fast_at(
    base_url: &str,
    auth: impl FnOnce(IntegrationConfigBuilder) -> IntegrationConfigBuilder,
) -> IntegrationConfig {
    let mut config = auth(IntegrationConfig::builder(base_url)).build().unwrap();
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    config.retry.throttle_base = Duration::from_millis(1);
    config.timeout = Duration::from_secs(10);
    config
}

/// A client with the one integration `name`.
pub(crate) fn client(name: &str, config: IntegrationConfig) -> Client {
    Client::builder().api(name, config).build().unwrap()
}

/// A token endpoint's answer handing out `token`, valid for an hour.
pub(crate) fn token_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": token, "token_type": "Bearer", "expires_in": 3600
    }))
}

/// An OAuth token endpoint at `/oauth/token` that hands out `token` (valid for an hour) and must be
/// asked exactly `expected` times.
pub(crate) async fn mount_token_endpoint(server: &MockServer, token: &str, expected: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer(token))
        .expect(expected)
        .mount(server)
        .await;
}

/// The first answer of the token endpoint at `/oauth/token`: `answer`, once (and it must be asked);
/// the endpoints mounted after it answer the later requests.
pub(crate) async fn mount_first_token_answer(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(answer)
        .up_to_n_times(1)
        .expect(1)
        .mount(server)
        .await;
}

/// A client with one integration `name` at `server`, authenticated by OAuth client credentials
/// against the server's `/oauth/token`; `extra` is more TOML of the integration's table (a retry
/// policy, say).
pub(crate) fn oauth_client(server: &MockServer, name: &str, extra: &str) -> Client {
    let text = format!(
        r#"
        [integrations.{name}]
        base_url = "{uri}"
        {extra}
        [integrations.{name}.auth]
        type = "oauth2_client_credentials"
        token_url = "{uri}/oauth/token"
        client_id = "app"
        client_secret = "s3cr3t"
        "#,
        uri = server.uri()
    );
    Client::from_config(Config::from_toml_str(&text).unwrap()).unwrap()
}
