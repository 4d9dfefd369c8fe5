//! The configuration model: one [`Config`] of named [`IntegrationConfig`]s, each with a section per layer.
//!
//! Every type here is plain data: `Clone`, `PartialEq` (the facade rebuilds only the integrations whose
//! configuration changed), `Serialize` and `Deserialize` with unknown fields refused, so a typo is an error
//! rather than a silently ignored setting. Durations are written the humantime way (`"100ms"`, `"30s"`,
//! `"1h"`). Every field has a default matching the design, except an integration's `base_url`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use integration_core::redact::serde_message_without_values;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::secret::Secret;
use crate::validate::ValidationErrors;

/// Default total deadline of one call: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default connect timeout: 5 s, for integrations from configuration and for the facade's transport
/// alike. Long enough for a TCP handshake across continents several times over; short enough that a
/// dead address costs a small share of the default 30 s deadline and leaves time to retry (a failed
/// connect is retryable for every method, since nothing was sent).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a response body read by `json()`/`text()`/`bytes()`: 10 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

/// The bounds [`Config::validate`] enforces on durations, counts and rates.
///
/// Each is documented beside its field too. A value outside its bound is refused with its path:
/// `integrations.pay.retry.max_attempts: must be at most 20`. They keep a typo (`1000000000h`,
/// `max_attempts = 1000000`, a quota of `4294967295` per `1ns`) from becoming a setting that overflows a
/// clock, hammers an upstream or waits for ever.
pub mod limits {
    use std::time::Duration;

    /// Least total deadline, attempt timeout and connect timeout: 1 ms.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
    /// Greatest total deadline of a call (`timeout`), and greatest `rate_limit.max_wait` and
    /// `retry.max_retry_after`: 1 hour.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Greatest `connect_timeout`: 5 minutes.
    pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
    /// Greatest `max_response_bytes`: 1 GiB (a body read whole is held in memory).
    pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024 * 1024;
    /// Greatest token refresh `skew`: 1 hour.
    pub const MAX_SKEW: Duration = Duration::from_secs(3600);
    /// Greatest lifetime (`ttl`) of a self-signed JWT: 24 hours.
    pub const MAX_JWT_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Greatest `rate` and `burst` of one quota: 1 000 000 per period.
    pub const MAX_QUOTA_RATE: u64 = 1_000_000;
    /// Greatest pace of one quota, `rate / per`: 100 000 requests a second.
    pub const MAX_QUOTA_PER_SECOND: u64 = 100_000;
    /// Least `per` of a quota: 1 ms.
    pub const MIN_QUOTA_PERIOD: Duration = Duration::from_millis(1);
    /// Greatest `per` of a quota: 31 days (a monthly quota).
    pub const MAX_QUOTA_PERIOD: Duration = Duration::from_secs(31 * 24 * 3600);
    /// Greatest `rate_limit.max_concurrency`: 100 000.
    pub const MAX_CONCURRENCY: u64 = 100_000;
    /// Greatest `rate_limit.expected_replicas`: 10 000.
    pub const MAX_REPLICAS: u64 = 10_000;
    /// Greatest `rate_limit.max_server_pause`: 24 hours.
    pub const MAX_SERVER_PAUSE: Duration = Duration::from_secs(24 * 3600);
    /// Greatest `retry.max_attempts`: 20.
    pub const MAX_ATTEMPTS: u64 = 20;
    /// Greatest `retry.base` and `retry.throttle_base`: 1 minute.
    pub const MAX_BACKOFF_BASE: Duration = Duration::from_secs(60);
    /// Greatest `retry.cap`: 10 minutes.
    pub const MAX_BACKOFF_CAP: Duration = Duration::from_secs(600);
    /// Least `retry.budget.window` and `circuit_breaker.window`: 100 ms.
    pub const MIN_WINDOW: Duration = Duration::from_millis(100);
    /// Greatest `retry.budget.window` and `circuit_breaker.window`: 1 hour.
    pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
    /// Greatest `retry.budget.min_per_second`: 10 000.
    pub const MAX_BUDGET_MIN_PER_SECOND: u64 = 10_000;
    /// Greatest `circuit_breaker.min_requests` and `circuit_breaker.consecutive_failures`: 100 000.
    pub const MAX_BREAKER_COUNT: u64 = 100_000;
    /// Greatest `circuit_breaker.open_for` and `circuit_breaker.max_open_for`: 1 hour.
    pub const MAX_OPEN_FOR: Duration = Duration::from_secs(3600);
    /// Greatest `cache.max_bytes` of a memory cache: 16 GiB.
    pub const MAX_CACHE_BYTES: u64 = 16 * 1024 * 1024 * 1024;
    /// Greatest `cache.max_entries`: 10 000 000.
    pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;
    /// Greatest `cache.max_body_bytes`: 64 MiB (a stored body is held whole).
    pub const MAX_CACHE_BODY_BYTES: u64 = 64 * 1024 * 1024;
    /// Greatest `cache.max_ttl`, stale windows and override TTLs: 30 days.
    pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Greatest `circuit_breaker.half_open_probes`: 1 000.
    pub const MAX_HALF_OPEN_PROBES: u64 = 1_000;
    /// Greatest `log.max_body_bytes`: 1 MiB.
    pub const MAX_LOG_BODY_BYTES: u64 = 1024 * 1024;
}

/// The whole configuration: defaults, the named integrations and the optional shared Redis.
///
/// `defaults` is a partial integration table (any integration field, sections included) that every
/// integration inherits when it is loaded: tables merge key by key, the integration's own value wins, and
/// `auth` is taken whole. The integrations in [`Config::integrations`] already carry the inherited values;
/// `defaults` is kept so that a configuration serializes back as it was written and so that other sources
/// (the PostgreSQL store) can apply the same defaults to their rows.
///
/// ```
/// use integration_config::Config;
/// use std::time::Duration;
///
/// let config = Config::from_toml_str(r#"
///     [defaults]
///     timeout = "10s"
///
///     [integrations.github]
///     base_url = "https://api.github.com"
///     auth = { type = "bearer", token = "plain-for-the-example" }
///
///     [integrations.stripe]
///     base_url = "https://api.stripe.com/v1/"
///     timeout = "20s"
///     retry = { max_attempts = 5 }
/// "#)?;
///
/// assert_eq!(config.integrations["github"].timeout, Duration::from_secs(10));
/// assert_eq!(config.integrations["stripe"].timeout, Duration::from_secs(20));
/// assert_eq!(config.integrations["stripe"].retry.max_attempts, 5);
/// # Ok::<(), integration_config::ConfigError>(())
/// ```
#[derive(Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Config {
    /// Values every integration inherits unless it sets its own (see the type's docs). Plaintext secrets
    /// in its `auth` table are redacted in `Debug` and when serialized, like every [`Secret`].
    #[serde(
        skip_serializing_if = "toml::Table::is_empty",
        serialize_with = "serialize_defaults"
    )]
    pub defaults: toml::Table,
    /// The integrations by name (the name used by `client.api("github")`).
    pub integrations: BTreeMap<String, IntegrationConfig>,
    /// Shared state for rate limits and tokens across replicas; required by any `store = "redis"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an integration.
    #[must_use]
    pub fn with_integration(
        mut self,
        name: impl Into<String>,
        integration: IntegrationConfig,
    ) -> Self {
        self.integrations.insert(name.into(), integration);
        self
    }

    /// Sets the shared Redis.
    #[must_use]
    pub fn with_redis(mut self, redis: RedisConfig) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Sets the defaults table (already-typed integrations are not changed; defaults apply at load).
    #[must_use]
    pub fn with_defaults(mut self, defaults: toml::Table) -> Self {
        self.defaults = defaults;
        self
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("defaults", &redact_table(&self.defaults))
            .field("integrations", &self.integrations)
            .field("redis", &self.redis)
            .finish()
    }
}

/// The fields of an `auth` table that hold secrets.
pub(crate) const AUTH_SECRET_FIELDS: [&str; 6] = [
    "key",
    "password",
    "token",
    "client_secret",
    "refresh_token",
    "private_key",
];

/// `true` for a `${env:..}` or `${file:..}` reference (as opposed to a plaintext value).
pub(crate) fn is_reference(text: &str) -> bool {
    (text.starts_with("${env:") || text.starts_with("${file:")) && text.ends_with('}')
}

/// The fields of a `proxy` table that hold secrets.
pub(crate) const PROXY_SECRET_FIELDS: [&str; 1] = ["password"];

/// A copy of an untyped integration table whose plaintext `auth` and `proxy` secrets are replaced by
/// the redaction marker.
pub(crate) fn redact_table(table: &toml::Table) -> toml::Table {
    let mut table = table.clone();
    let sections: [(&str, &[&str]); 2] = [
        ("auth", &AUTH_SECRET_FIELDS),
        ("proxy", &PROXY_SECRET_FIELDS),
    ];
    for (section, fields) in sections {
        if let Some(toml::Value::Table(section)) = table.get_mut(section) {
            for field in fields {
                if let Some(toml::Value::String(value)) = section.get_mut(*field)
                    && !is_reference(value)
                {
                    *value = crate::secret::REDACTED_MARKER.to_owned();
                }
            }
        }
    }
    table
}

fn serialize_defaults<S: Serializer>(defaults: &toml::Table, s: S) -> Result<S::Ok, S::Error> {
    redact_table(defaults).serialize(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    integrations: BTreeMap<String, toml::Table>,
    #[serde(default)]
    redis: Option<RedisConfig>,
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawConfig::deserialize(deserializer)?;
        // The defaults are checked on their own, so a typo there is caught even with no integration.
        let mut probe = toml::Table::new();
        probe.insert(
            "base_url".into(),
            toml::Value::String("http://defaults.invalid/".into()),
        );
        let probe = merge_defaults(&raw.defaults, probe);
        if let Err(e) = IntegrationConfig::from_table(probe) {
            return Err(de::Error::custom(e.with_prefix("defaults")));
        }
        let mut integrations = BTreeMap::new();
        for (name, table) in raw.integrations {
            let merged = merge_defaults(&raw.defaults, table);
            match IntegrationConfig::from_table(merged) {
                Ok(integration) => {
                    integrations.insert(name, integration);
                }
                Err(e) => {
                    return Err(de::Error::custom(
                        e.with_prefix(&format!("integrations.{name}")),
                    ));
                }
            }
        }
        Ok(Config {
            defaults: raw.defaults,
            integrations,
            redis: raw.redis,
        })
    }
}

/// A deserialization error with the path of the offending field.
#[derive(Debug)]
pub(crate) struct PathError {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl PathError {
    /// The path, and serde's message without the value it may quote (`api_key = 123` said
    /// ``invalid type: integer `123`, expected a string``): what was wrong, never the value.
    pub(crate) fn from_path_to_error<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> Self {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let message = message.trim();
        // An integration's error comes through `Config`'s own `Deserialize` as a custom message
        // that starts with its full path, its message cleaned already.
        let message = match split_nested_path(message) {
            Some((nested, rest)) => format!("{nested}: {}", serde_message_without_values(rest)),
            None => serde_message_without_values(message),
        };
        PathError { path, message }
    }

    pub(crate) fn with_prefix(self, prefix: &str) -> String {
        if self.path.is_empty() {
            format!("{prefix}: {}", self.message)
        } else if self.message.starts_with(&self.path) {
            format!("{prefix}.{}", self.message)
        } else {
            format!("{prefix}.{}: {}", self.path, self.message)
        }
    }
}

/// `integrations.x.retry.base: <message>` or `defaults: <message>`, as `Config`'s `Deserialize`
/// words the error of one integration (or of the defaults): the path and the message.
pub(crate) fn split_nested_path(message: &str) -> Option<(&str, &str)> {
    let (path, rest) = message.split_once(": ")?;
    ((path.starts_with("integrations.") || path.starts_with("defaults")) && !path.contains(' '))
        .then_some((path, rest))
}

/// Merges `defaults` under `table`: the table's values win, nested tables merge, `auth` is taken whole.
pub(crate) fn merge_defaults(defaults: &toml::Table, mut table: toml::Table) -> toml::Table {
    for (key, default) in defaults {
        match (table.get_mut(key), default) {
            (None, _) => {
                table.insert(key.clone(), default.clone());
            }
            (Some(toml::Value::Table(own)), toml::Value::Table(default)) if key != "auth" => {
                let own_taken = std::mem::take(own);
                *own = merge_defaults(default, own_taken);
            }
            (Some(_), _) => {}
        }
    }
    table
}

/// One third-party API: where it is, how long a call may take, and the settings of each layer.
///
/// Built by deserialization (`[integrations.NAME]` in TOML, a JSON row in PostgreSQL) or in code with
/// [`IntegrationConfig::builder`]:
///
/// ```
/// use integration_config::{IntegrationConfig, QuotaConfig, Secret};
/// use std::time::Duration;
///
/// let github = IntegrationConfig::builder("https://api.github.com")
///     .user_agent("acme-backend/1.0")
///     .header("accept", "application/vnd.github+json")
///     .bearer(Secret::from_env("PATH")) // any variable that is set, for the example
///     .quota(QuotaConfig::new(5000, Duration::from_secs(3600)))
///     .max_attempts(4)
///     .timeout(Duration::from_secs(20))
///     .build()?;
/// assert_eq!(github.retry.max_attempts, 4);
/// assert_eq!(github.base_url.as_str(), "https://api.github.com/");
///
/// // Invalid settings are reported together, each with its path.
/// let err = IntegrationConfig::builder("ftp://example.com?x=1")
///     .max_attempts(0)
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("base_url: must use http or https"));
/// assert!(err.to_string().contains("retry.max_attempts: must be at least 1"));
/// # Ok::<(), integration_config::ValidationErrors>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IntegrationConfig {
    /// Absolute `http` or `https` URL; a path prefix is allowed (`https://x/v1/`), a query is not. Request
    /// paths are joined under it.
    pub base_url: Url,
    /// The `User-Agent` sent with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Headers sent with every request (a request's own header wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Total deadline of one call: every attempt, every wait and the reading of the response body.
    /// Default 30 s; from 1 ms to 1 h.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Deadline of one attempt; at least 1 ms, at most `timeout`. `None`: only the total deadline
    /// applies.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_timeout: Option<Duration>,
    /// Deadline for establishing a connection (TCP and TLS). Default 5 s; from 1 ms to 5 minutes.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Cap on a response body read whole. Default 10 MiB; from 1 byte to 1 GiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// How requests are authenticated. Default: none.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Client quotas and server-signal adaptation.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Retries, backoff and the retry budget.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// The HTTP cache (RFC 9111). Default: off.
    #[serde(default, skip_serializing_if = "CacheConfig::is_default")]
    pub cache: CacheConfig,
    /// Logging, redaction and trace propagation.
    #[serde(default)]
    pub log: LogConfig,
    /// Which roots to trust and the client certificate to present. Default: the webpki roots, no
    /// client certificate.
    #[serde(default, skip_serializing_if = "TlsConfig::is_default")]
    pub tls: TlsConfig,
    /// The HTTP proxy its calls go through. Default: the environment's (`HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, lowercase too); `"none"` ignores the environment;
    /// a table names a proxy of its own (see [`ProxyConfig`]).
    #[serde(default, skip_serializing_if = "ProxyConfig::is_environment")]
    pub proxy: ProxyConfig,
}

/// TLS of one integration: the roots it trusts and the client certificate it presents (mutual
/// TLS). Certificate checks are always on; there is no setting to turn them off.
///
/// Files are read each time the integration is built: at start, and on a reload that changes its
/// configuration (certificates rotated in place are taken up then, or at a restart). A file that
/// cannot be read or parsed fails that build with its path, and a running integration keeps its
/// previous transport. Integrations with the same TLS settings and files share one connection pool.
///
/// ```toml
/// [integrations.bank.tls]
/// ca_files = ["/etc/bank/ca.pem"]        # a private CA, trusted beside the webpki roots
/// client_cert_file = "/etc/bank/client.pem"
/// client_key_file = "/etc/bank/client.key"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Trust the Mozilla roots built into the client (webpki-roots). Default true.
    pub webpki_roots: bool,
    /// Trust the platform's roots as well. Default false.
    pub native_roots: bool,
    /// PEM files of more CA certificates to trust (a private CA).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<PathBuf>,
    /// PEM file of the client certificate chain presented for mutual TLS; needs `client_key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs `client_cert_file`. The key is read
    /// from the file, never written into the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            webpki_roots: true,
            native_roots: false,
            ca_files: Vec::new(),
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl TlsConfig {
    /// True for the defaults (the webpki roots, nothing else).
    pub fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }
}

/// The proxy of one integration's calls, as reqwest and curl use them: an `https` target is reached
/// through a `CONNECT` tunnel (the proxy sees only the host and port, TLS runs end to end), an
/// `http` target by sending the request to the proxy in absolute form.
///
/// ```toml
/// [integrations.github]
/// base_url = "https://api.github.com"
/// # No `proxy` key: the environment's (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, lowercase too).
///
/// [integrations.internal]
/// base_url = "http://billing.internal"
/// proxy = "none"                       # direct, whatever the environment says ("off" too)
///
/// [integrations.stripe]
/// base_url = "https://api.stripe.com"
/// proxy = { url = "http://proxy.corp:3128", username = "svc-payments", password = "${env:PROXY_PASSWORD}", no_proxy = [".corp", "10.0.0.0/8"] }
/// ```
///
/// `proxy = "http://proxy.corp:3128"` is short for `proxy = { url = "http://proxy.corp:3128" }`.
/// Credentials go in `username` and `password` (a secret reference), never in the URL; they are
/// sent to the proxy only (`Proxy-Authorization`), never to the upstream, and never logged.
// Unboxed: one per integration, built at load, and matched on by users; its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum ProxyConfig {
    /// The proxies of the environment, read when the integration's transport is built. The
    /// default (no `proxy` key).
    #[default]
    Environment,
    /// No proxy, whatever the environment says (`proxy = "none"` or `"off"`).
    Off,
    /// This proxy for `http` and `https` targets (a `proxy` table, or a URL string).
    Server(ProxyServer),
}

impl ProxyConfig {
    /// True for the default: the environment's proxies.
    pub fn is_environment(&self) -> bool {
        matches!(self, ProxyConfig::Environment)
    }

    /// The password of a [`ProxyServer`], with its path (`proxy.password`).
    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        match self {
            ProxyConfig::Server(ProxyServer {
                password: Some(password),
                ..
            }) => vec![("proxy.password", password)],
            _ => vec![],
        }
    }
}

/// A proxy of an integration's own: `proxy = { url = .., username = .., password = .., no_proxy = [..] }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyServer {
    /// `http://` (or `https://`, TLS to the proxy itself) URL of the proxy, host and port, without
    /// credentials.
    pub url: Url,
    /// The user name sent to the proxy (HTTP Basic, in `Proxy-Authorization`); needs `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password sent to the proxy: a secret, usually a reference (`"${env:PROXY_PASSWORD}"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Hosts reached directly, as `NO_PROXY` lists them: a domain matches itself and its subdomains
    /// (`example.com`, `.example.com`), an IP address or CIDR block matches those addresses, `*`
    /// matches everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_proxy: Vec<String>,
}

impl ProxyServer {
    /// The proxy at `url`, without credentials or exceptions.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            username: None,
            password: None,
            no_proxy: Vec::new(),
        }
    }

    /// With credentials for the proxy.
    #[must_use]
    pub fn with_credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }

    /// With hosts reached directly (the `NO_PROXY` rules).
    #[must_use]
    pub fn with_no_proxy(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.no_proxy = hosts.into_iter().map(Into::into).collect();
        self
    }
}

impl Serialize for ProxyConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProxyConfig::Environment => s.serialize_str("environment"),
            ProxyConfig::Off => s.serialize_str("none"),
            ProxyConfig::Server(server) => server.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ProxyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProxyVisitor;
        impl<'de> Visitor<'de> for ProxyVisitor {
            type Value = ProxyConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"none\", \"off\", \"environment\", a proxy URL, or a table with url, \
                     username, password and no_proxy",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProxyConfig, E> {
                match v {
                    "none" | "off" => Ok(ProxyConfig::Off),
                    "environment" => Ok(ProxyConfig::Environment),
                    url => Url::parse(url)
                        .map(|url| ProxyConfig::Server(ProxyServer::new(url)))
                        // serde's own shape (`invalid value: string "..", expected ..`), whose
                        // value the configuration's errors drop (it may hold credentials) and
                        // whose expectation they keep.
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(url), &self)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProxyConfig, A::Error> {
                ProxyServer::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ProxyConfig::Server)
            }
        }
        d.deserialize_any(ProxyVisitor)
    }
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

impl IntegrationConfig {
    /// An integration at `base_url` with every other setting at its default.
    pub fn new(base_url: Url) -> Self {
        IntegrationConfig {
            base_url,
            user_agent: None,
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            attempt_timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            auth: AuthConfig::None,
            rate_limit: RateLimitConfig::default(),
            retry: RetryConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            proxy: ProxyConfig::Environment,
        }
    }

    /// Starts a builder for an integration at `base_url` (parsed and checked by
    /// [`build`](IntegrationConfigBuilder::build)).
    pub fn builder(base_url: impl Into<String>) -> IntegrationConfigBuilder {
        IntegrationConfigBuilder {
            base_url: base_url.into(),
            name: None,
            config: None,
            auth: AuthConfig::None,
            ops: Vec::new(),
        }
    }

    /// The attempt deadline in force: `attempt_timeout`, or `timeout` when unset.
    pub fn effective_attempt_timeout(&self) -> Duration {
        self.attempt_timeout.unwrap_or(self.timeout)
    }

    /// Checks this integration alone (a `store = "redis"` is not checked against a `[redis]` section; use
    /// [`Config::validate`] for that). Paths are relative to the integration (`retry.max_attempts`).
    ///
    /// # Errors
    ///
    /// Every problem found, each with its path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        crate::validate::integration(self, "", None, &mut errors);
        errors.into_result()
    }

    /// Every secret of this integration with its path relative to the integration (`auth.token`).
    pub fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut secrets = self.auth.secrets();
        secrets.extend(self.proxy.secrets());
        secrets
    }

    pub(crate) fn from_table(table: toml::Table) -> Result<Self, PathError> {
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(PathError::from_path_to_error)
    }

    /// Deserializes one integration from JSON (a PostgreSQL row), reporting the path of a bad field.
    #[cfg(feature = "postgres")]
    pub(crate) fn from_json(value: serde_json::Value) -> Result<Self, PathError> {
        serde_path_to_error::deserialize(value).map_err(PathError::from_path_to_error)
    }
}

type BuilderOp = Box<dyn FnOnce(&mut IntegrationConfig) + Send>;

/// Builds an [`IntegrationConfig`] in code; see [`IntegrationConfig::builder`].
#[must_use]
pub struct IntegrationConfigBuilder {
    base_url: String,
    name: Option<String>,
    config: Option<IntegrationConfig>,
    auth: AuthConfig,
    ops: Vec<BuilderOp>,
}

impl fmt::Debug for IntegrationConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationConfigBuilder")
            .field("base_url", &self.base_url)
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("pending_settings", &self.ops.len())
            .finish()
    }
}

impl IntegrationConfigBuilder {
    fn op(mut self, f: impl FnOnce(&mut IntegrationConfig) + Send + 'static) -> Self {
        self.ops.push(Box::new(f));
        self
    }

    /// Names the integration being built: the errors of [`build`](Self::build) then carry it in
    /// their paths (`integrations.pay.retry.max_attempts: must be at least 1` rather than
    /// `retry.max_attempts: ...`), and the name itself is checked. The name is not part of the
    /// built [`IntegrationConfig`]: give it again to `Config::with_integration` or the client.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts from an existing configuration (its `base_url` is replaced by the builder's).
    pub fn from_config(mut self, config: IntegrationConfig) -> Self {
        self.auth = config.auth.clone();
        self.config = Some(config);
        self
    }

    /// Sets the `User-Agent`.
    pub fn user_agent(self, user_agent: impl Into<String>) -> Self {
        let user_agent = user_agent.into();
        self.op(move |c| c.user_agent = Some(user_agent))
    }

    /// Adds a default header.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        self.op(move |c| {
            c.headers.insert(name, value);
        })
    }

    /// Sets the total deadline of a call.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.op(move |c| c.timeout = timeout)
    }

    /// Sets the deadline of one attempt.
    pub fn attempt_timeout(self, timeout: Duration) -> Self {
        self.op(move |c| c.attempt_timeout = Some(timeout))
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.op(move |c| c.connect_timeout = timeout)
    }

    /// Sets the response body cap.
    pub fn max_response_bytes(self, bytes: u64) -> Self {
        self.op(move |c| c.max_response_bytes = bytes)
    }

    /// Sets the authentication.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// Authenticates with a static bearer token.
    pub fn bearer(self, token: Secret) -> Self {
        self.auth(AuthConfig::Bearer(BearerAuth { token }))
    }

    /// Authenticates with an API key in a header.
    pub fn api_key_header(self, header: impl Into<String>, key: Secret) -> Self {
        self.auth(AuthConfig::ApiKey(ApiKeyAuth {
            key,
            header: Some(header.into()),
            query: None,
        }))
    }

    /// Authenticates with an API key in a query parameter.
    pub fn api_key_query(self, param: impl Into<String>, key: Secret) -> Self {
        self.auth(AuthConfig::ApiKey(ApiKeyAuth {
            key,
            header: None,
            query: Some(param.into()),
        }))
    }

    /// Authenticates with HTTP Basic.
    pub fn basic(self, username: impl Into<String>, password: Secret) -> Self {
        self.auth(AuthConfig::Basic(BasicAuth {
            username: username.into(),
            password,
        }))
    }

    /// Sets the whole rate-limit section.
    pub fn rate_limit(self, rate_limit: RateLimitConfig) -> Self {
        self.op(move |c| c.rate_limit = rate_limit)
    }

    /// Adds a client quota.
    pub fn quota(self, quota: QuotaConfig) -> Self {
        self.op(move |c| c.rate_limit.quotas.push(quota))
    }

    /// Sets the whole retry section.
    pub fn retry(self, retry: RetryConfig) -> Self {
        self.op(move |c| c.retry = retry)
    }

    /// Sets the maximum number of attempts (1 disables retries).
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.op(move |c| c.retry.max_attempts = attempts)
    }

    /// Sets the circuit breaker section.
    pub fn circuit_breaker(self, breaker: BreakerConfig) -> Self {
        self.op(move |c| c.circuit_breaker = breaker)
    }

    /// Sets the HTTP cache section (off by default; see [`CacheConfig`]).
    ///
    /// ```
    /// use integration_config::{CacheConfig, IntegrationConfig};
    ///
    /// let mut cache = CacheConfig::default();
    /// cache.enabled = true;
    /// let config = IntegrationConfig::builder("https://api.example.com/").cache(cache).build()?;
    /// assert!(config.cache.enabled);
    /// # Ok::<_, integration_config::ValidationErrors>(())
    /// ```
    pub fn cache(self, cache: CacheConfig) -> Self {
        self.op(move |c| c.cache = cache)
    }

    /// Sets the logging section.
    pub fn log(self, log: LogConfig) -> Self {
        self.op(move |c| c.log = log)
    }

    /// Sets the TLS section.
    pub fn tls(self, tls: TlsConfig) -> Self {
        self.op(move |c| c.tls = tls)
    }

    /// Sets the proxy (default: the environment's; [`ProxyConfig::Off`] for none).
    pub fn proxy(self, proxy: ProxyConfig) -> Self {
        self.op(move |c| c.proxy = proxy)
    }

    /// Parses the base URL and applies the settings without validating them.
    ///
    /// # Panics
    ///
    /// When the base URL does not parse.
    pub fn build_unvalidated(self) -> IntegrationConfig {
        let url = Url::parse(&self.base_url)
            .unwrap_or_else(|e| panic!("base_url {:?}: {e}", self.base_url));
        self.assemble(url)
    }

    fn assemble(self, url: Url) -> IntegrationConfig {
        let mut config = match self.config {
            Some(mut config) => {
                config.base_url = url;
                config
            }
            None => IntegrationConfig::new(url),
        };
        config.auth = self.auth;
        for op in self.ops {
            op(&mut config);
        }
        config
    }

    /// Parses the base URL, applies the settings and validates the result.
    ///
    /// # Errors
    ///
    /// Every problem found (an unparsable URL included), each with its path, under
    /// `integrations.NAME.` once the builder was given a [`name`](Self::name).
    pub fn build(mut self) -> Result<IntegrationConfig, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let prefix = match self.name.take() {
            Some(name) => {
                let prefix = format!("integrations.{name}");
                if let Err(message) = crate::validate::check_name(&name) {
                    errors.push(&prefix, message);
                }
                prefix
            }
            None => String::new(),
        };
        let field = |field: &str| {
            if prefix.is_empty() {
                field.to_owned()
            } else {
                format!("{prefix}.{field}")
            }
        };
        let url = match Url::parse(&self.base_url) {
            Ok(url) => url,
            Err(e) => {
                errors.push(field("base_url"), format!("not an absolute URL ({e})"));
                return Err(errors);
            }
        };
        let config = self.assemble(url);
        crate::validate::integration(&config, &prefix, None, &mut errors);
        errors.into_result()?;
        Ok(config)
    }
}

/// Where shared state (token caches, rate-limit counters) lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreKind {
    /// In this process only.
    #[default]
    Memory,
    /// In the `[redis]` section's Redis, shared by every replica.
    Redis,
}

/// How requests are authenticated, chosen by `type`.
///
/// ```toml
/// [integrations.github.auth]
/// type = "bearer"
/// token = "${env:GITHUB_TOKEN}"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// An API key in a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// HTTP Basic.
    Basic(BasicAuth),
    /// A static bearer token.
    Bearer(BearerAuth),
    /// OAuth 2.0 client credentials grant.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(OAuth2ClientCredentials),
    /// OAuth 2.0 refresh token grant.
    #[serde(rename = "oauth2_refresh_token")]
    OAuth2RefreshToken(OAuth2RefreshToken),
    /// A JWT signed per request and sent as a bearer token.
    Jwt(JwtAuth),
    /// The RFC 7523 JWT bearer grant: a signed assertion exchanged for an access token.
    JwtBearerGrant(JwtBearerGrant),
}

impl AuthConfig {
    /// The `type` name of this variant, as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::ApiKey(_) => "api_key",
            AuthConfig::Basic(_) => "basic",
            AuthConfig::Bearer(_) => "bearer",
            AuthConfig::OAuth2ClientCredentials(_) => "oauth2_client_credentials",
            AuthConfig::OAuth2RefreshToken(_) => "oauth2_refresh_token",
            AuthConfig::Jwt(_) => "jwt",
            AuthConfig::JwtBearerGrant(_) => "jwt_bearer_grant",
        }
    }

    /// Every secret with its path relative to the integration (`auth.token`).
    pub fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        match self {
            AuthConfig::None => vec![],
            AuthConfig::ApiKey(a) => vec![("auth.key", &a.key)],
            AuthConfig::Basic(a) => vec![("auth.password", &a.password)],
            AuthConfig::Bearer(a) => vec![("auth.token", &a.token)],
            AuthConfig::OAuth2ClientCredentials(a) => {
                vec![("auth.client_secret", &a.client_secret)]
            }
            AuthConfig::OAuth2RefreshToken(a) => {
                let mut v = vec![("auth.refresh_token", &a.refresh_token)];
                if let Some(s) = &a.client_secret {
                    v.push(("auth.client_secret", s));
                }
                v
            }
            AuthConfig::Jwt(a) => vec![("auth.private_key", &a.private_key)],
            AuthConfig::JwtBearerGrant(a) => vec![("auth.private_key", &a.private_key)],
        }
    }

    /// The token store of the token-fetching kinds (`None` for the static ones).
    pub fn store(&self) -> Option<StoreKind> {
        match self {
            AuthConfig::OAuth2ClientCredentials(a) => Some(a.store),
            AuthConfig::OAuth2RefreshToken(a) => Some(a.store),
            AuthConfig::Jwt(a) => Some(a.store),
            AuthConfig::JwtBearerGrant(a) => Some(a.store),
            _ => None,
        }
    }
}

/// `type = "api_key"`: a key in a header (default `X-API-Key`) or in a query parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiKeyAuth {
    /// The key.
    pub key: Secret,
    /// The header that carries it. When neither `header` nor `query` is set, `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The query parameter that carries it (exclusive with `header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl ApiKeyAuth {
    /// A key sent in the `X-API-Key` header.
    pub fn new(key: Secret) -> Self {
        ApiKeyAuth {
            key,
            header: None,
            query: None,
        }
    }

    /// The header the key goes in, unless it goes in the query: `header`, or `X-API-Key` by default.
    pub fn header_name(&self) -> Option<&str> {
        match (&self.header, &self.query) {
            (Some(h), _) => Some(h),
            (None, Some(_)) => None,
            (None, None) => Some("X-API-Key"),
        }
    }
}

/// `type = "basic"`: HTTP Basic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

impl BasicAuth {
    /// HTTP Basic with these credentials.
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        BasicAuth {
            username: username.into(),
            password,
        }
    }
}

/// `type = "bearer"`: a static bearer token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BearerAuth {
    /// The token.
    pub token: Secret,
}

impl BearerAuth {
    /// A static bearer token.
    pub fn new(token: Secret) -> Self {
        BearerAuth { token }
    }
}

/// How an OAuth 2.0 client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the client id and secret (the default).
    #[default]
    Basic,
    /// `client_secret_post`: the id and secret in the form body.
    Body,
}

/// Default skew subtracted from a token's lifetime before it is refreshed: 60 s.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);
/// Default lifetime of a self-signed JWT: 9 minutes.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(9 * 60);

fn default_skew() -> Duration {
    DEFAULT_SKEW
}
fn default_jwt_ttl() -> Duration {
    DEFAULT_JWT_TTL
}

/// `type = "oauth2_client_credentials"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OAuth2ClientCredentials {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `audience` parameter (Auth0 and others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `resource` parameter (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Refresh this long before `expires_in` runs out (jittered). Default 60 s; at most 1 h.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub skew: Duration,
    /// Where tokens are cached.
    #[serde(default)]
    pub store: StoreKind,
}

impl OAuth2ClientCredentials {
    /// The grant with its optional settings at their defaults.
    pub fn new(token_url: Url, client_id: impl Into<String>, client_secret: Secret) -> Self {
        OAuth2ClientCredentials {
            token_url,
            client_id: client_id.into(),
            client_secret,
            scopes: Vec::new(),
            audience: None,
            resource: None,
            client_auth: ClientAuth::Basic,
            skew: DEFAULT_SKEW,
            store: StoreKind::Memory,
        }
    }
}

/// `type = "oauth2_refresh_token"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OAuth2RefreshToken {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The client secret, for confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// The refresh token (a rotated one is persisted by the token store).
    pub refresh_token: Secret,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Refresh this long before `expires_in` runs out (jittered). Default 60 s; at most 1 h.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub skew: Duration,
    /// Where tokens are cached.
    #[serde(default)]
    pub store: StoreKind,
}

impl OAuth2RefreshToken {
    /// The grant with its optional settings at their defaults.
    pub fn new(token_url: Url, client_id: impl Into<String>, refresh_token: Secret) -> Self {
        OAuth2RefreshToken {
            token_url,
            client_id: client_id.into(),
            client_secret: None,
            refresh_token,
            scopes: Vec::new(),
            client_auth: ClientAuth::Basic,
            skew: DEFAULT_SKEW,
            store: StoreKind::Memory,
        }
    }
}

/// A JWS algorithm for self-signed tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (the key is a shared secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (PEM private key).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA P-256 with SHA-256 (PEM private key).
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// `true` for the HMAC family, whose key is a shared secret rather than a PEM private key.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// `type = "jwt"`: a JWT signed by us and sent as the bearer token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtAuth {
    /// The signing algorithm.
    pub algorithm: JwtAlgorithm,
    /// A PEM private key, or the shared secret for `HS*`.
    pub private_key: Secret,
    /// `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `sub` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Lifetime of a signed token. Default 9 minutes; at most 24 h.
    #[serde(default = "default_jwt_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// `kid` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Re-sign this long before the token expires. Default 60 s.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub skew: Duration,
    /// Where signed tokens are cached.
    #[serde(default)]
    pub store: StoreKind,
}

impl JwtAuth {
    /// A JWT with its optional settings at their defaults.
    pub fn new(algorithm: JwtAlgorithm, private_key: Secret) -> Self {
        JwtAuth {
            algorithm,
            private_key,
            issuer: None,
            subject: None,
            audience: None,
            ttl: DEFAULT_JWT_TTL,
            key_id: None,
            skew: DEFAULT_SKEW,
            store: StoreKind::Memory,
        }
    }
}

/// `type = "jwt_bearer_grant"`: RFC 7523, a signed assertion exchanged at `token_url` for an access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtBearerGrant {
    /// The token endpoint.
    pub token_url: Url,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The signing algorithm of the assertion.
    pub algorithm: JwtAlgorithm,
    /// A PEM private key, or the shared secret for `HS*`.
    pub private_key: Secret,
    /// `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `sub` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `aud` claim (defaults to the token URL at the layer's discretion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Lifetime of the assertion. Default 9 minutes; at most 24 h.
    #[serde(default = "default_jwt_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// `kid` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Refresh this long before the access token expires. Default 60 s; at most 1 h.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub skew: Duration,
    /// Where access tokens are cached.
    #[serde(default)]
    pub store: StoreKind,
}

impl JwtBearerGrant {
    /// The grant with its optional settings at their defaults.
    pub fn new(token_url: Url, algorithm: JwtAlgorithm, private_key: Secret) -> Self {
        JwtBearerGrant {
            token_url,
            scopes: Vec::new(),
            algorithm,
            private_key,
            issuer: None,
            subject: None,
            audience: None,
            ttl: DEFAULT_JWT_TTL,
            key_id: None,
            skew: DEFAULT_SKEW,
            store: StoreKind::Memory,
        }
    }
}

/// Default longest wait for a rate-limit permit: 5 s.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);
/// Default longest server-requested pause honoured; longer windows go back to the caller: 10 minutes.
pub const DEFAULT_MAX_SERVER_PAUSE: Duration = Duration::from_secs(600);

/// Default `rate_limit.initial_window`: 10, TCP's initial window (see
/// `integration_ratelimit::RateLimitPolicy::DEFAULT_INITIAL_WINDOW`); 0 turns slow start off.
pub const DEFAULT_INITIAL_WINDOW: u32 = 10;

/// Client quotas, waiting, concurrency and adaptation to the server's throttle signals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// GCRA quotas, all enforced (e.g. 10/s with burst 10 and 5000/h). Empty: no client-side quota, server
    /// signals still apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaConfig>,
    /// Longest wait for a permit before failing with `RateLimited`; `0s` fails fast. Default 5 s; at
    /// most 1 h.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Cap on calls in flight, from 1 to 100 000. `None`: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Where counters and server pauses live.
    pub store: StoreKind,
    /// Number of replicas sharing the quota; with Redis down each replica falls back to `limit / replicas`.
    /// From 1 to 10 000.
    pub expected_replicas: u32,
    /// Longest server-requested pause honoured; longer ones fail the call. Default 10 minutes; at
    /// most 24 h.
    #[serde(with = "humantime_serde")]
    pub max_server_pause: Duration,
    /// How each key's sending rate adapts to the server's throttle answers. On by default.
    pub adaptive: AdaptiveConfig,
    /// Slow start of a key that has never been throttled, as TCP's initial window: this many calls
    /// at once (and in flight before its first answer), then a probe in rate from this many per
    /// second until the first throttle, which tells the server's rate. Default 10; 0 turns it off;
    /// at most 100 000.
    pub initial_window: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            quotas: Vec::new(),
            max_wait: DEFAULT_MAX_WAIT,
            max_concurrency: None,
            store: StoreKind::Memory,
            expected_replicas: 1,
            max_server_pause: DEFAULT_MAX_SERVER_PAUSE,
            adaptive: AdaptiveConfig::default(),
            initial_window: DEFAULT_INITIAL_WINDOW,
        }
    }
}

/// Adaptive throttling (`rate_limit.adaptive`): per key, the sending rate drops on a 429 or a 503
/// with `Retry-After` (to `decrease` times the rate it was sending at) and grows back along a
/// CUBIC curve scaled by `increase`, never below `min_rate` and never above the slowest quota; a
/// server's `RateLimit`/`X-RateLimit-Remaining` with a reset paces the key directly. Without a
/// quota the key gets a learned rate at its first throttle. With `store = "redis"` every replica
/// shares the learned rate.
///
/// ```toml
/// [integrations.github.rate_limit.adaptive]
/// enabled = true      # default
/// min_rate = 0.5      # permits per second, 0.01 to 1000000
/// decrease = 0.7      # 0.1 to 0.95
/// increase = 0.4      # 0.01 to 100
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// Adapt at all. Default true. Off: a throttle only pauses the key and empties its burst.
    pub enabled: bool,
    /// The floor of the learned rate, permits per second. Default 0.5.
    pub min_rate: f64,
    /// The factor a throttle multiplies the sending rate by. Default 0.7.
    pub decrease: f64,
    /// The scale of the growth curve (CUBIC's C). Default 0.4.
    pub increase: f64,
}

impl AdaptiveConfig {
    /// Bounds of `min_rate`.
    pub const MIN_RATE_RANGE: (f64, f64) = (0.01, 1_000_000.0);
    /// Bounds of `decrease`.
    pub const DECREASE_RANGE: (f64, f64) = (0.1, 0.95);
    /// Bounds of `increase`.
    pub const INCREASE_RANGE: (f64, f64) = (0.01, 100.0);
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            enabled: true,
            min_rate: 0.5,
            decrease: 0.7,
            increase: 0.4,
        }
    }
}

/// One GCRA quota: `rate` requests per `per`, bursting up to `burst` (default: `rate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Requests allowed per period, from 1 to 1 000 000, and at most 100 000 a second (`rate / per`).
    pub rate: u32,
    /// The period, from 1 ms to 31 days.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Largest burst, from 1 to 1 000 000; defaults to `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl QuotaConfig {
    /// `rate` requests per `per`, burst equal to the rate.
    pub fn new(rate: u32, per: Duration) -> Self {
        QuotaConfig {
            rate,
            per,
            burst: None,
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The burst in force: `burst`, or `rate` when unset.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate)
    }
}

/// How the wait between retries is randomized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Jitter {
    /// `rand(0, min(cap, base * 2^n))`.
    #[default]
    Full,
    /// `min(cap, rand(base, previous * 3))`.
    Decorrelated,
}

/// Retries, backoff, `Retry-After` and the retry budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 disables retries. Default 4 (three retries: a call
    /// fails when all four fail, so 11 % failed attempts fail 0.11^4 = 0.015 % of calls, where three
    /// attempts fail 0.13 %; the retry budget still bounds an outage to 1.2 attempts per call); from
    /// 1 to 20.
    pub max_attempts: u32,
    /// Backoff base. Default 100 ms; at most 1 minute.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Backoff cap; at least `base`. Default 20 s; at most 10 minutes.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// Backoff base after a throttling answer without a hint. Default 1 s; at most 1 minute.
    #[serde(with = "humantime_serde")]
    pub throttle_base: Duration,
    /// Longest `Retry-After` honoured; a longer hint fails at once with the hint. Default 60 s; at
    /// most 1 h.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Jitter strategy.
    pub jitter: Jitter,
    /// Add a UUID `Idempotency-Key` to POST and PATCH requests that have none, making them retryable.
    /// Default false.
    pub idempotency_keys: bool,
    /// The retry budget; `budget = false` disables it (`None`).
    #[serde(with = "budget_serde")]
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
            throttle_base: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            jitter: Jitter::Full,
            idempotency_keys: false,
            budget: Some(BudgetConfig::default()),
        }
    }
}

/// The retry budget: retries may be at most `ratio` of requests over `window`, with a floor. A retry
/// after a 429 is not charged: it only waits out the server's throttle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Retries allowed per request, in (0, 1]. Default 0.2.
    pub ratio: f64,
    /// Sliding window. Default 10 s; from 100 ms to 1 h.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Retries always allowed per second, whatever the traffic. Default 10; at most 10 000.
    pub min_per_second: u32,
    /// Pay back a retry whose attempt did not fail, so only failed retries are charged. Default
    /// false: at 35 % failed attempts it lets 98 % of calls succeed instead of 80 %, but at 1.5
    /// attempts per call instead of 1.2 (see `integration_retry::RetryBudget`).
    pub refunds: bool,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 10,
            refunds: false,
        }
    }
}

mod budget_serde {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<BudgetConfig>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(budget) => budget.serialize(s),
            None => s.serialize_bool(false),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BudgetConfig>, D::Error> {
        struct BudgetVisitor;
        impl<'de> Visitor<'de> for BudgetVisitor {
            type Value = Option<BudgetConfig>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a budget table ({ ratio, window, min_per_second }) or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(v.then(BudgetConfig::default))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                BudgetConfig::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
            }
        }
        d.deserialize_any(BudgetVisitor)
    }
}

/// The HTTP cache of an integration (`integration-cache`): RFC 9111 freshness, `Vary`,
/// `no-store`, `private`, revalidation, invalidation by unsafe methods, coalescing of concurrent
/// misses, stale-while-revalidate and stale-if-error. Off by default.
///
/// ```toml
/// [integrations.rates.cache]
/// enabled = true
/// store = "redis"                     # shared by replicas; needs a [redis] section
/// stale_if_error = "10m"              # serve a stale answer when the upstream fails
/// hash_key = "${env:CACHE_HASH_KEY}"  # replicas sharing Redis share this key
/// overrides = [{ path = "/v1/rates/*", ttl = "60s" }]
/// ```
///
/// Responses to an integration with credentials are stored per credential (a keyed hash of it),
/// unless `credentials = "shared"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Whether the cache runs. Default false.
    pub enabled: bool,
    /// Where entries live: `memory` (this process) or `redis` (every replica). Default memory.
    pub store: StoreKind,
    /// Bound on a memory store's bytes (bodies and headers). Default 64 MiB; from 1 byte to 16 GiB.
    pub max_bytes: u64,
    /// Bound on a memory store's entries. Default 10 000; from 1 to 10 000 000.
    pub max_entries: u64,
    /// Larger bodies are streamed through and not stored. Default 1 MiB; from 1 byte to 64 MiB.
    pub max_body_bytes: u64,
    /// The stale-while-revalidate window of responses that give none (RFC 5861): a stale answer
    /// is served at once while one background call refreshes it. Default: only what the response
    /// says; at most 30 days.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<Duration>,
    /// The stale-if-error window of responses that give none (RFC 5861): a stale answer is served
    /// when the upstream fails (an error, a timeout, an open breaker, a 500, 502, 503 or 504).
    /// Default: only what the response says; at most 30 days.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<Duration>,
    /// The longest an entry is kept, freshness and stale windows included. Default 1 day; from
    /// 1 s to 30 days.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How credentialed calls are cached: `partition` (each credential its own entries, the
    /// default) or `shared` (stored only where RFC 9111 3.5 lets a shared cache: `public`,
    /// `s-maxage`, `must-revalidate`).
    pub credentials: CacheCredentials,
    /// Fixed freshness lifetimes for paths (globs over the URI path: `*` within a segment, `**`
    /// across them), for APIs that send no caching headers. **These go beyond the server's
    /// word**: its freshness is replaced; its `no-store` is still obeyed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<CacheOverride>,
    /// The key of the keyed hashes of cache keys and credentials (a secret reference). Replicas
    /// sharing a Redis store must share it to share entries; without it each process has a random
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<Secret>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            store: StoreKind::Memory,
            max_bytes: 64 * 1024 * 1024,
            max_entries: 10_000,
            max_body_bytes: 1024 * 1024,
            stale_while_revalidate: None,
            stale_if_error: None,
            max_ttl: Duration::from_secs(24 * 3600),
            credentials: CacheCredentials::Partition,
            overrides: Vec::new(),
            hash_key: None,
        }
    }
}

impl CacheConfig {
    /// Whether every setting is the default (the section is then left out when serialized).
    pub fn is_default(&self) -> bool {
        *self == CacheConfig::default()
    }
}

/// How a cache stores the answers to credentialed calls; see [`CacheConfig::credentials`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheCredentials {
    /// Each credential has its own entries (a keyed hash of it names them).
    #[default]
    Partition,
    /// One set of entries for every caller, holding only what RFC 9111 3.5 allows.
    Shared,
}

/// A fixed freshness lifetime for the paths matching `path`; see [`CacheConfig::overrides`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOverride {
    /// A glob over the URI path, starting with `/`.
    pub path: String,
    /// How long matching responses are fresh. From 1 s to 30 days.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

/// The circuit breaker: fail fast while an upstream is known broken. It counts attempts (it sits
/// under the retries), opens on a failure ratio over a short window, and lets a few probes decide
/// when to close; see `integration_retry::BreakerPolicy` for the state machine and why these
/// defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Whether the breaker runs. Default true.
    pub enabled: bool,
    /// Open when failures reach this share of attempts over `window` (with at least
    /// `min_requests`), in (0, 1]; also the share of failed half-open probes that opens it again.
    /// Default 0.5.
    pub failure_ratio: f64,
    /// Sliding window of the ratio. Default 2 s; from 100 ms to 1 h.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Attempts needed in the window before the ratio counts. Default 100; from 1 to 100 000.
    pub min_requests: u32,
    /// Open after this many failures in a row while the window holds fewer than `min_requests`
    /// attempts (where the ratio cannot judge); 0 disables this trigger. Default 10; at most
    /// 100 000.
    pub consecutive_failures: u32,
    /// The base open time, before half-open probes. Default 5 s; at most 1 h.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The cap on the open time, which doubles with each failed probing round in a row; equal to
    /// `open_for` or below it (read as `open_for`, so a config that sets only `open_for` keeps a
    /// fixed open time), the open time never grows. Default 5 s; at most 1 h.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Attempts let through at once while half-open; the majority of their outcomes (by
    /// `failure_ratio`) closes or reopens the breaker. Default 5; from 1 to 1 000.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_ratio: 0.5,
            window: Duration::from_secs(2),
            min_requests: 100,
            consecutive_failures: 10,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(5),
            half_open_probes: 5,
        }
    }
}

/// A log level, or `off`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    #[default]
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
    /// Not logged.
    Off,
}

impl LogLevel {
    /// The `tracing` level, or `None` for `off`.
    pub fn to_tracing(self) -> Option<tracing::Level> {
        match self {
            LogLevel::Trace => Some(tracing::Level::TRACE),
            LogLevel::Debug => Some(tracing::Level::DEBUG),
            LogLevel::Info => Some(tracing::Level::INFO),
            LogLevel::Warn => Some(tracing::Level::WARN),
            LogLevel::Error => Some(tracing::Level::ERROR),
            LogLevel::Off => None,
        }
    }
}

/// Logging, redaction and trace propagation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// Level of the span of each call (OpenTelemetry's logical parent, with the method, server,
    /// redacted URL, integration, resend count, status and `error.type`). Default `info`; `off` is
    /// `trace`.
    pub span_level: LogLevel,
    /// Level of the child span of each attempt (OpenTelemetry's `client` span). Default `debug`: at
    /// `info` a call is one span whose `http.request.resend_count` says how many attempts it took,
    /// and the per-attempt detail costs nothing; set `info` to export every attempt as its own
    /// client span. A failed attempt's line is logged at `warn` whatever this level.
    pub attempt_span_level: LogLevel,
    /// Level of the line logged for a successful call. Default `debug`. The others are fixed: a call
    /// that ends in a 4xx logs at `warn`, in a 5xx or an error at `error`, a success after retries at
    /// `info`; a failed attempt that is retried logs at `warn`.
    pub success_level: LogLevel,
    /// Log request and response headers (redacted). Default true.
    pub capture_headers: bool,
    /// Log textual bodies (redacted, capped). Default false.
    pub capture_bodies: bool,
    /// Body capture cap. Default 4096; at most 1 MiB.
    pub max_body_bytes: usize,
    /// Headers redacted in addition to the built-in list (`Authorization`, cookies, API keys...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redact_headers: Vec<String>,
    /// Headers shown even though the built-in list would redact them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// JSON body fields and query parameters redacted in addition to the built-in secret-like names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redact_fields: Vec<String>,
    /// Send a W3C `traceparent` header from the current span. Default false.
    pub propagate_traceparent: bool,
    /// Record the duration histograms of calls and attempts (`http.client.request.duration`).
    /// Default true; turn off where no metrics recorder collects them, so that a call with its log
    /// level filtered out costs nothing in the log layers.
    pub metrics: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            span_level: LogLevel::Info,
            attempt_span_level: LogLevel::Debug,
            success_level: LogLevel::Debug,
            capture_headers: true,
            capture_bodies: false,
            max_body_bytes: 4096,
            redact_headers: Vec::new(),
            allow_headers: Vec::new(),
            redact_fields: Vec::new(),
            propagate_traceparent: false,
            metrics: true,
        }
    }
}

/// Default Redis key prefix: `integration`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "integration";

/// The shared Redis for `store = "redis"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URL; a secret because it may carry a password
    /// (`"${env:REDIS_URL}"`). A plaintext URL without a password serializes as written; one with a
    /// password is redacted.
    #[serde(serialize_with = "serialize_redis_url")]
    pub url: Secret,
    /// Prefix of every key. Default `integration`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Whether the client may start without Redis. `false` (default): when Redis does not answer at
    /// start, `Client::connect` logs a warning and starts on the local fallbacks (each replica's share
    /// of the rate limits, tokens in memory), returning to Redis when it answers. `true`: it fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// How long one Redis command may take before Redis counts as unavailable and every user of it
    /// takes its fallback. Default 50 ms; at most 5 s.
    #[serde(
        default = "default_redis_command_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_redis_command_timeout"
    )]
    pub command_timeout: Duration,
    /// How long one connection attempt to Redis may take (at start, and on each reconnection).
    /// Default 500 ms; at most 30 s.
    #[serde(
        default = "default_redis_connect_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_redis_connect_timeout"
    )]
    pub connect_timeout: Duration,
}

/// Default of `redis.command_timeout`: 50 ms.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(50);
/// Default of `redis.connect_timeout`: 500 ms.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn default_redis_command_timeout() -> Duration {
    DEFAULT_REDIS_COMMAND_TIMEOUT
}

fn default_redis_connect_timeout() -> Duration {
    DEFAULT_REDIS_CONNECT_TIMEOUT
}

fn is_default_redis_command_timeout(timeout: &Duration) -> bool {
    *timeout == DEFAULT_REDIS_COMMAND_TIMEOUT
}

fn is_default_redis_connect_timeout(timeout: &Duration) -> bool {
    *timeout == DEFAULT_REDIS_CONNECT_TIMEOUT
}

fn serialize_redis_url<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    let plain = url.is_literal()
        && url.error().is_none()
        && Url::parse(url.expose_secret()).is_ok_and(|u| u.password().is_none());
    if plain {
        s.serialize_str(url.expose_secret())
    } else {
        url.serialize(s)
    }
}

fn default_key_prefix() -> String {
    DEFAULT_REDIS_KEY_PREFIX.to_owned()
}

impl RedisConfig {
    /// Redis at `url` with the default key prefix.
    pub fn new(url: Secret) -> Self {
        RedisConfig {
            url,
            key_prefix: default_key_prefix(),
            required: false,
            command_timeout: DEFAULT_REDIS_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_REDIS_CONNECT_TIMEOUT,
        }
    }

    /// Fails `Client::connect` when Redis does not answer at start, instead of starting on the
    /// fallbacks.
    #[must_use]
    pub fn with_required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }
}
