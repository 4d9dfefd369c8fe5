//! The PostgreSQL store: versioned integration rows, a history table, optimistic concurrency.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::chrono::{DateTime, Utc};
// Dynamic SQL only interpolates the schema, checked by `check_schema` to be a plain identifier.
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use crate::model::{
    AUTH_SECRET_FIELDS, Config, IntegrationConfig, PROXY_SECRET_FIELDS, is_reference,
    merge_defaults,
};
use crate::secret::SecretError;
use crate::snapshot::Snapshot;
use crate::validate::ValidationErrors;

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "integration_config";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database answered with an error, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The embedded migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `put` or `delete` expected another version (optimistic concurrency): someone changed the row first.
    #[error("version conflict on integration {name}: expected version {expected}, found {}", actual.map_or_else(|| "no row".to_owned(), |v| v.to_string()))]
    VersionConflict {
        /// The integration.
        name: String,
        /// The version the caller expected (0: the row must not exist).
        expected: i64,
        /// The version found (`None`: no row).
        actual: Option<i64>,
    },
    /// A secret is written as a plaintext value; the database only holds `${env:..}`/`${file:..}` references.
    #[error(
        "integrations.{name}.{path}: plaintext secrets are refused in the database; use a ${{env:NAME}} or ${{file:/path}} reference"
    )]
    PlaintextSecret {
        /// The integration.
        name: String,
        /// The field, relative to the integration (`auth.token`).
        path: String,
    },
    /// The configuration does not validate.
    #[error("integrations.{name} is invalid:\n{errors}")]
    Invalid {
        /// The integration.
        name: String,
        /// Every problem, paths relative to the integration.
        errors: ValidationErrors,
    },
    /// A stored row cannot be read as an integration configuration.
    #[error("integrations.{name} (version {version}) cannot be read: {message}")]
    Corrupt {
        /// The integration.
        name: String,
        /// The row's version.
        version: i64,
        /// The path and the problem.
        message: String,
    },
    /// The schema name is not a plain lowercase identifier.
    #[error(
        "invalid schema name {0:?}: use 1 to 48 characters of a-z, 0-9 and _, starting with a letter or _"
    )]
    InvalidSchema(String),
    /// The integration name is not acceptable.
    #[error("invalid integration name {0:?}: use ASCII letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    /// The integration name differs from another integration's only by case or `-`/`_` (`pay` and
    /// `PAY`): an environment override could not tell them apart.
    #[error(
        "integrations.{name}: differs from `{existing}` only by case or `-`/`_`; an environment \
         override could not tell them apart, so rename one"
    )]
    ConfusableName {
        /// The integration refused.
        name: String,
        /// The integration already there.
        existing: String,
    },
    /// [`PgStore::rollback`] was asked for a version the integration's history does not hold.
    #[error("integrations.{name} has no version {version} in its history")]
    UnknownVersion {
        /// The integration.
        name: String,
        /// The version asked for.
        version: i64,
    },
    /// The configuration could not be encoded as JSON.
    #[error("cannot encode the configuration: {0}")]
    Encode(#[from] serde_json::Error),
}

impl StoreError {
    /// `true` for [`StoreError::VersionConflict`].
    pub fn is_version_conflict(&self) -> bool {
        matches!(self, StoreError::VersionConflict { .. })
    }

    /// `true` when the database could not be reached or answered with an error.
    pub fn is_database(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Migrate(_))
    }
}

/// One stored integration.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoredIntegration {
    /// Its name.
    pub name: String,
    /// Its version: 1 on creation, +1 on every `put`.
    pub version: i64,
    /// The configuration, secrets resolved.
    pub config: IntegrationConfig,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote it last.
    pub updated_by: String,
}

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// The row was created.
    Insert,
    /// The row was replaced.
    Update,
    /// The row was deleted (the entry holds its last configuration).
    Delete,
}

/// One entry of an integration's history, as written by the table's trigger.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The integration.
    pub name: String,
    /// The version written (for a delete: the version deleted).
    pub version: i64,
    /// What happened.
    pub operation: ChangeKind,
    /// The configuration as stored (JSON, secrets as references). Kept raw: an old entry need not match
    /// today's model.
    pub config: serde_json::Value,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Who (`updated_by`, or the actor given to `delete`).
    pub changed_by: String,
    /// Why, when the writer said ([`Change::with_reason`]).
    pub reason: Option<String>,
}

/// Who makes a change to the store, and why: recorded in the history by
/// [`PgStore::put_with`] and [`PgStore::rollback`].
///
/// ```
/// use integration_config::Change;
///
/// let change = Change::by("ops@example.com").with_reason("INC-42: the vendor asked for 5 per second");
/// assert_eq!(change.actor(), "ops@example.com");
/// assert_eq!(change.reason(), Some("INC-42: the vendor asked for 5 per second"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    actor: String,
    reason: Option<String>,
}

impl Change {
    /// A change made by `actor` (a person or a deploy job), with no reason given.
    pub fn by(actor: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            reason: None,
        }
    }

    /// Why the change is made (a ticket, an incident, a sentence); an empty reason records none.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        self.reason = (!reason.is_empty()).then_some(reason);
        self
    }

    /// Who.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Why, if said.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// The outcome of reading every row: the good ones, and the rejected ones with the reason.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowSet {
    pub(crate) good: BTreeMap<String, (i64, IntegrationConfig)>,
    pub(crate) rejected: BTreeMap<String, (i64, String)>,
}

/// Integration configurations in PostgreSQL.
///
/// Everything lives in one schema (default [`DEFAULT_SCHEMA`]): the `integrations` table (`name`,
/// `version`, `config jsonb`, `updated_at`, `updated_by`), the `integrations_history` table written by a
/// trigger in the same transaction as the change, and the migrations record. The same trigger sends
/// `NOTIFY "<schema>.integrations"` with `{"name", "version", "operation"}`. Every query names the schema
/// explicitly, so the pool's `search_path` does not matter. Queries are built at runtime: no database is
/// needed to compile.
///
/// Secrets are stored as references only: [`put`](Self::put) refuses a plaintext secret, and so does
/// every read.
///
/// ```no_run
/// use integration_config::{IntegrationConfig, PgStore, Secret};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/app", "integration_config").await?;
/// store.migrate().await?;
///
/// let stripe = IntegrationConfig::builder("https://api.stripe.com/v1/")
///     .bearer(Secret::parse("${env:STRIPE_KEY}"))
///     .max_attempts(5)
///     .build()?;
/// let v1 = store.put("stripe", &stripe, Some(0), "ops@example.com").await?; // create
/// let v2 = store.put("stripe", &stripe, Some(v1), "ops@example.com").await?; // update from v1
/// assert_eq!(v2, v1 + 1);
/// assert!(store.put("stripe", &stripe, Some(v1), "late@example.com").await.unwrap_err().is_version_conflict());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    schema: String,
    quoted: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let ok = schema.len() <= 48
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(schema.to_owned()))
    }
}

impl PgStore {
    /// Connects a pool to `database_url` for a store in `schema`.
    ///
    /// The pool fails an acquisition after 5 s, so that a database outage shows up quickly in a watcher's
    /// status instead of stalling it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidSchema`], or [`StoreError::Database`] when the database cannot be reached.
    pub async fn connect(database_url: &str, schema: &str) -> Result<Self, StoreError> {
        check_schema(schema)?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect(database_url)
            .await?;
        Self::new(pool, schema)
    }

    /// A store over an existing pool.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidSchema`] unless `schema` is 1 to 48 characters of `a-z`, `0-9` and `_`.
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        check_schema(schema)?;
        Ok(PgStore {
            pool,
            schema: schema.to_owned(),
            quoted: format!("\"{schema}\""),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The NOTIFY channel of this store: `<schema>.integrations`.
    pub fn channel(&self) -> String {
        format!("{}.integrations", self.schema)
    }

    /// Creates the schema if needed and applies the embedded migrations (idempotent; concurrent callers
    /// are serialized by the migrator's advisory lock).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] or [`StoreError::Migrate`].
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // A dedicated connection, detached from the pool and closed afterwards, so that the search_path
        // the migrations need never leaks into pooled connections.
        let mut conn = self.pool.acquire().await?.detach();
        let result = async {
            conn.execute(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                self.quoted
            )))
            .await?;
            conn.execute(AssertSqlSafe(format!("SET search_path TO {}", self.quoted)))
                .await?;
            MIGRATOR.run_direct(None, &mut conn, false).await?;
            Ok::<_, StoreError>(())
        }
        .await;
        let _ = conn.close().await;
        result
    }

    /// Drops the store's schema with everything in it: rows, history, migrations record, trigger.
    ///
    /// Destructive and final; for uninstalling and for tests that run in a schema of their own.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.quoted
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn table(&self) -> String {
        format!("{}.integrations", self.quoted)
    }

    /// Writes an integration and returns its new version.
    ///
    /// `expected_version` is the optimistic-concurrency check: `None` writes whatever is there, `Some(0)`
    /// only creates (the row must not exist), `Some(n)` only replaces version `n`. The history entry and
    /// the NOTIFY are part of the same transaction.
    ///
    /// The configuration is validated first (secret references are not resolved here: the writing
    /// process need not hold the secrets) and a plaintext secret is refused.
    ///
    /// The same as [`put_with`](Self::put_with) with `Change::by(updated_by)` (no reason).
    ///
    /// # Errors
    ///
    /// [`StoreError::VersionConflict`], [`StoreError::PlaintextSecret`], [`StoreError::Invalid`],
    /// [`StoreError::InvalidName`], [`StoreError::ConfusableName`] (another row's name differs only by
    /// case or `-`/`_`), [`StoreError::Database`].
    pub async fn put(
        &self,
        name: &str,
        config: &IntegrationConfig,
        expected_version: Option<i64>,
        updated_by: &str,
    ) -> Result<i64, StoreError> {
        self.put_with(name, config, expected_version, &Change::by(updated_by))
            .await
    }

    /// Writes an integration as [`put`](Self::put) does, recording who made the change and why in the
    /// history ([`HistoryEntry::changed_by`], [`HistoryEntry::reason`]).
    ///
    /// ```no_run
    /// use integration_config::{Change, IntegrationConfig, PgStore};
    ///
    /// # async fn example(store: PgStore, stripe: IntegrationConfig) -> Result<(), integration_config::StoreError> {
    /// let version = store
    ///     .put_with("stripe", &stripe, None, &Change::by("ops@example.com").with_reason("INC-42: slower retries"))
    ///     .await?;
    /// let history = store.history("stripe").await?;
    /// assert_eq!(history.last().unwrap().reason.as_deref(), Some("INC-42: slower retries"));
    /// # let _ = version;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    pub async fn put_with(
        &self,
        name: &str,
        config: &IntegrationConfig,
        expected_version: Option<i64>,
        change: &Change,
    ) -> Result<i64, StoreError> {
        check_name(name)?;
        self.refuse_confusable(name).await?;
        refuse_plaintext(name, config)?;
        validate_for_store(name, config)?;
        let json = serde_json::to_value(config)?;
        let table = self.table();
        let statement = match expected_version {
            None => format!(
                "INSERT INTO {table} AS t (name, version, config, updated_at, updated_by) \
                 VALUES ($1, 1, $2, now(), $3) \
                 ON CONFLICT (name) DO UPDATE SET version = t.version + 1, config = EXCLUDED.config, \
                 updated_at = now(), updated_by = EXCLUDED.updated_by \
                 RETURNING version"
            ),
            Some(0) => format!(
                "INSERT INTO {table} (name, version, config, updated_at, updated_by) \
                 VALUES ($1, 1, $2, now(), $3) ON CONFLICT (name) DO NOTHING RETURNING version"
            ),
            Some(_) => format!(
                "UPDATE {table} SET version = version + 1, config = $2, updated_at = now(), updated_by = $3 \
                 WHERE name = $1 AND version = $4 RETURNING version"
            ),
        };
        // The reason reaches the history trigger as a transaction-local setting, like the actor of
        // a delete.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('integration_config.reason', $1, true)")
            .bind(change.reason.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        let mut query = sqlx::query(AssertSqlSafe(statement))
            .bind(name)
            .bind(&json)
            .bind(&change.actor);
        if let Some(expected) = expected_version.filter(|v| *v != 0) {
            query = query.bind(expected);
        }
        let row = query.fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(row.try_get::<i64, _>("version")?),
            None => Err(StoreError::VersionConflict {
                name: name.to_owned(),
                expected: expected_version.unwrap_or_default(),
                actual: self.current_version(name).await?,
            }),
        }
    }

    /// Writes the configuration that `name` had at `version` (from its history) as a new version, and
    /// returns that new version. Rolling back adds to the history; it never rewrites it. The old
    /// configuration is validated and checked for plaintext secrets as any [`put`](Self::put) is.
    ///
    /// `expected_version` is the optimistic-concurrency check of [`put`](Self::put) on the current row.
    ///
    /// ```no_run
    /// use integration_config::{Change, PgStore};
    ///
    /// # async fn example(store: PgStore) -> Result<(), integration_config::StoreError> {
    /// // Version 3 broke something: go back to what version 2 said.
    /// let v4 = store.rollback("stripe", 2, Some(3), &Change::by("ops@example.com").with_reason("v3 broke refunds")).await?;
    /// assert_eq!(v4, 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownVersion`] when the history holds no such version, [`StoreError::Corrupt`]
    /// when that version no longer reads as a configuration, and the errors of [`put`](Self::put).
    pub async fn rollback(
        &self,
        name: &str,
        version: i64,
        expected_version: Option<i64>,
        change: &Change,
    ) -> Result<i64, StoreError> {
        // A name deleted and created again reuses version numbers: the latest write of `version` wins.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT config FROM {}.integrations_history \
             WHERE name = $1 AND version = $2 AND operation <> 'delete' ORDER BY id DESC LIMIT 1",
            self.quoted
        )))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::UnknownVersion {
                name: name.to_owned(),
                version,
            });
        };
        let json: serde_json::Value = row.try_get("config")?;
        let config = IntegrationConfig::from_json(json).map_err(|e| corrupt(name, version, e))?;
        self.put_with(name, &config, expected_version, change).await
    }

    /// Refuses `name` when another row's name is the same up to case and `-`/`_`.
    async fn refuse_confusable(&self, name: &str) -> Result<(), StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT name FROM {} WHERE lower(replace(name, '-', '_')) = $1 AND name <> $2 \
             ORDER BY name LIMIT 1",
            self.table()
        )))
        .bind(crate::validate::name_key(name))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Err(StoreError::ConfusableName {
                name: name.to_owned(),
                existing: row.try_get("name")?,
            }),
            None => Ok(()),
        }
    }

    async fn current_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT version FROM {} WHERE name = $1",
            self.table()
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("version")).transpose()?)
    }

    /// Reads one integration.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] or [`StoreError::PlaintextSecret`] for a row that does not read as a
    /// configuration, [`StoreError::Database`].
    pub async fn get(&self, name: &str) -> Result<Option<StoredIntegration>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, version, config, updated_at, updated_by FROM {} WHERE name = $1",
            self.table()
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| decode_stored(&row, &toml::Table::new()))
            .transpose()
    }

    /// Deletes an integration; `expected_version` as in [`put`](Self::put) (`None`: whatever is there).
    /// Returns whether a row was deleted. The history records `deleted_by`.
    ///
    /// # Errors
    ///
    /// [`StoreError::VersionConflict`] when the row has another version, [`StoreError::Database`].
    pub async fn delete(
        &self,
        name: &str,
        expected_version: Option<i64>,
        deleted_by: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('integration_config.actor', $1, true)")
            .bind(deleted_by)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE name = $1 AND ($2::bigint IS NULL OR version = $2) RETURNING version",
            self.table()
        )))
        .bind(name)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match (deleted, expected_version) {
            (Some(_), _) => Ok(true),
            (None, None) => Ok(false),
            (None, Some(expected)) => match self.current_version(name).await? {
                None => Ok(false),
                actual => Err(StoreError::VersionConflict {
                    name: name.to_owned(),
                    expected,
                    actual,
                }),
            },
        }
    }

    /// Reads every integration, by name.
    ///
    /// # Errors
    ///
    /// The first row that does not read ([`StoreError::Corrupt`], [`StoreError::PlaintextSecret`]), or
    /// [`StoreError::Database`].
    pub async fn list(&self) -> Result<Vec<StoredIntegration>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, version, config, updated_at, updated_by FROM {} ORDER BY name",
            self.table()
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| decode_stored(row, &toml::Table::new()))
            .collect()
    }

    /// The history of one integration, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, version, operation, config, changed_at, changed_by, reason \
             FROM {}.integrations_history WHERE name = $1 ORDER BY id",
            self.quoted
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let operation = match row.try_get::<String, _>("operation")?.as_str() {
                    "insert" => ChangeKind::Insert,
                    "update" => ChangeKind::Update,
                    _ => ChangeKind::Delete,
                };
                Ok(HistoryEntry {
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    operation,
                    config: row.try_get("config")?,
                    changed_at: row.try_get("changed_at")?,
                    changed_by: row.try_get("changed_by")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Reads every row, applying `base`'s defaults and validating each against `base` (its `[redis]`).
    pub(crate) async fn load_rows(&self, base: &Config) -> Result<RowSet, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, version, config, updated_at, updated_by FROM {} ORDER BY name",
            self.table()
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut set = RowSet::default();
        // Names already taken, up to case and `-`/`_`: the base's (a row of the same name replaces
        // its integration) and the rows accepted so far (in name order).
        let mut taken: BTreeMap<String, String> = base
            .integrations
            .keys()
            .map(|name| (crate::validate::name_key(name), name.clone()))
            .collect();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let version: i64 = row.try_get("version")?;
            if let Some(existing) = taken.get(&crate::validate::name_key(&name))
                && *existing != name
            {
                let refused = StoreError::ConfusableName {
                    name: name.clone(),
                    existing: existing.clone(),
                };
                set.rejected.insert(name, (version, refused.to_string()));
                continue;
            }
            let checked = decode_stored(row, &base.defaults).and_then(|stored| {
                let mut errors = ValidationErrors::default();
                crate::validate::integration(
                    &stored.config,
                    &format!("integrations.{name}"),
                    Some(base.redis.is_some()),
                    &mut errors,
                );
                if check_name(&name).is_err() {
                    return Err(StoreError::InvalidName(name.clone()));
                }
                match errors.into_result() {
                    Ok(()) => Ok(stored.config),
                    Err(errors) => Err(StoreError::Invalid {
                        name: name.clone(),
                        errors,
                    }),
                }
            });
            match checked {
                Ok(config) => {
                    taken.insert(crate::validate::name_key(&name), name.clone());
                    set.good.insert(name, (version, config));
                }
                Err(e) => {
                    set.rejected.insert(name, (version, e.to_string()));
                }
            }
        }
        Ok(set)
    }

    /// Loads a validated snapshot now: `base`'s integrations overlaid by the stored ones (the store wins),
    /// with `base`'s defaults applied to the stored rows and `base`'s `[redis]`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`], or the first rejected row.
    pub async fn load(&self, base: &Config) -> Result<Snapshot, StoreError> {
        let set = self.load_rows(base).await?;
        if let Some((name, (version, message))) = set.rejected.into_iter().next() {
            return Err(StoreError::Corrupt {
                name,
                version,
                message,
            });
        }
        let mut config = base.clone();
        let mut versions = BTreeMap::new();
        for (name, (version, integration)) in set.good {
            config.integrations.insert(name.clone(), integration);
            versions.insert(name, version);
        }
        Ok(Snapshot::with_versions(config, versions, 0))
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

fn refuse_plaintext(name: &str, config: &IntegrationConfig) -> Result<(), StoreError> {
    match config
        .secrets()
        .into_iter()
        .find(|(_, secret)| secret.is_literal())
    {
        Some((path, _)) => Err(StoreError::PlaintextSecret {
            name: name.to_owned(),
            path: path.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Validates for writing: a reference that does not resolve in this process is not an error here (the
/// writer need not hold the secrets; readers resolve at load).
fn validate_for_store(name: &str, config: &IntegrationConfig) -> Result<(), StoreError> {
    let unresolved: Vec<(&str, String)> = config
        .secrets()
        .into_iter()
        .filter_map(|(path, s)| match s.error() {
            Some(e @ (SecretError::MissingEnv(_) | SecretError::File { .. })) => {
                Some((path, e.to_string()))
            }
            _ => None,
        })
        .collect();
    let mut kept = ValidationErrors::default();
    if let Err(errors) = config.validate() {
        for e in errors.iter() {
            let from_unresolved = unresolved
                .iter()
                .any(|(path, message)| e.path == *path && e.message == *message);
            if !from_unresolved {
                kept.push(e.path.clone(), e.message.clone());
            }
        }
    }
    kept.into_result().map_err(|errors| StoreError::Invalid {
        name: name.to_owned(),
        errors,
    })
}

/// A stored configuration that no longer reads, with the path of the problem.
fn corrupt(name: &str, version: i64, error: crate::model::PathError) -> StoreError {
    StoreError::Corrupt {
        name: name.to_owned(),
        version,
        message: if error.path.is_empty() {
            error.message
        } else {
            format!("{}: {}", error.path, error.message)
        },
    }
}

fn decode_stored(row: &PgRow, defaults: &toml::Table) -> Result<StoredIntegration, StoreError> {
    let name: String = row.try_get("name")?;
    let version: i64 = row.try_get("version")?;
    let mut json: serde_json::Value = row.try_get("config")?;
    // Checked on the row as stored, before the defaults (which may come from a file) are applied.
    let sections: [(&str, &[&str]); 2] = [
        ("auth", &AUTH_SECRET_FIELDS),
        ("proxy", &PROXY_SECRET_FIELDS),
    ];
    for (section, fields) in sections {
        if let Some(table) = json.get(section).and_then(serde_json::Value::as_object) {
            for field in fields {
                if let Some(serde_json::Value::String(value)) = table.get(*field)
                    && !is_reference(value)
                {
                    return Err(StoreError::PlaintextSecret {
                        name,
                        path: format!("{section}.{field}"),
                    });
                }
            }
        }
    }
    if !defaults.is_empty()
        && let serde_json::Value::Object(obj) = &json
    {
        // Apply the defaults on the TOML tree, as the file source does.
        let table: Result<toml::Table, _> =
            serde_json::from_value(serde_json::Value::Object(obj.clone()));
        if let Ok(table) = table {
            json = serde_json::to_value(merge_defaults(defaults, table))?;
        }
    }
    let config = IntegrationConfig::from_json(json).map_err(|e| corrupt(&name, version, e))?;
    Ok(StoredIntegration {
        name,
        version,
        config,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}
