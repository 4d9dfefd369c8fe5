//! The service contract, against tower-test's mock (which panics when `call` comes before
//! `poll_ready`, catching a fresh clone called without readiness).

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use integration_auth::{
    ApiKey, AuthContext, AuthLayer, Credential, CredentialFuture, CredentialProvider,
};
use integration_core::Body;
use integration_core::ext::CredentialInvalidated;
use secrecy::SecretString;
use tower::ServiceExt;
use tower_test::mock;

#[derive(Debug)]
struct Slow;

impl CredentialProvider for Slow {
    fn credential(&self, _ctx: &AuthContext) -> CredentialFuture {
        CredentialFuture::new(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Credential::bearer(SecretString::from("slow-token")))
        })
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
    let service = AuthLayer::new(ApiKey::new(SecretString::from("k"))).layer_service(service);
    handle.allow(2);
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(vec![Ok::<
        _,
        integration_core::BoxError,
    >(
        http_body::Frame::data(Bytes::from_static(b"chunk")),
    )]));
    let call = tokio::spawn(service.oneshot(http::Request::new(Body::streaming(stream))));
    let (_request, respond) = handle.next_request().await.unwrap();
    respond.send_response(
        http::Response::builder()
            .status(401)
            .body(String::new())
            .unwrap(),
    );
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .extensions()
            .get::<CredentialInvalidated>()
            .is_some()
    );
    tokio::task::yield_now().await;
    // The service is gone with the call: the channel is closed, and no second request came.
    assert!(
        matches!(handle.next_request().now_or_never(), None | Some(None)),
        "no replay of a streaming body"
    );
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
