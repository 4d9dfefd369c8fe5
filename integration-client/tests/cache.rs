//! Issue 16 through the full stack: the facade places the cache between the log layer and the
//! deadline layer when `cache.enabled`; a hit never reaches the upstream, a response says where it
//! came from, the call span carries `cache.status`, and a stale entry answers when the upstream
//! fails (after the retries).

use std::time::Duration;

use integration_client::{CacheStatus, Client};
use integration_config::{ApiKeyAuth, AuthConfig, IntegrationConfig, Secret};
use integration_core::names;
use integration_core::testing::capture;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(server: &MockServer) -> IntegrationConfig {
    let mut config = IntegrationConfig::builder(server.uri()).build().unwrap();
    config.retry.base = Duration::from_millis(1);
    config.retry.cap = Duration::from_millis(5);
    config.cache.enabled = true;
    config
}

#[tokio::test]
async fn a_hit_never_reaches_the_upstream_and_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/rates"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("cache-control", "max-age=60")
                .set_body_string("1.08"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::builder()
        .api("rates", config(&server))
        .build()
        .unwrap();
    let captured = capture(tracing::Level::INFO);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = client
            .api("rates")
            .unwrap()
            .get("/rates")
            .send()
            .await
            .unwrap();
        seen.push((response.cache_status(), response.from_cache()));
        assert_eq!(response.text().await.unwrap(), "1.08");
    }
    assert_eq!(
        seen,
        [
            (Some(CacheStatus::Miss), false),
            (Some(CacheStatus::Hit), true),
            (Some(CacheStatus::Hit), true)
        ]
    );
    let statuses: Vec<_> = captured
        .captured()
        .span_named("GET")
        .iter()
        .filter_map(|span| span.field(names::CACHE_STATUS).map(str::to_owned))
        .collect();
    assert_eq!(statuses, ["miss", "hit", "hit"]);
}

#[tokio::test]
async fn without_the_section_nothing_is_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).insert_header("cache-control", "max-age=60"))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.cache.enabled = false;
    let client = Client::builder().api("plain", config).build().unwrap();
    for _ in 0..2 {
        let response = client.api("plain").unwrap().get("/x").send().await.unwrap();
        assert_eq!(response.cache_status(), None);
    }
}

#[tokio::test]
async fn a_stale_entry_answers_when_the_upstream_fails_after_the_retries() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("cache-control", "max-age=1, stale-if-error=600")
                .set_body_string("last good"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let client = Client::builder()
        .api("flaky", config(&server))
        .build()
        .unwrap();
    client
        .api("flaky")
        .unwrap()
        .get("/doc")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = client
        .api("flaky")
        .unwrap()
        .get("/doc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.cache_status(), Some(CacheStatus::Stale));
    assert_eq!(response.text().await.unwrap(), "last good");
    // The retry layer tried the upstream before the cache answered.
    assert!(server.received_requests().await.unwrap().len() >= 3);
}

#[tokio::test]
async fn the_integrations_credential_partitions_its_entries() {
    // Two integrations at one upstream, with different API keys: neither sees the other's entry.
    let server = MockServer::start().await;
    for key in ["k1", "k2"] {
        Mock::given(method("GET"))
            .and(header("x-api-key", key))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("cache-control", "public, max-age=60")
                    .set_body_string(key),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    let with_key = |key: &str| {
        let mut config = config(&server);
        config.auth = AuthConfig::ApiKey(ApiKeyAuth::new(Secret::new(key)));
        config
    };
    let client = Client::builder()
        .api("one", with_key("k1"))
        .api("two", with_key("k2"))
        .build()
        .unwrap();
    for _ in 0..2 {
        for (api, key) in [("one", "k1"), ("two", "k2")] {
            let response = client.api(api).unwrap().get("/me").send().await.unwrap();
            assert_eq!(response.text().await.unwrap(), key);
        }
    }
}
