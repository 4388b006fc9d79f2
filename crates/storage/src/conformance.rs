//! The conformance suite: what every [`Engine`] must do, written once. Each case takes a
//! function that opens the engine under test in a directory (opening the same directory again
//! must find the data), so `tests/conformance.rs` runs every case against every engine.

use crate::engine::{Engine, ScanRange, WriteBatch};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Opens the engine under test in a directory.
pub type Opener<'a> = &'a dyn Fn(&Path) -> Arc<dyn Engine>;

fn fresh(open: Opener<'_>) -> (tempfile::TempDir, Arc<dyn Engine>) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let engine = open(directory.path());
    (directory, engine)
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

/// Put, get, overwrite, delete, and delete of a missing key.
pub fn point_operations(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    assert_eq!(engine.get(b"a").unwrap(), None);
    engine.put(b"a", b"1").unwrap();
    assert_eq!(engine.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    engine.put(b"a", b"2").unwrap();
    assert_eq!(engine.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
    engine.delete(b"a").unwrap();
    assert_eq!(engine.get(b"a").unwrap(), None);
    engine.delete(b"never-written").unwrap();
}

/// Empty values, binary keys and a maximal value are stored exactly.
pub fn exact_bytes(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    let binary_key = [0u8, 0xff, 0x00, 0x7f];
    let large: Vec<u8> = (0..ringkv_core::limits::VALUE_BYTES_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    engine.put(b"empty", b"").unwrap();
    engine.put(&binary_key, b"binary").unwrap();
    engine.put(b"large", &large).unwrap();
    assert_eq!(engine.get(b"empty").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(
        engine.get(&binary_key).unwrap().as_deref(),
        Some(&b"binary"[..])
    );
    assert_eq!(
        engine.get(b"large").unwrap().as_deref(),
        Some(large.as_slice())
    );
}

/// The longest key an engine takes is stored, survives a reopen (which flushes the lsm and
/// btree engines' memtables into their tables), and one byte more is refused with an error,
/// before the log, with nothing of its batch applied: no key can panic a table later.
pub fn keys_up_to_the_engine_limit(open: Opener<'_>) {
    use crate::engine::StorageError;
    use ringkv_core::limits::ENGINE_KEY_BYTES_MAX;
    let directory = tempfile::tempdir().expect("a temporary directory");
    let longest = vec![b'k'; ENGINE_KEY_BYTES_MAX];
    let too_long = vec![b'k'; ENGINE_KEY_BYTES_MAX + 1];
    {
        let engine = open(directory.path());
        engine.put(&longest, b"fits").unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"neighbour".as_slice(), b"x".as_slice());
        batch.put(too_long.as_slice(), b"too long".as_slice());
        let refused = engine.write(batch);
        assert!(
            matches!(refused, Err(StorageError::KeyTooLong { len }) if len == too_long.len()),
            "{refused:?}"
        );
        assert_eq!(engine.get(b"neighbour").unwrap(), None);
        assert_eq!(engine.get(&too_long).unwrap(), None);
        engine.sync().unwrap();
        engine.checkpoint().unwrap();
    }
    let engine = open(directory.path());
    assert_eq!(engine.get(&longest).unwrap().as_deref(), Some(&b"fits"[..]));
    assert_eq!(engine.changes_refused_at_open(), 0);
}

/// A batch applies in order, the later change to a key winning.
pub fn batches_apply_in_order(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    engine.put(b"doomed", b"x").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"k".as_slice(), b"first".as_slice());
    batch.put(b"k".as_slice(), b"second".as_slice());
    batch.put(b"other".as_slice(), b"o".as_slice());
    batch.delete(b"doomed".as_slice());
    engine.write(batch).unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(engine.get(b"other").unwrap().as_deref(), Some(&b"o"[..]));
    assert_eq!(engine.get(b"doomed").unwrap(), None);
}

/// Prefix scans are ordered, bounded, limited, and resume strictly after a key.
pub fn prefix_scans_resume_after_a_key(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    for key in ["a", "b1", "b2", "b3", "b\u{ff}", "c"] {
        engine.put(key.as_bytes(), key.as_bytes()).unwrap();
    }
    engine.put(b"b\xff\xff", b"edge").unwrap();
    let all = engine.scan(&ScanRange::prefix(b"b"), 100).unwrap();
    assert_eq!(
        keys(&all),
        vec![&b"b1"[..], b"b2", b"b3", "b\u{ff}".as_bytes(), b"b\xff\xff"]
    );
    let page = engine.scan(&ScanRange::prefix(b"b"), 2).unwrap();
    assert_eq!(keys(&page), vec![&b"b1"[..], b"b2"]);
    let rest = engine
        .scan(&ScanRange::prefix(b"b").after(b"b2"), 100)
        .unwrap();
    assert_eq!(keys(&rest)[0], b"b3");
    assert_eq!(rest.len(), 3);
    assert_eq!(all[0].1, b"b1".to_vec());
}

/// A snapshot sees the engine as it was when taken: not the overwrites, deletes and new keys
/// that follow, even once they are flushed and compacted into the engine's files, and its
/// scans page like the engine's own.
pub fn snapshots_are_points_in_time(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    let value = |key: u32, round: u32| format!("{key}:{round}").into_bytes();
    for key in 0..300u32 {
        engine.put(&key.to_be_bytes(), &value(key, 0)).unwrap();
    }
    engine.delete(&7u32.to_be_bytes()).unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32)
        .filter(|&key| key != 7)
        .map(|key| (key.to_be_bytes().to_vec(), value(key, 0)))
        .collect();
    let snapshot = engine.snapshot().unwrap();
    for key in (0..300u32).step_by(2) {
        engine.put(&key.to_be_bytes(), &value(key, 1)).unwrap();
    }
    for key in (1..300u32).step_by(3) {
        engine.delete(&key.to_be_bytes()).unwrap();
    }
    engine.put(&7u32.to_be_bytes(), b"back").unwrap();
    engine.put(&1000u32.to_be_bytes(), b"new").unwrap();
    engine.checkpoint().unwrap();
    engine.compact().unwrap();
    let mut seen = Vec::new();
    let mut range = ScanRange::all();
    loop {
        let page = snapshot.scan(&range, 41).unwrap();
        let Some((last, _)) = page.last() else { break };
        range = range.after(last);
        seen.extend(page);
    }
    assert_eq!(seen, expected);
    let later = engine.snapshot().unwrap();
    assert_eq!(
        later.scan(&ScanRange::all(), 1000).unwrap(),
        engine.scan(&ScanRange::all(), 1000).unwrap()
    );
    assert_eq!(
        later
            .scan(
                &ScanRange::between(&7u32.to_be_bytes(), &8u32.to_be_bytes()),
                10
            )
            .unwrap(),
        vec![(7u32.to_be_bytes().to_vec(), b"back".to_vec())]
    );
}

/// Key ranges include their start and exclude their end.
pub fn range_scans(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    for i in 0..20u8 {
        engine.put(&[i], &[i]).unwrap();
    }
    let range = engine.scan(&ScanRange::between(&[5], &[9]), 100).unwrap();
    assert_eq!(keys(&range), vec![&[5u8][..], &[6], &[7], &[8]]);
    assert!(engine.scan(&ScanRange::all(), 0).unwrap().is_empty());
    assert_eq!(engine.scan(&ScanRange::all(), 1000).unwrap().len(), 20);
}

/// Synced data is all there after the engine is closed and opened again, and the engine keeps
/// working after reopening.
pub fn reopen_after_close(open: Opener<'_>) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    {
        let engine = open(directory.path());
        for i in 0..1000u32 {
            engine
                .put(format!("key{i:05}").as_bytes(), &i.to_le_bytes())
                .unwrap();
        }
        engine.delete(b"key00007").unwrap();
        engine.sync().unwrap();
    }
    let engine = open(directory.path());
    assert_eq!(
        engine.get(b"key00999").unwrap().as_deref(),
        Some(&999u32.to_le_bytes()[..])
    );
    assert_eq!(engine.get(b"key00007").unwrap(), None);
    assert_eq!(
        engine.scan(&ScanRange::prefix(b"key"), 5000).unwrap().len(),
        999
    );
    engine.put(b"after", b"reopen").unwrap();
    engine.write_durable(WriteBatch::new()).unwrap();
    drop(engine);
    let engine = open(directory.path());
    assert_eq!(
        engine.get(b"after").unwrap().as_deref(),
        Some(&b"reopen"[..])
    );
}

/// Writers on many threads at once lose nothing.
pub fn concurrent_writers(open: Opener<'_>) {
    let (_dir, engine) = fresh(open);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for i in 0..250u32 {
                    engine
                        .put(format!("t{t}-{i}").as_bytes(), &i.to_le_bytes())
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    engine.sync().unwrap();
    assert_eq!(
        engine.scan(&ScanRange::prefix(b"t"), 10_000).unwrap().len(),
        1000
    );
}

/// A random sequence of batches leaves the engine equal to a `BTreeMap` model, for gets and
/// paged scans alike. `seed` picks the sequence.
pub fn matches_a_model(open: Opener<'_>, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_dir, engine) = fresh(open);
    let mut model = BTreeMap::new();
    for _ in 0..300 {
        let mut batch = WriteBatch::new();
        for _ in 0..rng.random_range(1..6) {
            let key = vec![b'k', rng.random_range(0..40u8)];
            if rng.random_bool(0.3) {
                model.remove(&key);
                batch.delete(key);
            } else {
                let value = vec![rng.random::<u8>(); rng.random_range(0..20)];
                model.insert(key.clone(), value.clone());
                batch.put(key, value);
            }
        }
        engine.write(batch).unwrap();
    }
    for (key, value) in &model {
        assert_eq!(engine.get(key).unwrap().as_ref(), Some(value));
    }
    let mut paged = Vec::new();
    let mut range = ScanRange::prefix(b"k");
    loop {
        let page = engine.scan(&range, 7).unwrap();
        let Some((last, _)) = page.last() else { break };
        range = range.after(&last.clone());
        paged.extend(page);
    }
    assert_eq!(paged, model.into_iter().collect::<Vec<_>>());
}
