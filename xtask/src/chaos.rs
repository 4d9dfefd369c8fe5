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
use crate::timing::{now, secs};

/// The package that holds the suite.
const PACKAGE: &str = "integration-tests";

/// The suite's binary.
const CHAOS_BIN: &str = "chaos";

/// The harness's own tests; building them builds the binary in the test step's profile.
const HARNESS_TEST: &str = "chaos_harness";

/// What `cargo xtask chaos` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    smoke: bool,
    debug: bool,
    /// Arguments passed on to the binary.
    passed: Vec<String>,
}

/// Parses the arguments; `Err` is the message for a usage error.
fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        smoke: false,
        debug: false,
        passed: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options.smoke = true,
            "--debug" => options.debug = true,
            "--scenarios" | "--duration-scale" | "--rate-scale" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("`chaos {arg}` needs a value"))?;
                options.passed.extend([arg.clone(), value.clone()]);
            }
            other => return Err(format!("`chaos` does not take `{other}`")),
        }
    }
    if options.smoke && options.passed.iter().any(|arg| arg.ends_with("-scale")) {
        return Err("`chaos --smoke` has its own scale; use the full run to choose one".to_owned());
    }
    Ok(options)
}

/// The cargo command that builds the binary.
fn cargo_build(options: &Options) -> Vec<&'static str> {
    if options.smoke || options.debug {
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

/// The arguments of the binary.
fn chaos_args(options: &Options, root: &std::path::Path) -> Vec<String> {
    let mut args = Vec::new();
    if options.smoke {
        args.push("--smoke".to_owned());
    } else {
        let mut command = String::from("cargo xtask chaos");
        if options.debug {
            command.push_str(" --debug");
        }
        for arg in &options.passed {
            command.push(' ');
            command.push_str(arg);
        }
        args.extend([
            "--out".to_owned(),
            root.display().to_string(),
            "--command".to_owned(),
            command,
        ]);
    }
    args.extend(options.passed.iter().cloned());
    args
}

fn run_command(command: &mut Command, shown: &str) -> Result<(), String> {
    println!("chaos: {shown}");
    let status = command
        .status()
        .map_err(|e| format!("`{shown}` could not run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` exited with {status}"))
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
    run_command(&mut command, &format!("cargo {}", build.join(" ")))?;
    let profile = if options.smoke || options.debug {
        "debug"
    } else {
        "release"
    };
    let binary = target.join(profile).join(CHAOS_BIN);
    let args = chaos_args(options, &root);
    let mut command = Command::new(&binary);
    command.args(&args).current_dir(&root);
    let mut shown = Vec::new();
    for (name, url) in &urls {
        command.env(name, url);
        shown.push(format!("{name}={}", crate::service_url::redact(url)));
    }
    shown.push(binary.display().to_string());
    shown.extend(args.iter().map(|arg| {
        if arg.contains(' ') {
            format!("\"{arg}\"")
        } else {
            arg.clone()
        }
    }));
    run_command(&mut command, &shown.join(" "))
}

/// `cargo xtask chaos [--smoke] [ARGS]`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let options = match parse(args) {
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
        let options = parse(&strings(&["--smoke"])).unwrap();
        let build = cargo_build(&options);
        assert_eq!(build[0], "test");
        assert!(build.contains(&"--workspace") && build.contains(&"--all-features"));
        assert!(!build.contains(&"--release") && !build.contains(&"--no-run"));
        assert_eq!(chaos_args(&options, Path::new("/w")), ["--smoke"]);
    }

    #[test]
    fn the_full_run_is_a_release_build_that_writes_at_the_root() {
        let options = parse(&strings(&[
            "--scenarios",
            "slow,flaky-10",
            "--duration-scale",
            "0.25",
        ]))
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
            chaos_args(&options, Path::new("/w")),
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
        let debug = parse(&strings(&["--debug"])).unwrap();
        assert!(cargo_build(&debug).contains(&"--no-run"));
        assert_eq!(
            chaos_args(&debug, Path::new("/w"))[3],
            "cargo xtask chaos --debug"
        );
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&strings(&["--scenarios"])).is_err());
        assert!(parse(&strings(&["--rounds", "3"])).is_err());
        assert!(parse(&strings(&["--smoke", "--duration-scale", "2"])).is_err());
        assert!(parse(&strings(&["--smoke", "--scenarios", "slow"])).is_ok());
    }
}
