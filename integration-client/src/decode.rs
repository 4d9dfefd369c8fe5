//! JSON decoding of response bodies whose errors say where and why, never what.
//!
//! serde's messages quote the offending value (`invalid type: string "4111 1111 1111 1111",
//! expected u64`), and a response body may hold anything: card numbers, tokens, personal data. A
//! [`JsonError`] keeps what helps to fix the mismatch (the category, the path of the field, the line
//! and column, what the type expected) and drops every piece of the body's content.

use std::error::Error as StdError;
use std::fmt;

use serde::de::DeserializeOwned;

/// Why a body did not decode as the expected JSON: the category, the path of the field, the line
/// and column, and what was expected, without any of the body's content.
///
/// It is the [`source`](std::error::Error::source) of the [`ErrorKind::Body`](integration_core::ErrorKind::Body)
/// error of [`Response::json`](crate::Response::json) and of a GraphQL response that does not decode.
///
/// ```
/// use integration_client::JsonError;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Charge { amount: u64 }
///
/// let body = br#"{"amount": "4111 1111 1111 1111"}"#;
/// let error = JsonError::decode::<Charge>(body).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid type: string, expected u64 at `amount` (line 1, column 32)"
/// );
/// assert!(error.is_data());
/// assert_eq!(error.path(), "amount");
/// assert!(!format!("{error:?}").contains("4111"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct JsonError {
    category: Category,
    description: String,
    /// `None` at the root of the document.
    path: Option<String>,
    line: usize,
    column: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Io,
    Syntax,
    Data,
    Eof,
}

impl JsonError {
    /// Decodes `bytes` as a `T`, as `serde_json::from_slice` does (trailing characters refused),
    /// with the path of the field that did not fit.
    ///
    /// # Errors
    ///
    /// The [`JsonError`] when the document is not JSON or not a `T`.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(Self::from_path)?;
        deserializer.end().map_err(|e| Self::new(&e, None))?;
        Ok(value)
    }

    /// Converts an already parsed `value` into a `T`, with the path of the field that did not fit
    /// (no line or column: the text is gone).
    ///
    /// # Errors
    ///
    /// The [`JsonError`] when `value` is not a `T`.
    pub fn convert<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, JsonError> {
        serde_path_to_error::deserialize(value).map_err(Self::from_path)
    }

    fn from_path(error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path();
        let path = (path.iter().next().is_some()).then(|| path.to_string());
        Self::new(error.inner(), path)
    }

    fn new(error: &serde_json::Error, path: Option<String>) -> Self {
        use serde_json::error::Category as C;
        let category = match error.classify() {
            C::Io => Category::Io,
            C::Syntax => Category::Syntax,
            C::Data => Category::Data,
            C::Eof => Category::Eof,
        };
        let message = error.to_string();
        let message = if error.line() > 0 {
            let suffix = format!(" at line {} column {}", error.line(), error.column());
            message
                .strip_suffix(&suffix)
                .map(str::to_owned)
                .unwrap_or(message)
        } else {
            message
        };
        let description = match category {
            // serde_json's own messages for these are fixed texts (`expected value`, `EOF while
            // parsing a string`, `trailing characters`...): none quotes the input.
            Category::Syntax | Category::Eof => message,
            Category::Io => "the body could not be read".to_owned(),
            Category::Data => describe_data(&message),
        };
        Self {
            category,
            description,
            path,
            line: error.line(),
            column: error.column(),
        }
    }

    /// The path of the field that did not fit (`items[2].amount`), `"."` for the document itself.
    /// A segment is a field name of the expected type, an index, or the key of a map as the body
    /// wrote it.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(".")
    }

    /// The line (from 1) where decoding stopped; 0 when the JSON had been parsed already.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column (from 1) where decoding stopped; 0 when the JSON had been parsed already.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The document is not JSON (a stray character, a bad escape, trailing characters).
    pub fn is_syntax(&self) -> bool {
        self.category == Category::Syntax
    }

    /// The document is JSON, but not of the expected shape (a string for a number, a missing field).
    pub fn is_data(&self) -> bool {
        self.category == Category::Data
    }

    /// The document ended too early (a truncated body).
    pub fn is_eof(&self) -> bool {
        self.category == Category::Eof
    }
}

/// A data error's message without the value it quotes
/// ([`serde_message_without_values`](integration_core::redact::serde_message_without_values)), and
/// without the name of an unknown field: a response's keys are its data too.
fn describe_data(message: &str) -> String {
    let description = integration_core::redact::serde_message_without_values(message);
    match description.strip_prefix("unknown field `") {
        Some(rest) => match rest.rfind(", expected ") {
            Some(at) => format!("unknown field, {}", &rest[at + 2..]),
            None => "unknown field".to_owned(),
        },
        None => description,
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)?;
        if let Some(path) = &self.path {
            write!(f, " at `{path}`")?;
        }
        if self.line > 0 {
            write!(f, " (line {}, column {})", self.line, self.column)?;
        }
        Ok(())
    }
}

impl fmt::Debug for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonError")
            .field("category", &self.category)
            .field("description", &self.description)
            .field("path", &self.path())
            .field("line", &self.line)
            .field("column", &self.column)
            .finish()
    }
}

impl StdError for JsonError {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        id: u64,
        kind: Kind,
        tags: [String; 2],
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Card,
        Bank,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Page {
        items: Vec<Item>,
        counts: HashMap<String, u32>,
    }

    fn decode_page(body: &str) -> JsonError {
        JsonError::decode::<Page>(body.as_bytes()).unwrap_err()
    }

    const OK_ITEM: &str = r#"{"id": 1, "kind": "card", "tags": ["a", "b"]}"#;

    /// Regression (issue 14, part 2): `Response::json` said `invalid type: string "not-a-number",
    /// expected u64`, echoing the body. Each serde data error keeps its category, the path and the
    /// position, and loses the value.
    #[test]
    fn regression_data_errors_keep_the_path_and_lose_the_value() {
        let cases = [
            (
                r#"{"items": [{"id": "SECRET-1", "kind": "card", "tags": ["a", "b"]}], "counts": {}}"#,
                "invalid type: string, expected u64 at `items[0].id` (line 1, column 28)",
            ),
            (
                &format!(
                    r#"{{"items": [{OK_ITEM}, {{"id": 2, "kind": "SECRET-2", "tags": ["a", "b"]}}], "counts": {{}}}}"#
                ),
                "unknown variant, expected `card` or `bank` at `items[1].kind` (line 1, column 86)",
            ),
            (
                r#"{"items": [{"id": 1, "kind": "card", "tags": ["a", "b"], "SECRET-3": 1}], "counts": {}}"#,
                "unknown field, expected one of `id`, `kind`, `tags` at `items[0].SECRET-3` (line 1, column 67)",
            ),
            (
                r#"{"items": [{"id": 1, "kind": "card", "tags": ["SECRET-4"]}], "counts": {}}"#,
                "invalid length 1, expected an array of length 2 at `items[0].tags` (line 1, column 57)",
            ),
            (
                r#"{"items": [{"id": -7, "kind": "card", "tags": ["a", "b"]}], "counts": {}}"#,
                "invalid value: integer, expected u64 at `items[0].id` (line 1, column 20)",
            ),
            (
                r#"{"items": [], "counts": {"k": true}}"#,
                "invalid type: boolean, expected u32 at `counts.k` (line 1, column 34)",
            ),
            (
                r#"{"items": []}"#,
                "missing field `counts` (line 1, column 13)",
            ),
        ];
        for (body, expected) in cases {
            let error = decode_page(body);
            assert!(error.is_data(), "{body}: {error:?}");
            assert_eq!(error.to_string(), expected, "{body}");
            for secret in ["SECRET-1", "SECRET-2", "SECRET-4"] {
                assert!(!format!("{error} {error:?}").contains(secret), "{error}");
            }
        }
    }

    #[test]
    fn syntax_and_eof_errors_say_where() {
        let error = decode_page(r#"{"items": [SECRET]}"#);
        assert!(error.is_syntax());
        assert_eq!(
            error.to_string(),
            "expected value at `items[0]` (line 1, column 12)"
        );
        let error = decode_page(r#"{"items": [], "counts": {"a": 1}} SECRET"#);
        assert!(error.is_syntax());
        assert_eq!(error.path(), ".");
        assert_eq!(error.to_string(), "trailing characters (line 1, column 35)");
        let error = decode_page(r#"{"items": [{"id": 1, "kind": "SECR"#);
        assert!(error.is_eof());
        assert_eq!((error.line(), error.column()), (1, 34));
        assert!(!error.to_string().contains("SECR"), "{error}");
    }

    #[test]
    fn a_custom_message_is_not_shown() {
        assert_eq!(describe_data("bad card 4111 1111"), "invalid value");
        // The value holds the words the parser looks for: the last `, expected ` is the type's.
        assert_eq!(
            describe_data(r#"invalid type: string "x, expected SECRET", expected u64"#),
            "invalid type: string, expected u64"
        );
    }

    #[test]
    fn a_converted_value_has_a_path_and_no_position() {
        let value = serde_json::json!({"items": [], "counts": {"a": "SECRET"}});
        let error = JsonError::convert::<Page>(value).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid type: string, expected u32 at `counts.a`"
        );
        assert_eq!((error.line(), error.column()), (0, 0));
    }
}
