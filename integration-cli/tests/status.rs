//! `integration status` end to end: a call through the binary leaves a server pause and a token in
//! the real Redis (under a key prefix of the test's own); status shows both, never the token.

mod common;

use common::{cli, file};
use integration_core::testing::{delete_prefixed, redis_url};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "at-9d2e-status-never-prints-this";
const CLIENT_SECRET: &str = "cs-77aa-never-print";

/// Removes a test's keys from the shared Redis (never FLUSHDB: others use it too).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_shared_pause_and_the_cached_token_never_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/busy"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let prefix = format!("cli-status-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let config = file(
        dir.path(),
        "config.toml",
        &format!(
            r#"
            [redis]
            url = "{redis}"
            key_prefix = "{prefix}"

            [integrations.crm]
            base_url = "{uri}"
            retry = {{ max_attempts = 1 }}
            rate_limit = {{ store = "redis", quotas = [{{ rate = 50, per = "1s" }}] }}
            auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token", client_id = "app", client_secret = "${{env:CLI_TEST_CLIENT_SECRET}}", store = "redis" }}

            [integrations.plain]
            base_url = "{uri}"
            "#,
            redis = redis_url(),
            uri = server.uri(),
        ),
    );
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config]);
        cli(all).env("CLI_TEST_CLIENT_SECRET", CLIENT_SECRET)
    };

    // Before any call: nothing shared yet.
    let before = run(&["status", "crm", "--json"])
        .run()
        .await
        .expect_code(0)
        .json();
    assert_eq!(before[0]["token"]["cached"], false);
    assert_eq!(before[0]["rate_limit"]["pause_ms"], serde_json::Value::Null);

    // A call that fetches a token and meets a 429 with Retry-After: 120.
    let called = run(&["call", "crm", "GET", "/v1/busy", "-v"])
        .run()
        .await
        .expect_code(4);
    assert!(
        called.stderr.contains("token refreshed"),
        "the fetch is shown: {}",
        called.stderr
    );
    called.assert_hides(TOKEN);
    called.assert_hides(CLIENT_SECRET);

    let status = run(&["status", "--json"]).run().await.expect_code(0);
    status.assert_hides(TOKEN);
    status.assert_hides(CLIENT_SECRET);
    let all = status.json();
    let crm = &all[0];
    assert_eq!(crm["name"], "crm");
    assert_eq!(crm["rate_limit"]["store"], "redis");
    let pause = crm["rate_limit"]["pause_ms"].as_u64().expect("a pause");
    assert!(pause > 60_000 && pause <= 120_000, "{pause}");
    assert_eq!(crm["rate_limit"]["pause_status"], 429);
    assert_eq!(crm["token"]["store"], "redis");
    assert_eq!(crm["token"]["cached"], true);
    let left = crm["token"]["expires_in_ms"].as_u64().expect("an expiry");
    assert!(left > 3_000_000 && left <= 3_600_000, "{left}");
    assert_eq!(crm["breaker"], "per process");
    assert_eq!(all[1]["name"], "plain");
    assert_eq!(all[1]["rate_limit"]["store"], "memory");
    assert_eq!(all[1]["token"]["store"], "none");

    let table = run(&["status"]).run().await.expect_code(0);
    table.assert_hides(TOKEN);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", table.stdout);
    assert!(
        lines[1].starts_with("crm") && lines[1].contains("(429)"),
        "{}",
        table.stdout
    );
    assert!(lines[1].contains("cached, expires in "), "{}", table.stdout);
    // Aligned: each column starts at the same offset on every line.
    let column = lines[0].find("SERVER PAUSE").unwrap();
    assert_eq!(lines[1].len() - lines[1][column..].len(), column);
    assert!(lines[2][column..].starts_with('-'), "{}", table.stdout);

    run(&["status", "nope"]).run().await.expect_code(3);
    // Redis unreachable: exit 9.
    run(&["status", "--redis-url", "redis://127.0.0.1:1"])
        .run()
        .await
        .expect_code(9);
    server.verify().await;
    delete_prefixed(&prefix).await;
}
