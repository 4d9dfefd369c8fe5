//! Issue 16: the per-integration `cache` section: off by default, parsed with its defaults, every
//! bound checked with its path.

use std::time::Duration;

use integration_config::{CacheCredentials, CacheOverride, Config, ConfigError, StoreKind};

fn problems(body: &str) -> Vec<String> {
    let text = format!("[integrations.pay]\nbase_url = \"https://pay.example\"\n{body}\n");
    match Config::from_toml_str(&text) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("{body}: not a validation error: {other}"),
    }
}

#[test]
fn the_cache_is_off_by_default_and_parses_with_its_defaults() {
    let config = Config::from_toml_str(
        "[integrations.pay]\nbase_url = \"https://pay.example\"\n\n\
         [integrations.rates]\nbase_url = \"https://rates.example\"\n\
         cache = { enabled = true, stale_if_error = \"10m\", credentials = \"shared\", \
         overrides = [{ path = \"/v1/rates/*\", ttl = \"60s\" }] }\n",
    )
    .unwrap();
    assert!(!config.integrations["pay"].cache.enabled);
    let cache = &config.integrations["rates"].cache;
    assert!(cache.enabled);
    assert_eq!(cache.store, StoreKind::Memory);
    assert_eq!(cache.stale_if_error, Some(Duration::from_secs(600)));
    assert_eq!(cache.stale_while_revalidate, None);
    assert_eq!(cache.credentials, CacheCredentials::Shared);
    assert_eq!(
        cache.overrides,
        [CacheOverride {
            path: "/v1/rates/*".into(),
            ttl: Duration::from_secs(60)
        }]
    );
    assert_eq!(cache.max_body_bytes, 1024 * 1024);
    // Unknown keys are refused, as everywhere in the model.
    assert!(
        Config::from_toml_str(
            "[integrations.x]\nbase_url = \"https://x.example\"\ncache = { enable = true }\n"
        )
        .is_err()
    );
}

#[test]
fn every_cache_bound_is_checked_with_its_path() {
    let cases: &[(&str, &str)] = &[
        (
            "cache = { max_bytes = 0 }",
            "integrations.pay.cache.max_bytes: must be at least 1",
        ),
        (
            "cache = { max_entries = 10000001 }",
            "integrations.pay.cache.max_entries: must be at most 10000000",
        ),
        (
            "cache = { max_body_bytes = 67108865 }",
            "integrations.pay.cache.max_body_bytes: must be at most 67108864",
        ),
        (
            "cache = { stale_if_error = \"31days\" }",
            "integrations.pay.cache.stale_if_error: must be at most 30d",
        ),
        (
            "cache = { max_ttl = \"500ms\" }",
            "integrations.pay.cache.max_ttl: must be at least 1s",
        ),
        (
            "cache = { overrides = [{ path = \"v1/*\", ttl = \"1m\" }] }",
            "integrations.pay.cache.overrides[0].path: must start with /",
        ),
        (
            "cache = { overrides = [{ path = \"/v1\", ttl = \"0s\" }] }",
            "integrations.pay.cache.overrides[0].ttl: must be greater than 0s",
        ),
        (
            "cache = { enabled = true, store = \"redis\" }",
            "integrations.pay.cache.store: store = \"redis\" needs a [redis] section",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(problems(body), [*expected], "{body}");
    }
    assert!(problems("cache = { enabled = true, max_ttl = \"30days\" }").is_empty());
}
