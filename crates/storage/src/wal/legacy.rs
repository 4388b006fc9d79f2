//! Replay of logs written before frames carried their log's number (see [`super`]). Such a
//! file was never written over as a later log: it ends at zeros (one made ahead of time) or
//! at the end of the file.

use super::{all_zero, damaged, decode_payload, Replay, FRAME_BYTES_MAX, LEGACY_HEADER_BYTES};
use crate::engine::{StorageError, WriteBatch};

/// Decodes every frame of a log file of the earlier format. `is_newest` says whether a torn tail is possible here:
/// only the newest log was being appended to when the process died.
///
/// A log may be longer than its frames: one made ahead of time (see [`super::prepare_log`]) is zeros
/// after them. A frame that fails (cut short, implausible length, checksum mismatch) is a torn
/// append only if nothing but zeros follows where it would end: an append writes one frame
/// and nothing after it. Anything else is damage.
pub fn replay(bytes: &[u8], is_newest: bool, name: &str) -> Result<Replay, StorageError> {
    let mut batches = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < 4 || rest[..4] == [0; 4] {
            // Zeros where a frame would start: the unused end of a log made ahead of time.
            if all_zero(rest) {
                break;
            }
        }
        let failure = match frame_length(rest) {
            None => Some("frame cut short or of impossible length"),
            Some(frame_len) if frame_len > rest.len() => Some("frame cut short"),
            Some(frame_len) => {
                let payload = &rest[LEGACY_HEADER_BYTES..frame_len];
                let stored = u32::from_le_bytes(rest[4..8].try_into().expect("header is 8 bytes"));
                (crc32c::crc32c(payload) != stored).then_some("checksum mismatch")
            }
        };
        if let Some(what) = failure {
            let torn = is_newest && all_zero(&bytes[offset + extent(rest)..]);
            return torn_or_corrupt(batches, offset, torn, name, what);
        }
        let frame_len = extent(rest);
        batches.push(
            decode_payload(&rest[LEGACY_HEADER_BYTES..frame_len]).map_err(|message| {
                StorageError::Corruption(format!("log {name} at offset {offset}: {message}"))
            })?,
        );
        offset += frame_len;
    }
    Ok(Replay {
        batches,
        valid_bytes: offset as u64,
        torn_tail: false,
        refused: 0,
    })
}

/// How far the frame starting `rest` reaches within it: its whole length when its header
/// holds a plausible one, else its header.
fn extent(rest: &[u8]) -> usize {
    frame_length(rest)
        .unwrap_or(LEGACY_HEADER_BYTES)
        .min(rest.len())
}

/// The whole frame's length if its header is complete and its length plausible (a payload
/// holds at least its count of operations, so it is never empty).
fn frame_length(rest: &[u8]) -> Option<usize> {
    let header: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let payload_len = u32::from_le_bytes(header) as usize;
    (rest.len() >= LEGACY_HEADER_BYTES && (1..=FRAME_BYTES_MAX).contains(&payload_len))
        .then_some(LEGACY_HEADER_BYTES + payload_len)
}

fn torn_or_corrupt(
    batches: Vec<WriteBatch>,
    offset: usize,
    torn: bool,
    name: &str,
    what: &str,
) -> Result<Replay, StorageError> {
    if torn {
        return Ok(Replay {
            batches,
            valid_bytes: offset as u64,
            torn_tail: true,
            refused: 0,
        });
    }
    Err(damaged(name, offset, what))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{encode_payload, LEGACY_HEADER_BYTES};
    use super::*;

    fn batch(key: &str) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(key.as_bytes(), b"value".as_slice());
        batch.delete(b"gone".as_slice());
        batch
    }

    /// A frame as the earlier format wrote it.
    fn encode_frame(batch: &WriteBatch) -> Vec<u8> {
        let mut frame = vec![0; LEGACY_HEADER_BYTES];
        encode_payload(batch, &mut frame);
        let payload_len = (frame.len() - LEGACY_HEADER_BYTES) as u32;
        let checksum = crc32c::crc32c(&frame[LEGACY_HEADER_BYTES..]);
        frame[..4].copy_from_slice(&payload_len.to_le_bytes());
        frame[4..LEGACY_HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
        frame
    }

    /// A log of the earlier format with a frame per key.
    pub fn log_of(keys: &[&str]) -> Vec<u8> {
        keys.iter().flat_map(|k| encode_frame(&batch(k))).collect()
    }
    #[test]
    fn frames_round_trip() {
        let replay = replay(&log_of(&["a", "b"]), true, "t").unwrap();
        assert_eq!(replay.batches, vec![batch("a"), batch("b")]);
        assert!(!replay.torn_tail);
    }

    #[test]
    fn every_truncation_of_the_last_frame_is_a_torn_tail() {
        let log = log_of(&["a", "b"]);
        let first_len = encode_frame(&batch("a")).len();
        for cut in first_len + 1..log.len() {
            let replay = replay(&log[..cut], true, "t").unwrap();
            assert_eq!(replay.batches, vec![batch("a")], "cut at {cut}");
            assert_eq!(replay.valid_bytes, first_len as u64);
            assert!(replay.torn_tail);
        }
    }

    #[test]
    fn a_damaged_last_frame_is_dropped_but_a_damaged_middle_frame_is_corruption() {
        let mut log = log_of(&["a", "b"]);
        let last = log.len() - 1;
        log[last] ^= 0x40;
        assert_eq!(replay(&log, true, "t").unwrap().batches, vec![batch("a")]);

        let mut log = log_of(&["a", "b"]);
        log[10] ^= 0x40;
        assert!(replay(&log, true, "t").unwrap_err().is_corruption());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_replay(bytes: Vec<u8>, newest: bool) {
            let _ = replay(&bytes, newest, "fuzz");
        }
    }

    #[test]
    fn zeros_after_the_frames_are_unused_space_in_any_log() {
        let mut log = log_of(&["a", "b"]);
        log.extend([0u8; 100]);
        for newest in [true, false] {
            let replay = replay(&log, newest, "t").unwrap();
            assert_eq!(replay.batches, vec![batch("a"), batch("b")]);
            assert!(!replay.torn_tail);
        }
    }

    #[test]
    fn a_torn_append_into_zeros_is_a_torn_tail_but_damage_before_frames_is_not() {
        let first_len = encode_frame(&batch("a")).len();
        let whole = log_of(&["a", "b"]);
        for cut in first_len + 1..whole.len() {
            let mut log = whole[..cut].to_vec();
            log.resize(whole.len() + 64, 0);
            let replay = replay(&log, true, "t").unwrap();
            assert_eq!(replay.batches, vec![batch("a")], "cut at {cut}");
            assert!(replay.torn_tail);
        }
        let mut log = log_of(&["a", "b", "c"]);
        log.extend([0u8; 64]);
        log[first_len + 10] ^= 0x40;
        assert!(replay(&log, true, "t").unwrap_err().is_corruption());
    }

    #[test]
    fn bytes_after_zeros_are_damage() {
        let mut log = log_of(&["a"]);
        log.extend([0u8; 16]);
        log.push(7);
        assert!(replay(&log, false, "t").unwrap_err().is_corruption());
        assert!(replay(&log, true, "t").unwrap_err().is_corruption());
    }

    #[test]
    fn an_older_log_may_not_have_a_torn_tail() {
        let log = log_of(&["a", "b"]);
        assert!(replay(&log[..log.len() - 2], false, "t")
            .unwrap_err()
            .is_corruption());
    }
}
