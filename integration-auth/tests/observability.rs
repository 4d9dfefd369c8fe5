//! No secret in errors, logs or metrics, whatever the token endpoint echoes; refreshes are counted by
//! outcome. Alone in its test binary: it installs the global metrics recorder.

mod common;

use common::{Upstream, get, token_url, transport};
use integration_auth::{
    AuthContext, AuthLayer, ClientCredentials, CredentialProvider, RefreshToken, TokenCacheConfig,
};
use integration_core::names;
use integration_core::testing::capture;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use secrecy::SecretString;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLIENT_SECRET: &str = "cs-0123456789-secret";
const REFRESH: &str = "rt-0123456789-secret";
const ACCESS: &str = "at-0123456789-secret";

const SECRETS: &[&str] = &[CLIENT_SECRET, REFRESH, ACCESS];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks a secret: {text}");
    }
}

/// A token endpoint that echoes every secret it can in its errors, and answers a good request with a
/// token.
async fn leaky_endpoint() -> MockServer {
    let server = MockServer::start().await;
    let echo = format!("client secret {CLIENT_SECRET} refresh {REFRESH} token {ACCESS}");
    Mock::given(method("POST"))
        .and(body_string_contains("scope=grant"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": echo})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("scope=client"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "invalid_client", "error_description": echo})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("scope=html"))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("<pre>{echo}</pre>")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("scope=garbled"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(format!("{{\"access_token\": \"{ACCESS}\", ")),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("scope=ok"))
        .respond_with(common::token(ACCESS, 3600))
        .mount(&server)
        .await;
    server
}

fn client_credentials(server: &MockServer, scope: &str) -> ClientCredentials {
    ClientCredentials::new(
        token_url(server),
        "client-1",
        SecretString::from(CLIENT_SECRET),
        transport(),
    )
    .with_scopes([scope])
    .with_key(format!("leaky-{scope}"))
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_in_errors_logs_or_metrics_and_refreshes_are_counted_by_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    // Everything at TRACE, through the capture that is correct under parallel tests (a thread-local
    // subscriber is not: see `integration_core::testing`).
    let logs = capture(tracing::Level::TRACE);

    let server = leaky_endpoint().await;
    let mut errors = Vec::new();
    for scope in ["grant", "client", "html", "garbled"] {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(client_credentials(&server, scope)))
            .service(Upstream::default().service());
        let mut request = get();
        request
            .extensions_mut()
            .insert(integration_core::ext::IntegrationName::new("leaky"));
        errors.push(service.oneshot(request).await.unwrap_err());
    }
    let refresh = RefreshToken::new(
        token_url(&server),
        "client-1",
        SecretString::from(REFRESH),
        transport(),
    )
    .with_client_secret(SecretString::from(CLIENT_SECRET))
    .with_scopes(["grant"])
    .with_cache_config(TokenCacheConfig::new().with_integration("leaky"));
    errors.push(
        refresh
            .credential(&AuthContext::detached())
            .await
            .unwrap_err(),
    );
    let ok = client_credentials(&server, "ok")
        .with_cache_config(TokenCacheConfig::new().with_integration("leaky"));
    ok.credential(&AuthContext::detached()).await.unwrap();

    for error in errors {
        assert_clean("error Display", &error.to_string());
        assert_clean("error Debug", &format!("{error:?}"));
        let core = integration_core::Error::from(error);
        assert!(core.is_auth());
        assert_clean("core error Display", &format!("{core} / {core:#}"));
        assert_clean("core error Debug", &format!("{core:?}"));
    }

    let failed = logs
        .event("token refresh failed")
        .unwrap_or_else(|| panic!("logs say what happened: {logs:?}"));
    assert_eq!(failed.level, tracing::Level::WARN);
    assert_eq!(failed.field("integration"), Some("leaky"), "{failed:?}");
    assert_clean("logs", &logs.all_text().join("\n"));

    let mut outcomes = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() != names::TOKEN_REFRESHES {
            continue;
        }
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_clean("metric labels", &format!("{labels:?}"));
        // Other tests of this binary count their refreshes too: keep this one's.
        if !labels.contains(&(names::INTEGRATION.to_owned(), "leaky".to_owned())) {
            continue;
        }
        let outcome = labels
            .iter()
            .find(|(k, _)| k == names::OUTCOME)
            .unwrap()
            .1
            .clone();
        let DebugValue::Counter(count) = value else {
            panic!("a counter")
        };
        outcomes.push((outcome, count));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("error".to_owned(), 2),
            ("invalid_client".to_owned(), 1),
            ("invalid_grant".to_owned(), 2),
            ("ok".to_owned(), 1),
        ]
    );
}
