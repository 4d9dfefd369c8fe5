//! Protocol probes: prove that a Redis or a PostgreSQL server answers at an address, with nothing
//! but `std::net`.
//!
//! A TCP connect alone would be fooled by any process on the port; each probe speaks the first
//! step of its protocol and checks the answer.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::service_url::ServiceUrl;
use crate::timing::{millis, now};

/// How long a probe waits to connect, and then for each reply.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// PostgreSQL's SSLRequest: length 8, then the request code 80877103 (`1234 << 16 | 5679`).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The longest reply line a probe reads.
const MAX_REPLY: u64 = 1024;

/// Why a probe failed.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// The host name did not resolve to an address.
    Resolve(io::Error),
    /// No TCP connection: refused, unreachable, ...
    Connect(io::Error),
    /// No TCP connection within the timeout.
    ConnectTimeout(Duration),
    /// Connected, but no reply within the timeout.
    ReplyTimeout(Duration),
    /// Connected, but the exchange failed: reset, closed early, ...
    Io(io::Error),
    /// The server answered but refused the credentials, or wants some.
    Auth(String),
    /// Something answered that is not the expected server, or not in a working state.
    Protocol(String),
}

impl ProbeError {
    /// Nothing listens (or nothing could be reached): the case where starting a server may help.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ProbeError::Resolve(_) | ProbeError::Connect(_) | ProbeError::ConnectTimeout(_)
        )
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
            ProbeError::Connect(e) => f.write_str(&describe_io(e)),
            ProbeError::ConnectTimeout(after) => {
                write!(
                    f,
                    "no TCP connection within {}",
                    crate::timing::secs(*after)
                )
            }
            ProbeError::ReplyTimeout(after) => {
                write!(
                    f,
                    "connected, but no reply within {}",
                    crate::timing::secs(*after)
                )
            }
            ProbeError::Io(e) => write!(f, "connected, but {}", describe_io(e)),
            ProbeError::Auth(message) | ProbeError::Protocol(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ProbeError {}

/// `connection refused` rather than `Connection refused (os error 111)`.
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "the connection was reset".to_owned(),
        io::ErrorKind::UnexpectedEof => {
            "the server closed the connection without answering".to_owned()
        }
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => format!("{:?}", e.kind()),
            }
        }
    }
}

/// Connects to the first address of `host` that accepts, with `timeout` for each attempt and for
/// every later read and write.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(ProbeError::Resolve)?
        .collect();
    let mut last = ProbeError::Resolve(io::Error::new(
        io::ErrorKind::NotFound,
        "no address for this host",
    ));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(timeout))
                    .map_err(ProbeError::Io)?;
                stream
                    .set_write_timeout(Some(timeout))
                    .map_err(ProbeError::Io)?;
                // Best effort: the probe writes one small request per round trip.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = ProbeError::ConnectTimeout(timeout);
            }
            Err(e) => last = ProbeError::Connect(e),
        }
    }
    Err(last)
}

/// Maps an error of an established connection, telling a read timeout apart.
fn exchange_error(e: io::Error, timeout: Duration) -> ProbeError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeError::ReplyTimeout(timeout),
        _ => ProbeError::Io(e),
    }
}

/// Probes Redis: `AUTH` when the URL has a password, then `PING`, expecting `+PONG`.
///
/// For `rediss://` only the TCP connection is checked: the server speaks TLS, which this
/// dependency-free probe does not.
///
/// Returns what to print after `up`, such as `PONG in 0.4 ms`.
///
/// # Errors
///
/// [`ProbeError::Auth`] for `-NOAUTH`, `-WRONGPASS` or a refused `AUTH`; [`ProbeError::Protocol`]
/// for any other reply; the connection errors otherwise.
pub(crate) fn redis(url: &ServiceUrl, timeout: Duration) -> Result<String, ProbeError> {
    let start = now();
    let stream = connect(&url.host, url.port, timeout)?;
    if url.tls {
        return Ok(format!(
            "TCP connect in {}; rediss://: TLS and PING not checked",
            millis(start.elapsed())
        ));
    }
    let secret = url.password.as_ref().map(|p| p.expose());
    let mut reader = BufReader::new(&stream);
    let mut round_trip = |args: &[&[u8]]| -> Result<Vec<u8>, ProbeError> {
        (&stream)
            .write_all(&resp_command(args))
            .map_err(|e| exchange_error(e, timeout))?;
        read_line(&mut reader).map_err(|e| exchange_error(e, timeout))
    };

    if let Some(password) = secret {
        let mut args: Vec<&[u8]> = vec![&b"AUTH"[..]];
        if let Some(username) = &url.username {
            args.push(username.as_slice());
        }
        args.push(password);
        let reply = round_trip(&args)?;
        if reply.starts_with(b"-") {
            return Err(ProbeError::Auth(format!(
                "AUTH was refused: {}",
                printable(&reply[1..], secret)
            )));
        }
        if reply != b"+OK" {
            return Err(ProbeError::Protocol(format!(
                "unexpected reply to AUTH: {}; is this a Redis server?",
                printable(&reply, secret)
            )));
        }
    }

    let reply = round_trip(&[&b"PING"[..]])?;
    if reply == b"+PONG" {
        return Ok(format!("PONG in {}", millis(start.elapsed())));
    }
    if reply.starts_with(b"-NOAUTH") || reply.starts_with(b"-WRONGPASS") {
        let hint = if secret.is_some() {
            "check the password in the URL"
        } else {
            "the server wants a password: put it in the URL as redis://:password@host:port"
        };
        return Err(ProbeError::Auth(format!(
            "authentication failed: {}; {hint}",
            printable(&reply[1..], secret)
        )));
    }
    if reply.starts_with(b"-") {
        return Err(ProbeError::Protocol(format!(
            "Redis answered PING with an error: {}",
            printable(&reply[1..], secret)
        )));
    }
    Err(ProbeError::Protocol(format!(
        "expected +PONG, got {}; is this a Redis server?",
        printable(&reply, secret)
    )))
}

/// Probes PostgreSQL: sends an SSLRequest and expects the one-byte answer `S` or `N`, which only a
/// PostgreSQL server gives. No credentials are sent.
///
/// Returns what to print after `up`, such as `SSLRequest answered N in 0.3 ms`.
///
/// # Errors
///
/// [`ProbeError::Protocol`] for any other answer; the connection errors otherwise.
pub(crate) fn postgres(url: &ServiceUrl, timeout: Duration) -> Result<String, ProbeError> {
    let start = now();
    let mut stream = connect(&url.host, url.port, timeout)?;
    stream
        .write_all(&SSL_REQUEST)
        .map_err(|e| exchange_error(e, timeout))?;
    let mut answer = [0u8; 1];
    match stream.read_exact(&mut answer) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ProbeError::Protocol(
                "the server closed the connection without answering the SSLRequest; \
                 is this a PostgreSQL server?"
                    .to_owned(),
            ));
        }
        Err(e) => return Err(exchange_error(e, timeout)),
    }
    match answer[0] {
        byte @ (b'S' | b'N') => Ok(format!(
            "SSLRequest answered {} in {}",
            char::from(byte),
            millis(start.elapsed())
        )),
        byte => Err(ProbeError::Protocol(format!(
            "the SSLRequest got byte 0x{byte:02x} instead of S or N; is this a PostgreSQL server?"
        ))),
    }
}

/// Encodes a command as a RESP array of bulk strings.
fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply line, without its `\r\n`, up to [`MAX_REPLY`] bytes.
fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.take(MAX_REPLY).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(line)
}

/// A server's reply made safe to print: printable ASCII, at most 100 characters, and the password
/// masked in case the server echoes it.
fn printable(reply: &[u8], secret: Option<&[u8]>) -> String {
    let mut masked = reply.to_vec();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        let mut i = 0;
        while i + secret.len() <= masked.len() {
            if masked[i..].starts_with(secret) {
                masked.splice(i..i + secret.len(), b"***".iter().copied());
                i += 3;
            } else {
                i += 1;
            }
        }
    }
    let mut text: String = masked
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if text.len() > 100 {
        text.truncate(100);
        text.push_str("...");
    }
    if text.is_empty() {
        "an empty line".to_owned()
    } else {
        format!("`{text}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_url::{Kind, parse};
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    const SHORT: Duration = Duration::from_millis(300);

    /// A one-connection server on a free loopback port: for each expected request, reads exactly
    /// its bytes, checks them, and writes the scripted answer. Returns the URL's port and the
    /// server thread, which yields what it read.
    fn serve(script: Vec<(&'static [u8], &'static [u8])>) -> (u16, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut seen = Vec::new();
            for (expect, answer) in script {
                let mut buf = vec![0; expect.len()];
                socket.read_exact(&mut buf).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    String::from_utf8_lossy(expect)
                );
                seen.extend_from_slice(&buf);
                socket.write_all(answer).unwrap();
            }
            seen
        });
        (port, handle)
    }

    /// One request the fake server expects, and its scripted answer.
    fn ex(expect: &'static [u8], answer: &'static [u8]) -> (&'static [u8], &'static [u8]) {
        (expect, answer)
    }

    /// A port where nothing listens (bound, then released).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn redis_url(url: String) -> ServiceUrl {
        parse(Kind::Redis, &url).unwrap()
    }

    fn postgres_url(port: u16) -> ServiceUrl {
        parse(
            Kind::Postgres,
            &format!("postgres://postgres@127.0.0.1:{port}/test"),
        )
        .unwrap()
    }

    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

    #[test]
    fn resp_encoding() {
        assert_eq!(resp_command(&[&b"PING"[..]]), PING);
        assert_eq!(
            resp_command(&[&b"AUTH"[..], b"u", b"p w"]),
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n"
        );
    }

    #[test]
    fn redis_pong_is_up() {
        let (port, server) = serve(vec![ex(PING, b"+PONG\r\n")]);
        let detail = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap();
        assert!(detail.starts_with("PONG in "), "{detail}");
        assert!(detail.ends_with(" ms"), "{detail}");
        server.join().unwrap();
    }

    #[test]
    fn redis_sends_auth_first() {
        let (port, server) = serve(vec![
            ex(b"*2\r\n$4\r\nAUTH\r\n$5\r\np@ss!\r\n", b"+OK\r\n"),
            ex(PING, b"+PONG\r\n"),
        ]);
        redis(
            &redis_url(format!("redis://:p%40ss!@127.0.0.1:{port}/0")),
            SHORT,
        )
        .unwrap();
        server.join().unwrap();

        let (port, server) = serve(vec![
            ex(
                b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$2\r\npw\r\n",
                b"+OK\r\n",
            ),
            ex(PING, b"+PONG\r\n"),
        ]);
        redis(
            &redis_url(format!("redis://alice:pw@[127.0.0.1]:{port}")),
            SHORT,
        )
        .unwrap();
        server.join().unwrap();
    }

    #[test]
    fn redis_wrong_password_is_an_auth_failure_that_hides_the_password() {
        // A server that (absurdly) echoes the password must not make us print it.
        let (port, server) = serve(vec![ex(
            b"*2\r\n$4\r\nAUTH\r\n$9\r\ntopsecret\r\n",
            b"-WRONGPASS invalid password topsecret\r\n",
        )]);
        let e = redis(
            &redis_url(format!("redis://:topsecret@127.0.0.1:{port}")),
            SHORT,
        )
        .unwrap_err();
        assert!(matches!(e, ProbeError::Auth(_)), "{e:?}");
        assert!(!e.is_unreachable());
        let message = e.to_string();
        assert!(message.contains("WRONGPASS"), "{message}");
        assert!(!message.contains("topsecret"), "{message}");
        server.join().unwrap();
    }

    #[test]
    fn redis_noauth_is_an_auth_failure() {
        let (port, server) = serve(vec![ex(PING, b"-NOAUTH Authentication required.\r\n")]);
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::Auth(_)), "{e:?}");
        assert!(e.to_string().contains("NOAUTH"), "{e}");
        assert!(e.to_string().contains("redis://:password@"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn something_else_on_the_redis_port_is_a_protocol_error() {
        let (port, server) = serve(vec![ex(PING, b"HTTP/1.1 400 Bad Request\r\n\r\n")]);
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::Protocol(_)), "{e:?}");
        assert!(e.to_string().contains("HTTP/1.1 400"), "{e}");
        server.join().unwrap();

        let (port, server) = serve(vec![ex(PING, b"-LOADING Redis is loading\r\n")]);
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        assert!(e.to_string().contains("LOADING"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn redis_silence_is_a_reply_timeout() {
        // The kernel completes the handshake from the backlog; nobody ever answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::ReplyTimeout(_)), "{e:?}");
        assert!(!e.is_unreachable());
        assert_eq!(e.to_string(), "connected, but no reply within 0.3 s");

        let e = postgres(&postgres_url(port), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::ReplyTimeout(_)), "{e:?}");
    }

    #[test]
    fn redis_hang_up_is_an_io_error() {
        let (port, server) = serve(vec![ex(PING, b"")]);
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        server.join().unwrap();
        assert!(matches!(e, ProbeError::Io(_)), "{e:?}");
        assert!(!e.is_unreachable());
        assert_eq!(
            e.to_string(),
            "connected, but the server closed the connection without answering"
        );
    }

    #[test]
    fn rediss_checks_tcp_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let detail = redis(&redis_url(format!("rediss://:pw@127.0.0.1:{port}")), SHORT).unwrap();
        assert!(detail.contains("TLS and PING not checked"), "{detail}");
    }

    #[test]
    fn closed_ports_are_unreachable() {
        let port = closed_port();
        let e = redis(&redis_url(format!("redis://127.0.0.1:{port}")), SHORT).unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert_eq!(e.to_string(), "connection refused");

        let e = postgres(&postgres_url(closed_port()), SHORT).unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert_eq!(e.to_string(), "connection refused");
    }

    #[test]
    fn postgres_answers_n_or_s() {
        for answer in [&b"N"[..], b"S"] {
            let (port, server) = serve(vec![ex(&SSL_REQUEST[..], answer)]);
            let detail = postgres(&postgres_url(port), SHORT).unwrap();
            let expected = format!("SSLRequest answered {} in ", char::from(answer[0]));
            assert!(detail.starts_with(&expected), "{detail}");
            server.join().unwrap();
        }
    }

    #[test]
    fn postgres_other_answers_are_protocol_errors() {
        let (port, server) = serve(vec![ex(&SSL_REQUEST[..], b"-ERR unknown command\r\n")]);
        let e = postgres(&postgres_url(port), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::Protocol(_)), "{e:?}");
        assert!(e.to_string().contains("0x2d"), "{e}");
        server.join().unwrap();

        // Accepts, reads, closes without a word.
        let (port, server) = serve(vec![ex(&SSL_REQUEST[..], b"")]);
        let e = postgres(&postgres_url(port), SHORT).unwrap_err();
        assert!(matches!(e, ProbeError::Protocol(_)), "{e:?}");
        assert!(e.to_string().contains("without answering"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn printable_masks_and_escapes() {
        assert_eq!(printable(b"OK", None), "`OK`");
        assert_eq!(printable(b"a\x00b", None), "`a\\x00b`");
        assert_eq!(printable(b"bad pw pw!", Some(b"pw")), "`bad *** ***!`");
        assert_eq!(printable(b"", None), "an empty line");
        assert!(printable(&[b'x'; 500], None).len() < 110);
    }
}
