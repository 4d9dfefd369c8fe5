//! The fault upstream: a loopback hyper 1 server that misbehaves on purpose and records what it
//! received.
//!
//! Every request to [`PATH`] goes through, in order:
//!
//! 1. the outage switch ([`FaultServer::start_outage`]): `503` to everything, or the listener closed
//!    and every open connection dropped (connection refused until [`FaultServer::end_outage`]);
//! 2. the server-side limiter ([`ServerLimit`]): GCRA or a fixed window, answering `429` with
//!    `Retry-After` and/or the IETF `RateLimit`/`RateLimit-Policy` fields;
//! 3. the random faults of the [`FaultPlan`]: a `503`, a connection closed before the response head,
//!    or a head followed by a connection reset in the middle of the body;
//! 4. the latency distribution, then `200` with a small JSON body.
//!
//! [`TOKEN_PATH`] is an OAuth 2.0 token endpoint that never fails (the scenarios break the API, not
//! the identity provider). Every response echoes the request's `x-config` header as
//! [`CONFIG_ECHO`], so a caller can tell which configuration served it.
//!
//! What the server saw is kept per second since the run's epoch ([`ServerSecond`]), and the
//! [`CALL_ID`] of every `POST` without an `Idempotency-Key` is counted, so duplicates at the server
//! (a non-idempotent call sent twice) are visible: [`FaultServer::duplicate_posts`].

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// The path the scenarios call: faults, limits and latency apply here.
pub const PATH: &str = "/v1/item";

/// The OAuth 2.0 token endpoint (client credentials): always `200` with a bearer token.
pub const TOKEN_PATH: &str = "/oauth/token";

/// Lifetime the token endpoint states (`expires_in`, seconds), as in issue 13's Redis scenario.
pub const TOKEN_EXPIRES_IN: u64 = 30;

/// The request header that names a call (the harness sets it, the same on every attempt).
pub const CALL_ID: &str = "x-chaos-call";

/// The response header that echoes the request's `x-config` header.
pub const CONFIG_ECHO: &str = "x-config-served";

/// The request header whose value [`CONFIG_ECHO`] echoes.
pub const CONFIG_TAG: &str = "x-config";

/// The body of a successful answer.
const BODY: &[u8] =
    br#"{"id":42,"name":"widget","price_cents":1999,"tags":["blue","small"],"in_stock":true}"#;

/// The random faults and the latency of the fault upstream. The shares are of the requests that
/// pass the outage switch and the limiter, drawn independently for each request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Share answered `503 Service Unavailable` (no `Retry-After`), in [0, 1].
    pub status_503: f64,
    /// Share whose connection is closed after the request was read, before any response head.
    pub drop_before_head: f64,
    /// Share answered with a head and half the body, then the connection is reset.
    pub reset_mid_body: f64,
    /// Time before the answer.
    pub latency: Latency,
    /// The server-side rate limit, if any.
    pub limit: Option<ServerLimit>,
}

/// How long the server takes before answering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Latency {
    /// At once.
    #[default]
    None,
    /// Lognormal with this median and 99th percentile (seconds).
    LogNormal {
        /// The median, seconds.
        median_s: f64,
        /// The 99th percentile, seconds.
        p99_s: f64,
    },
}

/// The 99th percentile of the standard normal distribution.
const Z_99: f64 = 2.326_347_874;

impl Latency {
    /// One draw: `uniform` and `uniform2` are two independent draws from (0, 1].
    ///
    /// ```
    /// use integration_tests::chaos::fault::Latency;
    ///
    /// let latency = Latency::LogNormal { median_s: 0.2, p99_s: 2.0 };
    /// // The median of a lognormal is where the normal draw is 0 (cos(π/2) = 0 in Box-Muller).
    /// let median = latency.sample(1.0, 0.25).as_secs_f64();
    /// assert!((median - 0.2).abs() < 1e-9);
    /// ```
    pub fn sample(&self, uniform: f64, uniform2: f64) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::LogNormal { median_s, p99_s } => {
                let sigma = (p99_s / median_s).ln().max(0.0) / Z_99;
                // Box-Muller: one standard normal draw from two uniforms.
                let u = uniform.clamp(f64::MIN_POSITIVE, 1.0);
                let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * uniform2).cos();
                Duration::from_secs_f64((median_s * (sigma * normal).exp()).min(3600.0))
            }
        }
    }
}

/// A server-side rate limiter and how it tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerLimit {
    /// The algorithm.
    pub kind: LimitKind,
    /// Send `Retry-After` (whole seconds) on a `429`.
    pub retry_after: bool,
    /// Send `RateLimit` and `RateLimit-Policy` (IETF draft 09+) on every answer of [`PATH`].
    pub ratelimit_headers: bool,
}

/// The limiting algorithm of a [`ServerLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LimitKind {
    /// GCRA, as nginx's `limit_req`: `rate` per second, `burst` at once.
    Gcra {
        /// Requests per second.
        rate: f64,
        /// Requests allowed at once.
        burst: u32,
    },
    /// `limit` requests per fixed window of `window_s` seconds (what `RateLimit-Policy` describes).
    FixedWindow {
        /// Requests per window.
        limit: u32,
        /// The window, whole seconds.
        window_s: u64,
    },
}

/// The state of a server-side limiter; time is an offset from any fixed epoch.
#[derive(Clone, Debug)]
pub struct LimiterState {
    kind: LimitKind,
    /// GCRA: the theoretical arrival time. Fixed window: the start of the current window.
    at: Duration,
    /// Fixed window: requests admitted in the current window.
    used: u32,
}

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Admitted.
    pub allowed: bool,
    /// Requests that would still be admitted at once after this one.
    pub remaining: u32,
    /// Until the next request is admitted (denied), or until the allowance is whole again (admitted).
    pub reset: Duration,
}

impl LimiterState {
    /// A fresh limiter (full burst).
    pub fn new(kind: LimitKind) -> Self {
        Self {
            kind,
            at: Duration::ZERO,
            used: 0,
        }
    }

    /// Decides the request arriving at `now`.
    ///
    /// ```
    /// use integration_tests::chaos::fault::{LimitKind, LimiterState};
    /// use std::time::Duration;
    ///
    /// let mut gcra = LimiterState::new(LimitKind::Gcra { rate: 50.0, burst: 10 });
    /// let now = Duration::from_secs(1);
    /// let admitted = (0..20).filter(|_| gcra.decide(now).allowed).count();
    /// assert_eq!(admitted, 10); // the burst, then one every 20 ms
    /// assert!(gcra.decide(now + Duration::from_millis(20)).allowed);
    /// ```
    pub fn decide(&mut self, now: Duration) -> Decision {
        match self.kind {
            LimitKind::Gcra { rate, burst } => {
                let interval = Duration::from_secs_f64(1.0 / rate);
                let tolerance = interval * burst.saturating_sub(1);
                let tat = self.at.max(now);
                // Admitted when the theoretical arrival time is within the burst tolerance.
                if tat.saturating_sub(now) <= tolerance {
                    self.at = tat + interval;
                    let used = self.at - now;
                    let left = (tolerance + interval).saturating_sub(used);
                    Decision {
                        allowed: true,
                        remaining: (left.as_secs_f64() / interval.as_secs_f64() + 1e-9).floor()
                            as u32,
                        reset: used,
                    }
                } else {
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset: tat - now - tolerance,
                    }
                }
            }
            LimitKind::FixedWindow { limit, window_s } => {
                let window = Duration::from_secs(window_s.max(1));
                if now >= self.at + window {
                    let windows = (now - self.at).as_nanos() / window.as_nanos();
                    self.at += window * u32::try_from(windows).unwrap_or(u32::MAX);
                    self.used = 0;
                }
                let reset = self.at + window - now;
                if self.used < limit {
                    self.used += 1;
                    Decision {
                        allowed: true,
                        remaining: limit - self.used,
                        reset,
                    }
                } else {
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset,
                    }
                }
            }
        }
    }

    /// The `RateLimit-Policy` value of this limiter (IETF draft 09+).
    pub fn policy_header(&self) -> String {
        match self.kind {
            // The burst is what can be had at once; it refills at the rate.
            LimitKind::Gcra { rate, burst } => format!(
                "\"burst\";q={burst};w={}",
                ((f64::from(burst) / rate).ceil() as u64).max(1)
            ),
            LimitKind::FixedWindow { limit, window_s } => {
                format!("\"default\";q={limit};w={}", window_s.max(1))
            }
        }
    }

    /// The name of the policy in `RateLimit`.
    fn policy_name(&self) -> &'static str {
        match self.kind {
            LimitKind::Gcra { .. } => "burst",
            LimitKind::FixedWindow { .. } => "default",
        }
    }
}

/// What the server saw during one second of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSecond {
    /// Requests to [`PATH`] received (every answer below included).
    pub requests: u64,
    /// Answered `200`.
    pub ok: u64,
    /// Answered `429` by the limiter.
    pub throttled: u64,
    /// Answered `503` by the fault plan.
    pub injected_503: u64,
    /// Answered `503` because of an outage.
    pub outage_503: u64,
    /// Connections closed before the response head.
    pub dropped: u64,
    /// Connections reset in the middle of the body.
    pub reset: u64,
    /// Token requests.
    pub token_requests: u64,
}

impl ServerSecond {
    fn add(&mut self, other: &ServerSecond) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.throttled += other.throttled;
        self.injected_503 += other.injected_503;
        self.outage_503 += other.outage_503;
        self.dropped += other.dropped;
        self.reset += other.reset;
        self.token_requests += other.token_requests;
    }
}

/// The current outage, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outage {
    /// Every request to [`PATH`] is answered `503`.
    Status503,
    /// The listener is closed and every connection dropped: connection refused.
    Refused,
}

#[derive(Debug)]
struct State {
    plan: FaultPlan,
    limiter: Option<LimiterState>,
    outage: Option<Outage>,
    seconds: BTreeMap<u64, ServerSecond>,
    posts: HashMap<String, u32>,
    /// When the first answer of [`PATH`] left the server.
    first_answer: Option<Duration>,
    /// Requests to [`PATH`] that arrived after the first answer left, and how many were throttled.
    after_first: (u64, u64),
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    state: Mutex<State>,
    connections: Mutex<Vec<AbortHandle>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answered(&self) {
        let now = self.epoch.elapsed();
        self.state().first_answer.get_or_insert(now);
    }

    fn record(&self, state: &mut State, f: impl FnOnce(&mut ServerSecond)) {
        let second = self.epoch.elapsed().as_secs();
        f(state.seconds.entry(second).or_default());
    }
}

/// The fault upstream, running on the runtime it was started on until dropped.
///
/// # Example
///
/// ```
/// use integration_tests::chaos::fault::{FaultPlan, FaultServer, PATH};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let plan = FaultPlan { status_503: 1.0, ..FaultPlan::default() };
/// let server = FaultServer::start(plan, tokio::time::Instant::now()).await?;
/// let stream = tokio::net::TcpStream::connect(server.addr()).await?;
/// # drop(stream);
/// assert_eq!(server.totals().requests, 0);
/// # let _ = PATH;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Handle,
}

impl FaultServer {
    /// Binds `127.0.0.1:0` and serves `plan` on the current runtime; seconds count from `epoch`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(plan: FaultPlan, epoch: Instant) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            state: Mutex::new(State {
                limiter: plan.limit.map(|limit| LimiterState::new(limit.kind)),
                plan,
                outage: None,
                seconds: BTreeMap::new(),
                posts: HashMap::new(),
                first_answer: None,
                after_first: (0, 0),
            }),
            connections: Mutex::new(Vec::new()),
            accept: Mutex::new(None),
        });
        let server = Self {
            addr,
            shared,
            runtime: Handle::current(),
        };
        server.spawn_accept(listener);
        Ok(server)
    }

    /// The address it listens on (the same across a refused outage).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let task = self.runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, for instance: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn_shared = Arc::clone(&shared);
                let task = tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = Arc::clone(&conn_shared);
                        async move { respond(&shared, request).await }
                    });
                    // A connection error (a drop we chose, a client gone) ends that connection only.
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut connections = shared
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if connections.len() >= 256 {
                    connections.retain(|handle| !handle.is_finished());
                }
                connections.push(task.abort_handle());
            }
        });
        *self
            .shared
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Starts an outage. [`Outage::Refused`] closes the listener and drops every open connection;
    /// it returns once the listener is closed, so a connection attempt made after it is refused.
    pub async fn start_outage(&self, outage: Outage) {
        self.shared.state().outage = Some(outage);
        if outage == Outage::Refused
            && let Some(accept) = self.stop_listening()
        {
            // Regression (the harness test `outages_answer_503_or_refuse_...` failed under load):
            // an aborted task drops its listener only when its runtime next gets to it, and until
            // then the kernel still accepts connections. Waiting for the task to end closes it.
            let _ = accept.await;
        }
    }

    /// Aborts the accept task (returned, to wait for the listener to close) and every connection.
    fn stop_listening(&self) -> Option<JoinHandle<()>> {
        let accept = self
            .shared
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(accept) = &accept {
            accept.abort();
        }
        for connection in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            connection.abort();
        }
        accept
    }

    /// Ends the outage; after a refused one, listens again on the same address.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound again.
    pub async fn end_outage(&self) -> io::Result<()> {
        let outage = self.shared.state().outage.take();
        if outage == Some(Outage::Refused) {
            // The aborted accept task drops the listener on its runtime: retry briefly.
            let mut tries = 0;
            let listener = loop {
                let socket = TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                    Ok(listener) => break listener,
                    Err(error) if tries >= 200 => return Err(error),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            self.spawn_accept(listener);
        }
        Ok(())
    }

    /// What the server saw, by second since the epoch (seconds with no request are absent).
    pub fn seconds(&self) -> BTreeMap<u64, ServerSecond> {
        self.shared.state().seconds.clone()
    }

    /// What the server saw in all.
    pub fn totals(&self) -> ServerSecond {
        let mut total = ServerSecond::default();
        for second in self.shared.state().seconds.values() {
            total.add(second);
        }
        total
    }

    /// Calls (by [`CALL_ID`]) of `POST`s without `Idempotency-Key` that reached the server more than
    /// once, and the extra copies in all.
    pub fn duplicate_posts(&self) -> (u64, u64) {
        let state = self.shared.state();
        let calls = state.posts.values().filter(|count| **count > 1).count() as u64;
        let extra = state
            .posts
            .values()
            .map(|count| u64::from(count.saturating_sub(1)))
            .sum();
        (calls, extra)
    }

    /// Throttled requests to [`PATH`] that arrived after the first answer had left, and when it
    /// left (from the epoch): what a client could have avoided, knowing the server's limit.
    pub fn throttled_after_first_answer(&self) -> (u64, Option<Duration>) {
        let state = self.shared.state();
        (state.after_first.1, state.first_answer)
    }

    /// Requests to [`PATH`] that arrived after the first answer had left.
    pub fn requests_after_first_answer(&self) -> u64 {
        self.shared.state().after_first.0
    }

    /// `POST`s without `Idempotency-Key` seen (distinct calls).
    pub fn posts_seen(&self) -> u64 {
        self.shared.state().posts.len() as u64
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        drop(self.stop_listening());
    }
}

/// The outcome drawn for one request.
enum Fault {
    None,
    Status503,
    Drop,
    Reset,
}

async fn respond(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<ChaosBody>, io::Error> {
    let echo = request.headers().get(CONFIG_TAG).cloned();
    if request.uri().path() == TOKEN_PATH {
        shared.record(&mut shared.state(), |s| s.token_requests += 1);
        let body = format!(
            r#"{{"access_token":"chaos-{:016x}","token_type":"bearer","expires_in":{TOKEN_EXPIRES_IN}}}"#,
            fastrand::u64(..)
        );
        return Ok(answer(
            StatusCode::OK,
            ChaosBody::full(body.into_bytes()),
            echo,
        ));
    }
    if request.uri().path() != PATH {
        return Ok(answer(StatusCode::NOT_FOUND, ChaosBody::full("{}"), echo));
    }
    let (fault, latency, throttle) = {
        let mut state = shared.state();
        let now = shared.epoch.elapsed();
        shared.record(&mut state, |s| s.requests += 1);
        let after_first = state.first_answer.is_some_and(|first| now > first);
        if after_first {
            state.after_first.0 += 1;
        }
        if request.method() == Method::POST
            && !request.headers().contains_key("idempotency-key")
            && let Some(id) = request.headers().get(CALL_ID).and_then(|v| v.to_str().ok())
        {
            *state.posts.entry(id.to_owned()).or_default() += 1;
        }
        if state.outage.is_some() {
            shared.record(&mut state, |s| s.outage_503 += 1);
            state.first_answer.get_or_insert(now);
            drop(state);
            return Ok(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                ChaosBody::full("{\"error\":\"outage\"}"),
                echo,
            ));
        }
        let limit = state.plan.limit;
        let throttle = match (state.limiter.as_mut(), limit) {
            (Some(limiter), Some(limit)) => {
                let decision = limiter.decide(now);
                let headers = limit.ratelimit_headers.then(|| {
                    (
                        limiter.policy_header(),
                        format!(
                            "\"{}\";r={};t={}",
                            limiter.policy_name(),
                            decision.remaining,
                            decision.reset.as_secs_f64().ceil() as u64
                        ),
                    )
                });
                Some((decision, limit, headers))
            }
            _ => None,
        };
        if let Some((decision, limit, headers)) = &throttle
            && !decision.allowed
        {
            shared.record(&mut state, |s| s.throttled += 1);
            if after_first {
                state.after_first.1 += 1;
            }
            state.first_answer.get_or_insert(now);
            drop(state);
            let mut response = answer(
                StatusCode::TOO_MANY_REQUESTS,
                ChaosBody::full("{\"error\":\"rate limited\"}"),
                echo,
            );
            if limit.retry_after {
                let seconds = decision.reset.as_secs_f64().ceil().max(1.0) as u64;
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            add_ratelimit_headers(&mut response, headers.as_ref());
            return Ok(response);
        }
        let draw = fastrand::f64();
        let plan = &state.plan;
        let fault = if draw < plan.status_503 {
            Fault::Status503
        } else if draw < plan.status_503 + plan.drop_before_head {
            Fault::Drop
        } else if draw < plan.status_503 + plan.drop_before_head + plan.reset_mid_body {
            Fault::Reset
        } else {
            Fault::None
        };
        let latency = plan.latency.sample(1.0 - fastrand::f64(), fastrand::f64());
        match fault {
            Fault::Status503 => shared.record(&mut state, |s| s.injected_503 += 1),
            Fault::Drop => shared.record(&mut state, |s| s.dropped += 1),
            Fault::Reset => shared.record(&mut state, |s| s.reset += 1),
            Fault::None => shared.record(&mut state, |s| s.ok += 1),
        }
        (fault, latency, throttle.and_then(|(_, _, headers)| headers))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    shared.answered();
    let mut response = match fault {
        // An error from the service makes hyper close the connection without writing a response.
        Fault::Drop => return Err(io::Error::other("chaos: connection dropped")),
        Fault::Status503 => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            ChaosBody::full("{\"error\":\"unavailable\"}"),
            echo,
        ),
        Fault::Reset => answer(StatusCode::OK, ChaosBody::broken(BODY), echo),
        Fault::None => answer(StatusCode::OK, ChaosBody::full(BODY), echo),
    };
    add_ratelimit_headers(&mut response, throttle.as_ref());
    Ok(response)
}

fn add_ratelimit_headers(response: &mut Response<ChaosBody>, headers: Option<&(String, String)>) {
    if let Some((policy, limit)) = headers {
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", limit)] {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
}

fn answer(status: StatusCode, body: ChaosBody, echo: Option<HeaderValue>) -> Response<ChaosBody> {
    let length = body.length;
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .expect("a fixed status and headers are valid");
    if let Some(echo) = echo {
        response.headers_mut().insert(CONFIG_ECHO, echo);
    }
    response
}

/// A response body that is whole, or that sends half of itself and then fails (the connection is
/// reset in the middle of the body).
#[derive(Debug)]
pub struct ChaosBody {
    chunk: Option<Bytes>,
    broken: bool,
    /// For a broken body: a pause after the first half, so hyper flushes the head and that half
    /// before the reset (otherwise the client would see a drop before the head).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    length: u64,
}

impl ChaosBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        let chunk: Bytes = bytes.into();
        Self {
            length: chunk.len() as u64,
            chunk: Some(chunk),
            broken: false,
            pause: None,
        }
    }

    fn broken(bytes: &'static [u8]) -> Self {
        Self {
            length: bytes.len() as u64,
            chunk: Some(Bytes::from_static(&bytes[..bytes.len() / 2])),
            broken: true,
            pause: Some(Box::pin(tokio::time::sleep(Duration::from_millis(20)))),
        }
    }
}

impl Body for ChaosBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(chunk) = self.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        if self.broken {
            self.broken = false;
            return Poll::Ready(Some(Err(io::Error::other("chaos: reset mid-body"))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.chunk.is_none() && !self.broken
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_the_burst_then_the_rate() {
        let mut gcra = LimiterState::new(LimitKind::Gcra {
            rate: 50.0,
            burst: 10,
        });
        let start = Duration::from_secs(10);
        let first = gcra.decide(start);
        assert!(first.allowed);
        assert_eq!(first.remaining, 9);
        let admitted = 1 + (0..30).filter(|_| gcra.decide(start).allowed).count();
        assert_eq!(admitted, 10);
        let denied = gcra.decide(start);
        assert!(!denied.allowed);
        assert_eq!(denied.reset, Duration::from_millis(20));
        // Over 2 s at a steady 100 r/s, 50 r/s pass (plus nothing: the burst is spent).
        let mut passed = 0;
        for i in 1..=200u32 {
            if gcra.decide(start + Duration::from_millis(10) * i).allowed {
                passed += 1;
            }
        }
        assert!((99..=101).contains(&passed), "passed {passed}");
    }

    #[test]
    fn fixed_window_counts_down_and_resets() {
        let mut window = LimiterState::new(LimitKind::FixedWindow {
            limit: 3,
            window_s: 1,
        });
        let t = Duration::from_millis(1_200);
        let remaining: Vec<_> = (0..4).map(|_| window.decide(t)).collect();
        assert_eq!(
            remaining.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(remaining[2].remaining, 0);
        assert_eq!(remaining[3].reset, Duration::from_millis(800));
        assert!(window.decide(Duration::from_millis(2_000)).allowed);
        assert_eq!(
            window.policy_header(),
            "\"default\";q=3;w=1",
            "the policy names the window"
        );
    }

    #[test]
    fn lognormal_hits_its_percentiles() {
        let latency = Latency::LogNormal {
            median_s: 0.2,
            p99_s: 2.0,
        };
        fastrand::seed(7);
        let mut draws: Vec<f64> = (0..20_000)
            .map(|_| {
                latency
                    .sample(1.0 - fastrand::f64(), fastrand::f64())
                    .as_secs_f64()
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[draws.len() / 2];
        let p99 = draws[draws.len() * 99 / 100];
        assert!((0.18..0.22).contains(&median), "median {median}");
        assert!((1.7..2.3).contains(&p99), "p99 {p99}");
    }
}
