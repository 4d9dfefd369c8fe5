//! The chaos suite: the whole stack, driven open loop through the facade, against a fault upstream
//! of our own and through Redis and PostgreSQL outages (issues 12 and 13).
//!
//! # How a run is laid out
//!
//! - [`fault`]: the fault upstream, a loopback hyper server with a status mix, connections dropped
//!   before the head or reset mid-body, a latency distribution, outage switches (`503`, or the
//!   listener closed), and a server-side limiter (GCRA or fixed window) answering `429` with
//!   `Retry-After` and/or `RateLimit` headers. It records what it received, per second, and counts
//!   duplicated non-idempotent `POST`s by call id.
//! - [`load`]: the open-loop generator (send times fixed up front, each call spawned at its time,
//!   every call bounded: one that never completes is counted as hung) and a closed loop for the
//!   scenarios stated that way.
//! - [`scenario`]: the scenarios of issues 12 and 13 and their invariants.
//! - [`report`]: per-second timelines, figures, PASS/FAIL per invariant, `CHAOS.md` and
//!   `chaos.json`.
//!
//! The `chaos` binary wires them together; `cargo xtask chaos` runs it (the full run writes the
//! report at the workspace root) and `cargo xtask chaos --smoke` runs every scenario for a few
//! seconds and asserts only what holds whatever the timing. The reuse of the benchmark's pieces is
//! deliberate: the machine description ([`Machine`](crate::bench::report::Machine)) and the error
//! chain formatting come from [`bench`](crate::bench).

pub mod fault;
pub mod load;
pub mod report;
pub mod scenario;
