//! Issue 14, part 4: the call's deadline covers the response body. A loopback server sends the
//! response head at once and then the body one byte a second; the reads end at the deadline with a
//! timeout error, unless the caller gave the body a timeout of its own or none.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use integration_client::{Client, Response};
use integration_config::IntegrationConfig;
use integration_core::error::BodyTimeout;
use integration_core::{Error, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Bytes the trickling server announces (and would take this many seconds to send).
const TRICKLE_BYTES: usize = 60;

/// Reads one request head from `socket`: `false` when the client hung up first.
async fn read_head(socket: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A loopback HTTP/1.1 server: for each connection, reads the request head, sends a 200 head with
/// `Content-Length: body_len`, then the body one byte every `pace`. Bounded: it stops after
/// `body_len` bytes or at the first write error (the client hung up).
async fn trickling_server(body_len: usize, pace: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Keep-alive: a connection the client reuses gets the same answer again.
                loop {
                    if !read_head(&mut socket).await {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..body_len {
                        tokio::time::sleep(pace).await;
                        if socket.write_all(b"1").await.is_err() || socket.flush().await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn client(addr: SocketAddr, timeout: Duration) -> Client {
    let mut config = IntegrationConfig::builder(format!("http://{addr}/"))
        .build()
        .unwrap();
    config.timeout = timeout;
    Client::builder().api("slow", config).build().unwrap()
}

async fn head(client: &Client) -> Response {
    client
        .api("slow")
        .unwrap()
        .get("/export")
        .send()
        .await
        .expect("the head arrives at once")
}

/// A generous bound on a read that should end at a 1 s deadline: far above the deadline on a loaded
/// machine, far below the 60 s the body takes to arrive.
const MARGIN: Duration = Duration::from_secs(20);

fn assert_body_timeout(error: &Error, read: &str) {
    assert_eq!(error.kind(), ErrorKind::Timeout, "{read}: {error:#}");
    assert!(error.is_timeout(), "{read}");
    assert_eq!(error.integration(), Some("slow"), "{read}");
    let shown = error.to_string();
    assert!(
        shown.starts_with("integration `slow`")
            && shown.contains("reading the response body timed out"),
        "{read}: {shown}"
    );
    let source = std::error::Error::source(error).expect("a source");
    assert!(source.downcast_ref::<BodyTimeout>().is_some(), "{read}");
}

/// Regression (issue 14): with `timeout = "5s"`, `text()` of a body trickling one byte a second was
/// still reading after 40 s: the deadline ended when the head arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_reading_the_body_ends_at_the_call_deadline() {
    let addr = trickling_server(TRICKLE_BYTES, Duration::from_secs(1)).await;
    let client = client(addr, Duration::from_secs(1));
    let started = tokio::time::Instant::now();

    let text = async { head(&client).await.text().await.map(drop) };
    let bytes = async { head(&client).await.bytes().await.map(drop) };
    let json = async {
        head(&client)
            .await
            .json::<serde_json::Value>()
            .await
            .map(drop)
    };
    let chunks = async {
        let mut response = head(&client).await;
        while response.chunk().await?.is_some() {}
        Ok(())
    };
    let body = async {
        head(&client)
            .await
            .into_body()
            .collect()
            .await
            .map(drop)
            .map_err(Error::from_boxed)
    };
    let all = async { tokio::join!(text, bytes, json, chunks, body) };
    let (text, bytes, json, chunks, body) = tokio::time::timeout(MARGIN, all)
        .await
        .expect("the reads end at the deadline, not when the body is complete");
    let elapsed = started.elapsed();

    for (read, outcome) in [
        ("text", text),
        ("bytes", bytes),
        ("json", json),
        ("chunk", chunks),
        ("into_body", body.map_err(|e| e.with_integration("slow"))),
    ] {
        let error = outcome.expect_err(read);
        assert_body_timeout(&error, read);
    }
    // Not a timing assertion: the reads cannot have ended before the deadline passed.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
}

/// A request's own, shorter timeout is the deadline of its body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_covers_the_body() {
    let addr = trickling_server(TRICKLE_BYTES, Duration::from_secs(1)).await;
    let client = client(addr, Duration::from_secs(3600));
    let response = client
        .api("slow")
        .unwrap()
        .get("/export")
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .unwrap();
    let deadline = response.body_deadline().expect("the body has a deadline");
    assert!(deadline <= tokio::time::Instant::now() + Duration::from_secs(1));
    let error = tokio::time::timeout(MARGIN, response.text())
        .await
        .expect("ends at the request's deadline")
        .unwrap_err();
    assert_body_timeout(&error, "text");
}

/// A download may take longer than the call's deadline: with a timeout of its own, or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_may_get_its_own_read_timeout_or_none() {
    // Three bytes over about 2.4 s, under a call deadline of 1 s.
    let addr = trickling_server(3, Duration::from_millis(800)).await;
    let client = client(addr, Duration::from_secs(1));

    let error = head(&client).await.text().await.unwrap_err();
    assert_body_timeout(&error, "default");

    let response = head(&client)
        .await
        .with_body_timeout(Duration::from_secs(60));
    assert!(response.body_deadline().is_some());
    let text = tokio::time::timeout(MARGIN, response.text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "111");

    let response = head(&client).await.without_body_deadline();
    assert_eq!(response.body_deadline(), None);
    let mut chunks = response;
    let mut read = Vec::new();
    while let Some(chunk) = tokio::time::timeout(MARGIN, chunks.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, b"111");

    // Its own timeout, shorter than the body needs: the error says which timeout it was.
    let response = head(&client)
        .await
        .with_body_timeout(Duration::from_millis(100));
    let error = response.bytes().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(
        error
            .to_string()
            .ends_with("reading the response body timed out after 100ms"),
        "{error}"
    );
}

/// A body that arrived whole is read whatever the time: only a wait past the deadline fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_already_received_is_not_refused() {
    let upstream = tower::service_fn(|_: http::Request<integration_core::Body>| async {
        Ok::<_, integration_core::BoxError>(http::Response::new(
            integration_client::ResponseBody::from("{\"ok\":true}"),
        ))
    });
    let client = Client::from_service("fast", "https://fast.example/", upstream).unwrap();
    let response = client
        .api("fast")
        .unwrap()
        .get("/")
        .timeout(Duration::from_millis(50))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let value: serde_json::Value = response.json().await.unwrap();
    assert_eq!(value["ok"], true);
}

/// A loopback server whose first answer is a 503 and whose second is a 200 that announces 100 bytes
/// and closes the connection after 10: a body that breaks while it is read, on the second attempt.
async fn breaking_after_a_retry_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut answered = 0;
        // Bounded: two answers, on as many connections as the client opens.
        while answered < 2 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            while answered < 2 {
                if !read_head(&mut socket).await {
                    break;
                }
                answered += 1;
                if answered == 1 {
                    let busy = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(busy.as_bytes()).await.is_err() {
                        break;
                    }
                } else {
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
            }
        }
    });
    addr
}

/// A body that breaks while it is read is an error naming the integration and the attempts the call
/// took (read from the response when the error comes, not before: issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_reports_the_attempts_of_its_call() {
    let addr = breaking_after_a_retry_server().await;
    let client = client(addr, Duration::from_secs(10));
    let response = tokio::time::timeout(MARGIN, head(&client))
        .await
        .expect("the retried head arrives");
    assert_eq!(response.attempts(), 2);
    let error = tokio::time::timeout(MARGIN, response.bytes())
        .await
        .expect("the broken body ends the read")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Body, "{error:#}");
    assert_eq!(error.integration(), Some("slow"));
    assert_eq!(error.attempts(), 2, "{error:#}");
}
