//! [`RetryLayer`]: configuration only.

use std::sync::Arc;

use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::policy::RetryPolicy;
use crate::service::{Retry, Shared};

/// Applies [`Retry`] to a service: repeats attempts that failed in a way worth repeating, with
/// backoff and jitter, honouring `Retry-After`, the idempotency rules, the total [`Deadline`] and a
/// [`RetryBudget`].
///
/// See the [crate docs](crate) for the rules and where the layer belongs in a stack.
///
/// # Clone
///
/// Clones (and every service they build) share one [`RetryBudget`]. To keep the budget across a
/// rebuilt stack, pass [`budget()`](Self::budget) to the new layer's [`with_budget`](Self::with_budget).
///
/// ```
/// use integration_retry::{RetryBudget, RetryLayer, RetryPolicy};
///
/// let layer = RetryLayer::new(RetryPolicy::default().with_max_attempts(4));
/// let rebuilt = RetryLayer::new(RetryPolicy::default()).with_budget(layer.budget().clone());
/// assert!(rebuilt.budget().ptr_eq(layer.budget()));
/// ```
///
/// [`Deadline`]: integration_core::ext::Deadline
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: RetryBudget,
}

impl RetryLayer {
    /// A layer with `policy` and a fresh [`RetryBudget::default`] (20 % over 10 s, floor 10/s).
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            budget: RetryBudget::default(),
        }
    }

    /// Spends from `budget` instead (a clone of another layer's to share it).
    #[must_use]
    pub fn with_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Replaces the policy, keeping the budget.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The budget handle; clone it to share the budget with another layer.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(
            inner,
            Arc::new(Shared::new(self.policy.clone(), self.budget.clone())),
        )
    }
}
