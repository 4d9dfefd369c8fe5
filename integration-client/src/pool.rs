//! The transport's connection pool: hyper's HTTP/1.1 and HTTP/2 connections, kept per scheme and
//! authority.
//!
//! The transport sent through hyper-util's legacy client until issue 19 measured what that client
//! costs over hyper's own connection API: about 10,000 instructions a call (its pool key hashed with
//! SipHash byte by byte at checkout and return, its checkout and connect futures raced on every
//! call, a `Host` header formatted per request, six allocations), 40 % of the raw client's work.
//! This pool keeps what that client did for us and drops the rest:
//!
//! - connections per scheme and authority (case-insensitive, as [`Authority`] compares), looked up
//!   with foldhash;
//! - HTTP/1.1 connections, one request at a time each: handed back when the response's head arrives
//!   and taken again only once hyper says the connection is ready (its body read to the end), the
//!   most recently used first; at most `max_idle_per_host` idle ones kept per authority, the least
//!   recently used beyond it closed (connections still reading a body are not idle);
//! - HTTP/2 when ALPN chooses it: one connection per authority, shared by every request (hyper
//!   multiplexes; a second connection made meanwhile is dropped);
//! - idle connections closed after `idle_timeout` (checked when one is taken, and by a task that
//!   sweeps the pool on that period while the pool lives, every 90 s without a timeout), and the
//!   connections the servers closed dropped by the same sweep;
//! - a request a kept connection refused before sending anything (the server closed it between two
//!   requests) sent again on another connection, as hyper-util did: nothing of it reached the
//!   server, so this holds for any method;
//! - the connector as it is (TLS, `CONNECT` tunnels, absolute form to HTTP proxies), and the
//!   connection's details (its remote address) in every response's extensions.
//!
//! What it does not do: on a miss it connects, where hyper-util also waited for a connection to be
//! handed back meanwhile and took whichever came first. Under a burst of new requests that makes a
//! connection per request in both; only when connecting is slower than a response would
//! hyper-util's race have saved a connect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use integration_core::{Body, BoxError};
use tokio::time::Instant;
use tower_service::Service;

use crate::proxy::{Conn, Connector};
use crate::transport::{connect_error, host_header};
use integration_core::authority::default_port;

/// A connection's destination: the scheme and the authority (which compares without case).
///
/// Hashed in one write: `Authority` hashes itself a byte at a time (each lowercased, for its
/// case-insensitive equality), about 360 instructions a lookup with foldhash, two lookups a call
/// (issue 19). Here the bytes are folded to lower case (`| 0x20` on every byte: that maps more
/// than letters together, which only adds collisions, never splits keys that compare equal) and
/// hashed together; the scheme by its length (the schemes a pool sees are http and https, and
/// another scheme of the same length only collides).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

impl Key {
    /// The destination as a URI (`scheme://authority/`): what the connector and the proxy matcher
    /// take.
    pub(crate) fn uri(&self) -> Result<Uri, http::uri::InvalidUriParts> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        Uri::from_parts(parts)
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let bytes = self.authority.as_str().as_bytes();
        let mut folded = [0u8; 64];
        if let Some(to) = folded.get_mut(..bytes.len()) {
            for (to, from) in to.iter_mut().zip(bytes) {
                *to = from | 0x20;
            }
            state.write(to);
        } else {
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                state.write_u64(u64::from_le_bytes(word) | 0x2020_2020_2020_2020);
            }
        }
        // Schemes compare without case too; http and https differ in length.
        state.write_usize(self.scheme.as_str().len());
    }
}

/// The shortest period of the idle sweep, for very short idle timeouts (hyper-util's).
const MIN_SWEEP: Duration = Duration::from_millis(90);

/// The sweep's period without an idle timeout: only closed connections are dropped then.
const SWEEP_WITHOUT_TIMEOUT: Duration = Duration::from_secs(90);

/// The pool: connections by destination, and how to make more.
pub(crate) struct Connections {
    connector: Connector,
    idle_timeout: Option<Duration>,
    max_idle_per_host: usize,
    hosts: Mutex<Hosts>,
    /// The proxies, also held by the connector: here to put `Proxy-Authorization` on a request
    /// sent to a proxy in absolute form, and to name the proxy in a connect error.
    pub(crate) proxy: Option<Arc<Matcher>>,
}

#[derive(Default)]
struct Hosts {
    by_key: HashMap<Key, Host, foldhash::fast::RandomState>,
    /// Whether the sweep has been started (once, by the first connection kept).
    sweeping: bool,
}

/// One destination's connections.
struct Host {
    /// HTTP/1.1 connections handed back, the most recently last. Some may still be reading a
    /// response's body: those are not ready, and are passed over.
    http1: Vec<Kept<http1::SendRequest<Body>>>,
    /// The HTTP/2 connection, shared by every request to the destination.
    http2: Option<Kept<http2::SendRequest<Body>>>,
    /// The `Host` header of HTTP/1.1 requests to the destination, made once (hyper-util formatted
    /// it afresh on every call: about 2,300 instructions, issue 19), with the authority exactly as
    /// it was written: a request naming it in another case gets a header of its own case.
    host_header: Option<(Authority, HeaderValue)>,
}

impl Host {
    fn new(key: &Key) -> Self {
        Self {
            http1: Vec::new(),
            http2: None,
            host_header: host_header_of(key).map(|value| (key.authority.clone(), value)),
        }
    }
}

/// The `Host` header of an HTTP/1.1 request to `key`.
fn host_header_of(key: &Key) -> Option<HeaderValue> {
    host_header(&key.authority, default_port(Some(key.scheme.as_str())))
}

/// A connection kept in the pool: its sender, what the connector said of it, and since when it has
/// been unused (for HTTP/1, since it was handed back, at its response's head: its body may have
/// been read later, so a connection is closed at the latest `idle_timeout` after it was last idle,
/// never later).
struct Kept<S> {
    sender: S,
    info: Arc<Connected>,
    since: Instant,
}

/// A connection taken for one request.
struct Taken {
    sender: Sender,
    info: Arc<Connected>,
    /// The destination's `Host` header, when the pool has it made.
    host: Option<HeaderValue>,
    /// Taken from the pool (it may have been closed by the server since), not just made.
    reused: bool,
}

enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl Taken {
    /// A connection just made for this request.
    fn made(sender: Sender, info: Arc<Connected>) -> Self {
        Self {
            sender,
            info,
            host: None,
            reused: false,
        }
    }
}

impl Kept<http2::SendRequest<Body>> {
    /// The kept HTTP/2 connection, shared with this request.
    fn share(&self) -> Taken {
        Taken {
            sender: Sender::Http2(self.sender.clone()),
            info: self.info.clone(),
            host: None,
            reused: true,
        }
    }
}

impl Connections {
    pub(crate) fn new(
        connector: Connector,
        proxy: Option<Arc<Matcher>>,
        idle_timeout: Option<Duration>,
        max_idle_per_host: usize,
    ) -> Self {
        Self {
            connector,
            idle_timeout,
            max_idle_per_host,
            hosts: Mutex::new(Hosts::default()),
            proxy,
        }
    }

    fn hosts(&self) -> MutexGuard<'_, Hosts> {
        // Nothing panics while the lock is held; were it poisoned, the map is still consistent.
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (its URI absolute) on a kept connection to its destination, or a new one.
    ///
    /// The `Host` of an HTTP/1.1 request that has none is made here, below the redirect follower,
    /// for every hop's own authority, once the connection is known to be HTTP/1.1: over HTTP/2 the
    /// authority travels as `:authority` and no `Host` is sent. A `Host` the caller set is kept.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, BoxError> {
        let key = match (request.uri().scheme(), request.uri().authority()) {
            (Some(scheme), Some(authority)) => Key {
                scheme: scheme.clone(),
                authority: authority.clone(),
            },
            _ => {
                return Err(format!("the request's URI is not absolute: {}", request.uri()).into());
            }
        };
        // One state machine, no nested one: every level would move the request into its own
        // future again (issue 19).
        loop {
            let taken = match self.take(&key) {
                Some(taken) => taken,
                // Boxed: the connector's and the handshakes' futures are kilobytes, and every
                // call's future would be as large (and copied whole into its box) for what only
                // a miss needs.
                None => Box::pin(self.connect(&key)).await?,
            };
            let Taken {
                sender,
                info,
                host,
                reused,
            } = taken;
            let (error, absolute) = match sender {
                Sender::Http1(mut sender) => {
                    if !request.headers().contains_key(http::header::HOST)
                        && let Some(value) = host.or_else(|| host_header_of(&key))
                    {
                        request.headers_mut().insert(http::header::HOST, value);
                    }
                    let absolute = to_http1_form(&mut request, info.is_proxied());
                    match sender.try_send_request(request).await {
                        Ok(mut response) => {
                            info.get_extras(response.extensions_mut());
                            self.hand_back(&key, sender, info);
                            return Ok(response);
                        }
                        Err(error) => (error, absolute),
                    }
                }
                Sender::Http2(mut sender) => match sender.try_send_request(request).await {
                    Ok(mut response) => {
                        info.get_extras(response.extensions_mut());
                        return Ok(response);
                    }
                    Err(error) => (error, None),
                },
            };
            match refused(error, absolute) {
                // The server closed a kept connection as it was taken: each turn drops one, so this
                // ends with the kept connections at the latest, on a new one.
                Ok((back, error)) if reused => {
                    tracing::trace!(%error, "a kept connection refused the request, sending it again");
                    request = back;
                }
                Ok((_, error)) | Err(error) => return Err(error),
            }
        }
    }

    /// A kept connection to `key` ready for a request: the shared HTTP/2 one, or the most recently
    /// used ready HTTP/1.1 one. Closed and expired ones met on the way are dropped.
    fn take(&self, key: &Key) -> Option<Taken> {
        let mut hosts = self.hosts();
        let host = hosts.by_key.get_mut(key)?;
        let now = Instant::now();
        let expired = |since: Instant| {
            self.idle_timeout
                .is_some_and(|timeout| now.saturating_duration_since(since) >= timeout)
        };
        if let Some(shared) = &mut host.http2 {
            if !shared.sender.is_closed() && !expired(shared.since) {
                shared.since = now;
                return Some(shared.share());
            }
            host.http2 = None;
        }
        let mut index = host.http1.len();
        while index > 0 {
            index -= 1;
            let kept = &host.http1[index];
            if kept.sender.is_closed() {
                host.http1.remove(index);
            } else if kept.sender.is_ready() {
                let kept = host.http1.remove(index);
                if expired(kept.since) {
                    continue;
                }
                // The header made for this authority as written: another case gets its own.
                let header = host
                    .host_header
                    .as_ref()
                    .filter(|(written, _)| written.as_str() == key.authority.as_str())
                    .map(|(_, value)| value.clone());
                return Some(Taken {
                    sender: Sender::Http1(kept.sender),
                    info: kept.info,
                    host: header,
                    reused: true,
                });
            }
        }
        None
    }

    /// A new connection to `key`. One that ALPN made HTTP/2 is kept and shared at once (or, when
    /// another request's got there first, dropped for that one).
    async fn connect(self: &Arc<Self>, key: &Key) -> Result<Taken, BoxError> {
        let destination = key.uri()?;
        let io: Conn = self
            .connector
            .clone()
            .call(destination)
            .await
            .map_err(|error| connect_error(key, self.proxy.as_deref(), error))?;
        let info = Arc::new(io.connected());
        if info.is_negotiated_h2() {
            if let Some(shared) = self.take_http2(key) {
                return Ok(shared);
            }
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP/2 connection closed with an error");
                }
            });
            Ok(self.share_http2(key, sender, info))
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP/1.1 connection closed with an error");
                }
            });
            Ok(Taken::made(Sender::Http1(sender), info))
        }
    }

    /// The open HTTP/2 connection kept for `key`, if any.
    fn take_http2(&self, key: &Key) -> Option<Taken> {
        let hosts = self.hosts();
        let shared = hosts.by_key.get(key)?.http2.as_ref()?;
        (!shared.sender.is_closed()).then(|| shared.share())
    }

    /// Keeps a new HTTP/2 connection for `key`, unless one was kept meanwhile: then that one is
    /// taken and the new one dropped (hyper closes it).
    fn share_http2(
        self: &Arc<Self>,
        key: &Key,
        sender: http2::SendRequest<Body>,
        info: Arc<Connected>,
    ) -> Taken {
        if self.max_idle_per_host == 0 {
            // Pooling is off: the connection serves this request, and closes after it.
            return Taken::made(Sender::Http2(sender), info);
        }
        let mut hosts = self.hosts();
        self.sweep_from(&mut hosts);
        let host = match hosts.by_key.get_mut(key) {
            Some(host) => host,
            None => hosts
                .by_key
                .entry(key.clone())
                .or_insert_with(|| Host::new(key)),
        };
        if let Some(shared) = &host.http2
            && !shared.sender.is_closed()
        {
            return shared.share();
        }
        host.http2 = Some(Kept {
            sender: sender.clone(),
            info: info.clone(),
            since: Instant::now(),
        });
        Taken::made(Sender::Http2(sender), info)
    }

    /// Keeps an HTTP/1.1 connection whose response head has arrived. It is taken again once hyper
    /// says it is ready (the body read to the end). Past `max_idle_per_host` kept, the idle ones
    /// beyond it are dropped, the least recently used first (see [`trim`]).
    fn hand_back(
        self: &Arc<Self>,
        key: &Key,
        sender: http1::SendRequest<Body>,
        info: Arc<Connected>,
    ) {
        if self.max_idle_per_host == 0 || sender.is_closed() {
            return;
        }
        let since = Instant::now();
        let mut hosts = self.hosts();
        let host = match hosts.by_key.get_mut(key) {
            Some(host) => host,
            None => {
                self.sweep_from(&mut hosts);
                hosts
                    .by_key
                    .entry(key.clone())
                    .or_insert_with(|| Host::new(key))
            }
        };
        host.http1.push(Kept {
            sender,
            info,
            since,
        });
        if host.http1.len() > self.max_idle_per_host {
            trim(&mut host.http1, self.max_idle_per_host);
        }
    }

    /// Starts the sweep, once, when the first connection is kept (inside the runtime the request
    /// runs on). It holds the pool weakly and ends when the pool is dropped.
    fn sweep_from(self: &Arc<Self>, hosts: &mut Hosts) {
        if hosts.sweeping {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        hosts.sweeping = true;
        let pool: Weak<Self> = Arc::downgrade(self);
        // Without an idle timeout the sweep still drops the connections the servers closed (and
        // the destinations left with none), on hyper-util's default idle period.
        let timeout = self.idle_timeout;
        let period = timeout.unwrap_or(SWEEP_WITHOUT_TIMEOUT).max(MIN_SWEEP);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.sweep(timeout);
            }
        });
    }

    /// Drops the closed connections, the idle ones unused for `timeout` (if any), and the
    /// destinations left with none.
    fn sweep(&self, timeout: Option<Duration>) {
        let now = Instant::now();
        let idle = |since: Instant| {
            timeout.is_some_and(|timeout| now.saturating_duration_since(since) >= timeout)
        };
        let mut hosts = self.hosts();
        hosts.by_key.retain(|_, host| {
            host.http1.retain(|kept| {
                let closed = kept.sender.is_closed();
                // A connection still reading its response's body is not idle.
                let expired = kept.sender.is_ready() && idle(kept.since);
                !(closed || expired)
            });
            trim(&mut host.http1, self.max_idle_per_host);
            if host
                .http2
                .as_ref()
                .is_some_and(|shared| shared.sender.is_closed() || idle(shared.since))
            {
                host.http2 = None;
            }
            !host.http1.is_empty() || host.http2.is_some()
        });
    }
}

/// Drops the closed connections of `kept`, and its idle (ready) ones beyond `max_idle`, the least
/// recently handed back first.
///
/// A connection still reading its response's body is not idle, and is kept whatever their number
/// (they are as many as the calls reading a body): a destination with more calls in flight than
/// `max_idle` keeps its connections instead of closing one after each response, as hyper-util's
/// pool, which counted only idle connections, did. The idle ones left beyond the cap when calls
/// stop are dropped by the next hand-back or the sweep.
fn trim(kept: &mut Vec<Kept<http1::SendRequest<Body>>>, max_idle: usize) {
    kept.retain(|k| !k.sender.is_closed());
    let mut idle = kept.iter().filter(|k| k.sender.is_ready()).count();
    if idle > max_idle {
        kept.retain(|k| {
            if idle > max_idle && k.sender.is_ready() {
                idle -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// A request a connection did not send: given back whole (its absolute URI put back) with hyper's
/// error when nothing of it was written (the connection was closed: safe to send again), or the
/// error alone when it may have reached the server.
fn refused(
    mut error: TrySendError<Request<Body>>,
    absolute: Option<Uri>,
) -> Result<(Request<Body>, BoxError), BoxError> {
    match error.take_message() {
        Some(mut request) => {
            if let Some(absolute) = absolute {
                *request.uri_mut() = absolute;
            }
            Ok((request, error.into_error().into()))
        }
        None => Err(error.into_error().into()),
    }
}

/// Puts an HTTP/1.1 request's URI in the form its connection wants: the authority alone for
/// `CONNECT`, absolute to a proxy, the path and query otherwise. Returns the absolute URI when it
/// was replaced.
fn to_http1_form(request: &mut Request<Body>, proxied: bool) -> Option<Uri> {
    let uri = request.uri();
    let form = if request.method() == Method::CONNECT {
        let mut parts = http::uri::Parts::default();
        parts.authority = uri.authority().cloned();
        Uri::from_parts(parts).ok()?
    } else if proxied {
        return None;
    } else {
        match uri.path_and_query() {
            Some(path) if path.as_str() != "/" => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(path.clone());
                Uri::from_parts(parts).ok()?
            }
            _ => Uri::default(),
        }
    };
    Some(std::mem::replace(request.uri_mut(), form))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    /// A kept connection closed under the pool hands the request back as it was given: the
    /// method, the absolute URI (the connection had it in origin form), the body. `send` sends such
    /// a request again on another connection (the race it closes is not reproducible at will:
    /// `tests/pool.rs` covers the connection closed before it is taken, and the one closed as the
    /// request is written, which is not sent again).
    #[tokio::test]
    async fn a_refused_request_comes_back_whole_with_its_absolute_uri() {
        let (client, _server) = tokio::io::duplex(1024);
        let (mut sender, connection) = http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
        // The connection is gone: hyper refuses whatever is sent on it, writing nothing.
        drop(connection);
        let mut request = Request::post("http://a.example/x?y=1")
            .body(Body::from("payload"))
            .unwrap();
        let absolute = to_http1_form(&mut request, false);
        assert_eq!(request.uri(), "/x?y=1");
        let error = sender.try_send_request(request).await.unwrap_err();
        let (back, error) = refused(error, absolute).unwrap();
        assert_eq!(back.method(), Method::POST);
        assert_eq!(back.uri(), "http://a.example/x?y=1");
        assert_eq!(back.body().as_bytes().unwrap(), "payload");
        assert!(
            error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled),
            "{error:?}"
        );
    }

    fn connections(idle_timeout: Option<Duration>) -> Arc<Connections> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        let connector = Connector::new(http, tls, None);
        Arc::new(Connections::new(connector, None, idle_timeout, 32))
    }

    /// An HTTP/1.1 sender over an in-memory stream, its connection task running (`open`) or
    /// dropped (closed), and the far end of the stream.
    async fn sender(open: bool) -> (http1::SendRequest<Body>, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let (sender, connection) = http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
        if open {
            tokio::spawn(connection);
        }
        (sender, server)
    }

    /// The sweep drops closed connections with or without an idle timeout, idle ones only past
    /// the timeout, and the destinations left with none.
    #[tokio::test]
    async fn the_sweep_drops_closed_and_expired_connections_and_empty_destinations() {
        let key = |name: &'static str| Key {
            scheme: Scheme::HTTP,
            authority: Authority::from_static(name),
        };
        let kept = |sender| Kept {
            sender,
            info: Arc::new(Connected::new()),
            since: Instant::now(),
        };
        for timeout in [None, Some(Duration::from_millis(50))] {
            let pool = connections(timeout);
            let (closed, _far) = sender(false).await;
            let (open, _far_open) = sender(true).await;
            tokio::task::yield_now().await;
            {
                let mut hosts = pool.hosts();
                let mut gone = Host::new(&key("gone.example"));
                gone.http1.push(kept(closed));
                hosts.by_key.insert(key("gone.example"), gone);
                let mut idle = Host::new(&key("idle.example"));
                idle.http1.push(kept(open));
                hosts.by_key.insert(key("idle.example"), idle);
            }
            pool.sweep(timeout);
            let left = |pool: &Connections| {
                let hosts = pool.hosts();
                let mut names: Vec<_> = hosts
                    .by_key
                    .keys()
                    .map(|k| k.authority.to_string())
                    .collect();
                names.sort();
                names
            };
            assert_eq!(left(&pool), ["idle.example"], "{timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            pool.sweep(timeout);
            let expected: &[&str] = if timeout.is_some() {
                &[]
            } else {
                &["idle.example"]
            };
            assert_eq!(left(&pool), expected, "{timeout:?}");
        }
    }

    /// The cap counts idle connections only: a connection reading a body is kept whatever the
    /// number, closed ones go, and the idle ones beyond the cap go least recently used first.
    #[tokio::test]
    async fn the_cap_drops_the_oldest_idle_connections_and_keeps_busy_ones() {
        let (a, _far_a) = sender(true).await;
        // Its connection is neither running nor gone: not ready, not closed (a body being read).
        let (client, _far_b) = tokio::io::duplex(1024);
        let (b, connection_b) = http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
        let (c, _far_c) = sender(true).await;
        let (d, _far_d) = sender(false).await;
        let (e, _far_e) = sender(true).await;
        tokio::task::yield_now().await;
        let senders = [a, b, c, d, e];
        let mut kept: Vec<_> = senders
            .into_iter()
            .map(|sender| Kept {
                sender,
                info: Arc::new(Connected::new()),
                since: Instant::now(),
            })
            .collect();
        let state = |kept: &[Kept<http1::SendRequest<Body>>]| {
            kept.iter()
                .map(|k| (k.sender.is_ready(), k.sender.is_closed()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            state(&kept),
            [
                (true, false),
                (false, false),
                (true, false),
                (false, true),
                (true, false)
            ]
        );
        trim(&mut kept, 3);
        assert_eq!(
            state(&kept),
            [(true, false), (false, false), (true, false), (true, false)]
        );
        trim(&mut kept, 1);
        // a and c (the oldest idle) went; b (busy) and e (the newest idle) stay.
        assert_eq!(state(&kept), [(false, false), (true, false)]);
        drop(connection_b);
    }

    /// Keys that compare equal (the authority without case) hash equally, whatever their
    /// length around the eight-byte words; one map holds each destination once.
    #[test]
    fn keys_equal_without_case_are_one_destination() {
        use std::hash::BuildHasher;
        let key = |scheme: Scheme, authority: &str| Key {
            scheme,
            authority: authority.parse().unwrap(),
        };
        let hasher = foldhash::fast::RandomState::default();
        let names = [
            "a.b",
            "api.example",
            "api.example:8",
            "Api.Example.COM:8443",
            "[::1]:1",
        ];
        let mut map = HashMap::with_hasher(hasher.clone());
        for name in names {
            for scheme in [Scheme::HTTP, Scheme::HTTPS] {
                let lower = key(scheme.clone(), &name.to_ascii_lowercase());
                let upper = key(scheme.clone(), &name.to_ascii_uppercase());
                assert!(lower == upper, "{name}");
                assert_eq!(hasher.hash_one(&lower), hasher.hash_one(&upper), "{name}");
                *map.entry(lower).or_insert(0) += 1;
                *map.entry(upper).or_insert(0) += 1;
            }
        }
        assert_eq!(map.len(), names.len() * 2);
        assert!(map.values().all(|n| *n == 2));
        assert!(key(Scheme::HTTP, "a.b") != key(Scheme::HTTPS, "a.b"));
        assert!(key(Scheme::HTTP, "a.b:1") != key(Scheme::HTTP, "a.b:2"));
    }

    /// What hyper-util wrote: the path and query to an origin (`/` for none), the absolute URI to
    /// a proxy, the authority alone for `CONNECT`; the absolute URI is given back to be put again
    /// on a request sent a second time.
    #[test]
    fn a_request_is_written_in_the_form_its_connection_wants() {
        let cases = [
            (Method::GET, "http://a.example/x/y?q=1", false, "/x/y?q=1"),
            (Method::GET, "http://a.example", false, "/"),
            (Method::GET, "http://a.example/", false, "/"),
            (Method::POST, "https://a.example:8443/p", false, "/p"),
            (
                Method::GET,
                "http://a.example/x?q",
                true,
                "http://a.example/x?q",
            ),
            (
                Method::CONNECT,
                "http://a.example:443/",
                false,
                "a.example:443",
            ),
        ];
        for (method, uri, proxied, written) in cases {
            let mut request = request(method, uri);
            let before = request.uri().clone();
            let absolute = to_http1_form(&mut request, proxied);
            assert_eq!(request.uri().to_string(), written, "{uri}");
            match absolute {
                Some(absolute) => assert_eq!(absolute, before),
                None => assert!(proxied, "{uri}"),
            }
        }
    }
}
