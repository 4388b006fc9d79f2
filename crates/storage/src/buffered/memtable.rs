//! The memtables: the writes since the last flush, in memory, found by hash and kept in key
//! order.
//!
//! Two indexes rather than one ordered map: a hash map from each key to what it holds, and
//! the keys alone in a `BTreeSet` for ordered scans and the flush. A key written again — the
//! common case for a memtable that holds a workload's hot keys — costs one hash probe and
//! leaves the ordered set alone; only a key new to the memtable is added to both. With one
//! `BTreeMap`, every write searched the tree: about 30 % of the writer thread's time under
//! `redis-benchmark -t set -P 16` over 100 k keys, most of it cache misses on the way down and
//! key comparisons in each node. A skip list would serve no purpose: the single writer needs
//! no concurrent inserts, and a rewrite replaces its entry in place instead of adding a
//! version, so a memtable holds one entry per key however often the key is rewritten.
//!
//! A memtable sized for a budget ([`Memtable::sized_for`]) reserves its hash table up front
//! and reports itself full before the table would have to grow: growing would move every
//! entry at once, a stall of milliseconds on the writer's path.

use crate::engine::{BatchKey, WriteBatch, WriteOp};
use bytes::Bytes;
use std::collections::{hash_map, BTreeSet, HashMap};
use std::ops::Bound;

/// A memtable key, as the batch brought it: inline when short, so neither index follows a
/// pointer to compare it.
type Key = BatchKey;

/// What a memtable holds for a key: its value, or `None` for a delete, which must hide any
/// older value in the tables below.
pub type Slot = Option<Bytes>;

/// Bytes an entry costs beyond its key and value: its hash-table bucket and its share of the
/// ordered set's nodes (the key is in both), and the value's header.
const ENTRY_OVERHEAD_BYTES: usize = 112;

/// Bytes of budget per entry the hash table is reserved for: a memtable of small entries is
/// sealed by its number of keys rather than by its bytes.
const BUDGET_BYTES_PER_ENTRY: usize = 256;

/// Most entries a hash table is reserved for (a 128 MiB budget's worth); a memtable with a
/// larger budget is sealed once it holds about this many keys.
const RESERVED_ENTRIES_MAX: usize = 1 << 19;

/// The writes since the last flush, with the bytes they hold.
#[derive(Default)]
pub struct Memtable {
    slots: HashMap<Key, Slot, ahash::RandomState>,
    order: BTreeSet<Key>,
    bytes: usize,
    /// The budget the hash table was reserved for, if it was ([`Memtable::sized_for`]).
    sized_for: Option<usize>,
}

impl Memtable {
    /// An empty memtable whose hash table holds, without growing, the entries that
    /// `budget_bytes` would take at [`BUDGET_BYTES_PER_ENTRY`] each.
    pub fn sized_for(budget_bytes: usize) -> Self {
        Self {
            slots: HashMap::with_capacity_and_hasher(
                (budget_bytes / BUDGET_BYTES_PER_ENTRY).clamp(16, RESERVED_ENTRIES_MAX),
                ahash::RandomState::new(),
            ),
            sized_for: Some(budget_bytes),
            ..Self::default()
        }
    }

    /// Whether the memtable was made by [`Memtable::sized_for`] with `budget_bytes`, so that,
    /// once cleared, it can stand in for a new one.
    pub fn is_sized_for(&self, budget_bytes: usize) -> bool {
        self.sized_for == Some(budget_bytes)
    }

    /// Whether `new_keys` more keys would make the hash table grow: time to seal. An empty
    /// memtable has room for any batch (its table grows for one larger than it).
    pub fn lacks_room_for(&self, new_keys: usize) -> bool {
        !self.is_empty() && self.slots.len() + new_keys > self.slots.capacity()
    }

    /// Applies every change of `batch`, in order.
    pub fn apply(&mut self, batch: WriteBatch) {
        // Every key is looked up once before any is changed. In a memtable larger than the
        // CPU's caches each lookup misses twice (the control bytes, then the bucket).
        // Lookups of different keys are independent, so the CPU overlaps their misses;
        // changes are not: each drops the value it replaces, lowering its shared count with
        // a locked instruction, and no later load starts before that is done. The changes
        // then find their buckets in cache. Under `redis-benchmark -t set -P 16` over 100 k
        // keys this took the function from 10.6-11.2 % of the RESP thread's time to 6.2 %.
        for op in &batch.ops {
            std::hint::black_box(self.slots.get(op.key()));
        }
        for op in batch.ops {
            let (key, slot) = match op {
                WriteOp::Put { key, value } => (key, Some(value)),
                WriteOp::Delete { key } => (key, None),
            };
            let added = slot.as_ref().map_or(0, Bytes::len);
            let key_len = key.len();
            match self.slots.entry(key) {
                hash_map::Entry::Occupied(mut entry) => {
                    let replaced = entry.insert(slot);
                    self.bytes -= replaced.as_ref().map_or(0, Bytes::len);
                    self.bytes += added;
                }
                hash_map::Entry::Vacant(entry) => {
                    self.order.insert(crate::engine::copy_key(entry.key()));
                    entry.insert(slot);
                    self.bytes += key_len + added + ENTRY_OVERHEAD_BYTES;
                }
            }
        }
    }

    /// What the memtable holds for `key`; `None`: nothing, ask the tables below.
    pub fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.slots.get(key)
    }

    /// Up to `limit` entries within `bounds`, deletes included, in key order.
    pub fn range(
        &self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Vec<(Vec<u8>, Slot)> {
        self.order
            .range::<[u8], _>(bounds)
            .take(limit)
            .map(|key| (key.to_vec(), self.slot(key).clone()))
            .collect()
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.order
            .iter()
            .map(|key| (key.as_slice(), self.slot(key)))
    }

    /// The slot of a key of the ordered set, which the hash map always holds too.
    fn slot(&self, key: &Key) -> &Slot {
        &self.slots[key]
    }

    /// Roughly the memory the entries take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many keys the memtable holds (deletes included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the memtable holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Empties the memtable, keeping its hash table's memory for the next one: a table new
    /// from the allocator costs the writer a page fault on each of its pages as keys land in
    /// them (4 % of the writer's time under `redis-benchmark -t set -P 16`).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_key_is_one_entry_and_its_bytes_follow_the_value() {
        let mut memtable = Memtable::default();
        let mut batch = WriteBatch::new();
        batch.put(b"k".as_slice(), vec![0u8; 100]);
        memtable.apply(batch);
        let after_one = memtable.bytes();
        let mut batch = WriteBatch::new();
        batch.put(b"k".as_slice(), vec![0u8; 10]);
        batch.delete(b"gone".as_slice());
        memtable.apply(batch);
        assert_eq!(memtable.len(), 2);
        assert_eq!(memtable.get(b"k"), Some(&Some(Bytes::from(vec![0u8; 10]))));
        assert_eq!(memtable.get(b"gone"), Some(&None));
        assert_eq!(memtable.get(b"other"), None);
        assert_eq!(
            memtable.bytes(),
            after_one - 90 + 4 + ENTRY_OVERHEAD_BYTES,
            "the smaller value and the delete's key are counted"
        );
    }

    #[test]
    fn entries_come_out_in_key_order_however_they_went_in() {
        let mut memtable = Memtable::default();
        let mut batch = WriteBatch::new();
        for key in [b"m".as_slice(), b"b", b"z", b"a", b"mm", b"b"] {
            batch.put(key, key.to_vec());
        }
        batch.delete(b"q".as_slice());
        memtable.apply(batch);
        let keys: Vec<&[u8]> = memtable.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"m", b"mm", b"q", b"z"]);
        let bounds = (
            Bound::Included(b"b".as_slice()),
            Bound::Excluded(b"z".as_slice()),
        );
        let ranged: Vec<Vec<u8>> = memtable
            .range(bounds, 3)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(ranged, [b"b".to_vec(), b"m".to_vec(), b"mm".to_vec()]);
        assert_eq!(memtable.range(bounds, 10)[3], (b"q".to_vec(), None));
    }

    #[test]
    fn a_sized_memtable_is_full_before_its_table_would_grow() {
        let mut memtable = Memtable::sized_for(64 * BUDGET_BYTES_PER_ENTRY);
        assert!(
            !memtable.lacks_room_for(1 << 20),
            "an empty one takes any batch"
        );
        let capacity = memtable.slots.capacity();
        assert!(capacity >= 64);
        let mut written = 0u32;
        while !memtable.lacks_room_for(1) {
            let mut batch = WriteBatch::new();
            batch.put(written.to_be_bytes().as_slice(), b"v".to_vec());
            memtable.apply(batch);
            written += 1;
        }
        assert_eq!(
            written as usize, capacity,
            "full exactly at the reserved capacity"
        );
        assert_eq!(memtable.slots.capacity(), capacity, "the table never grew");
        let mut rewrite = WriteBatch::new();
        rewrite.put(0u32.to_be_bytes().as_slice(), b"w".to_vec());
        memtable.apply(rewrite);
        assert_eq!(memtable.len(), capacity, "a rewrite adds no entry");
        memtable.clear();
        assert!(memtable.is_empty() && memtable.iter().next().is_none());
        assert_eq!((memtable.bytes(), memtable.slots.capacity()), (0, capacity));
        assert!(memtable.is_sized_for(64 * BUDGET_BYTES_PER_ENTRY));
        assert!(!Memtable::default().is_sized_for(64 * BUDGET_BYTES_PER_ENTRY));
    }
}
