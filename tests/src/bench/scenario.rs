//! The clients under test, each behind the same [`Caller`] contract: `GET` [`PATH`] on the
//! loopback server with `Accept: application/json`, read the whole body, fail on anything but
//! `200` with the expected body length.

use super::BoxError;
use super::load::Caller;
use super::server::{BODY, PATH};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use integration_core::redis::{SharedRedis, SharedRedisConfig};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// The `Accept` header every scenario sends.
pub const ACCEPT_JSON: &str = "application/json";

/// The benchmark's scenarios, numbered as in the issue and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1. The raw hyper-util legacy client: the ceiling.
    RawHyper,
    /// 2. Our full stack through the facade, every layer on, rate limits in memory.
    FullStack,
    /// 3. The same with the rate limits in Redis (`REDIS_URL`, a private key prefix).
    FullStackRedis,
    /// 4. The peer stack users would pick: reqwest with reqwest-middleware, reqwest-retry and
    ///    reqwest-tracing.
    PeerStack,
    /// 5. The peer `reqwest` alone.
    Reqwest,
    /// 6. Breakdown: our facade's transport alone (pooled hyper-util client with its tower-http
    ///    decompression and redirect handling), called as a tower service, no layer, no facade.
    OurTransport,
    /// 7. Breakdown: the facade's client and request builder over that transport, no layer.
    FacadeNoLayers,
    /// 8. The floor of an instrumented call: the raw client with one call span made as our log
    ///    layer makes it, under the same subscriber (none of our code).
    RawHyperSpan,
    /// 9. Reference: hyper's own connection API (`hyper::client::conn::http1`) under the least
    ///    pool that works, a list of HTTP/1 senders: what a call costs below hyper-util's legacy
    ///    client, which scenarios 1 to 8 all use (issue 19).
    RawHyperConn,
}

impl Scenario {
    /// Every scenario, in the order of the report.
    pub const ALL: [Scenario; 9] = [
        Scenario::RawHyper,
        Scenario::FullStack,
        Scenario::FullStackRedis,
        Scenario::PeerStack,
        Scenario::Reqwest,
        Scenario::OurTransport,
        Scenario::FacadeNoLayers,
        Scenario::RawHyperSpan,
        Scenario::RawHyperConn,
    ];

    /// The scenario's number in the issue and the report.
    pub fn number(self) -> u8 {
        match self {
            Scenario::RawHyper => 1,
            Scenario::FullStack => 2,
            Scenario::FullStackRedis => 3,
            Scenario::PeerStack => 4,
            Scenario::Reqwest => 5,
            Scenario::OurTransport => 6,
            Scenario::FacadeNoLayers => 7,
            Scenario::RawHyperSpan => 8,
            Scenario::RawHyperConn => 9,
        }
    }

    /// The short name used on the command line and in the JSON file.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::RawHyper => "raw-hyper",
            Scenario::FullStack => "full-stack",
            Scenario::FullStackRedis => "full-stack-redis",
            Scenario::PeerStack => "peer-stack",
            Scenario::Reqwest => "reqwest",
            Scenario::OurTransport => "our-transport",
            Scenario::FacadeNoLayers => "facade-no-layers",
            Scenario::RawHyperSpan => "raw-hyper-span",
            Scenario::RawHyperConn => "raw-hyper-conn",
        }
    }

    /// What the scenario runs, for the report's table.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::RawHyper => "raw hyper-util legacy client (ceiling)",
            Scenario::FullStack => "our full stack, rate limit in memory",
            Scenario::FullStackRedis => "our full stack, rate limit in Redis",
            Scenario::PeerStack => "reqwest + reqwest-middleware + reqwest-retry + reqwest-tracing",
            Scenario::Reqwest => "reqwest alone",
            Scenario::OurTransport => "breakdown: our transport alone, no layer",
            Scenario::FacadeNoLayers => "breakdown: our facade over our transport, no layer",
            Scenario::RawHyperSpan => {
                "floor: raw hyper-util client and one call span like ours, none of our code"
            }
            Scenario::RawHyperConn => {
                "reference: hyper's connection API under the least pool (a list of HTTP/1 senders)"
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown scenario name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownScenario(String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown scenario `{}` (known: {})",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownScenario {}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
            .ok_or_else(|| UnknownScenario(name.to_owned()))
    }
}

/// Connection pool settings applied to every client that lets us set them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSettings {
    /// Idle keep-alive connections kept per host (above the concurrency, so none is closed).
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `TCP_NODELAY` on every connection.
    pub nodelay: bool,
}

impl Default for PoolSettings {
    /// 64 idle connections, 90 s idle timeout (hyper-util's and reqwest's default), 1 s connect
    /// timeout, `TCP_NODELAY` on (reqwest's default).
    fn default() -> Self {
        Self {
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(1),
            nodelay: true,
        }
    }
}

fn check(status: StatusCode, body: &[u8]) -> Result<(), BoxError> {
    if status != StatusCode::OK {
        return Err(format!("unexpected status {status}").into());
    }
    if body.len() != BODY.len() {
        return Err(format!("unexpected body of {} bytes", body.len()).into());
    }
    Ok(())
}

fn target(addr: SocketAddr) -> String {
    format!("http://{addr}{PATH}")
}

/// Scenario 1: hyper-util's legacy client over a plain `HttpConnector`, no layer at all.
#[derive(Clone, Debug)]
pub struct RawHyper {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
}

impl RawHyper {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(pool.nodelay);
        connector.set_connect_timeout(Some(pool.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .build(connector);
        let uri = target(addr)
            .parse()
            .expect("a socket address makes a valid URI");
        Self { client, uri }
    }
}

impl Caller for RawHyper {
    async fn call(&self) -> Result<(), BoxError> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .body(Empty::new())?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        check(status, &body)
    }
}

/// Scenario 8: the floor of an instrumented call. The raw client of scenario 1, each call inside one
/// span made as our log layer makes its call span: the same name, target, level and fields (method,
/// server address and port, full URL and integration name when the span is made, the status code
/// recorded when the response's head arrives, the span closed before the body is read), under the
/// same subscriber. It runs none of our code: what a client pays for one OpenTelemetry-shaped span a
/// call under a fmt subscriber, whatever its layers do (issue 19 asks the full stack for a share of
/// the raw client's calls a second that this bounds).
#[derive(Clone, Debug)]
pub struct RawHyperSpan {
    raw: RawHyper,
    host: std::sync::Arc<str>,
    port: u16,
}

impl RawHyperSpan {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Self {
        Self {
            raw: RawHyper::new(addr, pool),
            host: addr.ip().to_string().into(),
            port: addr.port(),
        }
    }
}

impl Caller for RawHyperSpan {
    async fn call(&self) -> Result<(), BoxError> {
        use integration_core::names;
        use std::future::Future as _;
        use tracing::field;
        let span = tracing::info_span!(
            target: "integration_log",
            "GET",
            { names::HTTP_REQUEST_METHOD } = %"GET",
            { names::SERVER_ADDRESS } = %&*self.host,
            { names::SERVER_PORT } = self.port,
            { names::URL_FULL } = %self.raw.uri,
            { names::INTEGRATION } = %API_NAME,
            { names::HTTP_REQUEST_RESEND_COUNT } = field::Empty,
            { names::HTTP_RESPONSE_STATUS_CODE } = field::Empty,
            { names::ERROR_TYPE } = field::Empty,
            { names::CACHE_STATUS } = field::Empty,
            otel.status_code = field::Empty,
        );
        let request = Request::get(self.raw.uri.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .body(Empty::new())?;
        // Entered around each poll of the request, as the log layer's future does; not
        // `Instrument`, whose clone of the span would be subscriber work ours does not do.
        let mut sent = std::pin::pin!(self.raw.client.request(request));
        let response = std::future::poll_fn(|cx| {
            let _entered = span.enter();
            sent.as_mut().poll(cx)
        })
        .await?;
        let status = response.status();
        span.record(names::HTTP_RESPONSE_STATUS_CODE, status.as_u16());
        drop(span);
        let body = response.into_body().collect().await?.to_bytes();
        check(status, &body)
    }
}

/// Scenario 9: hyper's connection API (`hyper::client::conn::http1`) under the least pool that
/// works: the senders of open connections in a list, a call taking the last one (waiting until it
/// is ready for another request) or opening a connection when the list is empty, and giving it
/// back after its response. It keys nothing (one server), expires nothing and never retries a
/// request on a connection that closed under it: what hyper-util's legacy client (scenario 1, and
/// under our transport and reqwest) does beyond hyper itself is what this leaves out, so the
/// difference between the two is the most a pool of our own could save (issue 19). Its `Host`
/// header is made once, as our transport's cache makes it.
#[derive(Clone, Debug)]
pub struct RawHyperConn {
    addr: SocketAddr,
    uri: Uri,
    host: http::HeaderValue,
    nodelay: bool,
    connect_timeout: Duration,
    senders: std::sync::Arc<std::sync::Mutex<Vec<Sender>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl RawHyperConn {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Self {
        Self {
            addr,
            uri: Uri::from_static(PATH),
            host: http::HeaderValue::from_str(&addr.to_string())
                .expect("a socket address is a valid Host header"),
            nodelay: pool.nodelay,
            connect_timeout: pool.connect_timeout,
            senders: std::sync::Arc::default(),
        }
    }

    /// The connections it keeps between calls (senders given back, not yet taken again).
    ///
    /// # Panics
    ///
    /// If a call panicked while holding the list.
    pub fn connections_kept(&self) -> usize {
        self.senders.lock().expect("sender list poisoned").len()
    }

    /// A sender ready for a request: a kept one whose connection is still open, or a new
    /// connection's.
    async fn sender(&self) -> Result<Sender, BoxError> {
        loop {
            let kept = self
                .senders
                .lock()
                .map_err(|_| "sender list poisoned")?
                .pop();
            let Some(mut sender) = kept else { break };
            // Ready once the connection has finished the previous response; an error means it
            // closed: dropped, and the next one tried.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        // Bounded as the other clients' connects are (`PoolSettings::connect_timeout`).
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .map_err(|_| format!("connect to {} timed out", self.addr))??;
        stream.set_nodelay(self.nodelay)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

impl Caller for RawHyperConn {
    async fn call(&self) -> Result<(), BoxError> {
        let mut sender = self.sender().await?;
        let request = Request::get(self.uri.clone())
            .header(header::HOST, self.host.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.senders
            .lock()
            .map_err(|_| "sender list poisoned")?
            .push(sender);
        check(status, &body)
    }
}

fn reqwest_client(pool: &PoolSettings) -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .connect_timeout(pool.connect_timeout)
        .tcp_nodelay(pool.nodelay)
        .http1_only()
        .no_proxy()
        .build()?)
}

/// Scenario 5: `reqwest` alone, built without default features (plain HTTP).
#[derive(Clone, Debug)]
pub struct Reqwest {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Reqwest {
    /// A client for the server at `addr`.
    ///
    /// # Errors
    ///
    /// When reqwest cannot build its client.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Result<Self, BoxError> {
        Ok(Self {
            client: reqwest_client(pool)?,
            url: reqwest::Url::parse(&target(addr))?,
        })
    }
}

impl Caller for Reqwest {
    async fn call(&self) -> Result<(), BoxError> {
        let response = self
            .client
            .get(self.url.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        check(status, &body)
    }
}

/// Scenario 4: the peer stack, as its README assembles it: reqwest-tracing's `TracingMiddleware`
/// outermost, then reqwest-retry's `RetryTransientMiddleware` with exponential backoff and two
/// retries (three attempts, as our default).
#[derive(Clone, Debug)]
pub struct PeerStack {
    client: reqwest_middleware::ClientWithMiddleware,
    url: reqwest::Url,
}

impl PeerStack {
    /// A client for the server at `addr`.
    ///
    /// # Errors
    ///
    /// When reqwest cannot build its client.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Result<Self, BoxError> {
        use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
        use reqwest_tracing::TracingMiddleware;
        let retry = ExponentialBackoff::builder().build_with_max_retries(2);
        let client = reqwest_middleware::ClientBuilder::new(reqwest_client(pool)?)
            .with(TracingMiddleware::default())
            .with(RetryTransientMiddleware::new_with_policy(retry))
            .build();
        Ok(Self {
            client,
            url: reqwest::Url::parse(&target(addr))?,
        })
    }
}

impl Caller for PeerStack {
    async fn call(&self) -> Result<(), BoxError> {
        let response = self
            .client
            .get(self.url.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        check(status, &body)
    }
}

/// The integration's name in the full-stack scenarios.
pub const API_NAME: &str = "bench";

/// The API key the full-stack scenarios send (the server does not check it; the auth layer's work
/// is the same).
pub const API_KEY: &str = "bench-api-key-5f0c2a9e";

/// The quota of the full-stack scenarios: the most the configuration accepts (100 000 a second), far
/// above any load the benchmark offers, so the limiter does all its bookkeeping (and, with Redis,
/// its round trip) but never makes a call wait.
pub const QUOTA_PER_SECOND: u32 = 100_000;

/// The configuration of the full-stack scenarios, as a user would write it: API-key auth, a quota
/// with its counters in `store` (`memory` or `redis`), three attempts with the default retry budget,
/// a 30 s deadline and a 10 s attempt timeout, the circuit breaker on, logging at its defaults.
pub fn full_stack_toml(addr: SocketAddr, pool: &PoolSettings, store: &RateLimitStore) -> String {
    full_stack_toml_with_quota(
        addr,
        pool,
        store,
        &format!("rate = {QUOTA_PER_SECOND}, per = \"1s\""),
        "5s",
    )
}

/// [`full_stack_toml`] with another quota (`rate = 5, per = "60s"`, the inside of a TOML inline
/// table) and longest wait for a permit (`"0s"` fails fast).
pub fn full_stack_toml_with_quota(
    addr: SocketAddr,
    pool: &PoolSettings,
    store: &RateLimitStore,
    quota: &str,
    max_wait: &str,
) -> String {
    let (store_name, redis_section) = match store {
        RateLimitStore::Memory => ("memory", String::new()),
        RateLimitStore::Redis {
            url, key_prefix, ..
        } => (
            "redis",
            format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{key_prefix}\"\n"),
        ),
    };
    format!(
        r#"{redis_section}
[integrations.{API_NAME}]
base_url = "http://{addr}/"
timeout = "30s"
attempt_timeout = "10s"
connect_timeout = "{connect_ms}ms"

[integrations.{API_NAME}.auth]
type = "api_key"
key = "{API_KEY}"

[integrations.{API_NAME}.rate_limit]
quotas = [{{ {quota} }}]
max_wait = "{max_wait}"
store = "{store_name}"

[integrations.{API_NAME}.retry]
max_attempts = 3
budget = {{ ratio = 0.2, window = "10s", min_per_second = 10 }}

[integrations.{API_NAME}.circuit_breaker]
enabled = true
"#,
        connect_ms = pool.connect_timeout.as_millis(),
    )
}

/// The documented call through the facade: `client.api("bench")?.get(PATH).send().await?.bytes()`.
async fn facade_call(client: &integration_client::Client) -> Result<(), BoxError> {
    let response = client
        .api(API_NAME)?
        .get(PATH)
        .header(header::ACCEPT, ACCEPT_JSON)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    check(status, &body)
}

/// Where the full-stack scenario keeps its rate-limit counters.
#[derive(Clone, Debug)]
pub enum RateLimitStore {
    /// In this process.
    Memory,
    /// In the Redis at `url`, under `key_prefix`.
    Redis {
        /// The Redis URL (`REDIS_URL`).
        url: String,
        /// A prefix private to this run.
        key_prefix: String,
        /// How long one Redis command may take before Redis counts as unavailable and the limiter
        /// decides on its local fallback: [`integration_config::DEFAULT_REDIS_COMMAND_TIMEOUT`] in the timed
        /// runs, as users run it; longer in a count run, where valgrind's one thread at a time
        /// makes a reply wait behind every other call in flight.
        command_timeout: Duration,
    },
}

/// Scenarios 2 and 3: our full stack, built through the facade's public API from configuration,
/// called the documented way: `client.api("bench")?.get(PATH).send().await?.bytes().await?`.
#[derive(Clone, Debug)]
pub struct FullStack {
    client: integration_client::Client,
}

impl FullStack {
    /// A client for the server at `addr`, with the transport's pool set as [`PoolSettings`] says
    /// (HTTP/1.1 only, as the peers here).
    ///
    /// # Errors
    ///
    /// When the configuration does not validate, or Redis cannot be reached (the error names it).
    pub async fn new(
        addr: SocketAddr,
        pool: &PoolSettings,
        store: RateLimitStore,
    ) -> Result<Self, BoxError> {
        Self::from_toml(&full_stack_toml(addr, pool, &store), pool, store).await
    }

    /// A client from a configuration of [`API_NAME`] (see [`full_stack_toml_with_quota`]); `store`
    /// must match its `rate_limit.store`.
    ///
    /// # Errors
    ///
    /// As [`FullStack::new`].
    pub async fn from_toml(
        toml: &str,
        pool: &PoolSettings,
        store: RateLimitStore,
    ) -> Result<Self, BoxError> {
        let config = integration_config::Config::from_toml_str(toml)?;
        let transport = integration_client::transport::Transport::builder()
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .pool_idle_timeout(pool.idle_timeout)
            .tcp_nodelay(pool.nodelay)
            .http2(false);
        let mut builder = integration_client::Client::builder()
            .transport(transport)
            .config(config);
        // What `Client::connect` does with the `[redis]` section, here with our transport settings.
        if let RateLimitStore::Redis {
            url,
            key_prefix,
            command_timeout,
        } = store
        {
            let bounds = SharedRedisConfig::new().with_command_timeout(command_timeout);
            let manager = async {
                redis::Client::open(url.as_str())?
                    .get_connection_manager_with_config(bounds.connection_manager_config())
                    .await
            }
            .await
            .map_err(|error| {
                // The URL may carry a password: shown with its userinfo redacted.
                let shown = url.parse::<http::Uri>().map_or_else(
                    |_| "REDIS_URL".to_owned(),
                    |uri| integration_core::redact::Redactor::default().redact_url(&uri),
                );
                format!("Redis at {shown} is unreachable (set REDIS_URL): {error}")
            })?;
            builder = builder.redis(SharedRedis::from_manager(manager, bounds), key_prefix);
        }
        Ok(Self {
            client: builder.build()?,
        })
    }
}

impl Caller for FullStack {
    async fn call(&self) -> Result<(), BoxError> {
        facade_call(&self.client).await
    }
}

fn our_transport(
    pool: &PoolSettings,
) -> Result<integration_client::transport::Transport, BoxError> {
    Ok(integration_client::transport::Transport::builder()
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .pool_idle_timeout(pool.idle_timeout)
        .connect_timeout(pool.connect_timeout)
        .tcp_nodelay(pool.nodelay)
        .http2(false)
        .build()?)
}

/// Scenario 6: the facade's transport alone, as a tower service: what our stack stands on, without
/// any layer or the facade's request and response types.
#[derive(Clone, Debug)]
pub struct OurTransport {
    transport: integration_client::transport::Transport,
    uri: Uri,
}

impl OurTransport {
    /// A transport for the server at `addr`.
    ///
    /// # Errors
    ///
    /// When the transport cannot be built.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Result<Self, BoxError> {
        Ok(Self {
            transport: our_transport(pool)?,
            uri: target(addr).parse()?,
        })
    }
}

impl Caller for OurTransport {
    async fn call(&self) -> Result<(), BoxError> {
        use tower::ServiceExt;
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, ACCEPT_JSON)
            .body(integration_core::Body::empty())?;
        let response = self.transport.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        check(status, &body)
    }
}

/// Scenario 7: the facade's `Client`, `Api` and request builder over our transport with no layer
/// (`ClientBuilder::service`), called as in scenario 2: the facade's own cost.
#[derive(Clone, Debug)]
pub struct FacadeNoLayers {
    client: integration_client::Client,
}

impl FacadeNoLayers {
    /// A client for the server at `addr`.
    ///
    /// # Errors
    ///
    /// When the transport or the client cannot be built.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Result<Self, BoxError> {
        let client = integration_client::Client::builder()
            .service(API_NAME, format!("http://{addr}/"), our_transport(pool)?)
            .build()?;
        Ok(Self { client })
    }
}

impl Caller for FacadeNoLayers {
    async fn call(&self) -> Result<(), BoxError> {
        facade_call(&self.client).await
    }
}

/// The full stack's layers (rate limit in memory) assembled by `build_stack_without` with one layer
/// left out (`None`: every layer), given to the facade as one service
/// (`ClientBuilder::service`) and called as in scenario 2. For the per-layer instruction counts: a
/// layer's cost is the stack with every layer minus the stack without it, both built this way.
#[derive(Clone, Debug)]
pub struct FullStackLayers {
    client: integration_client::Client,
}

impl FullStackLayers {
    /// A client for the server at `addr` whose stack lacks `without`.
    ///
    /// # Errors
    ///
    /// When the configuration does not validate or the transport cannot be built.
    pub fn new(
        addr: SocketAddr,
        pool: &PoolSettings,
        without: Option<integration_client::stack::StackLayer>,
    ) -> Result<Self, BoxError> {
        use integration_client::stack::{SharedHandles, SharedState, build_stack_without};
        let toml = full_stack_toml(addr, pool, &RateLimitStore::Memory);
        let config = integration_config::Config::from_toml_str(&toml)?;
        let integration = config
            .integrations
            .get(API_NAME)
            .ok_or("the full stack's configuration names its integration")?;
        let transport = our_transport(pool)?;
        let state = SharedState::derive(
            API_NAME,
            integration,
            None,
            &SharedHandles::new(),
            &transport,
        )?;
        let stack = build_stack_without(integration, &state, transport, without)?;
        let client = integration_client::Client::builder()
            .service(API_NAME, format!("http://{addr}/"), stack)
            .build()?;
        Ok(Self { client })
    }
}

impl Caller for FullStackLayers {
    async fn call(&self) -> Result<(), BoxError> {
        facade_call(&self.client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
            let json = serde_json::to_string(&scenario).unwrap();
            assert_eq!(json, format!("\"{}\"", scenario.name()));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn only_ok_with_the_full_body_passes() {
        assert!(check(StatusCode::OK, BODY.as_bytes()).is_ok());
        assert!(check(StatusCode::NOT_FOUND, BODY.as_bytes()).is_err());
        assert!(check(StatusCode::OK, b"{}").is_err());
    }
}
