//! The services check: do the Redis and the PostgreSQL the tests use answer?
//!
//! The addresses come from `REDIS_URL` and `DATABASE_URL` (defaults [`REDIS_DEFAULT`] and
//! [`DATABASE_DEFAULT`]). A service that is down at its default loopback address is started once
//! when its server is installed; anything else fails with a message naming the service, the
//! redacted address and how to start it. Nothing is ever stopped or flushed, and nothing is skipped
//! silently.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use crate::probe::{self, ProbeError};
use crate::service_url::{self, Kind, ServiceUrl};
use crate::timing::{now, secs};

/// `REDIS_URL` when unset: the loopback Redis.
pub(crate) const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";

/// `DATABASE_URL` when unset: the `postgres` user's `test` database on the loopback PostgreSQL.
pub(crate) const DATABASE_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long to wait for a server we started to answer.
const START_WAIT: Duration = Duration::from_secs(10);

/// Where Debian's PostgreSQL keeps one directory per installed major version.
const POSTGRES_ETC: &str = "/etc/postgresql";

/// A service the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Redis, at `REDIS_URL`.
    Redis,
    /// PostgreSQL, at `DATABASE_URL`.
    Postgres,
}

/// Every service, in the order they are checked and printed.
pub(crate) const ALL: [Service; 2] = [Service::Redis, Service::Postgres];

impl Service {
    /// Short lower-case name, the first column of the status table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::Postgres => "postgres",
        }
    }

    /// The product's name, for sentences.
    fn title(self) -> &'static str {
        match self {
            Service::Redis => "Redis",
            Service::Postgres => "PostgreSQL",
        }
    }

    /// The variable that holds its URL.
    pub(crate) fn env_var(self) -> &'static str {
        match self {
            Service::Redis => "REDIS_URL",
            Service::Postgres => "DATABASE_URL",
        }
    }

    /// The URL used when the variable is unset.
    pub(crate) fn default_url(self) -> &'static str {
        match self {
            Service::Redis => REDIS_DEFAULT,
            Service::Postgres => DATABASE_DEFAULT,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Service::Redis => Kind::Redis,
            Service::Postgres => Kind::Postgres,
        }
    }

    fn probe(self, url: &ServiceUrl, timeout: Duration) -> Result<String, ProbeError> {
        match self {
            Service::Redis => probe::redis(url, timeout),
            Service::Postgres => probe::postgres(url, timeout),
        }
    }

    /// The program that starts the local server.
    fn starter(self) -> &'static str {
        match self {
            Service::Redis => "redis-server",
            Service::Postgres => "pg_ctlcluster",
        }
    }
}

/// The URL of `service` for the tests: its variable, or the default when unset or empty.
///
/// # Errors
///
/// When the variable is set but not valid Unicode.
pub(crate) fn configured_url(service: Service) -> Result<String, String> {
    match env::var(service.env_var()) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        Ok(_) | Err(env::VarError::NotPresent) => Ok(service.default_url().to_owned()),
        Err(env::VarError::NotUnicode(_)) => {
            Err(format!("{} is not valid Unicode", service.env_var()))
        }
    }
}

/// The outcome of checking one service.
#[derive(Debug)]
pub(crate) struct Status {
    /// Which service.
    pub(crate) service: Service,
    /// Its URL with the password hidden.
    pub(crate) shown_url: String,
    /// `Ok(detail)` when up (`PONG in 0.4 ms`), else why not and what to do.
    pub(crate) outcome: Result<String, Down>,
}

/// A service that is not usable.
#[derive(Debug)]
pub(crate) struct Down {
    /// A few words for the status table: `connection refused`.
    pub(crate) reason: String,
    /// One or two sentences naming the service, the redacted address and how to fix it.
    pub(crate) advice: String,
}

/// What [`check`] does when a service is down at its default address.
type Starter<'a> = &'a mut dyn FnMut(Service) -> Result<String, String>;

/// Checks every service, starting a local server where the rules allow it (see the module docs).
/// Progress about starting servers is printed as it happens.
pub(crate) fn check_all() -> Vec<Status> {
    ALL.into_iter()
        .map(|service| {
            let raw = configured_url(service);
            check(service, raw, &mut start_local)
        })
        .collect()
}

/// Checks one service at `raw` (the configured URL, or why there is none).
fn check(service: Service, raw: Result<String, String>, start: Starter<'_>) -> Status {
    let title = service.title();
    let var = service.env_var();
    let raw = match raw {
        Ok(raw) => raw,
        Err(why) => {
            return Status {
                service,
                shown_url: format!("${var}"),
                outcome: Err(Down {
                    advice: format!("{title} cannot be checked: {why}."),
                    reason: why,
                }),
            };
        }
    };
    let shown_url = service_url::redact(&raw);
    let outcome = match service_url::parse(service.kind(), &raw) {
        Ok(url) => {
            // The rule: start a server only for the default loopback address.
            let start = is_default_address(service, &url).then_some(start);
            probe_or_start(service, &url, &shown_url, start, START_WAIT)
        }
        Err(e) => Err(Down {
            reason: format!("invalid {var}: {e}"),
            advice: format!(
                "{title} cannot be checked: {var}={shown_url} is not a usable URL ({e}). \
                 Expected a URL like {}.",
                service.default_url()
            ),
        }),
    };
    Status {
        service,
        shown_url,
        outcome,
    }
}

/// Probes `url`; when nothing answers and a `start` is given, starts the server with it once and
/// waits up to `wait` for it.
fn probe_or_start(
    service: Service,
    url: &ServiceUrl,
    shown_url: &str,
    start: Option<Starter<'_>>,
    wait: Duration,
) -> Result<String, Down> {
    let (title, var) = (service.title(), service.env_var());
    let error = match service.probe(url, probe::TIMEOUT) {
        Ok(detail) => return Ok(detail),
        Err(error) => error,
    };
    if !error.is_unreachable() {
        let advice = match &error {
            ProbeError::Auth(_) => format!(
                "{title} at {shown_url} is reachable but authentication failed: {error}. \
                 Fix the credentials in {var}."
            ),
            ProbeError::Protocol(_) => format!(
                "Something answers at {shown_url}, but not a working {title}: {error}. \
                 Point {var} at a running {title}."
            ),
            _ => format!(
                "{title} at {shown_url} accepted the TCP connection, but the check failed: \
                 {error}. Point {var} at a running {title}."
            ),
        };
        return Err(Down {
            reason: error.to_string(),
            advice,
        });
    }

    let how_to_start = how_to_start(service, url);
    let Some(start) = start else {
        return Err(Down {
            advice: format!("{title} is not reachable at {shown_url} ({error}). {how_to_start}"),
            reason: error.to_string(),
        });
    };

    println!(
        "services: {} is down at {shown_url} ({error}); trying to start it",
        service.name()
    );
    let command = match start(service) {
        Ok(command) => command,
        Err(why) => {
            return Err(Down {
                advice: format!(
                    "{title} is not reachable at {shown_url} ({error}), and it could not be \
                     started here: {why}. {how_to_start}"
                ),
                reason: error.to_string(),
            });
        }
    };
    println!(
        "services: ran `{command}`; waiting up to {} for {}",
        secs(wait),
        service.name()
    );
    let waited = now();
    let last = loop {
        match service.probe(url, probe::TIMEOUT) {
            Ok(detail) => {
                println!(
                    "services: {} is up after {}",
                    service.name(),
                    secs(waited.elapsed())
                );
                return Ok(format!("{detail}; started by xtask"));
            }
            Err(e) if e.is_unreachable() && waited.elapsed() < wait => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => break e,
        }
    };
    Err(Down {
        advice: format!(
            "{title} is not reachable at {shown_url} ({last}), even after `{command}` and {} \
             of waiting. {how_to_start}",
            secs(waited.elapsed())
        ),
        reason: last.to_string(),
    })
}

/// Loopback host names and addresses.
fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// The URL points at the default loopback address of the service: the only case where the check
/// may start a server.
fn is_default_address(service: Service, url: &ServiceUrl) -> bool {
    let host_served = match service {
        // The Redis we start binds 127.0.0.1 only (`localhost` reaches it too).
        Service::Redis => matches!(url.host.as_str(), "127.0.0.1" | "localhost"),
        // The cluster's own `listen_addresses` decides; Debian's default covers both families.
        Service::Postgres => is_loopback(&url.host),
    };
    host_served && url.port == service.kind().default_port()
}

/// A sentence saying how to make the service answer at `url`.
fn how_to_start(service: Service, url: &ServiceUrl) -> String {
    let (title, var) = (service.title(), service.env_var());
    if !is_loopback(&url.host) {
        return format!(
            "Start {title} on {}, or point {var} at a running {title}.",
            url.host
        );
    }
    let command = match service {
        Service::Redis => {
            let bind = if url.host == "::1" {
                "::1"
            } else {
                "127.0.0.1"
            };
            show_command("redis-server", &redis_start_args(bind, url.port))
        }
        Service::Postgres => {
            let version = postgres_version(Path::new(POSTGRES_ETC))
                .unwrap_or_else(|_| "<version>".to_owned());
            let mut command = show_command("pg_ctlcluster", &postgres_start_args(&version));
            if url.port != service.kind().default_port() {
                let _ = write!(command, " (with its `port` set to {})", url.port);
            }
            command
        }
    };
    format!("Start it with: {command}, or point {var} at a running {title}.")
}

/// `redis-server` arguments for a throwaway local server: no persistence, loopback only.
fn redis_start_args(bind: &str, port: u16) -> Vec<String> {
    [
        "--daemonize",
        "yes",
        "--bind",
        bind,
        "--port",
        &port.to_string(),
    ]
    .into_iter()
    .chain(["--save", "", "--appendonly", "no"])
    .map(str::to_owned)
    .collect()
}

/// `pg_ctlcluster` arguments to start the `main` cluster of a version.
fn postgres_start_args(version: &str) -> Vec<String> {
    ["--skip-systemctl-redirect", version, "main", "start"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// A command as a shell would take it (empty arguments quoted).
fn show_command(program: &str, args: &[String]) -> String {
    let mut shown = program.to_owned();
    for arg in args {
        shown.push(' ');
        if arg.is_empty() {
            shown.push_str("\"\"");
        } else {
            shown.push_str(arg);
        }
    }
    shown
}

/// The single PostgreSQL version directory under `etc` (`/etc/postgresql`).
///
/// # Errors
///
/// When there is none, several, or the directory cannot be read.
fn postgres_version(etc: &Path) -> Result<String, String> {
    let entries = fs::read_dir(etc).map_err(|e| format!("cannot read {} ({e})", etc.display()))?;
    let mut versions: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [version] => Ok(version.clone()),
        [] => Err(format!("no PostgreSQL version under {}", etc.display())),
        several => Err(format!(
            "several PostgreSQL versions under {} ({}), so which to start is unclear",
            etc.display(),
            several.join(", ")
        )),
    }
}

/// The first executable file named `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Starts the local server of `service` once. Returns the command that ran successfully, or why
/// none could run or it failed.
fn start_local(service: Service) -> Result<String, String> {
    let program = service.starter();
    let Some(path) = find_in_path(program) else {
        return Err(format!("{program} is not installed (not on PATH)"));
    };
    let args = match service {
        Service::Redis => redis_start_args("127.0.0.1", service.kind().default_port()),
        Service::Postgres => postgres_start_args(&postgres_version(Path::new(POSTGRES_ETC))?),
    };
    let shown = show_command(program, &args);
    println!("services: running {shown}");
    let output = Command::new(path)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{shown}` could not run ({e})"))?;
    if output.status.success() {
        return Ok(shown);
    }
    let said = one_line(&output.stderr).or_else(|| one_line(&output.stdout));
    Err(format!(
        "`{shown}` failed ({}): {}",
        output.status,
        said.as_deref().unwrap_or("it printed nothing")
    ))
}

/// A program's output as one line for a sentence: lines joined by `; `, no final period.
fn one_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let joined = joined.trim_end_matches('.');
    (!joined.is_empty()).then(|| joined.to_owned())
}

/// Prints one aligned status line per service.
pub(crate) fn print_table(statuses: &[Status]) {
    let width = statuses
        .iter()
        .map(|s| s.shown_url.len())
        .max()
        .unwrap_or(0);
    for status in statuses {
        let state = match &status.outcome {
            Ok(detail) => format!("up ({detail})"),
            Err(down) => format!("down: {}", down.reason),
        };
        println!(
            "{:<8}  {:<width$}  {state}",
            status.service.name(),
            status.shown_url
        );
    }
}

/// The advice for every service that is down, one per line; `None` when all are up.
pub(crate) fn failures(statuses: &[Status]) -> Option<String> {
    let advice: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .map(|down| down.advice.as_str())
        .collect();
    (!advice.is_empty()).then(|| advice.join("\n"))
}

/// `cargo xtask services`: prints each service's status; success when all are up.
pub(crate) fn run() -> ExitCode {
    let statuses = check_all();
    print_table(&statuses);
    match failures(&statuses) {
        Some(advice) => {
            for line in advice.lines() {
                eprintln!("services: {line}");
            }
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn never_start(service: Service) -> Result<String, String> {
        panic!("must not try to start {service:?}")
    }

    fn url(service: Service, raw: &str) -> ServiceUrl {
        service_url::parse(service.kind(), raw).unwrap()
    }

    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn only_the_default_loopback_address_may_be_started() {
        use Service::{Postgres, Redis};
        for (service, raw, expected) in [
            (Redis, REDIS_DEFAULT, true),
            (Redis, "redis://localhost", true),
            (Redis, "redis://:pw@[::1]:6379/3", false),
            (Redis, "redis://127.0.0.1:6390", false),
            (Redis, "redis://10.0.0.5:6379", false),
            (Redis, "redis://cache.internal", false),
            (Postgres, DATABASE_DEFAULT, true),
            (Postgres, "postgresql://u:p@localhost/other", true),
            (Postgres, "postgres://u@127.0.0.1:5433/test", false),
            (Postgres, "postgres://u@db.internal:5432/test", false),
        ] {
            assert_eq!(
                is_default_address(service, &url(service, raw)),
                expected,
                "{raw}"
            );
        }
    }

    #[test]
    fn start_commands() {
        assert_eq!(
            show_command("redis-server", &redis_start_args("127.0.0.1", 6379)),
            r#"redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no"#
        );
        assert_eq!(
            show_command("pg_ctlcluster", &postgres_start_args("15")),
            "pg_ctlcluster --skip-systemctl-redirect 15 main start"
        );
    }

    #[test]
    fn how_to_start_names_the_port_and_the_variable() {
        let advice = how_to_start(
            Service::Redis,
            &url(Service::Redis, "redis://127.0.0.1:6390"),
        );
        assert!(
            advice.contains("redis-server --daemonize yes --bind 127.0.0.1 --port 6390"),
            "{advice}"
        );
        assert!(
            advice.contains("point REDIS_URL at a running Redis"),
            "{advice}"
        );

        let advice = how_to_start(
            Service::Redis,
            &url(Service::Redis, "redis://cache.internal"),
        );
        assert_eq!(
            advice,
            "Start Redis on cache.internal, or point REDIS_URL at a running Redis."
        );

        let advice = how_to_start(Service::Postgres, &url(Service::Postgres, DATABASE_DEFAULT));
        assert!(
            advice.contains("pg_ctlcluster --skip-systemctl-redirect "),
            "{advice}"
        );
        assert!(
            advice.contains("point DATABASE_URL at a running PostgreSQL"),
            "{advice}"
        );
    }

    #[test]
    fn a_closed_port_that_is_not_the_default_fails_naming_the_service_without_starting() {
        let port = closed_port();
        let status = check(
            Service::Redis,
            Ok(format!("redis://:topsecret@127.0.0.1:{port}/0")),
            &mut never_start,
        );
        assert_eq!(status.shown_url, format!("redis://:***@127.0.0.1:{port}/0"));
        let down = status.outcome.unwrap_err();
        assert_eq!(down.reason, "connection refused");
        assert!(
            down.advice.starts_with(&format!(
                "Redis is not reachable at redis://:***@127.0.0.1:{port}/0 (connection refused). \
                 Start it with: redis-server --daemonize yes"
            )),
            "{}",
            down.advice
        );
        assert!(!down.advice.contains("topsecret"), "{}", down.advice);

        let status = check(
            Service::Postgres,
            Ok(format!("postgres://u:topsecret@127.0.0.1:{port}/test")),
            &mut never_start,
        );
        let down = status.outcome.unwrap_err();
        assert!(
            down.advice
                .starts_with("PostgreSQL is not reachable at postgres://u:***@"),
            "{}",
            down.advice
        );
        assert!(down.advice.contains("pg_ctlcluster"), "{}", down.advice);
        assert!(!down.advice.contains("topsecret"), "{}", down.advice);
    }

    #[test]
    fn an_invalid_url_fails_without_starting() {
        let status = check(
            Service::Redis,
            Ok("redis://:top/secret@127.0.0.1:6379".to_owned()),
            &mut never_start,
        );
        let down = status.outcome.unwrap_err();
        assert!(
            down.reason.starts_with("invalid REDIS_URL"),
            "{}",
            down.reason
        );
        assert!(!down.advice.contains("secret"), "{}", down.advice);
        assert!(failures(&[status_of(down)]).is_some());
    }

    fn status_of(down: Down) -> Status {
        Status {
            service: Service::Redis,
            shown_url: String::new(),
            outcome: Err(down),
        }
    }

    // The start branch is reached only at the default address, which this machine's own Redis
    // may hold; `probe_or_start` is driven directly with a closed port and a fake starter instead.

    #[test]
    fn a_server_that_cannot_be_started_says_why() {
        let url = url(
            Service::Redis,
            &format!("redis://127.0.0.1:{}", closed_port()),
        );
        let mut refuse = |_| Err("redis-server is not installed (not on PATH)".to_owned());
        let down = probe_or_start(
            Service::Redis,
            &url,
            "shown",
            Some(&mut refuse),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(down.reason, "connection refused");
        assert!(
            down.advice.starts_with(
                "Redis is not reachable at shown (connection refused), and it could not be \
                 started here: redis-server is not installed (not on PATH). Start it with: "
            ),
            "{}",
            down.advice
        );
    }

    #[test]
    fn a_started_server_that_stays_down_fails_after_the_wait() {
        let url = url(
            Service::Postgres,
            &format!("postgres://u@127.0.0.1:{}/t", closed_port()),
        );
        let mut pretend =
            |_| Ok("pg_ctlcluster --skip-systemctl-redirect 15 main start".to_owned());
        let wait = Duration::from_millis(300);
        let down =
            probe_or_start(Service::Postgres, &url, "shown", Some(&mut pretend), wait).unwrap_err();
        assert!(
            down.advice.starts_with(
                "PostgreSQL is not reachable at shown (connection refused), even after \
                 `pg_ctlcluster --skip-systemctl-redirect 15 main start` and 0."
            ),
            "{}",
            down.advice
        );
    }

    #[test]
    fn a_started_server_is_waited_for() {
        use std::io::{Read, Write};
        let port = closed_port();
        let url = url(Service::Redis, &format!("redis://127.0.0.1:{port}"));
        let mut server = None;
        let mut start_fake = |_| {
            // Comes up a little later, as a daemon does.
            server = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
                let (mut socket, _) = listener.accept().unwrap();
                let mut ping = [0; 14];
                socket.read_exact(&mut ping).unwrap();
                socket.write_all(b"+PONG\r\n").unwrap();
            }));
            Ok("redis-server ...".to_owned())
        };
        let detail = probe_or_start(
            Service::Redis,
            &url,
            "shown",
            Some(&mut start_fake),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            detail.starts_with("PONG in ") && detail.ends_with("; started by xtask"),
            "{detail}"
        );
        server.unwrap().join().unwrap();
    }

    #[test]
    fn postgres_version_needs_exactly_one_directory() {
        let dir = env::temp_dir().join(format!("xtask-pg-etc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(
            postgres_version(&dir)
                .unwrap_err()
                .contains("no PostgreSQL version")
        );
        fs::create_dir(dir.join("15")).unwrap();
        fs::write(dir.join("README"), "not a version").unwrap();
        assert_eq!(postgres_version(&dir).unwrap(), "15");
        fs::create_dir(dir.join("16")).unwrap();
        let e = postgres_version(&dir).unwrap_err();
        assert!(
            e.contains("several PostgreSQL versions") && e.contains("15, 16"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
        assert!(postgres_version(&dir).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn program_output_becomes_one_line() {
        assert_eq!(
            one_line(b"Cluster is already running.\n").as_deref(),
            Some("Cluster is already running")
        );
        assert_eq!(one_line(b" a\n\n b.\n").as_deref(), Some("a; b"));
        assert_eq!(one_line(b"\n  \n"), None);
    }

    #[test]
    fn failures_lists_every_down_service() {
        let statuses = [
            Status {
                service: Service::Redis,
                shown_url: REDIS_DEFAULT.to_owned(),
                outcome: Ok("PONG in 0.1 ms".to_owned()),
            },
            status_of(Down {
                reason: "connection refused".to_owned(),
                advice: "PostgreSQL is not reachable".to_owned(),
            }),
        ];
        assert_eq!(
            failures(&statuses).as_deref(),
            Some("PostgreSQL is not reachable")
        );
        assert_eq!(failures(&statuses[..1]), None);
    }
}
