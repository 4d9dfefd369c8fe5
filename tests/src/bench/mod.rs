//! The end-to-end benchmark harness.
//!
//! # How a run is laid out
//!
//! - [`server`]: a minimal hyper 1 HTTP/1.1 keep-alive server on `127.0.0.1:0` that answers a small
//!   fixed JSON body. [`server::ServerProcess`] runs it in a child process, so the server's CPU is
//!   never counted as the client's.
//! - [`scenario`]: the clients under test ([`scenario::Scenario`]), built with the same pool
//!   settings ([`scenario::PoolSettings`]) where each allows, all sending the same request.
//! - [`load`]: the drivers. [`load::ClosedLoop`] keeps a fixed number of calls in flight and counts
//!   completions (throughput); [`load::OpenLoop`] sends at a fixed rate on a precomputed schedule and
//!   measures each latency from the time the call was *due*, so a slow client cannot hide its delay
//!   by sending less (no coordinated omission).
//! - [`measure`]: CPU time and peak resident memory of the calling process (`getrusage(2)`,
//!   `/proc/self/status`).
//! - [`worker`]: one scenario measured in its own process: the observability every worker
//!   installs, the client, the closed loop then the open loop.
//! - [`count`]: instruction counts, a fixed number of calls run under valgrind's callgrind (N and 2N
//!   calls, differenced), for every scenario and for the stack with one layer left out at a time.
//! - [`profile`]: the same two runs read function by function (`bench profile`): each function's
//!   own instructions and cache misses a call, against another subject, or by caller of a function.
//! - [`gateway`]: the gateway's overhead against calling the stack in-process (`bench gateway`).
//! - [`cache`]: the cache's own figures (a memory hit against a loopback miss, Redis hits per
//!   second), measured by `bench cache` apart from the scenarios.
//! - [`report`]: what one worker measured ([`worker::WorkerReport`]), the medians across rounds,
//!   the ratios against the raw client and the peer stack, and the Markdown and JSON files.
//!
//! Each scenario of each round runs in a fresh worker process (the `bench` binary started with
//! `worker`), so that one scenario's tracing subscriber, metrics recorder, allocator state or peak
//! memory never leaks into the next.

pub mod cache;
pub mod count;
pub mod gateway;
pub mod load;
pub mod measure;
pub mod profile;
pub mod report;
pub mod scenario;
pub mod server;
pub mod worker;

/// The error type every scenario's call returns: whatever the client under test failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
