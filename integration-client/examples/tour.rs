//! The tour: every layer of the stack at work against a fake third-party API, in a few seconds.
//!
//! ```text
//! cargo run -p integration-client --example tour
//! ```
//!
//! Needs nothing but this machine: no Redis, no PostgreSQL, no network beyond 127.0.0.1. It starts a
//! loopback fake API (an OAuth token endpoint, an endpoint that throttles with 429 + `Retry-After: 1`,
//! one that fails with 503 now and then, a slow one), configures an integration against it from TOML,
//! sends a burst of concurrent calls through the full stack, and prints the logs, a summary and the
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_client::Client;
use integration_config::Config;
use integration_core::ext::Attempts;
use integration_core::names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::time::{FormatTime, Uptime};
use tracing_subscriber::registry::LookupSpan;

/// The duration histograms of the stack, in seconds.
const DURATION_METRICS: [&str; 3] = [
    names::HTTP_CLIENT_REQUEST_DURATION,
    names::ATTEMPT_DURATION,
    names::THROTTLE_WAIT,
];
/// OpenTelemetry's advised bucket boundaries for `http.client.request.duration`, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

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
"#
    )
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    // The metrics of every layer, rendered at the end (no HTTP listener).
    // Durations are histograms with OpenTelemetry's advised boundaries for
    // `http.client.request.duration`, not client-side summaries (which cannot be aggregated).
    let mut prometheus = PrometheusBuilder::new();
    for name in DURATION_METRICS {
        prometheus =
            prometheus.set_buckets_for_metric(Matcher::Full(name.to_owned()), DURATION_BUCKETS)?;
    }
    let metrics = prometheus.install_recorder()?;

    let upstream = Arc::new(Upstream::default());
    let addr = start_upstream(upstream.clone()).await?;
    tracing::info!(%addr, "fake third-party API listening");

    let text = config_text(addr);
    println!("--- configuration (TOML) ---{text}");
    let config = Config::from_toml_str(&text)?;
    let client = Client::from_config(config)?;
    let partner = client.api("partner")?;

    let endpoints = ["items/1", "throttled", "flaky", "slow"];
    println!("--- {CALLS} concurrent calls: {} ---", endpoints.join(", "));
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
    let mut finished = 0usize;
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
    let wall = started.elapsed();
    let left = client.shutdown(Duration::from_secs(5)).await;

    tally.latencies.sort();
    let exposition = metrics.render();
    let failed: u64 = tally.failed.values().sum();
    let lost = CALLS as u64 - tally.ok - failed + left as u64;
    let retries: u64 = tally.retries.values().sum();

    println!();
    println!("--- summary ---");
    println!("{:<34} {:>10}", "calls", CALLS);
    println!("{:<34} {:>10}", "  succeeded", tally.ok);
    println!("{:<34} {:>10}", "  failed", failed);
    for (kind, n) in &tally.failed {
        println!("{:<34} {:>10}", format!("    {kind}"), n);
    }
    println!("{:<34} {:>10}", "calls lost", lost);
    println!("{:<34} {:>10}", "attempts", tally.attempts);
    println!("{:<34} {:>10}", "retries", retries);
    for (reason, n) in &tally.retries {
        println!("{:<34} {:>10}", format!("  {reason}"), n);
    }
    println!(
        "{:<34} {:>10}",
        "throttle waits (rate limiter)",
        metric_sum(&exposition, "integration_ratelimit_wait_count")
    );
    println!(
        "{:<34} {:>10}",
        "server throttle signals",
        metric_sum(&exposition, "integration_ratelimit_server_signals")
    );
    println!(
        "{:<34} {:>10}",
        "token fetches (metric)",
        metric_sum(&exposition, "integration_auth_token_refreshes")
    );
    println!(
        "{:<34} {:>10}",
        "token fetches (seen upstream)",
        upstream.token_fetches.load(Ordering::SeqCst)
    );
    println!(
        "{:<34} {:>10}",
        "upstream: requests / 429 / 503 / 401",
        format!(
            "{} / {} / {} / {}",
            upstream.requests.load(Ordering::Relaxed),
            upstream.throttled.load(Ordering::Relaxed),
            upstream.failed.load(Ordering::Relaxed),
            upstream.unauthorized.load(Ordering::Relaxed)
        )
    );
    println!(
        "{:<34} {:>10.1?}",
        "latency p50",
        percentile(&tally.latencies, 50.0)
    );
    println!(
        "{:<34} {:>10.1?}",
        "latency p99",
        percentile(&tally.latencies, 99.0)
    );
    println!("{:<34} {:>10.1?}", "wall time", wall);
    println!();
    println!("--- Prometheus exposition ---");
    print!("{exposition}");

    cache_section().await?;

    if lost != 0 || finished != CALLS {
        return Err(format!("{lost} calls lost").into());
    }
    Ok(())
}

/// The cache (issue 16), self-contained: a catalogue endpoint of its own that is fresh for one
/// second, carries an `ETag`, and grants `stale-if-error`. Shows hits, a revalidation (a 304
/// refreshes the entry) and a stale answer while the upstream fails.
async fn cache_section() -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::atomic::AtomicBool;

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
    println!("--- the cache ---{text}");
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
                "{step:<44} cache.status = {status:<11} {code} {body}  (upstream requests so far: {})",
                catalog.requests.load(Ordering::SeqCst)
            );
            Ok::<_, integration_core::Error>(())
        }
    };
    call("first call: stored").await?;
    call("second call: served from memory").await?;
    call("third call: served from memory").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call("stale: revalidated with If-None-Match, 304").await?;
    catalog.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call("upstream down: stale-if-error answers").await?;
    Ok(())
}
