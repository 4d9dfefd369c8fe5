//! The redirect policy of the transport: bounded, credential-stripping across origins, never downgrading.

use http::uri::Scheme;
use http::{HeaderName, HeaderValue};
use integration_core::{Body, BoxError, Error, ErrorKind};
use integration_log::redact::Redactor;
use tower_http::follow_redirect::policy::{Action, Attempt, Policy};

/// The default bound on redirects followed for one request.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// True for a request header that carries a credential, by the log crate's redaction rule
/// ([`Redactor`]'s name rule): `Authorization`, `Proxy-Authorization`, `Cookie`, and API-key style
/// headers (`X-Api-Key`, `Api-Key`, `X-Auth-Token`, anything with `token`, `secret`, `apikey`...).
///
/// One rule for what is hidden in logs and what is dropped on a cross-origin redirect. The redirect
/// policy also drops, whatever its name, every header whose value is marked sensitive
/// (`HeaderValue::set_sensitive`): the auth layer marks every header it sets, so an API key in
/// `X-Passphrase` never reaches another origin either.
pub fn is_credential_header(name: &HeaderName) -> bool {
    Redactor::default().is_sensitive(name.as_str())
}

/// The redirect policy: follows at most `max` redirects, drops credential headers (by name, or marked
/// sensitive) once the origin changes (and for the rest of the chain), refuses `https` to `http`, and
/// replays a body only when it is replayable.
#[derive(Debug, Clone)]
pub(crate) struct RedirectPolicy {
    max: usize,
    followed: usize,
    redactor: Redactor,
    /// Set by `redirect` when the hop about to be made leaves the previous origin.
    cross_origin: bool,
}

impl RedirectPolicy {
    pub(crate) fn new(max: usize, redactor: Redactor) -> Self {
        Self {
            max,
            followed: 0,
            redactor,
            cross_origin: false,
        }
    }

    fn is_sensitive(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        self.redactor.is_sensitive_header(name, value)
    }
}

fn origin(uri: &http::Uri) -> (Option<&str>, Option<&str>, Option<u16>) {
    let scheme = uri.scheme_str();
    let port = uri
        .port_u16()
        .or(integration_core::authority::default_port(scheme));
    (scheme, uri.host(), port)
}

impl Policy<Body, BoxError> for RedirectPolicy {
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, BoxError> {
        if attempt.previous().scheme() == Some(&Scheme::HTTPS)
            && attempt.location().scheme() != Some(&Scheme::HTTPS)
        {
            return Err(Box::new(
                Error::new(ErrorKind::Request)
                    .with_message("redirect from https to http refused (downgrade)"),
            ));
        }
        if self.followed >= self.max {
            return Err(Box::new(
                Error::new(ErrorKind::Request)
                    .with_message(format!("too many redirects (limit {})", self.max)),
            ));
        }
        self.followed += 1;
        self.cross_origin = origin(attempt.previous()) != origin(attempt.location());
        Ok(Action::Follow)
    }

    fn on_request(&mut self, request: &mut http::Request<Body>) {
        if !self.cross_origin {
            return;
        }
        // The follow-redirect service carries these headers forward, so once dropped they stay
        // dropped for every later hop, even one that returns to the first origin.
        let mut sensitive: Vec<HeaderName> = request
            .headers()
            .iter()
            .filter(|(name, value)| self.is_sensitive(name, value))
            .map(|(name, _)| name.clone())
            .collect();
        sensitive.dedup();
        for name in sensitive {
            request.headers_mut().remove(name);
        }
    }

    fn clone_body(&self, body: &Body) -> Option<Body> {
        body.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_recognised() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "api-key",
            "x-auth-token",
            "x-client-secret",
            "apikey",
        ] {
            assert!(
                is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in [
            "accept",
            "content-type",
            "user-agent",
            "idempotency-key",
            "author",
        ] {
            assert!(
                !is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    /// Regression (issue 14, part 1): an API key in `X-Passphrase` went to another origin on a
    /// redirect, since only names the redaction rule guesses were dropped; the auth layer marks the
    /// value sensitive, and a sensitive value is dropped whatever its name.
    #[test]
    fn regression_a_sensitive_header_is_dropped_across_origins_whatever_its_name() {
        let request = || {
            let mut key = HeaderValue::from_static("k-123");
            key.set_sensitive(true);
            http::Request::builder()
                .uri("http://127.0.0.1:2000/landing")
                .header("x-passphrase", key)
                .header("x-trace", "t-1")
                .body(Body::empty())
                .unwrap()
        };
        // What `redirect` decided for the hop (tower-http's `Attempt` cannot be built outside it;
        // the end-to-end tests go through `redirect` itself).
        let mut policy = RedirectPolicy::new(5, Redactor::default());
        policy.cross_origin = true;
        let mut cross = request();
        policy.on_request(&mut cross);
        assert!(!cross.headers().contains_key("x-passphrase"));
        assert_eq!(cross.headers()["x-trace"], "t-1", "only credentials go");

        policy.cross_origin = false;
        let mut kept = request();
        policy.on_request(&mut kept);
        assert_eq!(
            kept.headers()["x-passphrase"],
            "k-123",
            "same origin keeps it"
        );
    }

    #[test]
    fn default_ports_make_the_same_origin() {
        let a: http::Uri = "https://example.com/a".parse().unwrap();
        let b: http::Uri = "https://example.com:443/b".parse().unwrap();
        let c: http::Uri = "https://example.com:8443/b".parse().unwrap();
        assert_eq!(origin(&a), origin(&b));
        assert_ne!(origin(&a), origin(&c));
    }
}
