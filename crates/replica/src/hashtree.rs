//! Hash trees of this node's records, kept up to date as writes land: what anti-entropy
//! compares with other replicas (DESIGN.md, "anti-entropy").
//!
//! Every record has a digest: a hash of its key and its stored bytes, so two replicas'
//! digests of a key are equal exactly when their records are (short of a collision). Two
//! structures hold the digests:
//! - the **index**, in the engine (`t | keyspace | key hash | key` → digest, see
//!   [`crate::layout`]): in ring order, so the digests of any range of the ring are one scan;
//! - the **leaves**, in memory: per keyspace, [`LEAVES`] hashes, each the XOR of the digests
//!   of the keys whose ring hash falls in its 1/[`LEAVES`] of the ring. XOR makes a leaf the
//!   same whatever the order its records were written in, and lets one change update it in
//!   one step (out with the old digest, in with the new).
//!
//! The writer never hashes: after each group is stored it hands the group's records (shared
//! bytes, no copy) to a queue, and this module's thread digests them, updates the index and
//! the leaves. The queue is bounded in bytes; past the bound, changes are dropped and the
//! trees are rebuilt, so a burst of writes never waits on hashing nor grows memory without
//! end.
//!
//! A rebuild scans every record (checking each one's checksum, so a damaged record counts as
//! missing and anti-entropy replaces it) at a bounded pace, while changes keep being fed.
//! At a clean shutdown the index is kept and marked clean; the next start reloads the leaves
//! from it instead of rebuilding. After a crash, the trees are rebuilt in the background.
//!
//! A node alone in its ring has no one to compare with: its trees stay off (and its writes
//! unhashed) until [`HashTrees::enable`] is called, which rebuilds them.

use crate::cache::CacheKey;
use crate::layout::{self, KeyspaceId};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ringkv_core::record::Record;
use ringkv_core::ring::key_hash;
use ringkv_storage::{Engine, KeyValue, ScanRange, StorageError, WriteBatch};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bits of a key's ring hash that choose its leaf.
pub const LEAF_BITS: u32 = 16;

/// Leaves of a keyspace's tree: a leaf holds 1/65,536 of the ring.
pub const LEAVES: usize = 1 << LEAF_BITS;

/// The leaf of a key whose ring hash is `hash`.
pub fn leaf_of(hash: u64) -> usize {
    (hash >> (64 - LEAF_BITS)) as usize
}

/// The first and last ring hash of leaf `leaf`.
pub fn leaf_span(leaf: usize) -> (u64, u64) {
    let first = (leaf as u64) << (64 - LEAF_BITS);
    (first, first | (u64::MAX >> LEAF_BITS))
}

/// The digest of the record of `key` stored as `stored` ([`Record::encode`]).
pub fn digest(key: &[u8], stored: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(stored);
    hasher.digest()
}

/// Bytes of queued changes (keys and record bytes) past which changes are dropped and the
/// trees rebuilt instead.
const QUEUE_BYTES_MAX: usize = 64 << 20;

/// Records a rebuild reads per engine scan.
const REBUILD_PAGE: usize = 1_000;

/// Records a rebuild reads per second at most, so that it takes a bounded share of the disk
/// and CPU from clients (100 k records: about 1 s).
const REBUILD_RECORDS_PER_SECOND: u64 = 100_000;

/// The name of the metadata item that says the index was complete at a clean shutdown.
const CLEAN_MARK: &str = "hash-trees-clean";

/// Where the trees stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not kept: the node has had no peer since it started.
    Off,
    /// Being reloaded from a clean index, or rebuilt: not yet to be compared.
    Building,
    /// Up to date (but for the changes still queued).
    Ready,
}

/// One stored change to a record: its engine key and its new bytes (`None`: removed, or
/// found damaged).
struct Change {
    data_key: CacheKey,
    stored: Option<Bytes>,
}

/// What the writers share with the tree thread.
struct Queue {
    changes: Vec<Change>,
    bytes: usize,
    /// Changes were dropped, or could not be applied: the trees must be rebuilt.
    rebuild: bool,
    /// The reload of a clean index is asked for (at open).
    reload: bool,
    stop: bool,
    phase: Phase,
}

/// The hash trees of one node's records, and the thread that keeps them.
pub struct HashTrees {
    engine: Arc<dyn Engine>,
    /// Read on every group the writer stores: whether to queue its changes.
    feeding: AtomicBool,
    queue: Mutex<Queue>,
    /// Wakes the tree thread (changes queued, rebuild asked, stop), and waiters for `Ready`.
    wake: Condvar,
    ready: Condvar,
    /// Each keyspace's leaves.
    leaves: Mutex<HashMap<KeyspaceId, Vec<u64>>>,
    metrics: TreeMetrics,
}

/// The trees' metrics (prefix `ringkv_store_hash_trees_`).
#[derive(Clone, Default)]
struct TreeMetrics {
    rebuilds: Counter,
    dropped: Counter,
    queued: Gauge,
    ready: Gauge,
}

impl HashTrees {
    /// The trees over `engine`'s records: reloaded from the index if the last shutdown was
    /// clean (the mark is removed, so a crash from now on means a rebuild), else off.
    pub(crate) fn open(
        engine: Arc<dyn Engine>,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, StorageError> {
        let mark = layout::meta_key(CLEAN_MARK);
        let clean = engine.get(&mark)?.is_some();
        if clean {
            engine.delete(&mark)?;
            engine.sync()?;
        }
        let metrics = TreeMetrics::default();
        let trees = registry.sub_registry_with_prefix("ringkv_store_hash_trees");
        trees.register(
            "rebuilds",
            "Rebuilds of the hash trees from every record",
            metrics.rebuilds.clone(),
        );
        trees.register(
            "dropped",
            "Changes not queued for the hash trees (the queue was full): each batch of them costs a rebuild",
            metrics.dropped.clone(),
        );
        trees.register(
            "queued",
            "Changes waiting to be hashed into the trees",
            metrics.queued.clone(),
        );
        trees.register(
            "ready",
            "Whether the hash trees are up to date (1) or off or being built (0)",
            metrics.ready.clone(),
        );
        Ok(Arc::new(Self {
            engine,
            feeding: AtomicBool::new(clean),
            queue: Mutex::new(Queue {
                changes: Vec::new(),
                bytes: 0,
                rebuild: false,
                reload: clean,
                stop: false,
                phase: if clean { Phase::Building } else { Phase::Off },
            }),
            wake: Condvar::new(),
            ready: Condvar::new(),
            leaves: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    /// Starts keeping the trees, if they are off: from now on every write is fed, and a
    /// rebuild catches up with the records written before.
    pub fn enable(&self) {
        let mut queue = self.queue.lock();
        if queue.phase == Phase::Off {
            self.feeding.store(true, Ordering::SeqCst);
            queue.phase = Phase::Building;
            queue.rebuild = true;
            self.wake.notify_all();
        }
    }

    /// Rebuilds the trees from what the engine holds, as a restart after a crash would (for
    /// tests and tools that change the engine behind the store's back).
    pub fn rebuild(&self) {
        let mut queue = self.queue.lock();
        if queue.phase != Phase::Off {
            queue.phase = Phase::Building;
            queue.rebuild = true;
            self.metrics.ready.set(0);
            self.wake.notify_all();
        }
    }

    /// Waits up to `timeout` for the trees to be ready; whether they are. Turns them on if
    /// they are off.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        self.enable();
        let deadline = Instant::now() + timeout;
        let mut queue = self.queue.lock();
        while queue.phase != Phase::Ready {
            if self.ready.wait_until(&mut queue, deadline).timed_out() {
                return queue.phase == Phase::Ready;
            }
        }
        true
    }

    /// A copy of keyspace number `keyspace`'s leaves (all zero if it has no record).
    pub fn leaves(&self, keyspace: KeyspaceId) -> Vec<u64> {
        self.leaves
            .lock()
            .get(&keyspace)
            .cloned()
            .unwrap_or_else(|| vec![0; LEAVES])
    }

    /// The key and digest of every record of keyspace number `keyspace` whose ring hash lies
    /// in `[low, high]`, in ring order.
    pub fn digests(
        &self,
        keyspace: KeyspaceId,
        low: u64,
        high: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, StorageError> {
        let mut found = Vec::new();
        self.each_entry(keyspace, low, high, |engine_key, value| {
            if let (Some((_, _, key)), Some(digest)) =
                (layout::parse_tree_key(engine_key), stored_digest(value))
            {
                found.push((key.to_vec(), digest));
            }
        })?;
        Ok(found)
    }

    /// How many records of keyspace number `keyspace` have a ring hash in `[low, high]`:
    /// what [`HashTrees::digests`] would list, counted without copying their keys.
    pub fn count(&self, keyspace: KeyspaceId, low: u64, high: u64) -> Result<u64, StorageError> {
        let mut count = 0;
        self.each_entry(keyspace, low, high, |_, _| count += 1)?;
        Ok(count)
    }

    /// Visits each index entry (engine key, stored digest) of keyspace number `keyspace`
    /// whose ring hash lies in `[low, high]`, in ring order, a page at a time.
    fn each_entry(
        &self,
        keyspace: KeyspaceId,
        low: u64,
        high: u64,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StorageError> {
        let range = layout::tree_range(keyspace, low, high);
        self.each_page(&range, |page| {
            for (engine_key, value) in &page {
                visit(engine_key, value);
            }
            Ok(None::<()>)
        })?;
        Ok(())
    }

    /// Reads `range` of the engine in key order, [`REBUILD_PAGE`] entries at a time, handing
    /// each page to `visit`, until the range is done (`None`) or `visit` stops early with a
    /// reason (`Some`).
    fn each_page<T>(
        &self,
        range: &ScanRange,
        mut visit: impl FnMut(Vec<KeyValue>) -> Result<Option<T>, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let mut resume: Option<Vec<u8>> = None;
        loop {
            let scan = match &resume {
                Some(after) => range.clone().after(after),
                None => range.clone(),
            };
            let page = self.engine.scan(&scan, REBUILD_PAGE)?;
            // A short page is the range's last.
            let next = (page.len() == REBUILD_PAGE)
                .then(|| page.last().map(|(key, _)| key.clone()))
                .flatten();
            if let Some(stop) = visit(page)? {
                return Ok(Some(stop));
            }
            match next {
                Some(last) => resume = Some(last),
                None => return Ok(None),
            }
        }
    }

    /// Queues the records of a group the writer has stored (or, when `stored` failed, asks
    /// for a rebuild, since the engine may hold some of them or none).
    pub(crate) fn feed<'a>(
        &self,
        records: impl Iterator<Item = (&'a CacheKey, Option<&'a Bytes>)>,
        stored: bool,
    ) {
        if !self.feeding.load(Ordering::Relaxed) {
            return;
        }
        let mut queue = self.queue.lock();
        if !stored {
            queue.rebuild = true;
        } else if !queue.rebuild {
            for (data_key, bytes) in records {
                queue.bytes += data_key.len() + bytes.map_or(0, |b| b.len());
                queue.changes.push(Change {
                    data_key: data_key.clone(),
                    stored: bytes.cloned(),
                });
            }
            if queue.bytes > QUEUE_BYTES_MAX {
                self.metrics.dropped.inc_by(queue.changes.len() as u64);
                queue.rebuild = true;
            }
        } else {
            self.metrics.dropped.inc_by(records.count() as u64);
        }
        self.metrics.queued.set(queue.changes.len() as i64);
        self.wake.notify_all();
    }

    /// Feeds the record of `key` in keyspace number `keyspace` as the engine holds it now
    /// (after anti-entropy found it already equal to the merge, in case the index had drifted
    /// from it).
    pub(crate) fn refresh(&self, keyspace: KeyspaceId, key: &[u8]) -> Result<(), StorageError> {
        let data_key = CacheKey::from_slice(&layout::data_key(keyspace, key));
        let stored = self.engine.get(&data_key)?.map(Bytes::from);
        let stored = stored.filter(|bytes| Record::decode(bytes).is_ok());
        self.feed(std::iter::once((&data_key, stored.as_ref())), true);
        Ok(())
    }

    /// Feeds that the record of `key` in keyspace number `keyspace` failed its checksum: it
    /// counts as missing, so that anti-entropy replaces it.
    pub(crate) fn feed_damaged(&self, keyspace: KeyspaceId, key: &[u8]) {
        let data_key = CacheKey::from_slice(&layout::data_key(keyspace, key));
        self.feed(std::iter::once((&data_key, None)), true);
    }

    /// The tree thread: applies queued changes, rebuilds or reloads when asked, until
    /// [`HashTrees::stop`]; returns whether the trees were complete when it stopped.
    pub(crate) fn run(&self) -> bool {
        loop {
            let mut queue = self.queue.lock();
            while queue.changes.is_empty() && !queue.rebuild && !queue.reload && !queue.stop {
                self.wake.wait(&mut queue);
            }
            let work = if queue.rebuild {
                queue.rebuild = false;
                queue.reload = false;
                queue.phase = Phase::Building;
                self.forget(&mut queue);
                Work::Rebuild
            } else if queue.reload {
                queue.reload = false;
                Work::Reload
            } else if !queue.changes.is_empty() {
                Work::Apply(self.take(&mut queue))
            } else {
                return queue.phase == Phase::Ready;
            };
            drop(queue);
            let outcome = match work {
                Work::Apply(changes) => self.apply(changes),
                Work::Rebuild => self.rebuild_all(),
                Work::Reload => self.reload(),
            };
            match outcome {
                Ok(Done::Stopped) => return false,
                Ok(Done::Complete) => {}
                Err(error) => {
                    tracing::error!(%error, "hash trees: storage failed; rebuilding them");
                    std::thread::sleep(Duration::from_secs(1));
                    self.queue.lock().rebuild = true;
                }
            }
        }
    }

    /// Stops the tree thread once it has applied what is queued.
    pub(crate) fn stop(&self) {
        self.queue.lock().stop = true;
        self.wake.notify_all();
    }

    /// Marks the index complete, for the next start to reload (at a clean shutdown, after
    /// the thread stopped with the trees complete and the writer with nothing unfed).
    pub(crate) fn mark_clean(&self) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(layout::meta_key(CLEAN_MARK), Vec::new());
        self.engine.write_durable(batch)
    }

    fn take(&self, queue: &mut Queue) -> Vec<Change> {
        queue.bytes = 0;
        self.metrics.queued.set(0);
        std::mem::take(&mut queue.changes)
    }

    /// Drops what is queued and every leaf: a rebuild starts over.
    fn forget(&self, queue: &mut Queue) {
        self.take(queue);
        self.metrics.ready.set(0);
        self.leaves.lock().clear();
    }

    fn set_ready(&self) {
        let mut queue = self.queue.lock();
        if queue.phase == Phase::Building && !queue.rebuild && !queue.reload {
            queue.phase = Phase::Ready;
            self.metrics.ready.set(1);
            self.ready.notify_all();
        }
    }

    /// Applies changes in the order they were stored (the last change of a key wins).
    fn apply(&self, changes: Vec<Change>) -> Result<Done, StorageError> {
        let mut last: HashMap<CacheKey, Option<Bytes>, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(changes.len(), ahash::RandomState::new());
        for change in changes {
            last.insert(change.data_key, change.stored);
        }
        let updates = last.iter().filter_map(|(data_key, stored)| {
            let (keyspace, key) = layout::parse_data_key(data_key)?;
            let digest = stored.as_ref().map(|bytes| digest(key, bytes));
            Some((keyspace, key, digest))
        });
        self.update(updates)?;
        Ok(Done::Complete)
    }

    /// Sets the digests of keys (`None`: it has no record): in the index, and out of and into
    /// their leaves.
    fn update<'a>(
        &self,
        updates: impl Iterator<Item = (KeyspaceId, &'a [u8], Option<u64>)>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        let mut flips: Vec<(KeyspaceId, usize, u64)> = Vec::new();
        for (keyspace, key, digest) in updates {
            let hash = key_hash(key);
            let index_key = layout::tree_key(keyspace, hash, key);
            let old = self
                .engine
                .get(&index_key)?
                .as_deref()
                .and_then(stored_digest);
            if old == digest {
                continue;
            }
            match digest {
                Some(digest) => batch.put(index_key, digest.to_le_bytes().to_vec()),
                None => batch.delete(index_key),
            }
            flips.push((
                keyspace,
                leaf_of(hash),
                old.unwrap_or(0) ^ digest.unwrap_or(0),
            ));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(batch)?;
        let mut leaves = self.leaves.lock();
        for (keyspace, leaf, flip) in flips {
            leaves.entry(keyspace).or_insert_with(|| vec![0; LEAVES])[leaf] ^= flip;
        }
        Ok(())
    }

    /// Whether the thread should drop what it is doing: to end ([`Done::Stopped`]) or for
    /// another rebuild, which its loop then picks up.
    fn interruption(&self) -> Option<Done> {
        let queue = self.queue.lock();
        if queue.stop {
            Some(Done::Stopped)
        } else {
            queue.rebuild.then_some(Done::Complete)
        }
    }

    /// Applies what was queued meanwhile, between two pages of a rebuild or reload.
    fn catch_up(&self) -> Result<(), StorageError> {
        let changes = self.take(&mut self.queue.lock());
        if !changes.is_empty() {
            self.apply(changes)?;
        }
        Ok(())
    }

    /// Rebuilds the index and the leaves from every record, at a bounded pace, applying the
    /// changes fed meanwhile between pages. Each step reads the index entry it replaces, so
    /// that a change applied before the scan reaches its key and the scan's own view of the
    /// key (at least as recent) leave the leaf right in either order.
    fn rebuild_all(&self) -> Result<Done, StorageError> {
        self.metrics.rebuilds.inc();
        let started = Instant::now();
        // The old index goes first.
        let cleared = self.each_page(&layout::trees_range(), |page| {
            let mut batch = WriteBatch::with_capacity(page.len());
            for (key, _) in page {
                batch.delete(key);
            }
            self.engine.write(batch)?;
            // What was fed meanwhile is of no use: the scan below reads every record as it
            // is then, later than these changes. Kept, it could fill the queue.
            self.take(&mut self.queue.lock());
            Ok(self.interruption())
        })?;
        if let Some(done) = cleared {
            return Ok(done);
        }
        let mut records = 0u64;
        let scanned = self.each_page(&layout::all_data_range(), |page| {
            let last = page.len() < REBUILD_PAGE;
            records += page.len() as u64;
            let updates = page.iter().filter_map(|(data_key, bytes)| {
                let (keyspace, key) = layout::parse_data_key(data_key)?;
                // A damaged record counts as missing: anti-entropy will replace it.
                let digest = Record::decode(bytes).ok().map(|_| digest(key, bytes));
                Some((keyspace, key, digest))
            });
            self.update(updates)?;
            self.catch_up()?;
            if let Some(done) = self.interruption() {
                return Ok(Some(done));
            }
            if !last {
                std::thread::sleep(Duration::from_micros(
                    REBUILD_PAGE as u64 * 1_000_000 / REBUILD_RECORDS_PER_SECOND,
                ));
            }
            Ok(None)
        })?;
        if let Some(done) = scanned {
            return Ok(done);
        }
        self.set_ready();
        tracing::info!(
            records,
            seconds = started.elapsed().as_secs_f64(),
            "hash trees rebuilt"
        );
        Ok(Done::Complete)
    }

    /// Loads the leaves from an index left complete at a clean shutdown.
    fn reload(&self) -> Result<Done, StorageError> {
        let loaded = self.each_page(&layout::trees_range(), |page| {
            let last = page.len() < REBUILD_PAGE;
            {
                let mut leaves = self.leaves.lock();
                for (index_key, value) in &page {
                    if let (Some((keyspace, hash, _)), Some(digest)) =
                        (layout::parse_tree_key(index_key), stored_digest(value))
                    {
                        leaves.entry(keyspace).or_insert_with(|| vec![0; LEAVES])[leaf_of(hash)] ^=
                            digest;
                    }
                }
            }
            Ok(if last { None } else { self.interruption() })
        })?;
        if let Some(done) = loaded {
            return Ok(done);
        }
        // Changes fed while loading apply on top, as they came after the index's state.
        self.catch_up()?;
        self.set_ready();
        Ok(Done::Complete)
    }
}

/// What the thread's work ended with.
enum Done {
    /// It ran to its end, or gave way to another rebuild.
    Complete,
    /// It stopped early: the thread ends.
    Stopped,
}

/// What the thread does next.
enum Work {
    Apply(Vec<Change>),
    Rebuild,
    Reload,
}

/// The digest an index entry holds; `None` if the entry is damaged.
fn stored_digest(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}
