//! Issue 15, part 2: proxies, against a loopback proxy of the test's own that records what it is
//! asked and forwards it: `http` in absolute form with `Proxy-Authorization`, `https` through a
//! `CONNECT` tunnel with TLS (and ALPN) to the upstream inside it, `no_proxy` hosts reached
//! directly, the configuration's `proxy` key, and clear errors when the proxy is down or refuses,
//! none of which shows the proxy's credentials. The environment is read in `proxy_env.rs`, a test
//! binary of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_client::Client;
use integration_client::transport::{Proxy, Transport, TransportBuilder};
use integration_config::{IntegrationConfig, ProxyConfig, ProxyServer, Secret};
use integration_core::error::{ConnectCause, ConnectFailed};
use integration_core::{Error, ErrorKind};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = "svc-payments";
const PASSWORD: &str = "pw-proxy-0123456789";

fn basic() -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("Basic {encoded}")
}

/// What the proxy was asked on one connection: the request line and its `Proxy-Authorization`.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    proxy_authorization: Option<String>,
}

/// A forward proxy on 127.0.0.1: records each connection's first request, then either refuses it
/// with `refuse` (a status) or forwards it (a tunnel for `CONNECT`, origin form for the rest).
struct TestProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestProxy {
    async fn start(refuse: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(client, record.clone(), refuse));
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(mut client: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, refuse: Option<u16>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = client.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let proxy_authorization = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.clone());
    seen.lock().unwrap().push(Seen {
        request_line: request_line.clone(),
        proxy_authorization,
    });
    if let Some(status) = refuse {
        let answer =
            format!("HTTP/1.1 {status} No\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        upstream.write_all(&buf[head_end..]).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    // Absolute form: to the origin in origin form, without the proxy's own header.
    let uri: http::Uri = target.parse().unwrap();
    let mut upstream = TcpStream::connect(uri.authority().unwrap().as_str())
        .await
        .unwrap();
    let mut forwarded = format!(
        "{method} {} {}\r\n",
        uri.path_and_query().map_or("/", |p| p.as_str()),
        parts.next().unwrap_or("HTTP/1.1")
    );
    for (name, value) in &headers {
        if !name.eq_ignore_ascii_case("proxy-authorization") {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    forwarded.push_str("\r\n");
    upstream.write_all(forwarded.as_bytes()).await.unwrap();
    upstream.write_all(&buf[head_end..]).await.unwrap();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// An upstream on plain HTTP answering `GET /hello`.
async fn http_upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
        .mount(&server)
        .await;
    server
}

/// A TLS upstream on 127.0.0.1 (a certificate of its own, returned as PEM to trust) that answers
/// with the HTTP version it saw and whether a `Proxy-Authorization` reached it.
async fn https_upstream() -> (SocketAddr, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let leaked = request.headers().contains_key("proxy-authorization");
                    let body = format!("{:?} proxy-authorization={leaked}", request.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, pem)
}

fn integration(base_url: &str) -> IntegrationConfig {
    let mut config = IntegrationConfig::builder(base_url)
        .max_attempts(1)
        .build()
        .unwrap();
    config.circuit_breaker.enabled = false;
    config
}

fn client(transport: TransportBuilder, config: IntegrationConfig) -> Client {
    Client::builder()
        .transport(transport)
        .api("api", config)
        .build()
        .unwrap()
}

fn with_credentials(proxy: &TestProxy) -> Proxy {
    Proxy::all(&proxy.url())
        .unwrap()
        .basic_auth(USER, SecretString::from(PASSWORD))
}

async fn get(client: &Client, path: &str) -> Result<String, Error> {
    client.api("api")?.get(path).send().await?.text().await
}

#[tokio::test]
async fn http_goes_to_the_proxy_in_absolute_form_with_its_credentials() {
    let upstream = http_upstream().await;
    let proxy = TestProxy::start(None).await;
    let client = client(
        Transport::builder().proxy(with_credentials(&proxy)),
        integration(&upstream.uri()),
    );
    assert_eq!(get(&client, "/hello").await.unwrap(), "hello");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].request_line,
        format!("GET {}/hello HTTP/1.1", upstream.uri())
    );
    assert_eq!(
        seen[0].proxy_authorization.as_deref(),
        Some(basic().as_str())
    );
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_and_the_credentials_stay_with_the_proxy() {
    let (upstream, pem) = https_upstream().await;
    let proxy = TestProxy::start(None).await;
    let transport = Transport::builder()
        .add_root_certificates_pem(pem.as_bytes())
        .unwrap()
        .proxy(with_credentials(&proxy));
    let client = client(transport, integration(&format!("https://{upstream}")));
    // TLS end to end inside the tunnel, HTTP/2 chosen by ALPN with the upstream, and the
    // proxy's header never inside the tunnel.
    assert_eq!(
        get(&client, "/").await.unwrap(),
        "HTTP/2.0 proxy-authorization=false"
    );
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].request_line, format!("CONNECT {upstream} HTTP/1.1"));
    assert_eq!(
        seen[0].proxy_authorization.as_deref(),
        Some(basic().as_str())
    );
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let upstream = http_upstream().await;
    let proxy = TestProxy::start(None).await;
    for exception in ["127.0.0.1", "127.0.0.0/8", "*"] {
        let client = client(
            Transport::builder().proxy(with_credentials(&proxy).no_proxy([exception])),
            integration(&upstream.uri()),
        );
        assert_eq!(get(&client, "/hello").await.unwrap(), "hello");
    }
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
}

#[tokio::test]
async fn the_configuration_names_a_proxy_or_none_per_integration() {
    let upstream = http_upstream().await;
    let proxy = TestProxy::start(None).await;
    let other = TestProxy::start(None).await;
    let own = ProxyServer::new(proxy.url().parse().unwrap())
        .with_credentials(USER, Secret::new(PASSWORD));
    let mut via_config = integration(&upstream.uri());
    via_config.proxy = ProxyConfig::Server(own);
    let mut direct = integration(&upstream.uri());
    direct.proxy = ProxyConfig::Off;
    // The client's own proxy (`other`) is what an integration without the key gets.
    let client = Client::builder()
        .proxy(Proxy::all(&other.url()).unwrap())
        .api("own", via_config)
        .api("direct", direct)
        .api("default", integration(&upstream.uri()))
        .build()
        .unwrap();
    for name in ["own", "direct", "default"] {
        let response = client.api(name).unwrap().get("/hello").send().await;
        assert_eq!(response.unwrap().text().await.unwrap(), "hello", "{name}");
    }
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].proxy_authorization.as_deref(),
        Some(basic().as_str())
    );
    let seen = other.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].proxy_authorization, None);
}

fn connect_failed(error: &Error) -> &ConnectFailed {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<ConnectFailed>() {
            return found;
        }
        source = cause.source();
    }
    panic!("no ConnectFailed in the chain of {error:?}")
}

/// The error names the proxy's host and port, and shows its credentials nowhere.
fn assert_names_the_proxy(error: &Error, proxy: SocketAddr, cause: ConnectCause) {
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let failed = connect_failed(error);
    assert_eq!(failed.cause(), cause, "{error:#}");
    assert_eq!(failed.proxy(), Some(("127.0.0.1", proxy.port())));
    let shown = error.to_string();
    assert!(
        shown.contains(&format!("through the proxy 127.0.0.1:{}", proxy.port())),
        "{shown}"
    );
    for text in [shown, format!("{error:#}"), format!("{error:?}")] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(&basic()[6..]),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_proxy_that_is_down_fails_naming_it_not_its_credentials() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = Proxy::all(&format!("http://{USER}:{PASSWORD}@{addr}")).unwrap();
    for base in ["http://api.example.com", "https://api.example.com"] {
        let client = client(Transport::builder().proxy(proxy.clone()), integration(base));
        let error = get(&client, "/").await.unwrap_err();
        assert_names_the_proxy(&error, addr, ConnectCause::Refused);
    }
}

#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_fails_naming_it() {
    for (status, cause) in [
        (403, ConnectCause::ProxyRefused),
        (407, ConnectCause::ProxyAuth),
    ] {
        let proxy = TestProxy::start(Some(status)).await;
        let client = client(
            Transport::builder().proxy(with_credentials(&proxy)),
            integration("https://api.example.com"),
        );
        let error = get(&client, "/").await.unwrap_err();
        assert_names_the_proxy(&error, proxy.addr, cause);
        assert_eq!(
            proxy.seen()[0].request_line,
            "CONNECT api.example.com:443 HTTP/1.1"
        );
    }
}

/// Everything logged at every level during proxied calls, `http` and `https`, with the log layer
/// capturing headers: the credentials appear nowhere (they are added below the log layer, and
/// hyper-util's matcher and tunnel never print them).
#[tokio::test(flavor = "current_thread")]
async fn proxy_credentials_never_reach_the_logs() {
    let upstream = http_upstream().await;
    let (secure, pem) = https_upstream().await;
    let proxy = TestProxy::start(None).await;
    let guard = integration_core::testing::capture(tracing::Level::TRACE);
    let transport = Transport::builder()
        .add_root_certificates_pem(pem.as_bytes())
        .unwrap()
        .proxy(with_credentials(&proxy));
    for base in [upstream.uri(), format!("https://{secure}")] {
        let mut config = integration(&base);
        config.log.capture_headers = true;
        let client = client(transport.clone(), config);
        client
            .api("api")
            .unwrap()
            .get("/hello")
            .send()
            .await
            .unwrap();
    }
    let logged = guard.captured().all_text().join("\n");
    assert!(logged.contains("/hello"), "the calls were logged: {logged}");
    assert!(!logged.contains(PASSWORD), "{logged}");
    assert!(!logged.contains(&basic()[6..]), "{logged}");
    assert_eq!(proxy.seen().len(), 2);
}
