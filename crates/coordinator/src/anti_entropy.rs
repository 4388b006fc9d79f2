//! Anti-entropy (DESIGN.md, "anti-entropy"): replicas compare hash trees of the keys they
//! share and repair what differs, so a copy that every other path missed (a wiped disk, a
//! hint refused or expired, a crash before a hint was stored) converges without any read of
//! its key.
//!
//! Each round, this node exchanges with every live peer, for every keyspace:
//! 1. Both sides hash the records they hold of the keys they both replicate into a tree of
//!    [`SEGMENTS`] leaves (a key's leaf is the top bits of its ring hash; a leaf is the XOR of
//!    its records' digests, so equal sets of records give equal leaves in any order).
//! 2. Only the differing leaves are looked into: the peer sends each key's digest there, and
//!    keys whose digests differ, or that one side lacks, are repaired.
//! 3. A repair reads the peer's record, merges it with the local one by the causal rules
//!    ([`Record::sync`]), stores the merge locally and sends it back: both directions in
//!    one step. A record that fails its checksum on one side is replaced from the other.
//!
//! What this first version does not do yet: trees are rebuilt by a scan at each exchange
//! rather than kept up to date as writes land, and tombstones are still purged by age, not
//! by confirmation that every replica holds them.

use crate::gossip::ClusterView;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use ringkv_core::record::Record;
use ringkv_replica::MergeRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Leaves of a hash tree: a round sends this many hashes per keyspace and peer.
pub const SEGMENTS: usize = 1024;

/// Most keys repaired per exchange, so a round's work (and its effect on clients) is bounded;
/// the rest wait for the next round.
const REPAIRS_PER_EXCHANGE_MAX: usize = 20_000;

/// Repairs in flight at once in an exchange: enough to share group commits, few enough to
/// leave the node to its clients.
const REPAIRS_IN_FLIGHT: usize = 16;

/// Records read from the store per scan step.
const SCAN_PAGE: usize = 1_000;

/// The leaves of one side's tree over the keys two replicas share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// One hash per segment.
    pub leaves: Vec<u64>,
}

/// A node's anti-entropy: its metrics and the state of its rounds.
pub struct AntiEntropy {
    /// The metrics.
    pub metrics: AntiEntropyMetrics,
    /// The last round completed and the one under way, if any.
    progress: parking_lot::Mutex<RoundProgress>,
    /// Held by the round under way: rounds never overlap.
    running: tokio::sync::Mutex<()>,
}

/// Where a node's rounds stand, as `cluster status` and `cluster repair` show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundProgress {
    /// Whether a round is under way.
    pub running: bool,
    /// Exchanges (peer × keyspace) the round under way (or the last) has.
    pub exchanges_total: u64,
    /// Of those, how many are done.
    pub exchanges_done: u64,
    /// Tree leaves that differed in the round under way (or the last).
    pub segments_differing: u64,
    /// Keys the round looked into and brought to their merge, here or on a peer.
    pub keys_repaired: u64,
    /// When the last round finished, unix ms (0: none yet).
    pub last_finished_ms: u64,
    /// Tree leaves that differed in the last finished round: the node's divergence from its
    /// peers.
    pub last_divergence: u64,
}

impl AntiEntropy {
    /// A node's anti-entropy, its metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            metrics: AntiEntropyMetrics::register(registry),
            progress: parking_lot::Mutex::new(RoundProgress::default()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Where the rounds stand.
    pub fn progress(&self) -> RoundProgress {
        self.progress.lock().clone()
    }
}

/// The anti-entropy metrics (prefix `ringkv_cluster_anti_entropy_`).
#[derive(Clone, Default)]
pub struct AntiEntropyMetrics {
    /// Exchanges completed (one per peer and keyspace).
    pub exchanges: Counter,
    /// Leaves that differed and were looked into.
    pub segments_compared: Counter,
    /// Keys whose local copy changed by a repair.
    pub repaired_here: Counter,
    /// Keys whose copy on the peer changed by a repair.
    pub repaired_there: Counter,
    /// Bytes of trees, digests and records exchanged (as encoded for the wire, roughly).
    pub bytes: Counter,
}

impl AntiEntropyMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let ae = registry.sub_registry_with_prefix("ringkv_cluster_anti_entropy");
        ae.register(
            "exchanges",
            "Tree exchanges completed",
            metrics.exchanges.clone(),
        );
        ae.register(
            "segments_compared",
            "Differing tree leaves looked into",
            metrics.segments_compared.clone(),
        );
        ae.register(
            "repaired_here",
            "Keys whose local copy a repair changed",
            metrics.repaired_here.clone(),
        );
        ae.register(
            "repaired_there",
            "Keys whose copy on the peer a repair changed",
            metrics.repaired_there.clone(),
        );
        ae.register(
            "bytes",
            "Bytes of trees, digests and records exchanged",
            metrics.bytes.clone(),
        );
        metrics
    }
}

/// The leaf of `key`.
fn segment(key: &[u8]) -> usize {
    (ringkv_core::ring::key_hash(key) >> (64 - SEGMENTS.trailing_zeros())) as usize
}

/// What a record hashes to: its key and its whole stored form.
fn digest(key: &[u8], record: &Record) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(&record.encode());
    hasher.digest()
}

/// Whether this node and `peer` are both replicas of `key` in a keyspace of `replication`.
fn shared(view: &ClusterView, key: &[u8], replication: usize, peer: &str) -> bool {
    let replicas = view.ring.preference_list(key, replication);
    replicas.iter().any(|m| m.id == view.me) && replicas.iter().any(|m| m.id == peer)
}

/// Walks this node's records of `keyspace` that it shares with `peer`, in key order, giving
/// each key, its leaf and digest to `visit` (only those in `segments`, when given).
fn walk_shared(
    node: &Node,
    keyspace: &str,
    peer: &str,
    segments: Option<&[u16]>,
    mut visit: impl FnMut(Vec<u8>, usize, u64),
) -> Result<(), String> {
    let Some(def) = node.keyspaces.get(keyspace) else {
        return Ok(());
    };
    let view = node.view();
    let replication = def.replication as usize;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (records, next) = node
            .store
            .scan_records(keyspace, b"", after.as_deref(), SCAN_PAGE)
            .map_err(|error| error.to_string())?;
        for (key, record) in records {
            let leaf = segment(&key);
            let wanted = segments.is_none_or(|s| s.contains(&(leaf as u16)));
            if wanted && shared(&view, &key, replication, peer) {
                let digest = digest(&key, &record);
                visit(key, leaf, digest);
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// This node's tree of `keyspace` over the keys it shares with `peer`.
pub fn tree(node: &Node, keyspace: &str, peer: &str) -> Result<Tree, String> {
    let mut leaves = vec![0u64; SEGMENTS];
    walk_shared(node, keyspace, peer, None, |_, leaf, digest| {
        leaves[leaf] ^= digest
    })?;
    Ok(Tree { leaves })
}

/// This node's key digests of `keyspace` in `segments`, over the keys it shares with `peer`.
pub fn digests(
    node: &Node,
    keyspace: &str,
    peer: &str,
    segments: &[u16],
) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let mut found = Vec::new();
    walk_shared(node, keyspace, peer, Some(segments), |key, _, digest| {
        found.push((key, digest))
    })?;
    Ok(found)
}

/// Runs a round every `anti_entropy_interval_ms` until `shutdown` turns true (never when
/// the interval is 0).
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let interval_ms = node.config.anti_entropy_interval_ms;
    if interval_ms == 0 {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_millis(interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        round(&node, None).await;
    }
}

/// One exchange with every live peer for every keyspace (or only `keyspace`); waits for a
/// round under way to finish first.
pub async fn round(node: &Arc<Node>, keyspace: Option<&str>) {
    let _running = node.anti_entropy.running.lock().await;
    let view = node.view();
    let peers: Vec<String> = view
        .members
        .keys()
        .filter(|id| **id != view.me && !view.is_down(id))
        .cloned()
        .collect();
    let keyspaces: Vec<String> = node
        .keyspaces
        .list()
        .into_iter()
        .map(|def| def.name)
        .filter(|name| keyspace.is_none_or(|wanted| wanted == name))
        .collect();
    let progress = &node.anti_entropy.progress;
    {
        let mut progress = progress.lock();
        progress.running = true;
        progress.exchanges_total = (peers.len() * keyspaces.len()) as u64;
        progress.exchanges_done = 0;
        progress.segments_differing = 0;
        progress.keys_repaired = 0;
    }
    for peer in &peers {
        for keyspace in &keyspaces {
            match exchange(node, &view, peer, keyspace).await {
                Ok((differing, repaired)) => {
                    let mut progress = progress.lock();
                    progress.segments_differing += differing;
                    progress.keys_repaired += repaired;
                }
                Err(failure) => {
                    tracing::debug!(peer, keyspace, %failure, "anti-entropy exchange failed")
                }
            }
            progress.lock().exchanges_done += 1;
        }
    }
    let mut progress = progress.lock();
    progress.running = false;
    progress.last_finished_ms = node.now_ms();
    progress.last_divergence = progress.segments_differing;
}

/// Compares this node's tree of `keyspace` with `peer`'s and repairs the keys that differ;
/// returns how many leaves differed and how many keys were looked into.
async fn exchange(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
) -> Result<(u64, u64), String> {
    let theirs = match ask(node, view, peer, keyspace, None).await? {
        PeerResponse::Tree(Ok(tree)) => tree,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let ours = answer(node, keyspace.to_owned(), peer.to_owned(), None).await?;
    let PeerResponse::Tree(Ok(ours)) = ours else {
        return Err("no local tree".into());
    };
    let differing: Vec<u16> = (0..SEGMENTS)
        .filter(|&leaf| ours.leaves.get(leaf) != theirs.leaves.get(leaf))
        .map(|leaf| leaf as u16)
        .collect();
    let metrics = &node.anti_entropy.metrics;
    metrics.exchanges.inc();
    metrics.bytes.inc_by(2 * (SEGMENTS * 8) as u64);
    if differing.is_empty() {
        return Ok((0, 0));
    }
    let differing_count = differing.len() as u64;
    metrics.segments_compared.inc_by(differing.len() as u64);
    let theirs = match ask(node, view, peer, keyspace, Some(differing.clone())).await? {
        PeerResponse::Digests(Ok(digests)) => digests,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let ours = answer(node, keyspace.to_owned(), peer.to_owned(), Some(differing)).await?;
    let PeerResponse::Digests(Ok(ours)) = ours else {
        return Err("no local digests".into());
    };
    let digest_bytes = |digests: &[(Vec<u8>, u64)]| {
        digests
            .iter()
            .map(|(key, _)| key.len() as u64 + 10)
            .sum::<u64>()
    };
    metrics
        .bytes
        .inc_by(digest_bytes(&theirs) + digest_bytes(&ours) + 2 * differing_count);
    let theirs: BTreeMap<Vec<u8>, u64> = theirs.into_iter().collect();
    let ours: BTreeMap<Vec<u8>, u64> = ours.into_iter().collect();
    let mut keys: Vec<Vec<u8>> = theirs
        .iter()
        .filter(|(key, digest)| ours.get(*key) != Some(digest))
        .map(|(key, _)| key)
        .chain(ours.keys().filter(|key| !theirs.contains_key(*key)))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(REPAIRS_PER_EXCHANGE_MAX);
    let repaired = keys.len() as u64;
    let repairs = keys
        .into_iter()
        .map(|key| async move { repair(node, view, peer, keyspace, &key).await });
    let mut repairs = futures_util::stream::iter(repairs).buffer_unordered(REPAIRS_IN_FLIGHT);
    while let Some(outcome) = repairs.next().await {
        outcome?;
    }
    Ok((differing_count, repaired))
}

/// Brings one key to the merge of this node's and `peer`'s records, on both.
async fn repair(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
    key: &[u8],
) -> Result<(), String> {
    let read = PeerRequest::Read {
        keyspace: keyspace.to_owned(),
        key: key.to_vec(),
    };
    let theirs = match crate::coordinator::ask(node, view, peer, read).await? {
        PeerResponse::Record(Ok(record)) => record,
        // Their copy is damaged: ours replaces it.
        PeerResponse::Record(Err(_)) => None,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    // Our copy damaged: theirs replaces it.
    let ours = node.store.get_record(keyspace, key).unwrap_or(None);
    let merged = match (ours, theirs) {
        (Some(ours), Some(theirs)) => ours.sync(&theirs),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => return Ok(()),
    };
    let conflict = node
        .keyspaces
        .get(keyspace)
        .map_or(ringkv_replica::ConflictMode::LastWriterWins, |def| {
            def.conflict.into()
        });
    let merge = MergeRequest {
        keyspace: keyspace.to_owned(),
        key: key.to_vec(),
        record: merged,
        conflict,
    };
    let metrics = &node.anti_entropy.metrics;
    let record_bytes = (merge.record.value_bytes() + key.len() + 64) as u64;
    metrics.bytes.inc_by(2 * record_bytes);
    if node
        .store
        .merge(merge.clone())
        .await
        .map_err(|e| e.to_string())?
    {
        metrics.repaired_here.inc();
    }
    match crate::coordinator::ask(node, view, peer, PeerRequest::Merge(merge)).await? {
        PeerResponse::Merged(Ok(true)) => {
            metrics.repaired_there.inc();
        }
        PeerResponse::Merged(Ok(false)) => {}
        other => return Err(format!("unexpected answer {other:?}")),
    }
    Ok(())
}

/// Asks `peer` for its tree (no `segments`) or its digests in `segments`, of the keys it
/// shares with this node.
async fn ask(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
    segments: Option<Vec<u16>>,
) -> Result<PeerResponse, String> {
    let request = PeerRequest::AntiEntropy {
        keyspace: keyspace.to_owned(),
        peer: view.me.clone(),
        segments,
    };
    crate::coordinator::ask(node, view, peer, request).await
}

/// Answers a peer's [`PeerRequest::AntiEntropy`]: this node's tree or digests of the keys it
/// shares with that peer, computed off the async threads.
pub async fn answer(
    node: &Arc<Node>,
    keyspace: String,
    peer: String,
    segments: Option<Vec<u16>>,
) -> Result<PeerResponse, String> {
    if segments.as_ref().is_some_and(|s| s.len() > SEGMENTS) {
        return Err(format!("more than {SEGMENTS} segments asked for"));
    }
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || match segments {
        None => PeerResponse::Tree(tree(&node, &keyspace, &peer).map_err(remote)),
        Some(segments) => {
            PeerResponse::Digests(digests(&node, &keyspace, &peer, &segments).map_err(remote))
        }
    })
    .await
    .map_err(|error| error.to_string())
}

fn remote(message: String) -> crate::peers::RemoteError {
    crate::peers::RemoteError::Failed(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_tree_and_spread_keys() {
        let mut used = vec![0usize; SEGMENTS];
        for i in 0..50_000 {
            used[segment(format!("key:{i}").as_bytes())] += 1;
        }
        assert!(used.iter().all(|&n| n > 10), "every leaf gets keys");
        assert!(
            used.iter().all(|&n| n < 100),
            "no leaf gets many more than its share"
        );
    }
}
