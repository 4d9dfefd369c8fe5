//! `cache.status` on the current span, the counters and the stored-bytes gauge, each labelled with
//! the integration, and the status on the response.

mod common;

use std::time::Duration;

use common::{Upstream, client};
use http::Request;
use integration_cache::{CacheConfig, CacheStatus};
use integration_core::ext::IntegrationName;
use integration_core::names;
use integration_core::testing::capture;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use tower::ServiceExt;
use tracing::Instrument;

fn request(method: &str) -> Request<String> {
    let mut request = Request::builder()
        .method(method)
        .uri("https://api.test/a")
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("rates"));
    request
}

fn counted(snapshot: &[(CompositeKey, DebugValue)], name: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _)| key.kind() == MetricKind::Counter && key.key().name() == name)
        .filter(|(key, _)| {
            key.key()
                .labels()
                .any(|l| l.key() == names::INTEGRATION && l.value() == "rates")
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn the_status_reaches_the_span_the_metrics_and_the_response() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let captured = capture(tracing::Level::INFO);
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let upstream = Upstream::caching("max-age=1, stale-if-error=60");
            let cache = client(&upstream, CacheConfig::new());
            let mut seen = Vec::new();
            for method in ["GET", "GET", "POST"] {
                let span =
                    tracing::info_span!("call", { names::CACHE_STATUS } = tracing::field::Empty);
                let response = cache
                    .clone()
                    .oneshot(request(method))
                    .instrument(span)
                    .await
                    .unwrap();
                seen.push(CacheStatus::of(&response).unwrap());
            }
            assert_eq!(
                seen,
                [CacheStatus::Miss, CacheStatus::Hit, CacheStatus::Bypass]
            );
            tokio::time::advance(Duration::from_secs(2)).await;
        });
    });
    let statuses: Vec<_> = captured
        .captured()
        .span_named("call")
        .iter()
        .map(|span| span.field(names::CACHE_STATUS).unwrap_or("none").to_owned())
        .collect();
    assert_eq!(statuses, ["miss", "hit", "bypass"]);

    let snapshot = snapshotter.snapshot().into_vec();
    let snapshot: Vec<_> = snapshot
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    assert_eq!(counted(&snapshot, names::CACHE_MISSES), 1);
    assert_eq!(counted(&snapshot, names::CACHE_HITS), 1);
    assert_eq!(counted(&snapshot, names::CACHE_BYPASSES), 1);
    let stored = snapshot
        .iter()
        .find_map(|(key, value)| (key.key().name() == names::CACHE_STORED_BYTES).then_some(value));
    assert!(
        matches!(stored, Some(DebugValue::Gauge(bytes)) if bytes.into_inner() > 0.0),
        "{stored:?}"
    );
}
