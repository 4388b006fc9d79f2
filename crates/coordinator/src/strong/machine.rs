//! A shard's state machine: the node's own local store. A committed entry's writes go to the
//! store like any write, stamped with the shard's replica id and a timestamp that grows with
//! the log (`WriteRequest::replicated`), so every replica computes the same records — the same
//! values, versions and expiry — from the same log. A strong keyspace's records are therefore
//! ordinary records: reads, scans, backups and the TTL sweeper treat them as any other.
//!
//! Where the log stands (the last applied entry, the membership, the last timestamp) is
//! saved after the records of each batch of entries, unsynced: after a crash the store may
//! hold records of entries past the saved position, and replaying those entries leaves such
//! records alone (a record at least as new as an entry's stamp is not written again), so an
//! increment never counts twice.
//!
//! A snapshot is every record of the shard (tombstones included), with that position. It is
//! read while later entries may be applied: a record newer than the snapshot's position is
//! left alone when the entries after it are replayed, for the same reason.

use super::log::PART_STATE;
use super::types::{Applied, GroupId, Member, RaftId, TypeConfig};
use crate::node::Node;
use crate::peers::RemoteError;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership,
};
use ringkv_core::hlc::Timestamp;
use ringkv_core::record::Record;
use ringkv_replica::{
    layout, ConflictMode, MergeRequest, PendingWrite, ReplicaError, ReplicatedStamp, WriteOutcome,
    WriteRequest,
};
use ringkv_storage::{Engine, WriteBatch};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Weak};

/// Where the log stands.
const ITEM_APPLIED: u64 = 2;
/// The current snapshot.
const ITEM_SNAPSHOT: u64 = 3;

/// Records read per page when building a snapshot.
const SNAPSHOT_PAGE: usize = 1024;

/// Where a shard's log stands in its state machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Position {
    /// The last entry applied.
    pub applied: Option<LogId<RaftId>>,
    /// The last membership applied.
    pub membership: StoredMembership<RaftId, Member>,
    /// The timestamp of the last write applied: the next one gets a greater one.
    pub last_timestamp: u64,
}

/// A snapshot's contents.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    position: Position,
    /// Every record of the shard, by key.
    records: Vec<(Vec<u8>, Record)>,
}

/// A stored snapshot: its description and its contents.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Member>,
    body: Vec<u8>,
}

/// One shard's state machine.
pub struct StateMachine {
    node: Weak<Node>,
    engine: Arc<dyn Engine>,
    group: GroupId,
    position: Position,
}

impl StateMachine {
    /// The state machine of `group` on `node`, where its log last stood.
    pub fn open(node: &Arc<Node>, group: GroupId) -> Result<Self, StorageError<RaftId>> {
        let engine = Arc::clone(node.store.engine());
        let key = layout::consensus_key(&group.to_string(), PART_STATE, ITEM_APPLIED);
        let position = match engine.get(&key).map_err(read_error)? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(read_error)?,
            None => Position::default(),
        };
        Ok(Self {
            node: Arc::downgrade(node),
            engine,
            group,
            position,
        })
    }

    fn node(&self) -> Result<Arc<Node>, StorageError<RaftId>> {
        self.node
            .upgrade()
            .ok_or_else(|| write_error(ReplicaError::ShuttingDown))
    }

    fn item_key(&self, item: u64) -> Vec<u8> {
        layout::consensus_key(&self.group.to_string(), PART_STATE, item)
    }

    /// Saves where the log stands; synced only with `durable`.
    fn save_position(&self, durable: bool) -> Result<(), StorageError<RaftId>> {
        let mut batch = WriteBatch::new();
        let bytes = postcard::to_allocvec(&self.position).map_err(write_error)?;
        batch.put(self.item_key(ITEM_APPLIED), bytes);
        if durable {
            self.engine.write_durable(batch).map_err(write_error)
        } else {
            self.engine.write(batch).map_err(write_error)
        }
    }

    /// The stamp of the next write: above the last one, and at least the proposal's time.
    fn next_stamp(&mut self, wall_ms: u64) -> ReplicatedStamp {
        let timestamp = Timestamp::from_wall_ms(wall_ms)
            .0
            .max(self.position.last_timestamp.saturating_add(1));
        self.position.last_timestamp = timestamp;
        ReplicatedStamp {
            timestamp: Timestamp(timestamp),
            replica: self.group.replica(),
        }
    }
}

/// A write handed to the store: queued, or done (or refused) already.
enum Submitted {
    Queued(PendingWrite),
    Done(Result<WriteOutcome, ReplicaError>),
}

/// Waits for one write's outcome. An error about the request itself (a failed condition, a
/// value that is not an integer) is the entry's outcome, the same on every replica; any
/// other (the disk failed) stops the group on this node rather than let it diverge.
async fn outcome(
    submitted: Submitted,
    log_id: LogId<RaftId>,
) -> Result<Result<WriteOutcome, RemoteError>, StorageError<RaftId>> {
    let result = match submitted {
        Submitted::Queued(pending) => pending.wait().await,
        Submitted::Done(result) => result,
    };
    match result {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(error) => {
            let remote = RemoteError::from(error);
            match remote.into_request_error() {
                Ok(request_error) => Ok(Err(RemoteError::from(request_error))),
                Err(failure) => Err(StorageIOError::apply(log_id, AnyError::error(failure)).into()),
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Member>), StorageError<RaftId>>
    {
        Ok((self.position.applied, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let node = self.node()?;
        // Every write is queued first, in log order, so the store commits them together.
        let mut queued: Vec<(LogId<RaftId>, Vec<Submitted>)> = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            self.position.applied = Some(log_id);
            let mut writes = Vec::new();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(membership) => {
                    self.position.membership = StoredMembership::new(Some(log_id), membership);
                }
                EntryPayload::Normal(command) => {
                    for mut request in command.writes {
                        request.replicated = Some(self.next_stamp(command.wall_ms));
                        writes.push(submit(&node, request).await);
                    }
                }
            }
            queued.push((log_id, writes));
        }
        let mut replies = Vec::with_capacity(queued.len());
        for (log_id, writes) in queued {
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(outcome(write, log_id).await?);
            }
            replies.push(Applied(results));
        }
        self.save_position(false)?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            node: self.node.clone(),
            engine: Arc::clone(&self.engine),
            group: self.group.clone(),
            position: self.position.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let node = self.node()?;
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = postcard::from_bytes(&bytes).map_err(read_error)?;
        let keyspace = self.group.keyspace.clone();
        // Records of the shard the snapshot lacks were reaped on the leader: reap them here.
        let held = shard_records(&node, &self.group)?;
        let kept: std::collections::HashSet<&[u8]> =
            body.records.iter().map(|(key, _)| key.as_slice()).collect();
        let gone: Vec<(Vec<u8>, u64)> = held
            .into_iter()
            .filter(|(key, _)| !kept.contains(key.as_slice()))
            .map(|(key, record)| (key, record.fingerprint()))
            .collect();
        if !gone.is_empty() {
            node.store
                .reap(&keyspace, gone)
                .await
                .map_err(write_error)?;
        }
        for (key, record) in body.records {
            let request = MergeRequest {
                keyspace: keyspace.clone(),
                key,
                record,
                conflict: ConflictMode::LastWriterWins,
            };
            node.store.merge(request).await.map_err(write_error)?;
        }
        self.position = Position {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            last_timestamp: body.position.last_timestamp,
        };
        self.save_position(true)?;
        node.strong
            .metrics
            .snapshot(&self.group, bytes.len() as u64);
        save_snapshot(&self.engine, &self.item_key(ITEM_SNAPSHOT), meta, bytes)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        let Some(bytes) = self
            .engine
            .get(&self.item_key(ITEM_SNAPSHOT))
            .map_err(read_error)?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = postcard::from_bytes(&bytes).map_err(read_error)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.body)),
        }))
    }
}

/// Queues `request` in the node's store; when the queue is full, writes it and waits (the
/// writes queued before it stay ahead of it).
async fn submit(node: &Node, request: WriteRequest) -> Submitted {
    match node.store.submit(request.clone()) {
        Ok(pending) => Submitted::Queued(pending),
        Err(ReplicaError::Busy) => Submitted::Done(node.store.write(request).await),
        Err(error) => Submitted::Done(Err(error)),
    }
}

/// Every record of `group`'s shard this node holds, in key order.
fn shard_records(
    node: &Node,
    group: &GroupId,
) -> Result<Vec<(Vec<u8>, Record)>, StorageError<RaftId>> {
    let shards = node
        .keyspaces
        .get(&group.keyspace)
        .map_or(1, |def| def.shards.max(1));
    let mut records = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = node
            .store
            .scan_records(&group.keyspace, b"", after.as_deref(), SNAPSHOT_PAGE)
            .map_err(read_error)?;
        records.extend(
            page.into_iter()
                .filter(|(key, _)| super::shard_of(key, shards) == group.shard),
        );
        match next {
            Some(next) => after = Some(next),
            None => return Ok(records),
        }
    }
}

fn save_snapshot(
    engine: &Arc<dyn Engine>,
    key: &[u8],
    meta: &SnapshotMeta<RaftId, Member>,
    body: Vec<u8>,
) -> Result<(), StorageError<RaftId>> {
    let stored = StoredSnapshot {
        meta: meta.clone(),
        body,
    };
    let mut batch = WriteBatch::new();
    batch.put(
        key.to_vec(),
        postcard::to_allocvec(&stored).map_err(write_error)?,
    );
    engine.write_durable(batch).map_err(write_error)
}

/// Builds a snapshot of a shard as its log stood when the builder was made.
pub struct SnapshotBuilder {
    node: Weak<Node>,
    engine: Arc<dyn Engine>,
    group: GroupId,
    position: Position,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| write_error(ReplicaError::ShuttingDown))?;
        let records = shard_records(&node, &self.group)?;
        let body = SnapshotBody {
            position: self.position.clone(),
            records,
        };
        let bytes = postcard::to_allocvec(&body).map_err(write_error)?;
        let last = self.position.applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.position.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |id| id.leader_id.term),
                last.map_or(0, |id| id.index),
                node.now_ms()
            ),
        };
        // The records this snapshot's position covers are synced before the log below it may
        // be purged.
        self.engine.sync().map_err(write_error)?;
        let key = layout::consensus_key(&self.group.to_string(), PART_STATE, ITEM_SNAPSHOT);
        save_snapshot(&self.engine, &key, &meta, bytes.clone())?;
        node.strong
            .metrics
            .snapshot(&self.group, bytes.len() as u64);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

fn read_error(error: impl std::fmt::Display) -> StorageError<RaftId> {
    StorageIOError::read(AnyError::error(error.to_string())).into()
}

fn write_error(error: impl std::fmt::Display) -> StorageError<RaftId> {
    StorageIOError::write(AnyError::error(error.to_string())).into()
}
