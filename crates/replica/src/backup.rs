//! Point-in-time copies of a replica's records, for `ringkv backup`: every record of every
//! keyspace (or of one) as the engine held it at one moment, read a page at a time while
//! writes go on.
//!
//! Records go out as stored, causal context and dead siblings included: a restore merges them
//! like any replica's copy, so a tombstone in the backup still hides what it deleted, and a
//! write newer than the backup still wins over it.

use crate::error::ReplicaError;
use crate::layout::{self, KeyspaceId};
use crate::store::LocalStore;
use ringkv_core::backup::BackupRecord;
use ringkv_core::record::Record;
use ringkv_storage::{ScanRange, Snapshot};
use std::collections::HashMap;

/// A replica's records as of one moment.
pub struct RecordSnapshot {
    snapshot: Box<dyn Snapshot>,
    /// Keyspace names by this node's numbers, as of the snapshot.
    names: HashMap<KeyspaceId, String>,
    /// What is left to read.
    range: ScanRange,
    finished: bool,
    /// Records left out because their bytes failed their checksum.
    damaged: u64,
}

impl LocalStore {
    /// A snapshot of the records of `keyspace`, or of every keyspace. Every write
    /// acknowledged before this call is in it and none made after; it costs an engine
    /// snapshot (see [`ringkv_storage::Engine::snapshot`]) for as long as it is kept.
    pub fn snapshot_records(&self, keyspace: Option<&str>) -> Result<RecordSnapshot, ReplicaError> {
        let shared = &self.shared;
        // Numbered before the snapshot, so every record in it has a name here.
        let names = shared.keyspace_ids.names();
        let snapshot = shared.engine.snapshot()?;
        let (range, finished) = match keyspace {
            None => (layout::all_data_range(), false),
            Some(name) => match shared.keyspace_ids.get(name) {
                Some(id) => (layout::data_range(id, b""), false),
                None => (ScanRange::all(), true),
            },
        };
        Ok(RecordSnapshot {
            snapshot,
            names,
            range,
            finished,
            damaged: 0,
        })
    }
}

impl RecordSnapshot {
    /// Up to `limit` more records in engine key order (keyspace by keyspace, then key); an
    /// empty page at the end. A record whose bytes fail their checksum is left out and
    /// counted ([`RecordSnapshot::damaged`]): the key's other replicas hold it.
    pub fn next_page(&mut self, limit: usize) -> Result<Vec<BackupRecord>, ReplicaError> {
        let mut records = Vec::new();
        while !self.finished && records.len() < limit {
            let page = self.snapshot.scan(&self.range, limit.max(1))?;
            self.finished = page.len() < limit.max(1);
            let Some((last, _)) = page.last() else { break };
            self.range = self.range.clone().after(last);
            for (engine_key, bytes) in page {
                let Some((id, key)) = layout::parse_data_key(&engine_key) else {
                    continue;
                };
                let Some(keyspace) = self.names.get(&id) else {
                    continue;
                };
                if let Err(error) = Record::decode(&bytes) {
                    tracing::error!(keyspace, key = %String::from_utf8_lossy(key), %error,
                        "a damaged record is left out of the backup");
                    self.damaged += 1;
                    continue;
                }
                records.push(BackupRecord {
                    keyspace: keyspace.clone(),
                    key: key.to_vec(),
                    record: bytes,
                });
            }
        }
        Ok(records)
    }

    /// Records left out so far because they were damaged.
    pub fn damaged(&self) -> u64 {
        self.damaged
    }

    /// The names of the keyspaces the node had numbered when the snapshot was taken.
    pub fn keyspaces(&self) -> impl Iterator<Item = &str> {
        self.names.values().map(String::as_str)
    }
}
