//! The loopback upstream: a minimal hyper 1 server with HTTP/1.1 keep-alive.
//!
//! It answers `GET` [`PATH`] with `200 OK` and the fixed JSON [`BODY`], and anything else with `404`,
//! so a client that sends the wrong request shows up as errors rather than as speed.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tokio::net::TcpListener;

/// The path every scenario calls.
pub const PATH: &str = "/v1/item";

/// The fixed response body: a small JSON document, typical of an API's single-object answer.
pub const BODY: &str =
    r#"{"id":42,"name":"widget","price_cents":1999,"tags":["blue","small"],"in_stock":true}"#;

/// The line the server process prints on stdout once it listens, followed by its address.
pub const READY_PREFIX: &str = "listening ";

/// Accepts connections on `listener` and serves each with HTTP/1.1 keep-alive until the listener
/// fails.
///
/// Every connection gets `TCP_NODELAY`, as the clients do, so that neither side waits on Nagle.
///
/// # Errors
///
/// Returns the error of `accept` when the listener itself fails; errors of single connections
/// (a client that hangs up) end that connection only.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(integration_tests::bench::server::serve(listener));
/// # let _ = addr;
/// # Ok(())
/// # }
/// ```
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A connection error (reset, client gone) concerns that connection alone.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(respond))
                .await;
        });
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = request.method() == http::Method::GET && request.uri().path() == PATH;
    let (status, body) = if found {
        (StatusCode::OK, Bytes::from_static(BODY.as_bytes()))
    } else {
        (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"not found\"}"),
        )
    };
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a fixed status and header are valid");
    Ok(response)
}

/// The server running in a child process, killed when dropped.
///
/// The child is the `bench` binary started with `serve`: it binds `127.0.0.1:0`, prints
/// [`READY_PREFIX`] and its address on stdout, and exits when its stdin closes, so it never
/// outlives the benchmark even if the benchmark is killed.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `exe serve --threads <threads>` and waits until it listens.
    ///
    /// # Errors
    ///
    /// Fails when the process cannot start or exits before printing its address.
    pub fn spawn(exe: &Path, threads: usize) -> io::Result<Self> {
        let mut child = Command::new(exe)
            .args(["serve", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(READY_PREFIX)
            .and_then(|addr| addr.parse().ok());
        match addr {
            Some(addr) => Ok(Self { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other(format!(
                    "the benchmark server did not report its address (got {line:?})"
                )))
            }
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id (for `/proc/<pid>` readings).
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Our own child, by its handle: closing stdin alone would also end it, kill makes it prompt.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
