//! The disabled path under a global subscriber at `OFF`: nothing is recorded, captured or
//! formatted, and the body passes through whole. What the disabled path saves (no span, no clock
//! read, no URI copy) is not observable from outside; `middleware/log/off-no-metrics` in
//! `cargo bench -p integration-tests --bench middleware` measures it. In its own test binary,
//! because the maximum level is process-wide and the other test binaries capture through a global
//! subscriber that keeps it at TRACE (`integration_core::testing`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use integration_log::{LogLayer, LogPolicy, redact::Redactor};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// Counts every span and event it is given.
#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn a_subscriber_at_off_switches_the_layer_off() {
    let recorded = Count::default();
    tracing_subscriber::registry()
        .with(recorded.clone().with_filter(LevelFilter::OFF))
        .init();
    assert_eq!(LevelFilter::current(), LevelFilter::OFF);

    let redactor = Redactor::default();
    let policy = LogPolicy::default()
        .with_bodies(true)
        .with_metrics(false)
        .with_redactor(redactor.clone());
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy))
        .service_fn(|_: Request<String>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(br#"{"token":"t"}"#)));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(response)
        });
    let request = Request::get("https://api.example.test/v1?api_key=abc")
        .body(String::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert!(!response.body().is_capturing());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"token":"t"}"#);
    assert_eq!(recorded.0.load(Ordering::Relaxed), 0, "no span, no event");
    assert_eq!(redactor.calls(), 0, "nothing was formatted");
}
