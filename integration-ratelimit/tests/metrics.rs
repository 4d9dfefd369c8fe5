//! Metrics, through a global `metrics` recorder (one per test binary, hence one test).

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::ext::IntegrationName;
use integration_core::names;
use integration_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy, RateLimiter};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{ServiceBuilder, ServiceExt};

/// One recorded metric: name, labels, value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

/// Every value recorded under `name` with `integration.name = integration` (and `extra`, if given).
fn values<'a>(
    snapshot: &'a [Recorded],
    name: &str,
    integration: &str,
    extra: Option<(&str, &str)>,
) -> Vec<&'a DebugValue> {
    snapshot
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && labels
                    .iter()
                    .any(|(k, v)| k == names::INTEGRATION && v == integration)
                && extra.is_none_or(|(ek, ev)| labels.iter().any(|(k, v)| k == ek && v == ev))
        })
        .map(|(_, _, value)| value)
        .collect()
}

fn take(snapshotter: &Snapshotter) -> Vec<Recorded> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn request(path: &str) -> Request<String> {
    let mut request = Request::get(format!("https://api.example.com{path}"))
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("billing"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_the_integration_and_count_waits_rejections_signals_learned_rate_and_fallback()
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    // Waits, server signals and rejections, labelled with the request's integration name.
    let policy = RateLimitPolicy::new([Quota::new(10, Duration::from_secs(1), 1).unwrap()])
        .with_max_wait(Duration::from_millis(150));
    let limiter = RateLimiter::memory(policy);
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(tower::service_fn(|request: Request<String>| async move {
            let response = match request.uri().path() {
                "/throttled" => Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "1")
                    .body(String::new())
                    .unwrap(),
                _ => Response::new(String::new()),
            };
            Ok::<_, Infallible>(response)
        }));
    service.clone().oneshot(request("/")).await.unwrap();
    // The next permit is 100 ms away: this call waits for it.
    service
        .clone()
        .oneshot(request("/throttled"))
        .await
        .unwrap();
    // The 429 paused the key for 1 s, longer than the 150 ms bound: refused.
    service.clone().oneshot(request("/")).await.unwrap_err();

    let snapshot = take(&snapshotter);
    let waits = values(&snapshot, names::THROTTLE_WAIT, "billing", None);
    match waits.as_slice() {
        [DebugValue::Histogram(samples)] => {
            assert_eq!(samples.len(), 1, "{samples:?}");
            assert!(samples[0].0 > 0.05 && samples[0].0 <= 0.1, "{samples:?}");
        }
        other => panic!("one wait histogram expected: {other:?}"),
    }
    assert_eq!(
        values(
            &snapshot,
            names::THROTTLE_SIGNALS,
            "billing",
            Some((names::SOURCE, "retry_after"))
        ),
        vec![&DebugValue::Counter(1)]
    );
    assert_eq!(
        values(
            &snapshot,
            names::RATE_LIMIT_REJECTIONS,
            "billing",
            Some((names::REASON, "server_pause"))
        ),
        vec![&DebugValue::Counter(1)]
    );

    // The learned rate: two calls went in the second before the 429, so 0.7 x 2 per second.
    match values(&snapshot, names::RATE_LIMIT_LEARNED_RATE, "billing", None).as_slice() {
        [DebugValue::Gauge(rate)] => {
            assert!((rate.into_inner() - 1.4).abs() < 1e-9, "{rate:?}");
        }
        other => panic!("one learned-rate gauge expected: {other:?}"),
    }

    #[cfg(feature = "redis")]
    fallback_gauge(&snapshotter).await;
}

/// The fallback gauge of a Redis store: 1 while Redis is away, 0 once it answers again.
#[cfg(feature = "redis")]
async fn fallback_gauge(snapshotter: &Snapshotter) {
    use integration_core::testing::RedisServer;
    use integration_ratelimit::{RateLimitKey, RedisOptions, RedisStore};
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use tokio::time::Instant;

    let mut server = RedisServer::start().expect("own redis-server");
    let client = redis::Client::open(server.url()).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_max_delay(Duration::from_millis(200));
    let connection = ConnectionManager::new_with_config(client, config)
        .await
        .expect("private redis-server reachable");
    let options = RedisOptions::new().with_integration("ledger");
    let store = RedisStore::new(connection, "metrics", options);
    let limiter = RateLimiter::with_redis_store(
        store.clone(),
        RateLimitPolicy::new([Quota::per_second(100).unwrap()]),
    );
    let key = RateLimitKey::from("k");
    limiter.acquire(&key).await.unwrap();
    server.kill();
    // The fallback continues the key's pace (its next permit is 10 ms after the last): wait for it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    limiter.acquire(&key).await.unwrap();
    assert!(store.is_on_fallback());
    let snapshot = take(snapshotter);
    let gauge = values(&snapshot, names::RATE_LIMIT_FALLBACK, "ledger", None);
    assert_eq!(gauge, vec![&DebugValue::Gauge(1.0.into())]);

    server.restart().unwrap();
    let since = Instant::now();
    while store.is_on_fallback() {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "never went back to Redis"
        );
        let _ = limiter.acquire(&key).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshot = take(snapshotter);
    let gauge = values(&snapshot, names::RATE_LIMIT_FALLBACK, "ledger", None);
    assert_eq!(gauge, vec![&DebugValue::Gauge(0.0.into())]);
}
