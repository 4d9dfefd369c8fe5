//! The shared limiter handle: policy, store and concurrency caps.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderMap, StatusCode};
use integration_core::error::RateLimited;
#[cfg(feature = "redis")]
use integration_core::redis::SharedRedis;
use integration_core::throttle::ThrottleSignal;
use integration_core::{BoxError, names};
use tokio::sync::Semaphore;

use crate::flight::{Flight, Flights};
use crate::gcra::{Adapt, Bounds, Signal};
use crate::key::RateLimitKey;
use crate::policy::RateLimitPolicy;
use crate::store::memory::nanos;
use crate::store::{Acquire, Decision, MemoryStore, Observation, RateLimitStore, StoreFuture};
#[cfg(feature = "redis")]
use crate::store::{RedisOptions, RedisStore};

/// Entries of the concurrency table above which unused semaphores are dropped.
const CONCURRENCY_TABLE_SWEEP: usize = 4_096;

/// The rate limiter: a policy, a store for the state of each key, and the concurrency caps.
///
/// This is the handle the facade keeps across configuration reloads: [`set_policy`](Self::set_policy)
/// swaps the quotas in place, and the state of every key (its quotas' progress, its server pause)
/// carries over.
///
/// # Clone
///
/// Clones share everything: the policy, the store and the concurrency caps. Every
/// [`RateLimitLayer`](crate::RateLimitLayer) built from clones of one limiter limits together.
///
/// ```
/// use std::time::Duration;
/// use integration_ratelimit::{Quota, RateLimitKey, RateLimitPolicy, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimiter::memory(RateLimitPolicy::new([Quota::per_second(1).unwrap()]));
/// let key = RateLimitKey::from("github");
/// assert!(limiter.acquire(&key).await.is_ok());
/// let refused = limiter.acquire(&key).await.unwrap_err();
/// assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
///
/// // A reload raises the quota to 2 per second. The key keeps its state: the permit it took under the
/// // old policy still counts, so it does not get a fresh burst of 2; its next permit is 500 ms away.
/// limiter.set_policy(RateLimitPolicy::new([Quota::per_second(2).unwrap()]));
/// let refused = limiter.acquire(&key).await.unwrap_err();
/// assert_eq!(refused.retry_after(), Some(Duration::from_millis(500)));
/// // A key never seen before goes at the quota's pace in its first second (no burst of a per-second
/// // quota), and builds its burst up while idle.
/// let other = RateLimitKey::from("stripe");
/// assert!(limiter.acquire(&other).await.is_ok());
/// assert!(limiter.acquire(&other).await.is_err());
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert!(limiter.acquire(&other).await.is_ok());
/// assert!(limiter.acquire(&other).await.is_ok());
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    policy: ArcSwap<RateLimitPolicy>,
    backend: Backend,
    concurrency: Mutex<HashMap<RateLimitKey, (NonZeroUsize, Arc<Semaphore>)>>,
    flights: Flights,
}

enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(RedisStore),
    Custom(Arc<dyn RateLimitStore>),
}

/// A decision, either at hand (memory) or on its way (a store doing I/O).
pub(crate) enum Pending {
    /// The decision, and the key's learned rate when it has one (for the gauge).
    Ready(Result<Decision, BoxError>, Option<f64>),
    Waiting(StoreFuture<Decision>),
}

impl RateLimiter {
    /// A limiter whose state lives in this process ([`MemoryStore`] with its defaults).
    pub fn memory(policy: RateLimitPolicy) -> Self {
        Self::with_memory_store(MemoryStore::new(), policy)
    }

    /// A limiter over a [`MemoryStore`] of your own (to bound its keys, or to share it).
    pub fn with_memory_store(store: MemoryStore, policy: RateLimitPolicy) -> Self {
        Self::with_backend(Backend::Memory(store), policy)
    }

    /// A limiter whose state lives in Redis, shared by every replica using the same `prefix`; see
    /// [`RedisStore`] for the guarantees and the fallback when Redis is unreachable.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(
        connection: impl Into<SharedRedis>,
        prefix: impl Into<String>,
        policy: RateLimitPolicy,
        options: RedisOptions,
    ) -> Self {
        Self::with_redis_store(RedisStore::new(connection, prefix, options), policy)
    }

    /// A limiter over a [`RedisStore`] already built.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis_store(store: RedisStore, policy: RateLimitPolicy) -> Self {
        Self::with_backend(Backend::Redis(store), policy)
    }

    /// A limiter over any [`RateLimitStore`].
    pub fn with_store(store: impl RateLimitStore, policy: RateLimitPolicy) -> Self {
        Self::with_backend(Backend::Custom(Arc::new(store)), policy)
    }

    fn with_backend(backend: Backend, policy: RateLimitPolicy) -> Self {
        Self {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(policy),
                backend,
                concurrency: Mutex::new(HashMap::new()),
                flights: Flights::default(),
            }),
        }
    }

    /// The Redis store, when this limiter keeps its state in Redis ([`RateLimiter::redis`]): for
    /// read-only inspection with [`RedisStore::inspect`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_store(&self) -> Option<&RedisStore> {
        match &self.shared.backend {
            Backend::Redis(store) => Some(store),
            _ => None,
        }
    }

    /// Replaces the policy for every call from now on. Calls already waiting keep the permit they
    /// reserved. The state of each key carries over: quota `i` of the new policy continues from quota
    /// `i` of the old one, and server pauses stay in force. A changed concurrency cap applies to
    /// calls that start after the change.
    pub fn set_policy(&self, policy: RateLimitPolicy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<RateLimitPolicy> {
        self.shared.policy.load_full()
    }

    /// Takes a permit of `key` outside any tower stack, waiting up to the policy's `max_wait` (the
    /// concurrency cap does not apply: there is no call to hold it).
    ///
    /// # Errors
    ///
    /// [`RateLimited`] when no permit is free within `max_wait` or a server pause is longer than
    /// allowed (with the hint), and, without a hint, when a custom store fails.
    pub async fn acquire(&self, key: &RateLimitKey) -> Result<Duration, RateLimited> {
        let policy = self.policy();
        let max_wait = policy.max_wait();
        let decision = match self.start(key, policy, max_wait) {
            Pending::Ready(decision, rate) => {
                if let Some(rate) = rate {
                    learned_rate_gauge(key.shared(), rate);
                }
                decision
            }
            Pending::Waiting(future) => future.await,
        };
        match decision {
            Ok(Decision::Granted { wait }) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(wait)
            }
            Ok(Decision::Denied {
                retry_after,
                by_server,
                status,
            }) => Err(rejection(retry_after, by_server, status)),
            Err(_) => Err(RateLimited::new(None)),
        }
    }

    /// Reads a response's throttle signal and applies it to `key`: pauses it (see
    /// [`server_pause`](crate::server_pause)), empties its burst, decreases its learned rate on a
    /// throttle answer, and paces it from the server's counters (see
    /// [`Adaptation`](crate::Adaptation)). Returns the pause applied, if any. The layer does this
    /// after every response (and knows when the request was sent; here it counts as sent now).
    pub async fn observe(
        &self,
        key: &RateLimitKey,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Duration> {
        let read = read_signal(status, headers)?;
        if let Some(source) = read.source {
            metrics::counter!(names::THROTTLE_SIGNALS, names::INTEGRATION => key.shared(), names::SOURCE => source)
                .increment(1);
        }
        let mut observation = Observation::new(key.clone(), self.policy(), status);
        observation.pause = read.pause;
        observation.throttled = read.throttled;
        observation.remaining = read.remaining;
        let (future, rate) = self.start_observe(observation);
        if let Some(rate) = rate {
            learned_rate_gauge(key.shared(), rate);
        }
        if let Some(future) = future {
            let _ = future.await;
        }
        (!read.pause.is_zero()).then_some(read.pause)
    }

    pub(crate) fn start(
        &self,
        key: &RateLimitKey,
        policy: Arc<RateLimitPolicy>,
        max_wait: Duration,
    ) -> Pending {
        match &self.shared.backend {
            Backend::Memory(store) => {
                let bounds = Bounds {
                    max_wait: nanos(max_wait),
                    max_server_pause: nanos(policy.max_server_pause()),
                };
                let adapt = Adapt::of(&policy);
                let (decision, rate) =
                    store.decide_learning(key, policy.quotas(), adapt.as_ref(), bounds);
                Pending::Ready(Ok(decision), rate)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => Pending::Waiting(store.acquire(Acquire {
                key: key.clone(),
                policy,
                max_wait,
            })),
            Backend::Custom(store) => Pending::Waiting(store.acquire(Acquire {
                key: key.clone(),
                policy,
                max_wait,
            })),
        }
    }

    /// Applies a response's observation; no future when done already (the memory store applies it
    /// synchronously, and then also returns the key's learned rate for the gauge).
    pub(crate) fn start_observe(
        &self,
        observation: Observation,
    ) -> (Option<StoreFuture<()>>, Option<f64>) {
        match &self.shared.backend {
            Backend::Memory(store) => {
                let rate = store.apply(
                    &observation.key,
                    &observation.policy,
                    Signal::of(&observation),
                );
                (None, rate)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => (Some(store.observe(observation)), None),
            Backend::Custom(store) => (Some(store.observe(observation)), None),
        }
    }

    /// A server pause of `key` known without a round trip: checked again after a call waited for its
    /// permit, since a pause may have started while it slept.
    pub(crate) fn local_pause(&self, key: &RateLimitKey) -> Option<(Duration, Option<StatusCode>)> {
        match &self.shared.backend {
            Backend::Memory(store) => store.pause_left(key),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.local_pause(key),
            Backend::Custom(_) => None,
        }
    }

    /// The key's calls in flight and slow start (see the `flight` module); `None` when the table of
    /// keys is full. With the Redis store the window is this replica's share of `initial_window`
    /// (divided by the expected replicas, at least 1), as the fallback's share of a quota: replicas
    /// starting together send about one window between them.
    pub(crate) fn flight(&self, key: &RateLimitKey, initial_window: usize) -> Option<Arc<Flight>> {
        let window = match &self.shared.backend {
            #[cfg(feature = "redis")]
            Backend::Redis(store) if initial_window > 0 => {
                let replicas = store.options().expected_replicas().max(1) as usize;
                (initial_window / replicas).max(1)
            }
            _ => initial_window,
        };
        self.shared.flights.get(key, window)
    }

    /// The semaphore capping calls of `key` in flight at `max`.
    pub(crate) fn semaphore(&self, key: &RateLimitKey, max: NonZeroUsize) -> Arc<Semaphore> {
        let mut table = self
            .shared
            .concurrency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((size, semaphore)) = table.get(key.as_str())
            && *size == max
        {
            return semaphore.clone();
        }
        if table.len() >= CONCURRENCY_TABLE_SWEEP {
            // Nobody holds a permit of (or waits on) a semaphore only the table references.
            table.retain(|_, (_, semaphore)| Arc::strong_count(semaphore) > 1);
        }
        let semaphore = Arc::new(Semaphore::new(max.get()));
        table.insert(key.clone(), (max, semaphore.clone()));
        semaphore
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RateLimiter");
        debug.field("policy", &self.shared.policy.load());
        match &self.shared.backend {
            Backend::Memory(store) => debug.field("store", store),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => debug.field("store", store),
            Backend::Custom(store) => debug.field("store", store),
        };
        debug.finish()
    }
}

pub(crate) fn rejection(
    retry_after: Duration,
    by_server: bool,
    status: Option<StatusCode>,
) -> RateLimited {
    if by_server {
        RateLimited::by_server(Some(retry_after), status)
    } else {
        RateLimited::new(Some(retry_after))
    }
}

/// Sets the learned-rate gauge of an integration (or key).
pub(crate) fn learned_rate_gauge(label: Arc<str>, rate: f64) {
    metrics::gauge!(names::RATE_LIMIT_LEARNED_RATE, names::INTEGRATION => label).set(rate);
}

/// What a response says about its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadSignal {
    /// The pause asked of every caller (zero: none).
    pub(crate) pause: Duration,
    /// The metric source of the pause or throttle, if there is one.
    pub(crate) source: Option<&'static str>,
    /// A 429, or a 503 with `Retry-After`.
    pub(crate) throttled: bool,
    /// The server's counters: remaining permits and the time to the reset.
    pub(crate) remaining: Option<(u64, Duration)>,
}

/// Reads a response once: its pause (as [`server_pause`]), whether it is a throttle answer, and the
/// server's counters. `None` when it says nothing.
pub(crate) fn read_signal(status: StatusCode, headers: &HeaderMap) -> Option<ReadSignal> {
    let signal = ThrottleSignal::from_headers_with(headers, wall_clock);
    let pause = pause_of(status, &signal);
    let throttled = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && signal.retry_after.is_some());
    let remaining = match (signal.remaining, signal.reset) {
        (Some(remaining), Some(reset)) if remaining > 0 && !reset.is_zero() => {
            Some((remaining, reset))
        }
        _ => None,
    };
    let source = match pause {
        Some((_, source)) => Some(source),
        None if throttled => Some("throttle"),
        None => None,
    };
    if source.is_none() && remaining.is_none() {
        return None;
    }
    Some(ReadSignal {
        pause: pause.map_or(Duration::ZERO, |(pause, _)| pause),
        source,
        throttled,
        remaining,
    })
}

/// The pause a response asks of every caller of its key, and the metric source of the signal:
///
/// - `Retry-After` (or `retry-after-ms`) on a 429 or a 503: pause for that long (`"retry_after"`);
/// - a quota with nothing remaining and a reset (`RateLimit`, `X-RateLimit-*`...), on any status: pause
///   until the reset (`"remaining"`).
///
/// Malformed values are ignored (core's parser drops them); a zero pause is no pause.
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, StatusCode};
/// use integration_ratelimit::server_pause;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "3".parse().unwrap());
/// assert_eq!(server_pause(StatusCode::TOO_MANY_REQUESTS, &headers), Some((Duration::from_secs(3), "retry_after")));
/// // A Retry-After on a redirect is not a throttle.
/// assert_eq!(server_pause(StatusCode::MOVED_PERMANENTLY, &headers), None);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset", "20".parse().unwrap());
/// assert_eq!(server_pause(StatusCode::OK, &headers), Some((Duration::from_secs(20), "remaining")));
/// ```
pub fn server_pause(status: StatusCode, headers: &HeaderMap) -> Option<(Duration, &'static str)> {
    pause_of(
        status,
        &ThrottleSignal::from_headers_with(headers, wall_clock),
    )
}

fn pause_of(status: StatusCode, signal: &ThrottleSignal) -> Option<(Duration, &'static str)> {
    let throttled = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    );
    let pause = match (throttled, signal.retry_after) {
        (true, Some(retry_after)) => (retry_after, "retry_after"),
        _ => match (signal.remaining, signal.reset) {
            (Some(0), Some(reset)) => (reset, "remaining"),
            _ => return None,
        },
    };
    (!pause.0.is_zero()).then_some(pause)
}

#[allow(clippy::disallowed_methods)] // HTTP-dates and epoch resets in throttle headers speak wall-clock time.
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::header::RETRY_AFTER;

    /// The two signals measured against the wall clock, which the limiter reads only for a response
    /// whose headers may carry a signal (`ThrottleSignal::from_headers_with`, issue 19): a pause is
    /// the distance from now, not from another instant.
    #[test]
    fn a_dated_signal_is_measured_from_the_wall_clock() {
        let now = wall_clock();
        let within = |pause: Duration, secs: u64| {
            // Whole seconds on the wire, and the test's own time: up to 2 s less.
            pause <= Duration::from_secs(secs) && pause >= Duration::from_secs(secs - 2)
        };

        let mut dated = HeaderMap::new();
        dated.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(now + Duration::from_secs(30))
                .parse()
                .unwrap(),
        );
        let (pause, source) = server_pause(StatusCode::TOO_MANY_REQUESTS, &dated).unwrap();
        assert!(within(pause, 30), "{pause:?}");
        assert_eq!(source, "retry_after");
        let read = read_signal(StatusCode::TOO_MANY_REQUESTS, &dated).unwrap();
        assert!(within(read.pause, 30), "{read:?}");

        let epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut reset = HeaderMap::new();
        reset.insert("x-ratelimit-remaining", "0".parse().unwrap());
        reset.insert(
            "x-ratelimit-reset",
            (epoch + 40).to_string().parse().unwrap(),
        );
        let (pause, source) = server_pause(StatusCode::OK, &reset).unwrap();
        assert!(within(pause, 40), "{pause:?}");
        assert_eq!(source, "remaining");
    }
}
