//! What the gateway's listeners share: the client, the caller check, the drain phases and the
//! per-integration counters the admin view shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use integration_client::Client;
use serde::Serialize;

use crate::caller::CallerAuth;

/// Where the configuration comes from, for the admin view.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConfigSource {
    pub(crate) file: Option<String>,
    pub(crate) database: bool,
}

/// What the gateway has seen of one integration since it started.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct IntegrationStats {
    pub(crate) requests: u64,
    pub(crate) in_flight: u64,
    /// Answers by status code (upstream answers and the gateway's own 4xx/5xx alike).
    pub(crate) responses: BTreeMap<u16, u64>,
    /// Calls the stack failed, by error kind (`timeout`, `circuit_open`...).
    pub(crate) failures: BTreeMap<&'static str, u64>,
    /// The last failure's message (errors never carry secrets).
    pub(crate) last_failure: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) caller: CallerAuth,
    pub(crate) replay_buffer: usize,
    pub(crate) source: ConfigSource,
    /// Configuration loaded (the gateway has a client).
    ready: AtomicBool,
    /// A drain started: readiness fails, requests are still served.
    draining: AtomicBool,
    /// The listener is closed: every answer carries `Connection: close`.
    closing: AtomicBool,
    stats: Mutex<HashMap<String, IntegrationStats>>,
    /// Store versions of the integrations in force (PostgreSQL), by name.
    versions: Mutex<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ready", &self.is_ready())
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        client: Client,
        caller: CallerAuth,
        replay_buffer: usize,
        source: ConfigSource,
    ) -> Arc<Self> {
        Arc::new(Shared {
            client,
            caller,
            replay_buffer,
            source,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stats: Mutex::new(HashMap::new()),
            versions: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub(crate) fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        metrics::gauge!(crate::names::DRAINING).set(1.0);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn set_versions(&self, versions: BTreeMap<String, i64>) {
        *self.versions.lock().unwrap_or_else(PoisonError::into_inner) = versions;
    }

    pub(crate) fn versions(&self) -> BTreeMap<String, i64> {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with_stats<R>(&self, name: &str, f: impl FnOnce(&mut IntegrationStats) -> R) -> R {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        match stats.get_mut(name) {
            Some(entry) => f(entry),
            None => f(stats.entry(name.to_owned()).or_default()),
        }
    }

    /// A request for a known integration starts.
    pub(crate) fn begin(&self, name: &str) {
        self.with_stats(name, |s| {
            s.requests += 1;
            s.in_flight += 1;
        });
    }

    /// It was answered with `status` (`failure`: the stack's error kind and message, if it failed).
    pub(crate) fn end(&self, name: &str, status: u16, failure: Option<(&'static str, String)>) {
        self.with_stats(name, |s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            *s.responses.entry(status).or_default() += 1;
            if let Some((kind, message)) = failure {
                *s.failures.entry(kind).or_default() += 1;
                s.last_failure = Some(message);
            }
        });
    }

    pub(crate) fn stats(&self, name: &str) -> IntegrationStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}
