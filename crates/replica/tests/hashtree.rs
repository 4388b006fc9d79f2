//! The hash trees anti-entropy compares: kept up to date by every kind of write, on every
//! engine, kept across a clean restart, rebuilt after a crash, and blind to damaged records.
//! Each check compares the trees with leaves computed afresh from a scan of the records.

mod common;

use common::metric;
use prometheus_client::registry::Registry;
use ringkv_core::clock::SystemClock;
use ringkv_core::record::Record;
use ringkv_core::ring::key_hash;
use ringkv_replica::hashtree::{digest, leaf_of, LEAVES};
use ringkv_replica::{LocalStore, StoreOptions, WriteRequest};
use ringkv_storage::{open, EngineKind, ScanRange};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KS: &str = "default";
const OTHER: &str = "other";

fn open_store(kind: EngineKind, dir: &std::path::Path, registry: &mut Registry) -> LocalStore {
    let engine = open(kind, dir).unwrap();
    LocalStore::open(
        engine,
        StoreOptions::default(),
        Arc::new(SystemClock),
        registry,
    )
    .unwrap()
}

/// The records of `keyspace` as a scan finds them (damaged ones left out).
fn records(store: &LocalStore, keyspace: &str) -> Vec<(Vec<u8>, Record)> {
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store
            .scan_records(keyspace, b"", after.as_deref(), 1_000)
            .unwrap();
        all.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// The leaves of `keyspace` computed from its records now.
fn expected_leaves(store: &LocalStore, keyspace: &str) -> Vec<u64> {
    let mut leaves = vec![0u64; LEAVES];
    for (key, record) in records(store, keyspace) {
        leaves[leaf_of(key_hash(&key))] ^= digest(&key, &record.encode());
    }
    leaves
}

/// Waits (at most 20 s) until the trees of both keyspaces match their records.
fn assert_trees_match(store: &LocalStore, context: &str) {
    assert!(
        store.trees_ready(Duration::from_secs(20)),
        "{context}: trees not ready"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let matched = [KS, OTHER]
            .iter()
            .all(|ks| store.tree_leaves(ks) == expected_leaves(store, ks));
        if matched {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: trees differ from the records"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn write_keys(
    store: &LocalStore,
    keyspace: &str,
    range: std::ops::Range<usize>,
    value: &str,
) {
    for i in range {
        let key = format!("k{i}");
        store
            .write(WriteRequest::put(
                keyspace,
                key.as_bytes(),
                value.as_bytes(),
            ))
            .await
            .unwrap();
    }
}

/// Goal: the trees equal leaves computed from the records after writes made before they were
/// turned on (the rebuild), puts, overwrites and deletes after, in two keyspaces, on every
/// engine; a clean restart reloads them without a rebuild; a restart whose index is stale
/// and unmarked (a crash) rebuilds them right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_follow_every_write_and_survive_restarts() {
    for kind in EngineKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut registry = Registry::default();
            let store = open_store(kind, dir.path(), &mut registry);
            write_keys(&store, KS, 0..300, "before").await;
            assert_trees_match(&store, &format!("{kind}: rebuilt when turned on"));
            write_keys(&store, KS, 200..500, "after").await;
            write_keys(&store, OTHER, 0..100, "other").await;
            for i in (0..500).step_by(7) {
                let key = format!("k{i}");
                store
                    .write(WriteRequest::delete(KS, key.as_bytes()))
                    .await
                    .unwrap();
            }
            assert_trees_match(&store, &format!("{kind}: fed by puts and deletes"));
            assert_eq!(
                metric(&registry, "ringkv_store_hash_trees_rebuilds_total"),
                1.0
            );
        }
        {
            let mut registry = Registry::default();
            let store = open_store(kind, dir.path(), &mut registry);
            assert_trees_match(&store, &format!("{kind}: reloaded after a clean restart"));
            assert_eq!(
                metric(&registry, "ringkv_store_hash_trees_rebuilds_total"),
                0.0,
                "{kind}: a clean restart reloads the index instead of rebuilding"
            );
            write_keys(&store, KS, 0..50, "third").await;
        }
        // A crash: the mark is gone, and the index is stale (an entry lost, one left over).
        {
            let engine = open(kind, dir.path()).unwrap();
            let index = engine.scan(&ScanRange::prefix(b"t"), 2).unwrap();
            assert_eq!(index.len(), 2, "{kind}: the index is in the engine");
            engine.delete(&index[0].0).unwrap();
            engine
                .put(
                    b"t\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01gone",
                    &7u64.to_le_bytes(),
                )
                .unwrap();
            engine.delete(b"mhash-trees-clean").unwrap();
            engine.sync().unwrap();
        }
        let mut registry = Registry::default();
        let store = open_store(kind, dir.path(), &mut registry);
        assert_trees_match(&store, &format!("{kind}: rebuilt after a crash"));
        assert_eq!(
            metric(&registry, "ringkv_store_hash_trees_rebuilds_total"),
            1.0
        );
        let (low, high) = (0, u64::MAX / 2);
        let mut want: Vec<(Vec<u8>, u64)> = records(&store, KS)
            .into_iter()
            .filter(|(key, _)| (low..=high).contains(&key_hash(key)))
            .map(|(key, record)| {
                let digest = digest(&key, &record.encode());
                (key, digest)
            })
            .collect();
        want.sort_by_key(|(key, _)| key_hash(key));
        assert_eq!(store.tree_digests(KS, low, high).unwrap(), want, "{kind}");
        assert_eq!(
            store.tree_count(KS, low, high).unwrap(),
            want.len() as u64,
            "{kind}"
        );
    }
}

/// Goal: a record that fails its checksum counts as missing in the trees, whether a read
/// finds the damage or a rebuild does, so that anti-entropy replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_leaves_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(EngineKind::Lsm, dir.path(), &mut Registry::default());
    write_keys(&store, KS, 0..20, "v").await;
    assert_trees_match(&store, "written");
    let damage = |key: &[u8]| {
        let engine_key = store.data_key(KS, key).unwrap();
        let mut bytes = store.engine().get(&engine_key).unwrap().unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0x01;
        store.engine().put(&engine_key, &bytes).unwrap();
    };
    // Found by a read (a scan leaves damaged records out, so the expected leaves lack it).
    damage(b"k3");
    store.clear_cache();
    assert!(store.get(KS, b"k3").is_err(), "the damage is found");
    assert_ne!(store.tree_leaves(KS), vec![0; LEAVES]);
    assert_trees_match(&store, "a read found the damage");
    // Found by a rebuild.
    damage(b"k5");
    store.reload_from_engine();
    assert_trees_match(&store, "rebuilt with two damaged records");
    assert_eq!(records(&store, KS).len(), 18);
}
