//! [`Retry`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response};
use integration_core::body::{RequestCopy, TryCloneBody};
use integration_core::classify::RequestMeta;
use integration_core::ext::{Attempt, Deadline, IDEMPOTENCY_KEY, IntegrationName};
use integration_core::kept::Kept;
use integration_core::{BoxError, names};
use metrics::{Counter, Key, Label, Metadata, SharedString};
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::future::ResponseFuture;
use crate::policy::RetryPolicy;

/// What every service built by one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    pub(crate) budget: RetryBudget,
    /// The attempts counter of each integration label, kept per recorder (registering it per
    /// attempt cost the recorder's registry lookup every time).
    attempts: Kept<SharedString, Counter>,
}

/// What the counters of this crate are registered with (what `metrics::counter!` would give).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Shared {
    pub(crate) fn new(policy: RetryPolicy, budget: RetryBudget) -> Self {
        Self {
            policy,
            budget,
            attempts: Kept::new(),
        }
    }

    /// One more attempt of the integration `label`.
    pub(crate) fn count_attempt(&self, label: &SharedString) {
        self.attempts.with(
            |kept| kept == label,
            || label.clone(),
            |recorder| {
                let key = Key::from_parts(
                    names::ATTEMPTS,
                    vec![Label::new(names::INTEGRATION, label.clone())],
                );
                recorder.register_counter(&key, &METADATA)
            },
            |counter| counter.increment(1),
        );
    }
}

/// Retries attempts that failed in a way worth repeating. Built by [`RetryLayer`](crate::RetryLayer).
///
/// # Errors
///
/// A final error comes back as a boxed [`integration_core::Error`] carrying the attempt count and the
/// integration name ([`IntegrationName`] of the request, when present): the inner service's last
/// error, or one of core's typed errors when the layer refuses to wait —
/// [`DeadlineExceeded`](integration_core::error::DeadlineExceeded) (the wait would pass the
/// [`Deadline`]), [`RateLimited`](integration_core::error::RateLimited) (a `Retry-After` past
/// [`max_retry_after`](RetryPolicy::with_max_retry_after)) or
/// [`BudgetExhausted`](integration_core::error::BudgetExhausted). A final error *status* is a
/// response (`Ok`), with the [`Attempts`](integration_core::ext::Attempts) extension: the caller
/// decides what it means.
///
/// # Bodies
///
/// A request whose body cannot be copied ([`TryCloneBody::try_clone_body`] returns `None`, as for a
/// streaming [`Body`](integration_core::Body)) is sent once and never retried, whatever the outcome.
///
/// # Clone
///
/// Clones share the policy and the budget.
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with `policy`, spending from `budget`.
    pub fn new(inner: S, policy: RetryPolicy, budget: RetryBudget) -> Self {
        Self::from_shared(inner, Arc::new(Shared::new(policy, budget)))
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: TryCloneBody,
    ResB: http_body::Body,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        if policy.adds_idempotency_key()
            && matches!(*request.method(), Method::POST | Method::PATCH)
            && !request.headers().contains_key(IDEMPOTENCY_KEY)
        {
            // Added before the copy for retries is taken, so every attempt carries the same key.
            let mut buffer = uuid::Uuid::encode_buffer();
            let key = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            let value = HeaderValue::from_str(key).expect("a UUID is a valid header value");
            request.headers_mut().insert(IDEMPOTENCY_KEY, value);
        }
        // The first attempt. `Attempt::of` reads a missing attempt as the first, so the extension is
        // written only to reset one set above this layer: each extension is a boxed allocation
        // (issue 19).
        if Attempt::of(&request) != Attempt::FIRST {
            request.extensions_mut().insert(Attempt::FIRST);
        }
        let meta = RequestMeta::from_request(&request);
        let integration = IntegrationName::of(&request).cloned();
        let deadline = Deadline::of(&request);
        // `None` for a body that cannot be replayed: such a request is sent once.
        let spare = RequestCopy::of(&request);
        self.shared.budget.deposit();

        let label = crate::integration_label(integration.as_ref());
        self.shared.count_attempt(&label);

        // `self.inner` was driven to readiness by `poll_ready`, so the first attempt uses it. Later
        // attempts use this clone, which the future drives to readiness again before each call (as
        // tower's `Retry` does): a clone is never called before its own `poll_ready` succeeded.
        let service = self.inner.clone();
        let future = self.inner.call(request);
        ResponseFuture::new(
            future,
            service,
            crate::future::RetryState::new(
                Arc::clone(&self.shared),
                spare,
                meta,
                integration,
                deadline,
                label,
            ),
        )
    }
}
