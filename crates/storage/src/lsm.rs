//! The default engine: a log-structured merge tree whose write path is ringkv's own
//! ([`crate::buffered`]: log and memtables) and whose tables are fjall's.
//!
//! A sealed memtable goes into fjall as sorted tables by fjall's bulk ingestion, which
//! registers them as the newest run once they are durable. fjall compacts the runs in the
//! background and checksums every block it stores: damaged table files come back as
//! [`StorageError::Corruption`].
//!
//! Why not fjall's own journal and memtable, which this engine wrote through before: under
//! `redis-benchmark -t set -c 50 -P 16 -d 100 -r 100000` with `--sync always`,
//! - the writer thread spent 35 % of its time in fjall's skip list, where every write of a key
//!   is one more entry and every compare runs past the keys' shared prefix;
//! - each fsync held fjall's journal lock, so the writer's next commit waited for it;
//! - fjall's flush threads spent most of their time walking and dropping skip lists.
//!
//! The memory engine, with the same writer over a `BTreeMap` and its own log, ran that
//! benchmark 1.6 times as fast. This engine keeps that write path and fjall's tables,
//! compaction and block cache.

use crate::buffered::{BufferOptions, Buffered, Slot, TableRange, Tables, TablesSnapshot};
use crate::engine::StorageError;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, LsmError, PersistMode, Readable};
use std::ops::Bound;
use std::path::{Path, PathBuf};

const ENGINE: &str = "lsm";

/// The fjall tree that holds every key.
const DATA_TREE: &str = "data";

/// The memtable size fjall's own tree is created with. ringkv writes into fjall only by
/// ingestion, so fjall's memtable holds only what an older ringkv left in fjall's journal.
const FJALL_MEMTABLE_BYTES: u64 = 16 << 20;

/// Runs of tables in fjall's first level from which a flush waits for compaction: fjall
/// itself slows writers at 20 and halts them at 30, and every run is one more place each
/// read of a missing key must look.
const L0_TABLES_MAX: usize = 20;

/// The lsm engine: ringkv's log and memtables over fjall's tables.
pub type LsmEngine = Buffered<FjallTables>;

/// Settings of the lsm engine.
pub type LsmOptions = BufferOptions;

/// fjall's database and the one tree ringkv keeps in it.
pub struct FjallTables {
    database: Database,
    data: Keyspace,
    /// fjall's directory.
    path: PathBuf,
}

impl Buffered<FjallTables> {
    /// Opens or creates the engine in `directory` with the default settings.
    pub fn open(directory: &Path) -> Result<Self, StorageError> {
        Self::open_with(directory, LsmOptions::default())
    }

    /// Opens or creates the engine in `directory`: opens fjall's tables (replaying what an
    /// older ringkv left in fjall's own journal) and ringkv's log.
    pub fn open_with(directory: &Path, options: LsmOptions) -> Result<Self, StorageError> {
        let path = directory.join("lsm");
        // fjall starts its worker threads (compactions, its own flushes) while it opens: opened
        // from a thread at background priority, they inherit that priority.
        let opened = std::thread::scope(|scope| {
            let opening = scope.spawn(|| {
                crate::background::lower_this_thread();
                Database::builder(&path)
                    .manual_journal_persist(false)
                    .worker_threads(background_workers())
                    .open()
            });
            opening
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        let database = opened.map_err(|error| damaged_on_open(&path, error))?;
        let data = database
            .keyspace(DATA_TREE, || {
                KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE_BYTES)
            })
            .map_err(convert)?;
        let tables = FjallTables {
            database,
            data,
            path,
        };
        Self::over(tables, directory, options)
    }
}

impl Tables for FjallTables {
    const NAME: &'static str = ENGINE;

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let value = self.data.get(key).map_err(convert)?;
        Ok(value.map(|value| Bytes::copy_from_slice(&value)))
    }

    fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<TableRange<'_>, StorageError> {
        let entries = self.data.range::<&[u8], _>(bounds).map(|guard| {
            let (key, value) = guard.into_inner().map_err(convert)?;
            Ok((key.to_vec(), Bytes::copy_from_slice(&value)))
        });
        Ok(Box::new(entries))
    }

    type Snapshot = FjallSnapshot;

    fn snapshot(&self) -> Result<FjallSnapshot, StorageError> {
        Ok(FjallSnapshot {
            snapshot: self.database.snapshot(),
            data: self.data.clone(),
        })
    }

    fn ingest<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], &'a Slot)>,
    ) -> Result<(), StorageError> {
        let mut ingestion = self.data.start_ingestion().map_err(convert)?;
        for (key, slot) in entries {
            match slot {
                Some(value) => ingestion.write(key, value.as_ref()),
                None => ingestion.write_tombstone(key),
            }
            .map_err(convert)?;
        }
        ingestion.finish().map_err(convert)
    }

    fn backlogged(&self) -> bool {
        self.data.l0_table_count() >= L0_TABLES_MAX
    }

    fn approximate_len(&self) -> u64 {
        self.data.approximate_len() as u64
    }

    fn disk_bytes(&self) -> u64 {
        self.database.disk_space().unwrap_or(0)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        // What an older ringkv left in fjall's own journal goes to its tables too.
        self.data.rotate_memtable().map_err(convert)?;
        self.database
            .persist(PersistMode::SyncData)
            .map_err(convert)
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.data.major_compact().map_err(convert)
    }
}

/// fjall's tables as of a sequence number: compaction keeps what it sees until it is
/// dropped, and ingestions after it (later flushes) are not in it.
pub struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    data: Keyspace,
}

impl TablesSnapshot for FjallSnapshot {
    fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<TableRange<'_>, StorageError> {
        let entries = self
            .snapshot
            .range::<&[u8], _>(&self.data, bounds)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(convert)?;
                Ok((key.to_vec(), Bytes::copy_from_slice(&value)))
            });
        Ok(Box::new(entries))
    }
}

/// fjall's compaction threads: one per core, but at least 3 and at most 4.
///
/// Not 1: fjall 3.1 can deadlock with one worker under sustained writes. The worker handles a
/// memtable rotation by a blocking `send` of the flush request into its own bounded queue,
/// which writers keep filling with rotation requests while the memtable is over size
/// (fjall's `inner_rotate_memtable`; upstream fjall-rs/fjall#323).
///
/// Not 2: worker 0 never compacts while there are others; it puts each compaction request it
/// receives back in the queue and takes the next one, so while worker 1 runs a compaction,
/// worker 0 spins on the same request for as long as it takes (seen with `perf` during a
/// 2 M-SET run: 15 % of the workers' CPU time in `worker_tick` and `flume::Shared::send`).
/// With a third worker the request goes to whichever of the other two is free. Idle workers
/// sleep in the queue's `recv`, so the extra one costs a stack, not CPU.
fn background_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores.clamp(3, 4)
}

/// An error opening fjall, worded for the operator when it means damaged files.
fn damaged_on_open(path: &Path, error: fjall::Error) -> StorageError {
    match convert(error) {
        StorageError::Corruption(detail) => StorageError::Corruption(format!(
            "the journal or tables in {} are damaged ({detail}). Data after the damage \
             cannot be replayed; restore the directory from a backup or a replica",
            path.display()
        )),
        other => other,
    }
}

/// Sorts fjall's errors into damaged data, I/O, and the rest.
fn convert(error: fjall::Error) -> StorageError {
    match error {
        fjall::Error::Io(io) | fjall::Error::Storage(LsmError::Io(io)) => StorageError::Io(io),
        fjall::Error::Storage(
            inner @ (LsmError::ChecksumMismatch { .. }
            | LsmError::Decompress(_)
            | LsmError::InvalidTag(_)
            | LsmError::InvalidTrailer
            | LsmError::InvalidHeader(_)),
        ) => StorageError::Corruption(format!("{inner:?}")),
        other @ (fjall::Error::Decompress(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::JournalRecovery(_)) => StorageError::Corruption(format!("{other:?}")),
        other => StorageError::Engine {
            engine: ENGINE,
            message: format!("{other:?}"),
        },
    }
}
