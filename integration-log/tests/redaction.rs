//! Redaction never leaks: generated secrets placed in headers, query strings, URL userinfo, nested
//! JSON bodies (both directions) and error messages never appear in a captured span field, event
//! field or logged error, with everything captured at TRACE.

use std::fmt;

use http::{Request, Response};
use http_body_util::BodyExt;
use integration_core::BoxError;
use integration_core::ext::IntegrationName;
use integration_core::testing::{Captured, capture};
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy, Redactor};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::filter::LevelFilter;

const HEADERS: &[(&str, &str)] = &[
    ("authorization", "Bearer {}"),
    ("proxy-authorization", "Basic {}"),
    ("cookie", "session={}; theme=dark"),
    ("x-api-key", "{}"),
    ("api-key", "{}"),
    ("x-auth-token", "{}"),
    ("x-service-secret", "{}"),
    ("x-vendor-password", "{}"),
    ("x-custom", "Bearer {}"),
];

const PARAMS: &[&str] = &[
    "api_key",
    "key",
    "token",
    "access_token",
    "client_secret",
    "password",
    "signature",
    "sig",
    "apiKey",
    "X-Amz-Security-Token",
];

const FIELDS: &[&str] = &[
    "password",
    "client_secret",
    "refresh_token",
    "apiKey",
    "private_key",
    "secret",
    "authorization",
    "key",
    "credentials",
];

/// A JSON value holding `secret` under a secret-named field, nested `depth` levels deep in objects
/// and arrays with innocent names.
fn nest(secret: &str, field: &str, path: &[bool]) -> Value {
    let mut value = json!({ field: secret, "id": 7, "note": "plain" });
    for (i, in_array) in path.iter().enumerate() {
        value = if *in_array {
            json!([1, "x", value, null])
        } else {
            json!({ format!("level{i}"): value, "count": i })
        };
    }
    value
}

#[derive(Debug)]
struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

#[derive(Debug, Clone)]
struct Case {
    secret: String,
    header: usize,
    param: usize,
    field: usize,
    path: Vec<bool>,
    fail: bool,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        "[A-Za-z0-9]{12,40}",
        0..HEADERS.len(),
        0..PARAMS.len(),
        0..FIELDS.len(),
        prop::collection::vec(any::<bool>(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(secret, header, param, field, path, fail)| Case {
            secret,
            header,
            param,
            field,
            path,
            fail,
        })
}

fn run(case: &Case) -> Captured {
    let captured = capture(LevelFilter::TRACE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let secret = case.secret.clone();
        let (header, template) = HEADERS[case.header];
        let param = PARAMS[case.param];
        let body = nest(&secret, FIELDS[case.field], &case.path).to_string();
        let response_body = body.clone();
        let url = format!("https://user:{secret}@api.test/v1/x?page=2&{param}={secret}");
        let fail = case.fail;
        let error_url = url.clone();

        let policy = LogPolicy::default().with_redactor(Redactor::default());
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(policy.clone()))
            .layer(AttemptLogLayer::new(policy))
            .service_fn(move |_: Request<integration_core::Body>| {
                let response_body = response_body.clone();
                let error_url = error_url.clone();
                async move {
                    if fail {
                        // Transports like to put the URL in their messages.
                        return Err::<Response<String>, BoxError>(Box::new(TransportError(
                            format!("error sending request for url ({error_url})"),
                        )));
                    }
                    Ok(Response::builder()
                        .header("content-type", "application/json")
                        .header("set-cookie", "sid=1")
                        .body(response_body)
                        .unwrap())
                }
            });
        let mut request = Request::post(url.as_str())
            .header(header, template.replace("{}", &secret))
            .header("content-type", "application/json")
            .body(integration_core::Body::from(body))
            .unwrap();
        request
            .extensions_mut()
            .insert(IntegrationName::new("vendor"));
        match service.oneshot(request).await {
            Ok(response) => {
                response.into_body().collect().await.unwrap();
            }
            Err(error) => assert!(error.to_string().contains("error sending request")),
        }
    });
    captured.captured()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn redaction_never_leaks_a_secret(case in cases()) {
        let captured = run(&case);
        let text = captured.all_text();
        // The layer did log the call: the redaction had something to work on.
        prop_assert!(captured.event("request").is_some());
        prop_assert!(text.iter().any(|t| t.starts_with("url.full=")));
        if case.fail {
            prop_assert!(captured.event("failed").is_some());
        } else {
            prop_assert!(captured.event("response body").is_some());
        }
        for line in &text {
            prop_assert!(!line.contains(&case.secret), "leaked in {line}");
        }
    }

    /// The redactor alone, on every input shape, never shows the secret either.
    #[test]
    fn redactor_never_leaks_on_any_shape(case in cases()) {
        let redactor = Redactor::default();
        let secret = &case.secret;
        let body = nest(secret, FIELDS[case.field], &case.path).to_string();
        let pretty = serde_json::to_string_pretty(&nest(secret, FIELDS[case.field], &case.path)).unwrap();
        let param = PARAMS[case.param];
        let outputs = [
            redactor.redact_body(Some("application/json"), body.as_bytes()),
            redactor.redact_body(Some("application/json"), pretty.as_bytes()),
            redactor.redact_body(
                Some("application/x-www-form-urlencoded"),
                format!("a=1&{param}={secret}&b=2").as_bytes(),
            ),
            redactor.redact_body(Some("text/plain"), format!("{param}={secret} and Bearer {secret}").as_bytes()),
            redactor.redact_body(Some("application/xml"), format!("<r><{param}>{secret}</{param}></r>").as_bytes()),
            redactor.redact_url(&format!("https://u:{secret}@h.test/p?{param}={secret}").parse().unwrap()),
            // Nested in an innocent parameter's value, plain and percent-encoded.
            redactor.redact_url(&format!("https://h.test/login?next=/cb?{param}={secret}&page=2").parse().unwrap()),
            redactor.redact_url(&format!("https://h.test/login?next=%2Fcb%3F{param}%3D{secret}").parse().unwrap()),
            redactor.redact_url(&format!("https://h.test/hook?to=https%3A%2F%2Fu%3A{secret}%40x.test%2F").parse().unwrap()),
        ];
        for output in outputs {
            prop_assert!(!output.contains(secret.as_str()), "leaked in {output}");
        }
    }
}

proptest! {
    /// The redactor never panics, whatever it is given (it runs on truncated captures).
    #[test]
    fn redactor_never_panics(text in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let redactor = Redactor::default();
        let _ = redactor.redact_text(&text);
        let _ = redactor.redact_json(&text);
        for content_type in ["application/json", "application/x-www-form-urlencoded", "text/plain", "application/xml"] {
            let _ = redactor.redact_body(Some(content_type), text.as_bytes());
            let _ = redactor.redact_body(Some(content_type), &bytes);
        }
    }
}
