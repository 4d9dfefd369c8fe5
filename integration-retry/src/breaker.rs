//! [`CircuitBreakerLayer`]: fail fast while an upstream is known broken.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::uri::Authority;
use http::{Extensions, Method, Request, Response, Uri};
use integration_core::classify::{
    Classification, Classify, DefaultClassifier, RequestMeta, RetryReason,
};
use integration_core::error::CircuitOpen;
use integration_core::ext::IntegrationName;
use integration_core::kept::{same_optional_str, same_str};
use integration_core::{BoxError, names};
use metrics::SharedString;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::policy::Jitter;
use crate::timed::instant_after;
use crate::window::SlidingCounts;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// The open period is over: a few probes go through, the others are refused until the
    /// probes' outcome closes or reopens the breaker.
    HalfOpen,
    /// Calls are refused with [`CircuitOpen`] until the open period ends.
    Open,
}

impl BreakerState {
    /// The value of the [`BREAKER_STATE`](integration_core::names::BREAKER_STATE) gauge: 0 closed,
    /// 1 half-open, 2 open.
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// Computes the breaker key of a request.
type KeyFn = Arc<dyn Fn(&Uri, &Extensions) -> String + Send + Sync>;

/// The breakers by key. foldhash, seeded at random per process, rather than SipHash: three lookups
/// a call cost ~1k instructions with SipHash (issue 19), and a random seed keeps a map whose keys
/// may come from requests (a custom [`BreakerPolicy::with_key`]) resistant to flooding.
type Keys = HashMap<Arc<str>, Entry, foldhash::fast::RandomState>;

/// The longest default key built on the stack; a longer one is allocated.
const KEY_BUFFER: usize = 192;

/// Calls `f` with the default key of a request ([`default_key`]), built in a buffer on the stack
/// rather than in a `String` allocated per call (issue 19).
fn with_default_key<R>(uri: &Uri, extensions: &Extensions, f: impl FnOnce(&str) -> R) -> R {
    let integration = extensions
        .get::<IntegrationName>()
        .map_or("", IntegrationName::as_str);
    let host = host_of(uri);
    let len = integration.len() + 1 + host.len();
    if len > KEY_BUFFER {
        return f(&default_key(uri, extensions));
    }
    let mut buffer = [0u8; KEY_BUFFER];
    buffer[..integration.len()].copy_from_slice(integration.as_bytes());
    buffer[integration.len()] = b'|';
    buffer[integration.len() + 1..len].copy_from_slice(host.as_bytes());
    f(std::str::from_utf8(&buffer[..len]).expect("two strings joined by `|` are UTF-8"))
}

/// `uri.host()`, or `""` for a relative URI, in one backward scan of the authority's bytes: `http`'s
/// own (`rsplit('@')` and `split(':')` over `char`s) cost ~400 instructions a call, on every call,
/// for the default key (issue 19). `properties::the_breaker_key_host_is_the_uri_host` pins that the
/// two agree.
fn host_of(uri: &Uri) -> &str {
    let Some(authority) = uri.authority() else {
        return "";
    };
    let authority = authority.as_str();
    let bytes = authority.as_bytes();
    // After the userinfo, if any (a parsed authority has no `@` in its host or port).
    let start = bytes
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(0, |at| at + 1);
    let host_port = &bytes[start..];
    let end = if host_port.first() == Some(&b'[') {
        // An IP literal: up to and with its closing bracket (the parser checked there is one).
        host_port
            .iter()
            .position(|&b| b == b']')
            .map_or(host_port.len(), |close| close + 1)
    } else {
        host_port
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(host_port.len())
    };
    // Both ends are at ASCII bytes (`@`, `[`, `]`, `:`) or the ends of the string: char boundaries.
    &authority[start..start + end]
}

/// The default breaker key: `"{integration}|{host}"`, from the request's
/// [`IntegrationName`] (empty when absent) and its URI's host (empty when relative).
///
/// ```
/// use integration_core::ext::IntegrationName;
///
/// let mut request = http::Request::get("https://api.github.com/user").body(()).unwrap();
/// request.extensions_mut().insert(IntegrationName::new("github"));
/// let key = integration_retry::breaker::default_key(request.uri(), request.extensions());
/// assert_eq!(key, "github|api.github.com");
/// ```
pub fn default_key(uri: &Uri, extensions: &Extensions) -> String {
    let integration = extensions
        .get::<IntegrationName>()
        .map_or("", IntegrationName::as_str);
    let host = host_of(uri);
    let mut key = String::with_capacity(integration.len() + host.len() + 1);
    key.push_str(integration);
    key.push('|');
    key.push_str(host);
    key
}

/// When a breaker opens, for how long, how it probes, and how many keys it remembers.
///
/// | setting | default | after |
/// | --- | --- | --- |
/// | [`failure_ratio`](Self::with_failure_ratio) | 0.5 of the attempts in the window | resilience4j |
/// | [`window`](Self::with_window) | 2 s, sliding | |
/// | [`min_throughput`](Self::with_min_throughput) | 100 attempts in the window before the ratio counts | Polly v8 |
/// | [`consecutive_failures`](Self::with_consecutive_failures) | 10 in a row, *only while the window holds fewer than `min_throughput` attempts* (0 turns it off) | |
/// | [`open_duration`](Self::with_open_duration) | 5 s, the base open time | Polly v8 |
/// | [`max_open_duration`](Self::with_max_open_duration) | 5 s: no growth (see below) | Envoy |
/// | [`open_jitter`](Self::with_open_jitter) | 0.2 (a 5 s period lasts 5 s to 6 s) | |
/// | [`half_open_probes`](Self::with_half_open_probes) | 5 probes at once | resilience4j |
/// | [`max_keys`](Self::with_max_keys) | 1024 | |
/// | [`key`](Self::with_key) | [`default_key`]: integration and host | |
/// | [`classifier`](Self::with_classifier) | [`DefaultClassifier`] | |
///
/// # The state machine
///
/// ```text
///            failures >= failure_ratio of >= min_throughput attempts in the window,
///            or consecutive_failures in a row while the window holds fewer
///   Closed ─────────────────────────────────────────────────────────────────▶ Open
///     ▲                                                                        │
///     │ enough probes succeed                                 open period over │
///     │                                                                        ▼
///     └──────────────────────────────── HalfOpen ◀─────────────────────────────┘
///                                          │  ▲
///        enough probes fail: open again,   │  │ open period over
///        the period doubled (up to the     ▼  │
///        cap), jittered                    Open
/// ```
///
/// - **Closed**: every attempt goes through and its outcome is counted in a sliding window (ten
///   slots of a tenth of it). The breaker opens when failures reach `failure_ratio` of the attempts
///   in the window *and* the window holds at least `min_throughput` attempts. Below that volume a
///   ratio means little (3 failures in 5 attempts is noise at 35 % failures), so there, and only
///   there, `consecutive_failures` in a row open it.
/// - **Open**: attempts fail at once with [`CircuitOpen`] carrying the time left. The first period
///   lasts `open_duration`; each half-open round that fails doubles it, up to `max_open_duration`
///   (`open_duration * 2^n`, capped, the Envoy idea of ejecting for longer the more often a host is
///   ejected). Every period is lengthened by up to `open_jitter` of it at random, so breakers that
///   opened together (in many replicas) do not all probe at once.
/// - **HalfOpen**: up to `half_open_probes` attempts go through at once; the others are refused.
///   The round ends as soon as its outcome is certain: it closes (the window starts empty) once
///   fewer than `failure_ratio` of the probes can still fail, and opens again once at least that
///   share (and at least one) has failed. With the defaults: 3 successes of 5 close it, 3 failures
///   open it. A probe whose outcome says nothing (a 429, see below) or that is cancelled frees its
///   place for another attempt.
///
/// # Why these defaults
///
/// The breaker must never make a partly failing upstream worse than no breaker, and must notice
/// an outage fast and let traffic back fast when it ends.
///
/// - **Ratio 0.5, at least 100 attempts.** An upstream failing a third of its attempts still
///   serves two thirds of them, and retries turn that into a higher share of calls: refusing
///   them would make things worse, so the ratio sits well above the partial failures the retry
///   layer handles well (resilience4j's default is 50 %). Polly v8 opens at 10 % with a minimum of
///   100 calls: its minimum throughput is kept (at 35 % failures, 50 failures in 100 attempts
///   happen in about one window in 600), its ratio is not.
/// - **A 2 s window.** After an outage starts, a sliding ratio reaches 0.5 when the failures
///   outnumber the successes still in the window: after about half the window. Polly's 30 s
///   window with our ratio would keep calling a dead upstream for 15 s; 2 s opens within about
///   1 s at a few hundred attempts per second, and still holds hundreds of attempts at that rate.
/// - **Consecutive failures only at low volume.** At hundreds of attempts a second, five failures
///   in a row happen several times a second at 35 % failures: a consecutive trigger there opens
///   a healthy breaker (this is what the old defaults did). Under `min_throughput` the ratio is
///   silent, so 10 failures in a row (0.003 % likely at 35 % failures) stand in for it.
/// - **A 5 s base open time** (Polly v8's), **5 probes** (resilience4j admits a number of calls
///   in half-open, 10 by default): one probe judged alone reopens on bad luck (at 35 % failures,
///   one probe in three), the majority of 5 less often (one round in four), and a wrong round
///   costs one base period.
/// - **No growth by default** (`max_open_duration` = `open_duration`). After an outage ends the
///   first success comes within the open period in force plus one probe: with growth, a long
///   outage would leave a long period in force when it ends (the old 30 s period made recovery
///   take 14 s). Five probes per base period is no load on an upstream that is down. Raise
///   `max_open_duration` for an upstream that flaps, where reopening for longer each time pays.
///
/// # What counts
///
/// The breaker sits under the retry layer, so it counts **attempts**, not calls: each attempt is a
/// request the upstream served or failed, which is what its health is. (A call retried twice
/// after two 503s and then served is two failures and a success.)
///
/// Each attempt is judged by the [classifier](Self::with_classifier) as if every request were
/// idempotent: the upstream's health does not depend on the method.
///
/// | outcome | counts as |
/// | --- | --- |
/// | retryable failures: 500, 502, 503, 504, 408, connect errors, resets, timeouts | failure |
/// | a 503 *with* `Retry-After` | failure: overload or maintenance is a reason to back off |
/// | throttling: 429, with or without `Retry-After` ([`RetryReason::Throttled`]) | neither |
/// | a 401 (re-authentication), errors of our own layers (a local rate limit) | neither |
/// | no credential could be obtained ([`RetryReason::CredentialUnavailable`]): nothing was sent | neither |
/// | any other answer (2xx, 404, 422...) | success: the upstream is up |
///
/// A 429 means the upstream is healthy and asks *this client* to slow down: the rate-limit layer
/// obeys it by pausing the key, and the retry layer by waiting as asked. Counting it as a failure
/// would turn a throttle into an outage, refusing calls the upstream would serve, for an open period
/// longer than it asked for (Envoy's outlier detection and most breakers count only 5xx and
/// connection failures). It does not count as a success either, nor reset the consecutive-failure
/// count: a throttled call says nothing about whether the upstream can serve it. A half-open probe
/// answered with a 429 frees its place, and the next call probes instead.
///
/// [`RetryReason::Throttled`]: integration_core::classify::RetryReason::Throttled
/// [`RetryReason::CredentialUnavailable`]: integration_core::classify::RetryReason::CredentialUnavailable
///
/// ```
/// use integration_retry::BreakerPolicy;
/// use std::time::Duration;
///
/// let policy = BreakerPolicy::default()
///     .with_failure_ratio(0.6)
///     .with_open_duration(Duration::from_secs(2))
///     .with_max_open_duration(Duration::from_secs(30))
///     .with_half_open_probes(3)
///     .with_key(|uri, _| uri.host().unwrap_or("").to_owned());
/// assert_eq!(policy.open_duration(), Duration::from_secs(2));
/// // The base doubles with each failed round, up to the cap.
/// assert_eq!(policy.open_duration_after(0), Duration::from_secs(2));
/// assert_eq!(policy.open_duration_after(3), Duration::from_secs(16));
/// assert_eq!(policy.open_duration_after(4), Duration::from_secs(30));
/// // 3 probes at a 0.6 ratio: 2 failures open it again, 2 successes close it.
/// assert_eq!(policy.probe_failures_to_reopen(), 2);
/// ```
#[derive(Clone)]
pub struct BreakerPolicy {
    failure_ratio: f64,
    window: Duration,
    min_throughput: u32,
    consecutive_failures: u32,
    open_duration: Duration,
    max_open_duration: Duration,
    open_jitter: f64,
    half_open_probes: u32,
    max_keys: usize,
    /// `None`: [`default_key`], computed without an allocation.
    key: Option<KeyFn>,
    classifier: Arc<dyn Classify>,
    jitter: Jitter,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            window: Duration::from_secs(2),
            min_throughput: 100,
            consecutive_failures: 10,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(5),
            open_jitter: 0.2,
            half_open_probes: 5,
            max_keys: 1024,
            key: None,
            classifier: Arc::new(DefaultClassifier::new()),
            jitter: Jitter::random(),
        }
    }
}

impl fmt::Debug for BreakerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPolicy")
            .field("failure_ratio", &self.failure_ratio)
            .field("window", &self.window)
            .field("min_throughput", &self.min_throughput)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("open_duration", &self.open_duration)
            .field("max_open_duration", &self.max_open_duration)
            .field("open_jitter", &self.open_jitter)
            .field("half_open_probes", &self.half_open_probes)
            .field("max_keys", &self.max_keys)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl BreakerPolicy {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens when failures reach this share of the attempts in the window (clamped to
    /// `0.0..=1.0`); also the share of failed half-open probes that opens the breaker again.
    #[must_use]
    pub fn with_failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// The sliding window over which the failure ratio is measured (at least 10 ms).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(10));
        self
    }

    /// Attempts needed in the window before the failure ratio can open the breaker (at least 1);
    /// below it, only the consecutive-failure trigger can.
    #[must_use]
    pub fn with_min_throughput(mut self, attempts: u32) -> Self {
        self.min_throughput = attempts.max(1);
        self
    }

    /// Opens after this many failures in a row while the window holds fewer than
    /// [`min_throughput`](Self::with_min_throughput) attempts (where the ratio cannot judge); 0
    /// turns this trigger off.
    #[must_use]
    pub fn with_consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// The base open time: how long the breaker stays open the first time, before half-open
    /// probes. Also raises [`max_open_duration`](Self::with_max_open_duration) to it when it was
    /// lower.
    #[must_use]
    pub fn with_open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self.max_open_duration = self.max_open_duration.max(duration);
        self
    }

    /// The cap on the open time, which doubles with each failed half-open round in a row. Equal to
    /// the [`open_duration`](Self::with_open_duration) (the default), the open time never grows; a
    /// value below it reads as it.
    #[must_use]
    pub fn with_max_open_duration(mut self, duration: Duration) -> Self {
        self.max_open_duration = duration;
        self
    }

    /// Lengthens each open period by up to this share of it, at random, so that breakers opened
    /// together (in many replicas) do not all probe at once. Clamped to `0.0..=10.0`.
    #[must_use]
    pub fn with_open_jitter(mut self, jitter: f64) -> Self {
        self.open_jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 10.0)
        };
        self
    }

    /// Attempts let through at once while half-open (at least 1); the round's outcome decides
    /// whether the breaker closes or opens again.
    #[must_use]
    pub fn with_half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes.max(1);
        self
    }

    /// The most keys remembered; past it, the least recently used key is forgotten (at least 1).
    #[must_use]
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// Computes the key from the request's URI and extensions (one breaker per key).
    #[must_use]
    pub fn with_key(
        mut self,
        key: impl Fn(&Uri, &Extensions) -> String + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Replaces the classifier that decides what counts as a failure.
    #[must_use]
    pub fn with_classifier(mut self, classifier: Arc<dyn Classify>) -> Self {
        self.classifier = classifier;
        self
    }

    /// Replaces the randomness behind the open-period jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The failure ratio.
    pub fn failure_ratio(&self) -> f64 {
        self.failure_ratio
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The minimum throughput, in attempts per window.
    pub fn min_throughput(&self) -> u32 {
        self.min_throughput
    }

    /// The consecutive-failure trigger (0: off).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The base open time, before growth and jitter.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// The cap on the open time before jitter (never below the base).
    pub fn max_open_duration(&self) -> Duration {
        self.max_open_duration.max(self.open_duration)
    }

    /// The open-period jitter.
    pub fn open_jitter(&self) -> f64 {
        self.open_jitter
    }

    /// The probes let through at once while half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The cap on keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The open time, before jitter, after `failed_rounds` half-open rounds failed in a row (0
    /// when the breaker opens from closed): `open_duration * 2^failed_rounds`, capped at
    /// [`max_open_duration`](Self::max_open_duration).
    pub fn open_duration_after(&self, failed_rounds: u32) -> Duration {
        let factor = 2u32.checked_pow(failed_rounds).unwrap_or(u32::MAX);
        self.open_duration
            .saturating_mul(factor)
            .min(self.max_open_duration())
    }

    /// Failed probes of one half-open round that open the breaker again: the failure ratio of the
    /// probes, rounded up, and at least 1. The round closes the breaker once fewer than this many
    /// probes are left to fail.
    pub fn probe_failures_to_reopen(&self) -> u32 {
        let probes = f64::from(self.half_open_probes);
        let failures = (self.failure_ratio * probes).ceil();
        // In 1..=probes: the cast cannot truncate.
        (failures as u32).clamp(1, self.half_open_probes)
    }

    /// The open period after `failed_rounds`, lengthened by its jitter; `Duration::MAX` when that
    /// does not fit (an open duration meant as "until restarted" must not overflow and panic).
    fn open_period(&self, failed_rounds: u32) -> Duration {
        let factor = 1.0 + self.open_jitter * self.jitter.sample();
        Duration::try_from_secs_f64(self.open_duration_after(failed_rounds).as_secs_f64() * factor)
            .unwrap_or(Duration::MAX)
    }

    /// When a breaker opened now stays open until.
    fn open_until(&self, now: Instant, failed_rounds: u32) -> Instant {
        instant_after(now, self.open_period(failed_rounds))
    }
}

/// The breakers of every key, shared by every clone of a [`CircuitBreakerLayer`] and every service
/// it built.
///
/// # Clone
///
/// Clones share one registry: pass a clone to
/// [`CircuitBreakerLayer::with_registry`] so a rebuilt stack keeps its breakers.
#[derive(Clone, Default)]
pub struct BreakerRegistry {
    inner: Arc<Mutex<Keys>>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// A probing round: probes in flight, and the outcomes of those that ended.
    HalfOpen {
        in_flight: u32,
        successes: u32,
        failures: u32,
    },
}

impl Phase {
    const PROBING: Phase = Phase::HalfOpen {
        in_flight: 0,
        successes: 0,
        failures: 0,
    };
}

/// Counter 0: successes; counter 1: failures.
const SUCCESSES: usize = 0;
const FAILURES: usize = 1;

struct Entry {
    phase: Phase,
    /// Bumped at every change of phase: an attempt admitted in an earlier phase (a probe of an
    /// earlier round, a call let through before the breaker opened) reports to nobody.
    epoch: u64,
    counts: SlidingCounts<2>,
    consecutive: u32,
    /// Half-open rounds that failed since the breaker last closed: the open time's exponent.
    failed_rounds: u32,
    last_used: Instant,
    integration: SharedString,
    host: SharedString,
    /// The entry's key, shared with the calls it admitted (which report their outcome under it).
    key: Arc<str>,
}

impl Entry {
    fn set_phase(&mut self, phase: Phase, key: &str) {
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
        let state = self.state(Instant::now());
        metrics::gauge!(
            names::BREAKER_STATE,
            names::INTEGRATION => self.integration.clone(),
            names::SERVER_ADDRESS => self.host.clone()
        )
        .set(state.as_gauge());
        match state {
            BreakerState::Closed => tracing::info!(breaker = key, "circuit breaker closed"),
            BreakerState::HalfOpen => {
                tracing::info!(breaker = key, "circuit breaker half-open: probing")
            }
            BreakerState::Open => tracing::warn!(
                breaker = key,
                failed_rounds = self.failed_rounds,
                "circuit breaker opened"
            ),
        }
    }

    fn open(&mut self, now: Instant, policy: &BreakerPolicy, key: &str) {
        let until = policy.open_until(now, self.failed_rounds);
        self.set_phase(Phase::Open { until }, key);
    }

    /// Lets a call through or refuses it (see [`BreakerRegistry::admit`]); an admitted call gets
    /// the entry's key to report its outcome under.
    fn admit(
        &mut self,
        now: Instant,
        policy: &BreakerPolicy,
    ) -> Result<(Admission, Arc<str>), CircuitOpen> {
        self.last_used = now;
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Err(CircuitOpen::new(Some(until - now)));
            }
            let key = Arc::clone(&self.key);
            self.set_phase(Phase::PROBING, &key);
        }
        let admission = match &mut self.phase {
            Phase::Closed => Admission {
                probe: false,
                epoch: self.epoch,
            },
            Phase::HalfOpen {
                in_flight,
                successes,
                failures,
            } => {
                if *in_flight + *successes + *failures < policy.half_open_probes {
                    *in_flight += 1;
                    Admission {
                        probe: true,
                        epoch: self.epoch,
                    }
                } else {
                    // The round's probes are out: the next chance comes with its outcome.
                    return Err(CircuitOpen::new(None));
                }
            }
            Phase::Open { .. } => unreachable!("an open breaker refused or went half-open above"),
        };
        Ok((admission, Arc::clone(&self.key)))
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// What an admitted call is, and in which phase it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Admission {
    probe: bool,
    epoch: u64,
}

/// What a finished call says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Neutral,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of the breaker for `key`; `None` when the key was never seen (or was forgotten),
    /// which behaves as closed. An open breaker whose period is over reads as half-open.
    pub fn state(&self, key: &str) -> Option<BreakerState> {
        let now = Instant::now();
        self.lock().get(key).map(|entry| entry.state(now))
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// True when `self` and `other` are the same registry (clones of one another).
    pub fn ptr_eq(&self, other: &BreakerRegistry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // Every update leaves an entry consistent before it can panic: keep going after a poison.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through or refuses it. The half-open probe is reserved here, at call time: the
    /// key is only known from the request, which `poll_ready` does not see.
    fn admit(
        &self,
        key: &str,
        policy: &BreakerPolicy,
        labels: impl FnOnce() -> (SharedString, SharedString),
    ) -> Result<(Admission, Arc<str>), CircuitOpen> {
        let now = Instant::now();
        let mut keys = self.lock();
        // One lookup for a known key (the usual case), a second only to insert a new one.
        if let Some(entry) = keys.get_mut(key) {
            return entry.admit(now, policy);
        }
        if keys.len() >= policy.max_keys {
            evict_least_recently_used(&mut keys);
        }
        let (integration, host) = labels();
        metrics::gauge!(
            names::BREAKER_STATE,
            names::INTEGRATION => integration.clone(),
            names::SERVER_ADDRESS => host.clone()
        )
        .set(BreakerState::Closed.as_gauge());
        let key: Arc<str> = Arc::from(key);
        keys.entry(Arc::clone(&key))
            .or_insert(Entry {
                phase: Phase::Closed,
                epoch: 0,
                counts: SlidingCounts::new(policy.window),
                consecutive: 0,
                failed_rounds: 0,
                last_used: now,
                integration,
                host,
                key,
            })
            .admit(now, policy)
    }

    fn record(&self, key: &str, admission: Admission, outcome: Outcome, policy: &BreakerPolicy) {
        let now = Instant::now();
        let mut keys = self.lock();
        let Some(entry) = keys.get_mut(key) else {
            // Forgotten meanwhile (the key cap): nothing to update.
            return;
        };
        if entry.epoch != admission.epoch {
            // Admitted before the breaker changed phase: its outcome is stale.
            return;
        }
        match &mut entry.phase {
            Phase::HalfOpen {
                in_flight,
                successes,
                failures,
            } if admission.probe => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success => *successes += 1,
                    Outcome::Failure => *failures += 1,
                    // Says nothing about the upstream: its place goes to another attempt.
                    Outcome::Neutral => return,
                }
                let to_reopen = policy.probe_failures_to_reopen();
                if *failures >= to_reopen {
                    entry.failed_rounds = entry.failed_rounds.saturating_add(1);
                    entry.open(now, policy, key);
                } else if policy.half_open_probes - *successes < to_reopen {
                    // Even if every other probe failed, the round could not reopen: close.
                    entry.counts.clear();
                    entry.consecutive = 0;
                    entry.failed_rounds = 0;
                    entry.set_phase(Phase::Closed, key);
                }
            }
            Phase::Closed if !admission.probe => {
                entry.counts.advance(now);
                match outcome {
                    Outcome::Success => {
                        entry.counts.add(SUCCESSES, 1);
                        entry.consecutive = 0;
                    }
                    Outcome::Failure => {
                        entry.counts.add(FAILURES, 1);
                        entry.consecutive = entry.consecutive.saturating_add(1);
                        if should_open(entry, policy) {
                            entry.open(now, policy, key);
                        }
                    }
                    Outcome::Neutral => {}
                }
            }
            _ => {}
        }
    }

    /// A probe ended without an outcome (its future was dropped): its place goes to another call.
    fn release_probe(&self, key: &str, admission: Admission) {
        if let Some(entry) = self.lock().get_mut(key)
            && entry.epoch == admission.epoch
            && let Phase::HalfOpen { in_flight, .. } = &mut entry.phase
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

/// Whether a closed breaker opens after a failure: the ratio where the window holds enough
/// attempts to judge, the consecutive failures where it does not.
fn should_open(entry: &Entry, policy: &BreakerPolicy) -> bool {
    let [successes, failures] = entry.counts.totals();
    let attempts = successes + failures;
    if attempts >= u64::from(policy.min_throughput) {
        return failures as f64 >= policy.failure_ratio * attempts as f64;
    }
    policy.consecutive_failures > 0 && entry.consecutive >= policy.consecutive_failures
}

fn evict_least_recently_used(keys: &mut Keys) {
    // Only at the cap, so the linear scan is bounded by `max_keys`.
    if let Some(oldest) = keys
        .iter()
        .min_by_key(|(_, entry)| entry.last_used)
        .map(|(key, _)| key.clone())
        && let Some(entry) = keys.remove(&oldest)
    {
        // A forgotten key behaves as closed: say so, or its gauge keeps its last state for ever.
        metrics::gauge!(
            names::BREAKER_STATE,
            names::INTEGRATION => entry.integration,
            names::SERVER_ADDRESS => entry.host
        )
        .set(BreakerState::Closed.as_gauge());
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("keys", &self.len())
            .finish()
    }
}

/// Fails fast while an upstream is known broken: one breaker per key (by default the integration and
/// the host), opened by a failure ratio over a sliding window of attempts (with a minimum
/// throughput; consecutive failures below it), open for a short jittered period that doubles
/// (up to a cap) while probes keep failing, then half-open with a few probes whose success ratio
/// closes it. The state machine and the defaults are in [`BreakerPolicy`].
///
/// Refused calls fail with [`CircuitOpen`] carrying when the breaker lets a probe through, and are
/// counted in [`BREAKER_REJECTIONS`](integration_core::names::BREAKER_REJECTIONS); each state change
/// sets the [`BREAKER_STATE`](integration_core::names::BREAKER_STATE) gauge (labelled with the
/// integration and the host).
///
/// Goes inside [`RetryLayer`](crate::RetryLayer), so each attempt is judged (and a refused attempt
/// ends the retries: [`CircuitOpen`] is final), and outside the rate limiter, so a refused call spends
/// no permit.
///
/// # Clone
///
/// Clones share one [`BreakerRegistry`]; pass [`registry()`](Self::registry) to
/// [`with_registry`](Self::with_registry) to keep the breakers across a rebuilt stack.
///
/// ```
/// use integration_retry::{BreakerPolicy, BreakerState, CircuitBreakerLayer};
///
/// let layer = CircuitBreakerLayer::new(BreakerPolicy::default());
/// assert_eq!(layer.state("github|api.github.com"), None); // never seen: closed
/// let rebuilt = CircuitBreakerLayer::new(BreakerPolicy::default()).with_registry(layer.registry().clone());
/// assert!(rebuilt.registry().ptr_eq(layer.registry()));
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    policy: BreakerPolicy,
    registry: BreakerRegistry,
}

impl CircuitBreakerLayer {
    /// A layer with `policy` and a fresh registry.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            registry: BreakerRegistry::new(),
        }
    }

    /// Keeps the breakers in `registry` instead (a clone of another layer's to share them).
    #[must_use]
    pub fn with_registry(mut self, registry: BreakerRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The registry handle.
    pub fn registry(&self) -> &BreakerRegistry {
        &self.registry
    }

    /// The state of the breaker for `key` (see [`BreakerRegistry::state`]).
    pub fn state(&self, key: &str) -> Option<BreakerState> {
        self.registry.state(key)
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new(BreakerPolicy::default())
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: Arc::new(BreakerShared {
                policy: self.policy.clone(),
                registry: self.registry.clone(),
                first_key: FirstKey::default(),
            }),
        }
    }
}

#[derive(Debug)]
struct BreakerShared {
    policy: BreakerPolicy,
    registry: BreakerRegistry,
    /// The default key of the first authority and integration this layer saw.
    first_key: FirstKey,
}

/// The default key ([`default_key`]) of one authority and integration, kept once made: a breaker
/// sees one host under one integration most of the time, and finding its key this way (the
/// authority's and the name's pointers, or their bytes, compared) costs a tenth of scanning the
/// authority for the host and joining the two (~300 instructions a call, issue 19). Another
/// authority or integration gets its key made on each call, as before.
#[derive(Default)]
struct FirstKey(std::sync::OnceLock<(Authority, Option<IntegrationName>, Arc<str>)>);

impl fmt::Debug for FirstKey {
    /// The key only: the authority it was made of may hold userinfo (`user:password@host`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FirstKey")
            .field(&self.0.get().map(|(_, _, key)| key))
            .finish()
    }
}

impl FirstKey {
    /// Calls `f` with the default key of `uri` and `extensions`.
    fn with<R>(&self, uri: &Uri, extensions: &Extensions, f: impl FnOnce(&str) -> R) -> R {
        let authority = uri.authority();
        let integration = extensions.get::<IntegrationName>();
        if let Some((kept_authority, kept_integration, key)) = self.0.get()
            && authority
                .is_some_and(|authority| same_str(kept_authority.as_str(), authority.as_str()))
            && same_optional_str(
                kept_integration.as_ref().map(IntegrationName::as_str),
                integration.map(IntegrationName::as_str),
            )
        {
            return f(key);
        }
        with_default_key(uri, extensions, |key| {
            if let Some(authority) = authority
                && self.0.get().is_none()
            {
                // Set once; a call racing to set it with another authority keeps its own.
                let _ = self
                    .0
                    .set((authority.clone(), integration.cloned(), Arc::from(key)));
            }
            f(key)
        })
    }
}

/// The service of [`CircuitBreakerLayer`].
///
/// `poll_ready` is the inner service's: the breaker key comes from the request, so admission (and the
/// half-open probe's reservation) happens in `call`. A refused call leaves the inner service's
/// readiness unused, which tower allows (a ready service may be dropped or called later).
///
/// # Errors
///
/// The inner error, boxed, or [`CircuitOpen`] when the breaker refuses the call.
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<BreakerShared>,
}

impl<S> CircuitBreaker<S> {
    /// The state of the breaker for `key`.
    pub fn state(&self, key: &str) -> Option<BreakerState> {
        self.shared.registry.state(key)
    }

    /// The registry.
    pub fn registry(&self) -> &BreakerRegistry {
        &self.shared.registry
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .field("registry", &self.shared.registry)
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        let labels = || {
            let integration = crate::integration_label(IntegrationName::of(&request));
            let host = SharedString::from(request.uri().host().unwrap_or("").to_owned());
            (integration, host)
        };
        let admit = |key: &str| {
            let admitted = self.shared.registry.admit(key, policy, labels);
            if admitted.is_err() {
                tracing::debug!(breaker = key, "circuit breaker refused the call");
            }
            admitted
        };
        let admitted = match &policy.key {
            Some(make_key) => admit(&make_key(request.uri(), request.extensions())),
            None => self
                .shared
                .first_key
                .with(request.uri(), request.extensions(), admit),
        };
        match admitted {
            Err(open) => {
                let integration = crate::integration_label(IntegrationName::of(&request));
                metrics::counter!(names::BREAKER_REJECTIONS, names::INTEGRATION => integration)
                    .increment(1);
                BreakerFuture {
                    kind: Kind::Rejected { error: Some(open) },
                }
            }
            Ok((admission, key)) => {
                let method = request.method().clone();
                BreakerFuture {
                    kind: Kind::Called {
                        future: self.inner.call(request),
                        recorder: Some(Recorder {
                            shared: Arc::clone(&self.shared),
                            key,
                            admission,
                            method,
                            done: false,
                        }),
                    },
                }
            }
        }
    }
}

/// Reports a call's outcome to its breaker; a probe dropped before its end is released.
struct Recorder {
    shared: Arc<BreakerShared>,
    key: Arc<str>,
    admission: Admission,
    method: Method,
    done: bool,
}

impl Recorder {
    fn meta(&self) -> RequestMeta {
        // Judged as idempotent: whether the upstream is healthy does not depend on the method.
        RequestMeta::new(self.method.clone()).with_idempotent(true)
    }

    fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.shared
            .registry
            .record(&self.key, self.admission, outcome, &self.shared.policy);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done && self.admission.probe {
            self.shared
                .registry
                .release_probe(&self.key, self.admission);
        }
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`].
    ///
    /// # Panics
    ///
    /// When polled again after it completed with a refusal (as any future may).
    #[must_use = "futures do nothing unless polled"]
    pub struct BreakerFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F, recorder: Option<Recorder> },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F> fmt::Debug for BreakerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerFuture").finish_non_exhaustive()
    }
}

impl<F, ResB, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, recorder } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(recorder) = recorder.take() {
                    let classifier = &recorder.shared.policy.classifier;
                    let meta = recorder.meta();
                    let classification = match &result {
                        Ok(response) => classifier.classify_response(
                            &meta,
                            response.status(),
                            response.headers(),
                            wall_clock(),
                        ),
                        Err(error) => classifier.classify_error(&meta, &**error),
                    };
                    let outcome = match classification {
                        // The upstream is up and asks us to slow down: the rate limiter's business,
                        // not the breaker's (see `BreakerPolicy`, "What counts").
                        Classification::Retry {
                            reason: RetryReason::Throttled,
                            ..
                        } => Outcome::Neutral,
                        // No credential, so nothing reached the upstream: its health is unknown.
                        Classification::Retry {
                            reason: RetryReason::CredentialUnavailable,
                            ..
                        } => Outcome::Neutral,
                        Classification::Retry { .. } => Outcome::Failure,
                        Classification::Reauthenticate => Outcome::Neutral,
                        Classification::Success => Outcome::Success,
                        // An answer that is final proves the upstream is up; an error that is final
                        // is one of ours (a local limit) and says nothing about it.
                        _ if result.is_ok() => Outcome::Success,
                        _ => Outcome::Neutral,
                    };
                    recorder.record(outcome);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(
                error.take().expect("BreakerFuture polled after completion"),
            ))),
        }
    }
}

// `Retry-After` may be an HTTP-date, measured against the wall clock when the response has no `Date`.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extensions(integration: Option<&IntegrationName>) -> Extensions {
        let mut extensions = Extensions::new();
        if let Some(name) = integration {
            extensions.insert(name.clone());
        }
        extensions
    }

    /// The kept key is the first authority and integration's (issue 19), and every call, whether
    /// it matches them or not, gets exactly `default_key`'s key: another host, another port, the
    /// host in other letters, userinfo, another integration or none, a relative URI.
    #[test]
    fn the_first_key_kept_is_the_default_key_of_each_call() {
        let github = IntegrationName::new("github");
        let stripe = IntegrationName::new("stripe");
        let calls: Vec<(&str, Option<&IntegrationName>)> = vec![
            ("https://api.github.com/repos", Some(&github)),
            ("https://api.github.com/users", Some(&github)),
            ("https://uploads.github.com/x", Some(&github)),
            ("https://api.github.com:8443/repos", Some(&github)),
            ("https://API.github.com/repos", Some(&github)),
            ("https://user:pw@api.github.com/repos", Some(&github)),
            ("https://api.github.com/repos", Some(&stripe)),
            ("https://api.github.com/repos", None),
            ("/relative", Some(&github)),
            ("https://api.github.com/again", Some(&github)),
        ];
        let first = FirstKey::default();
        for (uri, integration) in &calls {
            let uri: Uri = uri.parse().unwrap();
            let extensions = extensions(*integration);
            let key = first.with(&uri, &extensions, str::to_owned);
            assert_eq!(key, default_key(&uri, &extensions), "{uri} {integration:?}");
        }
        let (authority, integration, key) = first.0.get().expect("the first key is kept");
        assert_eq!(authority.as_str(), "api.github.com");
        assert_eq!(integration.as_ref(), Some(&github));
        assert_eq!(&**key, "github|api.github.com");

        // The authority may hold userinfo; what the layer's Debug could show is the key alone.
        let with_userinfo = FirstKey::default();
        let uri: Uri = "https://user:pass-word@api.github.com/x".parse().unwrap();
        with_userinfo.with(&uri, &extensions(Some(&github)), |_| ());
        let shown = format!("{with_userinfo:?}");
        assert!(!shown.contains("pass-word"), "{shown}");
        assert!(shown.contains("github|api.github.com"), "{shown}");

        // A first call without an authority keeps nothing: its key says nothing of the next.
        let first = FirstKey::default();
        let relative: Uri = "/relative".parse().unwrap();
        assert_eq!(first.with(&relative, &extensions(None), str::to_owned), "|");
        assert!(first.0.get().is_none());
    }
}
