//! Leaving the cluster (`ringkv cluster leave`): a node hands its data to the nodes that
//! will own its key ranges once it is gone, then leaves the ring for good.
//!
//! 1. It announces itself `leaving`: it stays in the ring, serving reads and taking writes,
//!    while it streams.
//! 2. For every record it holds, it works out the key's replicas without it and sends the
//!    record to those that are not replicas now: the nodes that take over its ranges. So only
//!    its share of the data moves, and only to where it must go.
//! 3. It announces itself `left`: every member drops it from its ring. Writes it took while
//!    streaming also reached the key's other replicas, and anti-entropy brings the new owners
//!    up to date with those.
//!
//! The process keeps running, out of the ring, until the operator stops it.
//!
//! Leaving survives a restart: the node records that it is leaving, and after each page of
//! records has reached the new owners, where its stream of the keyspace stands. A node that
//! restarts while leaving announces itself `leaving` again and goes on streaming after the
//! last page it recorded; one that restarts after it left stays `left`. A page whose sends
//! fail is sent again (with growing pauses, for up to [`TAKER_GIVE_UP`]) before the stream
//! moves past it.

use crate::gossip::ClusterView;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use crate::ranges::{RangeProgress, RangeTally};
use futures_util::StreamExt;
use ringkv_cluster::membership::NodeStatus;
use ringkv_core::ring::{Member, Ring, VNODES_DEFAULT};
use ringkv_replica::MergeRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set while this node leaves (`leaving`), then once it has left (`left`).
const LEAVING_META: &str = "cluster/leaving";

/// Per keyspace, the last key of the last page handed off: `cluster/leave/<keyspace>`.
const CURSOR_META: &str = "cluster/leave/";

/// Per keyspace, set once its stream has finished.
const DONE_META: &str = "cluster/leave-done/";

/// Per keyspace, its ranges and how far each has been handed off when the cursor was last
/// saved: `cluster/leave-ranges/<keyspace>`.
const RANGES_META: &str = "cluster/leave-ranges/";

/// How long leaving waits for this node's hash trees before it gives up counting its ranges.
const COUNT_WAIT: Duration = Duration::from_secs(10);

/// How long a page's failed sends are retried before the stream moves on (anti-entropy then
/// brings those keys to their new owners, from the other replicas).
const TAKER_GIVE_UP: Duration = Duration::from_secs(60);

/// Records read per scan step while streaming.
const SCAN_PAGE: usize = 1_000;

/// Records sent at once while streaming.
const SENDS_IN_FLIGHT: usize = 16;

/// Where a node's leaving stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveProgress {
    /// `normal` until asked to leave, then `leaving`, then `left`.
    pub state: String,
    /// Records examined so far.
    pub records_examined: u64,
    /// Records sent to a node taking over their range.
    pub records_sent: u64,
    /// Sends that failed and were sent again.
    #[serde(default)]
    pub send_retries: u64,
    /// Sends that still failed after retrying for a while (anti-entropy repairs those keys
    /// later).
    pub sends_failed: u64,
    /// The ranges of the ring this node replicates, per keyspace, and how many of the records
    /// it held in each have been handed off (those of keyspaces not yet begun are absent).
    #[serde(default)]
    pub ranges: Vec<RangeProgress>,
}

/// A node's leaving, as `/v1/cluster/leave` shows it.
#[derive(Default)]
pub struct Leaving {
    progress: parking_lot::Mutex<Option<LeaveProgress>>,
}

impl Leaving {
    /// Where the leaving stands (`normal` if never asked).
    pub fn progress(&self) -> LeaveProgress {
        self.progress
            .lock()
            .clone()
            .unwrap_or_else(|| LeaveProgress {
                state: "normal".into(),
                ..LeaveProgress::default()
            })
    }

    fn update(&self, change: impl FnOnce(&mut LeaveProgress)) {
        let mut progress = self.progress.lock();
        change(progress.get_or_insert_with(LeaveProgress::default));
    }
}

/// What this node's metadata says of leaving: the status it starts with (`leaving` or
/// `left`), or `None` if it never was asked to leave.
pub fn recorded_status(node: &Node) -> Option<NodeStatus> {
    match node.store.meta_get(LEAVING_META).ok().flatten()?.as_slice() {
        b"left" => Some(NodeStatus::Left),
        _ => Some(NodeStatus::Leaving),
    }
}

/// Goes on leaving after a restart in the middle of it, once a peer is seen (to hand the
/// ranges to) alive, until `shutdown`.
pub async fn resume(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if recorded_status(&node) != Some(NodeStatus::Leaving) {
        return;
    }
    let peers_seen = async {
        while node.view().live_peers().next().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = peers_seen => {}
        _ = shutdown.wait_for(|stop| *stop) => return,
    }
    tracing::info!("resuming leaving the cluster where it stopped");
    start(&node);
}

/// Starts leaving in the background unless already under way; `false` if this node is not
/// in a cluster (it has nothing to hand off and no one to tell).
pub fn start(node: &Arc<Node>) -> bool {
    if node.gossip.get().is_none() || node.view().is_single() {
        return false;
    }
    if let Err(error) = node.store.meta_put(LEAVING_META, b"leaving") {
        tracing::warn!(%error, "cannot record leaving: a restart would not resume it");
    }
    {
        let mut progress = node.leaving.progress.lock();
        if progress.is_some() {
            return true;
        }
        *progress = Some(LeaveProgress {
            state: "leaving".into(),
            ..LeaveProgress::default()
        });
    }
    let node = Arc::clone(node);
    tokio::spawn(async move { run(&node).await });
    true
}

async fn run(node: &Arc<Node>) {
    let gossip = node.gossip.get().expect("checked when leaving started");
    if let Err(error) = gossip.set_status(NodeStatus::Leaving) {
        tracing::warn!(%error, "cannot announce leaving");
    }
    for def in node.keyspaces.list() {
        let done = format!("{DONE_META}{}", def.name);
        if node.store.meta_get(&done).ok().flatten().is_some() {
            continue;
        }
        match stream_keyspace(node, &def.name, def.replication as usize).await {
            Ok(()) => {
                if let Err(error) = node.store.meta_put(&done, b"1") {
                    tracing::warn!(%error, "cannot record a keyspace handed off");
                }
            }
            Err(error) => {
                tracing::warn!(keyspace = def.name, %error, "streaming a keyspace failed")
            }
        }
    }
    let recorded = node.store.meta_put(LEAVING_META, b"left").and_then(|()| {
        for prefix in [CURSOR_META, DONE_META, RANGES_META] {
            for (name, _) in node.store.meta_scan(prefix)? {
                node.store.meta_delete(&name)?;
            }
        }
        Ok(())
    });
    if let Err(error) = recorded {
        tracing::warn!(%error, "cannot record having left");
    }
    if let Err(error) = gossip.set_status(NodeStatus::Left) {
        tracing::warn!(%error, "cannot announce having left");
    }
    node.leaving
        .update(|progress| progress.state = "left".into());
    tracing::info!("left the cluster: its ranges are handed off; the process may stop");
}

/// Sends every record of `keyspace` this node holds to the nodes that take over its key
/// ranges once it is gone, from where a stream before a restart stopped.
async fn stream_keyspace(
    node: &Arc<Node>,
    keyspace: &str,
    replication: usize,
) -> Result<(), String> {
    let view = node.view();
    let without_me: Vec<Member> = view
        .members
        .values()
        .filter(|(identity, _)| identity.id != view.me && !view.is_joining(&identity.id))
        .map(|(identity, _)| Member {
            id: identity.id.clone(),
            zone: identity.zone.clone(),
            weight: identity.weight.max(1),
        })
        .collect();
    let after = Ring::new(&without_me, VNODES_DEFAULT);
    let conflict = node.keyspaces.conflict_of(keyspace);
    let cursor = format!("{CURSOR_META}{keyspace}");
    let ranges_name = format!("{RANGES_META}{keyspace}");
    let mut resume: Option<Vec<u8>> = node.store.meta_get(&cursor).ok().flatten();
    let mut tally = match resume
        .is_some()
        .then(|| RangeTally::load(&node.store, &ranges_name))
        .flatten()
    {
        Some(saved) => saved,
        None => own_ranges(node, &view, keyspace, replication).await,
    };
    loop {
        let (records, next) = node
            .store
            .scan_records(keyspace, b"", resume.as_deref(), SCAN_PAGE)
            .map_err(|error| error.to_string())?;
        let mut sends = Vec::new();
        let examined: Vec<Vec<u8>> = records.iter().map(|(key, _)| key.clone()).collect();
        for (key, record) in records {
            let now: Vec<String> = view
                .ring
                .preference_list(&key, replication)
                .iter()
                .map(|m| m.id.clone())
                .collect();
            for taker in after.preference_list(&key, replication) {
                if !now.contains(&taker.id) {
                    let merge = MergeRequest {
                        keyspace: keyspace.to_owned(),
                        key: key.clone(),
                        record: record.clone(),
                        conflict,
                    };
                    sends.push((taker.id.clone(), merge));
                }
            }
            node.leaving
                .update(|progress| progress.records_examined += 1);
        }
        hand_off(node, sends).await;
        tally.count(examined.iter().map(Vec::as_slice));
        node.leaving.update(|progress| {
            progress.ranges.retain(|range| range.keyspace != keyspace);
            progress.ranges.extend_from_slice(tally.progress());
        });
        match next {
            Some(next) => {
                let saved = tally.save(&node.store, &ranges_name).and_then(|()| {
                    (node.store.meta_put(&cursor, &next)).map_err(|error| error.to_string())
                });
                if let Err(error) = saved {
                    tracing::warn!(%error, "cannot record where leaving stands");
                }
                resume = Some(next);
            }
            None => return Ok(()),
        }
    }
}

/// The ranges of `keyspace` this node replicates in `view`, with its count of its records in
/// each (unknown if its hash trees are not up to date within [`COUNT_WAIT`]).
async fn own_ranges(
    node: &Arc<Node>,
    view: &ClusterView,
    keyspace: &str,
    replication: usize,
) -> RangeTally {
    let ranges = crate::ranges::ranges_where(&[&view.ring], |position| {
        (view.ring.preference_list_at(position, replication))
            .iter()
            .any(|member| member.id == view.me)
    });
    let counter = Arc::clone(node);
    let (keyspace_name, bounds) = (keyspace.to_owned(), ranges.clone());
    let counted = tokio::task::spawn_blocking(move || {
        if !counter.store.trees_ready(COUNT_WAIT) {
            return Vec::new();
        }
        bounds
            .iter()
            .map(|&(low, high)| counter.store.tree_count(&keyspace_name, low, high).ok())
            .collect()
    })
    .await
    .unwrap_or_default();
    RangeTally::new(keyspace, "", &ranges, &counted)
}

/// Sends a page's records to the nodes taking them over; sends that fail are sent again,
/// with growing pauses, until they land or [`TAKER_GIVE_UP`] has passed (then counted failed).
async fn hand_off(node: &Arc<Node>, mut sends: Vec<(String, MergeRequest)>) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        // The view of now: a taker seen down a moment ago may be back.
        let view = node.view();
        let attempts = sends.into_iter().map(|(taker, merge)| {
            let view = Arc::clone(&view);
            async move {
                let request = PeerRequest::Merge(merge.clone());
                let sent = crate::coordinator::ask(node, &view, &taker, request).await;
                let landed = matches!(sent, Ok(PeerResponse::Merged(Ok(_))));
                (landed, taker, merge)
            }
        });
        let mut attempts = futures_util::stream::iter(attempts).buffer_unordered(SENDS_IN_FLIGHT);
        let mut failed = Vec::new();
        while let Some((landed, taker, merge)) = attempts.next().await {
            if landed {
                node.leaving.update(|progress| progress.records_sent += 1);
            } else {
                failed.push((taker, merge));
            }
        }
        if failed.is_empty() {
            return;
        }
        if started.elapsed() > TAKER_GIVE_UP {
            tracing::warn!(
                sends = failed.len(),
                "leaving: sends still failing; anti-entropy will bring those keys"
            );
            node.leaving
                .update(|progress| progress.sends_failed += failed.len() as u64);
            return;
        }
        node.leaving
            .update(|progress| progress.send_retries += failed.len() as u64);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        sends = failed;
    }
}
