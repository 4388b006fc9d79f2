//! Engines whose writes go to ringkv's own write-ahead log and memtables, in front of an
//! ordered store of [`Tables`]: fjall's LSM tree for the `lsm` engine, redb's B-tree for
//! `btree`.
//!
//! A write batch is appended to the log ([`crate::wal`]) and applied to the active memtable
//! (a hash map with its keys in order, module `memtable`). `write` returns once the append
//! has reached the operating system, so a write survives a crash of the process;
//! [`Engine::sync`] (fdatasync of the log) makes it survive power loss. Once the memtable
//! holds [`BufferOptions::memtable_bytes`] (or as many keys as its hash table was reserved
//! for), or its log [`LOG_BYTES_PER_MEMTABLE`] times as much (keys rewritten over and over
//! grow the log, not the memtable), the memtable is sealed and the log moves on to a new
//! file; the new memtable is the last one flushed, emptied. The log's files are made ahead of
//! time, and the log also moves on, without a seal, when its file is full (see
//! [`crate::log_files`]), unless the memtable's log would pass its bound in the next file:
//! then the memtable is sealed there instead. The flusher thread (module `flush`)
//! writes each sealed memtable into the tables in one durable step, and then retires the logs
//! the memtable came from (they are written over as later logs, or deleted).
//!
//! Reads look in the active memtable, then the sealed ones from newest to oldest, then the
//! tables.
//!
//! Why the tables' own write paths are not used: fjall's journal and skip list cost the
//! writer 35 % of its time and blocked it on the journal's lock during each fsync (see the
//! `lsm` module); a redb transaction per batch copies every page on the path to each key it
//! writes, so 1 M single puts through the `Engine` trait ran at 0.38× RocksDB's fillrandom.
//! One flush of a sealed memtable is one bulk ingestion, or one redb transaction, for
//! hundreds of thousands of writes.

mod flush;
mod memtable;
mod scan;

use crate::engine::{Engine, KeyValue, ScanRange, Snapshot, StorageError, WriteBatch};
use crate::log_files::{LogFile, SpareLog};
use crate::wal;
use bytes::Bytes;
use memtable::Memtable;
pub use memtable::Slot;
use parking_lot::{Condvar, Mutex, RwLock};
use ringkv_core::limits::ENGINE_KEY_BYTES_MAX;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The memtable's size when it is sealed and flushed, by default (RocksDB's default write
/// buffer is 64 MiB). A memtable absorbs rewrites of the keys it holds, so one that holds a
/// workload's hot keys is flushed far less often: with `redis-benchmark -t set -P 16` over
/// 100 k keys (about 22 MB of records), 32 MiB instead of 16 MiB halved the p99 (5.3-5.7 ms
/// instead of 10.4-11.0 ms, 3 alternating runs of 2 M SETs), with 2 seals and flushes in 2 M
/// SETs instead of 15 (and a third of the tables' bytes on disk). A flush of 32 MiB writes one
/// table in well under a second; a restart replays at most a few memtables' logs (ready
/// 0.46 s after a `kill -9` that left about 500 k SETs in the log).
pub const MEMTABLE_BYTES: usize = 32 << 20;

/// How many times the memtable's bytes its log may grow to before the memtable is sealed:
/// each rewrite of a key adds a frame to the log but replaces an entry in the memtable, and a
/// log is only retired once its memtable is flushed, so without this bound a few hot keys would
/// grow one log (and the replay after a crash) without end.
pub const LOG_BYTES_PER_MEMTABLE: u64 = 4;

/// Settings of the log and memtables.
#[derive(Clone, Debug)]
pub struct BufferOptions {
    /// Bytes of keys and values after which the active memtable is sealed and flushed.
    pub memtable_bytes: usize,
}

impl Default for BufferOptions {
    fn default() -> Self {
        Self {
            memtable_bytes: MEMTABLE_BYTES,
        }
    }
}

/// Entries of the tables in key order, as of when the iterator was made.
pub type TableRange<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Bytes), StorageError>> + 'a>;

/// The ordered store behind the memtables: where a sealed memtable goes, and where reads
/// look after the memtables.
pub trait Tables: Send + Sync + 'static {
    /// The engine's name, as `--engine` spells it; also names its log directory
    /// (`NAME-log`) and flusher thread.
    const NAME: &'static str;

    /// The stored value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError>;

    /// The stored entries within `bounds`, as of this call: called while the memtables are
    /// locked, so a memtable that is flushed meanwhile is seen in one place or the other.
    fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<TableRange<'_>, StorageError>;

    /// Stores a sealed memtable's entries, in key order (`None`: delete the key), all or
    /// none, durably: once this returns, reads find them here and the logs they came from
    /// are deleted.
    fn ingest<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], &'a Slot)>,
    ) -> Result<(), StorageError>;

    /// Whether a flush should wait before adding to the tables (an LSM tree's first level
    /// holds too many runs); the flusher asks again every few milliseconds, for a while.
    fn backlogged(&self) -> bool {
        false
    }

    /// The tables as of now, however they change later: with the memtables of the same
    /// moment, a [`Snapshot`] of the engine.
    fn snapshot(&self) -> Result<Self::Snapshot, StorageError>;

    /// What [`Tables::snapshot`] makes.
    type Snapshot: TablesSnapshot;

    /// Roughly how many entries the tables hold.
    fn approximate_len(&self) -> u64;

    /// Bytes the tables occupy on disk.
    fn disk_bytes(&self) -> u64;

    /// Where the tables live: reads and checkpoints fail once it is gone.
    fn path(&self) -> &Path;

    /// Called by a checkpoint once every memtable has reached the tables.
    fn checkpoint(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Reclaims the space of deleted data now.
    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A point-in-time view of [`Tables`].
pub trait TablesSnapshot: Send + Sync + 'static {
    /// The entries within `bounds`, as of when the snapshot was taken.
    fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<TableRange<'_>, StorageError>;
}

/// Sealed memtables that may wait for the flusher; a write that would seal one more waits
/// for a flush to finish, so a disk slower than the writes holds writes back instead of
/// filling memory.
const SEALED_MAX: usize = 2;

/// The most bytes of a log file made ahead of time; it is twice the memtable's bytes below
/// that.
const SPARE_BYTES_MAX: usize = 64 << 20;

/// How long a checkpoint waits for the memtables to reach the tables.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(30);

/// ringkv's log and memtables in front of `T`.
pub struct Buffered<T: Tables> {
    shared: Arc<Shared<T>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// What the engine's callers and its flusher share.
struct Shared<T> {
    options: BufferOptions,
    tables: T,
    /// The log's directory.
    log_directory: PathBuf,
    log: Mutex<ActiveLog>,
    /// The next file of the log, made ahead of time.
    spare: SpareLog,
    /// A flushed memtable, emptied by the flusher, for the next seal to reuse.
    spare_memtable: Mutex<Option<Memtable>>,
    memtables: RwLock<Memtables>,
    flush: Mutex<FlushState>,
    /// Wakes the flusher: a memtable was sealed, or the engine is closing.
    flush_wanted: Condvar,
    /// Wakes writers waiting for room: a flush finished or failed.
    flushed: Condvar,
    /// Changes the log held that replay refused (see [`Engine::changes_refused_at_open`]).
    refused_at_open: u64,
}

/// The log file being written to.
struct ActiveLog {
    file: LogFile,
    /// Bytes of frames in the logs of the active memtable: what [`LOG_BYTES_PER_MEMTABLE`]
    /// bounds.
    memtable_log_bytes: u64,
}

/// The active memtable and the sealed ones, oldest first.
#[derive(Default)]
struct Memtables {
    active: Memtable,
    sealed: Vec<Arc<Sealed>>,
}

/// A memtable waiting to be flushed, and the newest log whose writes it holds.
struct Sealed {
    memtable: Memtable,
    last_log: u64,
}

#[derive(Default)]
struct FlushState {
    closing: bool,
    /// Why the last flush failed, until one succeeds.
    error: Option<String>,
}

impl<T: Tables> Buffered<T> {
    /// Puts a log and memtables in `directory/NAME-log` in front of `tables`, replaying the
    /// log into a memtable, which is flushed in the background.
    pub fn over(tables: T, directory: &Path, options: BufferOptions) -> Result<Self, StorageError> {
        let log_directory = directory.join(format!("{}-log", T::NAME));
        std::fs::create_dir_all(&log_directory)?;
        let spare_bytes = options
            .memtable_bytes
            .saturating_mul(2)
            .min(SPARE_BYTES_MAX);
        let spare = SpareLog::start(
            &log_directory,
            spare_bytes as u64,
            &format!("ringkv-{}-logs", T::NAME),
        )?;
        let (mut memtables, last_replayed, refused_at_open) = replay(&log_directory)?;
        memtables.active = Memtable::sized_for(options.memtable_bytes);
        let number = last_replayed.map_or(1, |last| last + 1);
        // Created empty: the first file made ahead of time is not ready yet (the first write
        // after it is ready moves the log on to it).
        let file = LogFile::open(&log_directory, number, &spare)?;
        let shared = Arc::new(Shared {
            options,
            tables,
            log_directory,
            log: Mutex::new(ActiveLog {
                file,
                memtable_log_bytes: 0,
            }),
            spare,
            spare_memtable: Mutex::new(None),
            memtables: RwLock::new(memtables),
            flush: Mutex::new(FlushState::default()),
            flush_wanted: Condvar::new(),
            flushed: Condvar::new(),
            refused_at_open,
        });
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("ringkv-{}-flush", T::NAME))
                .spawn(move || {
                    crate::background::lower_this_thread();
                    flush::run(&shared)
                })?
        };
        Ok(Self {
            shared,
            flusher: Some(flusher),
        })
    }
}

/// Replays every log into memtables: the writes are sealed at once, to be flushed, and the
/// number of the last log replayed is returned (the logs stay until the flush), and how many
/// changes replay refused.
fn replay(directory: &Path) -> Result<(Memtables, Option<u64>, u64), StorageError> {
    let logs = wal::list_logs(directory)?;
    let mut memtable = Memtable::default();
    let mut refused = 0;
    for (index, &number) in logs.iter().enumerate() {
        let replay = wal::replay_file(directory, number, index + 1 == logs.len())?;
        refused += replay.refused;
        for batch in replay.batches {
            memtable.apply(batch);
        }
    }
    let mut memtables = Memtables::default();
    let last = logs.last().copied();
    if let Some(last_log) = last.filter(|_| !memtable.is_empty()) {
        memtables
            .sealed
            .push(Arc::new(Sealed { memtable, last_log }));
    }
    Ok((memtables, last, refused))
}

impl<T: Tables> Shared<T> {
    /// What the memtables hold for `key`, newest first; `None`: ask the tables.
    fn memtable_slot(&self, key: &[u8]) -> Option<Slot> {
        let memtables = self.memtables.read();
        if let Some(slot) = memtables.active.get(key) {
            return Some(slot.clone());
        }
        memtables
            .sealed
            .iter()
            .rev()
            .find_map(|sealed| sealed.memtable.get(key).cloned())
    }

    /// Seals the active memtable and moves the log on to a new file. The caller holds the
    /// log; a full queue of sealed memtables makes it wait for the flusher.
    fn seal(&self, log: &mut ActiveLog) -> Result<(), StorageError> {
        self.wait_for_room()?;
        let last_log = log.file.number();
        log.file.move_on(&self.log_directory, &self.spare)?;
        log.memtable_log_bytes = 0;
        {
            let mut memtables = self.memtables.write();
            let next = self.spare_memtable.lock().take();
            let next = next.unwrap_or_else(|| Memtable::sized_for(self.options.memtable_bytes));
            let memtable = std::mem::replace(&mut memtables.active, next);
            memtables
                .sealed
                .push(Arc::new(Sealed { memtable, last_log }));
        }
        let _state = self.flush.lock();
        self.flush_wanted.notify_one();
        Ok(())
    }

    /// Returns once fewer than [`SEALED_MAX`] memtables wait to be flushed, or the error that
    /// keeps the flusher from making room.
    fn wait_for_room(&self) -> Result<(), StorageError> {
        let mut state = self.flush.lock();
        while self.memtables.read().sealed.len() >= SEALED_MAX {
            if let Some(error) = &state.error {
                return Err(StorageError::Engine {
                    engine: T::NAME,
                    message: format!("memtables cannot be flushed to the tables: {error}"),
                });
            }
            self.flushed
                .wait_for(&mut state, Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until every memtable sealed so far has reached the tables, within
    /// [`CHECKPOINT_WAIT`].
    fn wait_for_flushes(&self) -> Result<(), StorageError> {
        let deadline = Instant::now() + CHECKPOINT_WAIT;
        let mut state = self.flush.lock();
        while !self.memtables.read().sealed.is_empty() {
            let path = self.tables.path();
            if !path.exists() {
                return Err(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} no longer exists", path.display()),
                )));
            }
            if Instant::now() >= deadline {
                let why = state
                    .error
                    .clone()
                    .unwrap_or_else(|| "still running".into());
                return Err(StorageError::Engine {
                    engine: T::NAME,
                    message: format!(
                        "memtable flush did not finish within {CHECKPOINT_WAIT:?}: {why}"
                    ),
                });
            }
            self.flushed
                .wait_for(&mut state, Duration::from_millis(100));
        }
        Ok(())
    }
}

impl<T: Tables> Engine for Buffered<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_bytes(key)?.map(Vec::from))
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        // No such key was ever written, and a table may not take it even as a question.
        if key.len() > ENGINE_KEY_BYTES_MAX {
            return Ok(None);
        }
        // A memtable that is flushed after this look is in the tables before it leaves the
        // list.
        if let Some(slot) = self.shared.memtable_slot(key) {
            return Ok(slot);
        }
        self.shared.tables.get(key)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut frame = wal::encode_frame(&batch)?;
        let shared = &self.shared;
        let mut log = shared.log.lock();
        // Sealed before the append rather than after it, so that a write that cannot seal
        // (no room, no new log) fails without having been applied.
        let memtable_bytes = shared.options.memtable_bytes;
        let log_bound = (memtable_bytes as u64).saturating_mul(LOG_BYTES_PER_MEMTABLE);
        let log_full = log.memtable_log_bytes >= log_bound;
        let memtable_full = {
            let active = &shared.memtables.read().active;
            active.bytes() >= memtable_bytes || active.lacks_room_for(batch.len())
        };
        if log_full || memtable_full {
            shared.seal(&mut log)?;
        } else if log.file.should_move_on(&frame, &shared.spare) {
            // A memtable whose log would pass its bound in the next file is sealed now, and
            // the seal moves the log on. Moving on alone would take that file for the few
            // frames left before the bound, and the seal that follows would leave it mostly
            // zeros: with 64 MiB files and 128 MiB of log per memtable, every third file made
            // ahead, 64 MiB of zeros copied into the page cache under the node's load.
            if log.memtable_log_bytes + shared.spare.file_bytes() > log_bound {
                shared.seal(&mut log)?;
            } else {
                log.file.move_on(&shared.log_directory, &shared.spare)?;
            }
        }
        log.file.write(&mut frame)?;
        log.memtable_log_bytes += frame.frame_bytes() as u64;
        // The memtable is locked before the log is let go, so writes reach it in log order,
        // and a sync that wants the log need not wait for the batch to be applied.
        let mut memtables = shared.memtables.write();
        drop(log);
        memtables.active.apply(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        // Earlier files of the log were synced when it moved on from them.
        let current = self.shared.log.lock().file.file();
        current.sync_data()?;
        Ok(())
    }

    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        scan::in_passes(range, limit, |range| self.runs(range, limit))
    }

    /// Seals the active memtable, so that every memtable of the snapshot is immutable, and
    /// keeps the sealed ones with the tables as of the same moment (the log's lock keeps
    /// writes out meanwhile). A memtable the flusher moves into the tables later is still in
    /// the snapshot's list, and not in its tables, so each entry is found once.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StorageError> {
        let shared = &self.shared;
        let mut log = shared.log.lock();
        if !shared.memtables.read().active.is_empty() {
            shared.seal(&mut log)?;
        }
        let memtables = shared.memtables.read();
        let tables = shared.tables.snapshot()?;
        let newest_first = memtables.sealed.iter().rev().cloned().collect();
        Ok(Box::new(BufferedSnapshot {
            memtables: newest_first,
            tables,
        }))
    }

    fn changes_refused_at_open(&self) -> u64 {
        self.shared.refused_at_open
    }

    fn approximate_entries(&self) -> u64 {
        let memtables = self.shared.memtables.read();
        let in_memory: usize = std::iter::once(&memtables.active)
            .chain(memtables.sealed.iter().map(|sealed| &sealed.memtable))
            .map(Memtable::len)
            .sum();
        self.shared.tables.approximate_len() + in_memory as u64
    }

    fn disk_bytes(&self) -> u64 {
        let logs: u64 = std::fs::read_dir(&self.shared.log_directory)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        self.shared.tables.disk_bytes() + logs
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        {
            let mut log = self.shared.log.lock();
            if !self.shared.memtables.read().active.is_empty() {
                self.shared.seal(&mut log)?;
            }
        }
        self.shared.wait_for_flushes()?;
        self.shared.tables.checkpoint()
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.checkpoint()?;
        self.shared.tables.compact()
    }
}

impl<T: Tables> Buffered<T> {
    /// One pass of a scan: each memtable's entries in `range` and the tables', newest first,
    /// at most `limit` from each. They are taken under the memtables' lock, so a memtable that
    /// the flusher moves into the tables meanwhile is seen in one of the two places.
    fn runs(&self, range: &ScanRange, limit: usize) -> Result<Vec<scan::Run>, StorageError> {
        let fetch = limit.max(1);
        let bounds = range.as_bounds();
        let (mut runs, tables) = {
            let memtables = self.shared.memtables.read();
            let newest_first = std::iter::once(&memtables.active)
                .chain(memtables.sealed.iter().rev().map(|sealed| &sealed.memtable));
            let runs = scan::memtable_runs(newest_first, bounds, fetch);
            (runs, self.shared.tables.range(bounds)?)
        };
        runs.push(scan::table_run(tables, fetch)?);
        Ok(runs)
    }
}

/// A [`Snapshot`] of a [`Buffered`] engine: its sealed memtables, newest first, and its
/// tables as of the same moment.
struct BufferedSnapshot<S> {
    memtables: Vec<Arc<Sealed>>,
    tables: S,
}

impl<S: TablesSnapshot> Snapshot for BufferedSnapshot<S> {
    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        scan::in_passes(range, limit, |range| {
            let fetch = limit.max(1);
            let bounds = range.as_bounds();
            let newest_first = self.memtables.iter().map(|sealed| &sealed.memtable);
            let mut runs = scan::memtable_runs(newest_first, bounds, fetch);
            runs.push(scan::table_run(self.tables.range(bounds)?, fetch)?);
            Ok(runs)
        })
    }
}

impl<T: Tables> Drop for Buffered<T> {
    fn drop(&mut self) {
        self.shared.flush.lock().closing = true;
        self.shared.flush_wanted.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}
