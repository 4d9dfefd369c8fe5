//! Retries with backoff, budgets, deadlines and a circuit breaker, as tower layers: filled by its own issue.
