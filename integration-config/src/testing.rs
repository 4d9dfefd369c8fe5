//! Test support (feature `test-util`): a schema of its own in the shared PostgreSQL for each test,
//! and a TCP proxy that can cut the database off, for the fault tests of this crate and of the
//! facade. Never for production code.
//!
//! Every test isolates itself in a random schema, dropped with everything in it when the guard goes
//! away (after a panic too), so tests share one PostgreSQL without seeing each other; a fault is
//! played on the test's own proxy, never on the shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::PgStore;
use sqlx::{AssertSqlSafe, Connection, Executor};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// `DATABASE_URL`, or the machine's default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A random schema, dropped (with everything in it) when this guard goes away, even after a panic.
#[derive(Debug)]
pub struct TestSchema {
    /// The schema's name (`itest_` and 16 random hex digits).
    pub name: String,
    /// The database URL it lives in.
    pub url: String,
}

impl TestSchema {
    /// A fresh schema, migrated, and a store on it.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached at `DATABASE_URL` (never skips: the message names it).
    pub async fn new() -> (TestSchema, PgStore) {
        let url = database_url();
        let name = format!("itest_{:016x}", fastrand::u64(..));
        let store = PgStore::connect(&url, &name).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at {url} (DATABASE_URL): {e}")
        });
        store.migrate().await.expect("migrations apply");
        (TestSchema { name, url }, store)
    }

    /// A second store on the same schema, reached through `url` (a proxy, for instance).
    ///
    /// # Panics
    ///
    /// When no connection can be made through `url`.
    pub async fn store_at(&self, url: &str) -> PgStore {
        PgStore::connect(url, &self.name)
            .await
            .expect("store through the given URL")
    }

    /// Runs raw SQL on a direct connection with the schema on the search path.
    ///
    /// # Panics
    ///
    /// When the connection or the statement fails (the message names the statement).
    pub async fn execute(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("direct connection");
        conn.execute(AssertSqlSafe(format!(
            "SET search_path TO \"{}\"",
            self.name
        )))
        .await
        .unwrap();
        conn.execute(AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.unwrap();
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the cleanup on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = conn
                        .execute(AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                        )))
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to a target and can drop every connection and refuse new ones.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    paused: tokio::sync::watch::Sender<bool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `target`, accepting on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let (paused, paused_rx) = tokio::sync::watch::channel(false);
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (refusing, connections) = (refusing.clone(), connections.clone());
            async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if refusing.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let paused = paused_rx.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(target).await {
                            let (in_read, in_write) = inbound.into_split();
                            let (out_read, out_write) = outbound.into_split();
                            tokio::join!(
                                pump(in_read, out_write, paused.clone()),
                                pump(out_read, in_write, paused)
                            );
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        FaultProxy {
            addr,
            refusing,
            paused,
            connections,
            accept,
        }
    }

    /// The proxy for the `DATABASE_URL` server.
    pub async fn for_database() -> FaultProxy {
        let url = url::Url::parse(&database_url()).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap();
        FaultProxy::start(target).await
    }

    /// `DATABASE_URL` with the proxy's address.
    pub fn database_url(&self) -> String {
        let mut url = url::Url::parse(&database_url()).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// Where the proxy accepts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Stops delivering bytes in both directions without closing anything, as a network partition does.
    pub fn blackhole(&self) {
        self.paused.send_replace(true);
    }

    /// Delivers bytes again (what was held goes through).
    pub fn heal(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Copies one direction, holding the bytes while the link is black-holed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
