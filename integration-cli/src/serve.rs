//! `integration serve`: the stack as an HTTP egress gateway (the `integration-gateway` crate).
//!
//! The configuration sources are the command's global options (`--config`, `--env-prefix` is not
//! applied by the gateway, `--database-url`, `--schema`, `--redis-url`), so that `serve` reads the
//! same sources as every other command. SIGTERM or SIGINT starts the gateway's drain.

use integration_gateway::ServeArgs;

use crate::cli::Global;
use crate::exit::{Exit, Failure};

/// Runs the gateway until it has drained after SIGTERM or SIGINT.
pub(crate) async fn run(mut args: ServeArgs, global: &Global) -> Result<Exit, Failure> {
    let sources = &global.sources;
    args.config = sources.config.clone();
    args.database_url = sources.database_url.clone();
    args.database_schema = sources.schema.clone();
    args.redis_url = sources.redis_url.clone();
    // The gateway logs to stderr like a service; RUST_LOG chooses what (info by default).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match integration_gateway::serve(args, terminated()).await {
        Ok(()) => Ok(Exit::Success),
        Err(error) => {
            let exit = if error.is_config() || error.is_caller_auth() {
                Exit::Config
            } else {
                Exit::Failure
            };
            let mut message = format!("serve: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(Failure::new(exit, message))
        }
    }
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C): the start of the drain.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
