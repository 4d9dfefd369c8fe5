//! `integration`: a command line for debugging third-party API integrations in production.
//!
//! It reads the configuration the way a service does (a TOML file, environment overrides,
//! PostgreSQL) and the state its replicas share (Redis). See `integration --help` and the README's
//! section "The `integration` command". `integration serve` runs the stack as an HTTP egress
//! gateway (the `integration-gateway` crate).

mod call;
mod cli;
mod config;
mod exit;
mod output;
mod serve;
mod sources;
mod status;
mod verbose;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A debugging command needs two threads; the gateway takes one per core, as a service does.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !matches!(cli.command, cli::Command::Serve(_)) {
        builder.worker_threads(2);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error(&exit::Failure::new(
                exit::Exit::Failure,
                format!("cannot start the runtime: {error}"),
            ));
            return exit::Exit::Failure.into();
        }
    };
    match runtime.block_on(cli.command.run(cli.global)) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            output::error(&failure);
            failure.exit.into()
        }
    }
}
