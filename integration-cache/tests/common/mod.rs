//! A scripted upstream for the cache's tests.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use integration_cache::{Cache, CacheConfig, CacheLayer, CacheStatus, CacheStore, MemoryConfig};
use integration_core::BoxError;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

pub type Answer = Result<Response<Full<Bytes>>, BoxError>;
type Responder = dyn Fn(usize, &Request<String>) -> Answer + Send + Sync;

/// An upstream that answers with `respond(call number, request)`, after `delay` (tokio's clock),
/// and records every request's headers.
#[derive(Clone)]
pub struct Upstream {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    respond: Arc<Responder>,
    delay: Duration,
}

impl Upstream {
    pub fn new(
        respond: impl Fn(usize, &Request<String>) -> Answer + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: Arc::default(),
            seen: Arc::default(),
            respond: Arc::new(respond),
            delay: Duration::ZERO,
        }
    }

    /// Always the same answer: `cache_control` and a body naming the call.
    pub fn caching(cache_control: &'static str) -> Self {
        Self::new(move |n, _| Ok(ok(cache_control, &format!("body {n}"))))
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }

    pub fn service(&self) -> BoxCloneSyncService<Request<String>, Response<Full<Bytes>>, BoxError> {
        let this = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |request: Request<String>| {
            let this = this.clone();
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            this.seen.lock().unwrap().push(request.headers().clone());
            async move {
                if !this.delay.is_zero() {
                    tokio::time::sleep(this.delay).await;
                }
                (this.respond)(n, &request)
            }
        }))
    }
}

pub fn ok(cache_control: &str, body: &str) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(StatusCode::OK);
    if !cache_control.is_empty() {
        builder = builder.header("cache-control", cache_control);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub type Client = Cache<BoxCloneSyncService<Request<String>, Response<Full<Bytes>>, BoxError>>;

pub fn client(upstream: &Upstream, config: CacheConfig) -> Client {
    layer(config).layer(upstream.service())
}

pub fn layer(config: CacheConfig) -> CacheLayer {
    CacheLayer::new(CacheStore::memory(MemoryConfig::new()), config)
}

pub fn get(path: &str) -> Request<String> {
    Request::get(format!("https://api.test{path}"))
        .body(String::new())
        .unwrap()
}

pub fn get_as(path: &str, token: &str) -> Request<String> {
    let mut request = get(path);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The cache status, the status code and the body of an answer.
pub type Sent = (CacheStatus, StatusCode, String);

/// Sends `request`; the status and the body. Not `Send`: rustc's higher-ranked check of an async
/// block's `Send` fails on the `S::Error: Into<BoxError>` bound every layer has (the service's
/// future itself is `Send`; spawn `oneshot` futures directly).
pub fn send(
    client: &Client,
    request: Request<String>,
) -> Pin<Box<dyn Future<Output = Result<Sent, BoxError>>>> {
    let client = client.clone();
    Box::pin(async move {
        let response = match client.oneshot(request).await {
            Ok(response) => response,
            Err(error) => return Err(error),
        };
        let status = CacheStatus::of(&response).expect("every response carries its cache status");
        let code = response.status();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => return Err(error),
        };
        Ok((status, code, String::from_utf8(body.to_vec()).unwrap()))
    })
}

pub async fn advance(by: Duration) {
    tokio::time::advance(by).await;
}
