//! Workspace-level suites for the API integration layer: end-to-end, fault and security tests (under
//! `tests/`), and the benchmark that sets our full stack against the raw client and the peer stack.
//!
//! The library half holds the benchmark harness, [`bench`](mod@bench): a loopback HTTP/1.1 server
//! meant to run in its own process, a closed-loop throughput driver, an open-loop latency driver,
//! resource measurements of the calling process, the scenarios, and the report. The `bench` binary
//! wires them together; `cargo xtask bench` runs it in release and writes `BENCHMARKS.md` and
//! `benchmarks.json` at the workspace root, `cargo xtask bench --smoke` runs every scenario for a
//! fraction of a second so the benchmark never rots.
//!
//! It also holds the chaos suite, [`chaos`](mod@chaos): the whole stack driven open loop against a
//! fault upstream of our own and through Redis and PostgreSQL outages, run by the `chaos` binary
//! (`cargo xtask chaos`, which writes `CHAOS.md` and `chaos.json`; `cargo xtask chaos --smoke` in
//! CI).
//!
//! ```
//! use integration_tests::bench::load::{Caller, ClosedLoop};
//! use std::time::Duration;
//!
//! /// A caller with nothing behind it: measures the driver itself.
//! #[derive(Clone, Debug)]
//! struct Noop;
//!
//! impl Caller for Noop {
//!     async fn call(&self) -> Result<(), integration_tests::bench::BoxError> {
//!         tokio::task::yield_now().await;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let driver = ClosedLoop::new(4, Duration::from_millis(10), Duration::from_millis(50));
//! let result = driver.run(&Noop).await.unwrap();
//! assert!(result.calls > 0);
//! assert_eq!(result.errors, 0);
//! # }
//! ```
//!
//! # Feature flags
//!
//! This crate has no optional features.

pub mod bench;
pub mod chaos;
