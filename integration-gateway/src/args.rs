//! The arguments of `integration serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

/// Where callers' requests are taken by default: every interface, port 8080.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// Where the admin endpoints (`/healthz`, `/readyz`, `/metrics`, `/integrations`) listen by
/// default: every interface, port 9090.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";

/// Default port of the gateway's listener (the one of [`DEFAULT_LISTEN`]).
pub const DEFAULT_PORT: u16 = 8080;

/// Default port of the admin listener (the one of [`DEFAULT_ADMIN_LISTEN`]).
pub const DEFAULT_ADMIN_PORT: u16 = 9090;

/// Default time, after a drain starts, during which new requests are still served: about the time
/// Kubernetes takes to take the pod out of its endpoints once readiness fails.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Default bound on the calls still in flight once the grace period is over.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Default interval at which the configuration file and the caller token file are read again.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Default largest request body read whole before it is sent, so that a retry can send it again:
/// 64 KiB. Larger bodies, and bodies of unknown length, stream and are sent once.
pub const DEFAULT_REPLAY_BUFFER: usize = 64 * 1024;

/// How callers authenticate to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum CallerAuthMode {
    /// A shared bearer token, read from `--caller-token-file` (and read again on each reload).
    Token,
    /// No caller authentication: anything that reaches the port spends the integrations'
    /// credentials. Only by explicit choice.
    None,
}

/// The arguments of `integration serve`: listeners, configuration sources, caller authentication
/// and draining. Every flag has an environment variable, for container deployments.
///
/// [`Default`] is every flag's default without reading the environment; it has caller
/// authentication on and no token file, which [`Gateway::bind`](crate::Gateway::bind) refuses.
///
/// ```
/// use clap::Parser;
/// use integration_gateway::{CallerAuthMode, ServeArgs};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     serve: ServeArgs,
/// }
///
/// let cli = Cli::try_parse_from([
///     "integration",
///     "--listen", "127.0.0.1:18080",
///     "--caller-token-file", "/var/run/secrets/integration/caller-token",
///     "--drain-grace", "3s",
/// ])
/// .unwrap();
/// assert_eq!(cli.serve.listen.port(), 18080);
/// assert_eq!(cli.serve.caller_auth, CallerAuthMode::Token);
/// assert_eq!(cli.serve.drain_grace, std::time::Duration::from_secs(3));
/// ```
#[derive(Clone, Debug, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// Address of the listener for callers' requests (`/<integration>/<path>`). Bound with
    /// SO_REUSEPORT, so that a second gateway can take the same port during a restart.
    #[arg(long, env = "INTEGRATION_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of the admin listener: /healthz, /readyz, /metrics and /integrations.
    #[arg(long, env = "INTEGRATION_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,

    /// The TOML configuration file, read again every --reload-interval. With a database it is
    /// the base (defaults, `[redis]`, integrations the database does not override), read once at
    /// start; the database's changes are then followed live. Not parsed here: the `integration`
    /// command sets it from its global `--config` (`INTEGRATION_CONFIG`), which every command
    /// shares.
    #[arg(skip)]
    pub config: Option<PathBuf>,

    /// PostgreSQL holding the integrations, followed live (LISTEN/NOTIFY and a periodic poll).
    /// Set from the command's global `--database-url` (`DATABASE_URL`).
    #[arg(skip)]
    pub database_url: Option<String>,

    /// The schema of the configuration tables in PostgreSQL. Set from the command's global
    /// `--schema` (`INTEGRATION_SCHEMA`).
    #[arg(skip = integration_config::DEFAULT_SCHEMA.to_owned())]
    pub database_schema: String,

    /// Redis for the state replicas share (rate limits, throttle pauses, tokens), when the
    /// configuration has no `[redis]` section of its own. Set from the command's global
    /// `--redis-url` (`REDIS_URL`).
    #[arg(skip)]
    pub redis_url: Option<String>,

    /// How callers authenticate: `token` (a shared bearer token) or `none` (explicitly off).
    #[arg(long, env = "INTEGRATION_CALLER_AUTH", value_enum, default_value_t = CallerAuthMode::Token)]
    pub caller_auth: CallerAuthMode,

    /// The file holding the callers' shared token (a mounted Kubernetes Secret); its final newline
    /// is ignored.
    #[arg(long, env = "INTEGRATION_CALLER_TOKEN_FILE", value_name = "FILE")]
    pub caller_token_file: Option<PathBuf>,

    /// The header callers send their token in: `authorization` takes `Bearer <token>`, any other
    /// header the bare token. It is removed before the request goes on.
    #[arg(
        long,
        env = "INTEGRATION_CALLER_AUTH_HEADER",
        default_value = "authorization"
    )]
    pub caller_auth_header: HeaderName,

    /// After SIGTERM: how long new requests are still served while readiness fails.
    #[arg(long, env = "INTEGRATION_DRAIN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,

    /// After the grace period: how long calls in flight may take to finish before the gateway
    /// exits anyway.
    #[arg(long, env = "INTEGRATION_DRAIN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How often the configuration file and the caller token file are read again.
    #[arg(long, env = "INTEGRATION_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Largest request body (by Content-Length) read whole before sending, so that retries can
    /// send it again; larger ones stream and are sent once.
    #[arg(long, env = "INTEGRATION_REPLAY_BUFFER", default_value_t = DEFAULT_REPLAY_BUFFER)]
    pub replay_buffer: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            admin_listen: DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("a valid default address"),
            config: None,
            database_url: None,
            database_schema: integration_config::DEFAULT_SCHEMA.to_owned(),
            redis_url: None,
            caller_auth: CallerAuthMode::Token,
            caller_token_file: None,
            caller_auth_header: http::header::AUTHORIZATION,
            drain_grace: DEFAULT_DRAIN_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            replay_buffer: DEFAULT_REPLAY_BUFFER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_default_is_what_an_empty_command_line_gives() {
        // Only flags whose environment variable is surely unset in a test run are compared.
        let parsed = Cli::try_parse_from(["integration"]).unwrap().serve;
        let default = ServeArgs::default();
        assert_eq!(parsed.drain_grace, default.drain_grace);
        assert_eq!(parsed.drain_timeout, default.drain_timeout);
        assert_eq!(parsed.reload_interval, default.reload_interval);
        assert_eq!(parsed.replay_buffer, default.replay_buffer);
        assert_eq!(parsed.caller_auth_header, default.caller_auth_header);
        assert_eq!(default.listen.port(), DEFAULT_PORT);
        assert_eq!(default.admin_listen.port(), DEFAULT_ADMIN_PORT);
    }

    #[test]
    fn caller_authentication_is_off_only_when_asked() {
        let parsed = Cli::try_parse_from(["integration", "--caller-auth", "none"])
            .unwrap()
            .serve;
        assert_eq!(parsed.caller_auth, CallerAuthMode::None);
        assert_eq!(ServeArgs::default().caller_auth, CallerAuthMode::Token);
    }
}
