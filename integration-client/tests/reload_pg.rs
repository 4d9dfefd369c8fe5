//! Live reload from PostgreSQL into a running `Client`: the `integration-config` watcher feeds validated
//! snapshots to `Client::update`. Each test runs in a schema of its own in the shared PostgreSQL
//! (`DATABASE_URL`), dropped at the end; the upstream is wiremock; the database outage goes through a TCP
//! proxy the test runs itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_client::Client;
use integration_config::testing::{FaultProxy, TestSchema};
use integration_config::{
    Config, IntegrationConfig, PgStore, StoreKind, WatchHandle, WatchOptions,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// How long a background step (listener connected, a NOTIFY applied or rejected) may take before the
/// test calls it hung: generous, so that a machine busy with other builds does not fail the test.
const LOADED_MACHINE: Duration = Duration::from_secs(30);

/// An upstream that answers `GET /whoami` with the `x-config` header the client sent, so each response
/// names the configuration that served it.
async fn upstream(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/whoami"))
        .respond_with(move |request: &Request| {
            let tag = request
                .headers
                .get("x-config")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            ResponseTemplate::new(200)
                .set_body_string(tag)
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

/// The integration at `server`, tagged `tag` through a default header.
fn tagged(server: &MockServer, tag: &str) -> IntegrationConfig {
    let mut config = IntegrationConfig::builder(server.uri())
        .header("x-config", tag)
        .build()
        .unwrap();
    config.timeout = Duration::from_secs(30);
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    config
}

async fn whoami(client: &Client) -> String {
    let response = client
        .api("api")
        .unwrap()
        .get("/whoami")
        .send()
        .await
        .expect("the call succeeds");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Calls until the client answers with `tag`, and returns how long that took.
async fn served_by(client: &Client, tag: &str, within: Duration) -> Duration {
    let start = Instant::now();
    timeout(within, async {
        while whoami(client).await != tag {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client did not serve {tag:?} within {within:?}"));
    start.elapsed()
}

async fn running_client(
    store: &PgStore,
    options: WatchOptions,
) -> (Client, WatchHandle, JoinHandle<()>) {
    let (snapshots, handle) = store
        .watch(Config::new(), options)
        .await
        .expect("initial load");
    let client = Client::from_config(snapshots.borrow().config().clone())
        .expect("client from the first snapshot");
    let follower = client.follow(snapshots);
    // The listener connects in the background; its first re-read publishes nothing new.
    timeout(LOADED_MACHINE, async {
        while !handle.status().listening {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watcher listens");
    (client, handle, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_reaches_a_running_client_within_a_second() {
    let server = upstream(Duration::ZERO).await;
    let (_schema, store) = TestSchema::new().await;
    store
        .put("api", &tagged(&server, "v1"), Some(0), "test")
        .await
        .unwrap();
    // Poll far away: only LISTEN/NOTIFY can bring the change in time.
    let options = WatchOptions::default().with_poll_interval(Duration::from_secs(3600));
    let (client, _handle, _follower) = running_client(&store, options).await;
    assert_eq!(whoami(&client).await, "v1");

    store
        .put("api", &tagged(&server, "v2"), Some(1), "test")
        .await
        .unwrap();
    let took = served_by(&client, "v2", Duration::from_secs(1)).await;
    println!("put to first call served by the new configuration: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_calls_across_ten_reloads_all_complete() {
    const CALLS: usize = 5_000;
    const RELOADS: usize = 10;
    let server = upstream(Duration::from_millis(2)).await;
    let (_schema, store) = TestSchema::new().await;
    store
        .put("api", &tagged(&server, "v0"), Some(0), "test")
        .await
        .unwrap();
    let options = WatchOptions::default().with_poll_interval(Duration::from_secs(3600));
    let (client, handle, _follower) = running_client(&store, options).await;

    // Every call is spawned at once; a semaphore keeps the sockets in flight (two per call on loopback)
    // under the machine's file limit.
    let in_flight = Arc::new(Semaphore::new(256));
    let ok = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let calls: Vec<JoinHandle<Result<(), String>>> = (0..CALLS)
        .map(|_| {
            let (client, in_flight, ok, seen) =
                (client.clone(), in_flight.clone(), ok.clone(), seen.clone());
            tokio::spawn(async move {
                let _permit = in_flight.acquire().await.unwrap();
                let response = client
                    .api("api")
                    .map_err(|e| e.to_string())?
                    .get("/whoami")
                    .send()
                    .await;
                let response = response.map_err(|e| e.to_string())?;
                if response.status() != 200 {
                    return Err(format!("status {}", response.status()));
                }
                let tag = response.text().await.map_err(|e| e.to_string())?;
                seen.lock().unwrap().insert(tag);
                ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
        })
        .collect();

    for version in 1..=RELOADS {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let tag = format!("v{version}");
        store
            .put("api", &tagged(&server, &tag), Some(version as i64), "test")
            .await
            .unwrap();
        // A bound for a hung watcher, not a speed check (the NOTIFY latency is printed by the test
        // above): 2 s failed "reload 1 was not applied" with 5000 calls and two CPU hogs on 2 cores.
        timeout(LOADED_MACHINE, async {
            while handle.status().versions.get("api") != Some(&(version as i64 + 1)) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("reload {version} was not applied"));
    }

    let mut failures = Vec::new();
    for call in calls {
        if let Err(e) = call.await.expect("no call panicked") {
            failures.push(e);
        }
    }
    let completed = ok.load(Ordering::Relaxed);
    let seen = seen.lock().unwrap().clone();
    println!(
        "{completed} calls completed, {} failed, configurations seen: {seen:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(completed, CALLS, "every call completed");
    assert!(
        seen.len() > 1,
        "the reloads happened while calls were running: {seen:?}"
    );
    assert_eq!(handle.status().revision, RELOADS as u64);
    assert_eq!(whoami(&client).await, format!("v{RELOADS}"));
    let received = server.received_requests().await.unwrap().len();
    assert!(
        received >= CALLS,
        "the upstream saw every call ({received})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_is_rejected_and_the_previous_config_still_serves() {
    let server = upstream(Duration::ZERO).await;
    let (_schema, store) = TestSchema::new().await;
    store
        .put("api", &tagged(&server, "good"), Some(0), "test")
        .await
        .unwrap();
    let options = WatchOptions::default().with_poll_interval(Duration::from_millis(200));
    let (client, handle, _follower) = running_client(&store, options).await;
    assert_eq!(whoami(&client).await, "good");

    // Valid on its own, so `put` takes it, but this deployment has no [redis] section: the watcher
    // refuses it and the client never sees it.
    let mut invalid = tagged(&server, "bad");
    invalid.rate_limit.store = StoreKind::Redis;
    store.put("api", &invalid, Some(1), "test").await.unwrap();
    timeout(LOADED_MACHINE, async {
        while !handle.status().rejected.contains_key("api") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the update is rejected");
    let status = handle.status();
    assert!(
        status.rejected["api"]
            .reason
            .contains("needs a [redis] section"),
        "{:?}",
        status.rejected
    );
    for _ in 0..20 {
        assert_eq!(
            whoami(&client).await,
            "good",
            "the previous configuration still serves"
        );
    }

    store
        .put("api", &tagged(&server, "fixed"), Some(2), "test")
        .await
        .unwrap();
    served_by(&client, "fixed", Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_cut_off_the_client_keeps_serving_and_catches_up() {
    let server = upstream(Duration::ZERO).await;
    let (schema, direct) = TestSchema::new().await;
    direct
        .put("api", &tagged(&server, "before"), Some(0), "test")
        .await
        .unwrap();
    let proxy = FaultProxy::for_database().await;
    let through_proxy = PgStore::connect(&proxy.database_url(), &schema.name)
        .await
        .unwrap();
    let options = WatchOptions::default()
        .with_poll_interval(Duration::from_millis(300))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400));
    let (client, handle, _follower) = running_client(&through_proxy, options).await;
    assert_eq!(whoami(&client).await, "before");

    proxy.cut();
    direct
        .put("api", &tagged(&server, "after"), Some(1), "test")
        .await
        .unwrap();
    timeout(Duration::from_secs(15), async {
        while handle.status().listening || handle.status().last_error.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the outage shows in the watcher's status");
    let outage_end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < outage_end {
        assert_eq!(
            whoami(&client).await,
            "before",
            "the client keeps serving on the last good configuration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.restore();
    let took = served_by(&client, "after", Duration::from_secs(15)).await;
    println!("after the database returned, the change was served in {took:?}");
    assert!(!handle.status().unreachable);
}

/// Issue 13 (part 5): a change made while the database was away was served 21 s after a 30 s cut came
/// back (2.7 s after a 10 s cut): the listener's reconnection backoff doubled up to 30 s. With the
/// default options (backoff capped at 1 s, a full re-read on each reconnection) it is served within
/// 2 s of the return however long the cut, and no call fails meanwhile. The poll is an hour away, so
/// only the reconnection can bring the change. `PG_CUT_SECS` (default 10) lengthens the cut for a
/// run by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_during_a_cut_is_served_within_two_seconds_of_the_return() {
    let cut_for = Duration::from_secs(
        std::env::var("PG_CUT_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(10),
    );
    let server = upstream(Duration::ZERO).await;
    let (schema, direct) = TestSchema::new().await;
    direct
        .put("api", &tagged(&server, "before"), Some(0), "test")
        .await
        .unwrap();
    let proxy = FaultProxy::for_database().await;
    let through_proxy = PgStore::connect(&proxy.database_url(), &schema.name)
        .await
        .unwrap();
    let options = WatchOptions::default().with_poll_interval(Duration::from_secs(3600));
    let (client, handle, _follower) = running_client(&through_proxy, options).await;
    assert_eq!(whoami(&client).await, "before");

    // Steady calls through the whole cut: none may fail.
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, calls, failures, stop) = (
            client.clone(),
            calls.clone(),
            failures.clone(),
            stop.clone(),
        );
        async move {
            while !stop.load(Ordering::SeqCst) {
                let result = client.api("api").unwrap().get("/whoami").send().await;
                calls.fetch_add(1, Ordering::SeqCst);
                if !result.is_ok_and(|response| response.status() == 200) {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    proxy.cut();
    direct
        .put("api", &tagged(&server, "after"), Some(1), "test")
        .await
        .unwrap();
    tokio::time::sleep(cut_for).await;
    assert!(
        !handle.status().listening,
        "the cut shows in the watcher's status"
    );
    assert_eq!(
        whoami(&client).await,
        "before",
        "the last good config serves"
    );

    proxy.restore();
    let took = served_by(&client, "after", Duration::from_secs(30)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (calls, failures) = (
        calls.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    println!(
        "database cut for {cut_for:?}: the change was served {took:?} after the return; \
         {failures} of {calls} calls failed"
    );
    assert_eq!(failures, 0, "{failures} of {calls} calls failed");
    assert!(
        took <= Duration::from_secs(2),
        "served {took:?} after the database returned"
    );
}
