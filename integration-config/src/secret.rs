//! Secrets in configuration: references resolved at load, values that never print.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The marker a plaintext secret serializes to, so that a dump of the configuration never holds a value.
///
/// Loading it back is an error: the value is gone and a reference must be supplied instead.
pub const REDACTED_MARKER: &str = "${redacted}";

/// Where a [`Secret`] comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretSource {
    /// `${env:NAME}`: the environment variable `NAME`, read at load.
    Env(String),
    /// `${file:/path}`: the contents of a file (for example a mounted Kubernetes secret), read at load,
    /// without its final newline.
    File(PathBuf),
    /// A plaintext value written in the configuration itself. Accepted from files and from code, refused
    /// from PostgreSQL.
    Literal,
}

impl SecretSource {
    /// The `${...}` reference this source is written as, or `None` for a plaintext literal.
    pub fn reference(&self) -> Option<String> {
        match self {
            SecretSource::Env(name) => Some(format!("${{env:{name}}}")),
            SecretSource::File(path) => Some(format!("${{file:{}}}", path.display())),
            SecretSource::Literal => None,
        }
    }
}

/// Why a secret reference could not be resolved. The message names the variable or the file, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set (or is not valid Unicode).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("secret file {path} could not be read: {reason}")]
    File {
        /// The file named by the reference.
        path: PathBuf,
        /// The I/O error, as text (it never contains the file's contents).
        reason: String,
    },
    /// `${scheme:...}` with a scheme other than `env` or `file`, or an empty name.
    #[error("invalid secret reference {0:?}: expected ${{env:NAME}} or ${{file:/path}}")]
    InvalidReference(String),
    /// The configuration was serialized with a plaintext secret, which was replaced by [`REDACTED_MARKER`].
    #[error(
        "the secret was redacted when the configuration was serialized; supply a ${{env:..}} or ${{file:..}} reference"
    )]
    Redacted,
}

/// A secret value in the configuration: a token, a password, a private key.
///
/// Written in TOML (or JSON) as a reference that is resolved when the configuration is loaded:
///
/// - `"${env:GITHUB_TOKEN}"`: an environment variable;
/// - `"${file:/run/secrets/github}"`: a file's contents, without the final newline;
/// - any other string is a plaintext literal (allowed from files and code, refused by the PostgreSQL
///   store). A literal that starts with `${` is written with a doubled dollar: `"$${not a reference}"`.
///
/// A reference that cannot be resolved does not fail deserialization on its own: the secret remembers the
/// error and [`Config::validate`](crate::Config::validate) reports it with the field's path, together with
/// every other problem, e.g. `integrations.github.auth.token: environment variable GITHUB_TOKEN is not set`.
///
/// `Debug` shows the reference (`Secret(${env:GITHUB_TOKEN})`) or `Secret([REDACTED])`, never the value.
/// `Serialize` writes the reference; a plaintext literal is written as [`REDACTED_MARKER`].
/// Two secrets are equal when they have the same source and the same resolved value, so a rotated value
/// behind the same reference counts as a change.
///
/// ```
/// use integration_config::Secret;
/// use secrecy::ExposeSecret;
///
/// let token = Secret::new("s3cr3t");
/// assert_eq!(token.expose_secret(), "s3cr3t");
/// assert_eq!(format!("{token:?}"), "Secret([REDACTED])");
///
/// let missing = Secret::from_env("INTEGRATION_CONFIG_DOC_SURELY_UNSET");
/// assert!(missing.error().is_some());
/// assert_eq!(format!("{missing:?}"), "Secret(${env:INTEGRATION_CONFIG_DOC_SURELY_UNSET})");
/// ```
#[derive(Clone)]
pub struct Secret {
    source: SecretSource,
    value: SecretString,
    error: Option<SecretError>,
}

impl Secret {
    /// A plaintext secret given in code.
    pub fn new(value: impl Into<String>) -> Self {
        Secret {
            source: SecretSource::Literal,
            value: SecretString::from(value.into()),
            error: None,
        }
    }

    /// A secret read now from the environment variable `name`.
    ///
    /// When the variable is not set the secret is empty and [`error`](Self::error) says why; validation
    /// reports it.
    pub fn from_env(name: impl Into<String>) -> Self {
        let name = name.into();
        match std::env::var(&name) {
            Ok(value) => Secret {
                source: SecretSource::Env(name),
                value: value.into(),
                error: None,
            },
            Err(_) => Secret {
                error: Some(SecretError::MissingEnv(name.clone())),
                source: SecretSource::Env(name),
                value: SecretString::default(),
            },
        }
    }

    /// A secret read now from a file, without its final newline (`\n` or `\r\n`).
    ///
    /// When the file cannot be read the secret is empty and [`error`](Self::error) says why; validation
    /// reports it.
    pub fn from_file(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(mut contents) => {
                if contents.ends_with('\n') {
                    contents.pop();
                    if contents.ends_with('\r') {
                        contents.pop();
                    }
                }
                Secret {
                    source: SecretSource::File(path),
                    value: contents.into(),
                    error: None,
                }
            }
            Err(e) => Secret {
                error: Some(SecretError::File {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                }),
                source: SecretSource::File(path),
                value: SecretString::default(),
            },
        }
    }

    /// Parses the configuration syntax (`${env:NAME}`, `${file:/path}`, a literal, `$${...}` for a literal
    /// starting with `${`) and resolves a reference now.
    pub fn parse(text: &str) -> Self {
        if let Some(rest) = text.strip_prefix("$${") {
            return Secret::new(format!("${{{rest}"));
        }
        if text == REDACTED_MARKER {
            return Secret {
                source: SecretSource::Literal,
                value: SecretString::default(),
                error: Some(SecretError::Redacted),
            };
        }
        let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
            return Secret::new(text);
        };
        let invalid = || Secret {
            source: SecretSource::Literal,
            value: SecretString::default(),
            error: Some(SecretError::InvalidReference(text.to_owned())),
        };
        match inner.split_once(':') {
            Some(("env", name)) if !name.is_empty() => Secret::from_env(name),
            Some(("file", path)) if !path.is_empty() => Secret::from_file(path),
            _ => invalid(),
        }
    }

    /// Where this secret comes from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// `true` for a plaintext value written in the configuration or given in code.
    pub fn is_literal(&self) -> bool {
        self.source == SecretSource::Literal
            && !matches!(self.error, Some(SecretError::InvalidReference(_)))
    }

    /// Why the reference could not be resolved, if it could not.
    pub fn error(&self) -> Option<&SecretError> {
        self.error.as_ref()
    }

    /// Reads the reference again (a rotated file or variable), keeping the same source.
    ///
    /// A literal is returned unchanged.
    #[must_use]
    pub fn reresolve(&self) -> Self {
        match &self.source {
            SecretSource::Env(name) => Secret::from_env(name.clone()),
            SecretSource::File(path) => Secret::from_file(path),
            SecretSource::Literal => self.clone(),
        }
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }
}

impl From<SecretString> for Secret {
    fn from(value: SecretString) -> Self {
        Secret {
            source: SecretSource::Literal,
            value,
            error: None,
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.error == other.error
            && self.value.expose_secret() == other.value.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source.reference() {
            Some(reference) => write!(f, "Secret({reference})"),
            None => f.write_str("Secret([REDACTED])"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.source.reference(), &self.error) {
            (Some(reference), _) => serializer.serialize_str(reference),
            (None, Some(SecretError::InvalidReference(text))) => serializer.serialize_str(text),
            (None, _) => serializer.serialize_str(REDACTED_MARKER),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret: \"${env:NAME}\", \"${file:/path}\" or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::parse(v))
            }
        }
        deserializer.deserialize_str(SecretVisitor)
    }
}
