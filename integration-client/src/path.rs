//! Joining a request path under an API's base URL, so that no path can leave the base (no SSRF by path).

use std::borrow::Cow;

use integration_core::{Error, ErrorKind};
use percent_encoding::percent_decode_str;
use url::Url;

/// An API's base URL, checked once: `http` or `https`, a host, no query, no fragment, no credentials.
/// Its path is the prefix every request path joins under (`/v1/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    url: Url,
    /// `url` as text (ends with `/`): the start of every URL [`join_with_query`] builds by hand.
    ///
    /// [`join_with_query`]: BaseUrl::join_with_query
    prefix: String,
}

impl BaseUrl {
    pub(crate) fn new(url: &Url) -> Result<Self, Error> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(request_error("base URL must use http or https"));
        }
        if url.host().is_none() {
            return Err(request_error("base URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(request_error("base URL must not carry credentials"));
        }
        let mut url = url.clone();
        url.set_query(None);
        url.set_fragment(None);
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let prefix = url.as_str().to_owned();
        Ok(Self { url, prefix })
    }

    /// The base, with its path ending in `/`.
    pub(crate) fn as_url(&self) -> &Url {
        &self.url
    }

    /// Joins `path` (with an optional `?query`) under the base.
    ///
    /// Refused with [`ErrorKind::Request`]: an absolute or scheme-relative URL, a backslash (raw or
    /// percent-encoded), a `.` or `..` segment (raw, percent-encoded, or hidden behind an encoded
    /// slash), a fragment, a control character.
    pub(crate) fn join(&self, path: &str) -> Result<Url, Error> {
        let (path_part, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        if path.contains('#') {
            return Err(refused("a fragment"));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(refused("a control character"));
        }
        if path_part.starts_with("//") {
            return Err(refused("a scheme-relative URL"));
        }
        if path_part.contains('\\') {
            return Err(refused("a backslash"));
        }
        if has_scheme(path_part) {
            return Err(refused("an absolute URL"));
        }
        let relative = path_part.strip_prefix('/').unwrap_or(path_part);
        for segment in relative.split('/') {
            check_segment(segment)?;
        }
        let mut url = self.url.clone();
        // `set_path` percent-encodes what a path cannot hold (spaces, quotes) and leaves existing
        // escapes alone, so an id written `group%2Fproject` stays one segment.
        url.set_path(&format!("{}{relative}", self.url.path()));
        if let Some(query) = query {
            url.set_query(Some(query));
        }
        // Defence in depth: whatever happened above, the result stays under the base.
        if url.origin() != self.url.origin() || !url.path().starts_with(self.url.path()) {
            return Err(refused("a path outside the base URL"));
        }
        Ok(url)
    }
}

impl BaseUrl {
    /// Joins `path` under the base as [`join`](BaseUrl::join) does, then appends each of `query`
    /// (encoded pairs, `&`-separated after the path's own query): the URL a request is sent to.
    ///
    /// A path and query made only of characters that neither need escaping nor could escape the
    /// base (no `%`, `\`, `:`, `#`, space, quote, control or non-ASCII; no `.` or `..` segment) is
    /// joined as text, with no [`Url`] parse and re-serialization: the common case, at a fraction of
    /// the cost (issue 19; `join_with_query_as_text_is_the_url_join` pins that the two agree).
    /// Anything else takes the general path.
    pub(crate) fn join_with_query(&self, path: &str, query: &[String]) -> Result<String, Error> {
        if let Some(joined) = self.join_as_text(path, query) {
            return Ok(joined);
        }
        let mut url = self.join(path)?;
        if !query.is_empty() {
            let mut all = url.query().map(str::to_owned).unwrap_or_default();
            for part in query {
                if !all.is_empty() {
                    all.push('&');
                }
                all.push_str(part);
            }
            url.set_query(Some(&all));
        }
        Ok(String::from(url))
    }

    /// The fast path of [`join_with_query`](BaseUrl::join_with_query): `None` when `path` or `query`
    /// holds anything the general path must look at.
    fn join_as_text(&self, path: &str, query: &[String]) -> Option<String> {
        let (path_part, own_query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        if path_part.starts_with("//") {
            return None;
        }
        let relative = path_part.strip_prefix('/').unwrap_or(path_part);
        if !relative.bytes().all(plain_path_byte)
            || relative
                .split('/')
                .any(|segment| segment == "." || segment == "..")
            || !own_query.is_none_or(|q| q.bytes().all(plain_query_byte))
            || !query.iter().all(|q| q.bytes().all(plain_query_byte))
        {
            return None;
        }
        let extra: usize = query.iter().map(|q| q.len() + 1).sum();
        let mut joined = String::with_capacity(
            self.prefix.len() + relative.len() + own_query.map_or(0, |q| q.len() + 1) + extra,
        );
        joined.push_str(&self.prefix);
        joined.push_str(relative);
        let mut query_len = None;
        if let Some(own) = own_query {
            joined.push('?');
            joined.push_str(own);
            query_len = Some(own.len());
        }
        for part in query {
            match query_len {
                None => joined.push('?'),
                Some(len) if len > 0 => joined.push('&'),
                Some(_) => {}
            }
            joined.push_str(part);
            query_len = Some(query_len.unwrap_or(0) + part.len());
        }
        Some(joined)
    }
}

/// A path byte `Url::set_path` keeps as it is and `join` has nothing to check in: unreserved,
/// sub-delimiters but `'`, `@` and `/` (no `%`, `:`, `\`, `?`, `#`, quote, space, control...).
fn plain_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'@'
                | b'/'
        )
}

/// A query byte `Url::set_query` keeps as it is: printable ASCII but `"`, `#`, `'`, `<`, `>`.
fn plain_query_byte(byte: u8) -> bool {
    byte.is_ascii_graphic() && !matches!(byte, b'"' | b'#' | b'\'' | b'<' | b'>')
}

/// An absolute URL written as a path: `scheme://` anywhere, or a first segment that starts with a URL
/// scheme a client would follow (`http:`, `https:`, `file:`, `data:`...).
///
/// A colon elsewhere is an ordinary path character: `users:search` and `v1/projects:list` (Google-style
/// custom methods) join as paths, since the path is never re-parsed as a URL here.
fn has_scheme(path: &str) -> bool {
    if path.contains("://") {
        return true;
    }
    let first = path.split('/').next().unwrap_or("");
    let Some((scheme, _)) = first.split_once(':') else {
        return false;
    };
    const SCHEMES: [&str; 12] = [
        "http",
        "https",
        "ws",
        "wss",
        "ftp",
        "ftps",
        "file",
        "data",
        "javascript",
        "mailto",
        "gopher",
        "blob",
    ];
    SCHEMES
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known))
}

fn check_segment(segment: &str) -> Result<(), Error> {
    let decoded: Cow<'_, str> = percent_decode_str(segment).decode_utf8_lossy();
    // Decoding once more catches double encoding (`%252e%252e`), which some servers undo twice.
    let twice: Cow<'_, str> = percent_decode_str(&decoded)
        .decode_utf8_lossy()
        .into_owned()
        .into();
    for form in [&decoded, &twice] {
        if form.contains('\\') {
            return Err(refused("an encoded backslash"));
        }
        if form.split('/').any(|part| part == "." || part == "..") {
            return Err(refused("a dot segment"));
        }
    }
    Ok(())
}

fn refused(what: &'static str) -> Error {
    Error::new(ErrorKind::Request).with_message(format!(
        "path refused: {what} could leave the API's base URL"
    ))
}

fn request_error(message: &'static str) -> Error {
    Error::new(ErrorKind::Request).with_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base(url: &str) -> BaseUrl {
        BaseUrl::new(&Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn paths_join_under_the_prefix() {
        let b = base("https://api.example.com/v1");
        assert_eq!(
            b.join("/users/42").unwrap().as_str(),
            "https://api.example.com/v1/users/42"
        );
        assert_eq!(
            b.join("users/42").unwrap().as_str(),
            "https://api.example.com/v1/users/42"
        );
        assert_eq!(b.join("").unwrap().as_str(), "https://api.example.com/v1/");
        assert_eq!(b.join("/").unwrap().as_str(), "https://api.example.com/v1/");
        assert_eq!(
            b.join("/search?q=rust&page=2").unwrap().as_str(),
            "https://api.example.com/v1/search?q=rust&page=2"
        );
        assert_eq!(
            b.join("/v1/projects:list").unwrap().as_str(),
            "https://api.example.com/v1/v1/projects:list"
        );
        assert_eq!(
            b.join("users:search").unwrap().as_str(),
            "https://api.example.com/v1/users:search"
        );
        assert_eq!(
            b.join("/files/a b").unwrap().as_str(),
            "https://api.example.com/v1/files/a%20b"
        );
        // GitLab-style encoded slashes in an id stay encoded.
        assert_eq!(
            b.join("/projects/group%2Fproject").unwrap().as_str(),
            "https://api.example.com/v1/projects/group%2Fproject"
        );
    }

    #[test]
    fn plain_paths_join_as_text() {
        let b = base("https://api.example.com/v1");
        let query = ["page=2".to_owned(), "term=tower+layers".to_owned()];
        assert_eq!(
            b.join_as_text("/users/42?sort=asc", &query).as_deref(),
            Some("https://api.example.com/v1/users/42?sort=asc&page=2&term=tower+layers")
        );
        assert_eq!(
            b.join_as_text("item", &[]).as_deref(),
            Some("https://api.example.com/v1/item")
        );
        // What must be escaped or checked takes the `Url` join, which refuses or escapes it.
        for path in [
            "/files/a b",
            "/%2e%2e/x",
            "/../x",
            "users:search",
            "//evil",
            "/x#y",
        ] {
            assert_eq!(b.join_as_text(path, &[]), None, "{path}");
        }
        assert!(b.join_with_query("/../x", &[]).unwrap_err().is_request());
        assert_eq!(
            b.join_with_query("/files/a b", &query).unwrap(),
            "https://api.example.com/v1/files/a%20b?page=2&term=tower+layers"
        );
    }

    #[test]
    fn path_escape_is_refused() {
        let b = base("https://api.example.com/v1/");
        for path in [
            "https://evil.example/x",
            "http:evil",
            "HTTPS:/evil.example",
            "file:///etc/passwd",
            "/a/https://evil.example/",
            "//evil.example/x",
            "/../admin",
            "../admin",
            "/users/../../admin",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/%252e%252e/admin",
            "/users/..%2f..%2fadmin",
            "\\\\evil.example",
            "/users\\..\\admin",
            "/users/%5c..",
            "/./x",
            "/x#@evil.example",
            "/x\r\nHost: evil",
        ] {
            let error = b.join(path).unwrap_err();
            assert!(error.is_request(), "{path}: {error}");
        }
    }

    #[test]
    fn a_query_cannot_change_the_origin() {
        let b = base("https://api.example.com/v1/");
        let url = b
            .join("/x?@evil.example/&next=//evil.example&redirect_uri=https://app.example/cb")
            .unwrap();
        assert_eq!(url.host_str(), Some("api.example.com"));
        assert!(url.path().starts_with("/v1/"));
    }

    #[test]
    fn base_url_must_be_http_with_a_host_and_no_credentials() {
        for bad in ["ftp://example.com/", "https://user:pw@example.com/"] {
            assert!(BaseUrl::new(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(BaseUrl::new(&Url::parse("data:text/plain,x").unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn no_generated_path_leaves_the_base(path in "[a-z0-9./%\\\\:@?#&=A-F ]{0,24}") {
            let b = base("https://api.example.com:8443/v1/");
            if let Ok(url) = b.join(&path) {
                prop_assert_eq!(url.origin(), b.as_url().origin());
                prop_assert!(url.path().starts_with("/v1/"), "{} -> {}", path, url);
                for segment in url.path_segments().unwrap() {
                    let decoded = percent_decode_str(segment).decode_utf8_lossy();
                    prop_assert!(decoded != "." && decoded != "..", "{} -> {}", path, url);
                }
            }
        }

        /// Regression guard of the text join (issue 19): wherever it answers, it answers what the
        /// `Url` join and the query appending it skips would have.
        #[test]
        fn join_with_query_as_text_is_the_url_join(
            path in "[a-zA-Z0-9./%\\\\:@?#&=~!$'()*+,;_ \"<>`{}|^\\[\\]-]{0,24}",
            query in proptest::collection::vec("[a-z0-9=&%+.*'\"<>#-]{1,8}", 0..3),
        ) {
            for b in [base("https://api.example.com:8443/v1/"), base("http://127.0.0.1:9/")] {
                let Some(fast) = b.join_as_text(&path, &query) else { continue };
                let mut url = b.join(&path).unwrap();
                if !query.is_empty() {
                    let mut all = url.query().map(str::to_owned).unwrap_or_default();
                    for part in &query {
                        if !all.is_empty() {
                            all.push('&');
                        }
                        all.push_str(part);
                    }
                    url.set_query(Some(&all));
                }
                prop_assert_eq!(&fast, url.as_str(), "{:?} {:?}", path, query);
                prop_assert_eq!(b.join_with_query(&path, &query).unwrap(), fast);
            }
        }

        #[test]
        fn no_generated_path_with_dot_runs_escapes(
            parts in proptest::collection::vec(prop_oneof![
                Just("..".to_string()), Just("%2e%2e".to_string()), Just("%2E.".to_string()),
                Just(".".to_string()), Just("a".to_string()), Just("%2f".to_string()),
                Just("%5c".to_string()), Just("".to_string()), Just("//".to_string()),
            ], 0..8)
        ) {
            let b = base("http://127.0.0.1:9/prefix/");
            let path = parts.join("/");
            if let Ok(url) = b.join(&path) {
                prop_assert_eq!(url.origin(), b.as_url().origin());
                prop_assert!(url.path().starts_with("/prefix/"), "{} -> {}", path, url);
            }
        }
    }
}
