//! The single node's fast paths: while a node is alone in its ring, the Redis protocol's
//! GETs read the local replica in place, and its pipelined SETs are prepared as they are
//! parsed and committed together, sharing one group commit (on the event loop's own thread,
//! see [`commit_here`]). They skip only the routing of [`super::read`] and [`super::write()`],
//! not the coordinator: what every write must pass through (hints, anti-entropy bookkeeping,
//! authorization) hooks in here too.

use crate::node::Node;
use bytes::Bytes;
use ringkv_replica::store::PreparedWrite;
use ringkv_replica::{ConflictMode, LoopCommits, ReplicaError, Report, WriteOutcome, WriteRequest};

/// The hook a Redis-protocol event loop's runtime runs when it parks
/// (`on_thread_park`): it commits the writes the loop's connections queued.
pub use ringkv_replica::commit_parked;

/// A write checked and prepared for [`commit`], ahead of its batch.
pub struct LocalWrite(PreparedWrite);

impl LocalWrite {
    /// Whether the write's outcome is to report what it replaced (SET's GET option).
    pub fn wants_previous(&self) -> bool {
        self.0.report().previous
    }
}

/// Checks and prepares `request` for [`commit`], asking for what `report` says.
pub fn prepare(
    node: &Node,
    request: WriteRequest,
    report: Report,
) -> Result<LocalWrite, ReplicaError> {
    node.store.prepare(request, report).map(LocalWrite)
}

/// [`prepare`] of a plain put of `value` in `conflict` mode, read in place from the request:
/// the value is copied once, into the record the store encodes ahead of its writer.
pub fn prepare_put(
    node: &Node,
    keyspace: &str,
    key: &[u8],
    value: &[u8],
    conflict: ConflictMode,
    report: Report,
) -> Result<LocalWrite, ReplicaError> {
    node.store
        .prepare_put(keyspace, key, value, conflict, report)
        .map(LocalWrite)
}

/// Applies prepared writes as one job and one group commit, and waits until they are
/// durable: each write's outcome in order, or the error that kept all of them from the store
/// (a full queue, a failed commit).
pub async fn commit(
    node: &Node,
    writes: Vec<LocalWrite>,
) -> Result<Vec<Result<WriteOutcome, ReplicaError>>, ReplicaError> {
    let writes = writes.into_iter().map(|LocalWrite(write)| write).collect();
    node.store.submit_prepared(writes)?.wait().await
}

/// The value a single-value read (GET) returns from the local replica, sharing the stored
/// record's bytes; `None` if absent, deleted or expired.
pub fn get_value(node: &Node, keyspace: &str, key: &[u8]) -> Result<Option<Bytes>, ReplicaError> {
    node.store.get_value(keyspace, key)
}

/// Makes the calling thread, an event loop's, commit the writes it submits itself when its
/// runtime parks (with [`commit_parked`] as the runtime's park hook), until the returned
/// value is dropped, which commits what is still queued.
pub fn commit_here(node: &Node) -> LoopCommits {
    node.store.commit_on_this_thread()
}
