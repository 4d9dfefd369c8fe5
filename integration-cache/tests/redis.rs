//! The Redis store against a real Redis: the shared instance at `REDIS_URL` (each test under its own
//! key prefix), and a private `redis-server` this file starts and kills for the outage test.

#![cfg(feature = "redis")]

mod common;
mod redis_common;

use std::time::Duration;

use common::{Client, Upstream, get, get_as, send};
use http::Request;
use integration_cache::{CacheConfig, CacheLayer, CacheStatus, CacheStore, HashKey, RedisConfig};
use integration_core::redis::{SharedRedis, SharedRedisConfig};
use integration_core::testing::redis_url;
use redis_common::PrivateRedis;
use tower::Layer;

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).unwrap();
    format!(
        "cache-test:{test}:{}:{}",
        std::process::id(),
        u64::from_be_bytes(random)
    )
}

/// A generous command timeout: a loaded machine must not send these tests to the outage path
/// (it has a test of its own).
fn shared(url: &str) -> SharedRedis {
    let config = SharedRedisConfig::new().with_command_timeout(Duration::from_millis(500));
    SharedRedis::open(url, config).unwrap()
}

/// A replica: its own layer and connection, the store's prefix and the key shared.
fn replica(url: &str, prefix: &str, upstream: &Upstream, config: CacheConfig) -> Client {
    let store = CacheStore::redis(shared(url), RedisConfig::new(prefix));
    CacheLayer::new(store, config)
        .with_hash_key(HashKey::new(b"a key the replicas share, of 32 bytes"))
        .layer(upstream.service())
}

async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// Waits (bounded) for the background store of an entry to land.
async fn stored(url: &str, prefix: &str, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let found = keys(url, prefix).await;
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no entry stored under {prefix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_entries_in_one_round_trip_under_hash_tagged_keys() {
    let url = redis_url();
    let prefix = prefix("share");
    let upstream = Upstream::caching("max-age=60, stale-if-error=300");
    let one = replica(&url, &prefix, &upstream, CacheConfig::new());
    let two = replica(&url, &prefix, &upstream, CacheConfig::new());
    assert_eq!(
        send(&one, get("/a?api_key=s3cr3t")).await.unwrap().0,
        CacheStatus::Miss
    );
    let found = stored(&url, &prefix, 1).await;
    let answer = send(&two, get("/a?api_key=s3cr3t")).await.unwrap();
    assert_eq!((answer.0, answer.2.as_str()), (CacheStatus::Hit, "body 1"));
    assert_eq!(upstream.calls(), 1);

    // `prefix:{url hash}:variant`: cluster-safe, and neither the URL nor its query in the key.
    let key = &found[0];
    let rest = key.strip_prefix(&format!("{prefix}:{{")).unwrap();
    let (tag, variant) = rest.split_once("}:").unwrap();
    assert_eq!((tag.len(), variant.len()), (32, 32), "{key}");
    // TTL = freshness plus the longest stale window.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((355_000..=360_000).contains(&ttl), "{ttl}");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&value).contains("s3cr3t"),
        "no query stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_method_on_one_replica_invalidates_every_partition_on_all() {
    let url = redis_url();
    let prefix = prefix("invalidate");
    let upstream = Upstream::caching("public, max-age=60");
    let one = replica(&url, &prefix, &upstream, CacheConfig::new());
    let two = replica(&url, &prefix, &upstream, CacheConfig::new());
    send(&one, get_as("/items", "a")).await.unwrap();
    send(&one, get("/items")).await.unwrap();
    stored(&url, &prefix, 2).await;
    assert_eq!(
        send(&two, get_as("/items", "a")).await.unwrap().0,
        CacheStatus::Hit
    );
    let post = Request::post("https://api.test/items")
        .body(String::new())
        .unwrap();
    assert_eq!(send(&two, post).await.unwrap().0, CacheStatus::Bypass);
    assert_eq!(
        send(&one, get_as("/items", "a")).await.unwrap().0,
        CacheStatus::Miss
    );
    assert_eq!(
        send(&one, get("/items")).await.unwrap().0,
        CacheStatus::Miss
    );
    // The generation outlives the entries by design (a day): not left in the shared Redis.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for key in keys(&url, &prefix).await {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_the_size_cap_is_not_stored() {
    let url = redis_url();
    let prefix = prefix("cap");
    let upstream = Upstream::caching("max-age=60");
    let store = CacheStore::redis(
        shared(&url),
        RedisConfig::new(&prefix).with_max_entry_bytes(64),
    );
    let cache = CacheLayer::new(store, CacheConfig::new()).layer(upstream.service());
    send(&cache, get("/a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(keys(&url, &prefix).await.is_empty());
    assert_eq!(send(&cache, get("/a")).await.unwrap().0, CacheStatus::Miss);
}

/// Redis down: the cache steps aside. Every call is answered by the upstream, none fails, and
/// after the first (which meets the outage, bounded by the command timeout) none waits for Redis.
/// When Redis answers again, entries are shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_the_cache_steps_aside_and_comes_back() {
    let mut private = PrivateRedis::start();
    let url = private.url();
    let prefix = prefix("outage");
    let upstream = Upstream::caching("max-age=60");
    let config = SharedRedisConfig::new()
        .with_command_timeout(Duration::from_millis(200))
        .with_probe_interval(Duration::from_millis(50));
    let redis = SharedRedis::open(&url, config).unwrap();
    let store = CacheStore::redis(redis.clone(), RedisConfig::new(&prefix));
    let cache = CacheLayer::new(store, CacheConfig::new()).layer(upstream.service());
    send(&cache, get("/warm")).await.unwrap();
    stored(&url, &prefix, 1).await;
    assert_eq!(
        send(&cache, get("/warm")).await.unwrap().0,
        CacheStatus::Hit
    );

    private.kill();
    for n in 0..20 {
        let answer = send(&cache, get(&format!("/down/{n}"))).await.unwrap();
        assert_eq!(answer.0, CacheStatus::Miss);
    }
    assert!(!redis.is_available(), "the outage was noticed");
    assert_eq!(upstream.calls(), 21, "every call went upstream");

    private.restart();
    for _ in 0..200 {
        if redis.is_available() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(redis.is_available(), "the probe found Redis again");
    send(&cache, get("/back")).await.unwrap();
    stored(&url, &prefix, 1).await;
    assert_eq!(
        send(&cache, get("/back")).await.unwrap().0,
        CacheStatus::Hit
    );
}
