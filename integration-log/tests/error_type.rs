//! `error.type`, `http.response.status_code`, the resend count and the level of the `failed` event for
//! every kind of failure a stack hands the call layer: our typed errors, the retry layer's boxed
//! `integration_core::Error`, tower's and the transport's errors.

use std::io;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::error::{AttemptTimeout, BudgetExhausted, DeadlineExceeded};
use integration_core::ext::IntegrationName;
use integration_core::testing::capture;
use integration_core::{BoxError, Error, ErrorKind, names};
use integration_log::{LogLayer, LogPolicy};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;

/// One call through the layer failing with `make()`; returns (`error.type`, status code field,
/// resend count field, level of the `failed` event).
async fn fail_with(
    make: fn() -> BoxError,
) -> (Option<String>, Option<String>, Option<String>, Level) {
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(move |_: Request<String>| async move { Err::<Response<String>, _>(make()) });
    let mut request = Request::get("https://api.github.test/user")
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("github"));
    assert!(service.oneshot(request).await.is_err());
    let span = &captured.span_named("GET")[0];
    let failed = captured.event("failed").expect("a failed event");
    (
        span.field(names::ERROR_TYPE).map(str::to_owned),
        span.field(names::HTTP_RESPONSE_STATUS_CODE)
            .map(str::to_owned),
        span.field(names::HTTP_REQUEST_RESEND_COUNT)
            .map(str::to_owned),
        failed.level,
    )
}

/// A failure, then the `error.type`, status code and resend count it must give, and the level of its
/// `failed` event.
type Case = (
    fn() -> BoxError,
    Option<String>,
    Option<String>,
    Option<String>,
    Level,
);

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[tokio::test]
async fn error_type_names_every_kind_of_failure() {
    let cases: [Case; 7] = [
        (
            || Box::new(AttemptTimeout::new(Duration::from_secs(1))),
            s("timeout"),
            None,
            None,
            Level::ERROR,
        ),
        (
            || Box::new(tower::timeout::error::Elapsed::new()),
            s("timeout"),
            None,
            None,
            Level::ERROR,
        ),
        (
            || Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
            s("other"),
            None,
            None,
            Level::ERROR,
        ),
        // What the retry layer returns: a boxed `Error` with its attempts, after a 429 whose hint
        // passed the deadline. The status makes it a client-side failure: WARN by default.
        (
            || {
                Box::new(
                    Error::from(Box::new(DeadlineExceeded::would_wait(
                        Duration::from_secs(3600),
                        Some(StatusCode::TOO_MANY_REQUESTS),
                    )) as BoxError)
                    .with_attempts(1),
                )
            },
            s("deadline_exceeded"),
            s("429"),
            // One attempt: not resent, so no resend count (OpenTelemetry).
            None,
            Level::WARN,
        ),
        (
            || {
                Box::new(
                    Error::from(Box::new(BudgetExhausted::new(Some(
                        StatusCode::SERVICE_UNAVAILABLE,
                    ))) as BoxError)
                    .with_attempts(2),
                )
            },
            s("retry_budget_exhausted"),
            s("503"),
            s("1"),
            Level::ERROR,
        ),
        (
            || Box::new(Error::status_error(StatusCode::BAD_GATEWAY).with_attempts(3)),
            s("502"),
            s("502"),
            s("2"),
            Level::ERROR,
        ),
        // An `Error` of kind Other is typed by its cause.
        (
            || {
                Box::new(
                    Error::new(ErrorKind::Other)
                        .with_source(io::Error::from(io::ErrorKind::ConnectionRefused)),
                )
            },
            s("connect"),
            None,
            None,
            Level::ERROR,
        ),
    ];
    for (make, error_type, status, resends, level) in cases {
        let (got_type, got_status, got_resends, got_level) = fail_with(make).await;
        let shown = make().to_string();
        assert_eq!(got_type, error_type, "{shown}");
        assert_eq!(got_status, status, "{shown}");
        assert_eq!(got_resends, resends, "{shown}");
        assert_eq!(got_level, level, "{shown}");
    }
}
