//! The storage interface: point reads, ordered range scans that resume after a key, atomic
//! batches and an explicit durability point. Small and object-safe so an engine is chosen at
//! run time (`--engine`) and the same conformance suite runs against every one.

use ringkv_core::limits::ENGINE_KEY_BYTES_MAX;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// A key and its value, as scans return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused a read or write.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes failed their checksum or do not parse: they were damaged on disk.
    #[error("corrupted data: {0}")]
    Corruption(String),
    /// The engine library reported an error of its own.
    #[error("{engine} engine error: {message}")]
    Engine {
        engine: &'static str,
        message: String,
    },
    /// A key longer than any engine stores ([`ENGINE_KEY_BYTES_MAX`]): refused before it
    /// reaches the log, since a table that met it later could not flush it.
    #[error("key of {len} bytes is above the engine's limit of {ENGINE_KEY_BYTES_MAX}")]
    KeyTooLong { len: usize },
}

impl StorageError {
    /// Whether this error means damaged data rather than a failing device or a bug.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StorageError::Corruption(_))
    }
}

/// A key inside a [`WriteBatch`]: inline up to 24 bytes, which holds ringkv's record keys of
/// up to 21 bytes (a 3-byte prefix and `key:000000012345`, or a UUID's 16 bytes), so that
/// building a batch allocates nothing for its keys and the memtables keep them as they come.
pub type BatchKey = smallvec::SmallVec<[u8; 24]>;

/// A copy of `key`, made with one copy of its bytes. `SmallVec`'s `clone` copies element by
/// element through `Extend` (about 100 instructions for a 16-byte key, 4 % of a SET's work
/// where the writer copies keys for its batch, group and cache).
pub fn copy_key(key: &[u8]) -> BatchKey {
    BatchKey::from_slice(key)
}

/// One change inside a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value` (shared bytes, so a caller may keep them too without a copy).
    Put { key: BatchKey, value: bytes::Bytes },
    /// Remove `key` (a no-op when absent).
    Delete { key: BatchKey },
}

impl WriteOp {
    /// The key the change is to.
    pub fn key(&self) -> &BatchKey {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }
}

/// Changes applied all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The changes, applied in order (a later change to the same key wins).
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` changes.
    pub fn with_capacity(ops: usize) -> Self {
        Self {
            ops: Vec::with_capacity(ops),
        }
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<BatchKey>, value: impl Into<bytes::Bytes>) {
        self.ops.push(WriteOp::Put {
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<BatchKey>) {
        self.ops.push(WriteOp::Delete { key: key.into() });
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many changes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Fails if any key is longer than an engine stores.
    pub fn check_keys(&self) -> Result<(), StorageError> {
        match self
            .ops
            .iter()
            .find(|op| op.key().len() > ENGINE_KEY_BYTES_MAX)
        {
            Some(op) => Err(StorageError::KeyTooLong {
                len: op.key().len(),
            }),
            None => Ok(()),
        }
    }

    /// Appends every change of `other`.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }
}

/// An ordered key range: `[start, end)` style bounds over raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRange {
    /// Where the scan starts.
    pub start: Bound<Vec<u8>>,
    /// Where it stops.
    pub end: Bound<Vec<u8>>,
}

impl ScanRange {
    /// Every key.
    pub fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: Bound::Included(prefix.to_vec()),
            end: prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded),
        }
    }

    /// Keys in `[start, end)`.
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        Self {
            start: Bound::Included(start.to_vec()),
            end: Bound::Excluded(end.to_vec()),
        }
    }

    /// The same range, resuming strictly after `key` (for paging: pass the last key returned).
    pub fn after(mut self, key: &[u8]) -> Self {
        let later = match &self.start {
            Bound::Included(start) | Bound::Excluded(start) => key >= start.as_slice(),
            Bound::Unbounded => true,
        };
        if later {
            self.start = Bound::Excluded(key.to_vec());
        }
        self
    }

    /// Whether `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(start) => key >= start.as_slice(),
            Bound::Excluded(start) => key > start.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(end) => key <= end.as_slice(),
            Bound::Excluded(end) => key < end.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// The bounds as borrowed slices, the shape `BTreeMap::range` and the engines want.
    pub fn as_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_slice_bound(&self.start), as_slice_bound(&self.end))
    }
}

fn as_slice_bound(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, if one exists.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A point-in-time view of an engine, for backups: its scans see every write that returned
/// before it was taken and none made after, however long it is kept. Keeping one holds back
/// some of the engine's clean-up (memtables stay in memory, old tables stay on disk) until it
/// is dropped.
pub trait Snapshot: Send + Sync + 'static {
    /// Up to `limit` entries of `range` in key order, as of when the snapshot was taken.
    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError>;
}

/// An ordered key-value store. All methods may be called from many threads at once.
///
/// Writes are atomic per batch and visible to reads as soon as `write` returns, and survive a
/// crash of the process (they reached the operating system), but only survive a crash of the
/// machine after a later [`Engine::sync`] returns.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name, as `--engine` spells it.
    fn name(&self) -> &'static str;

    /// The value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// [`Engine::get`] as shared bytes: an engine that keeps values in memory hands out a
    /// reference instead of a copy.
    fn get_bytes(&self, key: &[u8]) -> Result<Option<bytes::Bytes>, StorageError> {
        Ok(self.get(key)?.map(bytes::Bytes::from))
    }

    /// Applies every change of `batch` atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;

    /// Makes every write that returned before this call durable against power loss.
    fn sync(&self) -> Result<(), StorageError>;

    /// Applies `batch` atomically and makes it, and every earlier write, durable. Engines that
    /// can do both in one step (one fsync) override this.
    fn write_durable(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write(batch)?;
        self.sync()
    }

    /// Up to `limit` entries of `range` in key order.
    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError>;

    /// A point-in-time view of every key, for a consistent backup taken while writes go on.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StorageError>;

    /// Bytes the engine occupies on disk.
    fn disk_bytes(&self) -> u64;

    /// Roughly how many entries the engine holds (records plus index and metadata entries).
    fn approximate_entries(&self) -> u64;

    /// Moves recent writes out of the engine's log into its main files (at a clean
    /// shutdown), so a restart replays little and damage to a log can lose little.
    fn checkpoint(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Changes that the engine's logs held but that it refused to replay when it opened
    /// (keys longer than [`ENGINE_KEY_BYTES_MAX`], written by earlier builds): each was
    /// logged as an error, and the rest of the log was replayed.
    fn changes_refused_at_open(&self) -> u64 {
        0
    }

    /// Asks the engine to reclaim space held by deleted data now rather than later.
    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Sets one key (a batch of one).
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(key, bytes::Bytes::copy_from_slice(value));
        self.write(batch)
    }

    /// Removes one key (a batch of one).
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }
}

/// The engines a node can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Log-structured merge tree (its own log and memtables, fjall's tables): the default,
    /// for write-heavy and large data.
    #[default]
    Lsm,
    /// ringkv's log and memtables over a copy-on-write B-tree (redb).
    Btree,
    /// In-memory ordered map with a write-ahead log and snapshots.
    Memory,
}

impl EngineKind {
    /// Every engine, for suites that run against all of them.
    pub const ALL: [EngineKind; 3] = [EngineKind::Lsm, EngineKind::Btree, EngineKind::Memory];

    /// The name `--engine` takes.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Lsm => "lsm",
            EngineKind::Btree => "btree",
            EngineKind::Memory => "memory",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown engine {name:?}: expected lsm, btree or memory"))
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens (creating if needed) an engine of `kind` whose files live in `directory`.
pub fn open(kind: EngineKind, directory: &Path) -> Result<Arc<dyn Engine>, StorageError> {
    std::fs::create_dir_all(directory)?;
    Ok(match kind {
        EngineKind::Lsm => Arc::new(crate::lsm::LsmEngine::open(directory)?),
        EngineKind::Btree => Arc::new(crate::btree::BtreeEngine::open(directory)?),
        EngineKind::Memory => Arc::new(crate::memory::MemoryEngine::open(
            directory,
            crate::memory::MemoryOptions::default(),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_stops_before_the_next_prefix() {
        let range = ScanRange::prefix(b"ab");
        assert!(range.contains(b"ab"));
        assert!(range.contains(b"ab\xff\xff"));
        assert!(!range.contains(b"ac"));
        assert!(!range.contains(b"aa\xff"));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }

    #[test]
    fn after_only_moves_the_start_forward() {
        let range = ScanRange::prefix(b"k").after(b"k5");
        assert!(!range.contains(b"k5"));
        assert!(range.contains(b"k6"));
        let untouched = ScanRange::prefix(b"k").after(b"a");
        assert!(untouched.contains(b"k"));
    }
}
