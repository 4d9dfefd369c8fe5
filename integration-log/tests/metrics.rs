//! Call and attempt durations through the `metrics` facade, checked with a debugging recorder.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::ext::{Attempt, IntegrationName};
use integration_core::{BoxError, names};
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use tower::{ServiceBuilder, ServiceExt};

/// A histogram: name, sorted labels, recorded values.
type Histogram = (String, Vec<(String, String)>, Vec<f64>);

/// Runs `f` on a paused current-thread runtime with a local debugging recorder; returns the
/// histograms as (name, sorted labels, values).
fn record<F: Future<Output = ()>>(f: impl FnOnce() -> F) -> Vec<Histogram> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(f()));
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key: CompositeKey = key;
            if key.kind() != MetricKind::Histogram {
                return None;
            }
            let mut labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let DebugValue::Histogram(values) = value else {
                return None;
            };
            Some((
                key.key().name().to_owned(),
                labels,
                values.into_iter().map(|v| v.into_inner()).collect(),
            ))
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.sort();
    out
}

fn request(uri: &str) -> Request<String> {
    let mut request = Request::get(uri).body(String::new()).unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("stripe"));
    request
}

#[test]
fn call_duration_is_recorded_with_otel_attributes() {
    let histograms = record(|| async {
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(LogPolicy::default()))
            .service_fn(|_: Request<String>| async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Ok::<_, Infallible>(Response::new(String::new()))
            });
        service
            .oneshot(request("https://api.stripe.test/v1/charges"))
            .await
            .unwrap();
    });
    assert_eq!(
        histograms,
        vec![(
            names::HTTP_CLIENT_REQUEST_DURATION.to_owned(),
            labels(&[
                (names::HTTP_REQUEST_METHOD, "GET"),
                (names::SERVER_ADDRESS, "api.stripe.test"),
                (names::HTTP_RESPONSE_STATUS_CODE, "200"),
                (names::INTEGRATION, "stripe"),
            ]),
            vec![0.25],
        )]
    );
}

#[test]
fn failures_carry_error_type() {
    let histograms = record(|| async {
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(LogPolicy::default()))
            .service_fn(|request: Request<String>| async move {
                if request.uri().path() == "/down" {
                    let mut response = Response::new(String::new());
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    return Ok(response);
                }
                Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            });
        service
            .clone()
            .oneshot(request("https://api.stripe.test/down"))
            .await
            .unwrap();
        service
            .oneshot(request("https://api.stripe.test/slow"))
            .await
            .unwrap_err();
    });
    let mut by_error: Vec<_> = histograms
        .iter()
        .map(|(_, labels, _)| {
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            (
                get(names::ERROR_TYPE),
                get(names::HTTP_RESPONSE_STATUS_CODE),
            )
        })
        .collect();
    by_error.sort();
    assert_eq!(
        by_error,
        vec![
            (Some("502".to_owned()), Some("502".to_owned())),
            (Some("timeout".to_owned()), None),
        ]
    );
}

#[test]
fn attempt_duration_is_recorded_per_attempt() {
    let histograms = record(|| async {
        let service = ServiceBuilder::new()
            .layer(AttemptLogLayer::new(LogPolicy::default()))
            .service_fn(|_: Request<String>| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, Infallible>(Response::new(String::new()))
            });
        for n in 1..=3 {
            let mut request = request("https://api.stripe.test/v1/charges");
            request.extensions_mut().insert(Attempt::new(n));
            service.clone().oneshot(request).await.unwrap();
        }
    });
    assert_eq!(histograms.len(), 1);
    let (name, _, values) = &histograms[0];
    assert_eq!(name, names::ATTEMPT_DURATION);
    assert_eq!(values, &vec![0.1, 0.1, 0.1]);
}

/// The label sets of successes are reused per thread: each call must still carry its own labels
/// (another integration, host, status or scope is never recorded under a reused key), and a reused
/// key goes to the recorder in force at the time, not to the one that saw it first.
#[test]
fn reused_label_sets_keep_each_calls_labels_and_follow_the_recorder() {
    async fn calls() {
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(LogPolicy::default()))
            .service_fn(|request: Request<String>| async move {
                let mut response = Response::new(String::new());
                if request.uri().path() == "/created" {
                    *response.status_mut() = StatusCode::CREATED;
                }
                Ok::<_, Infallible>(response)
            });
        for (uri, integration) in [
            ("https://api.stripe.test/v1", "stripe"),
            ("https://api.stripe.test/v1", "stripe"),
            ("https://api.stripe.test/created", "stripe"),
            ("https://api.github.test/v1", "stripe"),
            ("https://api.stripe.test/v1", "github"),
        ] {
            let mut request = Request::get(uri).body(String::new()).unwrap();
            request
                .extensions_mut()
                .insert(IntegrationName::new(integration));
            service.clone().oneshot(request).await.unwrap();
        }
    }
    let expected = |host: &str, status: &str, integration: &str| {
        labels(&[
            (names::HTTP_REQUEST_METHOD, "GET"),
            (names::SERVER_ADDRESS, host),
            (names::HTTP_RESPONSE_STATUS_CODE, status),
            (names::INTEGRATION, integration),
        ])
    };
    let mut want = vec![
        (expected("api.github.test", "200", "stripe"), 1),
        (expected("api.stripe.test", "200", "github"), 1),
        (expected("api.stripe.test", "200", "stripe"), 2),
        (expected("api.stripe.test", "201", "stripe"), 1),
    ];
    want.sort();
    // Twice on the same thread, each time under a fresh recorder: the second run reuses the keys of
    // the first and must still land in its own recorder, complete.
    for run in 0..2 {
        let mut got: Vec<_> = record(calls)
            .into_iter()
            .map(|(name, labels, values)| {
                assert_eq!(name, names::HTTP_CLIENT_REQUEST_DURATION);
                (labels, values.len())
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "run {run}");
    }
}

/// Values of the call-duration histogram in a debugging snapshot.
fn call_durations(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == names::HTTP_CLIENT_REQUEST_DURATION)
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.into_iter().map(|v| v.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The policy keeps each label set's histogram handle, per recorder: one layer that outlives a
/// recorder switch (a recorder installed after the first calls, or local recorders in tests) still
/// sends each sample to the recorder current at the call, and the kept handle records every call.
#[test]
fn kept_handles_follow_the_current_recorder() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(|_: Request<String>| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let call = || {
        runtime
            .block_on(
                service
                    .clone()
                    .oneshot(request("https://api.stripe.test/v1/charges")),
            )
            .unwrap();
    };
    let first = DebuggingRecorder::new();
    let second = DebuggingRecorder::new();
    // Before any recorder: the no-op recorder, nothing kept for it.
    call();
    metrics::with_local_recorder(&first, || {
        call();
        call();
    });
    metrics::with_local_recorder(&second, call);
    metrics::with_local_recorder(&first, call);
    assert_eq!(call_durations(&first.snapshotter()), vec![0.01; 3]);
    assert_eq!(call_durations(&second.snapshotter()), vec![0.01]);
}
