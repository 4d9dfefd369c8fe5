use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::credential::CredentialProvider;
use crate::service::Auth;

/// Puts a fresh credential on every request (every attempt, when it sits inside the retry layer) and
/// handles the upstream's 401.
///
/// On a 401 the layer invalidates the credential it sent (compare and invalidate: one refresh for many
/// concurrent 401s). When the provider [can renew](CredentialProvider::can_renew) it (OAuth, JWT),
/// the layer marks the response with
/// [`CredentialInvalidated`](integration_core::ext::CredentialInvalidated), which the retry layer
/// replays exactly once; used alone, with [`replay_on_unauthorized`](Self::replay_on_unauthorized) on
/// (the default), the layer makes that single replay itself, for requests whose body can be cloned
/// ([`TryCloneBody`](integration_core::TryCloneBody)). A credential that cannot change (an API key,
/// Basic, a static bearer token) is never replayed: the 401 goes back to the caller as it came, and
/// the upstream sees the request once.
///
/// # Request bodies
///
/// The service asks the request body for [`TryCloneBody`](integration_core::TryCloneBody), which
/// `integration_core::Body`, `http_body_util::Full<Bytes>`/`Empty<Bytes>`, `String`, `Vec<u8>`,
/// `Bytes` and `()` implement. A streaming body is sent once: on a 401 it is not replayed, only marked
/// (when the credential can be renewed).
///
/// # Clone
///
/// Clones share the provider, hence one token cache.
///
/// ```
/// use integration_auth::{ApiKey, AuthLayer};
/// use secrecy::SecretString;
///
/// // Inside a retry layer that replays on `CredentialInvalidated`, let it do the replay.
/// let layer = AuthLayer::new(ApiKey::new(SecretString::from("k-123"))).replay_on_unauthorized(false);
/// assert!(!layer.replays_on_unauthorized());
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    provider: Arc<dyn CredentialProvider>,
    replay: bool,
}

impl AuthLayer {
    /// A layer over `provider`; replays a 401 once itself.
    pub fn new(provider: impl CredentialProvider) -> Self {
        Self::from_arc(Arc::new(provider))
    }

    /// A layer over a provider shared with other code (its cache is shared too).
    pub fn from_arc(provider: Arc<dyn CredentialProvider>) -> Self {
        Self {
            provider,
            replay: true,
        }
    }

    /// Whether the layer replays a request once after a 401 (default true). Turn it off under a retry
    /// layer that replays on [`CredentialInvalidated`](integration_core::ext::CredentialInvalidated),
    /// or a 401 would be replayed twice.
    #[must_use]
    pub fn replay_on_unauthorized(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }

    /// Whether the layer replays a 401 itself.
    pub fn replays_on_unauthorized(&self) -> bool {
        self.replay
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn CredentialProvider> {
        &self.provider
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("provider", &self.provider)
            .field("replay_on_unauthorized", &self.replay)
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::new(inner, Arc::clone(&self.provider), self.replay)
    }
}
