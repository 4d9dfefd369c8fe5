//! [`CircuitBreakerLayer`]: fail fast while an upstream is known broken.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{Extensions, Method, Request, Response, Uri};
use integration_core::classify::{
    Classification, Classify, DefaultClassifier, RequestMeta, RetryReason,
};
use integration_core::error::CircuitOpen;
use integration_core::ext::IntegrationName;
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
    /// The open period is over: one probe call goes through, the others are refused until it ends.
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
    let host = uri.host().unwrap_or("");
    let mut key = String::with_capacity(integration.len() + host.len() + 1);
    key.push_str(integration);
    key.push('|');
    key.push_str(host);
    key
}

/// When a breaker opens, for how long, and how many keys it remembers.
///
/// | setting | default |
/// | --- | --- |
/// | [`failure_ratio`](Self::with_failure_ratio) | 0.5 of the calls in the window |
/// | [`window`](Self::with_window) | 10 s |
/// | [`min_throughput`](Self::with_min_throughput) | 20 calls in the window before the ratio counts |
/// | [`consecutive_failures`](Self::with_consecutive_failures) | 5 (0 turns this trigger off) |
/// | [`open_duration`](Self::with_open_duration) | 30 s |
/// | [`open_jitter`](Self::with_open_jitter) | 0.2 (the open period is 30 s to 36 s) |
/// | [`max_keys`](Self::with_max_keys) | 1024 |
/// | [`key`](Self::with_key) | [`default_key`]: integration and host |
/// | [`classifier`](Self::with_classifier) | [`DefaultClassifier`] |
///
/// # What counts
///
/// Each call is judged by the [classifier](Self::with_classifier) as if every request were
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
/// answered with a 429 leaves the breaker half-open, and the next call probes again.
///
/// [`RetryReason::Throttled`]: integration_core::classify::RetryReason::Throttled
/// [`RetryReason::CredentialUnavailable`]: integration_core::classify::RetryReason::CredentialUnavailable
///
/// ```
/// use integration_retry::BreakerPolicy;
/// use std::time::Duration;
///
/// let policy = BreakerPolicy::default()
///     .with_consecutive_failures(3)
///     .with_open_duration(Duration::from_secs(10))
///     .with_key(|uri, _| uri.host().unwrap_or("").to_owned());
/// assert_eq!(policy.consecutive_failures(), 3);
/// ```
#[derive(Clone)]
pub struct BreakerPolicy {
    failure_ratio: f64,
    window: Duration,
    min_throughput: u32,
    consecutive_failures: u32,
    open_duration: Duration,
    open_jitter: f64,
    max_keys: usize,
    key: KeyFn,
    classifier: Arc<dyn Classify>,
    jitter: Jitter,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_throughput: 20,
            consecutive_failures: 5,
            open_duration: Duration::from_secs(30),
            open_jitter: 0.2,
            max_keys: 1024,
            key: Arc::new(default_key),
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
            .field("open_jitter", &self.open_jitter)
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

    /// Opens when failures reach this share of the calls in the window (clamped to `0.0..=1.0`).
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

    /// Calls needed in the window before the failure ratio can open the breaker.
    #[must_use]
    pub fn with_min_throughput(mut self, calls: u32) -> Self {
        self.min_throughput = calls.max(1);
        self
    }

    /// Opens after this many failures in a row, whatever the ratio; 0 turns this trigger off.
    #[must_use]
    pub fn with_consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// How long the breaker stays open before letting a probe through.
    #[must_use]
    pub fn with_open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
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
        self.key = Arc::new(key);
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

    /// The minimum throughput.
    pub fn min_throughput(&self) -> u32 {
        self.min_throughput
    }

    /// The consecutive-failure trigger (0: off).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The open duration before jitter.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// The open-period jitter.
    pub fn open_jitter(&self) -> f64 {
        self.open_jitter
    }

    /// The cap on keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The open duration lengthened by its jitter; `Duration::MAX` when that does not fit (an open
    /// duration meant as "until restarted" must not overflow and panic).
    fn open_period(&self) -> Duration {
        let factor = 1.0 + self.open_jitter * self.jitter.sample();
        Duration::try_from_secs_f64(self.open_duration.as_secs_f64() * factor)
            .unwrap_or(Duration::MAX)
    }

    /// When a breaker opened now stays open until.
    fn open_until(&self, now: Instant) -> Instant {
        instant_after(now, self.open_period())
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
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Counter 0: successes; counter 1: failures.
const SUCCESSES: usize = 0;
const FAILURES: usize = 1;

struct Entry {
    phase: Phase,
    counts: SlidingCounts<2>,
    consecutive: u32,
    last_used: Instant,
    integration: SharedString,
    host: SharedString,
}

impl Entry {
    fn set_phase(&mut self, phase: Phase, key: &str) {
        self.phase = phase;
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
            BreakerState::Open => tracing::warn!(breaker = key, "circuit breaker opened"),
        }
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// What an admitted call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Normal,
    Probe,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
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
    ) -> Result<Admission, CircuitOpen> {
        let now = Instant::now();
        let mut keys = self.lock();
        if !keys.contains_key(key) {
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
            keys.insert(
                key.to_owned(),
                Entry {
                    phase: Phase::Closed,
                    counts: SlidingCounts::new(policy.window),
                    consecutive: 0,
                    last_used: now,
                    integration,
                    host,
                },
            );
        }
        let entry = keys.get_mut(key).expect("inserted above");
        entry.last_used = now;
        match entry.phase {
            Phase::Closed => Ok(Admission::Normal),
            Phase::Open { until } if now < until => Err(CircuitOpen::new(Some(until - now))),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                entry.set_phase(Phase::HalfOpen { probing: true }, key);
                Ok(Admission::Probe)
            }
            Phase::HalfOpen { probing: true } => Err(CircuitOpen::new(None)),
        }
    }

    fn record(&self, key: &str, admission: Admission, outcome: Outcome, policy: &BreakerPolicy) {
        let now = Instant::now();
        let mut keys = self.lock();
        let Some(entry) = keys.get_mut(key) else {
            // Forgotten meanwhile (the key cap): nothing to update.
            return;
        };
        match (admission, entry.phase) {
            (Admission::Probe, Phase::HalfOpen { .. }) => match outcome {
                Outcome::Success => {
                    entry.counts.clear();
                    entry.consecutive = 0;
                    entry.set_phase(Phase::Closed, key);
                }
                Outcome::Failure => {
                    entry.set_phase(
                        Phase::Open {
                            until: policy.open_until(now),
                        },
                        key,
                    );
                }
                // Says nothing about the upstream: let another call probe.
                Outcome::Neutral => entry.phase = Phase::HalfOpen { probing: false },
            },
            (Admission::Normal, Phase::Closed) => {
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
                            entry.set_phase(
                                Phase::Open {
                                    until: policy.open_until(now),
                                },
                                key,
                            );
                        }
                    }
                    Outcome::Neutral => {}
                }
            }
            // A call admitted before the breaker changed state: its outcome is stale.
            _ => {}
        }
    }

    /// A probe ended without an outcome (its future was dropped): let another call probe.
    fn release_probe(&self, key: &str) {
        if let Some(entry) = self.lock().get_mut(key)
            && let Phase::HalfOpen { probing: true } = entry.phase
        {
            entry.phase = Phase::HalfOpen { probing: false };
        }
    }
}

fn should_open(entry: &Entry, policy: &BreakerPolicy) -> bool {
    if policy.consecutive_failures > 0 && entry.consecutive >= policy.consecutive_failures {
        return true;
    }
    let [successes, failures] = entry.counts.totals();
    let calls = successes + failures;
    calls >= u64::from(policy.min_throughput)
        && failures as f64 >= policy.failure_ratio * calls as f64
}

fn evict_least_recently_used(keys: &mut HashMap<String, Entry>) {
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
/// the host), opened by a failure ratio over a sliding window (with a minimum throughput) or by
/// consecutive failures, open for a jittered period, then half-open with exactly one probe.
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
            }),
        }
    }
}

#[derive(Debug)]
struct BreakerShared {
    policy: BreakerPolicy,
    registry: BreakerRegistry,
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
        let key = (policy.key)(request.uri(), request.extensions());
        let labels = || {
            let integration = crate::integration_label(IntegrationName::of(&request));
            let host = SharedString::from(request.uri().host().unwrap_or("").to_owned());
            (integration, host)
        };
        match self.shared.registry.admit(&key, policy, labels) {
            Err(open) => {
                let integration = crate::integration_label(IntegrationName::of(&request));
                metrics::counter!(names::BREAKER_REJECTIONS, names::INTEGRATION => integration)
                    .increment(1);
                tracing::debug!(breaker = key.as_str(), "circuit breaker refused the call");
                BreakerFuture {
                    kind: Kind::Rejected { error: Some(open) },
                }
            }
            Ok(admission) => {
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
    key: String,
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
        if !self.done && self.admission == Admission::Probe {
            self.shared.registry.release_probe(&self.key);
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
