//! Project chores for this workspace, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: everything the CI checks, in order, stopping at the first failure: `fmt`,
//!   `services`, `clippy`, `minimal` and `minimal-test` (the layer crates and the facade without
//!   features), `test` (unit, integration and doc tests), `doc`, `bench-smoke` and `chaos-smoke`.
//! - `cargo xtask services`: whether the Redis at `REDIS_URL` and the PostgreSQL at `DATABASE_URL`
//!   answer; a server that is down at its default loopback address is started when installed.
//! - `cargo xtask bench [--smoke]`: the benchmark against the raw client and the peer stack (see
//!   `bench.rs`); `--smoke` is the short run that `ci` runs.
//! - `cargo xtask chaos [--smoke]`: the chaos suite of issues 12 and 13 (see `chaos.rs`); `--smoke`
//!   is the short run that `ci` ends with.
//!
//! Dependency-free on purpose: xtask compiles in seconds on a fresh machine, before the workspace.

use std::env;
use std::process::ExitCode;

mod bench;
mod chaos;
mod ci;
mod disk;
mod probe;
mod service_url;
mod services;
mod suite;
mod timing;

/// The usage text of `cargo xtask help`.
const USAGE: &str = "\
Project chores for this workspace.

Usage: cargo xtask <command>

Commands:
  ci        run every CI check in order, stopping at the first failure:
            fmt, services, clippy, minimal and minimal-test (the crates without features),
            test (unit, integration and doc tests), doc, bench-smoke, chaos-smoke
  services  check that Redis (REDIS_URL) and PostgreSQL (DATABASE_URL) answer;
            a server down at its default loopback address is started if installed
  bench     the benchmark (release, by hand): writes BENCHMARKS.md and benchmarks.json;
            arguments are passed on to it (--rounds N, --duration SECS, --scenarios a,b,
            --instructions N: calls counted under valgrind's callgrind, 0 for none,
            --count-runs R: each subject counted R times, the median reported)
  bench --smoke
            every scenario for a fraction of a second, no file written (a ci step)
  chaos     the chaos suite (release, by hand): the facade against a fault upstream and
            through Redis and PostgreSQL outages; writes CHAOS.md and chaos.json;
            --scenarios a,b, --duration-scale X, --rate-scale X, --debug (the debug build)
  chaos --smoke [--scenarios a,b]
            every scenario for a few seconds, asserting only what holds whatever the
            timing (no call lost or hung, no duplicated POST, attempts per call in a full
            outage); no file written (the last ci step)
  help      print this text

Environment:
  REDIS_URL     default redis://127.0.0.1:6379
  DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(command) = args.first() else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    if args.len() > 1 && command != "help" && command != "bench" && command != "chaos" {
        eprintln!(
            "xtask: `{command}` takes no arguments, got: {}\n",
            args[1..].join(" ")
        );
        eprint!("{USAGE}");
        return ExitCode::from(2);
    }
    match command.as_str() {
        "ci" => ci::run(),
        "services" => services::run(),
        "bench" => bench::run(&args[1..]),
        "chaos" => chaos::run(&args[1..]),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        unknown => {
            eprintln!("xtask: unknown command `{unknown}`\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
