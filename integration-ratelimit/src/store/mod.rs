//! Where the state of each key lives: in this process ([`MemoryStore`]) or in Redis (`RedisStore`,
//! feature `redis`, shared by every replica).
//!
//! # Why a boxed future
//!
//! [`RateLimitStore`] is object safe, with boxed futures, so one [`RateLimiter`](crate::RateLimiter)
//! type serves every store and a configuration reload can switch stores without changing the service
//! type. A store that does I/O pays a network round trip per call, next to which one allocation is
//! noise. The built-in [`MemoryStore`] never goes through the box: the limiter calls its synchronous
//! decision directly, so the in-memory hot path allocates nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use integration_core::BoxError;

use crate::key::RateLimitKey;
use crate::policy::RateLimitPolicy;

pub(crate) mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{MAX_REJOIN_KEYS, RedisOptions, RedisStore, SharedKeyState};

/// The future a [`RateLimitStore`] returns.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

/// What the store decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A permit of every quota is reserved for the caller, who may send after `wait`.
    Granted {
        /// How long to wait before sending (zero: at once).
        wait: Duration,
    },
    /// No permit within the bound; nothing was reserved.
    Denied {
        /// When to come back.
        retry_after: Duration,
        /// True when a server pause, not the client quota, refused.
        by_server: bool,
        /// The status of the response that started the server pause, when known.
        status: Option<StatusCode>,
    },
}

/// One acquisition: the key, the policy in force, and how long this call may wait.
#[derive(Debug, Clone)]
pub struct Acquire {
    /// The key.
    pub key: RateLimitKey,
    /// The policy in force (its quotas, and its bound on server pauses).
    pub policy: Arc<RateLimitPolicy>,
    /// How long this call may wait: the policy's `max_wait`, shortened by the request's deadline.
    pub max_wait: Duration,
}

/// What one response told the limiter about its key: the input of [`RateLimitStore::observe`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Observation {
    /// The key.
    pub key: RateLimitKey,
    /// The policy in force (its quotas and adaptation).
    pub policy: Arc<RateLimitPolicy>,
    /// The response's status.
    pub status: StatusCode,
    /// The pause the response asks of every caller of the key (zero: none).
    pub pause: Duration,
    /// True for a throttle answer (429, or 503 with `Retry-After`): the key's rate decreases.
    pub throttled: bool,
    /// How long ago the request was sent: an answer to a request sent before the key's last decrease
    /// does not decrease it again.
    pub sent_ago: Duration,
    /// What remains of the server's window, and the time to its reset, when the response says so.
    pub remaining: Option<(u64, Duration)>,
}

impl Observation {
    /// An observation of `status` for `key`, carrying no signal yet.
    pub fn new(key: RateLimitKey, policy: Arc<RateLimitPolicy>, status: StatusCode) -> Self {
        Self {
            key,
            policy,
            status,
            pause: Duration::ZERO,
            throttled: false,
            sent_ago: Duration::ZERO,
            remaining: None,
        }
    }

    /// True when the observation changes nothing.
    pub fn is_empty(&self) -> bool {
        self.pause.is_zero() && !self.throttled && self.remaining.is_none()
    }
}

/// A place where the state of each key lives.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use integration_ratelimit::store::{Acquire, Decision, RateLimitStore, StoreFuture};
/// use integration_ratelimit::{MemoryStore, Quota, RateLimitKey, RateLimitPolicy, RateLimiter};
///
/// /// A store that logs every pause and keeps its state in memory.
/// #[derive(Debug, Default)]
/// struct Audited(MemoryStore);
///
/// impl RateLimitStore for Audited {
///     fn acquire(&self, acquire: Acquire) -> StoreFuture<Decision> {
///         self.0.acquire(acquire)
///     }
///     fn pause(&self, key: RateLimitKey, pause: Duration, status: Option<StatusCode>) -> StoreFuture<()> {
///         println!("{key} paused for {pause:?} after {status:?}");
///         self.0.pause(key, pause, status)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimiter::with_store(Audited::default(), RateLimitPolicy::new([Quota::per_second(1).unwrap()]));
/// assert!(limiter.acquire(&RateLimitKey::from("k")).await.is_ok());
/// # }
/// ```
///
/// Implementations must decide atomically per key: two callers never get the same permit. A store that
/// cannot reach its backend should fall back to a limit rather than to none; an error returned here
/// fails the call (the limiter never lets a call through unlimited because a store failed).
pub trait RateLimitStore: fmt::Debug + Send + Sync + 'static {
    /// Takes one permit of every quota of `acquire.key`, at the earliest instant all allow and after any
    /// server pause, if that is within `acquire.max_wait`; otherwise reserves nothing and says when to
    /// come back.
    fn acquire(&self, acquire: Acquire) -> StoreFuture<Decision>;

    /// Pauses `key` for `pause` (extending, never shortening, a pause in force), remembering the
    /// `status` of the response that asked for it.
    fn pause(
        &self,
        key: RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) -> StoreFuture<()>;

    /// Applies what a response told about its key: its pause, and for a store that adapts, the
    /// throttle that decreases the key's rate and the server's counters that pace it. The default
    /// only applies the pause, through [`pause`](Self::pause).
    fn observe(&self, observation: Observation) -> StoreFuture<()> {
        if observation.pause.is_zero() {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.pause(observation.key, observation.pause, Some(observation.status))
    }
}
