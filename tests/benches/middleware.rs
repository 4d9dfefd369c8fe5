//! Pure middleware cost: each layer alone, then the whole stack, over an in-memory inner service
//! with no I/O, in nanoseconds per call, so a regression points at its layer.
//!
//! Every call builds a request, waits for readiness, calls, and reads the whole response body (the
//! log layer wraps the body), exactly what the facade does per call. The inner service yields once
//! before answering, as a real connection would, so the layers' pending paths are measured too. `inner` is the floor: the same
//! call with no layer at all. A `tracing-subscriber` fmt subscriber (formatting into a sink) and the
//! Prometheus recorder are installed, as in production; the subscriber's level is switched at run
//! time to show the log layer with its level filtered out (`log/off`, which still records its
//! duration histograms into the recorder; `log/off-no-metrics` with the layer's metrics switched off
//! too, the fully disabled path) and on (`log/on`, `info`, the level of its spans). The other benchmarks run with the level at `info`.
//!
//! `cargo bench -p integration-tests --bench middleware` for the figures;
//! `cargo test -p integration-tests --bench middleware` runs each once (the smoke mode).

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use integration_auth::{ApiKey, AuthLayer};
use integration_core::ext::IntegrationName;
use integration_core::{Body, BoxError};
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy};
use integration_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy, RateLimiter};
use integration_retry::{
    AttemptTimeoutLayer, BreakerPolicy, CircuitBreakerLayer, DeadlineLayer, RetryBudget,
    RetryLayer, RetryPolicy,
};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// The installed Prometheus recorder: it keeps histogram samples until its upkeep drains them, which
/// [`bench_service`] does after each benchmark (production runs it every few seconds).
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

const BODY: &str =
    r#"{"id":42,"name":"widget","price_cents":1999,"tags":["blue","small"],"in_stock":true}"#;

/// The in-memory upstream: a fixed JSON answer after one yield to the runtime, so that, as over a
/// real connection, every layer's future is polled once while pending (timers get registered,
/// spans entered and exited twice) before the answer comes.
fn upstream() -> impl Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_request: Request<Body>| async {
        tokio::task::yield_now().await;
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("a fixed response is valid");
        Ok::<_, BoxError>(response)
    })
}

fn request(uri: &Uri, name: &IntegrationName) -> Request<Body> {
    let mut request = Request::get(uri.clone())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(Body::empty())
        .expect("a fixed request is valid");
    request.extensions_mut().insert(name.clone());
    request
}

fn bench_service<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    id: &str,
    service: S,
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let name = IntegrationName::new("bench");
    let uri = Uri::from_static("http://127.0.0.1:8080/v1/item");
    group.bench_function(id, |bencher| {
        bencher.to_async(runtime).iter(|| {
            let service = service.clone();
            let request = request(&uri, &name);
            async move {
                let response = service
                    .oneshot(request)
                    .await
                    .map_err(Into::into)
                    .expect("the in-memory call succeeds");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(Into::into)
                    .expect("the in-memory body reads")
                    .to_bytes();
                black_box(body)
            }
        });
    });
    if let Some(recorder) = RECORDER.get() {
        recorder.run_upkeep();
    }
}

/// A quota far above anything a benchmark loop reaches: the limiter's bookkeeping is measured, never
/// a wait.
fn limiter() -> RateLimiter {
    let quota = Quota::per_second(1_000_000_000)
        .and_then(|quota| quota.with_burst(1_000_000_000))
        .expect("a valid quota");
    RateLimiter::memory(RateLimitPolicy::new([quota]))
}

fn retry() -> RetryLayer {
    RetryLayer::new(RetryPolicy::default()).with_budget(RetryBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ))
}

fn auth() -> AuthLayer {
    AuthLayer::new(ApiKey::new(SecretString::from("bench-key-0123456789")))
}

fn middleware(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _guard = runtime.enter();
    let (filter, level) = reload::Layer::new(LevelFilter::INFO);
    Registry::default()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::sink),
        )
        .init();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the Prometheus recorder installs once");
    let _ = RECORDER.set(recorder);

    let mut group = criterion.benchmark_group("middleware");
    bench_service(&mut group, &runtime, "inner", upstream());

    level
        .reload(LevelFilter::OFF)
        .expect("the subscriber is alive");
    bench_service(
        &mut group,
        &runtime,
        "log/off",
        LogLayer::new(LogPolicy::default()).layer(upstream()),
    );
    // The disabled path itself: levels filtered out and the layer's metrics switched off.
    bench_service(
        &mut group,
        &runtime,
        "log/off-no-metrics",
        LogLayer::new(LogPolicy::default().with_metrics(false)).layer(upstream()),
    );
    level
        .reload(LevelFilter::INFO)
        .expect("the subscriber is alive");
    bench_service(
        &mut group,
        &runtime,
        "log/on",
        LogLayer::new(LogPolicy::default()).layer(upstream()),
    );
    bench_service(
        &mut group,
        &runtime,
        "deadline",
        DeadlineLayer::new(Duration::from_secs(30)).layer(upstream()),
    );
    bench_service(&mut group, &runtime, "retry", retry().layer(upstream()));
    bench_service(
        &mut group,
        &runtime,
        "breaker",
        CircuitBreakerLayer::new(BreakerPolicy::default()).layer(upstream()),
    );
    bench_service(
        &mut group,
        &runtime,
        "ratelimit-memory",
        RateLimitLayer::new(limiter()).layer(upstream()),
    );
    bench_service(
        &mut group,
        &runtime,
        "auth-api-key",
        auth().layer(upstream()),
    );
    bench_service(
        &mut group,
        &runtime,
        "attempt-log",
        AttemptLogLayer::new(LogPolicy::default()).layer(upstream()),
    );
    bench_service(
        &mut group,
        &runtime,
        "attempt-timeout",
        AttemptTimeoutLayer::new(Duration::from_secs(10)).layer(upstream()),
    );

    // Every layer, in the facade's order (DESIGN.md, "One call"), outermost first.
    let full = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .layer(DeadlineLayer::new(Duration::from_secs(30)))
        .layer(retry())
        .layer(CircuitBreakerLayer::new(BreakerPolicy::default()))
        .layer(RateLimitLayer::new(limiter()))
        .layer(auth().replay_on_unauthorized(false))
        .layer(AttemptLogLayer::new(LogPolicy::default()))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
        .service(upstream());
    bench_service(&mut group, &runtime, "full-stack", full);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = middleware
}
criterion_main!(benches);
