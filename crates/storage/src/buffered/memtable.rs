//! The memtables: the writes since the last flush, in key order, in memory.
//!
//! A `BTreeMap` rather than a skip list: the single writer needs no concurrent inserts, and a
//! key written again replaces its entry in place instead of adding a version, so a memtable
//! holds one entry per key however often the key is rewritten. Keys are held in the tree's
//! nodes themselves when short (as nearly all are): a search compares the keys of a node
//! without following a pointer from each to a separate allocation.

use crate::engine::{WriteBatch, WriteOp};
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::Bound;

/// A memtable key: inline up to 24 bytes, which holds ringkv's record keys of up to 21 bytes
/// (a 3-byte prefix and `key:000000012345`, or a UUID's 16 bytes).
type Key = SmallVec<[u8; 24]>;

/// What a memtable holds for a key: its value, or `None` for a delete, which must hide any
/// older value in the tables below.
pub type Slot = Option<Bytes>;

/// Bytes an entry costs beyond its key and value: its share of a tree node, the key's and
/// the value's headers.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// An ordered map of recent writes, with the bytes it holds.
#[derive(Default)]
pub struct Memtable {
    entries: BTreeMap<Key, Slot>,
    bytes: usize,
}

impl Memtable {
    /// Applies every change of `batch`, in order.
    pub fn apply(&mut self, batch: WriteBatch) {
        for op in batch.ops {
            let (key, slot) = match op {
                WriteOp::Put { key, value } => (key, Some(value)),
                WriteOp::Delete { key } => (key, None),
            };
            let added = slot.as_ref().map_or(0, Bytes::len);
            let key_len = key.len();
            // A short key moves into the tree's node; a long one keeps its allocation.
            match self.entries.insert(Key::from_vec(key), slot) {
                Some(replaced) => {
                    self.bytes -= replaced.as_ref().map_or(0, Bytes::len);
                    self.bytes += added;
                }
                None => self.bytes += key_len + added + ENTRY_OVERHEAD_BYTES,
            }
        }
    }

    /// What the memtable holds for `key`; `None`: nothing, ask the tables below.
    pub fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.entries.get(key)
    }

    /// Up to `limit` entries within `bounds`, deletes included, in key order.
    pub fn range(
        &self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Vec<(Vec<u8>, Slot)> {
        self.entries
            .range::<[u8], _>(bounds)
            .take(limit)
            .map(|(key, slot)| (key.to_vec(), slot.clone()))
            .collect()
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.entries
            .iter()
            .map(|(key, slot)| (key.as_slice(), slot))
    }

    /// Roughly the memory the entries take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many keys the memtable holds (deletes included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the memtable holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
}
