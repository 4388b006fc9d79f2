//! Backups and restores (`ringkv backup`, `ringkv restore`; the format is
//! [`ringkv_core::backup`]).
//!
//! A backup is of one node: its records as of one moment ([`ringkv_replica::backup`]), so it
//! is consistent even while writes go on. In a cluster of N or fewer nodes every node holds
//! every key, so one node's backup is the whole data; in a larger one, back up every node (the
//! restore merges the copies).
//!
//! A restore sends each record to its key's replicas in the cluster restored into, whatever
//! its size, as read repair sends a merged record: each replica merges it into what it
//! holds. Restoring twice, or restoring over newer writes, changes nothing the records have
//! not seen.

use crate::consistency::Consistency;
use crate::coordinator::{self, CoordinatorError};
use crate::node::Node;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use ringkv_core::backup::{BackupRecord, Frame, Header, KeyspaceSettings, Trailer, MAGIC};
use ringkv_core::limits::KEY_BYTES_MAX;
use ringkv_core::record::Record;
use ringkv_replica::backup::RecordSnapshot;
use ringkv_replica::{MergeRequest, ReplicaError};
use std::sync::Arc;

/// About how many bytes each piece of a backup stream holds.
const CHUNK_BYTES: usize = 1 << 20;

/// Records read from the snapshot at a time.
const PAGE_RECORDS: usize = 1000;

/// Records of one restore request merged at once.
const MERGES_IN_FLIGHT: usize = 64;

/// A backup being written: its header, then the snapshot's records, then its trailer.
pub struct Backup {
    snapshot: RecordSnapshot,
    header: Option<Header>,
    records: u64,
    finished: bool,
}

impl Backup {
    /// Takes a snapshot of this node's records of `keyspace`, or of every keyspace. Blocks
    /// for as long as the engine takes to make it (see `Engine::snapshot`).
    pub fn open(node: &Node, keyspace: Option<&str>) -> Result<Self, ReplicaError> {
        let snapshot = node.store.snapshot_records(keyspace)?;
        let mut keyspaces: Vec<KeyspaceSettings> = snapshot
            .keyspaces()
            .filter(|name| keyspace.is_none_or(|only| only == *name))
            .filter_map(|name| node.keyspaces.get(name))
            .map(|def| KeyspaceSettings {
                name: def.name,
                replication: u64::from(def.replication),
                conflict: match def.conflict {
                    crate::keyspaces::Conflict::Lww => "lww".into(),
                    crate::keyspaces::Conflict::Siblings => "siblings".into(),
                },
            })
            .collect();
        keyspaces.sort_by(|a, b| a.name.cmp(&b.name));
        let header = Header {
            node: node.node_id.clone(),
            taken_ms: node.now_ms(),
            keyspace: keyspace.map(str::to_owned),
            keyspaces,
        };
        Ok(Self {
            snapshot,
            header: Some(header),
            records: 0,
            finished: false,
        })
    }

    /// The next piece of the backup file, of about [`CHUNK_BYTES`] (the first starts with the
    /// magic and header, the last ends with the trailer); `None` once it is all out.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ReplicaError> {
        if self.finished {
            return Ok(None);
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
        if let Some(header) = self.header.take() {
            chunk.extend_from_slice(MAGIC);
            Frame::Header(header).encode_into(&mut chunk);
        }
        while chunk.len() < CHUNK_BYTES {
            let page = self.snapshot.next_page(PAGE_RECORDS)?;
            if page.is_empty() {
                let trailer = Trailer {
                    records: self.records,
                    damaged: self.snapshot.damaged(),
                };
                Frame::End(trailer).encode_into(&mut chunk);
                self.finished = true;
                break;
            }
            self.records += page.len() as u64;
            for record in page {
                Frame::Record(record).encode_into(&mut chunk);
            }
        }
        Ok(Some(chunk))
    }
}

/// Why records could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A record names a keyspace the cluster does not have.
    #[error("keyspace {0} does not exist here: create it first (ringkv restore creates the keyspaces a backup names)")]
    UnknownKeyspace(String),
    /// A record is not one ringkv can store.
    #[error("the record of key {key:?} in keyspace {keyspace} is invalid: {detail}")]
    Invalid {
        /// Its keyspace.
        keyspace: String,
        /// Its key, shown lossily.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// Too few replicas took a record.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// Merges `records` into the replicas of their keys, each acknowledged by `consistency`'s W;
/// returns how many. Every record is checked before any is sent, so a bad one changes
/// nothing. A failure leaves some records merged and some not: sending them again is safe.
pub async fn restore(
    node: &Arc<Node>,
    records: Vec<BackupRecord>,
    consistency: Consistency,
) -> Result<u64, RestoreError> {
    let mut merges = Vec::with_capacity(records.len());
    for BackupRecord {
        keyspace,
        key,
        record,
    } in records
    {
        let def = node
            .keyspaces
            .get(&keyspace)
            .ok_or_else(|| RestoreError::UnknownKeyspace(keyspace.clone()))?;
        let invalid = |detail: String| RestoreError::Invalid {
            keyspace: keyspace.clone(),
            key: String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned(),
            detail,
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(invalid(format!("keys are 1 to {KEY_BYTES_MAX} bytes")));
        }
        let record = Record::decode(&record).map_err(|error| invalid(error.to_string()))?;
        let merge = MergeRequest {
            keyspace: def.name.clone(),
            key,
            record,
            conflict: def.conflict.into(),
        };
        merges.push((def, merge));
    }
    let count = merges.len() as u64;
    stream::iter(merges)
        .map(|(def, merge)| async move {
            coordinator::merge_record(node, &def, merge, consistency).await
        })
        .buffer_unordered(MERGES_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(count)
}
