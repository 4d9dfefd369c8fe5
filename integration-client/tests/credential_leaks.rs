//! Issue 14, part 1, end to end through the facade: a credential under any header or query
//! parameter name never reaches another origin (a redirect to another port), a log line, a span
//! field, an error's `Display`/`Debug`, or the `Debug` of the client, its configuration or a
//! response.
//!
//! # How logs are captured
//!
//! Through `integration_core::testing`, the one global capturing subscriber of the workspace's
//! tests (a thread-local subscriber is not correct when tests run in parallel: tracing caches a
//! callsite's interest process-wide). Each case's calls run under `block_on` on the test's thread,
//! where its capture is current; the work the runtime's workers do for a call runs inside the call's
//! spans, which belong to that capture. Captures of parallel tests stay apart.

use std::time::Duration;

use integration_client::Client;
use integration_config::{IntegrationConfig, IntegrationConfigBuilder, Secret};
use integration_core::testing::{Captured, capture};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tracing::Level;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Every text the capture recorded (span names, span and event fields), one per line.
fn captured(capture: &Captured) -> String {
    capture.all_text().join("\n")
}

/// Where the credential goes.
#[derive(Debug, Clone)]
enum Place {
    Header(String),
    Query(String),
}

/// Header names the transport or the stack set themselves, or that HTTP/1.1 gives a meaning.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "accept-encoding",
    "user-agent",
    "content-type",
    "traceparent",
    "tracestate",
    "idempotency-key",
    "location",
    "expect",
];

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "x-[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,8})?",
        "[a-z][a-z0-9!#$%&'*+.^_`|~-]{0,15}",
    ]
    .prop_filter("a header the stack sets itself", |name| {
        !RESERVED.contains(&name.as_str())
    })
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        header_name().prop_map(Place::Header),
        "[a-z][a-z0-9_]{0,12}".prop_map(Place::Query),
    ]
}

/// A credential no log line could contain by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{20}".prop_map(|tail| format!("S3cr3t{tail}"))
}

/// Two origins on two loopback ports: `origin` redirects to `other`.
struct Upstreams {
    origin: MockServer,
    other: MockServer,
}

impl Upstreams {
    async fn start() -> Self {
        let origin = MockServer::start().await;
        let other = MockServer::start().await;
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        for (from, to) in [
            ("/start", format!("{}/landing", other.uri())),
            ("/fail", format!("{}/broken", other.uri())),
            ("/gone", format!("http://127.0.0.1:{closed}/nowhere")),
        ] {
            Mock::given(method("GET"))
                .and(path(from))
                .respond_with(ResponseTemplate::new(302).insert_header("location", to.as_str()))
                .mount(&origin)
                .await;
        }
        Mock::given(path("/landing"))
            .respond_with(ResponseTemplate::new(200).set_body_string("landed"))
            .mount(&other)
            .await;
        Mock::given(path("/broken"))
            .respond_with(ResponseTemplate::new(500).set_body_string("broken"))
            .mount(&other)
            .await;
        Self { origin, other }
    }
}

fn config(upstreams: &Upstreams, place: &Place, secret: &str) -> IntegrationConfig {
    let builder: IntegrationConfigBuilder = IntegrationConfig::builder(upstreams.origin.uri());
    let builder = match place {
        Place::Header(name) => builder.api_key_header(name.clone(), Secret::new(secret)),
        Place::Query(name) => builder.api_key_query(name.clone(), Secret::new(secret)),
    };
    let mut config = builder.build().unwrap();
    config.retry.max_attempts = 2;
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(2);
    config.connect_timeout = Duration::from_secs(2);
    config
}

fn leaks(text: &str, secret: &str) -> bool {
    text.contains(secret)
}

/// One case: three calls (a redirect that lands, one that lands on a 500, one to a closed port),
/// then every place the credential must not reach, the logs of `capture` among them.
async fn case(
    upstreams: &Upstreams,
    place: &Place,
    secret: &str,
    capture: &Captured,
) -> Result<(), TestCaseError> {
    let config = config(upstreams, place, secret);
    let client = Client::builder()
        .api("leaky", config.clone())
        .build()
        .unwrap();
    let api = client.api("leaky").unwrap();

    let response = api.get("/start").send().await.unwrap();
    prop_assert_eq!(response.status(), 200, "the redirect was followed");
    let response_debug = format!("{response:?}");
    prop_assert_eq!(response.text().await.unwrap(), "landed");

    let failed = api
        .get("/fail")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_err();
    let gone = api.get("/gone").send().await.unwrap_err();

    // The origin did get the credential: the checks below are not vacuous.
    let at_origin = upstreams.origin.received_requests().await.unwrap();
    let carried = at_origin.iter().filter(|request| match place {
        Place::Header(name) => request
            .headers
            .get(name.as_str())
            .is_some_and(|value| value.as_bytes() == secret.as_bytes()),
        Place::Query(_) => request.url.as_str().contains(secret),
    });
    // Three calls, the failing ones retried once: at least three requests.
    let carried = carried.count();
    prop_assert!(
        carried >= 3,
        "{} requests reached the origin with the credential",
        carried
    );

    // Never another origin.
    for request in upstreams.other.received_requests().await.unwrap() {
        prop_assert!(!leaks(request.url.as_str(), secret), "{}", request.url);
        for (name, value) in &request.headers {
            prop_assert!(
                !leaks(&String::from_utf8_lossy(value.as_bytes()), secret),
                "header `{}` reached the other origin",
                name
            );
        }
    }

    // Never a log line or a span field; the capture did see the credential's place, redacted.
    let logs = captured(capture);
    prop_assert!(!leaks(&logs, secret), "{}", logs);
    let shown = match place {
        Place::Header(name) => format!("\"{}\": \"[REDACTED]\"", name.to_ascii_lowercase()),
        Place::Query(name) => format!("{name}=[REDACTED]"),
    };
    prop_assert!(logs.contains(&shown), "expected {} in {}", shown, logs);

    // Never an error, a Debug of the client, its configuration or a response.
    for text in [
        failed.to_string(),
        format!("{failed:#}"),
        format!("{failed:?}"),
        gone.to_string(),
        format!("{gone:#}"),
        format!("{gone:?}"),
        format!("{client:?}"),
        format!("{api:?}"),
        format!("{:?}", api.get("/start")),
        format!("{config:?}"),
        response_debug,
    ] {
        prop_assert!(!leaks(&text, secret), "{}", text);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The names of the report: a header `X-Passphrase` and `X-Authentication`, a query
/// parameter `appid`. Regression (issue 14, part 1): each went to another origin on a redirect
/// and/or into `http.request.headers` / `url.full` in plain text; only a name the redaction rule
/// happened to guess (`X-API-Key`, `api_key`) was safe.
#[test]
fn regression_credentials_under_unusual_names_do_not_leak() {
    let rt = runtime();
    let upstreams = rt.block_on(Upstreams::start());
    for (place, secret) in [
        (
            Place::Header("X-Passphrase".into()),
            "S3cr3tFromTheIssueReport1",
        ),
        (
            Place::Header("X-Authentication".into()),
            "S3cr3tFromTheIssueReport2",
        ),
        (Place::Query("appid".into()), "S3cr3tFromTheIssueReport3"),
    ] {
        let capture = capture(Level::TRACE);
        if let Err(error) = rt.block_on(case(&upstreams, &place, secret, &capture)) {
            panic!("{place:?}: {error}");
        }
    }
}

/// The property: for arbitrary header and query parameter names, the credential never leaks.
#[test]
fn a_credential_under_any_name_never_leaks() {
    let rt = runtime();
    let upstreams = rt.block_on(Upstreams::start());
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(place(), secret()), |(place, secret)| {
            let capture = capture(Level::TRACE);
            rt.block_on(case(&upstreams, &place, &secret, &capture))
        })
        .unwrap();
}
