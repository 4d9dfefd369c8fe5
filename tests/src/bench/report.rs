//! The run's report: medians across rounds, ratios, the machine, and the Markdown and JSON files.

use super::count::{InstructionCount, Subject};
use super::scenario::{PoolSettings, Scenario};
use super::worker::WorkerReport;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// The machine the run measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs available to the process (what `nproc` prints).
    pub logical_cpus: usize,
    /// `MemTotal` from `/proc/meminfo`, MiB.
    pub memory_mib: u64,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description from `/proc`; unknown fields read `unknown`/0.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
            |_| "unknown".to_owned(),
            |release| release.trim().to_owned(),
        );
        Self {
            cpu_model,
            logical_cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib,
            kernel,
        }
    }
}

/// How the run was configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Rounds; each round runs every scenario once, in a rotated order.
    pub rounds: usize,
    /// Calls in flight in the closed loop.
    pub concurrency: usize,
    /// Offered rate of the open loop, calls per second.
    pub rate: f64,
    /// Warm-up before each window, seconds.
    pub warmup_s: f64,
    /// Each window, seconds.
    pub duration_s: f64,
    /// Worker threads of the client's tokio runtime.
    pub client_threads: usize,
    /// Worker threads of the server's tokio runtime.
    pub server_threads: usize,
    /// Pool settings of every client.
    pub pool: PoolSettings,
    /// The tracing filter installed in every worker.
    pub log_filter: String,
    /// The cargo profile the binary was built with.
    pub profile: String,
}

/// One scenario's medians across rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// What it runs.
    pub description: String,
    /// Rounds measured.
    pub rounds: usize,
    /// Median closed-loop throughput, calls per second.
    pub throughput_per_s: f64,
    /// Median client CPU microseconds per call, closed loop.
    pub cpu_us_per_call: f64,
    /// Lowest and highest of the rounds' CPU microseconds per call, closed loop: the noise.
    pub cpu_us_per_call_range: (f64, f64),
    /// Median client CPU microseconds per call at the open loop's offered rate.
    pub cpu_us_per_call_at_rate: f64,
    /// Median of the rounds' user CPU microseconds per call, closed loop: where a client's own code
    /// runs (the CPU a call less the kernel's part).
    #[serde(default)]
    pub user_us_per_call: f64,
    /// Median of the rounds' system (kernel) CPU microseconds per call, closed loop: the loopback
    /// TCP and the runtime's sleeps and wake-ups, work no client's own code does.
    #[serde(default)]
    pub system_us_per_call: f64,
    /// Median of the rounds' p50 latency, microseconds.
    pub p50_us: f64,
    /// Median of the rounds' p99 latency, microseconds.
    pub p99_us: f64,
    /// Lowest and highest of the rounds' p99 latency, microseconds: the noise.
    #[serde(default)]
    pub p99_us_range: (f64, f64),
    /// The p99 added over the raw client's (scenario 1), microseconds: in each round, this
    /// scenario's p99 minus the raw client's of the same round, and the median of those
    /// differences. `None` without the raw client, or without a round that ran both.
    #[serde(default)]
    pub p99_added_vs_raw_us: Option<f64>,
    /// Median of the rounds' p99.9 latency, microseconds.
    pub p999_us: f64,
    /// Median peak resident set of the worker process, KiB.
    pub peak_rss_kib: u64,
    /// Median resident set before the client was built, KiB.
    pub rss_baseline_kib: u64,
    /// Failed or unfinished calls, summed over every round.
    pub failures: u64,
    /// Times Redis was marked unavailable (its limiter then decided on the local fallback), summed
    /// over every round.
    #[serde(default)]
    pub redis_lost: u64,
}

/// The directory of `--out DIR`, checked before a run that takes minutes: an existing directory,
/// or an error that names the path and says what is written there. (A path that was a file's name,
/// `--out BENCHMARKS.md`, used to be found out only when the report was written, after the run,
/// with the system's bare "No such file or directory".)
///
/// ```
/// let dir = std::env::temp_dir();
/// let checked = integration_tests::bench::report::out_dir(dir.to_str().unwrap()).unwrap();
/// assert_eq!(checked, dir);
/// ```
///
/// # Errors
///
/// A message naming `path` when it is not an existing directory.
pub fn out_dir(path: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::path::PathBuf::from(path);
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(format!(
            "--out {path}: not a directory (the report's files, BENCHMARKS.md and for the \
             scenarios benchmarks.json, are written into it)"
        )),
        Err(error) => Err(format!(
            "--out {path}: {error} (the directory the report's files are written into must exist)"
        )),
    }
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`, or `unknown`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Groups `reports` by scenario (in [`Scenario`] order) and takes the medians.
pub fn summarize(reports: &[WorkerReport]) -> Vec<Summary> {
    let mut scenarios: Vec<Scenario> = reports.iter().map(|report| report.scenario).collect();
    scenarios.sort();
    scenarios.dedup();
    scenarios
        .into_iter()
        .map(|scenario| {
            let runs: Vec<&WorkerReport> =
                reports.iter().filter(|r| r.scenario == scenario).collect();
            let med = |f: fn(&WorkerReport) -> f64| median(runs.iter().map(|r| f(r)));
            Summary {
                scenario,
                description: scenario.describe().to_owned(),
                rounds: runs.len(),
                throughput_per_s: med(|r| r.throughput.per_second),
                cpu_us_per_call: med(|r| r.throughput.cpu_us_per_call),
                cpu_us_per_call_range: range(runs.iter().map(|r| r.throughput.cpu_us_per_call)),
                cpu_us_per_call_at_rate: med(|r| r.latency.cpu_us_per_call),
                user_us_per_call: med(|r| {
                    r.throughput.cpu_us_per_call - r.throughput.system_us_per_call
                }),
                system_us_per_call: med(|r| r.throughput.system_us_per_call),
                p50_us: med(|r| r.latency.p50_us),
                p99_us: med(|r| r.latency.p99_us),
                p99_us_range: range(runs.iter().map(|r| r.latency.p99_us)),
                p99_added_vs_raw_us: p99_added_vs_raw(reports, &runs),
                p999_us: med(|r| r.latency.p999_us),
                peak_rss_kib: med(|r| r.peak_rss_kib as f64) as u64,
                rss_baseline_kib: med(|r| r.rss_baseline_kib as f64) as u64,
                failures: runs.iter().map(|r| r.failures()).sum(),
                redis_lost: runs.iter().map(|r| r.redis_lost).sum(),
            }
        })
        .collect()
}

/// The lowest and the highest of `values`.
fn range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
            (low.min(v), high.max(v))
        })
}

/// The median, over the rounds that ran both, of `runs`' p99 minus the raw client's p99 of the
/// same round. Paired by round because the machine's noise moves every scenario of a round
/// together: a round whose p99 is 1 ms for the raw client is a slow round for all, and the median
/// of each scenario's p99 taken apart can pair a quiet round of one with a slow round of the other.
fn p99_added_vs_raw(reports: &[WorkerReport], runs: &[&WorkerReport]) -> Option<f64> {
    let differences: Vec<f64> = runs
        .iter()
        .filter_map(|run| {
            reports
                .iter()
                .find(|r| r.scenario == Scenario::RawHyper && r.round == run.round)
                .map(|raw| run.latency.p99_us - raw.latency.p99_us)
        })
        .collect();
    (!differences.is_empty()).then(|| median(differences))
}

/// One scenario's figures divided by a reference scenario's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// The scenario.
    pub scenario: Scenario,
    /// The reference it is divided by.
    pub reference: Scenario,
    /// Throughput ratio (above 1: more calls per second than the reference).
    pub throughput: f64,
    /// CPU-per-call ratio (below 1: cheaper than the reference).
    pub cpu_per_call: f64,
    /// CPU microseconds per call added over the reference (negative: fewer).
    pub cpu_us_added: f64,
    /// User-CPU-per-call ratio (below 1: cheaper than the reference where a client's code runs).
    #[serde(default)]
    pub user_per_call: f64,
    /// p50 latency ratio.
    pub p50: f64,
    /// p99 latency ratio.
    pub p99: f64,
    /// p99.9 latency ratio.
    pub p999: f64,
}

/// The ratios of every summary against `reference`, if it was measured.
pub fn ratios(summaries: &[Summary], reference: Scenario) -> Vec<Ratios> {
    let Some(base) = summaries.iter().find(|s| s.scenario == reference) else {
        return Vec::new();
    };
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    summaries
        .iter()
        .map(|s| Ratios {
            scenario: s.scenario,
            reference,
            throughput: div(s.throughput_per_s, base.throughput_per_s),
            cpu_per_call: div(s.cpu_us_per_call, base.cpu_us_per_call),
            cpu_us_added: s.cpu_us_per_call - base.cpu_us_per_call,
            user_per_call: div(s.user_us_per_call, base.user_us_per_call),
            p50: div(s.p50_us, base.p50_us),
            p99: div(s.p99_us, base.p99_us),
            p999: div(s.p999_us, base.p999_us),
        })
        .collect()
}

/// The workspace's release profile, as the report names it: a test holds it equal to the
/// `[profile.release]` of the workspace's `Cargo.toml`.
pub const RELEASE_PROFILE: &str = "release (lto = \"fat\", codegen-units = 1)";

/// The criterion id of the middleware bench's floor: the same call with no layer.
pub const INNER_BENCH: &str = "middleware/inner";

/// One criterion benchmark of the middleware bench: its id and median time per call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiddlewareCost {
    /// Criterion's full id, `group/function`.
    pub id: String,
    /// Median nanoseconds per call.
    pub median_ns: f64,
}

#[derive(Deserialize)]
struct CriterionBenchmark {
    full_id: String,
}

#[derive(Deserialize)]
struct CriterionEstimates {
    median: CriterionEstimate,
}

#[derive(Deserialize)]
struct CriterionEstimate {
    point_estimate: f64,
}

/// Reads the latest criterion results under `dir` (criterion's `target/criterion`), sorted by id.
///
/// # Errors
///
/// When a `new/benchmark.json` or `new/estimates.json` found there cannot be read or parsed; a
/// missing `dir` reads as no results.
pub fn read_criterion(dir: &Path) -> io::Result<Vec<MiddlewareCost>> {
    let mut found = Vec::new();
    if dir.is_dir() {
        collect_criterion(dir, &mut found)?;
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

fn collect_criterion(dir: &Path, found: &mut Vec<MiddlewareCost>) -> io::Result<()> {
    let new = dir.join("new");
    let (benchmark, estimates) = (new.join("benchmark.json"), new.join("estimates.json"));
    if benchmark.is_file() && estimates.is_file() {
        let benchmark: CriterionBenchmark = serde_json::from_slice(&std::fs::read(&benchmark)?)?;
        let estimates: CriterionEstimates = serde_json::from_slice(&std::fs::read(&estimates)?)?;
        found.push(MiddlewareCost {
            id: benchmark.full_id,
            median_ns: estimates.median.point_estimate,
        });
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && path.file_name().is_some_and(|name| name != "report") {
            collect_criterion(&path, found)?;
        }
    }
    Ok(())
}

/// Everything a run produced: what `benchmarks.json` holds and `BENCHMARKS.md` renders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// When the run finished (HTTP date, UTC).
    pub date: String,
    /// The command that produced it.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub settings: Settings,
    /// Medians per scenario.
    pub summaries: Vec<Summary>,
    /// Ratios against scenario 1 (the raw client) and scenario 4 (the peer stack).
    pub ratios: Vec<Ratios>,
    /// Criterion's middleware costs, when that bench ran first.
    pub middleware: Vec<MiddlewareCost>,
    /// Scenarios of the issue left out of this run, and why.
    pub left_out: Vec<String>,
    /// The machine's load averages (1, 5, 15 min, from `/proc/loadavg`) when the run started and
    /// when it ended: other work on the machine is the main source of noise.
    pub load_average: Vec<String>,
    /// Every worker's raw figures, round by round.
    pub rounds: Vec<WorkerReport>,
    /// Instructions per call under callgrind, per scenario and for the stack without each layer.
    #[serde(default)]
    pub instructions: Vec<InstructionCount>,
}

impl BenchReport {
    /// Builds the report from the workers' figures.
    pub fn new(
        date: String,
        command: String,
        settings: Settings,
        rounds: Vec<WorkerReport>,
        middleware: Vec<MiddlewareCost>,
        left_out: Vec<String>,
    ) -> Self {
        let summaries = summarize(&rounds);
        let mut all_ratios = ratios(&summaries, Scenario::RawHyper);
        all_ratios.extend(ratios(&summaries, Scenario::PeerStack));
        all_ratios.extend(ratios(&summaries, Scenario::RawHyperSpan));
        Self {
            date,
            command,
            machine: Machine::detect(),
            settings,
            summaries,
            ratios: all_ratios,
            middleware,
            left_out,
            load_average: Vec::new(),
            rounds,
            instructions: Vec::new(),
        }
    }

    fn ratio(&self, scenario: Scenario, reference: Scenario) -> Option<&Ratios> {
        self.ratios
            .iter()
            .find(|r| r.scenario == scenario && r.reference == reference)
    }

    fn count_of(&self, subject: Subject) -> Option<&InstructionCount> {
        self.instructions
            .iter()
            .find(|count| count.subject == subject)
    }

    fn instructions_of(&self, subject: Subject) -> Option<f64> {
        self.count_of(subject).map(|count| count.per_call)
    }

    /// The instruction tables: per scenario, then per layer.
    fn instructions_markdown(&self, out: &mut String) {
        let Some(first) = self.instructions.first() else {
            return;
        };
        let _ = writeln!(
            out,
            "\n## Instructions per call (callgrind, {} calls then {}, differenced)\n",
            first.calls,
            2 * first.calls
        );
        let _ = writeln!(
            out,
            "Each run installs the same subscriber and recorder as the timed workers and drains the \
             recorder's histograms once after its calls (the upkeep a worker runs every 5 s); \
             quanta's one-time clock calibration, which spins on the wall clock, is not counted. \
             Separate runs of one subject differ by about 1k instructions a call (the runtime's \
             timer and scheduling work depends on how fast valgrind runs it): each subject is \
             counted {} time(s) and the run with the median instructions is shown, with the \
             runs' range, and a layer's cost below is a difference of medians. The Redis \
             scenario's runs give Redis commands {:?} instead of {:?} (under valgrind a reply \
             waits behind every other call in flight, and the default marked Redis unavailable: \
             the local fallback was counted instead), and a run during which Redis was marked \
             unavailable is refused.\n",
            first.runs,
            super::count::COUNT_REDIS_COMMAND_TIMEOUT,
            integration_config::DEFAULT_REDIS_COMMAND_TIMEOUT,
        );
        let raw = self.instructions_of(Subject::Scenario(Scenario::RawHyper));
        let peer = self.instructions_of(Subject::Scenario(Scenario::PeerStack));
        let ratio = |value: f64, reference: Option<f64>| match reference {
            Some(reference) if reference > 0.0 => format!("{:.2}×", value / reference),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "L1 misses: callgrind's simulation (`--cache-sim=yes`) of this machine's first-level \
             caches, data (reads and writes) and instructions, per call, differenced alike. Each \
             costs the CPU a wait of about ten cycles or more that no instruction count shows: \
             where two subjects' instruction counts and CPU times disagree, the misses tell \
             why.\n"
        );
        let _ = writeln!(
            out,
            "Allocations: the blocks a call allocates (calls into the C allocator's `malloc` and \
             its kin, from callgrind's call records, differenced alike); in the allocator: the \
             instructions spent inside `malloc`, `realloc` and `free`, part of the call's count. \
             The allocator's share is most of the spread between runs of one subject (its free \
             lists are in a different state in every run); the number of allocations does not \
             spread.\n"
        );
        let misses =
            |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
        let allocations =
            |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"));
        let data_peer = self
            .count_of(Subject::Scenario(Scenario::PeerStack))
            .and_then(|count| count.data_misses_per_call);
        let _ = writeln!(
            out,
            "| subject | what it runs | instructions/call | runs' range | vs raw (1) | vs peer (4) | allocations/call | in the allocator | L1d misses/call | L1d vs peer (4) | L1i misses/call |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let range = |count: &InstructionCount| {
            count.per_call_range.map_or_else(
                || "n/a".to_owned(),
                |(low, high)| format!("{low:.0}–{high:.0}"),
            )
        };
        for count in &self.instructions {
            if matches!(count.subject, Subject::Without(Some(_))) {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                count.subject,
                count.description,
                count.per_call,
                range(count),
                ratio(count.per_call, raw),
                ratio(count.per_call, peer),
                allocations(count.allocations_per_call),
                misses(count.allocator_per_call),
                misses(count.data_misses_per_call),
                count
                    .data_misses_per_call
                    .map_or_else(|| "n/a".to_owned(), |value| ratio(value, data_peer)),
                misses(count.instruction_misses_per_call),
            );
        }
        if let (Some(raw), Some(floor), Some(full)) = (
            raw,
            self.instructions_of(Subject::Scenario(Scenario::RawHyperSpan)),
            self.instructions_of(Subject::Scenario(Scenario::FullStack)),
        ) {
            let _ = writeln!(
                out,
                "\nThe floor (8): the raw client and one call span like ours, none of our code, \
                 {floor:.0} instructions a call, {:+.0} over the raw client: what the subscriber \
                 spends on the span. The full stack (2) spends {:+.0} over the floor: all of our \
                 code, the facade and every layer.",
                floor - raw,
                full - floor,
            );
        }
        if let (Some(raw), Some(conn)) = (
            raw,
            self.instructions_of(Subject::Scenario(Scenario::RawHyperConn)),
        ) {
            let _ = writeln!(
                out,
                "\nThe reference (9): hyper's own connection API under the least pool, {conn:.0} \
                 instructions a call, {:+.0} against the raw client: what hyper-util's legacy \
                 client (its pool's keyed checkout and return, its request future) adds to hyper \
                 under the raw client, our transport and the peer alike.",
                conn - raw,
            );
        }
        let Some(all) = self.instructions_of(Subject::Without(None)) else {
            return;
        };
        let all_misses = self.count_of(Subject::Without(None)).map(|count| {
            (
                count.data_misses_per_call,
                count.instruction_misses_per_call,
                count.allocations_per_call,
            )
        });
        let _ = writeln!(
            out,
            "\n### Per layer: the stack with every layer ({all:.0} a call) minus the stack without one\n"
        );
        let _ = writeln!(
            out,
            "| layer left out | instructions/call without it | runs' range | the layer's cost | share of the stack | the layer's allocations | the layer's L1d misses | the layer's L1i misses |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let added = |with: Option<f64>, without: Option<f64>| match (with, without) {
            (Some(with), Some(without)) => format!("{:+.0}", with - without),
            _ => "n/a".to_owned(),
        };
        let added_allocations = |with: Option<f64>, without: Option<f64>| match (with, without) {
            (Some(with), Some(without)) => format!("{:+.1}", with - without),
            _ => "n/a".to_owned(),
        };
        let (data_all, instruction_all, allocations_all) = all_misses.unwrap_or_default();
        for count in &self.instructions {
            if let Subject::Without(Some(layer)) = count.subject {
                let cost = all - count.per_call;
                let _ = writeln!(
                    out,
                    "| {layer} | {:.0} | {} | {cost:+.0} | {:.1} % | {} | {} | {} |",
                    count.per_call,
                    range(count),
                    100.0 * cost / all,
                    added_allocations(allocations_all, count.allocations_per_call),
                    added(data_all, count.data_misses_per_call),
                    added(instruction_all, count.instruction_misses_per_call),
                );
            }
        }
    }

    /// The sentence on user time: where a client's own code runs, beside the kernel's part (the
    /// loopback TCP and the runtime's wake-ups).
    fn user_time_markdown(&self, out: &mut String) {
        let find = |scenario: Scenario| self.summaries.iter().find(|s| s.scenario == scenario);
        let (Some(full), Some(peer)) = (find(Scenario::FullStack), find(Scenario::PeerStack))
        else {
            return;
        };
        if !(full.user_us_per_call > 0.0 && peer.user_us_per_call > 0.0) {
            return;
        }
        let kernel = range(self.summaries.iter().map(|s| s.system_us_per_call));
        let _ = write!(
            out,
            "\nThe kernel's part of a call's CPU (the loopback TCP, the runtime's sleeps and \
             wake-ups) is {:.1}–{:.1} µs across the scenarios: a client's own code runs in user \
             time. \
             There the full stack (2) takes {:.1} µs a call, {:.2}× the peer stack's {:.1}",
            kernel.0,
            kernel.1,
            full.user_us_per_call,
            full.user_us_per_call / peer.user_us_per_call,
            peer.user_us_per_call,
        );
        if let Some(floor) = find(Scenario::RawHyperSpan).filter(|f| f.user_us_per_call > 0.0) {
            let _ = write!(
                out,
                ", and {:+.1} µs over the floor's {:.1}",
                full.user_us_per_call - floor.user_us_per_call,
                floor.user_us_per_call,
            );
        }
        let _ = writeln!(out, ".");
    }

    /// The report as Markdown: machine, command, date, the tables, and how each figure is measured.
    pub fn to_markdown(&self) -> String {
        let s = &self.settings;
        let m = &self.machine;
        let mut out = String::new();
        let x = |value: Option<f64>| match value {
            Some(v) if v.is_finite() => format!("{v:.2}×"),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Generated by `{}` on {}. Do not edit by hand: rerun the command.\n",
            self.command, self.date
        );
        let _ = writeln!(out, "## Machine\n");
        let _ = writeln!(
            out,
            "- CPU: {} ({} logical CPUs, `nproc`), {} MiB memory, Linux {}",
            m.cpu_model, m.logical_cpus, m.memory_mib, m.kernel
        );
        let _ = writeln!(
            out,
            "- Build profile: `{}`; client runtime {} worker thread(s), server runtime {} in its own process",
            s.profile, s.client_threads, s.server_threads
        );
        let _ = writeln!(
            out,
            "- {} rounds, scenarios rotated each round (ABC, BCA, ...); every figure is the median across rounds",
            s.rounds
        );
        let _ = writeln!(
            out,
            "- Each phase: {:.1} s warm-up, then a {:.1} s window; pool: {} idle connections per host, {} s idle timeout, TCP_NODELAY {}",
            s.warmup_s,
            s.duration_s,
            s.pool.max_idle_per_host,
            s.pool.idle_timeout.as_secs(),
            if s.pool.nodelay { "on" } else { "off" }
        );
        let _ = writeln!(
            out,
            "- Every worker installs a `tracing-subscriber` fmt subscriber at `{}` (formatting into a sink) and the Prometheus `metrics` recorder",
            s.log_filter
        );
        if !self.load_average.is_empty() {
            let _ = writeln!(
                out,
                "- Load average (1, 5, 15 min) at the start and the end of the run: {}. The machine is shared: other work on it is the main source of noise, hence the median of several rounds and the range shown",
                self.load_average.join(" → ")
            );
        }
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "## Throughput and CPU (closed loop, {} calls in flight)\n",
            s.concurrency
        );
        let _ = writeln!(
            out,
            "| # | scenario | calls/s | vs raw (1) | vs peer (4) | CPU µs/call | rounds' range | added µs vs raw | CPU vs peer (4) | of it kernel µs | user µs/call | user vs peer (4) | CPU µs/call at {:.0}/s |",
            s.rate
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for summary in &self.summaries {
            let raw = self.ratio(summary.scenario, Scenario::RawHyper);
            let peer = self.ratio(summary.scenario, Scenario::PeerStack);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {:.1} | {:.1}–{:.1} | {} | {} | {:.1} | {:.1} | {} | {:.1} |",
                summary.scenario.number(),
                summary.description,
                summary.throughput_per_s,
                x(raw.map(|r| r.throughput)),
                x(peer.map(|r| r.throughput)),
                summary.cpu_us_per_call,
                summary.cpu_us_per_call_range.0,
                summary.cpu_us_per_call_range.1,
                raw.map_or_else(|| "n/a".to_owned(), |r| format!("{:+.1}", r.cpu_us_added)),
                x(peer.map(|r| r.cpu_per_call)),
                summary.system_us_per_call,
                summary.user_us_per_call,
                x(peer.map(|r| r.user_per_call)),
                summary.cpu_us_per_call_at_rate,
            );
        }

        if let (Some(floor), Some(full)) = (
            self.ratio(Scenario::RawHyperSpan, Scenario::RawHyper),
            self.ratio(Scenario::FullStack, Scenario::RawHyperSpan),
        ) {
            let _ = writeln!(
                out,
                "\nThe floor (8), the raw client and one call span like ours under the same \
                 subscriber, none of our code, makes {} the raw client's calls a second at {} its \
                 CPU a call: no client over hyper-util's legacy client that makes that span a \
                 call under this subscriber does better. The full stack (2) makes {} the floor's \
                 calls a second at {} its CPU a call ({:+.1} µs a call: our code, the facade and \
                 every layer).",
                x(Some(floor.throughput)),
                x(Some(floor.cpu_per_call)),
                x(Some(full.throughput)),
                x(Some(full.cpu_per_call)),
                full.cpu_us_added,
            );
        }
        if let Some(conn) = self.ratio(Scenario::RawHyperConn, Scenario::RawHyper) {
            let _ = writeln!(
                out,
                "\nThe reference (9), hyper's own connection API under the least pool, makes {} \
                 the raw client's calls a second at {} its CPU a call ({:+.1} µs a call): what \
                 hyper-util's legacy client, under every other scenario, does beyond hyper.",
                x(Some(conn.throughput)),
                x(Some(conn.cpu_per_call)),
                conn.cpu_us_added,
            );
        }
        self.user_time_markdown(&mut out);

        let _ = writeln!(
            out,
            "\n## Latency (open loop, {:.0} calls/s offered, measured from each call's due time)\n",
            s.rate
        );
        let _ = writeln!(
            out,
            "| # | scenario | p50 µs | p99 µs | rounds' p99 range | p99 added vs raw (1), µs, paired by round | p99.9 µs | p99 vs raw (1) | p99 vs peer (4) | peak RSS MiB | RSS before client MiB |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for summary in &self.summaries {
            let raw = self.ratio(summary.scenario, Scenario::RawHyper);
            let peer = self.ratio(summary.scenario, Scenario::PeerStack);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0}–{:.0} | {} | {:.0} | {} | {} | {:.1} | {:.1} |",
                summary.scenario.number(),
                summary.description,
                summary.p50_us,
                summary.p99_us,
                summary.p99_us_range.0,
                summary.p99_us_range.1,
                summary
                    .p99_added_vs_raw_us
                    .map_or_else(|| "n/a".to_owned(), |us| format!("{us:+.0}")),
                summary.p999_us,
                x(raw.map(|r| r.p99)),
                x(peer.map(|r| r.p99)),
                summary.peak_rss_kib as f64 / 1024.0,
                summary.rss_baseline_kib as f64 / 1024.0,
            );
        }
        let failures: u64 = self.summaries.iter().map(|s| s.failures).sum();
        let _ = writeln!(
            out,
            "\nFailed or unfinished calls over the whole run: {failures}."
        );
        for summary in self.summaries.iter().filter(|s| s.redis_lost > 0) {
            let _ = writeln!(
                out,
                "\n**Scenario {} lost Redis {} time(s)** (a command slower than the 50 ms default \
                 timeout): until Redis answered again its limiter decided on the local fallback, \
                 and its figures mix the two paths.",
                summary.scenario.number(),
                summary.redis_lost
            );
        }

        self.instructions_markdown(&mut out);

        if !self.left_out.is_empty() {
            let _ = writeln!(out, "\nLeft out of this run:\n");
            for reason in &self.left_out {
                let _ = writeln!(out, "- {reason}");
            }
        }

        if !self.middleware.is_empty() {
            let _ = writeln!(
                out,
                "\n## Middleware cost (criterion, in-memory inner service, no I/O)\n"
            );
            let _ = writeln!(
                out,
                "Each call builds a request, calls through the layer and reads the body; `{INNER_BENCH}` is the same call with no layer, so a layer's own cost is its time minus that floor.\n"
            );
            let floor = self
                .middleware
                .iter()
                .find(|cost| cost.id == INNER_BENCH)
                .map(|cost| cost.median_ns);
            let _ = writeln!(
                out,
                "| benchmark | median ns/call | added over `{INNER_BENCH}` |"
            );
            let _ = writeln!(out, "|---|---:|---:|");
            for cost in &self.middleware {
                let added = match floor {
                    Some(floor) if cost.id != INNER_BENCH => {
                        format!("{:+.0}", cost.median_ns - floor)
                    }
                    _ => "".to_owned(),
                };
                let _ = writeln!(out, "| {} | {:.0} | {added} |", cost.id, cost.median_ns);
            }
        }

        let _ = writeln!(out, "\n## What each scenario runs\n");
        let _ = writeln!(
            out,
            "- Every scenario sends `GET {}` with `Accept: application/json` and reads the whole body; a call fails unless it gets `200` and the full body.",
            super::server::PATH
        );
        let _ = writeln!(
            out,
            "- 2 and 3 are built by the facade from configuration (`integration_tests::bench::scenario::full_stack_toml`) and called as documented, `client.api(\"bench\")?.get(..).send().await?.bytes().await?`: API-key auth, a quota of {} per second (never reached: its bookkeeping is measured, not a wait) in memory or in Redis, 3 attempts with the default retry budget, a 30 s deadline and a 10 s attempt timeout, the circuit breaker, the log layers at their defaults (the call span at `info`, attempt spans at `debug`, so filtered out, the line of a successful call at `debug`, the duration histograms on).",
            super::scenario::QUOTA_PER_SECOND
        );
        let _ = writeln!(
            out,
            "- 4 is assembled as its README shows: `TracingMiddleware::default()` then `RetryTransientMiddleware` with exponential backoff and 2 retries (3 attempts); reqwest is built without default features (plain HTTP, no TLS). It runs as users run it, like ours: under the same fmt subscriber at `{}` and with the same metrics recorder installed.",
            s.log_filter
        );
        let _ = writeln!(
            out,
            "- 6 and 7 (when run) break scenario 2 down: the facade's transport alone as a tower service, then the facade's client and request builder over it with no layer; scenario 2 minus 7 is what the layers cost in a real call."
        );
        let _ = writeln!(
            out,
            "- 8 (when run) is the floor of an instrumented call: the raw client of 1, each call inside one span made as our log layer makes its call span (name, target, level, the same fields with the same values, the status code recorded when the head arrives, closed before the body is read; a test, `the_floor_scenario_makes_the_span_the_full_stack_makes`, holds the two equal), under the same subscriber. It runs none of our code: what one OpenTelemetry-shaped span a call costs under this subscriber, whatever a client's layers do."
        );

        let _ = writeln!(out, "\n## How each figure is measured\n");
        let _ = writeln!(
            out,
            "- The server is a minimal hyper 1 HTTP/1.1 keep-alive server answering a fixed {}-byte JSON body, in its own process: its CPU is never counted as the client's.",
            super::server::BODY.len()
        );
        let _ = writeln!(
            out,
            "- Each scenario of each round runs in a fresh worker process: the closed loop, then the open loop, on the same client."
        );
        let _ = writeln!(
            out,
            "- Throughput: successful calls completed in the window with a fixed number in flight (closed loop)."
        );
        let _ = writeln!(
            out,
            "- CPU µs/call: user + system CPU of the whole worker process (`getrusage(RUSAGE_SELF)`) over the window, divided by the calls completed in it; the driver's own cost is in every scenario alike. Of it, the kernel's part (`ru_stime`: the loopback TCP's system calls, the runtime's sleeps and wake-ups) and the user part (`ru_utime`, where a client's own code runs), each the median of the rounds."
        );
        let _ = writeln!(
            out,
            "- CPU µs/call at the offered rate: the same over the open-loop window. At a low rate most of it is waking the runtime for each call (the pacing thread, the reactor), the same for every scenario: compare the differences, not the totals."
        );
        let _ = writeln!(
            out,
            "- Latency: calls are due on a fixed schedule and sent by a pacing thread; each latency runs from the due time to the end of the body, so a stall is charged to every call due during it (no coordinated omission). Percentiles from an HdrHistogram (3 significant digits). A round's p99 moves with the machine (the client, the server and the pacing thread share its cores): the range across rounds shows how much, and the p99 added over the raw client is taken round by round (this scenario's p99 minus the raw client's in the same round, whose workers ran back to back) and the median of those differences given, which a slow round moves far less than the difference of the two medians."
        );
        if !self.instructions.is_empty() {
            let _ = writeln!(
                out,
                "- Instructions per call: `valgrind --tool=callgrind` on the `bench count` subcommand, which installs the same subscriber and recorder, builds the client, makes exactly N calls with {} in flight and exits; run for N and for 2N calls, the difference over N is one call's instructions (start-up, connections and the client's construction drop out). Every thread of the client process is counted; the server is another process. The counts depend far less on the machine's load than time does, but not at all: how often a future finds its I/O not ready changes with timing (at N = 100 the rows disagreed by 10k or more, at N = 1000 by a few thousand), so take a difference of a few thousand as noise. The per-layer rows build the full stack (memory limiter) with `integration_client::stack::build_stack_without`, given to the facade as one service, and call it as scenario 2 does: a layer's cost is the stack with every layer minus the stack without it.",
                s.concurrency
            );
        }
        let _ = writeln!(
            out,
            "- Memory: the worker's peak resident set (`VmHWM`) at its end; the resident set before the client is built (runtime, subscriber, recorder) is shown beside it, the same binary for every scenario."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::count::CallgrindTotals;
    use crate::bench::worker::{LatencyReport, ThroughputReport};

    /// A bug fixed: `bench --out /tmp/run.md` ran every round, then failed with a bare "No such
    /// file or directory" when it wrote the report. The path is now checked before the run.
    #[test]
    fn an_out_path_that_is_not_a_directory_is_refused_before_the_run() {
        // Removed when dropped, also when an assertion fails.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let file = dir.join("BENCHMARKS.md");
        std::fs::write(&file, "").unwrap();
        let missing = dir.join("missing");

        assert_eq!(out_dir(dir.to_str().unwrap()).unwrap(), dir);
        let error = out_dir(file.to_str().unwrap()).unwrap_err();
        assert!(error.contains(file.to_str().unwrap()), "{error}");
        assert!(error.contains("not a directory"), "{error}");
        let error = out_dir(missing.to_str().unwrap()).unwrap_err();
        assert!(error.contains(missing.to_str().unwrap()), "{error}");
        assert!(error.contains("must exist"), "{error}");
    }

    fn report(scenario: Scenario, per_second: f64, cpu: f64, p99: f64) -> WorkerReport {
        WorkerReport {
            scenario,
            throughput: ThroughputReport {
                calls: 100,
                errors: 0,
                seconds: 1.0,
                per_second,
                cpu_us_per_call: cpu,
                system_us_per_call: cpu * 0.5,
            },
            latency: LatencyReport {
                offered_rate: 1000.0,
                calls: 100,
                errors: 0,
                unfinished: 0,
                p50_us: p99 / 2.0,
                p90_us: p99 / 1.5,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
                cpu_us_per_call: cpu * 2.0,
            },
            rss_baseline_kib: 1000,
            peak_rss_kib: 2000,
            first_error: None,
            redis_lost: 0,
            round: 0,
        }
    }

    /// A subject counted for 1000 then 2000 calls at `per_call` instructions a call, a hundredth of
    /// them data misses, a fiftieth instruction misses, a two-thousandth allocations, a tenth in
    /// the allocator.
    fn count(subject: Subject, per_call: u64) -> InstructionCount {
        let totals = |calls: u64| CallgrindTotals {
            instructions: 1_000_000 + calls * per_call,
            data_misses: Some(10_000 + calls * per_call / 100),
            instruction_misses: Some(20_000 + calls * per_call / 50),
            allocations: Some(500 + calls * per_call / 2000),
            allocator_instructions: Some(100_000 + calls * per_call / 10),
        };
        InstructionCount::new(subject, 1000, totals(1000), totals(2000))
    }

    fn settings(rounds: usize) -> Settings {
        Settings {
            rounds,
            concurrency: 32,
            rate: 2000.0,
            warmup_s: 0.5,
            duration_s: 3.0,
            client_threads: 1,
            server_threads: 1,
            pool: PoolSettings::default(),
            log_filter: "info".into(),
            profile: "release".into(),
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([]), 0.0);
    }

    #[test]
    fn summaries_take_the_median_across_rounds() {
        let rounds = vec![
            report(Scenario::Reqwest, 100.0, 10.0, 50.0),
            report(Scenario::RawHyper, 300.0, 5.0, 30.0),
            report(Scenario::Reqwest, 900.0, 30.0, 70.0),
            report(Scenario::Reqwest, 200.0, 20.0, 60.0),
        ];
        let summaries = summarize(&rounds);
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].scenario, Scenario::RawHyper);
        let reqwest = &summaries[1];
        assert_eq!(reqwest.rounds, 3);
        assert_eq!(reqwest.throughput_per_s, 200.0);
        assert_eq!(reqwest.cpu_us_per_call, 20.0);
        assert_eq!(reqwest.cpu_us_per_call_range, (10.0, 30.0));
        assert_eq!(reqwest.p99_us, 60.0);
    }

    #[test]
    fn ratios_divide_by_the_reference() {
        let summaries = summarize(&[
            report(Scenario::RawHyper, 400.0, 5.0, 30.0),
            report(Scenario::Reqwest, 200.0, 10.0, 60.0),
        ]);
        let against_raw = ratios(&summaries, Scenario::RawHyper);
        let reqwest = against_raw
            .iter()
            .find(|r| r.scenario == Scenario::Reqwest)
            .unwrap();
        assert_eq!(reqwest.throughput, 0.5);
        assert_eq!(reqwest.cpu_per_call, 2.0);
        assert_eq!(reqwest.cpu_us_added, 5.0);
        assert_eq!(reqwest.p99, 2.0);
        assert!(ratios(&summaries, Scenario::PeerStack).is_empty());
    }

    #[test]
    fn a_round_that_lost_redis_is_flagged_in_the_markdown() {
        let mut lost = report(Scenario::FullStackRedis, 300.0, 8.0, 40.0);
        lost.redis_lost = 2;
        let report = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(2),
            vec![lost, report(Scenario::FullStackRedis, 300.0, 8.0, 40.0)],
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(report.summaries[0].redis_lost, 2);
        assert!(
            report
                .to_markdown()
                .contains("**Scenario 3 lost Redis 2 time(s)**")
        );
    }

    /// Issue 19: the p99 target is a difference to the raw client's, and a round's p99 moves with
    /// the machine (the raw client's own ranged from 178 to 1,166 µs in one run). The added p99 is
    /// taken round by round: here the full stack adds 20 µs in every round, which the paired
    /// median says, while the difference of the two medians says 800 (a slow round of one paired
    /// with a quiet round of the other).
    #[test]
    fn the_added_p99_is_the_median_of_each_rounds_difference() {
        let round = |round, scenario, p99| WorkerReport {
            round,
            ..report(scenario, 100.0, 10.0, p99)
        };
        let reports = vec![
            round(0, Scenario::RawHyper, 200.0),
            round(0, Scenario::FullStack, 220.0),
            round(1, Scenario::FullStack, 1_020.0),
            round(1, Scenario::RawHyper, 1_000.0),
            round(2, Scenario::RawHyper, 180.0),
            round(2, Scenario::FullStack, 200.0),
            round(3, Scenario::FullStack, 1_220.0),
            round(3, Scenario::RawHyper, 1_200.0),
            // A round without the raw client adds nothing to the pairs.
            round(4, Scenario::FullStack, 5_000.0),
        ];
        let summaries = summarize(&reports);
        let full = summaries
            .iter()
            .find(|s| s.scenario == Scenario::FullStack)
            .unwrap();
        let raw = summaries
            .iter()
            .find(|s| s.scenario == Scenario::RawHyper)
            .unwrap();
        assert_eq!(full.p99_added_vs_raw_us, Some(20.0));
        assert_eq!(raw.p99_added_vs_raw_us, Some(0.0));
        assert_eq!(full.p99_us - raw.p99_us, 1_020.0 - 600.0);
        assert_eq!(full.p99_us_range, (200.0, 5_000.0));
        // Without the raw client there is nothing to pair with.
        let alone = summarize(&reports[1..2]);
        assert_eq!(alone[0].p99_added_vs_raw_us, None);

        let report = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(5),
            reports,
            Vec::new(),
            Vec::new(),
        );
        let markdown = report.to_markdown();
        let row = markdown
            .lines()
            .find(|line| line.starts_with("| 2 |") && line.contains("| 200–5000 |"))
            .unwrap_or_else(|| panic!("no latency row for scenario 2 in:\n{markdown}"));
        assert!(row.contains("| +20 |"), "{row}");
    }

    #[test]
    fn markdown_names_the_machine_the_command_and_every_scenario() {
        let settings = settings(1);
        let report = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings,
            vec![
                report(Scenario::RawHyper, 400.0, 5.0, 30.0),
                report(Scenario::PeerStack, 300.0, 8.0, 40.0),
            ],
            vec![
                MiddlewareCost {
                    id: INNER_BENCH.into(),
                    median_ns: 100.0,
                },
                MiddlewareCost {
                    id: "middleware/log".into(),
                    median_ns: 123.0,
                },
            ],
            vec!["3. our full stack, rate limit in Redis: not selected".into()],
        );
        let mut report = report;
        report.load_average = vec!["1.00 0.50 0.25".into(), "2.00 1.00 0.50".into()];
        let markdown = report.to_markdown();
        assert!(markdown.contains("1.00 0.50 0.25 → 2.00 1.00 0.50"));
        assert!(markdown.contains("`cargo xtask bench`"));
        assert!(markdown.contains("Wed, 25 Nov 2026"));
        assert!(markdown.contains(&report.machine.cpu_model));
        assert!(markdown.contains(Scenario::RawHyper.describe()));
        assert!(markdown.contains(Scenario::PeerStack.describe()));
        // A layer's own cost is its time over the no-layer floor.
        assert!(markdown.contains("| middleware/log | 123 | +23 |"));
        assert!(markdown.contains("- 3. our full stack, rate limit in Redis: not selected"));
        // Peer throughput against raw: 300 / 400.
        assert!(markdown.contains("0.75×"));
        assert!(!markdown.contains("lost Redis"));
        let json = serde_json::to_string(&report).unwrap();
        let back: BenchReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn instruction_counts_show_per_scenario_and_per_layer() {
        use integration_client::stack::StackLayer;
        let settings = settings(0);
        let mut report = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench --rounds 0".into(),
            settings,
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        report.instructions = vec![
            count(Subject::Scenario(Scenario::RawHyper), 20_000),
            count(Subject::Scenario(Scenario::PeerStack), 80_000),
            // Counted three times: the median run, and the range.
            InstructionCount::median(vec![
                count(Subject::Scenario(Scenario::FullStack), 61_500),
                count(Subject::Scenario(Scenario::FullStack), 60_000),
                count(Subject::Scenario(Scenario::FullStack), 59_000),
            ])
            .unwrap(),
            count(Subject::Without(None), 62_000),
            count(Subject::Without(Some(StackLayer::Log)), 50_000),
        ];
        let markdown = report.to_markdown();
        assert!(
            markdown.contains("1000 calls then 2000, differenced"),
            "{markdown}"
        );
        // The full stack against the raw client and the peer: 60k / 20k, 60k / 80k.
        assert!(
            markdown.contains(
                "| full-stack | our full stack, rate limit in memory | 60000 | 59000–61500 | 3.00× | 0.75× | 30.0 | 6000 | 600 | 0.75× | 1200 |"
            ),
            "{markdown}"
        );
        // The log layer's cost: 62k with it, 50k without; 620 data misses against 500.
        assert!(
            markdown.contains("| log | 50000 | n/a | +12000 | 19.4 % | +6.0 | +120 | +240 |"),
            "{markdown}"
        );
        let back: BenchReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back, report);
    }

    /// Issue 19's time targets are set against the raw client; the floor (8) says how much of the
    /// raw client's speed is left once one call span is made under the subscriber, and the full
    /// stack is put against it in time and in instructions.
    #[test]
    fn the_floor_is_put_beside_the_raw_client_and_the_full_stack() {
        let mut floor = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![
                report(Scenario::RawHyper, 1000.0, 10.0, 30.0),
                report(Scenario::RawHyperSpan, 800.0, 12.5, 30.0),
                report(Scenario::FullStack, 600.0, 20.0, 40.0),
            ],
            Vec::new(),
            Vec::new(),
        );
        floor.instructions = vec![
            count(Subject::Scenario(Scenario::RawHyper), 20_000),
            count(Subject::Scenario(Scenario::RawHyperSpan), 30_000),
            count(Subject::Scenario(Scenario::FullStack), 50_000),
        ];
        let markdown = floor.to_markdown();
        // Time: the floor makes 800 / 1000 of the raw client's calls at 12.5 / 10 of its CPU; the
        // full stack 600 / 800 of the floor's at 20 / 12.5 of its CPU, 7.5 µs more.
        assert!(
            markdown.contains("makes 0.80× the raw client's calls a second at 1.25× its"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "makes 0.75× the floor's calls a second at 1.60× its CPU a call (+7.5 µs"
            ),
            "{markdown}"
        );
        // Instructions: the span 10k over the raw client, our code 20k over the floor.
        assert!(
            markdown.contains("30000 instructions a call, +10000 over the raw client"),
            "{markdown}"
        );
        assert!(
            markdown.contains("spends +20000 over the floor"),
            "{markdown}"
        );
        // Without the floor measured, neither sentence.
        let without = BenchReport::new(
            "Wed, 25 Nov 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![
                report(Scenario::RawHyper, 1000.0, 10.0, 30.0),
                report(Scenario::FullStack, 600.0, 20.0, 40.0),
            ],
            Vec::new(),
            Vec::new(),
        );
        assert!(!without.to_markdown().contains("The floor (8)"));
    }

    /// Issue 19: the reference (9), hyper's connection API under the least pool, is put beside the
    /// raw client in time and in instructions: what hyper-util's legacy client adds to hyper.
    #[test]
    fn the_reference_below_hyper_utils_client_is_put_beside_the_raw_client() {
        let mut run = BenchReport::new(
            "Mon, 07 Dec 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![
                report(Scenario::RawHyper, 1000.0, 10.0, 30.0),
                report(Scenario::RawHyperConn, 1250.0, 8.0, 30.0),
            ],
            Vec::new(),
            Vec::new(),
        );
        run.instructions = vec![
            count(Subject::Scenario(Scenario::RawHyper), 25_000),
            count(Subject::Scenario(Scenario::RawHyperConn), 15_000),
        ];
        let markdown = run.to_markdown();
        assert!(
            markdown.contains(
                "The reference (9), hyper's own connection API under the least pool, makes 1.25× \
                 the raw client's calls a second at 0.80× its CPU a call (-2.0 µs a call)"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("least pool, 15000 instructions a call, -10000 against the raw"),
            "{markdown}"
        );
        // Not measured, not named.
        let without = BenchReport::new(
            "Mon, 07 Dec 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![report(Scenario::RawHyper, 1000.0, 10.0, 30.0)],
            Vec::new(),
            Vec::new(),
        );
        assert!(!without.to_markdown().contains("The reference (9)"));
    }

    /// Issue 19: half of a call's CPU on loopback is the kernel's, work no client's own code does,
    /// and it hid what our code costs against the peer's. The kernel's part and the user part are shown
    /// apart, and the full stack's user time is put beside the peer's and the floor's.
    #[test]
    fn user_time_is_shown_apart_from_the_kernels_part() {
        let with_system = |scenario, cpu: f64, system: f64| {
            let mut report = report(scenario, 1000.0, cpu, 30.0);
            report.throughput.system_us_per_call = system;
            report
        };
        let run = BenchReport::new(
            "Mon, 07 Dec 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![
                with_system(Scenario::RawHyperSpan, 16.0, 9.0),
                with_system(Scenario::FullStack, 20.0, 10.0),
                with_system(Scenario::PeerStack, 24.0, 11.0),
            ],
            Vec::new(),
            Vec::new(),
        );
        let full = run
            .summaries
            .iter()
            .find(|s| s.scenario == Scenario::FullStack)
            .unwrap();
        assert_eq!(full.user_us_per_call, 10.0);
        assert_eq!(full.system_us_per_call, 10.0);
        let markdown = run.to_markdown();
        // The table's row: CPU 20.0, of it kernel 10.0, user 10.0, 10 / 13 of the peer's user time.
        assert!(markdown.contains("| 10.0 | 10.0 | 0.77× |"), "{markdown}");
        assert!(
            markdown.contains("is 9.0–11.0 µs across the scenarios"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "the full stack (2) takes 10.0 µs a call, 0.77× the peer stack's 13.0, and +3.0 µs \
                 over the floor's 7.0."
            ),
            "{markdown}"
        );
        // Without the peer, no sentence.
        let without = BenchReport::new(
            "Mon, 07 Dec 2026 12:00:00 GMT".into(),
            "cargo xtask bench".into(),
            settings(1),
            vec![with_system(Scenario::FullStack, 20.0, 10.0)],
            Vec::new(),
            Vec::new(),
        );
        assert!(!without.to_markdown().contains("runs in user time"));
    }

    /// The report says how the binaries were built: the release profile it names is the one the
    /// workspace's `Cargo.toml` sets (fat LTO and one codegen unit change a call's CPU by a sixth).
    #[test]
    fn the_named_release_profile_is_the_workspaces() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
        let section = manifest
            .split("\n[")
            .find(|section| section.starts_with("profile.release]"))
            .expect("the workspace sets [profile.release]");
        let settings: Vec<&str> = section
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .collect();
        assert_eq!(settings, ["lto = \"fat\"", "codegen-units = 1"]);
        assert_eq!(
            RELEASE_PROFILE,
            format!("release ({})", settings.join(", "))
        );
    }

    #[test]
    fn criterion_results_are_read_from_their_directories() {
        let dir = std::env::temp_dir().join(format!("bench-criterion-{}", std::process::id()));
        let bench = dir.join("layer").join("log").join("new");
        std::fs::create_dir_all(&bench).unwrap();
        std::fs::write(
            bench.join("benchmark.json"),
            r#"{"full_id":"layer/log","group_id":"layer"}"#,
        )
        .unwrap();
        std::fs::write(
            bench.join("estimates.json"),
            r#"{"median":{"point_estimate":41.5,"standard_error":1.0},"mean":{"point_estimate":42.0}}"#,
        )
        .unwrap();
        let found = read_criterion(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            vec![MiddlewareCost {
                id: "layer/log".into(),
                median_ns: 41.5
            }]
        );
        assert!(
            read_criterion(Path::new("/nonexistent/criterion"))
                .unwrap()
                .is_empty()
        );
    }
}
