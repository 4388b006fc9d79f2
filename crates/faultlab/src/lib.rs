//! The fault lab (issue 28): real `ringkv` nodes, faults injected into them while a workload
//! records every operation, and a checker of what the cluster kept.
//!
//! - [`net`]: where nodes live — a network namespace each on a bridge (as root), otherwise
//!   loopback addresses — and how links are cut (both ways or one way) and slowed.
//! - [`lab`]: the nodes' processes and the faults: kill -9, pause, restart, wipe, partition,
//!   heal, slow, join, leave, remove; and convergence, awaited by comparing anti-entropy tree
//!   roots between every pair of replicas.
//! - [`workload`]: clients writing, deleting and reading through random nodes.
//! - [`history`]: the record of operations and outcomes (ok, failed, unknown), and the
//!   checker: no acknowledged write lost, no deleted value back.
//! - [`linearizability`]: a checker of per-key histories of register and compare-and-set
//!   operations against linearizability (for strong keyspaces).
//! - [`scenarios`]: the scenarios, and the summary table.
//!
//! `ringkv-faultlab` runs them from the command line (`scripts/soak.sh` for long runs);
//! `crates/ringkv/tests/faultlab.rs` runs each briefly in CI.

pub mod history;
pub mod lab;
pub mod linearizability;
pub mod net;
pub mod scenarios;
pub mod workload;
