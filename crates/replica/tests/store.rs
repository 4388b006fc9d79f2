//! Behaviour of the local store over every engine: versioned writes, expiry and sweeping,
//! conditional writes under concurrency, siblings, damage handling and scans.

mod common;

use common::metric;
use prometheus_client::registry::Registry;
use ringkv_core::clock::{ManualClock, SystemClock, WallClock};
use ringkv_replica::{
    Change, Condition, ConflictMode, Expiry, LocalStore, Reaping, ReplicaError, Report,
    StoreOptions, SyncPolicy, WriteRequest,
};
use ringkv_storage::lsm::{LsmEngine, LsmOptions};
use ringkv_storage::{open, Engine, EngineKind, ScanRange};
use std::sync::Arc;

const KS: &str = "default";

struct Fixture {
    store: Arc<LocalStore>,
    registry: Registry,
    _dir: tempfile::TempDir,
}

fn fixture(kind: EngineKind, clock: Arc<dyn WallClock>) -> Fixture {
    fixture_with(kind, clock, StoreOptions::default())
}

fn fixture_with(kind: EngineKind, clock: Arc<dyn WallClock>, options: StoreOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(kind, dir.path()).unwrap();
    let mut registry = Registry::default();
    let options = StoreOptions {
        sweep_interval_ms: 3_600_000,
        ..options
    };
    let store = Arc::new(LocalStore::open(engine, options, clock, &mut registry).unwrap());
    Fixture {
        store,
        registry,
        _dir: dir,
    }
}

/// Damages the stored record of `key` behind the store's back, as a bad disk would, and
/// empties the cache (which may still hold the good copy: damage is found when the disk is
/// read).
fn damage(store: &LocalStore, key: &[u8]) {
    let engine_key = store.data_key(KS, key).expect("the keyspace has records");
    let mut bytes = store.engine().get(&engine_key).unwrap().unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 0x01;
    store.engine().put(&engine_key, &bytes).unwrap();
    store.clear_cache();
}

fn value_of(store: &LocalStore, key: &str) -> Option<Vec<u8>> {
    store
        .get(KS, key.as_bytes())
        .unwrap()
        .map(|entry| entry.winner().value.clone())
}

#[tokio::test]
async fn put_get_overwrite_delete_on_every_engine() {
    for kind in EngineKind::ALL {
        let f = fixture(kind, Arc::new(SystemClock));
        f.store
            .write(WriteRequest::put(KS, b"k", b"one"))
            .await
            .unwrap();
        f.store
            .write(WriteRequest::put(KS, b"k", b"two"))
            .await
            .unwrap();
        assert_eq!(
            value_of(&f.store, "k").as_deref(),
            Some(&b"two"[..]),
            "{kind}"
        );
        let entry = f.store.get(KS, b"k").unwrap().unwrap();
        assert_eq!(entry.values.len(), 1, "last-writer-wins keeps one value");
        f.store.write(WriteRequest::delete(KS, b"k")).await.unwrap();
        assert_eq!(value_of(&f.store, "k"), None);
        f.store
            .write(WriteRequest::delete(KS, b"never"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn writes_survive_reopening_the_store() {
    for kind in EngineKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let engine = open(kind, dir.path()).unwrap();
            let store = LocalStore::open(
                engine,
                StoreOptions::default(),
                Arc::new(SystemClock),
                &mut Registry::default(),
            )
            .unwrap();
            if round == 0 {
                store
                    .write(WriteRequest::put(KS, b"durable", b"yes"))
                    .await
                    .unwrap();
            } else {
                assert_eq!(
                    value_of(&store, "durable").as_deref(),
                    Some(&b"yes"[..]),
                    "{kind}"
                );
            }
        }
    }
}

#[tokio::test]
async fn expired_value_is_invisible_at_once_and_swept_later() {
    for kind in EngineKind::ALL {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let f = fixture(kind, clock.clone());
        f.store
            .write(WriteRequest::put(KS, b"ttl", b"v").expiring_at(1_001_000))
            .await
            .unwrap();
        f.store
            .write(WriteRequest::put(KS, b"keep", b"v"))
            .await
            .unwrap();
        clock.advance(999);
        assert!(
            value_of(&f.store, "ttl").is_some(),
            "{kind}: visible before expiry"
        );
        // The single-value read, from the record as the writer cached it and as read back
        // from the engine.
        for cached_by in ["writer", "engine"] {
            let value = f.store.get_value(KS, b"ttl").unwrap();
            assert_eq!(value.as_deref(), Some(&b"v"[..]), "{kind}, {cached_by}");
            f.store.clear_cache();
        }
        clock.advance(1);
        assert!(
            value_of(&f.store, "ttl").is_none(),
            "{kind}: invisible at expiry"
        );
        for cached_by in ["engine", "reader"] {
            let value = f.store.get_value(KS, b"ttl").unwrap();
            assert_eq!(value, None, "{kind}: invisible at expiry, {cached_by}");
        }
        // Still stored until swept.
        assert!(f.store.get_record(KS, b"ttl").unwrap().is_some());
        assert_eq!(f.store.sweep_now().await.unwrap(), 1);
        assert!(
            f.store.get_record(KS, b"ttl").unwrap().is_none(),
            "{kind}: physically removed"
        );
        assert!(value_of(&f.store, "keep").is_some());
        let index = f.store.engine().scan(&ScanRange::prefix(b"x"), 10).unwrap();
        assert!(index.is_empty(), "{kind}: expiry index emptied: {index:?}");
        assert_eq!(metric(&f.registry, "ringkv_store_swept_total"), 1.0);
    }
}

#[tokio::test]
async fn overwriting_an_expiring_value_without_ttl_keeps_it() {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture(EngineKind::Memory, clock.clone());
    f.store
        .write(WriteRequest::put(KS, b"k", b"short").expiring_at(2_000))
        .await
        .unwrap();
    f.store
        .write(WriteRequest::put(KS, b"k", b"forever"))
        .await
        .unwrap();
    clock.advance(10_000);
    f.store.sweep_now().await.unwrap();
    assert_eq!(value_of(&f.store, "k").as_deref(), Some(&b"forever"[..]));
}

/// Goal: under `Reaping::WhenConfirmed` the store never removes a wholly dead record by
/// itself: a sweep lists it (with its fingerprint) and leaves it, still drops dead siblings
/// beside live ones, and `reap` removes a record only while it still has the fingerprint the
/// caller confirmed.
#[tokio::test]
async fn wholly_dead_records_wait_for_a_confirmed_reap() {
    for kind in EngineKind::ALL {
        let clock = Arc::new(ManualClock::new(1_000));
        let options = StoreOptions {
            reaping: Reaping::WhenConfirmed,
            ..Default::default()
        };
        let f = fixture_with(kind, clock.clone(), options);
        let store = &f.store;
        store
            .write(WriteRequest::put(KS, b"gone", b"v"))
            .await
            .unwrap();
        store
            .write(WriteRequest::delete(KS, b"gone"))
            .await
            .unwrap();
        store
            .write(WriteRequest::put(KS, b"rewritten", b"v"))
            .await
            .unwrap();
        store
            .write(WriteRequest::delete(KS, b"rewritten"))
            .await
            .unwrap();
        // A live value beside a dead sibling: a sibling keyspace keeps both.
        let siblings = "siblings";
        let concurrent = |value: &'static [u8]| WriteRequest {
            conflict: ConflictMode::Siblings,
            ..WriteRequest::put(siblings, b"both", value)
        };
        store.write(concurrent(b"live")).await.unwrap();
        store
            .write(WriteRequest {
                conflict: ConflictMode::Siblings,
                ..WriteRequest::delete(siblings, b"both")
            })
            .await
            .unwrap();
        store.write(concurrent(b"again")).await.unwrap();
        let has_dead = |store: &LocalStore| {
            let record = store.get_record(siblings, b"both").unwrap().unwrap();
            record.siblings.iter().any(|s| s.value.is_none())
        };
        assert!(has_dead(store), "{kind}: a blind delete is a sibling");
        clock.advance(10);

        store.sweep_now().await.unwrap();
        assert!(store.get_record(KS, b"gone").unwrap().is_some(), "{kind}");
        let now = clock.now_ms();
        let (swept, next) = store.sweep_due(now, None, 100).await.unwrap();
        assert_eq!(next, None, "{kind}: every due entry seen");
        let listed: Vec<&[u8]> = swept.dead.iter().map(|(e, _)| &e.key[..]).collect();
        assert_eq!(listed, [&b"gone"[..], &b"rewritten"[..]], "{kind}");
        for key in [&b"gone"[..], b"rewritten"] {
            assert!(store.get_record(KS, key).unwrap().is_some(), "{kind}: kept");
        }
        assert!(
            !has_dead(store),
            "{kind}: the dead sibling went, the record stayed"
        );

        // "rewritten" changes after it was listed: its old fingerprint no longer removes it.
        store
            .write(WriteRequest::delete(KS, b"rewritten"))
            .await
            .unwrap();
        let confirmed: Vec<(Vec<u8>, u64)> = swept
            .dead
            .iter()
            .map(|(entry, fingerprint)| (entry.key.clone(), *fingerprint))
            .chain([(b"never-written".to_vec(), 7)])
            .collect();
        let gone = store.reap(KS, confirmed).await.unwrap();
        assert_eq!(gone, [true, false, true], "{kind}");
        assert!(store.get_record(KS, b"gone").unwrap().is_none(), "{kind}");
        assert!(
            store.get_record(KS, b"rewritten").unwrap().is_some(),
            "{kind}"
        );
        let (again, _) = store.sweep_due(clock.now_ms(), None, 100).await.unwrap();
        let listed: Vec<&[u8]> = again.dead.iter().map(|(e, _)| &e.key[..]).collect();
        assert_eq!(
            listed,
            [&b"rewritten"[..]],
            "{kind}: the reaped key's entry is gone"
        );
    }
}

#[tokio::test]
async fn tombstones_are_reaped_only_after_the_grace_period() {
    let clock = Arc::new(ManualClock::new(1_000));
    let dir = tempfile::tempdir().unwrap();
    let engine = open(EngineKind::Lsm, dir.path()).unwrap();
    let options = StoreOptions {
        tombstone_grace_ms: 5_000,
        sweep_interval_ms: 3_600_000,
        ..Default::default()
    };
    let store = LocalStore::open(engine, options, clock.clone(), &mut Registry::default()).unwrap();
    store
        .write(WriteRequest::put(KS, b"k", b"v"))
        .await
        .unwrap();
    store.write(WriteRequest::delete(KS, b"k")).await.unwrap();
    store.sweep_now().await.unwrap();
    assert!(
        store.get_record(KS, b"k").unwrap().is_some(),
        "tombstone kept during grace"
    );
    clock.advance(5_001);
    store.sweep_now().await.unwrap();
    assert!(
        store.get_record(KS, b"k").unwrap().is_none(),
        "tombstone reaped after grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compare_and_set_on_one_version_has_exactly_one_winner() {
    for kind in EngineKind::ALL {
        let f = fixture(kind, Arc::new(SystemClock));
        let version = f
            .store
            .write(WriteRequest::put(KS, b"cas", b"0"))
            .await
            .unwrap()
            .version();
        let racers: Vec<_> = (0..32)
            .map(|i| {
                let store = Arc::clone(&f.store);
                tokio::spawn(async move {
                    let request = WriteRequest::put(KS, b"cas", format!("{i}").as_bytes())
                        .when(Condition::IfVersion(version));
                    store.write(request).await
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => winners += 1,
                Err(ReplicaError::ConditionFailed { current }) => {
                    assert_ne!(current.map(|entry| entry.version()), Some(version))
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners, 1, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_have_exactly_one_winner() {
    let f = fixture(EngineKind::Lsm, Arc::new(SystemClock));
    let racers: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&f.store);
            tokio::spawn(async move {
                let request = WriteRequest::put(KS, b"new", format!("{i}").as_bytes())
                    .when(Condition::IfAbsent);
                store.write(request).await.is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        metric(&f.registry, "ringkv_store_condition_failures_total"),
        31.0
    );
}

#[tokio::test]
async fn create_only_succeeds_again_after_expiry() {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture(EngineKind::Btree, clock.clone());
    f.store
        .write(
            WriteRequest::put(KS, b"lock", b"a")
                .expiring_at(2_000)
                .when(Condition::IfAbsent),
        )
        .await
        .unwrap();
    let taken = f
        .store
        .write(WriteRequest::put(KS, b"lock", b"b").when(Condition::IfAbsent))
        .await;
    assert!(matches!(taken, Err(ReplicaError::ConditionFailed { .. })));
    clock.advance(1_000);
    f.store
        .write(WriteRequest::put(KS, b"lock", b"b").when(Condition::IfAbsent))
        .await
        .unwrap();
}

#[tokio::test]
async fn siblings_keyspace_keeps_concurrent_writes_until_a_context_write_resolves_them() {
    let f = fixture(EngineKind::Lsm, Arc::new(SystemClock));
    let siblings =
        |value: &[u8]| WriteRequest::put("carts", b"k", value).conflict(ConflictMode::Siblings);
    f.store.write(siblings(b"a")).await.unwrap();
    f.store.write(siblings(b"b")).await.unwrap();
    let entry = f.store.get("carts", b"k").unwrap().unwrap();
    let values: Vec<_> = entry.values.iter().map(|v| v.value.clone()).collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()]);
    // A single-value read of a record with siblings returns the newest.
    let newest = f.store.get_value("carts", b"k").unwrap();
    assert_eq!(newest.as_deref(), Some(&b"b"[..]));
    f.store
        .write(siblings(b"ab").with_context(entry.context))
        .await
        .unwrap();
    let entry = f.store.get("carts", b"k").unwrap().unwrap();
    assert_eq!(entry.values.len(), 1);
    assert_eq!(entry.winner().value, b"ab");
}

#[tokio::test]
async fn a_damaged_record_reads_as_corruption_and_other_keys_keep_working() {
    for kind in EngineKind::ALL {
        let f = fixture(kind, Arc::new(SystemClock));
        f.store
            .write(WriteRequest::put(KS, b"good", b"fine"))
            .await
            .unwrap();
        f.store
            .write(WriteRequest::put(KS, b"bad", b"soon damaged"))
            .await
            .unwrap();
        damage(&f.store, b"bad");

        assert!(
            matches!(
                f.store.get_value(KS, b"bad"),
                Err(ReplicaError::Corruption { .. })
            ),
            "{kind}"
        );
        assert!(
            matches!(
                f.store.get(KS, b"bad"),
                Err(ReplicaError::Corruption { .. })
            ),
            "{kind}"
        );
        assert_eq!(value_of(&f.store, "good").as_deref(), Some(&b"fine"[..]));
        assert_eq!(metric(&f.registry, "ringkv_store_corruption_total"), 2.0);
        // A compare-and-set cannot be checked against damaged data; a plain write repairs it.
        let cas = f
            .store
            .write(WriteRequest::put(KS, b"bad", b"x").when(Condition::IfPresent))
            .await;
        assert!(matches!(cas, Err(ReplicaError::Corruption { .. })));
        f.store
            .write(WriteRequest::put(KS, b"bad", b"repaired"))
            .await
            .unwrap();
        assert_eq!(value_of(&f.store, "bad").as_deref(), Some(&b"repaired"[..]));
    }
}

#[tokio::test]
async fn a_scan_page_of_large_values_is_cut_short_and_pages_on() {
    // Goal: a scan never holds a page of many large records at once, whatever the limit
    // asked (a peer could ask for thousands). Method: five maximal values, 50 MiB in all,
    // scanned with a limit of 1,000: each page holds part, and paging on finds all.
    let f = fixture(EngineKind::Memory, Arc::new(ManualClock::new(1_000)));
    let value = vec![b'v'; ringkv_core::limits::VALUE_BYTES_MAX];
    for i in 0..5 {
        let key = format!("big:{i}");
        f.store
            .write(WriteRequest::put(KS, key.as_bytes(), &value))
            .await
            .unwrap();
    }
    let (mut seen, mut after, mut pages) = (0, None, 0);
    while pages < 10 {
        let page = f.store.scan(KS, b"big:", after.as_deref(), 1_000).unwrap();
        assert!(
            page.entries.len() < 5,
            "a page of {} large values",
            page.entries.len()
        );
        (seen, after, pages) = (seen + page.entries.len(), page.next_after, pages + 1);
        if after.is_none() {
            break;
        }
    }
    assert_eq!((seen, after), (5, None));
}

#[tokio::test]
async fn scans_page_through_a_prefix_skipping_dead_keys() {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture(EngineKind::Lsm, clock.clone());
    for i in 0..50u32 {
        let key = format!("user:{i:02}");
        let mut request = WriteRequest::put(KS, key.as_bytes(), b"v");
        if i % 5 == 0 {
            request = request.expiring_at(1_500);
        }
        f.store.write(request).await.unwrap();
    }
    f.store
        .write(WriteRequest::put(KS, b"other", b"v"))
        .await
        .unwrap();
    f.store
        .write(WriteRequest::delete(KS, b"user:01"))
        .await
        .unwrap();
    clock.advance(1_000);
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let page = f.store.scan(KS, b"user:", after.as_deref(), 7).unwrap();
        assert!(page.entries.len() <= 7);
        seen.extend(
            page.entries
                .into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap()),
        );
        after = page.next_after;
        if after.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..50u32)
        .filter(|i| i % 5 != 0 && *i != 1)
        .map(|i| format!("user:{i:02}"))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_fsyncs() {
    let f = fixture(EngineKind::Lsm, Arc::new(SystemClock));
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&f.store);
            tokio::spawn(async move {
                store
                    .write(WriteRequest::put(KS, format!("k{i}").as_bytes(), b"v"))
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let writes = metric(&f.registry, "ringkv_store_writes_total");
    let syncs = metric(&f.registry, "ringkv_store_syncs_total");
    assert_eq!(writes, 200.0);
    assert!(
        syncs < writes,
        "group commit: {syncs} fsyncs for {writes} writes"
    );
    // Every sync is timed, and every write counted in a group's size.
    assert_eq!(
        metric(&f.registry, "ringkv_store_sync_seconds_count"),
        syncs
    );
    assert_eq!(
        metric(&f.registry, "ringkv_store_group_commit_writes_sum"),
        writes
    );
    // Every group is timed too.
    assert_eq!(
        metric(&f.registry, "ringkv_store_group_commit_seconds_count"),
        metric(&f.registry, "ringkv_store_group_commit_writes_count")
    );
    assert!(metric(&f.registry, "ringkv_store_group_commit_seconds_sum") > 0.0);
}

/// An engine whose next write, once armed, waits to be released: while the writer is held in
/// it, a test can queue jobs behind it.
struct HeldWrite {
    inner: Arc<dyn Engine>,
    /// Taken by the first write after arming: it says it has arrived, then waits.
    armed: parking_lot::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Engine for HeldWrite {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ringkv_storage::StorageError> {
        self.inner.get(key)
    }
    fn write(&self, batch: ringkv_storage::WriteBatch) -> Result<(), ringkv_storage::StorageError> {
        let armed = self.armed.lock().take();
        if let Some((arrived, release)) = armed {
            arrived.send(()).unwrap();
            release
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the test releases the write");
        }
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), ringkv_storage::StorageError> {
        self.inner.sync()
    }
    fn scan(
        &self,
        range: &ScanRange,
        limit: usize,
    ) -> Result<Vec<ringkv_storage::KeyValue>, ringkv_storage::StorageError> {
        self.inner.scan(range, limit)
    }
    fn snapshot(&self) -> Result<Box<dyn ringkv_storage::Snapshot>, ringkv_storage::StorageError> {
        self.inner.snapshot()
    }

    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn approximate_entries(&self) -> u64 {
        self.inner.approximate_entries()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_arrive_while_a_small_group_is_stored_share_its_sync() {
    // Goal: jobs queued while a small group is being applied and stored are stored before its
    // sync and covered by it, instead of waiting for a sync of their own. Method: hold the
    // writer inside the engine write of one SET, queue two more, release it; all three are
    // acknowledged (so synced) after exactly one sync, in two groups.
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new(HeldWrite {
        inner: open(EngineKind::Lsm, dir.path()).unwrap(),
        armed: Default::default(),
    });
    let mut registry = Registry::default();
    let options = StoreOptions {
        sweep_interval_ms: 3_600_000,
        ..Default::default()
    };
    assert_eq!(options.sync, SyncPolicy::Always);
    let engine: Arc<dyn Engine> = held.clone();
    let store = LocalStore::open(engine, options, Arc::new(SystemClock), &mut registry).unwrap();
    store
        .write(WriteRequest::put(KS, b"before", b"v"))
        .await
        .unwrap();
    let syncs_before = metric(&registry, "ringkv_store_syncs_total");
    let groups_before = metric(&registry, "ringkv_store_group_commit_writes_count");
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *held.armed.lock() = Some((arrived_tx, release_rx));
    let first = store.submit(WriteRequest::put(KS, b"a", b"1")).unwrap();
    arrived
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the writer stores the first SET");
    let queued = [
        store.submit(WriteRequest::put(KS, b"b", b"2")).unwrap(),
        store.submit(WriteRequest::put(KS, b"c", b"3")).unwrap(),
    ];
    release.send(()).unwrap();
    first.wait().await.unwrap();
    for pending in queued {
        pending.wait().await.unwrap();
    }
    assert_eq!(
        metric(&registry, "ringkv_store_group_commit_writes_count") - groups_before,
        2.0,
        "the first SET, then the two that queued behind it"
    );
    assert_eq!(
        metric(&registry, "ringkv_store_syncs_total") - syncs_before,
        1.0,
        "one sync covers both groups"
    );
    for (key, value) in [("a", b"1"), ("b", b"2"), ("c", b"3")] {
        assert_eq!(value_of(&store, key).as_deref(), Some(value.as_slice()));
    }
}

/// An engine that notes, for every key it stores, the number of the batch that stored it, and
/// how many batches the last finished sync covers: a key is durable once its batch number is
/// within that.
struct SyncWatch {
    inner: Arc<dyn Engine>,
    state: parking_lot::Mutex<SyncState>,
}

#[derive(Default)]
struct SyncState {
    batches: u64,
    stored_in: std::collections::HashMap<Vec<u8>, u64>,
    synced_through: u64,
}

impl SyncWatch {
    /// Whether the batch that last stored a key ending in `key` had been synced.
    fn durable(&self, key: &[u8]) -> bool {
        let state = self.state.lock();
        let batch = state
            .stored_in
            .iter()
            .find(|(stored, _)| stored.ends_with(key))
            .map(|(_, batch)| *batch)
            .expect("the key was stored");
        batch <= state.synced_through
    }
}

impl Engine for SyncWatch {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ringkv_storage::StorageError> {
        self.inner.get(key)
    }
    fn write(&self, batch: ringkv_storage::WriteBatch) -> Result<(), ringkv_storage::StorageError> {
        let keys: Vec<Vec<u8>> = batch
            .ops
            .iter()
            .map(|op| match op {
                ringkv_storage::WriteOp::Put { key, .. }
                | ringkv_storage::WriteOp::Delete { key } => key.to_vec(),
            })
            .collect();
        self.inner.write(batch)?;
        let mut state = self.state.lock();
        state.batches += 1;
        let batch = state.batches;
        state
            .stored_in
            .extend(keys.into_iter().map(|key| (key, batch)));
        Ok(())
    }
    fn sync(&self) -> Result<(), ringkv_storage::StorageError> {
        let covers = self.state.lock().batches;
        self.inner.sync()?;
        let mut state = self.state.lock();
        state.synced_through = state.synced_through.max(covers);
        Ok(())
    }
    fn scan(
        &self,
        range: &ScanRange,
        limit: usize,
    ) -> Result<Vec<ringkv_storage::KeyValue>, ringkv_storage::StorageError> {
        self.inner.scan(range, limit)
    }
    fn snapshot(&self) -> Result<Box<dyn ringkv_storage::Snapshot>, ringkv_storage::StorageError> {
        self.inner.snapshot()
    }

    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn approximate_entries(&self) -> u64 {
        self.inner.approximate_entries()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_was_synced_in_small_and_large_groups() {
    // Goal: under sync = always no write is acknowledged before a sync that covers it, both
    // where the writer syncs a small group itself and where the syncer thread syncs a large
    // one. Method: an engine that tracks which batches each finished sync covers; writes one
    // at a time (small groups), many concurrent ones and batches of 200 (large groups); check
    // each write's batch was synced the moment its acknowledgement arrives.
    let dir = tempfile::tempdir().unwrap();
    let watch = Arc::new(SyncWatch {
        inner: open(EngineKind::Lsm, dir.path()).unwrap(),
        state: Default::default(),
    });
    let options = StoreOptions {
        sweep_interval_ms: 3_600_000,
        ..Default::default()
    };
    let engine: Arc<dyn Engine> = watch.clone();
    let store = Arc::new(
        LocalStore::open(
            engine,
            options,
            Arc::new(SystemClock),
            &mut Registry::default(),
        )
        .unwrap(),
    );
    for i in 0..20 {
        let key = format!("alone-{i:03}");
        store
            .write(WriteRequest::put(KS, key.as_bytes(), b"v"))
            .await
            .unwrap();
        assert!(watch.durable(key.as_bytes()), "{key} acknowledged unsynced");
    }
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (store, watch) = (Arc::clone(&store), Arc::clone(&watch));
            tokio::spawn(async move {
                if i % 30 == 0 {
                    let keys: Vec<String> =
                        (0..200).map(|j| format!("many-{i:03}-{j:03}")).collect();
                    let requests = keys
                        .iter()
                        .map(|key| WriteRequest::put(KS, key.as_bytes(), b"v"))
                        .collect();
                    for outcome in store.write_many(requests).await.unwrap() {
                        outcome.unwrap();
                    }
                    keys.iter().all(|key| watch.durable(key.as_bytes()))
                } else {
                    let key = format!("crowd-{i:03}");
                    store
                        .write(WriteRequest::put(KS, key.as_bytes(), b"v"))
                        .await
                        .unwrap();
                    watch.durable(key.as_bytes())
                }
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert!(task.await.unwrap(), "write {i} acknowledged unsynced");
    }
}

#[tokio::test]
async fn oversized_keys_and_values_are_refused() {
    let f = fixture(EngineKind::Memory, Arc::new(SystemClock));
    let key = vec![b'k'; ringkv_core::limits::KEY_BYTES_MAX + 1];
    assert!(matches!(
        f.store.write(WriteRequest::put(KS, &key, b"v")).await,
        Err(ReplicaError::KeyTooLong { .. })
    ));
    let value = vec![0u8; ringkv_core::limits::VALUE_BYTES_MAX + 1];
    assert!(matches!(
        f.store.write(WriteRequest::put(KS, b"k", &value)).await,
        Err(ReplicaError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        f.store.write(WriteRequest::put("bad/ks", b"k", b"v")).await,
        Err(ReplicaError::Invalid(_))
    ));
}

#[tokio::test]
async fn periodic_and_none_sync_policies_acknowledge_without_waiting_for_fsync() {
    for sync in [SyncPolicy::Periodic, SyncPolicy::None] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(EngineKind::Lsm, dir.path()).unwrap();
        let mut registry = Registry::default();
        let options = StoreOptions {
            sync,
            sync_interval_ms: 3_600_000,
            ..Default::default()
        };
        let store =
            LocalStore::open(engine, options, Arc::new(SystemClock), &mut registry).unwrap();
        store
            .write(WriteRequest::put(KS, b"k", b"v"))
            .await
            .unwrap();
        assert_eq!(
            metric(&registry, "ringkv_store_syncs_total"),
            0.0,
            "{sync:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_falls_after_mass_expiry() {
    // Goal: expired data leaves the disk, not just the reads. Method: fill an LSM store with
    // expiring values, let them expire, run a sweeper pass (which compacts once enough was
    // removed) and compare the engine's disk use before and after.
    let clock = Arc::new(ManualClock::new(1_000));
    let dir = tempfile::tempdir().unwrap();
    // Memtables of 1 MiB keep the logs the engine makes ahead of time (zero-filled, twice a
    // memtable each, counted as disk use) small beside the 20 MB of values.
    let lsm = LsmOptions {
        memtable_bytes: 1 << 20,
    };
    let engine: Arc<dyn Engine> = Arc::new(LsmEngine::open_with(dir.path(), lsm).unwrap());
    let options = StoreOptions {
        compact_after_swept: 10_000,
        sweep_interval_ms: 3_600_000,
        ..Default::default()
    };
    let store = Arc::new(
        LocalStore::open(engine, options, clock.clone(), &mut Registry::default()).unwrap(),
    );
    let value = vec![7u8; 1000];
    for chunk in 0..20 {
        let writes: Vec<_> = (0..1000)
            .map(|i| {
                let (store, value) = (Arc::clone(&store), value.clone());
                tokio::spawn(async move {
                    let key = format!("k{chunk}-{i}");
                    store
                        .write(WriteRequest::put(KS, key.as_bytes(), &value).expiring_at(2_000))
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
    }
    store.engine().checkpoint().unwrap();
    let before = store.engine().disk_bytes();
    clock.advance(5_000);
    assert_eq!(store.sweep_now().await.unwrap(), 20_000);
    let after = store.engine().disk_bytes();
    eprintln!("disk use {before} -> {after} bytes after 20,000 x 1 KB values expired");
    assert!(
        after < before - 10_000_000,
        "disk use {before} -> {after} bytes"
    );
}

#[tokio::test]
async fn increments_are_atomic_keep_expiry_and_refuse_non_integers() {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture(EngineKind::Memory, clock.clone());
    let increment = |by| WriteRequest::new(KS, b"n", Change::Increment(by));
    assert_eq!(f.store.write(increment(5)).await.unwrap().integer, Some(5));
    assert_eq!(
        f.store.write(increment(-7)).await.unwrap().integer,
        Some(-2)
    );
    f.store
        .write(WriteRequest::put(KS, b"n", b"10").expiring_at(9_000))
        .await
        .unwrap();
    assert_eq!(f.store.write(increment(1)).await.unwrap().integer, Some(11));
    let entry = f.store.get(KS, b"n").unwrap().unwrap();
    assert_eq!(
        entry.winner().expires_at_ms,
        Some(9_000),
        "INCR keeps the TTL"
    );
    // The string became a counter, which reads as its decimal value.
    assert_eq!(entry.string().unwrap(), b"11");
    assert_eq!(
        f.store.get_value(KS, b"n").unwrap().as_deref(),
        Some(&b"11"[..])
    );
    f.store
        .write(WriteRequest::put(KS, b"n", b"01"))
        .await
        .unwrap();
    assert!(matches!(
        f.store.write(increment(1)).await,
        Err(ReplicaError::NotAnInteger)
    ));
    f.store
        .write(WriteRequest::put(KS, b"n", i64::MAX.to_string().as_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        f.store.write(increment(1)).await,
        Err(ReplicaError::Overflow)
    ));
}

#[tokio::test]
async fn expire_and_keep_ttl_change_only_the_expiry() {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture(EngineKind::Lsm, clock.clone());
    let missing = f
        .store
        .write(WriteRequest::new(
            KS,
            b"k",
            Change::Expire(Expiry::At(5_000)),
        ))
        .await;
    assert!(matches!(missing, Err(ReplicaError::ConditionFailed { .. })));
    f.store
        .write(WriteRequest::put(KS, b"k", b"v"))
        .await
        .unwrap();
    f.store
        .write(WriteRequest::new(
            KS,
            b"k",
            Change::Expire(Expiry::At(5_000)),
        ))
        .await
        .unwrap();
    let keep = Change::Put {
        value: b"w".to_vec(),
        expiry: Expiry::Keep,
    };
    f.store
        .write(WriteRequest::new(KS, b"k", keep))
        .await
        .unwrap();
    let entry = f.store.get(KS, b"k").unwrap().unwrap();
    assert_eq!(
        (
            entry.winner().value.as_slice(),
            entry.winner().expires_at_ms
        ),
        (&b"w"[..], Some(5_000))
    );
    f.store
        .write(WriteRequest::new(KS, b"k", Change::Expire(Expiry::Never)))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .get(KS, b"k")
            .unwrap()
            .unwrap()
            .winner()
            .expires_at_ms,
        None
    );
}

#[tokio::test]
async fn write_many_applies_every_write_and_reports_each() {
    let f = fixture(EngineKind::Btree, Arc::new(SystemClock));
    f.store
        .write(WriteRequest::put(KS, b"a", b"old"))
        .await
        .unwrap();
    let outcomes = f
        .store
        .write_many(vec![
            WriteRequest::put(KS, b"a", b"1"),
            WriteRequest::put(KS, b"b", b"2"),
            WriteRequest::delete(KS, b"a"),
            WriteRequest::put(KS, b"b", b"3").when(Condition::IfAbsent),
        ])
        .await
        .unwrap();
    assert!(outcomes[0].as_ref().unwrap().previous.is_some());
    assert!(
        outcomes[2].as_ref().unwrap().previous.is_some(),
        "sees the put earlier in the batch"
    );
    assert!(matches!(
        outcomes[3],
        Err(ReplicaError::ConditionFailed { .. })
    ));
    assert_eq!(value_of(&f.store, "a"), None);
    assert_eq!(value_of(&f.store, "b").as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn submitted_writes_report_only_what_their_caller_asks_for() {
    let f = fixture(EngineKind::Lsm, Arc::new(SystemClock));
    f.store
        .write(WriteRequest::put(KS, b"k", b"old"))
        .await
        .unwrap();
    let bare = Report {
        previous: false,
        context: false,
    };
    let with_previous = Report {
        previous: true,
        ..bare
    };
    let outcomes = f
        .store
        .submit_many(vec![
            (WriteRequest::put(KS, b"k", b"1"), bare),
            (WriteRequest::put(KS, b"k", b"2"), with_previous),
            (WriteRequest::put(KS, b"k", b"3"), Report::FULL),
            // A condition still sees the current value when the caller asks for nothing.
            (
                WriteRequest::put(KS, b"k", b"no").when(Condition::IfAbsent),
                bare,
            ),
            (WriteRequest::new(KS, b"n", Change::Increment(5)), bare),
            (WriteRequest::new(KS, b"n", Change::Increment(5)), bare),
        ])
        .unwrap()
        .wait()
        .await
        .unwrap();
    let outcome = |i: usize| outcomes[i].as_ref().unwrap();
    assert_eq!(outcome(0).previous, None);
    assert!(outcome(0).context.is_empty(), "{:?}", outcome(0).context);
    let previous = outcome(1).previous.as_ref().expect("asked for");
    assert_eq!(previous.winner().value, b"1");
    assert!(outcome(1).context.is_empty());
    assert_eq!(outcome(2).previous.as_ref().unwrap().winner().value, b"2");
    assert!(!outcome(2).context.is_empty());
    assert!(matches!(
        &outcomes[3],
        Err(ReplicaError::ConditionFailed { current: Some(current) }) if current.winner().value == b"3"
    ));
    assert_eq!(
        outcome(5).integer,
        Some(10),
        "an increment reads the current value"
    );
    assert_eq!(value_of(&f.store, "k").as_deref(), Some(&b"3"[..]));
}

/// Pipelined SETs that ask for nothing back replace records from a summary instead of the
/// decoded record: the expiry index, the clock and damaged records are handled as any write
/// handles them.
#[tokio::test]
async fn bare_overwrites_keep_the_expiry_index_and_repair_damage() {
    for kind in EngineKind::ALL {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let f = fixture(kind, clock.clone());
        let bare = Report {
            previous: false,
            context: false,
        };
        let submit = |requests: Vec<WriteRequest>| {
            let requests = requests.into_iter().map(|r| (r, bare)).collect();
            f.store.submit_many(requests).unwrap().wait()
        };
        let index = || f.store.engine().scan(&ScanRange::prefix(b"x"), 10).unwrap();
        // Replacing a record changed earlier in the same group, then one stored before.
        submit(vec![
            WriteRequest::put(KS, b"a", b"1").expiring_at(2_000_000),
            WriteRequest::put(KS, b"a", b"2"),
            WriteRequest::put(KS, b"b", b"1").expiring_at(2_000_000),
        ])
        .await
        .unwrap();
        assert_eq!(index().len(), 1, "{kind}: only b expires");
        f.store.clear_cache();
        let outcomes = submit(vec![WriteRequest::put(KS, b"b", b"2")])
            .await
            .unwrap();
        assert!(outcomes[0].is_ok());
        assert!(index().is_empty(), "{kind}: b's entry left with its expiry");
        let before = f.store.get(KS, b"b").unwrap().unwrap();
        // A delete leaves a tombstone, due for reaping; the write after it sees its context.
        submit(vec![WriteRequest::delete(KS, b"b")]).await.unwrap();
        assert_eq!(value_of(&f.store, "b"), None);
        assert_eq!(index().len(), 1, "{kind}: the tombstone is due");
        submit(vec![WriteRequest::put(KS, b"b", b"3")])
            .await
            .unwrap();
        let after = f.store.get(KS, b"b").unwrap().unwrap();
        assert!(after.context.descends(&before.context), "{kind}");
        assert!(
            after.winner().timestamp > before.winner().timestamp,
            "{kind}"
        );
        assert!(index().is_empty(), "{kind}");
        // A damaged record is replaced, as by any unconditional write.
        damage(&f.store, b"a");
        submit(vec![WriteRequest::put(KS, b"a", b"repaired")])
            .await
            .unwrap();
        assert_eq!(
            value_of(&f.store, "a").as_deref(),
            Some(&b"repaired"[..]),
            "{kind}"
        );
    }
}

/// A pipelined SET is applied from what its submitter saw of the record it replaces (the
/// cache's copy, read before the SET was queued) while that record has not changed since.
/// Pipelines queued back to back, most before the ones ahead of them were applied, must each
/// replace the last: every other write sets an expiry of its own, so a write that replaced
/// anything but its predecessor would leave an expiry-index entry behind. (That a stale
/// snapshot is refused is shown deterministically by the store's unit tests.)
#[tokio::test]
async fn pipelines_queued_back_to_back_build_on_each_other() {
    let f = fixture(EngineKind::Lsm, Arc::new(SystemClock));
    let bare = Report {
        previous: false,
        context: false,
    };
    for key in [&b"k"[..], b"other"] {
        f.store
            .write(WriteRequest::put(KS, key, b"0"))
            .await
            .unwrap();
    }
    let far = SystemClock.now_ms() + 1_000_000_000;
    let writes = 200u64;
    let mut pending = Vec::new();
    for i in 1..=writes {
        let value = i.to_string().into_bytes();
        let put = |key: &[u8]| {
            let request = WriteRequest::put(KS, key, &value);
            match i % 2 {
                1 => request.expiring_at(far + i),
                _ => request,
            }
        };
        let requests = vec![(put(b"k"), bare), (put(b"other"), bare)];
        pending.push(f.store.submit_many(requests).unwrap());
    }
    for writes in pending {
        for outcome in writes.wait().await.unwrap() {
            outcome.unwrap();
        }
    }
    for key in ["k", "other"] {
        assert_eq!(
            value_of(&f.store, key),
            Some(writes.to_string().into_bytes())
        );
    }
    let index = f.store.engine().scan(&ScanRange::prefix(b"x"), 10).unwrap();
    assert!(index.is_empty(), "stale expiry entries: {}", index.len());
    // The first pipeline's snapshots were taken with nothing queued ahead: still current.
    assert!(metric(&f.registry, "ringkv_store_writes_from_snapshot") >= 2.0);
}

/// The record cache never answers with a value older than one already acknowledged, however
/// readers filling it race with the writer (a stale fill would show here as a value going
/// backwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_never_go_back_past_an_acknowledged_write_while_readers_fill_the_cache() {
    // A cache far smaller than the keys, so reads keep missing and filling it.
    let options = StoreOptions {
        cache_bytes: 2048,
        sync: ringkv_replica::SyncPolicy::None,
        ..StoreOptions::default()
    };
    let f = fixture_with(EngineKind::Lsm, Arc::new(SystemClock), options);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the readers however the test ends, or a failed assertion would hang the runtime's
    // shutdown waiting for them.
    struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop_readers = StopOnDrop(Arc::clone(&stop));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (store, stop) = (Arc::clone(&f.store), Arc::clone(&stop));
        readers.push(tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for key in 0..64 {
                    let _ = store.get(KS, format!("k{key}").as_bytes()).unwrap();
                    reads += 1;
                }
            }
            reads
        }));
    }
    for round in 1..=3000u32 {
        let key = format!("k{}", round % 64);
        f.store
            .write(WriteRequest::put(KS, key.as_bytes(), &round.to_be_bytes()))
            .await
            .unwrap();
        let read = value_of(&f.store, &key).expect("just written");
        assert_eq!(
            read,
            round.to_be_bytes(),
            "round {round}: read an older value"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}
