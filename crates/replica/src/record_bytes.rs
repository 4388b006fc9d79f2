//! The bytes of a record the writer has just encoded, laid out for the two places that hold
//! them at once: the record cache and the engine's memtable.
//!
//! A `Bytes` made from a `Vec` keeps its reference count in a second allocation, made when it
//! is first cloned, away from the bytes. Every plain SET then allocates and frees two blocks
//! per record instead of one, and touches two cold cache lines of the record it replaces: the
//! count (to drop it) and the record's head (to read its context). With the count in the same
//! block as the bytes, in front of them, both are one line.

use bytes::Bytes;

/// Records up to this many bytes get the count beside them; longer ones keep the `Vec`'s
/// allocation, whose copy would cost more than the separate count does.
const INLINE_BYTES_MAX: usize = 496;

/// `bytes` as shared record bytes: copied, when short, into one block that also holds the
/// reference count.
pub fn shared(bytes: Vec<u8>) -> Bytes {
    // Buffer sizes such that buffer, length and count (16 bytes) fill one of the
    // allocator's size classes exactly (mimalloc's 64, 128, 192, 256, 384 and 512).
    match bytes.len() {
        0..=48 => inline::<48>(&bytes),
        49..=112 => inline::<112>(&bytes),
        113..=176 => inline::<176>(&bytes),
        177..=240 => inline::<240>(&bytes),
        241..=368 => inline::<368>(&bytes),
        369..=INLINE_BYTES_MAX => inline::<INLINE_BYTES_MAX>(&bytes),
        _ => Bytes::from(bytes),
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

    #[test]
    fn shared_bytes_hold_exactly_what_they_were_given_at_every_size() {
        for len in [
            0, 1, 48, 49, 112, 113, 150, 240, 241, 368, 369, 496, 497, 5000,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let shared = shared(bytes.clone());
            let cloned = shared.clone();
            drop(shared);
            assert_eq!(&cloned[..], &bytes[..], "length {len}");
        }
    }
}
