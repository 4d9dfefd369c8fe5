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

/// Regression: `key = 123456` (a secret written without quotes) said ``invalid type: integer
/// `123456`, expected a string``.
#[test]
fn regression_a_type_error_never_quotes_the_value() {
    let text = "[integrations.pay]\n\
                base_url = \"https://pay.example.com\"\n\
                auth = { type = \"api_key\", key = 982451653, header = \"X-Key\" }\n";
    let error = Config::from_toml_str(text).unwrap_err();
    let display = error.to_string();
    assert!(display.contains("integrations.pay.auth"), "{display}");
    assert!(display.contains("invalid type: integer"), "{display}");
    assert_hidden(error, "982451653");
}

/// A secret in a field of another type (a misplaced line): the path and the category, no value.
#[test]
fn a_secret_in_a_numeric_field_is_not_quoted() {
    let secret = "sk_live_M1splacedSecret";
    let text = format!(
        "[integrations.pay]\n\
         base_url = \"https://pay.example.com\"\n\
         retry = {{ max_attempts = \"{secret}\" }}\n"
    );
    let error = Config::from_toml_str(&text).unwrap_err();
    let display = error.to_string();
    assert!(
        display.contains("integrations.pay.retry.max_attempts: invalid type: string"),
        "{display}"
    );
    assert_hidden(error, secret);
}

/// The category is kept for the shapes that quote a value: an unknown variant says which ones
/// were expected.
#[test]
fn an_unknown_variant_lists_the_expected_ones_without_the_value() {
    let secret = "S3cr3tAsAnAuthType";
    let text = format!(
        "[integrations.pay]\n\
         base_url = \"https://pay.example.com\"\n\
         auth = {{ type = \"{secret}\" }}\n"
    );
    let error = Config::from_toml_str(&text).unwrap_err();
    let display = error.to_string();
    assert!(display.contains("unknown variant, expected"), "{display}");
    assert_hidden(error, secret);
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
            let text = format!(
                "[integrations.x]\nbase_url = \"https://x.example.com\"\n{field} = {value}\n"
            );
            let error = Config::from_toml_str(&text).unwrap_err();
            for text in shown(error) {
                prop_assert!(!text.contains(&secret), "{}", text);
                prop_assert!(!text.contains(&number.to_string()), "{}", text);
            }
        }
    }
}
