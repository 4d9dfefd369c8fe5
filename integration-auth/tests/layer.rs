//! The service contract, against tower-test's mock (which panics when `call` comes before
//! `poll_ready`, catching a fresh clone called without readiness).

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use integration_auth::{
    ApiKey, AuthContext, AuthLayer, Credential, CredentialFuture, CredentialProvider,
};
use integration_core::Body;
use integration_core::ext::{CredentialInvalidated, OwnCredential};
use secrecy::SecretString;
use tower::ServiceExt;
use tower_test::mock;

#[derive(Debug)]
struct Slow;

impl CredentialProvider for Slow {
    fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
        CredentialFuture::new(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Credential::bearer(SecretString::from("slow-token")))
        })
    }
}

/// A provider whose credential changes after a rejection (as a token cache's does): a new token per
/// invalidation.
#[derive(Debug, Default)]
struct Rotating(std::sync::atomic::AtomicU32);

impl CredentialProvider for Rotating {
    fn credential(&self, _ctx: &AuthContext<'_>) -> CredentialFuture {
        let n = self.0.load(std::sync::atomic::Ordering::SeqCst);
        CredentialFuture::ready(Ok(Credential::bearer(SecretString::from(format!(
            "tok-{n}"
        )))))
    }

    fn invalidate(&self, _rejected: &Credential) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn can_renew(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn backpressure_of_the_inner_service_is_passed_on() {
    let (mut service, mut handle) =
        mock::spawn_layer::<http::Request<String>, http::Response<String>, _>(AuthLayer::new(
            ApiKey::new(SecretString::from("k")),
        ));
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    handle.allow(1);
    assert!(matches!(
        service.poll_ready(),
        std::task::Poll::Ready(Ok(()))
    ));
}

#[tokio::test(start_paused = true)]
async fn every_request_carries_the_credential_even_after_an_async_lookup() {
    let (service, mut handle) = mock::pair::<http::Request<String>, http::Response<String>>();
    let service = AuthLayer::new(Slow).layer_service(service);
    handle.allow(2);
    let first = tokio::spawn(service.clone().oneshot(http::Request::new(String::new())));
    let second = tokio::spawn(service.oneshot(http::Request::new(String::new())));
    for _ in 0..2 {
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer slow-token");
        respond.send_response(http::Response::new(String::new()));
    }
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_body_cannot_be_cloned_is_not_replayed_but_marked() {
    let (service, mut handle) = mock::pair::<http::Request<Body>, http::Response<String>>();
    let service = AuthLayer::new(Rotating::default()).layer_service(service);
    handle.allow(2);
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(vec![Ok::<
        _,
        integration_core::BoxError,
    >(
        http_body::Frame::data(Bytes::from_static(b"chunk")),
    )]));
    let call = tokio::spawn(service.oneshot(http::Request::new(Body::streaming(stream))));
    let (_request, respond) = handle.next_request().await.unwrap();
    respond.send_response(unauthorized());
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .extensions()
            .get::<CredentialInvalidated>()
            .is_some()
    );
    // The service is gone with the call: the channel is closed, and no second request came.
    assert_no_more_requests(&mut handle, "no replay of a streaming body").await;
}

/// `layer_service` without pulling `tower::Layer` into every test.
trait LayerExt {
    fn layer_service<S>(&self, service: S) -> integration_auth::Auth<S>;
}

impl LayerExt for AuthLayer {
    fn layer_service<S>(&self, service: S) -> integration_auth::Auth<S> {
        tower::Layer::layer(self, service)
    }
}

/// Sends one request with a clonable body through an [`AuthLayer`] over `provider` (its own replay
/// on, as when the layer is used alone), answers every request with 401, and returns the response
/// and how many requests the upstream saw.
async fn always_401(
    provider: impl CredentialProvider,
    method: http::Method,
) -> (http::Response<String>, usize) {
    let (service, mut handle) = mock::pair::<http::Request<String>, http::Response<String>>();
    let service = AuthLayer::new(provider).layer_service(service);
    handle.allow(4);
    let request = http::Request::builder()
        .method(method)
        .uri("https://api.example.com/orders")
        .body("{}".to_owned())
        .unwrap();
    let call = tokio::spawn(service.oneshot(request));
    let mut seen = 0;
    loop {
        tokio::select! {
            next = handle.next_request() => {
                let Some((_request, respond)) = next else { break };
                seen += 1;
                respond.send_response(
                    http::Response::builder().status(401).body(String::new()).unwrap(),
                );
            }
            // Paused clock: this fires only once every task is idle (the call is done).
            () = tokio::time::sleep(Duration::from_secs(60)) => break,
        }
    }
    (call.await.unwrap().unwrap(), seen)
}

/// Regression (issue 14, part 3): a 401 was replayed once even with Basic, a static bearer or an API
/// key, so a POST without an idempotency key reached the server twice with the very credential it
/// had just refused. A credential that cannot change is never replayed, by the layer itself nor (no
/// `CredentialInvalidated` marker) by a retry layer above it.
#[tokio::test(start_paused = true)]
async fn regression_a_401_with_a_credential_that_cannot_change_is_not_replayed() {
    for method in [http::Method::POST, http::Method::GET] {
        let providers: Vec<(&str, Box<dyn CredentialProvider>)> = vec![
            ("api key", Box::new(ApiKey::new(SecretString::from("k")))),
            (
                "basic",
                Box::new(integration_auth::Basic::new(
                    "user",
                    SecretString::from("pw"),
                )),
            ),
            (
                "bearer",
                Box::new(integration_auth::Bearer::new(SecretString::from("t"))),
            ),
        ];
        for (name, provider) in providers {
            let (response, seen) = always_401(provider, method.clone()).await;
            assert_eq!(response.status(), 401, "{name} {method}");
            assert_eq!(seen, 1, "{name} {method}: the upstream saw a replay");
            assert!(
                response
                    .extensions()
                    .get::<CredentialInvalidated>()
                    .is_none(),
                "{name} {method}: marked for a replay by the retry layer"
            );
        }
    }
}

/// A provider that can renew its credential gets exactly one replay, with the new credential.
#[tokio::test(start_paused = true)]
async fn a_renewable_credential_is_replayed_once_with_the_new_one() {
    let (service, mut handle) = mock::pair::<http::Request<String>, http::Response<String>>();
    let service = AuthLayer::new(Rotating::default()).layer_service(service);
    handle.allow(4);
    let call = tokio::spawn(
        service.oneshot(
            http::Request::post("https://api.example.com/orders")
                .body("{}".to_owned())
                .unwrap(),
        ),
    );
    for expected in ["Bearer tok-0", "Bearer tok-1"] {
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request.headers()["authorization"], expected);
        respond.send_response(
            http::Response::builder()
                .status(401)
                .body(String::new())
                .unwrap(),
        );
    }
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 401, "the replay's 401 is final");
    tokio::task::yield_now().await;
    assert!(
        matches!(handle.next_request().now_or_never(), None | Some(None)),
        "one replay only"
    );
}

/// A request that carries its own credential ([`OwnCredential`], the facade's per-request
/// `bearer_auth`) goes as it is: the provider is not asked, its header is not set over the caller's,
/// and a 401 is neither replayed nor marked, even with a provider that could renew.
#[tokio::test(start_paused = true)]
async fn a_request_with_its_own_credential_is_sent_as_it_is() {
    let (service, mut handle) = mock::pair::<http::Request<String>, http::Response<String>>();
    let service = AuthLayer::new(Rotating::default()).layer_service(service);
    handle.allow(2);
    let mut request = http::Request::get("https://api.example.com/me")
        .header("authorization", "Bearer user-token")
        .body(String::new())
        .unwrap();
    request.extensions_mut().insert(OwnCredential);
    let call = tokio::spawn(service.oneshot(request));
    let (request, respond) = handle.next_request().await.unwrap();
    assert_eq!(request.headers()["authorization"], "Bearer user-token");
    respond.send_response(unauthorized());
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .extensions()
            .get::<CredentialInvalidated>()
            .is_none()
    );
    assert_no_more_requests(&mut handle, "not replayed").await;
}

fn unauthorized() -> http::Response<String> {
    http::Response::builder()
        .status(401)
        .body(String::new())
        .unwrap()
}

/// Lets the spawned call finish, then checks that no further request reached the mock.
async fn assert_no_more_requests<T>(
    handle: &mut mock::Handle<http::Request<T>, http::Response<String>>,
    why: &str,
) {
    tokio::task::yield_now().await;
    assert!(
        matches!(handle.next_request().now_or_never(), None | Some(None)),
        "{why}"
    );
}
