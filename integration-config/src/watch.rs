//! Live reload: a `watch` channel of validated snapshots fed by LISTEN/NOTIFY and a periodic poll.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use integration_core::names;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::model::Config;
use crate::snapshot::Snapshot;
use crate::store::{PgStore, RowSet, StoreError};

/// Default interval of the safety-net poll: 30 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Default longest wait between reconnections of the listener: 1 s.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a watcher polls and reconnects.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Interval of the full re-read that catches anything a lost notification missed. Default 30 s.
    pub poll_interval: Duration,
    /// First wait before reconnecting the listener. Default 100 ms.
    pub min_backoff: Duration,
    /// Longest wait between reconnection attempts (the wait doubles up to it). Default 1 s, so that a
    /// change made while the database was away is served within about a second of its return however
    /// long the outage was (each reconnection re-reads every row). A reconnection attempt is one
    /// connection a second at most: cheap for the database.
    pub max_backoff: Duration,
    /// Longest one reconnection attempt of the listener may take (a partitioned network sends no
    /// reset, so a connection attempt could otherwise hang). Default 2 s.
    pub connect_timeout: Duration,
    /// Longest a full read of the store may take before it counts as a failure (a partitioned network
    /// sends no reset, so a query could otherwise hang). Default 10 s.
    pub read_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: DEFAULT_POLL_INTERVAL,
            min_backoff: Duration::from_millis(100),
            max_backoff: DEFAULT_MAX_BACKOFF,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(10),
        }
    }
}

impl WatchOptions {
    /// Sets the poll interval.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the read timeout.
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the bound on one reconnection attempt of the listener.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the reconnection backoff bounds.
    #[must_use]
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }
}

/// A stored row the watcher refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The version refused.
    pub version: i64,
    /// Every problem, with paths.
    pub reason: String,
}

/// What a watcher has done so far, from [`WatchHandle::status`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct WatchStatus {
    /// Revision of the snapshot in force (0: the initial one).
    pub revision: u64,
    /// Store version of each integration in force.
    pub versions: BTreeMap<String, i64>,
    /// When the database was last read successfully (tokio clock).
    pub last_success: Option<Instant>,
    /// When a new snapshot was last published.
    pub last_applied: Option<Instant>,
    /// The most recent failure: a database error or a rejected row. Kept after recovery, with its time.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<Instant>,
    /// Rows currently refused; their integrations keep their last good configuration (or stay absent).
    pub rejected: BTreeMap<String, Rejection>,
    /// Whether the LISTEN connection is up.
    pub listening: bool,
    /// Whether the last read of the database failed (the last good snapshot stays in force).
    pub unreachable: bool,
}

/// Controls a running watcher. Dropping it stops the watcher: receivers then keep the last snapshot and
/// see the channel closed.
#[must_use = "dropping the handle stops the watcher"]
pub struct WatchHandle {
    status: Arc<Mutex<WatchStatus>>,
    reload: Arc<Notify>,
    task: JoinHandle<()>,
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// The watcher's status: versions in force, last success, last error, rejected rows.
    pub fn status(&self) -> WatchStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks for a full re-read now, without waiting for a notification or the poll.
    pub fn reload_now(&self) {
        self.reload.notify_one();
    }

    /// Whether the watcher task has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the watcher.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Loads the stored integrations over `base` and follows every change.
    ///
    /// Returns a receiver of validated [`Snapshot`]s (the first one already in it) and the handle that
    /// keeps the watcher running. A change is picked up through `LISTEN "<schema>.integrations"` (with
    /// reconnection and exponential backoff capped at [`max_backoff`](WatchOptions::max_backoff), 1 s by
    /// default, and a full re-read on every reconnection, so a change made while the database was away
    /// is served within about a second of its return) and, as a safety net, a full re-read every
    /// [`poll_interval`](WatchOptions::poll_interval). A snapshot is published only when something
    /// changed.
    ///
    /// Each row is validated on its own, with `base`'s defaults applied and against `base`'s `[redis]`. An
    /// invalid row is rejected: its integration keeps its last good configuration, the rejection is
    /// logged at `warn`, counted in [`names::CONFIG_RELOADS`] with `outcome = "rejected"` and shown in
    /// [`WatchHandle::status`]. A database outage keeps the last good snapshot (`outcome = "unreachable"`)
    /// and the watcher catches up when the database returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the first read fails: there is no last good snapshot to keep.
    ///
    /// ```no_run
    /// use integration_config::{Config, PgStore, WatchOptions};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/app", "integration_config").await?;
    /// let (mut snapshots, handle) = store.watch(Config::new(), WatchOptions::default()).await?;
    /// while snapshots.changed().await.is_ok() {
    ///     let snapshot = snapshots.borrow_and_update().clone();
    ///     println!("revision {}: {:?}", snapshot.revision(), snapshot.versions());
    /// }
    /// # drop(handle);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn watch(
        &self,
        base: Config,
        options: WatchOptions,
    ) -> Result<(watch::Receiver<Arc<Snapshot>>, WatchHandle), StoreError> {
        let status = Arc::new(Mutex::new(WatchStatus::default()));
        let mut watcher = Watcher {
            store: self.clone(),
            base,
            options,
            status: status.clone(),
            rejected: BTreeMap::new(),
            sender: None,
        };
        let rows = self.load_rows(&watcher.base).await?;
        let (config, versions) = watcher.merge(rows, &Snapshot::default());
        let first = Snapshot::with_versions(config, versions, 0);
        watcher.update_status(|s| {
            s.versions = first.versions().clone();
            s.last_success = Some(Instant::now());
            s.last_applied = Some(Instant::now());
        });
        let (tx, rx) = watch::channel(Arc::new(first));
        watcher.sender = Some(tx);
        let reload = Arc::new(Notify::new());
        let task = tokio::spawn(watcher.run(reload.clone()));
        Ok((
            rx,
            WatchHandle {
                status,
                reload,
                task,
            },
        ))
    }
}

struct Watcher {
    store: PgStore,
    base: Config,
    options: WatchOptions,
    status: Arc<Mutex<WatchStatus>>,
    /// Rows refused, by name, with the version refused: a rejection is reported once per version.
    rejected: BTreeMap<String, i64>,
    sender: Option<watch::Sender<Arc<Snapshot>>>,
}

impl Watcher {
    fn update_status(&self, f: impl FnOnce(&mut WatchStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn record_error(&self, message: String) {
        self.update_status(|s| {
            s.last_error = Some(message);
            s.last_error_at = Some(Instant::now());
        });
    }

    async fn run(mut self, reload: Arc<Notify>) {
        let (events_tx, mut events) = mpsc::channel(64);
        let (reset, reset_rx) = watch::channel(0u64);
        // The listener runs in a task of its own so that `try_recv` is never cancelled halfway through
        // a message by the poll or a reload request; it ends with this task.
        let _listener = AbortOnDrop(tokio::spawn(listen(
            self.store.clone(),
            self.options.clone(),
            events_tx,
            reset_rx,
        )));
        let start = Instant::now() + self.options.poll_interval;
        let mut poll = tokio::time::interval_at(start, self.options.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let read = tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(ListenEvent::Connected) => {
                        self.update_status(|s| s.listening = true);
                        tracing::debug!(channel = %self.store.channel(), "configuration listener connected");
                        // Notifications sent while nobody listened are lost: read everything.
                        self.reload().await
                    }
                    Some(ListenEvent::Notified(payload)) => {
                        tracing::debug!(%payload, "configuration change notified");
                        // Several changes may be queued: one re-read covers them all (and whatever else
                        // queued up is noted, not lost).
                        while let Ok(queued) = events.try_recv() {
                            match queued {
                                ListenEvent::Notified(_) => {}
                                ListenEvent::Connected => self.update_status(|s| s.listening = true),
                                ListenEvent::Lost(message) => self.listener_lost(message),
                            }
                        }
                        self.reload().await
                    }
                    Some(ListenEvent::Lost(message)) => {
                        self.listener_lost(message);
                        true
                    }
                },
                _ = poll.tick() => self.reload().await,
                () = reload.notified() => self.reload().await,
            };
            if !read {
                // The database did not answer a query: the LISTEN connection may be dead without
                // knowing it (a partition sends no reset) and would miss notifications. Renew it.
                reset.send_modify(|n| *n += 1);
            }
        }
    }

    /// The listener's connection is gone, or another reconnection attempt failed: logged at `warn`
    /// when it was listening, at `debug` for each further attempt (one line per outage, not one a
    /// second).
    fn listener_lost(&self, message: String) {
        let was_listening = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .listening;
        if was_listening {
            tracing::warn!(error = %message, "configuration listener lost its connection; reconnecting");
        } else {
            tracing::debug!(error = %message, "configuration listener still cannot connect");
        }
        self.record_error(message);
        self.update_status(|s| s.listening = false);
    }

    /// Re-reads every row; `false` when the store could not be read.
    async fn reload(&mut self) -> bool {
        let read =
            tokio::time::timeout(self.options.read_timeout, self.store.load_rows(&self.base)).await;
        let read = read.unwrap_or_else(|_| {
            Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "reading the store took longer than {:?}",
                    self.options.read_timeout
                ),
            ))))
        });
        match read {
            Ok(rows) => {
                self.apply(rows);
                true
            }
            Err(e) => {
                metrics::counter!(names::CONFIG_RELOADS, names::OUTCOME => "unreachable")
                    .increment(1);
                tracing::warn!(error = %e, "configuration store unreachable; the last good configuration stays in force");
                self.record_error(e.to_string());
                self.update_status(|s| s.unreachable = true);
                false
            }
        }
    }

    /// Builds the configuration of `rows` over the base, keeping `current`'s entry for each refused row.
    fn merge(&mut self, rows: RowSet, current: &Snapshot) -> (Config, BTreeMap<String, i64>) {
        let mut config = self.base.clone();
        let mut versions = BTreeMap::new();
        for (name, (version, integration)) in rows.good {
            config.integrations.insert(name.clone(), integration);
            versions.insert(name, version);
        }
        let mut rejected = BTreeMap::new();
        for (name, (version, reason)) in rows.rejected {
            if let (Some(previous), Some(previous_version)) = (
                current.config().integrations.get(&name),
                current.version(&name),
            ) {
                config.integrations.insert(name.clone(), previous.clone());
                versions.insert(name.clone(), previous_version);
            }
            if self.rejected.get(&name) != Some(&version) {
                metrics::counter!(names::CONFIG_RELOADS, names::OUTCOME => "rejected").increment(1);
                tracing::warn!(
                    integration = %name,
                    version,
                    reason = %reason,
                    "configuration row rejected; the last good configuration stays in force"
                );
                self.record_error(reason.clone());
            }
            rejected.insert(name, Rejection { version, reason });
        }
        self.rejected = rejected
            .iter()
            .map(|(name, r)| (name.clone(), r.version))
            .collect();
        self.update_status(|s| s.rejected = rejected);
        (config, versions)
    }

    fn apply(&mut self, rows: RowSet) {
        let Some(sender) = self.sender.clone() else {
            return;
        };
        let current = sender.borrow().clone();
        let (config, versions) = self.merge(rows, &current);
        let now = Instant::now();
        self.update_status(|s| {
            s.last_success = Some(now);
            s.unreachable = false;
        });
        if &config == current.config() && &versions == current.versions() {
            return;
        }
        let revision = current.revision() + 1;
        tracing::info!(revision, versions = ?versions, "configuration applied");
        self.update_status(|s| {
            s.revision = revision;
            s.versions = versions.clone();
            s.last_applied = Some(now);
        });
        sender.send_replace(Arc::new(Snapshot::with_versions(
            config, versions, revision,
        )));
        metrics::counter!(names::CONFIG_RELOADS, names::OUTCOME => "applied").increment(1);
    }
}

/// What the listener task reports.
enum ListenEvent {
    /// LISTEN is in place (first time or after a reconnection).
    Connected,
    /// A change was notified; the payload names it.
    Notified(String),
    /// The connection is gone or could not be made; the task retries after a backoff.
    Lost(String),
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect_listener(store: &PgStore) -> Result<PgListener, sqlx::Error> {
    // A pool of its own, so the long-lived LISTEN connection never takes one of the store's.
    let options = store.pool().connect_options().as_ref().clone();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(&store.channel()).await?;
    Ok(listener)
}

/// Keeps a LISTEN connection up, with exponential backoff between attempts, and reports through
/// `events`. A change of `reset` drops the connection in use and makes a new one (a request made before
/// the connection was made does not count).
async fn listen(
    store: PgStore,
    options: WatchOptions,
    events: mpsc::Sender<ListenEvent>,
    mut reset: watch::Receiver<u64>,
) {
    let mut backoff = options.min_backoff;
    loop {
        let attempt = tokio::time::timeout(options.connect_timeout, connect_listener(&store)).await;
        let attempt = attempt.unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting took longer than {:?}", options.connect_timeout),
            )))
        });
        let mut listener = match attempt {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?backoff, "configuration listener cannot connect");
                if events
                    .send(ListenEvent::Lost(format!("listener: {e}")))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        backoff = options.min_backoff;
        reset.borrow_and_update();
        if events.send(ListenEvent::Connected).await.is_err() {
            return;
        }
        let lost = loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if events.send(ListenEvent::Notified(notification.payload().to_owned())).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "listener: connection lost".to_owned(),
                    Err(e) => break format!("listener: {e}"),
                },
                // Cancelling `try_recv` is harmless here: the connection is thrown away.
                _ = reset.changed() => break "listener: renewed after a failed read of the store".to_owned(),
            }
        };
        drop(listener);
        if events.send(ListenEvent::Lost(lost)).await.is_err() {
            return;
        }
    }
}
