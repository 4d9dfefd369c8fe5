//! Validation: every problem of a configuration, each with its path, collected before anything applies.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use integration_core::redact::Redactor;
use secrecy::ExposeSecret;
use url::Url;

use crate::limits;
use crate::model::{
    AdaptiveConfig, AuthConfig, BreakerConfig, CacheConfig, Config, IntegrationConfig,
    JwtAlgorithm, LogConfig, ProxyConfig, RateLimitConfig, RedisConfig, RetryConfig, StoreKind,
    TlsConfig,
};
use crate::secret::Secret;

/// One problem: the dotted path of the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationError {
    /// The field, e.g. `integrations.stripe.retry.max_attempts`.
    pub path: String,
    /// What is wrong, e.g. `must be at least 1`.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration; displayed one per line as `path: message`.
///
/// ```
/// use integration_config::Config;
///
/// let mut config = Config::from_toml_str(r#"
///     [integrations.stripe]
///     base_url = "https://api.stripe.com"
/// "#)?;
/// config.integrations.get_mut("stripe").unwrap().retry.max_attempts = 0;
/// let errors = config.validate().unwrap_err();
/// assert_eq!(errors.to_string(), "integrations.stripe.retry.max_attempts: must be at least 1");
/// # Ok::<(), integration_config::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    errors: Vec<ValidationError>,
}

impl ValidationErrors {
    /// Records a problem.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The problems, in the order found.
    pub fn errors(&self) -> &[ValidationError] {
        &self.errors
    }

    /// `true` when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// `true` when some problem has exactly this path.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.errors.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    ///
    /// # Errors
    ///
    /// `self`, when it holds any problem.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Validation problems as the layer's one error type, of kind
/// [`Config`](integration_core::ErrorKind::Config), listing every problem with its path, so that `?`
/// works in a function returning [`integration_core::Error`].
///
/// ```
/// use integration_config::IntegrationConfig;
///
/// fn pay() -> Result<IntegrationConfig, integration_core::Error> {
///     Ok(IntegrationConfig::builder("https://pay.example").name("pay").max_attempts(50).build()?)
/// }
/// let error = pay().unwrap_err();
/// assert!(error.is_config());
/// assert_eq!(error.to_string(), "integrations.pay.retry.max_attempts: must be at most 20");
/// ```
impl From<ValidationErrors> for integration_core::Error {
    fn from(errors: ValidationErrors) -> Self {
        integration_core::Error::new(integration_core::ErrorKind::Config)
            .with_message(errors.to_string())
            .with_source(errors)
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl Config {
    /// Checks the whole configuration and reports every problem with its path.
    ///
    /// Checked: integration names (and that no two differ only by case or `-`/`_`: an environment
    /// override could not tell them apart); base URLs (absolute, http or https, no query, fragment or credentials);
    /// header names and values; timeouts (non-zero, `attempt_timeout <= timeout`); auth fields for the
    /// type (non-empty, resolvable secret references, http(s) token URLs, PEM keys for asymmetric JWT
    /// algorithms); quotas (rate, burst, period non-zero); retry (at least one attempt, `base <= cap`, budget
    /// ratio in (0, 1]); breaker; log header lists; `store = "redis"` only with a `[redis]` section; the Redis
    /// URL. Every duration, count and rate has an upper bound (and a lower one where zero or a tiny
    /// value makes no sense), stated in the docs of its field and in [`limits`](crate::limits):
    /// `integrations.pay.retry.max_attempts: must be at most 20`.
    ///
    /// # Errors
    ///
    /// Every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        for (name, config) in &self.integrations {
            let path = format!("integrations.{name}");
            if let Err(message) = check_name(name) {
                errors.push(&path, message);
            }
            integration(config, &path, Some(self.redis.is_some()), &mut errors);
        }
        for (name, first) in confusable_names(self.integrations.keys().map(String::as_str)) {
            errors.push(
                format!("integrations.{name}"),
                format!(
                    "differs from `{first}` only by case or `-`/`_`; an environment override \
                     could not tell them apart, so rename one"
                ),
            );
        }
        if let Some(redis) = &self.redis {
            redis_section(redis, &mut errors);
        }
        errors.into_result()
    }
}

/// Integration names are labels, keys and URL-free identifiers: ASCII letters, digits, `-`, `_`, `.`.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the integration name must not be empty");
    }
    if name.len() > 128 {
        return Err("the integration name must be at most 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(
            "the integration name may contain only ASCII letters, digits, '-', '_' and '.'",
        );
    }
    Ok(())
}

/// The form in which two integration names are the same to an environment variable: lowercase,
/// `_` for `-` (`APP_INTEGRATIONS__MY_API__...` reaches `my-api`, `My_Api` and `MY-API` alike).
pub(crate) fn name_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Each name (after the first, in order) that is equal to an earlier one up to case and `-`/`_`,
/// with that earlier name.
pub(crate) fn confusable_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut seen: std::collections::HashMap<String, &'a str> = std::collections::HashMap::new();
    let mut clashes = Vec::new();
    for name in names {
        match seen.entry(name_key(name)) {
            std::collections::hash_map::Entry::Occupied(first) => {
                clashes.push((name, *first.get()))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(name);
            }
        }
    }
    clashes
}

fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// A bound as it would be written in the configuration, in one unit: `1ms`, `5m`, `24h`, `31d`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_nanos()) {
        (0, nanos) if nanos % 1_000_000 == 0 => format!("{}ms", nanos / 1_000_000),
        (s, 0) if s > 0 && s % 3600 == 0 && s <= 48 * 3600 => format!("{}h", s / 3600),
        (s, 0) if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        (s, 0) if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => humantime_serde::re::humantime::format_duration(d).to_string(),
    }
}

struct Ctx<'a> {
    prefix: &'a str,
    errors: &'a mut ValidationErrors,
}

impl Ctx<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(join(self.prefix, field), message);
    }

    fn non_zero(&mut self, field: &str, d: Duration) {
        if d.is_zero() {
            self.err(field, "must be greater than 0s");
        }
    }

    fn at_least_one(&mut self, field: &str, n: u64) {
        if n < 1 {
            self.err(field, "must be at least 1");
        }
    }

    fn at_most(&mut self, field: &str, n: u64, max: u64) {
        if n > max {
            self.err(field, format!("must be at most {max}"));
        }
    }

    fn at_most_duration(&mut self, field: &str, d: Duration, max: Duration) {
        if d > max {
            self.err(field, format!("must be at most {}", human(max)));
        }
    }

    /// A non-zero duration below `min` (zero is reported by [`non_zero`](Self::non_zero)).
    fn at_least_duration(&mut self, field: &str, d: Duration, min: Duration) {
        if !d.is_zero() && d < min {
            self.err(field, format!("must be at least {}", human(min)));
        }
    }

    fn not_blank(&mut self, field: &str, s: &str) {
        if s.trim().is_empty() {
            self.err(field, "must not be empty");
        }
    }

    fn within(&mut self, field: &str, value: f64, (low, high): (f64, f64)) {
        if !(value >= low && value <= high) {
            self.err(
                field,
                format!("must be between {low} and {high}, got {value}"),
            );
        }
    }

    fn ratio(&mut self, field: &str, r: f64) {
        if !(r > 0.0 && r <= 1.0) {
            self.err(field, format!("must be in (0, 1], got {r}"));
        }
    }

    fn header_name(&mut self, field: &str, name: &str) {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.err(field, format!("{name:?} is not a valid header name"));
        }
    }

    fn secret(&mut self, field: &str, secret: &Secret) {
        match secret.error() {
            Some(e) => self.err(field, e.to_string()),
            None if secret.expose_secret().is_empty() => self.err(field, "must not be empty"),
            None => {}
        }
    }

    fn http_url(&mut self, field: &str, url: &Url) {
        if !matches!(url.scheme(), "http" | "https") {
            self.err(
                field,
                format!("must use http or https, not {:?}", url.scheme()),
            );
        }
        if url.host().is_none() {
            self.err(field, "must have a host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.err(field, "must not carry credentials; use the auth section");
        }
        if url.fragment().is_some() {
            self.err(field, "must not have a fragment");
        }
    }

    fn store(&mut self, field: &str, store: StoreKind, redis: Option<bool>) {
        if store == StoreKind::Redis && redis == Some(false) {
            self.err(field, "store = \"redis\" needs a [redis] section");
        }
    }
}

/// Validates one integration; `redis` is whether a `[redis]` section exists (`None`: unknown, not checked).
pub(crate) fn integration(
    c: &IntegrationConfig,
    prefix: &str,
    redis: Option<bool>,
    errors: &mut ValidationErrors,
) {
    let mut cx = Ctx { prefix, errors };
    cx.http_url("base_url", &c.base_url);
    if c.base_url.query().is_some() {
        cx.err(
            "base_url",
            "must not have a query; put query parameters on requests",
        );
    }
    if let Some(ua) = &c.user_agent
        && HeaderValue::from_str(ua).is_err()
    {
        cx.err("user_agent", "is not a valid header value");
    }
    // A credential in plain `headers` is a plaintext secret: printed by `Debug`, stored as it is in
    // PostgreSQL, out of reach of rotation. Credentials belong in `auth`, as secret references. The
    // rule is the redaction rule of the logs (`log.allow_headers` included), so what is refused here
    // is exactly what the logs would hide.
    let credentials = Redactor::new().allow(&c.log.allow_headers);
    for (name, value) in &c.headers {
        let field = format!("headers.{name}");
        cx.header_name(&field, name);
        if credentials.is_sensitive(name) {
            cx.err(
                &field,
                "carries a credential; put it in the auth section (type = \"api_key\" with \
                 header = ..., or bearer, basic...), where it is a secret reference and redacted",
            );
        }
        if HeaderValue::from_str(value).is_err() {
            cx.err(&field, "is not a valid header value");
        }
    }
    cx.non_zero("timeout", c.timeout);
    cx.at_least_duration("timeout", c.timeout, limits::MIN_TIMEOUT);
    cx.at_most_duration("timeout", c.timeout, limits::MAX_TIMEOUT);
    if let Some(attempt) = c.attempt_timeout {
        cx.non_zero("attempt_timeout", attempt);
        cx.at_least_duration("attempt_timeout", attempt, limits::MIN_TIMEOUT);
        if attempt > c.timeout {
            cx.err(
                "attempt_timeout",
                format!(
                    "must not exceed timeout ({})",
                    humantime_serde::re::humantime::format_duration(c.timeout)
                ),
            );
        }
    }
    cx.non_zero("connect_timeout", c.connect_timeout);
    cx.at_least_duration("connect_timeout", c.connect_timeout, limits::MIN_TIMEOUT);
    cx.at_most_duration(
        "connect_timeout",
        c.connect_timeout,
        limits::MAX_CONNECT_TIMEOUT,
    );
    cx.at_least_one("max_response_bytes", c.max_response_bytes);
    cx.at_most(
        "max_response_bytes",
        c.max_response_bytes,
        limits::MAX_RESPONSE_BYTES,
    );
    auth(&c.auth, &mut cx, redis);
    rate_limit(&c.rate_limit, &mut cx, redis);
    retry(&c.retry, &mut cx);
    breaker(&c.circuit_breaker, &mut cx);
    cache(&c.cache, &mut cx, redis);
    log(&c.log, &mut cx);
    tls(&c.tls, &mut cx);
    proxy(&c.proxy, &mut cx);
}

fn scopes(cx: &mut Ctx<'_>, scopes: &[String]) {
    for (i, scope) in scopes.iter().enumerate() {
        if scope.is_empty() || scope.chars().any(|ch| ch.is_whitespace()) {
            cx.err(
                &format!("auth.scopes[{i}]"),
                "a scope must be non-empty and contain no whitespace",
            );
        }
    }
}

fn jwt_key(cx: &mut Ctx<'_>, algorithm: JwtAlgorithm, key: &Secret) {
    cx.secret("auth.private_key", key);
    if key.error().is_none()
        && !key.expose_secret().is_empty()
        && !algorithm.is_hmac()
        && !key.expose_secret().trim_start().starts_with("-----BEGIN")
    {
        cx.err(
            "auth.private_key",
            format!("{algorithm:?} needs a PEM private key (-----BEGIN ...)"),
        );
    }
}

fn auth(a: &AuthConfig, cx: &mut Ctx<'_>, redis: Option<bool>) {
    match a {
        AuthConfig::None => {}
        AuthConfig::ApiKey(k) => {
            cx.secret("auth.key", &k.key);
            match (&k.header, &k.query) {
                (Some(_), Some(_)) => {
                    cx.err("auth", "api_key takes either header or query, not both")
                }
                (Some(h), None) => cx.header_name("auth.header", h),
                (None, Some(q)) => cx.not_blank("auth.query", q),
                (None, None) => {}
            }
        }
        AuthConfig::Basic(b) => {
            cx.not_blank("auth.username", &b.username);
            if b.username.contains(':') {
                cx.err("auth.username", "must not contain ':'");
            }
            if let Some(e) = b.password.error() {
                cx.err("auth.password", e.to_string());
            }
        }
        AuthConfig::Bearer(b) => {
            cx.secret("auth.token", &b.token);
            if b.token.error().is_none() && HeaderValue::from_str(b.token.expose_secret()).is_err()
            {
                cx.err(
                    "auth.token",
                    "is not usable in a header (control characters)",
                );
            }
        }
        AuthConfig::OAuth2ClientCredentials(o) => {
            cx.http_url("auth.token_url", &o.token_url);
            cx.not_blank("auth.client_id", &o.client_id);
            cx.secret("auth.client_secret", &o.client_secret);
            scopes(cx, &o.scopes);
            cx.at_most_duration("auth.skew", o.skew, limits::MAX_SKEW);
            cx.store("auth.store", o.store, redis);
        }
        AuthConfig::OAuth2RefreshToken(o) => {
            cx.http_url("auth.token_url", &o.token_url);
            cx.not_blank("auth.client_id", &o.client_id);
            if let Some(s) = &o.client_secret {
                cx.secret("auth.client_secret", s);
            }
            cx.secret("auth.refresh_token", &o.refresh_token);
            scopes(cx, &o.scopes);
            cx.at_most_duration("auth.skew", o.skew, limits::MAX_SKEW);
            cx.store("auth.store", o.store, redis);
        }
        AuthConfig::Jwt(j) => {
            jwt_key(cx, j.algorithm, &j.private_key);
            cx.non_zero("auth.ttl", j.ttl);
            cx.at_most_duration("auth.ttl", j.ttl, limits::MAX_JWT_TTL);
            if j.skew >= j.ttl {
                cx.err("auth.skew", "must be shorter than auth.ttl");
            }
            cx.store("auth.store", j.store, redis);
        }
        AuthConfig::JwtBearerGrant(j) => {
            cx.http_url("auth.token_url", &j.token_url);
            jwt_key(cx, j.algorithm, &j.private_key);
            cx.non_zero("auth.ttl", j.ttl);
            cx.at_most_duration("auth.ttl", j.ttl, limits::MAX_JWT_TTL);
            cx.at_most_duration("auth.skew", j.skew, limits::MAX_SKEW);
            scopes(cx, &j.scopes);
            cx.store("auth.store", j.store, redis);
        }
    }
}

fn rate_limit(r: &RateLimitConfig, cx: &mut Ctx<'_>, redis: Option<bool>) {
    for (i, q) in r.quotas.iter().enumerate() {
        let rate = format!("rate_limit.quotas[{i}].rate");
        let per = format!("rate_limit.quotas[{i}].per");
        cx.at_least_one(&rate, q.rate.into());
        cx.at_most(&rate, q.rate.into(), limits::MAX_QUOTA_RATE);
        cx.non_zero(&per, q.per);
        cx.at_least_duration(&per, q.per, limits::MIN_QUOTA_PERIOD);
        cx.at_most_duration(&per, q.per, limits::MAX_QUOTA_PERIOD);
        // The pace itself: a rate within bounds over a period within bounds can still ask for more
        // permits a second than any upstream takes (1000000 per 1ms).
        // Checked only when rate and period are each within bounds, so one mistake is one problem.
        if u64::from(q.rate) <= limits::MAX_QUOTA_RATE
            && q.per >= limits::MIN_QUOTA_PERIOD
            && f64::from(q.rate) / q.per.as_secs_f64() > limits::MAX_QUOTA_PER_SECOND as f64
        {
            cx.err(
                &rate,
                format!(
                    "{} per {} is more than {} per second",
                    q.rate,
                    human(q.per),
                    limits::MAX_QUOTA_PER_SECOND
                ),
            );
        }
        if let Some(burst) = q.burst {
            let field = format!("rate_limit.quotas[{i}].burst");
            cx.at_least_one(&field, burst.into());
            cx.at_most(&field, burst.into(), limits::MAX_QUOTA_RATE);
        }
    }
    cx.at_most_duration("rate_limit.max_wait", r.max_wait, limits::MAX_TIMEOUT);
    if let Some(n) = r.max_concurrency {
        cx.at_least_one("rate_limit.max_concurrency", n.into());
        cx.at_most(
            "rate_limit.max_concurrency",
            n.into(),
            limits::MAX_CONCURRENCY,
        );
    }
    cx.at_most(
        "rate_limit.initial_window",
        r.initial_window.into(),
        limits::MAX_CONCURRENCY,
    );
    cx.at_least_one("rate_limit.expected_replicas", r.expected_replicas.into());
    cx.at_most(
        "rate_limit.expected_replicas",
        r.expected_replicas.into(),
        limits::MAX_REPLICAS,
    );
    cx.non_zero("rate_limit.max_server_pause", r.max_server_pause);
    cx.at_most_duration(
        "rate_limit.max_server_pause",
        r.max_server_pause,
        limits::MAX_SERVER_PAUSE,
    );
    cx.store("rate_limit.store", r.store, redis);
    let a = &r.adaptive;
    cx.within(
        "rate_limit.adaptive.min_rate",
        a.min_rate,
        AdaptiveConfig::MIN_RATE_RANGE,
    );
    cx.within(
        "rate_limit.adaptive.decrease",
        a.decrease,
        AdaptiveConfig::DECREASE_RANGE,
    );
    cx.within(
        "rate_limit.adaptive.increase",
        a.increase,
        AdaptiveConfig::INCREASE_RANGE,
    );
}

fn retry(r: &RetryConfig, cx: &mut Ctx<'_>) {
    cx.at_least_one("retry.max_attempts", r.max_attempts.into());
    cx.at_most(
        "retry.max_attempts",
        r.max_attempts.into(),
        limits::MAX_ATTEMPTS,
    );
    cx.non_zero("retry.base", r.base);
    cx.at_most_duration("retry.base", r.base, limits::MAX_BACKOFF_BASE);
    cx.non_zero("retry.throttle_base", r.throttle_base);
    cx.at_most_duration(
        "retry.throttle_base",
        r.throttle_base,
        limits::MAX_BACKOFF_BASE,
    );
    if r.cap < r.base {
        cx.err("retry.cap", "must not be less than retry.base");
    }
    cx.at_most_duration("retry.cap", r.cap, limits::MAX_BACKOFF_CAP);
    cx.at_most_duration(
        "retry.max_retry_after",
        r.max_retry_after,
        limits::MAX_TIMEOUT,
    );
    if let Some(b) = &r.budget {
        cx.ratio("retry.budget.ratio", b.ratio);
        cx.non_zero("retry.budget.window", b.window);
        cx.at_least_duration("retry.budget.window", b.window, limits::MIN_WINDOW);
        cx.at_most_duration("retry.budget.window", b.window, limits::MAX_WINDOW);
        cx.at_most(
            "retry.budget.min_per_second",
            b.min_per_second.into(),
            limits::MAX_BUDGET_MIN_PER_SECOND,
        );
    }
}

fn cache(c: &CacheConfig, cx: &mut Ctx<'_>, redis: Option<bool>) {
    if c.enabled {
        cx.store("cache.store", c.store, redis);
    }
    cx.at_least_one("cache.max_bytes", c.max_bytes);
    cx.at_most("cache.max_bytes", c.max_bytes, limits::MAX_CACHE_BYTES);
    cx.at_least_one("cache.max_entries", c.max_entries);
    cx.at_most(
        "cache.max_entries",
        c.max_entries,
        limits::MAX_CACHE_ENTRIES,
    );
    cx.at_least_one("cache.max_body_bytes", c.max_body_bytes);
    cx.at_most(
        "cache.max_body_bytes",
        c.max_body_bytes,
        limits::MAX_CACHE_BODY_BYTES,
    );
    for (field, window) in [
        ("cache.stale_while_revalidate", c.stale_while_revalidate),
        ("cache.stale_if_error", c.stale_if_error),
    ] {
        if let Some(window) = window {
            cx.at_most_duration(field, window, limits::MAX_CACHE_TTL);
        }
    }
    cx.non_zero("cache.max_ttl", c.max_ttl);
    cx.at_least_duration("cache.max_ttl", c.max_ttl, Duration::from_secs(1));
    cx.at_most_duration("cache.max_ttl", c.max_ttl, limits::MAX_CACHE_TTL);
    for (i, rule) in c.overrides.iter().enumerate() {
        if !rule.path.starts_with('/') {
            cx.err(&format!("cache.overrides[{i}].path"), "must start with /");
        }
        let ttl = format!("cache.overrides[{i}].ttl");
        cx.non_zero(&ttl, rule.ttl);
        cx.at_least_duration(&ttl, rule.ttl, Duration::from_secs(1));
        cx.at_most_duration(&ttl, rule.ttl, limits::MAX_CACHE_TTL);
    }
    if let Some(key) = &c.hash_key {
        cx.secret("cache.hash_key", key);
    }
}

fn breaker(b: &BreakerConfig, cx: &mut Ctx<'_>) {
    cx.ratio("circuit_breaker.failure_ratio", b.failure_ratio);
    cx.non_zero("circuit_breaker.window", b.window);
    cx.at_least_duration("circuit_breaker.window", b.window, limits::MIN_WINDOW);
    cx.at_most_duration("circuit_breaker.window", b.window, limits::MAX_WINDOW);
    cx.at_least_one("circuit_breaker.min_requests", b.min_requests.into());
    cx.at_most(
        "circuit_breaker.min_requests",
        b.min_requests.into(),
        limits::MAX_BREAKER_COUNT,
    );
    cx.at_most(
        "circuit_breaker.consecutive_failures",
        b.consecutive_failures.into(),
        limits::MAX_BREAKER_COUNT,
    );
    cx.non_zero("circuit_breaker.open_for", b.open_for);
    cx.at_most_duration("circuit_breaker.open_for", b.open_for, limits::MAX_OPEN_FOR);
    cx.at_most_duration(
        "circuit_breaker.max_open_for",
        b.max_open_for,
        limits::MAX_OPEN_FOR,
    );
    cx.at_least_one(
        "circuit_breaker.half_open_probes",
        b.half_open_probes.into(),
    );
    cx.at_most(
        "circuit_breaker.half_open_probes",
        b.half_open_probes.into(),
        limits::MAX_HALF_OPEN_PROBES,
    );
}

fn log(l: &LogConfig, cx: &mut Ctx<'_>) {
    cx.at_most(
        "log.max_body_bytes",
        l.max_body_bytes as u64,
        limits::MAX_LOG_BODY_BYTES,
    );
    for (i, h) in l.redact_headers.iter().enumerate() {
        cx.header_name(&format!("log.redact_headers[{i}]"), h);
    }
    for (i, h) in l.allow_headers.iter().enumerate() {
        cx.header_name(&format!("log.allow_headers[{i}]"), h);
    }
    for (i, f) in l.redact_fields.iter().enumerate() {
        cx.not_blank(&format!("log.redact_fields[{i}]"), f);
    }
}

fn tls(t: &TlsConfig, cx: &mut Ctx<'_>) {
    if !t.webpki_roots && !t.native_roots && t.ca_files.is_empty() {
        cx.err(
            "tls",
            "trusts no root: keep webpki_roots or native_roots, or give ca_files",
        );
    }
    match (&t.client_cert_file, &t.client_key_file) {
        (Some(_), None) => cx.err("tls.client_key_file", "is required with client_cert_file"),
        (None, Some(_)) => cx.err("tls.client_cert_file", "is required with client_key_file"),
        _ => {}
    }
    for (i, path) in t.ca_files.iter().enumerate() {
        cx.not_blank(&format!("tls.ca_files[{i}]"), &path.to_string_lossy());
    }
}

fn proxy(p: &ProxyConfig, cx: &mut Ctx<'_>) {
    let ProxyConfig::Server(server) = p else {
        return;
    };
    let url = &server.url;
    if !matches!(url.scheme(), "http" | "https") {
        cx.err(
            "proxy.url",
            format!("must use http or https, not {:?}", url.scheme()),
        );
    }
    if url.host().is_none() {
        cx.err("proxy.url", "must have a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echoed: the URL holds a password.
        cx.err(
            "proxy.url",
            "must not carry credentials; use proxy.username and proxy.password (a secret reference)",
        );
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        cx.err("proxy.url", "must be a scheme, a host and a port only");
    }
    match (&server.username, &server.password) {
        (Some(username), Some(password)) => {
            cx.not_blank("proxy.username", username);
            if username.contains(':') {
                cx.err("proxy.username", "must not contain ':'");
            }
            cx.secret("proxy.password", password);
        }
        (Some(_), None) => cx.err("proxy.password", "is required with proxy.username"),
        (None, Some(_)) => cx.err("proxy.username", "is required with proxy.password"),
        (None, None) => {}
    }
    for (i, host) in server.no_proxy.iter().enumerate() {
        let field = format!("proxy.no_proxy[{i}]");
        cx.not_blank(&field, host);
        if host.contains(',') || host.trim() != host || host.contains(char::is_whitespace) {
            cx.err(&field, "must be one host, domain, IP address or CIDR block");
        }
    }
}

fn redis_section(r: &RedisConfig, errors: &mut ValidationErrors) {
    let mut cx = Ctx {
        prefix: "redis",
        errors,
    };
    cx.secret("url", &r.url);
    if r.url.error().is_none() && !r.url.expose_secret().is_empty() {
        // The URL is a secret (it may hold a password): never echo it back.
        match Url::parse(r.url.expose_secret()) {
            Ok(url) if matches!(url.scheme(), "redis" | "rediss" | "unix" | "redis+unix") => {}
            Ok(_) => cx.err("url", "must use redis, rediss or unix"),
            Err(_) => cx.err("url", "is not a valid URL"),
        }
    }
    cx.not_blank("key_prefix", &r.key_prefix);
    cx.non_zero("command_timeout", r.command_timeout);
    if r.command_timeout > Duration::from_secs(5) {
        cx.err(
            "command_timeout",
            "must be at most 5s (calls wait this long before Redis counts as unavailable)",
        );
    }
    cx.non_zero("connect_timeout", r.connect_timeout);
    if r.connect_timeout > Duration::from_secs(30) {
        cx.err("connect_timeout", "must be at most 30s");
    }
    if r.key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c == '{' || c == '}')
    {
        cx.err(
            "key_prefix",
            "must not contain whitespace or braces (they are used for hash tags)",
        );
    }
}
