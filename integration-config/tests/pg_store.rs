//! The PostgreSQL store and its watcher, against the real database, each test in its own schema.

use std::time::Duration;

use integration_config::testing::{self, FaultProxy, TestSchema};
use integration_config::{
    Change, ChangeKind, Config, IntegrationConfig, PgStore, QuotaConfig, Secret, Snapshot,
    StoreError, WatchOptions,
};
use secrecy::ExposeSecret;
use sqlx::Row;
use tokio::sync::watch;
use tokio::time::timeout;

fn integration(max_attempts: u32) -> IntegrationConfig {
    IntegrationConfig::builder("https://api.example.com/v1/")
        .bearer(Secret::parse("${env:PATH}"))
        .quota(QuotaConfig::new(10, Duration::from_secs(1)))
        .max_attempts(max_attempts)
        .build()
        .unwrap()
}

/// Waits until the receiver holds a snapshot satisfying `pred`.
async fn wait_for(
    rx: &mut watch::Receiver<std::sync::Arc<Snapshot>>,
    within: Duration,
    pred: impl Fn(&Snapshot) -> bool,
) -> std::sync::Arc<Snapshot> {
    timeout(within, async {
        loop {
            let current = rx.borrow_and_update().clone();
            if pred(&current) {
                return current;
            }
            rx.changed().await.expect("watcher alive");
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no matching snapshot within {within:?}; last: {:?}",
            rx.borrow().versions()
        )
    })
}

fn attempts(snapshot: &Snapshot, name: &str) -> Option<u32> {
    snapshot
        .config()
        .integrations
        .get(name)
        .map(|i| i.retry.max_attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_twice_idempotently() {
    let (schema, store) = TestSchema::new().await;
    store.migrate().await.expect("second run is a no-op");
    store.migrate().await.expect("third run is a no-op");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("t"))
    .collect();
    assert_eq!(
        tables,
        ["_sqlx_migrations", "integrations", "integrations_history"]
    );
    let applied: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS n FROM \"{}\"._sqlx_migrations",
        schema.name
    )))
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get("n");
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        applied,
        i64::try_from(embedded).unwrap(),
        "each migration once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_list_history_and_optimistic_concurrency() {
    let (_schema, store) = TestSchema::new().await;
    assert!(store.get("stripe").await.unwrap().is_none());

    let v1 = store
        .put("stripe", &integration(3), Some(0), "alice")
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let err = store
        .put("stripe", &integration(4), Some(0), "bob")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionConflict {
                expected: 0,
                actual: Some(1),
                ..
            }
        ),
        "{err}"
    );

    let v2 = store
        .put("stripe", &integration(4), Some(1), "bob")
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let err = store
        .put("stripe", &integration(5), Some(1), "carol")
        .await
        .unwrap_err();
    assert!(err.is_version_conflict());
    assert_eq!(
        err.to_string(),
        "version conflict on integration stripe: expected version 1, found 2"
    );
    let v3 = store
        .put("stripe", &integration(5), None, "carol")
        .await
        .unwrap();
    assert_eq!(v3, 3, "no expected version: last writer wins");

    let got = store.get("stripe").await.unwrap().unwrap();
    assert_eq!(got.version, 3);
    assert_eq!(got.updated_by, "carol");
    assert_eq!(got.config, integration(5));

    store
        .put("github", &integration(2), None, "alice")
        .await
        .unwrap();
    let names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["github", "stripe"]);

    let err = store.delete("stripe", Some(2), "dave").await.unwrap_err();
    assert!(err.is_version_conflict());
    assert!(store.delete("stripe", Some(3), "dave").await.unwrap());
    assert!(!store.delete("stripe", None, "dave").await.unwrap());
    assert!(store.get("stripe").await.unwrap().is_none());

    let history = store.history("stripe").await.unwrap();
    let summary: Vec<(i64, ChangeKind, &str)> = history
        .iter()
        .map(|h| (h.version, h.operation, h.changed_by.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, ChangeKind::Insert, "alice"),
            (2, ChangeKind::Update, "bob"),
            (3, ChangeKind::Update, "carol"),
            (3, ChangeKind::Delete, "dave"),
        ]
    );
    assert_eq!(history[0].config["retry"]["max_attempts"], 3);
    assert_eq!(
        history[0].config["auth"]["token"], "${env:PATH}",
        "history holds references, not values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_with_the_same_expected_version_let_exactly_one_win() {
    let (_schema, store) = TestSchema::new().await;
    store
        .put("api", &integration(1), Some(0), "seed")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put("api", &integration(i + 2), Some(1), "racer")
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, 2);
                won += 1;
            }
            Err(e) => assert!(e.is_version_conflict(), "{e}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_secrets_are_refused_in_the_database() {
    let (schema, store) = TestSchema::new().await;
    let plain = IntegrationConfig::builder("https://api.example.com")
        .bearer(Secret::new("tok-literal"))
        .build()
        .unwrap();
    let err = store.put("api", &plain, None, "alice").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "integrations.api.auth.token: plaintext secrets are refused in the database; use a ${env:NAME} or ${file:/path} reference"
    );
    assert!(
        store.get("api").await.unwrap().is_none(),
        "nothing was written"
    );

    // A reference the writer cannot resolve is fine: readers resolve it.
    let remote = IntegrationConfig::builder("https://api.example.com")
        .bearer(Secret::parse(
            "${env:ONLY_IN_PRODUCTION_INTEGRATION_CONFIG_TEST}",
        ))
        .build_unvalidated();
    store.put("remote", &remote, None, "alice").await.unwrap();

    // A plaintext secret written behind the store's back is refused on load.
    schema
        .execute(
            r#"INSERT INTO integrations (name, version, config, updated_by) VALUES ('sneaky', 1,
               '{"base_url": "https://x.example.com", "auth": {"type": "bearer", "token": "tok-literal"}}', 'psql')"#,
        )
        .await;
    let err = store.get("sneaky").await.unwrap_err();
    assert!(
        matches!(err, StoreError::PlaintextSecret { ref path, .. } if path == "auth.token"),
        "{err}"
    );
    assert!(!err.to_string().contains("tok-literal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_reaches_a_watcher_within_a_second() {
    let (_schema, store) = TestSchema::new().await;
    store
        .put("api", &integration(3), None, "alice")
        .await
        .unwrap();
    // The poll is out of the picture: only NOTIFY can deliver the change in time.
    let options = WatchOptions::default().with_poll_interval(Duration::from_secs(3600));
    let (mut rx, handle) = store.watch(Config::new(), options).await.unwrap();
    assert_eq!(attempts(&rx.borrow(), "api"), Some(3));
    assert_eq!(rx.borrow().version("api"), Some(1));
    // Let the listener connect (it re-reads once connected, which publishes nothing new).
    timeout(Duration::from_secs(5), async {
        while !handle.status().listening {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("listener connects");

    store
        .put("api", &integration(7), Some(1), "bob")
        .await
        .unwrap();
    let snapshot = wait_for(&mut rx, Duration::from_secs(1), |s| {
        attempts(s, "api") == Some(7)
    })
    .await;
    assert_eq!(snapshot.version("api"), Some(2));
    assert_eq!(snapshot.revision(), 1);

    store
        .put("new", &integration(2), None, "bob")
        .await
        .unwrap();
    wait_for(&mut rx, Duration::from_secs(1), |s| {
        attempts(s, "new") == Some(2)
    })
    .await;
    store.delete("new", None, "bob").await.unwrap();
    wait_for(&mut rx, Duration::from_secs(1), |s| {
        !s.config().integrations.contains_key("new")
    })
    .await;
    let status = handle.status();
    assert_eq!(status.versions.get("api"), Some(&2));
    assert!(status.last_success.is_some());
    assert!(status.rejected.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_is_rejected_and_the_previous_snapshot_stays() {
    let (schema, store) = TestSchema::new().await;
    store
        .put("api", &integration(3), None, "alice")
        .await
        .unwrap();
    store
        .put("other", &integration(2), None, "alice")
        .await
        .unwrap();
    let options = WatchOptions::default().with_poll_interval(Duration::from_millis(200));
    let (mut rx, handle) = store.watch(Config::new(), options).await.unwrap();

    // Bypass `put` (which validates) as a hand edit would.
    schema
        .execute(
            r#"UPDATE integrations SET version = version + 1, updated_by = 'psql',
               config = jsonb_set(config, '{retry,max_attempts}', '0') WHERE name = 'api'"#,
        )
        .await;
    timeout(Duration::from_secs(5), async {
        while handle.status().rejected.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the rejection shows in the status");
    let status = handle.status();
    let rejection = &status.rejected["api"];
    assert_eq!(rejection.version, 2);
    assert!(
        rejection
            .reason
            .contains("integrations.api.retry.max_attempts: must be at least 1"),
        "{}",
        rejection.reason
    );
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("max_attempts")
    );
    assert_eq!(
        attempts(&rx.borrow(), "api"),
        Some(3),
        "the last good configuration stays in force"
    );
    assert_eq!(rx.borrow().version("api"), Some(1));

    // Other integrations still follow their rows.
    store
        .put("other", &integration(6), None, "alice")
        .await
        .unwrap();
    let snapshot = wait_for(&mut rx, Duration::from_secs(2), |s| {
        attempts(s, "other") == Some(6)
    })
    .await;
    assert_eq!(attempts(&snapshot, "api"), Some(3));

    // A good row replaces the rejected one and clears the rejection.
    store
        .put("api", &integration(4), Some(2), "alice")
        .await
        .unwrap();
    wait_for(&mut rx, Duration::from_secs(2), |s| {
        attempts(s, "api") == Some(4)
    })
    .await;
    timeout(Duration::from_secs(2), async {
        while !handle.status().rejected.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the rejection clears");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_take_the_base_defaults_and_redis_section() {
    let (schema, store) = TestSchema::new().await;
    let base = Config::from_toml_str(
        r#"
        [defaults]
        timeout = "7s"
        [integrations.from_file]
        base_url = "https://file.example.com"
        [redis]
        url = "redis://127.0.0.1:6379"
        "#,
    )
    .unwrap();
    schema
        .execute(
            r#"INSERT INTO integrations (name, version, config, updated_by) VALUES ('shared', 1,
               '{"base_url": "https://db.example.com", "rate_limit": {"store": "redis"}}', 'psql')"#,
        )
        .await;
    let snapshot = store.load(&base).await.unwrap();
    let shared = &snapshot.config().integrations["shared"];
    assert_eq!(shared.timeout, Duration::from_secs(7));
    assert!(snapshot.config().integrations.contains_key("from_file"));
    assert_eq!(snapshot.version("shared"), Some(1));
    assert_eq!(snapshot.version("from_file"), None);
    // Without [redis] the same row is invalid.
    let err = store.load(&Config::new()).await.unwrap_err();
    assert!(err.to_string().contains("needs a [redis] section"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_keeps_the_last_snapshot_through_an_outage_and_recovers() {
    let (schema, direct) = TestSchema::new().await;
    direct
        .put("api", &integration(3), None, "alice")
        .await
        .unwrap();
    let proxy = FaultProxy::for_database().await;
    let through_proxy: PgStore = schema.store_at(&proxy.database_url()).await;
    let options = WatchOptions::default()
        .with_poll_interval(Duration::from_millis(300))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400));
    let (mut rx, handle) = through_proxy.watch(Config::new(), options).await.unwrap();
    timeout(Duration::from_secs(5), async {
        while !handle.status().listening {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("listener connects");

    proxy.cut();
    direct
        .put("api", &integration(8), None, "alice")
        .await
        .unwrap();
    timeout(Duration::from_secs(15), async {
        loop {
            let s = handle.status();
            if !s.listening && s.last_error.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the outage shows in the status");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        attempts(&rx.borrow(), "api"),
        Some(3),
        "the last good snapshot stays in force"
    );
    assert_eq!(handle.status().revision, 0);

    proxy.restore();
    let snapshot = wait_for(&mut rx, Duration::from_secs(15), |s| {
        attempts(s, "api") == Some(8)
    })
    .await;
    assert_eq!(snapshot.version("api"), Some(2));
    // And it follows changes again through NOTIFY.
    direct
        .put("api", &integration(9), None, "alice")
        .await
        .unwrap();
    wait_for(&mut rx, Duration::from_secs(5), |s| {
        attempts(s, "api") == Some(9)
    })
    .await;
    let status = handle.status();
    assert!(!status.unreachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_file_secret_is_picked_up_by_the_poll() {
    let (_schema, store) = TestSchema::new().await;
    let dir = std::env::temp_dir().join(format!("integration-config-rotate-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "first\n").unwrap();
    let config = IntegrationConfig::builder("https://api.example.com")
        .bearer(Secret::parse(&format!("${{file:{}}}", file.display())))
        .build()
        .unwrap();
    store.put("api", &config, None, "alice").await.unwrap();
    let options = WatchOptions::default().with_poll_interval(Duration::from_millis(100));
    let (mut rx, _handle) = store.watch(Config::new(), options).await.unwrap();
    let token = |s: &Snapshot| match &s.config().integrations["api"].auth {
        integration_config::AuthConfig::Bearer(b) => b.token.expose_secret().to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(token(&rx.borrow()), "first");
    std::fs::write(&file, "second\n").unwrap();
    timeout(Duration::from_secs(5), async {
        loop {
            rx.changed().await.unwrap();
            if token(&rx.borrow_and_update()) == "second" {
                break;
            }
        }
    })
    .await
    .expect("the rotated value arrives");
    assert_eq!(rx.borrow().version("api"), Some(1), "same row, new value");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_schema_removes_everything() {
    let (schema, store) = TestSchema::new().await;
    store
        .put("api", &integration(3), None, "alice")
        .await
        .unwrap();
    store.drop_schema().await.unwrap();
    let left: i64 =
        sqlx::query("SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = $1")
            .bind(&schema.name)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get("n");
    assert_eq!(left, 0);
    assert!(store.get("api").await.unwrap_err().is_database());
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    for bad in [
        "",
        "Upper",
        "with-dash",
        "x\"; drop table y; --",
        &"a".repeat(49),
    ] {
        let err = PgStore::connect(&testing::database_url(), bad)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidSchema(_)), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_secret_from_file_defaults_is_not_mistaken_for_a_database_one() {
    let (schema, store) = TestSchema::new().await;
    let base = Config::from_toml_str(
        "[defaults]\nauth = { type = \"bearer\", token = \"from-the-file\" }\n",
    )
    .unwrap();
    schema
        .execute(
            r#"INSERT INTO integrations (name, version, config, updated_by)
               VALUES ('api', 1, '{"base_url": "https://api.example.com"}', 'psql')"#,
        )
        .await;
    let snapshot = store.load(&base).await.unwrap();
    match &snapshot.config().integrations["api"].auth {
        integration_config::AuthConfig::Bearer(b) => {
            assert_eq!(b.token.expose_secret(), "from-the-file")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_a_silent_partition_and_recovers() {
    let (schema, direct) = TestSchema::new().await;
    direct
        .put("api", &integration(3), None, "alice")
        .await
        .unwrap();
    let proxy = FaultProxy::for_database().await;
    let through_proxy: PgStore = schema.store_at(&proxy.database_url()).await;
    let options = WatchOptions::default()
        .with_poll_interval(Duration::from_millis(300))
        .with_read_timeout(Duration::from_millis(500))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400));
    let (mut rx, handle) = through_proxy.watch(Config::new(), options).await.unwrap();
    timeout(Duration::from_secs(5), async {
        while !handle.status().listening {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("listener connects");

    // No reset, no error: bytes just stop. Only the read timeout can notice.
    proxy.blackhole();
    direct
        .put("api", &integration(8), None, "alice")
        .await
        .unwrap();
    timeout(Duration::from_secs(15), async {
        while !handle.status().unreachable {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the partition shows in the status");
    assert_eq!(
        attempts(&rx.borrow(), "api"),
        Some(3),
        "the last good snapshot stays in force"
    );
    let error = handle.status().last_error.unwrap();
    assert!(
        error.contains("longer than") || error.contains("listener"),
        "{error}"
    );

    proxy.heal();
    let snapshot = wait_for(&mut rx, Duration::from_secs(15), |s| {
        attempts(s, "api") == Some(8)
    })
    .await;
    assert_eq!(snapshot.version("api"), Some(2));
    direct
        .put("api", &integration(9), None, "alice")
        .await
        .unwrap();
    wait_for(&mut rx, Duration::from_secs(5), |s| {
        attempts(s, "api") == Some(9)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_records_who_and_why_and_rollback_writes_the_old_version_anew() {
    let (_schema, store) = TestSchema::new().await;
    let v1 = store
        .put_with(
            "stripe",
            &integration(3),
            Some(0),
            &Change::by("alice").with_reason("onboarding"),
        )
        .await
        .unwrap();
    let v2 = store
        .put_with(
            "stripe",
            &integration(7),
            Some(v1),
            &Change::by("bob").with_reason("INC-42: more attempts"),
        )
        .await
        .unwrap();
    // A plain put records no reason.
    let v3 = store
        .put("stripe", &integration(8), Some(v2), "carol")
        .await
        .unwrap();

    let v4 = store
        .rollback(
            "stripe",
            1,
            Some(v3),
            &Change::by("dave").with_reason("v2 and v3 made it worse"),
        )
        .await
        .unwrap();
    assert_eq!(v4, 4, "a rollback is a new version, not a rewrite");
    assert_eq!(
        store.get("stripe").await.unwrap().unwrap().config,
        integration(3)
    );

    let history = store.history("stripe").await.unwrap();
    let summary: Vec<(i64, &str, Option<&str>)> = history
        .iter()
        .map(|h| (h.version, h.changed_by.as_str(), h.reason.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "alice", Some("onboarding")),
            (2, "bob", Some("INC-42: more attempts")),
            (3, "carol", None),
            (4, "dave", Some("v2 and v3 made it worse")),
        ]
    );

    // The optimistic check applies to the row as it stands.
    let err = store
        .rollback("stripe", 2, Some(3), &Change::by("erin"))
        .await
        .unwrap_err();
    assert!(err.is_version_conflict(), "{err}");
    let err = store
        .rollback("stripe", 9, None, &Change::by("erin"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownVersion { version: 9, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "integrations.stripe has no version 9 in its history"
    );
}
