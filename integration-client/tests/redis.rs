//! `store = "redis"` through the facade: two clients (two replicas) share one quota and one token,
//! against the machine's Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), isolated by a random
//! key prefix. Fails, never skips, when Redis is unreachable.

use std::time::Duration;

use integration_client::Client;
use integration_config::Config;
use integration_core::testing::redis_url;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(server: &MockServer, prefix: &str) -> Config {
    let text = format!(
        r#"
        [redis]
        url = "{redis}"
        key_prefix = "{prefix}"
        # Regression (load): with the default 50 ms, a Redis round trip that a loaded machine
        # made slower sent a replica to its fallback (a local token refresh, a local quota), and
        # the upstream saw a second token fetch. The fallbacks have tests of their own.
        command_timeout = "2s"

        [integrations.partner]
        base_url = "{uri}"
        retry = {{ max_attempts = 1 }}
        rate_limit = {{ quotas = [{{ rate = 1, per = "60s" }}], max_wait = "0s", store = "redis" }}

        [integrations.tokens]
        base_url = "{uri}"
        auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token", client_id = "app", client_secret = "s", store = "redis" }}
        "#,
        redis = redis_url(),
        uri = server.uri(),
    );
    Config::from_toml_str(&text).unwrap()
}

async fn connect(config: Config) -> Client {
    match Client::connect(config).await {
        Ok(client) => client,
        Err(error) => panic!(
            "Redis at {} is unreachable ({error:#}): start it or set REDIS_URL",
            redis_url()
        ),
    }
}

/// Deletes the keys this test created, all under its own `prefix` (never FLUSHDB: the instance is
/// shared). SCAN, not KEYS, so a large shared instance is not blocked.
async fn delete_keys_under(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // Every key of the prefix is hash-tagged: `{<prefix>:...}...`.
    let pattern = format!("{{{prefix}:*");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn replicas_share_the_quota_and_the_token_through_redis() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "shared", "token_type": "Bearer", "expires_in": 3600
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let prefix = format!("client-test-{}", uuid::Uuid::new_v4());
    let first = connect(config(&server, &prefix)).await;
    let second = connect(config(&server, &prefix)).await;

    let response = first
        .api("partner")
        .unwrap()
        .get("/a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The other replica finds the quota of 1 per minute spent.
    let error = second
        .api("partner")
        .unwrap()
        .get("/b")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_rate_limited(), "{error:#}");
    assert!(
        error
            .retry_after()
            .is_some_and(|wait| wait > Duration::from_secs(1))
    );
    assert_eq!(error.integration(), Some("partner"));

    // One token for both replicas: the second reads the first's from Redis (the mock expects one fetch).
    for client in [&first, &second] {
        let response = client
            .api("tokens")
            .unwrap()
            .get("/c")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let authorized = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/c")
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer shared")
        })
        .count();
    assert_eq!(authorized, 2);
    delete_keys_under(&prefix).await;
}

#[tokio::test]
async fn a_redis_store_without_a_connection_is_a_config_error() {
    let server = MockServer::start().await;
    let error = Client::from_config(config(&server, "unused")).unwrap_err();
    assert!(error.is_config());
    assert!(error.to_string().contains("rate_limit.store"), "{error}");
}
