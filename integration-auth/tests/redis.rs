//! Replicas sharing tokens through the real Redis (REDIS_URL, default redis://127.0.0.1:6379), each
//! test under its own random key prefix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Upstream, exact, get, rotated, token, token_url, transport};
use futures_util::future::join_all;
use integration_auth::{
    AuthContext, AuthLayer, ClientCredentials, CredentialProvider, RedisTokenStore, RefreshToken,
    TokenCacheConfig, TokenStore,
};
use integration_core::testing::{RedisServer, delete_prefixed, redis_url};
use secrecy::{ExposeSecret, SecretString};
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer};

/// One replica's store: its own connection, the shared prefix.
async fn store(prefix: &str) -> RedisTokenStore {
    let url = redis_url();
    RedisTokenStore::connect(&url, prefix)
        .await
        .unwrap_or_else(|error| panic!("Redis at {url} (REDIS_URL) is unreachable: {error:#}"))
}

fn unique_prefix() -> String {
    format!("test-auth-{}", uuid::Uuid::new_v4().simple())
}

fn replica(server: &MockServer, store: RedisTokenStore) -> ClientCredentials {
    ClientCredentials::new(
        token_url(server),
        "client-1",
        SecretString::from("client-secret-value"),
        transport(),
    )
    .with_store(Arc::new(store))
    .with_cache_config(exact().with_lock_poll(Duration::from_millis(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_fetch_one_token_between_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("shared-tok", 3600).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let prefix = unique_prefix();
    let upstream = Upstream::default();
    let replica_a = ServiceBuilder::new()
        .layer(AuthLayer::new(replica(&server, store(&prefix).await)))
        .service(upstream.service());
    let replica_b = ServiceBuilder::new()
        .layer(AuthLayer::new(replica(&server, store(&prefix).await)))
        .service(upstream.service());

    let calls = (0..50).flat_map(|_| {
        [
            tokio::spawn(replica_a.clone().oneshot(get())),
            tokio::spawn(replica_b.clone().oneshot(get())),
        ]
    });
    for response in join_all(calls).await {
        assert_eq!(response.unwrap().unwrap().body(), "Bearer shared-tok");
    }
    server.verify().await;
    delete_prefixed(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_starts_later_reads_the_token_from_redis() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token("shared-tok", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let prefix = unique_prefix();
    let upstream = Upstream::default();
    let first = ServiceBuilder::new()
        .layer(AuthLayer::new(replica(&server, store(&prefix).await)))
        .service(upstream.service());
    assert_eq!(
        first.oneshot(get()).await.unwrap().body(),
        "Bearer shared-tok"
    );

    let later = ServiceBuilder::new()
        .layer(AuthLayer::new(replica(&server, store(&prefix).await)))
        .service(upstream.service());
    assert_eq!(
        later.oneshot(get()).await.unwrap().body(),
        "Bearer shared-tok"
    );
    // The token in Redis expires with the token (minus the skew).
    let raw = redis::Client::open(redis_url()).unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    let token_key = keys.iter().find(|k| k.ends_with(":token")).unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(token_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 3_400_000 && ttl <= 3_540_000, "ttl {ttl}");
    server.verify().await;
    delete_prefixed(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_in_one_replica_is_not_answered_with_the_same_token_from_redis() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token("tok-1", 3600))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let prefix = unique_prefix();
    let upstream = Upstream::accepting(&["Bearer tok-2"]);
    let provider_a = replica(&server, store(&prefix).await);
    let provider_b = replica(&server, store(&prefix).await);
    // Both replicas hold tok-1: A fetched it, B read it from Redis.
    let ctx = AuthContext::detached();
    provider_a.credential(&ctx).await.unwrap();
    provider_b.credential(&ctx).await.unwrap();
    let replica_a = ServiceBuilder::new()
        .layer(AuthLayer::new(provider_a))
        .service(upstream.service());
    let replica_b = ServiceBuilder::new()
        .layer(AuthLayer::new(provider_b))
        .service(upstream.service());
    // A's 401 refreshes (skipping the rejected token still in Redis); B's 401 picks tok-2 up from
    // Redis instead of asking again.
    assert_eq!(
        replica_a.oneshot(get()).await.unwrap().body(),
        "Bearer tok-2"
    );
    assert_eq!(
        replica_b.oneshot(get()).await.unwrap().body(),
        "Bearer tok-2"
    );
    assert_eq!(
        *upstream.seen.lock().unwrap(),
        [
            "Bearer tok-1",
            "Bearer tok-2",
            "Bearer tok-1",
            "Bearer tok-2"
        ]
    );
    server.verify().await;
    delete_prefixed(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_written_to_redis_for_every_replica() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("refresh_token=refresh-1"))
        .respond_with(rotated("access-1", "refresh-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let prefix = unique_prefix();
    let redis = store(&prefix).await;
    let provider = RefreshToken::new(
        token_url(&server),
        "client-1",
        SecretString::from("refresh-1"),
        transport(),
    )
    .with_store(Arc::new(redis.clone()))
    .with_key("crm")
    .with_cache_config(TokenCacheConfig::new());
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(Upstream::default().service());
    assert_eq!(
        service.oneshot(get()).await.unwrap().body(),
        "Bearer access-1"
    );
    let stored = redis.load_refresh_token("crm").await.unwrap().unwrap();
    assert_eq!(stored.expose_secret(), "refresh-2");
    server.verify().await;
    delete_prefixed(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_redis_are_encrypted_with_the_configured_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token("plain-access-token", 3600))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("refresh_token=refresh-1"))
        .respond_with(rotated("access-r", "plain-refresh-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let key = SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    let prefix = unique_prefix();
    let encrypted = || async {
        store(&prefix)
            .await
            .with_encryption_key(&key)
            .expect("a 32-byte key")
    };
    let ctx = AuthContext::detached();
    // Replica A fetches; replica B, with the same key, reads it from Redis.
    let a = replica(&server, encrypted().await);
    let b = replica(&server, encrypted().await);
    let from_a = a.credential(&ctx).await.unwrap();
    let from_b = b.credential(&ctx).await.unwrap();
    assert!(from_a.same_as(&from_b));
    // A refresh token written encrypted.
    let refresh = RefreshToken::new(
        token_url(&server),
        "client-1",
        SecretString::from("refresh-1"),
        transport(),
    )
    .with_store(Arc::new(encrypted().await))
    .with_key("crm");
    refresh.credential(&ctx).await.unwrap();

    let raw = redis::Client::open(redis_url()).unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut values = 0;
    for key in keys.iter().filter(|k| !k.ends_with(":lock")) {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(value.starts_with("enc1:"), "{key} is sealed");
        assert!(!value.contains("plain-"), "{key} holds no plaintext");
        values += 1;
    }
    assert_eq!(
        values, 3,
        "client credentials token, refresh grant token and its refresh token"
    );

    // A replica with another key cannot read the token: it fetches its own (the second request).
    let other = store(&prefix)
        .await
        .with_encryption_key(&SecretString::from(
            "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
        ))
        .unwrap();
    let c = replica(&server, other);
    assert!(!c.credential(&ctx).await.unwrap().same_as(&from_a));
    // And a key that is not 32 bytes is refused.
    let error = store(&prefix)
        .await
        .with_encryption_key(&SecretString::from("c2hvcnQ="))
        .unwrap_err();
    assert!(error.is_config());
    server.verify().await;
    delete_prefixed(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_refreshing_in_this_process() {
    let server = MockServer::start().await;
    two_tokens_mocks(&server).await;
    let mut redis = RedisServer::start().expect("own redis-server");
    let store = RedisTokenStore::connect(&redis.url(), unique_prefix())
        .await
        .expect("own Redis reachable");
    let provider = replica(&server, store);
    let ctx = AuthContext::detached();
    let first = provider.credential(&ctx).await.unwrap();

    redis.kill();
    provider.invalidate(&first);
    // Redis is gone: the token is fetched and used anyway (the store failure is logged).
    let second = provider.credential(&ctx).await.unwrap();
    assert!(!second.same_as(&first));
    // And it stays cached in this process without touching Redis.
    let mut again = provider.credential(&ctx);
    assert!(again.take_ready().unwrap().unwrap().same_as(&second));
    server.verify().await;
}

async fn two_tokens_mocks(server: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(token("tok-1", 3600))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .with_priority(2)
        .mount(server)
        .await;
}

/// Issue 13 (part 4): a token refresh stalled while Redis was away. The facade's shared connection
/// manager (the `redis` defaults: six reconnection attempts with a growing backoff) made every store
/// operation of the single-flight refresh wait for its reconnection, and every call waiting there
/// held its rate-limit permit. A store over such a manager now goes through a `SharedRedis`: the
/// first failure marks Redis unavailable and the rest of the refresh (lock, save, unlock) costs no
/// round trip, so the refresh takes about as long as the token request. The bound below is 3 s;
/// without the fix it takes several seconds of reconnection attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_redis_outage_does_not_wait_for_reconnections() {
    let server = MockServer::start().await;
    two_tokens_mocks(&server).await;
    let mut redis = RedisServer::start().expect("own redis-server");
    let manager =
        redis::aio::ConnectionManager::new(redis::Client::open(redis.url().as_str()).unwrap())
            .await
            .expect("own Redis reachable");
    let provider = replica(&server, RedisTokenStore::new(manager, unique_prefix()));
    let ctx = AuthContext::detached();
    let first = provider.credential(&ctx).await.unwrap();

    redis.kill();
    provider.invalidate(&first);
    let began = tokio::time::Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(3), provider.credential(&ctx))
        .await
        .unwrap_or_else(|_| panic!("the refresh still waited after {:?}", began.elapsed()))
        .unwrap();
    println!("refresh with Redis down took {:?}", began.elapsed());
    assert!(!second.same_as(&first));
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_tells_whether_a_token_is_cached_and_when_it_expires_never_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token("inspected-tok", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let prefix = unique_prefix();
    let redis = store(&prefix).await;
    let provider = replica(&server, redis.clone());
    let key = provider
        .cache_key()
        .expect("a cached grant has a key")
        .to_owned();
    assert!(!key.contains("client-secret-value"), "{key}");

    let before = redis.inspect(&key).await.unwrap();
    assert!(!before.cached);
    assert_eq!(before.expires_in, None);

    let upstream = Upstream::default();
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream.service());
    assert_eq!(
        service.oneshot(get()).await.unwrap().body(),
        "Bearer inspected-tok"
    );
    let after = redis.inspect(&key).await.unwrap();
    assert!(after.cached);
    let left = after.expires_in.expect("the token expires");
    assert!(
        left > Duration::from_secs(3000) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    assert!(!after.refreshing);
    assert!(!format!("{after:?}").contains("inspected-tok"));
    server.verify().await;
    delete_prefixed(&prefix).await;
}
