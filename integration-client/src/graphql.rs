//! GraphQL over the same stack: a POST of `{query, variables, operationName}`, `errors` made typed.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use integration_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Api;

/// A GraphQL request; see [`Api::graphql`].
///
/// The document is POSTed as JSON to `graphql` under the API's base URL (change it with
/// [`path`](GraphQlRequest::path)). A `query` document is idempotent, so it is retried like a GET; a
/// `mutation` (or `subscription`) is not, unless the caller says otherwise with
/// [`idempotent`](GraphQlRequest::idempotent). The operation type is read from the document's first
/// operation keyword (`{ ... }` shorthand is a query; fragments and comments are skipped).
///
/// # Errors as values
///
/// A response whose `errors` array is not empty fails with an [`ErrorKind::Status`] error (the upstream
/// answered with an error, whatever the HTTP status said) whose [`source`](std::error::Error::source) is
/// a [`GraphQlError`] with every message, path and `extensions.code`, and the partial `data` if any:
///
/// ```
/// use integration_client::{Client, GraphQlError, ResponseBody};
/// use integration_core::Body;
/// use std::error::Error as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), integration_core::Error> {
/// let upstream = tower::service_fn(|_: http::Request<Body>| async {
///     let body = r#"{"data":null,"errors":[{"message":"Could not resolve to a User","path":["user"],"extensions":{"code":"NOT_FOUND"}}]}"#;
///     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(body)))
/// });
/// let client = Client::from_service("github", "https://api.github.com/", upstream)?;
///
/// let error = client
///     .api("github")?
///     .graphql("query($login: String!) { user(login: $login) { name } }")
///     .variables(&serde_json::json!({ "login": "nobody" }))
///     .send::<serde_json::Value>()
///     .await
///     .unwrap_err();
/// assert!(error.is_status());
/// let graphql = error.source().and_then(|s| s.downcast_ref::<GraphQlError>()).unwrap();
/// assert_eq!(graphql.codes(), ["NOT_FOUND"]);
/// assert_eq!(graphql.errors()[0].message, "Could not resolve to a User");
/// # Ok(())
/// # }
/// ```
#[must_use = "a request does nothing until it is sent"]
pub struct GraphQlRequest {
    api: Api,
    query: String,
    variables: Option<Value>,
    operation_name: Option<String>,
    path: String,
    idempotent: Option<bool>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Option<Duration>,
    error: Option<Error>,
}

impl fmt::Debug for GraphQlRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variables may hold personal data: not shown.
        f.debug_struct("GraphQlRequest")
            .field("api", &self.api.name())
            .field("operation", &operation_kind(&self.query))
            .field("operation_name", &self.operation_name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    query: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<&'a Value>,
    #[serde(rename = "operationName", skip_serializing_if = "Option::is_none")]
    operation_name: Option<&'a str>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GraphQlErrorItem>>,
}

/// The kind of a GraphQL operation, read from its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// `query` or the `{ ... }` shorthand: safe to retry.
    Query,
    /// `mutation`: not retried unless declared idempotent.
    Mutation,
    /// `subscription`.
    Subscription,
}

/// Reads the first operation keyword of a GraphQL document, skipping comments, commas and fragment
/// definitions. `None` when no operation is found.
pub fn operation_kind(document: &str) -> Option<OperationKind> {
    let mut depth = 0usize;
    let mut chars = document.chars().peekable();
    let mut word = String::new();
    let mut in_fragment = false;
    let flush =
        |word: &mut String, depth: usize, in_fragment: &mut bool| -> Option<OperationKind> {
            let found = if depth == 0 {
                match word.as_str() {
                    "query" => Some(OperationKind::Query),
                    "mutation" => Some(OperationKind::Mutation),
                    "subscription" => Some(OperationKind::Subscription),
                    "fragment" => {
                        *in_fragment = true;
                        None
                    }
                    _ => None,
                }
            } else {
                None
            };
            word.clear();
            found
        };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' => {
                // Strings only appear inside arguments; skip them (block strings included).
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            _ => {
                if let Some(kind) = flush(&mut word, depth, &mut in_fragment) {
                    return Some(kind);
                }
                match c {
                    '{' => {
                        if depth == 0 && !in_fragment {
                            return Some(OperationKind::Query);
                        }
                        depth += 1;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            in_fragment = false;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    flush(&mut word, depth, &mut in_fragment)
}

impl GraphQlRequest {
    pub(crate) fn new(api: Api, query: String) -> Self {
        Self {
            api,
            query,
            variables: None,
            operation_name: None,
            path: "graphql".to_owned(),
            idempotent: None,
            headers: Vec::new(),
            timeout: None,
            error: None,
        }
    }

    /// The variables, any serializable value (a struct or a `json!` object).
    pub fn variables<T: Serialize + ?Sized>(mut self, variables: &T) -> Self {
        match serde_json::to_value(variables) {
            Ok(value) => self.variables = Some(value),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(
                        Error::new(ErrorKind::Request)
                            .with_message("GraphQL variables do not serialize")
                            .with_source(e),
                    );
                }
            }
        }
        self
    }

    /// The operation to run when the document holds several.
    pub fn operation_name(mut self, name: impl Into<String>) -> Self {
        self.operation_name = Some(name.into());
        self
    }

    /// The endpoint path under the base URL. Default `graphql`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Overrides whether the operation may be retried (default: queries yes, mutations no).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The total deadline of this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// True when this request will be marked idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
            .unwrap_or(operation_kind(&self.query) == Some(OperationKind::Query))
    }

    /// Sends the operation and decodes `data` into `T`.
    ///
    /// # Errors
    ///
    /// As [`RequestBuilder::send`](crate::RequestBuilder::send); an error status without a GraphQL
    /// body ([`ErrorKind::Status`]); a non-empty `errors` array ([`ErrorKind::Status`] with a
    /// [`GraphQlError`] source); a body that is not a GraphQL response or a `data` that does not decode
    /// into `T` ([`ErrorKind::Body`]).
    pub async fn send<T: DeserializeOwned>(self) -> Result<T, Error> {
        let name = self.api.name.clone();
        if let Some(error) = self.error {
            return Err(error.with_integration(name));
        }
        let idempotent = self
            .idempotent
            .unwrap_or(operation_kind(&self.query) == Some(OperationKind::Query));
        let payload = Payload {
            query: &self.query,
            variables: self.variables.as_ref(),
            operation_name: self.operation_name.as_deref(),
        };
        let mut request = self
            .api
            .post(&self.path)
            .json(&payload)
            .header(
                http::header::ACCEPT,
                "application/graphql-response+json, application/json",
            )
            .idempotent(idempotent);
        for (key, value) in self.headers {
            request = request.header(key, value);
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await?;
        let status = response.status();
        let attempts = response.attempts();
        let status_error = response.error_for_status_ref().err();
        let bytes = response.bytes().await?;
        let reply: Reply = match crate::JsonError::decode(&bytes) {
            Ok(reply) => reply,
            Err(e) => {
                if let Some(error) = status_error {
                    return Err(error);
                }
                return Err(Error::new(ErrorKind::Body)
                    .with_message(format!("not a GraphQL response ({e})"))
                    .with_source(e)
                    .with_integration(name)
                    .with_attempts(attempts));
            }
        };
        if let Some(errors) = reply.errors.filter(|e| !e.is_empty()) {
            let graphql = GraphQlError {
                errors,
                data: reply.data,
            };
            return Err(Error::new(ErrorKind::Status)
                .with_status(status)
                .with_message(graphql.to_string())
                .with_source(graphql)
                .with_integration(name)
                .with_attempts(attempts));
        }
        if let Some(error) = status_error {
            return Err(error);
        }
        let data = reply.data.unwrap_or(Value::Null);
        crate::JsonError::convert(data).map_err(|e| {
            Error::new(ErrorKind::Body)
                .with_message(format!("GraphQL data is not the expected shape ({e})"))
                .with_source(e)
                .with_integration(name)
                .with_attempts(attempts)
        })
    }
}

/// One entry of a GraphQL response's `errors` array.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct GraphQlErrorItem {
    /// The message.
    pub message: String,
    /// Where in the response it happened (`["user", "repositories", 0]`).
    #[serde(default)]
    pub path: Option<Vec<Value>>,
    /// Where in the document.
    #[serde(default)]
    pub locations: Option<Vec<Value>>,
    /// Server-specific details; `code` by convention.
    #[serde(default)]
    pub extensions: Option<serde_json::Map<String, Value>>,
}

impl GraphQlErrorItem {
    /// `extensions.code`, when present.
    pub fn code(&self) -> Option<&str> {
        self.extensions.as_ref()?.get("code")?.as_str()
    }
}

/// The `errors` of a GraphQL response (and its partial `data`), the source of the [`Error`] returned by
/// [`GraphQlRequest::send`].
///
/// `Display` gives the count and the codes, not the messages (they may quote user input); read the
/// messages with [`errors`](GraphQlError::errors).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphQlError {
    errors: Vec<GraphQlErrorItem>,
    data: Option<Value>,
}

impl GraphQlError {
    /// Every error, in order.
    pub fn errors(&self) -> &[GraphQlErrorItem] {
        &self.errors
    }

    /// The `extensions.code` of each error that has one.
    pub fn codes(&self) -> Vec<&str> {
        self.errors
            .iter()
            .filter_map(GraphQlErrorItem::code)
            .collect()
    }

    /// The partial `data` that came with the errors, if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref().filter(|d| !d.is_null())
    }
}

impl fmt::Display for GraphQlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "GraphQL response carried {n} error{}",
            if n == 1 { "" } else { "s" }
        )?;
        let codes = self.codes();
        if !codes.is_empty() {
            write!(f, " ({})", codes.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphQlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_kind_reads_the_first_keyword() {
        assert_eq!(
            operation_kind("{ viewer { login } }"),
            Some(OperationKind::Query)
        );
        assert_eq!(operation_kind("query Q { a }"), Some(OperationKind::Query));
        assert_eq!(
            operation_kind("  # comment mutation\n mutation M { a }"),
            Some(OperationKind::Mutation)
        );
        assert_eq!(
            operation_kind("subscription { a }"),
            Some(OperationKind::Subscription)
        );
        assert_eq!(
            operation_kind("fragment F on User { name } mutation { a { ...F } }"),
            Some(OperationKind::Mutation)
        );
        assert_eq!(operation_kind(""), None);
    }
}
