//! The gateway's overhead: the same full stack called in-process (as a Rust service does) and
//! through `integration serve` over loopback HTTP (as a service in any other language does), open
//! loop at fixed rates (1,000 and 5,000 calls a second by default).
//!
//! Both paths run in this process against the same loopback upstream ([`server::serve`]), with the
//! same configuration ([`full_stack_toml`]): the difference is the gateway's own work (its HTTP
//! server, caller check, routing, header copying, response streaming) plus the caller's extra
//! HTTP hop. The gateway runs with caller authentication on, as it would in production.
//!
//! `bench gateway [--smoke] [--rates 1000,5000] [--duration SECS] [--warmup SECS]` prints the
//! table (`--out DIR`: also into `DIR/BENCHMARKS.md`, its own section); `cargo xtask bench` runs it
//! after the end-to-end benchmark.
//!
//! [`server::serve`]: super::server::serve

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::BoxError;
use super::load::{Caller, LatencyRun, OpenLoop};
use super::scenario::{API_NAME, FullStack, PoolSettings, RateLimitStore, full_stack_toml};
use super::server::{BODY, PATH, serve};

/// The callers' token of the benchmark's gateway.
const TOKEN: &str = "gateway-bench-token-0c51e9";

/// How one gateway benchmark runs.
#[derive(Clone, Debug)]
pub struct GatewayBenchSettings {
    /// Offered rates, calls a second.
    pub rates: Vec<f64>,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Each measured window.
    pub duration: Duration,
}

impl GatewayBenchSettings {
    /// 1,000 and 5,000 calls a second, 5 s windows after 3 s of warm-up: the warm-up covers a fresh
    /// key's rate probe (`rate_limit.initial_window`, on by default), which reaches 1,000 calls a
    /// second about 1.7 s after the first call; with 1 s of warm-up the 1,000/s window measured the
    /// probe's queue (p99 about 1 s on both paths), not the gateway.
    pub fn full() -> Self {
        Self {
            rates: vec![1_000.0, 5_000.0],
            warmup: Duration::from_secs(3),
            duration: Duration::from_secs(5),
        }
    }

    /// One low rate for a fraction of a second: proves the benchmark runs, measures nothing.
    pub fn smoke() -> Self {
        Self {
            rates: vec![200.0],
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
        }
    }
}

/// One paragraph on how the windows were run, above the table in `BENCHMARKS.md`.
pub fn describe(settings: &GatewayBenchSettings, threads: usize) -> String {
    let rates: Vec<String> = settings
        .rates
        .iter()
        .map(|rate| format!("{rate:.0}"))
        .collect();
    format!(
        "Open loop at {} calls a second, {:.1} s of warm-up then a {:.1} s window each, on a \
         {threads}-thread runtime; the same full stack \
         (`integration_tests::bench::scenario::full_stack_toml`, memory limiter) called \
         in-process, then through `integration serve` on loopback with caller authentication on; \
         the upstream is the benchmark's loopback server, in this process. Latency from each \
         call's due time.\n",
        rates.join(" and "),
        settings.warmup.as_secs_f64(),
        settings.duration.as_secs_f64()
    )
}

/// One measured window.
#[derive(Clone, Debug)]
pub struct GatewayBenchRow {
    /// `in-process` or `gateway`.
    pub path: &'static str,
    /// Offered calls a second.
    pub rate: f64,
    /// Completed calls a second over the window.
    pub achieved: f64,
    /// Median latency from each call's due time, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// CPU of the whole process per call, µs (both sides of the gateway for `gateway`).
    pub cpu_us_per_call: f64,
    /// Failed or unfinished calls.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl GatewayBenchRow {
    fn new(path: &'static str, rate: f64, run: &LatencyRun) -> Self {
        Self {
            path,
            rate,
            achieved: run.calls as f64 / run.elapsed.as_secs_f64().max(1e-9),
            p50_us: run.quantile_us(0.5),
            p99_us: run.quantile_us(0.99),
            cpu_us_per_call: run.cpu_us_per_call(),
            errors: run.errors + run.unfinished,
            first_error: run.first_error.clone(),
        }
    }
}

/// A caller of the gateway: plain hyper over loopback, with the callers' token, to
/// `/<integration>/v1/item`.
#[derive(Clone, Debug)]
struct ThroughGateway {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
}

impl Caller for ThroughGateway {
    async fn call(&self) -> Result<(), BoxError> {
        let request = Request::get(self.uri.clone())
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK || body != BODY.as_bytes() {
            return Err(format!("unexpected answer {status} of {} bytes", body.len()).into());
        }
        Ok(())
    }
}

/// A running in-process gateway and the files it reads; stopped and removed on drop.
struct RunningGateway {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: std::path::PathBuf,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_gateway(toml: &str) -> Result<RunningGateway, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "integration-gateway-bench-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("gateway.toml"), toml)?;
    std::fs::write(dir.join("caller-token"), TOKEN)?;
    let mut args = integration_gateway::ServeArgs::default();
    args.listen = "127.0.0.1:0".parse()?;
    args.admin_listen = "127.0.0.1:0".parse()?;
    args.config = Some(dir.join("gateway.toml"));
    args.caller_token_file = Some(dir.join("caller-token"));
    args.drain_grace = Duration::ZERO;
    args.drain_timeout = Duration::from_secs(1);
    let gateway = integration_gateway::Gateway::bind(args).await?;
    let addr = gateway.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run(async {
        let _ = stopped.await;
    }));
    Ok(RunningGateway {
        addr,
        stop: Some(stop),
        dir,
    })
}

/// Runs every rate in-process and through the gateway, in that order, on the current runtime.
///
/// # Errors
///
/// When the upstream, the client or the gateway cannot start, or a driver cannot run.
pub async fn run(settings: &GatewayBenchSettings) -> Result<Vec<GatewayBenchRow>, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    tokio::spawn(serve(listener));
    let pool = PoolSettings::default();
    let toml = full_stack_toml(upstream, &pool, &RateLimitStore::Memory);
    let in_process = FullStack::from_toml(&toml, &pool, RateLimitStore::Memory).await?;
    let gateway = start_gateway(&toml).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(pool.nodelay);
    let through = ThroughGateway {
        client: Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .build(connector),
        uri: format!("http://{}/{API_NAME}{PATH}", gateway.addr).parse()?,
    };
    let mut rows = Vec::new();
    for &rate in &settings.rates {
        let driver = OpenLoop::new(rate, settings.warmup, settings.duration);
        let run = driver.run(&in_process).await?;
        rows.push(GatewayBenchRow::new("in-process", rate, &run));
        let run = driver.run(&through).await?;
        rows.push(GatewayBenchRow::new("gateway", rate, &run));
    }
    drop(gateway);
    Ok(rows)
}

/// The rows as a Markdown table, with the gateway's added p99 and CPU per rate.
pub fn markdown(rows: &[GatewayBenchRow]) -> String {
    let mut text = String::from(
        "| path | offered/s | achieved/s | p50 µs | p99 µs | CPU µs/call | errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            row.path,
            row.rate,
            row.achieved,
            row.p50_us,
            row.p99_us,
            row.cpu_us_per_call,
            row.errors
        ));
    }
    for pair in rows.chunks(2) {
        if let [direct, gateway] = pair {
            text.push_str(&format!(
                "\nAt {:.0}/s the gateway adds {:.0} µs at p99 and {:.0} µs of CPU per call.",
                direct.rate,
                gateway.p99_us - direct.p99_us,
                gateway.cpu_us_per_call - direct.cpu_us_per_call
            ));
        }
    }
    text.push('\n');
    text
}
