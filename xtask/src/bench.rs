//! `cargo xtask bench`: the benchmark of the full stack against the raw client and the peer stack.
//!
//! - `cargo xtask bench [ARGS]`: the real run, by hand, in release. First the criterion bench of
//!   pure middleware cost (`tests/benches/middleware.rs`), then the end-to-end benchmark (the `bench`
//!   binary of the `integration-tests` package) with `ARGS` passed on (`--rounds 3`,
//!   `--duration 5`, `--scenarios raw-hyper,full-stack`...). It writes `BENCHMARKS.md` and
//!   `benchmarks.json` at the workspace root.
//! - `cargo xtask bench --smoke`: every scenario for a fraction of a second and every criterion
//!   benchmark once, in the debug profile CI already built; fails unless each scenario completed
//!   calls without an error. It writes nothing. `cargo xtask ci` runs it last.
//!
//! Both build the `bench` binary through the same `cargo test`/`cargo bench` invocation as the
//! criterion target (cargo builds a package's binaries for its benchmarks), so the binary shares
//! that build's features and artifacts, then run it directly.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::services::{self, Service};
use crate::timing::{now, secs};

/// The package that holds the benchmarks.
const PACKAGE: &str = "integration-tests";

/// The criterion target of pure middleware cost.
const CRITERION_BENCH: &str = "middleware";

/// The end-to-end benchmark's binary.
const BENCH_BIN: &str = "bench";

/// The cargo commands of a run: `(arguments, what it is for)`.
fn cargo_commands(smoke: bool) -> Vec<Vec<&'static str>> {
    if smoke {
        // `--workspace --all-features`, as the CI's test step: same features, so nothing is rebuilt.
        // Criterion without `--bench` on its command line runs each benchmark once, as a test.
        vec![vec![
            "test",
            "--workspace",
            "--all-features",
            "--bench",
            CRITERION_BENCH,
        ]]
    } else {
        vec![vec![
            "bench",
            "--package",
            PACKAGE,
            "--bench",
            CRITERION_BENCH,
            "--profile",
            "release",
        ]]
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where cargo puts its build output.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR"))
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// The arguments of the `bench` binary.
fn bench_args(smoke: bool, root: &Path, target: &Path, passed: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    if smoke {
        args.push("--smoke".to_owned());
    } else {
        let mut command = String::from("cargo xtask bench");
        for arg in passed {
            command.push(' ');
            command.push_str(arg);
        }
        args.extend([
            "--out".to_owned(),
            root.display().to_string(),
            "--criterion".to_owned(),
            target.join("criterion").display().to_string(),
            "--command".to_owned(),
            command,
        ]);
    }
    args.extend(passed.iter().cloned());
    args
}

fn run_command(command: &mut Command, shown: &str) -> Result<(), String> {
    println!("bench: {shown}");
    let status = command
        .status()
        .map_err(|e| format!("`{shown}` could not run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` exited with {status}"))
    }
}

fn run_all(smoke: bool, passed: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let target = target_dir(&root);
    let redis = services::configured_url(Service::Redis)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for args in cargo_commands(smoke) {
        let mut command = Command::new(&cargo);
        command
            .args(&args)
            .current_dir(&root)
            .env("REDIS_URL", &redis);
        run_command(&mut command, &format!("cargo {}", args.join(" ")))?;
    }
    let profile = if smoke { "debug" } else { "release" };
    let binary = target.join(profile).join(BENCH_BIN);
    let args = bench_args(smoke, &root, &target, passed);
    let mut command = Command::new(&binary);
    command
        .args(&args)
        .current_dir(&root)
        .env("REDIS_URL", &redis);
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| {
            if arg.contains(' ') {
                format!("\"{arg}\"")
            } else {
                arg.clone()
            }
        })
        .collect();
    let shown = format!(
        "REDIS_URL={} {} {}",
        crate::service_url::redact(&redis),
        binary.display(),
        quoted.join(" ")
    );
    run_command(&mut command, &shown)?;
    run_cache(&binary, smoke, &root, &redis)
}

/// The cache's figures (issue 16), apart from the scenarios: `bench cache [--smoke]`.
fn run_cache(binary: &Path, smoke: bool, root: &Path, redis: &str) -> Result<(), String> {
    let mut command = Command::new(binary);
    command
        .arg("cache")
        .args(smoke.then_some("--smoke"))
        .current_dir(root)
        .env("REDIS_URL", redis);
    let shown = format!(
        "REDIS_URL={} {} cache{}",
        crate::service_url::redact(redis),
        binary.display(),
        if smoke { " --smoke" } else { "" }
    );
    run_command(&mut command, &shown)
}

/// `cargo xtask bench [--smoke] [ARGS]`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let smoke = args.iter().any(|arg| arg == "--smoke");
    let passed: Vec<String> = args
        .iter()
        .filter(|arg| *arg != "--smoke")
        .cloned()
        .collect();
    if smoke && !passed.is_empty() {
        eprintln!(
            "xtask: `bench --smoke` takes no other argument, got: {}",
            passed.join(" ")
        );
        return ExitCode::from(2);
    }
    let started = now();
    match run_all(smoke, &passed) {
        Ok(()) => {
            println!("bench: ok ({})", secs(started.elapsed()));
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("bench: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoke_run_shares_the_test_steps_build() {
        let commands = cargo_commands(true);
        assert_eq!(commands.len(), 1);
        let test = &commands[0];
        assert_eq!(test[0], "test");
        assert!(test.contains(&"--workspace") && test.contains(&"--all-features"));
        assert!(!test.contains(&"--release"));
    }

    #[test]
    fn the_real_run_is_a_release_build() {
        let commands = cargo_commands(false);
        assert_eq!(
            commands[0],
            [
                "bench",
                "--package",
                PACKAGE,
                "--bench",
                CRITERION_BENCH,
                "--profile",
                "release"
            ]
        );
    }

    #[test]
    fn the_real_run_writes_at_the_root_and_records_its_command() {
        let root = Path::new("/w");
        let args = bench_args(
            false,
            root,
            Path::new("/w/target"),
            &["--rounds".into(), "3".into()],
        );
        assert_eq!(
            args,
            [
                "--out",
                "/w",
                "--criterion",
                "/w/target/criterion",
                "--command",
                "cargo xtask bench --rounds 3",
                "--rounds",
                "3"
            ]
        );
        assert_eq!(
            bench_args(true, root, Path::new("/w/target"), &[]),
            ["--smoke"]
        );
    }
}
