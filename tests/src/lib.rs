//! Workspace-level end-to-end, fault and security suites, and the benchmark against peers.
