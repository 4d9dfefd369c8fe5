//! Issue 15, part 1: Redis sits behind the `redis` cargo feature. A configuration that asks for a
//! Redis store in a build without it is refused with a typed error naming the key and the feature,
//! never served from memory in silence.
//!
//! These tests run in a build without the feature (`cargo test -p integration-client
//! --no-default-features --test features`, a step of `cargo xtask ci`); with it, the same
//! configurations are served from Redis (see `tests/redis.rs`), and one test here checks so.

use integration_client::Client;
use integration_config::Config;

/// An integration whose `section` (a TOML inline table) names the Redis store, and a `[redis]`
/// section, which validation asks for beside any `store = "redis"`.
fn config(section: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
        [integrations.github]
        base_url = "https://api.github.com"
        {section}

        [redis]
        url = "redis://127.0.0.1:6379"
        "#
    ))
    .unwrap()
}

const RATE_LIMIT: &str = r#"rate_limit = { store = "redis" }"#;
const AUTH: &str = r#"auth = { type = "oauth2_client_credentials", token_url = "https://auth.example/token", client_id = "id", client_secret = "s3cr3t", store = "redis" }"#;

#[cfg(not(feature = "redis"))]
mod without_the_feature {
    use super::*;
    use integration_core::error::FeatureDisabled;
    use integration_core::{Error, ErrorKind};

    /// The [`FeatureDisabled`] in `error`'s source chain.
    fn feature_disabled(error: &Error) -> &FeatureDisabled {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(found) = cause.downcast_ref::<FeatureDisabled>() {
                return found;
            }
            source = cause.source();
        }
        panic!("no FeatureDisabled in the chain of {error:?}")
    }

    fn assert_refused(error: &Error, key: &str) {
        assert_eq!(error.kind(), ErrorKind::Config, "{error:?}");
        let typed = feature_disabled(error);
        assert_eq!(typed.key(), key);
        assert_eq!(typed.feature(), "redis");
        let shown = error.to_string();
        assert!(
            shown.contains(key) && shown.contains("`redis` cargo feature"),
            "the message names the key and the feature: {shown}"
        );
    }

    #[test]
    fn a_redis_rate_limit_store_is_refused_naming_the_key_and_the_feature() {
        let error = Client::from_config(config(RATE_LIMIT)).unwrap_err();
        assert_refused(&error, "integrations.github.rate_limit.store");
    }

    #[test]
    fn a_redis_token_store_is_refused_naming_the_key_and_the_feature() {
        let error = Client::from_config(config(AUTH)).unwrap_err();
        assert_refused(&error, "integrations.github.auth.store");
    }

    #[test]
    fn a_reload_that_asks_for_redis_is_refused_and_changes_nothing() {
        let client = Client::from_config(config("")).unwrap();
        let error = client.update(config(RATE_LIMIT)).unwrap_err();
        assert_refused(&error, "integrations.github.rate_limit.store");
        assert!(client.api("github").is_ok());
    }

    #[tokio::test]
    async fn connect_refuses_a_redis_section_rather_than_ignoring_it() {
        let error = Client::connect(config("")).await.unwrap_err();
        assert_refused(&error, "redis");
    }
}

/// With the feature the same configuration builds (on the local fallback until Redis answers).
#[cfg(feature = "redis")]
#[tokio::test]
async fn with_the_feature_the_redis_stores_are_built() {
    let mut config = config(&format!("{RATE_LIMIT}\n{AUTH}"));
    config.redis.as_mut().unwrap().url =
        integration_config::Secret::new(integration_core::testing::redis_url());
    let client = Client::connect(config).await.unwrap();
    assert!(client.api("github").is_ok());
}
