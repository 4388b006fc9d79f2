//! The files a log is written into ([`crate::wal`] frames), shared by the engines that keep
//! one: each file is made ahead of time, zeros of a fixed size, by a thread of its own
//! ([`SpareLog`]), and frames are written over the zeros; when a file is full, the log moves
//! on to the next ([`LogFile::move_on`]).
//!
//! Why zeros ahead of time: a sync of frames written over space the file already has writes
//! just them, where a sync of an append must also write the file's new size and blocks
//! through the file system's journal. On this machine's disk, 5 KB frames took 0.10 ms per
//! write and fdatasync over zeros and 0.19 ms appended; a node under `redis-benchmark -t set
//! -c 50 -P 1` spent 0.12 ms per sync instead of 0.27-0.29, and served 66-70 k SETs/s
//! instead of 45 k. (Space allocated with `fallocate` alone would not do: its blocks are
//! marked unwritten, and writing them changes that mark, which the sync must journal.)
//!
//! A file made ahead of time is longer than its frames; the replay stops at the end mark after
//! them (see [`crate::wal`]).
//!
//! Retired logs are written over. Once an engine has stored a log's writes elsewhere it
//! retires the log ([`SpareLog::retire`]), and the maker makes the next file out of it instead
//! of out of zeros, as RocksDB's `recycle_log_file_num` does: making a 64 MiB file of zeros
//! copies 64 MiB into the page cache, 100-180 ms of CPU on a node under load (against 20 ms
//! alone), and the node's requests slowed down beside it (`redis-benchmark -t set -P 16`:
//! rounds into which such a file fell served 290-360 k SETs/s, the others 445 k). A retired
//! file's blocks are written already, so a sync of frames over them writes just the frames,
//! as over zeros. The frames of its earlier life stay after the new ones; each frame carries
//! its log's number, which tells them apart (see [`crate::wal`]).

use crate::engine::StorageError;
use crate::wal;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the maker waits before it tries again after failing to make a file.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Most retired files kept to be written over; more are deleted. Two: a memtable of the lsm
/// engine is flushed with the two 64 MiB files of its log, and the next memtable's log takes
/// two files, so two kept cover it. (The memory engine retires one file per snapshot.)
const RECYCLED_MAX: usize = 2;

/// A thread that keeps one log file made ahead of time ready for a log of `directory`, and
/// makes the next as soon as it is taken: out of a retired log if one is kept
/// ([`wal::reuse_log`]), else out of zeros ([`wal::prepare_log`]). Dropping it stops the
/// thread.
pub struct SpareLog {
    shared: Arc<Spare>,
    maker: Option<JoinHandle<()>>,
}

struct Spare {
    directory: PathBuf,
    bytes: u64,
    state: Mutex<SpareState>,
    /// Wakes the maker: the file was taken, or the log is closing.
    wanted: Condvar,
}

#[derive(Default)]
struct SpareState {
    file: Option<File>,
    /// Retired logs, renamed to [`wal::recycled_path`], oldest first.
    recycled: VecDeque<PathBuf>,
    /// Files made so far out of zeros, and out of retired logs.
    made: u64,
    reused: u64,
    closing: bool,
}

impl SpareLog {
    /// Starts the thread that makes files of `bytes` for the log in `directory` (of zeros, or
    /// of retired logs), named `thread_name`, at background priority.
    pub fn start(directory: &Path, bytes: u64, thread_name: &str) -> Result<Self, StorageError> {
        // A file the last process was making is incomplete, and one it retired (kept, or made
        // the next file) may hold frames numbered as this process's logs will be: numbers
        // start over once no log is left. None is used.
        for leftover in [
            wal::spare_path(directory),
            wal::unfinished_spare_path(directory),
        ] {
            match std::fs::remove_file(leftover) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error.into())
                }
                _ => {}
            }
        }
        for entry in std::fs::read_dir(directory)? {
            let entry = entry?;
            if wal::is_recycled_name(&entry.file_name().to_string_lossy()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        let shared = Arc::new(Spare {
            directory: directory.to_path_buf(),
            bytes,
            state: Mutex::new(SpareState::default()),
            wanted: Condvar::new(),
        });
        let maker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(thread_name.into())
                .spawn(move || {
                    crate::background::lower_this_thread();
                    shared.make_files();
                })?
        };
        Ok(Self {
            shared,
            maker: Some(maker),
        })
    }

    /// Bytes of each file it makes.
    pub fn file_bytes(&self) -> u64 {
        self.shared.bytes
    }

    /// Whether a file is ready to be taken.
    pub fn is_ready(&self) -> bool {
        self.shared.state.lock().file.is_some()
    }

    /// How many files it has made so far out of zeros, and out of retired logs.
    pub fn files_made(&self) -> (u64, u64) {
        let state = self.shared.state.lock();
        (state.made, state.reused)
    }

    /// Retires log `number`, whose writes are stored elsewhere now: it is kept to be written
    /// over as a later log if it is at least as long as the files made ahead (it is cut to
    /// their length: a log grows past it when no file was ready to move on to), holds frames
    /// of the current format only, and fewer than `RECYCLED_MAX` (2) are kept; else it is
    /// deleted. Either way its name is gone; the caller makes that durable when it must.
    pub fn retire(&self, number: u64) -> Result<(), StorageError> {
        let directory = &self.shared.directory;
        let path = wal::log_path(directory, number);
        let room = self.shared.state.lock().recycled.len() < RECYCLED_MAX;
        if room && self.made_reusable(&path)? {
            let recycled = wal::recycled_path(directory, number);
            std::fs::rename(&path, &recycled)?;
            self.shared.state.lock().recycled.push_back(recycled);
        } else {
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// Whether the log at `path` can be written over as a later log, cut to the length of a
    /// file made ahead if it is.
    fn made_reusable(&self, path: &Path) -> Result<bool, StorageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let bytes = self.shared.bytes;
        let len = file.metadata()?.len();
        if len < bytes || !wal::holds_only_numbered_frames(&file)? {
            return Ok(false);
        }
        if len > bytes {
            file.set_len(bytes)?;
        }
        Ok(true)
    }

    /// Takes the ready file, if any, as log `number` (renamed, durably), with its length.
    fn take_as(&self, number: u64) -> Option<(File, u64)> {
        // Renamed under the lock, so that the maker cannot start the next file at the same
        // path before this one has left it.
        let mut state = self.shared.state.lock();
        let file = state.file.take()?;
        self.shared.wanted.notify_one();
        if let Err(error) = wal::install_log(&self.shared.directory, number) {
            tracing::warn!(%error, "the log file made ahead of time could not be used");
            return None;
        }
        drop(state);
        let bytes = file.metadata().map_or(0, |m| m.len());
        Some((file, bytes))
    }
}

impl Spare {
    /// The maker thread: makes a file whenever none is ready, until closing.
    fn make_files(&self) {
        let mut state = self.state.lock();
        loop {
            if state.closing {
                return;
            }
            if state.file.is_some() {
                self.wanted.wait(&mut state);
                continue;
            }
            let recycled = state.recycled.pop_front();
            drop(state);
            let made = match &recycled {
                Some(path) => wal::reuse_log(path),
                None => wal::prepare_log(&self.directory, self.bytes),
            };
            state = self.state.lock();
            // Renamed to where a ready file waits under the lock, so that a file is there
            // exactly when one is ready (what tests wait for).
            let made = made.and_then(|file| {
                let from = recycled
                    .clone()
                    .unwrap_or_else(|| wal::unfinished_spare_path(&self.directory));
                std::fs::rename(from, wal::spare_path(&self.directory))?;
                Ok(file)
            });
            match made {
                Ok(file) => {
                    match recycled {
                        Some(_) => state.reused += 1,
                        None => state.made += 1,
                    }
                    state.file = Some(file);
                }
                Err(error) => match &recycled {
                    // The next file is made of zeros instead.
                    Some(path) => {
                        tracing::warn!(%error, "could not write over a retired log file");
                        let _ = std::fs::remove_file(path);
                    }
                    None => {
                        tracing::warn!(%error, "could not make the next log file ahead of time");
                        if !state.closing {
                            self.wanted.wait_for(&mut state, RETRY_AFTER);
                        }
                    }
                },
            }
        }
    }
}

impl Drop for SpareLog {
    fn drop(&mut self) {
        self.shared.state.lock().closing = true;
        self.shared.wanted.notify_one();
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
    }
}

/// The file of a log that frames are written into.
pub struct LogFile {
    file: Arc<File>,
    number: u64,
    /// Bytes of whole frames in `file`: after a failed write the file is cut back to them.
    bytes: u64,
    /// Bytes of zeros `file` was made ahead of time with, which frames fill before they grow
    /// it; 0 for a file created empty (at open, or when no file made ahead was ready).
    made_ahead: u64,
}

impl LogFile {
    /// Log `number` of `directory`: the file made ahead of time if `spare` has one ready,
    /// else a new empty file (made durable).
    pub fn open(directory: &Path, number: u64, spare: &SpareLog) -> Result<Self, StorageError> {
        let (file, made_ahead) = match spare.take_as(number) {
            Some(taken) => taken,
            None => (wal::create_log(directory, number)?, 0),
        };
        Ok(Self {
            file: Arc::new(file),
            number,
            bytes: 0,
            made_ahead,
        })
    }

    /// The log's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The file, for a sync that must not hold the log's lock.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Whether `frame` would grow the file while `spare` has a file made ahead of time ready
    /// to move on to: then the caller moves on first.
    pub fn should_move_on(&self, frame: &wal::Frame, spare: &SpareLog) -> bool {
        self.bytes + frame.write_bytes() as u64 > self.made_ahead && spare.is_ready()
    }

    /// Moves the log on to its next number (see [`LogFile::open`]).
    ///
    /// This file is synced first, if it holds frames: a later sync then need only sync the
    /// new one, and a power loss cannot leave frames of the new file on disk behind a torn
    /// end of this one, which the replay would take for damage (only the newest log may end
    /// torn).
    pub fn move_on(&mut self, directory: &Path, spare: &SpareLog) -> Result<(), StorageError> {
        if self.bytes > 0 {
            self.file.sync_data()?;
        }
        *self = Self::open(directory, self.number + 1, spare)?;
        Ok(())
    }

    /// Writes `frame`, numbered as this log, and its end mark after the frames before it. A
    /// failed write cuts the file back to those frames (a partial frame in the middle of a
    /// log would read as damage on replay).
    pub fn write(&mut self, frame: &mut wal::Frame) -> Result<(), StorageError> {
        if let Err(error) = self
            .file
            .write_all_at(frame.stamped(self.number), self.bytes)
        {
            let _ = self.file.set_len(self.bytes);
            return Err(error.into());
        }
        self.bytes += frame.frame_bytes() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::WriteBatch;

    const BYTES: u64 = 64 << 10;

    /// Waits, a bounded time, until `spare` has a file ready.
    fn ready(spare: &SpareLog) {
        for _ in 0..500 {
            if spare.is_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no log file was made ahead of time within 5 s");
    }

    fn write(log: &mut LogFile, key: &str) {
        let mut batch = WriteBatch::new();
        batch.put(key.as_bytes(), vec![7u8; 1000]);
        log.write(&mut wal::encode_frame(&batch).unwrap()).unwrap();
    }

    fn keys_of(directory: &Path, number: u64) -> Vec<Vec<u8>> {
        let replay = wal::replay_file(directory, number, true).unwrap();
        assert!(!replay.torn_tail);
        let ops = replay.batches.into_iter().flat_map(|batch| batch.ops);
        ops.map(|op| op.key().to_vec()).collect()
    }

    #[test]
    fn a_retired_log_is_made_the_next_file_and_read_as_its_new_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let spare = SpareLog::start(dir.path(), BYTES, "test-logs").unwrap();
        ready(&spare);
        let mut log = LogFile::open(dir.path(), 1, &spare).unwrap();
        for i in 0..20 {
            write(&mut log, &format!("old{i}"));
        }
        // Log 2 takes the file made next, of zeros, and another is made. Log 1 is retired
        // while that one waits: log 3 takes it, and the file after is made of log 1.
        ready(&spare);
        log.move_on(dir.path(), &spare).unwrap();
        ready(&spare);
        spare.retire(1).unwrap();
        assert!(wal::recycled_path(dir.path(), 1).exists());
        log.move_on(dir.path(), &spare).unwrap();
        ready(&spare);
        log.move_on(dir.path(), &spare).unwrap();
        assert_eq!(log.number(), 4);
        // (The maker may have made the file after log 4's already.)
        let (made, reused) = spare.files_made();
        assert_eq!(reused, 1);
        assert!((3..=4).contains(&made), "{made} files made of zeros");
        // Before any frame of its own, log 4 holds none, though its file holds log 1's.
        assert!(keys_of(dir.path(), 4).is_empty());
        write(&mut log, "new");
        assert_eq!(keys_of(dir.path(), 4), vec![b"new".to_vec()]);
    }

    #[test]
    fn retired_logs_are_kept_at_the_length_made_ahead_and_not_past_the_process() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spare = SpareLog::start(dir.path(), BYTES, "test-logs").unwrap();
            // Created empty (no file was ready): shorter than the files made ahead.
            wal::create_log(dir.path(), 1).unwrap();
            spare.retire(1).unwrap();
            assert!(!wal::log_path(dir.path(), 1).exists());
            assert!(!wal::recycled_path(dir.path(), 1).exists());
            // Grown past them (no file was ready to move on to): kept, cut to their length.
            std::fs::write(wal::log_path(dir.path(), 2), vec![0u8; 3 * BYTES as usize]).unwrap();
            spare.retire(2).unwrap();
            let kept = std::fs::metadata(wal::recycled_path(dir.path(), 2)).unwrap();
            assert_eq!(kept.len(), BYTES);
        }
        // One left by a process that stopped before writing over it.
        std::fs::write(wal::recycled_path(dir.path(), 7), vec![0u8; BYTES as usize]).unwrap();
        let _spare = SpareLog::start(dir.path(), BYTES, "test-logs").unwrap();
        assert!(!wal::recycled_path(dir.path(), 7).exists());
    }
}
