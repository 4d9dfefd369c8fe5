//! Joining a request path under an API's base URL, so that no path can leave the base (no SSRF by path).

use std::borrow::Cow;

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use integration_core::{Error, ErrorKind};
use percent_encoding::percent_decode_str;
use url::{Position, Url};

/// An API's base URL, checked once: `http` or `https`, a host, no query, no fragment, no credentials.
/// Its path is the prefix every request path joins under (`/v1/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    url: Url,
    /// `url`'s scheme and authority, parsed once: every URI [`join_uri`] builds shares them, and
    /// only the path and query are parsed a call (issue 19).
    ///
    /// [`join_uri`]: BaseUrl::join_uri
    scheme: Scheme,
    authority: Authority,
    /// `url`'s path (ends with `/`): the start of every path [`join_uri`] builds by hand.
    ///
    /// [`join_uri`]: BaseUrl::join_uri
    path: String,
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
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        // No credentials (refused above): the authority is the host and the port, as `url` writes
        // them (a default port left out, an IPv6 host in brackets, a name in punycode).
        let authority = Authority::from_maybe_shared(Bytes::copy_from_slice(
            url[Position::BeforeHost..Position::AfterPort].as_bytes(),
        ))
        .map_err(|e| {
            request_error("base URL's host is not a valid URI authority").with_source(e)
        })?;
        let path = url.path().to_owned();
        Ok(Self {
            url,
            scheme,
            authority,
            path,
        })
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
    /// The URI a request is sent to: `path` joined under the base as [`join`](BaseUrl::join) does,
    /// then each of `query` (encoded pairs, `&`-separated after the path's own query) appended.
    ///
    /// A path and query made only of characters that neither need escaping nor could escape the
    /// base (no `%`, `\`, `:`, `#`, space, quote, control or non-ASCII; no `.` or `..` segment) is
    /// joined as text in `path`'s own buffer (the builder leaves room for the base's path), with no
    /// [`Url`] parse and re-serialization, and only the path and query parsed into the URI: the
    /// common case, at a fraction of the cost (issue 19; `the_text_join_is_the_url_join` pins that
    /// the two agree). Anything else takes the general path.
    pub(crate) fn join_uri(&self, path: String, query: &[String]) -> Result<Uri, Error> {
        let path = match self.join_path_as_text(path, query) {
            Ok(path_and_query) => {
                let mut parts = Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = Some(
                    PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))
                        .map_err(not_a_uri)?,
                );
                return Uri::from_parts(parts).map_err(not_a_uri);
            }
            Err(path) => path,
        };
        // From the `String`: its buffer becomes the URI's bytes, no copy.
        Uri::try_from(self.join_with_query(&path, query)?).map_err(not_a_uri)
    }

    /// The general join: [`join`](BaseUrl::join), then `query` appended, as text.
    pub(crate) fn join_with_query(&self, path: &str, query: &[String]) -> Result<String, Error> {
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

    /// The fast path of [`join_uri`](BaseUrl::join_uri): the path and query, written over `path`
    /// (its leading `/` replaced by the base's path), or `path` back, untouched, when it or `query`
    /// holds anything the general path must look at.
    fn join_path_as_text(&self, mut path: String, query: &[String]) -> Result<String, String> {
        // One pass over the bytes: where the path ends, that each byte is plain, and that no
        // segment is `.` or `..`.
        let bytes = path.as_bytes();
        let leading = usize::from(bytes.first() == Some(&b'/'));
        if bytes.get(leading) == Some(&b'/') {
            return Err(path);
        }
        let mut segment = leading;
        let mut end = bytes.len();
        for (i, &byte) in bytes.iter().enumerate().skip(leading) {
            match byte {
                b'?' => {
                    end = i;
                    break;
                }
                b'/' => {
                    if dot_segment(&bytes[segment..i]) {
                        return Err(path);
                    }
                    segment = i + 1;
                }
                _ if !plain_path_byte(byte) => return Err(path),
                _ => {}
            }
        }
        if dot_segment(&bytes[segment..end])
            || !bytes[end..].iter().skip(1).copied().all(plain_query_byte)
            || !query.iter().all(|q| q.bytes().all(plain_query_byte))
        {
            return Err(path);
        }
        let mut query_len = (end < bytes.len()).then(|| bytes.len() - end - 1);
        let extra: usize = query.iter().map(|q| q.len() + 1).sum();
        path.reserve(self.path.len() + extra);
        path.replace_range(..leading, &self.path);
        for part in query {
            match query_len {
                None => path.push('?'),
                Some(len) if len > 0 => path.push('&'),
                Some(_) => {}
            }
            path.push_str(part);
            query_len = Some(query_len.unwrap_or(0) + part.len());
        }
        Ok(path)
    }
}

/// `.` or `..`: a segment the general join refuses (decoded) and the text join leaves to it.
fn dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

fn not_a_uri(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Request)
        .with_message("the joined URL is not a valid URI")
        .with_source(error)
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
        if form.split('/').any(|part| dot_segment(part.as_bytes())) {
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

    /// The text join's full URL, or `None` where it hands the path to the general join.
    fn text_join(b: &BaseUrl, path: &str, query: &[String]) -> Option<String> {
        let path_and_query = b.join_path_as_text(path.to_owned(), query).ok()?;
        Some(format!("{}://{}{path_and_query}", b.scheme, b.authority))
    }

    #[test]
    fn plain_paths_join_as_text() {
        let b = base("https://api.example.com/v1");
        let query = ["page=2".to_owned(), "term=tower+layers".to_owned()];
        assert_eq!(
            text_join(&b, "/users/42?sort=asc", &query).as_deref(),
            Some("https://api.example.com/v1/users/42?sort=asc&page=2&term=tower+layers")
        );
        assert_eq!(
            text_join(&b, "item", &[]).as_deref(),
            Some("https://api.example.com/v1/item")
        );
        assert_eq!(
            text_join(&b, "/x?", &query[..1]).as_deref(),
            Some("https://api.example.com/v1/x?page=2")
        );
        // What must be escaped or checked takes the `Url` join, which refuses or escapes it.
        for path in [
            "/files/a b",
            "/%2e%2e/x",
            "/../x",
            "/x/..",
            "/./x",
            "x/.",
            "..?q=1",
            "users:search",
            "//evil",
            "/x#y",
            "/x?a b",
        ] {
            assert_eq!(text_join(&b, path, &[]), None, "{path}");
            // Handed back untouched.
            assert_eq!(b.join_path_as_text(path.to_owned(), &[]).unwrap_err(), path);
        }
        assert!(
            b.join_uri("/../x".to_owned(), &[])
                .unwrap_err()
                .is_request()
        );
        assert_eq!(
            b.join_uri("/files/a b".to_owned(), &query).unwrap(),
            "https://api.example.com/v1/files/a%20b?page=2&term=tower+layers"
        );
    }

    /// The text join writes over the path's own buffer: with room to spare, it does not grow.
    #[test]
    fn the_text_join_writes_in_the_paths_buffer() {
        let b = base("https://api.example.com/v1/");
        let mut path = String::with_capacity(64);
        path.push_str("/users/42");
        let pointer = path.as_ptr();
        let joined = b.join_path_as_text(path, &["a=1".to_owned()]).unwrap();
        assert_eq!(joined, "/v1/users/42?a=1");
        assert_eq!(joined.as_ptr(), pointer);
    }

    #[test]
    fn the_uri_keeps_the_bases_authority_as_written() {
        for (url, authority, path) in [
            ("https://api.example.com:443/v1", "api.example.com", "/v1/x"),
            (
                "https://api.example.com:8443/",
                "api.example.com:8443",
                "/x",
            ),
            ("http://[::1]:8080/", "[::1]:8080", "/x"),
            ("http://127.0.0.1/", "127.0.0.1", "/x"),
            ("https://BÜCHER.example/", "xn--bcher-kva.example", "/x"),
        ] {
            let uri = base(url).join_uri("/x".to_owned(), &[]).unwrap();
            assert_eq!(uri.authority().unwrap().as_str(), authority, "{url}");
            assert_eq!(uri.path(), path, "{url}");
            assert_eq!(uri.scheme_str(), Some(&url[..url.find(':').unwrap()]));
        }
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
        /// `Url` join and the query appending it skips would have, and the URI it builds from the
        /// base's parsed scheme and authority is the one the general join's text parses into.
        #[test]
        fn the_text_join_is_the_url_join(
            path in "[a-zA-Z0-9./%\\\\:@?#&=~!$'()*+,;_ \"<>`{}|^\\[\\]-]{0,24}",
            query in proptest::collection::vec("[a-z0-9=&%+.*'\"<>#-]{1,8}", 0..3),
        ) {
            for b in [base("https://api.example.com:8443/v1/"), base("http://127.0.0.1:9/")] {
                let Some(fast) = text_join(&b, &path, &query) else { continue };
                let general = b.join_with_query(&path, &query).unwrap();
                prop_assert_eq!(&fast, &general, "{:?} {:?}", path, query);
                let uri = b.join_uri(path.clone(), &query).unwrap();
                prop_assert_eq!(&uri, &Uri::try_from(general).unwrap());
                prop_assert_eq!(uri.to_string(), fast);
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
