//! Reaping tombstones (DESIGN.md, "deletes"): a record whose every sibling is dead — deleted,
//! or expired — is removed for good only once every replica of its key is seen to hold that
//! same record or nothing. Then no replica keeps an older write the tombstone replaced, so the
//! delete can never come back, however long a replica was away: one that missed the delete
//! keeps the tombstone here until anti-entropy (or a read) has brought it the delete.
//!
//! Each node reaps what it holds, on the sweeper's schedule:
//! 1. It walks its expiry index as far as the grace period (and, while it has peers, the hint
//!    window plus the RPC timeout plus the clock skew: a hint or a delayed copy of a write
//!    older than the delete must not land after the tombstone is gone). Dead siblings beside live ones are dropped at once by the store; the record and
//!    its causal context stay.
//! 2. For each wholly dead record, it asks every replica of the key, the failure detector
//!    seeing them all alive, whether it holds the same record (by fingerprint) or none.
//! 3. Where all say yes, it asks each to remove the record if it still has that fingerprint.
//!
//! A key is left for a later round when a replica is down, holds something else, or fails to
//! answer; a replica that missed a removal keeps the tombstone, which anti-entropy copies
//! back to the others, and a later round reaps it again. A node alone in its ring confirms
//! with itself only.

use crate::coordinator::ask;
use crate::gossip::ClusterView;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, RemoteError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use ringkv_replica::layout::ExpiryEntry;
use ringkv_replica::ReplicaError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Expiry-index entries read per step.
const STEP_ENTRIES: usize = 512;

/// Steps per round while the node has peers (each step asks them): a round's work is
/// bounded, and the next round goes on where it stopped.
const STEPS_PER_ROUND: usize = 20;

/// Steps per round for a node alone in its ring, which asks no one: as many as its sweeper
/// would take, so mass expiry is reclaimed as fast as on a store of its own.
const STEPS_PER_ROUND_ALONE: usize = 1_000;

/// Most records one [`PeerRequest::Reap`] names.
pub const REAP_RECORDS_MAX: usize = STEP_ENTRIES;

/// The reaper's metrics (prefix `ringkv_cluster_tombstones_`).
#[derive(Clone, Default)]
pub struct ReaperMetrics {
    /// Wholly dead records removed from every replica of their key.
    pub reaped: Counter,
    /// Wholly dead records kept for a later round: a replica was down, failed, or held
    /// something else.
    pub unconfirmed: Counter,
}

impl ReaperMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let tombstones = registry.sub_registry_with_prefix("ringkv_cluster_tombstones");
        tombstones.register(
            "reaped",
            "Wholly dead records (tombstones, expired values) removed once every replica of \
             their key was seen to hold them or nothing",
            metrics.reaped.clone(),
        );
        tombstones.register(
            "unconfirmed",
            "Wholly dead records kept for a later round because a replica was down, failed or \
             held something else",
            metrics.unconfirmed.clone(),
        );
        metrics
    }
}

/// Runs a reaping round every `sweep_interval_ms` until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(node.config.sweep_interval_ms.max(10));
    let mut cursor = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match round(&node, cursor.take()).await {
            Ok(next) => cursor = next,
            Err(error) => tracing::warn!(%error, "reaping round failed"),
        }
    }
}

/// One round from index key `cursor`: sweeps and reaps a bounded number of pages of due
/// entries. Returns where the next round goes on (`None`: from the start).
pub async fn round(
    node: &Arc<Node>,
    mut cursor: Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ReplicaError> {
    let steps = if node.is_alone() {
        STEPS_PER_ROUND_ALONE
    } else {
        STEPS_PER_ROUND
    };
    for _ in 0..steps {
        let view = node.view();
        let cutoff = node.now_ms().saturating_sub(reap_age_ms(node, &view));
        let (swept, next) = node
            .store
            .sweep_due(cutoff, cursor.take(), STEP_ENTRIES)
            .await?;
        tracing::trace!(
            cutoff,
            wholly_dead = swept.dead.len(),
            siblings_removed = swept.removed,
            "reaper step"
        );
        if !swept.dead.is_empty() {
            reap_confirmed(node, &view, swept.dead).await;
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(None),
        }
    }
    Ok(cursor)
}

/// How long a record must have been dead before it is reaped: the grace period, and while the
/// node has peers, long enough that no older write of its key can still arrive. An older
/// write travels as a copy sent no later than the delete, or as a hint delivered at most the
/// hint window after its write; either is dropped unread once it is the RPC timeout plus the
/// clock skew late. (Found by the fault lab: with only the hint window, a hint checked just
/// before its window closed landed after the reap and brought its value back.)
fn reap_age_ms(node: &Node, view: &ClusterView) -> u64 {
    let config = &node.config;
    if view.is_single() {
        return config.tombstone_grace_ms;
    }
    let latest_arrival = config
        .hint_window_ms
        .saturating_add(config.rpc_timeout_ms)
        .saturating_add(config.clock_skew_max_ms);
    config.tombstone_grace_ms.max(latest_arrival)
}

/// Removes each of `dead` (index entries with their records' fingerprints) from every replica
/// of its key, where every replica confirms it holds the same record or none.
async fn reap_confirmed(node: &Arc<Node>, view: &ClusterView, dead: Vec<(ExpiryEntry, u64)>) {
    let mut by_keyspace: BTreeMap<String, Vec<(Vec<u8>, u64)>> = BTreeMap::new();
    for (entry, fingerprint) in dead {
        by_keyspace
            .entry(entry.keyspace)
            .or_default()
            .push((entry.key, fingerprint));
    }
    for (keyspace, records) in by_keyspace {
        let total = records.len() as u64;
        let reaped = reap_keyspace(node, view, &keyspace, records).await;
        node.reaper.reaped.inc_by(reaped);
        node.reaper.unconfirmed.inc_by(total - reaped);
    }
}

/// [`reap_confirmed`] for the records of one keyspace; returns how many went everywhere.
async fn reap_keyspace(
    node: &Arc<Node>,
    view: &ClusterView,
    keyspace: &str,
    records: Vec<(Vec<u8>, u64)>,
) -> u64 {
    // A record of a keyspace this node does not know has no known replicas: keep it.
    let Some(def) = node.keyspaces.get(keyspace) else {
        return 0;
    };
    let mut holders: HashMap<String, Vec<usize>> = HashMap::new();
    let mut confirmed = vec![false; records.len()];
    for (index, (key, _)) in records.iter().enumerate() {
        let replicas = replicas_of(view, key, def.replication as usize);
        if replicas.iter().any(|id| view.is_down(id)) {
            continue;
        }
        confirmed[index] = true;
        for id in replicas {
            holders.entry(id).or_default().push(index);
        }
    }
    // Every replica must say it holds the record or none before any removes it.
    for (index, held) in ask_all(node, view, keyspace, &records, &holders, false).await {
        confirmed[index] &= held;
    }
    for indexes in holders.values_mut() {
        indexes.retain(|&index| confirmed[index]);
    }
    let mut gone = confirmed.clone();
    for (index, removed) in ask_all(node, view, keyspace, &records, &holders, true).await {
        gone[index] &= removed;
    }
    for (index, (key, fingerprint)) in records.iter().enumerate() {
        if confirmed[index] {
            tracing::debug!(
                key = %String::from_utf8_lossy(key),
                fingerprint,
                everywhere = gone[index],
                "reaped"
            );
        }
    }
    gone.iter().filter(|&&g| g).count() as u64
}

/// The replicas of `key` in a keyspace of `replication` copies (this node alone when it is
/// alone in its ring), and the members joining as its replicas: one may hold an older copy
/// streamed to it, which would come back once it serves.
fn replicas_of(view: &ClusterView, key: &[u8], replication: usize) -> Vec<String> {
    if view.is_single() {
        return vec![view.me.clone()];
    }
    let mut replicas: Vec<String> = view
        .ring
        .preference_list(key, replication)
        .into_iter()
        .map(|member| member.id.clone())
        .collect();
    replicas.extend(view.joining_replicas(key, replication));
    replicas
}

/// Asks every holder about its records (by index into `records`) at once: whether it holds
/// each or none (`remove == false`), or to remove each (`remove == true`). Returns
/// `(index, yes)` for every record asked about; a holder that failed answers no for all of
/// its records.
async fn ask_all(
    node: &Arc<Node>,
    view: &ClusterView,
    keyspace: &str,
    records: &[(Vec<u8>, u64)],
    holders: &HashMap<String, Vec<usize>>,
    remove: bool,
) -> Vec<(usize, bool)> {
    let calls = holders
        .iter()
        .filter(|(_, indexes)| !indexes.is_empty())
        .map(|(id, indexes)| async move {
            let request = PeerRequest::Reap {
                keyspace: keyspace.to_owned(),
                records: indexes.iter().map(|&i| records[i].clone()).collect(),
                remove,
            };
            let answers = match ask(node, view, id, request).await {
                Ok(PeerResponse::Reaped(Ok(answers))) if answers.len() == indexes.len() => answers,
                Ok(other) => {
                    tracing::debug!(peer = %id, ?other, "reaping: unexpected answer");
                    vec![false; indexes.len()]
                }
                Err(error) => {
                    tracing::debug!(peer = %id, %error, "reaping: no answer");
                    vec![false; indexes.len()]
                }
            };
            indexes.iter().copied().zip(answers).collect::<Vec<_>>()
        });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Answers a peer's [`PeerRequest::Reap`] from the local replica: per record, whether the
/// replica holds it (same fingerprint) or no record at all; or, with `remove`, removes each
/// still holding that fingerprint and says whether none is held now.
pub async fn answer(
    node: &Arc<Node>,
    keyspace: String,
    records: Vec<(Vec<u8>, u64)>,
    remove: bool,
) -> Result<Vec<bool>, RemoteError> {
    if records.len() > REAP_RECORDS_MAX {
        return Err(RemoteError::Invalid(format!(
            "{} records asked about; at most {REAP_RECORDS_MAX}",
            records.len()
        )));
    }
    if remove {
        return Ok(node.store.reap(&keyspace, records).await?);
    }
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || {
        records
            .iter()
            .map(
                |(key, fingerprint)| match node.store.get_record(&keyspace, key) {
                    Ok(held) => Ok(held.is_none_or(|record| record.fingerprint() == *fingerprint)),
                    // A damaged copy is not the record: anti-entropy replaces it first.
                    Err(ReplicaError::Corruption { .. }) => Ok(false),
                    Err(error) => Err(error),
                },
            )
            .collect::<Result<Vec<bool>, ReplicaError>>()
    })
    .await
    .map_err(|error| RemoteError::Failed(error.to_string()))?
    .map_err(RemoteError::from)
}
