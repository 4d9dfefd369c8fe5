//! The levels the facade logs at: a failed attempt that the retry layer replays is a WARN line of the
//! attempt span; the call span logs the call's outcome at the configured levels.

use std::time::Duration;

use integration_client::Client;
use integration_config::IntegrationConfig;
use integration_core::testing::{Captured, capture};
use tracing::Level;
use tracing::level_filters::LevelFilter;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// One `integration_log` event: its level, whether it was inside an attempt span (two spans deep: the
/// call's and the attempt's) and its message.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    level: Level,
    attempt: bool,
    message: String,
}

/// The `integration_log` events of a capture.
fn lines(captured: &Captured) -> Vec<Line> {
    captured
        .events()
        .into_iter()
        .filter(|event| event.target == "integration_log")
        .map(|event| Line {
            level: event.level,
            attempt: event.scope.len() >= 2,
            message: event.message().to_owned(),
        })
        .collect()
}

fn client(server: &MockServer, attempts: u32) -> Client {
    let mut config = IntegrationConfig::builder(server.uri()).build().unwrap();
    config.retry.max_attempts = attempts;
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    Client::builder().api("partner", config).build().unwrap()
}

/// An upstream that answers one 503, then 200s (each expected once).
async fn fails_once_then_succeeds() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// One call with two attempts allowed: the 503, then the 200.
async fn get_after_one_retry(server: &MockServer) {
    let response = client(server, 2)
        .api("partner")
        .unwrap()
        .get("/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Regression: a 503 on an attempt that is then retried logged at ERROR through `AttemptLogLayer`,
/// so a call that succeeded on its second attempt left an ERROR line behind.
#[tokio::test]
async fn a_retried_503_logs_at_warn_on_the_attempt_and_no_error() {
    let server = fails_once_then_succeeds().await;
    let captured = capture(LevelFilter::TRACE);
    get_after_one_retry(&server).await;
    let lines = lines(&captured);
    let failed_attempts: Vec<&Line> = lines
        .iter()
        .filter(|l| l.attempt && l.level <= Level::WARN)
        .collect();
    assert_eq!(failed_attempts.len(), 1, "{lines:#?}");
    assert_eq!(failed_attempts[0].level, Level::WARN, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.level != Level::ERROR),
        "no ERROR line for a call that succeeded: {lines:#?}"
    );
}

/// The call span keeps the outcome levels: a call whose every attempt got 503 logs one ERROR line, at
/// the call level, and a WARN line per attempt.
#[tokio::test]
async fn a_failed_call_logs_error_once_at_the_call_level() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&server)
        .await;
    let captured = capture(LevelFilter::TRACE);
    let response = client(&server, 2)
        .api("partner")
        .unwrap()
        .get("/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let lines = lines(&captured);
    let errors: Vec<&Line> = lines.iter().filter(|l| l.level == Level::ERROR).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(
        !errors[0].attempt,
        "the ERROR line is the call's: {lines:#?}"
    );
    let attempt_warnings = lines
        .iter()
        .filter(|l| l.attempt && l.level == Level::WARN)
        .count();
    assert_eq!(attempt_warnings, 2, "{lines:#?}");
}

/// Regression (issue 15, part 6): an attempt's line and the call's line both read `response`, and
/// with the attempt span filtered out (its default `debug`) nothing told them apart. An attempt's
/// line now reads `attempt response` and carries its number.
#[tokio::test]
async fn regression_attempt_lines_say_attempt_and_their_number() {
    let server = fails_once_then_succeeds().await;
    let captured = capture(LevelFilter::INFO);
    get_after_one_retry(&server).await;
    let events: Vec<_> = captured
        .events()
        .into_iter()
        .filter(|event| event.target == "integration_log")
        .collect();
    let attempt = events
        .iter()
        .find(|e| e.message() == "attempt response")
        .unwrap_or_else(|| panic!("an attempt line: {events:#?}"));
    assert_eq!(attempt.field("attempt"), Some("1"));
    let call = events
        .iter()
        .find(|e| e.message() == "response")
        .unwrap_or_else(|| panic!("the call's line: {events:#?}"));
    assert_eq!(call.field("attempt"), None);
    assert_eq!(call.field("attempts"), Some("2"));
}
