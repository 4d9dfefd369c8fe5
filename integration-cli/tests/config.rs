//! `integration config ...` end to end: files, and the real PostgreSQL in a schema of each test's
//! own.

mod common;

use common::{cli, file};
use integration_config::testing::TestSchema;

const SECRET: &str = "sk_live_do-not-print-41f2";

const GOOD: &str = r#"
[defaults]
timeout = "20s"

[integrations.stripe]
base_url = "https://api.stripe.com/v1/"
auth = { type = "bearer", token = "${env:CLI_TEST_STRIPE_KEY}" }
retry = { max_attempts = 5 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_every_error_with_its_path_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(dir.path(), "good.toml", GOOD);
    let ok = cli(["config", "validate", good.to_str().unwrap()])
        .env("CLI_TEST_STRIPE_KEY", SECRET)
        .run()
        .await
        .expect_code(0);
    assert!(ok.stdout.contains("1 integration(s)"), "{}", ok.stdout);

    let bad = file(
        dir.path(),
        "bad.toml",
        r#"
        [integrations.stripe]
        base_url = "https://api.stripe.com?key=1"
        attempt_timeout = "40s"
        retry = { max_attempts = 0 }
        "#,
    );
    let run = cli(["config", "validate", bad.to_str().unwrap()])
        .run()
        .await
        .expect_code(3);
    for path in [
        "integrations.stripe.base_url: must not have a query",
        "integrations.stripe.attempt_timeout: must not exceed timeout",
        "integrations.stripe.retry.max_attempts: must be at least 1",
    ] {
        assert!(run.stdout.contains(path), "{path} in:\n{}", run.stdout);
    }
    let json = cli(["config", "validate", bad.to_str().unwrap(), "-o", "json"])
        .run()
        .await
        .expect_code(3)
        .json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["errors"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["errors"][2]["path"],
        "integrations.stripe.retry.max_attempts"
    );

    // A file that is not there is a configuration error too.
    cli(["config", "validate", "/nonexistent/config.toml"])
        .run()
        .await
        .expect_code(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_the_effective_configuration_with_secrets_as_references() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(dir.path(), "good.toml", GOOD);
    let run = cli([
        "config",
        "show",
        "stripe",
        "--config",
        good.to_str().unwrap(),
    ])
    .env("CLI_TEST_STRIPE_KEY", SECRET)
    .env("INTEGRATIONS__STRIPE__RETRY__MAX_ATTEMPTS", "7")
    .run()
    .await
    .expect_code(0);
    assert!(
        run.stdout.starts_with("[integrations.stripe]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(r#"timeout = "20s""#),
        "defaults applied: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("max_attempts = 7"),
        "environment override: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("${env:CLI_TEST_STRIPE_KEY}"),
        "{}",
        run.stdout
    );
    run.assert_hides(SECRET);

    let json = cli(["config", "show", "stripe", "--json"])
        .env("INTEGRATION_CONFIG", good.to_str().unwrap())
        .env("CLI_TEST_STRIPE_KEY", SECRET)
        .run()
        .await
        .expect_code(0);
    assert_eq!(json.json()["retry"]["max_attempts"], 5);
    json.assert_hides(SECRET);

    // A plaintext secret in the file is shown as the marker, never as itself.
    let plain = file(
        dir.path(),
        "plain.toml",
        &GOOD.replace("${env:CLI_TEST_STRIPE_KEY}", SECRET),
    );
    cli([
        "config",
        "show",
        "stripe",
        "--config",
        plain.to_str().unwrap(),
    ])
    .run()
    .await
    .expect_code(0)
    .assert_hides(SECRET);

    let unknown = cli([
        "config",
        "show",
        "github",
        "--config",
        good.to_str().unwrap(),
    ])
    .run()
    .await
    .expect_code(3);
    assert!(
        unknown.stderr.contains("configured: stripe"),
        "{}",
        unknown.stderr
    );
    cli(["config", "show", "stripe"]).run().await.expect_code(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_of_two_files_shows_the_changed_lines_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let a = file(dir.path(), "a.toml", GOOD);
    let b = file(
        dir.path(),
        "b.toml",
        &GOOD.replace("max_attempts = 5", "max_attempts = 6"),
    );
    let run = cli(["config", "diff", a.to_str().unwrap(), b.to_str().unwrap()])
        .run()
        .await
        .expect_code(1);
    assert!(run.stdout.contains("-max_attempts = 5"), "{}", run.stdout);
    assert!(run.stdout.contains("+max_attempts = 6"), "{}", run.stdout);
    let same = cli([
        "config",
        "diff",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--json",
    ])
    .run()
    .await
    .expect_code(0)
    .json();
    assert_eq!(same["equal"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_when_asked_for_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let a = file(dir.path(), "a.toml", GOOD);
    let b = file(
        dir.path(),
        "b.toml",
        &GOOD.replace("max_attempts = 5", "max_attempts = 6"),
    );
    let diff = || cli(["config", "diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    let piped = diff().run().await.expect_code(1);
    assert!(
        !piped.stdout.contains('\x1b'),
        "no colour into a pipe: {:?}",
        piped.stdout
    );
    let forced = diff().env("CLICOLOR_FORCE", "1").run().await.expect_code(1);
    assert!(
        forced.stdout.contains("\x1b[31m-max_attempts = 5"),
        "{:?}",
        forced.stdout
    );
    let refused = diff()
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .run()
        .await
        .expect_code(1);
    assert!(
        !refused.stdout.contains('\x1b'),
        "NO_COLOR wins: {:?}",
        refused.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_list_history_rollback_and_diff_against_postgres_record_who_and_why() {
    let (schema, _store) = TestSchema::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--database-url", &schema.url, "--schema", &schema.name]);
        cli(all).env("CLI_TEST_STRIPE_KEY", SECRET)
    };
    // The integration's table alone, and a whole configuration naming it.
    let v1 = file(
        dir.path(),
        "v1.toml",
        r#"
        base_url = "https://api.stripe.com/v1/"
        auth = { type = "bearer", token = "${env:CLI_TEST_STRIPE_KEY}" }
        "#,
    );
    let v2 = file(dir.path(), "v2.toml", GOOD);
    let out = db(&[
        "config",
        "put",
        "stripe",
        v1.to_str().unwrap(),
        "-m",
        "onboarding",
        "--actor",
        "alice",
        "--json",
    ])
    .run()
    .await
    .expect_code(0)
    .json();
    assert_eq!(out["version"], 1);
    let run = db(&[
        "config",
        "put",
        "stripe",
        v2.to_str().unwrap(),
        "--reason",
        "INC-7: more attempts",
    ])
    .env("INTEGRATION_ACTOR", "bob")
    .run()
    .await
    .expect_code(0);
    assert!(
        run.stdout.contains("integrations.stripe: version 2 stored"),
        "{}",
        run.stdout
    );

    // Optimistic concurrency: a stale expected version is a conflict, exit 10.
    db(&[
        "config",
        "put",
        "stripe",
        v2.to_str().unwrap(),
        "-m",
        "late",
        "--expect-version",
        "1",
    ])
    .run()
    .await
    .expect_code(10);
    // A plaintext secret is refused before anything is written.
    let plain = file(
        dir.path(),
        "plain.toml",
        &format!(
            "base_url = \"https://x.example\"\nauth = {{ type = \"bearer\", token = \"{SECRET}\" }}\n"
        ),
    );
    db(&[
        "config",
        "put",
        "stripe",
        plain.to_str().unwrap(),
        "-m",
        "oops",
    ])
    .run()
    .await
    .expect_code(3)
    .assert_hides(SECRET);
    // So is an invalid configuration, with its path.
    let invalid = file(dir.path(), "invalid.toml", "base_url = \"ftp://x\"\n");
    let refused = db(&[
        "config",
        "put",
        "stripe",
        invalid.to_str().unwrap(),
        "-m",
        "bad",
    ])
    .run()
    .await
    .expect_code(3);
    assert!(
        refused.stderr.contains("base_url: must use http or https"),
        "{}",
        refused.stderr
    );

    let list = db(&["config", "list", "-o", "json"])
        .run()
        .await
        .expect_code(0)
        .json();
    assert_eq!(list[0]["name"], "stripe");
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["updated_by"], "bob");
    let table = db(&["config", "list"]).run().await.expect_code(0);
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);

    let rolled = db(&[
        "config",
        "rollback",
        "stripe",
        "1",
        "-m",
        "v2 broke refunds",
        "--actor",
        "carol",
    ])
    .run()
    .await
    .expect_code(0);
    assert!(
        rolled.stdout.contains("version 3 stored"),
        "{}",
        rolled.stdout
    );

    let history = db(&["config", "history", "stripe", "--json"])
        .run()
        .await
        .expect_code(0)
        .json();
    let summary: Vec<(i64, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["version"].as_i64().unwrap(),
                h["changed_by"].as_str().unwrap(),
                h["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "alice", "onboarding"),
            (2, "bob", "INC-7: more attempts"),
            (3, "carol", "v2 broke refunds"),
        ]
    );
    let table = db(&["config", "history", "stripe"])
        .run()
        .await
        .expect_code(0);
    assert!(
        table.stdout.contains("v2 broke refunds"),
        "{}",
        table.stdout
    );

    // The stored versions compare like files.
    let diff = db(&["config", "diff", "stripe@2", "stripe@current"])
        .run()
        .await
        .expect_code(1);
    assert!(diff.stdout.contains("-max_attempts = 5"), "{}", diff.stdout);
    db(&["config", "diff", "stripe@1", "stripe@3"])
        .run()
        .await
        .expect_code(0);
    db(&["config", "diff", "stripe@1", v1.to_str().unwrap()])
        .run()
        .await
        .expect_code(0);
    // What a service would load: the stored row wins over the file.
    let shown = db(&[
        "config",
        "show",
        "stripe",
        "--config",
        v2.to_str().unwrap(),
        "--json",
    ])
    .run()
    .await
    .expect_code(0)
    .json();
    assert_eq!(
        shown["retry"]["max_attempts"], 4,
        "version 3 is version 1's default"
    );

    db(&["config", "history", "nope"])
        .run()
        .await
        .expect_code(3);
    db(&["config", "rollback", "stripe", "9", "-m", "x"])
        .run()
        .await
        .expect_code(3);
    // PostgreSQL unreachable: exit 9.
    cli([
        "config",
        "list",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/test",
    ])
    .run()
    .await
    .expect_code(9);
}
