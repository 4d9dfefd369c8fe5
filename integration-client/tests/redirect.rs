//! Redirects: bounded, credentials dropped when the origin changes, kept on the same origin.

use std::time::Duration;

use integration_client::Client;
use integration_config::IntegrationConfig;
use integration_core::ErrorKind;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> Client {
    let mut config = IntegrationConfig::builder(server.uri()).build().unwrap();
    config.retry.max_attempts = 1;
    config.timeout = Duration::from_secs(10);
    Client::builder().api("api", config).build().unwrap()
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_credentials() {
    let origin = MockServer::start().await;
    let other = MockServer::start().await; // same host, another port: another origin
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/landing", other.uri())),
        )
        .mount(&origin)
        .await;
    Mock::given(method("GET"))
        .and(path("/landing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("landed"))
        .expect(1)
        .mount(&other)
        .await;

    let response = client(&origin)
        .api("api")
        .unwrap()
        .get("/start")
        .header("authorization", "Bearer s3cr3t")
        .header("cookie", "session=abc")
        .header("x-api-key", "k-1")
        .header("proxy-authorization", "Basic eA==")
        .header("x-trace", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "landed");

    let sent = &other.received_requests().await.unwrap()[0];
    for name in [
        "authorization",
        "cookie",
        "x-api-key",
        "proxy-authorization",
    ] {
        assert!(
            !sent.headers.contains_key(name),
            "{name} leaked to another origin"
        );
    }
    assert_eq!(sent.headers.get("x-trace").unwrap(), "kept");
    // Each hop names its own origin in `Host` (the transport makes the header below the redirect
    // follower, for the authority it dials).
    let first = &origin.received_requests().await.unwrap()[0];
    assert_eq!(
        first.headers.get("host").unwrap(),
        origin.address().to_string().as_str()
    );
    assert_eq!(
        sent.headers.get("host").unwrap(),
        other.address().to_string().as_str()
    );
}

/// `/old` answers `status` to `/new` on the same origin, and `/new` answers 200 with `body`, once.
async fn mount_same_origin_redirect(origin: &MockServer, status: u16, body: &str) {
    Mock::given(method("GET"))
        .and(path("/old"))
        .respond_with(ResponseTemplate::new(status).insert_header("location", "/new"))
        .mount(origin)
        .await;
    Mock::given(method("GET"))
        .and(path("/new"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .expect(1)
        .mount(origin)
        .await;
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_credentials() {
    let origin = MockServer::start().await;
    mount_same_origin_redirect(&origin, 301, "").await;
    let response = client(&origin)
        .api("api")
        .unwrap()
        .get("/old")
        .header("authorization", "Bearer s3cr3t")
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = origin.received_requests().await.unwrap();
    let landed = requests.iter().find(|r| r.url.path() == "/new").unwrap();
    assert_eq!(
        landed.headers.get("authorization").unwrap(),
        "Bearer s3cr3t"
    );
    assert_eq!(landed.headers.get("cookie").unwrap(), "session=abc");
}

#[tokio::test]
async fn credentials_dropped_once_stay_dropped_on_the_way_back() {
    let origin = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/bounce", other.uri())),
        )
        .mount(&origin)
        .await;
    Mock::given(method("GET"))
        .and(path("/bounce"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/back", origin.uri())),
        )
        .mount(&other)
        .await;
    Mock::given(method("GET"))
        .and(path("/back"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&origin)
        .await;
    let response = client(&origin)
        .api("api")
        .unwrap()
        .get("/start")
        .header("authorization", "Bearer s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = origin.received_requests().await.unwrap();
    let back = requests.iter().find(|r| r.url.path() == "/back").unwrap();
    assert!(!back.headers.contains_key("authorization"));
}

#[tokio::test]
async fn redirects_are_bounded() {
    let origin = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/loop"))
        .mount(&origin)
        .await;
    let error = client(&origin)
        .api("api")
        .unwrap()
        .get("/loop")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Request);
    assert!(error.to_string().contains("too many redirects"), "{error}");
    // The first request and ten redirects.
    assert_eq!(origin.received_requests().await.unwrap().len(), 11);
}

/// `max_redirects(0)` turns following off and makes a redirect an error, as documented. A first
/// version of the transport's own follower (issue 19) kept nothing to follow with at a bound of
/// zero and handed the 3xx back as the answer.
#[tokio::test]
async fn regression_a_bound_of_zero_makes_a_redirect_an_error() {
    use integration_client::transport::Transport;
    use tower::ServiceExt;

    let origin = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/old"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/new"))
        .mount(&origin)
        .await;
    let transport = Transport::builder()
        .no_proxy()
        .max_redirects(0)
        .build()
        .unwrap();
    let request = http::Request::get(format!("{}/old", origin.uri()))
        .body(integration_core::Body::empty())
        .unwrap();
    let error = transport.oneshot(request).await.unwrap_err();
    assert!(
        error.to_string().contains("too many redirects (limit 0)"),
        "{error}"
    );
    assert_eq!(origin.received_requests().await.unwrap().len(), 1);
}

/// Issue 19: only a redirected response carries `RequestUri` (tower-http's follower put one in
/// every response, a URI copy and a box a call), with the last hop's URL; the facade's
/// `Response::url()` and `into_http()` give the URL sent otherwise.
#[tokio::test]
async fn only_a_redirected_response_records_its_url_and_the_facade_answers_for_the_others() {
    use http_body_util::BodyExt;
    use integration_client::transport::Transport;
    use tower::ServiceExt;
    use tower_http::follow_redirect::RequestUri;

    let origin = MockServer::start().await;
    mount_same_origin_redirect(&origin, 307, "moved").await;
    Mock::given(method("GET"))
        .and(path("/plain"))
        .respond_with(ResponseTemplate::new(200).set_body_string("plain"))
        .mount(&origin)
        .await;
    let transport = Transport::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        http::Request::get(format!("{}{path}", origin.uri()))
            .body(integration_core::Body::empty())
            .unwrap()
    };
    let plain = transport.clone().oneshot(get("/plain")).await.unwrap();
    assert!(plain.extensions().get::<RequestUri>().is_none());
    let moved = transport.oneshot(get("/old")).await.unwrap();
    assert_eq!(
        moved
            .extensions()
            .get::<RequestUri>()
            .map(|uri| uri.0.to_string()),
        Some(format!("{}/new", origin.uri()))
    );
    assert_eq!(
        &moved.into_body().collect().await.unwrap().to_bytes()[..],
        b"moved"
    );

    let client = client(&origin);
    let api = client.api("api").unwrap();
    let response = api.get("/plain").send().await.unwrap();
    assert_eq!(
        response.url().to_string(),
        format!("{}/plain", origin.uri())
    );
    let http = response.into_http();
    assert_eq!(
        http.extensions()
            .get::<RequestUri>()
            .map(|uri| uri.0.to_string()),
        Some(format!("{}/plain", origin.uri())),
        "into_http hands the URL sent over as RequestUri"
    );
}

/// An extension that counts its clones.
#[derive(Debug)]
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(self.0.clone())
    }
}

/// Issue 19: the transport's redirect follower copied every request's extensions (tower-http 0.7's
/// default) for redirected requests, which go only to hyper-util's pool, which reads none. A
/// request now reaches the server, through a redirect too, without the transport copying its
/// extensions.
#[tokio::test]
async fn the_transport_copies_no_request_extensions() {
    use http_body_util::BodyExt;
    use integration_client::transport::Transport;
    use tower::ServiceExt;

    let origin = MockServer::start().await;
    mount_same_origin_redirect(&origin, 302, "moved").await;
    let clones = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut request = http::Request::get(format!("{}/old", origin.uri()))
        .body(integration_core::Body::empty())
        .unwrap();
    request.extensions_mut().insert(Counted(clones.clone()));
    let transport = Transport::builder().no_proxy().build().unwrap();
    let response = transport.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"moved");
    assert_eq!(clones.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Issue 19: the transport makes the `Host` header itself (hyper-util formatted it afresh on every
/// call); one the caller set is sent as set, and the next call without one gets the origin's.
#[tokio::test]
async fn a_host_header_the_caller_sets_is_sent_as_set() {
    use integration_client::transport::Transport;
    use tower::ServiceExt;

    let origin = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&origin)
        .await;
    let transport = Transport::builder().no_proxy().build().unwrap();
    let request = |host: Option<&str>| {
        let mut request = http::Request::get(format!("{}/x", origin.uri()));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.body(integration_core::Body::empty()).unwrap()
    };
    let response = transport
        .clone()
        .oneshot(request(Some("virtual.example.test")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = transport.oneshot(request(None)).await.unwrap();
    assert_eq!(response.status(), 200);
    let received = origin.received_requests().await.unwrap();
    assert_eq!(
        received[0].headers.get("host").unwrap(),
        "virtual.example.test"
    );
    assert_eq!(
        received[1].headers.get("host").unwrap(),
        origin.address().to_string().as_str()
    );
}
