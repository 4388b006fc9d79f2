//! Anti-entropy (DESIGN.md, "anti-entropy"): replicas compare hash trees of the keys they
//! share and repair what differs, so a copy that every other path missed (a wiped disk, a
//! hint refused or expired, a crash before a hint was stored) converges without any read of
//! its key.
//!
//! Each round, this node exchanges with every live peer, for every keyspace:
//! 1. Both sides take their hash tree of the keys they both replicate: [`LEAVES`] leaves
//!    under [`BRANCHES`] branches (a key's leaf is the top bits of its ring hash; a leaf is
//!    the XOR of its records' digests, so equal sets of records give equal leaves in any
//!    order, and a branch the XOR of its leaves). The replica layer keeps each keyspace's
//!    leaves up to date as writes land ([`ringkv_replica::hashtree`]), over every key this
//!    node holds; the ring says which ranges this node shares with the peer
//!    ([`shared_ranges`]): a leaf wholly inside them is taken as kept, and only a leaf that a
//!    range boundary cuts is summed from the index's digests of its shared part.
//! 2. The branches are compared first; only differing branches' leaves are sent, and only
//!    differing leaves are looked into: each side lists its keys' digests there, and keys
//!    whose digests differ, or that one side lacks, are repaired.
//! 3. A repair reads the peer's record, merges it with the local one by the causal rules
//!    ([`Record::sync`]), stores the merge locally and sends it back: both directions in
//!    one step. A record that fails its checksum on one side is replaced from the other.
//!
//! Tombstones take part like any record, and go only once every replica holds them
//! ([`crate::reaper`]). Nothing here scans the records: trees and digests come from the
//! replica layer's index, so a round costs clients little (`bench/heal.sh`).

use crate::gossip::ClusterView;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use crate::ranges::covered;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use ringkv_core::record::Record;
use ringkv_replica::{hashtree, MergeRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use ringkv_replica::hashtree::LEAVES;

/// Branches of a hash tree, each over [`LEAVES_PER_BRANCH`] leaves: an exchange always sends
/// this many hashes each way, then only the leaves of branches that differ.
pub const BRANCHES: usize = 1024;

/// Leaves under one branch.
pub const LEAVES_PER_BRANCH: usize = LEAVES / BRANCHES;

const _: () = assert!(LEAVES <= u16::MAX as usize + 1 && LEAVES.is_multiple_of(BRANCHES));

/// Passes of compare-and-repair an exchange makes at most on the schedule (each pass
/// repairs at most [`REPAIRS_PER_EXCHANGE_MAX`] keys); a repair an operator asks for, and a
/// node's first round, make up to [`REQUESTED_PASSES_MAX`], until a pass finds fewer keys
/// to repair than one pass can take.
pub const SCHEDULED_PASSES: usize = 1;

/// See [`SCHEDULED_PASSES`].
pub const REQUESTED_PASSES_MAX: usize = 1_000;

/// Most keys repaired per exchange, so a round's work (and its effect on clients) is bounded;
/// the rest wait for the next round.
const REPAIRS_PER_EXCHANGE_MAX: usize = 20_000;

/// Repairs in flight at once in an exchange: enough to share group commits, few enough to
/// leave the node to its clients.
const REPAIRS_IN_FLIGHT: usize = 16;

/// Records read from the store per scan step.
const SCAN_PAGE: usize = 1_000;

/// Hashes of one side's tree over the keys two replicas share: its branches, or the leaves
/// of some branches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The hashes asked for, in the order asked.
    pub hashes: Vec<u64>,
}

/// What one replica asks another in an exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// The hashes of every branch.
    Branches,
    /// The hashes of every leaf of these branches.
    Leaves(Vec<u16>),
    /// The digest of every key in these leaves.
    Digests(Vec<u16>),
}

impl Question {
    /// Whether it asks for no more than a tree holds.
    fn is_bounded(&self) -> bool {
        match self {
            Question::Branches => true,
            Question::Leaves(branches) => {
                branches.len() <= BRANCHES && branches.iter().all(|&b| (b as usize) < BRANCHES)
            }
            Question::Digests(leaves) => leaves.len() <= LEAVES,
        }
    }
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
    pub leaves_differing: u64,
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
    pub leaves_compared: Counter,
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
            "leaves_compared",
            "Differing tree leaves looked into",
            metrics.leaves_compared.clone(),
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

/// What a record hashes to: its key and its whole stored form (as the hash trees hash it).
fn digest(key: &[u8], record: &Record) -> u64 {
    hashtree::digest(key, &record.encode())
}

/// Whether this node and `peer` are both replicas of `key` in a keyspace of `replication`.
fn shared(view: &ClusterView, key: &[u8], replication: usize, peer: &str) -> bool {
    let replicas = view.ring.preference_list(key, replication);
    replicas.iter().any(|m| m.id == view.me) && replicas.iter().any(|m| m.id == peer)
}

/// The ring positions whose keys both this node and `peer` replicate, in a keyspace of
/// `replication`: sorted, disjoint, inclusive ranges ([`crate::ranges`]).
pub fn shared_ranges(view: &ClusterView, replication: usize, peer: &str) -> Vec<(u64, u64)> {
    crate::ranges::ranges_where(&[&view.ring], |position| {
        let replicas = view.ring.preference_list_at(position, replication);
        replicas.iter().any(|m| m.id == view.me) && replicas.iter().any(|m| m.id == peer)
    })
}

/// This node's leaf hashes of `keyspace` over the ring `ranges` it shares with a peer: a
/// kept leaf where the ranges hold it whole, nothing where they miss it, and the digests of
/// the shared part where a range boundary cuts it.
fn shared_leaves(node: &Node, keyspace: &str, ranges: &[(u64, u64)]) -> Result<Vec<u64>, String> {
    let mut leaves = node.store.tree_leaves(keyspace);
    for (leaf, hash) in leaves.iter_mut().enumerate() {
        let (low, high) = hashtree::leaf_span(leaf);
        let parts: Vec<(u64, u64)> = covered(ranges, low, high).collect();
        if parts == [(low, high)] {
            continue;
        }
        *hash = 0;
        for (low, high) in parts {
            for (_, digest) in node
                .store
                .tree_digests(keyspace, low, high)
                .map_err(|e| e.to_string())?
            {
                *hash ^= digest;
            }
        }
    }
    Ok(leaves)
}

/// Walks this node's records of `keyspace` that it shares with `peer`, in key order, giving
/// each one's digest to `visit`: a scan of the records themselves, independent of the hash
/// trees (for [`roots`], which checks them).
fn walk_shared(
    node: &Node,
    keyspace: &str,
    peer: &str,
    mut visit: impl FnMut(u64),
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
            if shared(&view, &key, replication, peer) {
                visit(digest(&key, &record));
            }
        }
        // Paced: a page of records takes at least its share of a second.
        std::thread::sleep(Duration::from_micros(
            SCAN_PAGE as u64 * 1_000_000 / SCAN_RECORDS_PER_SECOND,
        ));
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// How long a peer is given to answer a question, its trees' rebuild included (it may have
/// just started or turned them on); the RPC server allows as long
/// ([`ringkv_cluster::rpc::DEADLINE_MAX`]).
const QUESTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an answer waits for this node's trees to be ready (a rebuild reads 100 k
/// records a second).
const TREES_READY_WAIT: Duration = Duration::from_secs(240);

const _: () = assert!(QUESTION_TIMEOUT.as_secs() <= ringkv_cluster::rpc::DEADLINE_MAX.as_secs());
const _: () = assert!(TREES_READY_WAIT.as_secs() < QUESTION_TIMEOUT.as_secs());

/// Records [`roots`] reads per second at most, so that a check takes a bounded share of the
/// disk and CPU from clients (100 k keys: about 1 s per peer).
const SCAN_RECORDS_PER_SECOND: u64 = 100_000;

/// This node's answer to `question` about `keyspace`, over the keys it shares with `peer`.
fn answer_question(
    node: &Node,
    keyspace: &str,
    peer: &str,
    question: Question,
) -> Result<PeerResponse, String> {
    if !node.store.trees_ready(TREES_READY_WAIT) {
        return Err("this node's hash trees are still being built".into());
    }
    let replication = node
        .keyspaces
        .get(keyspace)
        .map_or(0, |def| def.replication as usize);
    let ranges = shared_ranges(&node.view(), replication, peer);
    Ok(match question {
        Question::Branches => {
            let leaves = shared_leaves(node, keyspace, &ranges)?;
            let hashes = leaves
                .chunks(LEAVES_PER_BRANCH)
                .map(|branch| branch.iter().fold(0, |all, leaf| all ^ leaf))
                .collect();
            PeerResponse::Tree(Ok(Tree { hashes }))
        }
        Question::Leaves(branches) => {
            let leaves = shared_leaves(node, keyspace, &ranges)?;
            let hashes = branches
                .iter()
                .flat_map(|&branch| {
                    let first = branch as usize * LEAVES_PER_BRANCH;
                    leaves[first..first + LEAVES_PER_BRANCH].iter().copied()
                })
                .collect();
            PeerResponse::Tree(Ok(Tree { hashes }))
        }
        Question::Digests(mut leaves) => {
            leaves.sort_unstable();
            leaves.dedup();
            let mut found = Vec::new();
            for leaf in leaves {
                let (low, high) = hashtree::leaf_span(leaf as usize);
                for (low, high) in covered(&ranges, low, high) {
                    let digests = node.store.tree_digests(keyspace, low, high);
                    found.extend(digests.map_err(|e| e.to_string())?);
                }
            }
            PeerResponse::Digests(Ok(found))
        }
    })
}

/// Runs a round every `anti_entropy_interval_ms` until `shutdown` turns true (never when
/// the interval is 0).
///
/// The first round comes soon after the node starts, once its peers have had time to answer
/// gossip, and passes until it has caught up: a node that joins, restarts or comes back with an
/// empty disk is brought up to date at once rather than over several intervals.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let interval_ms = node.config.anti_entropy_interval_ms;
    if interval_ms == 0 {
        return;
    }
    let interval = Duration::from_millis(interval_ms);
    let mut next = tokio::time::Instant::now() + interval.min(FIRST_ROUND_AFTER);
    let mut passes = REQUESTED_PASSES_MAX;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        round(&node, None, passes).await;
        (next, passes) = (tokio::time::Instant::now() + interval, SCHEDULED_PASSES);
    }
}

/// The root of this node's tree of `keyspace` over the keys it shares with each live peer,
/// scanned now: two replicas hold the same records of the keys they share exactly when (short
/// of a hash collision) each one's root for the other is the same. The fault lab's convergence
/// check (`GET /v1/cluster/roots`).
pub async fn roots(node: &Arc<Node>, keyspace: &str) -> Result<BTreeMap<String, u64>, String> {
    let view = node.view();
    let peers: Vec<String> = view.live_peers().cloned().collect();
    let (node, keyspace) = (Arc::clone(node), keyspace.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut roots = BTreeMap::new();
        for peer in peers {
            let mut root = 0u64;
            walk_shared(&node, &keyspace, &peer, |digest| root ^= digest)?;
            roots.insert(peer, root);
        }
        Ok(roots)
    })
    .await
    .map_err(|error| error.to_string())?
}

/// How soon after start the first round runs (or the interval, if shorter).
const FIRST_ROUND_AFTER: Duration = Duration::from_secs(3);

/// One exchange with every live peer for every keyspace (or only `keyspace`), each of up to
/// `passes` passes; waits for a round under way to finish first.
pub async fn round(node: &Arc<Node>, keyspace: Option<&str>, passes: usize) {
    let _running = node.anti_entropy.running.lock().await;
    let view = node.view();
    let peers: Vec<String> = view.live_peers().cloned().collect();
    if !peers.is_empty() {
        // A node that had no peer kept no trees: from now on it does.
        node.store.enable_trees();
    }
    // A strong keyspace's replicas converge through their Raft log, not by merging.
    let keyspaces: Vec<String> = node
        .keyspaces
        .list()
        .into_iter()
        .filter(|def| !def.is_strong())
        .map(|def| def.name)
        .filter(|name| keyspace.is_none_or(|wanted| wanted == name))
        .collect();
    let progress = &node.anti_entropy.progress;
    {
        let mut progress = progress.lock();
        progress.running = true;
        progress.exchanges_total = (peers.len() * keyspaces.len()) as u64;
        progress.exchanges_done = 0;
        progress.leaves_differing = 0;
        progress.keys_repaired = 0;
    }
    for peer in &peers {
        for keyspace in &keyspaces {
            match exchange(node, &view, peer, keyspace, passes).await {
                Ok((differing, repaired)) => {
                    let mut progress = progress.lock();
                    progress.leaves_differing += differing;
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
    progress.last_divergence = progress.leaves_differing;
}

/// Compares this node's tree of `keyspace` with `peer`'s and repairs the keys that differ,
/// in up to `passes` passes (while a pass finds more than it can repair); returns how many leaves differed and how
/// many keys were looked into.
async fn exchange(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
    passes: usize,
) -> Result<(u64, u64), String> {
    let (mut differing_total, mut repaired_total) = (0, 0);
    for _ in 0..passes.max(1) {
        let (differing, repaired) = pass(node, view, peer, keyspace).await?;
        differing_total += differing;
        repaired_total += repaired;
        // Another pass only while one could not repair all it found: under writes, two
        // replicas always differ by the writes in flight, and chasing those would scan
        // without end.
        if (repaired as usize) < REPAIRS_PER_EXCHANGE_MAX {
            break;
        }
    }
    node.anti_entropy.metrics.exchanges.inc();
    Ok((differing_total, repaired_total))
}

/// Asks `question` of `peer` and of this node: their answers, in that order.
async fn both(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
    question: Question,
) -> Result<(PeerResponse, PeerResponse), String> {
    let request = PeerRequest::AntiEntropy {
        keyspace: keyspace.to_owned(),
        peer: view.me.clone(),
        question: question.clone(),
    };
    let theirs = crate::coordinator::ask_within(node, view, peer, request, QUESTION_TIMEOUT);
    let theirs = theirs.await?;
    // One side at a time: scanning both at once doubled the clients' p99 cost of a round
    // (bench/heal.sh) for a tenth off the time of a refill.
    let ours = answer(node, keyspace.to_owned(), peer.to_owned(), question).await?;
    Ok((theirs, ours))
}

/// The hashes of both sides' answers to a tree question.
async fn both_trees(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
    question: Question,
) -> Result<(Vec<u64>, Vec<u64>), String> {
    match both(node, view, peer, keyspace, question).await? {
        (PeerResponse::Tree(Ok(theirs)), PeerResponse::Tree(Ok(ours))) => {
            let bytes = 8 * (theirs.hashes.len() + ours.hashes.len()) as u64;
            node.anti_entropy.metrics.bytes.inc_by(bytes);
            Ok((theirs.hashes, ours.hashes))
        }
        other => Err(format!("unexpected answers {other:?}")),
    }
}

/// One pass: branches, then the leaves of differing branches, then the keys of differing
/// leaves, repaired; returns how many leaves differed and how many keys were looked into.
async fn pass(
    node: &Arc<Node>,
    view: &ClusterView,
    peer: &str,
    keyspace: &str,
) -> Result<(u64, u64), String> {
    let (theirs, ours) = both_trees(node, view, peer, keyspace, Question::Branches).await?;
    let branches: Vec<u16> = (0..BRANCHES)
        .filter(|&branch| theirs.get(branch) != ours.get(branch))
        .map(|branch| branch as u16)
        .collect();
    if branches.is_empty() {
        return Ok((0, 0));
    }
    let question = Question::Leaves(branches.clone());
    let (theirs, ours) = both_trees(node, view, peer, keyspace, question).await?;
    let leaves: Vec<u16> = branches
        .iter()
        .flat_map(|&branch| (0..LEAVES_PER_BRANCH).map(move |i| (branch, i)))
        .enumerate()
        .filter(|&(at, _)| theirs.get(at) != ours.get(at))
        .map(|(_, (branch, i))| (branch as usize * LEAVES_PER_BRANCH + i) as u16)
        .collect();
    let metrics = &node.anti_entropy.metrics;
    let differing = leaves.len() as u64;
    metrics.leaves_compared.inc_by(differing);
    let (theirs, ours) = match both(node, view, peer, keyspace, Question::Digests(leaves)).await? {
        (PeerResponse::Digests(Ok(theirs)), PeerResponse::Digests(Ok(ours))) => (theirs, ours),
        other => return Err(format!("unexpected answers {other:?}")),
    };
    let digest_bytes = |digests: &[(Vec<u8>, u64)]| {
        digests
            .iter()
            .map(|(key, _)| key.len() as u64 + 10)
            .sum::<u64>()
    };
    metrics
        .bytes
        .inc_by(digest_bytes(&theirs) + digest_bytes(&ours) + 2 * differing);
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
    Ok((differing, repaired))
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
    let conflict = node.keyspaces.conflict_of(keyspace);
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
    } else if let Err(error) = node.store.refresh_tree(keyspace, key) {
        // Unchanged here, yet it differed: the tree may have drifted from the record.
        tracing::debug!(%error, "could not hash a record into the tree again");
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

/// Answers a [`Question`] of a peer's (or this node's own, for its side of an exchange):
/// this node's tree or digests of the keys it shares with `peer`, computed off the async
/// threads.
pub async fn answer(
    node: &Arc<Node>,
    keyspace: String,
    peer: String,
    question: Question,
) -> Result<PeerResponse, String> {
    if !question.is_bounded() {
        return Err("an anti-entropy question asks for more than a tree holds".into());
    }
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || answer_question(&node, &keyspace, &peer, question))
        .await
        .map_err(|error| error.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn leaf_of(key: &[u8]) -> usize {
        hashtree::leaf_of(ringkv_core::ring::key_hash(key))
    }

    #[test]
    fn leaves_cover_the_tree_and_spread_keys() {
        let mut branches = vec![0usize; BRANCHES];
        for i in 0..50_000 {
            branches[leaf_of(format!("key:{i}").as_bytes()) / LEAVES_PER_BRANCH] += 1;
        }
        assert!(branches.iter().all(|&n| n > 10), "every branch gets keys");
        assert!(
            branches.iter().all(|&n| n < 100),
            "no branch gets many more than its share"
        );
        assert!(leaf_of(&[0xff; 64]) < LEAVES);
    }

    fn view(nodes: usize, zones: usize, vnodes: u32) -> ClusterView {
        let members: Vec<ringkv_core::ring::Member> = (0..nodes)
            .map(|i| ringkv_core::ring::Member {
                id: format!("n{i}"),
                zone: format!("z{}", i % zones),
                weight: 1 + (i % 2) as u32,
            })
            .collect();
        ClusterView {
            me: "n0".into(),
            ring: ringkv_core::ring::Ring::new(&members, vnodes),
            joining_ring: None,
            members: HashMap::new(),
        }
    }

    proptest::proptest! {
        /// Goal: the shared ranges hold exactly the keys both nodes replicate, the ones the
        /// trees' answers are taken over. Method: random rings, peers and keys, the ranges
        /// against the preference list of each key.
        #[test]
        fn shared_ranges_hold_exactly_the_keys_both_replicate(
            nodes in 1usize..7,
            zones in 1usize..4,
            vnodes in 1u32..40,
            replication in 1usize..5,
            peer in 0usize..7,
            keys in proptest::collection::vec(proptest::prelude::any::<u64>(), 300),
        ) {
            let view = view(nodes, zones, vnodes);
            let peer = format!("n{}", peer % nodes);
            let ranges = shared_ranges(&view, replication, &peer);
            proptest::prop_assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "sorted and disjoint");
            for key in keys.iter().map(|k| k.to_le_bytes()) {
                let hash = ringkv_core::ring::key_hash(&key);
                let inside = covered(&ranges, hash, hash).next().is_some();
                proptest::prop_assert_eq!(inside, shared(&view, &key, replication, &peer));
            }
            // Leaf boundaries: pieces stay within the leaf and inside the ranges.
            for leaf in [0, 1, LEAVES / 2, LEAVES - 1] {
                let (low, high) = hashtree::leaf_span(leaf);
                for (a, b) in covered(&ranges, low, high) {
                    proptest::prop_assert!(low <= a && a <= b && b <= high);
                }
            }
        }
    }
}
