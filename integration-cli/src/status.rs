//! `integration status [NAME]`: what the replicas of a service share in Redis, per integration:
//! the server pause and quota state of its rate limiter, and whether a token is cached and until
//! when. Never a token: the stores are asked with `PTTL`/`EXISTS` only.

use std::time::Duration;

use clap::Args;
use integration_client::stack::{SharedHandles, SharedState, token_prefix};
use integration_client::transport::Transport;
use integration_config::{IntegrationConfig, StoreKind};
use integration_core::redis::SharedRedis;
use integration_ratelimit::RateLimitKey;
use serde::Serialize;

use crate::cli::Global;
use crate::exit::{Exit, Failure};
use crate::output::{self, Format, GREEN, YELLOW, paint};

/// `status` arguments.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only this integration [default: every configured one]
    name: Option<String>,
}

/// The shared state of one integration.
#[derive(Debug, Serialize)]
struct Status {
    name: String,
    rate_limit: RateLimitStatus,
    /// The circuit breaker's state lives in each process: it is not shared.
    breaker: &'static str,
    token: TokenStatus,
}

#[derive(Debug, Serialize)]
#[serde(tag = "store", rename_all = "snake_case")]
enum RateLimitStatus {
    /// State in each process: nothing shared to show.
    Memory,
    Redis {
        /// Server pause left, in milliseconds.
        pause_ms: Option<u64>,
        pause_status: Option<u16>,
        /// Per quota, milliseconds until it is full again.
        quotas_full_in_ms: Vec<u64>,
        adaptive: bool,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "store", rename_all = "snake_case")]
enum TokenStatus {
    /// No token: a static credential or none.
    None,
    /// Tokens cached in each process.
    Memory,
    Redis {
        cached: bool,
        /// Milliseconds the cached token is still used; absent when none or no expiry.
        expires_in_ms: Option<u64>,
        refreshing: bool,
    },
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn run(args: StatusArgs, global: &Global) -> Result<Exit, Failure> {
    let config = global.sources.load(true).await?;
    let names: Vec<&String> = match &args.name {
        Some(name) => {
            let (name, _) = config
                .integrations
                .get_key_value(name)
                .ok_or_else(|| Failure::config(format!("unknown integration {name:?}")))?;
            vec![name]
        }
        None => config.integrations.keys().collect(),
    };
    let shared = names.iter().any(|name| {
        let integration = &config.integrations[*name];
        integration.rate_limit.store == StoreKind::Redis
            || integration.auth.store() == Some(StoreKind::Redis)
    });
    let redis = if shared || config.redis.is_some() {
        Some(crate::sources::redis(&config).await?)
    } else {
        None
    };
    let mut statuses = Vec::new();
    for name in names {
        statuses.push(status(name, &config.integrations[name], redis.as_ref()).await?);
    }
    match global.format() {
        Format::Json => output::json(&statuses)?,
        Format::Table => print(&statuses)?,
    }
    Ok(Exit::Success)
}

async fn status(
    name: &str,
    integration: &IntegrationConfig,
    redis: Option<&(SharedRedis, String)>,
) -> Result<Status, Failure> {
    fn unavailable(what: &str, e: &dyn std::fmt::Display) -> Failure {
        Failure::new(
            Exit::Unavailable,
            format!("{what} could not be read from Redis: {e}"),
        )
    }
    // The stack's own state, built as a service builds it, so every key is the one it uses.
    let handles = match redis {
        Some((connection, prefix)) => SharedHandles::new().with_redis(connection.clone(), prefix),
        None => SharedHandles::new(),
    };
    let transport = Transport::new().map_err(Failure::from)?;
    let state = SharedState::derive(name, integration, None, &handles, &transport)?;
    let rate_limit = match state.rate_limiter().redis_store() {
        Some(store) => {
            let key = RateLimitKey::from(name);
            let read = store
                .inspect(&key, integration.rate_limit.quotas.len())
                .await
                .map_err(|e| unavailable("the rate limit", &e))?;
            RateLimitStatus::Redis {
                pause_ms: read.pause.map(millis),
                pause_status: read.pause_status.map(|s| s.as_u16()),
                quotas_full_in_ms: read.quotas.iter().copied().map(millis).collect(),
                adaptive: read.adaptive,
            }
        }
        None => RateLimitStatus::Memory,
    };
    let key = state
        .credential_provider()
        .and_then(|provider| provider.cache_key().map(str::to_owned));
    let token = match (key, integration.auth.store(), redis) {
        (Some(key), Some(StoreKind::Redis), Some((connection, prefix))) => {
            let store =
                integration_auth::RedisTokenStore::new(connection.clone(), token_prefix(prefix));
            let read = store
                .inspect(&key)
                .await
                .map_err(|e| unavailable("the token cache", &e))?;
            TokenStatus::Redis {
                cached: read.cached,
                expires_in_ms: read.expires_in.map(millis),
                refreshing: read.refreshing,
            }
        }
        (Some(_), _, _) => TokenStatus::Memory,
        (None, _, _) => TokenStatus::None,
    };
    Ok(Status {
        name: name.to_owned(),
        rate_limit,
        breaker: "per process",
        token,
    })
}

fn ms(ms: u64) -> String {
    output::duration(Duration::from_millis(ms))
}

fn print(statuses: &[Status]) -> Result<(), Failure> {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let (pause, quotas) = match &s.rate_limit {
                RateLimitStatus::Memory => ("-".to_owned(), "in process".to_owned()),
                RateLimitStatus::Redis {
                    pause_ms,
                    pause_status,
                    quotas_full_in_ms,
                    adaptive,
                } => {
                    let pause = match (pause_ms, pause_status) {
                        (Some(left), Some(status)) => {
                            paint(YELLOW, format!("{} ({status})", ms(*left)))
                        }
                        (Some(left), None) => paint(YELLOW, ms(*left)),
                        _ => paint(GREEN, "none"),
                    };
                    let mut quotas: Vec<String> = quotas_full_in_ms
                        .iter()
                        .map(|left| {
                            if *left == 0 {
                                "full".to_owned()
                            } else {
                                format!("full in {}", ms(*left))
                            }
                        })
                        .collect();
                    if quotas.is_empty() {
                        quotas.push("no quota".to_owned());
                    }
                    if *adaptive {
                        quotas.push("adaptive rate learned".to_owned());
                    }
                    (pause, quotas.join(", "))
                }
            };
            let token = match &s.token {
                TokenStatus::None => "-".to_owned(),
                TokenStatus::Memory => "in process".to_owned(),
                TokenStatus::Redis {
                    cached: false,
                    refreshing,
                    ..
                } => {
                    let mut text = paint(YELLOW, "none cached");
                    if *refreshing {
                        text.push_str(", refreshing");
                    }
                    text
                }
                TokenStatus::Redis {
                    expires_in_ms,
                    refreshing,
                    ..
                } => {
                    let mut text = match expires_in_ms {
                        Some(left) => paint(GREEN, format!("cached, expires in {}", ms(*left))),
                        None => paint(GREEN, "cached, no expiry"),
                    };
                    if *refreshing {
                        text.push_str(", refreshing");
                    }
                    text
                }
            };
            vec![s.name.clone(), pause, quotas, s.breaker.to_owned(), token]
        })
        .collect();
    output::table(
        &["NAME", "SERVER PAUSE", "QUOTAS", "BREAKER", "TOKEN"],
        &rows,
    )
}
