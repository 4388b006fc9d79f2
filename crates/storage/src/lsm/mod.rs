//! The default engine: a log-structured merge tree whose write path is ringkv's own and whose
//! tables are fjall's.
//!
//! A write batch is appended to the write-ahead log ([`crate::wal`]) and applied to the active
//! memtable (an ordered map, module `memtable`). `write` returns once the append has reached
//! the operating system, so a write survives a crash of the process; [`Engine::sync`]
//! (fdatasync of the log) makes it survive power loss. Once the memtable holds
//! [`LsmOptions::memtable_bytes`], or its log [`LOG_BYTES_PER_MEMTABLE`] times as much (keys
//! rewritten over and over grow the log, not the memtable), the memtable is sealed and the log
//! moves on to a new file, made ahead of time. The flusher thread (module `flush`) writes each
//! sealed memtable into fjall as sorted tables with fjall's bulk ingestion, which registers them as the newest run
//! once they are durable, and then deletes the logs the memtable came from. fjall compacts the
//! runs in the background and checksums every block it stores: damaged table files come back
//! as [`StorageError::Corruption`].
//!
//! Reads look in the active memtable, then the sealed ones from newest to oldest, then fjall.
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

mod flush;
mod memtable;
mod scan;

use crate::engine::{Engine, KeyValue, ScanRange, StorageError, WriteBatch};
use crate::wal;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, LsmError, PersistMode};
use memtable::{Memtable, Slot};
use parking_lot::{Condvar, Mutex, RwLock};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENGINE: &str = "lsm";

/// The fjall tree that holds every key.
const DATA_TREE: &str = "data";

/// The memtable's size when it is sealed and flushed, by default. A flush of 16 MiB writes
/// one table and takes a fraction of a second, and a restart replays at most a few of them
/// from the log.
pub const MEMTABLE_BYTES: usize = 16 << 20;

/// How many times the memtable's bytes its log may grow to before the memtable is sealed:
/// each rewrite of a key adds a frame to the log but replaces an entry in the memtable, and a
/// log is only deleted once its memtable is flushed, so without this bound a few hot keys would
/// grow one log (and the replay after a crash) without end.
pub const LOG_BYTES_PER_MEMTABLE: u64 = 4;

/// Settings of the lsm engine.
#[derive(Clone, Debug)]
pub struct LsmOptions {
    /// Bytes of keys and values after which the active memtable is sealed and flushed.
    pub memtable_bytes: usize,
}

impl Default for LsmOptions {
    fn default() -> Self {
        Self {
            memtable_bytes: MEMTABLE_BYTES,
        }
    }
}

/// Sealed memtables that may wait for the flusher; a write that would seal one more waits
/// for a flush to finish, so a disk slower than the writes holds writes back instead of
/// filling memory.
const SEALED_MAX: usize = 2;

/// How long a checkpoint waits for the memtables to reach fjall.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(30);

/// The memtable size fjall's own tree is created with. ringkv writes into fjall only by
/// ingestion, so fjall's memtable holds only what an older ringkv left in fjall's journal.
const FJALL_MEMTABLE_BYTES: u64 = 16 << 20;

/// fjall's tables, ringkv's log and memtables.
pub struct LsmEngine {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// What the engine's callers and its flusher share.
struct Shared {
    options: LsmOptions,
    database: Database,
    data: Keyspace,
    /// fjall's directory.
    path: PathBuf,
    /// The log's directory.
    log_directory: PathBuf,
    log: Mutex<ActiveLog>,
    /// A log made ahead of time by the flusher, for the next seal ([`wal::prepare_log`]).
    spare: Mutex<Option<File>>,
    memtables: RwLock<Memtables>,
    /// Held through a sync, so a sync that finds no older log to sync cannot return while
    /// another is still syncing it.
    syncing: Mutex<()>,
    flush: Mutex<FlushState>,
    /// Wakes the flusher: a memtable was sealed, or the engine is closing.
    flush_wanted: Condvar,
    /// Wakes writers waiting for room: a flush finished or failed.
    flushed: Condvar,
}

/// The log file being appended to.
struct ActiveLog {
    file: Arc<File>,
    number: u64,
    /// Bytes of whole frames in `file`: after a failed append the file is cut back to them.
    bytes: u64,
    /// Logs of sealed memtables that the next sync must also sync.
    unsynced: Vec<Arc<File>>,
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

impl LsmEngine {
    /// Opens or creates the engine in `directory` with the default settings.
    pub fn open(directory: &Path) -> Result<Self, StorageError> {
        Self::open_with(directory, LsmOptions::default())
    }

    /// Opens or creates the engine in `directory`: opens fjall's tables and replays the log
    /// into a memtable, which is flushed in the background.
    pub fn open_with(directory: &Path, options: LsmOptions) -> Result<Self, StorageError> {
        let path = directory.join("lsm");
        let database = Database::builder(&path)
            .manual_journal_persist(false)
            .worker_threads(background_workers())
            .open()
            .map_err(|error| damaged_on_open(&path, error))?;
        let data = database
            .keyspace(DATA_TREE, || {
                KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE_BYTES)
            })
            .map_err(convert)?;
        let log_directory = directory.join("lsm-log");
        std::fs::create_dir_all(&log_directory)?;
        // A log the last process was making ahead of time may be incomplete.
        match std::fs::remove_file(wal::spare_path(&log_directory)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        let (memtables, last_replayed) = replay(&log_directory)?;
        let number = last_replayed.map_or(1, |last| last + 1);
        let file = wal::create_log(&log_directory, number)?;
        let shared = Arc::new(Shared {
            options,
            database,
            data,
            path,
            log_directory,
            log: Mutex::new(ActiveLog {
                file: Arc::new(file),
                number,
                bytes: 0,
                unsynced: Vec::new(),
            }),
            spare: Mutex::new(None),
            memtables: RwLock::new(memtables),
            syncing: Mutex::new(()),
            flush: Mutex::new(FlushState::default()),
            flush_wanted: Condvar::new(),
            flushed: Condvar::new(),
        });
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("ringkv-lsm-flush".into())
                .spawn(move || flush::run(&shared))?
        };
        Ok(Self {
            shared,
            flusher: Some(flusher),
        })
    }
}

/// Replays every log into memtables: the writes are sealed at once, to be flushed, and the
/// number of the last log replayed is returned (the logs stay until the flush).
fn replay(directory: &Path) -> Result<(Memtables, Option<u64>), StorageError> {
    let logs = wal::list_logs(directory)?;
    let mut memtable = Memtable::default();
    for (index, &number) in logs.iter().enumerate() {
        let replay = wal::replay_file(directory, number, index + 1 == logs.len())?;
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
    Ok((memtables, last))
}

impl Shared {
    /// What the memtables hold for `key`, newest first; `None`: ask fjall.
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
        let number = log.number + 1;
        // Renamed under the lock, so the flusher cannot start the next one at the same path
        // before this one has left it.
        let mut spare = self.spare.lock();
        let installed =
            spare
                .take()
                .and_then(|file| match wal::install_log(&self.log_directory, number) {
                    Ok(()) => Some(file),
                    Err(error) => {
                        tracing::warn!(%error, "the log made ahead of time could not be used");
                        None
                    }
                });
        drop(spare);
        let file = match installed {
            Some(file) => file,
            None => wal::create_log(&self.log_directory, number)?,
        };
        let file = Arc::new(file);
        let previous = std::mem::replace(&mut log.file, file);
        log.unsynced.push(previous);
        let last_log = std::mem::replace(&mut log.number, number);
        log.bytes = 0;
        {
            let mut memtables = self.memtables.write();
            let memtable = std::mem::take(&mut memtables.active);
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
                    engine: ENGINE,
                    message: format!("memtables cannot be flushed to the tables: {error}"),
                });
            }
            self.flushed
                .wait_for(&mut state, Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until every memtable sealed so far has reached fjall, within [`CHECKPOINT_WAIT`].
    fn wait_for_flushes(&self) -> Result<(), StorageError> {
        let deadline = Instant::now() + CHECKPOINT_WAIT;
        let mut state = self.flush.lock();
        while !self.memtables.read().sealed.is_empty() {
            if !self.path.exists() {
                return Err(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} no longer exists", self.path.display()),
                )));
            }
            if Instant::now() >= deadline {
                let why = state
                    .error
                    .clone()
                    .unwrap_or_else(|| "still running".into());
                return Err(StorageError::Engine {
                    engine: ENGINE,
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

impl Engine for LsmEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_bytes(key)?.map(Vec::from))
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        // A memtable that is flushed after this look is in fjall before it leaves the list.
        if let Some(slot) = self.shared.memtable_slot(key) {
            return Ok(slot);
        }
        let value = self.shared.data.get(key).map_err(convert)?;
        Ok(value.map(|value| Bytes::copy_from_slice(&value)))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let frame = wal::encode_frame(&batch)?;
        let shared = &self.shared;
        let mut log = shared.log.lock();
        // Sealed before the append rather than after it, so that a write that cannot seal
        // (no room, no new log) fails without having been applied.
        let memtable_bytes = shared.options.memtable_bytes;
        let log_full = log.bytes >= (memtable_bytes as u64).saturating_mul(LOG_BYTES_PER_MEMTABLE);
        if log_full || shared.memtables.read().active.bytes() >= memtable_bytes {
            shared.seal(&mut log)?;
        }
        // At the frames' end, not the file's: a log made ahead of time is zeros after them.
        if let Err(error) = log.file.write_all_at(&frame, log.bytes) {
            // A partial frame in the middle of the log would read as damage on replay.
            let _ = log.file.set_len(log.bytes);
            return Err(error.into());
        }
        log.bytes += frame.len() as u64;
        // The memtable is locked before the log is let go, so writes reach it in log order,
        // and a sync that wants the log need not wait for the batch to be applied.
        let mut memtables = shared.memtables.write();
        drop(log);
        memtables.active.apply(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let _syncing = self.shared.syncing.lock();
        let (current, older) = {
            let mut log = self.shared.log.lock();
            (Arc::clone(&log.file), std::mem::take(&mut log.unsynced))
        };
        for (index, file) in older.iter().enumerate() {
            if let Err(error) = file.sync_data() {
                self.shared
                    .log
                    .lock()
                    .unsynced
                    .splice(0..0, older[index..].iter().cloned());
                return Err(error.into());
            }
        }
        current.sync_data()?;
        Ok(())
    }

    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let mut page = Vec::new();
        let mut range = range.clone();
        while page.len() < limit {
            let runs = self.runs(&range, limit)?;
            match scan::merge_pass(runs, limit, &mut page) {
                Some(horizon) => range = range.after(&horizon),
                None => break,
            }
        }
        Ok(page)
    }

    fn approximate_entries(&self) -> u64 {
        let memtables = self.shared.memtables.read();
        let in_memory: usize = std::iter::once(&memtables.active)
            .chain(memtables.sealed.iter().map(|sealed| &sealed.memtable))
            .map(Memtable::len)
            .sum();
        self.shared.data.approximate_len() as u64 + in_memory as u64
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
        self.shared.database.disk_space().unwrap_or(0) + logs
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        {
            let mut log = self.shared.log.lock();
            if !self.shared.memtables.read().active.is_empty() {
                self.shared.seal(&mut log)?;
            }
        }
        self.shared.wait_for_flushes()?;
        // What an older ringkv left in fjall's own journal goes to its tables too.
        self.shared.data.rotate_memtable().map_err(convert)?;
        self.shared
            .database
            .persist(PersistMode::SyncData)
            .map_err(convert)
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.checkpoint()?;
        self.shared.data.major_compact().map_err(convert)
    }
}

impl LsmEngine {
    /// One pass of a scan: each memtable's entries in `range` and fjall's, newest first, at
    /// most `limit` from each. They are taken under the memtables' lock, so a memtable that
    /// the flusher moves into fjall meanwhile is seen in one of the two places.
    fn runs(&self, range: &ScanRange, limit: usize) -> Result<Vec<scan::Run>, StorageError> {
        let fetch = limit.max(1);
        let bounds = range.as_bounds();
        let (mut runs, tables) = {
            let memtables = self.shared.memtables.read();
            let runs: Vec<scan::Run> = std::iter::once(&memtables.active)
                .chain(memtables.sealed.iter().rev().map(|sealed| &sealed.memtable))
                .map(|memtable| scan::Run::new(memtable.range(bounds, fetch), fetch))
                .collect();
            (runs, self.shared.data.range::<&[u8], _>(bounds))
        };
        let mut stored = Vec::new();
        for guard in tables.take(fetch) {
            let (key, value) = guard.into_inner().map_err(convert)?;
            stored.push((key.to_vec(), Some(Bytes::copy_from_slice(&value))));
        }
        runs.push(scan::Run::new(stored, fetch));
        Ok(runs)
    }
}

impl Drop for LsmEngine {
    fn drop(&mut self) {
        self.shared.flush.lock().closing = true;
        self.shared.flush_wanted.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
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
