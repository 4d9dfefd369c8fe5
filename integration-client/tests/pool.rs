//! Issue 19: the transport's own connection pool (it replaced hyper-util's client), against a
//! loopback HTTP/1.1 origin of the test's own that numbers its connections and can close them
//! without warning: calls share a kept connection, a connection whose response body is still being
//! read is not taken, a request a closed keep-alive connection refused is sent again (once) on a
//! new one, idle connections are closed after the idle timeout, no more than
//! `pool_max_idle_per_host` are kept, and dropping the transport closes them. HTTP/2's one shared
//! connection is in `tls.rs` (it needs ALPN).
//!
//! The origin runs on a thread and runtime of its own, so that a test can hold its client's runtime
//! still while the origin acts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use integration_client::transport::{Transport, TransportBuilder};
use integration_core::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// How the origin treats its connections.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Close a connection, without `Connection: close`, this long after its first response.
    close_after_first: Option<Duration>,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections the client closed (the origin read the end of the stream between requests).
    closed_by_client: AtomicUsize,
    /// Every request: the connection it came on, its request line.
    requests: Mutex<Vec<(usize, String)>>,
    /// Every request's `Host` header, in order (empty without one).
    hosts: Mutex<Vec<String>>,
}

/// An HTTP/1.1 origin on 127.0.0.1. Every response's body is the number of the connection it was
/// sent on (0 for the first accepted); `/slow` answers after 300 ms; `/trickle` sends its head and
/// part of its body, and the rest 20 ms later; `/hold` sends its head and part of its body, and the
/// rest once `release` is notified.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    release: Arc<Notify>,
}

impl Origin {
    fn start(behaviour: Behaviour) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let release = Arc::new(Notify::new());
        let (record, held) = (seen.clone(), release.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let id = record.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, id, behaviour, record.clone(), held.clone()));
                }
            });
        });
        Self {
            addr,
            seen,
            release,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn closed_by_client(&self) -> usize {
        self.seen.closed_by_client.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<(usize, String)> {
        self.seen.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    id: usize,
    behaviour: Behaviour,
    seen: Arc<Seen>,
    release: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        // One request: its head, then a body of its Content-Length.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if buf.is_empty() {
                        seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let line = head.lines().next().unwrap_or_default().to_owned();
        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let host = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        });
        seen.hosts.lock().unwrap().push(host.unwrap_or_default());
        seen.requests.lock().unwrap().push((id, line));
        let body = id.to_string();
        let written = match path.as_str() {
            "/trickle" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    body.len() + 2
                );
                let first = stream.write_all(format!("{head}{body}").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                match first {
                    Ok(()) => stream.write_all(b"..").await,
                    Err(e) => Err(e),
                }
            }
            "/hold" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    body.len() + 4
                );
                let first = stream.write_all(format!("{head}{body}..").as_bytes()).await;
                release.notified().await;
                match first {
                    Ok(()) => stream.write_all(b"..").await,
                    Err(e) => Err(e),
                }
            }
            _ => {
                if path == "/slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await
            }
        };
        if written.is_err() {
            return;
        }
        served += 1;
        if let (Some(after), 1) = (behaviour.close_after_first, served) {
            tokio::time::sleep(after).await;
            // Dropped without a word: the client learns of it from the end of the stream.
            return;
        }
    }
}

/// Sends `method` to `url` through `transport` and reads the whole body: the number of the
/// connection that answered.
async fn call(transport: &Transport, method: &str, url: &str) -> usize {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Body::from("payload"))
        .unwrap();
    let response = transport.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    std::str::from_utf8(&body)
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap()
}

fn built(builder: TransportBuilder) -> Transport {
    builder.no_proxy().build().unwrap()
}

/// Waits (bounded) until `done` holds, checking every 10 ms; false if it never did.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn consecutive_calls_share_one_kept_connection() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder());
    for _ in 0..5 {
        assert_eq!(call(&transport, "GET", &origin.url("/x")).await, 0);
    }
    assert_eq!(origin.connections(), 1);
    // Clones share the pool.
    assert_eq!(call(&transport.clone(), "GET", &origin.url("/x")).await, 0);
    // The request went in origin form, as to any origin server.
    assert_eq!(origin.requests()[0].1, "GET /x HTTP/1.1");
}

#[tokio::test]
async fn a_connection_whose_response_body_is_unread_is_not_taken() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder());
    let request = Request::get(origin.url("/hold"))
        .body(Body::empty())
        .unwrap();
    let held = transport.clone().oneshot(request).await.unwrap();
    // The first connection is still sending the held body: a second call needs another one.
    assert_eq!(call(&transport, "GET", &origin.url("/")).await, 1);
    origin.release.notify_one();
    let body = held.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"0....");
    // Both are kept now: no third is made.
    for _ in 0..3 {
        assert!(call(&transport, "GET", &origin.url("/")).await < 2);
    }
    assert_eq!(origin.connections(), 2);
}

/// The server closes a kept connection between two requests, without `Connection: close`: the
/// pool does not take the closed connection, and the next POST goes, once, on a new one.
#[tokio::test]
async fn a_kept_connection_the_server_closed_is_not_taken() {
    let origin = Origin::start(Behaviour {
        close_after_first: Some(Duration::from_millis(20)),
    });
    let transport = built(Transport::builder());
    for expected in 0..4 {
        assert_eq!(
            call(&transport, "POST", &origin.url("/pay")).await,
            expected
        );
        // The server closes it meanwhile; the client's connection task sees the end of the stream.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_one_request_per_connection(&origin, 4);
}

/// The rarer case: the server closes the connection while the client's runtime is held (a busy
/// worker), so the pool takes it as open and hyper writes the request before it reads the close.
/// The request may have reached the server: the call fails (for the retry layer to decide by the
/// method), and the pool does not send it again by itself. The next call gets a new connection.
#[test]
fn a_request_written_on_a_connection_closing_under_it_is_not_sent_again() {
    let origin = Origin::start(Behaviour {
        close_after_first: Some(Duration::from_millis(20)),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = runtime.block_on(async { built(Transport::builder()) });
    runtime.block_on(call(&transport, "POST", &origin.url("/pay")));
    // Nothing of the client runs while the server closes the connection.
    std::thread::sleep(Duration::from_millis(200));
    let request = Request::post(origin.url("/pay"))
        .body(Body::from("payload"))
        .unwrap();
    // When the runtime runs again the call is polled first: the pool takes the connection (its
    // task has not run since the close), and hyper writes the request before its reactor reports
    // the close. A pool that sent it again would answer 200 here, from a new connection.
    let error = runtime
        .block_on(transport.clone().oneshot(request))
        .map(|response| response.status())
        .unwrap_err();
    let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    let hyper = std::iter::from_fn(|| {
        let e = chain?;
        chain = e.source();
        Some(e)
    })
    .find_map(|e| e.downcast_ref::<hyper::Error>());
    assert!(
        hyper.is_some_and(|e| e.is_incomplete_message() || e.is_closed()),
        "{error:?}"
    );
    assert_eq!(origin.connections(), 1);
    assert_eq!(
        runtime.block_on(call(&transport, "POST", &origin.url("/pay"))),
        1
    );
    assert_one_request_per_connection(&origin, 2);
}

/// Every request the origin saw was the POST, and no connection served more than one.
fn assert_one_request_per_connection(origin: &Origin, expected: usize) {
    let requests = origin.requests();
    assert_eq!(requests.len(), expected, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|(_, line)| line == "POST /pay HTTP/1.1")
    );
    let mut per_connection = std::collections::HashMap::new();
    for (id, _) in &requests {
        *per_connection.entry(id).or_insert(0) += 1;
    }
    assert!(per_connection.values().all(|n| *n == 1), "{requests:?}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder().pool_idle_timeout(Duration::from_millis(200)));
    assert_eq!(call(&transport, "GET", &origin.url("/")).await, 0);
    // The sweep closes it without any call: the origin reads the end of its stream.
    assert!(
        eventually(Duration::from_secs(5), || origin.closed_by_client() == 1).await,
        "the idle connection was not closed"
    );
    assert_eq!(call(&transport, "GET", &origin.url("/")).await, 1);

    // Without a timeout it is kept.
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder().pool_idle_timeout(None));
    assert_eq!(call(&transport, "GET", &origin.url("/")).await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&transport, "GET", &origin.url("/")).await, 0);
    assert_eq!(origin.closed_by_client(), 0);
}

#[tokio::test]
async fn at_most_max_idle_per_host_idle_connections_are_kept() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder().pool_max_idle_per_host(1));
    // Three at once need three connections...
    let slow = origin.url("/slow");
    let (a, b, c) = tokio::join!(
        call(&transport, "GET", &slow),
        call(&transport, "GET", &slow),
        call(&transport, "GET", &slow)
    );
    let mut ids = [a, b, c];
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2]);
    // ...and once they are idle, the next calls' hand-backs close those beyond the one kept idle
    // (and the one in use): no new connection is made, at least one is closed.
    for _ in 0..3 {
        assert!(call(&transport, "GET", &origin.url("/")).await < 3);
    }
    assert_eq!(origin.connections(), 3);
    assert!(
        eventually(Duration::from_secs(5), || origin.closed_by_client() >= 1).await,
        "closed by the client: {}",
        origin.closed_by_client()
    );

    // None kept: a connection per call, each closed after its response.
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder().pool_max_idle_per_host(0));
    for expected in 0..3 {
        assert_eq!(call(&transport, "GET", &origin.url("/")).await, expected);
    }
    assert!(eventually(Duration::from_secs(5), || origin.closed_by_client() == 3).await);
}

/// More calls in flight than `pool_max_idle_per_host`, each reading its body for a while: the cap is
/// on idle connections, so the callers keep theirs instead of closing one after each response and
/// connecting again. Regression: the cap counted the connections handed back at their response's
/// head, still reading their body, and closed every one past it (a connection a call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_in_flight_than_the_cap_keep_their_connections() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder().pool_max_idle_per_host(2));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (transport, url) = (transport.clone(), origin.url("/trickle"));
            tokio::spawn(async move {
                for _ in 0..10 {
                    call(&transport, "GET", &url).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(origin.requests().len(), 60);
    // Six callers need six connections, and a few more when one is handed back just after
    // another caller looked; one per call (60) would be the cap closing them.
    let connections = origin.connections();
    assert!(connections <= 12, "{connections} connections for 6 callers");
}

#[tokio::test]
async fn dropping_the_transport_closes_its_kept_connections() {
    let origin = Origin::start(Behaviour::default());
    let transport = built(Transport::builder());
    let clone = transport.clone();
    assert_eq!(call(&clone, "GET", &origin.url("/")).await, 0);
    drop(clone);
    drop(transport);
    assert!(
        eventually(Duration::from_secs(5), || origin.closed_by_client() == 1).await,
        "the kept connection outlived the transport"
    );
}

/// Each authority has its own connections, whatever the case of its name; the `Host` header is
/// the authority as each request wrote it (the pool makes it once per destination, and afresh for
/// a request that writes the authority in another case).
#[tokio::test]
async fn connections_are_kept_per_authority() {
    let first = Origin::start(Behaviour::default());
    let second = Origin::start(Behaviour::default());
    let transport = built(Transport::builder());
    for _ in 0..2 {
        assert_eq!(call(&transport, "GET", &first.url("/")).await, 0);
        assert_eq!(call(&transport, "GET", &second.url("/")).await, 0);
    }
    let port = first.addr.port();
    let (mixed, lower) = (format!("LocalHost:{port}"), format!("localhost:{port}"));
    for _ in 0..2 {
        for authority in [&mixed, &lower] {
            assert_eq!(
                call(&transport, "GET", &format!("http://{authority}/")).await,
                1
            );
        }
    }
    assert_eq!((first.connections(), second.connections()), (2, 1));
    let hosts = first.seen.hosts.lock().unwrap().clone();
    let ip = format!("127.0.0.1:{port}");
    assert_eq!(
        hosts,
        [&ip, &ip, &mixed, &lower, &mixed, &lower].map(String::as_str),
        "the Host header of each request"
    );
}
