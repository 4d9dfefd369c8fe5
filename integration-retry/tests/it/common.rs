//! Helpers shared by the tests.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::BoxError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};
use tower_test::mock;

pub(crate) type Req = Request<String>;
pub(crate) type Res = Response<String>;
pub(crate) type Handle = mock::Handle<Req, Res>;
pub(crate) type Outcome = Result<Res, BoxError>;

/// A response with `status` and an empty body.
pub(crate) fn status(code: u16) -> Res {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(String::new())
        .unwrap()
}

/// A response with `status` and a `Retry-After` of `seconds`.
pub(crate) fn status_retry_after(code: u16, seconds: u64) -> Res {
    let mut response = status(code);
    response
        .headers_mut()
        .insert("retry-after", seconds.to_string().parse().unwrap());
    response
}

pub(crate) fn request(method: &str) -> Req {
    Request::builder()
        .method(method)
        .uri("https://api.example.com/v1/items")
        .body("payload".to_owned())
        .unwrap()
}

/// Sends `request` through `layer` over a fresh mock, in a spawned task.
pub(crate) fn spawn_call<L>(layer: L, request: Req) -> (JoinHandle<Outcome>, Handle)
where
    L: Layer<mock::Mock<Req, Res>>,
    L::Service: tower::Service<Req, Response = Res, Error = BoxError> + Send + 'static,
    <L::Service as tower::Service<Req>>::Future: Send,
{
    let (service, handle) = mock::pair::<Req, Res>();
    let service = layer.layer(service);
    (tokio::spawn(service.oneshot(request)), handle)
}

/// Answers the next attempt with `response` and returns its request.
pub(crate) async fn answer(handle: &mut Handle, response: Res) -> Req {
    let (request, send) = handle.next_request().await.expect("an attempt");
    send.send_response(response);
    request
}

/// Fails the next attempt with `error` and returns its request.
pub(crate) async fn fail(handle: &mut Handle, error: impl Into<BoxError>) -> Req {
    let (request, send) = handle.next_request().await.expect("an attempt");
    send.send_error(error);
    request
}

/// Asserts that no further attempt comes (the call ended, or nothing is sent for a long while).
pub(crate) async fn assert_no_more_attempts(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "an unexpected attempt was made"
    );
}

/// A metrics recorder for one test: keeps the last value of every counter and gauge by key, and
/// never resets them (metrics-util's `DebuggingRecorder` drains on every snapshot).
#[derive(Default)]
pub(crate) struct TestRecorder {
    values: Arc<Mutex<HashMap<Key, f64>>>,
}

struct Slot {
    key: Key,
    values: Arc<Mutex<HashMap<Key, f64>>>,
}

impl Slot {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        let mut values = self.values.lock().unwrap();
        let value = values.entry(self.key.clone()).or_insert(0.0);
        *value = f(*value);
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|v| v + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|_| value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl HistogramFn for Slot {
    fn record(&self, _value: f64) {}
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        Arc::new(Slot {
            key: key.clone(),
            values: self.values.clone(),
        })
    }

    /// The sum of a counter over every label set that has all of `labels`.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let values = self.values.lock().unwrap();
        values
            .iter()
            .filter(|(key, _)| key.name() == name && has_labels(key, labels))
            .map(|(_, value)| *value as u64)
            .sum()
    }

    /// The value of a gauge with `labels`, if it was ever set.
    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self.values.lock().unwrap();
        values
            .iter()
            .find(|(key, _)| key.name() == name && has_labels(key, labels))
            .map(|(_, value)| *value)
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.slot(key))
    }
}

fn has_labels(key: &Key, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(name, value)| {
        key.labels()
            .any(|label| label.key() == *name && label.value() == *value)
    })
}

/// A recorder for this test's thread (current-thread runtimes keep every task on it).
pub(crate) fn recorder() -> &'static TestRecorder {
    Box::leak(Box::default())
}
