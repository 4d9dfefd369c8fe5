//! Where the configuration and the shared state come from: the same sources a service reads (a TOML
//! file, the environment, PostgreSQL, Redis), chosen by the global options.

use std::path::PathBuf;

use integration_config::{
    Config, ConfigDocument, DEFAULT_SCHEMA, PgStore, RedisConfig, Secret, StoreError,
};
use integration_core::redis::{SharedRedis, SharedRedisConfig};
use secrecy::ExposeSecret as _;

use crate::exit::{Exit, Failure};

/// The options every command shares: where the configuration and the shared state live.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Sources {
    /// The TOML configuration file
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "INTEGRATION_CONFIG",
        hide_env_values = true
    )]
    pub(crate) config: Option<PathBuf>,

    /// Prefix of the environment overrides applied to the file (PREFIX + INTEGRATIONS__NAME__FIELD)
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        env = "INTEGRATION_ENV_PREFIX",
        hide_env_values = true,
        default_value = ""
    )]
    pub(crate) env_prefix: String,

    /// PostgreSQL holding stored configuration (its rows override the file's integrations)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,

    /// The PostgreSQL schema of the configuration store
    #[arg(
        long,
        global = true,
        value_name = "SCHEMA",
        env = "INTEGRATION_SCHEMA",
        hide_env_values = true,
        default_value = DEFAULT_SCHEMA
    )]
    pub(crate) schema: String,

    /// Redis holding shared state (replaces the url of the file's [redis] section)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "REDIS_URL",
        hide_env_values = true
    )]
    pub(crate) redis_url: Option<String>,
}

impl Sources {
    /// The file with the environment overrides applied, not yet typed.
    fn document(&self) -> Result<Option<ConfigDocument>, Failure> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let document = ConfigDocument::from_file(path)?.apply_env(&self.env_prefix)?;
        Ok(Some(document))
    }

    /// The effective configuration, as a service with these sources would load it: the file, its
    /// environment overrides, then the rows of PostgreSQL (which win), validated. With `resolve`
    /// false, secrets need not resolve here (for showing and comparing configuration).
    pub(crate) async fn load(&self, resolve: bool) -> Result<Config, Failure> {
        let base = match self.document()? {
            Some(document) if resolve => document.build()?,
            Some(document) => document.build_unvalidated()?,
            None if self.database_url.is_some() => Config::new(),
            None => {
                return Err(Failure::config(
                    "no configuration: give --config FILE (or INTEGRATION_CONFIG), \
                     or --database-url (or DATABASE_URL)",
                ));
            }
        };
        let mut config = match &self.database_url {
            Some(_) => self.store().await?.load(&base).await?.into_config(),
            None => base,
        };
        if let Some(url) = &self.redis_url {
            let mut redis = config
                .redis
                .take()
                .unwrap_or_else(|| RedisConfig::new(Secret::new(url.clone())));
            redis.url = Secret::new(url.clone());
            config.redis = Some(redis);
        }
        Ok(config)
    }

    /// The configuration store (`--database-url`, `--schema`).
    pub(crate) async fn store(&self) -> Result<PgStore, Failure> {
        let Some(url) = &self.database_url else {
            return Err(Failure::config(
                "this command needs PostgreSQL: give --database-url (or DATABASE_URL)",
            ));
        };
        PgStore::connect(url, &self.schema)
            .await
            .map_err(|error| match error {
                StoreError::Database(e) => Failure::new(
                    Exit::Unavailable,
                    format!("PostgreSQL could not be reached: {e}"),
                ),
                other => other.into(),
            })
    }
}

/// The shared Redis of `config` and its key prefix, checked to answer.
pub(crate) async fn redis(config: &Config) -> Result<(SharedRedis, String), Failure> {
    let Some(redis) = &config.redis else {
        return Err(Failure::config(
            "no Redis: give --redis-url (or REDIS_URL), or a [redis] section in the configuration",
        ));
    };
    let bounds = SharedRedisConfig::new()
        .with_command_timeout(redis.command_timeout)
        .with_connect_timeout(redis.connect_timeout);
    // The URL may hold a password: never quoted.
    let connection = SharedRedis::open(redis.url.expose_secret(), bounds)
        .map_err(|_| Failure::config("redis.url: not a Redis URL"))?;
    if !connection.check().await {
        return Err(Failure::new(
            Exit::Unavailable,
            "Redis could not be reached (--redis-url, REDIS_URL or [redis] url)",
        ));
    }
    Ok((connection, redis.key_prefix.clone()))
}

/// Who makes a change: `--actor`, else `INTEGRATION_ACTOR`, else the login name.
pub(crate) fn default_actor() -> String {
    ["INTEGRATION_ACTOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}
