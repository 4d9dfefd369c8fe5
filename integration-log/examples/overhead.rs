//! Measures what the layer adds per call, against the same service without it: with no subscriber,
//! with a subscriber whose level is WARN (every span and event of a success is off), and with
//! everything on at TRACE into a sink.
//!
//! `cargo run --release -p integration-log --example overhead`

use std::convert::Infallible;
use std::hint::black_box;

use http::{Request, Response};
use integration_core::ext::IntegrationName;
use integration_log::{LogLayer, LogPolicy};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

const CALLS: u32 = 200_000;

fn request() -> Request<String> {
    let mut request = Request::post("https://api.example.com/v1/charges?api_key=abc")
        .header("authorization", "Bearer abc")
        .header("content-type", "application/json")
        .body(r#"{"amount":100,"card":{"number":"4242","cvc":"123"}}"#.to_owned())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("stripe"));
    request
}

async fn upstream(_: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(r#"{"id":"ch_1","status":"succeeded"}"#.to_owned())
        .unwrap())
}

async fn per_call<S>(mut service: S) -> f64
where
    S: Service<Request<String>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..CALLS {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        black_box(response);
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

// One thread and nothing else running: a thread-local subscriber per measurement is exact here.
#[allow(clippy::disallowed_methods)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    // A first pass warms the allocator and the callsite caches.
    per_call(tower::service_fn(upstream)).await;
    let bare = per_call(tower::service_fn(upstream)).await;
    let layered = || {
        ServiceBuilder::new()
            .layer(LogLayer::new(LogPolicy::default()))
            .service_fn(upstream)
    };
    per_call(layered()).await;
    let no_subscriber = per_call(layered()).await;
    let warn = {
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(LevelFilter::WARN),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        per_call(layered()).await
    };
    let trace = {
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(LevelFilter::TRACE),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        per_call(layered()).await
    };
    println!("bare service:                 {bare:8.0} ns/call");
    println!(
        "LogLayer, no subscriber:      {no_subscriber:8.0} ns/call (+{:.0})",
        no_subscriber - bare
    );
    println!(
        "LogLayer, WARN subscriber:    {warn:8.0} ns/call (+{:.0})",
        warn - bare
    );
    println!(
        "LogLayer, TRACE into a sink:  {trace:8.0} ns/call (+{:.0})",
        trace - bare
    );
}
