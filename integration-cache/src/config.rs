//! What the cache stores and how long it may serve it: [`CacheConfig`], [`TtlOverride`] and
//! [`CredentialMode`].

use std::fmt;
use std::time::Duration;

use globset::GlobMatcher;

use crate::error::InvalidConfig;

/// How a request that carries credentials (`Authorization`, `Proxy-Authorization`, `Cookie`, a header
/// marked sensitive or one named in [`CacheConfig::with_credential_header`]) is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CredentialMode {
    /// Each credential identity has a partition of its own, keyed by an HMAC-SHA256 of the
    /// credential's values (never the values themselves): within it the cache acts as a private
    /// cache (RFC 9111 3.5 does not apply, `private` responses are stored), and no other identity,
    /// nor an anonymous request, can ever read it. The default.
    #[default]
    Partition,
    /// A response to a credentialed request is stored only where RFC 9111 3.5 allows a shared
    /// cache to (`public`, `s-maxage` or `must-revalidate`), and then in the one partition every
    /// caller shares. For APIs whose answers do not depend on who asks.
    Shared,
}

/// A fixed freshness lifetime for the responses to paths matching a glob pattern (`/v1/rates/*`,
/// `/v1/countries`).
///
/// **This goes beyond the server's word**: the response's own freshness (`max-age`, `s-maxage`,
/// `Expires`, `no-cache`, heuristics) is replaced by `ttl`. It is meant for APIs that send no caching
/// headers at all. The server's `no-store` and `private` (in a shared partition) are still obeyed,
/// and only statuses RFC 9111 lets a cache store are stored.
#[derive(Clone)]
pub struct TtlOverride {
    pattern: String,
    matcher: GlobMatcher,
    ttl: Duration,
}

impl TtlOverride {
    /// Responses to paths matching `pattern` (a glob over the URI path: `*` stays within a
    /// segment, `**` crosses them) are fresh for `ttl`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use integration_cache::TtlOverride;
    ///
    /// let rates = TtlOverride::new("/v1/rates/*", Duration::from_secs(60))?;
    /// assert!(rates.matches("/v1/rates/eur"));
    /// assert!(!rates.matches("/v1/rates/eur/history"));
    /// # Ok::<_, integration_cache::InvalidConfig>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] when the pattern is not a glob.
    pub fn new(pattern: impl Into<String>, ttl: Duration) -> Result<Self, InvalidConfig> {
        let pattern = pattern.into();
        let matcher = globset::GlobBuilder::new(&pattern)
            .literal_separator(true)
            .build()
            .map_err(|_| InvalidConfig::new("a TTL override's pattern is not a glob"))?
            .compile_matcher();
        Ok(Self {
            pattern,
            matcher,
            ttl,
        })
    }

    /// Whether `path` matches the pattern.
    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The fixed freshness lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl fmt::Debug for TtlOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlOverride")
            .field("pattern", &self.pattern)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PartialEq for TtlOverride {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.ttl == other.ttl
    }
}

/// The settings of a [`CacheLayer`](crate::CacheLayer).
///
/// ```
/// use std::time::Duration;
/// use integration_cache::{CacheConfig, TtlOverride};
///
/// let config = CacheConfig::new()
///     .with_max_body_bytes(256 * 1024)
///     .with_stale_if_error(Duration::from_secs(300))
///     .with_override(TtlOverride::new("/v1/countries", Duration::from_secs(3600))?);
/// assert_eq!(config.stale_if_error(), Some(Duration::from_secs(300)));
/// # Ok::<_, integration_cache::InvalidConfig>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    max_body_bytes: usize,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    max_ttl: Duration,
    overrides: Vec<TtlOverride>,
    credentials: CredentialMode,
    credential_headers: Vec<http::HeaderName>,
}

impl CacheConfig {
    /// Default cap on a stored body: 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Default longest time an entry is kept (freshness plus stale windows): 1 day.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

    /// The defaults: bodies up to 1 MiB, stale windows only where the response grants them, entries
    /// kept at most a day, credentials partitioned, no overrides.
    pub fn new() -> Self {
        Self {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            stale_while_revalidate: None,
            stale_if_error: None,
            max_ttl: Self::DEFAULT_MAX_TTL,
            overrides: Vec::new(),
            credentials: CredentialMode::Partition,
            credential_headers: Vec::new(),
        }
    }

    /// Responses whose body is larger are passed through, streamed, and not stored.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The stale-while-revalidate window (RFC 5861) of responses that do not give one: a stale entry
    /// is served at once within it while one background call refreshes it.
    #[must_use]
    pub fn with_stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// The stale-if-error window (RFC 5861) of responses that do not give one: a stale entry is
    /// served within it when the upstream fails (an error, a timeout, an open breaker, or a 500,
    /// 502, 503 or 504).
    #[must_use]
    pub fn with_stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// The longest an entry is kept, freshness and stale windows included (a server's `max-age` of a
    /// year is kept this long).
    #[must_use]
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Adds a fixed TTL for the paths of `rule` (the first matching rule applies). See
    /// [`TtlOverride`]: this goes beyond the server's word.
    #[must_use]
    pub fn with_override(mut self, rule: TtlOverride) -> Self {
        self.overrides.push(rule);
        self
    }

    /// How credentialed requests are cached. Default [`CredentialMode::Partition`].
    #[must_use]
    pub fn with_credentials(mut self, mode: CredentialMode) -> Self {
        self.credentials = mode;
        self
    }

    /// Treats the header `name` (an API key's header) as a credential, besides `Authorization`,
    /// `Proxy-Authorization`, `Cookie` and every header marked sensitive.
    #[must_use]
    pub fn with_credential_header(mut self, name: http::HeaderName) -> Self {
        self.credential_headers.push(name);
        self
    }

    /// The cap on a stored body.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The configured stale-while-revalidate window.
    pub fn stale_while_revalidate(&self) -> Option<Duration> {
        self.stale_while_revalidate
    }

    /// The configured stale-if-error window.
    pub fn stale_if_error(&self) -> Option<Duration> {
        self.stale_if_error
    }

    /// The longest an entry is kept.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The TTL overrides.
    pub fn overrides(&self) -> &[TtlOverride] {
        &self.overrides
    }

    /// How credentialed requests are cached.
    pub fn credentials(&self) -> CredentialMode {
        self.credentials
    }

    /// The extra credential header names.
    pub fn credential_headers(&self) -> &[http::HeaderName] {
        &self.credential_headers
    }

    pub(crate) fn override_for(&self, path: &str) -> Option<Duration> {
        self.overrides
            .iter()
            .find(|rule| rule.matches(path))
            .map(TtlOverride::ttl)
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self::new()
    }
}
