//! Caller authentication: a shared bearer token, compared in constant time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::args::{CallerAuthMode, ServeArgs};
use crate::error::GatewayError;

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token in the request.
    Missing,
    /// A token that is not the gateway's.
    Wrong,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Wrong => "wrong_token",
        }
    }
}

/// The gateway's caller check: off (by explicit choice) or a token read from a file.
pub(crate) struct CallerAuth {
    header: HeaderName,
    token: Option<TokenFile>,
}

struct TokenFile {
    path: PathBuf,
    current: ArcSwap<SecretString>,
}

impl fmt::Debug for CallerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerAuth")
            .field("header", &self.header)
            .field("token_file", &self.token.as_ref().map(|t| &t.path))
            .finish()
    }
}

fn read_token(path: &Path) -> Result<SecretString, String> {
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "the caller token file {} cannot be read: {e}",
            path.display()
        )
    })?;
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(format!("the caller token file {} is empty", path.display()));
    }
    Ok(SecretString::from(text))
}

impl CallerAuth {
    pub(crate) fn from_args(args: &ServeArgs) -> Result<Self, GatewayError> {
        let token = match args.caller_auth {
            CallerAuthMode::None => None,
            CallerAuthMode::Token => {
                let path = args.caller_token_file.clone().ok_or_else(|| {
                    GatewayError::caller_auth(
                        "caller authentication is on (--caller-auth token) but no \
                         --caller-token-file is given; pass one, or --caller-auth none to turn it off",
                    )
                })?;
                let token = read_token(&path).map_err(GatewayError::caller_auth)?;
                Some(TokenFile {
                    path,
                    current: ArcSwap::from_pointee(token),
                })
            }
        };
        Ok(CallerAuth {
            header: args.caller_auth_header.clone(),
            token,
        })
    }

    /// The header that carries the caller's token (removed before the request goes upstream).
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether callers are checked at all.
    pub(crate) fn is_on(&self) -> bool {
        self.token.is_some()
    }

    /// Reads the token file again (a rotated Secret). A file that became unreadable or empty keeps
    /// the token in force, with a warning.
    pub(crate) fn reload(&self) {
        let Some(file) = &self.token else { return };
        match read_token(&file.path) {
            Ok(token) => {
                if token.expose_secret() != file.current.load().expose_secret() {
                    file.current.store(Arc::new(token));
                    tracing::info!(path = %file.path.display(), "caller token reloaded");
                }
            }
            Err(message) => {
                tracing::warn!(%message, "the caller token in force is kept");
            }
        }
    }

    /// Checks a request's headers.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(file) = &self.token else {
            return Ok(());
        };
        let Some(value) = headers.get(&self.header) else {
            return Err(Refusal::Missing);
        };
        let presented = value.as_bytes();
        let presented = if self.header == http::header::AUTHORIZATION {
            match presented.split_at_checked(7) {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token,
                _ => return Err(Refusal::Missing),
            }
        } else {
            presented
        };
        let expected = file.current.load();
        // `ct_eq` on slices of different lengths is false without comparing: the length of the
        // token is not a secret worth hiding, its bytes are.
        if bool::from(presented.ct_eq(expected.expose_secret().as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth_with(token: &str, header: HeaderName) -> (CallerAuth, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{token}\n")).unwrap();
        let args = ServeArgs {
            caller_token_file: Some(file.path().to_path_buf()),
            caller_auth_header: header,
            ..ServeArgs::default()
        };
        (CallerAuth::from_args(&args).unwrap(), file)
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn a_bearer_token_is_checked_without_its_final_newline() {
        let (auth, _file) = auth_with("s3cret-token", http::header::AUTHORIZATION);
        assert_eq!(
            auth.check(&headers("authorization", "Bearer s3cret-token")),
            Ok(())
        );
        assert_eq!(
            auth.check(&headers("authorization", "bearer s3cret-token")),
            Ok(())
        );
        assert_eq!(
            auth.check(&headers("authorization", "Bearer s3cret-tokeN")),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            auth.check(&headers("authorization", "Bearer s3cret")),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            auth.check(&headers("authorization", "Basic czNjcmV0")),
            Err(Refusal::Missing)
        );
        assert_eq!(auth.check(&HeaderMap::new()), Err(Refusal::Missing));
    }

    #[test]
    fn another_header_carries_the_bare_token() {
        let (auth, _file) = auth_with("abc", HeaderName::from_static("x-gateway-token"));
        assert_eq!(auth.check(&headers("x-gateway-token", "abc")), Ok(()));
        assert_eq!(
            auth.check(&headers("authorization", "Bearer abc")),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_and_an_empty_file_keeps_it() {
        let (auth, file) = auth_with("first", http::header::AUTHORIZATION);
        std::fs::write(file.path(), "second").unwrap();
        auth.reload();
        assert_eq!(
            auth.check(&headers("authorization", "Bearer second")),
            Ok(())
        );
        assert_eq!(
            auth.check(&headers("authorization", "Bearer first")),
            Err(Refusal::Wrong)
        );
        std::fs::write(file.path(), "\n").unwrap();
        auth.reload();
        assert_eq!(
            auth.check(&headers("authorization", "Bearer second")),
            Ok(())
        );
    }

    #[test]
    fn token_mode_without_a_file_or_with_an_empty_one_is_refused_at_start() {
        let args = ServeArgs::default();
        assert!(CallerAuth::from_args(&args).unwrap_err().is_caller_auth());
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut args = ServeArgs {
            caller_token_file: Some(file.path().to_path_buf()),
            ..ServeArgs::default()
        };
        assert!(CallerAuth::from_args(&args).unwrap_err().is_caller_auth());
        args.caller_auth = CallerAuthMode::None;
        assert!(!CallerAuth::from_args(&args).unwrap().is_on());
    }
}
