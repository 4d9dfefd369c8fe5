//! `cargo xtask chaos`: the chaos suite of issues 12 and 13 (the `chaos` binary of the
//! `integration-tests` package, see `tests/src/chaos/`).
//!
//! - `cargo xtask chaos [--scenarios a,b] [--duration-scale X] [--rate-scale X] [--debug]`: the
//!   full run, by hand, in release (`--debug`: the debug build CI already made). It writes
//!   `CHAOS.md` and `chaos.json` at the workspace root, with the command, the machine, the date
//!   and the commit.
//! - `cargo xtask chaos --smoke [--scenarios a,b]`: every scenario for a few seconds in the debug
//!   build of the test step (`cargo test --workspace --all-features --test chaos_harness`, which
//!   also builds the binary and runs the harness's own tests); fails unless the invariants that
//!   hold whatever the timing held. It writes nothing. `cargo xtask ci` runs it last.

use std::env;
use std::process::{Command, ExitCode};

use crate::bench::{target_dir, workspace_root};
use crate::services::{self, Service};
use crate::suite::{self, Options, Spec};
use crate::timing::{now, secs};

/// The package that holds the suite.
const PACKAGE: &str = "integration-tests";

/// The suite's binary.
const CHAOS_BIN: &str = "chaos";

/// The harness's own tests; building them builds the binary in the test step's profile.
const HARNESS_TEST: &str = "chaos_harness";

/// The arguments of `cargo xtask chaos`.
const SPEC: Spec = Spec {
    name: "chaos",
    flags: &["--debug"],
    values: &["--scenarios", "--duration-scale", "--rate-scale"],
    smoke_values: &["--scenarios"],
};

/// The cargo command that builds the binary.
fn cargo_build(options: &Options) -> Vec<&'static str> {
    if options.smoke || options.has("--debug") {
        // The test step's features and profile, so nothing is rebuilt after `cargo xtask ci`'s
        // test step; the harness's tests run too (a few seconds).
        let mut args = vec![
            "test",
            "--workspace",
            "--all-features",
            "--test",
            HARNESS_TEST,
        ];
        if !options.smoke {
            args.push("--no-run");
        }
        args
    } else {
        vec![
            "build",
            "--release",
            "--package",
            PACKAGE,
            "--bin",
            CHAOS_BIN,
        ]
    }
}

fn run_all(options: &Options) -> Result<(), String> {
    let root = workspace_root();
    let target = target_dir(&root);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let urls: Vec<(&str, String)> = services::ALL
        .into_iter()
        .map(|service: Service| Ok((service.env_var(), services::configured_url(service)?)))
        .collect::<Result<_, String>>()?;
    let build = cargo_build(options);
    let mut command = Command::new(&cargo);
    command.args(&build).current_dir(&root);
    for (name, url) in &urls {
        command.env(name, url);
    }
    suite::run_command(
        SPEC.name,
        &mut command,
        &format!("cargo {}", build.join(" ")),
    )?;
    let profile = if options.smoke || options.has("--debug") {
        "debug"
    } else {
        "release"
    };
    let binary = target.join(profile).join(CHAOS_BIN);
    let args = suite::binary_args(&SPEC, options, &root, &[]);
    let mut command = Command::new(&binary);
    command.args(&args).current_dir(&root);
    let mut env = Vec::new();
    for (name, url) in &urls {
        command.env(name, url);
        env.push(format!("{name}={}", crate::service_url::redact(url)));
    }
    suite::run_command(SPEC.name, &mut command, &suite::shown(&env, &binary, &args))
}

/// `cargo xtask chaos [--smoke] [ARGS]`.
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
            println!("chaos: ok ({})", secs(started.elapsed()));
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("chaos: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn the_smoke_run_shares_the_test_steps_build_and_writes_nothing() {
        let options = suite::parse(&SPEC, &strings(&["--smoke"])).unwrap();
        let build = cargo_build(&options);
        assert_eq!(build[0], "test");
        assert!(build.contains(&"--workspace") && build.contains(&"--all-features"));
        assert!(!build.contains(&"--release") && !build.contains(&"--no-run"));
        assert_eq!(
            suite::binary_args(&SPEC, &options, Path::new("/w"), &[]),
            ["--smoke"]
        );
    }

    #[test]
    fn the_full_run_is_a_release_build_that_writes_at_the_root() {
        let options = suite::parse(
            &SPEC,
            &strings(&["--scenarios", "slow,flaky-10", "--duration-scale", "0.25"]),
        )
        .unwrap();
        assert_eq!(
            cargo_build(&options),
            [
                "build",
                "--release",
                "--package",
                PACKAGE,
                "--bin",
                CHAOS_BIN
            ]
        );
        assert_eq!(
            suite::binary_args(&SPEC, &options, Path::new("/w"), &[]),
            [
                "--out",
                "/w",
                "--command",
                "cargo xtask chaos --scenarios slow,flaky-10 --duration-scale 0.25",
                "--scenarios",
                "slow,flaky-10",
                "--duration-scale",
                "0.25"
            ]
        );
        let debug = suite::parse(&SPEC, &strings(&["--debug"])).unwrap();
        assert!(cargo_build(&debug).contains(&"--no-run"));
        assert_eq!(
            suite::binary_args(&SPEC, &debug, Path::new("/w"), &[])[3],
            "cargo xtask chaos --debug"
        );
    }
}
