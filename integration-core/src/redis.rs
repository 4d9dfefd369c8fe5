//! One bounded way to talk to Redis, shared by every user of it (feature `redis`).
//!
//! The rate limiter's store, the token store and any later user (the cache) reach Redis through a
//! [`SharedRedis`]. It exists so that a Redis outage costs a caller nothing more than a few tens of
//! milliseconds, once:
//!
//! - **Every command is bounded** by [`command_timeout`](SharedRedisConfig::with_command_timeout)
//!   (default 50 ms), every connection attempt by
//!   [`connect_timeout`](SharedRedisConfig::with_connect_timeout) (default 500 ms), and the
//!   underlying `redis` connection manager makes one attempt per reconnection (no retry loop with a
//!   growing backoff to wait behind).
//! - **An outage is noticed at once**: the first command that times out or loses its connection
//!   marks Redis unavailable. From then on [`SharedRedis::run`] fails at once, without a round
//!   trip, and each user takes its fallback (the limiter its local share, the token store this
//!   process' memory).
//! - **Its return is found in the background**: a task PINGs Redis every
//!   [`probe_interval`](SharedRedisConfig::with_probe_interval) (default 250 ms) while it is
//!   unavailable, and marks it available again on the first answer. No caller ever waits for it.
//! - **One log line and one metric per transition**, never per call: `warn` when Redis is lost and
//!   `info` when it answers again; the gauge [`names::REDIS_AVAILABLE`]
//!   (1 or 0) and the counter [`names::REDIS_TRANSITIONS`]
//!   labelled [`names::OUTCOME`] `lost` or `restored`.
//!
//! It lives here, in `integration-core` behind a feature, because the layer crates depend on this
//! crate only: the limiter and the token store (and the cache) share one implementation of the
//! bounds and one view of whether Redis is up, and a team that takes no Redis-backed layer
//! compiles none of it.
//!
//! ```no_run
//! use std::time::Duration;
//! use integration_core::redis::{SharedRedis, SharedRedisConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SharedRedisConfig::new().with_command_timeout(Duration::from_millis(30));
//! let redis = SharedRedis::open("redis://127.0.0.1:6379", config)?;
//! // A bounded PING: false (and one warning) when Redis is absent; callers then use their fallbacks.
//! let up = redis.check().await;
//! let answer: Result<String, _> = redis
//!     .run(|mut connection| async move { ::redis::cmd("PING").query_async(&mut connection).await })
//!     .await;
//! assert_eq!(answer.is_ok(), up);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError};

use crate::names;

/// The bounds of a [`SharedRedis`].
///
/// ```
/// use std::time::Duration;
/// use integration_core::redis::SharedRedisConfig;
///
/// let config = SharedRedisConfig::new()
///     .with_command_timeout(Duration::from_millis(20))
///     .with_connect_timeout(Duration::from_millis(300))
///     .with_probe_interval(Duration::from_millis(100));
/// assert_eq!(config.command_timeout(), Duration::from_millis(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRedisConfig {
    command_timeout: Duration,
    connect_timeout: Duration,
    probe_interval: Duration,
}

impl SharedRedisConfig {
    /// Default command timeout: 50 ms.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(50);
    /// Default connection timeout: 500 ms.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default probe interval while Redis is unavailable: 250 ms.
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

    /// The defaults: 50 ms per command, 500 ms per connection attempt, a probe every 250 ms.
    pub fn new() -> Self {
        Self {
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            probe_interval: Self::DEFAULT_PROBE_INTERVAL,
        }
    }

    /// How long one command (or script) may take before Redis counts as unavailable. Zero is raised
    /// to 1 ms.
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one connection attempt may take. Zero is raised to 1 ms.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often Redis is probed while unavailable. Zero is raised to 10 ms.
    #[must_use]
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// The connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The probe interval.
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    /// The `redis` connection manager settings these bounds stand for: one attempt per
    /// reconnection, bounded by the connection timeout. Responses are bounded per call by
    /// [`SharedRedis::run_within`] (a user may give one call a longer bound than the default), and
    /// only by it: the crate's own response timeout (500 ms unless set) is off, as it cut a longer
    /// bound short and armed a second timer for every command (issue 19).
    pub fn connection_manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.probe_interval)
    }
}

impl Default for SharedRedisConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a command through a [`SharedRedis`] did not answer.
///
/// Never shows the Redis URL (it may carry a password).
#[derive(Debug)]
pub struct RedisCallError {
    kind: CallErrorKind,
}

#[derive(Debug)]
enum CallErrorKind {
    /// Known unavailable: the command was not sent.
    Unavailable,
    /// No answer within the timeout.
    Timeout(Duration),
    /// The connection failed.
    Connection(RedisError),
    /// Redis answered with an error (a script error, a wrong type...): Redis itself is up.
    Redis(RedisError),
}

impl RedisCallError {
    fn unavailable() -> Self {
        Self {
            kind: CallErrorKind::Unavailable,
        }
    }

    /// True when Redis is unavailable (known down, no answer in time, or the connection failed):
    /// the caller should take its fallback. False when Redis answered with an error.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self.kind, CallErrorKind::Redis(_))
    }

    /// True when the command was sent and no answer came within the timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, CallErrorKind::Timeout(_))
    }

    /// The error from the `redis` crate, when there was one.
    pub fn redis_error(&self) -> Option<&RedisError> {
        match &self.kind {
            CallErrorKind::Connection(error) | CallErrorKind::Redis(error) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for RedisCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallErrorKind::Unavailable => f.write_str("Redis is unavailable"),
            CallErrorKind::Timeout(timeout) => {
                write!(f, "Redis did not answer within {timeout:?}")
            }
            CallErrorKind::Connection(_) => f.write_str("the connection to Redis failed"),
            CallErrorKind::Redis(_) => f.write_str("Redis answered with an error"),
        }
    }
}

impl std::error::Error for RedisCallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.redis_error()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}

/// A Redis connection with bounded waits and a shared view of whether Redis is up; see the
/// [module docs](self).
///
/// Building one does no I/O and needs no runtime: the connection is made on first use, so a
/// process starts whether Redis is there or not. [`check`](Self::check) asks at once, bounded.
///
/// # Clone
///
/// Clones share the connection, the availability and the probe: every user of one `SharedRedis`
/// learns of an outage from the first one to meet it.
#[derive(Clone)]
pub struct SharedRedis {
    inner: Arc<Inner>,
}

struct Inner {
    client: Option<Client>,
    config: SharedRedisConfig,
    manager: OnceLock<ConnectionManager>,
    available: AtomicBool,
    probing: AtomicBool,
}

impl SharedRedis {
    /// Redis at `url` (`redis://`, `rediss://`, `unix://`), connected on first use.
    ///
    /// # Errors
    ///
    /// When `url` is not a Redis URL. The error does not show the URL.
    pub fn open(url: &str, config: SharedRedisConfig) -> Result<Self, RedisError> {
        Ok(Self::new(Client::open(url)?, config))
    }

    /// Redis through `client`, connected on first use.
    pub fn new(client: Client, config: SharedRedisConfig) -> Self {
        Self::build(Some(client), None, config)
    }

    /// A connection manager built elsewhere, with these bounds on commands and probes. Its own
    /// reconnection settings still apply to its reconnections: build it with
    /// [`SharedRedisConfig::connection_manager_config`] (or use [`new`](Self::new)) so that none of
    /// them waits long.
    pub fn from_manager(manager: ConnectionManager, config: SharedRedisConfig) -> Self {
        Self::build(None, Some(manager), config)
    }

    fn build(
        client: Option<Client>,
        manager: Option<ConnectionManager>,
        config: SharedRedisConfig,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(manager) = manager {
            let _ = cell.set(manager);
        }
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                manager: cell,
                available: AtomicBool::new(true),
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &SharedRedisConfig {
        &self.inner.config
    }

    /// Whether Redis is believed up: true until a command fails for want of Redis, then false until
    /// a background probe gets an answer.
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Acquire)
    }

    /// Runs `op` on the connection within the command timeout. See [`run_within`](Self::run_within).
    ///
    /// # Errors
    ///
    /// As [`run_within`](Self::run_within).
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_within(self.inner.config.command_timeout, op).await
    }

    /// Runs `op` on (a clone of) the connection, waiting at most `timeout` for it. While Redis is
    /// unavailable it fails at once and `op` is not called; a timeout or a connection failure marks
    /// Redis unavailable (one `warn`) and starts the background probe.
    ///
    /// # Errors
    ///
    /// A [`RedisCallError`]: [`is_unavailable`](RedisCallError::is_unavailable) when the caller
    /// should use its fallback, else the error Redis answered with.
    pub async fn run_within<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.is_available() {
            return Err(RedisCallError::unavailable());
        }
        let Some(manager) = self.manager() else {
            self.lost(&"the connection manager could not be created");
            return Err(RedisCallError::unavailable());
        };
        match tokio::time::timeout(timeout, op(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_outage(&error) => {
                self.lost(&error);
                Err(RedisCallError {
                    kind: CallErrorKind::Connection(error),
                })
            }
            Ok(Err(error)) => Err(RedisCallError {
                kind: CallErrorKind::Redis(error),
            }),
            Err(_elapsed) => {
                self.lost(&format_args!("no answer within {timeout:?}"));
                Err(RedisCallError {
                    kind: CallErrorKind::Timeout(timeout),
                })
            }
        }
    }

    /// Asks Redis now (a PING, bounded by the connection and command timeouts) and returns whether
    /// it answered. A failure marks Redis unavailable (logged once) and starts the probe; an answer
    /// marks it available.
    pub async fn check(&self) -> bool {
        if self.ping().await {
            self.restored();
            true
        } else {
            self.lost(&"no answer to PING");
            false
        }
    }

    fn manager(&self) -> Option<ConnectionManager> {
        if let Some(manager) = self.inner.manager.get() {
            return Some(manager.clone());
        }
        let client = self.inner.client.clone()?;
        let config = self.inner.config.connection_manager_config();
        // Lazy: no I/O here. It fails only for settings we never use (RESP3 push resubscription).
        let manager = ConnectionManager::new_lazy_with_config(client, config).ok()?;
        Some(self.inner.manager.get_or_init(|| manager).clone())
    }

    /// One bounded PING. When the connection is known broken the first one only starts a
    /// reconnection, so a failed PING is repeated once to use it.
    async fn ping(&self) -> bool {
        let Some(manager) = self.manager() else {
            return false;
        };
        let bound = self.inner.config.connect_timeout + self.inner.config.command_timeout;
        for _ in 0..2 {
            let mut connection = manager.clone();
            let pong = tokio::time::timeout(
                bound,
                ::redis::cmd("PING").query_async::<String>(&mut connection),
            )
            .await;
            if matches!(pong, Ok(Ok(_))) {
                return true;
            }
        }
        false
    }

    fn lost(&self, why: &dyn fmt::Display) {
        if self.inner.available.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = %why,
                "Redis unavailable: rate limits fall back to each replica's share and tokens stay in \
                 this process until it answers again"
            );
            metrics::gauge!(names::REDIS_AVAILABLE).set(0.0);
            metrics::counter!(names::REDIS_TRANSITIONS, names::OUTCOME => "lost").increment(1);
        }
        self.start_probe();
    }

    fn restored(&self) {
        if !self.inner.available.swap(true, Ordering::AcqRel) {
            tracing::info!("Redis answers again: shared rate limits and tokens resume");
            metrics::gauge!(names::REDIS_AVAILABLE).set(1.0);
            metrics::counter!(names::REDIS_TRANSITIONS, names::OUTCOME => "restored").increment(1);
        }
    }

    fn start_probe(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to probe from: the next `check` will.
            self.inner.probing.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.inner.config.probe_interval;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let redis = SharedRedis { inner };
                if redis.ping().await {
                    redis.inner.probing.store(false, Ordering::Release);
                    redis.restored();
                    return;
                }
            }
        });
    }
}

/// Errors that mean Redis cannot be used now, as opposed to an error answer from it.
fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

impl From<ConnectionManager> for SharedRedis {
    /// A connection manager built elsewhere, with the default bounds.
    fn from(manager: ConnectionManager) -> Self {
        Self::from_manager(manager, SharedRedisConfig::default())
    }
}

impl fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's connection info may hold a password: not shown.
        f.debug_struct("SharedRedis")
            .field("config", &self.inner.config)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port with nothing listening (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn an_absent_redis_is_noticed_at_once_and_then_costs_no_round_trip() {
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let redis = SharedRedis::open(&url, SharedRedisConfig::new()).unwrap();
        assert!(redis.is_available(), "believed up until asked");
        let called = AtomicBool::new(false);
        let first: Result<String, _> =
            redis
                .run(|mut connection| async move {
                    ::redis::cmd("PING").query_async(&mut connection).await
                })
                .await;
        assert!(first.unwrap_err().is_unavailable());
        assert!(!redis.is_available());
        let second: Result<(), _> = redis
            .run(|_connection| async {
                called.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let error = second.unwrap_err();
        assert!(error.is_unavailable());
        assert_eq!(error.to_string(), "Redis is unavailable");
        assert!(
            !called.load(Ordering::SeqCst),
            "no command while unavailable"
        );
        assert!(!redis.check().await);
    }

    #[test]
    fn debug_and_errors_never_show_the_url() {
        let redis = SharedRedis::open(
            "redis://:hunter2-password@127.0.0.1:1",
            SharedRedisConfig::new(),
        )
        .unwrap();
        assert!(!format!("{redis:?}").contains("hunter2"));
        let error =
            SharedRedis::open("not a url :pw-hunter2", SharedRedisConfig::new()).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn zero_bounds_are_raised() {
        let config = SharedRedisConfig::new()
            .with_command_timeout(Duration::ZERO)
            .with_connect_timeout(Duration::ZERO)
            .with_probe_interval(Duration::ZERO);
        assert_eq!(config.command_timeout(), Duration::from_millis(1));
        assert_eq!(config.connect_timeout(), Duration::from_millis(1));
        assert_eq!(config.probe_interval(), Duration::from_millis(10));
        let manager = config.connection_manager_config();
        assert_eq!(manager.number_of_retries(), 0);
        assert_eq!(manager.connection_timeout(), Some(Duration::from_millis(1)));
        assert_eq!(
            manager.response_timeout(),
            None,
            "run_within bounds every call"
        );
    }

    /// With the crate's response timeout off, `run_within` is the only bound on a Redis that accepts
    /// the connection and never answers (a hung server, a black-holed link): the call fails as a
    /// timeout within its bound, and Redis is marked unavailable, so the next calls cost no wait.
    #[tokio::test]
    async fn a_redis_that_never_answers_times_out_within_the_call_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts every connection, reads whatever comes, answers nothing.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = SharedRedisConfig::new()
            .with_command_timeout(Duration::from_millis(200))
            .with_connect_timeout(Duration::from_secs(5));
        let redis = SharedRedis::open(&format!("redis://{address}"), config).unwrap();
        let started = tokio::time::Instant::now();
        // The outer bound only turns a hang (the regression) into a failure instead of a stuck test.
        let answer: Result<String, _> = tokio::time::timeout(
            Duration::from_secs(30),
            redis.run(|mut connection| async move {
                ::redis::cmd("PING").query_async(&mut connection).await
            }),
        )
        .await
        .expect("run_within bounds a silent server");
        let took = started.elapsed();
        let error = answer.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(!redis.is_available());
        silent.abort();
    }

    /// Regression (issue 19): the `redis` crate's own response timeout (500 ms by default) cut
    /// short a call given a longer bound. A `BLPOP` that blocks 0.7 s on a key nothing pushes to
    /// answers within a 3 s bound, and Redis stays available.
    #[tokio::test]
    async fn a_call_bound_past_half_a_second_is_honoured() {
        let redis =
            SharedRedis::open(&crate::testing::redis_url(), SharedRedisConfig::new()).unwrap();
        let key = format!("integration-core-test:blpop:{}", std::process::id());
        let answer: Result<Option<(String, String)>, _> = redis
            .run_within(Duration::from_secs(3), |mut connection| async move {
                ::redis::cmd("BLPOP")
                    .arg(&key)
                    .arg(0.7)
                    .query_async(&mut connection)
                    .await
            })
            .await;
        assert_eq!(
            answer.unwrap(),
            None,
            "BLPOP times out with nil after 0.7 s"
        );
        assert!(redis.is_available());
    }
}
