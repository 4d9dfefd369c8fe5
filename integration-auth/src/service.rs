use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use integration_core::BoxError;
use integration_core::body::{RequestCopy, TryCloneBody};
use integration_core::ext::OwnCredential;
use tower_service::Service;

use crate::credential::{AuthContext, CredentialProvider};
use crate::future::ResponseFuture;

/// The service of [`AuthLayer`](crate::AuthLayer): a credential on every request, a 401 handled.
///
/// # Errors
///
/// The inner service's error, boxed; or the provider's ([`AuthFailed`](integration_core::error::AuthFailed)
/// for ours) when no credential could be had, in which case the request is not sent.
pub struct Auth<S> {
    inner: S,
    provider: Arc<dyn CredentialProvider>,
    replay: bool,
}

impl<S> Auth<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, provider: Arc<dyn CredentialProvider>, replay: bool) -> Self {
        Self {
            inner,
            provider,
            replay,
        }
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

impl<S: Clone> Clone for Auth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            provider: Arc::clone(&self.provider),
            replay: self.replay,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("provider", &self.provider)
            .field("replay_on_unauthorized", &self.replay)
            .finish()
    }
}

impl<S, B, RB> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: TryCloneBody,
{
    type Response = http::Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service in `self` is the one `poll_ready` reserved. A call whose credential is ready
        // now is sent through it here; when the credential may take a while (a token refresh) the
        // future takes the reserved service along and leaves a fresh clone in its place
        // (tower-http's async authorization does the same; see `ResponseFuture::new`).
        if request.extensions().get::<OwnCredential>().is_some() {
            // The caller's own credential replaces the integration's: sent as it is, never replayed.
            return ResponseFuture::own_credential(
                self.inner.call(request),
                Arc::clone(&self.provider),
            );
        }
        let ctx = AuthContext::of(&request);
        // Only a credential that can change is worth replaying: keep no copy for the others.
        let replay = if self.replay && self.provider.can_renew() {
            RequestCopy::of(&request)
        } else {
            None
        };
        let lookup = self.provider.credential(&ctx);
        ResponseFuture::new(
            &mut self.inner,
            Arc::clone(&self.provider),
            request,
            replay,
            lookup,
        )
    }
}
