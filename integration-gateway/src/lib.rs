//! The stack as an HTTP egress gateway: `/<integration>/<path>` is sent through that integration's
//! full stack (auth, rate limits, retries, circuit breaker, logging), so that services in any
//! language get the same calls without holding a third-party secret.
//!
//! `integration serve` (the `integration` binary) runs [`serve`]; this crate holds the server so
//! that the binary stays a thin shell.
//!
//! ```
//! use integration_gateway::{CallerAuthMode, Gateway, ServeArgs, ATTEMPTS_HEADER, INTEGRATION_HEADER};
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::rt::TokioExecutor;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let upstream = wiremock::MockServer::start().await;
//! # wiremock::Mock::given(wiremock::matchers::path("/v1/users/7"))
//! #     .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("{\"id\":7}"))
//! #     .mount(&upstream)
//! #     .await;
//! # let dir = tempfile::tempdir()?;
//! # let base_url = format!("{}/v1/", upstream.uri());
//! // The integrations, as the library reads them (here one, without credentials).
//! let config = dir.path().join("gateway.toml");
//! std::fs::write(&config, format!("[integrations.users]\nbase_url = \"{base_url}\"\n"))?;
//!
//! let mut args = ServeArgs::default();
//! args.listen = "127.0.0.1:0".parse()?;
//! args.admin_listen = "127.0.0.1:0".parse()?;
//! args.config = Some(config);
//! args.caller_auth = CallerAuthMode::None; // a shared token in production: --caller-token-file
//! let gateway = Gateway::bind(args).await?;
//! let url = format!("http://{}/users/users/7", gateway.local_addr());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(gateway.run(async { stopped.await.ok(); }));
//!
//! let caller = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
//!     .build_http::<Empty<bytes::Bytes>>();
//! let response = caller.get(url.parse()?).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()[INTEGRATION_HEADER], "users");
//! assert_eq!(response.headers()[ATTEMPTS_HEADER], "1");
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "{\"id\":7}");
//! # stop.send(()).ok();
//! # running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # What it does with a request
//!
//! - Callers authenticate with a shared token ([`CallerAuthMode::Token`], read from a file such as
//!   a mounted Kubernetes Secret, compared in constant time). A missing or wrong token is answered
//!   `401` before anything else: no body is read, no rate-limit permit taken, no upstream called.
//!   Turning it off takes `--caller-auth none`.
//! - The first path segment names the integration; an unknown one is a `404` that says so. The rest
//!   of the path and the query are joined under the integration's base URL (a path that would leave
//!   it is a `400`).
//! - Method, headers and body go on, less the hop-by-hop headers, `Host` and the caller's token
//!   header. Bodies up to `--replay-buffer` (by `Content-Length`) are read whole so that a retry can
//!   send them again; longer ones stream and are sent once.
//! - The answer streams back with [`INTEGRATION_HEADER`] and [`ATTEMPTS_HEADER`]. When the stack
//!   fails, a small JSON body (`error`, `message`, `integration`, `attempts`) comes with `502`
//!   (upstream unreachable or broken), `503` (held back by the rate limit, breaker or retry budget,
//!   with `Retry-After` when known) or `504` (attempt timeout or deadline).
//!
//! # Admin port
//!
//! [`HEALTHZ_PATH`], [`READYZ_PATH`], [`METRICS_PATH`] (Prometheus) and [`INTEGRATIONS_PATH`] (the
//! read-only view) on `--admin-listen`, kept off the callers' port.
//!
//! # Drain
//!
//! When the `shutdown` future of [`Gateway::run`] completes (SIGTERM in the binary): readiness
//! fails at once; new requests are still served for `--drain-grace` (the time endpoints take to
//! drop the pod); then the listener closes, every answer carries `Connection: close`, calls in flight
//! finish, and `run` returns within `--drain-timeout`. The listener is bound with SO_REUSEPORT, so a
//! new gateway can take the same port before the old one leaves.
//!
//! # Feature flags
//!
//! This crate has no optional features.

mod admin;
mod args;
mod caller;
mod config;
mod error;
mod names;
mod proxy;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use args::{
    CallerAuthMode, DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_PORT, DEFAULT_DRAIN_GRACE,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN, DEFAULT_PORT, DEFAULT_RELOAD_INTERVAL,
    DEFAULT_REPLAY_BUFFER, ServeArgs,
};
pub use error::GatewayError;
pub use names::{
    ATTEMPTS_HEADER, DRAINING, HEALTHZ_PATH, IN_FLIGHT, INTEGRATION_HEADER, INTEGRATIONS_PATH,
    METRICS_PATH, READYZ_PATH, REFUSED, REQUEST_DURATION, REQUESTS,
};

use crate::state::{ConfigSource, Shared};

/// How long, once the listener is closed, a kept-alive connection may stay idle before it is
/// closed: connections in use close after their next answer (it says `Connection: close`), so
/// that a caller is never cut while it sends; only those idle this long are closed by us.
const IDLE_CLOSE_DELAY: Duration = Duration::from_secs(1);

/// How long the admin listener waits for its own connections once the drain is over.
const ADMIN_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the gateway until `shutdown` completes, then drains (see [`Gateway::run`]).
///
/// # Errors
///
/// As [`Gateway::bind`].
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    Gateway::bind(args).await?.run(shutdown).await
}

/// A gateway with its listeners bound and its configuration loaded, ready to [`run`](Gateway::run).
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: TcpListener,
    metrics: Option<PrometheusHandle>,
    live: config::Live,
    drain_grace: Duration,
    drain_timeout: Duration,
}

/// How often the recorder's histogram samples are drained, scraped or not (the exporter's own
/// `install` uses the same interval).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The exporter: every duration (the stack's and the gateway's own) a histogram with
/// OpenTelemetry's boundaries ([`integration_core::names::DURATION_BUCKETS`]), which sum across the
/// replicas of a Deployment, rather than the exporter's default client-side summary, which does not.
fn prometheus_builder() -> PrometheusBuilder {
    use integration_core::names::{DURATION_BUCKETS, DURATION_HISTOGRAMS};
    use metrics_exporter_prometheus::Matcher;
    let mut builder = PrometheusBuilder::new();
    for name in DURATION_HISTOGRAMS.into_iter().chain([REQUEST_DURATION]) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), DURATION_BUCKETS)
            .expect("the boundaries are not empty");
    }
    builder
}

/// The Prometheus recorder of this process, installed by the first gateway; `None` when something
/// else installed a recorder first (its metrics are then not the gateway's to render).
///
/// Its upkeep runs every [`METRICS_UPKEEP`] on a thread of its own: a recorder built (not
/// `install`ed) has none, and its histogram samples, drained only by a scrape, piled up in memory
/// for as long as nothing scraped `/metrics` (three samples a request).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder is already installed: /metrics is off");
                return None;
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no metrics upkeep thread: samples are drained only by scrapes");
            }
            Some(handle)
        })
        .clone()
}

/// Binds `address` for the callers' listener: SO_REUSEADDR and, on Unix, SO_REUSEPORT, so that a
/// second gateway process can listen on the same port while the first drains.
fn bind_reuse_port(address: SocketAddr) -> Result<TcpListener, GatewayError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
        ))]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    bind().map_err(|e| GatewayError::bind(address, e))
}

fn bind_plain(address: SocketAddr) -> Result<TcpListener, GatewayError> {
    let listener = std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(|e| GatewayError::bind(address, e))?;
    Ok(listener)
}

impl Gateway {
    /// Checks the caller authentication settings, binds the admin listener, loads the configuration
    /// and builds every integration's stack, then binds the callers' listener (SO_REUSEPORT).
    ///
    /// # Errors
    ///
    /// [`GatewayError::is_caller_auth`]: caller authentication is on without a readable, non-empty
    /// token file. [`GatewayError::is_config`]: no configuration source, or it does not load or
    /// validate, or PostgreSQL cannot be reached. [`GatewayError::is_bind`]: an address cannot be
    /// bound.
    pub async fn bind(args: ServeArgs) -> Result<Gateway, GatewayError> {
        let caller = caller::CallerAuth::from_args(&args)?;
        if !caller.is_on() {
            tracing::warn!(
                "caller authentication is off (--caller-auth none): anything that reaches the \
                 gateway can spend the integrations' credentials"
            );
        }
        let metrics = prometheus();
        let admin = bind_plain(args.admin_listen)?;
        let (client, database) = config::start(&args).await?;
        let source = ConfigSource {
            file: args.config.as_ref().map(|p| p.display().to_string()),
            database: database.is_some(),
        };
        let shared = Shared::new(client, caller, args.replay_buffer, source);
        let listener = bind_reuse_port(args.listen)?;
        let live = config::follow(&shared, &args, database, metrics.clone());
        shared.set_ready();
        metrics::gauge!(DRAINING).set(0.0);
        Ok(Gateway {
            shared,
            listener,
            admin,
            metrics,
            live,
            drain_grace: args.drain_grace,
            drain_timeout: args.drain_timeout,
        })
    }

    /// The address of the callers' listener (the port the system chose, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves both listeners until `shutdown` completes, then drains:
    ///
    /// 1. readiness fails at once ([`READYZ_PATH`] answers `503`);
    /// 2. for the drain grace period new requests are still taken and served;
    /// 3. the callers' listener closes; answers carry `Connection: close`; connections idle for
    ///    a second are closed;
    /// 4. calls in flight finish, for at most the drain timeout; then this returns `Ok(())`,
    ///    whatever is left is cut.
    ///
    /// # Errors
    ///
    /// None once bound; the `Result` is for symmetry with [`serve`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
        let Gateway {
            shared,
            listener,
            admin,
            metrics,
            live,
            drain_grace,
            drain_timeout,
        } = self;
        let builder = auto::Builder::new(TokioExecutor::new());

        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = {
            let shared = shared.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let graceful = GracefulShutdown::new();
                accept_until(admin, &graceful, &builder, admin_stopped, move |request| {
                    admin::handle(shared.clone(), metrics.clone(), request)
                })
                .await;
                let _ = tokio::time::timeout(ADMIN_CLOSE_TIMEOUT, graceful.shutdown()).await;
            })
        };

        let graceful = GracefulShutdown::new();
        let grace = {
            let shared = shared.clone();
            async move {
                shutdown.await;
                shared.start_drain();
                tracing::info!(
                    grace = ?drain_grace,
                    "drain started: readiness fails; new requests are served for the grace period"
                );
                tokio::time::sleep(drain_grace).await;
            }
        };
        let serving = shared.clone();
        accept_until(listener, &graceful, &builder, grace, move |request| {
            proxy::handle(serving.clone(), request)
        })
        .await;
        shared.start_closing();
        let open = graceful.count();
        tracing::info!(
            connections = open,
            bound = ?drain_timeout,
            "listener closed; finishing the calls in flight"
        );
        let finished = tokio::time::timeout(drain_timeout, async {
            tokio::time::sleep(IDLE_CLOSE_DELAY.min(drain_timeout)).await;
            graceful.shutdown().await;
        })
        .await
        .is_ok();
        let left = shared.client.shutdown(Duration::ZERO).await;
        if finished && left == 0 {
            tracing::info!("drained: every call finished");
        } else {
            tracing::warn!(
                calls_cut = left,
                "the drain timeout passed with calls in flight; they are cut"
            );
        }
        drop(live);
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        Ok(())
    }
}

/// Accepts connections on `listener` and serves each with a service made by `make`, watched by
/// `graceful`, until `stop` completes; the listener is closed on return.
async fn accept_until<F, Fut, B>(
    listener: TcpListener,
    graceful: &GracefulShutdown,
    builder: &auto::Builder<TokioExecutor>,
    stop: impl Future,
    handle: F,
) where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<hyper::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<integration_core::BoxError>,
{
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let service = hyper::service::service_fn(handle.clone());
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    tokio::spawn(graceful.watch(connection));
                }
                Err(error) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
