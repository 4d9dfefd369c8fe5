//! `integration`: a command line for debugging third-party API integrations in production.
//!
//! It reads the configuration the way a service does (a TOML file, environment overrides,
//! PostgreSQL) and the state its replicas share (Redis). See `integration --help` and the README's
//! section "The `integration` command".

mod call;
mod cli;
mod config;
mod exit;
mod output;
mod sources;
mod status;
mod verbose;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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
