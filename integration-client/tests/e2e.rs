//! End to end through the full stack (log, deadline, retry, breaker, rate limit, auth, transport)
//! against wiremock upstreams.

mod common;

use std::error::Error as _;
use std::time::Duration;

use common::{client, fast_at, mount_first_token_answer, mount_token_endpoint, oauth_client};
use integration_client::{Client, GraphQlError};
use integration_config::{
    ApiKeyAuth, AuthConfig, Config, IntegrationConfig, QuotaConfig, RedisConfig, Secret, StoreKind,
};
use integration_core::ErrorKind;
use integration_core::error::BodyTooLarge;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wiremock::matchers::{
    body_json, body_string, header, header_exists, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An integration at `server` with fast retries, so tests do not wait on real backoff.
fn fast(server: &MockServer) -> IntegrationConfig {
    fast_at(&server.uri(), |builder| builder)
}

/// A loopback upstream that answers one request with `200 body`, but only once the test releases
/// it: "this call is in flight" is then a fact the test waits for ([`Held::arrived`]), not a guess
/// made by sleeping (a 50 ms sleep was not enough on a loaded machine, and the response delay of
/// wiremock could elapse before the test looked).
struct Held {
    uri: String,
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Held {
    async fn start(body: &'static str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the client closed before sending its request head");
                head.extend_from_slice(&buffer[..n]);
            }
            let _ = arrived_tx.send(());
            let _ = release_rx.await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        });
        Held {
            uri,
            arrived: Some(arrived),
            release: Some(release),
        }
    }

    /// Waits until the request head has reached the upstream.
    async fn arrived(&mut self) {
        self.arrived.take().unwrap().await.unwrap();
    }

    /// Lets the upstream answer.
    fn release(&mut self) {
        let _ = self.release.take().unwrap().send(());
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Charge {
    id: String,
    amount: u64,
}

#[tokio::test]
async fn json_request_and_response_round_trip() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({ "amount": 100 })))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "id": "ch_1", "amount": 100 })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.base_url = format!("{}/v1/", server.uri()).parse().unwrap();
    let client = client("stripe", config);

    let response = client
        .api("stripe")
        .unwrap()
        .post("/charges")
        .json(&json!({ "amount": 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.attempts(), 1);
    assert_eq!(response.integration(), "stripe");
    let charge: Charge = response.json().await.unwrap();
    assert_eq!(
        charge,
        Charge {
            id: "ch_1".into(),
            amount: 100
        }
    );
}

#[tokio::test]
async fn default_headers_user_agent_query_and_form_are_sent() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/items/7"))
        .and(header("user-agent", "acme/1.0"))
        .and(header("accept", "application/vnd.test+json"))
        .and(header("x-override", "mine"))
        .and(query_param("page", "2"))
        .and(query_param("q", "a b"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("name=widget&size=3"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.user_agent = Some("acme/1.0".into());
    config
        .headers
        .insert("accept".into(), "application/vnd.test+json".into());
    config.headers.insert("x-override".into(), "default".into());
    let client = client("items", config);
    let text = client
        .api("items")
        .unwrap()
        .put("/items/7?page=2")
        .query(&[("q", "a b")])
        .header("x-override", "mine")
        .form(&[("name", "widget"), ("size", "3")])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "ok");
}

/// A request's own header replaces the API's default of the same name (every value of it), and the
/// defaults it does not name are added, each value once (issue 19: the request's map is now sent
/// with the defaults added to it, rather than appended to a copy of the defaults).
#[tokio::test]
async fn a_request_header_replaces_every_value_of_the_default() {
    let server = MockServer::start().await;
    let mut config = fast(&server);
    config.user_agent = Some("acme/1.0".into());
    config.headers.insert("x-tag".into(), "default".into());
    config.headers.insert("x-other".into(), "kept".into());
    let client = client("items", config);
    let api = client.api("items").unwrap();

    let request = api
        .get("/items")
        .header("x-tag", "mine")
        .header("user-agent", "mine/2.0")
        .build()
        .unwrap();
    let values = |name: &str| -> Vec<&str> {
        request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(values("x-tag"), ["mine"]);
    assert_eq!(values("user-agent"), ["mine/2.0"]);
    assert_eq!(values("x-other"), ["kept"]);

    let request = api.get("/items").build().unwrap();
    let defaults: Vec<_> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    assert_eq!(defaults.len(), 3, "{defaults:?}");
    assert!(defaults.contains(&("user-agent", "acme/1.0")));
    assert!(defaults.contains(&("x-tag", "default")));
    assert!(defaults.contains(&("x-other", "kept")));
}

#[tokio::test]
async fn a_retried_call_reports_its_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_string("finally"))
        .mount(&server)
        .await;
    let client = client("flaky", fast(&server));
    let response = client
        .api("flaky")
        .unwrap()
        .get("/flaky")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts(), 2);
    assert_eq!(response.text().await.unwrap(), "finally");
}

#[tokio::test]
async fn errors_carry_the_integration_name_and_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.retry.max_attempts = 2;
    config.circuit_breaker.enabled = false;
    let client = client("billing", config);
    let outcome = client.api("billing").unwrap().get("/invoices").send().await;
    let error = match outcome {
        Ok(response) => {
            assert_eq!(response.attempts(), 2);
            response.error_for_status().unwrap_err()
        }
        Err(error) => error,
    };
    assert_eq!(error.integration(), Some("billing"));
    assert_eq!(error.attempts(), 2);
    assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    // The message names the integration and the attempt, never a header or a body.
    let shown = error.to_string();
    assert!(shown.contains("billing"), "{shown}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("secret body"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client("github", fast(&server));
    let response = client
        .api("github")
        .unwrap()
        .get("/repos/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts(), 1);
    let error = response.error_for_status().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Status);
    assert_eq!(error.status(), Some(http::StatusCode::NOT_FOUND));
    assert!(!format!("{error:#}").contains("secret body"));
}

#[tokio::test]
async fn post_is_retried_only_with_an_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.circuit_breaker.enabled = false;
    let client = client("pay", config);
    let api = client.api("pay").unwrap();

    let plain = api.post("/payments").body("x").send().await.unwrap();
    assert_eq!(
        plain.attempts(),
        1,
        "a POST without a key may have been processed"
    );

    let keyed = api
        .post("/payments")
        .body("x")
        .idempotency_key("order-42")
        .send()
        .await
        .unwrap();
    // The default of 4 attempts.
    assert_eq!(keyed.attempts(), 4);
    let requests = server.received_requests().await.unwrap();
    let keys: Vec<_> = requests
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 4, "the same key on every attempt");
    assert!(keys.iter().all(|k| *k == "order-42"));
}

#[tokio::test]
async fn a_connect_failure_is_a_connect_error_naming_the_integration() {
    // A port nobody listens on: bind, read the port, drop the listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = IntegrationConfig::builder(format!("http://127.0.0.1:{port}/"))
        .build()
        .unwrap();
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(2);
    let client = client("down", config);
    let error = client
        .api("down")
        .unwrap()
        .get("/")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(error.integration(), Some("down"));
    assert_eq!(
        error.attempts(),
        4,
        "nothing was sent: every attempt is retried (4 attempts by default)"
    );
}

#[tokio::test]
async fn the_body_cap_is_enforced() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(4096)))
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.max_response_bytes = 1024;
    let client = client("big", config);
    let api = client.api("big").unwrap();

    let error = api
        .get("/")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Body);
    assert_eq!(error.integration(), Some("big"));
    let cap = error
        .source()
        .and_then(|s| s.downcast_ref::<BodyTooLarge>())
        .unwrap();
    assert_eq!(cap.limit(), 1024);
    assert!(
        api.get("/")
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap_err()
            .is_body()
    );

    // Streaming is not capped.
    let mut response = api.get("/").send().await.unwrap();
    let mut total = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 4096);
}

#[tokio::test]
async fn a_path_leaving_the_base_is_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.base_url = format!("{}/v1/", server.uri()).parse().unwrap();
    let client = client("api", config);
    let api = client.api("api").unwrap();
    for bad in [
        "http://169.254.169.254/latest",
        "//evil.example/",
        "/../admin",
        "/%2e%2e/admin",
        "/a\\..\\b",
    ] {
        let error = api.get(bad).send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Request, "{bad}");
        assert_eq!(error.integration(), Some("api"));
    }
}

#[tokio::test]
async fn an_unknown_integration_lists_the_known_ones() {
    let server = MockServer::start().await;
    let client = Client::builder()
        .api("stripe", fast(&server))
        .api("github", fast(&server))
        .build()
        .unwrap();
    let error = client.api("gitlab").unwrap_err();
    assert!(error.is_config());
    assert!(
        error.to_string().contains("known: `github`, `stripe`"),
        "{error}"
    );
}

#[tokio::test]
async fn an_invalid_configuration_reports_every_path() {
    let mut config = Config::new();
    let mut a = IntegrationConfig::new("https://a.example/".parse().unwrap());
    a.retry.max_attempts = 0;
    let mut b = IntegrationConfig::new("https://b.example/".parse().unwrap());
    b.timeout = Duration::ZERO;
    config = config.with_integration("a", a).with_integration("b", b);
    let error = Client::from_config(config).unwrap_err();
    assert!(error.is_config());
    let shown = error.to_string();
    assert!(
        shown.contains("integrations.a.retry.max_attempts"),
        "{shown}"
    );
    assert!(shown.contains("integrations.b.timeout"), "{shown}");
}

/// Also: a call ended by its own timeout is no longer counted in flight, and a shutdown after it
/// waits for nothing (`send` holds the in-flight guard itself and drops it on every way out; it was
/// held inside a block the timeout dropped, until issue 19 took that block out).
#[tokio::test]
async fn a_per_call_timeout_is_a_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let client = client("slow", fast(&server));
    let error = client
        .api("slow")
        .unwrap()
        .get("/")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.integration(), Some("slow"));
    assert_eq!(client.in_flight(), 0, "the timed-out call is not in flight");
    let left = tokio::time::timeout(
        Duration::from_secs(30),
        client.shutdown(Duration::from_secs(60)),
    )
    .await
    .expect("the shutdown waits for no call");
    assert_eq!(left, 0);
}

/// Issue 19: `send` returns a named future, lazy as the `async fn` it replaced (nothing is sent,
/// nothing counted in flight, until it is first polled), and small: the `async fn`'s state machine
/// was 1,384 bytes (the builder, the request and an unboxed timer side by side), copied with every
/// move of every future that holds it.
#[tokio::test]
async fn the_send_future_is_lazy_and_small() {
    let size = std::mem::size_of::<integration_client::SendFuture>();
    assert!(size <= 320, "SendFuture is {size} bytes");
    // As the `async fn`'s future was: it can be spawned, and moved freely.
    fn spawnable<T: Send + Unpin + 'static>() {}
    spawnable::<integration_client::SendFuture>();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let client = client("lazy", fast(&server));
    let unpolled = client.api("lazy").unwrap().get("/").send();
    assert_eq!(client.in_flight(), 0, "an unpolled send is not in flight");
    drop(unpolled);
    assert!(server.received_requests().await.unwrap().is_empty());

    let pending = client.api("lazy").unwrap().get("/").send();
    let response = pending.await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn api_key_auth_is_applied_on_every_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("x-api-key", "k-123"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let config = IntegrationConfig::builder(server.uri())
        .api_key_header("x-api-key", Secret::new("k-123"))
        .build()
        .unwrap();
    let client = client("keyed", config);
    let response = client.api("keyed").unwrap().get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn oauth_client_credentials_token_is_fetched_once_and_cached() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "tok-1", 1).await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(5)
        .mount(&server)
        .await;
    let client = oauth_client(&server, "crm", "");
    let api = client.api("crm").unwrap();
    let calls = (0..5).map(|_| api.get("/me").send());
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn graphql_errors_become_a_typed_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/graphql"))
        .and(header_exists("content-type"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": { "user": null },
            "errors": [
                { "message": "Could not resolve to a User", "path": ["user"], "extensions": { "code": "NOT_FOUND" } },
                { "message": "Rate limited", "extensions": { "code": "RATE_LIMITED" } }
            ]
        })))
        .mount(&server)
        .await;
    let client = client("github", fast(&server));
    let error = client
        .api("github")
        .unwrap()
        .graphql("query($login: String!) { user(login: $login) { name } }")
        .variables(&json!({ "login": "nobody" }))
        .send::<serde_json::Value>()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Status);
    assert_eq!(error.integration(), Some("github"));
    let graphql = error
        .source()
        .and_then(|s| s.downcast_ref::<GraphQlError>())
        .unwrap();
    assert_eq!(graphql.codes(), ["NOT_FOUND", "RATE_LIMITED"]);
    assert_eq!(
        graphql.errors()[0].path.as_deref(),
        Some(&[json!("user")][..])
    );
    assert_eq!(graphql.data(), Some(&json!({ "user": null })));
    // The request carried the variables.
    let sent: serde_json::Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["variables"]["login"], "nobody");
}

#[tokio::test]
async fn graphql_data_decodes_and_queries_retry_but_mutations_do_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "data": { "viewer": { "login": "ana" } } })),
        )
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.circuit_breaker.enabled = false;
    let client = client("gh", config);
    let api = client.api("gh").unwrap();

    #[derive(Deserialize)]
    struct Viewer {
        viewer: Login,
    }
    #[derive(Deserialize)]
    struct Login {
        login: String,
    }
    // The first answer is a 503: a query is retried and succeeds.
    let data: Viewer = api.graphql("{ viewer { login } }").send().await.unwrap();
    assert_eq!(data.viewer.login, "ana");

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let error = api
        .graphql("mutation { addStar(input: {starrableId: \"x\"}) { clientMutationId } }")
        .send::<serde_json::Value>()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(error.attempts(), 1, "a mutation is not retried");
}

#[tokio::test]
async fn update_swaps_changed_integrations_and_removes_old_ones() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("first"))
        .mount(&first)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("second"))
        .mount(&second)
        .await;
    let client = Client::builder()
        .api("a", fast(&first))
        .api("b", fast(&first))
        .build()
        .unwrap();
    let a = client.api("a").unwrap();
    let b = client.api("b").unwrap();
    assert_eq!(
        a.get("/").send().await.unwrap().text().await.unwrap(),
        "first"
    );
    assert_eq!(b.base_url().unwrap().as_str(), format!("{}/", first.uri()));

    let config = Config::new().with_integration("a", fast(&second));
    let report = client.update(config.clone()).unwrap();
    assert_eq!(report.changed, ["a"]);
    assert_eq!(report.removed, ["b"]);
    // The handle taken before the update follows it.
    assert_eq!(
        a.get("/").send().await.unwrap().text().await.unwrap(),
        "second"
    );
    let error = client.api("b").unwrap_err();
    assert!(error.is_config());
    assert!(error.to_string().contains("removed"), "{error}");
    // Issue 19: a handle keeps the entry it found, for as long as the APIs are unchanged; the one
    // taken before the update does not send on the removed API's stack.
    let error = b.get("/").send().await.unwrap_err();
    assert!(error.is_config());
    assert!(error.to_string().contains("removed"), "{error}");
    assert!(b.base_url().unwrap_err().is_config());

    let report = client.update(config).unwrap();
    assert_eq!(report.unchanged, ["a"]);
    assert!(report.changed.is_empty());
}

/// Regression (load): the test slept 50 ms to let the call get in flight, and the upstream answered
/// after 300 ms; on a loaded machine either could be off. The upstream now holds its answer until
/// released, and the test waits for the request to arrive.
#[tokio::test]
async fn shutdown_waits_for_calls_in_flight_and_refuses_new_ones() {
    let mut upstream = Held::start("done").await;
    let client = client("slow", fast_at(&upstream.uri, |builder| builder));
    let api = client.api("slow").unwrap();
    let in_flight = tokio::spawn({
        let api = api.clone();
        async move { api.get("/").send().await.map(|r| r.status()) }
    });
    upstream.arrived().await;
    assert_eq!(client.in_flight(), 1);
    let shutdown = client.shutdown(Duration::from_secs(60));
    tokio::pin!(shutdown);
    // The call is held at the upstream: the shutdown cannot be done, however long we look.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut shutdown)
            .await
            .is_err(),
        "the shutdown waits while the call is in flight"
    );
    let error = api.get("/").send().await.unwrap_err();
    assert!(
        error.is_cancelled(),
        "a new call during the shutdown: {error:?}"
    );
    upstream.release();
    assert_eq!(shutdown.await, 0, "no call left behind");
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the call in flight finished"
    );
    let error = api.get("/").send().await.unwrap_err();
    assert!(error.is_cancelled());
}

#[tokio::test]
async fn a_401_fetches_a_fresh_token_and_replays_once() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "tok", 2).await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let client = oauth_client(&server, "shop", "");
    // A POST without a key: the 401 came before the upstream acted, so it is replayed anyway.
    let response = client
        .api("shop")
        .unwrap()
        .post("/orders")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn update_keeps_the_token_cache_when_auth_is_unchanged() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let text = |attempts: u32| {
        format!(
            r#"
            [integrations.crm]
            base_url = "{uri}"
            retry = {{ max_attempts = {attempts} }}
            auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token", client_id = "app", client_secret = "s" }}
            "#,
            uri = server.uri()
        )
    };
    let client = Client::from_config(Config::from_toml_str(&text(3)).unwrap()).unwrap();
    let api = client.api("crm").unwrap();
    assert_eq!(api.get("/a").send().await.unwrap().status(), 200);
    let report = client
        .update(Config::from_toml_str(&text(5)).unwrap())
        .unwrap();
    assert_eq!(report.changed, ["crm"]);
    // Rebuilt with a new retry section, the same token: no second fetch (the mock expects one).
    assert_eq!(api.get("/b").send().await.unwrap().status(), 200);
}

/// Regression (load): as the shutdown test, a 50 ms sleep stood for "the call is in flight".
#[tokio::test]
async fn a_call_in_flight_finishes_on_the_stack_it_started_on() {
    let mut old = Held::start("old").await;
    let new = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("new"))
        .mount(&new)
        .await;
    let client = client("svc", fast_at(&old.uri, |builder| builder));
    let api = client.api("svc").unwrap();
    let in_flight = tokio::spawn({
        let api = api.clone();
        async move { api.get("/").send().await.unwrap().text().await.unwrap() }
    });
    old.arrived().await;
    client
        .update(Config::new().with_integration("svc", fast(&new)))
        .unwrap();
    assert_eq!(
        api.get("/").send().await.unwrap().text().await.unwrap(),
        "new"
    );
    old.release();
    assert_eq!(in_flight.await.unwrap(), "old");
}

/// Issue 19: `bytes()` (and `text()`, `json()`) read a body without gathering its frames in a list
/// first: a body of one frame comes back as that frame (the same allocation, not a copy), the
/// frames of a longer one are joined in order, empty frames and trailers add nothing.
#[tokio::test]
async fn a_body_read_whole_is_its_one_frame_uncopied_or_its_frames_joined() {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use integration_client::ResponseBody;
    static ONE: &[u8] = b"{\"one\":\"frame\"}";
    let upstream = tower::service_fn(
        |request: http::Request<integration_core::Body>| async move {
            let body = if request.uri().path().ends_with("/one") {
                ResponseBody::from(Bytes::from_static(ONE))
            } else {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
                let frames: Vec<Result<Frame<Bytes>, integration_core::BoxError>> = vec![
                    Ok(Frame::data(Bytes::from_static(b"{\"a\":"))),
                    Ok(Frame::data(Bytes::new())),
                    Ok(Frame::data(Bytes::from_static(b"\"b"))),
                    Ok(Frame::data(Bytes::from_static(b"c\"}"))),
                    Ok(Frame::trailers(trailers)),
                ];
                ResponseBody::new(StreamBody::new(futures_util::stream::iter(frames)))
            };
            Ok::<_, integration_core::BoxError>(http::Response::new(body))
        },
    );
    let client = Client::from_service("frames", "https://frames.example/", upstream).unwrap();
    let api = client.api("frames").unwrap();

    let one = api.get("/one").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(one, ONE);
    assert_eq!(
        one.as_ptr(),
        ONE.as_ptr(),
        "one frame is handed back, not copied"
    );

    let many = api
        .get("/many")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(many, &b"{\"a\":\"bc\"}"[..]);
    let value: serde_json::Value = api.get("/many").send().await.unwrap().json().await.unwrap();
    assert_eq!(value, json!({"a": "bc"}));
}

#[tokio::test]
async fn a_client_over_any_service_serves_requests() {
    use integration_client::ResponseBody;
    let upstream = tower::service_fn(
        |request: http::Request<integration_core::Body>| async move {
            let reply = format!("{} {}", request.method(), request.uri());
            Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(reply)))
        },
    );
    let client = Client::from_service("fake", "https://fake.example/v2/", upstream).unwrap();
    let api = client.api("fake").unwrap();
    let text = api
        .delete("/things/1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "DELETE https://fake.example/v2/things/1");
    // The stack is available to compose with.
    use tower::ServiceExt;
    let request = api.get("/x").build().unwrap();
    let response = api.service().unwrap().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_status_error_carries_the_retry_after_hint_but_no_header_or_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .insert_header("set-cookie", "session=s3cr3t")
                .set_body_string("quota exceeded for key s3cr3t"),
        )
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.retry.max_attempts = 1;
    let client = client("quota", config);
    let error = client
        .api("quota")
        .unwrap()
        .get("/")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert!(error.is_status());
    assert_eq!(error.status(), Some(http::StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(error.attempts(), 1);
    let shown = format!("{error:#} {error:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

// `gzip.compress(b"hello from gzip, hello from gzip, hello from gzip", mtime=0)` and
// `zlib.compress(b"hello deflate")`, made once with Python: no compression crate needed here.
const GZIP: &[u8] = &[
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 72, 205, 201, 201, 87, 72, 43, 202, 207, 85, 72, 175,
    202, 44, 208, 81, 200, 32, 32, 0, 0, 42, 133, 95, 125, 49, 0, 0, 0,
];
const DEFLATE: &[u8] = &[
    120, 218, 203, 72, 205, 201, 201, 87, 72, 73, 77, 203, 73, 44, 73, 5, 0, 35, 12, 5, 10,
];

/// Answers `GET at` with `body` sent as `Content-Encoding: encoding`.
async fn mount_encoded(server: &MockServer, at: &str, encoding: &str, body: &'static [u8]) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", encoding)
                .set_body_raw(body, "text/plain"),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn compressed_responses_are_decompressed() {
    let server = MockServer::start().await;
    mount_encoded(&server, "/gzip", "gzip", GZIP).await;
    mount_encoded(&server, "/deflate", "deflate", DEFLATE).await;
    let client = client("zip", fast(&server));
    let api = client.api("zip").unwrap();
    let text = api.get("/gzip").send().await.unwrap().text().await.unwrap();
    assert_eq!(text, "hello from gzip, hello from gzip, hello from gzip");
    let text = api
        .get("/deflate")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "hello deflate");
    let sent = &server.received_requests().await.unwrap()[0];
    let accepted = sent
        .headers
        .get("accept-encoding")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        accepted.contains("gzip") && accepted.contains("br") && accepted.contains("deflate"),
        "{accepted}"
    );
}

/// Issue 19: the transport decodes a response itself only when its `Content-Encoding` is one it
/// announced (tower-http's body, 360 bytes, was held for every response and copied by every layer
/// above). What it decodes and sends is unchanged: an encoding it does not decode passes through
/// with its header; a decoded response loses `Content-Encoding` and `Content-Length`; a request's
/// own `Accept-Encoding` is kept; with decompression off nothing is announced or decoded.
#[tokio::test]
async fn the_transport_decodes_what_it_announces_and_nothing_else() {
    use http_body_util::BodyExt;
    use integration_client::transport::Transport;
    use tower::ServiceExt;

    let server = MockServer::start().await;
    mount_encoded(&server, "/deflate", "deflate", DEFLATE).await;
    mount_encoded(&server, "/other", "x-custom", b"left as sent").await;
    Mock::given(method("GET"))
        .and(path("/moved"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/deflate"))
        .mount(&server)
        .await;
    let get = |transport: Transport, at: &str, accept: Option<&'static str>| {
        let mut request = http::Request::get(format!("{}{at}", server.uri()));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let request = request.body(integration_core::Body::empty()).unwrap();
        async move {
            let response = transport.oneshot(request).await.unwrap();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (headers, body)
        }
    };
    let on = Transport::builder().no_proxy().build().unwrap();
    let off = Transport::builder()
        .no_proxy()
        .decompression(false)
        .build()
        .unwrap();

    let (headers, body) = get(on.clone(), "/deflate", None).await;
    assert_eq!(&body[..], b"hello deflate");
    assert!(headers.get("content-encoding").is_none());
    assert!(headers.get("content-length").is_none());

    let (headers, body) = get(on.clone(), "/other", None).await;
    assert_eq!(&body[..], b"left as sent");
    assert_eq!(headers["content-encoding"], "x-custom");

    let (headers, body) = get(off, "/deflate", None).await;
    assert_eq!(&body[..], DEFLATE);
    assert_eq!(headers["content-encoding"], "deflate");

    // A request's own `Accept-Encoding` is sent as it is; the response is still decoded.
    let (_, body) = get(on.clone(), "/deflate", Some("deflate")).await;
    assert_eq!(&body[..], b"hello deflate");

    // Through a redirect: the hop carries the announcement, the final response is decoded.
    let (headers, body) = get(on, "/moved", None).await;
    assert_eq!(&body[..], b"hello deflate");
    assert!(headers.get("content-encoding").is_none());

    let sent = server.received_requests().await.unwrap();
    let accepted: Vec<Option<&str>> = sent
        .iter()
        .map(|request| {
            request
                .headers
                .get("accept-encoding")
                .map(|value| value.to_str().unwrap())
        })
        .collect();
    assert_eq!(
        accepted,
        [
            Some("gzip,deflate,br"),
            Some("gzip,deflate,br"),
            None,
            Some("deflate"),
            Some("gzip,deflate,br"),
            Some("gzip,deflate,br")
        ]
    );
}

#[test]
fn the_public_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Client>();
    send_sync::<integration_client::Api>();
    send::<integration_client::Response>();
    send::<integration_client::RequestBuilder>();
}

#[tokio::test]
async fn a_rejected_update_changes_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let client = client("svc", fast(&server));
    let mut bad = fast(&server);
    bad.retry.max_attempts = 0;
    let error = client
        .update(Config::new().with_integration("other", bad))
        .unwrap_err();
    assert!(error.is_config());
    assert!(
        error
            .to_string()
            .contains("integrations.other.retry.max_attempts"),
        "{error}"
    );
    assert_eq!(client.names(), ["svc"]);
    let response = client.api("svc").unwrap().get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// DESIGN.md: "Every attempt (not only the first) goes through rate limiting and auth." A quota of
/// two permits with no wait: the first two attempts reach the upstream, the third is refused by the
/// limiter. Were the limiter outside the retry layer, all three attempts would reach the upstream.
#[tokio::test]
async fn every_attempt_takes_a_rate_limit_permit() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.retry.max_attempts = 3;
    config.rate_limit.quotas = vec![QuotaConfig::new(2, Duration::from_secs(3600))];
    config.rate_limit.max_wait = Duration::ZERO;
    let client = client("metered", config);
    let error = client
        .api("metered")
        .unwrap()
        .get("/")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
}

/// DESIGN.md: every attempt goes through auth. The retried attempt must carry the key too: a request
/// without it matches no mock (404, not retried) and the call fails.
#[tokio::test]
async fn api_key_auth_is_applied_on_the_retried_attempt_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("x-api-key", "k-123"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-api-key", "k-123"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = fast(&server);
    config.auth = AuthConfig::ApiKey(ApiKeyAuth::new(Secret::new("k-123")));
    let client = client("keyed", config);
    let response = client.api("keyed").unwrap().get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts(), 2);
}

/// DESIGN.md: "A 401 gets exactly one replay after the credential is invalidated." Through the
/// facade, the retry layer replays and the auth layer's own replay is off: an upstream that always
/// answers 401 sees exactly two requests (four if both layers replayed), and two token fetches.
#[tokio::test]
async fn a_persistent_401_gets_exactly_one_replay_through_the_facade() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "tok", 2).await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let client = oauth_client(
        &server,
        "shop",
        r#"retry = { max_attempts = 5, base = "1ms", cap = "5ms" }"#,
    );
    let response = client.api("shop").unwrap().get("/me").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.attempts(), 2);
}

/// DESIGN.md: "`invalid_grant` is final." Through the facade (three attempts allowed) the token
/// endpoint is asked once, the API never, and the call fails at once as an auth error.
#[tokio::test]
async fn invalid_grant_is_final_through_the_facade() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "refresh token revoked"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let text = format!(
        r#"
        [integrations.crm]
        base_url = "{uri}"
        retry = {{ max_attempts = 3, base = "1ms", cap = "5ms" }}
        auth = {{ type = "oauth2_refresh_token", token_url = "{uri}/oauth/token", client_id = "app", refresh_token = "rt-secret-1" }}
        "#,
        uri = server.uri()
    );
    let client = Client::from_config(Config::from_toml_str(&text).unwrap()).unwrap();
    let error = client
        .api("crm")
        .unwrap()
        .get("/me")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_auth(), "{error:?}");
    assert!(error.attempts() <= 1, "not retried: {error:?}");
    assert!(!format!("{error:?} {error:#}").contains("rt-secret-1"));
}

/// Regression: a token endpoint that answered 503 once failed the call, though nothing had been
/// sent. Now the retry layer waits out the auth cool-down (1 s) and the call succeeds: a POST too,
/// since no credential means no request reached the API.
#[tokio::test]
async fn a_token_endpoint_blip_is_retried_after_the_cool_down() {
    let server = MockServer::start().await;
    mount_first_token_answer(&server, ResponseTemplate::new(503)).await;
    mount_token_endpoint(&server, "tok-after-blip", 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/orders"))
        .and(header("authorization", "Bearer tok-after-blip"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let client = oauth_client(
        &server,
        "crm",
        r#"retry = { max_attempts = 3, base = "1ms", cap = "5ms" }"#,
    );
    let started = tokio::time::Instant::now();
    let response = client
        .api("crm")
        .unwrap()
        .post("/v1/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.attempts(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "no refresh during the cool-down: {:?}",
        started.elapsed()
    );
}

/// Regression: `RequestBuilder`'s Debug printed the path with its `?query`, where an API key passed
/// as a query parameter would show.
#[test]
fn a_request_builder_never_prints_the_query_written_in_its_path() {
    let config = IntegrationConfig::builder("https://api.example.com/v1/")
        .build()
        .unwrap();
    let client = client("debugged", config);
    let request = client
        .api("debugged")
        .unwrap()
        .get("/search?api_key=s3cr3t-key&q=x")
        .query(&[("token", "other-s3cr3t")]);
    let printed = format!("{request:?}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("/search"), "{printed}");
}

/// Regression: `Client::update` promises "nothing is applied when anything fails", but a changed
/// quota was written into the running limiter while the reload was still being built; when a later
/// integration then failed, the update was refused and yet the live stack ran on the new quota.
#[tokio::test]
async fn a_reload_that_fails_later_leaves_the_running_quota_alone() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let mut generous = fast(&server);
    generous.rate_limit.quotas = vec![QuotaConfig::new(100, Duration::from_secs(3600))];
    generous.rate_limit.max_wait = Duration::ZERO;
    let client = client("svc", generous.clone());

    // `svc` tightened to one call an hour (same store: the limiter is kept), and `zzz` (built after
    // `svc`) needs a Redis connection this client does not have: the update fails.
    let mut tight = generous.clone();
    tight.rate_limit.quotas = vec![QuotaConfig::new(1, Duration::from_secs(3600))];
    let mut needs_redis = fast(&server);
    needs_redis.rate_limit.store = StoreKind::Redis;
    let update = Config::new()
        .with_redis(RedisConfig::new(Secret::new("redis://127.0.0.1:1")))
        .with_integration("svc", tight)
        .with_integration("zzz", needs_redis);
    let error = client.update(update).unwrap_err();
    assert!(error.is_config(), "{error:?}");

    let api = client.api("svc").unwrap();
    for call in 0..3 {
        let response = api.get("/").send().await;
        assert!(
            response.is_ok(),
            "call {call} refused: the rejected reload changed the quota: {response:?}"
        );
    }

    // The same change alone succeeds and takes effect on the kept limiter (its 3 calls count).
    let mut tight = generous;
    tight.rate_limit.quotas = vec![QuotaConfig::new(1, Duration::from_secs(3600))];
    let report = client
        .update(Config::new().with_integration("svc", tight))
        .unwrap();
    assert_eq!(report.changed, ["svc"]);
    let error = api.get("/").send().await.unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
}
