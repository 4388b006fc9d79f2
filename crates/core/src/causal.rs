//! Causal history: dots and version vectors.
//!
//! Every write a replica coordinates gets a [`Dot`]: the id of that replica and a counter it
//! never reuses for the key. A [`VersionVector`] summarises a set of dots — "everything replica
//! `r` issued up to counter `c`" — and is the causal context clients read and send back: a
//! write carrying a context supersedes every version that context covers.
//!
//! Entries are keyed by [`ReplicaId`], one per node data directory, so a context has at most
//! one entry per node that ever coordinated a write of the key (bounded by
//! [`CONTEXT_ENTRIES_MAX`]), never one per client.

use crate::codec::{put_varint, CodecError, Reader};
use crate::limits::CONTEXT_ENTRIES_MAX;
use std::fmt;

/// The identity a node stamps on the writes it coordinates: a random 64-bit id created with
/// its data directory. A node whose disk is wiped comes back with a new id, so its counters
/// can never collide with dots issued before the wipe.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u64);

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One event: the `counter`-th write replica `replica` coordinated for a key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Dot {
    /// Who coordinated the write.
    pub replica: ReplicaId,
    /// Strictly increasing per replica and key; never zero.
    pub counter: u64,
}

/// A map from replica to the highest counter seen from it. Invariant: entries are sorted by
/// replica, unique, and every counter is above zero (a missing entry means zero).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: Vec<(ReplicaId, u64)>,
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(r, c)| (r, c)))
            .finish()
    }
}

/// Why a causal context sent by a client was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// The token is not hexadecimal.
    #[error("causal context is not valid hex")]
    NotHex,
    /// The decoded bytes are not a version vector.
    #[error("causal context is malformed: {0}")]
    Malformed(#[from] CodecError),
    /// Entries are not sorted, repeated, or zero.
    #[error("causal context entries are not canonical")]
    NotCanonical,
}

impl VersionVector {
    /// The empty vector: a context that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `replica` (zero if none).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        match self.entries.binary_search_by_key(&replica, |(r, _)| *r) {
            Ok(index) => self.entries[index].1,
            Err(_) => 0,
        }
    }

    /// Whether this vector has seen `dot`.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.replica) >= dot.counter
    }

    /// Raises the entry of `replica` to at least `counter`.
    pub fn observe(&mut self, replica: ReplicaId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&replica, |(r, _)| *r) {
            Ok(index) => {
                let entry = &mut self.entries[index].1;
                *entry = (*entry).max(counter);
            }
            Err(index) => self.entries.insert(index, (replica, counter)),
        }
    }

    /// This vector cut to at most `entries_max` entries, or `None` if it holds no more
    /// already. Entries for which `keep` is true stay (a record keeps the entries of its
    /// siblings' dots, which its invariant needs); of the others, those with the lowest
    /// counters go first. Counters are hybrid-logical-clock timestamps, so those are the
    /// replicas whose last write of the key is oldest: Riak's rule of pruning the oldest
    /// entries of a vector clock.
    ///
    /// What pruning costs: a copy of the key that still holds a value written before a
    /// pruned entry's writes can no longer be told to be older, so it may come back as a
    /// sibling (or, under last-writer-wins, be weighed by its timestamp again). It happens
    /// only to keys written through more than `entries_max` distinct nodes.
    pub fn pruned(
        &self,
        entries_max: usize,
        keep: impl Fn(ReplicaId) -> bool,
    ) -> Option<VersionVector> {
        let excess = self
            .entries
            .len()
            .checked_sub(entries_max)
            .filter(|&n| n > 0)?;
        let mut prunable: Vec<(u64, ReplicaId)> = self
            .entries
            .iter()
            .filter(|(replica, _)| !keep(*replica))
            .map(|&(replica, counter)| (counter, replica))
            .collect();
        prunable.sort_unstable();
        let dropped: Vec<ReplicaId> = prunable.iter().take(excess).map(|&(_, r)| r).collect();
        let entries = self
            .entries
            .iter()
            .filter(|(replica, _)| !dropped.contains(replica))
            .copied()
            .collect();
        Some(VersionVector { entries })
    }

    /// Pointwise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for &(replica, counter) in &other.entries {
            self.observe(replica, counter);
        }
    }

    /// Whether this vector has seen everything `other` has (pointwise ≥).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|&(replica, counter)| self.get(replica) >= counter)
    }

    /// Whether neither vector descends the other.
    pub fn concurrent_with(&self, other: &VersionVector) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// How many replicas have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no replica has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// An upper bound on the length of the binary form, for sizing buffers.
    pub fn encoded_len_max(&self) -> usize {
        // A varint count, then per entry 8 bytes of replica id and a varint counter.
        10 + self.entries.len() * (8 + 10)
    }

    /// Appends the binary form: a count, then (replica u64 LE, counter varint) pairs.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(replica, counter) in &self.entries {
            out.extend_from_slice(&replica.0.to_le_bytes());
            put_varint(out, counter);
        }
    }

    /// Reads the binary form written by [`VersionVector::encode_into`], checking the invariant.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, ContextError> {
        let count = entry_count(reader)?;
        let mut entries = Vec::with_capacity(count);
        let mut last = None;
        for _ in 0..count {
            entries.push(read_entry(reader, &mut last)?);
        }
        Ok(Self { entries })
    }

    /// Reads past the binary form written by [`VersionVector::encode_into`], checking it as
    /// [`VersionVector::decode_from`] does but keeping nothing (no allocation).
    pub fn skip_from(reader: &mut Reader<'_>) -> Result<(), ContextError> {
        let mut last = None;
        for _ in 0..entry_count(reader)? {
            read_entry(reader, &mut last)?;
        }
        Ok(())
    }

    /// The opaque token clients carry: lowercase hex of the binary form.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + self.entries.len() * 12);
        self.encode_into(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses a token made by [`VersionVector::to_token`].
    pub fn from_token(token: &str) -> Result<Self, ContextError> {
        let token = token.trim();
        // Each entry is at most 8 + 10 bytes; refuse longer tokens before decoding.
        // Hex is ASCII: checked first, so slicing by bytes below stays on char boundaries.
        let well_formed = token.is_ascii() && token.len().is_multiple_of(2);
        if !well_formed || token.len() > 2 * (10 + CONTEXT_ENTRIES_MAX * 18) {
            return Err(ContextError::NotHex);
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| ContextError::NotHex))
            .collect::<Result<Vec<u8>, _>>()?;
        let mut reader = Reader::new(&bytes);
        let vector = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(vector)
    }
}

/// How many entries the context at the reader has: at most [`CONTEXT_ENTRIES_MAX`].
fn entry_count(reader: &mut Reader<'_>) -> Result<usize, ContextError> {
    Ok(reader.bounded_varint("context entries", CONTEXT_ENTRIES_MAX)?)
}

/// Reads one context entry, checking it against the one before (`last`, updated): replicas
/// strictly ascending, no zero counter.
fn read_entry(
    reader: &mut Reader<'_>,
    last: &mut Option<ReplicaId>,
) -> Result<(ReplicaId, u64), ContextError> {
    let replica = ReplicaId(reader.u64()?);
    let counter = reader.varint()?;
    if counter == 0 || last.is_some_and(|last| last >= replica) {
        return Err(ContextError::NotCanonical);
    }
    *last = Some(replica);
    Ok((replica, counter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vector(entries: &[(u64, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for &(r, c) in entries {
            v.observe(ReplicaId(r), c);
        }
        v
    }

    fn arbitrary_vector() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..20), 0..6).prop_map(|e| vector(&e))
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(
            a in arbitrary_vector(), b in arbitrary_vector(), c in arbitrary_vector()
        ) {
            let merged = |x: &VersionVector, y: &VersionVector| {
                let mut m = x.clone();
                m.merge(y);
                m
            };
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            prop_assert!(merged(&a, &b).descends(&a) && merged(&a, &b).descends(&b));
        }

        #[test]
        fn token_round_trips(a in arbitrary_vector()) {
            prop_assert_eq!(VersionVector::from_token(&a.to_token()).unwrap(), a);
        }

        #[test]
        fn any_token_text_is_refused_or_parsed_without_panic(s in "[0-9a-f]{0,80}") {
            let _ = VersionVector::from_token(&s);
        }

        #[test]
        fn any_text_at_all_is_refused_or_parsed_without_panic(s in "\\PC{0,40}") {
            let _ = VersionVector::from_token(&s);
        }
    }

    #[test]
    fn descends_is_pointwise() {
        let a = vector(&[(1, 2), (2, 1)]);
        let b = vector(&[(1, 1)]);
        assert!(a.descends(&b));
        assert!(!b.descends(&a));
        assert!(vector(&[(1, 1)]).concurrent_with(&vector(&[(2, 1)])));
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        // Two entries in descending replica order.
        let mut bytes = Vec::new();
        put_varint(&mut bytes, 2);
        for replica in [2u64, 1] {
            bytes.extend_from_slice(&replica.to_le_bytes());
            put_varint(&mut bytes, 1);
        }
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            VersionVector::from_token(&token),
            Err(ContextError::NotCanonical)
        );
        assert_eq!(VersionVector::from_token("zz"), Err(ContextError::NotHex));
        // A character of two bytes across a pair of hex digits.
        assert_eq!(VersionVector::from_token("aéb"), Err(ContextError::NotHex));
    }
}
