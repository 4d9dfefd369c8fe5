//! The response body is captured while it streams, capped, only for textual types, and never
//! buffered for logging.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use integration_core::testing::capture;
use integration_log::{LogLayer, LogPolicy};
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::filter::LevelFilter;

/// A body fed chunk by chunk through a channel: the test decides when the upstream sends.
mod channel {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Receiver(pub(crate) mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Receiver {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }
}

fn streaming_response(
    content_type: &str,
) -> (Response<channel::Receiver>, mpsc::UnboundedSender<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let response = Response::builder()
        .header("content-type", content_type)
        .body(channel::Receiver(rx))
        .unwrap();
    (response, tx)
}

#[tokio::test]
async fn response_body_is_captured_while_it_streams_and_logged_at_its_end() {
    let captured = capture(LevelFilter::TRACE);
    let (response, tx) = streaming_response("application/json");
    let response = std::sync::Mutex::new(Some(response));
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default().with_body_limit(16)))
        .service_fn(move |_: Request<String>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
    let response = service
        .oneshot(
            Request::get("https://api.test/x")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(body.is_capturing());

    tx.send(Bytes::from_static(br#"{"items":[1,2,"#)).unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // The first chunk reaches the caller while the upstream is still sending: nothing is buffered.
    assert_eq!(first, Bytes::from_static(br#"{"items":[1,2,"#));
    assert!(
        captured.event("response body").is_none(),
        "logged only when the body ends"
    );

    tx.send(Bytes::from_static(br#"3],"secret":"abcdefghij"}"#))
        .unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second.len(), 25);
    drop(tx);
    assert!(body.frame().await.is_none());

    let event = captured.event("response body").unwrap();
    // Capped at 16 bytes: the JSON is cut, and still scanned as JSON.
    assert_eq!(
        event.field("http.response.body"),
        Some(r#"{"items":[1,2,3]"#)
    );
    assert_eq!(event.field("http.response.body.size"), Some("39"));
    assert_eq!(event.field("http.response.body.truncated"), Some("true"));
    assert_eq!(event.field("http.response.body.complete"), Some("true"));
}

#[tokio::test]
async fn a_capped_secret_is_still_redacted() {
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default().with_body_limit(30)))
        .service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(r#"{"access_token":"abcdefghijklmnopqrstuvwxyz"}"#.to_owned())
                    .unwrap(),
            )
        });
    let response = service
        .oneshot(
            Request::get("https://api.test/x")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let shown = captured.event("response body").unwrap();
    assert_eq!(
        shown.field("http.response.body"),
        Some(r#"{"access_token":"[REDACTED]""#)
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_is_logged_as_incomplete() {
    let captured = capture(LevelFilter::TRACE);
    let (response, tx) = streaming_response("text/plain; charset=utf-8");
    let response = std::sync::Mutex::new(Some(response));
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(move |_: Request<String>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
    let response = service
        .oneshot(
            Request::get("https://api.test/x")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    tx.send(Bytes::from_static(b"partial ")).unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let event = captured.event("response body").unwrap();
    assert_eq!(event.field("http.response.body"), Some("partial "));
    assert_eq!(event.field("http.response.body.complete"), Some("false"));
}

#[tokio::test]
async fn binary_and_encoded_bodies_are_not_captured() {
    let captured = capture(LevelFilter::TRACE);
    for (content_type, encoding) in [("image/png", None), ("application/json", Some("gzip"))] {
        let service = ServiceBuilder::new()
            .layer(LogLayer::new(LogPolicy::default()))
            .service_fn(move |_: Request<String>| async move {
                let mut response = Response::builder().header("content-type", content_type);
                if let Some(encoding) = encoding {
                    response = response.header("content-encoding", encoding);
                }
                Ok::<_, Infallible>(response.body(String::from("\u{1}\u{2}")).unwrap())
            });
        let response = service
            .oneshot(
                Request::get("https://api.test/x")
                    .body(String::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(
            !response.body().is_capturing(),
            "{content_type} {encoding:?}"
        );
        response.into_body().collect().await.unwrap();
    }
    assert!(captured.event("response body").is_none());
}

#[tokio::test]
async fn request_body_is_captured_capped_and_redacted_from_replayable_bytes() {
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default().with_body_limit(64)))
        .service_fn(|_: Request<integration_core::Body>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let body = integration_core::Body::from(
        "grant_type=client_credentials&client_secret=s3cr3t&scope=read",
    );
    let request = Request::post("https://auth.test/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .unwrap();
    service.oneshot(request).await.unwrap();
    let event = captured.event("request").unwrap();
    assert_eq!(
        event.field("http.request.body"),
        Some("grant_type=client_credentials&client_secret=[REDACTED]&scope=read")
    );
    assert_eq!(event.field("http.request.body.size"), Some("61"));
    assert_eq!(event.field("http.request.body.truncated"), Some("false"));
}

#[tokio::test]
async fn an_empty_body_is_not_captured() {
    let captured = capture(LevelFilter::TRACE);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(204)
                    .header("content-type", "application/json")
                    .body(String::new())
                    .unwrap(),
            )
        });
    let response = service
        .oneshot(
            Request::delete("https://api.test/x/1")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!response.body().is_capturing());
    response.into_body().collect().await.unwrap();
    assert!(captured.event("response").is_some());
    assert!(captured.event("response body").is_none());
}

/// Every response carries its `LogBody`s through every layer above, by value: the capture state,
/// used only when a body is captured, is boxed, so a log layer adds one word to the body it wraps
/// (it added ~140 bytes, copied by every layer above on every call, issue 19).
#[test]
fn a_log_body_adds_one_word_to_the_body_it_wraps() {
    use integration_log::LogBody;
    use std::mem::size_of;
    type Inner = http_body_util::Full<Bytes>;
    assert!(
        size_of::<LogBody<Inner>>() <= size_of::<Inner>() + size_of::<usize>(),
        "{} bytes over {}",
        size_of::<LogBody<Inner>>(),
        size_of::<Inner>()
    );
    assert!(
        size_of::<LogBody<LogBody<Inner>>>() <= size_of::<Inner>() + 2 * size_of::<usize>(),
        "the call's and the attempt's log bodies: {} bytes",
        size_of::<LogBody<LogBody<Inner>>>()
    );
}
