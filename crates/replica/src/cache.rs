//! The record cache: recently read or written records by engine key, in front of the engine
//! (as RocksDB's row cache or Cassandra's row cache). A point read in an LSM tree searches
//! the memtables and the tables' filters and indexes; a cache hit is one hash lookup.
//! Absent keys are cached too, so a write of a new key does not search the tree to learn it is
//! new.
//!
//! Entries hold the record's stored bytes, checked when they came in: an engine read checks
//! them, and the writer made them. For a record of one sibling an entry also holds its
//! [`PointRead`], so a single-value read that hits slices the value out without decoding or
//! checksumming the bytes again. Like RocksDB's block cache, which checks a block's checksum
//! when it reads the block from a file and not on every hit, the checksum guards what comes
//! from storage; memory errors are for ECC to catch. The writer's summary of the record a plain
//! SET replaces skips it too; reads that decode the whole record (records with siblings,
//! conditional and read-modify-write changes) still check it. The cache is
//! bounded in bytes (quick_cache's S3-FIFO eviction).
//!
//! Coherence: only the writer thread changes records, and it updates the cache after the
//! engine has taken a group, before anyone is told the write happened. A reader that misses
//! may race with that update — it could read the old record from the engine and put it in the
//! cache after the writer put the new one. To prevent that, each key hashes to a *stripe*
//! whose epoch the writer bumps with every update: a reader notes the epoch before reading the
//! engine and fills the cache only if it has not moved.
//!
//! Snapshots: a caller about to submit a plain SET may read the record it will replace from
//! the cache ([`RecordCache::snapshot`]), off the writer thread, and hand the writer what it
//! found with the key's [`SlotVersion`]: a counter, one of 4,096 that keys hash to,
//! which the writer advances after each change it makes to the cache. If the counter has not
//! moved when the writer applies the SET ([`RecordCache::unchanged_since`]), no key of its
//! slot has changed since the snapshot, so the writer uses it instead of looking the record
//! up itself.

use bytes::Bytes;
use parking_lot::Mutex;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use ringkv_core::record::{PointRead, RecordError, Replaced};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stripes of epochs; a power of two well above the number of threads.
const STRIPES: usize = 256;

/// Version counters of [`RecordCache::snapshot`]s; a multiple of [`STRIPES`], so that the
/// keys of one slot are all of one stripe, whose lock orders the slot's changes.
///
/// Few enough that the counters (32 KiB) stay in the CPU's cache, which every SET's snapshot
/// reads one line of: with 65,536 (512 KiB), that line was a miss to memory on nearly every
/// SET, 3.5-4.5 % of the busy RESP thread's time under `redis-benchmark -t set -P 16` over
/// 100 k keys. Enough that a snapshot is rarely spoiled by another key's change: a thread
/// that commits its own writes prepares a group's SETs after it stored the group before, so
/// only a group another thread stores in between can spoil them, and one of 460 writes
/// (such a group's size at `-P 16`) hits a given slot with odds of one in ten. With two RESP
/// threads, 2-3 % of SETs then fell back to the writer's own lookup, where one count for the
/// whole cache spoiled 25 %.
const VERSION_SLOTS: usize = 1 << 12;

/// Shards of the cache, each under its own lock: the writer takes one for every record it
/// stores while connection threads read through them. quick_cache's default of four per core
/// (eight on two cores) had them meet: under `redis-benchmark -t set -P 16`, a profile showed
/// both sides spinning (`sched_yield`) on shard locks. Each shard evicts on its own, so many
/// shards of a small cache evict a little less precisely.
const CACHE_SHARDS: usize = 128;

/// Bytes an entry costs beyond its key and value (hash table slot, eviction metadata).
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// An entry's engine key, held in the entry itself when short (as nearly all are): a lookup
/// compares keys without following a pointer to a separate allocation (in a cache larger
/// than the CPU's, a memory access fewer per probe), and caching a key allocates nothing.
pub type CacheKey = SmallVec<[u8; CACHE_KEY_INLINE_BYTES]>;

/// Engine key bytes a [`CacheKey`] holds inline: a 3-byte record prefix and a user key of up
/// to 21 bytes (`key:000000012345`, a UUID's 16 bytes).
const CACHE_KEY_INLINE_BYTES: usize = 24;

/// A stored record, or `None` when the key has no record.
pub type Cached = Option<StoredRecord>;

/// A record's stored bytes, checked (or made by the writer), with their [`PointRead`] when
/// the record has one sibling.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The encoded record.
    pub bytes: Bytes,
    /// Where a point read finds the value; `None`: decode the bytes.
    pub point: Option<PointRead>,
}

impl StoredRecord {
    /// Bytes read from the engine, checked (checksum and structure) to find their point read.
    pub fn from_engine(bytes: Bytes) -> Result<Self, RecordError> {
        let point = PointRead::of_encoded(&bytes)?;
        Ok(Self { bytes, point })
    }

    /// What a write that supersedes every version of the key needs of this record
    /// ([`Replaced::of_checked`]), read through the point read when there is one.
    pub fn replaced(&self) -> Result<Option<Replaced>, RecordError> {
        match &self.point {
            Some(point) => Replaced::of_point(&self.bytes, point),
            None => Replaced::of_checked(&self.bytes),
        }
    }

    /// The value a single-value read at `now_ms` returns, when the point read knows it
    /// (`None` inside: no visible value); `None`: decode the bytes to find out.
    pub fn point_value(&self, now_ms: u64) -> Option<Option<Bytes>> {
        // A typed value is decoded: its state is not what a read returns.
        let point = self.point.filter(|point| point.kind().is_bytes())?;
        Some(point.visible(now_ms).map(|range| self.bytes.slice(range)))
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<CacheKey, Cached> for ByBytes {
    fn weight(&self, key: &CacheKey, value: &Cached) -> u64 {
        let bytes = value.as_ref().map_or(0, |v| v.bytes.len() as u64);
        key.len() as u64 + bytes + ENTRY_OVERHEAD_BYTES
    }
}

/// A bounded cache of stored records; see the module documentation.
pub struct RecordCache {
    entries: Cache<CacheKey, Cached, ByBytes>,
    epochs: Box<[Mutex<u64>]>,
    versions: Box<[AtomicU64]>,
}

/// Where a key's [`RecordCache::snapshot`] was taken: its version slot's counter then.
#[derive(Clone, Copy, Debug)]
pub struct SlotVersion {
    slot: usize,
    count: u64,
}

/// What a reader learned before a miss: the epoch to check when filling the cache.
pub struct Miss {
    stripe: usize,
    epoch: u64,
}

/// The outcome of a lookup.
pub enum Lookup {
    /// The cached bytes (`None`: the key has no record).
    Hit(Cached),
    /// Not cached: read the engine, then [`RecordCache::fill`].
    Miss(Miss),
}

impl RecordCache {
    /// A cache of at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        let estimated_items = (capacity_bytes / 256).clamp(16, 1 << 24) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity_bytes)
            .shards(CACHE_SHARDS)
            .build()
            .expect("the options are complete");
        Self {
            entries: Cache::with_options(options, ByBytes, Default::default(), Default::default()),
            epochs: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            versions: (0..VERSION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(key: &[u8]) -> usize {
        xxhash_rust::xxh3::xxh3_64(key) as usize % VERSION_SLOTS
    }

    fn stripe(slot: usize) -> usize {
        slot % STRIPES
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        if let Some(cached) = self.entries.get(key) {
            return Lookup::Hit(cached);
        }
        let stripe = Self::stripe(Self::slot(key));
        let epoch = *self.epochs[stripe].lock();
        Lookup::Miss(Miss { stripe, epoch })
    }

    /// Caches what a reader found in the engine after `miss`, unless the writer changed any
    /// key of the stripe since (the reader's bytes may then be stale).
    pub fn fill(&self, key: &[u8], miss: Miss, found: Cached) {
        let epoch = self.epochs[miss.stripe].lock();
        if *epoch == miss.epoch {
            self.entries.insert(CacheKey::from_slice(key), found);
        }
    }

    /// What the cache holds for `key`, if anything, and the key's [`SlotVersion`] as of a moment
    /// no later than the lookup: see the module documentation.
    pub fn snapshot(&self, key: &[u8]) -> Option<(Cached, SlotVersion)> {
        let slot = Self::slot(key);
        // Acquire: a count that an update's increment wrote comes with the entry it inserted
        // before, so the lookup below sees that entry or a later one (which moved the count).
        let count = self.versions[slot].load(Ordering::Acquire);
        let cached = self.entries.get(key)?;
        Some((cached, SlotVersion { slot, count }))
    }

    /// Whether no key of `version`'s slot has changed in the cache since its snapshot. Exact
    /// for the writer thread, which makes every change to stored records; a reader's
    /// [`RecordCache::forget`] of damaged bytes, which changes no stored record, may reach it
    /// late.
    pub fn unchanged_since(&self, version: SlotVersion) -> bool {
        self.versions[version.slot].load(Ordering::Acquire) == version.count
    }

    /// The writer's update: `key` now stores `record` (`None`: deleted).
    pub fn update(&self, key: CacheKey, record: Cached) {
        let slot = Self::slot(&key);
        let mut epoch = self.epochs[Self::stripe(slot)].lock();
        *epoch += 1;
        self.entries.insert(key, record);
        self.versions[slot].fetch_add(1, Ordering::Release);
    }

    /// Forgets `key` (its stored bytes were found damaged, or changed behind the store).
    pub fn forget(&self, key: &[u8]) {
        let slot = Self::slot(key);
        let mut epoch = self.epochs[Self::stripe(slot)].lock();
        *epoch += 1;
        self.entries.remove(key);
        self.versions[slot].fetch_add(1, Ordering::Release);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut epochs: Vec<_> = self.epochs.iter().map(|e| e.lock()).collect();
        for epoch in &mut epochs {
            **epoch += 1;
        }
        self.entries.clear();
        for version in &self.versions {
            version.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(bytes: &[u8]) -> StoredRecord {
        StoredRecord {
            bytes: Bytes::copy_from_slice(bytes),
            point: None,
        }
    }

    #[test]
    fn a_fill_after_a_concurrent_update_is_dropped() {
        let cache = RecordCache::new(1 << 20);
        let Lookup::Miss(miss) = cache.lookup(b"k") else {
            panic!("empty cache")
        };
        // The writer stores a new record while the reader was reading the engine.
        cache.update(CacheKey::from_slice(b"k"), Some(stored(b"new")));
        cache.fill(b"k", miss, Some(stored(b"old")));
        assert!(matches!(cache.lookup(b"k"), Lookup::Hit(Some(v)) if v.bytes == "new"));
    }

    #[test]
    fn a_snapshot_stays_current_until_its_key_or_the_cache_changes() {
        let cache = RecordCache::new(1 << 20);
        assert!(cache.snapshot(b"k").is_none(), "nothing cached");
        cache.update(CacheKey::from_slice(b"k"), Some(stored(b"1")));
        let (cached, version) = cache.snapshot(b"k").unwrap();
        assert_eq!(cached.unwrap().bytes, "1");
        assert!(cache.unchanged_since(version));
        // A reader's fill does not change what is stored.
        let Lookup::Miss(miss) = cache.lookup(b"other") else {
            panic!("not cached")
        };
        cache.fill(b"other", miss, None);
        assert!(cache.unchanged_since(version));
        cache.update(CacheKey::from_slice(b"k"), Some(stored(b"2")));
        assert!(!cache.unchanged_since(version), "an update moves it");
        let (_, version) = cache.snapshot(b"k").unwrap();
        cache.forget(b"k");
        assert!(!cache.unchanged_since(version), "forgetting moves it");
        cache.update(CacheKey::from_slice(b"k"), None);
        let (cached, version) = cache.snapshot(b"k").unwrap();
        assert!(cached.is_none(), "an absent key is a snapshot too");
        cache.clear();
        assert!(
            !cache.unchanged_since(version),
            "clearing moves every version"
        );
    }

    #[test]
    fn misses_fill_and_absent_keys_are_cached() {
        let cache = RecordCache::new(1 << 20);
        let Lookup::Miss(miss) = cache.lookup(b"gone") else {
            panic!()
        };
        cache.fill(b"gone", miss, None);
        assert!(matches!(cache.lookup(b"gone"), Lookup::Hit(None)));
        cache.forget(b"gone");
        assert!(matches!(cache.lookup(b"gone"), Lookup::Miss(_)));
    }

    #[test]
    fn keys_longer_than_the_inline_bytes_are_found_by_their_bytes() {
        let cache = RecordCache::new(1 << 20);
        let long: Vec<u8> = (0..100u8).collect();
        let short = &long[..CACHE_KEY_INLINE_BYTES];
        cache.update(CacheKey::from_slice(&long), Some(stored(b"long")));
        cache.update(CacheKey::from_slice(short), Some(stored(b"short")));
        assert!(matches!(cache.lookup(&long), Lookup::Hit(Some(v)) if v.bytes == "long"));
        assert!(matches!(cache.lookup(short), Lookup::Hit(Some(v)) if v.bytes == "short"));
        assert!(matches!(cache.lookup(&long[..99]), Lookup::Miss(_)));
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = RecordCache::new(64 * 1024);
        for i in 0..10_000u32 {
            cache.update(
                CacheKey::from_slice(&i.to_be_bytes()),
                Some(stored(&[0u8; 100])),
            );
        }
        let held: u64 = (0..10_000u32)
            .filter(|i| matches!(cache.lookup(&i.to_be_bytes()), Lookup::Hit(_)))
            .count() as u64;
        assert!(
            held * (100 + 4 + ENTRY_OVERHEAD_BYTES) <= 64 * 1024,
            "{held} entries held"
        );
        assert!(held > 0);
    }
}
