//! Issue 14, part 5 and part 6 (configuration side): every duration, count and rate of the model is
//! bounded in validation with its path; names that an environment override cannot tell apart are
//! refused; syntax errors name their file; the builder's errors name the integration; and the
//! configuration errors convert into `integration_core::Error`.

use std::time::Duration;

use integration_config::{
    Config, ConfigDocument, ConfigError, IntegrationConfig, QuotaConfig, Secret, StoreError, limits,
};

/// The validation messages of a one-integration configuration named `pay` with `body` as its table.
fn problems(body: &str) -> Vec<String> {
    let text = format!("[integrations.pay]\nbase_url = \"https://pay.example\"\n{body}\n");
    match Config::from_toml_str(&text) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("{body}: not a validation error: {other}"),
    }
}

/// Each `(setting, the one problem it must raise)`: the value just past the bound is refused with
/// its path, and the bound itself is accepted.
#[test]
fn every_duration_count_and_rate_has_an_upper_bound_with_its_path() {
    let refused: &[(&str, &str)] = &[
        (
            "timeout = \"1000000000h\"",
            "integrations.pay.timeout: must be at most 1h",
        ),
        (
            "timeout = \"1h 1s\"",
            "integrations.pay.timeout: must be at most 1h",
        ),
        (
            "timeout = \"500us\"",
            "integrations.pay.timeout: must be at least 1ms",
        ),
        (
            "connect_timeout = \"301s\"",
            "integrations.pay.connect_timeout: must be at most 5m",
        ),
        (
            "max_response_bytes = 1073741825",
            "integrations.pay.max_response_bytes: must be at most 1073741824",
        ),
        (
            "retry = { max_attempts = 1000000 }",
            "integrations.pay.retry.max_attempts: must be at most 20",
        ),
        (
            "retry = { max_attempts = 21 }",
            "integrations.pay.retry.max_attempts: must be at most 20",
        ),
        (
            "retry = { base = \"61s\", cap = \"2m\" }",
            "integrations.pay.retry.base: must be at most 1m",
        ),
        (
            "retry = { cap = \"601s\" }",
            "integrations.pay.retry.cap: must be at most 10m",
        ),
        (
            "retry = { throttle_base = \"61s\" }",
            "integrations.pay.retry.throttle_base: must be at most 1m",
        ),
        (
            "retry = { max_retry_after = \"3601s\" }",
            "integrations.pay.retry.max_retry_after: must be at most 1h",
        ),
        (
            "retry = { budget = { window = \"3601s\" } }",
            "integrations.pay.retry.budget.window: must be at most 1h",
        ),
        (
            "retry = { budget = { window = \"10ms\" } }",
            "integrations.pay.retry.budget.window: must be at least 100ms",
        ),
        (
            "retry = { budget = { min_per_second = 10001 } }",
            "integrations.pay.retry.budget.min_per_second: must be at most 10000",
        ),
        (
            "rate_limit = { quotas = [{ rate = 4294967295, per = \"1s\" }] }",
            "integrations.pay.rate_limit.quotas[0].rate: must be at most 1000000",
        ),
        (
            "rate_limit = { quotas = [{ rate = 10, per = \"1ns\" }] }",
            "integrations.pay.rate_limit.quotas[0].per: must be at least 1ms",
        ),
        (
            "rate_limit = { quotas = [{ rate = 10, per = \"32days\" }] }",
            "integrations.pay.rate_limit.quotas[0].per: must be at most 31d",
        ),
        (
            "rate_limit = { quotas = [{ rate = 1000, per = \"1ms\" }] }",
            "integrations.pay.rate_limit.quotas[0].rate: 1000 per 1ms is more than 100000 per second",
        ),
        (
            "rate_limit = { quotas = [{ rate = 10, per = \"1s\", burst = 1000001 }] }",
            "integrations.pay.rate_limit.quotas[0].burst: must be at most 1000000",
        ),
        (
            "rate_limit = { max_wait = \"3601s\" }",
            "integrations.pay.rate_limit.max_wait: must be at most 1h",
        ),
        (
            "rate_limit = { max_concurrency = 100001 }",
            "integrations.pay.rate_limit.max_concurrency: must be at most 100000",
        ),
        (
            "rate_limit = { expected_replicas = 10001 }",
            "integrations.pay.rate_limit.expected_replicas: must be at most 10000",
        ),
        (
            "rate_limit = { max_server_pause = \"25h\" }",
            "integrations.pay.rate_limit.max_server_pause: must be at most 24h",
        ),
        (
            "circuit_breaker = { window = \"3601s\" }",
            "integrations.pay.circuit_breaker.window: must be at most 1h",
        ),
        (
            "circuit_breaker = { window = \"99ms\" }",
            "integrations.pay.circuit_breaker.window: must be at least 100ms",
        ),
        (
            "circuit_breaker = { min_requests = 100001 }",
            "integrations.pay.circuit_breaker.min_requests: must be at most 100000",
        ),
        (
            "circuit_breaker = { consecutive_failures = 100001 }",
            "integrations.pay.circuit_breaker.consecutive_failures: must be at most 100000",
        ),
        (
            "circuit_breaker = { open_for = \"3601s\" }",
            "integrations.pay.circuit_breaker.open_for: must be at most 1h",
        ),
        (
            "log = { max_body_bytes = 1048577 }",
            "integrations.pay.log.max_body_bytes: must be at most 1048576",
        ),
        (
            "auth = { type = \"oauth2_client_credentials\", token_url = \"https://t.example/token\", \
             client_id = \"c\", client_secret = \"${env:PATH}\", skew = \"3601s\" }",
            "integrations.pay.auth.skew: must be at most 1h",
        ),
        (
            "auth = { type = \"jwt\", algorithm = \"HS256\", private_key = \"${env:PATH}\", ttl = \"25h\" }",
            "integrations.pay.auth.ttl: must be at most 24h",
        ),
    ];
    for (setting, expected) in refused {
        assert_eq!(problems(setting), [*expected], "{setting}");
    }

    // The bounds themselves are accepted.
    let accepted = [
        "timeout = \"1h\"",
        "timeout = \"1ms\"",
        "connect_timeout = \"5m\"",
        "max_response_bytes = 1073741824",
        "retry = { max_attempts = 20, base = \"1m\", cap = \"10m\", throttle_base = \"1m\", \
         max_retry_after = \"1h\", budget = { window = \"1h\", min_per_second = 10000 } }",
        "rate_limit = { quotas = [{ rate = 1000000, per = \"10s\", burst = 1000000 }, \
         { rate = 100, per = \"1ms\" }, { rate = 1, per = \"31days\" }], max_wait = \"1h\", \
         max_concurrency = 100000, expected_replicas = 10000, max_server_pause = \"24h\" }",
        "circuit_breaker = { window = \"1h\", min_requests = 100000, consecutive_failures = 100000, \
         open_for = \"1h\" }",
        "log = { max_body_bytes = 1048576 }",
    ];
    for setting in accepted {
        assert_eq!(problems(setting), Vec::<String>::new(), "{setting}");
    }
}

#[test]
fn the_documented_limits_are_the_enforced_ones() {
    let mut config = IntegrationConfig::new("https://pay.example".parse().unwrap());
    config.retry.max_attempts = u32::try_from(limits::MAX_ATTEMPTS).unwrap();
    config.timeout = limits::MAX_TIMEOUT;
    assert!(config.validate().is_ok());
    config.retry.max_attempts += 1;
    config.timeout += Duration::from_millis(1);
    let errors = config.validate().unwrap_err();
    assert!(errors.has_path("retry.max_attempts"), "{errors}");
    assert!(errors.has_path("timeout"), "{errors}");
}

/// Regression (issue 14): `pay` and `PAY` were both accepted, and an environment override then went
/// silently to one of them.
#[test]
fn names_equal_up_to_case_and_dash_or_underscore_are_refused() {
    for (first, second) in [("PAY", "pay"), ("my-api", "My_Api"), ("a-b", "a_b")] {
        let text = format!(
            "[integrations.{first}]\nbase_url = \"https://a.example\"\n\
             [integrations.\"{second}\"]\nbase_url = \"https://b.example\"\n"
        );
        let err = Config::from_toml_str(&text).unwrap_err();
        let errors = err.validation_errors().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(errors.len(), 1, "{errors}");
        // BTreeMap order: the later name is the one reported, against the earlier.
        let (earlier, later) = if first < second {
            (first, second)
        } else {
            (second, first)
        };
        let problem = &errors.errors()[0];
        assert_eq!(problem.path, format!("integrations.{later}"));
        assert!(
            problem
                .message
                .starts_with(&format!("differs from `{earlier}` only by case or `-`/`_`")),
            "{problem}"
        );
    }
    // Names that differ by more are fine, `.` included (no variable name can hold it anyway).
    let config = Config::new()
        .with_integration(
            "pay",
            IntegrationConfig::new("https://a.example".parse().unwrap()),
        )
        .with_integration(
            "pay2",
            IntegrationConfig::new("https://b.example".parse().unwrap()),
        )
        .with_integration(
            "pay.v2",
            IntegrationConfig::new("https://c.example".parse().unwrap()),
        );
    assert!(config.validate().is_ok());
}

/// Regression (issue 14): `Config::from_file` said `invalid TOML: ...` without the file.
#[test]
fn a_syntax_error_in_a_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("integrations.toml");
    std::fs::write(&file, "[integrations.pay]\nbase_url = \n").unwrap();
    let err = Config::from_file(&file).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("invalid TOML in {}: ", file.display())),
        "{shown}"
    );
    assert!(shown.contains("line 2"), "{shown}");
    assert_eq!(err.file(), Some(file.as_path()));
    let err = Config::from_file_with_env(&file, "APP_").unwrap_err();
    assert_eq!(err.file(), Some(file.as_path()));

    // Text given directly has no file to name.
    let err = ConfigDocument::from_toml_str("a = = 1").unwrap_err();
    assert!(err.to_string().starts_with("invalid TOML: "), "{err}");
    assert_eq!(err.file(), None);
}

/// Regression (issue 14): the builder's errors said `retry.max_attempts: ...` with no integration.
#[test]
fn builder_errors_name_the_integration_once_it_is_known() {
    let err = IntegrationConfig::builder("https://pay.example")
        .name("pay")
        .max_attempts(0)
        .timeout(Duration::from_secs(7200))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "integrations.pay.timeout: must be at most 1h\n\
         integrations.pay.retry.max_attempts: must be at least 1"
    );
    let err = IntegrationConfig::builder("not a url")
        .name("pay")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("integrations.pay.base_url: not an absolute URL"),
        "{err}"
    );
    let err = IntegrationConfig::builder("https://pay.example")
        .name("pay me")
        .build()
        .unwrap_err();
    assert!(err.has_path("integrations.pay me"), "{err}");
    // Unnamed, the paths stay relative as before.
    let err = IntegrationConfig::builder("https://pay.example")
        .max_attempts(0)
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "retry.max_attempts: must be at least 1");
    // Named and valid: the same model as unnamed.
    let named = IntegrationConfig::builder("https://pay.example")
        .name("pay")
        .quota(QuotaConfig::new(10, Duration::from_secs(1)))
        .build()
        .unwrap();
    let unnamed = IntegrationConfig::builder("https://pay.example")
        .quota(QuotaConfig::new(10, Duration::from_secs(1)))
        .build()
        .unwrap();
    assert_eq!(named, unnamed);
}

/// Regression (issue 14): `?` on a `ConfigError` or `ValidationErrors` did not compile in a function
/// returning `integration_core::Error`.
#[test]
fn config_errors_convert_into_the_layer_error() {
    fn from_text(text: &str) -> Result<Config, integration_core::Error> {
        Ok(Config::from_toml_str(text)?)
    }
    fn from_builder() -> Result<IntegrationConfig, integration_core::Error> {
        Ok(IntegrationConfig::builder("https://pay.example")
            .name("pay")
            .max_attempts(1_000_000)
            .build()?)
    }
    let err = from_text("[integrations.pay]\nbase_url = \"https://pay.example\"\ntimeout = \"2h\"")
        .unwrap_err();
    assert!(err.is_config());
    assert_eq!(
        err.to_string(),
        "invalid configuration:\nintegrations.pay.timeout: must be at most 1h"
    );
    let source = std::error::Error::source(&err).expect("the config error is the source");
    assert!(source.downcast_ref::<ConfigError>().is_some());

    let err = from_text("x = = 1").unwrap_err();
    assert!(err.is_config());
    assert!(err.to_string().starts_with("invalid TOML: "), "{err}");

    let err = from_builder().unwrap_err();
    assert!(err.is_config());
    assert_eq!(
        err.to_string(),
        "integrations.pay.retry.max_attempts: must be at most 20"
    );

    // A secret typed where a number belongs is not echoed by the converted error.
    let err = from_text(
        "[integrations.pay]\nbase_url = \"https://pay.example\"\n\
         headers = { Authorization = \"Bearer sk_live_0123456789abcdef\" }",
    )
    .unwrap_err();
    for shown in [err.to_string(), format!("{err:#}"), format!("{err:?}")] {
        assert!(!shown.contains("sk_live_0123456789abcdef"), "{shown}");
    }
}

/// Regression (issue 14): the PostgreSQL store took `PAY` beside `pay`; a put is refused, and a row
/// written behind the store's back is rejected at load (the other rows still load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_names_equal_up_to_case_and_dash_or_underscore() {
    let (schema, store) = integration_config::testing::TestSchema::new().await;
    let config = IntegrationConfig::builder("https://pay.example")
        .bearer(Secret::parse("${env:PATH}"))
        .build()
        .unwrap();
    store.put("pay-v2", &config, None, "alice").await.unwrap();
    for clash in ["PAY-V2", "pay_v2", "Pay_V2"] {
        let err = store.put(clash, &config, None, "alice").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::ConfusableName { name, existing } if name == clash && existing == "pay-v2"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "integrations.{clash}: differs from `pay-v2` only by case or `-`/`_`; an \
                 environment override could not tell them apart, so rename one"
            )
        );
        assert!(store.get(clash).await.unwrap().is_none());
    }
    // The same name is an update, not a clash.
    assert_eq!(
        store.put("pay-v2", &config, None, "alice").await.unwrap(),
        2
    );

    // Written behind the store's back: the later name (in name order) is rejected at load.
    schema
        .execute(
            r#"INSERT INTO integrations (name, version, config, updated_by) VALUES ('PAY-V2', 1,
               '{"base_url": "https://x.example.com"}', 'psql')"#,
        )
        .await;
    let err = store.load(&Config::new()).await.unwrap_err();
    assert!(
        err.to_string().contains("differs from `PAY-V2`")
            || err.to_string().contains("differs from `pay-v2`"),
        "{err}"
    );
    // A base integration clashing with a stored row: the row is the one rejected.
    let base = Config::new().with_integration(
        "Billing",
        IntegrationConfig::new("https://b.example".parse().unwrap()),
    );
    schema.execute("DELETE FROM integrations").await;
    store.put("billing", &config, None, "alice").await.unwrap();
    let err = store.load(&base).await.unwrap_err();
    assert!(err.to_string().contains("differs from `Billing`"), "{err}");
}
