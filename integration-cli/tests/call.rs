//! `integration call` end to end: the binary against a loopback fake API (wiremock).

mod common;

use common::{cli, file};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "tok-3b1f9c-never-print-me";

/// A configuration with one integration, `api`, at `base_url`, its bearer token from the
/// environment (`CLI_TEST_TOKEN`).
fn config(dir: &tempfile::TempDir, base_url: &str, extra: &str) -> String {
    let text = format!(
        r#"
        [integrations.api]
        base_url = "{base_url}"
        auth = {{ type = "bearer", token = "${{env:CLI_TEST_TOKEN}}" }}
        {extra}
        "#
    );
    file(dir.path(), "config.toml", &text)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_call_prints_the_body_and_exits_0_and_verbose_never_prints_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/items"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"items": [1, 2]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, &server.uri(), "");
    let run = cli(["call", "api", "GET", "/v1/items", "-v", "--config", &config])
        .env("CLI_TEST_TOKEN", SECRET)
        .run()
        .await
        .expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"items":[1,2]}"#);
    assert!(run.stderr.contains("> attempt 1: GET"), "{}", run.stderr);
    assert!(
        run.stderr.contains("< attempt 1: 200 OK in "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Bearer [REDACTED]"),
        "the request's headers, redacted: {}",
        run.stderr
    );
    run.assert_hides(SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_shows_each_attempt_why_it_retried_and_the_throttle_signal_read() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("done"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, &server.uri(), "retry = { max_attempts = 3 }");
    let run = cli(["call", "api", "get", "/x", "--verbose", "--config", &config])
        .env("CLI_TEST_TOKEN", SECRET)
        .run()
        .await
        .expect_code(0);
    assert_eq!(run.stdout, "done\n");
    let stderr = &run.stderr;
    assert!(
        stderr.contains("< attempt 1: 429 Too Many Requests"),
        "{stderr}"
    );
    assert!(
        stderr.contains("server throttle signal"),
        "the signal read: {stderr}"
    );
    assert!(stderr.contains("retrying"), "the retry decision: {stderr}");
    assert!(stderr.contains("reason=throttled"), "why: {stderr}");
    assert!(stderr.contains("< attempt 2: 200 OK"), "{stderr}");
    assert!(stderr.contains("= 200 OK after 2 attempt(s)"), "{stderr}");
    run.assert_hides(SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_carries_status_attempts_redacted_headers_body_and_the_trace() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(body_json(serde_json::json!({"amount": 5})))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("set-cookie", format!("session={SECRET}").as_str())
                .set_body_json(serde_json::json!({"id": "ch_1"})),
        )
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, &server.uri(), "");
    let body = file(dir.path(), "body.json", r#"{"amount": 5}"#);
    let run = cli([
        "call",
        "api",
        "POST",
        "/v1/charges",
        "-d",
        &format!("@{}", body.display()),
        "--json",
        "-v",
        "--config",
        &config,
    ])
    .env("CLI_TEST_TOKEN", SECRET)
    .run()
    .await
    .expect_code(0);
    let out = run.json();
    assert_eq!(out["status"], 201);
    assert_eq!(out["attempts"], 1);
    assert_eq!(out["body"]["id"], "ch_1");
    assert_eq!(out["headers"]["set-cookie"], "[REDACTED]");
    let events: Vec<&str> = out["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        events.contains(&"attempt") && events.contains(&"attempt_end"),
        "{events:?}"
    );
    run.assert_hides(SECRET);

    // The body from standard input.
    cli([
        "call",
        "api",
        "POST",
        "/v1/charges",
        "-d",
        "@-",
        "--config",
        &config,
    ])
    .env("CLI_TEST_TOKEN", SECRET)
    .stdin(br#"{"amount": 5}"#)
    .run()
    .await
    .expect_code(0)
    .assert_hides(SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_4xx_5xx_connection_and_timeout_apart() {
    let server = MockServer::start().await;
    Mock::given(path("/missing"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(5)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, &server.uri(), "retry = { max_attempts = 1 }");
    let call = |path: &'static str| {
        cli(["call", "api", "GET", path, "--config", &config]).env("CLI_TEST_TOKEN", SECRET)
    };
    call("/missing").run().await.expect_code(4);
    call("/broken").run().await.expect_code(5);
    let timed_out = cli([
        "call",
        "api",
        "GET",
        "/slow",
        "--timeout",
        "300ms",
        "--config",
        &config,
    ])
    .env("CLI_TEST_TOKEN", SECRET)
    .run()
    .await
    .expect_code(7);
    assert!(
        timed_out.stderr.starts_with("error:"),
        "{}",
        timed_out.stderr
    );

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = config_at(&dir, port);
    cli(["call", "api", "GET", "/", "--config", &down])
        .env("CLI_TEST_TOKEN", SECRET)
        .run()
        .await
        .expect_code(6)
        .assert_hides(SECRET);

    // Usage and configuration errors.
    cli(["call", "api"]).run().await.expect_code(2);
    let unknown = cli(["call", "nope", "GET", "/", "--config", &config])
        .run()
        .await
        .expect_code(3);
    assert!(
        unknown.stderr.contains("unknown integration \"nope\""),
        "{}",
        unknown.stderr
    );
    let unset = cli(["call", "api", "GET", "/", "--config", &config])
        .run()
        .await
        .expect_code(3);
    assert!(
        unset.stderr.contains("integrations.api.auth.token"),
        "{}",
        unset.stderr
    );
}

fn config_at(dir: &tempfile::TempDir, port: u16) -> String {
    let text = format!(
        r#"
        [integrations.api]
        base_url = "http://127.0.0.1:{port}"
        retry = {{ max_attempts = 1 }}
        auth = {{ type = "bearer", token = "${{env:CLI_TEST_TOKEN}}" }}
        "#
    );
    file(dir.path(), "down.toml", &text)
        .to_string_lossy()
        .into_owned()
}
