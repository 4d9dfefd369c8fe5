//! Issue 14, part 6: errors that say where. A failed connect names the host, the port and the short
//! cause in plain `Display`; a failed token request names the token URL without its query.

use std::net::SocketAddr;
use std::time::Duration;

use integration_client::Client;
use integration_config::Config;
use integration_core::ErrorKind;
use integration_core::error::{AuthFailed, ConnectCause, ConnectFailed};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A loopback port with nothing listening on it (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn client(text: &str) -> Client {
    Client::from_config(Config::from_toml_str(text).unwrap()).unwrap()
}

/// Regression (issue 14): `integration `x`, attempt 3: could not connect` said neither where nor
/// why unless printed with `{:#}`.
#[tokio::test]
async fn a_refused_connect_names_the_host_port_and_cause_in_display() {
    let addr = closed_port().await;
    let client = client(&format!(
        r#"
        [integrations.x]
        base_url = "http://127.0.0.1:{port}/v1/"
        retry = {{ max_attempts = 3, base = "1ms", cap = "2ms" }}
        "#,
        port = addr.port()
    ));
    let error = client
        .api("x")
        .unwrap()
        .get("/items?api_key=k-123456789")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:#}");
    assert_eq!(
        error.to_string(),
        format!(
            "integration `x`, attempt 3: could not connect to 127.0.0.1:{} (connection refused)",
            addr.port()
        )
    );
    let failed = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<ConnectFailed>())
        .expect("the typed error is the source");
    assert_eq!(failed.host(), "127.0.0.1");
    assert_eq!(failed.port(), addr.port());
    assert_eq!(failed.cause(), ConnectCause::Refused);
    // Only the host and port: never the path or the query (a key in it, here).
    for shown in [
        error.to_string(),
        format!("{error:#}"),
        format!("{error:?}"),
    ] {
        assert!(!shown.contains("k-123456789"), "{shown}");
        assert!(!shown.contains("/v1/items"), "{shown}");
    }
}

/// Regression (issue 14): a token endpoint failure did not say which endpoint.
#[tokio::test]
async fn a_token_endpoint_failure_names_the_token_url_without_its_query() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let down = closed_port().await;
    let text = format!(
        r#"
        [integrations.answers]
        base_url = "{uri}"
        retry = {{ max_attempts = 1 }}
        auth = {{ type = "oauth2_client_credentials", token_url = "{uri}/oauth/token?tenant=t-secret-42", client_id = "app", client_secret = "s3cr3t-value" }}

        [integrations.unreachable]
        base_url = "{uri}"
        retry = {{ max_attempts = 1 }}
        auth = {{ type = "oauth2_client_credentials", token_url = "http://127.0.0.1:{port}/oauth/token?tenant=t-secret-42", client_id = "app", client_secret = "s3cr3t-value" }}

        [integrations.grant]
        base_url = "{uri}"
        retry = {{ max_attempts = 1 }}
        auth = {{ type = "jwt_bearer_grant", token_url = "{uri}/oauth/token?tenant=t-secret-42", algorithm = "HS256", private_key = "an-hmac-key-of-some-length" }}
        "#,
        uri = server.uri(),
        port = down.port(),
    );
    let client = client(&text);
    for (name, endpoint) in [
        ("answers", format!("{}/oauth/token", server.uri())),
        (
            "unreachable",
            format!("http://127.0.0.1:{}/oauth/token", down.port()),
        ),
        ("grant", format!("{}/oauth/token", server.uri())),
    ] {
        let error = tokio::time::timeout(
            Duration::from_secs(30),
            client.api(name).unwrap().get("/").send(),
        )
        .await
        .expect("bounded")
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Auth, "{name}: {error:#}");
        let shown = error.to_string();
        assert!(
            shown.contains(&format!("authentication failed at {endpoint}: ")),
            "{name}: {shown}"
        );
        let failed = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<AuthFailed>())
            .expect("the auth error is the source");
        assert_eq!(failed.endpoint(), Some(endpoint.as_str()), "{name}");
        for shown in [shown, format!("{error:#}"), format!("{error:?}")] {
            assert!(!shown.contains("t-secret-42"), "{name}: {shown}");
            assert!(!shown.contains("s3cr3t-value"), "{name}: {shown}");
        }
    }
}
