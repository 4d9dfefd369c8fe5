//! A configuration that fails to load next to a secret: the error says where (file, key path, line
//! and column) and what kind of mistake it is, never the value nor the source line holding it.
//! toml's own `Display` quotes the whole line (`3 | client_secret = "s3cr3t" oops`), and serde's
//! messages quote the value (``invalid type: integer `123456`, expected a string``).

use integration_config::{Config, ConfigError};
use proptest::prelude::*;

/// Every form the error is shown in: its `Display`, alternate `Display` and `Debug`, and the same
/// of the layer's error it converts into with `?`.
fn shown(error: ConfigError) -> Vec<String> {
    let mut texts = vec![
        error.to_string(),
        format!("{error:#}"),
        format!("{error:?}"),
    ];
    let error = integration_core::Error::from(error);
    texts.extend([
        error.to_string(),
        format!("{error:#}"),
        format!("{error:?}"),
    ]);
    texts
}

fn assert_hidden(error: ConfigError, secret: &str) {
    for text in shown(error) {
        assert!(!text.contains(secret), "the secret is shown: {text}");
    }
}

fn oauth(secret_line: &str) -> String {
    format!(
        "[integrations.crm]\n\
         base_url = \"https://crm.example.com\"\n\
         [integrations.crm.auth]\n\
         type = \"oauth2_client_credentials\"\n\
         token_url = \"https://crm.example.com/oauth/token\"\n\
         client_id = \"app\"\n\
         {secret_line}\n"
    )
}

/// Regression: a syntax error on the line of a secret showed the line, secret included
/// (`invalid TOML: TOML parse error at line 7, column 30 | 7 | client_secret = "..." oops`).
#[test]
fn regression_a_syntax_error_never_quotes_the_line_of_a_secret() {
    let secret = "S3cr3tValueFromTheReport";
    let text = oauth(&format!("client_secret = \"{secret}\" oops"));
    let error = Config::from_toml_str(&text).unwrap_err();
    let display = error.to_string();
    assert!(display.starts_with("invalid TOML: "), "{display}");
    assert!(display.contains("line 7, column 44"), "{display}");
    assert!(
        !display.contains("oops"),
        "the line is not quoted: {display}"
    );
    assert_hidden(error, secret);
}

/// The same through a file: the file is named, with the line and column.
#[test]
fn a_syntax_error_in_a_file_names_the_file_and_the_place_only() {
    let secret = "S3cr3tInAFile0001";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("integrations.toml");
    std::fs::write(&file, oauth(&format!("client_secret = \"{secret}\" oops"))).unwrap();
    let error = Config::from_file(&file).unwrap_err();
    assert_eq!(error.file(), Some(file.as_path()));
    let display = error.to_string();
    assert!(
        display.starts_with(&format!("invalid TOML in {}: ", file.display())),
        "{display}"
    );
    assert!(display.contains("line 7, column"), "{display}");
    assert_hidden(error, secret);
}

/// The error of an integration `pay` whose table holds `line`.
fn pay_with(line: &str) -> ConfigError {
    let text = format!("[integrations.pay]\nbase_url = \"https://pay.example.com\"\n{line}\n");
    Config::from_toml_str(&text).unwrap_err()
}

/// The error says each of `what` (its path and category), and never `secret`.
fn assert_says_without(error: ConfigError, what: &[&str], secret: &str) {
    let display = error.to_string();
    for what in what {
        assert!(display.contains(what), "expected {what:?} in {display}");
    }
    assert_hidden(error, secret);
}

/// Regression: `key = 123456` (a secret written without quotes) said ``invalid type: integer
/// `123456`, expected a string``.
#[test]
fn regression_a_type_error_never_quotes_the_value() {
    assert_says_without(
        pay_with(r#"auth = { type = "api_key", key = 982451653, header = "X-Key" }"#),
        &["integrations.pay.auth", "invalid type: integer"],
        "982451653",
    );
}

/// A secret in a field of another type (a misplaced line), or where a variant's name goes: the
/// path and the category (with the variants expected), no value.
#[test]
fn a_secret_in_the_wrong_place_is_described_not_quoted() {
    let secret = "sk_live_M1splacedSecret";
    for (line, what) in [
        (
            format!(r#"retry = {{ max_attempts = "{secret}" }}"#),
            "integrations.pay.retry.max_attempts: invalid type: string",
        ),
        (
            format!(r#"auth = {{ type = "{secret}" }}"#),
            "unknown variant, expected one of `none`",
        ),
    ] {
        assert_says_without(pay_with(&line), &[what], secret);
    }
}

/// A secret-looking value: letters and digits, and the characters a TOML basic string holds
/// without escapes.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_+/=.-]{12,40}".prop_map(|tail| format!("Zq{tail}"))
}

/// What follows the secret on its line, making it a syntax error.
fn garbage() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![" oops", " = 1", "\"", " \"", ",", " ]", " # ok\nx ="])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the secret, a syntax error on its line never shows it.
    #[test]
    fn a_syntax_error_next_to_any_secret_hides_it(secret in secret(), garbage in garbage()) {
        let text = oauth(&format!("client_secret = \"{secret}\"{garbage}"));
        let error = Config::from_toml_str(&text).unwrap_err();
        for text in shown(error) {
            prop_assert!(!text.contains(&secret), "{}", text);
        }
    }

    /// Whatever the secret, a type error about it never shows it: a string where a number or a
    /// table goes, a number where a string goes.
    #[test]
    fn a_type_error_about_any_secret_hides_it(secret in secret(), number in 100_000_000i64..i64::MAX) {
        for (field, value) in [
            ("retry", format!("\"{secret}\"")),
            ("timeout", format!("[\"{secret}\"]")),
            ("rate_limit", format!("{{ quotas = \"{secret}\" }}")),
            ("auth", format!("{{ type = \"basic\", username = \"u\", password = {number} }}")),
            ("auth", format!("{{ type = \"{secret}\" }}")),
        ] {
            for text in shown(pay_with(&format!("{field} = {value}"))) {
                prop_assert!(!text.contains(&secret), "{}", text);
                prop_assert!(!text.contains(&number.to_string()), "{}", text);
            }
        }
    }
}
