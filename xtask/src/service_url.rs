//! Service URLs: the host and port out of `REDIS_URL` and `DATABASE_URL`, and their redaction for
//! printing.
//!
//! The parser is deliberately small (no `url` dependency, so xtask builds in seconds): it understands
//! `scheme://[user[:password]@]host[:port][/path][?query]` with bracketed IPv6 hosts, which is every
//! form the Redis and PostgreSQL clients of this workspace accept over TCP.

use std::fmt;

/// Which service a URL names: decides the accepted schemes and the default port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `redis://` or `rediss://` (TLS).
    Redis,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

impl Kind {
    /// The port a URL without one means.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Kind::Redis => 6379,
            Kind::Postgres => 5432,
        }
    }

    /// The schemes a URL of this kind may use, lower case.
    fn schemes(self) -> &'static [&'static str] {
        match self {
            Kind::Redis => &["redis", "rediss"],
            Kind::Postgres => &["postgres", "postgresql"],
        }
    }
}

/// A secret read from a URL. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, to send on the wire (never to print).
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the services check needs out of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceUrl {
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub(crate) host: String,
    /// The URL's port, or the kind's default port.
    pub(crate) port: u16,
    /// `rediss://`: the server speaks TLS on this port.
    pub(crate) tls: bool,
    /// Percent-decoded user name, when the URL has a non-empty one.
    pub(crate) username: Option<Vec<u8>>,
    /// Percent-decoded password, when the URL has a non-empty one.
    pub(crate) password: Option<Secret>,
}

/// Why a URL could not be parsed. The message never quotes the userinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

fn err(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

/// Parses a service URL of the given kind.
///
/// # Errors
///
/// When the URL has no `scheme://`, a scheme of another kind, no host, an unbracketed IPv6 host,
/// a port that is not a number in `1..=65535`, or bad percent-encoding in its userinfo.
pub(crate) fn parse(kind: Kind, url: &str) -> Result<ServiceUrl, UrlError> {
    let expected = kind
        .schemes()
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(err(format!("not a URL: expected {expected}")));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !kind.schemes().contains(&scheme.as_str()) {
        // Quote the scheme only when it looks like one, so a mangled URL cannot leak a secret here.
        let looks_like_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        return Err(err(if looks_like_scheme {
            format!("unsupported scheme `{scheme}://`: expected {expected}")
        } else {
            format!("unsupported scheme: expected {expected}")
        }));
    }

    let authority = &rest[..authority_end(rest)];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (user, Some(pass)),
            None => (info, None),
        },
        None => ("", None),
    };
    let username = Some(percent_decode(username)?).filter(|u| !u.is_empty());
    let password = match password {
        Some(pass) => Some(percent_decode(pass)?).filter(|p| !p.is_empty()),
        None => None,
    };

    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((host, tail)) = bracketed.split_once(']') else {
            return Err(err("unclosed `[` in the host"));
        };
        if tail.is_empty() {
            (host, None)
        } else {
            match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(err("unexpected text after the bracketed host")),
            }
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(err("an IPv6 host must be in brackets, as in [::1]:6379"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(err(
            "the URL has no host (Unix socket URLs are not checked): expected scheme://host:port",
        ));
    }
    let port = match port {
        None | Some("") => kind.default_port(),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            // Not quoted: in a mangled URL this text may be part of a password.
            _ => return Err(err("the port is not a number between 1 and 65535")),
        },
    };
    Ok(ServiceUrl {
        host: host.to_owned(),
        port,
        tls: scheme == "rediss",
        username,
        password: password.map(Secret),
    })
}

/// Where the authority (`userinfo@host:port`) of the text after `scheme://` ends.
fn authority_end(rest: &str) -> usize {
    rest.find(['/', '?', '#']).unwrap_or(rest.len())
}

/// Decodes `%XX` escapes.
fn percent_decode(text: &str) -> Result<Vec<u8>, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => out.push(byte),
                // Not quoted: this is userinfo.
                None => return Err(err("bad percent-encoding in the user name or password")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Returns the URL with its password (in the userinfo or in a `...password=` query parameter)
/// replaced by `***`, for printing.
///
/// Works on any text, including URLs [`parse`] rejects, and errs on the side of hiding too much:
/// when the authority holds no `@` but a later part does (a password with an unescaped `/`), the
/// text up to the last `@` is treated as userinfo.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // Not a URL at all: anything before an `@` may be a secret.
        return match url.rfind('@') {
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_owned(),
        };
    };
    let rest = &url[scheme_end..];
    let at = rest[..authority_end(rest)]
        .rfind('@')
        .or_else(|| rest.rfind('@'));
    let mut out = url[..scheme_end].to_owned();
    let tail = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    out.push_str(tail);
    // On the whole text: in the fallback above, a query may sit inside what was taken as userinfo.
    redact_query(&out)
}

/// Replaces the value of every query parameter whose name ends in `password` (libpq's `password`
/// and `sslpassword`) by `***`.
fn redact_query(text: &str) -> String {
    let Some(question) = text.find('?') else {
        return text.to_owned();
    };
    let (before, query) = text.split_at(question + 1);
    let (query, fragment) = match query.find('#') {
        Some(hash) => query.split_at(hash),
        None => (query, ""),
    };
    let params = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                format!("{name}=***")
            }
            _ => param.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{before}{params}{fragment}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(url: &str) -> ServiceUrl {
        parse(Kind::Redis, url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn postgres(url: &str) -> ServiceUrl {
        parse(Kind::Postgres, url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_the_defaults() {
        let url = redis("redis://127.0.0.1:6379");
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("127.0.0.1", 6379, false)
        );
        assert_eq!((url.username, url.password), (None, None));

        let url = postgres("postgres://postgres@127.0.0.1:5432/test");
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 5432));
        assert_eq!(url.username.as_deref(), Some(&b"postgres"[..]));
        assert_eq!(url.password, None);
    }

    #[test]
    fn missing_port_means_the_default_port() {
        assert_eq!(redis("redis://localhost").port, 6379);
        assert_eq!(redis("redis://localhost:/2").port, 6379);
        assert_eq!(redis("redis://cache.internal/0").port, 6379);
        assert_eq!(postgres("postgresql://db.internal/app").port, 5432);
        assert_eq!(postgres("postgres://u@db?sslmode=disable").port, 5432);
    }

    #[test]
    fn redis_password_forms() {
        let url = redis("redis://:s3cret@cache:6380/2");
        assert_eq!((url.host.as_str(), url.port), ("cache", 6380));
        assert_eq!(url.username, None);
        assert_eq!(
            url.password.as_ref().map(Secret::expose),
            Some(&b"s3cret"[..])
        );

        let url = redis("redis://alice:p%40ss%3Aword@cache");
        assert_eq!(url.username.as_deref(), Some(&b"alice"[..]));
        assert_eq!(
            url.password.as_ref().map(Secret::expose),
            Some(&b"p@ss:word"[..])
        );

        // A user without a password sends no AUTH, as the redis crate does.
        let url = redis("redis://alice@cache");
        assert_eq!(url.password, None);
    }

    #[test]
    fn rediss_is_tls() {
        let url = redis("rediss://:pw@cache.example.com:6380");
        assert!(url.tls);
        assert_eq!(url.port, 6380);
    }

    #[test]
    fn postgres_forms() {
        let url = postgres("postgres://app:hunter2@db.internal:6543/app?sslmode=require");
        assert_eq!((url.host.as_str(), url.port), ("db.internal", 6543));
        assert_eq!(url.username.as_deref(), Some(&b"app"[..]));
        assert_eq!(
            url.password.as_ref().map(Secret::expose),
            Some(&b"hunter2"[..])
        );
        assert!(!url.tls);

        let url = postgres("POSTGRESQL://db:5433");
        assert_eq!((url.host.as_str(), url.port), ("db", 5433));
    }

    #[test]
    fn ipv6_hosts() {
        let url = redis("redis://[::1]:6390");
        assert_eq!((url.host.as_str(), url.port), ("::1", 6390));
        let url = postgres("postgres://u:p@[fe80::1]/db");
        assert_eq!((url.host.as_str(), url.port), ("fe80::1", 5432));

        let e = parse(Kind::Redis, "redis://::1:6379").unwrap_err();
        assert!(e.to_string().contains("brackets"), "{e}");
        let e = parse(Kind::Redis, "redis://[::1:6379").unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
        let e = parse(Kind::Redis, "redis://[::1]6379").unwrap_err();
        assert!(e.to_string().contains("after the bracketed host"), "{e}");
    }

    #[test]
    fn rejects_what_it_cannot_check() {
        for (kind, url, needle) in [
            (Kind::Redis, "127.0.0.1:6379", "not a URL"),
            (
                Kind::Redis,
                "postgres://h",
                "unsupported scheme `postgres://`",
            ),
            (
                Kind::Postgres,
                "redis://h",
                "expected postgres:// or postgresql://",
            ),
            (Kind::Redis, "redis://", "no host"),
            (Kind::Redis, "redis://:pw@/0", "no host"),
            (
                Kind::Postgres,
                "postgres:///db?host=/run/postgresql",
                "no host",
            ),
            (Kind::Redis, "redis://h:0", "port"),
            (Kind::Redis, "redis://h:70000", "port"),
            (Kind::Redis, "redis://h:http", "port"),
            (Kind::Redis, "redis://:bad%zz@h", "percent-encoding"),
            (Kind::Redis, "redis://:bad%4@h", "percent-encoding"),
        ] {
            let e = parse(kind, url).expect_err(url);
            assert!(e.to_string().contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn errors_never_quote_secrets() {
        for url in [
            "redis://:topsecret/x@h", // unescaped slash: "port" is part of the password
            "redis://:to:psecret@h:xx", // bad port
            "redis://:top%secret@h",  // bad escape
            "to:psecret://h",         // garbage scheme
            "redis://u:topsecret@h:99999",
        ] {
            if let Err(e) = parse(Kind::Redis, url) {
                let e = e.to_string();
                assert!(!e.contains("secret"), "{url}: {e}");
            }
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let url = redis("redis://:topsecret@h");
        let debug = format!("{url:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn redacts_userinfo_passwords() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@cache:6380/2", "redis://:***@cache:6380/2"),
            ("redis://alice:s3cret@cache", "redis://alice:***@cache"),
            ("redis://alice@cache", "redis://alice@cache"),
            ("rediss://:pw@[::1]:6380", "rediss://:***@[::1]:6380"),
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            (
                "postgresql://app:hunter2@db:5432/app?sslmode=require",
                "postgresql://app:***@db:5432/app?sslmode=require",
            ),
            // An `@` in the query is not userinfo.
            (
                "postgres://app:hunter2@db/app?application_name=a@b",
                "postgres://app:***@db/app?application_name=a@b",
            ),
            ("postgres://db/app?user=a@b", "postgres://db/app?user=a@b"),
            // Empty password.
            ("redis://:@h", "redis://:***@h"),
            // A password with `:` and `@` in it, unescaped.
            ("redis://u:a:b@c@h:1", "redis://u:***@h:1"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn redacts_query_passwords() {
        assert_eq!(
            redact("postgres://db/app?user=u&password=hunter2&sslmode=require"),
            "postgres://db/app?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/app?sslpassword=x&PASSWORD=y#frag"),
            "postgres://db/app?sslpassword=***&PASSWORD=***#frag"
        );
    }

    #[test]
    fn redaction_hides_too_much_rather_than_too_little() {
        // Invalid URLs: passwords with unescaped `/`, `?` or `#`, or no scheme at all.
        for url in [
            "redis://:top/secret@h:6379",
            "redis://u:top?secret@h",
            "redis://u:top#secret@h",
            "redis:topsecret@h",
            "topsecret@h",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("secret"), "{url} -> {shown}");
        }
        assert_eq!(redact("redis://:top/secret@h:6379"), "redis://:***@h:6379");
        let shown = redact("postgres://db/app?password=secret&user=a@b");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn redacted_urls_still_parse_to_the_same_address() {
        for url in [
            "redis://:s3cret@cache:6380/2",
            "postgres://app:hunter2@[::1]:5433/app?password=x",
        ] {
            let kind = if url.starts_with("redis") {
                Kind::Redis
            } else {
                Kind::Postgres
            };
            let (a, b) = (
                parse(kind, url).unwrap(),
                parse(kind, &redact(url)).unwrap(),
            );
            assert_eq!((a.host, a.port), (b.host, b.port));
        }
    }
}
