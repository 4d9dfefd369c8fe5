//! The disabled path: with every level of the policy filtered out, the layer records nothing and
//! captures nothing; what is still on (metrics, `traceparent`) keeps working, and a filter that lets
//! only the most severe level through still gets its failures.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use integration_core::ext::IntegrationName;
use integration_core::names;
use integration_core::testing::{CaptureGuard, capture};
use integration_log::{LogLayer, LogPolicy};
use metrics_util::MetricKind;
use metrics_util::debugging::DebuggingRecorder;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};

/// A capture whose filter is by target: everything of other crates at TRACE, this crate's as given.
/// The global maximum level stays TRACE, so only the callsite checks can find the layer off.
fn by_target(integration_log: LevelFilter) -> CaptureGuard {
    capture(
        Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target("integration_log", integration_log),
    )
}

/// One call answered with `status` and a JSON body; returns the headers the upstream saw, whether
/// the response body was being captured, and the body as read.
async fn call(policy: LogPolicy, status: StatusCode) -> (http::HeaderMap, bool, Bytes) {
    let seen = Arc::new(Mutex::new(http::HeaderMap::new()));
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy))
        .service_fn({
            let seen = seen.clone();
            move |request: Request<String>| {
                *seen.lock().unwrap() = request.headers().clone();
                async move {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(br#"{"ok":true}"#)));
                    *response.status_mut() = status;
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                }
            }
        });
    let mut request = Request::post("https://api.example.test/v1/items?api_key=abc")
        .header("content-type", "application/json")
        .body(r#"{"password":"abc"}"#.to_owned())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("example"));
    let response = service.oneshot(request).await.unwrap();
    let capturing = response.body().is_capturing();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let headers = seen.lock().unwrap().clone();
    (headers, capturing, body)
}

/// Histogram names recorded while `f` runs, on a local debugging recorder.
fn histograms_during(f: impl FnOnce()) -> Vec<String> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.kind() == MetricKind::Histogram)
        .map(|(key, ..)| key.key().name().to_owned())
        .collect()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn with_its_target_off_and_metrics_off_the_layer_records_and_captures_nothing() {
    let captured = by_target(LevelFilter::OFF);
    let policy = LogPolicy::default().with_metrics(false).with_bodies(true);
    let histograms = histograms_during(|| {
        let (headers, capturing, body) = block_on(call(policy, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!capturing, "a disabled level captures no body");
        assert_eq!(
            &body[..],
            br#"{"ok":true}"#,
            "the body passes through whole"
        );
        assert!(headers.get("traceparent").is_none());
    });
    assert!(histograms.is_empty(), "metrics off: {histograms:?}");
    assert!(captured.spans().is_empty(), "{:?}", captured.spans());
    assert!(captured.events().is_empty(), "{:?}", captured.events());
}

#[test]
fn with_logs_off_the_duration_is_still_recorded() {
    let captured = by_target(LevelFilter::OFF);
    let histograms = histograms_during(|| {
        block_on(call(LogPolicy::default(), StatusCode::OK));
    });
    assert_eq!(histograms, [names::HTTP_CLIENT_REQUEST_DURATION]);
    assert!(captured.spans().is_empty());
    assert!(captured.events().is_empty());
}

#[test]
fn with_logs_and_metrics_off_traceparent_is_still_propagated() {
    let _captured = by_target(LevelFilter::OFF);
    let policy = LogPolicy::default()
        .with_metrics(false)
        .with_traceparent(true);
    let (headers, _, _) = block_on(call(policy, StatusCode::OK));
    let traceparent = headers.get("traceparent").expect("a traceparent header");
    assert_eq!(traceparent.len(), 55, "{traceparent:?}");
}

/// A filter that lets only `ERROR` through must still see a 5xx (the policy's most severe level),
/// though every other level of the policy is off: the layer is not "disabled" by its verbose levels.
#[test]
fn a_filter_at_error_still_gets_the_failures() {
    let captured = by_target(LevelFilter::ERROR);
    block_on(call(LogPolicy::default(), StatusCode::OK));
    assert!(captured.events().is_empty(), "a success is below ERROR");
    block_on(call(LogPolicy::default(), StatusCode::BAD_GATEWAY));
    let events = captured.events();
    assert!(events.iter().all(|e| e.level == Level::ERROR), "{events:?}");
    let response = captured.event("response").expect("the response event");
    assert_eq!(
        response.field(names::HTTP_RESPONSE_STATUS_CODE),
        Some("502")
    );
    let body = captured.event("response body").expect("the body event");
    assert_eq!(body.field("http.response.body"), Some(r#"{"ok":true}"#));
    assert!(
        response
            .field(names::URL_FULL)
            .is_some_and(|url| url.contains("api.example.test") && !url.contains("abc")),
        "{events:?}"
    );
}

/// Spans at `INFO` with every event at `DEBUG` or above: a filter at `INFO` records the span.
#[test]
fn a_span_alone_enables_the_layer() {
    let captured = by_target(LevelFilter::INFO);
    let policy = LogPolicy::default()
        .with_metrics(false)
        .with_request_level(Level::TRACE)
        .with_success_level(Level::TRACE);
    block_on(call(policy, StatusCode::OK));
    let spans = captured.span_named("POST");
    assert_eq!(spans.len(), 1, "{:?}", captured.spans());
    assert_eq!(
        spans[0].field(names::SERVER_ADDRESS),
        Some("api.example.test")
    );
    assert!(captured.events().is_empty());
}
