//! `RequestBuilder::send`'s future against stacks that are not ready at once: it calls the stack
//! itself (issue 19: no `tower::util::Oneshot` holding the service and the request beside the
//! call), so it must keep tower's contract, `poll_ready` until ready and then one `call`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use integration_client::Client;
use integration_core::{Body, BoxError};

/// A stack that answers `Pending` to its first `not_ready` readiness checks (waking the task each
/// time, as a layer whose reservation is freed would), then fails readiness when `fail` says so;
/// it counts its calls.
#[derive(Clone)]
struct Reluctant {
    not_ready: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    fail: bool,
    /// Whether a `Pending` wakes the task at once (a stack never ready does not: it would spin).
    wakes: bool,
}

impl Reluctant {
    fn new(not_ready: usize, fail: bool) -> Self {
        Self {
            not_ready: Arc::new(AtomicUsize::new(not_ready)),
            checks: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
            fail,
            wakes: true,
        }
    }

    /// A stack that is never ready and never wakes its caller.
    fn never_ready() -> Self {
        Self {
            wakes: false,
            ..Self::new(usize::MAX, false)
        }
    }
}

impl tower::Service<Request<Body>> for Reluctant {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let left = self.not_ready.load(Ordering::SeqCst);
        if left > 0 {
            self.not_ready.store(left - 1, Ordering::SeqCst);
            if self.wakes {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        if self.fail {
            return Poll::Ready(Err("the stack refuses calls".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = format!("{} {}", request.method(), request.uri().path());
        std::future::ready(Ok(Response::new(reply)))
    }
}

/// Polls `send` once, with a waker that does nothing (the test polls again itself).
fn poll_once(
    send: &mut integration_client::SendFuture,
) -> Poll<Result<integration_client::Response, integration_core::Error>> {
    use std::future::Future as _;
    std::pin::Pin::new(send).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

fn client(stack: &Reluctant) -> Client {
    Client::builder()
        .service("reluctant", "https://api.example.test/v1/", stack.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stack_not_ready_at_once_is_called_once_it_is() {
    let stack = Reluctant::new(2, false);
    let client = client(&stack);
    let response = client
        .api("reluctant")
        .unwrap()
        .get("/items")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "GET /v1/items");
    assert_eq!(
        stack.checks.load(Ordering::SeqCst),
        3,
        "two Pending, one Ready"
    );
    assert_eq!(stack.calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_stack_ready_at_once_is_called_in_the_first_poll() {
    let stack = Reluctant::new(0, false);
    let client = client(&stack);
    let mut send = client.api("reluctant").unwrap().post("/items").send();
    let Poll::Ready(response) = poll_once(&mut send) else {
        panic!("a ready stack whose future is ready answers in the first poll");
    };
    assert_eq!(response.unwrap().text().await.unwrap(), "POST /v1/items");
    assert_eq!(stack.checks.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_readiness_error_names_the_integration_and_calls_nothing() {
    for not_ready in [0, 1] {
        let stack = Reluctant::new(not_ready, true);
        let client = client(&stack);
        let error = client
            .api("reluctant")
            .unwrap()
            .get("/items")
            .send()
            .await
            .unwrap_err();
        assert_eq!(error.integration(), Some("reluctant"), "{error:?}");
        let mut chain = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = cause {
            chain.push(e.to_string());
            cause = e.source();
        }
        assert!(
            chain.iter().any(|e| e.contains("refuses calls")),
            "{chain:?}"
        );
        assert_eq!(stack.calls.load(Ordering::SeqCst), 0);
        assert_eq!(client.in_flight(), 0);
    }
}

/// Dropped while the stack is not ready, the call is let go: nothing called, nothing in flight.
#[tokio::test]
async fn a_send_dropped_before_the_stack_is_ready_calls_nothing() {
    let stack = Reluctant::never_ready();
    let client = client(&stack);
    let mut send = client.api("reluctant").unwrap().get("/items").send();
    assert!(poll_once(&mut send).is_pending());
    assert!(poll_once(&mut send).is_pending());
    assert_eq!(client.in_flight(), 1);
    drop(send);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(stack.calls.load(Ordering::SeqCst), 0);
}

/// The request's own timeout bounds the wait for a stack that is not ready too (its timer is
/// polled beside the readiness check, not only once the call is made): a deadline error naming the
/// integration, nothing called, nothing left in flight.
#[tokio::test]
async fn a_request_timeout_ends_the_wait_for_a_stack_never_ready() {
    let stack = Reluctant::never_ready();
    let client = client(&stack);
    let error = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client
            .api("reluctant")
            .unwrap()
            .get("/items")
            .timeout(std::time::Duration::from_millis(100))
            .send(),
    )
    .await
    .expect("the request's timeout ends the call, not the test's")
    .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.integration(), Some("reluctant"));
    assert!(stack.checks.load(Ordering::SeqCst) >= 1);
    assert_eq!(stack.calls.load(Ordering::SeqCst), 0);
    assert_eq!(client.in_flight(), 0);
}

/// A pending send's `Debug` shows neither the query nor the headers, whatever its state: either
/// may carry a credential.
#[tokio::test]
async fn a_send_future_shows_no_query_or_header_in_debug() {
    let stack = Reluctant::never_ready();
    let client = client(&stack);
    let mut send = client
        .api("reluctant")
        .unwrap()
        .get("/items?api_key=sk_live_path")
        .query(&[("token", "sk_live_query")])
        .header("authorization", "Bearer sk_live_header")
        .send();
    let before = format!("{send:?}");
    assert!(poll_once(&mut send).is_pending());
    let sending = format!("{send:?}");
    for shown in [&before, &sending] {
        assert!(!shown.contains("sk_live"), "{shown}");
    }
    assert!(before.contains("/items"), "{before}");
    assert!(sending.contains("reluctant"), "{sending}");
}

/// A stack that keeps tower's contract strictly: each clone is called only after its own
/// `poll_ready` said ready, once (a clone starts unready, as tower's concurrency limit does: its
/// reservation is not cloned). It counts its clones and its calls.
struct Strict {
    clones: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// Readiness fails for this many checks (of any clone), then succeeds.
    refusals: Arc<AtomicUsize>,
    ready: bool,
}

impl Strict {
    fn new(refusals: usize) -> Self {
        Self {
            clones: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
            refusals: Arc::new(AtomicUsize::new(refusals)),
            ready: false,
        }
    }

    /// A client whose one API, `strict`, is this stack.
    fn client(&self) -> Client {
        Client::builder()
            .service("strict", "https://api.example.test/", self.clone())
            .build()
            .unwrap()
    }

    /// The clones made so far.
    fn clones(&self) -> usize {
        self.clones.load(Ordering::SeqCst)
    }
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
            calls: self.calls.clone(),
            refusals: self.refusals.clone(),
            ready: false,
        }
    }
}

impl tower::Service<Request<Body>> for Strict {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let refusals = self.refusals.load(Ordering::SeqCst);
        if refusals > 0 {
            self.refusals.store(refusals - 1, Ordering::SeqCst);
            return Poll::Ready(Err("the stack refuses calls".into()));
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Body>) -> Self::Future {
        assert!(
            self.ready,
            "called without a `poll_ready` since its last call"
        );
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(String::from("ok"))))
    }
}

/// Issue 19: a call takes a clone of the stack that an earlier call has made its call with,
/// rather than cloning the whole stack (an allocation and an increment of every layer's shared
/// state a call); the clone is asked `poll_ready` again before each of its calls.
#[tokio::test]
async fn sequential_calls_reuse_one_clone_of_the_stack_asked_ready_before_each_call() {
    let stack = Strict::new(0);
    let client = stack.client();
    let before = stack.clones();
    let api = client.api("strict").unwrap();
    for _ in 0..20 {
        let response = api.get("/items").send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    assert_eq!(stack.calls.load(Ordering::SeqCst), 20);
    assert_eq!(
        stack.clones() - before,
        1,
        "one clone for the first call, the same clone for the next ones"
    );
}

/// A clone whose readiness failed is not kept: the next call clones the stack again and succeeds.
#[tokio::test]
async fn a_clone_whose_readiness_failed_is_not_reused() {
    let stack = Strict::new(1);
    let client = stack.client();
    let before = stack.clones();
    let api = client.api("strict").unwrap();
    api.get("/items").send().await.unwrap_err();
    api.get("/items").send().await.unwrap();
    api.get("/items").send().await.unwrap();
    assert_eq!(stack.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        stack.clones() - before,
        2,
        "the refused clone is dropped, the second is kept for the third call"
    );
}

/// Calls from many tasks at once on a multi-threaded runtime: every call is made by a clone asked
/// ready before it (`Strict` panics otherwise), and the clones kept stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_each_use_a_clone_asked_ready_first() {
    let stack = Strict::new(0);
    let client = stack.client();
    let before = stack.clones();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let api = client.api("strict").unwrap();
                for _ in 0..50 {
                    api.get("/items").send().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(stack.calls.load(Ordering::SeqCst), 400);
    let clones = stack.clones() - before;
    assert!(
        (1..400).contains(&clones),
        "{clones} clones for 400 calls: clones are reused"
    );
}

/// A stack not ready at the first poll gives its clone back once called: the next call reuses it.
#[tokio::test]
async fn a_clone_called_after_waiting_for_readiness_is_reused() {
    let stack = Reluctant::new(2, false);
    let client = client(&stack);
    let api = client.api("reluctant").unwrap();
    api.get("/items").send().await.unwrap();
    // The reused clone is ready at once: one more check, one more call.
    api.get("/items").send().await.unwrap();
    assert_eq!(stack.checks.load(Ordering::SeqCst), 4);
    assert_eq!(stack.calls.load(Ordering::SeqCst), 2);
}
