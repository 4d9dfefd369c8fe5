//! `cargo xtask bench`: the benchmark of the full stack against the raw client and the peer stack.
//!
//! - `cargo xtask bench [ARGS]`: the real run, by hand, in release. First the criterion bench of
//!   pure middleware cost (`tests/benches/middleware.rs`), then the end-to-end benchmark (the `bench`
//!   binary of the `integration-tests` package) with `ARGS` passed on (`--rounds 3`,
//!   `--duration 5`, `--scenarios raw-hyper,full-stack`...). It writes `BENCHMARKS.md` and
//!   `benchmarks.json` at the workspace root.
//!   Then `bench gateway`: the gateway's overhead against the stack in-process, at 1,000 and
//!   5,000 calls a second, and `bench cache`: the response cache's figures, each in its own
//!   section of `BENCHMARKS.md`.
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
use crate::suite::{self, Options, Spec};
use crate::timing::{now, secs};

/// The package that holds the benchmarks.
const PACKAGE: &str = "integration-tests";

/// The criterion target of pure middleware cost.
const CRITERION_BENCH: &str = "middleware";

/// The end-to-end benchmark's binary.
const BENCH_BIN: &str = "bench";

/// The arguments of `cargo xtask bench`: the binary's options (see `tests/src/bin/bench.rs`).
const SPEC: Spec = Spec {
    name: "bench",
    flags: &[],
    values: &[
        "--rounds",
        "--duration",
        "--warmup",
        "--concurrency",
        "--rate",
        "--client-threads",
        "--server-threads",
        "--scenarios",
        "--log-filter",
        "--instructions",
        "--count-runs",
        "--callgrind-dir",
    ],
    smoke_values: &[],
};

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
fn bench_args(options: &Options, root: &Path, target: &Path) -> Vec<String> {
    let criterion = [
        "--criterion".to_owned(),
        target.join("criterion").display().to_string(),
    ];
    suite::binary_args(&SPEC, options, root, &criterion)
}

fn run_all(options: &Options) -> Result<(), String> {
    let smoke = options.smoke;
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
        suite::run_command(
            SPEC.name,
            &mut command,
            &format!("cargo {}", args.join(" ")),
        )?;
    }
    let profile = if smoke { "debug" } else { "release" };
    let binary = target.join(profile).join(BENCH_BIN);
    let args = bench_args(options, &root, &target);
    let mut command = Command::new(&binary);
    command
        .args(&args)
        .current_dir(&root)
        .env("REDIS_URL", &redis);
    let env = [format!("REDIS_URL={}", crate::service_url::redact(&redis))];
    suite::run_command(SPEC.name, &mut command, &suite::shown(&env, &binary, &args))?;
    // The gateway's overhead (issue 18) and the cache's figures (issue 16): their own sections of
    // BENCHMARKS.md, after the scenarios' report (printed only in the smoke).
    let gateway_args = gateway_bench_args(smoke, &root);
    let mut command = Command::new(&binary);
    command.args(&gateway_args).current_dir(&root);
    suite::run_command(
        SPEC.name,
        &mut command,
        &suite::shown(&[], &binary, &gateway_args),
    )?;
    let cache_args = section_args("cache", smoke, &root);
    let mut command = Command::new(&binary);
    command
        .args(&cache_args)
        .current_dir(&root)
        .env("REDIS_URL", &redis);
    suite::run_command(
        SPEC.name,
        &mut command,
        &suite::shown(&env, &binary, &cache_args),
    )?;
    if smoke {
        // `bench profile` is a tool run by hand: the smoke keeps it working (two callgrind runs of
        // a few calls, a few seconds).
        let args = profile_smoke_args();
        let mut command = Command::new(&binary);
        command.args(&args).current_dir(&root);
        suite::run_command(SPEC.name, &mut command, &suite::shown(&[], &binary, &args))?;
    }
    Ok(())
}

/// The smoke run of `bench profile`: the raw client, a few calls, the top few functions.
fn profile_smoke_args() -> Vec<String> {
    ["profile", "raw-hyper", "--calls", "3", "--top", "5"]
        .map(str::to_owned)
        .to_vec()
}

/// The arguments of the gateway's overhead benchmark.
fn gateway_bench_args(smoke: bool, root: &Path) -> Vec<String> {
    section_args("gateway", smoke, root)
}

/// The arguments of a subcommand that adds its own section to `BENCHMARKS.md` (`--out` the
/// workspace root), or only prints it in the smoke.
fn section_args(subcommand: &str, smoke: bool, root: &Path) -> Vec<String> {
    let mut args = vec![subcommand.to_owned()];
    if smoke {
        args.push("--smoke".to_owned());
    } else {
        args.push("--out".to_owned());
        args.push(root.display().to_string());
    }
    args
}

/// `cargo xtask bench [--smoke] [ARGS]`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let options = match suite::parse(&SPEC, args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("xtask: {message}");
            return ExitCode::from(2);
        }
    };
    let started = now();
    match run_all(&options) {
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
    fn the_smoke_profiles_a_few_calls_of_the_raw_client() {
        let args = profile_smoke_args();
        assert_eq!(args[..2], ["profile", "raw-hyper"]);
        assert!(args.windows(2).any(|pair| pair == ["--calls", "3"]));
    }

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
    fn the_gateway_overhead_runs_after_the_benchmark_and_briefly_in_the_smoke() {
        let root = Path::new("/repo");
        assert_eq!(
            gateway_bench_args(false, root),
            ["gateway", "--out", "/repo"]
        );
        assert_eq!(gateway_bench_args(true, root), ["gateway", "--smoke"]);
        assert_eq!(
            section_args("cache", false, root),
            ["cache", "--out", "/repo"]
        );
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
        let options = suite::parse(&SPEC, &["--rounds".into(), "3".into()]).unwrap();
        let args = bench_args(&options, root, Path::new("/w/target"));
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
        let smoke = suite::parse(&SPEC, &["--smoke".into()]).unwrap();
        assert_eq!(
            bench_args(&smoke, root, Path::new("/w/target")),
            ["--smoke"]
        );
        assert!(suite::parse(&SPEC, &["--smoke".into(), "--rounds".into(), "2".into()]).is_err());
    }
}
