//! Span fields and event levels of a success, a retried call, a failure, and of attempts.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use integration_core::classify::RetryReason;
use integration_core::error::RateLimited;
use integration_core::ext::{Attempt, Attempts, IntegrationName};
use integration_core::testing::{Captured, capture};
use integration_core::{BoxError, names};
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;

fn request(uri: &str) -> Request<String> {
    let mut request = Request::get(uri)
        .header("authorization", "Bearer tok3n-value")
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    request
}

fn json(status: StatusCode, body: &str) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

async fn call<F, Fut>(
    policy: LogPolicy,
    request: Request<String>,
    handler: F,
) -> (Result<String, BoxError>, Captured)
where
    F: FnMut(Request<String>) -> Fut,
    Fut: Future<Output = Result<Response<String>, BoxError>>,
{
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy))
        .service_fn(handler);
    let result = match service.oneshot(request).await {
        Ok(response) => {
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            Ok(String::from_utf8(bytes.to_vec()).unwrap())
        }
        Err(error) => Err(error),
    };
    (result, captured.captured())
}

#[tokio::test]
async fn success_span_carries_otel_http_client_fields() {
    let (result, captured) = call(
        LogPolicy::default(),
        request("https://api.github.test:8443/user?access_token=abc123&page=2"),
        |_| async { Ok(json(StatusCode::OK, r#"{"login":"ana"}"#)) },
    )
    .await;
    assert_eq!(result.unwrap(), r#"{"login":"ana"}"#);

    let spans = captured.span_named("GET");
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.level, Level::INFO);
    assert_eq!(span.field(names::HTTP_REQUEST_METHOD), Some("GET"));
    assert_eq!(span.field(names::SERVER_ADDRESS), Some("api.github.test"));
    assert_eq!(span.field(names::SERVER_PORT), Some("8443"));
    assert_eq!(
        span.field(names::URL_FULL),
        Some("https://api.github.test:8443/user?access_token=[REDACTED]&page=2")
    );
    assert_eq!(span.field(names::INTEGRATION), Some("github"));
    assert_eq!(span.field(names::HTTP_RESPONSE_STATUS_CODE), Some("200"));
    assert_eq!(span.field(names::ERROR_TYPE), None);
    // `internal`, OpenTelemetry's default kind, is not written (issue 19: one field fewer to format).
    assert_eq!(span.field("otel.kind"), None);

    let response = captured.event("response").expect("a response event");
    assert_eq!(
        response.level,
        Level::DEBUG,
        "success logs at debug by default"
    );
    assert_eq!(response.span, Some(span.id));
    let request_event = captured.event("request").expect("a request event");
    assert_eq!(
        request_event.field("http.request.headers"),
        Some(r#"{"authorization": "Bearer [REDACTED]"}"#)
    );
    let body = captured.event("response body").expect("a body event");
    assert_eq!(body.field("http.response.body"), Some(r#"{"login":"ana"}"#));
    assert_eq!(body.field("http.response.body.complete"), Some("true"));
}

#[tokio::test]
async fn success_level_is_configurable() {
    let (_, captured) = call(
        LogPolicy::default().with_success_level(Level::INFO),
        request("https://api.github.test/user"),
        |_| async { Ok(json(StatusCode::OK, "{}")) },
    )
    .await;
    assert_eq!(captured.event("response").unwrap().level, Level::INFO);
}

#[tokio::test]
async fn retried_call_logs_at_info_with_resend_count_and_reasons() {
    let (_, captured) = call(
        LogPolicy::default(),
        request("https://api.github.test/user"),
        |_| async {
            // What the retry layer does: the final response carries the record of the attempts.
            let mut attempts = Attempts::first();
            attempts.record_retry(RetryReason::Throttled, Duration::from_secs(1));
            attempts.record_retry(RetryReason::ServerError, Duration::from_millis(200));
            let mut response = json(StatusCode::OK, "{}");
            response.extensions_mut().insert(attempts);
            Ok(response)
        },
    )
    .await;
    let span = &captured.span_named("GET")[0];
    assert_eq!(span.field(names::HTTP_REQUEST_RESEND_COUNT), Some("2"));
    assert_eq!(span.field(names::HTTP_RESPONSE_STATUS_CODE), Some("200"));
    let event = captured.event("response").unwrap();
    assert_eq!(event.level, Level::INFO);
    assert_eq!(event.field("attempts"), Some("3"));
    assert_eq!(event.field("retry.reasons"), Some("throttled,server_error"));
    assert_eq!(event.field("retry.waited_ms"), Some("1200.0"));
}

#[tokio::test]
async fn failed_answers_log_warn_for_4xx_and_error_for_5xx() {
    for (status, level) in [
        (StatusCode::NOT_FOUND, Level::WARN),
        (StatusCode::SERVICE_UNAVAILABLE, Level::ERROR),
    ] {
        let (_, captured) = call(
            LogPolicy::default(),
            request("https://api.github.test/user"),
            move |_| async move { Ok(json(status, r#"{"message":"nope"}"#)) },
        )
        .await;
        let span = &captured.span_named("GET")[0];
        assert_eq!(span.field(names::ERROR_TYPE), Some(status.as_str()));
        assert_eq!(span.field("otel.status_code"), Some("ERROR"));
        assert_eq!(captured.event("response").unwrap().level, level);
        // The body of a failure is what the user needs most: captured at the failure's level.
        let body = captured.event("response body").unwrap();
        assert_eq!(body.level, level);
        assert_eq!(
            body.field("http.response.body"),
            Some(r#"{"message":"nope"}"#)
        );
    }
}

#[tokio::test]
async fn transport_error_logs_error_type_and_redacted_message() {
    #[derive(Debug)]
    struct ConnectFailed(io::Error);
    impl std::fmt::Display for ConnectFailed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error trying to connect to https://api.github.test/user?api_key=leaky")
        }
    }
    impl std::error::Error for ConnectFailed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let (result, captured) = call(
        LogPolicy::default(),
        request("https://api.github.test/user"),
        |_| async {
            Err(Box::new(ConnectFailed(io::ErrorKind::ConnectionRefused.into())) as BoxError)
        },
    )
    .await;
    assert!(result.is_err(), "the error passes through");
    let span = &captured.span_named("GET")[0];
    assert_eq!(span.field(names::ERROR_TYPE), Some("connect"));
    assert_eq!(span.field(names::HTTP_RESPONSE_STATUS_CODE), None);
    let failed = captured.event("failed").unwrap();
    assert_eq!(failed.level, Level::ERROR);
    let message = failed.field("error").unwrap();
    assert!(message.contains("api_key=[REDACTED]"), "{message}");
    assert!(!message.contains("leaky"), "{message}");
}

#[tokio::test]
async fn a_layers_refusal_is_typed_by_its_kind() {
    let (_, captured) = call(
        LogPolicy::default(),
        request("https://api.github.test/user"),
        |_| async { Err(Box::new(RateLimited::new(Some(Duration::from_secs(2)))) as BoxError) },
    )
    .await;
    assert_eq!(
        captured.span_named("GET")[0].field(names::ERROR_TYPE),
        Some("rate_limited")
    );
}

/// A stand-in for the retry layer: sends attempt 1 and 2 through the attempt-scoped service and
/// records the attempts in the final response, as `integration-retry` does.
#[tokio::test]
async fn attempt_spans_are_children_of_the_call_span_with_resend_count() {
    let captured = capture(LevelFilter::TRACE);

    let transport = service_fn(|request: Request<String>| async move {
        let status = if Attempt::of(&request).get() == 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        Ok::<_, Infallible>(json(status, "{}"))
    });
    let attempts = ServiceBuilder::new()
        .layer(AttemptLogLayer::new(LogPolicy::default()))
        .service(transport);
    let retry = service_fn(move |request: Request<String>| {
        let attempts = attempts.clone();
        async move {
            let mut record = Attempts::first();
            let mut attempt = Attempt::FIRST;
            loop {
                let mut copy = Request::new(request.body().clone());
                *copy.uri_mut() = request.uri().clone();
                *copy.headers_mut() = request.headers().clone();
                *copy.extensions_mut() = request.extensions().clone();
                copy.extensions_mut().insert(attempt);
                let response = attempts.clone().oneshot(copy).await?;
                if response.status().is_success() {
                    let mut response = response.map(|_| String::new());
                    response.extensions_mut().insert(record);
                    return Ok::<_, BoxError>(response);
                }
                record.record_retry(RetryReason::ServerError, Duration::ZERO);
                attempt = attempt.next();
            }
        }
    });
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service(retry);
    service
        .oneshot(request("https://api.github.test/user"))
        .await
        .unwrap();

    let spans = captured.span_named("GET");
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let call = spans
        .iter()
        .find(|s| s.field("otel.kind").is_none())
        .unwrap();
    let tries: Vec<_> = spans
        .iter()
        .filter(|s| s.field("otel.kind") == Some("client"))
        .collect();
    assert_eq!(tries.len(), 2);
    for (n, attempt) in tries.iter().enumerate() {
        assert_eq!(
            attempt.parent,
            Some(call.id),
            "attempt spans nest in the call span"
        );
        // OpenTelemetry: only a resent request carries a resend count.
        let expected = (n > 0).then(|| n.to_string());
        assert_eq!(
            attempt.field(names::HTTP_REQUEST_RESEND_COUNT),
            expected.as_deref()
        );
        assert_eq!(attempt.field(names::INTEGRATION), Some("github"));
    }
    assert_eq!(
        tries[0].field(names::HTTP_RESPONSE_STATUS_CODE),
        Some("503")
    );
    assert_eq!(tries[0].field(names::ERROR_TYPE), Some("503"));
    assert_eq!(
        tries[1].field(names::HTTP_RESPONSE_STATUS_CODE),
        Some("200")
    );
    assert_eq!(call.field(names::HTTP_REQUEST_RESEND_COUNT), Some("1"));
    assert_eq!(call.field(names::HTTP_RESPONSE_STATUS_CODE), Some("200"));
}

#[tokio::test]
async fn headers_and_bodies_can_be_turned_off() {
    let (_, captured) = call(
        LogPolicy::default().with_headers(false).with_bodies(false),
        request("https://api.github.test/user"),
        |_| async { Ok(json(StatusCode::OK, r#"{"a":1}"#)) },
    )
    .await;
    assert_eq!(
        captured
            .event("request")
            .unwrap()
            .field("http.request.headers"),
        None
    );
    assert_eq!(
        captured
            .event("response")
            .unwrap()
            .field("http.response.headers"),
        None
    );
    assert!(captured.event("response body").is_none());
}

#[tokio::test]
async fn span_level_is_configurable() {
    let (_, captured) = call(
        LogPolicy::default().with_span_level(Level::DEBUG),
        request("https://api.github.test/user"),
        |_| async { Ok(json(StatusCode::OK, "{}")) },
    )
    .await;
    assert_eq!(captured.span_named("GET")[0].level, Level::DEBUG);
}

#[tokio::test]
async fn dropped_call_is_recorded_as_cancelled() {
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(|_: Request<String>| {
            std::future::pending::<Result<Response<String>, Infallible>>()
        });
    let future = service.oneshot(request("https://api.github.test/user"));
    let _ = tokio::time::timeout(Duration::from_millis(1), future).await;
    assert_eq!(
        captured.span_named("GET")[0].field(names::ERROR_TYPE),
        Some("cancelled")
    );
    assert!(captured.event("cancelled before a response").is_some());
}

/// A failure's line stands alone, even under a WARN-only subscriber that drops the INFO span: it
/// says which integration, which method and which URL (redacted).
#[tokio::test]
async fn failure_events_carry_their_context_when_the_span_is_off() {
    let captured = capture(LevelFilter::WARN);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(json(StatusCode::BAD_GATEWAY, r#"{"error":"upstream"}"#))
        });
    let response = service
        .oneshot(request("https://api.github.test/user?token=abc"))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let event = captured.event("response").unwrap();
    assert_eq!(event.level, Level::ERROR);
    assert_eq!(event.field(names::INTEGRATION), Some("github"));
    assert_eq!(event.field(names::HTTP_REQUEST_METHOD), Some("GET"));
    assert_eq!(
        event.field(names::URL_FULL),
        Some("https://api.github.test/user?token=[REDACTED]")
    );
    let body = captured.event("response body").unwrap();
    assert_eq!(body.field(names::INTEGRATION), Some("github"));
    assert_eq!(
        body.field("http.response.body"),
        Some(r#"{"error":"upstream"}"#)
    );
}
