//! The command line: global options and the commands. A new command is one variant of [`Command`]
//! and one arm in [`Command::run`].

use clap::{Parser, Subcommand};

use crate::exit::{EXIT_CODES, Exit, Failure};
use crate::output::Format;
use crate::sources::Sources;
use crate::{call, config, serve, status};

/// Debug third-party API integrations in production: call one through its whole stack, check and
/// change its configuration, see the state its replicas share.
#[derive(Debug, Parser)]
#[command(name = "integration", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    #[command(flatten)]
    pub(crate) sources: Sources,

    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,

    /// Print JSON for scripts (the same as --output json)
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Global {
    /// The format asked for: `--json` wins.
    pub(crate) fn format(&self) -> Format {
        if self.json { Format::Json } else { self.output }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Make one call through an integration's whole stack, as the service would
    Call(call::CallArgs),
    /// Validate, show, compare and change configuration
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show the state replicas share in Redis: rate-limit pauses and quotas, cached tokens
    Status(status::StatusArgs),
    /// Run the stack as an HTTP egress gateway: `/<integration>/<path>` through that
    /// integration's full stack; SIGTERM drains it
    Serve(integration_gateway::ServeArgs),
}

impl Command {
    /// Runs the command.
    pub(crate) async fn run(self, global: Global) -> Result<Exit, Failure> {
        match self {
            Command::Call(args) => call::run(args, &global).await,
            Command::Config(command) => config::run(command, &global).await,
            Command::Status(args) => status::run(args, &global).await,
            Command::Serve(args) => serve::run(args, &global).await,
        }
    }
}
