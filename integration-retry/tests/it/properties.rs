//! Numeric properties: backoff bounds, and the sum of waits never passing the deadline.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::Error;
use integration_core::ext::{Attempts, Deadline};
use integration_retry::{Backoff, Jitter, RetryBudget, RetryLayer, RetryPolicy};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

fn millis(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

/// Authorities as requests carry them: optional userinfo, a name, IPv4 or IPv6 literal, an optional
/// port, and a few odd but valid shapes (an empty port, a name with a trailing dot).
fn authority() -> impl Strategy<Value = String> {
    let userinfo = proptest::option::of("[a-z0-9%._~!$&'()*+,;=:-]{0,8}");
    let host = prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,8}){0,3}\\.?",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        Just("[::1]".to_owned()),
        Just("[2001:db8::a:1]".to_owned()),
        Just("[fe80::1%25eth0]".to_owned()),
    ];
    let port = proptest::option::of("[0-9]{0,5}");
    (userinfo, host, port).prop_map(|(userinfo, host, port)| {
        let mut authority = String::new();
        if let Some(userinfo) = userinfo {
            authority.push_str(&userinfo);
            authority.push('@');
        }
        authority.push_str(&host);
        if let Some(port) = port {
            authority.push(':');
            authority.push_str(&port);
        }
        authority
    })
}

proptest! {
    /// Regression guard of the breaker's own host scan (issue 19): the default key names the host
    /// `http::Uri::host` reads, for every authority the URI parser accepts.
    #[test]
    fn the_breaker_key_host_is_the_uri_host(authority in authority(), path in "(/[a-z@:]{0,6}){0,2}") {
        let Ok(uri) = format!("https://{authority}{path}").parse::<http::Uri>() else {
            return Ok(());
        };
        let mut request = Request::get(uri.clone()).body(()).unwrap();
        request
            .extensions_mut()
            .insert(integration_core::ext::IntegrationName::new("api"));
        let key = integration_retry::breaker::default_key(request.uri(), request.extensions());
        prop_assert_eq!(key, format!("api|{}", uri.host().unwrap_or("")));
        // A relative URI has no host: the key's host part is empty.
        let relative: http::Uri = path.parse().unwrap_or_else(|_| "/".parse().unwrap());
        prop_assert_eq!(
            integration_retry::breaker::default_key(&relative, request.extensions()),
            "api|"
        );
    }

    #[test]
    fn full_jitter_delay_is_within_zero_and_min_cap_base_times_two_to_the_n(
        base in millis(0..10_000),
        cap in millis(0..120_000),
        retry in 0u32..80,
        sample in 0.0f64..1.0,
    ) {
        let policy = RetryPolicy::default().with_cap(cap).with_jitter(Jitter::fixed(sample));
        let delay = policy.backoff_delay(retry, None, base);
        let ceiling = base.checked_mul(2u32.saturating_pow(retry)).unwrap_or(Duration::MAX).min(cap);
        prop_assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
    }

    #[test]
    fn decorrelated_jitter_delay_is_within_base_and_cap(
        base in millis(1..10_000),
        cap in millis(1..120_000),
        previous in proptest::option::of(millis(0..200_000)),
        sample in 0.0f64..1.0,
    ) {
        let policy = RetryPolicy::default()
            .with_cap(cap)
            .with_backoff(Backoff::DecorrelatedJitter)
            .with_jitter(Jitter::fixed(sample));
        let delay = policy.backoff_delay(3, previous, base);
        prop_assert!(delay <= cap);
        prop_assert!(delay >= base.min(cap));
        let high = previous.unwrap_or(base).saturating_mul(3).max(base).min(cap);
        prop_assert!(delay <= high);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against an upstream that always fails, with any hints, any deadline and up to 10 attempts, the
    /// call ends by its deadline, and the waits it recorded never exceed it.
    #[test]
    fn the_sum_of_waits_never_passes_the_deadline(
        deadline in millis(1..30_000),
        hints in proptest::collection::vec(proptest::option::of(0u64..20), 10),
        sample in 0.0f64..1.0,
        throttled in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let calls = Arc::new(AtomicU64::new(0));
            let counter = calls.clone();
            let hints = Arc::new(hints);
            let upstream = tower::service_fn(move |_request: Request<String>| {
                let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
                let mut response = Response::new(String::new());
                *response.status_mut() = if throttled {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::BAD_GATEWAY
                };
                if let Some(hint) = hints[n % hints.len()] {
                    response
                        .headers_mut()
                        .insert("retry-after", hint.to_string().parse().unwrap());
                }
                async move { Ok::<_, Infallible>(response) }
            });
            let service = ServiceBuilder::new()
                .layer(
                    RetryLayer::new(
                        RetryPolicy::default()
                            .with_max_attempts(10)
                            .with_jitter(Jitter::fixed(sample)),
                    )
                    .with_budget(RetryBudget::unlimited()),
                )
                .service(upstream);
            let start = Instant::now();
            let mut request = Request::get("https://api.example.com/").body(String::new()).unwrap();
            request.extensions_mut().insert(Deadline::after(deadline));
            let outcome = service.oneshot(request).await;
            let elapsed = start.elapsed();
            assert!(elapsed < deadline, "slept {elapsed:?} past a deadline of {deadline:?}");
            match outcome {
                Ok(response) => {
                    let attempts = response.extensions().get::<Attempts>().unwrap();
                    assert!(attempts.waited() < deadline);
                    assert_eq!(attempts.count(), 10);
                }
                Err(error) => {
                    let error = Error::from(error);
                    assert!(error.is_deadline(), "{error}");
                    assert!(error.attempts() <= 10);
                }
            }
        });
    }
}
