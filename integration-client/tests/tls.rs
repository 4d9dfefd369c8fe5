//! TLS against a loopback server whose CA is generated at test time (rcgen), with the ring provider:
//! untrusted certificates fail, a configured CA passes, mTLS works, HTTP/2 is negotiated by ALPN, and
//! a redirect from https to http is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_client::Client;
use integration_client::transport::{ClientIdentity, Transport};
use integration_config::IntegrationConfig;
use integration_core::ErrorKind;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, signed by this CA: (certificate DER, key).
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, String, KeyPair) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), cert.pem(), key)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config for 127.0.0.1 signed by `ca`; with `client_ca`, a client certificate signed by it
/// is required.
fn server_config(ca: &Ca, client_ca: Option<&Ca>, alpn_h2: bool) -> Arc<rustls::ServerConfig> {
    let (cert, _, key) = ca.leaf(&["127.0.0.1", "localhost"]);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let der = CertificateDer::from_pem_slice(client_ca.pem.as_bytes()).unwrap();
            roots.add(der).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(vec![cert], key).unwrap();
    config.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}

/// Serves TLS on 127.0.0.1: `/version` answers the HTTP version it saw, `/downgrade` redirects to
/// `http://127.0.0.1:{port}/`, `/connection` answers the number of the connection it came on (0
/// for the first accepted).
async fn serve(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        for connection in 0usize.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request: Request<Incoming>| async move {
                        let response = match request.uri().path() {
                            "/downgrade" => Response::builder()
                                .status(StatusCode::FOUND)
                                .header(
                                    "location",
                                    format!("http://127.0.0.1:{}/version", addr.port()),
                                )
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                            // The `Host` header as received, `none` without one.
                            "/host" => Response::new(Full::new(Bytes::from(
                                request.headers().get("host").map_or_else(
                                    || "none".to_owned(),
                                    |host| String::from_utf8_lossy(host.as_bytes()).into_owned(),
                                ),
                            ))),
                            "/connection" => {
                                Response::new(Full::new(Bytes::from(connection.to_string())))
                            }
                            _ => Response::new(Full::new(Bytes::from(format!(
                                "{:?}",
                                request.version()
                            )))),
                        };
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Transport settings that trust `ca` (besides the webpki roots).
fn trusting(ca: &Ca) -> integration_client::transport::TransportBuilder {
    Transport::builder()
        .add_root_certificates_pem(ca.pem.as_bytes())
        .unwrap()
}

fn client_for(
    addr: SocketAddr,
    transport: integration_client::transport::TransportBuilder,
) -> Client {
    let mut config = IntegrationConfig::builder(format!("https://127.0.0.1:{}/", addr.port()))
        .max_attempts(1)
        .build()
        .unwrap();
    config.circuit_breaker.enabled = false;
    Client::builder()
        .transport(transport)
        .api("tls", config)
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_untrusted_certificate_fails_with_a_connect_error() {
    let ca = Ca::new("test CA");
    let addr = serve(server_config(&ca, None, true)).await;
    // Only the webpki roots: the test CA is unknown.
    let client = client_for(addr, Transport::builder());
    let error = client
        .api("tls")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:#}");
    assert_eq!(error.integration(), Some("tls"));
    let chain = format!("{error:#}");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    // Regression (issue 14): Display said only `could not connect`; it names where and why.
    assert_eq!(
        error.to_string(),
        format!(
            "integration `tls`, attempt 1: could not connect to 127.0.0.1:{} (TLS certificate rejected)",
            addr.port()
        )
    );
}

#[tokio::test]
async fn a_configured_ca_is_trusted_and_http2_is_negotiated() {
    let ca = Ca::new("test CA");
    let addr = serve(server_config(&ca, None, true)).await;
    let client = client_for(addr, trusting(&ca));
    let response = client
        .api("tls")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "HTTP/2.0");
}

/// Issue 19: the transport makes the `Host` header itself only where the connection is HTTP/1 for
/// certain. Over HTTP/2 the authority travels as `:authority` and no `Host` is sent (h2 does not
/// strip one); over HTTP/1.1, chosen by ALPN or with HTTP/2 off, the transport writes it.
#[tokio::test]
async fn host_is_sent_over_http1_and_not_over_http2() {
    let ca = Ca::new("test CA");
    let expected = |addr: SocketAddr| format!("127.0.0.1:{}", addr.port());
    let host = |client: Client| async move {
        let response = client
            .api("tls")
            .unwrap()
            .get("/host")
            .send()
            .await
            .unwrap();
        (response.version(), response.text().await.unwrap())
    };
    let transport = || trusting(&ca);
    let h2 = serve(server_config(&ca, None, true)).await;
    assert_eq!(
        host(client_for(h2, transport())).await,
        (http::Version::HTTP_2, "none".to_owned())
    );
    assert_eq!(
        host(client_for(h2, transport().http2(false))).await,
        (http::Version::HTTP_11, expected(h2))
    );
    let h1 = serve(server_config(&ca, None, false)).await;
    assert_eq!(
        host(client_for(h1, transport())).await,
        (http::Version::HTTP_11, expected(h1))
    );
}

/// Issue 19: the transport's pool keeps one HTTP/2 connection per authority and shares it: calls
/// made at once after the first all go on it (hyper multiplexes them), none opens another.
#[tokio::test]
async fn calls_share_one_http2_connection() {
    let ca = Ca::new("test CA");
    let addr = serve(server_config(&ca, None, true)).await;
    let client = client_for(addr, trusting(&ca));
    let connection = |client: Client| async move {
        let response = client
            .api("tls")
            .unwrap()
            .get("/connection")
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        response.text().await.unwrap()
    };
    assert_eq!(connection(client.clone()).await, "0");
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(connection(client.clone())))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "0");
    }
}

#[tokio::test]
async fn http1_is_used_when_the_server_offers_only_http1() {
    let ca = Ca::new("test CA");
    let addr = serve(server_config(&ca, None, false)).await;
    let client = client_for(addr, trusting(&ca));
    let response = client
        .api("tls")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let addr = serve(server_config(&server_ca, Some(&client_ca), true)).await;

    // Without a client certificate the server refuses the handshake.
    let transport = Transport::builder()
        .add_root_certificates_pem(server_ca.pem.as_bytes())
        .unwrap();
    let error = client_for(addr, transport.clone())
        .api("tls")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Connect | ErrorKind::Other),
        "{error:#}"
    );

    // With one signed by the client CA it passes.
    let (_, cert_pem, key) = client_ca.leaf(&["client.example"]);
    let identity =
        ClientIdentity::from_pem(cert_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    assert!(!format!("{identity:?}").contains("PRIVATE"));
    let client = client_for(addr, transport.client_identity(identity));
    let response = client
        .api("tls")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_redirect_from_https_to_http_is_refused() {
    let ca = Ca::new("test CA");
    let addr = serve(server_config(&ca, None, true)).await;
    let client = client_for(addr, trusting(&ca));
    let error = client
        .api("tls")
        .unwrap()
        .get("/downgrade")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Request, "{error:#}");
    assert!(error.to_string().contains("https to http"), "{error}");
}

#[test]
fn bad_pem_is_a_config_error() {
    let error = Transport::builder()
        .add_root_certificates_pem(b"not a pem")
        .unwrap_err();
    assert!(error.is_config());
    let error = ClientIdentity::from_pem(b"", b"").unwrap_err();
    assert!(error.is_config());
}

/// A directory of this test's own, removed when dropped (tempfile).
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new(name: &str) -> Self {
        Self(
            tempfile::Builder::new()
                .prefix(&format!("integration-tls-{name}-"))
                .tempdir()
                .unwrap(),
        )
    }

    fn write(&self, file: &str, contents: &str) -> String {
        let path = self.0.path().join(file);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

/// The `tls` section of the configuration: a private CA and a client certificate from files, for one
/// integration; another integration to the same server, with the default roots, is refused.
#[tokio::test]
async fn the_tls_section_trusts_a_private_ca_and_presents_a_client_certificate() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let addr = serve(server_config(&server_ca, Some(&client_ca), true)).await;
    let dir = TempDir::new("section");
    let ca_file = dir.write("ca.pem", &server_ca.pem);
    let (_, cert_pem, key) = client_ca.leaf(&["client.example"]);
    let cert_file = dir.write("client.pem", &cert_pem);
    let key_file = dir.write("client.key", &key.serialize_pem());
    let text = format!(
        r#"
        [integrations.bank]
        base_url = "https://127.0.0.1:{port}/"
        retry = {{ max_attempts = 1 }}
        [integrations.bank.tls]
        ca_files = ["{ca_file}"]
        client_cert_file = "{cert_file}"
        client_key_file = "{key_file}"

        [integrations.plain]
        base_url = "https://127.0.0.1:{port}/"
        retry = {{ max_attempts = 1 }}
        "#,
        port = addr.port()
    );
    let config = integration_config::Config::from_toml_str(&text).unwrap();
    let client = Client::from_config(config).unwrap();
    let response = client
        .api("bank")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let error = client
        .api("plain")
        .unwrap()
        .get("/version")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:#}");
}

/// A TLS file that cannot be read fails the build with the field's path and the file's, and a key
/// file's contents never reach the error.
#[test]
fn an_unreadable_tls_file_names_its_field_and_path() {
    let dir = TempDir::new("unreadable");
    let missing = dir.0.path().join("missing-ca.pem").display().to_string();
    let text = format!(
        r#"
        [integrations.bank]
        base_url = "https://bank.example.com/"
        tls = {{ ca_files = ["{missing}"] }}
        "#
    );
    let config = integration_config::Config::from_toml_str(&text).unwrap();
    let error = Client::from_config(config).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    let message = format!("{error:#}");
    assert!(
        message.contains("integrations.bank.tls.ca_files[0]") && message.contains(&missing),
        "{message}"
    );

    let key_file = dir.write(
        "client.key",
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n",
    );
    let cert_file = dir.write("client.pem", "not a certificate");
    let text = format!(
        r#"
        [integrations.bank]
        base_url = "https://bank.example.com/"
        tls = {{ client_cert_file = "{cert_file}", client_key_file = "{key_file}" }}
        "#
    );
    let config = integration_config::Config::from_toml_str(&text).unwrap();
    let error = Client::from_config(config).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    let message = format!("{error:#} {error:?}");
    assert!(message.contains("integrations.bank.tls"), "{message}");
    assert!(!message.contains("c2VjcmV0LWtleQ"), "{message}");
}

/// Certificates rotated in place are taken up when the integration is next rebuilt: the files'
/// contents, not only their paths, decide which transport (and pool) an integration gets.
#[tokio::test]
async fn rotated_tls_files_are_read_again_when_the_integration_is_rebuilt() {
    let server_ca = Ca::new("server CA");
    let addr = serve(server_config(&server_ca, None, true)).await;
    let dir = TempDir::new("rotation");
    let stale = Ca::new("an old CA");
    let ca_file = dir.write("ca.pem", &stale.pem);
    let config = |timeout: &str| {
        let text = format!(
            r#"
            [integrations.bank]
            base_url = "https://127.0.0.1:{port}/"
            timeout = "{timeout}"
            retry = {{ max_attempts = 1 }}
            tls = {{ webpki_roots = false, ca_files = ["{ca_file}"] }}
            "#,
            port = addr.port()
        );
        integration_config::Config::from_toml_str(&text).unwrap()
    };
    let client = Client::from_config(config("30s")).unwrap();
    let call = || async { client.api("bank").unwrap().get("/version").send().await };
    assert_eq!(call().await.unwrap_err().kind(), ErrorKind::Connect);

    // The CA file is replaced in place; the next rebuild (any change of the integration) reads it.
    dir.write("ca.pem", &server_ca.pem);
    client.update(config("31s")).unwrap();
    assert_eq!(call().await.unwrap().status(), 200);
}
