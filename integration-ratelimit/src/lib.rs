//! Client-side rate limiting (GCRA quotas in memory or Redis, obedient to server throttle signals): filled by its own issue.
