//! Joining the cluster: a new node streams the key ranges it will own from the nodes that
//! hold them before it serves them.
//!
//! 1. A node that starts with seeds to join and no ring of its own remembered (a new node,
//!    or one whose disk was wiped) announces itself `joining`. Every member then routes reads
//!    and quorum writes without it, and also sends it, uncounted, the writes of keys it will
//!    be a replica of ([`crate::gossip::ClusterView::joining_replicas`]).
//! 2. It pulls from every live member at once, keyspace by keyspace, at most
//!    `join_records_per_second` in all ([`crate::streams`]). From each donor it asks the
//!    ranges it will replicate of which that donor is the first live replica now, so each key
//!    comes from one donor and the donors' work is shared.
//! 3. After each page, where the transfer stands (the last key the donor examined) is saved:
//!    a broken transfer — the donor or this node restarted, a timeout — resumes there.
//!    Progress is kept per range of the ring too ([`crate::ranges`]): each transfer's ranges
//!    are those its donor sends, with the records the donor held in each when it began
//!    (counted from its hash trees' index) and the records received so far; they are saved
//!    with the cursor, so a resumed transfer goes on counting.
//! 4. Once every transfer is done (or a donor has been down for
//!    [`crate::streams::DONOR_GIVE_UP`], whose keys anti-entropy then brings), it announces
//!    itself `normal` and serves its ranges, and (unless anti-entropy is off) a round with
//!    every peer catches what the streams and copies missed.

use crate::coordinator::ask_within;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use crate::ranges::{ranges_where, RangeTally};
pub use crate::streams::Transfer;
use crate::streams::{Pace, Report, Saved};
use ringkv_cluster::membership::{Liveness, NodeStatus};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Set while this node is joining, so that a restart resumes joining.
const JOINING_META: &str = "cluster/joining";

/// Where each transfer stands: `cluster/join/{donor}/{keyspace}` holds the last key done.
const CURSOR_META: &str = "cluster/join/";

/// Each transfer's ranges and their progress when its cursor was last saved (JSON):
/// `cluster/join-ranges/{donor}/{keyspace}`.
const RANGES_META: &str = "cluster/join-ranges/";

/// Where a node's joining stands, as `cluster status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProgress {
    /// `joining` until every transfer is done, then `normal`.
    pub state: String,
    /// One transfer per donor and keyspace.
    pub transfers: Vec<Transfer>,
}

/// A node's joining, as `/v1/cluster` shows it.
#[derive(Default)]
pub struct Joining {
    progress: parking_lot::Mutex<Option<JoinProgress>>,
}

impl Joining {
    /// Where the joining stands; `None` for a node that did not join (the first node, or one
    /// that joined in an earlier run).
    pub fn progress(&self) -> Option<JoinProgress> {
        self.progress.lock().clone()
    }

    fn update(&self, change: impl FnOnce(&mut JoinProgress)) {
        let mut progress = self.progress.lock();
        change(progress.get_or_insert_with(JoinProgress::default));
    }
}

/// Whether this node starts as `joining`: it joined before and has not finished, or it has
/// seeds to join and remembers no ring (new, or wiped). A node that does is marked so in its
/// metadata, so a restart goes on joining.
pub fn starts_joining(node: &Node, remembers_a_ring: bool) -> bool {
    let store = &node.store;
    if store.meta_get(JOINING_META).ok().flatten().is_some() {
        return true;
    }
    if node.config.join.is_empty() || remembers_a_ring {
        return false;
    }
    match store.meta_put(JOINING_META, b"1") {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot record joining; serving at once instead");
            false
        }
    }
}

/// Streams this node's ranges from their holders, then announces it `normal`; runs only on a
/// node that started joining, until done or `shutdown`.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    node.joining.update(|p| p.state = "joining".into());
    tokio::select! {
        () = join(&node) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

async fn join(node: &Arc<Node>) {
    let donors = await_donors(node).await;
    learn_keyspaces(node, &donors).await;
    let transfers = donors.iter().flat_map(|donor| {
        node.keyspaces
            .list()
            .into_iter()
            .map(move |def| (donor.clone(), def.name))
    });
    let pace = Pace::new(node.config.join_records_per_second);
    let streams = transfers.map(|(donor, keyspace)| {
        let pace = &pace;
        async move { stream(node, &donor, &keyspace, pace).await }
    });
    futures_util::future::join_all(streams).await;
    finish(node).await;
}

/// Waits until a live member that serves (not joining) is known; returns every such member.
async fn await_donors(node: &Arc<Node>) -> Vec<String> {
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        let view = node.view();
        let donors: Vec<String> = view
            .members
            .iter()
            .filter(|(id, (identity, liveness))| {
                **id != view.me
                    && identity.status != NodeStatus::Joining
                    && *liveness == Liveness::Alive
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !donors.is_empty() {
            // A moment more, so gossip brings the rest of the members too.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return donors;
        }
        if told.elapsed() > Duration::from_secs(10) {
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                "joining: no live member heard from yet; still waiting"
            );
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adopts the keyspace definitions of the first donor that answers, so every keyspace is
/// streamed (definitions also spread on their own, later).
async fn learn_keyspaces(node: &Arc<Node>, donors: &[String]) {
    let view = node.view();
    for donor in donors {
        let answer = ask_within(
            node,
            &view,
            donor,
            PeerRequest::Keyspaces,
            crate::streams::PAGE_TIMEOUT,
        )
        .await;
        if let Ok(PeerResponse::Keyspaces(defs)) = answer {
            for def in defs {
                if let Err(error) = node.keyspaces.adopt(&node.store, def) {
                    tracing::warn!(%error, "joining: cannot adopt a keyspace definition");
                }
            }
            return;
        }
    }
}

/// One transfer: pages of `keyspace` from `donor`, from where it last stopped, until the
/// donor has no more or has been unreachable for [`crate::streams::DONOR_GIVE_UP`].
async fn stream(node: &Arc<Node>, donor: &str, keyspace: &str, pace: &Pace) {
    let saved = Saved {
        cursor: format!("{CURSOR_META}{donor}/{keyspace}"),
        ranges: format!("{RANGES_META}{donor}/{keyspace}"),
    };
    let after = node.store.meta_get(&saved.cursor).ok().flatten();
    let tally = transfer_ranges(node, donor, keyspace, &saved.ranges, after.is_some()).await;
    let index = node.joining.progress.lock().as_mut().map(|progress| {
        progress
            .transfers
            .push(Transfer::streaming(donor, keyspace, &tally));
        progress.transfers.len() - 1
    });
    let update = |change: &dyn Fn(&mut Transfer)| {
        if let (Some(index), Some(progress)) = (index, node.joining.progress.lock().as_mut()) {
            change(&mut progress.transfers[index]);
        }
    };
    let report = Report {
        what: "joining",
        update: &update,
    };
    crate::streams::pull(
        node,
        donor,
        keyspace,
        tally,
        after,
        Some(&saved),
        pace,
        report,
    )
    .await;
}

/// The ranges `donor` sends of `keyspace` and how far each has come: as saved with the
/// cursor of a transfer that is `resuming`, or else those the ring gives now (where this node
/// will be a replica and the donor is the first live one) with the donor's count of its
/// records in each. Counting is best effort: a donor that cannot leaves them unknown.
async fn transfer_ranges(
    node: &Arc<Node>,
    donor: &str,
    keyspace: &str,
    ranges_name: &str,
    resuming: bool,
) -> RangeTally {
    if let Some(saved) = resuming
        .then(|| RangeTally::load(&node.store, ranges_name))
        .flatten()
    {
        return saved;
    }
    let view = node.view();
    let replication = node
        .keyspaces
        .get(keyspace)
        .map_or(1, |def| def.replication as usize);
    let ranges = match &view.joining_ring {
        Some(future) => ranges_where(&[&view.ring, future], |position| {
            let first_live = view
                .ring
                .preference_list_at(position, replication)
                .into_iter()
                .find(|member| !view.is_down(&member.id));
            first_live.is_some_and(|member| member.id == donor)
                && future
                    .preference_list_at(position, replication)
                    .iter()
                    .any(|member| member.id == view.me)
        }),
        None => Vec::new(),
    };
    crate::streams::counted(node, donor, keyspace, ranges).await
}

/// Announces this node `normal`, forgets the transfers' state, and runs an anti-entropy round.
async fn finish(node: &Arc<Node>) {
    let store_node = Arc::clone(node);
    let cleared = tokio::task::spawn_blocking(move || {
        for prefix in [CURSOR_META, RANGES_META] {
            for (name, _) in store_node.store.meta_scan(prefix)? {
                store_node.store.meta_delete(&name)?;
            }
        }
        store_node.store.meta_delete(JOINING_META)
    })
    .await;
    if !matches!(cleared, Ok(Ok(()))) {
        tracing::warn!("joining: cannot clear the joining state; a restart would stream again");
    }
    if let Some(gossip) = node.gossip.get() {
        if let Err(error) = gossip.set_status(NodeStatus::Normal) {
            tracing::warn!(%error, "cannot announce having joined");
        }
    }
    node.joining.update(|p| p.state = "normal".into());
    tracing::info!("joined the cluster: serving its ranges");
    if node.config.anti_entropy_interval_ms > 0 {
        crate::anti_entropy::round(node, None, crate::anti_entropy::REQUESTED_PASSES_MAX).await;
    }
}
