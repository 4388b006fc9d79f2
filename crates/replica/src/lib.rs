//! The replica layer: what one node does with the keys it stores.
//!
//! A [`LocalStore`] keeps one [`Record`](ringkv_core::record::Record) per key in an
//! [`Engine`](ringkv_storage::Engine), merges every write into what is stored (versions,
//! siblings, tombstones, expiry), checks conditions atomically, and acknowledges a write only
//! once the durability policy is met.
//!
//! - [`store`]: the public API: open, read, scan, write.
//! - [`backup`]: point-in-time copies of the records, for backups.
//! - [`writer`]: the single writer thread and its group commit.
//! - [`loop_commit`]: writes committed by the event-loop thread that submitted them.
//! - [`cache`]: the record cache in front of the engine.
//! - [`sweeper`]: removes expired values and old tombstones in the background.
//! - [`layout`]: how keyspaces, keys and the expiry index map onto engine keys.
//! - [`keyspace_ids`]: this node's numbers for keyspace names in those keys.
//! - [`hashtree`]: the digests of the records, kept as writes land, that anti-entropy
//!   compares.
//! - [`hints`]: the durable queues of records to deliver to other replicas (hinted handoff).
//! - [`metrics`]: the store's Prometheus metrics.

mod answers;
pub mod backup;
pub mod cache;
pub mod error;
pub mod hashtree;
pub mod hints;
pub mod keyspace_ids;
pub mod layout;
pub mod loop_commit;
pub mod metrics;
mod record_bytes;
pub mod store;
pub mod sweeper;
pub mod writer;

pub use error::ReplicaError;
pub use loop_commit::{commit_parked, LoopCommits};
pub use store::{
    Change, Condition, ConflictMode, Entry, Expiry, LocalStore, MergeRequest, PendingWrite,
    PendingWrites, Reaping, ReplicatedStamp, Report, ScanPage, StoreOptions, StringEdit,
    SyncPolicy, Version, VisibleValue, WriteOutcome, WriteRequest,
};
pub use writer::Swept;
