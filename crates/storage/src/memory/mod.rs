//! The in-memory engine: an ordered map (a `BTreeMap`, not a hash map, because the engine must
//! scan in key order) made durable by a write-ahead log and periodic snapshots.
//!
//! Files in its directory: `log-N.wal` and `snapshot-N.snap`, where snapshot N holds the state
//! after every log below N, and log N continues from it (then log N+1 and on, when a log's
//! file is full: the files are made ahead of time, see [`crate::log_files`]). A snapshot is taken once the logs since
//! the last one pass [`MemoryOptions::snapshot_after_log_bytes`]: the log is switched to a new
//! file, and a background thread writes the map out a chunk at a time, so writers wait for
//! one chunk's copy at most, never for the whole map's. Once the snapshot is durable, the
//! snapshots it covers are deleted, and the logs it covers retired (written over as later logs,
//! see [`crate::log_files`]).
//!
//! Such a snapshot is fuzzy: writes made while it is written may or may not be in it. It is
//! still the state after every log below N: each key holds its value from the switch or a
//! later one, and replaying log N from the switch on sets every key written since to its last
//! logged value (each logged operation sets or deletes a key outright), which is the state
//! the logs describe. A write reaches the log before the map, so log N is synced once the
//! snapshot has been read and before it replaces the last one: whatever the snapshot holds is
//! then durable in the log too, and a batch half in it is made whole by the replay. Copying the whole map at the switch, as before, stalled writes for 9-28
//! ms at 100 k keys (measured during `redis-benchmark -t set -P 16`).
//!
//! Restart loads the newest snapshot and replays the logs after it; see [`crate::wal`] for how a torn
//! last append is told apart from damage.

pub mod snapshot;

use crate::engine::{
    copy_key, BatchKey, Engine, KeyValue, ScanRange, Snapshot, StorageError, WriteBatch, WriteOp,
};
use crate::log_files::{LogFile, SpareLog};
use crate::wal::{self as log, sync_directory};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const ENGINE: &str = "memory";

/// The ordered map every key lives in. Values are shared bytes: a write stores the batch's
/// own buffer, a read hands out a reference to it, and a snapshot copies no value.
/// Keys inline when short ([`BatchKey`]), as the batches bring them: a search compares the
/// keys of a tree node without following a pointer from each to its own allocation (with
/// `Vec` keys, one cache miss per comparison once the map outgrows the CPU's caches).
type Map = BTreeMap<BatchKey, Bytes>;

/// Settings of the memory engine.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// Log bytes written since the last snapshot that trigger the next one.
    pub snapshot_after_log_bytes: u64,
    /// Bytes of each file of the log, made ahead of time (see [`crate::log_files`]).
    pub log_file_bytes: u64,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            snapshot_after_log_bytes: 64 << 20,
            log_file_bytes: 64 << 20,
        }
    }
}

/// An ordered in-memory map with a write-ahead log and snapshots.
pub struct MemoryEngine {
    shared: Arc<Shared>,
}

struct Shared {
    directory: PathBuf,
    options: MemoryOptions,
    map: RwLock<Map>,
    /// Keys whose snapshot value failed its checksum; a read of one is a corruption error
    /// until the key is written again.
    corrupt_keys: RwLock<BTreeSet<Vec<u8>>>,
    log: Mutex<ActiveLog>,
    /// The next file of the log, made ahead of time.
    spare: SpareLog,
    snapshot_running: AtomicBool,
    /// Changes the logs held that replay refused (see [`Engine::changes_refused_at_open`]).
    refused_at_open: u64,
}

/// The log file being written to.
struct ActiveLog {
    file: LogFile,
    bytes_since_snapshot: u64,
}

impl MemoryEngine {
    /// Whether a snapshot is being written in the background: a snapshot that falls due
    /// meanwhile waits for it (the log grows on), so a caller that wants the engine's files
    /// to follow its writes exactly, as a test does, waits for this.
    pub fn is_snapshotting(&self) -> bool {
        self.shared.snapshot_running.load(Ordering::Acquire)
    }

    /// Opens the engine in `directory/memory`: loads the newest snapshot, replays later logs,
    /// and starts a fresh log.
    pub fn open(directory: &Path, options: MemoryOptions) -> Result<Self, StorageError> {
        let directory = directory.join("memory");
        std::fs::create_dir_all(&directory)?;
        let files = Files::list(&directory)?;
        let mut map = BTreeMap::new();
        let mut corrupt_keys = BTreeSet::new();
        if let Some(&number) = files.snapshots.last() {
            let path = files.snapshot_path(number);
            let loaded = snapshot::load(&std::fs::read(&path)?, &path.display().to_string())?;
            // Entries whose header is damaged cannot be traced to their keys: serving without
            // them would answer "absent" for keys that exist, so refuse, as the other engines do.
            if loaded.skipped_bytes > 0 {
                return Err(StorageError::Corruption(format!(
                    "snapshot {} is damaged where the keys it held cannot be told ({} bytes \
                     unreadable); restore the data directory from a backup or a replica",
                    path.display(),
                    loaded.skipped_bytes
                )));
            }
            if !loaded.corrupt_keys.is_empty() {
                tracing::error!(
                    snapshot = %path.display(),
                    corrupt_keys = loaded.corrupt_keys.len(),
                    "snapshot damaged; damaged keys read as corrupted until rewritten"
                );
            }
            map = loaded
                .entries
                .into_iter()
                .map(|(key, value)| (BatchKey::from_vec(key), Bytes::from(value)))
                .collect();
            corrupt_keys = loaded.corrupt_keys;
        }
        let (replayed_bytes, refused_at_open) = replay_logs(&files, &mut map, &mut corrupt_keys)?;
        let spare = SpareLog::start(&directory, options.log_file_bytes, "ringkv-memory-logs")?;
        // Created empty: the first file made ahead of time is not ready yet (the first write
        // after it is ready moves the log on to it).
        let file = LogFile::open(&directory, files.next_number(), &spare)?;
        let shared = Shared {
            directory,
            options,
            map: RwLock::new(map),
            corrupt_keys: RwLock::new(corrupt_keys),
            log: Mutex::new(ActiveLog {
                file,
                bytes_since_snapshot: replayed_bytes,
            }),
            spare,
            snapshot_running: AtomicBool::new(false),
            refused_at_open,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Writes a snapshot now and waits for it (normally snapshots run in the background).
    pub fn snapshot_now(&self) -> Result<(), StorageError> {
        while self.shared.snapshot_running.swap(true, Ordering::AcqRel) {
            std::thread::yield_now();
        }
        let started = self.shared.start_snapshot(&mut self.shared.log.lock());
        started.and_then(|(number, log)| self.shared.finish_snapshot(number, &log))
    }
}

/// Entries a snapshot copies under the map's read lock at a time: a writer waits for at most
/// this many keys' copies (a few tens of microseconds).
const SNAPSHOT_CHUNK_ENTRIES: usize = 1024;

/// The map's entries in key order, read [`SNAPSHOT_CHUNK_ENTRIES`] at a time, each chunk as
/// the map is when it is read (see the module documentation on fuzzy snapshots).
fn entries_in_chunks(map: &RwLock<Map>) -> impl Iterator<Item = (BatchKey, Bytes)> + '_ {
    let mut resume: Option<BatchKey> = None;
    let mut finished = false;
    std::iter::from_fn(move || {
        if finished {
            return None;
        }
        let lower = match &resume {
            Some(key) => Bound::Excluded(&key[..]),
            None => Bound::Unbounded,
        };
        let chunk: Vec<(BatchKey, Bytes)> = map
            .read()
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take(SNAPSHOT_CHUNK_ENTRIES)
            .map(|(key, value)| (copy_key(key), value.clone()))
            .collect();
        finished = chunk.len() < SNAPSHOT_CHUNK_ENTRIES;
        resume = chunk.last().map(|(key, _)| copy_key(key));
        Some(chunk)
    })
    .flatten()
}

/// Replays every log at or after the newest snapshot into `map`; returns the bytes replayed
/// and how many changes replay refused.
fn replay_logs(
    files: &Files,
    map: &mut Map,
    corrupt_keys: &mut BTreeSet<Vec<u8>>,
) -> Result<(u64, u64), StorageError> {
    let first = files.snapshots.last().copied().unwrap_or(0);
    let logs: Vec<u64> = files.logs.iter().copied().filter(|&n| n >= first).collect();
    let (mut replayed, mut refused) = (0, 0);
    for (index, &number) in logs.iter().enumerate() {
        let replay = log::replay_file(&files.directory, number, index + 1 == logs.len())?;
        refused += replay.refused;
        for batch in replay.batches {
            apply(map, corrupt_keys, batch);
        }
        replayed += replay.valid_bytes;
    }
    Ok((replayed, refused))
}

fn apply(map: &mut Map, corrupt: &mut BTreeSet<Vec<u8>>, batch: WriteBatch) {
    for op in batch.ops {
        match op {
            WriteOp::Put { key, value } => {
                if !corrupt.is_empty() {
                    corrupt.remove(key.as_slice());
                }
                map.insert(key, value);
            }
            WriteOp::Delete { key } => {
                if !corrupt.is_empty() {
                    corrupt.remove(key.as_slice());
                }
                map.remove(key.as_slice());
            }
        }
    }
}

impl Shared {
    /// Starts a snapshot unless one is running: moves the log on (see
    /// [`Shared::start_snapshot`]) and returns the snapshot's number and log, which
    /// [`Shared::finish_snapshot`] takes.
    fn begin_snapshot(
        &self,
        log: &mut ActiveLog,
    ) -> Result<Option<(u64, Arc<File>)>, StorageError> {
        if self.snapshot_running.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        self.start_snapshot(log)
            .map(Some)
            .inspect_err(|_| self.snapshot_running.store(false, Ordering::Release))
    }

    /// Writes snapshot `number` ([`Shared::finish_snapshot`]) on a thread of its own, at
    /// background priority; if that thread cannot start, the snapshot is given up, so that a
    /// later one can start.
    fn spawn_snapshot(self: &Arc<Self>, number: u64, log: Arc<File>) -> Result<(), StorageError> {
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("ringkv-memory-snapshot".into())
            .spawn(move || {
                crate::background::lower_this_thread();
                if let Err(error) = shared.finish_snapshot(number, &log) {
                    tracing::error!(%error, "memory engine snapshot failed; the log keeps growing");
                }
            });
        spawned.map(drop).map_err(|error| {
            self.snapshot_running.store(false, Ordering::Release);
            error.into()
        })
    }

    /// Moves the log on to a new file for a snapshot of its number; the caller holds the log
    /// lock, so no write slips in between. Returns the number and the new log's file.
    fn start_snapshot(&self, log: &mut ActiveLog) -> Result<(u64, Arc<File>), StorageError> {
        // Syncs the old log first: later syncs only reach the new one.
        log.file.move_on(&self.directory, &self.spare)?;
        log.bytes_since_snapshot = 0;
        Ok((log.file.number(), log.file.file()))
    }

    /// Writes the copy as snapshot `number`, then retires what it covers.
    fn finish_snapshot(&self, number: u64, log: &File) -> Result<(), StorageError> {
        let result = self.write_snapshot(number, log, entries_in_chunks(&self.map));
        self.snapshot_running.store(false, Ordering::Release);
        result
    }

    /// Writes snapshot `number` from `entries` (the map's, in key order), syncs `log` (log
    /// `number`, which holds every write the entries may include), then retires what the
    /// snapshot covers.
    fn write_snapshot(
        &self,
        number: u64,
        log: &File,
        entries: impl Iterator<Item = (BatchKey, Bytes)>,
    ) -> Result<(), StorageError> {
        let files = Files::list(&self.directory)?;
        let temporary = self.directory.join(format!("snapshot-{number:020}.tmp"));
        snapshot::write(&temporary, entries)?;
        log.sync_data()?;
        std::fs::rename(&temporary, files.snapshot_path(number))?;
        sync_directory(&self.directory)?;
        for &old in files.logs.iter().filter(|&&n| n < number) {
            self.spare.retire(old)?;
        }
        for old in files.snapshots.iter().filter(|&&n| n < number) {
            std::fs::remove_file(files.snapshot_path(*old))?;
        }
        Ok(())
    }
}

/// Up to `limit` entries of `range` in `map`.
fn page_of(map: &Map, range: &ScanRange, limit: usize) -> Vec<KeyValue> {
    map.range::<[u8], _>(range.as_bounds())
        .take(limit)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// `entries`, a page of `range`, unless a damaged key would have been in it: that fails the
/// page as corrupted.
fn check_page(
    corrupt: &BTreeSet<Vec<u8>>,
    range: &ScanRange,
    limit: usize,
    entries: Vec<KeyValue>,
) -> Result<Vec<KeyValue>, StorageError> {
    let last = entries.last().map(|(k, _)| k.as_slice());
    let hit = corrupt
        .range::<[u8], _>(range.as_bounds())
        .find(|k| entries.len() < limit || last.is_some_and(|last| k.as_slice() <= last));
    match hit {
        Some(key) => Err(StorageError::Corruption(format!(
            "value of key {key:?} failed its checksum"
        ))),
        None => Ok(entries),
    }
}

/// A [`Snapshot`] of the memory engine: its own copy of the map.
struct MapSnapshot {
    map: Map,
    corrupt_keys: BTreeSet<Vec<u8>>,
}

impl Snapshot for MapSnapshot {
    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        check_page(
            &self.corrupt_keys,
            range,
            limit,
            page_of(&self.map, range, limit),
        )
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_bytes(key)?.map(Vec::from))
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let shared = &self.shared;
        if let Some(value) = shared.map.read().get(key) {
            return Ok(Some(value.clone()));
        }
        if shared.corrupt_keys.read().contains(key) {
            return Err(StorageError::Corruption(format!(
                "value of key {key:?} failed its checksum"
            )));
        }
        Ok(None)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut frame = log::encode_frame(&batch)?;
        let shared = &self.shared;
        let mut log = shared.log.lock();
        let mut snapshot = None;
        if log.file.should_move_on(&frame, &shared.spare) {
            // A snapshot that would fall due in the next file starts now, and moves the log
            // on itself. Moving on alone would take that file for the few frames left before
            // the snapshot, which would then leave it mostly zeros: with the default 64 MiB
            // files and snapshots every 64 MiB of log, every other file made ahead.
            let options = &shared.options;
            let due_in_next = log.bytes_since_snapshot + shared.spare.file_bytes()
                > options.snapshot_after_log_bytes;
            if due_in_next {
                snapshot = shared.begin_snapshot(&mut log)?;
            }
            if snapshot.is_none() {
                log.file.move_on(&shared.directory, &shared.spare)?;
            }
        }
        let mut failed = log.file.write(&mut frame).err();
        if failed.is_none() {
            log.bytes_since_snapshot += frame.frame_bytes() as u64;
            apply(
                &mut shared.map.write(),
                &mut shared.corrupt_keys.write(),
                batch,
            );
            let due = log.bytes_since_snapshot >= shared.options.snapshot_after_log_bytes;
            if snapshot.is_none() && due {
                match shared.begin_snapshot(&mut log) {
                    Ok(started) => snapshot = started,
                    Err(error) => failed = Some(error),
                }
            }
        }
        drop(log);
        // A snapshot started above runs even if the write failed after it: the log has moved
        // on for it, and until it ends no other starts.
        if let Some((number, log)) = snapshot {
            shared.spawn_snapshot(number, log)?;
        }
        failed.map_or(Ok(()), Err)
    }

    fn sync(&self) -> Result<(), StorageError> {
        let file = self.shared.log.lock().file.file();
        file.sync_data()?;
        Ok(())
    }

    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let entries = page_of(&self.shared.map.read(), range, limit);
        check_page(&self.shared.corrupt_keys.read(), range, limit, entries)
    }

    /// A copy of the map (its keys; values are shared, not copied) and of its damaged keys.
    /// Writers wait while it is made, which takes time in proportion to the number of keys.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StorageError> {
        let map = self.shared.map.read().clone();
        let corrupt_keys = self.shared.corrupt_keys.read().clone();
        Ok(Box::new(MapSnapshot { map, corrupt_keys }))
    }

    fn changes_refused_at_open(&self) -> u64 {
        self.shared.refused_at_open
    }

    fn approximate_entries(&self) -> u64 {
        self.shared.map.read().len() as u64
    }

    fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.shared.directory)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        self.snapshot_now()
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.snapshot_now()
    }
}

/// The numbered files in the engine's directory.
struct Files {
    directory: PathBuf,
    logs: Vec<u64>,
    snapshots: Vec<u64>,
}

impl Files {
    fn list(directory: &Path) -> Result<Self, StorageError> {
        let mut files = Files {
            directory: directory.to_path_buf(),
            logs: Vec::new(),
            snapshots: Vec::new(),
        };
        for entry in std::fs::read_dir(directory)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let number = |prefix: &str, suffix: &str| {
                name.strip_prefix(prefix)?
                    .strip_suffix(suffix)?
                    .parse::<u64>()
                    .ok()
            };
            if let Some(n) = log::log_number(&name) {
                files.logs.push(n);
            } else if let Some(n) = number("snapshot-", ".snap") {
                files.snapshots.push(n);
            } else if name.starts_with("snapshot-") && name.ends_with(".tmp") {
                // A snapshot the process died writing; the logs it would cover are all still here.
                // (Not the log file being made ahead of time, also a `.tmp`: see `SpareLog`.)
                std::fs::remove_file(directory.join(&name))?;
            }
        }
        files.logs.sort_unstable();
        files.snapshots.sort_unstable();
        Ok(files)
    }

    fn next_number(&self) -> u64 {
        let highest = self
            .logs
            .iter()
            .chain(&self.snapshots)
            .max()
            .copied()
            .unwrap_or(0);
        highest + 1
    }

    fn snapshot_path(&self, number: u64) -> PathBuf {
        self.directory.join(format!("snapshot-{number:020}.snap"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listing the files (as every snapshot does) deletes what a snapshot left half written,
    /// but not the log file being made ahead of time, which is also a `.tmp`: deleting it
    /// made the log move on to an empty file after each snapshot.
    #[test]
    fn listing_the_files_removes_half_written_snapshots_only() {
        let dir = tempfile::tempdir().unwrap();
        let half_written = dir.path().join(format!("snapshot-{:020}.tmp", 3));
        std::fs::write(&half_written, b"part").unwrap();
        std::fs::write(log::spare_path(dir.path()), [0; 64]).unwrap();
        std::fs::write(log::log_path(dir.path(), 2), b"").unwrap();
        let files = Files::list(dir.path()).unwrap();
        assert_eq!(files.logs, vec![2]);
        assert!(
            !half_written.exists(),
            "the half-written snapshot was removed"
        );
        assert!(
            log::spare_path(dir.path()).exists(),
            "the log file made ahead of time was kept"
        );
    }

    /// A snapshot written while writes go on (before the chunk it is reading, after it, new
    /// keys, deletes) and the log after it give back exactly the last state on restart.
    #[test]
    fn writes_made_while_a_snapshot_is_written_are_all_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let options = MemoryOptions {
            snapshot_after_log_bytes: u64::MAX,
            ..MemoryOptions::default()
        };
        let key = |i: usize| format!("k{i:05}").into_bytes();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let keys = 5 * SNAPSHOT_CHUNK_ENTRIES;
        {
            let engine = MemoryEngine::open(dir.path(), options.clone()).unwrap();
            let mut batch = WriteBatch::new();
            for i in 0..keys {
                batch.put(key(i), b"old".to_vec());
                model.insert(key(i), b"old".to_vec());
            }
            engine.write(batch).unwrap();
            let shared = &engine.shared;
            shared.snapshot_running.store(true, Ordering::Release);
            let (number, log) = shared.start_snapshot(&mut shared.log.lock()).unwrap();
            let mut read = 0;
            let entries = entries_in_chunks(&shared.map).inspect(|_| {
                read += 1;
                if read % 300 != 0 {
                    return;
                }
                let (behind, ahead) = (key(read - 150), key((read + 1500) % keys));
                let (gone, added) = (key((read + 7) % keys), key(keys + read));
                let mut batch = WriteBatch::new();
                for changed in [&behind, &ahead, &added] {
                    batch.put(changed.clone(), format!("new{read}").into_bytes());
                    model.insert(changed.clone(), format!("new{read}").into_bytes());
                }
                batch.delete(gone.clone());
                model.remove(&gone);
                engine.write(batch).unwrap();
            });
            shared.write_snapshot(number, &log, entries).unwrap();
            assert!(read >= keys, "the snapshot read every key: {read}");
        }
        let engine = MemoryEngine::open(dir.path(), options).unwrap();
        let stored = engine.scan(&ScanRange::prefix(b"k"), usize::MAX).unwrap();
        let stored: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        assert_eq!(stored.len(), model.len());
        assert!(
            stored == model,
            "the restarted engine differs from the writes"
        );
    }
}
