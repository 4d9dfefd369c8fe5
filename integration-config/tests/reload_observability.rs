//! A rejected row and an unreachable database are counted in `integration.config.reloads`.
//!
//! Its own test binary with a single test: it installs the global metrics recorder and counts every reload.

use std::collections::HashMap;
use std::time::Duration;

use integration_config::testing::{FaultProxy, TestSchema};
use integration_config::{Config, IntegrationConfig, Secret, WatchOptions};
use integration_core::names;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::timeout;

/// Running totals of `integration.config.reloads` by outcome (a debugging snapshot resets counters).
struct Reloads {
    snapshotter: Snapshotter,
    totals: HashMap<String, u64>,
}

impl Reloads {
    fn get(&mut self, outcome: &str) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if key.key().name() != names::CONFIG_RELOADS {
                continue;
            }
            let DebugValue::Counter(n) = value else {
                panic!("{value:?}")
            };
            for label in key.key().labels().filter(|l| l.key() == names::OUTCOME) {
                *self.totals.entry(label.value().to_owned()).or_default() += n;
            }
        }
        self.totals.get(outcome).copied().unwrap_or_default()
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    timeout(Duration::from_secs(15), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_outages_and_applied_reloads_are_counted() {
    let recorder = DebuggingRecorder::new();
    let mut reloads = Reloads {
        snapshotter: recorder.snapshotter(),
        totals: HashMap::new(),
    };
    recorder.install().expect("first recorder in this binary");

    let (schema, direct) = TestSchema::new().await;
    let good = IntegrationConfig::builder("https://api.example.com")
        .bearer(Secret::parse("${env:PATH}"))
        .build()
        .unwrap();
    direct.put("api", &good, None, "alice").await.unwrap();
    let proxy = FaultProxy::for_database().await;
    let store = schema.store_at(&proxy.database_url()).await;
    let options = WatchOptions::default()
        .with_poll_interval(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let (rx, handle) = store.watch(Config::new(), options).await.unwrap();

    schema.execute("UPDATE integrations SET version = 2, config = jsonb_set(config, '{timeout}', '\"0s\"')").await;
    eventually("a rejection", || reloads.get("rejected") == 1).await;
    // Reported once per rejected version, not at every poll.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reloads.get("rejected"), 1);

    proxy.cut();
    eventually("an unreachable reload", || reloads.get("unreachable") >= 1).await;
    assert!(handle.status().unreachable);
    proxy.restore();
    eventually("recovery", || !handle.status().unreachable).await;

    direct.put("api", &good, None, "alice").await.unwrap();
    eventually("the new version", || rx.borrow().version("api") == Some(3)).await;
    assert_eq!(
        reloads.get("applied"),
        1,
        "only the change is counted as applied"
    );
}
