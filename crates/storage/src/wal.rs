//! The write-ahead log of the lsm and memory engines: one frame per write batch, so a batch
//! is replayed whole or not at all, in numbered files (`log-N.wal`) that an engine deletes
//! once what they hold is stored elsewhere.
//!
//! Frame: `payload length (u32 LE) | CRC32C of payload (u32 LE) | payload`, where the payload
//! is a varint count of operations, each `tag (0 put, 1 delete) | key | value` with varint
//! lengths. A frame cut short, or the very last frame of the newest log failing its checksum,
//! is a torn append from a crash: it is dropped and the file truncated before it. Damage
//! anywhere else means acknowledged writes are unreadable, and is reported as corruption.

use crate::engine::{StorageError, WriteBatch, WriteOp};
use ringkv_core::codec::{put_bytes, put_varint, Reader};
use ringkv_core::limits::{KEY_BYTES_MAX, RECORD_BYTES_MAX};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest frame written or accepted: bounds what a corrupt length can make replay allocate.
pub const FRAME_BYTES_MAX: usize = 1 << 30;

/// Most operations one frame may hold.
const FRAME_OPS_MAX: usize = 1 << 20;

const HEADER_BYTES: usize = 8;
const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

/// Encodes `batch` as one frame.
pub fn encode_frame(batch: &WriteBatch) -> Result<Vec<u8>, StorageError> {
    // The header goes in front of a payload whose length is not known yet: reserve it and
    // fill it in after, so the frame is built in one buffer.
    let mut frame = Vec::with_capacity(HEADER_BYTES + 16 + batch_bytes(batch));
    frame.resize(HEADER_BYTES, 0);
    put_varint(&mut frame, batch.ops.len() as u64);
    for op in &batch.ops {
        match op {
            WriteOp::Put { key, value } => {
                frame.push(TAG_PUT);
                put_bytes(&mut frame, key);
                put_bytes(&mut frame, value);
            }
            WriteOp::Delete { key } => {
                frame.push(TAG_DELETE);
                put_bytes(&mut frame, key);
            }
        }
    }
    let payload_len = frame.len() - HEADER_BYTES;
    if payload_len > FRAME_BYTES_MAX || batch.ops.len() > FRAME_OPS_MAX {
        return Err(StorageError::Engine {
            engine: "log",
            message: format!("write batch of {payload_len} bytes is above the log frame limit"),
        });
    }
    let checksum = crc32c::crc32c(&frame[HEADER_BYTES..]);
    frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
    Ok(frame)
}

/// The key and value bytes of `batch`, plus a few bytes per operation for tags and lengths.
fn batch_bytes(batch: &WriteBatch) -> usize {
    batch
        .ops
        .iter()
        .map(|op| match op {
            WriteOp::Put { key, value } => key.len() + value.len() + 8,
            WriteOp::Delete { key } => key.len() + 4,
        })
        .sum()
}

/// The path of log `number` in `directory`.
pub fn log_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("log-{number:020}.wal"))
}

/// The number of a log file's name, if it is one.
pub fn log_number(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

/// The numbers of the logs in `directory`, oldest first.
pub fn list_logs(directory: &Path) -> Result<Vec<u64>, StorageError> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        if let Some(number) = log_number(&entry?.file_name().to_string_lossy()) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Creates log `number`, empty, and makes its name durable. A log of that number already
/// there is an error: its frames are never written over.
pub fn create_log(directory: &Path, number: u64) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(log_path(directory, number))?;
    sync_directory(directory)?;
    Ok(file)
}

/// Where a log made ahead of time waits for its number.
pub fn spare_path(directory: &Path) -> PathBuf {
    directory.join("next.wal.tmp")
}

/// Makes a log ahead of time: `bytes` zeros (synced as they are written, see
/// [`crate::background::PacedFile`]), durable, under [`spare_path`] until
/// [`install_log`] numbers it. Frames are written into it at their offsets, over the zeros;
/// [`crate::log_files`] says why and measures it.
pub fn prepare_log(directory: &Path, bytes: u64) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(spare_path(directory))?;
    let mut out = crate::background::PacedFile::new(file);
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    let file = out.into_inner();
    file.sync_all()?;
    Ok(file)
}

/// Numbers the log made by [`prepare_log`] as log `number`, durably.
pub fn install_log(directory: &Path, number: u64) -> Result<(), StorageError> {
    std::fs::rename(spare_path(directory), log_path(directory, number))?;
    sync_directory(directory)
}

/// Makes the names in `directory` (files created, renamed or removed) durable.
pub fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    File::open(directory)?.sync_all()?;
    Ok(())
}

/// Reads log `number` of `directory` and returns its batches and its valid length. A torn
/// tail (`is_newest` only) is cut off the file, so later appends follow the valid frames.
pub fn replay_file(directory: &Path, number: u64, is_newest: bool) -> Result<Replay, StorageError> {
    let path = log_path(directory, number);
    let bytes = std::fs::read(&path)?;
    let replay = replay(&bytes, is_newest, &path.display().to_string())?;
    if replay.torn_tail {
        tracing::warn!(log = %path.display(), at = replay.valid_bytes, "dropping torn last log record");
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(replay.valid_bytes)?;
        file.sync_all()?;
    }
    Ok(replay)
}

/// What replaying one log file found.
#[derive(Debug)]
pub struct Replay {
    /// The batches, in the order they were written.
    pub batches: Vec<WriteBatch>,
    /// Where the valid frames end; a torn tail starts here.
    pub valid_bytes: u64,
    /// Whether a torn tail was found after `valid_bytes`.
    pub torn_tail: bool,
}

/// Decodes every frame of a log file. `is_newest` says whether a torn tail is possible here:
/// only the newest log was being appended to when the process died.
///
/// A log may be longer than its frames: one made ahead of time (see [`prepare_log`]) is zeros
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
                let payload = &rest[HEADER_BYTES..frame_len];
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
            decode_payload(&rest[HEADER_BYTES..frame_len]).map_err(|message| {
                StorageError::Corruption(format!("log {name} at offset {offset}: {message}"))
            })?,
        );
        offset += frame_len;
    }
    Ok(Replay {
        batches,
        valid_bytes: offset as u64,
        torn_tail: false,
    })
}

/// How far the frame starting `rest` reaches within it: its whole length when its header
/// holds a plausible one, else its header.
fn extent(rest: &[u8]) -> usize {
    frame_length(rest).unwrap_or(HEADER_BYTES).min(rest.len())
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

/// The whole frame's length if its header is complete and its length plausible (a payload
/// holds at least its count of operations, so it is never empty).
fn frame_length(rest: &[u8]) -> Option<usize> {
    let header: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let payload_len = u32::from_le_bytes(header) as usize;
    (rest.len() >= HEADER_BYTES && (1..=FRAME_BYTES_MAX).contains(&payload_len))
        .then_some(HEADER_BYTES + payload_len)
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
        });
    }
    Err(StorageError::Corruption(format!(
        "log {name} damaged at offset {offset} ({what}); writes after it cannot be replayed. \
         Restore the file, or move it aside to start without those writes"
    )))
}

fn decode_payload(payload: &[u8]) -> Result<WriteBatch, String> {
    let mut reader = Reader::new(payload);
    let count = reader
        .bounded_varint("operations", FRAME_OPS_MAX)
        .map_err(|e| e.to_string())?;
    let mut batch = WriteBatch::new();
    for _ in 0..count {
        let tag = reader.u8().map_err(|e| e.to_string())?;
        let key = reader
            .bytes("key", KEY_BYTES_MAX * 2)
            .map_err(|e| e.to_string())?
            .into();
        match tag {
            TAG_PUT => {
                let value = reader
                    .bytes("value", RECORD_BYTES_MAX)
                    .map_err(|e| e.to_string())?;
                batch.ops.push(WriteOp::Put {
                    key,
                    value: bytes::Bytes::copy_from_slice(value),
                });
            }
            TAG_DELETE => batch.ops.push(WriteOp::Delete { key }),
            other => return Err(format!("unknown operation tag {other}")),
        }
    }
    reader.finish().map_err(|e| e.to_string())?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(key: &str) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(key.as_bytes(), b"value".as_slice());
        batch.delete(b"gone".as_slice());
        batch
    }

    fn log_of(keys: &[&str]) -> Vec<u8> {
        keys.iter()
            .flat_map(|k| encode_frame(&batch(k)).unwrap())
            .collect()
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
        let first_len = encode_frame(&batch("a")).unwrap().len();
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
        let first_len = encode_frame(&batch("a")).unwrap().len();
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
