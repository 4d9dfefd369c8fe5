//! The chaos report: per-second timelines, figures and invariants of each scenario, and the
//! `CHAOS.md`/`chaos.json` files.

use super::fault::ServerSecond;
use super::load::CallRecord;
use crate::bench::report::Machine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One second of a run: what the client did (calls bucketed by the second they started, outcomes
/// by the second they ended) and what the upstream saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run's epoch.
    pub t: u64,
    /// Calls started.
    pub sent: u64,
    /// Calls that ended in success.
    pub succeeded: u64,
    /// Calls that ended in failure, by error kind.
    pub failed: BTreeMap<String, u64>,
    /// Calls given up at the hard bound (never completed).
    pub hung: u64,
    /// Attempts of the calls that ended, as the client counted them.
    pub attempts: u64,
    /// What the upstream saw.
    pub upstream: ServerSecond,
}

/// Buckets `records` and the server's `seconds` into one timeline, from second 0 to the last
/// second with anything in it.
///
/// ```
/// use integration_tests::chaos::load::{CallOutcome, CallRecord};
/// use integration_tests::chaos::report::timeline;
/// use std::time::Duration;
///
/// let record = |index, ms, outcome| CallRecord {
///     index,
///     due: Duration::from_millis(ms),
///     started: Duration::from_millis(ms),
///     ended: Duration::from_millis(ms + 1500),
///     outcome,
/// };
/// let records = [
///     record(0, 100, Some(CallOutcome::ok(1))),
///     record(1, 200, Some(CallOutcome::failed("status_503", 3))),
///     record(2, 1100, None),
/// ];
/// let seconds = timeline(&records, &Default::default());
/// assert_eq!(seconds.len(), 3);
/// assert_eq!((seconds[0].sent, seconds[1].sent), (2, 1));
/// assert_eq!((seconds[1].succeeded, seconds[1].failed["status_503"], seconds[1].attempts), (1, 1, 4));
/// assert_eq!(seconds[2].hung, 1);
/// ```
pub fn timeline(records: &[CallRecord], server: &BTreeMap<u64, ServerSecond>) -> Vec<Second> {
    let last = records
        .iter()
        .map(|r| r.ended.as_secs())
        .chain(server.keys().copied())
        .max();
    let Some(last) = last else {
        return Vec::new();
    };
    let mut seconds: Vec<Second> = (0..=last)
        .map(|t| Second {
            t,
            upstream: server.get(&t).cloned().unwrap_or_default(),
            ..Second::default()
        })
        .collect();
    for record in records {
        seconds[record.started.as_secs() as usize].sent += 1;
        let end = &mut seconds[record.ended.as_secs() as usize];
        match &record.outcome {
            None => end.hung += 1,
            Some(outcome) => {
                end.attempts += u64::from(outcome.attempts);
                match &outcome.error {
                    None => end.succeeded += 1,
                    Some(kind) => *end.failed.entry(kind.clone()).or_default() += 1,
                }
            }
        }
    }
    seconds
}

/// One checked property of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invariant {
    /// What must hold, as the issue states it.
    pub name: String,
    /// The bound.
    pub expected: String,
    /// What the run measured.
    pub measured: String,
    /// Whether it held.
    pub pass: bool,
    /// Asserted by the smoke run (holds whatever the timing); the others are reported only.
    pub smoke: bool,
}

impl Invariant {
    /// A checked property.
    pub fn new(
        name: impl Into<String>,
        expected: impl Into<String>,
        measured: impl Into<String>,
        pass: bool,
    ) -> Self {
        Self {
            name: name.into(),
            expected: expected.into(),
            measured: measured.into(),
            pass,
            smoke: false,
        }
    }

    /// Marks the property as one the smoke run asserts.
    #[must_use]
    pub fn in_smoke(mut self) -> Self {
        self.smoke = true;
        self
    }
}

/// One run of a scenario (a scenario may compare runs, as flaky-30 does with the breaker on and
/// off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What distinguishes this run.
    pub label: String,
    /// Per second.
    pub timeline: Vec<Second>,
    /// Events on the timeline (outage start and end, a configuration change), seconds from the
    /// epoch.
    pub events: Vec<(f64, String)>,
}

/// A scenario's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario's name (`flaky-10`).
    pub name: String,
    /// What it runs.
    pub description: String,
    /// Its parameters after scaling.
    pub settings: BTreeMap<String, String>,
    /// The summary figures.
    pub figures: BTreeMap<String, f64>,
    /// The checked properties.
    pub invariants: Vec<Invariant>,
    /// The runs and their timelines.
    pub runs: Vec<Run>,
    /// The first error of each kind seen, with its sources (never a secret: our errors redact).
    pub first_errors: BTreeMap<String, String>,
}

impl ScenarioReport {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.pass)
    }

    /// The smoke invariants that failed.
    pub fn smoke_failures(&self) -> Vec<&Invariant> {
        self.invariants
            .iter()
            .filter(|i| i.smoke && !i.pass)
            .collect()
    }
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChaosReport {
    /// When it ran (HTTP date).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The git commit measured (`git describe --always --dirty`).
    pub commit: String,
    /// The command that produced it.
    pub command: String,
    /// The cargo profile of the binary.
    pub profile: String,
    /// Every duration of every scenario was multiplied by this.
    pub duration_scale: f64,
    /// Every offered rate was multiplied by this.
    pub rate_scale: f64,
    /// A smoke run (short, only the timing-free invariants asserted).
    pub smoke: bool,
    /// The load averages before and after.
    pub load_average: Vec<String>,
    /// The scenarios, in the order they ran.
    pub scenarios: Vec<ScenarioReport>,
}

fn fmt_figure(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn failed_cell(failed: &BTreeMap<String, u64>) -> String {
    if failed.is_empty() {
        return String::new();
    }
    failed
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ChaosReport {
    /// Scenarios whose invariants all held, and the total.
    pub fn tally(&self) -> (usize, usize) {
        let passed = self.scenarios.iter().filter(|s| s.passed()).count();
        (passed, self.scenarios.len())
    }

    /// The Markdown report (`CHAOS.md`).
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Chaos suite results\n");
        let _ = writeln!(
            md,
            "Written by `{}` on {}; never edited by hand. Commit `{}`, {} build.\n",
            self.command, self.date, self.commit, self.profile
        );
        if (self.duration_scale - 1.0).abs() > f64::EPSILON
            || (self.rate_scale - 1.0).abs() > f64::EPSILON
        {
            let _ = writeln!(
                md,
                "**Scaled run**: every duration multiplied by {} and every rate by {} against \
                 the issues' scenarios (60 s at 1,000 calls/s...); figures that depend on length \
                 (recovery after an outage longer than the breaker's open time, a reconnect \
                 backoff) can differ in a full-length run.\n",
                self.duration_scale, self.rate_scale
            );
        }
        let _ = writeln!(
            md,
            "Machine: {} ({} logical CPUs, {} MiB, kernel {}); load average before/after: {}.\n",
            self.machine.cpu_model,
            self.machine.logical_cpus,
            self.machine.memory_mib,
            self.machine.kernel,
            self.load_average.join(" / ")
        );
        let (passed, total) = self.tally();
        let _ = writeln!(
            md,
            "{passed} of {total} scenarios met every invariant. The client is the facade \
             (`integration-client`) at its defaults unless a scenario says otherwise; the \
             upstream is the harness's own fault server on loopback \
             (`tests/src/chaos/fault.rs`).\n"
        );
        let _ = writeln!(md, "## Summary\n");
        let _ = writeln!(md, "| scenario | invariant | bound | measured | result |");
        let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
        for scenario in &self.scenarios {
            for invariant in &scenario.invariants {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    scenario.name,
                    invariant.name,
                    invariant.expected,
                    invariant.measured,
                    if invariant.pass { "PASS" } else { "**FAIL**" }
                );
            }
        }
        for scenario in &self.scenarios {
            let _ = writeln!(md, "\n## {}\n", scenario.name);
            let _ = writeln!(md, "{}\n", scenario.description);
            let settings: Vec<String> = scenario
                .settings
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            let _ = writeln!(md, "Settings: {}.\n", settings.join(", "));
            let _ = writeln!(md, "| figure | value |");
            let _ = writeln!(md, "| --- | --- |");
            for (name, value) in &scenario.figures {
                let _ = writeln!(md, "| {name} | {} |", fmt_figure(*value));
            }
            if !scenario.first_errors.is_empty() {
                let _ = writeln!(md, "\nFirst error of each kind:\n");
                for (kind, error) in &scenario.first_errors {
                    let _ = writeln!(md, "- `{kind}`: {}", error.replace('|', "/"));
                }
            }
            for run in &scenario.runs {
                let _ = writeln!(md, "\n### {}: {}\n", scenario.name, run.label);
                if !run.events.is_empty() {
                    let events: Vec<String> = run
                        .events
                        .iter()
                        .map(|(t, what)| format!("{t:.1} s {what}"))
                        .collect();
                    let _ = writeln!(md, "Events: {}.\n", events.join("; "));
                }
                let _ = writeln!(
                    md,
                    "| s | sent | ok | failed | hung | attempts | upstream | 200 | 429 | 503 | drop | reset |"
                );
                let _ = writeln!(
                    md,
                    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
                );
                for s in &run.timeline {
                    let u = &s.upstream;
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        s.t,
                        s.sent,
                        s.succeeded,
                        failed_cell(&s.failed),
                        s.hung,
                        s.attempts,
                        u.requests,
                        u.ok,
                        u.throttled,
                        u.injected_503 + u.outage_503,
                        u.dropped,
                        u.reset
                    );
                }
            }
        }
        md
    }

    /// The smoke verdict: `Err` lists every smoke invariant that failed.
    ///
    /// # Errors
    ///
    /// One line per failed smoke invariant.
    pub fn check_smoke(&self) -> Result<(), String> {
        let failures: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|s| {
                s.smoke_failures().into_iter().map(move |i| {
                    format!(
                        "{}: {} (bound {}, measured {})",
                        s.name, i.name, i.expected, i.measured
                    )
                })
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ChaosReport {
        let mut failed = BTreeMap::new();
        failed.insert("circuit_open".to_owned(), 3);
        ChaosReport {
            date: "Tue, 01 Dec 2026 21:00:00 GMT".into(),
            machine: Machine {
                cpu_model: "test cpu".into(),
                logical_cpus: 2,
                memory_mib: 1024,
                kernel: "6.0".into(),
            },
            commit: "abc1234".into(),
            command: "cargo xtask chaos --duration-scale 0.5".into(),
            profile: "release".into(),
            duration_scale: 0.5,
            rate_scale: 1.0,
            smoke: false,
            load_average: vec!["1.0 1.0 1.0".into(), "1.5 1.2 1.0".into()],
            scenarios: vec![ScenarioReport {
                name: "outage-503".into(),
                description: "a full outage".into(),
                settings: [("rate".to_owned(), "500/s".to_owned())].into(),
                figures: [("attempts per call in the outage".to_owned(), 1.05)].into(),
                invariants: vec![
                    Invariant::new("no call hung", "0", "0", true).in_smoke(),
                    Invariant::new("breaker open within 1 s", "<= 1 s", "1.4 s", false),
                ],
                runs: vec![Run {
                    label: "breaker on".into(),
                    timeline: vec![Second {
                        t: 0,
                        sent: 10,
                        succeeded: 7,
                        failed,
                        hung: 0,
                        attempts: 12,
                        upstream: ServerSecond {
                            requests: 9,
                            ok: 7,
                            ..ServerSecond::default()
                        },
                    }],
                    events: vec![(0.5, "outage starts".into())],
                }],
                first_errors: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn markdown_says_what_was_scaled_and_marks_failures() {
        let md = report().to_markdown();
        assert!(md.contains("Commit `abc1234`, release build"), "{md}");
        assert!(md.contains("**Scaled run**: every duration multiplied by 0.5"));
        assert!(md.contains("0 of 1 scenarios met every invariant"));
        assert!(
            md.contains("| outage-503 | breaker open within 1 s | <= 1 s | 1.4 s | **FAIL** |")
        );
        assert!(md.contains("| outage-503 | no call hung | 0 | 0 | PASS |"));
        assert!(md.contains("| 0 | 10 | 7 | circuit_open 3 | 0 | 12 | 9 | 7 | 0 | 0 | 0 | 0 |"));
        assert!(md.contains("Events: 0.5 s outage starts."));
        assert!(md.contains("| attempts per call in the outage | 1.050 |"));
    }

    #[test]
    fn an_unscaled_run_says_nothing_about_scaling() {
        let mut report = report();
        report.duration_scale = 1.0;
        assert!(!report.to_markdown().contains("Scaled run"));
    }

    #[test]
    fn the_smoke_verdict_counts_only_smoke_invariants() {
        let mut report = report();
        assert_eq!(report.check_smoke(), Ok(()));
        report.scenarios[0].invariants[0].pass = false;
        let error = report.check_smoke().unwrap_err();
        assert_eq!(error, "outage-503: no call hung (bound 0, measured 0)");
    }

    #[test]
    fn json_round_trips() {
        let report = report();
        let json = serde_json::to_string(&report).unwrap();
        let back: ChaosReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }
}
