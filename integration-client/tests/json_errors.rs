//! Issue 14, part 2: a body that does not decode as the expected JSON gives an error that says
//! where (the field's path, line and column) and why (the category, what was expected), and never
//! quotes the body.

use std::error::Error as _;

use integration_client::{Client, JsonError};
use integration_config::IntegrationConfig;
use proptest::prelude::*;
use serde::Deserialize;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Usage {
    account: String,
    count: u64,
}

async fn answering(body: &str) -> (MockServer, Client) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/usage"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json"))
        .mount(&server)
        .await;
    let config = IntegrationConfig::builder(server.uri()).build().unwrap();
    let client = Client::builder().api("meter", config).build().unwrap();
    (server, client)
}

fn every_form(error: &integration_core::Error) -> String {
    format!("{error} | {error:#} | {error:?}")
}

/// Regression (issue 14, part 2): `response is not the expected JSON (invalid type: string
/// "not-a-number", expected u64 at line 1 column 21)` quoted the response's value, though the docs
/// said the content is never shown.
#[tokio::test]
async fn regression_json_errors_do_not_echo_the_body() {
    let (_server, client) = answering(r#"{"account": "acme", "count": "not-a-number"}"#).await;
    let error = client
        .api("meter")
        .unwrap()
        .get("/usage")
        .send()
        .await
        .unwrap()
        .json::<Usage>()
        .await
        .unwrap_err();
    assert!(error.is_body(), "{error:?}");
    let shown = every_form(&error);
    assert!(!shown.contains("not-a-number"), "{shown}");
    assert!(!shown.contains("acme"), "{shown}");
    assert_eq!(
        error.to_string(),
        "integration `meter`, attempt 1: response is not the expected JSON (invalid type: string, \
         expected u64 at `count` (line 1, column 43))"
    );
    let json = error
        .source()
        .and_then(|source| source.downcast_ref::<JsonError>())
        .expect("the JsonError is the source");
    assert!(json.is_data());
    assert_eq!(json.path(), "count");
    assert_eq!((json.line(), json.column()), (1, 43));
}

#[tokio::test]
async fn graphql_shape_and_reply_errors_do_not_echo_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/graphql"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"data": {"account": "acme", "count": "SECRET-COUNT"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/broken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"errors": "SECRET-ERRORS"}"#, "application/json"),
        )
        .mount(&server)
        .await;
    let config = IntegrationConfig::builder(server.uri()).build().unwrap();
    let client = Client::builder().api("gql", config).build().unwrap();
    let api = client.api("gql").unwrap();

    let error = api
        .graphql("query { usage { account count } }")
        .send::<Usage>()
        .await
        .unwrap_err();
    let shown = every_form(&error);
    assert!(!shown.contains("SECRET-COUNT"), "{shown}");
    assert!(shown.contains("at `count`"), "{shown}");

    let error = api
        .graphql("query { usage { account count } }")
        .path("/broken")
        .send::<Usage>()
        .await
        .unwrap_err();
    let shown = every_form(&error);
    assert!(!shown.contains("SECRET-ERRORS"), "{shown}");
    assert!(shown.contains("at `errors`"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a mistyped field holds (a string, a number, a nested document, JSON-looking text),
    /// the decoding error never shows it.
    #[test]
    fn a_mistyped_value_is_never_shown(
        text in "[ -~]{0,40}",
        number in any::<i64>(),
        pick in 0..4usize,
    ) {
        let marker = format!("V4lue{text}");
        let value = match pick {
            0 => serde_json::Value::String(marker.clone()),
            1 => serde_json::json!({ "inner": marker }),
            2 => serde_json::json!([marker, number]),
            _ => serde_json::json!({ marker.clone(): true }),
        };
        let body = serde_json::json!({ "account": "a", "count": value }).to_string();
        let error = JsonError::decode::<Usage>(body.as_bytes()).unwrap_err();
        let shown = format!("{error} {error:?}");
        prop_assert!(error.is_data());
        prop_assert_eq!(error.path(), "count");
        prop_assert!(!shown.contains("V4lue"), "{}", shown);
    }
}
