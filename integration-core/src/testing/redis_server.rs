//! A `redis-server` of a test's own, for outage tests that must never stop the machine's shared one.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How often, and how many times, [`RedisServer`] asks a starting server for `PONG`: 20 ms apart,
/// for at least 15 s (a loaded machine can take seconds to start a process).
const POLL: Duration = Duration::from_millis(20);
const POLLS: u32 = 750;

/// How many free ports [`RedisServer::start`] tries when another process takes the port between
/// the moment it was found free and the moment the server binds it.
const PORTS: u32 = 5;

/// A `redis-server` process of a test's own, on a free loopback port, without persistence, in a
/// directory of its own; killed (and its directory removed) on drop.
///
/// Fault tests kill it ([`RedisServer::kill`]) for an outage and start it again on the same port
/// ([`RedisServer::restart`]): it comes back empty. The `redis-server` binary must be on `PATH`.
///
/// Starting and restarting block the calling thread until the server answers `PING` (at most about
/// 15 s): from async code, call them through `tokio::task::spawn_blocking` (or `block_in_place`)
/// where other tasks must keep running meanwhile.
///
/// # Example
///
/// ```no_run
/// use integration_core::testing::RedisServer;
///
/// let mut redis = RedisServer::start().expect("redis-server on PATH");
/// let url = redis.url(); // "redis://127.0.0.1:<port>"
/// redis.kill(); // the outage
/// redis.restart().expect("the same port is free again");
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be run (not on `PATH`), or never answers on any of a few free
    /// ports.
    pub fn start() -> io::Result<Self> {
        let mut last = None;
        for _ in 0..PORTS {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let dir = std::env::temp_dir().join(format!(
                "integration-redis-server-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir)?;
            let mut server = RedisServer {
                port,
                dir,
                child: None,
            };
            match server.restart() {
                Ok(()) => return Ok(server),
                // The process ran and quit (the port was taken meanwhile): another port.
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// The server's URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's loopback port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (started, and neither killed nor exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server (its own child process, by its handle) and reaps it; nothing when it is not
    /// running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers; a running one
    /// is killed first.
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be run, exits at once ([`io::ErrorKind::AddrInUse`]: another
    /// process holds the port), or does not answer `PING` within about 15 s.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("redis-server could not be run (is it on PATH?): {error}"),
                )
            })?;
        let child = self.child.insert(child);
        for _ in 0..POLLS {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "redis-server on port {} exited at once ({status})",
                        self.port
                    ),
                ));
            }
            if answers(self.port) {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        self.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("redis-server on port {} never answered PING", self.port),
        ))
    }
}

/// Whether a server on `port` answers `PING` with `+PONG`.
fn answers(port: u16) -> bool {
    let ping = || -> io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    ping().unwrap_or(false)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_is_false_where_nothing_listens() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!answers(port));
    }

    #[test]
    fn a_server_answers_until_killed_and_again_after_a_restart() {
        let mut redis = RedisServer::start().expect("redis-server on PATH");
        assert!(redis.is_running());
        assert!(answers(redis.port()));
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        redis.kill();
        assert!(!redis.is_running());
        assert!(
            !answers(redis.port()),
            "killed: nothing answers on its port"
        );
        redis.restart().unwrap();
        assert!(answers(redis.port()));
        let (port, dir) = (redis.port(), redis.dir.clone());
        drop(redis);
        assert!(!answers(port), "dropped: killed");
        assert!(!dir.exists(), "dropped: its directory removed");
    }
}
