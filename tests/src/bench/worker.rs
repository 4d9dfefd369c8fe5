//! One scenario measured in its own process: the worker half of the `bench` binary.

use super::BoxError;
use super::load::{Caller, ClosedLoop, LatencyRun, OpenLoop, Throughput};
use super::measure::rss_kib;
use super::scenario::{
    FacadeNoLayers, FullStack, OurTransport, PeerStack, PoolSettings, RateLimitStore, RawHyper,
    RawHyperConn, RawHyperSpan, Reqwest, Scenario,
};
use integration_core::names;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// What a worker runs: one scenario, a closed-loop phase then an open-loop phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The scenario to measure.
    pub scenario: Scenario,
    /// The loopback server.
    pub addr: SocketAddr,
    /// Calls in flight in the closed loop.
    pub concurrency: usize,
    /// Offered rate of the open loop, calls per second.
    pub rate: f64,
    /// Warm-up before each phase's window.
    pub warmup: Duration,
    /// Length of each phase's window.
    pub duration: Duration,
    /// Pool settings for every client.
    pub pool: PoolSettings,
    /// The tracing filter of the subscriber every worker installs (`info`: the level of the log
    /// layer's spans, and of reqwest-tracing's).
    pub log_filter: String,
    /// The key prefix of scenario 3, private to this run. Its Redis is read from `REDIS_URL` in the
    /// worker, never passed on its command line, where a password would show in `ps`.
    pub redis_prefix: String,
}

/// The closed-loop figures of a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputReport {
    /// Successful calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub errors: u64,
    /// The window's length, seconds.
    pub seconds: f64,
    /// Successful calls per second.
    pub per_second: f64,
    /// Client process CPU microseconds per call.
    pub cpu_us_per_call: f64,
    /// The kernel's part of `cpu_us_per_call`: system CPU microseconds per call.
    #[serde(default)]
    pub system_us_per_call: f64,
}

impl From<&Throughput> for ThroughputReport {
    fn from(run: &Throughput) -> Self {
        Self {
            calls: run.calls,
            errors: run.errors,
            seconds: run.elapsed.as_secs_f64(),
            per_second: run.per_second(),
            cpu_us_per_call: run.cpu_us_per_call(),
            system_us_per_call: run.system_us_per_call(),
        }
    }
}

/// The open-loop figures of a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The offered rate, calls per second.
    pub offered_rate: f64,
    /// Successful calls due in the window.
    pub calls: u64,
    /// Failed calls due in the window.
    pub errors: u64,
    /// Calls due in the window that had not finished after the drain timeout.
    pub unfinished: u64,
    /// Median latency from the due time, microseconds.
    pub p50_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
    /// Client process CPU microseconds per call at this rate.
    pub cpu_us_per_call: f64,
}

impl LatencyReport {
    fn new(offered_rate: f64, run: &LatencyRun) -> Self {
        Self {
            offered_rate,
            calls: run.calls,
            errors: run.errors,
            unfinished: run.unfinished,
            p50_us: run.quantile_us(0.5),
            p90_us: run.quantile_us(0.9),
            p99_us: run.quantile_us(0.99),
            p999_us: run.quantile_us(0.999),
            max_us: run.histogram.max() as f64 / 1e3,
            cpu_us_per_call: run.cpu_us_per_call(),
        }
    }
}

/// Everything one worker measured; printed by the worker as one JSON line on stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The scenario measured.
    pub scenario: Scenario,
    /// Closed loop.
    pub throughput: ThroughputReport,
    /// Open loop.
    pub latency: LatencyReport,
    /// Resident set before the client was built (runtime, subscriber, recorder, binary), KiB.
    pub rss_baseline_kib: u64,
    /// Peak resident set of the worker process at its end (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// The first error of either phase, with its sources.
    pub first_error: Option<String>,
    /// Times the Redis connection was marked unavailable during the run (the recorder's
    /// `integration.redis.transitions{outcome="lost"}`): from each until Redis answered again, the
    /// Redis limiter decided on its local fallback, and the run measured that path in part.
    #[serde(default)]
    pub redis_lost: u64,
    /// The round it ran in (0 for the first), set by the benchmark that started the worker: the
    /// scenarios of one round ran back to back, so their latencies can be compared round by round.
    #[serde(default)]
    pub round: usize,
}

impl WorkerReport {
    /// The calls that failed or never finished, over both phases.
    pub fn failures(&self) -> u64 {
        self.throughput.errors + self.latency.errors + self.latency.unfinished
    }
}

/// Installs what every worker has, whatever its scenario, so that logging is really on where a
/// stack logs: a `tracing-subscriber` `fmt` subscriber filtered at `filter`, formatting every event
/// into a sink (the formatting cost is paid, the terminal is not), and the Prometheus `metrics`
/// recorder (durations as histograms with OpenTelemetry's bucket boundaries, as the tour installs
/// it) with its periodic upkeep (every 5 s, on a thread of its own).
///
/// # Errors
///
/// When `filter` does not parse, or a subscriber or recorder is already installed.
pub fn install_observability(
    filter: &str,
) -> Result<metrics_exporter_prometheus::PrometheusHandle, BoxError> {
    let handle = install_observability_without_upkeep(filter)?;
    let upkeep = handle.clone();
    // What the exporter's own `install` does in production: drain the histograms every few seconds,
    // on a thread of its own rather than on the client's runtime.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })?;
    Ok(handle)
}

/// Times the shared Redis connection was marked unavailable since the recorder behind `metrics`
/// was installed: its counter `integration.redis.transitions{outcome="lost"}`, read from the
/// exporter's rendering.
pub fn redis_lost(metrics: &metrics_exporter_prometheus::PrometheusHandle) -> u64 {
    parse_redis_lost(&metrics.render())
}

/// The `lost` transitions in a Prometheus text rendering (0 when the counter was never touched).
fn parse_redis_lost(text: &str) -> u64 {
    let name =
        metrics_exporter_prometheus::formatting::sanitize_metric_name(names::REDIS_TRANSITIONS);
    text.lines()
        .filter(|line| {
            line.strip_prefix(name.as_str())
                .map(|rest| rest.strip_prefix("_total").unwrap_or(rest))
                .is_some_and(|rest| rest.starts_with('{') && rest.contains("outcome=\"lost\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// [`install_observability`] without the periodic upkeep: the caller runs
/// [`PrometheusHandle::run_upkeep`](metrics_exporter_prometheus::PrometheusHandle::run_upkeep)
/// itself. A count run does, once after its calls: every sample is drained, as by the periodic
/// upkeep, but at a point that does not depend on how long the run took under valgrind (a 5 s
/// timer fell inside some runs of 2N calls and not others: ~0.8k instructions a call of noise).
///
/// # Errors
///
/// As [`install_observability`].
pub fn install_observability_without_upkeep(
    filter: &str,
) -> Result<metrics_exporter_prometheus::PrometheusHandle, BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(io::sink)
        .try_init()?;
    // Durations as histograms with OpenTelemetry's boundaries, as the tour and
    // `integration_core::names::DURATION_BUCKETS` advise (the exporter's default, a summary, costs a
    // quantile sketch per sample).
    let mut prometheus = metrics_exporter_prometheus::PrometheusBuilder::new();
    for name in names::DURATION_HISTOGRAMS {
        prometheus = prometheus.set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(name.to_owned()),
            names::DURATION_BUCKETS,
        )?;
    }
    Ok(prometheus.install_recorder()?)
}

/// Runs one worker: observability, the client, the closed loop, the open loop.
///
/// # Errors
///
/// When the client cannot be built or resources cannot be read; failed calls are counted in the
/// report, not returned.
pub async fn run(config: &WorkerConfig) -> Result<WorkerReport, BoxError> {
    let metrics = install_observability(&config.log_filter)?;
    let mut report = run_scenario(config).await?;
    report.redis_lost = redis_lost(&metrics);
    Ok(report)
}

async fn run_scenario(config: &WorkerConfig) -> Result<WorkerReport, BoxError> {
    let baseline = rss_kib()?;
    let (addr, pool, base) = (config.addr, &config.pool, baseline.current_kib);
    match config.scenario {
        Scenario::RawHyper => measure(config, base, RawHyper::new(addr, pool)).await,
        Scenario::FullStack => {
            let caller = FullStack::new(addr, pool, RateLimitStore::Memory).await?;
            measure(config, base, caller).await
        }
        Scenario::FullStackRedis => {
            let store = RateLimitStore::Redis {
                url: integration_core::testing::redis_url(),
                key_prefix: config.redis_prefix.clone(),
                command_timeout: integration_config::DEFAULT_REDIS_COMMAND_TIMEOUT,
            };
            let caller = FullStack::new(addr, pool, store).await?;
            measure(config, base, caller).await
        }
        Scenario::PeerStack => measure(config, base, PeerStack::new(addr, pool)?).await,
        Scenario::Reqwest => measure(config, base, Reqwest::new(addr, pool)?).await,
        Scenario::OurTransport => measure(config, base, OurTransport::new(addr, pool)?).await,
        Scenario::FacadeNoLayers => measure(config, base, FacadeNoLayers::new(addr, pool)?).await,
        Scenario::RawHyperSpan => measure(config, base, RawHyperSpan::new(addr, pool)).await,
        Scenario::RawHyperConn => measure(config, base, RawHyperConn::new(addr, pool)).await,
    }
}

async fn measure<C: Caller>(
    config: &WorkerConfig,
    rss_baseline_kib: u64,
    caller: C,
) -> Result<WorkerReport, BoxError> {
    let throughput = ClosedLoop::new(config.concurrency, config.warmup, config.duration)
        .run(&caller)
        .await?;
    let latency = OpenLoop::new(config.rate, config.warmup, config.duration)
        .run(&caller)
        .await?;
    let rss = rss_kib()?;
    Ok(WorkerReport {
        scenario: config.scenario,
        throughput: ThroughputReport::from(&throughput),
        latency: LatencyReport::new(config.rate, &latency),
        rss_baseline_kib,
        peak_rss_kib: rss.peak_kib,
        first_error: throughput.first_error.or(latency.first_error),
        redis_lost: 0,
        round: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn redis_losses_are_read_from_the_exporters_rendering() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        assert_eq!(redis_lost(&handle), 0, "never touched");
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(names::REDIS_TRANSITIONS, names::OUTCOME => "restored").increment(5);
            metrics::counter!(names::RATE_LIMIT_REJOIN_DROPPED, names::OUTCOME => "lost")
                .increment(7);
        });
        assert_eq!(
            redis_lost(&handle),
            0,
            "only restorations and other counters"
        );
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(names::REDIS_TRANSITIONS, names::OUTCOME => "lost").increment(2);
        });
        assert_eq!(redis_lost(&handle), 2, "{}", handle.render());
        assert_eq!(
            parse_redis_lost(
                "integration_redis_transitions_total{outcome=\"lost\",integration=\"a\"} 3\n\
                 integration_redis_transitions_total{outcome=\"lost\",integration=\"b\"} 1\n"
            ),
            4,
            "a suffixed name, and every label set summed"
        );
    }
}
