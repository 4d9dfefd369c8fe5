//! serde's error messages without the values they quote.

/// What an unexpected value was, by serde's `Unexpected` wording (its content follows, quoted, and
/// is dropped).
const KINDS: &[&str] = &[
    "boolean",
    "integer",
    "floating point",
    "character",
    "string",
    "byte array",
    "unit value",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
    "null",
];

/// A serde data error's message without any value it quotes: what the value was and what the type
/// expected, never the value itself.
///
/// serde words its errors `invalid type: <what> <value>, expected <what the type wanted>`,
/// `invalid value: ...`, ``unknown variant `<value>`, expected ...``, `invalid length <n>, expected
/// ...`: the value is dropped, the rest kept. ``unknown field `<name>` ``, ``missing field `<name>` ``
/// and ``duplicate field `<name>` `` name a field, not a value, and stay as they are. Any other message (a
/// custom `Deserialize` impl's, which may quote anything) becomes `invalid value`.
///
/// For a decoder that must not show the fields of a document either (a response body's keys are
/// its data), drop what follows `unknown field` as well.
///
/// ```
/// use integration_core::redact::serde_message_without_values;
///
/// assert_eq!(
///     serde_message_without_values(r#"invalid type: string "sk_live_123", expected u32"#),
///     "invalid type: string, expected u32"
/// );
/// assert_eq!(
///     serde_message_without_values("invalid type: integer `123456`, expected a string"),
///     "invalid type: integer, expected a string"
/// );
/// assert_eq!(
///     serde_message_without_values("unknown field `retyr`, expected `retry` or `auth`"),
///     "unknown field `retyr`, expected `retry` or `auth`"
/// );
/// assert_eq!(serde_message_without_values("bad card 4111 1111"), "invalid value");
/// ```
pub fn serde_message_without_values(message: &str) -> String {
    // The expected part is always last, after the value: the last `, expected ` is the real one
    // even when the value itself holds those words.
    let with_expected = |head: &str, rest: &str| match rest.rfind(", expected ") {
        Some(at) => format!("{head}, {}", &rest[at + 2..]),
        None => head.to_owned(),
    };
    for head in ["invalid type", "invalid value"] {
        if let Some(rest) = message
            .strip_prefix(head)
            .and_then(|r| r.strip_prefix(": "))
        {
            let kind = KINDS
                .iter()
                .filter(|kind| rest.starts_with(*kind))
                .max_by_key(|kind| kind.len());
            return match kind {
                Some(kind) => with_expected(&format!("{head}: {kind}"), rest),
                None => with_expected(head, rest),
            };
        }
    }
    if message == "invalid type" || message == "invalid value" {
        // Already without its value.
        return message.to_owned();
    }
    if let Some(rest) = message.strip_prefix("unknown variant") {
        return with_expected("unknown variant", rest);
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && rest.bytes().next().is_some_and(|b| b.is_ascii_digit())
    {
        // `invalid length 3, expected ...`: a count, then the type's words.
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        return with_expected(
            &format!("invalid length {}", &rest[..digits]),
            &rest[digits..],
        );
    }
    for head in ["unknown field `", "missing field `", "duplicate field `"] {
        // The field is the type's (or the document's key), never a value.
        if message.starts_with(head) {
            return message.to_owned();
        }
    }
    "invalid value".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_value_holding_the_parser_s_words_does_not_fool_it() {
        assert_eq!(
            serde_message_without_values(
                r#"invalid type: string "x, expected SECRET", expected u64"#
            ),
            "invalid type: string, expected u64"
        );
        assert_eq!(
            serde_message_without_values("unknown variant `s3cr3t`, expected `basic` or `bearer`"),
            "unknown variant, expected `basic` or `bearer`"
        );
        assert_eq!(
            serde_message_without_values("invalid length 3, expected an array of 2"),
            "invalid length 3, expected an array of 2"
        );
    }

    #[test]
    fn it_is_idempotent_on_its_own_output() {
        for message in [
            "invalid type: string, expected u64",
            "invalid value",
            "invalid type",
            "unknown variant, expected `a`",
            "missing field `id`",
        ] {
            assert_eq!(serde_message_without_values(message), message);
        }
    }

    proptest! {
        /// Whatever a value holds, the message about it does not.
        #[test]
        fn no_quoted_value_survives(value in "[A-Za-z0-9 ,:`\"_-]{8,30}", kind in 0usize..4) {
            let secret = format!("Z9{value}");
            let message = match kind {
                0 => format!("invalid type: string {secret:?}, expected u32"),
                1 => format!("invalid value: string {secret:?}, expected relative URL without a base"),
                2 => format!("unknown variant `{secret}`, expected `basic` or `bearer`"),
                _ => format!("custom error for {secret}"),
            };
            let shown = serde_message_without_values(&message);
            prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }
}
