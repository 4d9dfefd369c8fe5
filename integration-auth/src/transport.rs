//! The HTTP transport token requests go through, injected by whoever builds the providers.
//!
//! This crate depends on no HTTP client: the facade hands the providers the same pooled hyper client
//! it uses for API calls; a user taking the layer alone hands any tower service (or a closure).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::poll_fn;
use http_body_util::BodyExt;
use integration_core::BoxError;
use tower_service::Service;

/// A token request: a fully built `http::Request` with the form body as bytes (what `oauth2` produces).
pub type TokenRequest = http::Request<Vec<u8>>;
/// A token endpoint's answer, body read into memory.
pub type TokenResponse = http::Response<Vec<u8>>;

type SendFuture = Pin<Box<dyn Future<Output = Result<TokenResponse, BoxError>> + Send + 'static>>;

trait Sender: Send + Sync + 'static {
    fn send(&self, request: TokenRequest) -> SendFuture;
}

struct ServiceSender<S, B, RB> {
    // Behind a mutex only to be `Sync` for services that are not (tower's `BoxCloneService`): it is
    // locked just long enough to clone the service, never across an await.
    service: Mutex<S>,
    max_body: usize,
    _types: PhantomData<fn(B) -> RB>,
}

impl<S, B, RB> Sender for ServiceSender<S, B, RB>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: From<Vec<u8>> + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    fn send(&self, request: TokenRequest) -> SendFuture {
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let max_body = self.max_body;
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = service
                .call(request.map(B::from))
                .await
                .map_err(Into::into)?;
            let (parts, body) = response.into_parts();
            let collected = http_body_util::Limited::new(body, max_body)
                .collect()
                .await?
                .to_bytes();
            Ok(http::Response::from_parts(parts, collected.to_vec()))
        })
    }
}

struct FnSender<F>(F);

impl<F, Fut> Sender for FnSender<F>
where
    F: Fn(TokenRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenResponse, BoxError>> + Send + 'static,
{
    fn send(&self, request: TokenRequest) -> SendFuture {
        Box::pin((self.0)(request))
    }
}

/// How token requests reach the token endpoint: any tower HTTP service, cheap to clone.
///
/// Every token request is bounded by a timeout (default 10 s), so a hung token endpoint cannot hold
/// the single-flight refresh forever.
///
/// # Clone
///
/// Clones share the service.
///
/// ```
/// use integration_auth::TokenTransport;
///
/// // A closure works as well as a tower service (here: a fake token endpoint).
/// let transport = TokenTransport::from_fn(|_request| async {
///     let body = br#"{"access_token":"t","token_type":"Bearer","expires_in":3600}"#.to_vec();
///     Ok(http::Response::builder().header("content-type", "application/json").body(body).unwrap())
/// });
/// # let _ = transport;
/// ```
#[derive(Clone)]
pub struct TokenTransport {
    sender: Arc<dyn Sender>,
    timeout: Duration,
}

/// The default cap on a token response body.
const DEFAULT_MAX_BODY: usize = 64 * 1024;

impl TokenTransport {
    /// Token requests through `service`, any tower HTTP client whose request body can be made from
    /// bytes (`http_body_util::Full<Bytes>`, `integration_core::Body`, ...) and whose response body is
    /// any `http_body::Body` (read into memory, at most 64 KiB).
    ///
    /// Each request clones the service and waits for it to be ready.
    pub fn new<S, B, RB>(service: S) -> Self
    where
        S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: From<Vec<u8>> + 'static,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        Self {
            sender: Arc::new(ServiceSender {
                service: Mutex::new(service),
                max_body: DEFAULT_MAX_BODY,
                _types: PhantomData,
            }),
            timeout: Duration::from_secs(10),
        }
    }

    /// Token requests through a closure.
    pub fn from_fn<F, Fut>(send: F) -> Self
    where
        F: Fn(TokenRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TokenResponse, BoxError>> + Send + 'static,
    {
        Self {
            sender: Arc::new(FnSender(send)),
            timeout: Duration::from_secs(10),
        }
    }

    /// Bounds each token request (default 10 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one token request.
    ///
    /// # Errors
    ///
    /// The transport's error, or tokio's `Elapsed` after the timeout.
    pub async fn send(&self, request: TokenRequest) -> Result<TokenResponse, BoxError> {
        match tokio::time::timeout(self.timeout, self.sender.send(request)).await {
            Ok(result) => result,
            Err(elapsed) => Err(Box::new(elapsed)),
        }
    }
}

impl fmt::Debug for TokenTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTransport")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The transport's error as a concrete `std::error::Error` (what `oauth2` asks of an HTTP client).
#[derive(Debug)]
pub(crate) struct TransportError(pub(crate) BoxError);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn any_clonable_http_service_will_do_even_one_that_is_not_sync() {
        let service = tower::util::BoxCloneService::new(tower::service_fn(
            |request: http::Request<Full<Bytes>>| async move {
                let body = request.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>(http::Response::new(Full::new(body)))
            },
        ));
        let transport = TokenTransport::new(service);
        let response = transport
            .send(http::Request::new(b"grant_type=x".to_vec()))
            .await
            .unwrap();
        assert_eq!(response.body(), b"grant_type=x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_token_endpoint_times_out() {
        let transport = TokenTransport::from_fn(|_| std::future::pending())
            .with_timeout(Duration::from_secs(2));
        let error = transport
            .send(http::Request::new(Vec::new()))
            .await
            .unwrap_err();
        assert!(error.is::<tokio::time::error::Elapsed>());
    }
}
