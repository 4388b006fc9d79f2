//! The write-ahead log of the lsm and memory engines: one frame per write batch, so a batch
//! is replayed whole or not at all, in numbered files (`log-N.wal`) that an engine retires
//! once what they hold is stored elsewhere (see [`crate::log_files`]: a retired file is
//! written over as a later log, or deleted).
//!
//! Frame: `payload length | 1 << 31 (u32 LE) | CRC32C of payload and log number (u32 LE) |
//! log number (u64 LE) | payload`, where the payload is a varint count of operations, each
//! `tag (0 put, 1 delete) | key | value` with varint lengths. Every write puts an end mark
//! (zeros the size of a header) after its frame, which the next frame writes over.
//!
//! Why the log number and the end mark: a file written over as a later log still holds the
//! frames of its earlier life after the new ones, whole and with good checksums. The end mark
//! says where the new frames stop, and the number tells a frame of this log from an old one
//! (the numbers only grow, so an old frame never has this log's).
//!
//! Replay stops at an end mark, a frame of another log, or the end of the file. A frame that
//! fails (cut short, impossible length, checksum mismatch) is a torn append from a crash if
//! it is in the newest log and no frame of this log follows it anywhere in the file: it is
//! dropped and the file cut before it. A failure anywhere else, or an end with a frame of
//! this log after it, means acknowledged writes are unreadable, and is reported as corruption.
//!
//! Logs written before the log number was added (frames `length | CRC32C | payload`, bit 31
//! of the length clear, files never written over) are still replayed: such a file ends at
//! zeros, and a failed frame is torn only if nothing but zeros follows it.

use crate::engine::{StorageError, WriteBatch, WriteOp};
use ringkv_core::codec::{put_bytes, put_varint, Reader};
use ringkv_core::limits::{ENGINE_KEY_BYTES_MAX, RECORD_BYTES_MAX, STORED_KEY_BYTES_READ_MAX};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

mod legacy;

/// Largest frame written or accepted: bounds what a corrupt length can make replay allocate.
pub const FRAME_BYTES_MAX: usize = 1 << 30;

/// Most operations one frame may hold.
const FRAME_OPS_MAX: usize = 1 << 20;

/// Header of a frame: length with [`NUMBERED`] set, checksum, log number.
const HEADER_BYTES: usize = 16;
/// Set in a frame's length field: the frame carries its log's number.
const NUMBERED: u32 = 1 << 31;
/// Zeros written after every frame; a length field of zero ends the log.
const END_MARK_BYTES: usize = HEADER_BYTES;
/// Header of a frame written before log numbers: length, checksum.
const LEGACY_HEADER_BYTES: usize = 8;
const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

/// A batch encoded as a frame, with the end mark after it, waiting for the number of the
/// log it goes into ([`Frame::stamped`]): which log that is may change while the writer
/// waits for the log's lock.
pub struct Frame {
    bytes: Vec<u8>,
    payload_crc: u32,
}

impl Frame {
    /// Bytes of the frame in the log, end mark not counted: where the next frame starts.
    pub fn frame_bytes(&self) -> usize {
        self.bytes.len() - END_MARK_BYTES
    }

    /// Bytes a write of the frame covers: the frame and its end mark.
    pub fn write_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The frame for log `number`, its end mark after it: what is written.
    pub fn stamped(&mut self, number: u64) -> &[u8] {
        let number = number.to_le_bytes();
        let checksum = crc32c::crc32c_append(self.payload_crc, &number);
        self.bytes[4..8].copy_from_slice(&checksum.to_le_bytes());
        self.bytes[8..HEADER_BYTES].copy_from_slice(&number);
        &self.bytes
    }
}

/// Encodes `batch` as one frame.
pub fn encode_frame(batch: &WriteBatch) -> Result<Frame, StorageError> {
    // A key the tables cannot take must never reach the log: its replay would fail every
    // restart.
    batch.check_keys()?;
    encode_any_frame(batch)
}

/// [`encode_frame`] without the check of its keys: what an earlier build could write.
fn encode_any_frame(batch: &WriteBatch) -> Result<Frame, StorageError> {
    // The header goes in front of a payload whose length is not known yet: reserve it and
    // fill it in after, so the frame is built in one buffer.
    let capacity = HEADER_BYTES + 16 + batch_bytes(batch) + END_MARK_BYTES;
    let mut bytes = Vec::with_capacity(capacity);
    bytes.resize(HEADER_BYTES, 0);
    encode_payload(batch, &mut bytes);
    let payload_len = bytes.len() - HEADER_BYTES;
    if payload_len > FRAME_BYTES_MAX || batch.ops.len() > FRAME_OPS_MAX {
        return Err(StorageError::Engine {
            engine: "log",
            message: format!("write batch of {payload_len} bytes is above the log frame limit"),
        });
    }
    let payload_crc = crc32c::crc32c(&bytes[HEADER_BYTES..]);
    bytes[..4].copy_from_slice(&(payload_len as u32 | NUMBERED).to_le_bytes());
    bytes.resize(bytes.len() + END_MARK_BYTES, 0);
    Ok(Frame { bytes, payload_crc })
}

fn encode_payload(batch: &WriteBatch, out: &mut Vec<u8>) {
    put_varint(out, batch.ops.len() as u64);
    for op in &batch.ops {
        match op {
            WriteOp::Put { key, value } => {
                out.push(TAG_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            WriteOp::Delete { key } => {
                out.push(TAG_DELETE);
                put_bytes(out, key);
            }
        }
    }
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

/// Where a log made ahead of time waits for its number, once it is ready: a file is there
/// only then (see [`crate::log_files`]).
pub fn spare_path(directory: &Path) -> PathBuf {
    directory.join("next.wal.tmp")
}

/// Where a log made ahead of time is made, before it is ready.
pub fn unfinished_spare_path(directory: &Path) -> PathBuf {
    directory.join("next.wal.unfinished")
}

/// Makes a log ahead of time: `bytes` zeros (synced as they are written, see
/// [`crate::background::PacedFile`]), durable, at [`unfinished_spare_path`], for the caller
/// to move to [`spare_path`]. Frames are written into it at their offsets, over the zeros;
/// [`crate::log_files`] says why and measures it.
pub fn prepare_log(directory: &Path, bytes: u64) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(unfinished_spare_path(directory))?;
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

/// Numbers the log waiting at [`spare_path`] as log `number`, durably.
pub fn install_log(directory: &Path, number: u64) -> Result<(), StorageError> {
    std::fs::rename(spare_path(directory), log_path(directory, number))?;
    sync_directory(directory)
}

/// Makes the names in `directory` (files created, renamed or removed) durable.
pub fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    File::open(directory)?.sync_all()?;
    Ok(())
}

/// Where retired log `number` waits to be written over as a later log (see
/// [`crate::log_files`]). Not a log's name, so a restart does not replay it.
pub fn recycled_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("recycled-{number:020}.wal.tmp"))
}

/// Whether `name` is that of a retired log waiting to be written over.
pub fn is_recycled_name(name: &str) -> bool {
    name.starts_with("recycled-") && name.ends_with(".wal.tmp")
}

/// Whether `file`, a log, may be written over as a later log: it holds numbered frames, or
/// none. A log of the earlier format could hold frames a later log would take for its own.
pub fn holds_only_numbered_frames(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 4];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) => {
            let field = u32::from_le_bytes(header);
            Ok(field == 0 || field & NUMBERED != 0)
        }
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// Opens retired log `recycled` to be made the next log file, written over, and asks the
/// kernel to read it into memory ahead, so that a frame which ends in the middle of a page
/// does not wait for the disk to read the rest of that page.
pub fn reuse_log(recycled: &Path) -> Result<File, StorageError> {
    let file = OpenOptions::new().read(true).write(true).open(recycled)?;
    // Advice only: without it the writes are correct, and only slower.
    if let Err(error) = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::WillNeed) {
        tracing::debug!(%error, "could not ask for a log file to be read ahead");
    }
    Ok(file)
}

/// Reads log `number` of `directory` and returns its batches and its valid length. A torn
/// tail (`is_newest` only) is cut off the file, so later appends follow the valid frames.
pub fn replay_file(directory: &Path, number: u64, is_newest: bool) -> Result<Replay, StorageError> {
    let path = log_path(directory, number);
    let bytes = std::fs::read(&path)?;
    let mut replay = replay(&bytes, number, is_newest, &path.display().to_string())?;
    replay.refused = refuse_overlong_keys(&mut replay.batches, &path);
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
    /// Changes left out of `batches` because their keys are longer than an engine stores
    /// (an earlier build let them into its log).
    pub refused: u64,
}

/// Takes every change whose key no engine stores out of `batches`, each with a logged error,
/// and returns how many: a log that holds one must not stop a node from starting. Only that
/// change is dropped, not its batch, whose other changes were acknowledged to their clients.
fn refuse_overlong_keys(batches: &mut [WriteBatch], path: &Path) -> u64 {
    let mut refused = 0;
    for batch in batches {
        batch.ops.retain(|op| {
            let len = op.key().len();
            let fits = len <= ENGINE_KEY_BYTES_MAX;
            if !fits {
                refused += 1;
                tracing::error!(
                    log = %path.display(),
                    key_bytes = len,
                    key_start = %String::from_utf8_lossy(&op.key()[..len.min(64)]),
                    "log holds a change to a key longer than {ENGINE_KEY_BYTES_MAX} bytes, \
                     which no engine stores: the change is dropped, the rest replayed"
                );
            }
            fits
        });
    }
    refused
}

/// Decodes every frame of log `number`, a file's `bytes`. `is_newest` says whether a torn
/// tail is possible here: only the newest log was being appended to when the process died.
/// The module's documentation gives the rules.
pub fn replay(
    bytes: &[u8],
    number: u64,
    is_newest: bool,
    name: &str,
) -> Result<Replay, StorageError> {
    let numbered = bytes.get(..4).is_some_and(|field| {
        u32::from_le_bytes(field.try_into().expect("4 bytes")) & NUMBERED != 0
    });
    if !numbered {
        return legacy::replay(bytes, is_newest, name);
    }
    let mut batches = Vec::new();
    let mut offset = 0usize;
    let failure = loop {
        let rest = &bytes[offset..];
        if rest.is_empty() {
            break None;
        }
        match read_frame(rest, number) {
            Read::Frame { payload, len } => {
                batches.push(decode_payload(payload).map_err(|message| {
                    StorageError::Corruption(format!("log {name} at offset {offset}: {message}"))
                })?);
                offset += len;
            }
            Read::End => break None,
            Read::Failed(what) => break Some(what),
        }
    };
    if let Some(later) = frame_of_log_from(bytes, offset, number) {
        let what = failure.unwrap_or("frames end");
        return Err(damaged(
            name,
            offset,
            &format!("{what}, yet a frame of this log follows at offset {later}"),
        ));
    }
    match failure {
        Some(what) if !is_newest => Err(damaged(name, offset, what)),
        failure => Ok(Replay {
            refused: 0,
            batches,
            valid_bytes: offset as u64,
            torn_tail: failure.is_some(),
        }),
    }
}

/// What starts a log's remaining bytes.
enum Read<'a> {
    /// A frame of this log: its payload, and its length with the header.
    Frame { payload: &'a [u8], len: usize },
    /// The end of this log's frames: an end mark, or a frame of an earlier log that was
    /// written into the same file.
    End,
    /// Bytes that are no frame: a torn append, or damage.
    Failed(&'static str),
}

fn read_frame(rest: &[u8], number: u64) -> Read<'_> {
    let Some(header) = rest.get(..HEADER_BYTES) else {
        return if all_zero(rest) {
            Read::End
        } else {
            Read::Failed("frame cut short")
        };
    };
    let field = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    if field == 0 {
        return Read::End;
    }
    let payload_len = (field & !NUMBERED) as usize;
    if field & NUMBERED == 0 || payload_len == 0 || payload_len > FRAME_BYTES_MAX {
        return Read::Failed("not a frame header");
    }
    let len = HEADER_BYTES + payload_len;
    let stored_number = &header[8..];
    let this_log = number.to_le_bytes();
    let checksum_with =
        |payload: &[u8], number: &[u8]| crc32c::crc32c_append(crc32c::crc32c(payload), number);
    let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if stored_number != this_log {
        // A frame of an earlier life of the file, unless its checksum says it was written
        // as this log's: then its number was damaged.
        let damaged = rest
            .get(HEADER_BYTES..len)
            .is_some_and(|payload| checksum_with(payload, &this_log) == stored);
        return if damaged {
            Read::Failed("log number damaged")
        } else {
            Read::End
        };
    }
    let Some(payload) = rest.get(HEADER_BYTES..len) else {
        return Read::Failed("frame cut short");
    };
    if checksum_with(payload, stored_number) != stored {
        return Read::Failed("checksum mismatch");
    }
    Read::Frame { payload, len }
}

/// Where the first whole frame of log `number` at or after `from` starts, if any: found by
/// its number, so a log file is scanned once, not tried at every offset.
fn frame_of_log_from(bytes: &[u8], from: usize, number: u64) -> Option<usize> {
    let numbers_from = from + (HEADER_BYTES - 8);
    let haystack = bytes.get(numbers_from..)?;
    memchr::memmem::find_iter(haystack, &number.to_le_bytes())
        .map(|at| from + at)
        .find(|&start| matches!(read_frame(&bytes[start..], number), Read::Frame { .. }))
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

fn damaged(name: &str, offset: usize, what: &str) -> StorageError {
    StorageError::Corruption(format!(
        "log {name} damaged at offset {offset} ({what}); writes after it cannot be replayed. \
         Restore the file, or move it aside to start without those writes"
    ))
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
            .bytes("key", STORED_KEY_BYTES_READ_MAX)
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

    fn batches(keys: &[&str]) -> Vec<WriteBatch> {
        keys.iter().map(|key| batch(key)).collect()
    }

    /// Log `number` as its writes leave it: each frame written with its end mark, over the
    /// mark of the frame before.
    fn log_of(number: u64, keys: &[&str]) -> Vec<u8> {
        let mut log = Vec::new();
        for key in keys {
            let mut frame = encode_frame(&batch(key)).unwrap();
            let start = log.len() - log.len().min(END_MARK_BYTES);
            log.truncate(start);
            log.extend_from_slice(frame.stamped(number));
        }
        log
    }

    fn frame_len(key: &str) -> usize {
        encode_frame(&batch(key)).unwrap().frame_bytes()
    }

    /// `old` with `new` written over its start: a log file written over as a later log.
    fn written_over(old: &[u8], new: &[u8]) -> Vec<u8> {
        let mut file = old.to_vec();
        file[..new.len()].copy_from_slice(new);
        file
    }

    fn old_log() -> Vec<u8> {
        let keys: Vec<String> = (0..20).map(|i| format!("old-{i}")).collect();
        log_of(3, &keys.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn changes_to_keys_no_engine_stores_are_refused_one_by_one_at_replay() {
        // A log as an earlier build could leave it: a batch that holds a key one byte over
        // the engine limit beside a change acknowledged to another client.
        let directory = tempfile::tempdir().unwrap();
        let too_long = vec![b'k'; ENGINE_KEY_BYTES_MAX + 1];
        let mut poisoned = batch("before");
        poisoned.put(too_long.as_slice(), b"v".as_slice());
        poisoned.put(b"neighbour".as_slice(), b"v".as_slice());
        assert!(matches!(
            encode_frame(&poisoned),
            Err(StorageError::KeyTooLong { .. })
        ));
        let mut log = Vec::new();
        for batch in [batch("first"), poisoned.clone(), batch("last")] {
            let mut frame = encode_any_frame(&batch).unwrap();
            log.truncate(log.len() - log.len().min(END_MARK_BYTES));
            log.extend_from_slice(frame.stamped(1));
        }
        std::fs::write(log_path(directory.path(), 1), &log).unwrap();

        let replay = replay_file(directory.path(), 1, true).unwrap();
        assert_eq!(replay.refused, 1);
        poisoned.ops.remove(2);
        assert_eq!(
            replay.batches,
            vec![batch("first"), poisoned, batch("last")]
        );
    }

    #[test]
    fn frames_round_trip_and_end_at_the_end_mark() {
        let log = log_of(7, &["a", "b"]);
        let replay = replay(&log, 7, true, "t").unwrap();
        assert_eq!(replay.batches, batches(&["a", "b"]));
        assert_eq!(replay.valid_bytes as usize, frame_len("a") + frame_len("b"));
        assert_eq!(log.len(), replay.valid_bytes as usize + END_MARK_BYTES);
        assert!(!replay.torn_tail);
    }

    #[test]
    fn a_frame_is_read_only_as_part_of_the_log_whose_number_it_carries() {
        let log = log_of(7, &["a", "b"]);
        for newest in [true, false] {
            let replay = replay(&log, 8, newest, "t").unwrap();
            assert!(replay.batches.is_empty());
            assert_eq!(replay.valid_bytes, 0);
        }
    }

    #[test]
    fn a_log_written_over_an_older_one_reads_only_its_own_frames() {
        let old = old_log();
        let file = written_over(&old, &log_of(9, &["a", "b"]));
        for newest in [true, false] {
            let replay = replay(&file, 9, newest, "t").unwrap();
            assert_eq!(replay.batches, batches(&["a", "b"]));
            assert!(!replay.torn_tail);
            // Before any frame of its own, it reads as empty.
            let replay = super::replay(&old, 9, newest, "t").unwrap();
            assert!(replay.batches.is_empty());
            assert!(!replay.torn_tail);
        }
    }

    #[test]
    fn every_truncation_of_the_last_frame_is_a_torn_tail() {
        let log = log_of(7, &["a", "b"]);
        let first = frame_len("a");
        for cut in first + 1..first + frame_len("b") {
            let replay = replay(&log[..cut], 7, true, "t").unwrap();
            assert_eq!(replay.batches, batches(&["a"]), "cut at {cut}");
            assert_eq!(replay.valid_bytes, first as u64);
            assert!(replay.torn_tail);
            assert!(super::replay(&log[..cut], 7, false, "t")
                .unwrap_err()
                .is_corruption());
        }
    }

    #[test]
    fn an_append_torn_over_an_older_log_is_dropped_from_the_newest_log() {
        let old = old_log();
        let first_written = written_over(&old, &log_of(9, &["a"]));
        let both = log_of(9, &["a", "b"]);
        let first = frame_len("a");
        for cut in first + 1..first + frame_len("b") {
            let file = written_over(&first_written, &both[..cut]);
            let replay = replay(&file, 9, true, "t").unwrap();
            assert_eq!(replay.batches, batches(&["a"]), "cut at {cut}");
            assert_eq!(replay.valid_bytes, first as u64, "cut at {cut}");
        }
    }

    #[test]
    fn damage_before_a_frame_of_the_log_is_corruption_even_over_an_older_log() {
        let old = old_log();
        let new = log_of(9, &["a", "b", "c"]);
        let second = frame_len("a");
        type Damage = fn(&mut [u8]);
        let damages: [(&str, Damage); 3] = [
            ("a payload byte flipped", |frame| frame[20] ^= 0x40),
            ("a length changed", |frame| frame[0] ^= 0x01),
            ("a header zeroed", |frame| frame[..HEADER_BYTES].fill(0)),
        ];
        for (what, damage) in damages {
            let mut file = written_over(&old, &new);
            damage(&mut file[second..]);
            for newest in [true, false] {
                let error = replay(&file, 9, newest, "t").unwrap_err();
                assert!(error.is_corruption(), "{what}: {error}");
            }
        }
    }

    #[test]
    fn a_last_frame_whose_log_number_was_damaged_is_not_taken_for_an_old_frame() {
        let mut log = log_of(7, &["a", "b"]);
        log[frame_len("a") + 9] ^= 0x01;
        assert!(replay(&log, 7, false, "t").unwrap_err().is_corruption());
        assert_eq!(replay(&log, 7, true, "t").unwrap().batches, batches(&["a"]));
    }

    #[test]
    fn a_damaged_last_frame_is_a_torn_tail_only_in_the_newest_log() {
        let mut log = log_of(7, &["a", "b"]);
        log[frame_len("a") + 20] ^= 0x40;
        assert_eq!(replay(&log, 7, true, "t").unwrap().batches, batches(&["a"]));
        assert!(replay(&log, 7, false, "t").unwrap_err().is_corruption());
    }

    #[test]
    fn a_log_of_the_earlier_format_is_still_replayed() {
        let log = legacy::tests::log_of(&["a", "b"]);
        let replay = replay(&log, 7, false, "t").unwrap();
        assert_eq!(replay.batches, batches(&["a", "b"]));
    }

    #[test]
    fn only_a_log_of_numbered_frames_may_be_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("numbered", log_of(7, &["a"]), true),
            ("zeros", vec![0; 64], true),
            ("earlier format", legacy::tests::log_of(&["a"]), false),
            ("empty", Vec::new(), false),
        ];
        for (what, bytes, reusable) in cases {
            let path = dir.path().join(what);
            std::fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            assert_eq!(
                holds_only_numbered_frames(&file).unwrap(),
                reusable,
                "{what}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_replay(mut bytes: Vec<u8>, newest: bool, number: u64) {
            let _ = replay(&bytes, number, newest, "fuzz");
            // And as a file of numbered frames.
            if bytes.len() >= 4 {
                bytes[3] |= 0x80;
            }
            let _ = replay(&bytes, number, newest, "fuzz");
        }
    }
}
