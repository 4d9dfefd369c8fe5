//! `cargo xtask ci`: every check the CI runs, in order, stopping at the first failure.
//!
//! Each step prints a line as it starts, then one summary line (`ci: clippy ... ok (12.3 s)` or
//! `ci: clippy ... FAILED: why`); the run ends with a table of every step and its time. Cargo's
//! own output stays visible, so the CI log shows `cargo test`'s closing lines.

use std::env;
use std::io::IsTerminal;
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::bench::{target_dir, workspace_root};
use crate::disk;
use crate::services::{self, Service};
use crate::timing::{now, secs};

/// One step of `cargo xtask ci`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `cargo fmt --all -- --check`.
    Fmt,
    /// Redis and PostgreSQL answer (see [`services`]).
    Services,
    /// `cargo clippy` on every target and feature, warnings denied.
    Clippy,
    /// `cargo clippy` of the layer crates and the facade without their default features (no Redis,
    /// no PostgreSQL), library targets only, warnings denied: the builds a team taking one layer
    /// gets must compile cleanly too.
    Minimal,
    /// The facade's `features` tests in a build without features: a Redis store in the
    /// configuration is refused, naming the key and the feature.
    MinimalTest,
    /// `cargo test` of the whole workspace: unit, integration and doc tests.
    Test,
    /// `cargo doc` with rustdoc warnings denied.
    Doc,
    /// `cargo xtask bench --smoke`: every benchmark scenario briefly, so the benchmark never rots.
    BenchSmoke,
    /// `cargo xtask chaos --smoke`: every chaos scenario for a few seconds, asserting the
    /// invariants that hold whatever the timing.
    ChaosSmoke,
}

/// Every step, in the order they run: the checks that take seconds (formatting, and the services,
/// so a missing Redis fails before the long build) come first.
const STEPS: [Step; 9] = [
    Step::Fmt,
    Step::Services,
    Step::Clippy,
    Step::Minimal,
    Step::MinimalTest,
    Step::Test,
    Step::Doc,
    Step::BenchSmoke,
    Step::ChaosSmoke,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Services => "services",
            Step::Clippy => "clippy",
            Step::Minimal => "minimal",
            Step::MinimalTest => "minimal-test",
            Step::Test => "test",
            Step::Doc => "doc",
            Step::BenchSmoke => "bench-smoke",
            Step::ChaosSmoke => "chaos-smoke",
        }
    }

    /// The cargo arguments of a cargo step; `None` for the services check.
    fn cargo_args(self) -> Option<&'static [&'static str]> {
        Some(match self {
            Step::Fmt => &["fmt", "--all", "--", "--check"],
            Step::Services => return None,
            Step::Clippy => &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            // The crates a team may take alone, and the facade. Selected together, their features
            // unify only among themselves: none of them turns on another's `redis` or `postgres`
            // (the tests crate and xtask, which do, are not selected).
            Step::Minimal => &[
                "clippy",
                "--no-default-features",
                "-p",
                "integration-core",
                "-p",
                "integration-auth",
                "-p",
                "integration-ratelimit",
                "-p",
                "integration-retry",
                "-p",
                "integration-log",
                "-p",
                "integration-config",
                "-p",
                "integration-client",
                "--",
                "-D",
                "warnings",
            ],
            Step::MinimalTest => &[
                "test",
                "--no-default-features",
                "-p",
                "integration-client",
                "--test",
                "features",
            ],
            // Not `--all-targets`: with it, cargo test skips the doc tests. Without it, cargo runs
            // the lib, bin, integration-test and example targets' tests and then the doc tests.
            Step::Test => &["test", "--workspace", "--all-features"],
            Step::Doc => &["doc", "--workspace", "--no-deps", "--all-features"],
            Step::BenchSmoke => &["xtask", "bench", "--smoke"],
            Step::ChaosSmoke => &["xtask", "chaos", "--smoke"],
        })
    }

    /// Environment the step sets: `(name, value, value as printed)`.
    fn env(self) -> Vec<(&'static str, String, String)> {
        match self {
            // Every test sees the addresses the services step checked, defaults filled in.
            Step::Test | Step::BenchSmoke | Step::ChaosSmoke => services::ALL
                .into_iter()
                .filter_map(|service: Service| {
                    let url = services::configured_url(service).ok()?;
                    let shown = crate::service_url::redact(&url);
                    Some((service.env_var(), url, shown))
                })
                .collect(),
            Step::Doc => {
                let flags = match env::var("RUSTDOCFLAGS") {
                    Ok(flags) if !flags.trim().is_empty() => {
                        format!("{} -D warnings", flags.trim())
                    }
                    _ => "-D warnings".to_owned(),
                };
                vec![("RUSTDOCFLAGS", flags.clone(), format!("\"{flags}\""))]
            }
            Step::Fmt | Step::Services | Step::Clippy | Step::Minimal | Step::MinimalTest => {
                Vec::new()
            }
        }
    }

    /// What to do when the step fails, after its output.
    fn hint(self) -> &'static str {
        match self {
            Step::Fmt => "Run `cargo fmt --all` and commit the result.",
            Step::Services => "",
            Step::Clippy => "Fix the warnings above (clippy runs with -D warnings).",
            Step::Minimal => {
                "Fix the warnings above: code behind `redis` or `postgres` needs its #[cfg], and so \
                 does what only it uses."
            }
            Step::MinimalTest => "See the failing tests above.",
            Step::Test => "See the failing tests above.",
            Step::Doc => "Fix the rustdoc warnings above (RUSTDOCFLAGS has -D warnings).",
            Step::BenchSmoke => "A benchmark scenario failed or made no call: see above.",
            Step::ChaosSmoke => {
                "A chaos invariant that holds whatever the timing failed (a call lost or hung, a \
                 duplicated POST): see above."
            }
        }
    }

    /// How the step is shown as it starts, and in the rerun hint: the command with its environment.
    fn describe(self) -> String {
        let Some(args) = self.cargo_args() else {
            return services::ALL
                .into_iter()
                .map(|s| format!("{} at {}", s.name(), s.env_var()))
                .collect::<Vec<_>>()
                .join(" and ")
                + " must answer";
        };
        let mut shown: Vec<String> = self
            .env()
            .into_iter()
            .map(|(name, _, value)| format!("{name}={value}"))
            .collect();
        shown.push("cargo".to_owned());
        shown.extend(args.iter().map(|arg| (*arg).to_owned()));
        shown.join(" ")
    }
}

/// Runs one step. `Err` carries the message for the `FAILED:` line.
fn run_step(step: Step) -> Result<(), String> {
    let Some(args) = step.cargo_args() else {
        let statuses = services::check_all();
        services::print_table(&statuses);
        return services::failures(&statuses).map_or(Ok(()), Err);
    };
    // The cargo that runs xtask, so the same toolchain does every step.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(workspace_root());
    if env::var_os("CARGO_TERM_COLOR").is_none() && std::io::stdout().is_terminal() {
        command.env("CARGO_TERM_COLOR", "always");
    }
    for (name, value, _) in step.env() {
        command.env(name, value);
    }
    let status = command
        .status()
        .map_err(|e| format!("`{}` could not run: {e}", step.describe()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` exited with {status}. {}",
            step.describe(),
            step.hint()
        ))
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Passed, in this time.
    Ok(Duration),
    /// Failed, after this time; the run stopped here.
    Failed(Duration),
    /// Not reached: an earlier step failed.
    NotRun,
}

/// The closing table: every step, its result and its time, then the total.
fn summary(outcomes: &[(Step, Outcome)], total: Duration) -> String {
    let mut out = String::from("ci: summary\n");
    for (step, outcome) in outcomes {
        let (result, time) = match outcome {
            Outcome::Ok(time) => ("ok", secs(*time)),
            Outcome::Failed(time) => ("FAILED", secs(*time)),
            Outcome::NotRun => ("not run", String::new()),
        };
        // 14: the longest step name (`minimal-test`, 12) and two spaces; it was 12, which glued
        // `minimal-testok` together.
        let line = format!("  {:<14}{result:<9}{time:>9}", step.name());
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("  {:<14}{:<9}{:>9}\n", "total", "", secs(total)));
    out
}

/// Says how much room the build has, and warns when a cold build may not fit: a full disk fails
/// the build far from its cause.
fn report_disk() {
    let target = target_dir(&workspace_root());
    let Some(free) = disk::free_bytes(&target) else {
        return;
    };
    println!(
        "ci: disk: {} free for {}",
        disk::human(free),
        target.display()
    );
    if free < disk::COLD_BUILD_BYTES {
        println!(
            "ci: WARNING: a cold build writes about {} into the target directory; with {} free \
             the build may fail with `No space left on device`",
            disk::human(disk::COLD_BUILD_BYTES),
            disk::human(free)
        );
    }
}

/// `cargo xtask ci`.
pub(crate) fn run() -> ExitCode {
    let started = now();
    report_disk();
    let mut outcomes: Vec<(Step, Outcome)> = STEPS.iter().map(|s| (*s, Outcome::NotRun)).collect();
    let mut failure = None;
    for (step, outcome) in &mut outcomes {
        println!("ci: {}: {}", step.name(), step.describe());
        let step_started = now();
        let result = run_step(*step);
        let took = step_started.elapsed();
        match result {
            Ok(()) => {
                *outcome = Outcome::Ok(took);
                println!("ci: {} ... ok ({})", step.name(), secs(took));
            }
            Err(message) => {
                *outcome = Outcome::Failed(took);
                let mut lines = message.lines();
                println!(
                    "ci: {} ... FAILED: {}",
                    step.name(),
                    lines.next().unwrap_or("")
                );
                for line in lines {
                    println!("ci:   {line}");
                }
                failure = Some(*step);
                break;
            }
        }
    }
    print!("{}", summary(&outcomes, started.elapsed()));
    match failure {
        None => {
            println!("ci: all {} steps ok", outcomes.len());
            ExitCode::SUCCESS
        }
        Some(step) => {
            let rerun = match step {
                Step::Services => "cargo xtask services".to_owned(),
                _ => step.describe(),
            };
            println!(
                "ci: FAILED at step `{}`; rerun it alone with: {rerun}",
                step.name()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_the_documented_order() {
        let names: Vec<_> = STEPS.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "services",
                "clippy",
                "minimal",
                "minimal-test",
                "test",
                "doc",
                "bench-smoke",
                "chaos-smoke"
            ]
        );
    }

    #[test]
    fn commands() {
        assert_eq!(Step::Fmt.describe(), "cargo fmt --all -- --check");
        assert_eq!(
            Step::Clippy.describe(),
            "cargo clippy --workspace --all-targets --all-features -- -D warnings"
        );
        assert!(
            Step::Doc
                .describe()
                .ends_with("\" cargo doc --workspace --no-deps --all-features"),
            "{}",
            Step::Doc.describe()
        );
        assert!(Step::Doc.env()[0].1.ends_with("-D warnings"));
        // Doc tests only run without --all-targets.
        assert!(!Step::Test.cargo_args().unwrap().contains(&"--all-targets"));
    }

    #[test]
    fn the_test_step_passes_both_urls_redacted_in_print() {
        let env = Step::Test.env();
        let names: Vec<_> = env.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, ["REDIS_URL", "DATABASE_URL"]);
        for (_, value, shown) in &env {
            assert_eq!(*shown, crate::service_url::redact(value));
        }
    }

    #[test]
    fn summary_table() {
        let table = summary(
            &[
                (Step::Fmt, Outcome::Ok(Duration::from_millis(400))),
                (Step::Services, Outcome::Ok(Duration::from_millis(10))),
                (
                    Step::MinimalTest,
                    Outcome::Ok(Duration::from_millis(40_500)),
                ),
                (Step::Clippy, Outcome::Failed(Duration::from_millis(34_200))),
                (Step::Test, Outcome::NotRun),
            ],
            Duration::from_millis(75_150),
        );
        // The longest step name keeps a gap before its result (it printed `minimal-testok`).
        assert_eq!(
            table,
            "ci: summary\n\
             \x20 fmt           ok           0.4 s\n\
             \x20 services      ok           0.0 s\n\
             \x20 minimal-test  ok          40.5 s\n\
             \x20 clippy        FAILED      34.2 s\n\
             \x20 test          not run\n\
             \x20 total                     75.2 s\n"
        );
    }
}
