//! The default engine: a log-structured merge tree on fjall.
//!
//! fjall writes each batch to its journal and hands it to the operating system before
//! `commit` returns (we leave `manual_journal_persist` off), so a write survives a crash of the
//! process at once; [`Engine::sync`] adds the fsync that makes it survive power loss. fjall's
//! own block checksums catch damaged table files; those errors come back as
//! [`StorageError::Corruption`].

use crate::engine::{Engine, KeyValue, ScanRange, StorageError, WriteBatch, WriteOp};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, LsmError, PersistMode};
use std::path::Path;

const ENGINE: &str = "lsm";

/// The fjall tree that holds every key.
const DATA_TREE: &str = "data";

/// The memtable's size before it is sealed and flushed: 16 MiB, not fjall's 64 MiB. Every
/// write of a key is its own entry in the memtable's skip list, so a smaller list is shallower
/// and more of it stays in the CPU's caches, and a flush is shorter. Measured with
/// `redis-benchmark -t set -n 2000000 -c 50 -d 100 -r 100000 -P 16`, `--sync always`, runs
/// alternated: 131 k vs 124 k ops/s (means of 4 and 5 runs, within this machine's noise), the
/// writer thread's CPU −14 %, the flush workers' +61 %, the whole server's −4 %; the slowest
/// request 77–173 ms instead of 245–1,014 ms. With 1 M keys, throughput and CPU within noise,
/// the slowest request 122–152 ms instead of 243–296 ms. fjall stores the size with the tree
/// when it creates it, so a data directory keeps the size it was created with.
const MEMTABLE_BYTES: u64 = 16 << 20;

/// How long a checkpoint waits for the memtable to reach disk.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A fjall database with one tree.
pub struct LsmEngine {
    database: Database,
    data: Keyspace,
    path: std::path::PathBuf,
}

impl LsmEngine {
    /// Opens or creates the engine in `directory`, recovering from the journal after a crash.
    pub fn open(directory: &Path) -> Result<Self, StorageError> {
        let path = directory.join("lsm");
        let database = Database::builder(&path)
            .manual_journal_persist(false)
            .worker_threads(background_workers())
            .open()
            .map_err(|error| match convert(error) {
                StorageError::Corruption(detail) => StorageError::Corruption(format!(
                    "the journal or tables in {} are damaged ({detail}). Data after the damage \
                     cannot be replayed; restore the directory from a backup or a replica",
                    path.display()
                )),
                other => other,
            })?;
        let data = database
            .keyspace(DATA_TREE, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(convert)?;
        Ok(Self {
            database,
            data,
            path,
        })
    }
}

impl Engine for LsmEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .data
            .get(key)
            .map_err(convert)?
            .map(|value| value.to_vec()))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut fjall_batch = self.database.batch();
        for op in batch.ops {
            match op {
                WriteOp::Put { key, value } => fjall_batch.insert(&self.data, key, &value[..]),
                WriteOp::Delete { key } => fjall_batch.remove(&self.data, key),
            }
        }
        fjall_batch.commit().map_err(convert)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.database
            .persist(PersistMode::SyncData)
            .map_err(convert)
    }

    fn write_durable(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write(batch)?;
        self.sync()
    }

    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let mut entries = Vec::new();
        for guard in self.data.range::<&[u8], _>(range.as_bounds()).take(limit) {
            let (key, value) = guard.into_inner().map_err(convert)?;
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    fn approximate_entries(&self) -> u64 {
        self.data.approximate_len() as u64
    }

    fn disk_bytes(&self) -> u64 {
        self.database.disk_space().unwrap_or(0)
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        // fjall's own wait for a flush has no bound, and a flush into a directory that was
        // removed never finishes: wait a bounded time, and stop once the directory is gone.
        let gone = || {
            let message = format!("{} no longer exists", self.path.display());
            StorageError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, message))
        };
        if !self.path.exists() {
            return Err(gone());
        }
        self.data.rotate_memtable().map_err(convert)?;
        let deadline = std::time::Instant::now() + CHECKPOINT_WAIT;
        while self.data.sealed_memtable_count() > 0 {
            if !self.path.exists() {
                return Err(gone());
            }
            if std::time::Instant::now() >= deadline {
                return Err(StorageError::Engine {
                    engine: ENGINE,
                    message: format!("memtable flush did not finish within {CHECKPOINT_WAIT:?}"),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.sync()
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.data.rotate_memtable_and_wait().map_err(convert)?;
        self.data.major_compact().map_err(convert)
    }
}

/// fjall's flush and compaction threads: one per core, but at least 3 and at most 4.
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
