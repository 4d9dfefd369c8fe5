//! W3C `traceparent` propagation: added when asked, one trace per call, one span id per attempt,
//! never overwriting the caller's.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use integration_core::ext::Attempt;
use integration_log::traceparent::TRACEPARENT;
use integration_log::{AttemptLogLayer, LogLayer, LogPolicy};
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<Option<String>>>>;

fn recording_transport(
    seen: Seen,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<String>| {
        let seen = seen.clone();
        async move {
            let header = request
                .headers()
                .get(TRACEPARENT)
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(header);
            Ok(Response::new(String::new()))
        }
    })
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<_> = value.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3] == "01"
        && parts[1..3].iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        && parts[1] != "0".repeat(32)
}

#[tokio::test]
async fn propagation_is_off_by_default() {
    let seen = Seen::default();
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service(recording_transport(seen.clone()));
    service
        .oneshot(Request::get("https://a.test/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![None]);
}

#[tokio::test]
async fn each_attempt_gets_its_own_span_id_under_the_calls_trace_id() {
    let seen = Seen::default();
    let policy = LogPolicy::default().with_traceparent(true).with_id_seed(7);
    let attempts = ServiceBuilder::new()
        .layer(AttemptLogLayer::new(policy.clone()))
        .service(recording_transport(seen.clone()));
    // A stand-in for the retry layer between the two: two attempts of one call.
    let retry = service_fn(move |request: Request<String>| {
        let attempts = attempts.clone();
        async move {
            for n in 1..=2 {
                let mut copy = Request::new(String::new());
                *copy.headers_mut() = request.headers().clone();
                *copy.extensions_mut() = request.extensions().clone();
                copy.extensions_mut().insert(Attempt::new(n));
                attempts.clone().oneshot(copy).await?;
            }
            Ok::<_, integration_core::BoxError>(Response::new(String::new()))
        }
    });
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy))
        .service(retry);
    service
        .oneshot(Request::get("https://a.test/").body(String::new()).unwrap())
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    let [Some(first), Some(second)] = &seen[..] else {
        panic!("two attempts with a traceparent: {seen:?}");
    };
    assert!(is_traceparent(first), "{first}");
    assert!(is_traceparent(second), "{second}");
    assert_eq!(first[3..35], second[3..35], "one trace id per call");
    assert_ne!(first[36..52], second[36..52], "one span id per attempt");
}

#[tokio::test]
async fn an_existing_traceparent_is_never_overwritten() {
    let theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let seen = Seen::default();
    let policy = LogPolicy::default().with_traceparent(true);
    let service = ServiceBuilder::new()
        .layer(LogLayer::new(policy.clone()))
        .layer(AttemptLogLayer::new(policy))
        .service(recording_transport(seen.clone()));
    service
        .oneshot(
            Request::get("https://a.test/")
                .header("traceparent", theirs)
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Some(theirs.to_owned())]);
}
