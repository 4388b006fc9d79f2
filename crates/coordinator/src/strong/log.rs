//! A shard's Raft log, its vote and its purge point, kept in the node's storage engine
//! (`ringkv_replica::layout::consensus_key`): entries in index order, encoded with postcard.
//!
//! Appends and votes are synced before Raft is told they are stored when the node syncs
//! every write (`--sync always`, the default); under a periodic or no sync policy they are
//! synced as the node's other writes are, and a machine crash may lose the last ones — as
//! it may lose the node's other recent writes.
//!
//! An append is written to the engine at once (so Raft reads it back right away) and its
//! sync is left to the node's [`LogSyncer`], which syncs once for the appends of every shard
//! waiting: with eight shards on a node, their logs share each sync instead of taking one
//! each.

use super::types::{RaftId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use ringkv_replica::layout;
use ringkv_storage::{Engine, WriteBatch};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// The part of a group's keys holding log entries.
pub(super) const PART_LOG: u8 = b'l';
/// The part holding single items (`ITEM_*`).
pub(super) const PART_STATE: u8 = b's';
/// The vote.
const ITEM_VOTE: u64 = 0;
/// The last purged log id.
const ITEM_PURGED: u64 = 1;

/// Entries read per engine scan.
const READ_PAGE: usize = 512;

/// Syncs the engine for the appends of every shard of a node, together: one thread takes
/// every append waiting, syncs once, and tells each it is stored.
pub struct LogSyncer {
    waiting: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogSyncer {
    /// Starts the syncing thread for `engine`; it stops when the syncer is dropped.
    pub fn start(engine: Arc<dyn Engine>) -> Self {
        let (waiting, appends) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                while let Ok(first) = appends.recv() {
                    let mut flushed = vec![first];
                    flushed.extend(appends.try_iter());
                    let synced = engine.sync().map_err(|error| error.to_string());
                    for append in flushed {
                        append.log_io_completed(synced.clone().map_err(std::io::Error::other));
                    }
                }
            })
            .expect("a thread can be started");
        Self { waiting }
    }

    /// Tells `append` it is stored once the next sync is done.
    fn sync(&self, append: LogFlushed<TypeConfig>) {
        // Only fails if the thread stopped, with the syncer: the node is stopping.
        let _ = self.waiting.send(append);
    }
}

/// One shard's log.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<dyn Engine>,
    group: String,
    /// Syncs appends, if each must be synced before it counts.
    syncer: Option<Arc<LogSyncer>>,
    /// The last entry's id, once known: found by a scan when the store opens.
    last: Arc<Mutex<Option<Option<LogId<RaftId>>>>>,
}

impl LogStore {
    /// The log of group `group` in `engine`, each append synced by `syncer` if there is one.
    pub fn new(engine: Arc<dyn Engine>, group: String, syncer: Option<Arc<LogSyncer>>) -> Self {
        Self {
            engine,
            group,
            syncer,
            last: Arc::default(),
        }
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        layout::consensus_key(&self.group, PART_LOG, index)
    }

    fn item_key(&self, item: u64) -> Vec<u8> {
        layout::consensus_key(&self.group, PART_STATE, item)
    }

    fn read_item<T: DeserializeOwned>(&self, item: u64) -> Result<Option<T>, StorageError<RaftId>> {
        let bytes = self.engine.get(&self.item_key(item)).map_err(read_error)?;
        bytes
            .map(|bytes| postcard::from_bytes(&bytes).map_err(read_error))
            .transpose()
    }

    /// Writes `batch`, synced if this log is durable, off the async threads (a sync blocks).
    async fn write(&self, batch: WriteBatch) -> Result<(), StorageError<RaftId>> {
        let engine = Arc::clone(&self.engine);
        let durable = self.syncer.is_some();
        tokio::task::spawn_blocking(move || {
            if durable {
                engine.write_durable(batch)
            } else {
                engine.write(batch)
            }
        })
        .await
        .map_err(write_error)?
        .map_err(write_error)
    }

    /// Entries with indexes in `[from, to)`.
    fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftId>> {
        let mut entries = Vec::new();
        let mut range = layout::consensus_range(&self.group, PART_LOG, from);
        loop {
            let page = self.engine.scan(&range, READ_PAGE).map_err(read_error)?;
            let full = page.len() == READ_PAGE;
            for (key, value) in &page {
                if layout::consensus_index(key).is_none_or(|index| index >= to) {
                    return Ok(entries);
                }
                entries.push(postcard::from_bytes(value).map_err(read_error)?);
            }
            match page.last() {
                Some((key, _)) if full => range = range.after(key),
                _ => return Ok(entries),
            }
        }
    }

    /// The last entry's id, scanning the log the first time.
    fn last_log_id(&self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        let mut last = self.last.lock();
        if let Some(known) = *last {
            return Ok(known);
        }
        let found = self.entries(0, u64::MAX)?.last().map(|entry| entry.log_id);
        *last = Some(found);
        Ok(found)
    }

    /// Deletes the entries with indexes in `[from, to)`.
    async fn delete_entries(&self, from: u64, to: u64) -> Result<(), StorageError<RaftId>> {
        let mut batch = WriteBatch::new();
        for entry in self.entries(from, to)? {
            batch.delete(self.entry_key(entry.log_id.index));
        }
        self.write(batch).await
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError<RaftId>> {
    postcard::to_allocvec(value).map_err(write_error)
}

fn read_error(error: impl std::fmt::Display) -> StorageError<RaftId> {
    StorageIOError::read(AnyError::error(error.to_string())).into()
}

fn write_error(error: impl std::fmt::Display) -> StorageError<RaftId> {
    StorageIOError::write(AnyError::error(error.to_string())).into()
}

/// The index bounds of a range of log indexes, as `[from, to)`.
fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&from) => from,
        Bound::Excluded(&from) => from.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&to) => to.saturating_add(1),
        Bound::Excluded(&to) => to,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftId>> {
        let (from, to) = index_bounds(&range);
        self.entries(from, to)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let last_purged_log_id: Option<LogId<RaftId>> = self.read_item(ITEM_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        let mut batch = WriteBatch::new();
        batch.put(self.item_key(ITEM_VOTE), encode(vote)?);
        self.write(batch).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        self.read_item(ITEM_VOTE)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut last = None;
        for entry in entries {
            batch.put(self.entry_key(entry.log_id.index), encode(&entry)?);
            last = Some(entry.log_id);
        }
        // Written now, so that Raft can read it back; synced with other shards' appends.
        let written = self.engine.write(batch).map_err(write_error);
        if written.is_ok() && last.is_some() {
            *self.last.lock() = Some(last);
        }
        match (&written, &self.syncer) {
            (Ok(()), Some(syncer)) => syncer.sync(callback),
            _ => callback.log_io_completed(
                written
                    .as_ref()
                    .map(|_| ())
                    .map_err(|error| std::io::Error::other(error.to_string())),
            ),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.delete_entries(log_id.index, u64::MAX).await?;
        // The last entry is now the one before, if the log still holds it.
        let before = match log_id.index.checked_sub(1) {
            Some(index) => self.entries(index, log_id.index)?.last().map(|e| e.log_id),
            None => None,
        };
        *self.last.lock() = Some(before);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        // The purge point first: a crash between the two leaves entries below it, which are
        // never read again and go with the next purge.
        let mut batch = WriteBatch::new();
        batch.put(self.item_key(ITEM_PURGED), encode(&Some(log_id))?);
        self.write(batch).await?;
        self.delete_entries(0, log_id.index.saturating_add(1))
            .await?;
        let mut last = self.last.lock();
        if last.is_some_and(|known| known.is_none_or(|known| known.index <= log_id.index)) {
            *last = Some(Some(log_id));
        }
        Ok(())
    }
}
