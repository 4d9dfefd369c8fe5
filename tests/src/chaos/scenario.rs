//! The scenarios of issues 12 and 13, each driving the facade at its defaults (unless the scenario
//! says otherwise) against the fault upstream, and checking what the issue says it must show.
//!
//! Durations and rates come from the issues and are multiplied by [`Scale`], so a scenario can run
//! at full length (the report) or for a few seconds (the smoke). Invariants that hold whatever the
//! timing (no call lost or hung, no duplicated non-idempotent `POST` at the server) are marked for
//! the smoke; the others are reported.

use super::fault::{
    CALL_ID, CONFIG_ECHO, CONFIG_TAG, FaultPlan, FaultServer, Latency, LimitKind, Outage, PATH,
    ServerLimit, ServerSecond, TOKEN_PATH,
};
use super::load::{CallOutcome, CallRecord, ChaosCaller, Schedule, closed_loop, open_loop};
use super::report::{Invariant, Run, ScenarioReport, timeline};
use crate::bench::BoxError;
use crate::bench::load::error_chain;
use integration_client::Client;
use integration_config::{
    AuthConfig, BreakerConfig, Config, IntegrationConfig, OAuth2ClientCredentials, QuotaConfig,
    RateLimitConfig, RedisConfig, Secret, StoreKind,
};
use integration_core::testing::RedisServer;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// The API name every scenario calls.
pub const API: &str = "upstream";

/// Added to a call's total deadline to make its hard bound: a call not completed by then is hung.
const HANG_MARGIN: Duration = Duration::from_secs(5);

/// A scenario of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// 10 % `503` and 1 % dropped connections, 1,000 calls/s, 60 s; a tenth of the calls are
    /// `POST`s without an idempotency key.
    Flaky10,
    /// 30 % `503` and 5 % drops, 1,000 calls/s, 60 s, with the breaker on and then off.
    Flaky30,
    /// A 20 s outage answering `503` inside 60 s, 500 calls/s.
    Outage503,
    /// A 20 s outage refusing connections inside 60 s, 500 calls/s.
    OutageRefused,
    /// An upstream with a 2 s p99, attempt timeout 1 s, total 2.5 s.
    Slow,
    /// A server GCRA (50 r/s, burst 10, `Retry-After: 1`); 300 calls at 64 concurrency.
    ServerLimit,
    /// The same with a local quota of 45/s and the default burst.
    ServerLimitQuota,
    /// An upstream limit announced with `RateLimit`/`RateLimit-Policy` headers.
    RatelimitHeaders,
    /// Four clients (as four replicas) sharing their rate-limit state in one Redis against one
    /// server GCRA (50 r/s, burst 10); 300 calls at 64 concurrency spread over them.
    SharedLimit,
    /// The limiter's and the token store's Redis killed for 10 s and 40 s under 80 calls/s,
    /// quota 50/s.
    RedisOutage,
    /// The configuration's PostgreSQL cut for 10 s and 60 s while the configuration changes.
    PgOutage,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 11] = [
        Scenario::Flaky10,
        Scenario::Flaky30,
        Scenario::Outage503,
        Scenario::OutageRefused,
        Scenario::Slow,
        Scenario::ServerLimit,
        Scenario::ServerLimitQuota,
        Scenario::RatelimitHeaders,
        Scenario::SharedLimit,
        Scenario::RedisOutage,
        Scenario::PgOutage,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Flaky10 => "flaky-10",
            Scenario::Flaky30 => "flaky-30",
            Scenario::Outage503 => "outage-503",
            Scenario::OutageRefused => "outage-refused",
            Scenario::Slow => "slow",
            Scenario::ServerLimit => "server-limit",
            Scenario::ServerLimitQuota => "server-limit-quota",
            Scenario::RatelimitHeaders => "ratelimit-headers",
            Scenario::SharedLimit => "shared-limit",
            Scenario::RedisOutage => "redis-outage",
            Scenario::PgOutage => "pg-outage",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario `{name}` (known: {})", known.join(", "))
            })
    }
}

/// How far the issues' durations and rates are scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// Every duration is multiplied by this.
    pub duration: f64,
    /// Every offered rate (and quota tied to it) is multiplied by this.
    pub rate: f64,
}

impl Scale {
    /// The issues' figures.
    pub const FULL: Scale = Scale {
        duration: 1.0,
        rate: 1.0,
    };

    /// The smoke: each scenario a few seconds, at rates a debug build sustains on a shared machine.
    pub const SMOKE: Scale = Scale {
        duration: 0.1,
        rate: 0.3,
    };

    fn secs(&self, full: f64) -> Duration {
        Duration::from_secs_f64(full * self.duration)
    }

    fn rate(&self, full: f64) -> f64 {
        (full * self.rate).max(1.0)
    }
}

/// Runs `scenario` at `scale`.
///
/// # Errors
///
/// When the harness itself cannot run it (no loopback port, no `redis-server`, no PostgreSQL at
/// `DATABASE_URL`); a misbehaving client is a failed invariant, not an error.
pub async fn run(scenario: Scenario, scale: Scale) -> Result<ScenarioReport, BoxError> {
    match scenario {
        Scenario::Flaky10 => flaky(scenario, scale, 0.10, 0.01).await,
        Scenario::Flaky30 => flaky(scenario, scale, 0.30, 0.05).await,
        Scenario::Outage503 => outage(scenario, scale, Outage::Status503).await,
        Scenario::OutageRefused => outage(scenario, scale, Outage::Refused).await,
        Scenario::Slow => slow(scale).await,
        Scenario::ServerLimit | Scenario::ServerLimitQuota | Scenario::RatelimitHeaders => {
            server_limit(scenario, scale).await
        }
        Scenario::SharedLimit => shared_limit(scale).await,
        Scenario::RedisOutage => redis_outage(scale).await,
        Scenario::PgOutage => pg_outage(scale).await,
    }
}

/// The breaker's base open time at its defaults: the recovery bound after an outage is this plus
/// one probe.
pub fn breaker_base_open_time() -> Duration {
    BreakerConfig::default().open_for
}

/// The name a failure is counted under: the error kind, with the upstream status when there is
/// one (`status_503`, `rate_limited_429`).
pub fn error_name(error: &integration_core::Error) -> String {
    match error.status() {
        Some(status) => format!("{}_{}", error.kind().as_str(), status.as_u16()),
        None => error.kind().as_str().to_owned(),
    }
}

/// The facade as a user calls it: `GET` (or, every `post_every`-th call, a `POST` without an
/// idempotency key) of [`PATH`] on the [`API`] integration, the whole body read.
#[derive(Clone, Debug)]
pub struct FacadeCaller {
    client: Client,
    post_every: u64,
    first_errors: Arc<Mutex<BTreeMap<String, String>>>,
}

impl FacadeCaller {
    /// Calls through `client`; `post_every` 0 sends only `GET`s.
    pub fn new(client: Client, post_every: u64) -> Self {
        Self {
            client,
            post_every,
            first_errors: Arc::default(),
        }
    }

    /// True when call `index` is a `POST`.
    pub fn is_post(&self, index: u64) -> bool {
        self.post_every > 0 && index % self.post_every == self.post_every - 1
    }

    /// The first error of each kind, with its sources.
    pub fn first_errors(&self) -> BTreeMap<String, String> {
        self.first_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed(&self, error: &integration_core::Error) -> CallOutcome {
        let name = error_name(error);
        self.first_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.clone())
            .or_insert_with(|| error_chain(error));
        CallOutcome::failed(name, error.attempts())
    }
}

impl ChaosCaller for FacadeCaller {
    async fn call(&self, index: u64) -> CallOutcome {
        let api = match self.client.api(API) {
            Ok(api) => api,
            Err(error) => return self.failed(&error),
        };
        let request = if self.is_post(index) {
            api.post(PATH).body(r#"{"order":1}"#)
        } else {
            api.get(PATH)
        };
        let response = match request.header(CALL_ID, index.to_string()).send().await {
            Ok(response) => response,
            Err(error) => return self.failed(&error),
        };
        let attempts = response.attempts();
        let detail = response
            .headers()
            .get(CONFIG_ECHO)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let response = match response.error_for_status() {
            Ok(response) => response,
            Err(error) => return self.failed(&error),
        };
        match response.bytes().await {
            Ok(_) => CallOutcome {
                error: None,
                attempts,
                detail,
            },
            Err(error) => self.failed(&error),
        }
    }
}

/// The integration at `base_url` with every setting at its default.
fn defaults(base_url: &str) -> Result<IntegrationConfig, BoxError> {
    Ok(IntegrationConfig::builder(base_url).build()?)
}

fn client_for(config: IntegrationConfig) -> Result<Client, BoxError> {
    Ok(Client::builder().api(API, config).build()?)
}

fn hard_bound(config: &IntegrationConfig) -> Duration {
    config.timeout + HANG_MARGIN
}

/// Calls started in `[from, to)`.
fn started_in(records: &[CallRecord], from: Duration, to: Duration) -> Vec<&CallRecord> {
    records
        .iter()
        .filter(|r| r.started >= from && r.started < to)
        .collect()
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn attempts_per_call(records: &[&CallRecord]) -> f64 {
    let done: Vec<_> = records.iter().filter_map(|r| r.outcome.as_ref()).collect();
    ratio(
        done.iter().map(|o| o.attempts as usize).sum(),
        done.len().max(1),
    )
}

fn pct(value: f64) -> String {
    format!("{:.2} %", value * 100.0)
}

fn secs(value: Duration) -> String {
    format!("{:.2} s", value.as_secs_f64())
}

/// The invariants every scenario checks: every scheduled call has a record, none hung.
fn common_invariants(records: &[CallRecord], expected: u64) -> Vec<Invariant> {
    let hung = records.iter().filter(|r| r.hung()).count();
    vec![
        Invariant::new(
            "no call lost (every scheduled call recorded an outcome or a hang)",
            format!("{expected} calls"),
            format!("{} calls", records.len()),
            records.len() as u64 == expected,
        )
        .in_smoke(),
        Invariant::new(
            "no call hung (hard bound: total deadline + 5 s)",
            "0",
            hung.to_string(),
            hung == 0,
        )
        .in_smoke(),
    ]
}

fn common_figures(records: &[CallRecord], server: &ServerSecond) -> BTreeMap<String, f64> {
    let all: Vec<&CallRecord> = records.iter().collect();
    let ok = records.iter().filter(|r| r.is_ok()).count();
    let mut latencies: Vec<Duration> = records.iter().map(CallRecord::latency).collect();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    // How late the generator sent calls (a saturated machine shows here, not only in latency).
    let mut lateness: Vec<Duration> = records
        .iter()
        .map(|r| r.started.saturating_sub(r.due))
        .collect();
    lateness.sort();
    let late = |q: f64| {
        lateness
            .get(((lateness.len() as f64 * q) as usize).min(lateness.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let mut figures = BTreeMap::new();
    figures.insert("send lateness p99 (ms)".to_owned(), late(0.99));
    figures.insert("send lateness max (ms)".to_owned(), late(1.0));
    figures.insert("calls".to_owned(), records.len() as f64);
    figures.insert("success (%)".to_owned(), ratio(ok, records.len()) * 100.0);
    figures.insert("attempts per call".to_owned(), attempts_per_call(&all));
    figures.insert(
        "upstream requests per call".to_owned(),
        ratio(server.requests as usize, records.len()),
    );
    figures.insert("upstream 429s".to_owned(), server.throttled as f64);
    figures.insert("latency p50 (ms)".to_owned(), quantile(0.5));
    figures.insert("latency p99 (ms)".to_owned(), quantile(0.99));
    figures.insert("latency max (ms)".to_owned(), quantile(1.0));
    figures
}

fn settings(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// One open-loop run of `caller` against `server`, returning the records and the run.
async fn open_run(
    schedule: &Schedule,
    caller: &FacadeCaller,
    server: &FaultServer,
    epoch: Instant,
    bound: Duration,
    label: &str,
    events: Vec<(f64, String)>,
) -> (Vec<CallRecord>, Run) {
    let records = open_loop(schedule, caller, epoch, bound).await;
    let run = Run {
        label: label.to_owned(),
        timeline: timeline(&records, &server.seconds()),
        events,
    };
    (records, run)
}

async fn flaky(
    scenario: Scenario,
    scale: Scale,
    status_503: f64,
    drops: f64,
) -> Result<ScenarioReport, BoxError> {
    let rate = scale.rate(1000.0);
    let duration = scale.secs(60.0);
    let plan = FaultPlan {
        status_503,
        drop_before_head: drops,
        ..FaultPlan::default()
    };
    let flaky10 = scenario == Scenario::Flaky10;
    // flaky-10 mixes in POSTs without a key (every tenth call); flaky-30 compares the breaker.
    let variants: &[(bool, &str)] = if flaky10 {
        &[(true, "defaults")]
    } else {
        &[(true, "breaker on (defaults)"), (false, "breaker off")]
    };
    let mut report = ScenarioReport {
        name: scenario.name().to_owned(),
        description: format!(
            "Open loop at {rate:.0} calls/s for {:.0} s; the upstream answers 503 to {:.0} % of \
             requests and closes the connection before the head on {:.0} %.{}",
            duration.as_secs_f64(),
            status_503 * 100.0,
            drops * 100.0,
            if flaky10 {
                " Every tenth call is a POST without an idempotency key (never retried once sent), \
                 carrying a call id the server counts."
            } else {
                " Run twice: the breaker at its defaults, then disabled."
            }
        ),
        settings: settings(&[
            ("rate", format!("{rate:.0}/s")),
            ("duration", secs(duration)),
            ("503 share", pct(status_503)),
            ("drop share", pct(drops)),
        ]),
        figures: BTreeMap::new(),
        invariants: Vec::new(),
        runs: Vec::new(),
        first_errors: BTreeMap::new(),
    };
    let mut successes = Vec::new();
    for (breaker, label) in variants {
        let epoch = Instant::now();
        let server = FaultServer::start(plan.clone(), epoch).await?;
        let mut config = defaults(&server.base_url())?;
        config.circuit_breaker.enabled = *breaker;
        let bound = hard_bound(&config);
        let caller = FacadeCaller::new(client_for(config)?, if flaky10 { 10 } else { 0 });
        let schedule = Schedule::new(rate, duration, Duration::ZERO);
        let (records, run) =
            open_run(&schedule, &caller, &server, epoch, bound, label, Vec::new()).await;
        let totals = server.totals();
        let gets: Vec<&CallRecord> = records
            .iter()
            .filter(|r| !caller.is_post(r.index))
            .collect();
        let get_success = ratio(gets.iter().filter(|r| r.is_ok()).count(), gets.len());
        let all: Vec<&CallRecord> = records.iter().collect();
        let attempts = attempts_per_call(&all);
        let prefix = if flaky10 {
            String::new()
        } else {
            format!("{label}: ")
        };
        for (name, value) in common_figures(&records, &totals) {
            report.figures.insert(format!("{prefix}{name}"), value);
        }
        report
            .figures
            .insert(format!("{prefix}GET success (%)"), get_success * 100.0);
        for invariant in common_invariants(&records, schedule.len()) {
            report.invariants.push(Invariant {
                name: format!("{prefix}{}", invariant.name),
                ..invariant
            });
        }
        if flaky10 {
            let posts = records.len() - gets.len();
            let (duplicated, extra) = server.duplicate_posts();
            report.figures.insert("POSTs".to_owned(), posts as f64);
            report.figures.insert(
                "POST success (%)".to_owned(),
                ratio(
                    records
                        .iter()
                        .filter(|r| caller.is_post(r.index) && r.is_ok())
                        .count(),
                    posts,
                ) * 100.0,
            );
            report.figures.insert(
                "POSTs seen at the server".to_owned(),
                server.posts_seen() as f64,
            );
            report.figures.insert(
                "duplicate POST copies at the server".to_owned(),
                extra as f64,
            );
            report.invariants.push(Invariant::new(
                "GET success",
                ">= 99.9 %",
                pct(get_success),
                get_success >= 0.999,
            ));
            report.invariants.push(
                Invariant::new(
                    "POSTs without a key: no duplicate at the server",
                    "0",
                    duplicated.to_string(),
                    duplicated == 0,
                )
                .in_smoke(),
            );
        } else {
            successes.push((get_success, attempts));
        }
        report.first_errors.extend(
            caller
                .first_errors()
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v)),
        );
        report.runs.push(run);
    }
    if let [(on, attempts_on), (off, _)] = successes[..] {
        report.invariants.push(Invariant::new(
            "success with the breaker on >= with it off (within 1 point)",
            format!(">= {} (off: {})", pct(off - 0.01), pct(off)),
            pct(on),
            on >= off - 0.01,
        ));
        report.invariants.push(Invariant::new(
            "attempts per call, breaker on",
            "<= 1.25",
            format!("{attempts_on:.3}"),
            attempts_on <= 1.25,
        ));
    }
    Ok(report)
}

async fn outage(
    scenario: Scenario,
    scale: Scale,
    kind: Outage,
) -> Result<ScenarioReport, BoxError> {
    let rate = scale.rate(500.0);
    let duration = scale.secs(60.0);
    let start = scale.secs(20.0);
    let end = scale.secs(40.0);
    let epoch = Instant::now();
    let server = FaultServer::start(FaultPlan::default(), epoch).await?;
    let config = defaults(&server.base_url())?;
    let bound = hard_bound(&config);
    let budget = config.retry.budget.clone();
    let caller = FacadeCaller::new(client_for(config)?, 0);
    let schedule = Schedule::new(rate, duration, Duration::ZERO);
    let what = match kind {
        Outage::Status503 => "503 to every request",
        Outage::Refused => "connections refused (listener closed, open connections dropped)",
    };
    let control = async {
        sleep_until(epoch + start).await;
        server.start_outage(kind).await;
        sleep_until(epoch + end).await;
        server.end_outage().await
    };
    let (records, ended) = tokio::join!(open_loop(&schedule, &caller, epoch, bound), control);
    ended?;
    let events = vec![
        (start.as_secs_f64(), format!("outage starts ({what})")),
        (end.as_secs_f64(), "outage ends".to_owned()),
    ];
    let run = Run {
        label: "defaults".to_owned(),
        timeline: timeline(&records, &server.seconds()),
        events,
    };
    let totals = server.totals();
    let mut figures = common_figures(&records, &totals);
    let mut invariants = common_invariants(&records, schedule.len());

    let during = started_in(&records, start, end);
    let amplification = attempts_per_call(&during);
    let upstream_during: u64 = server
        .seconds()
        .range(start.as_secs()..end.as_secs())
        .map(|(_, s)| s.requests)
        .sum();
    figures.insert(
        "attempts per call during the outage".to_owned(),
        amplification,
    );
    figures.insert(
        "upstream requests per call during the outage".to_owned(),
        ratio(upstream_during as usize, during.len()),
    );
    invariants.push(
        Invariant::new(
            "attempts per call during the outage (as the client counts them)",
            "<= 1.2",
            format!("{amplification:.3}"),
            amplification <= 1.2 && !during.is_empty(),
        ),
        // Not a smoke invariant: at the smoke's rate and length the breaker's minimum throughput
        // (100 attempts in 2 s) is never reached and the budget's floor (10 retries a second)
        // dominates, so attempts per call depend on rate and duration (1.5 in a CI smoke, 1.06 in
        // the full run). The full run asserts it; the smoke asserts the budget's own bound below.
    );
    // The bound the retry budget sets whatever the timing and whether or not the breaker opens:
    // the retries of the calls started during the outage are taken between its start and the last
    // of those calls' ends; over each budget window in that span, at most `ratio` of the calls
    // deposited in it (so in `[start - window, last end]`) plus the floor. With refunds on (not the
    // default) a successful retry pays itself back and the bound does not hold, so it is not asserted.
    if let Some(budget) = budget.as_ref().filter(|budget| !budget.refunds) {
        let last_end = during
            .iter()
            .map(|r| r.ended)
            .max()
            .unwrap_or(end)
            .max(start);
        let windows = ((last_end - start).as_secs_f64() / budget.window.as_secs_f64())
            .ceil()
            .max(1.0);
        let deposited = started_in(&records, start.saturating_sub(budget.window), last_end).len();
        let retries = budget.ratio * deposited as f64
            + f64::from(budget.min_per_second) * budget.window.as_secs_f64() * windows;
        let bound = 1.0 + retries / during.len().max(1) as f64;
        figures.insert("retry budget bound on attempts per call".to_owned(), bound);
        invariants.push(
            Invariant::new(
                "attempts per call during the outage within the retry budget's bound",
                format!(
                    "<= {bound:.3} (ratio {} of {deposited} calls + {} a second over {windows:.0} window(s))",
                    budget.ratio, budget.min_per_second
                ),
                format!("{amplification:.3}"),
                amplification <= bound && !during.is_empty(),
            )
            .in_smoke(),
        );
    }

    // Open: the first call refused by the breaker, seen by a caller, after the outage began.
    let opened = records
        .iter()
        .filter(|r| r.ended >= start)
        .filter(|r| {
            r.outcome
                .as_ref()
                .and_then(|o| o.error.as_deref())
                .is_some_and(|e| e.starts_with("circuit_open"))
        })
        .map(|r| r.ended - start)
        .min();
    if let Some(opened) = opened {
        figures.insert("breaker open after (s)".to_owned(), opened.as_secs_f64());
    }
    invariants.push(Invariant::new(
        "breaker open within 1 s (first circuit_open seen by a caller)",
        "<= 1 s",
        opened.map_or_else(|| "never".to_owned(), secs),
        opened.is_some_and(|d| d <= Duration::from_secs(1)),
    ));

    let base = breaker_base_open_time();
    let first_success = records
        .iter()
        .filter(|r| r.is_ok() && r.ended >= end)
        .map(|r| r.ended)
        .min();
    let recovery_bound = base + Duration::from_secs(1);
    if let Some(first) = first_success {
        figures.insert(
            "first success after the end (s)".to_owned(),
            (first - end).as_secs_f64(),
        );
    }
    invariants.push(Invariant::new(
        "first success after the end within the base open time + one probe",
        format!(
            "<= {} (open_for {} + 1 s)",
            secs(recovery_bound),
            secs(base)
        ),
        first_success.map_or_else(|| "none before the run ended".to_owned(), |f| secs(f - end)),
        first_success.is_some_and(|f| f - end <= recovery_bound),
    ));
    let after = first_success.map(|f| started_in(&records, f + Duration::from_secs(2), duration));
    let recovered = after
        .as_ref()
        .map(|calls| ratio(calls.iter().filter(|r| r.is_ok()).count(), calls.len()));
    if let Some(recovered) = recovered {
        figures.insert(
            "success from 2 s after the first success (%)".to_owned(),
            recovered * 100.0,
        );
    }
    invariants.push(Invariant::new(
        ">= 95 % success from 2 s after the first success",
        ">= 95 %",
        match (&after, recovered) {
            (Some(calls), Some(r)) if !calls.is_empty() => pct(r),
            _ => "no call in that window".to_owned(),
        },
        matches!((&after, recovered), (Some(calls), Some(r)) if !calls.is_empty() && r >= 0.95),
    ));

    Ok(ScenarioReport {
        name: scenario.name().to_owned(),
        description: format!(
            "Open loop at {rate:.0} calls/s for {:.0} s; from {:.0} s to {:.0} s the upstream is \
             down: {what}. Attempts per call count the calls started during the outage, as the \
             client reports them (a call refused by the breaker counts its one attempt).",
            duration.as_secs_f64(),
            start.as_secs_f64(),
            end.as_secs_f64()
        ),
        settings: settings(&[
            ("rate", format!("{rate:.0}/s")),
            ("duration", secs(duration)),
            ("outage", format!("{} to {}", secs(start), secs(end))),
            ("breaker open_for (default)", secs(base)),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

async fn slow(scale: Scale) -> Result<ScenarioReport, BoxError> {
    let rate = scale.rate(200.0);
    let duration = scale.secs(60.0);
    let epoch = Instant::now();
    let latency = Latency::LogNormal {
        median_s: 0.2,
        p99_s: 2.0,
    };
    let server = FaultServer::start(
        FaultPlan {
            latency,
            ..FaultPlan::default()
        },
        epoch,
    )
    .await?;
    let mut config = defaults(&server.base_url())?;
    config.attempt_timeout = Some(Duration::from_secs(1));
    config.timeout = Duration::from_millis(2_500);
    let deadline = config.timeout;
    let bound = hard_bound(&config);
    let caller = FacadeCaller::new(client_for(config)?, 0);
    let schedule = Schedule::new(rate, duration, Duration::ZERO);
    let (records, run) = open_run(
        &schedule,
        &caller,
        &server,
        epoch,
        bound,
        "defaults",
        Vec::new(),
    )
    .await;
    let mut figures = common_figures(&records, &server.totals());
    let mut invariants = common_invariants(&records, schedule.len());
    let slack = Duration::from_millis(50);
    let late: Vec<&CallRecord> = records
        .iter()
        .filter(|r| !r.hung() && r.latency() > deadline + slack)
        .collect();
    let worst = records
        .iter()
        .map(CallRecord::latency)
        .max()
        .unwrap_or_default();
    figures.insert(
        "calls past the deadline + 50 ms".to_owned(),
        late.len() as f64,
    );
    invariants.push(Invariant::new(
        "every call ends by its deadline + 50 ms",
        format!("0 calls over {}", secs(deadline + slack)),
        format!("{} (longest {})", late.len(), secs(worst)),
        late.is_empty(),
    ));
    Ok(ScenarioReport {
        name: Scenario::Slow.name().to_owned(),
        description: format!(
            "Open loop at {rate:.0} calls/s for {:.0} s; the upstream's latency is lognormal with \
             median 200 ms and p99 2 s; attempt timeout 1 s, total deadline 2.5 s, the rest at \
             defaults.",
            duration.as_secs_f64()
        ),
        settings: settings(&[
            ("rate", format!("{rate:.0}/s")),
            ("duration", secs(duration)),
            ("attempt_timeout", "1 s".to_owned()),
            ("timeout", secs(deadline)),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

/// What the scenarios against a server limit measure of a run.
struct LimitOutcome {
    /// Calls that succeeded, and their share.
    ok: usize,
    success: f64,
    /// The share of the server's requests it answered 429.
    throttled_share: f64,
    /// From the first call's start to the last call's end.
    elapsed: Duration,
}

impl LimitOutcome {
    /// Measures `records` against the server's `totals`, adding the elapsed time and the share
    /// answered 429 to `figures`.
    fn of(
        records: &[CallRecord],
        totals: &ServerSecond,
        figures: &mut BTreeMap<String, f64>,
    ) -> Self {
        let ok = records.iter().filter(|r| r.is_ok()).count();
        let throttled_share = ratio(totals.throttled as usize, totals.requests as usize);
        let elapsed = records
            .iter()
            .map(|r| r.ended)
            .max()
            .unwrap_or_default()
            .saturating_sub(records.iter().map(|r| r.started).min().unwrap_or_default());
        figures.insert("elapsed (s)".to_owned(), elapsed.as_secs_f64());
        figures.insert(
            "attempts answered 429 (%)".to_owned(),
            throttled_share * 100.0,
        );
        Self {
            ok,
            success: ratio(ok, records.len()),
            throttled_share,
            elapsed,
        }
    }
}

/// Issue 13's success bound against a server limit.
fn most_calls_succeed(success: f64) -> Invariant {
    Invariant::new("calls succeed", ">= 99 %", pct(success), success >= 0.99)
}

/// At most `bound` of the server's requests answered 429.
fn throttled_at_most(share: f64, bound: f64) -> Invariant {
    Invariant::new(
        "attempts answered 429",
        format!("<= {:.0} %", bound * 100.0),
        pct(share),
        share <= bound,
    )
}

async fn server_limit(scenario: Scenario, scale: Scale) -> Result<ScenarioReport, BoxError> {
    // A closed loop, as issue 13 states it: the count scales (not below 100), the limit does not.
    let calls = (300.0 * scale.duration.max(1.0 / 3.0)).round() as u64;
    let concurrency = 64;
    let (rate, burst) = (50.0, 10);
    let limit = match scenario {
        Scenario::RatelimitHeaders => ServerLimit {
            kind: LimitKind::FixedWindow {
                limit: 50,
                window_s: 1,
            },
            retry_after: false,
            ratelimit_headers: true,
        },
        _ => ServerLimit {
            kind: LimitKind::Gcra { rate, burst },
            retry_after: true,
            ratelimit_headers: false,
        },
    };
    let epoch = Instant::now();
    let server = FaultServer::start(
        FaultPlan {
            limit: Some(limit),
            ..FaultPlan::default()
        },
        epoch,
    )
    .await?;
    let mut config = defaults(&server.base_url())?;
    if scenario == Scenario::ServerLimitQuota {
        config
            .rate_limit
            .quotas
            .push(QuotaConfig::new(45, Duration::from_secs(1)));
    }
    let bound = hard_bound(&config);
    let caller = FacadeCaller::new(client_for(config)?, 0);
    let records = closed_loop(calls, concurrency, &caller, epoch, bound).await;
    let run = Run {
        label: "defaults".to_owned(),
        timeline: timeline(&records, &server.seconds()),
        events: Vec::new(),
    };
    let totals = server.totals();
    let mut figures = common_figures(&records, &totals);
    let mut invariants = common_invariants(&records, calls);
    let LimitOutcome {
        ok,
        success,
        throttled_share,
        elapsed,
    } = LimitOutcome::of(&records, &totals, &mut figures);
    let reached: usize = records
        .iter()
        .filter(|r| {
            r.outcome
                .as_ref()
                .and_then(|o| o.error.as_deref())
                .is_some_and(|e| e.ends_with("_429"))
        })
        .count();
    figures.insert("429s that reached a caller".to_owned(), reached as f64);
    let description;
    match scenario {
        Scenario::ServerLimit | Scenario::ServerLimitQuota => {
            let quota = scenario == Scenario::ServerLimitQuota;
            let ideal = Duration::from_secs_f64((calls - u64::from(burst)) as f64 / rate);
            figures.insert("ideal elapsed (s)".to_owned(), ideal.as_secs_f64());
            description = format!(
                "{calls} calls, {concurrency} in flight (closed loop), against a server GCRA of \
                 {rate:.0} r/s with burst {burst} answering 429 with `Retry-After: 1`; {}.",
                if quota {
                    "a local quota of 45/s with the default burst, the rest at defaults"
                } else {
                    "the client at its defaults (no local quota)"
                }
            );
            if quota {
                invariants.push(Invariant::new(
                    "every call succeeds",
                    "100 %",
                    pct(success),
                    ok == records.len(),
                ));
                invariants.push(Invariant::new(
                    "no 429 reaches a caller",
                    "0",
                    reached.to_string(),
                    reached == 0,
                ));
                invariants.push(throttled_at_most(throttled_share, 0.02));
            } else {
                invariants.push(most_calls_succeed(success));
                invariants.push(throttled_at_most(throttled_share, 0.10));
                let limit = ideal.mul_f64(1.3);
                invariants.push(Invariant::new(
                    "elapsed within 1.3x the ideal",
                    format!("<= {} (ideal {})", secs(limit), secs(ideal)),
                    secs(elapsed),
                    elapsed <= limit,
                ));
            }
        }
        _ => {
            let (after, first) = server.throttled_after_first_answer();
            let requests_after = server.requests_after_first_answer();
            let share = ratio(after as usize, requests_after as usize);
            figures.insert(
                "attempts answered 429 after the first response (%)".to_owned(),
                share * 100.0,
            );
            description = format!(
                "{calls} calls, {concurrency} in flight (closed loop), against a server allowing \
                 50 requests per 1 s window that sends `RateLimit-Policy: \"default\";q=50;w=1` and \
                 `RateLimit: \"default\";r=<remaining>;t=<seconds to reset>` on every answer, and \
                 429 without `Retry-After`; the client at its defaults. The first answer left the \
                 server at {}.",
                first.map_or_else(|| "no time (none)".to_owned(), secs)
            );
            // A share of 429s means nothing if calls failed before they were sent (a regression
            // of this session's pacing showed 0 % 429s with 35 % of calls succeeding).
            invariants.push(most_calls_succeed(success));
            invariants.push(Invariant::new(
                "attempts answered 429 after the first response",
                "<= 1 %",
                format!("{} ({after} of {requests_after})", pct(share)),
                share <= 0.01,
            ));
        }
    }
    Ok(ScenarioReport {
        name: scenario.name().to_owned(),
        description,
        settings: settings(&[
            ("calls", calls.to_string()),
            ("concurrency", concurrency.to_string()),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

/// Calls spread over several clients, as over replicas: call `index` goes to client `index % n`.
#[derive(Clone)]
struct Replicas(Arc<Vec<FacadeCaller>>);

impl Replicas {
    fn first_errors(&self) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        for replica in self.0.iter() {
            for (name, chain) in replica.first_errors() {
                errors.entry(name).or_insert(chain);
            }
        }
        errors
    }
}

impl ChaosCaller for Replicas {
    async fn call(&self, index: u64) -> CallOutcome {
        let replica = &self.0[(index % self.0.len() as u64) as usize];
        replica.call(index).await
    }
}

/// The most requests (throttled ones included) the server received in one whole second.
fn busiest_second(seconds: &BTreeMap<u64, ServerSecond>) -> u64 {
    seconds.values().map(|s| s.requests).max().unwrap_or(0)
}

/// Issue 13's "4 clients sharing one Redis against one upstream limit": four `Client`s built from
/// one configuration with `store = "redis"` and `expected_replicas = 4` (what four replicas of a
/// service would run), sharing the scenario's own `redis-server`, against one server GCRA.
async fn shared_limit(scale: Scale) -> Result<ScenarioReport, BoxError> {
    const REPLICAS: u32 = 4;
    let calls = (300.0 * scale.duration.max(1.0 / 3.0)).round() as u64;
    let concurrency = 64;
    let (rate, burst) = (50.0, 10);
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .map_err(|e| format!("the scenario's own redis-server: {e}"))?;
    let epoch = Instant::now();
    let server = FaultServer::start(
        FaultPlan {
            limit: Some(ServerLimit {
                kind: LimitKind::Gcra { rate, burst },
                retry_after: true,
                ratelimit_headers: false,
            }),
            ..FaultPlan::default()
        },
        epoch,
    )
    .await?;
    let mut integration = defaults(&server.base_url())?;
    integration.rate_limit.store = StoreKind::Redis;
    integration.rate_limit.expected_replicas = REPLICAS;
    let bound = hard_bound(&integration);
    let mut redis_config = RedisConfig::new(Secret::new(redis.url()));
    redis_config.key_prefix = format!("chaos-{:08x}", fastrand::u32(..));
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let config = Config::new()
            .with_redis(redis_config.clone())
            .with_integration(API, integration.clone());
        replicas.push(FacadeCaller::new(Client::connect(config).await?, 0));
    }
    let caller = Replicas(Arc::new(replicas));
    let records = closed_loop(calls, concurrency, &caller, epoch, bound).await;
    drop(redis);
    let seconds = server.seconds();
    let run = Run {
        label: format!("{REPLICAS} clients, store = redis"),
        timeline: timeline(&records, &seconds),
        events: Vec::new(),
    };
    let totals = server.totals();
    let mut figures = common_figures(&records, &totals);
    let mut invariants = common_invariants(&records, calls);
    let outcome = LimitOutcome::of(&records, &totals, &mut figures);
    let busiest = busiest_second(&seconds);
    let ideal = Duration::from_secs_f64((calls - u64::from(burst)) as f64 / rate);
    figures.insert("ideal elapsed (s)".to_owned(), ideal.as_secs_f64());
    figures.insert("busiest second (requests)".to_owned(), busiest as f64);
    // What the server allows in one second: its rate, and its burst once. The clients together
    // must not offer more (429s count: an attempt answered 429 was still sent).
    let allowed = rate + f64::from(burst);
    invariants.push(most_calls_succeed(outcome.success));
    invariants.push(throttled_at_most(outcome.throttled_share, 0.05));
    invariants.push(Invariant::new(
        "aggregate within the limit: requests in any whole second",
        format!(
            "<= {:.0} ({rate:.0}/s + burst {burst}, + 5 %)",
            allowed * 1.05
        ),
        busiest.to_string(),
        busiest as f64 <= allowed * 1.05,
    ));
    Ok(ScenarioReport {
        name: Scenario::SharedLimit.name().to_owned(),
        description: format!(
            "{calls} calls, {concurrency} in flight (closed loop) spread over {REPLICAS} clients \
             built from one configuration (`rate_limit.store = \"redis\"`, `expected_replicas = \
             {REPLICAS}`, otherwise defaults, no local quota) sharing the scenario's own \
             `redis-server`, against one server GCRA of {rate:.0} r/s with burst {burst} answering \
             429 with `Retry-After: 1`."
        ),
        settings: settings(&[
            ("calls", calls.to_string()),
            ("concurrency", concurrency.to_string()),
            ("clients", REPLICAS.to_string()),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

/// Runs a blocking step of a [`RedisServer`] (it waits until the server answers) off the runtime's
/// workers, so the load of the scenario keeps going meanwhile.
async fn off_runtime(
    mut redis: RedisServer,
    step: fn(&mut RedisServer) -> std::io::Result<()>,
) -> Result<RedisServer, BoxError> {
    tokio::task::spawn_blocking(move || step(&mut redis).map(|()| redis))
        .await?
        .map_err(|e| format!("the scenario's own redis-server: {e}").into())
}

async fn redis_outage(scale: Scale) -> Result<ScenarioReport, BoxError> {
    let rate = scale.rate(80.0);
    let quota = scale.rate(50.0).round() as u32;
    let warm = scale.secs(10.0);
    let outages = [scale.secs(10.0), scale.secs(40.0)];
    let gap = scale.secs(15.0);
    let tail = scale.secs(15.0);
    let duration = warm + outages[0] + gap + outages[1] + tail;
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .map_err(|e| format!("the scenario's own redis-server: {e}"))?;
    let epoch = Instant::now();
    let server = FaultServer::start(FaultPlan::default(), epoch).await?;
    let base = server.base_url();
    let mut rate_limit = RateLimitConfig::default();
    rate_limit
        .quotas
        .push(QuotaConfig::new(quota, Duration::from_secs(1)));
    rate_limit.store = StoreKind::Redis;
    let max_wait = rate_limit.max_wait;
    let mut oauth = OAuth2ClientCredentials::new(
        url::Url::parse(&format!("{base}{}", TOKEN_PATH.trim_start_matches('/')))?,
        "chaos-client",
        Secret::new("chaos-client-secret"),
    );
    oauth.store = StoreKind::Redis;
    let integration = IntegrationConfig::builder(base.clone())
        .auth(AuthConfig::OAuth2ClientCredentials(oauth))
        .rate_limit(rate_limit)
        .build()?;
    let bound = hard_bound(&integration);
    let mut redis_config = RedisConfig::new(Secret::new(redis.url()));
    redis_config.key_prefix = format!("chaos-{:08x}", fastrand::u32(..));
    let config = Config::new()
        .with_redis(redis_config)
        .with_integration(API, integration);
    let client = Client::connect(config).await?;
    let caller = FacadeCaller::new(client, 0);
    let schedule = Schedule::new(rate, duration, Duration::ZERO);
    let starts = [warm, warm + outages[0] + gap];
    let mut events = Vec::new();
    let control = async {
        let mut redis = redis;
        for (start, length) in starts.iter().zip(outages) {
            sleep_until(epoch + *start).await;
            redis.kill();
            events.push((
                start.as_secs_f64(),
                format!("Redis killed for {}", secs(length)),
            ));
            sleep_until(epoch + *start + length).await;
            redis = off_runtime(redis, RedisServer::restart).await?;
            events.push((
                (*start + length).as_secs_f64(),
                "Redis back (empty)".to_owned(),
            ));
        }
        Ok::<RedisServer, BoxError>(redis)
    };
    let (records, restarted) = tokio::join!(open_loop(&schedule, &caller, epoch, bound), control);
    let redis = restarted?;
    let seconds = server.seconds();
    let run = Run {
        label: "defaults, store = redis".to_owned(),
        timeline: timeline(&records, &seconds),
        events,
    };
    let totals = server.totals();
    let mut figures = common_figures(&records, &totals);
    let mut invariants = common_invariants(&records, schedule.len());
    let failed_other: Vec<&CallRecord> = records
        .iter()
        .filter(|r| {
            r.outcome
                .as_ref()
                .and_then(|o| o.error.as_deref())
                .is_some_and(|e| e != "rate_limited")
        })
        .collect();
    let waited_too_long = records
        .iter()
        .filter(|r| r.latency() > max_wait + Duration::from_secs(1))
        .count();
    let limit = f64::from(quota) * 1.05;
    let from = starts[0].as_secs();
    let worst = seconds
        .range(from..)
        .map(|(t, s)| (s.requests, *t))
        .max()
        .unwrap_or_default();
    let over: Vec<u64> = seconds
        .range(from..)
        .filter(|(_, s)| s.requests as f64 > limit)
        .map(|(t, _)| *t)
        .collect();
    let limited = |from: Duration, to: Duration| {
        started_in(&records, from, to)
            .iter()
            .filter(|r| {
                r.outcome
                    .as_ref()
                    .is_some_and(|o| o.error.as_deref() == Some("rate_limited"))
            })
            .count() as f64
            / (to.saturating_sub(from)).as_secs_f64().max(1e-9)
    };
    figures.insert(
        "local rate_limited per second before the outages".to_owned(),
        limited(Duration::ZERO, starts[0]),
    );
    figures.insert(
        "local rate_limited per second during the 2nd outage".to_owned(),
        limited(starts[1], starts[1] + outages[1]),
    );
    figures.insert(
        "most upstream requests in one second, from the 1st outage".to_owned(),
        worst.0 as f64,
    );
    figures.insert("token requests".to_owned(), totals.token_requests as f64);
    invariants.push(Invariant::new(
        "no call failed because of the outage (any failure but the local quota's rate_limited)",
        "0",
        failed_other.len().to_string(),
        failed_other.is_empty(),
    ));
    invariants.push(Invariant::new(
        "no call delayed past max_wait (+1 s for the call itself)",
        format!("0 calls over {}", secs(max_wait + Duration::from_secs(1))),
        waited_too_long.to_string(),
        waited_too_long == 0,
    ));
    invariants.push(Invariant::new(
        "every second from the first outage on within the quota + 5 %",
        format!("<= {limit:.1} requests/s"),
        if over.is_empty() {
            format!("max {} (second {})", worst.0, worst.1)
        } else {
            format!(
                "max {} (second {}); over in seconds {over:?}",
                worst.0, worst.1
            )
        },
        over.is_empty(),
    ));
    drop(redis);
    Ok(ScenarioReport {
        name: Scenario::RedisOutage.name().to_owned(),
        description: format!(
            "Open loop at {rate:.0} calls/s for {:.0} s with a client quota of {quota}/s \
             (default burst and max_wait) and an OAuth client-credentials token (`expires_in` 30 s), \
             both in a Redis the harness starts on its own port (`Client::connect`); Redis is \
             killed for {} and later for {}, and comes back empty. Offered load is above the \
             quota on purpose: the quota's own `rate_limited` failures are not outage failures.",
            duration.as_secs_f64(),
            secs(outages[0]),
            secs(outages[1])
        ),
        settings: settings(&[
            ("rate", format!("{rate:.0}/s")),
            ("quota", format!("{quota}/s")),
            (
                "outages",
                format!(
                    "{} at {}, {} at {}",
                    secs(outages[0]),
                    secs(starts[0]),
                    secs(outages[1]),
                    secs(starts[1])
                ),
            ),
            ("max_wait", secs(max_wait)),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

async fn pg_outage(scale: Scale) -> Result<ScenarioReport, BoxError> {
    use integration_config::WatchOptions;
    use integration_config::testing::{FaultProxy, TestSchema};

    let rate = scale.rate(100.0);
    let warm = scale.secs(5.0).max(Duration::from_secs(2));
    let cuts = [scale.secs(10.0), scale.secs(60.0)];
    // Long enough after each return to see whether the change is served within 2 s.
    let after = scale.secs(10.0).max(Duration::from_secs(4));
    let duration = warm + cuts[0] + after + cuts[1] + after;
    let epoch = Instant::now();
    let server = FaultServer::start(FaultPlan::default(), epoch).await?;
    let tagged = |tag: &str| {
        IntegrationConfig::builder(server.base_url())
            .header(CONFIG_TAG, tag)
            .build()
    };
    let (schema, direct) = TestSchema::new().await;
    direct.put(API, &tagged("v1")?, Some(0), "chaos").await?;
    let proxy = FaultProxy::for_database().await;
    let watched = schema.store_at(&proxy.database_url()).await;
    let (snapshots, handle) = watched
        .watch(Config::new(), WatchOptions::default())
        .await?;
    let client = Client::from_config(snapshots.borrow().config().clone())?;
    let follower = client.follow(snapshots);
    let listening = Instant::now() + Duration::from_secs(10);
    while !handle.status().listening && Instant::now() < listening {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bound = hard_bound(&tagged("v1")?);
    let caller = FacadeCaller::new(client.clone(), 0);
    let load_epoch = Instant::now();
    let schedule = Schedule::new(rate, duration, Duration::ZERO);
    let starts = [warm, warm + cuts[0] + after];
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let control = async {
        for (i, (start, length)) in starts.iter().zip(cuts).enumerate() {
            sleep_until(load_epoch + *start).await;
            proxy.cut();
            events.push((
                start.as_secs_f64(),
                format!("database cut for {}", secs(length)),
            ));
            sleep_until(load_epoch + *start + length / 2).await;
            let tag = format!("v{}", i + 2);
            direct
                .put(API, &tagged(&tag)?, Some(i as i64 + 1), "chaos")
                .await?;
            events.push((
                load_epoch.elapsed().as_secs_f64(),
                format!("configuration changed to {tag}"),
            ));
            sleep_until(load_epoch + *start + length).await;
            proxy.restore();
            events.push(((*start + length).as_secs_f64(), "database back".to_owned()));
            changes.push((tag, *start + length));
        }
        Ok::<(), BoxError>(())
    };
    let (records, controlled) =
        tokio::join!(open_loop(&schedule, &caller, load_epoch, bound), control);
    controlled?;
    handle.shutdown();
    follower.abort();
    // The server's seconds count from its own epoch, a little before the load's.
    let offset = load_epoch - epoch;
    let server_seconds: BTreeMap<u64, ServerSecond> = server
        .seconds()
        .into_iter()
        .filter_map(|(t, s)| t.checked_sub(offset.as_secs()).map(|t| (t, s)))
        .collect();
    let run = Run {
        label: "defaults, configuration in PostgreSQL".to_owned(),
        timeline: timeline(&records, &server_seconds),
        events,
    };
    let mut figures = common_figures(&records, &server.totals());
    let mut invariants = common_invariants(&records, schedule.len());
    let failed = records.iter().filter(|r| !r.is_ok() && !r.hung()).count();
    invariants.push(Invariant::new(
        "no call failed",
        "0",
        failed.to_string(),
        failed == 0,
    ));
    for ((tag, back), length) in changes.iter().zip(cuts) {
        // Served: the last call that still carried an older configuration, after the change.
        let version = |tag: &str| tag.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        let current = version(tag);
        let stale = records
            .iter()
            .filter(|r| r.started >= *back - length / 2)
            .filter(|r| {
                r.outcome
                    .as_ref()
                    .is_some_and(|o| o.is_ok() && o.detail.as_deref().and_then(version) < current)
            })
            .map(|r| r.started)
            .max();
        let any_new = records.iter().any(|r| {
            r.outcome
                .as_ref()
                .is_some_and(|o| o.detail.as_deref() == Some(tag.as_str()))
        });
        let served = stale.map_or(Duration::ZERO, |s| s.saturating_sub(*back));
        let name = format!(
            "change made during the {} cut served within 2 s of the return",
            secs(length)
        );
        if any_new {
            figures.insert(
                format!("{tag} served after the return (s)"),
                served.as_secs_f64(),
            );
        }
        invariants.push(Invariant::new(
            name,
            "<= 2 s",
            if any_new {
                secs(served)
            } else {
                "never served".to_owned()
            },
            any_new && served <= Duration::from_secs(2),
        ));
    }
    drop(schema);
    Ok(ScenarioReport {
        name: Scenario::PgOutage.name().to_owned(),
        description: format!(
            "Open loop at {rate:.0} calls/s for {:.0} s; the configuration lives in PostgreSQL (a \
             schema of its own) and the client follows it (`PgStore::watch` with default options, \
             `Client::follow`) through the harness's TCP proxy, which cuts the database off for {} \
             and later {}; halfway through each cut the configuration changes (a new `x-config` \
             header, which the upstream echoes).",
            duration.as_secs_f64(),
            secs(cuts[0]),
            secs(cuts[1])
        ),
        settings: settings(&[
            ("rate", format!("{rate:.0}/s")),
            (
                "cuts",
                format!(
                    "{} at {}, {} at {}",
                    secs(cuts[0]),
                    secs(starts[0]),
                    secs(cuts[1]),
                    secs(starts[1])
                ),
            ),
        ]),
        figures,
        invariants,
        runs: vec![run],
        first_errors: caller.first_errors(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
        }
        assert!("nope".parse::<Scenario>().unwrap_err().contains("flaky-10"));
    }

    #[test]
    fn scaling_multiplies_durations_and_rates() {
        let scale = Scale {
            duration: 0.5,
            rate: 0.1,
        };
        assert_eq!(scale.secs(60.0), Duration::from_secs(30));
        assert_eq!(scale.rate(1000.0), 100.0);
        assert_eq!(scale.rate(2.0), 1.0, "never below one call per second");
    }
}
