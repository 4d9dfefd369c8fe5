//! The configuration model: TOML syntax, defaults, environment overrides, validation paths and secrets.

use std::time::Duration;

use integration_config::{
    AuthConfig, Config, ConfigDocument, ConfigError, IntegrationConfig, Jitter, LogLevel,
    QuotaConfig, Secret, SecretSource, StoreKind,
};
use secrecy::ExposeSecret;

const FULL: &str = r#"
[defaults]
timeout = "30s"

[integrations.github]
base_url = "https://api.github.com"
user_agent = "acme-backend/1.0"
headers = { Accept = "application/vnd.github+json" }
timeout = "30s"
attempt_timeout = "10s"
connect_timeout = "5s"
max_response_bytes = 10485760

[integrations.github.auth]
type = "bearer"
token = "${env:PATH}"

[integrations.github.rate_limit]
quotas = [{ rate = 10, per = "1s", burst = 10 }, { rate = 5000, per = "1h" }]
max_wait = "5s"
max_concurrency = 32
store = "redis"
expected_replicas = 1
max_server_pause = "10m"

[integrations.github.retry]
max_attempts = 3
base = "100ms"
cap = "20s"
throttle_base = "1s"
max_retry_after = "60s"
jitter = "full"
idempotency_keys = true
budget = { ratio = 0.2, window = "10s", min_per_second = 10 }

[integrations.github.circuit_breaker]
enabled = true
failure_ratio = 0.5
window = "30s"
min_requests = 20
consecutive_failures = 5
open_for = "30s"

[integrations.github.log]
span_level = "info"
attempt_span_level = "info"
success_level = "debug"
capture_headers = true
capture_bodies = false
max_body_bytes = 4096
redact_headers = ["x-internal"]
allow_headers = []
redact_fields = ["ssn"]
propagate_traceparent = false
metrics = true

[integrations.github.tls]
webpki_roots = true
native_roots = true
ca_files = ["/etc/ssl/private-ca.pem"]

[integrations.stripe]
base_url = "https://api.stripe.com/v1/"
auth = { type = "basic", username = "sk_user", password = "${file:/etc/hostname}" }
retry = { max_attempts = 5, budget = false }

[redis]
url = "redis://127.0.0.1:6379"
key_prefix = "integration"
"#;

fn one(toml_body: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!(
        "[integrations.api]\nbase_url = \"https://api.example.com\"\n{toml_body}"
    ))
}

fn invalid_paths(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(errors)) => errors.iter().map(|e| e.to_string()).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn the_reference_toml_loads_with_every_section() {
    let config = Config::from_toml_str(FULL).expect("the reference configuration is valid");
    let github = &config.integrations["github"];
    assert_eq!(github.base_url.as_str(), "https://api.github.com/");
    assert_eq!(github.user_agent.as_deref(), Some("acme-backend/1.0"));
    assert_eq!(github.headers["Accept"], "application/vnd.github+json");
    assert_eq!(github.attempt_timeout, Some(Duration::from_secs(10)));
    assert_eq!(github.effective_attempt_timeout(), Duration::from_secs(10));
    assert_eq!(
        github.rate_limit.quotas[1],
        QuotaConfig::new(5000, Duration::from_secs(3600))
    );
    assert_eq!(github.rate_limit.quotas[1].effective_burst(), 5000);
    assert_eq!(github.rate_limit.max_concurrency, Some(32));
    assert_eq!(github.rate_limit.store, StoreKind::Redis);
    assert!(github.retry.idempotency_keys);
    assert_eq!(github.retry.jitter, Jitter::Full);
    assert_eq!(github.log.success_level, LogLevel::Debug);
    match &github.auth {
        AuthConfig::Bearer(b) => {
            assert_eq!(b.token.source(), &SecretSource::Env("PATH".into()));
            assert_eq!(b.token.expose_secret(), std::env::var("PATH").unwrap());
        }
        other => panic!("expected bearer, got {other:?}"),
    }
    let stripe = &config.integrations["stripe"];
    assert_eq!(stripe.retry.max_attempts, 5);
    assert_eq!(stripe.retry.budget, None);
    assert_eq!(stripe.base_url.path(), "/v1/");
    assert!(config.redis.is_some());
}

#[test]
fn defaults_match_the_design() {
    let config = one("").unwrap();
    let api = &config.integrations["api"];
    assert_eq!(api.timeout, Duration::from_secs(30));
    assert_eq!(api.attempt_timeout, None);
    assert_eq!(api.effective_attempt_timeout(), Duration::from_secs(30));
    assert_eq!(api.max_response_bytes, 10 * 1024 * 1024);
    assert_eq!(api.auth, AuthConfig::None);
    assert_eq!(api.retry.max_attempts, 4);
    assert_eq!(api.retry.base, Duration::from_millis(100));
    assert_eq!(api.retry.cap, Duration::from_secs(20));
    assert_eq!(api.retry.throttle_base, Duration::from_secs(1));
    assert_eq!(api.retry.max_retry_after, Duration::from_secs(60));
    assert!(!api.retry.idempotency_keys);
    let budget = api
        .retry
        .budget
        .as_ref()
        .expect("the budget is on by default");
    assert_eq!(budget.ratio, 0.2);
    assert_eq!(budget.window, Duration::from_secs(10));
    assert_eq!(budget.min_per_second, 10);
    assert!(api.rate_limit.quotas.is_empty());
    assert_eq!(api.rate_limit.max_server_pause, Duration::from_secs(600));
    assert_eq!(api.rate_limit.initial_window, 10);
    assert_eq!(api.rate_limit.expected_replicas, 1);
    assert!(api.circuit_breaker.enabled);
    assert_eq!(api.log.max_body_bytes, 4096);
    assert!(!api.log.capture_bodies);
    assert!(api.log.metrics, "duration metrics are on by default");
    assert_eq!(api.log.span_level, LogLevel::Info);
    assert_eq!(api.log.attempt_span_level, LogLevel::Debug);

    let oauth = one(
        r#"auth = { type = "oauth2_client_credentials", token_url = "https://auth.example.com/token", client_id = "id", client_secret = "s" }"#,
    )
    .unwrap();
    match &oauth.integrations["api"].auth {
        AuthConfig::OAuth2ClientCredentials(o) => {
            assert_eq!(o.skew, Duration::from_secs(60));
            assert_eq!(o.store, StoreKind::Memory);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_section_is_inherited_and_overridden() {
    let config = Config::from_toml_str(
        r#"
        [defaults]
        timeout = "12s"
        headers = { x-team = "payments" }
        retry = { max_attempts = 7, base = "50ms" }
        auth = { type = "bearer", token = "t" }

        [integrations.a]
        base_url = "https://a.example.com"

        [integrations.b]
        base_url = "https://b.example.com"
        timeout = "3s"
        headers = { x-own = "yes" }
        retry = { max_attempts = 2 }
        auth = { type = "api_key", key = "k", query = "key" }
    "#,
    )
    .unwrap();
    let (a, b) = (&config.integrations["a"], &config.integrations["b"]);
    assert_eq!(a.timeout, Duration::from_secs(12));
    assert_eq!(a.retry.max_attempts, 7);
    assert!(matches!(a.auth, AuthConfig::Bearer(_)));
    assert_eq!(b.timeout, Duration::from_secs(3));
    assert_eq!(b.retry.max_attempts, 2);
    assert_eq!(
        b.retry.base,
        Duration::from_millis(50),
        "section tables merge key by key"
    );
    assert_eq!(b.headers.len(), 2);
    assert!(
        matches!(b.auth, AuthConfig::ApiKey(_)),
        "auth is taken whole, not merged"
    );
}

#[test]
fn typo_in_defaults_is_caught_without_integrations() {
    let err = Config::from_toml_str("[defaults]\ntimeuot = \"1s\"\n").unwrap_err();
    assert!(err.to_string().starts_with("defaults"), "{err}");
    assert!(err.to_string().contains("timeuot"), "{err}");
}

#[test]
fn toml_round_trip_is_lossless() {
    let config = Config::from_toml_str(FULL).unwrap();
    let text = config.to_toml_string().unwrap();
    assert!(
        text.contains("${env:PATH}"),
        "secrets serialize as their reference:\n{text}"
    );
    let again = Config::from_toml_str(&text).unwrap();
    assert_eq!(config, again);
    let json = serde_json::to_value(&config).unwrap();
    let from_json: Config = serde_json::from_value(json).unwrap();
    assert_eq!(config, from_json);
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let err = one("[integrations.api.retry]\nmax_atempts = 5\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("integrations.api.retry"), "{text}");
    assert!(text.contains("max_atempts"), "{text}");

    let err = one(r#"auth = { type = "bearer", token = "x", tokne = "y" }"#).unwrap_err();
    assert!(err.to_string().contains("tokne"), "{err}");

    let err = Config::from_toml_str("[integrationz.api]\nbase_url = \"https://x\"\n").unwrap_err();
    assert!(err.to_string().contains("integrationz"), "{err}");
}

#[test]
fn wrong_types_and_missing_auth_fields_carry_the_path() {
    let err = one("[integrations.api.retry]\nmax_attempts = \"three\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Deserialize { path, .. } if path == "integrations.api.retry.max_attempts"),
        "{err}"
    );

    let err = one(r#"auth = { type = "basic", username = "u" }"#).unwrap_err();
    assert!(err.to_string().contains("integrations.api.auth"), "{err}");
    assert!(err.to_string().contains("password"), "{err}");

    // The types it knows, not the value it got (serde quotes it; a value may be a secret).
    let err = one(r#"auth = { type = "kerberos" }"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("integrations.api.auth.type: unknown variant, expected one of `none`"),
        "{err}"
    );
    assert!(!err.to_string().contains("kerberos"), "{err}");

    let err = one("timeout = \"soon\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Deserialize { path, .. } if path == "integrations.api.timeout"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let err = Config::from_toml_str("[integrations.api\nbase_url = 1").unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { ref message, file: None } if message.contains("line 1")),
        "{err}"
    );
}

#[test]
fn validation_collects_every_error_with_its_path() {
    let paths = invalid_paths(Config::from_toml_str(
        r#"
        [integrations.stripe]
        base_url = "ftp://api.stripe.com/?a=1"
        timeout = "30s"
        attempt_timeout = "40s"
        connect_timeout = "0s"
        max_response_bytes = 0
        headers = { "bad header" = "x", ok = "line\nbreak" }
        user_agent = "ua\u0001"
        [integrations.stripe.rate_limit]
        quotas = [{ rate = 0, per = "1s" }, { rate = 5, per = "0s", burst = 0 }]
        max_concurrency = 0
        expected_replicas = 0
        store = "redis"
        [integrations.stripe.retry]
        max_attempts = 0
        base = "2s"
        cap = "1s"
        budget = { ratio = 1.5 }
        [integrations.stripe.circuit_breaker]
        failure_ratio = 0.0
        min_requests = 0
        open_for = "0s"
        [integrations.stripe.log]
        redact_headers = ["no spaces allowed"]
        allow_headers = ["x-ok", "bad:colon"]
        [integrations."bad name!"]
        base_url = "https://user:pw@example.com/#frag"
        "#,
    ));
    let expected = [
        "integrations.stripe.base_url: must use http or https, not \"ftp\"",
        "integrations.stripe.base_url: must not have a query; put query parameters on requests",
        "integrations.stripe.user_agent: is not a valid header value",
        "integrations.stripe.headers.bad header: \"bad header\" is not a valid header name",
        "integrations.stripe.headers.ok: is not a valid header value",
        "integrations.stripe.attempt_timeout: must not exceed timeout (30s)",
        "integrations.stripe.connect_timeout: must be greater than 0s",
        "integrations.stripe.max_response_bytes: must be at least 1",
        "integrations.stripe.rate_limit.quotas[0].rate: must be at least 1",
        "integrations.stripe.rate_limit.quotas[1].per: must be greater than 0s",
        "integrations.stripe.rate_limit.quotas[1].burst: must be at least 1",
        "integrations.stripe.rate_limit.max_concurrency: must be at least 1",
        "integrations.stripe.rate_limit.expected_replicas: must be at least 1",
        "integrations.stripe.rate_limit.store: store = \"redis\" needs a [redis] section",
        "integrations.stripe.retry.max_attempts: must be at least 1",
        "integrations.stripe.retry.cap: must not be less than retry.base",
        "integrations.stripe.retry.budget.ratio: must be in (0, 1], got 1.5",
        "integrations.stripe.circuit_breaker.failure_ratio: must be in (0, 1], got 0",
        "integrations.stripe.circuit_breaker.min_requests: must be at least 1",
        "integrations.stripe.circuit_breaker.open_for: must be greater than 0s",
        "integrations.stripe.log.redact_headers[0]: \"no spaces allowed\" is not a valid header name",
        "integrations.stripe.log.allow_headers[1]: \"bad:colon\" is not a valid header name",
        "integrations.bad name!: the integration name may contain only ASCII letters, digits, '-', '_' and '.'",
        "integrations.bad name!.base_url: must not carry credentials; use the auth section",
        "integrations.bad name!.base_url: must not have a fragment",
    ];
    for e in expected {
        assert!(
            paths.iter().any(|p| p == e),
            "missing {e:?} in:\n{}",
            paths.join("\n")
        );
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "unexpected extra errors:\n{}",
        paths.join("\n")
    );
}

#[test]
fn auth_fields_are_validated_for_their_type() {
    let paths = invalid_paths(Config::from_toml_str(
        r#"
        [integrations.a]
        base_url = "https://a.example.com"
        auth = { type = "api_key", key = "", header = "X-Key", query = "key" }
        [integrations.b]
        base_url = "https://b.example.com"
        auth = { type = "basic", username = "a:b", password = "p" }
        [integrations.c]
        base_url = "https://c.example.com"
        auth = { type = "oauth2_client_credentials", token_url = "ftp://auth/", client_id = " ", client_secret = "s", scopes = ["read write"], store = "redis" }
        [integrations.d]
        base_url = "https://d.example.com"
        auth = { type = "jwt", algorithm = "RS256", private_key = "not a pem", ttl = "30s", skew = "60s" }
        [integrations.e]
        base_url = "https://e.example.com"
        auth = { type = "jwt_bearer_grant", token_url = "https://auth.example.com/token", algorithm = "HS256", private_key = "${env:INTEGRATION_CONFIG_TEST_SURELY_UNSET}" }
        [integrations.f]
        base_url = "https://f.example.com"
        auth = { type = "oauth2_refresh_token", token_url = "https://auth.example.com/token", client_id = "id", refresh_token = "${file:/nonexistent/integration-config/secret}" }
        "#,
    ));
    let expected = [
        "integrations.a.auth.key: must not be empty",
        "integrations.a.auth: api_key takes either header or query, not both",
        "integrations.b.auth.username: must not contain ':'",
        "integrations.c.auth.token_url: must use http or https, not \"ftp\"",
        "integrations.c.auth.client_id: must not be empty",
        "integrations.c.auth.scopes[0]: a scope must be non-empty and contain no whitespace",
        "integrations.c.auth.store: store = \"redis\" needs a [redis] section",
        "integrations.d.auth.private_key: RS256 needs a PEM private key (-----BEGIN ...)",
        "integrations.d.auth.skew: must be shorter than auth.ttl",
        "integrations.e.auth.private_key: environment variable INTEGRATION_CONFIG_TEST_SURELY_UNSET is not set",
        "integrations.f.auth.refresh_token: secret file /nonexistent/integration-config/secret could not be read: entity not found",
    ];
    for e in expected {
        assert!(
            paths.iter().any(|p| p == e),
            "missing {e:?} in:\n{}",
            paths.join("\n")
        );
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "unexpected extra errors:\n{}",
        paths.join("\n")
    );
}

#[test]
fn redis_section_is_validated_and_satisfies_redis_stores() {
    let ok = Config::from_toml_str(
        "[integrations.a]\nbase_url = \"https://a\"\nrate_limit = { store = \"redis\" }\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
    )
    .unwrap();
    assert_eq!(ok.redis.as_ref().unwrap().key_prefix, "integration");
    let paths = invalid_paths(Config::from_toml_str(
        "[redis]\nurl = \"http://secret-host\"\nkey_prefix = \"a {b}\"\n",
    ));
    assert_eq!(
        paths,
        [
            "redis.url: must use redis, rediss or unix",
            "redis.key_prefix: must not contain whitespace or braces (they are used for hash tags)"
        ]
    );
}

#[test]
fn redis_outage_settings_default_to_starting_on_the_fallbacks_and_are_validated() {
    let ok = Config::from_toml_str("[redis]\nurl = \"redis://127.0.0.1:6379\"\n").unwrap();
    let redis = ok.redis.as_ref().unwrap();
    assert!(!redis.required, "by default a client starts without Redis");
    assert_eq!(redis.command_timeout, Duration::from_millis(50));
    assert_eq!(redis.connect_timeout, Duration::from_millis(500));
    // Defaults are not written back out.
    let text = ok.to_toml_string().unwrap();
    assert!(
        !text.contains("command_timeout") && !text.contains("required"),
        "{text}"
    );

    let set = Config::from_toml_str(
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\nrequired = true\ncommand_timeout = \"20ms\"\nconnect_timeout = \"2s\"\n",
    )
    .unwrap();
    let redis = set.redis.as_ref().unwrap();
    assert!(redis.required);
    assert_eq!(redis.command_timeout, Duration::from_millis(20));
    assert_eq!(redis.connect_timeout, Duration::from_secs(2));
    let paths = invalid_paths(Config::from_toml_str(
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\ncommand_timeout = \"0s\"\nconnect_timeout = \"1m\"\n",
    ));
    assert_eq!(
        paths,
        [
            "redis.command_timeout: must be greater than 0s",
            "redis.connect_timeout: must be at most 30s"
        ]
    );
    let paths = invalid_paths(Config::from_toml_str(
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\ncommand_timeout = \"6s\"\n",
    ));
    assert_eq!(
        paths,
        [
            "redis.command_timeout: must be at most 5s (calls wait this long before Redis counts as unavailable)"
        ]
    );
}

#[test]
fn env_overrides_apply_to_the_tree_before_typing() {
    let config = ConfigDocument::from_toml_str(
        "[integrations.stripe]\nbase_url = \"https://api.stripe.com\"\n",
    )
    .unwrap()
    .apply_env_vars(
        "APP_",
        [
            ("APP_INTEGRATIONS__STRIPE__RETRY__MAX_ATTEMPTS", "5"),
            ("APP_INTEGRATIONS__STRIPE__RETRY__BUDGET", "false"),
            (
                "APP_INTEGRATIONS__STRIPE__CIRCUIT_BREAKER__FAILURE_RATIO",
                "0.25",
            ),
            ("APP_INTEGRATIONS__STRIPE__TIMEOUT", "12s"),
            ("APP_INTEGRATIONS__STRIPE__USER_AGENT", "\"1234\""),
            (
                "APP_INTEGRATIONS__STRIPE__RATE_LIMIT__QUOTAS",
                "[{ rate = 10, per = \"1s\" }]",
            ),
            ("APP_INTEGRATIONS__STRIPE__AUTH__TYPE", "bearer"),
            ("APP_INTEGRATIONS__STRIPE__AUTH__TOKEN", "${env:PATH}"),
            (
                "APP_INTEGRATIONS__NEW__BASE_URL",
                "https://new.example.com/v2/",
            ),
            ("APP_DEFAULTS__CONNECT_TIMEOUT", "2s"),
            ("APP_UNRELATED__THING", "ignored"),
            ("INTEGRATIONS__STRIPE__TIMEOUT", "99s"),
        ],
    )
    .unwrap()
    .build()
    .unwrap();
    let stripe = &config.integrations["stripe"];
    assert_eq!(stripe.retry.max_attempts, 5);
    assert_eq!(stripe.retry.budget, None);
    assert_eq!(stripe.circuit_breaker.failure_ratio, 0.25);
    assert_eq!(stripe.timeout, Duration::from_secs(12));
    assert_eq!(stripe.user_agent.as_deref(), Some("1234"));
    assert_eq!(
        stripe.rate_limit.quotas,
        vec![QuotaConfig::new(10, Duration::from_secs(1))]
    );
    assert_eq!(stripe.connect_timeout, Duration::from_secs(2));
    assert!(
        matches!(&stripe.auth, AuthConfig::Bearer(b) if b.token.source() == &SecretSource::Env("PATH".into()))
    );
    assert_eq!(config.integrations["new"].base_url.path(), "/v2/");
}

/// Regression: a variable name cannot hold `-`, so `[integrations.my-api]` (or a name with capitals)
/// could not be reached: the override created a new integration `my_api` beside it.
#[test]
fn env_overrides_reach_hyphenated_and_capitalised_integration_names() {
    let config = ConfigDocument::from_toml_str(
        "[integrations.my-api]\nbase_url = \"https://a.example.com\"\n\
         [integrations.GitHub]\nbase_url = \"https://api.github.com\"\n",
    )
    .unwrap()
    .apply_env_vars(
        "APP_",
        [
            ("APP_INTEGRATIONS__MY_API__TIMEOUT", "7s"),
            ("APP_INTEGRATIONS__GITHUB__RETRY__MAX_ATTEMPTS", "4"),
        ],
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(config.integrations.len(), 2, "no integration was added");
    assert_eq!(
        config.integrations["my-api"].timeout,
        Duration::from_secs(7)
    );
    assert_eq!(config.integrations["GitHub"].retry.max_attempts, 4);

    // Two names that only differ by `-` and `_` cannot be told apart from a variable name.
    let err = ConfigDocument::from_toml_str(
        "[integrations.my-api]\nbase_url = \"https://a\"\n\
         [integrations.My_Api]\nbase_url = \"https://b\"\n",
    )
    .unwrap()
    .apply_env_vars("", [("INTEGRATIONS__MY_API__TIMEOUT", "7s")])
    .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ConfigError::Env { name, .. } if name == "INTEGRATIONS__MY_API__TIMEOUT"),
        "{message}"
    );
    assert!(
        message.contains("`my-api`") && message.contains("`My_Api`"),
        "{message}"
    );
}

#[test]
fn the_tls_section_is_validated_with_its_paths() {
    let err = one(r#"
        [integrations.a]
        base_url = "https://a.example.com"
        tls = { webpki_roots = false, client_cert_file = "/etc/a/client.pem" }
        "#)
    .unwrap_err();
    let paths: Vec<String> = err
        .validation_errors()
        .unwrap()
        .errors()
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    assert_eq!(
        paths,
        [
            "integrations.a.tls: trusts no root: keep webpki_roots or native_roots, or give ca_files",
            "integrations.a.tls.client_key_file: is required with client_cert_file",
        ]
    );
    let ok = one(r#"
        [integrations.a]
        base_url = "https://a.example.com"
        tls = { webpki_roots = false, ca_files = ["/etc/a/ca.pem"] }
        "#)
    .unwrap();
    let tls = &ok.integrations["a"].tls;
    assert!(!tls.webpki_roots && !tls.is_default());
    assert_eq!(tls.ca_files, [std::path::PathBuf::from("/etc/a/ca.pem")]);
    assert!(
        IntegrationConfig::builder("https://b.example.com")
            .build()
            .unwrap()
            .tls
            .is_default()
    );
}

#[test]
fn env_override_errors_name_the_variable() {
    let err = ConfigDocument::from_toml_str("[integrations.a]\nbase_url = \"https://a\"\n")
        .unwrap()
        .apply_env_vars("", [("INTEGRATIONS__A__BASE_URL__X", "1")])
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { name, .. } if name == "INTEGRATIONS__A__BASE_URL__X"),
        "{err}"
    );
    let err = ConfigDocument::new()
        .apply_env_vars("", [("INTEGRATIONS____X", "1")])
        .unwrap_err();
    assert!(matches!(err, ConfigError::Env { .. }));
    // Overrides are validated like the file itself.
    let err = ConfigDocument::from_toml_str("[integrations.a]\nbase_url = \"https://a\"\n")
        .unwrap()
        .apply_env_vars("", [("INTEGRATIONS__A__RETRY__MAX_ATTEMPTS", "0")])
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(
        err.validation_errors().unwrap().errors()[0].path,
        "integrations.a.retry.max_attempts"
    );
}

#[test]
fn file_source_reads_toml_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("integration-config-test-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, FULL).unwrap();
    assert_eq!(
        Config::from_file(&path).unwrap(),
        Config::from_toml_str(FULL).unwrap()
    );
    let err = Config::from_file(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn secret_references_resolve_at_load() {
    let dir = std::env::temp_dir().join(format!("integration-config-secret-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "tok-from-file\n").unwrap();
    let secret = Secret::parse(&format!("${{file:{}}}", file.display()));
    assert_eq!(
        secret.expose_secret(),
        "tok-from-file",
        "the final newline is trimmed"
    );
    assert_eq!(secret.source(), &SecretSource::File(file.clone()));
    std::fs::write(&file, "multi\nline\n\n").unwrap();
    assert_eq!(
        secret.reresolve().expose_secret(),
        "multi\nline\n",
        "only the final newline is trimmed"
    );

    let env = Secret::parse("${env:PATH}");
    assert_eq!(env.expose_secret(), std::env::var("PATH").unwrap());
    assert_eq!(
        Secret::parse("$${env:PATH}").expose_secret(),
        "${env:PATH}",
        "a doubled dollar escapes a literal"
    );
    assert!(Secret::parse("plain").is_literal());
    assert!(Secret::parse("${vault:x}").error().is_some());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_secret_error_names_the_reference_not_a_value() {
    let err =
        one(r#"auth = { type = "bearer", token = "${env:INTEGRATION_CONFIG_TEST_SURELY_UNSET}" }"#)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration:\nintegrations.api.auth.token: environment variable INTEGRATION_CONFIG_TEST_SURELY_UNSET is not set"
    );
}

#[test]
fn secrets_never_print_in_debug_or_serialize() {
    let config =
        one(r#"auth = { type = "basic", username = "u", password = "hunter2-literal" }"#).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2-literal"), "{debug}");
    assert!(debug.contains("Secret([REDACTED])"), "{debug}");
    let toml = config.to_toml_string().unwrap();
    assert!(!toml.contains("hunter2-literal"), "{toml}");
    assert!(toml.contains("${redacted}"), "{toml}");
    // A redacted dump cannot be loaded back as if it held the value.
    let err = Config::from_toml_str(&toml).unwrap_err();
    assert!(
        err.to_string()
            .contains("integrations.api.auth.password: the secret was redacted"),
        "{err}"
    );

    let by_ref = format!("{:?}", Secret::parse("${env:PATH}"));
    assert_eq!(by_ref, "Secret(${env:PATH})");
    assert!(!by_ref.contains(&std::env::var("PATH").unwrap()));
}

#[test]
fn equality_follows_resolved_values_and_references() {
    assert_eq!(Secret::new("a"), Secret::new("a"));
    assert_ne!(Secret::new("a"), Secret::new("b"));
    assert_ne!(
        Secret::parse("${env:PATH}"),
        Secret::new(std::env::var("PATH").unwrap()),
        "the source counts"
    );
    let a = one("").unwrap();
    let mut b = a.clone();
    assert_eq!(a, b);
    b.integrations
        .get_mut("api")
        .unwrap()
        .rate_limit
        .quotas
        .push(QuotaConfig::new(1, Duration::from_secs(1)));
    assert_ne!(a, b);
}

#[test]
fn builder_makes_the_same_model_as_toml() {
    let built = IntegrationConfig::builder("https://api.github.com")
        .user_agent("acme-backend/1.0")
        .header("Accept", "application/vnd.github+json")
        .bearer(Secret::parse("${env:PATH}"))
        .quota(QuotaConfig::new(10, Duration::from_secs(1)).with_burst(10))
        .max_attempts(4)
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let parsed = Config::from_toml_str(
        r#"
        [integrations.github]
        base_url = "https://api.github.com"
        user_agent = "acme-backend/1.0"
        headers = { Accept = "application/vnd.github+json" }
        attempt_timeout = "10s"
        auth = { type = "bearer", token = "${env:PATH}" }
        rate_limit = { quotas = [{ rate = 10, per = "1s", burst = 10 }] }
        retry = { max_attempts = 4 }
    "#,
    )
    .unwrap();
    assert_eq!(built, parsed.integrations["github"]);

    let err = IntegrationConfig::builder("not a url").build().unwrap_err();
    assert!(err.has_path("base_url"));
    let err = IntegrationConfig::builder("https://x")
        .attempt_timeout(Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "attempt_timeout: must not exceed timeout (30s)"
    );
}

#[test]
fn redis_url_with_a_password_is_redacted_when_serialized() {
    let config =
        Config::from_toml_str("[redis]\nurl = \"redis://:pw-literal@127.0.0.1:6379\"\n").unwrap();
    let text = config.to_toml_string().unwrap();
    assert!(!text.contains("pw-literal"), "{text}");
    assert!(!format!("{config:?}").contains("pw-literal"));
}

mod properties {
    use super::*;
    use integration_config::{BreakerConfig, RetryConfig};
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        (0u64..10_000_000, 0u32..1000)
            .prop_map(|(ms, ns)| Duration::from_millis(ms) + Duration::from_nanos(ns.into()))
    }

    proptest! {
        #[test]
        fn numeric_settings_round_trip_through_toml(
            attempts in 0u32..100,
            base in duration(),
            cap in duration(),
            ratio in 0.0f64..=1.0,
            window in duration(),
            min_requests in 0u32..10_000,
            quotas in proptest::collection::vec((0u32..100_000, duration(), proptest::option::of(0u32..100_000)), 0..4),
        ) {
            let mut c = IntegrationConfig::new("https://api.example.com".parse().unwrap());
            let mut retry = RetryConfig::default();
            retry.max_attempts = attempts;
            retry.base = base;
            retry.cap = cap;
            c.retry = retry;
            let mut breaker = BreakerConfig::default();
            breaker.failure_ratio = ratio;
            breaker.window = window;
            breaker.min_requests = min_requests;
            c.circuit_breaker = breaker;
            c.rate_limit.quotas = quotas.into_iter().map(|(rate, per, burst)| {
                let q = QuotaConfig::new(rate, per);
                match burst { Some(b) => q.with_burst(b), None => q }
            }).collect();
            let config = Config::new().with_integration("api", c);
            let text = config.to_toml_string().unwrap();
            let again = ConfigDocument::from_toml_str(&text).unwrap().build_unvalidated().unwrap();
            prop_assert_eq!(config, again);
        }

        #[test]
        fn env_values_never_panic_and_always_apply(value in ".*") {
            let vars = [("INTEGRATIONS__API__USER_AGENT", value.as_str())];
            let doc = ConfigDocument::new().apply_env_vars("", vars).unwrap();
            let applied = doc.as_table()["integrations"]["api"].get("user_agent");
            prop_assert!(applied.is_some());
        }

        #[test]
        fn secret_parsing_never_panics_and_never_leaks_in_debug(text in ".*") {
            let secret = Secret::parse(&text);
            let debug = format!("{secret:?}");
            if secret.is_literal() && text.len() > 12 {
                prop_assert!(!debug.contains(&text));
            }
        }
    }
}

#[test]
fn plaintext_secrets_in_defaults_never_print_or_serialize() {
    let text = r#"
        [defaults]
        auth = { type = "bearer", token = "defaults-literal" }
        [integrations.a]
        base_url = "https://a.example.com"
    "#;
    let document = ConfigDocument::from_toml_str(text).unwrap();
    assert!(!format!("{document:?}").contains("defaults-literal"));
    let config = document.build().unwrap();
    assert!(
        !format!("{config:?}").contains("defaults-literal"),
        "{config:?}"
    );
    let dumped = config.to_toml_string().unwrap();
    assert!(!dumped.contains("defaults-literal"), "{dumped}");
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains("defaults-literal"), "{json}");
}

/// Regression: a credential written in plain `headers` (`Authorization = "Bearer ..."`) passed
/// validation, so it was printed by `Debug`, stored as plaintext in PostgreSQL (where only secret
/// references are allowed) and bypassed the auth section. It is refused with its path, by the same rule
/// the logs redact by; `log.allow_headers` is the escape hatch for a header that only looks secret.
#[test]
fn a_credential_in_plain_headers_is_refused_with_its_path() {
    let paths = invalid_paths(Config::from_toml_str(
        r#"
        [integrations.crm]
        base_url = "https://crm.example.com/"
        headers = { Authorization = "Bearer plain-token", X-Api-Key = "plain-key", X-Session-Token = "t", Accept = "application/json" }
        log = { allow_headers = ["x-session-token"] }
        "#,
    ));
    let expected = [
        "integrations.crm.headers.Authorization: carries a credential; put it in the auth section (type = \"api_key\" with header = ..., or bearer, basic...), where it is a secret reference and redacted",
        "integrations.crm.headers.X-Api-Key: carries a credential; put it in the auth section (type = \"api_key\" with header = ..., or bearer, basic...), where it is a secret reference and redacted",
    ];
    assert_eq!(paths, expected);
    for path in &paths {
        assert!(!path.contains("plain-"), "no value in the error: {path}");
    }
}

#[test]
fn adaptive_throttling_is_on_by_default_and_its_knobs_are_bounded() {
    let config = Config::from_toml_str(
        r#"
        [integrations.github]
        base_url = "https://api.github.com"
        [integrations.slow]
        base_url = "https://slow.example.com"
        [integrations.slow.rate_limit.adaptive]
        min_rate = 2.0
        decrease = 0.5
        increase = 1.0
        [integrations.off]
        base_url = "https://off.example.com"
        rate_limit = { adaptive = { enabled = false } }
        "#,
    )
    .unwrap();
    let adaptive = |name: &str| config.integrations[name].rate_limit.adaptive.clone();
    let defaults = adaptive("github");
    assert!(defaults.enabled);
    assert_eq!(
        (defaults.min_rate, defaults.decrease, defaults.increase),
        (0.5, 0.7, 0.4)
    );
    let slow = adaptive("slow");
    assert_eq!(
        (slow.min_rate, slow.decrease, slow.increase),
        (2.0, 0.5, 1.0)
    );
    assert!(!adaptive("off").enabled);

    let paths = invalid_paths(Config::from_toml_str(
        r#"
        [integrations.x]
        base_url = "https://x.example.com"
        [integrations.x.rate_limit.adaptive]
        min_rate = 0.0
        decrease = 1.0
        increase = 1000.0
        "#,
    ));
    assert_eq!(
        paths,
        vec![
            "integrations.x.rate_limit.adaptive.min_rate: must be between 0.01 and 1000000, got 0",
            "integrations.x.rate_limit.adaptive.decrease: must be between 0.1 and 0.95, got 1",
            "integrations.x.rate_limit.adaptive.increase: must be between 0.01 and 100, got 1000",
        ]
    );
}

/// The breaker's keys of issue 12: the new defaults, the two new keys, and their validation.
#[test]
fn breaker_defaults_and_new_keys() {
    let breaker = integration_config::BreakerConfig::default();
    assert_eq!(breaker.failure_ratio, 0.5);
    assert_eq!(breaker.window, Duration::from_secs(2));
    assert_eq!(breaker.min_requests, 100);
    assert_eq!(breaker.consecutive_failures, 10);
    assert_eq!(breaker.open_for, Duration::from_secs(5));
    assert_eq!(breaker.max_open_for, Duration::from_secs(5));
    assert_eq!(breaker.half_open_probes, 5);
    assert!(!integration_config::BudgetConfig::default().refunds);

    let config = Config::from_toml_str(
        r#"
        [integrations.api]
        base_url = "https://api.example.com"
        retry.budget = { ratio = 0.2, refunds = true }
        [integrations.api.circuit_breaker]
        open_for = "2s"
        max_open_for = "1m"
        half_open_probes = 3
        "#,
    )
    .unwrap();
    let api = &config.integrations["api"];
    assert_eq!(api.circuit_breaker.max_open_for, Duration::from_secs(60));
    assert_eq!(api.circuit_breaker.half_open_probes, 3);
    assert!(api.retry.budget.as_ref().unwrap().refunds);

    let errors = invalid_paths(Config::from_toml_str(
        r#"
        [integrations.api]
        base_url = "https://api.example.com"
        [integrations.api.circuit_breaker]
        half_open_probes = 0
        "#,
    ));
    assert_eq!(
        errors,
        ["integrations.api.circuit_breaker.half_open_probes: must be at least 1"]
    );
    // A cap below the base open time reads as the base (no growth): a config written before the
    // cap existed, with only `open_for`, stays valid.
    let config = Config::from_toml_str(
        r#"
        [integrations.api]
        base_url = "https://api.example.com"
        circuit_breaker = { open_for = "30s" }
        "#,
    )
    .unwrap();
    assert_eq!(
        config.integrations["api"].circuit_breaker.open_for,
        Duration::from_secs(30)
    );
}
