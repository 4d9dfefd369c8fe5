//! The gateway in this process against wiremock upstreams: routing, headers, bodies, errors,
//! caller authentication, admin endpoints, reload and drain.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use integration_gateway::{
    ATTEMPTS_HEADER, Gateway, HEALTHZ_PATH, INTEGRATION_HEADER, INTEGRATIONS_PATH, METRICS_PATH,
    READYZ_PATH, ServeArgs,
};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "caller-token-7a1d4c";

type Caller =
    HttpClient<HttpConnector, http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

struct Running {
    dir: TempDir,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), integration_gateway::GatewayError>>,
    caller: Caller,
}

impl Running {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{target}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        let response = self
            .caller
            .request(request.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    async fn get(&self, target: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        let auth = format!("Bearer {TOKEN}");
        self.send(
            Method::GET,
            target,
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
    }

    async fn admin(&self, target: &str) -> (StatusCode, String) {
        let body = Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed();
        let request = Request::get(format!("http://{}{target}", self.admin))
            .body(body)
            .unwrap();
        let response = self.caller.request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the gateway stops within its drain bound")
            .unwrap()
            .unwrap();
    }
}

async fn start_with(config: &str, tweak: impl FnOnce(&mut ServeArgs)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    std::fs::write(dir.path().join("caller-token"), format!("{TOKEN}\n")).unwrap();
    let mut args = ServeArgs::default();
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.admin_listen = "127.0.0.1:0".parse().unwrap();
    args.config = Some(dir.path().join("gateway.toml"));
    args.caller_token_file = Some(dir.path().join("caller-token"));
    args.drain_grace = Duration::from_millis(200);
    args.drain_timeout = Duration::from_secs(10);
    args.reload_interval = Duration::from_millis(100);
    tweak(&mut args);
    let gateway = Gateway::bind(args).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let addr = gateway.local_addr();
    let admin = gateway.admin_addr();
    let task = tokio::spawn(gateway.run(async {
        let _ = stopped.await;
    }));
    Running {
        dir,
        addr,
        admin,
        stop: Some(stop),
        task,
        caller: HttpClient::builder(TokioExecutor::new()).build_http(),
    }
}

async fn start(config: &str) -> Running {
    start_with(config, |_| {}).await
}

fn api_config(name: &str, base_url: &str, key_file: &std::path::Path) -> String {
    format!(
        r#"
[integrations.{name}]
base_url = "{base_url}"
timeout = "10s"

[integrations.{name}.auth]
type = "api_key"
key = "${{file:{}}}"
header = "x-api-key"
"#,
        key_file.display()
    )
}

#[tokio::test]
async fn a_call_goes_through_the_stack_with_method_query_headers_and_body() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/items/42"))
        .and(query_param("expand", "owner"))
        .and(header("x-api-key", "upstream-key-from-a-file"))
        .and(header("x-request-id", "r-1"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("x-upstream", "yes")
                .set_body_string("{\"created\":true}"),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("items-key");
    std::fs::write(&key_file, "upstream-key-from-a-file\n").unwrap();
    let gateway = start(&api_config(
        "items",
        &format!("{}/v2/", upstream.uri()),
        &key_file,
    ))
    .await;

    let auth = format!("Bearer {TOKEN}");
    let (status, headers, body) = gateway
        .send(
            Method::POST,
            "/items/items/42?expand=owner",
            &[
                ("authorization", &auth),
                ("x-request-id", "r-1"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "drop me"),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(b"{\"name\":\"seven\"}"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "{\"created\":true}");
    assert_eq!(headers[INTEGRATION_HEADER], "items");
    assert_eq!(headers[ATTEMPTS_HEADER], "1");
    assert_eq!(headers["x-upstream"], "yes");

    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    assert_eq!(sent.body, b"{\"name\":\"seven\"}");
    assert_eq!(sent.headers["content-type"], "application/json");
    // The caller's token to the gateway never goes upstream, nor do hop-by-hop headers.
    assert!(sent.headers.get("authorization").is_none());
    assert!(sent.headers.get("x-hop").is_none());
    let host = sent.headers["host"].to_str().unwrap();
    assert!(
        upstream.uri().ends_with(host),
        "host {host} is the upstream's"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_retried_call_reports_its_attempts_and_a_large_body_streams() {
    let upstream = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&upstream)
        .await;
    Mock::given(path("/upload"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&upstream)
        .await;
    let config = format!(
        "[integrations.flaky]\nbase_url = \"{}/\"\nretry = {{ max_attempts = 3, base = \"10ms\", budget = false }}\n",
        upstream.uri()
    );
    let gateway = start_with(&config, |args| args.replay_buffer = 1024).await;
    let (status, headers, body) = gateway.get("/flaky/flaky").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(headers[ATTEMPTS_HEADER], "2");

    // 256 KiB in 64 chunks of unknown total length: streamed to the upstream, byte for byte.
    let chunk = Bytes::from(vec![b'x'; 4096]);
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..64)
        .map(|_| Ok(http_body::Frame::data(chunk.clone())))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let request = Request::put(format!("http://{}/flaky/upload", gateway.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .unwrap();
    let response = gateway.caller.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = upstream.received_requests().await.unwrap();
    let upload = received.iter().find(|r| r.url.path() == "/upload").unwrap();
    assert_eq!(upload.body.len(), 64 * 4096);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unknown_integration_is_a_404_that_names_it() {
    let upstream = MockServer::start().await;
    let gateway = start(&format!(
        "[integrations.known]\nbase_url = \"{}/\"\n",
        upstream.uri()
    ))
    .await;
    let (status, _, body) = gateway.get("/github/user").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "unknown_integration");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`github`") && message.contains("`known`"),
        "{message}"
    );
    let (status, _, _) = gateway.get("/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(upstream.received_requests().await.unwrap().is_empty());
    gateway.stop().await;
}

/// A refused caller spends nothing: no upstream call and no rate-limit permit. The quota is one
/// call a minute, failing fast: after any number of refused requests the first good one still
/// gets the permit, and the next is held back by the limiter.
#[tokio::test]
async fn a_wrong_or_missing_caller_token_is_refused_and_spends_nothing() {
    let upstream = MockServer::start().await;
    Mock::given(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_string("me"))
        .mount(&upstream)
        .await;
    let config = format!(
        "[integrations.scarce]\nbase_url = \"{}/\"\nrate_limit = {{ quotas = [{{ rate = 1, per = \"60s\" }}], max_wait = \"0s\" }}\n",
        upstream.uri()
    );
    let gateway = start(&config).await;
    let wrong = format!("Bearer {TOKEN}x");
    for headers in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", "Bearer ")],
        vec![("authorization", TOKEN)],
        vec![("x-api-key", TOKEN)],
    ] {
        let (status, response_headers, body) = gateway
            .send(Method::GET, "/scarce/me", &headers, Bytes::new())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(response_headers.contains_key("www-authenticate"));
        assert!(response_headers.get(INTEGRATION_HEADER).is_none());
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().ends_with("_token"));
    }
    // Refused callers do not learn which integrations exist either.
    let (status, _, _) = gateway
        .send(
            Method::GET,
            "/nope/x",
            &[("authorization", wrong.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(upstream.received_requests().await.unwrap().is_empty());

    let (status, _, body) = gateway.get("/scarce/me").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"me"[..]));
    let (status, headers, body) = gateway.get("/scarce/me").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["integration"], "scarce");
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_slow_one_a_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let slow = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;
    let config = format!(
        "[integrations.dead]\nbase_url = \"http://{dead}/\"\nretry = {{ max_attempts = 1 }}\n\n\
         [integrations.slow]\nbase_url = \"{}/\"\ntimeout = \"300ms\"\nretry = {{ max_attempts = 1 }}\n",
        slow.uri()
    );
    let gateway = start(&config).await;
    let (status, headers, body) = gateway.get("/dead/x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[INTEGRATION_HEADER], "dead");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "connect");
    assert_eq!(body["integration"], "dead");

    let (status, _, body) = gateway.get("/slow/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(["timeout", "deadline_exceeded"].contains(&body["error"].as_str().unwrap()));
    gateway.stop().await;
}

#[tokio::test]
async fn the_admin_port_serves_health_readiness_metrics_and_the_integrations() {
    let upstream = MockServer::start().await;
    Mock::given(path("/ping"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&upstream)
        .await;
    let gateway = start(&format!(
        "[integrations.pinger]\nbase_url = \"{}/\"\n",
        upstream.uri()
    ))
    .await;
    assert_eq!(gateway.get("/pinger/ping").await.0, StatusCode::OK);
    assert_eq!(gateway.admin(HEALTHZ_PATH).await.0, StatusCode::OK);
    assert_eq!(gateway.admin(READYZ_PATH).await.0, StatusCode::OK);
    let (status, metrics) = gateway.admin(METRICS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("integration_gateway_requests"),
        "{metrics}"
    );
    // Durations are histograms with OpenTelemetry's boundaries, which sum across replicas, not the
    // exporter's default client-side summaries, which do not.
    for histogram in [
        "integration_gateway_request_duration_bucket",
        "http_client_request_duration_bucket",
        "integration_attempt_duration_bucket",
    ] {
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with(histogram) && line.contains("le=\"0.005\"")),
            "no {histogram} with OpenTelemetry's first boundary:\n{metrics}"
        );
    }
    assert!(!metrics.contains("quantile="), "{metrics}");
    let (status, view) = gateway.admin(INTEGRATIONS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["ready"], true);
    assert_eq!(view["caller_auth"], true);
    let pinger = &view["integrations"][0];
    assert_eq!(pinger["name"], "pinger");
    assert_eq!(pinger["requests"], 1);
    assert_eq!(pinger["responses"]["200"], 1);
    let (status, one) = gateway.admin(&format!("{INTEGRATIONS_PATH}/pinger")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(one.contains("\"base_url\""));
    assert_eq!(
        gateway.admin("/integrations/none").await.0,
        StatusCode::NOT_FOUND
    );
    // Read-only.
    let body = Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed();
    let post = Request::post(format!("http://{}{INTEGRATIONS_PATH}", gateway.admin))
        .body(body)
        .unwrap();
    let response = gateway.caller.request(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    gateway.stop().await;
}

#[tokio::test]
async fn an_edited_configuration_file_is_applied_without_a_restart() {
    let upstream = MockServer::start().await;
    Mock::given(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    let first = format!("[integrations.one]\nbase_url = \"{}/\"\n", upstream.uri());
    let gateway = start(&first).await;
    assert_eq!(gateway.get("/two/hello").await.0, StatusCode::NOT_FOUND);
    let second = format!(
        "{first}\n[integrations.two]\nbase_url = \"{}/\"\n",
        upstream.uri()
    );
    std::fs::write(gateway.config_path(), second).unwrap();
    // The file is read every 100 ms here; a loaded machine gets many of those.
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..200 {
        status = gateway.get("/two/hello").await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK);
    // A broken file keeps the configuration in force.
    std::fs::write(gateway.config_path(), "[integrations.two\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.get("/two/hello").await.0, StatusCode::OK);
    gateway.stop().await;
}

#[tokio::test]
async fn a_drain_fails_readiness_at_once_and_still_serves_during_the_grace_period() {
    let upstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(1_500))
                .set_body_string("late"),
        )
        .mount(&upstream)
        .await;
    Mock::given(path("/fast"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .mount(&upstream)
        .await;
    let gateway = start_with(
        &format!("[integrations.up]\nbase_url = \"{}/\"\n", upstream.uri()),
        |args| args.drain_grace = Duration::from_secs(2),
    )
    .await;
    let Running {
        dir: _dir,
        addr,
        admin,
        mut stop,
        task,
        caller,
    } = gateway;
    let send = |target: &'static str| {
        let caller = caller.clone();
        async move {
            let body = Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed();
            let request = Request::get(format!("http://{addr}{target}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(body)
                .unwrap();
            let response = caller.request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };
    let ready = |caller: Caller| async move {
        let body = Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed();
        let request = Request::get(format!("http://{admin}{READYZ_PATH}"))
            .body(body)
            .unwrap();
        caller.request(request).await.unwrap().status()
    };
    // A call in flight when the drain starts.
    let in_flight = tokio::spawn(send("/up/slow"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(caller.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    // New calls are still served in the grace period.
    assert_eq!(
        send("/up/fast").await,
        (StatusCode::OK, Bytes::from_static(b"fast"))
    );
    assert_eq!(
        in_flight.await.unwrap(),
        (StatusCode::OK, Bytes::from_static(b"late"))
    );
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the drain ends within its bound")
        .unwrap()
        .unwrap();
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn integrations_stored_in_postgresql_are_served_and_followed_live() {
    use integration_config::IntegrationConfig;
    use integration_config::testing::TestSchema;
    let upstream = MockServer::start().await;
    Mock::given(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("from the database"))
        .mount(&upstream)
        .await;
    let (schema, store) = TestSchema::new().await;
    let integration = IntegrationConfig::builder(format!("{}/", upstream.uri()))
        .build()
        .unwrap();
    store
        .put("stored", &integration, None, "test")
        .await
        .unwrap();
    let (url, name) = (schema.url.clone(), schema.name.clone());
    let gateway = start_with("", move |args| {
        args.config = None;
        args.database_url = Some(url);
        args.database_schema = name;
    })
    .await;
    let (status, _, body) = gateway.get("/stored/hello").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"from the database"[..])
    );
    let (_, view) = gateway.admin(INTEGRATIONS_PATH).await;
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["source"]["database"], true);
    assert_eq!(view["integrations"][0]["version"], 1);

    // A row added later is served without a restart (LISTEN/NOTIFY, or the poll).
    store
        .put("later", &integration, None, "test")
        .await
        .unwrap();
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..300 {
        status = gateway.get("/later/hello").await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    gateway.stop().await;
}

/// Regression: a caller that left before its answer (hyper drops the request's future) was never
/// counted as finished, so the admin view's `in_flight` only grew. It is now counted as `499`.
#[tokio::test]
async fn a_caller_that_leaves_early_is_counted_as_finished() {
    let upstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&upstream)
        .await;
    let gateway = start(&format!(
        "[integrations.slow]\nbase_url = \"{}/\"\n",
        upstream.uri()
    ))
    .await;
    let left = tokio::time::timeout(Duration::from_millis(300), gateway.get("/slow/slow")).await;
    assert!(left.is_err(), "the caller gave up first");
    let mut view = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, text) = gateway.admin(&format!("{INTEGRATIONS_PATH}/slow")).await;
        view = serde_json::from_str(&text).unwrap();
        if view["in_flight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view["in_flight"], 0, "{view}");
    assert_eq!(view["responses"]["499"], 1, "{view}");
    assert_eq!(view["failures"]["cancelled"], 1, "{view}");
    gateway.stop().await;
}
