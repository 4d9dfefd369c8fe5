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
        Ok(Self { url })
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
