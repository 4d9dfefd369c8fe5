//! Turning token endpoint failures into [`AuthFailed`] without ever echoing a secret.
//!
//! The failures themselves are `integration_core::error::AuthFailed`: permanent (with the provider's
//! code) when retrying cannot help, transient otherwise.

use integration_core::error::AuthFailed;
use secrecy::{ExposeSecret, SecretString};

/// The longest description kept from a token endpoint.
const MAX_DESCRIPTION: usize = 200;

/// RFC 6749 §5.2 error codes: the request or the client is wrong, so asking again cannot help.
const FINAL_CODES: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
];

/// A server-supplied text made safe to show: control characters dropped and whitespace collapsed
/// first (so neither can hide a secret from the next step), known secrets removed (as sent and as
/// form-encoded), anything that looks like a token cut, length capped.
pub(crate) fn sanitize(text: &str, secrets: &[&SecretString]) -> String {
    let normalized: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    let mut text = normalized.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets {
        let secret = secret.expose_secret();
        if secret.len() < 4 {
            continue;
        }
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let normalized_secret = secret.split_whitespace().collect::<Vec<_>>().join(" ");
        for form in [secret, encoded.as_str(), normalized_secret.as_str()] {
            if !form.is_empty() {
                text = text.replace(form, "[REDACTED]");
            }
        }
    }
    let mut out = String::with_capacity(text.len().min(MAX_DESCRIPTION));
    for word in text.split(' ') {
        // Tokens and secrets are long unbroken runs, or runs mixing letters and digits; words of
        // prose are neither.
        let word = if looks_like_a_secret(word) {
            "[REDACTED]"
        } else {
            word
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() >= MAX_DESCRIPTION {
            let mut end = MAX_DESCRIPTION;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str("...");
            break;
        }
    }
    out
}

fn looks_like_a_secret(word: &str) -> bool {
    let len = word.chars().count();
    let digits = word.chars().any(|c| c.is_ascii_digit());
    let letters = word.chars().any(char::is_alphabetic);
    len > 40 || (len >= 8 && digits && letters)
}

/// A token URL as an error may show it: without its query and fragment (a parameter may carry a
/// credential) and without userinfo.
pub(crate) fn endpoint(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Fails only for URLs that cannot have userinfo, which then have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The error for an OAuth error response (`{"error": code, "error_description": ...}`).
pub(crate) fn token_error(
    code: &str,
    description: Option<&str>,
    secrets: &[&SecretString],
) -> AuthFailed {
    let code = sanitize(code, secrets);
    let description = match description {
        Some(text) => sanitize(text, secrets),
        None => "the token endpoint refused the request".to_owned(),
    };
    if FINAL_CODES.contains(&code.as_str()) {
        AuthFailed::permanent(code, description)
    } else {
        AuthFailed::transient(format!("token endpoint error ({code}): {description}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_echo_a_secret() {
        let secret = SecretString::from("hunter2-refresh");
        let text = "refresh token hunter2-refresh is expired \u{7} eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijkl";
        let clean = sanitize(text, &[&secret]);
        assert_eq!(clean, "refresh token [REDACTED] is expired [REDACTED]");
        // Someone else's token (not known to us) still looks like one.
        assert_eq!(
            sanitize("token at-0123456789 expired at step 3", &[]),
            "token [REDACTED] expired at step 3"
        );
    }

    #[test]
    fn invalid_grant_is_final_and_keeps_its_code() {
        let error = token_error("invalid_grant", Some("expired"), &[]);
        assert!(error.is_permanent());
        assert_eq!(error.code(), Some("invalid_grant"));
        let error = token_error("temporarily_unavailable", None, &[]);
        assert!(!error.is_permanent());
    }

    #[test]
    fn a_control_character_cannot_hide_a_secret() {
        let secret = SecretString::from("secret/value");
        let clean = sanitize(
            "bad secret/\u{7}value, form-encoded secret%2Fvalue",
            &[&secret],
        );
        assert_eq!(clean, "bad [REDACTED], form-encoded [REDACTED]");
        let spaced = SecretString::from("pass word");
        assert_eq!(sanitize("got pass\t word", &[&spaced]), "got [REDACTED]");
    }

    proptest::proptest! {
        #[test]
        fn sanitising_never_leaks_a_known_secret(
            before in "[ -~\\t\\n\u{7}]{0,60}",
            secret in "[a-z0-9_.~-]{4,30}",
            after in "[ -~\\t\\n\u{7}]{0,60}",
        ) {
            let text = format!("{before}{secret}{after}");
            let clean = sanitize(&text, &[&SecretString::from(secret.clone())]);
            proptest::prop_assert!(!clean.contains(&secret), "{clean}");
            proptest::prop_assert!(clean.len() <= MAX_DESCRIPTION + 3);
        }
    }

    #[test]
    fn long_descriptions_are_capped() {
        let text = "word ".repeat(100);
        assert!(sanitize(&text, &[]).len() <= MAX_DESCRIPTION + 3);
    }
}
