//! Loading the configuration (a file, PostgreSQL, or both) and following its changes.

use std::path::Path;
use std::sync::Arc;

use integration_client::Client;
use integration_config::{Config, ConfigDocument, PgStore, WatchHandle, WatchOptions};
use tokio::task::JoinHandle;

use crate::args::ServeArgs;
use crate::error::GatewayError;
use crate::state::Shared;

/// Reads the configuration file (or starts from an empty one) and adds `[redis] url` from
/// `--redis-url` when the file has no `[redis]` section.
pub(crate) fn load_file(
    file: Option<&Path>,
    redis_url: Option<&str>,
) -> Result<Config, GatewayError> {
    let mut document = match file {
        Some(path) => ConfigDocument::from_file(path).map_err(|e| {
            GatewayError::config(
                format!("the configuration {} does not load", path.display()),
                Some(e.into()),
            )
        })?,
        None => ConfigDocument::new(),
    };
    if let Some(url) = redis_url
        && !document.as_table().contains_key("redis")
    {
        let mut redis = toml::Table::new();
        redis.insert("url".to_owned(), toml::Value::String(url.to_owned()));
        document
            .table_mut()
            .insert("redis".to_owned(), toml::Value::Table(redis));
    }
    document
        .build()
        .map_err(|e| GatewayError::config("the configuration is not valid", Some(e.into())))
}

/// The live sources of a running gateway: the PostgreSQL watcher (if any) and the tasks that apply
/// its snapshots.
pub(crate) struct Live {
    watch: Option<WatchHandle>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("database", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the configuration the arguments name and builds the client. With a database the file (if
/// any) is the base the stored integrations are laid over, read once; without, the file is read
/// again every `--reload-interval` by [`follow_file`].
pub(crate) async fn start(
    args: &ServeArgs,
) -> Result<(Client, Option<LiveDatabase>), GatewayError> {
    if args.config.is_none() && args.database_url.is_none() {
        return Err(GatewayError::config(
            "no configuration: pass --config FILE, --database-url URL, or both",
            None,
        ));
    }
    let base = load_file(args.config.as_deref(), args.redis_url.as_deref())?;
    let Some(url) = &args.database_url else {
        let client = connect(base).await?;
        return Ok((client, None));
    };
    let store = PgStore::connect(url, &args.database_schema)
        .await
        .map_err(|e| GatewayError::config("PostgreSQL cannot be reached", Some(e.into())))?;
    store.migrate().await.map_err(|e| {
        GatewayError::config(
            "the configuration schema cannot be migrated",
            Some(e.into()),
        )
    })?;
    let (snapshots, handle) = store
        .watch(base, WatchOptions::default())
        .await
        .map_err(|e| {
            GatewayError::config(
                "the configuration cannot be read from PostgreSQL",
                Some(e.into()),
            )
        })?;
    let first = snapshots.borrow().config().clone();
    let client = connect(first).await?;
    Ok((client, Some(LiveDatabase { snapshots, handle })))
}

async fn connect(config: Config) -> Result<Client, GatewayError> {
    Client::connect(config)
        .await
        .map_err(|e| GatewayError::config("the integrations cannot be built", Some(e.into())))
}

/// The PostgreSQL watcher of a gateway configured from the database.
pub(crate) struct LiveDatabase {
    snapshots: tokio::sync::watch::Receiver<Arc<integration_config::Snapshot>>,
    handle: WatchHandle,
}

/// Follows every source: the database's snapshots, or the file; and the caller token file either
/// way. Also keeps the Prometheus recorder's histograms drained.
pub(crate) fn follow(
    shared: &Arc<Shared>,
    args: &ServeArgs,
    database: Option<LiveDatabase>,
    upkeep: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Live {
    let mut tasks = Vec::new();
    let mut watch = None;
    let file_reload = match database {
        Some(LiveDatabase { snapshots, handle }) => {
            shared.set_versions(snapshots.borrow().versions().clone());
            tasks.push(shared.client.follow(snapshots.clone()));
            let versions_of = shared.clone();
            let mut versions = snapshots;
            tasks.push(tokio::spawn(async move {
                while versions.changed().await.is_ok() {
                    let snapshot = versions.borrow_and_update().clone();
                    versions_of.set_versions(snapshot.versions().clone());
                }
            }));
            watch = Some(handle);
            None
        }
        None => args.config.clone(),
    };
    let shared = shared.clone();
    let interval = args.reload_interval;
    let redis_url = args.redis_url.clone();
    tasks.push(tokio::spawn(async move {
        let mut last = file_reload
            .as_deref()
            .and_then(|path| load_file(Some(path), redis_url.as_deref()).ok());
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            shared.caller.reload();
            if let Some(handle) = &upkeep {
                handle.run_upkeep();
            }
            let Some(path) = &file_reload else { continue };
            match load_file(Some(path), redis_url.as_deref()) {
                // Secrets are resolved at load: a rotated secret file makes the configuration
                // differ, and the update rebuilds only what it changed.
                Ok(config) if last.as_ref() != Some(&config) => {
                    match shared.client.update(config.clone()) {
                        Ok(report) => {
                            tracing::info!(
                                added = ?report.added,
                                changed = ?report.changed,
                                removed = ?report.removed,
                                "configuration reloaded"
                            );
                            last = Some(config);
                        }
                        Err(error) => tracing::warn!(
                            error = %crate::error::chain(&error),
                            "the new configuration was refused; the previous one stays in force"
                        ),
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    error = %crate::error::chain(&error),
                    "the configuration file does not load; the previous configuration stays in force"
                ),
            }
        }
    }));
    Live { watch, tasks }
}
