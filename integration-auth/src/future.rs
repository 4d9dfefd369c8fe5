//! The response future of [`Auth`](crate::Auth).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use integration_core::BoxError;
use integration_core::body::RequestCopy;
use integration_core::ext::CredentialInvalidated;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::credential::{AuthContext, Credential, CredentialFuture, CredentialProvider};

pin_project! {
    /// The response future of [`Auth`](crate::Auth): look the credential up (at once when it is
    /// cached), send, and on a 401 invalidate and, if configured and the provider
    /// [can renew](crate::CredentialProvider::can_renew) the credential, replay once.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        // What only a lookup that waits or a replay needs, boxed: on the fast path (a credential
        // ready at once, no replay copy) it is `None`, and the future, moved by every layer above
        // it, is smaller by two requests and a service (issue 19: memcpy of nested futures).
        slow: Option<Box<Slow<S, B>>>,
        provider: Arc<dyn CredentialProvider>,
        credential: Option<Credential>,
        replayed: bool,
    }
}

/// The state of the slow path: the service `poll_ready` reserved, kept while a lookup or a replay
/// still needs it, the request waiting for its credential, and the copy kept for a replay.
struct Slow<S, B> {
    service: S,
    request: Option<http::Request<B>>,
    replay: Option<RequestCopy<B>>,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Lookup { lookup: CredentialFuture },
        PollReady,
        Call { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<S, B, RB> ResponseFuture<S, B>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone,
{
    /// `service` is the one `poll_ready` reserved. A credential ready now sends the request through
    /// it at once, and the future keeps nothing of it (a replay copy aside). A lookup that waits
    /// takes the reserved service along and leaves a clone in its place for the next `poll_ready`.
    pub(crate) fn new(
        service: &mut S,
        provider: Arc<dyn CredentialProvider>,
        mut request: http::Request<B>,
        replay: Option<RequestCopy<B>>,
        mut lookup: CredentialFuture,
    ) -> Self {
        // Fast path: a static or fresh cached credential is ready now; call without a detour. Each
        // path builds the future where it returns it: built through a `(state, ..)` tuple first,
        // the inner future was copied twice more (issue 19: memcpy of nested futures).
        let (state, credential) = match lookup.take_ready() {
            Some(Ok(credential)) => match credential.apply(&mut request) {
                Ok(()) => {
                    // Sent: a replay goes through a clone, driven to readiness before it is called.
                    let slow = replay.map(|replay| {
                        Box::new(Slow {
                            service: service.clone(),
                            request: None,
                            replay: Some(replay),
                        })
                    });
                    return Self {
                        state: State::Call {
                            future: service.call(request),
                        },
                        slow,
                        provider,
                        credential: Some(credential),
                        replayed: false,
                    };
                }
                Err(error) => (
                    State::Failed {
                        error: Some(Box::new(error)),
                    },
                    None,
                ),
            },
            Some(Err(error)) => (State::Failed { error: Some(error) }, None),
            None => {
                // Waiting for the credential: the reserved service goes along.
                let clone = service.clone();
                return Self {
                    state: State::Lookup { lookup },
                    slow: Some(Box::new(Slow {
                        service: std::mem::replace(service, clone),
                        request: Some(request),
                        replay,
                    })),
                    provider,
                    credential: None,
                    replayed: false,
                };
            }
        };
        // Failed before sending: nothing is sent, a replay copy is not needed.
        Self {
            state,
            slow: None,
            provider,
            credential,
            replayed: false,
        }
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<http::Request<B>>,
{
    /// A request that carries its own credential
    /// ([`OwnCredential`](integration_core::ext::OwnCredential)), already sent: its response is
    /// handed back as it is, a 401 included (no provider credential to invalidate, none to replay).
    pub(crate) fn own_credential(future: S::Future, provider: Arc<dyn CredentialProvider>) -> Self {
        Self {
            state: State::Call { future },
            slow: None,
            provider,
            credential: None,
            // As after the single replay: a 401 is final and gets no marker.
            replayed: true,
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<http::Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Lookup { lookup } => {
                    let credential = ready!(Pin::new(lookup).poll(cx))?;
                    let slow = this
                        .slow
                        .as_mut()
                        .expect("a lookup that waits keeps its state");
                    let mut request = slow.request.take().expect("request present until sent");
                    credential
                        .apply(&mut request)
                        .map_err(|error| Box::new(error) as BoxError)?;
                    let future = slow.service.call(request);
                    *this.credential = Some(credential);
                    this.state.set(State::Call { future });
                }
                StateProj::PollReady => {
                    let slow = this.slow.as_mut().expect("a replay keeps its state");
                    ready!(slow.service.poll_ready(cx)).map_err(Into::into)?;
                    let request = slow.request.as_ref().expect("replay request present");
                    let lookup = this.provider.credential(&AuthContext::of(request));
                    this.state.set(State::Lookup { lookup });
                }
                StateProj::Call { future } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(response));
                    }
                    if let Some(credential) = this.credential.take() {
                        this.provider.invalidate(&credential);
                    }
                    if !this.provider.can_renew() {
                        // A static key, Basic or bearer: a replay would carry the very credential
                        // just refused (and send a POST twice). The 401 is the answer; no marker, so
                        // a retry layer above does not replay it either.
                        tracing::debug!(
                            "credential rejected (401): it cannot change, not replayed"
                        );
                        return Poll::Ready(Ok(response));
                    }
                    if *this.replayed {
                        // The single replay was ours and was refused too: the 401 is final.
                        return Poll::Ready(Ok(response));
                    }
                    if let Some(slow) = this.slow.as_mut()
                        && let Some(replay) = slow.replay.take()
                    {
                        tracing::debug!("credential rejected (401): invalidated, replaying once");
                        *this.replayed = true;
                        slow.request = Some(replay.into_request());
                        this.state.set(State::PollReady);
                        continue;
                    }
                    // Tell the retry layer (if any) that a replay will carry a fresh credential.
                    response.extensions_mut().insert(CredentialInvalidated);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<http::Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("credential", &self.credential)
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}
