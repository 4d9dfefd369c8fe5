//! The chaos suite: the facade against a fault upstream, Redis and PostgreSQL outages.
//!
//! ```text
//! chaos [--smoke] [--scenarios a,b] [--duration-scale X] [--rate-scale X] [--out DIR]
//!       [--command TEXT]
//! ```
//!
//! Without `--out` the report is printed, not written. `--smoke` runs every scenario for a few
//! seconds and fails unless every invariant that holds whatever the timing held.

use integration_tests::bench::BoxError;
use integration_tests::bench::report::{Machine, load_average};
use integration_tests::chaos::report::ChaosReport;
use integration_tests::chaos::scenario::{self, Scale, Scenario};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// `chaos --help`.
const USAGE: &str = "\
The chaos suite: the whole stack, through the facade at its defaults, against a fault upstream of
its own and through Redis and PostgreSQL outages (issues 12 and 13).

Usage: chaos [OPTIONS]

Options:
  --smoke                 every scenario for a few seconds (durations x0.1, rates x0.3); fail
                          unless the timing-free invariants hold (no call lost or hung, no
                          duplicated POST); writes nothing
  --scenarios a,b         which scenarios (flaky-10, flaky-30, outage-503, outage-refused, slow,
                          server-limit, server-limit-quota, ratelimit-headers, shared-limit,
                          redis-outage, pg-outage) [all]
  --duration-scale X      multiply every duration by X [1; 0.1 with --smoke]
  --rate-scale X          multiply every offered rate by X [1; 0.3 with --smoke]
  --out DIR               write CHAOS.md and chaos.json there
  --command TEXT          the command recorded in the report

Environment:
  DATABASE_URL            the PostgreSQL of pg-outage [postgres://postgres@127.0.0.1:5432/test]
  redis-server            must be on PATH (redis-outage and shared-limit start their own)
";

fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, BoxError> {
    let Some(index) = args.iter().position(|arg| arg == flag) else {
        return Ok(None);
    };
    if index + 1 >= args.len() {
        return Err(format!("{flag} needs a value").into());
    }
    let value = args.remove(index + 1);
    args.remove(index);
    Ok(Some(value))
}

fn take_scale(args: &mut Vec<String>, flag: &str, default: f64) -> Result<f64, BoxError> {
    match take_value(args, flag)? {
        None => Ok(default),
        Some(value) => match value.parse::<f64>() {
            Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
            _ => Err(format!("{flag} {value}: not a positive number").into()),
        },
    }
}

#[allow(clippy::disallowed_methods)] // The report's date is wall-clock time by nature.
fn now_http_date() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

/// The commit measured, from git (`unknown` outside a checkout).
fn git_commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "--help" | "help"))
    {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chaos: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Vec<String>) -> Result<(), BoxError> {
    let smoke = {
        let before = args.len();
        args.retain(|arg| arg != "--smoke");
        args.len() != before
    };
    let defaults = if smoke { Scale::SMOKE } else { Scale::FULL };
    let scale = Scale {
        duration: take_scale(&mut args, "--duration-scale", defaults.duration)?,
        rate: take_scale(&mut args, "--rate-scale", defaults.rate)?,
    };
    let scenarios: Vec<Scenario> = match take_value(&mut args, "--scenarios")? {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => Scenario::ALL.to_vec(),
    };
    let out = take_value(&mut args, "--out")?.map(PathBuf::from);
    let command = take_value(&mut args, "--command")?
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    if !args.is_empty() {
        return Err(format!("unknown arguments: {}\n\n{USAGE}", args.join(" ")).into());
    }
    if scenarios.is_empty() {
        return Err("no scenario selected".into());
    }
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for scenario in &scenarios {
        eprintln!("chaos: {scenario} ...");
        let report = runtime.block_on(scenario::run(*scenario, scale))?;
        for invariant in &report.invariants {
            eprintln!(
                "chaos: {scenario}: {} {}: {} (bound {})",
                if invariant.pass { "PASS" } else { "FAIL" },
                invariant.name,
                invariant.measured,
                invariant.expected
            );
        }
        reports.push(report);
    }
    let report = ChaosReport {
        date: now_http_date(),
        machine: Machine::detect(),
        commit: git_commit(),
        command,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
        duration_scale: scale.duration,
        rate_scale: scale.rate,
        smoke,
        load_average: vec![load_before, load_average()],
        scenarios: reports,
    };
    let (passed, total) = report.tally();
    eprintln!("chaos: {passed} of {total} scenarios met every invariant");
    if smoke {
        report
            .check_smoke()
            .map_err(|failures| format!("smoke failed:\n  {}", failures.replace('\n', "\n  ")))?;
        eprintln!("chaos: smoke passed: no call lost or hung, no duplicated POST");
        return Ok(());
    }
    match out {
        Some(dir) => {
            std::fs::write(dir.join("CHAOS.md"), report.to_markdown())?;
            std::fs::write(
                dir.join("chaos.json"),
                serde_json::to_string_pretty(&report)? + "\n",
            )?;
            eprintln!(
                "chaos: wrote {} and {}",
                dir.join("CHAOS.md").display(),
                dir.join("chaos.json").display()
            );
        }
        None => print!("{}", report.to_markdown()),
    }
    Ok(())
}
