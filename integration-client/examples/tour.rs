//! The tour: every layer of the stack at work against a fake third-party API, in a few seconds.
//!
//! ```text
//! cargo run -p integration-client --example tour                  # logs, sections, a short summary
//! cargo run -p integration-client --example tour -- --raw-metrics  # and the Prometheus exposition
//! ```
//!
//! Needs nothing but this machine: no Redis, no PostgreSQL, no network beyond 127.0.0.1. It starts a
//! loopback fake API (an OAuth token endpoint, an endpoint that throttles with 429 + `Retry-After: 1`,
//! one that fails with 503 now and then, a slow one, one that never answers in time, one that is
//! down until the tour heals it), configures three integrations against it from TOML, and runs one
//! section per behaviour, each a function of its own:
//!
//! 1. [`section_burst`]: a burst of concurrent calls through the whole stack (OAuth token fetched
//!    once, client quota, server throttling, retries of 503s);
//! 2. [`section_deadlines`]: an attempt timeout firing on every attempt, then a call's deadline;
//! 3. [`section_breaker`]: the circuit breaker opening on a broken upstream, failing fast, and
//!    closing again after a successful half-open probe;
//! 4. [`section_cache`]: the HTTP cache storing an answer, serving hits, revalidating a stale entry
//!    (304) and answering from a stale entry while the upstream is down;
//! 5. [`section_summary`]: a short summary of the burst and of the metrics.
//!
//! `integration-client/tests/tour.rs` runs it, so it cannot rot.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_client::{Api, Client};
use integration_config::Config;
use integration_core::ext::Attempts;
use integration_core::names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::time::{FormatTime, Uptime};
use tracing_subscriber::registry::LookupSpan;

/// Calls in the burst.
const CALLS: usize = 200;
/// Requests the throttled endpoint accepts per second before answering 429.
const THROTTLE_PER_SECOND: u64 = 30;

/// One line per event: uptime, level, the span path (`GET:GET` is a call and its attempt) and the
/// event's own fields. The spans' fields (the OpenTelemetry attributes every line would repeat) stay
/// with the spans, for an OpenTelemetry exporter to pick up.
struct Readable {
    timer: Uptime,
}

impl<S, N> FormatEvent<S, N> for Readable
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        self.timer.format_time(&mut writer)?;
        write!(writer, " {:>5} ", event.metadata().level())?;
        if let Some(scope) = ctx.event_scope() {
            let path: Vec<&str> = scope.from_root().map(|span| span.name()).collect();
            if !path.is_empty() {
                write!(writer, "{}: ", path.join(":"))?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// What the fake upstream saw.
#[derive(Default)]
struct Upstream {
    token_fetches: AtomicU64,
    requests: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
    unauthorized: AtomicU64,
    flaky_counter: AtomicU64,
    window: Mutex<(Option<Instant>, u64)>,
    /// `/svc/health` answers 503 while this is set (the breaker section heals it).
    status_down: AtomicBool,
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}

async fn handle(upstream: Arc<Upstream>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if path == "/oauth/token" {
        let n = upstream.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!(
            r#"{{"access_token":"tour-token-{n}","token_type":"Bearer","expires_in":3600}}"#
        );
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response");
    }
    match path.as_str() {
        // Unauthenticated endpoints of the deadline and breaker sections.
        "/svc/stall" => {
            // Far longer than any timeout of the tour: the caller gives up first.
            tokio::time::sleep(Duration::from_secs(3)).await;
            return reply(StatusCode::OK, r#"{"ok":true}"#);
        }
        "/svc/health" if upstream.status_down.load(Ordering::SeqCst) => {
            return reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"down"}"#);
        }
        "/svc/health" => return reply(StatusCode::OK, r#"{"ok":true}"#),
        _ => {}
    }
    upstream.requests.fetch_add(1, Ordering::Relaxed);
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer tour-token-"));
    if !authorized {
        upstream.unauthorized.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
    }
    match path.as_str() {
        "/api/throttled" => {
            // A fixed one-second window: past the allowance, 429 with Retry-After: 1.
            let mut window = upstream.window.lock().await;
            let now = Instant::now();
            match window.0 {
                Some(start) if now.duration_since(start) < Duration::from_secs(1) => window.1 += 1,
                _ => *window = (Some(now), 1),
            }
            if window.1 > THROTTLE_PER_SECOND {
                upstream.throttled.fetch_add(1, Ordering::Relaxed);
                let mut response = reply(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"slow down"}"#);
                response
                    .headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
                return response;
            }
            reply(StatusCode::OK, r#"{"ok":true}"#)
        }
        "/api/flaky" => {
            // One request in six fails.
            if upstream.flaky_counter.fetch_add(1, Ordering::Relaxed) % 6 == 5 {
                upstream.failed.fetch_add(1, Ordering::Relaxed);
                return reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"try later"}"#);
            }
            reply(StatusCode::OK, r#"{"ok":true}"#)
        }
        "/api/slow" => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            reply(StatusCode::OK, r#"{"ok":true}"#)
        }
        p if p.starts_with("/api/items/") => reply(StatusCode::OK, r#"{"id":1,"name":"widget"}"#),
        _ => reply(StatusCode::NOT_FOUND, r#"{"error":"no such endpoint"}"#),
    }
}

async fn start_upstream(upstream: Arc<Upstream>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let upstream = upstream.clone();
                    async move { Ok::<_, Infallible>(handle(upstream, request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The configuration, as an operator would write it.
fn config_text(addr: SocketAddr) -> String {
    format!(
        r#"
[defaults]
timeout = "20s"
user_agent = "integration-tour/0.1"

[integrations.partner]
base_url = "http://{addr}/api/"
attempt_timeout = "5s"

[integrations.partner.auth]
type = "oauth2_client_credentials"
token_url = "http://{addr}/oauth/token"
client_id = "tour"
client_secret = "tour-secret"     # in production: "${{env:PARTNER_CLIENT_SECRET}}"

[integrations.partner.rate_limit]
quotas = [{{ rate = 400, per = "1s", burst = 100 }}]
max_wait = "10s"

[integrations.partner.retry]
max_attempts = 4
base = "50ms"
cap = "2s"
budget = false

[integrations.partner.circuit_breaker]
failure_ratio = 0.9
min_requests = 100
consecutive_failures = 50

[integrations.partner.log]
success_level = "debug"    # retried calls and failures log at info and above
capture_headers = false

[integrations.reports]     # a slow upstream: every attempt is bounded
base_url = "http://{addr}/svc/"
timeout = "2s"
attempt_timeout = "200ms"
retry = {{ max_attempts = 3, base = "20ms", cap = "50ms", budget = false }}
log = {{ capture_headers = false }}

[integrations.status]      # a broken upstream: the breaker opens after 5 failures in a row
base_url = "http://{addr}/svc/"
retry = {{ max_attempts = 1 }}
circuit_breaker = {{ consecutive_failures = 5, open_for = "300ms", max_open_for = "300ms", half_open_probes = 1 }}
log = {{ capture_headers = false }}
"#
    )
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print the whole Prometheus exposition after the summary (`--raw-metrics`).
    pub raw_metrics: bool,
}

impl Options {
    fn from_args() -> Result<Self, String> {
        let mut options = Options::default();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--raw-metrics" => options.raw_metrics = true,
                other => return Err(format!("unknown argument `{other}` (try --raw-metrics)")),
            }
        }
        Ok(options)
    }
}

/// What the tour showed, for its test.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls of the burst that neither succeeded nor failed (must be 0).
    pub lost: u64,
    /// Calls of the burst that succeeded.
    pub succeeded: u64,
    /// The attempt timeout fired on every attempt of a call.
    pub attempt_timeouts: bool,
    /// A call's deadline fired.
    pub deadline_fired: bool,
    /// The breaker opened and refused a call at once.
    pub breaker_opened: bool,
    /// The breaker closed again once the upstream healed.
    pub breaker_recovered: bool,
    /// Calls of the cache section served from the cache without reaching the upstream.
    pub cache_hits: u64,
    /// A stale cache entry was revalidated with a 304.
    pub cache_revalidated: bool,
    /// With the upstream down, a stale entry answered (stale-if-error).
    pub cache_stale_served: bool,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: BTreeMap<String, u64>,
    attempts: u64,
    retries: BTreeMap<&'static str, u64>,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, rounded: `323 ms`.
fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// Sums the samples of a Prometheus counter (or a histogram's `_count`) across label sets.
fn metric_sum(exposition: &str, name: &str) -> u64 {
    let total: f64 = exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    total.round() as u64
}

/// One row of a summary table: the label, then the value right-aligned.
fn row(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<42} {value:>10}");
}

/// Installs the Prometheus recorder the summary reads (no HTTP listener). Durations are histograms
/// with OpenTelemetry's advised boundaries for `http.client.request.duration`, not client-side
/// summaries (which cannot be aggregated).
///
/// # Errors
///
/// When a recorder is already installed.
pub fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let mut prometheus = PrometheusBuilder::new();
    for name in names::DURATION_HISTOGRAMS {
        prometheus = prometheus
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), names::DURATION_BUCKETS)?;
    }
    Ok(prometheus.install_recorder()?)
}

/// The whole tour: the fake API, the client from TOML, then each section in turn.
///
/// # Errors
///
/// When the fake API cannot start or the configuration is refused.
pub async fn run(
    options: Options,
    metrics: &PrometheusHandle,
) -> Result<Report, Box<dyn std::error::Error>> {
    let upstream = Arc::new(Upstream {
        status_down: AtomicBool::new(true),
        ..Upstream::default()
    });
    let addr = start_upstream(upstream.clone()).await?;
    tracing::info!(%addr, "fake third-party API listening");

    let text = config_text(addr);
    println!("=== configuration (TOML) ==={text}");
    let client = Client::from_config(Config::from_toml_str(&text)?)?;

    let mut report = Report::default();
    let (tally, wall) = section_burst(&client.api("partner")?, &mut report).await;
    section_deadlines(&client.api("reports")?, &mut report).await;
    section_breaker(&client.api("status")?, &upstream, &mut report).await;
    section_cache(&mut report).await?;
    let left = client.shutdown(Duration::from_secs(5)).await;
    report.lost += left as u64;
    section_summary(&tally, wall, &upstream, metrics, options);
    Ok(report)
}

/// Section 1: a burst of concurrent calls to four endpoints through the whole stack.
async fn section_burst(partner: &Api, report: &mut Report) -> (Tally, Duration) {
    let endpoints = ["items/1", "throttled", "flaky", "slow"];
    println!();
    println!(
        "=== 1. burst: {CALLS} concurrent calls to {} ===",
        endpoints.join(", ")
    );
    println!(
        "    (one line per failed attempt, with its number; one per call that needed a retry)"
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let partner = partner.clone();
        let endpoint = endpoints[i % endpoints.len()];
        tasks.spawn(async move {
            let begun = Instant::now();
            let outcome = match partner.get(endpoint).send().await {
                Ok(response) => {
                    let attempts = response.extensions().get::<Attempts>().cloned();
                    let count = response.attempts();
                    match response.error_for_status() {
                        Ok(response) => response.bytes().await.map(|_| (count, attempts)),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            (outcome, begun.elapsed())
        });
    }
    let mut tally = Tally::default();
    let mut finished = 0u64;
    while let Some(joined) = tasks.join_next().await {
        let Ok((outcome, elapsed)) = joined else {
            continue;
        };
        finished += 1;
        tally.latencies.push(elapsed);
        match outcome {
            Ok((count, attempts)) => {
                tally.ok += 1;
                tally.attempts += u64::from(count);
                if let Some(attempts) = attempts {
                    for reason in attempts.reasons() {
                        *tally.retries.entry(reason.as_str()).or_default() += 1;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "call failed");
                tally.attempts += u64::from(error.attempts().max(1));
                *tally.failed.entry(error.kind().to_string()).or_default() += 1;
            }
        }
    }
    tally.latencies.sort();
    let failed: u64 = tally.failed.values().sum();
    report.succeeded = tally.ok;
    report.lost = (CALLS as u64).saturating_sub(tally.ok + failed) + (CALLS as u64 - finished);
    (tally, started.elapsed())
}

/// Section 2: timeouts. Every attempt of a call to an upstream that never answers in time hits the
/// attempt timeout (200 ms) and is retried; then a call whose own deadline (150 ms) is shorter than
/// an attempt ends at its deadline, however many attempts it could still make.
async fn section_deadlines(reports: &Api, report: &mut Report) {
    println!();
    println!("=== 2. timeouts: attempt_timeout = 200ms, 3 attempts; then a 150 ms deadline ===");
    let started = Instant::now();
    match reports.get("stall").send().await {
        Ok(response) => println!("  unexpected: {}", response.status()),
        Err(error) => {
            println!(
                "  every attempt timed out: {} after {} attempts, {}",
                error.kind(),
                error.attempts(),
                ms(started.elapsed())
            );
            report.attempt_timeouts = error.is_timeout() && error.attempts() == 3;
        }
    }
    let started = Instant::now();
    match reports
        .get("stall")
        .timeout(Duration::from_millis(150))
        .send()
        .await
    {
        Ok(response) => println!("  unexpected: {}", response.status()),
        Err(error) => {
            println!(
                "  the deadline fired: {} ({error}), {}",
                error.kind(),
                ms(started.elapsed())
            );
            report.deadline_fired = error.is_deadline() || error.is_timeout();
        }
    }
}

/// Section 3: the circuit breaker. The upstream is down: after 5 failures in a row the breaker
/// opens and the next call fails at once, without reaching it. The upstream heals; once the open
/// time (300 ms) has passed, one half-open probe goes through, succeeds, and the breaker closes.
async fn section_breaker(status: &Api, upstream: &Upstream, report: &mut Report) {
    println!();
    println!("=== 3. circuit breaker: consecutive_failures = 5, open_for = 300ms ===");
    let mut wait = Duration::ZERO;
    for call in 1..=8 {
        let started = Instant::now();
        match status.get("health").send().await {
            Ok(response) => println!("  call {call}: {}", response.status()),
            Err(error) if error.is_circuit_open() => {
                println!(
                    "  call {call}: refused in {} without reaching the upstream",
                    ms(started.elapsed())
                );
                // The error says when the breaker lets a probe through.
                wait = error.retry_after().unwrap_or(Duration::from_millis(300));
                report.breaker_opened = true;
                break;
            }
            Err(error) => println!("  call {call}: {error}"),
        }
    }
    upstream.status_down.store(false, Ordering::SeqCst);
    println!(
        "  the upstream is healthy again; the breaker lets a probe through in {}",
        ms(wait)
    );
    tokio::time::sleep(wait).await;
    let healed = Instant::now();
    // Bounded: a loaded machine may need a few more tries, 100 ms apart.
    for _ in 0..50 {
        match status.get("health").send().await {
            Ok(response) if response.status().is_success() => {
                println!(
                    "  probe: {}, the breaker closed; calls flow again",
                    response.status()
                );
                report.breaker_recovered = true;
                break;
            }
            Ok(response) => println!("  probe: {}", response.status()),
            Err(error) if error.is_circuit_open() => {}
            Err(error) => println!("  probe: {error}"),
        }
        if healed.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Section 4: what the burst did, from the calls' own results and from the metrics.
fn section_summary(
    tally: &Tally,
    wall: Duration,
    upstream: &Upstream,
    metrics: &PrometheusHandle,
    options: Options,
) {
    let exposition = metrics.render();
    let failed: u64 = tally.failed.values().sum();
    let retries: u64 = tally.retries.values().sum();
    println!();
    println!("=== 4. summary of the burst ===");
    row("calls", CALLS);
    row("  succeeded", tally.ok);
    row("  failed", failed);
    for (kind, n) in &tally.failed {
        row(&format!("    {kind}"), n);
    }
    row("attempts", tally.attempts);
    row("retries", retries);
    for (reason, n) in &tally.retries {
        row(&format!("  {reason}"), n);
    }
    row("latency p50", ms(percentile(&tally.latencies, 50.0)));
    row("latency p99", ms(percentile(&tally.latencies, 99.0)));
    row("wall time", ms(wall));
    for (label, counter) in [
        ("upstream: requests", &upstream.requests),
        ("upstream: 429 sent", &upstream.throttled),
        ("upstream: 503 sent", &upstream.failed),
        ("upstream: 401 sent", &upstream.unauthorized),
        ("upstream: token requests", &upstream.token_fetches),
    ] {
        row(label, counter.load(Ordering::SeqCst));
    }
    println!();
    println!("=== metrics (whole tour; --raw-metrics for the Prometheus exposition) ===");
    for (label, name) in [
        (
            "calls (http.client.request.duration)",
            "http_client_request_duration_count",
        ),
        (
            "attempts (integration.attempt.duration)",
            "integration_attempt_duration_count",
        ),
        ("retries", "integration_retries"),
        ("rate limiter waits", "integration_ratelimit_wait_count"),
        (
            "server throttle signals",
            "integration_ratelimit_server_signals",
        ),
        ("token refreshes", "integration_auth_token_refreshes"),
        (
            "breaker rejections",
            "integration_circuit_breaker_rejections",
        ),
    ] {
        row(label, metric_sum(&exposition, name));
    }
    if options.raw_metrics {
        println!();
        println!("=== Prometheus exposition ===");
        print!("{exposition}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::from_args()?;
    tracing_subscriber::fmt()
        // Colours only on a terminal: piped or redirected output stays free of escape codes.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .event_format(Readable {
            timer: Uptime::default(),
        })
        .init();
    let metrics = install_metrics()?;
    let report = run(options, &metrics).await?;
    if report.lost != 0 {
        return Err(format!("{} calls lost", report.lost).into());
    }
    Ok(())
}

/// Section 4: the cache (`cache = { enabled = true }`). An upstream that answers `max-age=1` with an
/// ETag and `stale-if-error=300`: the first call is stored, the next two are served from memory
/// without reaching it, a stale entry is revalidated with `If-None-Match` (304), and with the
/// upstream down the stale entry still answers.
async fn section_cache(report: &mut Report) -> Result<(), Box<dyn std::error::Error>> {
    #[derive(Default)]
    struct Catalog {
        requests: AtomicU64,
        failing: AtomicBool,
    }
    let catalog = Arc::new(Catalog::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = catalog.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let catalog = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    catalog.requests.fetch_add(1, Ordering::SeqCst);
                    let response = if catalog.failing.load(Ordering::SeqCst) {
                        reply(StatusCode::SERVICE_UNAVAILABLE, "down")
                    } else {
                        let unchanged = request
                            .headers()
                            .get("if-none-match")
                            .is_some_and(|tag| tag == "\"v1\"");
                        let status = if unchanged {
                            StatusCode::NOT_MODIFIED
                        } else {
                            StatusCode::OK
                        };
                        let body = if unchanged {
                            ""
                        } else {
                            "[\"widget\", \"gadget\"]"
                        };
                        let mut response = reply(status, body);
                        let headers = response.headers_mut();
                        headers.insert("etag", "\"v1\"".parse().expect("a header value"));
                        headers.insert(
                            "cache-control",
                            "max-age=1, stale-if-error=300"
                                .parse()
                                .expect("a header value"),
                        );
                        response
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });

    let text = format!(
        r#"
[integrations.catalog]
base_url = "http://{addr}/"
retry = {{ max_attempts = 2, base = "10ms", cap = "20ms" }}
cache = {{ enabled = true }}
"#
    );
    println!();
    println!("=== 4. cache: max-age=1, ETag, stale-if-error=300 ==={text}");
    let client = Client::from_config(Config::from_toml_str(&text)?)?;
    let catalog_api = client.api("catalog")?;
    let call = |step: &'static str| {
        let api = catalog_api.clone();
        let catalog = catalog.clone();
        async move {
            let response = api.get("items").send().await?;
            let status = response.cache_status().map_or("none", |s| s.as_str());
            let code = response.status();
            let body = response.text().await?;
            println!(
                "  {step:<44} cache.status = {status:<11} {code} {body}  (upstream requests so far: {})",
                catalog.requests.load(Ordering::SeqCst)
            );
            Ok::<_, integration_core::Error>(status)
        }
    };
    let first = call("first call: stored").await?;
    let second = call("second call: served from memory").await?;
    let third = call("third call: served from memory").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = call("stale: revalidated with If-None-Match, 304").await?;
    catalog.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = call("upstream down: stale-if-error answers").await?;
    report.cache_hits = [first, second, third]
        .iter()
        .filter(|s| **s == "hit")
        .count() as u64;
    report.cache_revalidated = revalidated == "revalidated";
    report.cache_stale_served = stale == "stale";
    let _ = client.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
