//! Black box: the layers in a `ServiceBuilder` over a real hyper-util client, against a wiremock
//! upstream on 127.0.0.1.

use std::net::TcpListener;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use integration_core::ext::IntegrationName;
use integration_core::testing::capture;
use integration_core::{Body, names};
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn a_real_call_is_logged_redacted_with_its_streamed_body_capped() {
    let server = MockServer::start().await;
    let big = "x".repeat(10_000);
    let body = format!(r#"{{"refresh_token":"rt-0123456789","padding":"{big}"}}"#);
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
        .mount(&server)
        .await;

    let captured = capture(LevelFilter::TRACE);
    let policy = LogPolicy::default();
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy.clone()))
        .layer(AttemptLogLayer::new(policy))
        .service(client());
    let mut request = Request::post(format!(
        "{}/oauth/token?client_secret=cs-abcdef",
        server.uri()
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(Body::from(
        "grant_type=refresh_token&refresh_token=rt-0123456789",
    ))
    .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("oauth"));
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(received.len(), body.len(), "the caller gets the whole body");

    let port = server.address().port().to_string();
    let spans = captured.span_named("POST");
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_eq!(span.field(names::SERVER_ADDRESS), Some("127.0.0.1"));
        assert_eq!(span.field(names::SERVER_PORT), Some(port.as_str()));
        assert_eq!(span.field(names::HTTP_RESPONSE_STATUS_CODE), Some("200"));
        assert!(
            span.field(names::URL_FULL)
                .unwrap()
                .ends_with("/oauth/token?client_secret=[REDACTED]")
        );
    }
    let bodies: Vec<_> = captured
        .events()
        .into_iter()
        .filter(|e| e.message() == "response body")
        .collect();
    assert_eq!(
        bodies.len(),
        2,
        "call and attempt each log the body they saw"
    );
    for event in &bodies {
        assert_eq!(event.level, Level::DEBUG);
        assert_eq!(
            event.field("http.response.body.size"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(event.field("http.response.body.truncated"), Some("true"));
        let shown = event.field("http.response.body").unwrap();
        assert!(
            shown.starts_with(r#"{"refresh_token":"[REDACTED]","padding":"xxx"#),
            "{shown}"
        );
        assert!(shown.len() <= 4096 + 16, "capped: {} bytes", shown.len());
    }
    for line in captured.all_text() {
        assert!(!line.contains("rt-0123456789"), "{line}");
        assert!(!line.contains("cs-abcdef"), "{line}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_typed_connect() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service(client());
    let request = Request::get(format!("http://127.0.0.1:{port}/x?api_key=k-123456"))
        .body(Body::empty())
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    assert!(integration_core::Error::from(error).is_connect());
    let span = &captured.span_named("GET")[0];
    assert_eq!(span.field(names::ERROR_TYPE), Some("connect"));
    let failed = captured.event("failed").unwrap();
    assert_eq!(failed.level, Level::ERROR);
    assert!(!failed.field("error").unwrap().contains("k-123456"));
}
