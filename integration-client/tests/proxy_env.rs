//! Issue 15, part 2: a client takes the environment's proxy by default. The variables are set on a
//! child process (this test binary run again), never on this one: changing the environment of a
//! process whose other tests read it would race them.

use std::process::Command;

use integration_client::Client;
use integration_config::{IntegrationConfig, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHILD: &str = "PROXY_ENV_TEST_UPSTREAM";

/// In the child: one integration with no `proxy` key (the environment's) and one with
/// `proxy = "none"`; both calls must succeed.
async fn child(upstream: &str) {
    let mut direct = IntegrationConfig::builder(upstream)
        .max_attempts(1)
        .build()
        .unwrap();
    direct.proxy = ProxyConfig::Off;
    let client = Client::builder()
        .api(
            "from-env",
            IntegrationConfig::builder(upstream)
                .max_attempts(1)
                .build()
                .unwrap(),
        )
        .api("direct", direct)
        .build()
        .unwrap();
    for name in ["from-env", "direct"] {
        let response = client.api(name).unwrap().get("/hello").send().await;
        let text = response.unwrap().text().await.unwrap();
        assert_eq!(text, "hello", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_proxy_is_taken_by_default_and_none_ignores_it() {
    if let Ok(upstream) = std::env::var(CHILD) {
        return child(&upstream).await;
    }
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
        .mount(&upstream)
        .await;
    // A proxy that answers every request itself, recording the request heads it was sent.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (heads, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&buf).into_owned());
                let _ = client
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
            });
        }
    });

    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "the_environments_proxy_is_taken_by_default_and_none_ignores_it",
            "--nocapture",
        ])
        .env(CHILD, upstream.uri())
        // Lower case, with credentials in the URL, as many deployments set it.
        .env("http_proxy", format!("http://svc:pw%40env@{proxy}"));
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ] {
        command.env_remove(name);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let head = received.try_recv().expect("the proxy was asked");
    assert!(
        head.starts_with(&format!("GET {}/hello HTTP/1.1\r\n", upstream.uri())),
        "{head}"
    );
    // base64("svc:pw@env")
    let authorization = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim());
    assert_eq!(authorization, Some("Basic c3ZjOnB3QGVudg=="), "{head}");
    assert!(
        received.try_recv().is_err(),
        "`proxy = \"none\"` went direct"
    );
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}
