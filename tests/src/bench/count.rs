//! Instruction counts: a fixed number of calls run under valgrind's callgrind.
//!
//! Time on a shared machine is noisy; the number of instructions a call executes is not. A count
//! run ([`run`], the `bench count` subcommand) makes exactly `calls` calls with a fixed number in
//! flight, then exits. The benchmark runs it under `valgrind --tool=callgrind` twice, for N and 2N
//! calls, and divides the difference by N ([`per_call`]): start-up (the binary, the runtime, the
//! subscriber, the client, the pool's connections) costs the same in both runs and drops out.
//!
//! Besides the scenarios of the timed run, [`Subject::Without`] measures the facade's stack given
//! as one service with one layer left out (`build_stack_without`): a layer's cost is the whole
//! stack ([`Subject::Without`]`(None)`) minus the stack without it.

use super::BoxError;
use super::load::Caller;
use super::profile::FunctionCosts;
use super::scenario::{
    FacadeNoLayers, FullStack, FullStackLayers, OurTransport, PeerStack, PoolSettings,
    RateLimitStore, RawHyper, RawHyperConn, RawHyperSpan, Reqwest, Scenario,
};
use super::worker::{install_observability_without_upkeep, redis_lost};
use integration_client::stack::StackLayer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a count run calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A scenario of the timed run, as it runs there.
    Scenario(Scenario),
    /// The full stack's layers (rate limit in memory) given to the facade as one service, with one
    /// layer left out (`None`: every layer, the reference of the per-layer figures).
    Without(Option<StackLayer>),
}

impl Subject {
    /// The per-layer subjects: every layer, then the stack without each layer in turn.
    pub fn per_layer() -> Vec<Subject> {
        std::iter::once(Subject::Without(None))
            .chain(
                StackLayer::ALL
                    .into_iter()
                    .map(|layer| Subject::Without(Some(layer))),
            )
            .collect()
    }

    /// The name on the command line and in the JSON file: the scenario's, `layers`, or
    /// `layers-without-<layer>`.
    pub fn name(self) -> String {
        match self {
            Subject::Scenario(scenario) => scenario.name().to_owned(),
            Subject::Without(None) => "layers".to_owned(),
            Subject::Without(Some(layer)) => format!("layers-without-{layer}"),
        }
    }

    /// What it runs, for the report.
    pub fn describe(self) -> String {
        match self {
            Subject::Scenario(scenario) => scenario.describe().to_owned(),
            Subject::Without(None) => {
                "the full stack's layers given as one service (`build_stack_without(.., None)`)"
                    .to_owned()
            }
            Subject::Without(Some(layer)) => format!("the same without the {layer} layer"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Subject {
    type Err = BoxError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == "layers" {
            return Ok(Subject::Without(None));
        }
        if let Some(layer) = name.strip_prefix("layers-without-") {
            return Ok(Subject::Without(Some(layer.parse()?)));
        }
        Ok(Subject::Scenario(name.parse()?))
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What a count run does: `calls` calls of `subject`, `concurrency` in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountConfig {
    /// What to call.
    pub subject: Subject,
    /// The loopback server.
    pub addr: SocketAddr,
    /// Calls to make, exactly.
    pub calls: u64,
    /// Calls in flight.
    pub concurrency: usize,
    /// Pool settings for every client.
    pub pool: PoolSettings,
    /// The tracing filter of the subscriber the run installs, as every timed worker does.
    pub log_filter: String,
    /// The key prefix of `full-stack-redis`'s Redis (read from `REDIS_URL` in the child, never
    /// passed on its command line, where a password would show in `ps`), private to this run.
    pub redis_prefix: String,
    /// Its command timeout ([`COUNT_REDIS_COMMAND_TIMEOUT`] unless given).
    #[serde(default = "count_redis_command_timeout")]
    pub redis_command_timeout: Duration,
}

fn count_redis_command_timeout() -> Duration {
    COUNT_REDIS_COMMAND_TIMEOUT
}

/// Makes `config.calls` calls (after installing the subscriber and recorder every worker has), then
/// runs the recorder's upkeep once.
///
/// # Errors
///
/// When the client cannot be built, or any call fails: a count of failing calls measures nothing.
/// And when Redis was marked unavailable during the run: the limiter decided some calls on its
/// local fallback, and the count is not the Redis limiter's.
pub async fn run(config: &CountConfig) -> Result<(), BoxError> {
    let metrics = install_observability_without_upkeep(&config.log_filter)?;
    subject_calls(config).await?;
    // The upkeep a worker runs every 5 s, once, after the calls: every sample drained, at a point
    // that does not depend on the run's duration (see `install_observability_without_upkeep`).
    metrics.run_upkeep();
    match redis_lost(&metrics) {
        0 => Ok(()),
        lost => Err(format!(
            "Redis was marked unavailable {lost} time(s) during the count of {}: calls were \
             decided by the limiter's local fallback, so the count is not the Redis path's",
            config.subject
        )
        .into()),
    }
}

/// The Redis command timeout of a count run. Under valgrind the process runs one thread at a time,
/// about 50 times slower, with [`CountConfig::concurrency`] calls in flight: a reply that came
/// back in microseconds waits for every other call to be polled before its own, and the default
/// 50 ms was exceeded, Redis marked unavailable, and the local fallback counted in its place.
/// The timeout changes no instruction of a call that is answered in time.
pub const COUNT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

async fn subject_calls(config: &CountConfig) -> Result<(), BoxError> {
    let (addr, pool) = (config.addr, &config.pool);
    let redis = || RateLimitStore::Redis {
        url: integration_core::testing::redis_url(),
        key_prefix: config.redis_prefix.clone(),
        command_timeout: config.redis_command_timeout,
    };
    match config.subject {
        Subject::Scenario(scenario) => match scenario {
            Scenario::RawHyper => calls(config, RawHyper::new(addr, pool)).await,
            Scenario::FullStack => {
                calls(
                    config,
                    FullStack::new(addr, pool, RateLimitStore::Memory).await?,
                )
                .await
            }
            Scenario::FullStackRedis => {
                calls(config, FullStack::new(addr, pool, redis()).await?).await
            }
            Scenario::PeerStack => calls(config, PeerStack::new(addr, pool)?).await,
            Scenario::Reqwest => calls(config, Reqwest::new(addr, pool)?).await,
            Scenario::OurTransport => calls(config, OurTransport::new(addr, pool)?).await,
            Scenario::FacadeNoLayers => calls(config, FacadeNoLayers::new(addr, pool)?).await,
            Scenario::RawHyperSpan => calls(config, RawHyperSpan::new(addr, pool)).await,
            Scenario::RawHyperConn => calls(config, RawHyperConn::new(addr, pool)).await,
        },
        Subject::Without(layer) => calls(config, FullStackLayers::new(addr, pool, layer)?).await,
    }
}

async fn calls<C: Caller>(config: &CountConfig, caller: C) -> Result<(), BoxError> {
    let left = Arc::new(AtomicU64::new(config.calls));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (caller, left) = (caller.clone(), Arc::clone(&left));
        tasks.spawn(async move {
            // Take a call from the count, or stop when none is left.
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                caller.call().await?;
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// The events of one callgrind run, counted over every thread of the process: instructions, and
/// with `--cache-sim=yes` the simulated first-level cache misses; and the calls into the C
/// allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallgrindTotals {
    /// Instructions executed (`Ir`).
    pub instructions: u64,
    /// First-level data cache misses, reads and writes (`D1mr` + `D1mw`), when simulated.
    pub data_misses: Option<u64>,
    /// First-level instruction cache misses (`I1mr`), when simulated.
    pub instruction_misses: Option<u64>,
    /// Blocks allocated: calls to `malloc`, `calloc`, `posix_memalign`, `aligned_alloc` and
    /// `memalign` (Rust's global allocator on Unix ends in one of them; a `realloc` resizes, it is
    /// not counted). `None` when the file records no calls (callgrind always does).
    pub allocations: Option<u64>,
    /// Instructions spent inside the C allocator (those functions, `realloc` and `free`,
    /// inclusive of what they call), part of `instructions`.
    pub allocator_instructions: Option<u64>,
}

/// The C allocator's entry points: a call into one of them from outside them is the allocator's
/// work. glibc's `realloc(NULL, n)` calls `malloc` itself: calls among them are not counted twice.
const ALLOCATOR: [&str; 8] = [
    "malloc",
    "calloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "realloc",
    "free",
    "cfree",
];

/// Those of [`ALLOCATOR`] that make a new block.
const ALLOCATING: [&str; 5] = [
    "malloc",
    "calloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];

/// The totals of one callgrind run: the `summary:` (or `totals:`) line of its output file, its
/// events named by the `events:` line.
///
/// # Errors
///
/// When the file cannot be read or holds no such line.
pub fn read_callgrind_totals(path: &Path) -> Result<CallgrindTotals, BoxError> {
    parse_callgrind_totals(&std::fs::read_to_string(path)?)
        .ok_or_else(|| format!("no `summary:` line in {}", path.display()).into())
}

fn parse_callgrind_totals(text: &str) -> Option<CallgrindTotals> {
    let events: Vec<&str> = text
        .lines()
        .find_map(|line| line.strip_prefix("events:"))
        .map_or_else(|| vec!["Ir"], |line| line.split_whitespace().collect());
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .or_else(|| text.lines().find_map(|line| line.strip_prefix("totals:")))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let event = |name: &str| {
        let index = events.iter().position(|event| *event == name)?;
        values.get(index).copied()
    };
    let instructions = event("Ir")?;
    let allocator = allocator_calls(text);
    Some(CallgrindTotals {
        instructions,
        data_misses: event("D1mr").zip(event("D1mw")).map(|(r, w)| r + w),
        instruction_misses: event("I1mr"),
        allocations: allocator.map(|calls| calls.allocations),
        allocator_instructions: allocator.map(|calls| calls.instructions),
    })
}

/// What the calls into the C allocator cost, read from a callgrind file's call records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AllocatorCalls {
    allocations: u64,
    instructions: u64,
}

/// Sums the calls into [`ALLOCATOR`] made from outside it, read from the file's call records
/// ([`FunctionCosts::parse`]: each caller's calls of each callee, with their inclusive cost).
/// `None` when the file has no call record at all.
fn allocator_calls(text: &str) -> Option<AllocatorCalls> {
    let costs = FunctionCosts::parse(text);
    if costs.calls.is_empty() {
        return None;
    }
    let mut calls = AllocatorCalls::default();
    for ((caller, callee), call) in &costs.calls {
        if ALLOCATOR.contains(&caller.as_str()) || !ALLOCATOR.contains(&callee.as_str()) {
            continue;
        }
        calls.instructions += call.cost.instructions;
        if ALLOCATING.contains(&callee.as_str()) {
            calls.allocations += call.count;
        }
    }
    Some(calls)
}

/// The instructions of one call: the count of `2n` calls minus the count of `n`, over `n`.
pub fn per_call(n: u64, count_n: u64, count_2n: u64) -> f64 {
    (count_2n as f64 - count_n as f64) / n.max(1) as f64
}

/// One subject's instruction counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructionCount {
    /// What was called.
    pub subject: Subject,
    /// What it runs.
    pub description: String,
    /// N: calls of the shorter run (the longer made 2N).
    pub calls: u64,
    /// Instructions of the run of N calls, start-up included.
    pub instructions_n: u64,
    /// Instructions of the run of 2N calls.
    pub instructions_2n: u64,
    /// Instructions per call: the difference over N.
    pub per_call: f64,
    /// First-level data cache misses per call (callgrind's cache simulation), differenced alike.
    #[serde(default)]
    pub data_misses_per_call: Option<f64>,
    /// First-level instruction cache misses per call, differenced alike.
    #[serde(default)]
    pub instruction_misses_per_call: Option<f64>,
    /// How many times the subject was counted (each an N and a 2N run); the figures above are
    /// those of the run with the median instructions per call.
    #[serde(default = "one_run")]
    pub runs: usize,
    /// The lowest and highest instructions per call of those runs.
    #[serde(default)]
    pub per_call_range: Option<(f64, f64)>,
    /// Blocks allocated per call (see [`CallgrindTotals::allocations`]), differenced alike.
    #[serde(default)]
    pub allocations_per_call: Option<f64>,
    /// Instructions per call spent inside the C allocator, part of `per_call`.
    #[serde(default)]
    pub allocator_per_call: Option<f64>,
}

fn one_run() -> usize {
    1
}

impl InstructionCount {
    /// The figures of `subject` from its two runs, of `calls` then twice as many calls.
    pub fn new(subject: Subject, calls: u64, n: CallgrindTotals, twice: CallgrindTotals) -> Self {
        let misses = |a: Option<u64>, b: Option<u64>| Some(per_call(calls, a?, b?));
        Self {
            subject,
            description: subject.describe(),
            calls,
            instructions_n: n.instructions,
            instructions_2n: twice.instructions,
            per_call: per_call(calls, n.instructions, twice.instructions),
            data_misses_per_call: misses(n.data_misses, twice.data_misses),
            instruction_misses_per_call: misses(n.instruction_misses, twice.instruction_misses),
            runs: 1,
            per_call_range: None,
            allocations_per_call: misses(n.allocations, twice.allocations),
            allocator_per_call: misses(n.allocator_instructions, twice.allocator_instructions),
        }
    }

    /// The run with the median instructions per call among `runs` of one subject (the lower of the
    /// two middle ones for an even number), its misses kept with it, and the runs' range: separate
    /// runs of one subject differ by about a thousand instructions a call (the runtime's timer and
    /// scheduling work depends on how fast valgrind runs it), as much as a small layer costs.
    /// `None` for no run.
    pub fn median(mut runs: Vec<InstructionCount>) -> Option<InstructionCount> {
        runs.sort_by(|a, b| a.per_call.total_cmp(&b.per_call));
        let low = runs.first()?.per_call;
        let high = runs.last()?.per_call;
        let count = runs.len();
        let mut median = runs.swap_remove((count - 1) / 2);
        median.runs = count;
        median.per_call_range = Some((low, high));
        Some(median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_are_read_from_the_summary_line_by_event_name() {
        let out = "version: 1\ncreator: callgrind-3.19.0\ncmd: bench count\nevents: Ir\n\
                   fl=(1) a.rs\nfn=(1) main\n3 120\nsummary: 123456789\ntotals: 123456789\n";
        assert_eq!(
            parse_callgrind_totals(out),
            Some(CallgrindTotals {
                instructions: 123_456_789,
                ..CallgrindTotals::default()
            })
        );
        assert_eq!(
            parse_callgrind_totals("events: Ir\ntotals: 42\n").map(|t| t.instructions),
            Some(42)
        );
        assert_eq!(parse_callgrind_totals("events: Ir\n"), None);
        // `--cache-sim=yes`: nine events, in callgrind's order.
        let simulated = "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n\
                         summary: 1000 400 300 50 20 10 1 2 3\n";
        assert_eq!(
            parse_callgrind_totals(simulated),
            Some(CallgrindTotals {
                instructions: 1000,
                data_misses: Some(30),
                instruction_misses: Some(50),
                ..CallgrindTotals::default()
            })
        );
    }

    /// Issue 19: most of the spread between runs of one subject is the C allocator's own work
    /// (its state differs from run to run); the count of blocks allocated does not spread.
    #[test]
    fn the_calls_into_the_allocator_are_summed_from_the_call_records() {
        // Two events (cache simulation off here, `Dr` standing in), one position column; names
        // compressed as callgrind writes them.
        let out = "positions: line\nevents: Ir Dr\nsummary: 100000 1\n\
                   fl=(1) a.rs\nfn=(1) main\n3 120\n\
                   cfn=(2) malloc\ncalls=3 7622\n5 900 4\n\
                   cfn=(3) free\ncalls=2 7638\n+1 400\n\
                   cfn=(4) realloc\ncalls=1 9000\n*  250 1\n\
                   cfn=(5) parse\ncalls=7 12\n6 5000\n\
                   fn=(6) other\ncfn=(2)\ncalls=1 7622\n9 300\n\
                   fn=(4)\n0 10\ncfn=(2)\ncalls=1 7622\n0 280\n\
                   fn=(2)\n0 500\ncfn=(7) _int_malloc\ncalls=4 100\n0 700\n";
        let totals = parse_callgrind_totals(out).unwrap();
        // malloc 3 + 1 from `main` and `other`; realloc's own call into malloc is inside realloc's
        // 250; `parse` and `_int_malloc` are not entry points called from outside.
        assert_eq!(totals.allocations, Some(4));
        assert_eq!(totals.allocator_instructions, Some(900 + 400 + 250 + 300));
        // With the instruction position too, the cost is one column further.
        let instr = "positions: instr line\nevents: Ir\nsummary: 10\n\
                     fn=(1) main\ncfn=(2) calloc\ncalls=2 0x10 4\n0x20 5 60\n";
        let totals = parse_callgrind_totals(instr).unwrap();
        assert_eq!(
            (totals.allocations, totals.allocator_instructions),
            (Some(2), Some(60))
        );
    }

    #[test]
    fn misses_are_differenced_like_instructions() {
        let totals = |instructions, misses| CallgrindTotals {
            instructions,
            data_misses: Some(misses),
            instruction_misses: Some(misses / 2),
            allocations: Some(misses / 100),
            allocator_instructions: Some(misses / 10),
        };
        let subject = Subject::Scenario(Scenario::RawHyper);
        let count = InstructionCount::new(
            subject,
            1000,
            totals(6_000_000, 500_000),
            totals(11_000_000, 900_000),
        );
        assert_eq!(count.per_call, 5_000.0);
        assert_eq!(count.data_misses_per_call, Some(400.0));
        assert_eq!(count.instruction_misses_per_call, Some(200.0));
        assert_eq!(count.allocations_per_call, Some(4.0));
        assert_eq!(count.allocator_per_call, Some(40.0));
        let plain = CallgrindTotals {
            instructions: 10,
            ..CallgrindTotals::default()
        };
        assert_eq!(
            InstructionCount::new(subject, 1, plain, plain).data_misses_per_call,
            None
        );
    }

    #[test]
    fn no_child_is_told_its_redis_url_on_the_command_line() {
        // A child's configuration is its command-line argument, which `ps` shows and callgrind
        // writes into its output file; `REDIS_URL` may carry a password, so every child reads it
        // from the environment it inherits.
        let pool = PoolSettings::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let count = CountConfig {
            subject: Subject::Scenario(Scenario::FullStackRedis),
            addr,
            calls: 1,
            concurrency: 1,
            pool: pool.clone(),
            log_filter: "info".to_owned(),
            redis_prefix: "prefix".to_owned(),
            redis_command_timeout: COUNT_REDIS_COMMAND_TIMEOUT,
        };
        let worker = crate::bench::worker::WorkerConfig {
            scenario: Scenario::FullStackRedis,
            addr,
            concurrency: 1,
            rate: 1.0,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            pool,
            log_filter: "info".to_owned(),
            redis_prefix: "prefix".to_owned(),
        };
        for json in [
            serde_json::to_value(&count).unwrap(),
            serde_json::to_value(&worker).unwrap(),
        ] {
            let fields = json.as_object().unwrap();
            assert!(
                fields.keys().all(|field| !field.contains("url")),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn the_median_run_is_kept_with_its_misses_and_the_range() {
        let run = |per_call: u64, misses: u64| {
            let totals = |calls: u64| CallgrindTotals {
                instructions: 1_000_000 + calls * per_call,
                data_misses: Some(calls * misses),
                ..CallgrindTotals::default()
            };
            InstructionCount::new(
                Subject::Scenario(Scenario::FullStack),
                100,
                totals(100),
                totals(200),
            )
        };
        let median =
            InstructionCount::median(vec![run(66_500, 9), run(65_400, 7), run(66_100, 8)]).unwrap();
        assert_eq!(median.per_call, 66_100.0);
        assert_eq!(median.data_misses_per_call, Some(8.0));
        assert_eq!(median.runs, 3);
        assert_eq!(median.per_call_range, Some((65_400.0, 66_500.0)));
        // Even: the lower middle one.
        let even = InstructionCount::median(vec![run(3, 1), run(1, 1), run(4, 1), run(2, 1)]);
        assert_eq!(even.unwrap().per_call, 2.0);
        assert_eq!(InstructionCount::median(Vec::new()), None);
        // A report written before the field existed reads as one run.
        let mut json = serde_json::to_value(run(1, 1)).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("runs");
        object.remove("per_call_range");
        let old: InstructionCount = serde_json::from_value(json).unwrap();
        assert_eq!((old.runs, old.per_call_range), (1, None));
    }

    #[test]
    fn start_up_drops_out_of_the_difference() {
        // 5M of start-up, 80k a call: 1000 calls then 2000.
        let (n, start, call) = (1000, 5_000_000, 80_000);
        assert_eq!(
            per_call(n, start + n * call, start + 2 * n * call),
            80_000.0
        );
    }

    #[test]
    fn subjects_round_trip_through_their_names() {
        let mut subjects: Vec<Subject> = Scenario::ALL.into_iter().map(Subject::Scenario).collect();
        subjects.extend(Subject::per_layer());
        for subject in subjects {
            assert_eq!(subject.name().parse::<Subject>().unwrap(), subject);
            let json = serde_json::to_string(&subject).unwrap();
            assert_eq!(serde_json::from_str::<Subject>(&json).unwrap(), subject);
        }
        assert_eq!(
            Subject::Without(Some(StackLayer::AttemptLog)).name(),
            "layers-without-attempt-log"
        );
        assert!(
            "layers-without-cache-of-nothing"
                .parse::<Subject>()
                .is_err()
        );
    }
}
