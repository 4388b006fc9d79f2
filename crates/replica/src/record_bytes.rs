//! The bytes of a record the writer has just encoded, laid out for the two places that hold
//! them at once: the record cache and the engine's memtable.
//!
//! A `Bytes` made from a `Vec` keeps its reference count in a second allocation, made when it
//! is first cloned, away from the bytes. Every plain SET then allocates and frees two blocks
//! per record instead of one, and touches two cold cache lines of the record it replaces: the
//! count (to drop it) and the record's head (to read its context). With the count in the same
//! block as the bytes, in front of them, both are one line.

use crate::cache::StoredRecord;
use bytes::Bytes;
use ringkv_core::causal::ReplicaId;
use ringkv_core::hlc::Timestamp;
use ringkv_core::record::{MutationView, Record, Replaced};
use std::cell::RefCell;

/// Records up to this many bytes get the count beside them; longer ones keep the `Vec`'s
/// allocation, whose copy would cost more than the separate count does.
const INLINE_BYTES_MAX: usize = 496;

thread_local! {
    /// What [`encode`] encodes into: the bytes of a short record are copied out, so one
    /// buffer per thread serves every record instead of one allocated and freed per record.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The record that `encode` writes into an empty buffer, as shared record bytes, and what
/// `encode` returned.
pub fn encode<T>(encode: impl FnOnce(&mut Vec<u8>) -> T) -> (Bytes, T) {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        let made = encode(scratch);
        let bytes = if scratch.len() <= INLINE_BYTES_MAX {
            copied(scratch)
        } else {
            Bytes::from(std::mem::take(scratch))
        };
        (bytes, made)
    })
}

/// A plain SET's new record ([`Record::encode_replacement`]) as the cache and the engine keep
/// it, and when it dies ([`Record::next_dead_ms`]).
pub fn encode_replacement(
    replacing: Option<Replaced>,
    mutation: MutationView<'_>,
    replica: ReplicaId,
    timestamp: Timestamp,
) -> (StoredRecord, Option<u64>) {
    let (bytes, (point, next_dead_ms)) =
        encode(|out| Record::encode_replacement_into(out, replacing, mutation, replica, timestamp));
    (StoredRecord { bytes, point }, next_dead_ms)
}

/// `bytes` as shared record bytes: copied, when short, into one block that also holds the
/// reference count.
pub fn shared(bytes: Vec<u8>) -> Bytes {
    if bytes.len() <= INLINE_BYTES_MAX {
        copied(&bytes)
    } else {
        Bytes::from(bytes)
    }
}

/// A copy of `bytes` (at most [`INLINE_BYTES_MAX`]) in one block with its count.
fn copied(bytes: &[u8]) -> Bytes {
    // Buffer sizes such that buffer, length and count (16 bytes) fill one of the
    // allocator's size classes exactly (mimalloc's 64, 128, 192, 256, 384 and 512).
    match bytes.len() {
        0..=48 => inline::<48>(bytes),
        49..=112 => inline::<112>(bytes),
        113..=176 => inline::<176>(bytes),
        177..=240 => inline::<240>(bytes),
        241..=368 => inline::<368>(bytes),
        _ => inline::<INLINE_BYTES_MAX>(bytes),
    }
}

/// `bytes` (at most `N`) in a buffer that `Bytes` holds in one block with its count.
fn inline<const N: usize>(bytes: &[u8]) -> Bytes {
    let mut buffer = Inline {
        len: bytes.len(),
        bytes: [0; N],
    };
    buffer.bytes[..bytes.len()].copy_from_slice(bytes);
    Bytes::from_owner(buffer)
}

/// A record's bytes in a buffer of fixed size.
struct Inline<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTHS: [usize; 14] = [
        0, 1, 48, 49, 112, 113, 150, 240, 241, 368, 369, 496, 497, 5000,
    ];

    fn bytes_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + len) as u8).collect()
    }

    #[test]
    fn shared_bytes_hold_exactly_what_they_were_given_at_every_size() {
        for len in LENGTHS {
            let bytes = bytes_of(len);
            let shared = shared(bytes.clone());
            let cloned = shared.clone();
            drop(shared);
            assert_eq!(&cloned[..], &bytes[..], "length {len}");
        }
    }

    #[test]
    fn encoded_bytes_hold_exactly_what_was_encoded_whatever_came_before() {
        // Longest first, so that each shorter record is encoded where a longer one was.
        for len in LENGTHS.into_iter().rev() {
            let bytes = bytes_of(len);
            let (encoded, made) = encode(|out| {
                assert!(out.is_empty(), "the buffer starts empty");
                out.extend_from_slice(&bytes);
                len
            });
            assert_eq!((&encoded[..], made), (&bytes[..], len), "length {len}");
        }
    }
}
