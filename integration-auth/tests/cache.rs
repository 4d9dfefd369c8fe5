//! Token cache timing rules, on tokio's paused clock with an in-process token endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration_auth::{
    AuthContext, ClientCredentials, CredentialProvider, Jitter, TokenCacheConfig, TokenTransport,
    Url,
};
use integration_core::error::AuthFailed;
use secrecy::SecretString;

/// A token endpoint in a closure: answers with `tok-N` (N counting from 1) valid `expires_in` seconds,
/// or with a 503 while `failing` is set.
#[derive(Clone)]
struct Endpoint {
    requests: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    expires_in: u64,
}

impl Endpoint {
    fn new(expires_in: u64) -> Self {
        Self {
            requests: Arc::default(),
            failing: Arc::default(),
            expires_in,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn transport(&self) -> TokenTransport {
        let this = self.clone();
        TokenTransport::from_fn(move |_request| {
            let this = this.clone();
            async move {
                let n = this.requests.fetch_add(1, Ordering::SeqCst) + 1;
                if this.failing.load(Ordering::SeqCst) {
                    return Ok(http::Response::builder()
                        .status(503)
                        .body(b"<html>unavailable</html>".to_vec())
                        .unwrap());
                }
                let body = format!(
                    r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{}}}"#,
                    this.expires_in
                );
                Ok(http::Response::builder()
                    .header("content-type", "application/json")
                    .body(body.into_bytes())
                    .unwrap())
            }
        })
    }

    fn provider(&self, config: TokenCacheConfig) -> ClientCredentials {
        ClientCredentials::new(
            Url::parse("https://auth.example.com/token").unwrap(),
            "client-1",
            SecretString::from("client-secret-value"),
            self.transport(),
        )
        .with_cache_config(config)
    }
}

async fn bearer(provider: &impl CredentialProvider) -> String {
    let credential = provider.credential(&AuthContext::detached()).await.unwrap();
    let mut request = http::Request::new(());
    credential.apply(&mut request).unwrap();
    request.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_token_is_used_until_expires_in_minus_the_jittered_skew() {
    let endpoint = Endpoint::new(3600);
    // Jitter at its maximum: skew 60 s plus a quarter of it, 75 s before expiry.
    let config = TokenCacheConfig::new()
        .with_skew(Duration::from_secs(60))
        .with_jitter(Jitter::from_fn(|| 1.0));
    let provider = endpoint.provider(config);
    assert_eq!(bearer(&provider).await, "Bearer tok-1");
    tokio::time::advance(Duration::from_secs(3600 - 76)).await;
    assert_eq!(bearer(&provider).await, "Bearer tok-1");
    assert_eq!(endpoint.requests(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(bearer(&provider).await, "Bearer tok-2");
    assert_eq!(endpoint.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_skew_never_exceeds_half_a_short_lifetime() {
    let endpoint = Endpoint::new(30);
    let provider = endpoint.provider(TokenCacheConfig::new().with_jitter(Jitter::none()));
    assert_eq!(bearer(&provider).await, "Bearer tok-1");
    tokio::time::advance(Duration::from_secs(14)).await;
    assert_eq!(bearer(&provider).await, "Bearer tok-1");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(bearer(&provider).await, "Bearer tok-2");
}

#[tokio::test(start_paused = true)]
async fn a_fresh_cached_token_is_ready_without_waiting() {
    let endpoint = Endpoint::new(3600);
    let provider = endpoint.provider(TokenCacheConfig::new());
    bearer(&provider).await;
    let mut lookup = provider.credential(&AuthContext::detached());
    assert!(lookup.take_ready().is_some(), "fast path: no await, no box");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_cools_down_before_the_endpoint_is_asked_again() {
    let endpoint = Endpoint::new(3600);
    endpoint.failing.store(true, Ordering::SeqCst);
    let provider = endpoint.provider(TokenCacheConfig::new().with_cooldown(Duration::from_secs(1)));
    let ctx = AuthContext::detached();

    let error = provider.credential(&ctx).await.unwrap_err();
    let failed = error.downcast_ref::<AuthFailed>().unwrap();
    assert!(!failed.is_permanent(), "a 503 is transient");
    assert!(
        !failed.to_string().contains("html"),
        "the body is never shown"
    );
    // The retry layer is told when a refresh may be tried again: the cool-down, then what is left.
    assert_eq!(failed.retry_after(), Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_millis(400)).await;
    let error = provider.credential(&ctx).await.unwrap_err();
    let cooling = error.downcast_ref::<AuthFailed>().unwrap();
    assert_eq!(cooling.retry_after(), Some(Duration::from_millis(600)));
    for _ in 0..10 {
        assert!(provider.credential(&ctx).await.is_err());
    }
    assert_eq!(endpoint.requests(), 1, "no request during the cool-down");
    tokio::time::advance(Duration::from_millis(600)).await;
    endpoint.failing.store(false, Ordering::SeqCst);
    assert_eq!(bearer(&provider).await, "Bearer tok-2");
    assert_eq!(endpoint.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn background_refresh_replaces_the_token_before_callers_need_it() {
    let endpoint = Endpoint::new(120);
    let config = TokenCacheConfig::new()
        .with_skew(Duration::from_secs(20))
        .with_jitter(Jitter::none())
        .with_background_refresh(true);
    let provider = endpoint.provider(config);
    assert_eq!(bearer(&provider).await, "Bearer tok-1");
    // Refresh point at 100 s, background wake-up half a skew earlier, at 90 s.
    tokio::time::sleep(Duration::from_secs(89)).await;
    assert_eq!(endpoint.requests(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.requests(), 2, "refreshed in the background");
    let mut lookup = provider.credential(&AuthContext::detached());
    let credential = lookup
        .take_ready()
        .expect("ready: no caller waits")
        .unwrap();
    let mut request = http::Request::new(());
    credential.apply(&mut request).unwrap();
    assert_eq!(request.headers()["authorization"], "Bearer tok-2");
}

#[tokio::test(start_paused = true)]
async fn invalidating_an_older_token_leaves_the_newer_one() {
    let endpoint = Endpoint::new(3600);
    let provider = endpoint.provider(TokenCacheConfig::new());
    let ctx = AuthContext::detached();
    let first = provider.credential(&ctx).await.unwrap();
    provider.invalidate(&first);
    let second = provider.credential(&ctx).await.unwrap();
    assert!(!second.same_as(&first));
    // A late 401 for the first token must not throw the second away.
    provider.invalidate(&first);
    let again = provider.credential(&ctx).await.unwrap();
    assert!(again.same_as(&second));
    assert_eq!(endpoint.requests(), 2);
}
