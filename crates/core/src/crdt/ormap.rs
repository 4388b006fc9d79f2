//! An add-wins observed-remove map (the ORSWOT of Bieniusa et al. with a value per key, as
//! Riak's `riak_dt` map has it): each key present is kept by the dots of the writes that put
//! it there, and one version vector, the context, summarises every write the state has seen.
//! Removing a key drops its dots; the context still covers them, so a merge with a replica
//! that has not seen the remove drops them there too. A write concurrent with a remove
//! carries a dot the remover had not seen, so the key stays: writes win. No tombstone per key
//! is kept: the metadata is the context (one entry per replica that ever wrote) and, per
//! key, the dots of the replicas whose writes of it were concurrent (one, once merged).
//!
//! Each key's value is itself a state that merges by its own law ([`Lattice`]): where both
//! sides keep a key, their values merge; where one side alone keeps it, its value stays.

use super::StateError;
use crate::causal::{Dot, ReplicaId, VersionVector};
use crate::codec::{put_bytes, put_varint, Reader};
use crate::limits::VALUE_BYTES_MAX;
use std::collections::BTreeMap;

/// Most dots one key may carry: one per replica that wrote it concurrently.
const DOTS_PER_ELEMENT_MAX: usize = 1024;

/// A state that merges by a law (commutative, associative, idempotent), with a binary form.
pub trait Lattice: Clone + PartialEq + std::fmt::Debug {
    /// Takes in everything `other` holds.
    fn merge(&mut self, other: &Self);
    /// Appends the binary form.
    fn encode_into(&self, out: &mut Vec<u8>);
    /// Reads the binary form, checking its invariants.
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError>;
}

/// Presence alone: the value of a set's elements.
impl Lattice for () {
    fn merge(&mut self, _: &Self) {}
    fn encode_into(&self, _: &mut Vec<u8>) {}
    fn decode_from(_: &mut Reader<'_>) -> Result<Self, StateError> {
        Ok(())
    }
}

/// The writes keeping one key: each one's dot and the value it wrote, sorted by dot.
type Writes<V> = Vec<(Dot, V)>;

/// An observed-remove map of byte strings to values of `V`.
#[derive(Clone, Debug, PartialEq)]
pub struct OrMap<V> {
    /// Every write seen.
    context: VersionVector,
    /// Each key present, with the writes that keep it: each write's dot and the value it
    /// wrote (sorted by dot, never empty). A key's value is the merge of those values, so a
    /// write's value leaves with its dot when a remove that saw the write is merged in.
    entries: BTreeMap<Vec<u8>, Writes<V>>,
}

impl<V> Default for OrMap<V> {
    fn default() -> Self {
        Self {
            context: VersionVector::new(),
            entries: BTreeMap::new(),
        }
    }
}

impl<V: Lattice> OrMap<V> {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if present: the merge of the values of the writes keeping it.
    pub fn get(&self, key: &[u8]) -> Option<V> {
        self.entries.get(key).map(|writes| merged_value(writes))
    }

    /// The keys present, in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.keys().map(Vec::as_slice)
    }

    /// The keys present with their values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], V)> {
        self.entries
            .iter()
            .map(|(key, writes)| (key.as_slice(), merged_value(writes)))
    }

    /// Writes `key` as an operation of `replica`: its value becomes `value`, and the write's
    /// dot replaces the key's writes this state holds (it has seen them). Returns whether
    /// the key was absent.
    pub fn insert(&mut self, replica: ReplicaId, key: &[u8], value: V) -> bool {
        self.insert_after(replica, 0, key, value)
    }

    /// [`OrMap::insert`] with a dot counter of at least `floor`. Given the writer's hybrid
    /// clock, dots stay unique across a key's lifetimes: a state built after a delete must
    /// not reuse dots that an older state, still concurrent somewhere, has seen and dropped.
    pub fn insert_after(&mut self, replica: ReplicaId, floor: u64, key: &[u8], value: V) -> bool {
        let dot = Dot {
            replica,
            counter: (self.context.get(replica) + 1).max(floor),
        };
        self.context.observe(replica, dot.counter);
        self.entries
            .insert(key.to_vec(), vec![(dot, value)])
            .is_none()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// How many keys are present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `key`; whether it was present. Its dots stay covered by the context.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Takes in everything `other` has seen: a write keeping a key stays if both sides hold
    /// it, or one does and the other has not seen it.
    pub fn merge(&mut self, other: &OrMap<V>) {
        let mut merged = BTreeMap::new();
        let keys: std::collections::BTreeSet<&Vec<u8>> =
            self.entries.keys().chain(other.entries.keys()).collect();
        for key in keys {
            let ours = self.entries.get(key).map_or(&[][..], Vec::as_slice);
            let theirs = other.entries.get(key).map_or(&[][..], Vec::as_slice);
            let held = |writes: &[(Dot, V)], dot: Dot| writes.iter().any(|(d, _)| *d == dot);
            let mut kept: Vec<(Dot, V)> = ours
                .iter()
                .filter(|(dot, _)| held(theirs, *dot) || !other.context.covers(*dot))
                .chain(
                    theirs
                        .iter()
                        .filter(|(dot, _)| !held(ours, *dot) && !self.context.covers(*dot)),
                )
                .cloned()
                .collect();
            kept.sort_by_key(|(dot, _)| *dot);
            if !kept.is_empty() {
                merged.insert(key.clone(), kept);
            }
        }
        self.entries = merged;
        self.context.merge(&other.context);
    }

    /// The dots of the state's metadata: the context's entries and every element's dots.
    pub fn metadata_entries(&self) -> usize {
        self.context.len() + self.entries.values().map(Vec::len).sum::<usize>()
    }

    /// Appends the binary form: the context, a count, then per key its bytes and its writes'
    /// dots, each with its value.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.context.encode_into(out);
        put_varint(out, self.entries.len() as u64);
        for (key, writes) in &self.entries {
            put_bytes(out, key);
            put_varint(out, writes.len() as u64);
            for (dot, value) in writes {
                out.extend_from_slice(&dot.replica.0.to_le_bytes());
                put_varint(out, dot.counter);
                value.encode_into(out);
            }
        }
    }

    /// Reads the binary form, checking its invariants: keys in order, dots sorted, each seen
    /// by the context.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        let context = VersionVector::decode_from(reader)
            .map_err(|_| StateError::Invalid("malformed context"))?;
        let count = reader.bounded_varint("set elements", VALUE_BYTES_MAX)?;
        // Collected in order, then built in one pass: inserting one key at a time searched
        // the tree for each (a third of a small SADD's time, in a profile).
        let mut entries: Vec<(Vec<u8>, Writes<V>)> = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let element = reader.bytes("set element", VALUE_BYTES_MAX)?.to_vec();
            if entries.last().is_some_and(|(last, _)| *last >= element) {
                return Err(StateError::Invalid("set elements out of order"));
            }
            let dots_count = reader.bounded_varint("element dots", DOTS_PER_ELEMENT_MAX)?;
            if dots_count == 0 {
                return Err(StateError::Invalid("an element without dots"));
            }
            let mut writes: Writes<V> = Vec::with_capacity(dots_count);
            for _ in 0..dots_count {
                let dot = Dot {
                    replica: ReplicaId(reader.u64()?),
                    counter: reader.varint()?,
                };
                if writes.last().is_some_and(|(last, _)| *last >= dot) || !context.covers(dot) {
                    return Err(StateError::Invalid("element dots out of order or unseen"));
                }
                writes.push((dot, V::decode_from(reader)?));
            }
            entries.push((element, writes));
        }
        let entries = BTreeMap::from_iter(entries);
        Ok(Self { context, entries })
    }
}

/// The merge of the values of a key's writes.
fn merged_value<V: Lattice>(writes: &[(Dot, V)]) -> V {
    let mut value = writes[0].1.clone();
    for (_, other) in &writes[1..] {
        value.merge(other);
    }
    value
}
