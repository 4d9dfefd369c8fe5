//! HTTP proxies, as reqwest and curl use them: from the environment by default, or given.
//!
//! Which destination goes through which proxy, and the `NO_PROXY` rules, are hyper-util's
//! ([`Matcher`]); the `CONNECT` tunnel of an `https` target is hyper-util's [`Tunnel`]. This module
//! holds the settings ([`Proxy`]) and the connector that puts them together with rustls.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use integration_core::{BoxError, Error, ErrorKind};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tower_service::Service;

/// The variables read by [`Proxy::from_env`], in the order they are looked up (upper case first).
pub const PROXY_ENV_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// An HTTP proxy for the [`Transport`](crate::transport::Transport): where `http` and `https`
/// destinations go, the credentials the proxy asks for, and the hosts reached directly.
///
/// An `https` destination is reached through a `CONNECT` tunnel (the proxy sees the host and port,
/// TLS runs end to end); an `http` destination by sending the request to the proxy in absolute form
/// (`GET http://host/path HTTP/1.1`), with `Proxy-Authorization` when there are credentials. The
/// credentials go to the proxy only: never to the destination, never into a log, `Debug` or error.
///
/// ```
/// use integration_client::transport::{Proxy, Transport};
/// use secrecy::SecretString;
///
/// # fn main() -> Result<(), integration_core::Error> {
/// let proxy = Proxy::all("http://proxy.corp:3128")?
///     .basic_auth("svc-payments", SecretString::from("s3cr3t"))
///     .no_proxy([".corp", "10.0.0.0/8"]);
/// assert!(!format!("{proxy:?}").contains("s3cr3t"));
/// let transport = Transport::builder().proxy(proxy).build()?;
/// # let _ = transport;
/// # Ok(())
/// # }
/// ```
///
/// Without [`TransportBuilder::proxy`](crate::transport::TransportBuilder::proxy), the transport
/// takes the environment's ([`Proxy::from_env`]); [`TransportBuilder::no_proxy`](crate::transport::TransportBuilder::no_proxy)
/// ignores it.
#[derive(Clone)]
pub struct Proxy {
    http: Option<Target>,
    https: Option<Target>,
    no_proxy: Vec<String>,
}

/// One proxy: its URL (scheme, host, port) and its credentials.
#[derive(Clone)]
struct Target {
    uri: Uri,
    credentials: Option<(String, SecretString)>,
}

impl Target {
    /// Parses a proxy URL as curl does: a missing scheme means `http`; userinfo becomes the
    /// credentials (percent-decoded). Only `http` and `https` proxies are supported.
    ///
    /// The error never quotes the URL: it may hold a password.
    fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let with_scheme;
        let text = if text.contains("://") {
            text
        } else {
            with_scheme = format!("http://{text}");
            &with_scheme
        };
        let url = url::Url::parse(text).map_err(|_| "is not a valid URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must use http or https (SOCKS proxies are not supported)");
        }
        let host = url.host_str().ok_or("must have a host")?;
        let port = url.port_or_known_default().ok_or("must have a port")?;
        let uri = Uri::builder()
            .scheme(url.scheme())
            .authority(format!("{host}:{port}"))
            .path_and_query("/")
            .build()
            .map_err(|_| "is not a valid URL")?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = (!url.username().is_empty()).then(|| {
            (
                decode(url.username()),
                SecretString::from(decode(url.password().unwrap_or(""))),
            )
        });
        Ok(Self { uri, credentials })
    }

    /// The URL as hyper-util's matcher reads it, credentials in the userinfo (percent-encoded; the
    /// matcher decodes them and keeps a sensitive `Basic` header value).
    fn for_matcher(&self) -> String {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        match &self.credentials {
            Some((username, password)) => format!(
                "{scheme}://{}:{}@{authority}",
                utf8_percent_encode(username, NON_ALPHANUMERIC),
                utf8_percent_encode(password.expose_secret(), NON_ALPHANUMERIC),
            ),
            None => format!("{scheme}://{authority}"),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Target");
        debug.field("uri", &self.uri);
        if let Some((username, _)) = &self.credentials {
            debug
                .field("username", username)
                .field("password", &"[redacted]");
        }
        debug.finish()
    }
}

impl Proxy {
    /// Every destination, `http` and `https`, through the proxy at `url` (`http://host:port`, or
    /// `https://` for TLS to the proxy itself; without a scheme, `http`). Credentials in the URL's
    /// userinfo are taken as [`basic_auth`](Self::basic_auth) would.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `url` is not an `http` or `https` URL with a host; the message
    /// never quotes the URL.
    pub fn all(url: &str) -> Result<Self, Error> {
        let target = Target::parse(url).map_err(|why| {
            Error::new(ErrorKind::Config).with_message(format!("the proxy URL {why}"))
        })?;
        Ok(Self {
            http: Some(target.clone()),
            https: Some(target),
            no_proxy: Vec::new(),
        })
    }

    /// The proxies of the environment: `HTTPS_PROXY` for `https` destinations, `HTTP_PROXY` for
    /// `http` ones, `ALL_PROXY` for both when the specific one is unset, `NO_PROXY` for the hosts
    /// reached directly; each upper case first, then lower case. `None` when no variable names a
    /// usable proxy. As hyper-util does, nothing is read in a CGI process (`REQUEST_METHOD` set),
    /// where `HTTP_PROXY` can come from a request header ("httpoxy").
    ///
    /// A variable that does not parse is skipped with a warning naming the variable, never its
    /// value (which may hold a password).
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables' values given by `lookup` (a name of
    /// [`PROXY_ENV_VARS`], or `REQUEST_METHOD`), for tests and for configuration kept elsewhere.
    ///
    /// ```
    /// use integration_client::transport::Proxy;
    ///
    /// let proxy = Proxy::from_vars(|name| match name {
    ///     "https_proxy" => Some("proxy.corp:3128".to_owned()),
    ///     "NO_PROXY" => Some("localhost,.internal".to_owned()),
    ///     _ => None,
    /// })
    /// .expect("https_proxy names a proxy");
    /// assert!(format!("{proxy:?}").contains("proxy.corp:3128"));
    /// assert!(Proxy::from_vars(|_| None).is_none());
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        if lookup("REQUEST_METHOD").is_some() {
            return None;
        }
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                lookup(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let target = |names: [&'static str; 2]| {
            let (name, value) = first(names)?;
            match Target::parse(&value) {
                Ok(target) => Some(target),
                Err(why) => {
                    tracing::warn!(
                        variable = name,
                        "ignoring the proxy variable: its value {why}"
                    );
                    None
                }
            }
        };
        let all = target(["ALL_PROXY", "all_proxy"]);
        let http = target(["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone());
        let https = target(["HTTPS_PROXY", "https_proxy"]).or(all);
        if http.is_none() && https.is_none() {
            return None;
        }
        let no_proxy = first(["NO_PROXY", "no_proxy"])
            .map(|(_, value)| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|host| !host.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            http,
            https,
            no_proxy,
        })
    }

    /// Sends `username` and `password` to the proxy (HTTP Basic, in `Proxy-Authorization`),
    /// replacing credentials from the URL. The header is marked sensitive.
    #[must_use]
    pub fn basic_auth(mut self, username: impl Into<String>, password: SecretString) -> Self {
        let credentials = Some((username.into(), password));
        for target in [&mut self.http, &mut self.https].into_iter().flatten() {
            target.credentials = credentials.clone();
        }
        self
    }

    /// Reaches these hosts directly, with `NO_PROXY`'s rules: a domain matches itself and its
    /// subdomains (`example.com`, `.example.com`), an IP address or a CIDR block (`10.0.0.0/8`)
    /// those addresses, `*` every host. Replaces the list from the environment.
    #[must_use]
    pub fn no_proxy(mut self, hosts: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.no_proxy = hosts
            .into_iter()
            .map(|host| host.as_ref().trim().to_owned())
            .filter(|host| !host.is_empty())
            .collect();
        self
    }

    /// hyper-util's matcher for these settings.
    pub(crate) fn matcher(&self) -> Matcher {
        // hyper-util checks `*` against domain names only; as in curl, it means every host, IP
        // addresses included: a matcher that intercepts nothing.
        if self.no_proxy.iter().any(|host| host == "*") {
            return Matcher::builder().build();
        }
        let mut builder = Matcher::builder().no(self.no_proxy.join(","));
        if let Some(http) = &self.http {
            builder = builder.http(http.for_matcher());
        }
        if let Some(https) = &self.https {
            builder = builder.https(https.for_matcher());
        }
        builder.build()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

type Tcp = TokioIo<TcpStream>;
type BoxConnecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The transport's connector: direct, through a proxy in absolute form (`http` destinations), or
/// through a `CONNECT` tunnel with TLS to the destination inside it (`https` destinations).
///
/// One `Arc`: the pool clones the connector for each connection it makes (hyper-util's client, before
/// the pool of our own, cloned it for every request). Shared, the clone is one reference count
/// instead of eight (issue 19); the connectors themselves are cloned only when a connection is
/// made.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: Arc<Connectors>,
}

struct Connectors {
    /// Straight to the destination: TLS for `https`, plain TCP for `http`.
    direct: HttpsConnector<HttpConnector>,
    /// To the proxy itself: plain TCP for an `http://` proxy, TLS (without ALPN: the tunnel is
    /// set up in HTTP/1.1) for an `https://` one.
    to_proxy: HttpsConnector<HttpConnector>,
    /// TLS to the destination inside a tunnel, with the same ALPN as `direct`.
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<Arc<Matcher>>,
}

impl Connector {
    /// `tls` is the destination's TLS configuration, its ALPN protocols already set.
    pub(crate) fn new(
        http: HttpConnector,
        tls: rustls::ClientConfig,
        proxy: Option<Arc<Matcher>>,
    ) -> Self {
        let mut to_proxy = tls.clone();
        to_proxy.alpn_protocols.clear();
        let tls = Arc::new(tls);
        Self {
            inner: Arc::new(Connectors {
                direct: HttpsConnector::from((http.clone(), tls.clone())),
                to_proxy: HttpsConnector::from((http, to_proxy)),
                tls,
                proxy,
            }),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors wrap hyper-util's HttpConnector, which is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        // A connection is being made: the connector called is a clone of the shared one (each
        // `HttpsConnector` is four reference counts; its `call` needs it `&mut`).
        let connectors = &*self.inner;
        let Some(proxy) = connectors.proxy.as_ref().and_then(|m| m.intercept(&dst)) else {
            return Connecting::Plain {
                connecting: connectors.direct.clone().call(dst),
                proxied: false,
            };
        };
        if dst.scheme() == Some(&Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy.uri().clone(), connectors.to_proxy.clone());
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            // TLS with the destination, inside the tunnel to it.
            let mut tls = HttpsConnector::from((tunnel, connectors.tls.clone()));
            return Connecting::Tunnel {
                connecting: tls.call(dst),
            };
        }
        // An `http` destination: the connection is to the proxy, and requests on it are written
        // in absolute form (`Connected::proxy`); `Proxy-Authorization` goes on each request.
        Connecting::Plain {
            connecting: connectors.to_proxy.clone().call(proxy.uri().clone()),
            proxied: true,
        }
    }
}

/// A connection being made by the [`Connector`].
#[must_use = "futures do nothing unless polled"]
pub(crate) enum Connecting {
    Plain {
        connecting: BoxConnecting<MaybeHttpsStream<Tcp>>,
        proxied: bool,
    },
    Tunnel {
        connecting: BoxConnecting<MaybeHttpsStream<MaybeHttpsStream<Tcp>>>,
    },
}

impl Future for Connecting {
    type Output = Result<Conn, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (the futures are boxed), so is `Connecting`.
        match self.get_mut() {
            Connecting::Plain {
                connecting,
                proxied,
            } => connecting.as_mut().poll(cx).map_ok(|io| Conn::Plain {
                io,
                proxied: *proxied,
            }),
            Connecting::Tunnel { connecting } => connecting.as_mut().poll(cx).map_ok(Conn::Tunnel),
        }
    }
}

/// A connection made by the [`Connector`].
// One value per connection, moved once into hyper's connection task: the variants' sizes differ
// (a tunnel holds two TLS-capable streams), which costs nothing a box per connection would save.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Conn {
    /// To the destination, or (`proxied`) to a proxy that gets requests in absolute form.
    Plain {
        io: MaybeHttpsStream<Tcp>,
        proxied: bool,
    },
    /// TLS with the destination inside a tunnel through a proxy.
    Tunnel(MaybeHttpsStream<MaybeHttpsStream<Tcp>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain { io, proxied } => io.connected().proxy(*proxied),
            Conn::Tunnel(io) => io.connected(),
        }
    }
}

// Both streams are Unpin, so is `Conn`: each method forwards to the stream it holds.
impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain { io, .. } => Pin::new(io).poll_read(cx, buf),
            Conn::Tunnel(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain { io, .. } => Pin::new(io).poll_write(cx, buf),
            Conn::Tunnel(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain { io, .. } => Pin::new(io).poll_flush(cx),
            Conn::Tunnel(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain { io, .. } => Pin::new(io).poll_shutdown(cx),
            Conn::Tunnel(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain { io, .. } => io.is_write_vectored(),
            Conn::Tunnel(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain { io, .. } => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tunnel(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intercept(proxy: &Proxy, url: &str) -> Option<String> {
        proxy
            .matcher()
            .intercept(&url.parse().unwrap())
            .map(|i| i.uri().to_string())
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        // Upper case first; a missing scheme is http; ALL_PROXY fills in what is unset.
        let proxy = Proxy::from_vars(vars(&[
            ("HTTPS_PROXY", "secure.corp:3129"),
            ("https_proxy", "http://ignored:1"),
            ("all_proxy", "http://all.corp:8080"),
            ("no_proxy", " localhost , .internal,10.0.0.0/8"),
        ]))
        .unwrap();
        assert_eq!(
            intercept(&proxy, "https://api.example.com/").as_deref(),
            Some("http://secure.corp:3129/")
        );
        assert_eq!(
            intercept(&proxy, "http://api.example.com/").as_deref(),
            Some("http://all.corp:8080/")
        );
        for direct in [
            "http://localhost:8080/",
            "https://billing.internal/",
            "http://10.1.2.3/",
        ] {
            assert_eq!(intercept(&proxy, direct), None, "{direct}");
        }
        // Regression: `*` let IP addresses through the proxy (hyper-util matches it against
        // domain names only); as in curl, it means every host.
        let everything = proxy.clone().no_proxy(["*"]);
        for direct in [
            "http://127.0.0.1/",
            "https://[::1]/",
            "https://api.example.com/",
        ] {
            assert_eq!(intercept(&everything, direct), None, "{direct}");
        }
        // Nothing set, only NO_PROXY, or a CGI process: no proxy.
        assert!(Proxy::from_vars(vars(&[])).is_none());
        assert!(Proxy::from_vars(vars(&[("NO_PROXY", "*")])).is_none());
        assert!(
            Proxy::from_vars(vars(&[
                ("HTTP_PROXY", "http://from-a-header:1"),
                ("REQUEST_METHOD", "GET")
            ]))
            .is_none()
        );
        // A SOCKS proxy is skipped (with a warning), not used as if it spoke HTTP.
        assert!(Proxy::from_vars(vars(&[("ALL_PROXY", "socks5://s:1080")])).is_none());
    }

    #[test]
    fn credentials_become_a_sensitive_basic_header_and_never_show() {
        let proxy = Proxy::all("http://user%40corp:p%3Ass-w0rd@proxy.corp:3128").unwrap();
        let matcher = proxy.matcher();
        let intercept = matcher
            .intercept(&"https://api.example.com".parse().unwrap())
            .unwrap();
        let auth = intercept.basic_auth().unwrap();
        assert!(auth.is_sensitive());
        // base64("user@corp:p:ss-w0rd")
        assert_eq!(auth, "Basic dXNlckBjb3JwOnA6c3MtdzByZA==");
        assert_eq!(intercept.uri(), "http://proxy.corp:3128/");

        let given = Proxy::all("proxy.corp:3128")
            .unwrap()
            .basic_auth("svc", SecretString::from("a b/c@d"));
        let auth = given
            .matcher()
            .intercept(&"http://api.example.com".parse().unwrap())
            .unwrap()
            .basic_auth()
            .cloned()
            .unwrap();
        // base64("svc:a b/c@d")
        assert_eq!(auth, "Basic c3ZjOmEgYi9jQGQ=");
        for shown in [format!("{proxy:?}"), format!("{given:?}")] {
            assert!(
                !shown.contains("ss-w0rd") && !shown.contains("a b/c@d"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_bad_proxy_url_is_refused_without_being_quoted() {
        for url in ["socks5://user:pw-123@proxy:1080", "http://user:pw-123@", ""] {
            let error = Proxy::all(url).unwrap_err();
            assert!(error.is_config(), "{error:?}");
            assert!(!format!("{error} {error:?}").contains("pw-123"), "{error}");
        }
    }
}
