//! Background upkeep of a local store, on one thread: the sweeper, which physically removes
//! expired values and tombstones once their grace period has passed (so disk use falls after
//! mass expiry), and the periodic fsync of `sync = periodic`.
//!
//! The sweeper reads only the due part of the expiry index and hands the entries to the writer
//! thread, which re-checks each record before removing anything: a record rewritten since the
//! entry was made is left alone.
//!
//! Under [`Reaping::WhenConfirmed`] this thread does not sweep: the coordinator walks the
//! index instead ([`LocalStore::sweep_due`](crate::LocalStore::sweep_due)), because only it
//! can tell whether the other replicas hold a wholly dead record before it is removed.

use crate::error::ReplicaError;
use crate::layout;
use crate::layout::ExpiryEntry;
use crate::store::{Reaping, Shared, SyncPolicy};
use crate::writer::Job;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Index entries handed to the writer per sweep job.
const SWEEP_BATCH_MAX: usize = 512;

/// Sweep jobs per pass, so one pass cannot hold the thread for ever.
const SWEEP_JOBS_PER_PASS_MAX: usize = 1000;

/// Runs the sweeper and the periodic sync until `stop` is closed.
pub(crate) fn run_background(shared: Arc<Shared>, writer: mpsc::Sender<Job>, stop: Receiver<()>) {
    let sweep_every = Duration::from_millis(shared.options.sweep_interval_ms.max(10));
    let sync_every = Duration::from_millis(shared.options.sync_interval_ms.max(10));
    let tick = sweep_every.min(sync_every);
    let (mut last_sweep, mut last_sync) = (Instant::now(), Instant::now());
    loop {
        match stop.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.options.sync == SyncPolicy::Periodic && last_sync.elapsed() >= sync_every {
            last_sync = Instant::now();
            shared.metrics.syncs.inc();
            if let Err(error) = shared.engine.sync() {
                tracing::error!(%error, "periodic sync failed");
            }
        }
        let sweeps = shared.options.reaping == Reaping::BySweeper;
        if sweeps && last_sweep.elapsed() >= sweep_every {
            last_sweep = Instant::now();
            if let Err(error) = sweep_pass(&shared, &writer) {
                tracing::error!(%error, "sweep failed");
            }
        }
    }
}

/// One sweeper pass: removes what is due, and once enough has been removed since the last
/// compaction, asks the engine to reclaim the space (an LSM tree only frees it by compacting).
pub(crate) fn sweep_pass(shared: &Shared, writer: &mpsc::Sender<Job>) -> Result<u64, ReplicaError> {
    let swept = sweep_due(shared, writer)?;
    count_swept(shared, swept)?;
    Ok(swept)
}

/// Counts `swept` siblings removed, and compacts once enough were since the last compaction.
pub(crate) fn count_swept(shared: &Shared, swept: u64) -> Result<(), ReplicaError> {
    let pending = shared
        .swept_since_compaction
        .fetch_add(swept, Ordering::AcqRel)
        + swept;
    if pending >= shared.options.compact_after_swept {
        shared.swept_since_compaction.store(0, Ordering::Release);
        shared.engine.compact()?;
    }
    shared.metrics.disk_bytes.set(shared.engine.disk_bytes());
    Ok(())
}

/// Up to `limit` expiry-index entries due at or before `cutoff_ms`, after the index key
/// `after`; with the index key to continue after, `None` once the due part is exhausted.
#[allow(clippy::type_complexity)]
pub(crate) fn due_entries(
    shared: &Shared,
    cutoff_ms: u64,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<ExpiryEntry>, Option<Vec<u8>>), ReplicaError> {
    let mut range = layout::expiry_due_range(cutoff_ms);
    if let Some(after) = after {
        range = range.after(after);
    }
    let due = shared.engine.scan(&range, limit.max(1))?;
    let next = (due.len() >= limit.max(1))
        .then(|| due.last().map(|(key, _)| key.to_vec()))
        .flatten();
    let entries = due
        .iter()
        .filter_map(|(key, _)| layout::parse_expiry_key(key))
        .collect();
    Ok((entries, next))
}

/// Removes everything whose grace period has passed; returns how many siblings went.
pub(crate) fn sweep_due(shared: &Shared, writer: &mpsc::Sender<Job>) -> Result<u64, ReplicaError> {
    let mut swept = 0;
    for _ in 0..SWEEP_JOBS_PER_PASS_MAX {
        let cutoff = shared
            .clock
            .now_ms()
            .saturating_sub(shared.options.tombstone_grace_ms);
        let (entries, next) = due_entries(shared, cutoff, None, SWEEP_BATCH_MAX)?;
        if entries.is_empty() {
            break;
        }
        let (reply, answer) = oneshot::channel();
        writer
            .blocking_send(Job::Sweep { entries, reply })
            .map_err(|_| ReplicaError::ShuttingDown)?;
        swept += answer
            .blocking_recv()
            .map_err(|_| ReplicaError::ShuttingDown)??
            .removed;
        if next.is_none() {
            break;
        }
    }
    Ok(swept)
}
