//! Recovery of the memory engine: snapshots plus the log after them, log truncation once a
//! snapshot covers it, a torn last append dropped rather than applied in part, and a log
//! written into files made ahead of time, moving on from each when it is full.

use ringkv_storage::memory::{MemoryEngine, MemoryOptions};
use ringkv_storage::{Engine, ScanRange, WriteBatch};
use std::path::Path;

mod common;
use common::{wait_for_spare, LogFilesSeen};

fn open(dir: &Path, snapshot_after_log_bytes: u64) -> MemoryEngine {
    MemoryEngine::open(
        dir,
        MemoryOptions {
            snapshot_after_log_bytes,
            ..MemoryOptions::default()
        },
    )
    .unwrap()
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("memory"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

#[test]
fn restart_loads_the_snapshot_and_replays_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), u64::MAX);
        for i in 0..100u32 {
            engine
                .put(format!("a{i:03}").as_bytes(), b"before")
                .unwrap();
        }
        engine.snapshot_now().unwrap();
        for i in 0..50u32 {
            engine.put(format!("a{i:03}").as_bytes(), b"after").unwrap();
        }
        engine.delete(b"a099").unwrap();
        engine.sync().unwrap();
    }
    assert_eq!(files(dir.path(), ".snap").len(), 1);
    let engine = open(dir.path(), u64::MAX);
    assert_eq!(engine.get(b"a000").unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(
        engine.get(b"a050").unwrap().as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(engine.get(b"a099").unwrap(), None);
    assert_eq!(engine.scan(&ScanRange::all(), 1000).unwrap().len(), 99);
}

#[test]
fn logs_covered_by_a_snapshot_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // Small log files, so that the files made ahead of time weigh little beside the data.
    let options = MemoryOptions {
        snapshot_after_log_bytes: 4096,
        log_file_bytes: 4096,
    };
    let engine = MemoryEngine::open(dir.path(), options).unwrap();
    for i in 0..2000u32 {
        engine
            .put(format!("k{}", i % 100).as_bytes(), &[7u8; 64])
            .unwrap();
    }
    engine.snapshot_now().unwrap();
    // Only the log started by the last snapshot remains, and one snapshot.
    assert_eq!(files(dir.path(), ".wal").len(), 1);
    assert_eq!(files(dir.path(), ".snap").len(), 1);
    assert!(engine.disk_bytes() < 2000 * 64);
}

#[test]
fn a_torn_last_append_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), u64::MAX);
        engine.put(b"kept", b"yes").unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"torn1".as_slice(), vec![1u8; 1000]);
        batch.put(b"torn2".as_slice(), vec![2u8; 1000]);
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    // Cut the last frame in the middle, as a crash mid-append would.
    let log = files(dir.path(), ".wal").pop().unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 700)
        .unwrap();

    let engine = open(dir.path(), u64::MAX);
    assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(
        engine.get(b"torn1").unwrap(),
        None,
        "half a batch must not be applied"
    );
    assert_eq!(engine.get(b"torn2").unwrap(), None);
    engine.put(b"later", b"ok").unwrap();
    drop(engine);
    let engine = open(dir.path(), u64::MAX);
    assert_eq!(engine.get(b"later").unwrap().as_deref(), Some(&b"ok"[..]));
}

#[test]
fn a_damaged_snapshot_value_reads_as_corruption_for_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), u64::MAX);
        engine.put(b"good", b"fine").unwrap();
        engine.put(b"hurt", b"value-that-will-be-damaged").unwrap();
        engine.snapshot_now().unwrap();
    }
    let snapshot = files(dir.path(), ".snap").pop().unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let at = bytes.windows(5).position(|w| w == b"value").unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&snapshot, bytes).unwrap();

    let engine = open(dir.path(), u64::MAX);
    assert!(engine.get(b"hurt").unwrap_err().is_corruption());
    assert_eq!(engine.get(b"good").unwrap().as_deref(), Some(&b"fine"[..]));
    engine.put(b"hurt", b"rewritten").unwrap();
    assert_eq!(
        engine.get(b"hurt").unwrap().as_deref(),
        Some(&b"rewritten"[..])
    );
}

/// The number of the newest file of `dir`'s engine ending in `suffix` (`log-N.wal`,
/// `snapshot-N.snap`).
fn newest(dir: &Path, suffix: &str) -> Option<u64> {
    files(dir, suffix)
        .iter()
        .filter_map(|file| {
            let name = file.file_name()?.to_string_lossy().into_owned();
            let digits = name.strip_suffix(suffix)?.rsplit('-').next()?.to_owned();
            digits.parse().ok()
        })
        .max()
}

/// Waits, a bounded time, until `engine` writes no snapshot.
fn wait_for_snapshot(engine: &MemoryEngine) {
    for _ in 0..500 {
        if !engine.is_snapshotting() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("a snapshot took over 5 s");
}

/// Log files of 1 MB made ahead, and a snapshot after every 1 MB of log, as by default (64 MiB).
const SMALL_FILES: MemoryOptions = MemoryOptions {
    snapshot_after_log_bytes: 1 << 20,
    log_file_bytes: 1 << 20,
};

/// Writes `value(i)` to key `i % 100` for `i` in `0..rounds` through an engine in `dir` with
/// [`SMALL_FILES`], then drops it and reopens it. Every 100 writes it waits until the next
/// file made ahead is ready and the snapshot before has finished (a snapshot still running is
/// not started again, and the log moves on without one), so the files follow the writes
/// whatever the speed of the disk and of the background threads; and calls `look` there.
/// Returns the reopened engine, after checking that each key holds its last value.
fn write_through_snapshots(
    dir: &Path,
    rounds: u32,
    value: impl Fn(u32) -> Vec<u8>,
    mut look: impl FnMut(),
) -> MemoryEngine {
    let spare = dir.join("memory").join("next.wal.tmp");
    {
        let engine = MemoryEngine::open(dir, SMALL_FILES).unwrap();
        wait_for_spare(&spare, SMALL_FILES.log_file_bytes);
        for i in 0..rounds {
            let key = format!("k{:03}", i % 100);
            engine.put(key.as_bytes(), &value(i)).unwrap();
            if i % 100 == 99 {
                wait_for_spare(&spare, SMALL_FILES.log_file_bytes);
                wait_for_snapshot(&engine);
                look();
            }
        }
    }
    let engine = MemoryEngine::open(dir, SMALL_FILES).unwrap();
    for k in 0..100 {
        let key = format!("k{k:03}");
        let last = rounds - 100 + k;
        assert_eq!(
            engine.get(key.as_bytes()).unwrap(),
            Some(value(last)),
            "key {k}"
        );
    }
    engine
}

#[test]
fn a_snapshot_due_in_the_next_log_file_starts_when_the_log_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    // About 6.5 MB of frames: 100 keys rewritten with 1 KB values.
    write_through_snapshots(dir.path(), 6_500, |_| vec![7u8; 1000], || {});
    let last = newest(dir.path(), ".wal").unwrap();
    // About one file per MB of frames, one per snapshot: files up to log 9 on the machine
    // this was written on (10 after the reopen). Had each snapshot moved the log on one file
    // late, just after the log itself did, every other file would hold a few frames, and the
    // log would have used twice as many: files up to log 18.
    assert!(last <= 12, "the log used files up to {last}");
    assert!(
        newest(dir.path(), ".snap").is_some(),
        "snapshots were taken"
    );
}

#[test]
fn a_full_log_file_moves_on_to_one_made_ahead_and_every_file_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let log_file_bytes = 1 << 20;
    let options = MemoryOptions {
        snapshot_after_log_bytes: u64::MAX,
        log_file_bytes,
    };
    let spare = dir.path().join("memory").join("next.wal.tmp");
    let rounds = 25_000u32;
    {
        let engine = MemoryEngine::open(dir.path(), options.clone()).unwrap();
        wait_for_spare(&spare, log_file_bytes);
        // About 3 MB of frames, no snapshot.
        for i in 0..rounds {
            let key = format!("k{:03}", i % 100);
            engine
                .put(key.as_bytes(), &i.to_le_bytes().repeat(25))
                .unwrap();
            // A file made ahead of time takes a moment to make: the writes wait for it, as
            // they would not, so the test does not rest on how fast the disk is.
            if i % 1000 == 999 {
                wait_for_spare(&spare, log_file_bytes);
            }
        }
        let sizes: Vec<u64> = files(dir.path(), ".wal")
            .iter()
            .map(|log| std::fs::metadata(log).unwrap().len())
            .collect();
        // The log created empty at open moved on at the first write; the files made ahead
        // filled up, and the log moved on from each. None grew past what was made ahead.
        assert!(sizes.len() >= 3, "log files: {sizes:?}");
        assert!(
            sizes.iter().all(|&size| size <= log_file_bytes),
            "a log grew past the {log_file_bytes} bytes made ahead of time: {sizes:?}"
        );
        assert_eq!(sizes[1], log_file_bytes, "log files: {sizes:?}");
    }
    let engine = MemoryEngine::open(dir.path(), options).unwrap();
    for k in 0..100 {
        let last = rounds - 100 + k;
        let key = format!("k{k:03}");
        assert_eq!(
            engine.get(key.as_bytes()).unwrap(),
            Some(last.to_le_bytes().repeat(25)),
            "key {k}"
        );
    }
}

#[test]
fn retired_logs_are_written_over_and_replay_reads_only_their_new_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Each snapshot retires the log before it. 100 keys rewritten with 1 KB values that
    // differ every round, about 8 MB of frames: a log that read frames of its file's earlier
    // life would set keys back to older values.
    let mut seen = LogFilesSeen::default();
    write_through_snapshots(
        dir.path(),
        8_000,
        |round| round.to_le_bytes().repeat(250),
        || seen.look(&files(dir.path(), ".wal")),
    );
    let written_over = seen.written_over();
    assert!(written_over >= 2, "{written_over} files were written over");
}
