//! Issue 15, part 3: what a reqwest user reaches for on day one, through the whole stack against
//! wiremock or a loopback server: per-request `bearer_auth`/`basic_auth`, `try_clone`, `url()`,
//! `remote_addr()`, `bytes_stream()` and multipart uploads.

use std::time::Duration;

use futures_util::StreamExt;
use integration_client::Client;
use integration_client::multipart::{Form, Part};
use integration_config::{IntegrationConfig, Secret};
use integration_core::ErrorKind;
use integration_core::testing::capture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::level_filters::LevelFilter;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const USER_TOKEN: &str = "user-token-7f3a9c";

fn client_with_bearer(server: &MockServer, max_attempts: u32) -> Client {
    let config = IntegrationConfig::builder(server.uri())
        .bearer(Secret::new("configured-token"))
        .max_attempts(max_attempts)
        .build()
        .unwrap();
    Client::builder().api("github", config).build().unwrap()
}

fn authorizations(requests: &[Request]) -> Vec<Vec<String>> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get_all("authorization")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// The per-request token replaces the integration's configured bearer for that request (one
/// `Authorization` header, the caller's), leaves the next request to the configured one, and never
/// reaches a log line or span field.
#[tokio::test]
async fn bearer_auth_replaces_the_configured_credential_and_is_never_logged() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let client = client_with_bearer(&server, 3);
    let captured = capture(LevelFilter::TRACE);
    let api = client.api("github").unwrap();
    api.get("/user")
        .bearer_auth(USER_TOKEN)
        .send()
        .await
        .unwrap();
    api.get("/app").send().await.unwrap();
    let seen = authorizations(&server.received_requests().await.unwrap());
    assert_eq!(
        seen,
        [
            vec![format!("Bearer {USER_TOKEN}")],
            vec!["Bearer configured-token".to_owned()]
        ]
    );
    assert!(
        !captured.contains(USER_TOKEN),
        "the token reached the logs: {:#?}",
        captured.all_text()
    );
}

/// A 401 to the caller's own credential is the answer: not replayed by the auth layer, not retried.
#[tokio::test]
async fn a_401_to_a_per_request_credential_is_not_replayed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_with_bearer(&server, 4);
    let response = client
        .api("github")
        .unwrap()
        .get("/user")
        .basic_auth("ana", None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.attempts(), 1);
    let seen = authorizations(&server.received_requests().await.unwrap());
    // base64("ana:")
    assert_eq!(seen, [vec!["Basic YW5hOg==".to_owned()]]);
}

/// A redirect to another origin drops the per-request credential, as it does the configured one;
/// `url()` is the final URL.
#[tokio::test]
async fn the_per_request_credential_is_dropped_across_origins_and_url_is_the_final_one() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/landing", second.uri())),
        )
        .mount(&first)
        .await;
    Mock::given(path("/landing"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&second)
        .await;
    let config = IntegrationConfig::builder(first.uri()).build().unwrap();
    let client = Client::builder().api("api", config).build().unwrap();
    let response = client
        .api("api")
        .unwrap()
        .get("/start")
        .bearer_auth(USER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.url().to_string(),
        format!("{}/landing", second.uri())
    );
    assert_eq!(response.remote_addr(), Some(*second.address()));
    let at_first = authorizations(&first.received_requests().await.unwrap());
    let at_second = authorizations(&second.received_requests().await.unwrap());
    assert_eq!(at_first, [vec![format!("Bearer {USER_TOKEN}")]]);
    assert_eq!(
        at_second,
        [Vec::<String>::new()],
        "dropped on the new origin"
    );
}

/// Without a redirect, `url()` is the URL sent, whoever answered: the configured stack (its
/// transport records it), a cache hit (which never reaches the transport: `send` records the URL
/// itself) and a stack given by the user.
#[tokio::test]
async fn url_is_the_url_sent_from_the_transport_a_cache_hit_and_any_stack() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).insert_header("cache-control", "max-age=60"))
        .mount(&server)
        .await;
    let plain = IntegrationConfig::builder(server.uri()).build().unwrap();
    let mut cached = plain.clone();
    cached.cache.enabled = true;
    let client = Client::builder()
        .api("plain", plain)
        .api("cached", cached)
        .build()
        .unwrap();
    let sent = format!("{}/v1/items?page=2", server.uri());
    for (name, times) in [("plain", 1), ("cached", 2)] {
        for _ in 0..times {
            let response = client
                .api(name)
                .unwrap()
                .get("/v1/items")
                .query(&[("page", "2")])
                .send()
                .await
                .unwrap();
            assert_eq!(response.url().to_string(), sent, "{name}");
        }
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the cached API's second call was a hit"
    );

    let upstream = tower::service_fn(|_: http::Request<integration_core::Body>| async {
        Ok::<_, integration_core::BoxError>(http::Response::new(
            integration_client::ResponseBody::from("ok"),
        ))
    });
    let own = Client::from_service("own", "https://own.example/v2/", upstream).unwrap();
    let response = own.api("own").unwrap().get("/x").send().await.unwrap();
    assert_eq!(response.url().to_string(), "https://own.example/v2/x");
}

/// `try_clone` gives a builder that sends the same request again.
#[tokio::test]
async fn a_cloned_builder_sends_the_same_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-trace", "t-1"))
        .respond_with(ResponseTemplate::new(201))
        .expect(2)
        .mount(&server)
        .await;
    let config = IntegrationConfig::builder(server.uri()).build().unwrap();
    let client = Client::builder().api("api", config).build().unwrap();
    let builder = client
        .api("api")
        .unwrap()
        .post("/items")
        .query(&[("page", "2")])
        .header("x-trace", "t-1")
        .json(&serde_json::json!({ "n": 1 }));
    let again = builder.try_clone().expect("a JSON body replays");
    assert_eq!(builder.send().await.unwrap().status(), 201);
    assert_eq!(again.send().await.unwrap().status(), 201);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url, requests[1].url);
    assert_eq!(requests[0].body, requests[1].body);
}

/// A multipart form with a text field, bytes and a file (streamed from disk) arrives whole.
#[tokio::test]
async fn a_multipart_upload_arrives_with_every_part() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/upload"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    std::fs::write(&file, br#"{"total":42}"#).unwrap();
    let config = IntegrationConfig::builder(server.uri()).build().unwrap();
    let client = Client::builder().api("files", config).build().unwrap();
    let form = Form::new()
        .text("title", "Q3")
        .part(
            "thumb",
            Part::bytes(&b"\x89PNG"[..])
                .file_name("t.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .file("report", &file)
        .await
        .unwrap();
    let response = client
        .api("files")
        .unwrap()
        .post("/upload")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request = &server.received_requests().await.unwrap()[0];
    let content_type = request.headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .expect("a multipart content type");
    let body = String::from_utf8_lossy(&request.body);
    for expected in [
        "Content-Disposition: form-data; name=\"title\"\r\n\r\nQ3\r\n".to_owned(),
        "name=\"thumb\"; filename=\"t.png\"\r\nContent-Type: image/png\r\n\r\n\u{FFFD}PNG\r\n"
            .to_owned(),
        "name=\"report\"; filename=\"report.json\"\r\nContent-Type: application/json\r\n\r\n{\"total\":42}\r\n"
            .to_owned(),
        format!("--{boundary}--\r\n"),
    ] {
        assert!(body.contains(&expected), "{expected:?} not in {body:?}");
    }
}

/// A form with a stream part is sent once: a 503 is not retried (the stream cannot be replayed),
/// while the same form of bytes only is.
#[tokio::test]
async fn a_streamed_form_is_sent_once_and_an_in_memory_one_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut config = IntegrationConfig::builder(server.uri())
        .max_attempts(2)
        .build()
        .unwrap();
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    let client = Client::builder().api("files", config).build().unwrap();
    let api = client.api("files").unwrap();
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
    let streamed = api
        .put("/a")
        .multipart(Form::new().part("s", Part::stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.attempts(), 1);
    let in_memory = api
        .put("/b")
        .multipart(Form::new().part("s", Part::bytes("x")))
        .send()
        .await
        .unwrap();
    assert_eq!(in_memory.attempts(), 2);
}

/// `bytes_stream` yields the body's chunks, and ends with a timeout error when the body stalls
/// past the call's deadline (the loopback server sends the head and a first chunk, then nothing).
#[tokio::test]
async fn bytes_stream_yields_chunks_and_honours_the_body_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
            .await;
        // Then silence until the client hangs up (bounded: the test's deadline ends it).
        let _ = socket.read(&mut buf).await;
    });
    let mut config = IntegrationConfig::builder(format!("http://{addr}/"))
        .build()
        .unwrap();
    config.timeout = Duration::from_secs(1);
    let client = Client::builder().api("slow", config).build().unwrap();
    let response = client.api("slow").unwrap().get("/").send().await.unwrap();
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the first chunk comes at once")
        .unwrap()
        .unwrap();
    assert_eq!(first, "first");
    let error = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the deadline ends the wait, far within this bound")
        .expect("an error, not the end")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert_eq!(error.integration(), Some("slow"));
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the error"
    );
}
