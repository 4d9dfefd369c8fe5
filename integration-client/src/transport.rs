//! The transport: pooled hyper connections over rustls, with response decompression and safe redirects.
//!
//! [`Transport`] is the innermost service of every integration's stack. It speaks HTTP/1.1 and HTTP/2
//! (chosen by ALPN), verifies certificates against the webpki roots by default (the platform's roots and
//! extra CA certificates by option), presents a client certificate when configured (mTLS), decompresses
//! gzip, deflate and brotli responses, and follows at most ten redirects, dropping credential headers when
//! the origin changes and refusing a downgrade from `https` to `http`. There is no option to turn
//! certificate checks off.
//!
//! ```
//! use integration_client::transport::Transport;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), integration_core::Error> {
//! let transport = Transport::builder()
//!     .connect_timeout(Duration::from_secs(5))
//!     .pool_max_idle_per_host(16)
//!     .max_redirects(5)
//!     .build()?;
//! # let _ = transport;
//! # Ok(())
//! # }
//! ```
//!
//! Clones share one connection pool. [`Transport::with_redactor`] gives a clone that also strips an
//! integration's own credential headers on cross-origin redirects, still over the shared pool.
//!
//! # Proxies
//!
//! By default the transport takes the environment's proxies when it is built ([`Proxy::from_env`]:
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, lower case too), as reqwest and curl do.
//! [`TransportBuilder::proxy`] sets one instead, [`TransportBuilder::no_proxy`] ignores the
//! environment. An `https` destination goes through a `CONNECT` tunnel with TLS to the destination
//! inside it; an `http` one is sent to the proxy in absolute form. Proxy credentials go to the proxy
//! only, in a sensitive `Proxy-Authorization` header. A connection that fails on the way says so:
//! `could not connect to api.example.com:443 through the proxy proxy.corp:3128 (the proxy refused
//! the tunnel)`, with the proxy's host and port, never its credentials.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use integration_core::authority::default_port;
use integration_core::error::{ConnectCause, ConnectFailed};
use integration_core::{Body, BoxError, Error, ErrorKind};
use integration_log::redact::Redactor;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretSlice};
use tower_http::decompression::{Decompression, DecompressionBody};
use tower_service::Service;

use crate::pool::{Connections, Key};
use crate::proxy::Connector;
pub use crate::proxy::{PROXY_ENV_VARS, Proxy};
pub use crate::redirect::DEFAULT_MAX_REDIRECTS;
use crate::redirect::{Follow, RedirectPolicy};

/// The response body of the transport: the connection's body, decompressed when it was encoded.
///
/// A response that is not encoded (or whose encoding the transport does not decode) keeps the
/// connection's body as it is; an encoded one gets tower-http's decompressing body, behind one
/// pointer. A response is handed up by value through every layer of the stack (ten moves or
/// more), and tower-http's body, held for every response, is 360 bytes (its decoders' states
/// inline): each move copied it, about a thousand instructions a call (issue 19).
pub struct TransportBody {
    kind: BodyKind,
}

enum BodyKind {
    Plain(Incoming),
    Decoded(Pin<Box<DecompressionBody<Incoming>>>),
}

impl fmt::Debug for TransportBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decoded = matches!(self.kind, BodyKind::Decoded(_));
        f.debug_struct("TransportBody")
            .field("decoded", &decoded)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for TransportBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match &mut self.kind {
            BodyKind::Plain(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            BodyKind::Decoded(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Plain(body) => body.is_end_stream(),
            BodyKind::Decoded(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            BodyKind::Plain(body) => body.size_hint(),
            BodyKind::Decoded(body) => body.size_hint(),
        }
    }
}

/// The `Accept-Encoding` the transport sends when it decompresses: what tower-http's
/// `Decompression` sends with gzip, deflate and brotli on.
const ACCEPT_ENCODINGS: HeaderValue = HeaderValue::from_static("gzip,deflate,br");

/// True when a response with these headers is encoded as the transport decodes: what
/// tower-http's `Decompression` decodes with gzip, deflate and brotli on (the header's value
/// exactly, as it compares it).
fn is_decoded(headers: &http::HeaderMap) -> bool {
    matches!(
        headers
            .get(http::header::CONTENT_ENCODING)
            .map(HeaderValue::as_bytes),
        Some(b"gzip" | b"deflate" | b"br")
    )
}

/// An encoded response, decoded by tower-http's `Decompression` (its body has no public
/// constructor: the service is handed the response by a service that answers with it at once). The
/// body is decoded as it is read; `Content-Encoding` and `Content-Length` are removed, as the
/// layer does.
fn decode(response: Response<Incoming>) -> Result<Response<TransportBody>, BoxError> {
    struct Given(Option<Response<Incoming>>);

    impl Service<Request<()>> for Given {
        type Response = Response<Incoming>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<Incoming>, BoxError>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<()>) -> Self::Future {
            std::future::ready(self.0.take().ok_or_else(|| "no response to decode".into()))
        }
    }

    let mut decompression = Decompression::new(Given(Some(response)));
    let future = std::pin::pin!(decompression.call(Request::new(())));
    match future.poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(decoded) => Ok(decoded?.map(|body| TransportBody {
            kind: BodyKind::Decoded(Box::pin(body)),
        })),
        Poll::Pending => Err("the decompression layer did not answer at once".into()),
    }
}

/// The connection pool behind one pointer.
///
/// Every layer above the transport that must call it later keeps a clone of the service below it,
/// and the redirect follower keeps a clone of the pool in each call's future: behind an `Arc`, a
/// clone is one increment.
#[derive(Clone)]
pub(crate) struct SharedPool(Arc<Connections>);

/// The `Host` header hyper-util wrote for `authority`: the host, then the port unless it is
/// the scheme's default, never the user information. The pool makes it once per destination.
pub(crate) fn host_header(
    authority: &http::uri::Authority,
    default_port: Option<u16>,
) -> Option<HeaderValue> {
    let host = authority.host();
    match authority
        .port()
        .filter(|port| Some(port.as_u16()) != default_port)
    {
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
        None => HeaderValue::from_str(host),
    }
    .ok()
}

impl Service<Request<Body>> for SharedPool {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = PoolFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool waits for a connection in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> PoolFuture {
        // Each redirect hop comes through here, so this is the host actually dialled, and the
        // proxy (if any) actually used.
        if let Some(matcher) = &self.0.proxy
            && request.uri().scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(proxy) = matcher.intercept(request.uri())
            && let Some(auth) = proxy.basic_auth()
        {
            // Sent in absolute form to the proxy, which reads (and drops) this header; an `https`
            // request goes inside a tunnel, whose CONNECT alone carries the credentials.
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        PoolFuture {
            inner: Box::pin(self.0.clone().send(request)),
        }
    }
}

/// The response future of the pool: one allocation, holding the request until it is sent.
pub(crate) struct PoolFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>,
}

impl Future for PoolFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// A connect error as a [`ConnectFailed`] naming the host, the port, the proxy if any, and the
/// short cause, the connector's error as its source.
///
/// Out of line and cold: the proxy is looked up again here rather than kept from the call for
/// every request that connects fine.
#[cold]
#[inline(never)]
pub(crate) fn connect_error(key: &Key, proxy: Option<&Matcher>, error: BoxError) -> BoxError {
    let port = key
        .authority
        .port_u16()
        .or_else(|| default_port(Some(key.scheme.as_str())))
        .unwrap_or(80);
    let cause = connect_cause(&*error);
    let mut failed = ConnectFailed::new(key.authority.host(), port, cause);
    if let (Some(matcher), Ok(destination)) = (proxy, key.uri())
        && let Some(proxy) = matcher.intercept(&destination)
    {
        let proxy = proxy.uri();
        failed = failed.with_proxy(proxy.host().unwrap_or_default(), proxy_port(proxy));
    }
    Box::new(failed.with_source(error))
}

/// The port a proxy is dialled on: its URL's, or its scheme's default (`Proxy` accepts only `http`
/// and `https` proxies; 80 for anything else, as for `http`).
fn proxy_port(proxy: &http::Uri) -> u16 {
    proxy
        .port_u16()
        .or_else(|| default_port(proxy.scheme_str()))
        .unwrap_or(80)
}

/// The short cause of a connect error, read from its chain: hyper-util's connector says `dns error`
/// for a failed lookup, and its tunnel `tunnel error: ...` when the proxy would not open one; io
/// errors carry refusals, timeouts and unreachable hosts, and wrap rustls' handshake errors, often
/// in a second io error (an io error's inner error is not its `source`: the walk looks at it
/// directly).
fn connect_cause(error: &(dyn std::error::Error + 'static)) -> ConnectCause {
    fn tls(error: &rustls::Error) -> ConnectCause {
        match error {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => ConnectCause::TlsCertificate,
            _ => ConnectCause::Tls,
        }
    }
    fn one(e: &(dyn std::error::Error + 'static)) -> Option<ConnectCause> {
        if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls(rustls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(cause) = io.get_ref().and_then(|inner| one(inner)) {
                return Some(cause);
            }
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionRefused => Some(ConnectCause::Refused),
                Io::TimedOut => Some(ConnectCause::TimedOut),
                Io::HostUnreachable | Io::NetworkUnreachable | Io::AddrNotAvailable => {
                    Some(ConnectCause::Unreachable)
                }
                _ => None,
            };
        }
        // hyper-util's tunnel error is not exported: it is known by its words. Its
        // "failed to create underlying connection" is left to the causes below it in the chain.
        let text = e.to_string();
        match text.strip_prefix("tunnel error: ") {
            Some("proxy authorization required") => Some(ConnectCause::ProxyAuth),
            Some("unsuccessful" | "unexpected end of file" | "proxy response headers too long") => {
                Some(ConnectCause::ProxyRefused)
            }
            Some(_) => None,
            None => text.starts_with("dns error").then_some(ConnectCause::Dns),
        }
    }
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(cause) = one(e) {
            return cause;
        }
        current = e.source();
    }
    ConnectCause::Other
}

/// A client certificate and its private key, presented for mutual TLS.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: SecretSlice<u8>,
}

impl ClientIdentity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when either holds no usable PEM item.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error("client certificate is not valid PEM").with_source(e))?;
        if chain.is_empty() {
            return Err(config_error("client certificate PEM holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            config_error("client key is not a valid PEM private key").with_source(e)
        })?;
        Ok(Self {
            chain,
            key: SecretSlice::from(key.secret_der().to_vec()),
        })
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::try_from(self.key.expose_secret().to_vec())
            .map_err(|e| config_error(format!("client key: {e}")))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config).with_message(message)
}

/// Settings of a [`Transport`]; start from [`Transport::builder`].
#[derive(Debug, Clone)]
pub struct TransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    tcp_keepalive: Option<Duration>,
    tcp_nodelay: bool,
    http2: bool,
    webpki_roots: bool,
    native_roots: bool,
    extra_roots: Vec<CertificateDer<'static>>,
    identity: Option<ClientIdentity>,
    max_redirects: usize,
    decompression: bool,
    proxy: ProxySetting,
}

/// Where the transport's proxies come from.
#[derive(Debug, Clone)]
enum ProxySetting {
    /// [`Proxy::from_env`], read when the transport is built.
    Environment,
    /// None, whatever the environment says.
    Off,
    Given(Box<Proxy>),
}

impl Default for TransportBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: Some(integration_config::DEFAULT_CONNECT_TIMEOUT),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: 32,
            tcp_keepalive: Some(Duration::from_secs(60)),
            tcp_nodelay: true,
            http2: true,
            webpki_roots: true,
            native_roots: false,
            extra_roots: Vec::new(),
            identity: None,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            decompression: true,
            proxy: ProxySetting::Environment,
        }
    }
}

impl TransportBuilder {
    /// Bound on the TCP connect (DNS included). Default 5 s, the configuration's
    /// [`DEFAULT_CONNECT_TIMEOUT`](integration_config::DEFAULT_CONNECT_TIMEOUT): one default whether
    /// an integration comes from configuration or not. `None` waits as long as the OS does.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept. Default 90 s; `None` keeps it until the server
    /// closes it.
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// Idle HTTP/1.1 connections kept per destination (scheme and authority), the least recently
    /// used closed beyond it; connections still reading a response's body are not idle. `0` turns
    /// pooling off: a connection per request, HTTP/2 included. Default 32.
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// TCP keep-alive probe interval. Default 60 s; `None` turns keep-alive off.
    #[must_use]
    pub fn tcp_keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.tcp_keepalive = interval.into();
        self
    }

    /// `TCP_NODELAY`. Default on.
    #[must_use]
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.tcp_nodelay = nodelay;
        self
    }

    /// Offer HTTP/2 by ALPN on TLS connections (HTTP/1.1 is always offered). Default on.
    #[must_use]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Trust the webpki (Mozilla) roots. Default on.
    #[must_use]
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.webpki_roots = enabled;
        self
    }

    /// Also trust the platform's roots. Default off.
    #[must_use]
    pub fn native_roots(mut self, enabled: bool) -> Self {
        self.native_roots = enabled;
        self
    }

    /// Also trust the CA certificates in `pem` (one or more PEM `CERTIFICATE` blocks).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `pem` holds no certificate or is malformed.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error("CA certificate is not valid PEM").with_source(e))?;
        if certs.is_empty() {
            return Err(config_error("CA certificate PEM holds no certificate"));
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Present this client certificate when the server asks for one (mutual TLS).
    #[must_use]
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Redirects followed per request before failing with [`ErrorKind::Request`]. Default 10; 0 turns
    /// following off (the 3xx is an error).
    #[must_use]
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Decompress gzip, deflate and brotli responses (and say so in `Accept-Encoding`). Default on.
    #[must_use]
    pub fn decompression(mut self, enabled: bool) -> Self {
        self.decompression = enabled;
        self
    }

    /// Sends requests through `proxy` (see [`Proxy`]) instead of the environment's proxies.
    #[must_use]
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxySetting::Given(Box::new(proxy));
        self
    }

    /// Connects directly, ignoring the environment's proxy variables.
    #[must_use]
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Off;
        self
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if self.native_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "could not load a platform root certificate");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "platform root certificates loaded");
        }
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| config_error("CA certificate rejected").with_source(e))?;
        }
        if roots.is_empty() {
            return Err(config_error(
                "no trusted root certificate: enable webpki or native roots, or add a CA",
            ));
        }
        // ring, passed explicitly: with a second provider compiled in, the implicit default panics.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("TLS protocol versions").with_source(e))?
            .with_root_certificates(roots);
        match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key()?)
                .map_err(|e| config_error("client certificate rejected").with_source(e)),
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// Builds the transport: one connection pool, shared by its clones.
    ///
    /// Must run inside a tokio runtime when the first request is sent (not when building).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the TLS settings are unusable (no root, a bad client key).
    pub fn build(&self) -> Result<Transport, Error> {
        let mut tls = self.tls_config()?;
        // What hyper-rustls' builder sets for `enable_http2` (and leaves empty for HTTP/1.1 only).
        if self.http2 {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(self.connect_timeout);
        http.set_keepalive(self.tcp_keepalive);
        http.set_nodelay(self.tcp_nodelay);
        let proxy = match &self.proxy {
            ProxySetting::Environment => Proxy::from_env(),
            ProxySetting::Off => None,
            ProxySetting::Given(proxy) => Some(Proxy::clone(proxy)),
        }
        .map(|proxy| Arc::new(proxy.matcher()));
        let connector = Connector::new(http, tls, proxy.clone());
        let pool = SharedPool(Arc::new(Connections::new(
            connector,
            proxy,
            self.pool_idle_timeout,
            self.pool_max_idle_per_host,
        )));
        Ok(Transport::assemble(
            pool,
            self.decompression,
            self.max_redirects,
            Redactor::default(),
        ))
    }
}

/// The innermost service: sends a request on the pooled connection and returns the (decompressed)
/// response.
///
/// # Clone
///
/// Clones share the connection pool.
#[derive(Clone)]
pub struct Transport {
    pool: SharedPool,
    /// The redirect bound and the rule for credential headers.
    redirects: RedirectPolicy,
    decompression: bool,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("decompression", &self.decompression)
            .field("max_redirects", &self.redirects.max())
            .field("redactor", self.redirects.redactor())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Settings with the defaults: webpki roots, HTTP/1.1 and HTTP/2, 5 s connect timeout, 90 s
    /// idle timeout, 32 idle connections per host, decompression on, 10 redirects.
    pub fn builder() -> TransportBuilder {
        TransportBuilder::default()
    }

    /// A transport with the default settings.
    ///
    /// # Errors
    ///
    /// See [`TransportBuilder::build`].
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A clone over the same pool whose redirects drop the headers `redactor` calls secret (an
    /// integration's own API-key header and its `log.redact_headers`) on a change of origin. Every
    /// header whose value is marked sensitive is dropped too, whatever the redactor says.
    #[must_use]
    pub fn with_redactor(&self, redactor: Redactor) -> Self {
        Self::assemble(
            self.pool.clone(),
            self.decompression,
            self.redirects.max(),
            redactor,
        )
    }

    fn assemble(
        pool: SharedPool,
        decompression: bool,
        max_redirects: usize,
        redactor: Redactor,
    ) -> Self {
        Self {
            redirects: RedirectPolicy::new(max_redirects, redactor),
            pool,
            decompression,
        }
    }
}

impl Service<Request<Body>> for Transport {
    type Response = Response<TransportBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool is always ready: it waits for a connection inside the call.
        self.pool.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> ResponseFuture {
        // Before the redirect follower, which copies the request's headers to every hop.
        if self.decompression
            && let http::header::Entry::Vacant(entry) =
                request.headers_mut().entry(http::header::ACCEPT_ENCODING)
        {
            entry.insert(ACCEPT_ENCODINGS);
        }
        ResponseFuture {
            inner: Box::pin(Follow::start(self.pool.clone(), request, &self.redirects)),
            decompression: self.decompression,
        }
    }
}

/// The response future of [`Transport`].
///
/// The redirect follower's future (about 430 bytes: the request's method, URI, headers and body
/// for a redirect, and hyper-util's future) is boxed: every layer above the transport holds this
/// future inside its own, and each of them moved it at least once while building its own; boxed,
/// each move is a pointer, and the whole stack's future, boxed once more at the top, is small
/// enough for the allocator's per-thread cache (callgrind: about 1,400 instructions a call less
/// for one allocation more, issue 19). Boxed, it needs no pinning of its own.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Pin<Box<Follow>>,
    decompression: bool,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<TransportBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.inner.as_mut().poll(cx))?;
        Poll::Ready(if self.decompression && is_decoded(response.headers()) {
            decode(response)
        } else {
            Ok(response.map(|body| TransportBody {
                kind: BodyKind::Plain(body),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layer above the transport that calls it later keeps a clone of the service below it,
    /// and the redirect follower keeps a clone of the pool in every call's future. Holding hyper-util's
    /// client by value made the transport 752 bytes, copied several times per call (and the futures
    /// that hold those clones as large). Shared behind an `Arc`, it stays a few words.
    /// Regression (issue 15, part 4): the transport's connect timeout defaulted to 10 s and the
    /// configuration's to 5 s, so the same integration connected under a different bound depending
    /// on how it was built.
    #[test]
    fn regression_the_transport_and_the_configuration_share_one_connect_timeout() {
        assert_eq!(
            TransportBuilder::default().connect_timeout,
            Some(integration_config::DEFAULT_CONNECT_TIMEOUT)
        );
        let config =
            integration_config::IntegrationConfig::new("https://api.example.com".parse().unwrap());
        assert_eq!(
            config.connect_timeout,
            integration_config::DEFAULT_CONNECT_TIMEOUT
        );
    }

    /// A connect error through a proxy names the port the proxy was dialled on: the one its URL
    /// gives, or its scheme's default (the proxy tests dial proxies with explicit ports only).
    #[test]
    fn a_proxys_port_is_its_urls_or_its_schemes_default() {
        let port = |url: &str| proxy_port(&url.parse().unwrap());
        assert_eq!(port("http://proxy.corp:3128"), 3128);
        assert_eq!(port("https://proxy.corp:8443"), 8443);
        assert_eq!(port("http://proxy.corp"), 80);
        assert_eq!(port("https://proxy.corp"), 443);
        assert_eq!(port("https://proxy.corp:80"), 80);
    }

    /// Issue 19: the `Host` header the transport makes is the one hyper-util would: the host, the
    /// port unless it is the scheme's default, never the user information, the case as sent.
    #[test]
    fn the_host_header_is_the_one_hyper_util_writes() {
        let cases = [
            ("http://api.example.com/x", "api.example.com"),
            ("http://api.example.com:80/x", "api.example.com"),
            ("http://api.example.com:8080", "api.example.com:8080"),
            ("http://api.example.com:443", "api.example.com:443"),
            ("https://api.example.com:443/x", "api.example.com"),
            ("https://api.example.com:80/x", "api.example.com:80"),
            ("https://api.example.com:8443", "api.example.com:8443"),
            (
                "http://user:pw@api.example.com:8080/x",
                "api.example.com:8080",
            ),
            ("http://[::1]:8080/x", "[::1]:8080"),
            ("http://API.Example.com/x", "API.Example.com"),
        ];
        for (uri, host) in cases {
            let uri: http::Uri = uri.parse().unwrap();
            let header = host_header(uri.authority().unwrap(), default_port(uri.scheme_str()));
            assert_eq!(header.unwrap(), host, "{uri}");
        }
    }

    /// Issue 19: the response future and the response body are moved by every layer above the
    /// transport; held inline, the redirect follower's future (~600 bytes) and tower-http's
    /// decompressing body (360 bytes) were copied at each move.
    #[test]
    fn the_transports_future_and_body_are_a_few_words() {
        let future = std::mem::size_of::<ResponseFuture>();
        assert!(future <= 32, "ResponseFuture is {future} bytes");
        let body = std::mem::size_of::<TransportBody>();
        assert!(body <= 48, "TransportBody is {body} bytes");
    }

    /// What the transport decodes is what it announces in `Accept-Encoding` and what tower-http's
    /// decoder takes: exactly `gzip`, `deflate` and `br` (brotli has no payload in the e2e test).
    #[test]
    fn the_transport_decodes_exactly_the_encodings_it_announces() {
        let with = |encoding: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_str(encoding).unwrap(),
            );
            is_decoded(&headers)
        };
        let announced = ACCEPT_ENCODINGS;
        for announced in announced.to_str().unwrap().split(',') {
            assert!(with(announced), "{announced}");
        }
        assert!(with("br"));
        for other in ["identity", "zstd", "x-custom", "GZIP", "gzip, br", ""] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_decoded(&http::HeaderMap::new()));
    }

    /// Issue 19: the pool's future for one request is boxed whole at every call; a connect's
    /// futures (the connector's, the TLS and HTTP/2 handshakes') are boxed apart, only on a miss.
    /// Held inline they made it several kilobytes, copied at every call (13,000 instructions of
    /// `memcpy`). What is left is the request, its key, and hyper's send future (which holds the
    /// request until the connection takes it).
    #[tokio::test]
    async fn the_pools_future_is_small() {
        let mut pool = Transport::new().unwrap().pool;
        let future = pool.call(
            Request::get("http://127.0.0.1:9/")
                .body(Body::empty())
                .unwrap(),
        );
        let size = std::mem::size_of_val(&*future.inner);
        assert!(size <= 1280, "the pool's future is {size} bytes");
    }

    #[test]
    fn a_transport_clone_is_a_few_words_not_a_client() {
        let size = std::mem::size_of::<Transport>();
        assert!(size <= 128, "Transport is {size} bytes");
    }

    /// A foreign error with a fixed message and an optional cause, as hyper-util's connector
    /// builds them.
    #[derive(Debug)]
    struct Named(&'static str, Option<std::io::Error>);

    impl fmt::Display for Named {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn connect_causes_are_read_from_the_chain() {
        use std::io::{Error as Io, ErrorKind};
        let certificate = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let cases: Vec<(Box<dyn std::error::Error + 'static>, ConnectCause)> = vec![
            (
                Box::new(Named(
                    "dns error",
                    Some(Io::other("failed to lookup address")),
                )),
                ConnectCause::Dns,
            ),
            (
                Box::new(Named(
                    "tcp connect error",
                    Some(Io::from(ErrorKind::ConnectionRefused)),
                )),
                ConnectCause::Refused,
            ),
            (
                Box::new(Named(
                    "tcp connect error",
                    Some(Io::new(ErrorKind::TimedOut, "connect timeout")),
                )),
                ConnectCause::TimedOut,
            ),
            (
                Box::new(Io::from(ErrorKind::NetworkUnreachable)),
                ConnectCause::Unreachable,
            ),
            // rustls' error inside two io errors, as hyper-rustls hands it over.
            (
                Box::new(Io::other(Io::new(ErrorKind::InvalidData, certificate))),
                ConnectCause::TlsCertificate,
            ),
            (
                Box::new(Io::new(
                    ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
                )),
                ConnectCause::Tls,
            ),
            (Box::new(Io::other("something else")), ConnectCause::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(connect_cause(&*error), expected, "{error}");
        }
    }

    #[tokio::test]
    async fn clones_and_redactor_variants_share_one_pool() {
        let transport = Transport::new().unwrap();
        let clone = transport.clone();
        let variant = transport.with_redactor(Redactor::default().deny(["x-api-key"]));
        assert!(Arc::ptr_eq(&transport.pool.0, &clone.pool.0));
        assert!(Arc::ptr_eq(&transport.pool.0, &variant.pool.0));
    }
}
