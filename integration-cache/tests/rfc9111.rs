//! The RFC 9111 (and RFC 5861) behaviours of the crate docs' table, one test each, on a paused clock.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Upstream, advance, client, get, get_as, ok, send};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use integration_cache::{CacheConfig, CacheStatus, CredentialMode, TtlOverride};
use integration_core::BoxError;
use tower::ServiceExt;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn fresh_responses_are_served_until_max_age() {
    let upstream = Upstream::caching("max-age=60");
    let cache = client(&upstream, CacheConfig::new());
    let first = send(&cache, get("/a")).await.unwrap();
    assert_eq!((first.0, first.2.as_str()), (CacheStatus::Miss, "body 1"));
    advance(59 * SECOND).await;
    let second = send(&cache, get("/a")).await.unwrap();
    assert_eq!((second.0, second.2.as_str()), (CacheStatus::Hit, "body 1"));
    assert_eq!(upstream.calls(), 1);
    // Another URL is another entry.
    assert_eq!(
        send(&cache, get("/a?x=1")).await.unwrap().0,
        CacheStatus::Miss
    );
    advance(2 * SECOND).await;
    let third = send(&cache, get("/a")).await.unwrap();
    assert_eq!((third.0, third.2.as_str()), (CacheStatus::Miss, "body 3"));
}

#[tokio::test(start_paused = true)]
async fn no_store_is_never_stored() {
    let upstream = Upstream::caching("max-age=60, no-store");
    let cache = client(&upstream, CacheConfig::new());
    for _ in 0..2 {
        assert_eq!(send(&cache, get("/a")).await.unwrap().0, CacheStatus::Miss);
    }
    assert_eq!(upstream.calls(), 2);

    // A request's no-store bypasses the cache (and stores nothing).
    let upstream = Upstream::caching("max-age=60");
    let cache = client(&upstream, CacheConfig::new());
    let mut request = get("/a");
    request
        .headers_mut()
        .insert("cache-control", "no-store".parse().unwrap());
    assert_eq!(send(&cache, request).await.unwrap().0, CacheStatus::Bypass);
    assert_eq!(send(&cache, get("/a")).await.unwrap().0, CacheStatus::Miss);
}

#[tokio::test(start_paused = true)]
async fn private_is_stored_only_in_a_credential_partition() {
    let upstream = Upstream::caching("private, max-age=60");
    let cache = client(&upstream, CacheConfig::new());
    // Anonymous: the shared partition, where `private` may not be stored.
    assert_eq!(send(&cache, get("/me")).await.unwrap().0, CacheStatus::Miss);
    assert_eq!(send(&cache, get("/me")).await.unwrap().0, CacheStatus::Miss);
    // With a credential: its own partition, a private cache.
    assert_eq!(
        send(&cache, get_as("/me", "a")).await.unwrap().0,
        CacheStatus::Miss
    );
    assert_eq!(
        send(&cache, get_as("/me", "a")).await.unwrap().0,
        CacheStatus::Hit
    );
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn credentials_never_see_each_others_entries() {
    let upstream = Upstream::new(|_, request| {
        let who = request
            .headers()
            .get("authorization")
            .map_or("anonymous", |v| v.to_str().unwrap())
            .to_owned();
        Ok(ok("public, max-age=60", &who))
    });
    let cache = client(&upstream, CacheConfig::new());
    let a = send(&cache, get_as("/me", "a")).await.unwrap();
    let b = send(&cache, get_as("/me", "b")).await.unwrap();
    assert_eq!((a.0, a.2.as_str()), (CacheStatus::Miss, "Bearer a"));
    assert_eq!((b.0, b.2.as_str()), (CacheStatus::Miss, "Bearer b"));
    let a = send(&cache, get_as("/me", "a")).await.unwrap();
    assert_eq!((a.0, a.2.as_str()), (CacheStatus::Hit, "Bearer a"));
    let anonymous = send(&cache, get("/me")).await.unwrap();
    assert_eq!(
        (anonymous.0, anonymous.2.as_str()),
        (CacheStatus::Miss, "anonymous")
    );
}

#[tokio::test(start_paused = true)]
async fn shared_mode_stores_authenticated_answers_only_when_allowed() {
    let config = CacheConfig::new().with_credentials(CredentialMode::Shared);
    // max-age alone does not let a shared cache store an answer to a credentialed request.
    let upstream = Upstream::caching("max-age=60");
    let cache = client(&upstream, config.clone());
    assert_eq!(
        send(&cache, get_as("/r", "a")).await.unwrap().0,
        CacheStatus::Miss
    );
    assert_eq!(
        send(&cache, get_as("/r", "a")).await.unwrap().0,
        CacheStatus::Miss
    );
    // `public` does, for every caller.
    let upstream = Upstream::caching("public, max-age=60");
    let cache = client(&upstream, config);
    assert_eq!(
        send(&cache, get_as("/r", "a")).await.unwrap().0,
        CacheStatus::Miss
    );
    assert_eq!(
        send(&cache, get_as("/r", "b")).await.unwrap().0,
        CacheStatus::Hit
    );
    assert_eq!(send(&cache, get("/r")).await.unwrap().0, CacheStatus::Hit);
}

#[tokio::test(start_paused = true)]
async fn vary_selects_the_variant() {
    let upstream = Upstream::new(|_, request| {
        let language = request.headers()["accept-language"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut response = ok("max-age=60", &language);
        response
            .headers_mut()
            .insert("vary", "Accept-Language".parse().unwrap());
        Ok(response)
    });
    let cache = client(&upstream, CacheConfig::new());
    let with = |language: &str| {
        let mut request = get("/greeting");
        request
            .headers_mut()
            .insert("accept-language", language.parse().unwrap());
        request
    };
    assert_eq!(send(&cache, with("en")).await.unwrap().0, CacheStatus::Miss);
    let en = send(&cache, with("en")).await.unwrap();
    assert_eq!((en.0, en.2.as_str()), (CacheStatus::Hit, "en"));
    let fr = send(&cache, with("fr")).await.unwrap();
    assert_eq!((fr.0, fr.2.as_str()), (CacheStatus::Miss, "fr"));
}

#[tokio::test(start_paused = true)]
async fn a_304_refreshes_the_stored_entry() {
    let upstream = Upstream::new(|n, request| {
        if n == 1 {
            let mut response = ok("max-age=10", "the document");
            response
                .headers_mut()
                .insert("etag", "\"v1\"".parse().unwrap());
            return Ok(response);
        }
        assert_eq!(request.headers()["if-none-match"], "\"v1\"");
        Ok(Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=10")
            .body(Full::new(Bytes::new()))
            .unwrap())
    });
    let cache = client(&upstream, CacheConfig::new());
    assert_eq!(
        send(&cache, get("/doc")).await.unwrap().0,
        CacheStatus::Miss
    );
    advance(11 * SECOND).await;
    let revalidated = send(&cache, get("/doc")).await.unwrap();
    assert_eq!(
        (revalidated.0, revalidated.1, revalidated.2.as_str()),
        (CacheStatus::Revalidated, StatusCode::OK, "the document")
    );
    assert_eq!(upstream.calls(), 2);
    // The 304 gave the entry ten more seconds.
    advance(9 * SECOND).await;
    assert_eq!(send(&cache, get("/doc")).await.unwrap().0, CacheStatus::Hit);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_is_never_served_stale() {
    let upstream = Upstream::new(|n, _| match n {
        1 => Ok(ok("max-age=1, must-revalidate", "v1")),
        _ => Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::new()))
            .unwrap()),
    });
    let config = CacheConfig::new()
        .with_stale_if_error(60 * SECOND)
        .with_stale_while_revalidate(60 * SECOND);
    let cache = client(&upstream, config);
    send(&cache, get("/a")).await.unwrap();
    advance(2 * SECOND).await;
    let answer = send(&cache, get("/a")).await.unwrap();
    assert_eq!(
        (answer.0, answer.1),
        (CacheStatus::Miss, StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_invalidate_the_url() {
    let upstream = Upstream::new(|_, request| {
        if request.method() == http::Method::POST {
            let status = if request.body() == "fail" { 500 } else { 201 };
            return Ok(Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
        Ok(ok("public, max-age=60", "list"))
    });
    let cache = client(&upstream, CacheConfig::new());
    for request in [
        get_as("/items", "a"),
        get_as("/items", "b"),
        get("/items"),
        get("/other"),
    ] {
        assert_eq!(send(&cache, request).await.unwrap().0, CacheStatus::Miss);
    }
    // A failed POST changes nothing.
    let failed = Request::post("https://api.test/items")
        .body("fail".to_owned())
        .unwrap();
    assert_eq!(send(&cache, failed).await.unwrap().0, CacheStatus::Bypass);
    assert_eq!(
        send(&cache, get("/items")).await.unwrap().0,
        CacheStatus::Hit
    );
    // A successful one, by credential `a`, invalidates every partition of the URL, and only it.
    let mut post = Request::post("https://api.test/items")
        .body(String::new())
        .unwrap();
    post.headers_mut()
        .insert("authorization", "Bearer a".parse().unwrap());
    assert_eq!(send(&cache, post).await.unwrap().0, CacheStatus::Bypass);
    for request in [get_as("/items", "a"), get_as("/items", "b"), get("/items")] {
        assert_eq!(send(&cache, request).await.unwrap().0, CacheStatus::Miss);
    }
    assert_eq!(
        send(&cache, get("/other")).await.unwrap().0,
        CacheStatus::Hit
    );
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_and_refreshes_once() {
    let upstream = Upstream::caching("max-age=1, stale-while-revalidate=30")
        .with_delay(Duration::from_millis(100));
    let cache = client(&upstream, CacheConfig::new());
    send(&cache, get("/a")).await.unwrap();
    advance(2 * SECOND).await;
    let mut calls = Vec::new();
    for _ in 0..10 {
        calls.push(send(&cache, get("/a")));
    }
    for answer in futures_util::future::join_all(calls).await {
        let answer = answer.unwrap();
        assert_eq!(
            (answer.0, answer.2.as_str()),
            (CacheStatus::Stale, "body 1")
        );
    }
    // One background refresh, not ten (a sleep, not an advance: the refresh task runs meanwhile).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.calls(), 2);
    let fresh = send(&cache, get("/a")).await.unwrap();
    assert_eq!((fresh.0, fresh.2.as_str()), (CacheStatus::Hit, "body 2"));
    // Past the window, a stale entry is not served: the call waits for the upstream.
    advance(40 * SECOND).await;
    assert_eq!(send(&cache, get("/a")).await.unwrap().0, CacheStatus::Miss);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_when_the_upstream_fails() {
    let upstream = Upstream::new(|n, _| match n {
        1 => Ok(ok("max-age=1, stale-if-error=60", "v1")),
        2 => Err(BoxError::from("connection refused")),
        3 => Err(Box::new(integration_core::error::CircuitOpen::new(None)) as BoxError),
        _ => Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Full::new(Bytes::new()))
            .unwrap()),
    });
    let cache = client(&upstream, CacheConfig::new());
    send(&cache, get("/a")).await.unwrap();
    advance(2 * SECOND).await;
    for _ in 0..3 {
        let answer = send(&cache, get("/a")).await.unwrap();
        assert_eq!(
            (answer.0, answer.1, answer.2.as_str()),
            (CacheStatus::Stale, StatusCode::OK, "v1")
        );
    }
    // Past the window the failure is the answer.
    advance(60 * SECOND).await;
    let answer = send(&cache, get("/a")).await.unwrap();
    assert_eq!(
        (answer.0, answer.1),
        (CacheStatus::Miss, StatusCode::BAD_GATEWAY)
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_down_with_an_entry_inside_stale_if_error_serves_every_call() {
    let upstream = Upstream::new(|n, _| match n {
        1 => Ok(ok("max-age=5", "v1")),
        _ => Err(BoxError::from("upstream down")),
    })
    .with_delay(Duration::from_millis(30));
    let cache = client(
        &upstream,
        CacheConfig::new().with_stale_if_error(600 * SECOND),
    );
    send(&cache, get("/a")).await.unwrap();
    advance(10 * SECOND).await;
    let calls: Vec<_> = (0..100).map(|_| send(&cache, get("/a"))).collect();
    let answers = futures_util::future::join_all(calls).await;
    let served = answers
        .iter()
        .filter(|a| matches!(a, Ok((CacheStatus::Stale, StatusCode::OK, body)) if body == "v1"))
        .count();
    assert_eq!(served, 100, "100 % served from the stale entry");
}

#[tokio::test(start_paused = true)]
async fn a_ttl_override_goes_beyond_the_servers_word() {
    // No caching headers: the server's word is "not fresh".
    let upstream = Upstream::caching("");
    let cache = client(&upstream, CacheConfig::new());
    send(&cache, get("/v1/rates/eur")).await.unwrap();
    assert_eq!(
        send(&cache, get("/v1/rates/eur")).await.unwrap().0,
        CacheStatus::Miss
    );

    let rule = TtlOverride::new("/v1/rates/*", 60 * SECOND).unwrap();
    let upstream = Upstream::new(|_, request| {
        let cache_control = if request.uri().path().ends_with("secret") {
            "no-store"
        } else {
            "no-cache, max-age=0"
        };
        Ok(ok(cache_control, "rate"))
    });
    let cache = client(&upstream, CacheConfig::new().with_override(rule));
    send(&cache, get("/v1/rates/eur")).await.unwrap();
    advance(59 * SECOND).await;
    assert_eq!(
        send(&cache, get("/v1/rates/eur")).await.unwrap().0,
        CacheStatus::Hit
    );
    // Other paths, and no-store, keep the server's word.
    send(&cache, get("/v1/other")).await.unwrap();
    assert_eq!(
        send(&cache, get("/v1/other")).await.unwrap().0,
        CacheStatus::Miss
    );
    send(&cache, get("/v1/rates/secret")).await.unwrap();
    assert_eq!(
        send(&cache, get("/v1/rates/secret")).await.unwrap().0,
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_streams_through_uncached() {
    let big = "x".repeat(100);
    let body = big.clone();
    let upstream = Upstream::new(move |_, _| Ok(ok("max-age=60", &body)));
    let cache = client(&upstream, CacheConfig::new().with_max_body_bytes(10));
    for _ in 0..2 {
        let answer = send(&cache, get("/big")).await.unwrap();
        assert_eq!((answer.0, answer.2.len()), (CacheStatus::Miss, 100));
    }
    assert_eq!(upstream.calls(), 2);
    // Within the cap: stored.
    let cache = client(&upstream, CacheConfig::new().with_max_body_bytes(100));
    send(&cache, get("/big")).await.unwrap();
    let answer = send(&cache, get("/big")).await.unwrap();
    assert_eq!((answer.0, answer.2), (CacheStatus::Hit, big));
}

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_misses_make_one_call() {
    let upstream = Upstream::caching("max-age=60").with_delay(Duration::from_millis(50));
    let cache = client(&upstream, CacheConfig::new());
    let calls: Vec<_> = (0..100).map(|_| send(&cache, get("/cold"))).collect();
    let answers = futures_util::future::join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok((_, StatusCode::OK, body)) if body == "body 1"))
    );
    assert_eq!(upstream.calls(), 1, "exactly one upstream call");
}

#[tokio::test(start_paused = true)]
async fn a_follower_whose_leader_fails_or_is_cancelled_goes_upstream_itself() {
    let upstream = Upstream::new(|n, _| match n {
        1 => Err(BoxError::from("reset")),
        _ => Ok(ok("max-age=60", &format!("body {n}"))),
    })
    .with_delay(Duration::from_millis(50));
    let cache = client(&upstream, CacheConfig::new());
    let (leader, follower) = tokio::join!(send(&cache, get("/a")), send(&cache, get("/a")));
    assert!(leader.is_err());
    assert_eq!(follower.unwrap().2, "body 2");

    // A cancelled leader.
    let upstream = Upstream::caching("max-age=60").with_delay(Duration::from_secs(3600));
    let cache = client(&upstream, CacheConfig::new());
    let leader = tokio::spawn(cache.clone().oneshot(get("/b")));
    tokio::task::yield_now().await;
    let follower = tokio::spawn(cache.clone().oneshot(get("/b")));
    tokio::task::yield_now().await;
    leader.abort();
    let answer = follower.await.unwrap().unwrap();
    assert_eq!(CacheStatus::of(&answer), Some(CacheStatus::Miss));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn range_requests_and_other_methods_bypass() {
    let upstream = Upstream::caching("max-age=60");
    let cache = client(&upstream, CacheConfig::new());
    let mut ranged = get("/a");
    ranged
        .headers_mut()
        .insert("range", "bytes=0-1".parse().unwrap());
    assert_eq!(send(&cache, ranged).await.unwrap().0, CacheStatus::Bypass);
    let options = Request::options("https://api.test/a")
        .body(String::new())
        .unwrap();
    assert_eq!(send(&cache, options).await.unwrap().0, CacheStatus::Bypass);
}
