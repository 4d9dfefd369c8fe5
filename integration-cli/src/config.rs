//! `integration config ...`: validate, show and compare configuration; with PostgreSQL, list, read
//! the history of, store and roll back integrations, each change recorded with who and why.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use integration_config::{
    Change, Config, ConfigDocument, ConfigError, IntegrationConfig, REDACTED_MARKER,
};
use serde_json::json;

use crate::cli::Global;
use crate::exit::{Exit, Failure};
use crate::output::{self, DIM, Format, GREEN, RED, paint};
use crate::sources::default_actor;

/// `integration config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file and report every error with its path
    Validate {
        /// The TOML file
        file: PathBuf,
    },
    /// Show one integration's effective configuration (defaults, environment overrides and stored
    /// rows applied; secrets as references)
    Show {
        /// The integration
        name: String,
    },
    /// Compare two configurations; each side is a TOML file, NAME@VERSION from the stored history,
    /// or NAME@current for the stored row
    Diff {
        /// The old side
        a: String,
        /// The new side
        b: String,
    },
    /// List the integrations stored in PostgreSQL
    List,
    /// Show the stored history of an integration: each version, who wrote it, when and why
    History {
        /// The integration
        name: String,
    },
    /// Store an integration in PostgreSQL from a TOML file, validated first
    Put(PutArgs),
    /// Store an earlier version of an integration again, as a new version
    Rollback(RollbackArgs),
}

/// Who makes a change and why, and the optimistic-concurrency check.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    /// Why the change is made (recorded in the history)
    #[arg(short = 'm', long, value_name = "TEXT")]
    reason: String,

    /// Who makes the change [default: the login name]
    #[arg(
        long,
        value_name = "WHO",
        env = "INTEGRATION_ACTOR",
        hide_env_values = true
    )]
    actor: Option<String>,

    /// Only write if the stored version is this one (0: only create)
    #[arg(long, value_name = "VERSION")]
    expect_version: Option<i64>,
}

impl ChangeArgs {
    fn change(&self) -> Change {
        let actor = self.actor.clone().unwrap_or_else(default_actor);
        Change::by(actor).with_reason(self.reason.clone())
    }
}

/// `config put`.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The integration
    name: String,
    /// A TOML file: the integration's table alone, or a configuration with [integrations.NAME]
    file: PathBuf,
    #[command(flatten)]
    change: ChangeArgs,
}

/// `config rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The integration
    name: String,
    /// The version to store again
    version: i64,
    #[command(flatten)]
    change: ChangeArgs,
}

pub(crate) async fn run(command: ConfigCommand, global: &Global) -> Result<Exit, Failure> {
    let format = global.format();
    match command {
        ConfigCommand::Validate { file } => validate(&file, format),
        ConfigCommand::Show { name } => {
            let config = global.sources.load(false).await?;
            let integration = find(&config, &name)?;
            show(&name, integration, format)
        }
        ConfigCommand::Diff { a, b } => diff(global, &a, &b, format).await,
        ConfigCommand::List => list(global, format).await,
        ConfigCommand::History { name } => history(global, &name, format).await,
        ConfigCommand::Put(args) => put(global, args, format).await,
        ConfigCommand::Rollback(args) => rollback(global, args, format).await,
    }
}

fn find<'a>(config: &'a Config, name: &str) -> Result<&'a IntegrationConfig, Failure> {
    config.integrations.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.integrations.keys().map(String::as_str).collect();
        Failure::config(format!(
            "unknown integration {name:?}; configured: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

fn validate(file: &Path, format: Format) -> Result<Exit, Failure> {
    let result = ConfigDocument::from_file(file).and_then(ConfigDocument::build);
    let errors: Vec<(String, String)> = match &result {
        Ok(_) => Vec::new(),
        Err(ConfigError::Io { .. }) => return Err(result.unwrap_err().into()),
        Err(error) => match error.validation_errors() {
            Some(errors) => errors
                .iter()
                .map(|e| (e.path.clone(), e.message.clone()))
                .collect(),
            None => vec![(String::new(), error.to_string())],
        },
    };
    match format {
        Format::Json => output::json(&json!({
            "file": file,
            "valid": errors.is_empty(),
            "errors": errors.iter().map(|(path, message)| json!({"path": path, "message": message})).collect::<Vec<_>>(),
        }))?,
        Format::Table => match &result {
            Ok(config) => output::line(&format!(
                "{} {}: {} integration(s)",
                paint(GREEN, "valid"),
                file.display(),
                config.integrations.len()
            ))?,
            Err(_) => {
                for (path, message) in &errors {
                    if path.is_empty() {
                        output::line(message)?;
                    } else {
                        output::line(&format!("{}: {message}", paint(RED, path)))?;
                    }
                }
                output::line(&format!("{} error(s) in {}", errors.len(), file.display()))?;
            }
        },
    }
    Ok(if errors.is_empty() {
        Exit::Success
    } else {
        Exit::Config
    })
}

/// The integration as shown: secrets as references (their `Serialize`), and the value of any
/// header the logs would redact replaced by the marker, so no credential set as a plain header is
/// printed.
fn shown(integration: &IntegrationConfig) -> IntegrationConfig {
    let redactor = integration_client::stack::redactor(&integration.log, &integration.auth);
    let mut integration = integration.clone();
    for (name, value) in &mut integration.headers {
        if redactor.is_sensitive(name) {
            *value = REDACTED_MARKER.to_owned();
        }
    }
    integration
}

/// One integration as TOML, under its `[integrations.NAME]` header.
fn to_toml(name: &str, integration: &IntegrationConfig) -> Result<String, Failure> {
    let config = Config::new().with_integration(name, shown(integration));
    config
        .to_toml_string()
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot write TOML: {e}")))
}

fn show(name: &str, integration: &IntegrationConfig, format: Format) -> Result<Exit, Failure> {
    match format {
        Format::Json => output::json(&shown(integration))?,
        Format::Table => output::line(to_toml(name, integration)?.trim_end())?,
    }
    Ok(Exit::Success)
}

/// One side of a diff, as TOML text.
async fn side(global: &Global, spec: &str, name: Option<&str>) -> Result<String, Failure> {
    let path = Path::new(spec);
    if path.is_file() {
        return match name {
            Some(name) => to_toml(name, &read_integration(name, path)?),
            None => {
                let config = ConfigDocument::from_file(path)?.build_unvalidated()?;
                let mut shown_config = Config::new();
                for (name, integration) in &config.integrations {
                    shown_config = shown_config.with_integration(name, shown(integration));
                }
                shown_config
                    .to_toml_string()
                    .map_err(|e| Failure::new(Exit::Failure, format!("cannot write TOML: {e}")))
            }
        };
    }
    let Some((name, version)) = spec.rsplit_once('@') else {
        return Err(Failure::config(format!(
            "{spec}: neither a file nor NAME@VERSION (or NAME@current)"
        )));
    };
    let store = global.sources.store().await?;
    let integration = if version == "current" {
        store
            .get(name)
            .await?
            .ok_or_else(|| Failure::config(format!("integrations.{name} is not stored")))?
            .config
    } else {
        let version: i64 = version.parse().map_err(|_| {
            Failure::config(format!("{spec}: the version must be a number or `current`"))
        })?;
        let entry = store
            .history(name)
            .await?
            .into_iter()
            .rev()
            .find(|entry| entry.version == version)
            .ok_or_else(|| {
                Failure::config(format!("integrations.{name} has no version {version}"))
            })?;
        serde_json::from_value(entry.config).map_err(|e| {
            Failure::config(format!(
                "integrations.{name} version {version} no longer reads: {e}"
            ))
        })?
    };
    to_toml(name, &integration)
}

/// The integration a `NAME@VERSION` side names, to narrow a file side to it.
fn named(spec: &str) -> Option<&str> {
    if Path::new(spec).is_file() {
        return None;
    }
    spec.rsplit_once('@').map(|(name, _)| name)
}

async fn diff(global: &Global, a: &str, b: &str, format: Format) -> Result<Exit, Failure> {
    let name = named(a).or_else(|| named(b));
    let old = side(global, a, name).await?;
    let new = side(global, b, name).await?;
    let diff = similar::TextDiff::from_lines(&old, &new);
    let unified = diff.unified_diff().header(a, b).to_string();
    let equal = old == new;
    match format {
        Format::Json => output::json(&json!({"equal": equal, "diff": unified}))?,
        Format::Table if equal => output::line(&paint(DIM, "no differences"))?,
        Format::Table => {
            for line in unified.lines() {
                let painted = match line.chars().next() {
                    Some('+') if !line.starts_with("+++") => paint(GREEN, line),
                    Some('-') if !line.starts_with("---") => paint(RED, line),
                    Some('@') => paint(DIM, line),
                    _ => line.to_owned(),
                };
                output::line(&painted)?;
            }
        }
    }
    Ok(if equal { Exit::Success } else { Exit::Failure })
}

async fn list(global: &Global, format: Format) -> Result<Exit, Failure> {
    let store = global.sources.store().await?;
    let stored = store.list().await?;
    match format {
        Format::Json => output::json(
            &stored
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "version": s.version,
                        "updated_at": s.updated_at.to_rfc3339(),
                        "updated_by": s.updated_by,
                        "base_url": s.config.base_url.as_str(),
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        Format::Table => {
            let rows: Vec<Vec<String>> = stored
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.version.to_string(),
                        s.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        s.updated_by.clone(),
                        s.config.base_url.to_string(),
                    ]
                })
                .collect();
            output::table(&["NAME", "VERSION", "UPDATED", "BY", "BASE URL"], &rows)?;
        }
    }
    Ok(Exit::Success)
}

async fn history(global: &Global, name: &str, format: Format) -> Result<Exit, Failure> {
    let store = global.sources.store().await?;
    let entries = store.history(name).await?;
    if entries.is_empty() {
        return Err(Failure::config(format!(
            "integrations.{name} has no history in the store"
        )));
    }
    match format {
        Format::Json => output::json(
            &entries
                .iter()
                .map(|e| {
                    json!({
                        "version": e.version,
                        "operation": e.operation,
                        "changed_at": e.changed_at.to_rfc3339(),
                        "changed_by": e.changed_by,
                        "reason": e.reason,
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        Format::Table => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.version.to_string(),
                        serde_json::to_value(e.operation)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        e.changed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        e.changed_by.clone(),
                        e.reason.clone().unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            output::table(&["VERSION", "CHANGE", "AT", "BY", "REASON"], &rows)?;
        }
    }
    Ok(Exit::Success)
}

/// The integration `name` from a file holding either its table alone or a whole configuration.
fn read_integration(name: &str, file: &Path) -> Result<IntegrationConfig, Failure> {
    let document = ConfigDocument::from_file(file)?;
    let document = if document.as_table().contains_key("integrations") {
        document
    } else {
        let mut integrations = toml::Table::new();
        integrations.insert(
            name.to_owned(),
            toml::Value::Table(document.as_table().clone()),
        );
        let mut wrapped = ConfigDocument::new();
        wrapped
            .table_mut()
            .insert("integrations".to_owned(), toml::Value::Table(integrations));
        wrapped
    };
    let config = document.build_unvalidated()?;
    config.integrations.get(name).cloned().ok_or_else(|| {
        Failure::config(format!(
            "{} has no [integrations.{name}] table",
            file.display()
        ))
    })
}

fn written(name: &str, version: i64, note: &str, format: Format) -> Result<Exit, Failure> {
    match format {
        Format::Json => output::json(&json!({"name": name, "version": version}))?,
        Format::Table => output::line(&format!(
            "integrations.{name}: version {} stored{note}",
            paint(GREEN, version)
        ))?,
    }
    Ok(Exit::Success)
}

async fn put(global: &Global, args: PutArgs, format: Format) -> Result<Exit, Failure> {
    let integration = read_integration(&args.name, &args.file)?;
    let store = global.sources.store().await?;
    store.migrate().await?;
    let version = store
        .put_with(
            &args.name,
            &integration,
            args.change.expect_version,
            &args.change.change(),
        )
        .await?;
    written(&args.name, version, "", format)
}

async fn rollback(global: &Global, args: RollbackArgs, format: Format) -> Result<Exit, Failure> {
    let store = global.sources.store().await?;
    let version = store
        .rollback(
            &args.name,
            args.version,
            args.change.expect_version,
            &args.change.change(),
        )
        .await?;
    written(
        &args.name,
        version,
        &format!(" (the configuration of version {})", args.version),
        format,
    )
}
