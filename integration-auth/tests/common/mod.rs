//! Helpers shared by the black-box tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use integration_auth::{Jitter, TokenCacheConfig, TokenTransport, Url};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

/// Token requests through a hyper-util legacy client, as the facade does.
pub fn transport() -> TokenTransport {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    TokenTransport::new(client)
}

pub fn token_url(server: &MockServer) -> Url {
    Url::parse(&format!("{}/oauth/token", server.uri())).unwrap()
}

pub fn token(access_token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}

pub fn rotated(access_token: &str, refresh_token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": refresh_token,
    }))
}

pub fn oauth_error(code: &str, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({
        "error": code,
        "error_description": description,
    }))
}

/// No jitter, so refresh points are exact.
pub fn exact() -> TokenCacheConfig {
    TokenCacheConfig::new().with_jitter(Jitter::none())
}

/// An upstream API that answers 401 unless the `Authorization` header is one of `accepted` (any when
/// empty), echoes the header it got, and counts its calls.
#[derive(Clone, Default)]
pub struct Upstream {
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    pub accepted: Arc<Vec<String>>,
}

impl Upstream {
    pub fn accepting(accepted: &[&str]) -> Self {
        Self {
            accepted: Arc::new(accepted.iter().map(|s| s.to_string()).collect()),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn service(
        &self,
    ) -> impl tower::Service<
        http::Request<String>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |request: http::Request<String>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let auth = request
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                this.seen.lock().unwrap().push(auth.clone());
                let status = if this.accepted.is_empty() || this.accepted.contains(&auth) {
                    200
                } else {
                    401
                };
                Ok::<_, Infallible>(http::Response::builder().status(status).body(auth).unwrap())
            }
        })
    }
}

pub fn get() -> http::Request<String> {
    http::Request::get("https://api.example.com/v1/things")
        .body(String::new())
        .unwrap()
}
