//! The write path the lsm and btree engines share (`ringkv_storage::buffered`), run against
//! both: the log replayed after a crash, memtables flushed into the tables and their logs
//! deleted, newer flushes winning over older ones across restarts, deletes in memory hiding
//! values in the tables, log files made ahead of time and moved on from when full; and for
//! lsm, data an older ringkv left in fjall's own journal.

use ringkv_storage::btree::BtreeEngine;
use ringkv_storage::buffered::BufferOptions;
use ringkv_storage::lsm::LsmEngine;
use ringkv_storage::{Engine, ScanRange};
use std::path::Path;

mod common;
use common::{wait_for_spare, LogFilesSeen};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The engines built on the shared write path.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Lsm,
    Btree,
}

impl Kind {
    fn log_dir(self) -> &'static str {
        match self {
            Kind::Lsm => "lsm-log",
            Kind::Btree => "btree-log",
        }
    }
}

fn open(kind: Kind, dir: &Path, memtable_bytes: usize) -> Arc<dyn Engine> {
    let options = BufferOptions { memtable_bytes };
    match kind {
        Kind::Lsm => Arc::new(LsmEngine::open_with(dir, options).unwrap()),
        Kind::Btree => Arc::new(BtreeEngine::open_btree(dir, options).unwrap()),
    }
}

/// The numbered logs (not the one made ahead of time), oldest first.
fn logs(kind: Kind, dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join(kind.log_dir()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    found.sort();
    found
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn get(engine: &Arc<dyn Engine>, key: &[u8]) -> Option<Vec<u8>> {
    engine.get(key).unwrap()
}

/// A test of each engine for each test function of one `Kind`.
macro_rules! for_both {
    ($($test:ident),* $(,)?) => {
        mod lsm {
            $(#[test] fn $test() { super::$test(super::Kind::Lsm) })*
        }
        mod btree {
            $(#[test] fn $test() { super::$test(super::Kind::Btree) })*
        }
    };
}

for_both!(
    writes_that_reached_the_log_survive_a_crash,
    a_checkpoint_moves_every_write_into_the_tables_and_deletes_the_logs,
    a_later_flush_wins_over_an_earlier_one_across_restarts,
    deletes_in_the_memtable_hide_values_in_the_tables_from_scans,
    a_torn_last_append_is_dropped_and_the_log_goes_on_after_it,
    readers_never_miss_a_write_while_memtables_are_flushed,
    a_key_rewritten_over_and_over_does_not_grow_one_log_without_end,
    logs_made_ahead_of_time_are_used_and_replayed,
    a_full_log_file_moves_on_to_one_made_ahead_without_a_seal,
    a_memtable_sealed_by_its_log_takes_no_file_made_ahead_for_a_few_frames,
    retired_logs_are_written_over_and_replay_reads_only_their_new_frames,
);

fn writes_that_reached_the_log_survive_a_crash(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        // Never sealed: everything is in the log and the active memtable when it drops.
        let engine = open(kind, dir.path(), usize::MAX);
        for i in 0..500 {
            engine.put(&key(i), b"v").unwrap();
        }
        engine.delete(&key(7)).unwrap();
    }
    let engine = open(kind, dir.path(), usize::MAX);
    assert_eq!(get(&engine, &key(499)).as_deref(), Some(&b"v"[..]));
    assert_eq!(get(&engine, &key(7)), None);
    assert_eq!(engine.scan(&ScanRange::all(), 1000).unwrap().len(), 499);
}

fn a_checkpoint_moves_every_write_into_the_tables_and_deletes_the_logs(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(kind, dir.path(), 4096);
    for i in 0..2000 {
        engine.put(&key(i), &i.to_le_bytes()).unwrap();
    }
    assert!(logs(kind, dir.path()).len() > 1, "memtables were sealed");
    engine.checkpoint().unwrap();
    assert_eq!(
        logs(kind, dir.path()).len(),
        1,
        "only the active log is left"
    );
    drop(engine);
    // Nothing to replay: the reads come from the tables.
    let engine = open(kind, dir.path(), 4096);
    for i in [0, 999, 1999] {
        assert_eq!(get(&engine, &key(i)), Some(i.to_le_bytes().to_vec()));
    }
    assert_eq!(engine.scan(&ScanRange::all(), 5000).unwrap().len(), 2000);
}

fn a_later_flush_wins_over_an_earlier_one_across_restarts(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u8 {
        let engine = open(kind, dir.path(), 4096);
        if round > 0 {
            assert_eq!(get(&engine, b"k"), Some(vec![round - 1]));
        }
        engine.put(b"k", &[round]).unwrap();
        engine.checkpoint().unwrap();
    }
    let engine = open(kind, dir.path(), 4096);
    assert_eq!(get(&engine, b"k"), Some(vec![2]));
    engine.delete(b"k").unwrap();
    engine.checkpoint().unwrap();
    drop(engine);
    let engine = open(kind, dir.path(), 4096);
    assert_eq!(get(&engine, b"k"), None);
    assert!(engine.scan(&ScanRange::all(), 10).unwrap().is_empty());
}

fn deletes_in_the_memtable_hide_values_in_the_tables_from_scans(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(kind, dir.path(), usize::MAX);
    for i in 0..100 {
        engine.put(&key(i), b"v").unwrap();
    }
    engine.checkpoint().unwrap();
    // Keep every tenth key: a page of 3 needs several passes over 9 deletes at a time.
    for i in (0..100).filter(|i| i % 10 != 0) {
        engine.delete(&key(i)).unwrap();
    }
    let first = engine.scan(&ScanRange::all(), 3).unwrap();
    let first: Vec<_> = first.into_iter().map(|(k, _)| k).collect();
    assert_eq!(first, vec![key(0), key(10), key(20)]);
    let mut paged = Vec::new();
    let mut range = ScanRange::all();
    for _ in 0..100 {
        let page = engine.scan(&range, 3).unwrap();
        let Some((last, _)) = page.last() else { break };
        range = range.after(&last.clone());
        paged.extend(page.into_iter().map(|(k, _)| k));
    }
    assert_eq!(paged, (0..100).step_by(10).map(key).collect::<Vec<_>>());
}

fn a_torn_last_append_is_dropped_and_the_log_goes_on_after_it(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(kind, dir.path(), usize::MAX);
        engine.put(b"a", b"1").unwrap();
        engine.put(b"b", b"2").unwrap();
    }
    // Cut the last frame's last byte: its frames end at the last byte that is not zero (its
    // end mark, and a file made ahead of time, are zeros after them).
    let newest = logs(kind, dir.path()).pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    let frames_end = bytes.iter().rposition(|&byte| byte != 0).unwrap() + 1;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    file.set_len(frames_end as u64 - 1).unwrap();
    drop(file);
    {
        let engine = open(kind, dir.path(), usize::MAX);
        assert_eq!(get(&engine, b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(
            get(&engine, b"b"),
            None,
            "the torn write is not applied in part"
        );
        engine.put(b"c", b"3").unwrap();
    }
    let engine = open(kind, dir.path(), usize::MAX);
    assert_eq!(get(&engine, b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&engine, b"c").as_deref(), Some(&b"3"[..]));
}

fn readers_never_miss_a_write_while_memtables_are_flushed(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(kind, dir.path(), 2048);
    let written = Arc::new(AtomicU32::new(0));
    let reader = {
        let (engine, written) = (Arc::clone(&engine), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut checked = 0u32;
            for round in 0..200_000u32 {
                let done = written.load(Ordering::Acquire);
                if done >= 3000 {
                    break;
                }
                if done == 0 {
                    std::thread::yield_now();
                    continue;
                }
                let i = round % done;
                assert_eq!(
                    engine.get(&key(i)).unwrap(),
                    Some(i.to_le_bytes().to_vec()),
                    "key {i} of {done} written"
                );
                checked += 1;
            }
            checked
        })
    };
    for i in 0..3000 {
        engine.put(&key(i), &i.to_le_bytes()).unwrap();
        written.store(i + 1, Ordering::Release);
    }
    let checked = reader.join().unwrap();
    assert!(checked > 0, "the reader read while the writer wrote");
    assert!(
        logs(kind, dir.path()).len() < 3000 * 20 / 2048,
        "flushed logs were deleted"
    );
}

fn a_key_rewritten_over_and_over_does_not_grow_one_log_without_end(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let memtable_bytes = 4096;
    let engine = open(kind, dir.path(), memtable_bytes);
    for i in 0..2000u32 {
        engine.put(b"hot", &[i as u8; 100]).unwrap();
    }
    // The memtable never holds more than one entry; the logs are still cut at four times its
    // size, and at most the sealed ones waiting for a flush and the active one are left. Each
    // memtable's last log file may end in zeros, made ahead of time: up to twice the
    // memtable's bytes. (The flusher may delete a log between the listing and the look.)
    let log_bytes: u64 = logs(kind, dir.path())
        .iter()
        .filter_map(|log| std::fs::metadata(log).ok())
        .map(|m| m.len())
        .sum();
    let bound = 4 * (4 * memtable_bytes as u64 + 200 + 2 * memtable_bytes as u64);
    assert!(log_bytes <= bound, "{log_bytes} bytes of log, over {bound}");
    assert_eq!(get(&engine, b"hot"), Some(vec![(1999 % 256) as u8; 100]));
}

fn logs_made_ahead_of_time_are_used_and_replayed(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let memtable_bytes = 4096;
    let spare = dir.path().join(kind.log_dir()).join("next.wal.tmp");
    let mut written = 0;
    {
        let engine = open(kind, dir.path(), memtable_bytes);
        // The flusher makes the next log once it starts.
        for _ in 0..500 {
            if spare.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(spare.exists(), "a log was made ahead of time");
        // A seal takes the log made ahead of time if the flusher has finished making it (it
        // is synced first), else creates one; seal once per round until one was taken, a
        // bounded number of times, so the test does not rest on how long the sync takes.
        let mut used = false;
        for _round in 0..50 {
            let before = logs(kind, dir.path()).pop();
            for _ in 0..1000 {
                engine.put(&key(written), &[7; 100]).unwrap();
                written += 1;
                if logs(kind, dir.path()).pop() != before {
                    break;
                }
            }
            // Zeros after its frames: the newest log is one made ahead of time.
            let newest = logs(kind, dir.path()).pop().unwrap();
            if std::fs::metadata(&newest).unwrap().len() >= 2 * memtable_bytes as u64 {
                used = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(used, "no seal took a log made ahead of time");
    }
    // Dropped without a checkpoint: what the logs hold is replayed, zeros and all.
    let engine = open(kind, dir.path(), memtable_bytes);
    for i in 0..written {
        assert_eq!(get(&engine, &key(i)), Some(vec![7; 100]), "key {i}");
    }
}

fn a_full_log_file_moves_on_to_one_made_ahead_without_a_seal(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let memtable_bytes = 1 << 20;
    // What is made ahead of time: twice the memtable's bytes.
    let made_ahead = 2 * memtable_bytes as u64;
    let spare = dir.path().join(kind.log_dir()).join("next.wal.tmp");
    let rounds = 25_000u32;
    {
        let engine = open(kind, dir.path(), memtable_bytes);
        wait_for_spare(&spare, made_ahead);
        // 100 keys rewritten: the memtable stays small, the log grows past 3 MB (under the
        // 4 MB at which the memtable would be sealed).
        for i in 0..rounds {
            engine
                .put(&key(i % 100), &i.to_le_bytes().repeat(25))
                .unwrap();
            // A file made ahead of time takes a moment to make: the writes wait for it, as
            // they would not, so the test does not rest on how fast the disk is.
            if i % 1000 == 999 {
                wait_for_spare(&spare, made_ahead);
            }
        }
        let sizes: Vec<u64> = logs(kind, dir.path())
            .iter()
            .map(|log| std::fs::metadata(log).unwrap().len())
            .collect();
        // The log created empty at open moved on at the first write, since one made ahead
        // was ready; that one filled up and the log moved on again. No file grew past what
        // was made ahead.
        assert!(sizes.len() >= 3, "log files: {sizes:?}");
        assert!(
            sizes.iter().all(|&size| size <= made_ahead),
            "a log grew past the {made_ahead} bytes made ahead of time: {sizes:?}"
        );
        assert_eq!(sizes[1], made_ahead, "log files: {sizes:?}");
    }
    // Dropped without a checkpoint: no memtable was sealed, so every write is replayed from
    // the files of the log, in order.
    let engine = open(kind, dir.path(), memtable_bytes);
    for k in 0..100 {
        let last = rounds - 100 + k;
        assert_eq!(
            get(&engine, &key(k)),
            Some(last.to_le_bytes().repeat(25)),
            "key {k}"
        );
    }
}

fn retired_logs_are_written_over_and_replay_reads_only_their_new_frames(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    // Files made ahead of 2 MB; the memtable is sealed once its log reaches 4 MB, and its
    // flush retires the two files of its log.
    let memtable_bytes = 1 << 20;
    let made_ahead = 2 * memtable_bytes as u64;
    let spare = dir.path().join(kind.log_dir()).join("next.wal.tmp");
    // 100 keys rewritten with 1 KB values that differ every round: about 30 MB of frames,
    // seven seals. A log that read frames of its file's earlier life would set keys back to
    // older values.
    let value = |round: u32| round.to_le_bytes().repeat(250);
    let rounds = 30_000u32;
    let mut seen = LogFilesSeen::default();
    {
        let engine = open(kind, dir.path(), memtable_bytes);
        wait_for_spare(&spare, made_ahead);
        for i in 0..rounds {
            engine.put(&key(i % 100), &value(i)).unwrap();
            if i % 100 == 99 {
                wait_for_spare(&spare, made_ahead);
                seen.look(&logs(kind, dir.path()));
            }
        }
        // Reuse starts with the second memtable's log, once the first was flushed: files
        // made of zeros are used while a flush runs late, so this asks for fewer than all.
        let written_over = seen.written_over();
        assert!(written_over >= 2, "{written_over} files were written over");
    }
    // Dropped without a checkpoint: the logs left, written over or not, are replayed.
    let engine = open(kind, dir.path(), memtable_bytes);
    for k in 0..100 {
        let last = rounds - 100 + k;
        assert_eq!(get(&engine, &key(k)), Some(value(last)), "key {k}");
    }
}

fn a_memtable_sealed_by_its_log_takes_no_file_made_ahead_for_a_few_frames(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    // Files made ahead of 2 MB; the memtable is sealed once its log reaches 4 MB.
    let memtable_bytes = 1 << 20;
    let made_ahead = 2 * memtable_bytes as u64;
    let spare = dir.path().join(kind.log_dir()).join("next.wal.tmp");
    let engine = open(kind, dir.path(), memtable_bytes);
    wait_for_spare(&spare, made_ahead);
    // 100 keys rewritten with 1 KB values: the memtable stays small, so its log seals it,
    // three times over in about 13 MB of frames.
    let value = vec![7u8; 1000];
    for i in 0..13_000u32 {
        engine.put(&key(i % 100), &value).unwrap();
        // Every file made ahead is ready when the log wants it, whatever the disk's speed.
        if i % 100 == 99 {
            wait_for_spare(&spare, made_ahead);
        }
    }
    let logs = logs(kind, dir.path());
    let last = logs.last().unwrap().file_stem().unwrap().to_string_lossy();
    let last: u64 = last.trim_start_matches("log-").parse().unwrap();
    // Log 1 was created empty at open; 13 MB of frames then fill 7 files of 2 MB, two per
    // memtable, so the last is log 8 (9 leaves room for one file created empty). Had each
    // seal come one file late, just after the log moved on, that file would hold a few
    // frames, and the log would have used files up to 12.
    assert!(last <= 9, "the log used files up to {last}");
    for k in 0..100 {
        assert_eq!(get(&engine, &key(k)), Some(value.clone()), "key {k}");
    }
}

#[test]
fn data_in_fjalls_own_journal_is_read_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What the engine wrote before it had a log of its own: fjall's batches and journal.
        let database = fjall::Database::builder(dir.path().join("lsm"))
            .open()
            .unwrap();
        let data = database
            .keyspace("data", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        data.insert("old", "journal").unwrap();
        database.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    {
        let engine = open(Kind::Lsm, dir.path(), 4096);
        assert_eq!(get(&engine, b"old").as_deref(), Some(&b"journal"[..]));
        engine.put(b"new", b"log").unwrap();
        engine.checkpoint().unwrap();
    }
    let engine = open(Kind::Lsm, dir.path(), 4096);
    assert_eq!(get(&engine, b"old").as_deref(), Some(&b"journal"[..]));
    assert_eq!(get(&engine, b"new").as_deref(), Some(&b"log"[..]));
}
