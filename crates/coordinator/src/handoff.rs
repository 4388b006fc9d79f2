//! Hinted handoff (DESIGN.md, "handoff"): a copy of a write that a replica could not take
//! (it was down, or failed, or did not answer in time) becomes a hint, kept durably on the
//! coordinating node, and is delivered when the failure detector sees the replica alive
//! again. So a write reaches every replica without waiting for a read of its key.
//!
//! - [`Handoff::hint`] queues a hint without waiting: the write path never waits on it. A
//!   writer task stores queued hints in batches, one sync each, in the replica's durable
//!   queues ([`ringkv_replica::hints`]); a hint past a bound (this queue, or the replica's
//!   queue in count or bytes) is refused and counted, and anti-entropy covers that data.
//! - [`run_replay`] delivers each replica's hints in the order they were stored, at most
//!   [`REPLAY_BATCH`] per replica every [`REPLAY_INTERVAL`], stopping at the first that
//!   fails; delivered hints are removed. Hints are durable, so replay resumes after a restart
//!   of either side. Hints older than `hint_window_ms` are dropped and counted.

use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ringkv_replica::hints::{Hint, Stored};
use ringkv_replica::MergeRequest;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Hints waiting to be stored; one more is refused (the node is far behind on its disk).
pub const QUEUE_MAX: usize = 16_384;

/// Hints stored with one sync.
const STORE_BATCH_MAX: usize = 1024;

/// How often each replica's hints are looked at.
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(200);

/// Most hints delivered to one replica per [`REPLAY_INTERVAL`]: the replay rate's bound
/// (5,000 a second), so a returning node is not flooded while it also serves clients.
pub const REPLAY_BATCH: usize = 1000;

/// The handoff's metrics (prefix `ringkv_cluster_hints_`).
#[derive(Clone, Default)]
pub struct HandoffMetrics {
    /// Hints stored durably.
    pub stored: Counter,
    /// Hints refused: the queue to the disk, or a replica's queue, was full.
    pub refused: Counter,
    /// Hints delivered to their replica.
    pub replayed: Counter,
    /// Hints dropped after `hint_window_ms` (or found damaged).
    pub expired: Counter,
    /// Hints waiting, per replica.
    pub pending: Family<TargetLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Hints waiting in all.
    pub pending_total: Gauge<u64, AtomicU64>,
}

impl HandoffMetrics {
    /// Counts what storing a hint came to.
    pub fn count(&self, outcome: Stored) {
        match outcome {
            Stored::Queued => self.stored.inc(),
            Stored::Refused => self.refused.inc(),
        };
    }
}

/// The replica a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The replica's node id.
    pub target: String,
}

impl HandoffMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let hints = registry.sub_registry_with_prefix("ringkv_cluster_hints");
        hints.register("stored", "Hints stored durably", metrics.stored.clone());
        hints.register(
            "refused",
            "Hints refused because a queue was full (anti-entropy covers that data)",
            metrics.refused.clone(),
        );
        hints.register("replayed", "Hints delivered", metrics.replayed.clone());
        hints.register(
            "expired",
            "Hints dropped after hint_window_ms, or found damaged",
            metrics.expired.clone(),
        );
        hints.register(
            "pending",
            "Hints waiting for their replica",
            metrics.pending.clone(),
        );
        hints.register(
            "pending_all",
            "Hints waiting, all replicas together",
            metrics.pending_total.clone(),
        );
        metrics
    }
}

/// A node's hinted handoff: the queue hints enter by, and its metrics.
pub struct Handoff {
    queue: mpsc::Sender<(String, Hint)>,
    /// Taken by the writer task when the node's services start.
    receiver: parking_lot::Mutex<Option<mpsc::Receiver<(String, Hint)>>>,
    /// The handoff's metrics.
    pub metrics: HandoffMetrics,
}

impl Handoff {
    /// A handoff whose metrics are registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_MAX);
        Self {
            queue,
            receiver: parking_lot::Mutex::new(Some(receiver)),
            metrics: HandoffMetrics::register(registry),
        }
    }

    /// Keeps `merge`'s record as a hint for replica `target`, made at `now_ms`, without
    /// waiting; refused and counted when the queue to the disk is full.
    pub fn hint(&self, target: &str, merge: &MergeRequest, now_ms: u64) {
        let hint = Hint {
            created_ms: now_ms,
            keyspace: merge.keyspace.clone(),
            key: merge.key.clone(),
            record: merge.record.clone(),
        };
        if self.queue.try_send((target.to_owned(), hint)).is_err() {
            self.metrics.refused.inc();
        }
    }
}

/// Stores queued hints in batches until `shutdown` turns true, then stores what is still
/// queued.
pub async fn run_writer(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut receiver) = node.handoff.receiver.lock().take() else {
        return;
    };
    loop {
        let received = tokio::select! {
            first = receiver.recv() => Some(first),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let first = match received {
            Some(first) => first,
            // Stopping: what is queued is still stored.
            None => {
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < STORE_BATCH_MAX {
            match receiver.try_recv() {
                Ok(hint) => batch.push(hint),
                Err(_) => break,
            }
        }
        let writer = Arc::clone(&node);
        let stored = tokio::task::spawn_blocking(move || writer.store.hints().store(&batch)).await;
        let metrics = &node.handoff.metrics;
        match stored {
            Ok(Ok(outcomes)) => outcomes
                .into_iter()
                .for_each(|outcome| metrics.count(outcome)),
            Ok(Err(error)) => tracing::warn!(%error, "cannot store hints"),
            Err(error) => tracing::warn!(%error, "the hint writer failed"),
        }
        refresh_pending(&node);
    }
}

/// Delivers hints to their replicas every [`REPLAY_INTERVAL`] until `shutdown` turns true.
pub async fn run_replay(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(REPLAY_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for (target, _) in node.store.hints().queues() {
            replay_to(&node, &target).await;
        }
        refresh_pending(&node);
    }
}

/// One round for one replica: drops its expired hints, and if the failure detector sees it
/// alive, delivers up to [`REPLAY_BATCH`] in order, stopping at the first that fails.
async fn replay_to(node: &Arc<Node>, target: &str) {
    let view = node.view();
    let alive = view.members.contains_key(target) && !view.is_down(target);
    let hints = node.store.hints();
    let batch = match hints.oldest(target, REPLAY_BATCH) {
        Ok(batch) => batch,
        Err(error) => {
            tracing::warn!(%error, target, "cannot read hints");
            return;
        }
    };
    let metrics = &node.handoff.metrics;
    for stored in batch {
        let stored = match stored {
            Ok(stored) => stored,
            Err((sequence, bytes)) => {
                tracing::error!(target, sequence, "dropping a damaged hint");
                let _ = hints.remove(target, sequence, bytes);
                metrics.expired.inc();
                continue;
            }
        };
        // Checked against the clock now, not at the batch's start: deliveries before it may
        // have taken a while, and the reaper counts on no hint landing past its window.
        let expired_before = node.now_ms().saturating_sub(node.config.hint_window_ms);
        if stored.hint.created_ms < expired_before {
            let _ = hints.remove(target, stored.sequence, stored.bytes);
            metrics.expired.inc();
            continue;
        }
        if !alive || !deliver(node, &view, target, &stored.hint).await {
            return;
        }
        if let Err(error) = hints.remove(target, stored.sequence, stored.bytes) {
            tracing::warn!(%error, target, "cannot remove a delivered hint");
            return;
        }
        metrics.replayed.inc();
    }
}

/// Merges a hint's record into replica `target`'s copy; whether it took it.
async fn deliver(
    node: &Arc<Node>,
    view: &crate::gossip::ClusterView,
    target: &str,
    hint: &Hint,
) -> bool {
    let conflict = node.keyspaces.conflict_of(&hint.keyspace);
    let merge = PeerRequest::Merge(MergeRequest {
        keyspace: hint.keyspace.clone(),
        key: hint.key.clone(),
        record: hint.record.clone(),
        conflict,
    });
    matches!(
        crate::coordinator::ask(node, view, target, merge).await,
        Ok(PeerResponse::Merged(Ok(_)))
    )
}

/// Brings the pending gauges up to date with the durable queues.
fn refresh_pending(node: &Node) {
    let metrics = &node.handoff.metrics;
    metrics.pending.clear();
    let mut total = 0;
    for (target, queue) in node.store.hints().queues() {
        total += queue.count;
        metrics
            .pending
            .get_or_create(&TargetLabels { target })
            .set(queue.count as i64);
    }
    metrics.pending_total.set(total);
}
