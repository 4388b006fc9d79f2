//! The local store's metrics, registered in the node's own registry (one registry per node
//! object, so in-process clusters in tests keep separate figures).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Counters and histograms of one [`LocalStore`](crate::LocalStore).
#[derive(Clone)]
pub struct StoreMetrics {
    /// Reads or writes that met damaged data.
    pub corruption: Counter,
    /// Writes applied.
    pub writes: Counter,
    /// Records from other replicas that changed the local copy (replication, repair).
    pub merges: Counter,
    /// Writes refused because their condition did not hold.
    pub condition_failures: Counter,
    /// Plain SETs applied from their submitter's snapshot of the record they replace, without
    /// the writer looking it up (see [`crate::cache::RecordCache::snapshot`]).
    pub writes_from_snapshot: Counter,
    /// Writes per group commit.
    pub group_size: Histogram,
    /// How long the writer took to apply each group and hand it to the engine, before its
    /// sync (etcd's `backend_commit_duration_seconds`): with `sync_seconds`, where a write's
    /// time in the store goes.
    pub group_seconds: Histogram,
    /// Explicit syncs (fsyncs) issued.
    pub syncs: Counter,
    /// How long each explicit sync took, in seconds: the disk's share of a write's latency
    /// under `sync = always` (etcd's `wal_fsync_duration_seconds`).
    pub sync_seconds: Histogram,
    /// Records or siblings the sweeper removed.
    pub swept: Counter,
    /// Bytes the engine occupies on disk, refreshed by the sweeper.
    pub disk_bytes: Gauge<u64, AtomicU64>,
    /// Entries the engine holds, roughly (records plus expiry-index entries).
    pub engine_entries: Gauge<u64, AtomicU64>,
    /// Changes the engine's log held that it refused to replay when the node started
    /// (keys longer than any engine stores, left by an earlier build).
    pub changes_refused_at_open: Gauge<u64, AtomicU64>,
}

impl StoreMetrics {
    /// Creates the metrics and registers them under `registry` (prefix `ringkv_store_`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            corruption: Counter::default(),
            writes: Counter::default(),
            merges: Counter::default(),
            condition_failures: Counter::default(),
            writes_from_snapshot: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            group_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            syncs: Counter::default(),
            sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            swept: Counter::default(),
            disk_bytes: Gauge::default(),
            engine_entries: Gauge::default(),
            changes_refused_at_open: Gauge::default(),
        };
        let store = registry.sub_registry_with_prefix("ringkv_store");
        store.register(
            "corruption",
            "Reads or writes that met damaged data",
            metrics.corruption.clone(),
        );
        store.register(
            "writes",
            "Writes applied to the local store",
            metrics.writes.clone(),
        );
        store.register(
            "merges",
            "Records from other replicas that changed the local copy",
            metrics.merges.clone(),
        );
        store.register(
            "condition_failures",
            "Conditional writes refused because the condition did not hold",
            metrics.condition_failures.clone(),
        );
        store.register(
            "writes_from_snapshot",
            "Plain SETs applied from their submitter's cached view of the record they replace",
            metrics.writes_from_snapshot.clone(),
        );
        store.register(
            "group_commit_writes",
            "Writes per group commit",
            metrics.group_size.clone(),
        );
        store.register(
            "group_commit_seconds",
            "Time the writer took to apply and store each group commit, before its sync",
            metrics.group_seconds.clone(),
        );
        store.register(
            "syncs",
            "Explicit syncs (fsync) issued",
            metrics.syncs.clone(),
        );
        store.register(
            "sync_seconds",
            "Time each explicit sync (fsync) took",
            metrics.sync_seconds.clone(),
        );
        store.register(
            "swept",
            "Expired values and tombstones removed",
            metrics.swept.clone(),
        );
        store.register(
            "disk_bytes",
            "Bytes the storage engine occupies on disk",
            metrics.disk_bytes.clone(),
        );
        store.register(
            "engine_entries",
            "Entries the storage engine holds, roughly (records plus expiry-index entries)",
            metrics.engine_entries.clone(),
        );
        store.register(
            "changes_refused_at_open",
            "Logged changes the engine refused to replay at start (keys no engine stores)",
            metrics.changes_refused_at_open.clone(),
        );
        metrics
    }
}
