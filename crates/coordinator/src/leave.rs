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

use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use futures_util::StreamExt;
use ringkv_cluster::membership::NodeStatus;
use ringkv_core::ring::{Member, Ring, VNODES_DEFAULT};
use ringkv_replica::MergeRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    /// Sends that failed (anti-entropy repairs those keys later).
    pub sends_failed: u64,
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

/// Starts leaving in the background unless already under way; `false` if this node is not
/// in a cluster (it has nothing to hand off and no one to tell).
pub fn start(node: &Arc<Node>) -> bool {
    if node.gossip.get().is_none() || node.view().is_single() {
        return false;
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
        if let Err(error) = stream_keyspace(node, &def.name, def.replication as usize).await {
            tracing::warn!(keyspace = def.name, %error, "streaming a keyspace failed");
        }
    }
    if let Err(error) = gossip.set_status(NodeStatus::Left) {
        tracing::warn!(%error, "cannot announce having left");
    }
    node.leaving
        .update(|progress| progress.state = "left".into());
    tracing::info!("left the cluster: its ranges are handed off; the process may stop");
}

/// Sends every record of `keyspace` this node holds to the nodes that take over its key
/// ranges once it is gone.
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
    let mut resume: Option<Vec<u8>> = None;
    loop {
        let (records, next) = node
            .store
            .scan_records(keyspace, b"", resume.as_deref(), SCAN_PAGE)
            .map_err(|error| error.to_string())?;
        let mut sends = Vec::new();
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
        let sends = sends.into_iter().map(|(taker, merge)| {
            let view = Arc::clone(&view);
            async move {
                let sent = crate::coordinator::ask(node, &view, &taker, PeerRequest::Merge(merge));
                matches!(sent.await, Ok(PeerResponse::Merged(Ok(_))))
            }
        });
        let mut sends = futures_util::stream::iter(sends).buffer_unordered(SENDS_IN_FLIGHT);
        while let Some(sent) = sends.next().await {
            node.leaving.update(|progress| match sent {
                true => progress.records_sent += 1,
                false => progress.sends_failed += 1,
            });
        }
        match next {
            Some(next) => resume = Some(next),
            None => return Ok(()),
        }
    }
}
