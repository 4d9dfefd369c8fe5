//! File and environment sources: a TOML document, overridden by environment variables, typed and validated.

use std::path::{Path, PathBuf};

use crate::model::{Config, PathError, split_nested_path};
use crate::validate::ValidationErrors;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML (the message carries the line and column); `file` names the file
    /// when it was read by [`Config::from_file`] or [`ConfigDocument::from_file`].
    #[error("invalid TOML{}: {message}", file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default())]
    Syntax {
        /// The file the text was read from; `None` for text given directly.
        file: Option<PathBuf>,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A value has the wrong type, a required field is missing or an unknown field is present; `path` is
    /// the field (`integrations.github.retry.max_attempts`).
    #[error("{}", if path.is_empty() { message.clone() } else { format!("{path}: {message}") })]
    Deserialize {
        /// The dotted path of the field (empty for the root).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is malformed (`name` is the variable).
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The configuration is well-formed but invalid.
    #[error("invalid configuration:\n{0}")]
    Invalid(#[from] ValidationErrors),
}

impl ConfigError {
    pub(crate) fn from_path_error(e: PathError) -> Self {
        // Errors raised inside an integration carry their full path in the message already.
        if e.path.is_empty()
            && let Some((path, message)) = split_nested_path(&e.message)
        {
            return ConfigError::Deserialize {
                path: path.to_owned(),
                message: message.to_owned(),
            };
        }
        ConfigError::Deserialize {
            path: e.path,
            message: e.message,
        }
    }

    /// The file a syntax error is in, when the text was read from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Io { path, .. } => Some(path),
            ConfigError::Syntax { file, .. } => file.as_deref(),
            _ => None,
        }
    }

    /// The validation problems, when this is [`ConfigError::Invalid`].
    pub fn validation_errors(&self) -> Option<&ValidationErrors> {
        match self {
            ConfigError::Invalid(errors) => Some(errors),
            _ => None,
        }
    }
}

/// A configuration error as the layer's one error type, of kind
/// [`Config`](integration_core::ErrorKind::Config), so that `?` works in a function returning
/// [`integration_core::Error`]. The message is the error's `Display` (paths included) through the
/// text rule of the redaction engine; the error itself is the source.
///
/// ```
/// use integration_config::Config;
///
/// fn load(text: &str) -> Result<Config, integration_core::Error> {
///     Ok(Config::from_toml_str(text)?)
/// }
/// let error = load("[integrations.x]\nbase_url = \"ftp://x\"").unwrap_err();
/// assert!(error.is_config());
/// assert!(error.to_string().contains("integrations.x.base_url: must use http or https"));
/// ```
impl From<ConfigError> for integration_core::Error {
    fn from(error: ConfigError) -> Self {
        let message = integration_core::redact::Redactor::new().redact_text(&error.to_string());
        integration_core::Error::new(integration_core::ErrorKind::Config)
            .with_message(message)
            .with_source(error)
    }
}

/// A TOML syntax error's message and where it is, never the text around it: toml's `Display`
/// quotes the whole source line, and the line of `client_secret = "s3cr3t" oops` is the secret.
/// Regression: `invalid TOML: TOML parse error at line 3, column 25 | client_secret = "s3cr3t"
/// oops ...` showed it, in the error and in every log line that printed the error.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let description = error.message().trim();
    let Some(span) = error.span() else {
        return description.to_owned();
    };
    let before = &text.as_bytes()[..span.start.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    format!("{description} at line {line}, column {column}")
}

/// The top-level keys an environment override may start with.
const TOP_LEVEL: [&str; 3] = ["integrations", "defaults", "redis"];

/// A configuration document before typing: a TOML tree that sources write into, then typed and validated
/// in one place by [`ConfigDocument::build`].
///
/// ```
/// use integration_config::ConfigDocument;
///
/// let config = ConfigDocument::from_toml_str(r#"
///     [integrations.stripe]
///     base_url = "https://api.stripe.com"
/// "#)?
/// .apply_env_vars("APP_", [
///     ("APP_INTEGRATIONS__STRIPE__RETRY__MAX_ATTEMPTS", "5"),
///     ("APP_INTEGRATIONS__STRIPE__TIMEOUT", "12s"),
///     ("UNRELATED", "ignored"),
/// ])?
/// .build()?;
/// assert_eq!(config.integrations["stripe"].retry.max_attempts, 5);
/// assert_eq!(config.integrations["stripe"].timeout.as_secs(), 12);
/// # Ok::<(), integration_config::ConfigError>(())
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct ConfigDocument {
    table: toml::Table,
}

impl std::fmt::Debug for ConfigDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The untyped tree may hold plaintext secrets: show its shape only.
        let keys: Vec<&String> = self.table.keys().collect();
        f.debug_struct("ConfigDocument")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl ConfigDocument {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Syntax`] with the line and column.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                file: None,
                message: syntax_message(text, &e),
            })?;
        Ok(ConfigDocument { table })
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`], or [`ConfigError::Syntax`] naming the file:
    ///
    /// ```
    /// use integration_config::ConfigDocument;
    ///
    /// let dir = std::env::temp_dir().join(format!("integration-config-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let file = dir.join("broken.toml");
    /// std::fs::write(&file, "[integrations.x\n")?;
    /// let error = ConfigDocument::from_file(&file).unwrap_err();
    /// assert!(error.to_string().starts_with(&format!("invalid TOML in {}: ", file.display())));
    /// assert!(error.to_string().contains("line 1"));
    /// assert_eq!(error.file(), Some(file.as_path()));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                file: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// The tree as it stands.
    pub fn as_table(&self) -> &toml::Table {
        &self.table
    }

    /// The tree, to edit by hand.
    pub fn table_mut(&mut self) -> &mut toml::Table {
        &mut self.table
    }

    /// Applies the process environment: see [`apply_env_vars`](Self::apply_env_vars).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Env`] for an override that cannot be applied.
    pub fn apply_env(self, prefix: &str) -> Result<Self, ConfigError> {
        self.apply_env_vars(prefix, std::env::vars())
    }

    /// Applies environment overrides from `vars`.
    ///
    /// A variable applies when its name starts with `prefix` and the rest starts with `INTEGRATIONS__`,
    /// `DEFAULTS__` or `REDIS__`. The rest is split on `__` (double underscore) into keys, lowercased:
    /// `APP_INTEGRATIONS__STRIPE__RETRY__MAX_ATTEMPTS=5` sets `integrations.stripe.retry.max_attempts`.
    /// Single underscores stay inside a key. An existing integration is matched ignoring case and
    /// with `_` standing for `-` (a variable name cannot hold `-`): `APP_INTEGRATIONS__MY_API__TIMEOUT`
    /// reaches `[integrations.my-api]`; two integrations that only differ so are an error.
    ///
    /// The value is read as a TOML value when it is one (`5`, `true`, `0.5`, `[{ rate = 10, per = "1s" }]`,
    /// `"quoted text"`), and as a plain string otherwise (`30s`, `https://example.com`,
    /// `${env:TOKEN}`). Quote a string that would read as a number: `"\"1234\""`. Overrides apply in name
    /// order, so a deeper key set after a whole table refines it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Env`] when a key is empty or a key on the way is not a table.
    pub fn apply_env_vars<K, V>(
        mut self,
        prefix: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut overrides: Vec<(String, Vec<String>, String)> = Vec::new();
        for (name, value) in vars {
            let name = name.as_ref();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.len() < 2 || !TOP_LEVEL.contains(&keys[0].as_str()) {
                continue;
            }
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    name: name.to_owned(),
                    message: "empty key between '__'".into(),
                });
            }
            overrides.push((name.to_owned(), keys, value.as_ref().to_owned()));
        }
        overrides.sort();
        for (name, mut keys, value) in overrides {
            if keys[0] == "integrations" {
                keys[1] = self.integration_named_by_env(&name, &keys[1])?;
            }
            let value = parse_env_value(&value);
            let (last, parents) = keys.split_last().expect("at least two keys");
            let mut table = &mut self.table;
            for key in parents {
                let entry = table
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Env {
                            name,
                            message: format!("{key} is not a table, it cannot hold {last}"),
                        });
                    }
                };
            }
            table.insert(last.clone(), value);
        }
        Ok(self)
    }

    /// The integration an environment key names. A variable name holds neither `-` nor lowercase
    /// letters that mean anything, so an existing integration is found ignoring case and taking `_`
    /// for `-`: `APP_INTEGRATIONS__MY_API__TIMEOUT` reaches `[integrations.my-api]` (and
    /// `[integrations.GitHub]` is reached as `GITHUB`). A key that matches none names a new one.
    fn integration_named_by_env(&self, variable: &str, key: &str) -> Result<String, ConfigError> {
        let Some(toml::Value::Table(integrations)) = self.table.get("integrations") else {
            return Ok(key.to_owned());
        };
        if integrations.contains_key(key) {
            return Ok(key.to_owned());
        }
        let normalized = |name: &str| name.to_ascii_lowercase().replace('-', "_");
        let matches: Vec<&String> = integrations
            .keys()
            .filter(|name| normalized(name) == key)
            .collect();
        match matches.as_slice() {
            [] => Ok(key.to_owned()),
            [one] => Ok((*one).clone()),
            several => Err(ConfigError::Env {
                name: variable.to_owned(),
                message: format!(
                    "`{key}` could name any of the integrations {}; rename one so that names \
                     differ by more than case and `-`/`_`",
                    several
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Types the tree (resolving secret references) and validates it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Deserialize`] with the field's path, or [`ConfigError::Invalid`] with every problem.
    pub fn build(self) -> Result<Config, ConfigError> {
        let config = self.build_unvalidated()?;
        config.validate()?;
        Ok(config)
    }

    /// Types the tree without validating it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Deserialize`] with the field's path.
    pub fn build_unvalidated(self) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(self.table))
            .map_err(|e| ConfigError::from_path_error(PathError::from_path_to_error(e)))
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

impl Config {
    /// Parses, types and validates a TOML configuration.
    ///
    /// # Errors
    ///
    /// See [`ConfigError`]: syntax (with line and column), a bad field (with its path), or every
    /// validation problem.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        ConfigDocument::from_toml_str(text)?.build()
    }

    /// Reads, types and validates a TOML file, as written: the environment is not read (use
    /// [`from_file_with_env`](Self::from_file_with_env) for overrides, so that what a file means
    /// never depends on the shell it was loaded from unless asked).
    ///
    /// # Errors
    ///
    /// As [`from_toml_str`](Self::from_toml_str), plus [`ConfigError::Io`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        ConfigDocument::from_file(path)?.build()
    }

    /// Reads a TOML file, applies the environment overrides under `prefix` (see
    /// [`ConfigDocument::apply_env_vars`]; `""` for none), then types and validates the result.
    ///
    /// ```
    /// use integration_config::{Config, ConfigDocument};
    ///
    /// let dir = std::env::temp_dir().join(format!("integration-config-env-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let file = dir.join("integrations.toml");
    /// std::fs::write(&file, "[integrations.github]\nbase_url = \"https://api.github.com\"\n")?;
    ///
    /// // With APP_INTEGRATIONS__GITHUB__RETRY__MAX_ATTEMPTS=5 in the environment:
    /// let config = Config::from_file_with_env(&file, "APP_")?;
    /// # let _ = config;
    /// // ... which is this, with the process environment as the variables:
    /// let config = ConfigDocument::from_file(&file)?
    ///     .apply_env_vars("APP_", [("APP_INTEGRATIONS__GITHUB__RETRY__MAX_ATTEMPTS", "5")])?
    ///     .build()?;
    /// assert_eq!(config.integrations["github"].retry.max_attempts, 5);
    /// // `from_file` reads the file alone.
    /// assert_ne!(Config::from_file(&file)?.integrations["github"].retry.max_attempts, 5);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file), plus [`ConfigError::Env`].
    pub fn from_file_with_env(path: impl AsRef<Path>, prefix: &str) -> Result<Self, ConfigError> {
        ConfigDocument::from_file(path)?.apply_env(prefix)?.build()
    }

    /// Writes the configuration as TOML. Secrets are written as their references; a plaintext secret as
    /// [`REDACTED_MARKER`](crate::REDACTED_MARKER).
    ///
    /// # Errors
    ///
    /// When the TOML writer refuses a value (it does not for this model).
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}
