//! Exit codes: one per outcome a script needs to tell apart, in the manner of curl and httpie.

use std::fmt;

use integration_config::{ConfigError, StoreError};
use integration_core::{Error, ErrorKind};

/// The documented exit codes (`integration --help` lists them; the README too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: the command did what was asked (for `call`: a 1xx, 2xx or 3xx answer).
    Success = 0,
    /// 1: anything else; for `config diff`, the two sides differ (as `diff` and `kubectl diff`).
    Failure = 1,
    /// 2: the command line is wrong (clap's usage errors).
    Usage = 2,
    /// 3: the configuration is invalid, missing, or names an unknown integration.
    Config = 3,
    /// 4: the upstream answered 4xx.
    Http4xx = 4,
    /// 5: the upstream answered 5xx.
    Http5xx = 5,
    /// 6: no connection, or it broke before an answer.
    Connect = 6,
    /// 7: an attempt timed out or the call's deadline passed.
    Timeout = 7,
    /// 8: the stack refused before sending: rate limited, circuit open, retry budget spent, no
    /// credential.
    Refused = 8,
    /// 9: PostgreSQL or Redis could not be reached.
    Unavailable = 9,
    /// 10: someone changed the stored configuration first (`--expect-version`).
    Conflict = 10,
}

/// The exit-code table, for `--help` and the README.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success (call: a 1xx, 2xx or 3xx answer)
  1  other failure; config diff: the two sides differ
  2  usage error
  3  configuration invalid, missing, or an unknown integration
  4  call: the upstream answered 4xx
  5  call: the upstream answered 5xx
  6  call: connection failed or broke
  7  call: attempt timeout or deadline passed
  8  call: refused by the stack (rate limited, circuit open, retry budget, no credential)
  9  PostgreSQL or Redis unreachable
  10 version conflict: the stored configuration changed first";

impl Exit {
    /// The exit code of an HTTP status.
    pub(crate) fn of_status(status: http::StatusCode) -> Exit {
        if status.is_client_error() {
            Exit::Http4xx
        } else if status.is_server_error() {
            Exit::Http5xx
        } else {
            Exit::Success
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// A command that failed: what to tell the user, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(Exit::Config, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Failure::config(error.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        let exit = if error.is_database() {
            Exit::Unavailable
        } else if error.is_version_conflict() {
            Exit::Conflict
        } else {
            Exit::Config
        };
        Failure::new(exit, error.to_string())
    }
}

impl From<Error> for Failure {
    /// The error's message is already redacted by the stack that made it.
    fn from(error: Error) -> Self {
        let exit = match error.kind() {
            ErrorKind::Status => error.status().map_or(Exit::Failure, Exit::of_status),
            ErrorKind::Connect => Exit::Connect,
            ErrorKind::Timeout | ErrorKind::Deadline => Exit::Timeout,
            ErrorKind::RateLimited
            | ErrorKind::CircuitOpen
            | ErrorKind::BudgetExhausted
            | ErrorKind::Auth => Exit::Refused,
            ErrorKind::Config | ErrorKind::Request => Exit::Config,
            _ => Exit::Failure,
        };
        Failure::new(exit, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_class() {
        assert_eq!(Exit::of_status(http::StatusCode::OK), Exit::Success);
        assert_eq!(Exit::of_status(http::StatusCode::FOUND), Exit::Success);
        assert_eq!(Exit::of_status(http::StatusCode::NOT_FOUND), Exit::Http4xx);
        assert_eq!(
            Exit::of_status(http::StatusCode::BAD_GATEWAY),
            Exit::Http5xx
        );
    }

    #[test]
    fn error_kinds_map_to_documented_codes() {
        let code = |kind| Failure::from(Error::new(kind)).exit as u8;
        assert_eq!(code(ErrorKind::Connect), 6);
        assert_eq!(code(ErrorKind::Timeout), 7);
        assert_eq!(code(ErrorKind::Deadline), 7);
        assert_eq!(code(ErrorKind::RateLimited), 8);
        assert_eq!(code(ErrorKind::CircuitOpen), 8);
        assert_eq!(code(ErrorKind::Config), 3);
        assert_eq!(code(ErrorKind::Other), 1);
        for (line, exit) in EXIT_CODES.lines().skip(1).zip(0u8..) {
            assert!(
                line.trim_start().starts_with(&exit.to_string()),
                "{line} documents code {exit}"
            );
        }
    }
}
