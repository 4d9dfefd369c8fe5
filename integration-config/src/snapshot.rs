//! A validated configuration as it was applied, with the versions it came from.

use std::collections::BTreeMap;

use crate::model::Config;

/// One validated configuration, as handed to followers (the client) through a
/// `tokio::sync::watch::Receiver<Arc<Snapshot>>`.
///
/// `versions` holds the store version of each integration that came from PostgreSQL (integrations from a
/// file or from code have none); `revision` counts the snapshots published by one watcher, starting at 0
/// for the initial one.
///
/// ```
/// use integration_config::{Config, Snapshot};
///
/// let snapshot = Snapshot::new(Config::new());
/// assert_eq!(snapshot.revision(), 0);
/// assert!(snapshot.config().integrations.is_empty());
/// assert_eq!(snapshot.version("github"), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    config: Config,
    versions: BTreeMap<String, i64>,
    revision: u64,
}

impl Snapshot {
    /// A snapshot of a configuration from a file or from code (no store versions), revision 0.
    pub fn new(config: Config) -> Self {
        Snapshot {
            config,
            versions: BTreeMap::new(),
            revision: 0,
        }
    }

    /// A snapshot with store versions and a revision number.
    pub fn with_versions(config: Config, versions: BTreeMap<String, i64>, revision: u64) -> Self {
        Snapshot {
            config,
            versions,
            revision,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, by value.
    pub fn into_config(self) -> Config {
        self.config
    }

    /// The store version of each integration that came from the store.
    pub fn versions(&self) -> &BTreeMap<String, i64> {
        &self.versions
    }

    /// The store version of one integration.
    pub fn version(&self, name: &str) -> Option<i64> {
        self.versions.get(name).copied()
    }

    /// The publication count of the watcher that made it (0 for the initial snapshot).
    pub fn revision(&self) -> u64 {
        self.revision
    }
}
