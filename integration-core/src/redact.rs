//! The one redaction engine: every log line, span field and error message of the integration layer
//! passes through a [`Redactor`] before it is formatted.
//!
//! It lives here, in the shared vocabulary, so that there is exactly one implementation: the logging
//! layer (`integration_log::redact` re-exports this module), the facade's redirect rule and
//! [`Error`](crate::Error)'s own formatting all use it. An [`Error`](crate::Error) runs the text of
//! every foreign cause (a transport's, a user's) through the [text rule](#what-is-redacted-where)
//! before its `Debug` or its alternate `Display` (`{:#}`) shows it.
//!
//! A [`Redactor`] decides, by **name**, which values are secrets (a header, a query or form parameter,
//! a JSON field, an XML element, a `name=value` pair in free text) and replaces them with
//! [`REDACTED`]. A header is also a secret, whatever its name, when its value is **marked sensitive**
//! (`HeaderValue::set_sensitive(true)`): the auth layer marks every header it sets, so an API key in
//! `X-Passphrase` is redacted although no name rule could guess it. A query parameter carries no such
//! mark: the facade adds the name an integration's credential goes under to that integration's deny
//! list. It also recognises credentials that carry their own shape: `Bearer <token>`-style
//! authorization values anywhere in text, and the userinfo of URLs (`https://user:pass@host`).
//!
//! # The name rule
//!
//! Names are compared case-insensitively. In order, the first rule that matches decides:
//!
//! 1. the **deny list** ([`Redactor::deny`]): always a secret;
//! 2. the **allow list** ([`Redactor::allow`]): never a secret by name (its values still go through the
//!    shape rules: a `Bearer` token in an allowed header is still removed);
//! 3. names known not to hold secrets although they look like it: `idempotency-key`;
//! 4. names that *contain* a strong fragment: `token`, `secret`, `passw` (password, passwd), `credential`,
//!    `cookie`, `signature`, `authoriz`, `apikey`, `api_key`, `api-key`, `private_key`, `privatekey`,
//!    `session`, `assertion`, `bearer`. This covers `Authorization`, `Proxy-Authorization`, `Cookie`,
//!    `Set-Cookie`, `X-API-Key`, `Api-Key`, `X-Auth-Token`, `access_token`, `client_secret`,
//!    `X-Amz-Signature`, `client_assertion`...
//! 5. names with a *word* equal to a weak fragment: `key`, `auth`, `sig`, `pass`, `pwd`, `jwt`, `otp`.
//!    Words are split at any character that is not a letter or a digit and at camelCase boundaries, so
//!    `key`, `x-api-key`, `apiKey`, `signing_key`, `X-Auth`, `sig` are secrets while `monkey`, `keyword`,
//!    `author` and `passenger` are not. (Matching these as substrings would redact half of every
//!    payload: `author`, `keyboard`, `compass`.)
//!
//! # What is redacted where
//!
//! | input | rule |
//! | --- | --- |
//! | header | by name, or by its value's sensitive mark (which beats the allow list); `Authorization`/`Proxy-Authorization` keep their scheme (`Bearer [REDACTED]`); other values go through the text rule |
//! | URL | userinfo (user and password, as OpenTelemetry asks), query parameters by name; the other parameters' values, percent-decoded, through the text rule (a return URL carrying `?token=`) |
//! | form body | as the query: parameters by name (names are percent-decoded before matching), other values through the text rule |
//! | JSON body | fields by name at any depth, arrays included; a secret field's whole value (even an object or array) becomes `"[REDACTED]"`; other string values go through the text rule. Works on a truncated capture too |
//! | other text (`text/*`, XML) | the text rule |
//!
//! The **text rule** scans free text for `Bearer|Basic|Token|Digest|Negotiate <credential>`, for
//! `name=value`, `name: value`, `"name": "value"` pairs and `<name>value</name>` elements whose name is a
//! secret, and for `scheme://userinfo@` in URLs.
//!
//! # Limits
//!
//! Redaction works by names and shapes; it cannot know that an innocently named field holds a secret
//! (`{"note": "my password is hunter2"}`), nor a secret placed in a URL *path* (`/hooks/T00/B00/XXXX`
//! webhook URLs). Add such names to the deny list, or turn body capture off for that integration.
//! `code` is not a secret by default, so that error codes stay readable; an integration that logs
//! OAuth authorization-code redirects should deny it.
//! Binary bodies are never shown, only their size.
//!
//! ```
//! use integration_core::redact::Redactor;
//!
//! let redactor = Redactor::default().deny(["x-customer-ref"]).allow(["x-request-key"]);
//! let uri: http::Uri = "https://u:p@api.example.com/v1/items?api_key=s3cr3t&page=2".parse().unwrap();
//! assert_eq!(
//!     redactor.redact_url(&uri),
//!     "https://[REDACTED]:[REDACTED]@api.example.com/v1/items?api_key=[REDACTED]&page=2"
//! );
//! let body = br#"{"user":{"name":"ana","password":"hunter2"},"tokens":[{"refresh_token":"r1"}]}"#;
//! assert_eq!(
//!     redactor.redact_body(Some("application/json"), body),
//!     r#"{"user":{"name":"ana","password":"[REDACTED]"},"tokens":"[REDACTED]"}"#
//! );
//! assert!(redactor.is_sensitive("X-Customer-Ref"));
//! assert!(!redactor.is_sensitive("x-request-key"));
//! ```

mod serde_message;

pub use serde_message::serde_message_without_values;

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, LazyLock};

use http::Uri;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The text that replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The default rule, shared by [`Error`](crate::Error)'s formatting (one allocation per process).
static DEFAULT: LazyLock<Redactor> = LazyLock::new(Redactor::default);

/// Free text through the default [text rule](self#what-is-redacted-where), borrowed when nothing was
/// removed: what [`Error`](crate::Error) shows of a foreign cause.
pub(crate) fn default_text(text: &str) -> Cow<'_, str> {
    DEFAULT.text_cow(text)
}

/// Fragments that make a name secret wherever they appear in it.
const STRONG_FRAGMENTS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "credential",
    "cookie",
    "signature",
    "authoriz",
    "apikey",
    "api_key",
    "api-key",
    "private_key",
    "privatekey",
    "session",
    "assertion",
    "bearer",
];

/// Words that make a name secret when they stand alone as one of its words.
const WEAK_WORDS: &[&str] = &["key", "auth", "sig", "pass", "pwd", "jwt", "otp"];

/// Names that look like secrets but are not.
const KNOWN_PUBLIC: &[&str] = &["idempotency-key", "idempotency_key"];

/// Authorization schemes whose credential follows after a space.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate", "ntlm"];

/// The redaction engine. Cheap to clone (one `Arc`); clones share their lists.
///
/// `Redactor::default()` applies the [name rule](self#the-name-rule) with empty allow and deny lists.
///
/// # Clone
///
/// Clones share the same lists: build the redactor once (per integration) and clone it into every
/// layer and error path.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<Rules>,
}

#[derive(Default)]
struct Rules {
    allow: Vec<Box<str>>,
    deny: Vec<Box<str>>,
    /// How many values were redacted: lets the tests show that disabled logging formats nothing.
    #[cfg(any(test, feature = "test-util"))]
    calls: std::sync::atomic::AtomicUsize,
}

impl Redactor {
    /// The default rule, with empty allow and deny lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds names (exact, case-insensitive) that are never secret by name, overriding the default rule.
    #[must_use]
    pub fn allow<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut allow = self.inner.allow.clone();
        allow.extend(
            names
                .into_iter()
                .map(|n| n.as_ref().to_ascii_lowercase().into()),
        );
        self.rebuild(allow, self.inner.deny.clone())
    }

    /// Adds names (exact, case-insensitive) that are always secret, overriding the default rule and the
    /// allow list.
    #[must_use]
    pub fn deny<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut deny = self.inner.deny.clone();
        deny.extend(
            names
                .into_iter()
                .map(|n| n.as_ref().to_ascii_lowercase().into()),
        );
        self.rebuild(self.inner.allow.clone(), deny)
    }

    fn rebuild(&self, allow: Vec<Box<str>>, deny: Vec<Box<str>>) -> Self {
        Self {
            inner: Arc::new(Rules {
                allow,
                deny,
                #[cfg(any(test, feature = "test-util"))]
                calls: Default::default(),
            }),
        }
    }

    /// The allow list, lowercased.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.inner.allow.iter().map(|n| &**n)
    }

    /// The deny list, lowercased.
    pub fn denied(&self) -> impl Iterator<Item = &str> {
        self.inner.deny.iter().map(|n| &**n)
    }

    /// How many times this redactor and its clones have redacted something (a URL, a header value, a
    /// body, a text, an error), counting from its construction or its last [`allow`](Self::allow) /
    /// [`deny`](Self::deny).
    ///
    /// Only with the `test-util` feature: it lets a test show that a disabled log level formats (and
    /// so redacts) nothing. It costs one shared atomic increment per redaction, so leave the feature
    /// to dev-dependencies.
    #[cfg(any(test, feature = "test-util"))]
    pub fn calls(&self) -> usize {
        self.inner.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[inline]
    fn count(&self) {
        #[cfg(any(test, feature = "test-util"))]
        self.inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// True when a value under this name (header, parameter, field, element) is a secret, by the
    /// [name rule](self#the-name-rule).
    pub fn is_sensitive(&self, name: &str) -> bool {
        let lower: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if self.inner.deny.iter().any(|d| **d == *lower) {
            return true;
        }
        if self.inner.allow.iter().any(|a| **a == *lower) {
            return false;
        }
        default_sensitive(name, &lower)
    }

    /// True when the header `name: value` is a secret: its value is marked sensitive
    /// (`HeaderValue::set_sensitive`, as the auth layer marks every header it sets, whatever its
    /// name), or its name is a secret by the [name rule](self#the-name-rule). A sensitive mark wins
    /// over the allow list, which speaks of names only.
    ///
    /// ```
    /// # use integration_core::redact::Redactor;
    /// use http::{HeaderName, HeaderValue};
    ///
    /// let name = HeaderName::from_static("x-passphrase");
    /// let mut value = HeaderValue::from_static("open-sesame");
    /// let redactor = Redactor::default();
    /// assert!(!redactor.is_sensitive_header(&name, &value));
    /// value.set_sensitive(true);
    /// assert!(redactor.is_sensitive_header(&name, &value));
    /// assert_eq!(redactor.redact_header_value(&name, &value), "[REDACTED]");
    /// ```
    pub fn is_sensitive_header(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        value.is_sensitive() || self.is_sensitive(name.as_str())
    }

    /// The URL with its userinfo and its secret query parameters replaced by [`REDACTED`].
    ///
    /// ```
    /// # use integration_core::redact::Redactor;
    /// let uri: http::Uri = "https://api.example.com/search?q=rust&access_token=abc".parse().unwrap();
    /// assert_eq!(Redactor::default().redact_url(&uri), "https://api.example.com/search?q=rust&access_token=[REDACTED]");
    /// ```
    pub fn redact_url(&self, uri: &Uri) -> String {
        let mut out = String::with_capacity(128);
        // Writing into a `String` cannot fail.
        let _ = self.write_url(uri, &mut out);
        out
    }

    /// [`redact_url`](Self::redact_url) written straight into `out` (a formatter, a buffer), with no
    /// intermediate `String`: what a `Display` wrapper formatting the URL for a log line wants.
    ///
    /// ```
    /// # use integration_core::redact::Redactor;
    /// use std::fmt;
    ///
    /// struct Url<'a>(&'a Redactor, &'a http::Uri);
    /// impl fmt::Display for Url<'_> {
    ///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    ///         self.0.write_url(self.1, f)
    ///     }
    /// }
    /// let uri: http::Uri = "https://user:pw@api.example.com/v1?api_key=abc&page=2".parse().unwrap();
    /// assert_eq!(
    ///     Url(&Redactor::default(), &uri).to_string(),
    ///     "https://[REDACTED]:[REDACTED]@api.example.com/v1?api_key=[REDACTED]&page=2"
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// Only those of `out`.
    pub fn write_url(&self, uri: &Uri, out: &mut impl fmt::Write) -> fmt::Result {
        self.count();
        if let Some(scheme) = uri.scheme_str() {
            out.write_str(scheme)?;
            out.write_str("://")?;
        }
        if let Some(authority) = uri.authority() {
            let authority = authority.as_str();
            // A byte scan: `rfind` goes through `memrchr`, ~150 instructions for an authority of a
            // few bytes, on every call whose span is formatted (issue 19).
            match authority.bytes().rposition(|b| b == b'@') {
                Some(at) => {
                    out.write_str(REDACTED)?;
                    if authority[..at].contains(':') {
                        out.write_char(':')?;
                        out.write_str(REDACTED)?;
                    }
                    out.write_str(&authority[at..])?;
                }
                None => out.write_str(authority)?,
            }
        }
        out.write_str(uri.path())?;
        if let Some(query) = uri.query() {
            out.write_char('?')?;
            self.redact_pairs_into(query, out)?;
        }
        Ok(())
    }

    /// The headers, each value redacted by [`redact_header_value`](Self::redact_header_value), as a
    /// value that formats (`Display` and `Debug`) as a map and converts to a `Vec`.
    ///
    /// Nothing is formatted until the result is.
    ///
    /// ```
    /// # use integration_core::redact::Redactor;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("authorization", "Bearer abc.def".parse().unwrap());
    /// headers.insert("accept", "application/json".parse().unwrap());
    /// let redactor = Redactor::default();
    /// assert_eq!(
    ///     redactor.redact_headers(&headers).to_string(),
    ///     r#"{"authorization": "Bearer [REDACTED]", "accept": "application/json"}"#
    /// );
    /// ```
    pub fn redact_headers<'a>(&'a self, headers: &'a HeaderMap) -> RedactedHeaders<'a> {
        RedactedHeaders {
            redactor: self,
            headers,
        }
    }

    /// One header value, redacted: a value [marked sensitive](Self::is_sensitive_header) or under a
    /// secret name gives [`REDACTED`] (keeping the scheme of an `Authorization` value), other values
    /// go through the [text rule](self#what-is-redacted-where).
    pub fn redact_header_value<'v>(
        &self,
        name: &HeaderName,
        value: &'v HeaderValue,
    ) -> Cow<'v, str> {
        self.count();
        let secret = self.is_sensitive_header(name, value);
        let name = name.as_str();
        if secret {
            if matches!(name, "authorization" | "proxy-authorization")
                && let Ok(text) = value.to_str()
                && let Some((scheme, rest)) = text.split_once(' ')
                && !rest.trim().is_empty()
                && !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphabetic())
            {
                return Cow::Owned(format!("{scheme} {REDACTED}"));
            }
            return Cow::Borrowed(REDACTED);
        }
        match value.to_str() {
            Ok(text) => self.text_cow(text),
            Err(_) => Cow::Owned(format!("[{} bytes, not UTF-8]", value.len())),
        }
    }

    /// A body, redacted by its content type: JSON (`application/json`, `*+json`), form
    /// (`application/x-www-form-urlencoded`), other textual types (`text/*`, `*xml`) through the text
    /// rule; anything else is shown as its size only.
    ///
    /// The body may be a truncated capture: JSON is scanned, not parsed, so a cut in the middle of a
    /// document still redacts every secret field before the cut, and a secret value cut in half is
    /// still replaced.
    pub fn redact_body(&self, content_type: Option<&str>, body: &[u8]) -> String {
        self.count();
        match BodyKind::of(content_type) {
            Some(BodyKind::Json) => self.json_str(&String::from_utf8_lossy(body)),
            Some(BodyKind::Form) => {
                let text = String::from_utf8_lossy(body);
                let mut out = String::with_capacity(text.len());
                // Writing into a `String` cannot fail.
                let _ = self.redact_pairs_into(&text, &mut out);
                out
            }
            Some(BodyKind::Text) => self.text_cow(&String::from_utf8_lossy(body)).into_owned(),
            None => format!(
                "[{} bytes of {}]",
                body.len(),
                content_type.unwrap_or("unknown type")
            ),
        }
    }

    /// JSON text with every secret field's value replaced, at any depth (see [`redact_body`](Self::redact_body)).
    pub fn redact_json(&self, json: &str) -> String {
        self.count();
        self.json_str(json)
    }

    /// Free text through the [text rule](self#what-is-redacted-where).
    ///
    /// ```
    /// # use integration_core::redact::Redactor;
    /// let redactor = Redactor::default();
    /// assert_eq!(
    ///     redactor.redact_text("GET https://x.test/?token=abc123 failed: Authorization: Bearer eyJhbGc"),
    ///     "GET https://x.test/?token=[REDACTED] failed: Authorization: [REDACTED]"
    /// );
    /// ```
    pub fn redact_text(&self, text: &str) -> String {
        self.count();
        self.text_cow(text).into_owned()
    }

    /// An error and its chain of causes, joined by `": "`, through the text rule: what the facade and
    /// the logs show of any error.
    pub fn redact_error(&self, error: &(dyn StdError + 'static)) -> String {
        self.count();
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let shown = cause.to_string();
            if !text.ends_with(&shown) {
                text.push_str(": ");
                text.push_str(&shown);
            }
            source = cause.source();
        }
        self.text_cow(&text).into_owned()
    }

    // ---- internals ----

    /// `name=value&...` (query strings, form bodies) with secret values replaced.
    fn redact_pairs_into(&self, pairs: &str, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, pair) in pairs.split('&').enumerate() {
            if i > 0 {
                out.write_char('&')?;
            }
            match pair.split_once('=') {
                Some((name, _)) if self.is_sensitive(&percent_decode(name)) => {
                    out.write_str(name)?;
                    out.write_char('=')?;
                    out.write_str(REDACTED)?;
                }
                // An innocent name may still carry a URL or a query of its own (`next=/cb?token=..`,
                // a webhook URL): its value, decoded, goes through the text rule, and is shown
                // decoded and redacted only when that removed something.
                Some((name, value)) => match self.text_cow(&percent_decode(value)) {
                    Cow::Owned(redacted) => {
                        out.write_str(name)?;
                        out.write_char('=')?;
                        out.write_str(&redacted)?;
                    }
                    Cow::Borrowed(_) => out.write_str(pair)?,
                },
                None => out.write_str(pair)?,
            }
        }
        Ok(())
    }

    fn text_cow<'t>(&self, text: &'t str) -> Cow<'t, str> {
        // Fast path: nothing that the rule could match (no separator, no scheme, no URL, no element).
        let b = text.as_bytes();
        if !b.iter().any(|&c| matches!(c, b'=' | b':' | b' ' | b'>')) {
            return Cow::Borrowed(text);
        }
        let redacted = self.text(text);
        if redacted == text {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(redacted)
        }
    }

    fn text(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if is_word(c) {
                let start = i;
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                out.push_str(word);
                // `Bearer <credential>`
                if let Some(end) = scheme_credential(b, word, i) {
                    out.push(' ');
                    out.push_str(REDACTED);
                    i = end;
                    continue;
                }
                // `<name>value</name>`
                if start > 0
                    && b[start - 1] == b'<'
                    && b.get(i) == Some(&b'>')
                    && self.is_sensitive(word)
                {
                    out.push('>');
                    i += 1;
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'<')
                        .map_or(b.len(), |p| i + p);
                    if end > i {
                        out.push_str(REDACTED);
                    }
                    i = end;
                    continue;
                }
                // `name=value`, `name: value`, `"name": "value"`
                let mut j = i;
                if j < b.len() && matches!(b[j], b'"' | b'\'') && start > 0 && b[start - 1] == b[j]
                {
                    j += 1;
                } else if let Some(&quote) = escaped_quote_at(b, j)
                    && start >= 2
                    && b[start - 2] == b'\\'
                    && b[start - 1] == quote
                {
                    // `\"name\": \"value\"`: JSON inside a JSON string, or a `Debug`-escaped message.
                    j += 2;
                }
                while j < b.len() && matches!(b[j], b' ' | b'\t') {
                    j += 1;
                }
                if j < b.len() && matches!(b[j], b'=' | b':') && self.is_sensitive(word) {
                    // Not a URL scheme (`https://`) nor a `::` path.
                    if b[j] == b':' && matches!(b.get(j + 1), Some(b'/' | b':')) {
                        continue;
                    }
                    j += 1;
                    while j < b.len() && matches!(b[j], b' ' | b'\t') {
                        j += 1;
                    }
                    out.push_str(&text[i..j]);
                    i = value_end_into(b, j, &mut out);
                }
                continue;
            }
            if c == b':' && b[i..].starts_with(b"://") {
                out.push_str("://");
                i += 3;
                let rest = &b[i..];
                let stop = rest
                    .iter()
                    .position(|&c| {
                        matches!(c, b'/' | b'?' | b'#' | b'@')
                            || c.is_ascii_whitespace()
                            || c == b'"'
                            || c == b'\''
                    })
                    .unwrap_or(rest.len());
                if rest.get(stop) == Some(&b'@') && stop > 0 {
                    out.push_str(REDACTED);
                    i += stop;
                }
                continue;
            }
            // Copy one character (whole, when it is not ASCII).
            let len = utf8_len(c);
            let end = (i + len).min(b.len());
            out.push_str(&text[i..end]);
            i = end;
        }
        out
    }

    fn json_str(&self, json: &str) -> String {
        let first = json.trim_start().as_bytes().first().copied();
        if !matches!(first, Some(b'{' | b'[') | None) {
            // Not a JSON document after all (an HTML error page with a JSON content type...).
            return self.text_cow(json).into_owned();
        }
        JsonScan::new(self, json).run()
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("allow", &self.inner.allow)
            .field("deny", &self.inner.deny)
            .finish()
    }
}

fn default_sensitive(name: &str, lower: &str) -> bool {
    if KNOWN_PUBLIC.contains(&lower) {
        return false;
    }
    if STRONG_FRAGMENTS.iter().any(|f| lower.contains(f)) {
        return true;
    }
    WEAK_WORDS.iter().any(|weak| lower.contains(weak))
        && words(name).any(|w| WEAK_WORDS.iter().any(|weak| w.eq_ignore_ascii_case(weak)))
}

/// The words of a name: split at non-alphanumerics and at camelCase boundaries.
fn words(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|part| {
            let b = part.as_bytes();
            let mut cuts = vec![0];
            for i in 1..b.len() {
                if b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase() {
                    cuts.push(i);
                }
            }
            cuts.push(b.len());
            cuts.windows(2)
                .map(|w| &part[w[0]..w[1]])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
        })
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// When `word` is an authorization scheme followed by a space and a credential, the end of the
/// credential.
fn scheme_credential(b: &[u8], word: &str, at: usize) -> Option<usize> {
    if !SCHEMES.iter().any(|s| word.eq_ignore_ascii_case(s)) || b.get(at) != Some(&b' ') {
        return None;
    }
    let mut j = at;
    while j < b.len() && b[j] == b' ' {
        j += 1;
    }
    let start = j;
    while j < b.len() && is_token68(b[j]) {
        j += 1;
    }
    // "the token expired" is prose, not a credential: `Token` wants one of credential length.
    let min = if word.eq_ignore_ascii_case("token") {
        8
    } else {
        1
    };
    (j - start >= min).then_some(j)
}

/// Replaces the value starting at `j` (quoted or bare) with [`REDACTED`], returning its end.
fn value_end_into(b: &[u8], mut j: usize, out: &mut String) -> usize {
    if j >= b.len() {
        return j;
    }
    // Already redacted (a message that went through the rule once, quoted by another): as it is.
    if b[j..].starts_with(REDACTED.as_bytes())
        && b.get(j + REDACTED.len())
            .is_none_or(|&c| is_value_delimiter(c))
    {
        out.push_str(REDACTED);
        return j + REDACTED.len();
    }
    // `\"value\"`: a quoted value inside an escaped string; it ends at the next unescaped-once quote.
    if let Some(&quote) = escaped_quote_at(b, j) {
        out.push('\\');
        out.push(quote as char);
        j += 2;
        while j < b.len() {
            if b[j] == b'\\' && b.get(j + 1) == Some(&quote) {
                out.push_str(REDACTED);
                out.push('\\');
                out.push(quote as char);
                return j + 2;
            }
            // An escaped backslash (`\\\\`) is two bytes of content.
            j += if b[j] == b'\\' && b.get(j + 1) == Some(&b'\\') {
                2
            } else {
                1
            };
        }
        out.push_str(REDACTED);
        return b.len();
    }
    if matches!(b[j], b'"' | b'\'') {
        let quote = b[j];
        out.push(quote as char);
        j += 1;
        while j < b.len() && b[j] != quote {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        out.push_str(REDACTED);
        if j < b.len() {
            out.push(quote as char);
            return j + 1;
        }
        return b.len();
    }
    let start = j;
    while j < b.len() && !is_value_delimiter(b[j]) {
        j += 1;
    }
    if j == start {
        return j;
    }
    out.push_str(REDACTED);
    // `Authorization: Bearer abc`: the scheme word and its credential both go.
    let value = std::str::from_utf8(&b[start..j]).unwrap_or("");
    scheme_credential(b, value, j).unwrap_or(j)
}

/// The quote of a backslash-escaped quote (`\"`, `\'`) starting at `j`.
fn escaped_quote_at(b: &[u8], j: usize) -> Option<&u8> {
    if b.get(j) != Some(&b'\\') {
        return None;
    }
    b.get(j + 1).filter(|q| matches!(q, b'"' | b'\''))
}

fn is_value_delimiter(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'&' | b';' | b',' | b'"' | b'\'' | b'<' | b'>' | b')' | b']' | b'}'
        )
}

/// Percent-decodes a query or form name or value (`+` is a space, as in forms); invalid escapes stay
/// as they are, invalid UTF-8 becomes `U+FFFD`.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
    // `+` first: a `%2B` decodes to a `+` that stays one.
    let spaced = text.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// What a content type says about a body's redaction: how [`Redactor::redact_body`] treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyKind {
    /// `application/json`, `*+json`, `application/x-ndjson`: secret fields by name, at any depth.
    Json,
    /// `application/x-www-form-urlencoded`: secret parameters by name.
    Form,
    /// `text/*`, `*xml`, GraphQL, JavaScript: the text rule.
    Text,
}

impl BodyKind {
    /// The kind of a textual content type; `None` for binary or unknown types, which are never shown
    /// (only their size) and so are not worth capturing.
    ///
    /// ```
    /// use integration_core::redact::BodyKind;
    ///
    /// assert_eq!(BodyKind::of(Some("application/problem+json; charset=utf-8")), Some(BodyKind::Json));
    /// assert_eq!(BodyKind::of(Some("image/png")), None);
    /// ```
    pub fn of(content_type: Option<&str>) -> Option<BodyKind> {
        let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        let (top, sub) = essence.split_once('/')?;
        if sub == "json" || sub.ends_with("+json") || sub == "x-ndjson" {
            Some(BodyKind::Json)
        } else if essence == "application/x-www-form-urlencoded" {
            Some(BodyKind::Form)
        } else if top == "text"
            || sub == "xml"
            || sub.ends_with("+xml")
            || sub == "graphql"
            || sub == "javascript"
        {
            Some(BodyKind::Text)
        } else {
            None
        }
    }
}

/// The formatted, redacted view of a header map. See [`Redactor::redact_headers`].
///
/// `Debug` formats as `Display` does: the redacted map, never the values as they are.
pub struct RedactedHeaders<'a> {
    redactor: &'a Redactor,
    headers: &'a HeaderMap,
}

impl RedactedHeaders<'_> {
    /// The redacted `(name, value)` pairs, in order.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    self.redactor.redact_header_value(name, value).into_owned(),
                )
            })
            .collect()
    }
}

/// Regression (issue 14, part 1): a derived `Debug` showed the header map itself, so
/// `?redactor.redact_headers(..)` in a log line printed an `X-API-Key` that was not marked sensitive.
impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.headers {
            map.entry(
                &name.as_str(),
                &self.redactor.redact_header_value(name, value),
            );
        }
        map.finish()
    }
}

/// A lenient JSON scanner: copies the document, replacing secret fields' values, and survives a cut
/// anywhere (a capture truncated at its cap).
struct JsonScan<'r, 't> {
    redactor: &'r Redactor,
    text: &'t str,
    b: &'t [u8],
    i: usize,
    out: String,
    /// One entry per open container: `true` for an object.
    stack: Vec<bool>,
    /// In an object, the next string is a key.
    expect_key: bool,
    /// The key just read names a secret: its value goes.
    secret: bool,
}

impl<'r, 't> JsonScan<'r, 't> {
    fn new(redactor: &'r Redactor, text: &'t str) -> Self {
        Self {
            redactor,
            text,
            b: text.as_bytes(),
            i: 0,
            out: String::with_capacity(text.len()),
            stack: Vec::new(),
            expect_key: false,
            secret: false,
        }
    }

    fn in_object(&self) -> bool {
        self.stack.last().copied().unwrap_or(false)
    }

    fn run(mut self) -> String {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            match c {
                b'{' | b'[' if self.secret => {
                    self.skip_container();
                    self.replace_value();
                }
                b'{' => {
                    self.out.push('{');
                    self.i += 1;
                    self.stack.push(true);
                    self.expect_key = true;
                }
                b'[' => {
                    self.out.push('[');
                    self.i += 1;
                    self.stack.push(false);
                    self.expect_key = false;
                }
                b'}' | b']' => {
                    self.out.push(c as char);
                    self.i += 1;
                    self.stack.pop();
                    self.expect_key = false;
                }
                b',' => {
                    self.out.push(',');
                    self.i += 1;
                    self.expect_key = self.in_object();
                }
                b':' => {
                    self.out.push(':');
                    self.i += 1;
                    self.expect_key = false;
                }
                b'"' => {
                    let start = self.i;
                    let end = string_end(self.b, start);
                    let raw = &self.text[start..end];
                    self.i = end;
                    if self.in_object() && self.expect_key {
                        let inner = raw.strip_prefix('"').unwrap_or(raw);
                        let inner = inner.strip_suffix('"').unwrap_or(inner);
                        self.secret = self.redactor.is_sensitive(&unescape(inner));
                        self.out.push_str(raw);
                        self.expect_key = false;
                    } else if self.secret {
                        self.replace_value();
                    } else {
                        self.out.push_str(&self.redactor.text_cow(raw));
                    }
                }
                c if c.is_ascii_whitespace() => {
                    self.out.push(c as char);
                    self.i += 1;
                }
                _ => {
                    // A number, a literal, or garbage: up to the next delimiter.
                    let start = self.i;
                    while self.i < self.b.len()
                        && !matches!(
                            self.b[self.i],
                            b',' | b'}' | b']' | b':' | b'"' | b'{' | b'['
                        )
                        && !self.b[self.i].is_ascii_whitespace()
                    {
                        self.i += 1;
                    }
                    if self.i == start {
                        // Cannot happen (every delimiter has its own arm), but never loop forever.
                        self.i += 1;
                    }
                    if self.secret {
                        self.replace_value();
                    } else {
                        self.out.push_str(&self.text[start..self.i]);
                    }
                }
            }
        }
        self.out
    }

    fn replace_value(&mut self) {
        self.out.push('"');
        self.out.push_str(REDACTED);
        self.out.push('"');
        self.secret = false;
    }

    /// Skips a whole object or array (strings respected), or to the end of a truncated one.
    fn skip_container(&mut self) {
        let mut depth = 0usize;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.i = string_end(self.b, self.i);
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// The end (exclusive) of the string starting with the quote at `start`, or the end of the input.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// Decodes the escapes of a JSON string's content (enough to compare names: `"pass\u0077ord"`).
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(decoded) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(decoded);
                }
            }
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_cover_the_design_list() {
        let r = Redactor::default();
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "Cookie",
            "Set-Cookie",
            "X-API-Key",
            "Api-Key",
            "X-Auth-Token",
            "api_key",
            "key",
            "token",
            "access_token",
            "client_secret",
            "password",
            "signature",
            "sig",
            "apiKey",
            "refreshToken",
            "X-Amz-Security-Token",
            "client_assertion",
            "x-auth",
            "signing_key",
        ] {
            assert!(r.is_sensitive(name), "{name} must be secret");
        }
        for name in [
            "author",
            "monkey",
            "keyword",
            "passenger",
            "content-type",
            "idempotency-key",
            "page",
            "x-request-id",
            "code",
        ] {
            assert!(!r.is_sensitive(name), "{name} is not a secret");
        }
    }

    #[test]
    fn deny_beats_allow_beats_default() {
        let r = Redactor::default()
            .allow(["Authorization", "x-ref"])
            .deny(["X-REF"]);
        assert!(!r.is_sensitive("authorization"));
        assert!(r.is_sensitive("x-ref"));
        // Allowed by name, but a bearer credential in the value still goes.
        let value = HeaderValue::from_static("Bearer abcdef");
        assert_eq!(
            r.redact_header_value(&http::header::AUTHORIZATION, &value),
            "Bearer [REDACTED]"
        );
    }

    #[test]
    fn authorization_keeps_its_scheme_only() {
        let r = Redactor::default();
        let h = |v: &'static str| {
            r.redact_header_value(&http::header::AUTHORIZATION, &HeaderValue::from_static(v))
                .into_owned()
        };
        assert_eq!(h("Bearer abc"), "Bearer [REDACTED]");
        assert_eq!(h("Basic dXNlcjpwYXNz"), "Basic [REDACTED]");
        assert_eq!(h("rawtokenvalue"), "[REDACTED]");
        assert_eq!(
            r.redact_header_value(&http::header::COOKIE, &HeaderValue::from_static("a=b; c=d")),
            "[REDACTED]"
        );
    }

    #[test]
    fn urls_lose_userinfo_and_secret_parameters() {
        let r = Redactor::default();
        let url = |s: &str| r.redact_url(&s.parse().unwrap());
        assert_eq!(
            url("https://user:pw@h.test:8443/p?a=1&api%5Fkey=x&sig=y&b"),
            "https://[REDACTED]:[REDACTED]@h.test:8443/p?a=1&api%5Fkey=[REDACTED]&sig=[REDACTED]&b"
        );
        assert_eq!(url("https://tok@h.test/"), "https://[REDACTED]@h.test/");
        assert_eq!(url("/relative?password=x"), "/relative?password=[REDACTED]");
    }

    /// Regression: only a parameter's *name* was checked, so a secret parameter inside the value of
    /// an innocent one (a return URL, a webhook URL) was logged as it was.
    #[test]
    fn regression_a_secret_nested_in_a_parameter_value_is_redacted() {
        let r = Redactor::default();
        let url = |s: &str| r.redact_url(&s.parse().unwrap());
        // Unencoded: `?` and `=` are legal inside a query value.
        assert_eq!(
            url("https://h.test/login?next=/cb?token=SECRET1&page=2"),
            "https://h.test/login?next=/cb?token=[REDACTED]&page=2"
        );
        // Percent-encoded: decoded to be seen, shown decoded only when something was removed.
        assert_eq!(
            url("https://h.test/login?next=%2Fcb%3Fapi_key%3DSECRET2&page=2"),
            "https://h.test/login?next=/cb?api_key=[REDACTED]&page=2"
        );
        assert_eq!(
            url("https://h.test/hook?target=https%3A%2F%2Fu%3ASECRET3%40hooks.test%2Fx"),
            "https://h.test/hook?target=https://[REDACTED]@hooks.test/x"
        );
        // Innocent values are left exactly as they came, encoded or not.
        assert_eq!(
            url("https://h.test/s?q=rust%20tower&next=%2Fhome&x=a:b"),
            "https://h.test/s?q=rust%20tower&next=%2Fhome&x=a:b"
        );
        // Form bodies go through the same rule.
        assert_eq!(
            r.redact_body(
                Some("application/x-www-form-urlencoded"),
                b"redirect=%2Fcb%3Ftoken%3DSECRET4&scope=a+b"
            ),
            "redirect=/cb?token=[REDACTED]&scope=a+b"
        );
    }

    #[test]
    fn json_at_any_depth_and_in_arrays() {
        let r = Redactor::default();
        let body = r#"{"a":[{"b":{"client_secret":"s1","n":1}},{"apiKey":123}],"token":{"x":[1,2]},"ok":"yes","pw":null,"password":true}"#;
        assert_eq!(
            r.redact_json(body),
            r#"{"a":[{"b":{"client_secret":"[REDACTED]","n":1}},{"apiKey":"[REDACTED]"}],"token":"[REDACTED]","ok":"yes","pw":null,"password":"[REDACTED]"}"#
        );
    }

    #[test]
    fn json_cut_anywhere_never_shows_a_secret() {
        let r = Redactor::default();
        let body = r#"{"user": {"name": "ana", "password": "hunter2hunter2", "keys": [{"private_key": {"pem": "SECRETPEM"}}]}, "message": "Bearer abcdefgh"}"#;
        for cut in 0..=body.len() {
            let shown = r.redact_json(&body[..cut]);
            for secret in ["hunter2hunter2", "SECRETPEM", "abcdefgh"] {
                // A prefix of the secret may be shown only if it cannot be told from the document.
                assert!(!shown.contains(secret), "cut {cut}: {shown}");
            }
            assert!(!shown.contains("hunter2h"), "cut {cut}: {shown}");
        }
    }

    #[test]
    fn escaped_json_keys_are_matched_decoded() {
        let r = Redactor::default();
        assert_eq!(
            r.redact_json(r#"{"pass\u0077ord":"x"}"#),
            r#"{"pass\u0077ord":"[REDACTED]"}"#
        );
    }

    #[test]
    fn text_rule_pairs_schemes_elements_and_userinfo() {
        let r = Redactor::default();
        assert_eq!(
            r.redact_text("token=abc&x=1 password: \"p w\" 'secret':'s' Bearer abc.def-_ ok"),
            "token=[REDACTED]&x=1 password: \"[REDACTED]\" 'secret':'[REDACTED]' Bearer [REDACTED] ok"
        );
        assert_eq!(
            r.redact_text("<user><password>pw</password><name>n</name></user>"),
            "<user><password>[REDACTED]</password><name>n</name></user>"
        );
        assert_eq!(
            r.redact_text("dial postgres://app:pw@db:5432/x failed"),
            "dial postgres://[REDACTED]@db:5432/x failed"
        );
        assert_eq!(r.redact_text("the token expired"), "the token expired");
        assert_eq!(r.redact_text("https://h/p"), "https://h/p");
        assert_eq!(r.redact_text("naïve clé=ü"), "naïve clé=ü");
    }

    /// Regression: JSON inside a JSON string (`"{\"password\":\"x\"}"`), or a message shown by
    /// `Debug`, escapes its quotes, and the `"name": "value"` shape did not match it.
    #[test]
    fn regression_escaped_quotes_still_hide_the_value() {
        let r = Redactor::default();
        assert_eq!(
            r.redact_json(r#"{"data":"{\"password\":\"SECRET1\",\"id\":1}"}"#),
            r#"{"data":"{\"password\":\"[REDACTED]\",\"id\":1}"}"#
        );
        assert_eq!(
            r.redact_text(r#"Custom { error: "{\"api_key\": \"SE\\\\CRET2\"}" }"#),
            r#"Custom { error: "{\"api_key\": \"[REDACTED]\"}" }"#
        );
        // Unterminated: everything after the opening quote goes.
        assert_eq!(
            r.redact_text(r#"\"token\":\"SECRET3"#),
            r#"\"token\":\"[REDACTED]"#
        );
    }

    /// Redacting twice changes nothing: a message that went through the rule, quoted in another,
    /// keeps its markers as they are.
    #[test]
    fn redaction_is_idempotent() {
        let r = Redactor::default();
        for text in [
            "api_key=SECRET1 and Authorization: Bearer SECRET2",
            "https://u:p@h.test/?token=SECRET3",
            "<password>SECRET4</password>",
            r#"{"password": "SECRET5"}"#,
        ] {
            let once = r.redact_text(text);
            assert_eq!(r.redact_text(&once), once, "{text}");
        }
        assert_eq!(r.redact_text("key=[REDACTED]"), "key=[REDACTED]");
        assert_eq!(r.redact_text("key=[REDACTED], x"), "key=[REDACTED], x");
    }

    #[test]
    fn names_and_values_are_percent_decoded_like_a_form() {
        assert_eq!(percent_decode("api%5Fkey"), "api_key");
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn form_bodies_by_name() {
        let r = Redactor::default();
        assert_eq!(
            r.redact_body(
                Some("application/x-www-form-urlencoded"),
                b"grant_type=client_credentials&client_secret=s&refresh%5Ftoken=t&scope=a+b"
            ),
            "grant_type=client_credentials&client_secret=[REDACTED]&refresh%5Ftoken=[REDACTED]&scope=a+b"
        );
    }

    #[test]
    fn binary_bodies_show_their_size_only() {
        let r = Redactor::default();
        assert_eq!(
            r.redact_body(Some("application/octet-stream"), b"\x00\x01secret"),
            "[8 bytes of application/octet-stream]"
        );
        assert_eq!(r.redact_body(None, b"abc"), "[3 bytes of unknown type]");
        assert_eq!(
            BodyKind::of(Some("application/problem+json; charset=utf-8")),
            Some(BodyKind::Json)
        );
        assert_eq!(BodyKind::of(Some("text/html")), Some(BodyKind::Text));
        assert_eq!(BodyKind::of(Some("image/png")), None);
    }

    #[test]
    fn error_chains_are_redacted() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("request to https://h.test/?api_key=SECRETKEY failed")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("reset"));
        assert_eq!(
            Redactor::default().redact_error(&error),
            "request to https://h.test/?api_key=[REDACTED] failed: reset"
        );
    }
}
