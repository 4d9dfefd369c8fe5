//! The circuit breaker through the facade, configured from `circuit_breaker.*`: its open time grows
//! while probes keep failing, up to `max_open_for`, and goes back to `open_for` once it closes.
//!
//! On the real clock (wiremock listens on a real socket), with open times of seconds so a loaded
//! machine's delays between two calls (well under a second) do not blur which open time is in force.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use integration_client::Client;
use integration_config::IntegrationConfig;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// 503 while `failing`, else 200.
struct Switch(Arc<AtomicBool>);

impl Respond for Switch {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        if self.0.load(Ordering::SeqCst) {
            ResponseTemplate::new(503)
        } else {
            ResponseTemplate::new(200)
        }
    }
}

/// One call: `Ok(status)` when it was sent, `Err(hint)` when the open breaker refused it.
async fn call(client: &Client) -> Result<u16, Duration> {
    match client.api("flaky").unwrap().get("/").send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(error) => {
            assert!(error.is_circuit_open(), "{error}");
            Err(error.retry_after().expect("an open breaker says when"))
        }
    }
}

/// Waits out the open time the breaker stated, then sends the probe.
async fn probe(client: &Client, hint: Duration) -> Result<u16, Duration> {
    tokio::time::sleep(hint + Duration::from_millis(50)).await;
    call(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_time_grows_while_probes_fail_and_resets_when_the_breaker_closes() {
    let server = MockServer::start().await;
    let failing = Arc::new(AtomicBool::new(true));
    Mock::given(method("GET"))
        .respond_with(Switch(failing.clone()))
        .mount(&server)
        .await;
    let mut config = IntegrationConfig::builder(server.uri()).build().unwrap();
    config.retry.max_attempts = 1;
    let breaker = &mut config.circuit_breaker;
    // Low volume: the consecutive trigger opens it at the first failure.
    breaker.consecutive_failures = 1;
    breaker.half_open_probes = 1;
    breaker.open_for = Duration::from_secs(1);
    breaker.max_open_for = Duration::from_secs(4);
    let client = Client::builder().api("flaky", config).build().unwrap();
    // Every open period is lengthened by up to 20 % at random (the breaker's `open_jitter`).
    let longest = |secs: u64| Duration::from_secs(secs).mul_f64(1.2);

    assert_eq!(call(&client).await, Ok(503));
    let hint = call(&client).await.unwrap_err();
    assert!(hint <= longest(1), "the base open time first: {hint:?}");

    // Each failed probe doubles the open time: 2 s, then 4 s, then capped at 4 s. Each hint is
    // longer than the longest the period before could be, and no longer than its own.
    let mut previous = hint;
    for (period, before) in [(2, 1), (4, 2), (4, 2)] {
        assert_eq!(probe(&client, previous).await, Ok(503), "the probe is sent");
        let hint = call(&client).await.unwrap_err();
        assert!(
            hint <= longest(period) && hint > longest(before),
            "open for {period} s after a failed probe: {hint:?} left"
        );
        previous = hint;
    }

    // The upstream heals: the probe closes the breaker, calls go through.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(probe(&client, previous).await, Ok(200));
    assert_eq!(call(&client).await, Ok(200));

    // Failing again, it opens for the base time: the growth was reset when it closed.
    failing.store(true, Ordering::SeqCst);
    assert_eq!(call(&client).await, Ok(503));
    let hint = call(&client).await.unwrap_err();
    assert!(hint <= longest(1), "back to the base open time: {hint:?}");
}
