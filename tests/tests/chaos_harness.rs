//! The chaos harness itself, black box: the fault server's mix, limiter, outages and duplicate
//! counting over real loopback connections, and one short scenario end to end.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use integration_tests::chaos::fault::{
    CALL_ID, FaultPlan, FaultServer, LimitKind, Outage, PATH, ServerLimit,
};
use integration_tests::chaos::scenario::{self, Scale, Scenario};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What one request on a fresh connection came to.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Ok,
    Status(StatusCode),
    /// The connection closed before a response head.
    Dropped,
    /// A head, then the body broke.
    Reset,
}

async fn request(addr: SocketAddr, method: &str, headers: &[(&str, &str)]) -> Seen {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(PATH)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Empty::<Bytes>::new()).unwrap();
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => return Seen::Dropped,
    };
    let status = response.status();
    match response.into_body().collect().await {
        Err(_) => Seen::Reset,
        Ok(_) if status == StatusCode::OK => Seen::Ok,
        Ok(_) => Seen::Status(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_mix_is_what_the_plan_says_and_what_the_server_counts() {
    let plan = FaultPlan {
        status_503: 0.3,
        drop_before_head: 0.1,
        reset_mid_body: 0.1,
        ..FaultPlan::default()
    };
    let server = FaultServer::start(plan, Instant::now()).await.unwrap();
    const N: usize = 2_000;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..N {
        let outcome = request(server.addr(), "GET", &[]).await;
        *seen.entry(format!("{outcome:?}")).or_insert(0usize) += 1;
    }
    let count = |key: &str| seen.get(key).copied().unwrap_or(0);
    let totals = server.totals();
    // What the client saw is exactly what the server says it did.
    assert_eq!(totals.requests, N as u64);
    assert_eq!(count("Status(503)") as u64, totals.injected_503, "{seen:?}");
    // A reset mid-body whose head the client had not read yet when the reset came looks like a
    // drop to it (the kernel discards what was queued): the two add up, the split may shift.
    assert_eq!(
        (count("Dropped") + count("Reset")) as u64,
        totals.dropped + totals.reset,
        "{seen:?} {totals:?}"
    );
    assert!(
        count("Dropped") as u64 >= totals.dropped,
        "{seen:?} {totals:?}"
    );
    assert_eq!(count("Ok") as u64, totals.ok, "{seen:?}");
    // And the shares are the plan's, within 4.5 standard deviations of a binomial draw.
    for (share, got) in [
        (0.3, count("Status(503)")),
        (0.1, count("Dropped")),
        (0.1, count("Reset")),
    ] {
        let mean = share * N as f64;
        let sigma = (N as f64 * share * (1.0 - share)).sqrt();
        assert!(
            (got as f64 - mean).abs() <= 4.5 * sigma,
            "share {share}: {got} of {N} ({seen:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gcra_admits_its_burst_then_answers_429_with_its_signals() {
    let plan = FaultPlan {
        limit: Some(ServerLimit {
            kind: LimitKind::Gcra {
                rate: 2.0,
                burst: 5,
            },
            retry_after: true,
            ratelimit_headers: true,
        }),
        ..FaultPlan::default()
    };
    let server = FaultServer::start(plan, Instant::now()).await.unwrap();
    let client = reqwest_like(server.addr());
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..8 {
        let (status, headers) = client.get().await;
        statuses.push(status.as_u16());
        last = Some(headers);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let headers = last.unwrap();
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(headers.get("ratelimit").unwrap(), "\"burst\";r=0;t=1");
    assert_eq!(
        headers.get("ratelimit-policy").unwrap(),
        "\"burst\";q=5;w=3"
    );
    let totals = server.totals();
    assert_eq!((totals.requests, totals.throttled, totals.ok), (8, 3, 5));
    // Every 429 came after the first answer had left.
    assert_eq!(server.throttled_after_first_answer().0, 3);
}

/// A keep-alive HTTP/1.1 connection for a sequence of GETs.
struct OneConnection {
    addr: SocketAddr,
}

fn reqwest_like(addr: SocketAddr) -> OneConnection {
    OneConnection { addr }
}

impl OneConnection {
    async fn get(&self) -> (StatusCode, http::HeaderMap) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get(PATH)
            .header("host", self.addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        body.collect().await.unwrap();
        (parts.status, parts.headers)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_answer_503_or_refuse_and_end_on_the_same_address() {
    let server = FaultServer::start(FaultPlan::default(), Instant::now())
        .await
        .unwrap();
    let addr = server.addr();
    assert_eq!(request(addr, "GET", &[]).await, Seen::Ok);

    server.start_outage(Outage::Status503).await;
    assert_eq!(
        request(addr, "GET", &[]).await,
        Seen::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    server.end_outage().await.unwrap();
    assert_eq!(request(addr, "GET", &[]).await, Seen::Ok);

    // A kept-alive connection opened before a refused outage is dropped by it.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.start_outage(Outage::Refused).await;
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed during the outage");
    let request_on_old = Request::get(PATH)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert!(sender.send_request(request_on_old).await.is_err());
    let _ = connection.await;
    server.end_outage().await.unwrap();
    assert_eq!(server.addr(), addr);
    assert_eq!(request(addr, "GET", &[]).await, Seen::Ok);
    assert_eq!(server.totals().outage_503, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_posts_are_counted_by_call_id_unless_they_carry_a_key() {
    let server = FaultServer::start(FaultPlan::default(), Instant::now())
        .await
        .unwrap();
    let addr = server.addr();
    for _ in 0..3 {
        request(addr, "POST", &[(CALL_ID, "7")]).await;
    }
    request(addr, "POST", &[(CALL_ID, "8")]).await;
    for _ in 0..2 {
        request(addr, "POST", &[(CALL_ID, "9"), ("idempotency-key", "k")]).await;
        request(addr, "GET", &[(CALL_ID, "10")]).await;
    }
    assert_eq!(server.posts_seen(), 2);
    assert_eq!(server.duplicate_posts(), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_scenario_runs_end_to_end_through_the_facade() {
    // flaky-10 for 1.2 s at 100 calls/s.
    let report = scenario::run(
        Scenario::Flaky10,
        Scale {
            duration: 0.02,
            rate: 0.1,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.name, "flaky-10");
    assert_eq!(report.figures["calls"], 120.0);
    let sent: u64 = report.runs[0].timeline.iter().map(|s| s.sent).sum();
    assert_eq!(sent, 120);
    let upstream: u64 = report.runs[0]
        .timeline
        .iter()
        .map(|s| s.upstream.requests)
        .sum();
    assert!(
        upstream >= 120,
        "every call reached the upstream at least once: {upstream}"
    );
    // The timing-free invariants hold whatever the machine does.
    let smoke: Vec<_> = report.invariants.iter().filter(|i| i.smoke).collect();
    assert_eq!(smoke.len(), 3, "{:?}", report.invariants);
    assert!(smoke.iter().all(|i| i.pass), "{:?}", report.invariants);
}
