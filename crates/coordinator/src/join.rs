//! Joining the cluster: a new node streams the key ranges it will own from the nodes that
//! hold them before it serves them.
//!
//! 1. A node that starts with seeds to join and no ring of its own remembered (a new node,
//!    or one whose disk was wiped) announces itself `joining`. Every member then routes reads
//!    and quorum writes without it, and also sends it, uncounted, the writes of keys it will
//!    be a replica of ([`crate::gossip::ClusterView::joining_replicas`]).
//! 2. It pulls from every live member at once, keyspace by keyspace, at most
//!    `join_records_per_second` in all. Each donor scans its records and sends those the
//!    joining node will replicate and that it is the first live replica of now, so each key
//!    comes from one donor and the donors' work is shared.
//! 3. After each page, where the transfer stands (the last key the donor examined) is saved:
//!    a broken transfer — the donor or this node restarted, a timeout — resumes there.
//!    Progress is kept per range of the ring too ([`crate::ranges`]): each transfer's ranges
//!    are those its donor sends, with the records the donor held in each when it began
//!    (counted from its hash trees' index) and the records received so far; they are saved
//!    with the cursor, so a resumed transfer goes on counting.
//! 4. Once every transfer is done (or a donor has been down for [`DONOR_GIVE_UP`], whose keys
//!    anti-entropy then brings), it announces itself `normal` and serves its ranges, and
//!    (unless anti-entropy is off) a round with every peer catches what the streams and
//!    copies missed.

use crate::coordinator::ask_within;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, RemoteError, ScannedPage};
use crate::ranges::{ranges_where, RangeProgress, RangeTally};
use futures_util::StreamExt;
use ringkv_cluster::membership::{Liveness, NodeStatus};
use ringkv_replica::MergeRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Records a donor examines per page of a transfer.
pub const TRANSFER_PAGE: u32 = 1_000;

/// How long a donor may stay unreachable before its transfer is given up (anti-entropy then
/// brings its keys once this node has joined).
pub const DONOR_GIVE_UP: Duration = Duration::from_secs(60);

/// How long a donor is given to answer one page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Records merged at once while a page is stored.
const MERGES_IN_FLIGHT: usize = 16;

/// Set while this node is joining, so that a restart resumes joining.
const JOINING_META: &str = "cluster/joining";

/// Where each transfer stands: `cluster/join/{donor}/{keyspace}` holds the last key done.
const CURSOR_META: &str = "cluster/join/";

/// Each transfer's ranges and their progress when its cursor was last saved (JSON):
/// `cluster/join-ranges/{donor}/{keyspace}`.
const RANGES_META: &str = "cluster/join-ranges/";

/// How long a donor waits for its hash trees before it gives up counting a transfer's ranges.
const COUNT_WAIT: Duration = Duration::from_secs(10);

/// Where a node's joining stands, as `cluster status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProgress {
    /// `joining` until every transfer is done, then `normal`.
    pub state: String,
    /// One transfer per donor and keyspace.
    pub transfers: Vec<Transfer>,
}

/// One donor's stream of one keyspace's ranges to this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The node sending.
    pub donor: String,
    /// The keyspace.
    pub keyspace: String,
    /// Records received and stored.
    pub records: u64,
    /// Pages that failed and were asked again.
    pub retries: u64,
    /// `streaming`, `done`, or `given up` (the donor was unreachable too long).
    pub state: String,
    /// The ranges of the ring the donor sends, and how far each has come.
    #[serde(default)]
    pub ranges: Vec<RangeProgress>,
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
        let answer = ask_within(node, &view, donor, PeerRequest::Keyspaces, PAGE_TIMEOUT).await;
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
/// donor has no more or has been unreachable for [`DONOR_GIVE_UP`].
async fn stream(node: &Arc<Node>, donor: &str, keyspace: &str, pace: &Pace) {
    let cursor_name = format!("{CURSOR_META}{donor}/{keyspace}");
    let ranges_name = format!("{RANGES_META}{donor}/{keyspace}");
    let mut after = node.store.meta_get(&cursor_name).ok().flatten();
    let mut tally = transfer_ranges(node, donor, keyspace, &ranges_name, after.is_some()).await;
    let index = node.joining.progress.lock().as_mut().map(|progress| {
        progress.transfers.push(Transfer {
            donor: donor.to_owned(),
            keyspace: keyspace.to_owned(),
            state: "streaming".into(),
            ranges: tally.progress().to_vec(),
            ..Transfer::default()
        });
        progress.transfers.len() - 1
    });
    let update = |change: &dyn Fn(&mut Transfer)| {
        if let (Some(index), Some(progress)) = (index, node.joining.progress.lock().as_mut()) {
            change(&mut progress.transfers[index]);
        }
    };
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = PeerRequest::Transfer {
            keyspace: keyspace.to_owned(),
            joiner: node.node_id.clone(),
            after: after.clone(),
            limit: TRANSFER_PAGE,
        };
        let page = match ask_within(node, &node.view(), donor, request, PAGE_TIMEOUT).await {
            Ok(PeerResponse::Scanned(Ok(page))) => page,
            other => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::debug!(donor, keyspace, answer = ?other.err(), "joining: a page failed");
                update(&|t| t.retries += 1);
                if since.elapsed() > DONOR_GIVE_UP {
                    tracing::warn!(
                        donor,
                        keyspace,
                        "joining: donor unreachable; anti-entropy will bring its keys"
                    );
                    update(&|t| t.state = "given up".into());
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        (failing_since, backoff) = (None, Duration::from_millis(200));
        let ScannedPage {
            records,
            next_after,
        } = page;
        let count = records.len() as u64;
        let keys: Vec<Vec<u8>> = records.iter().map(|(key, _)| key.clone()).collect();
        if let Err(error) = store_page(node, keyspace, records).await {
            tracing::warn!(donor, keyspace, %error, "joining: cannot store a page; asking again");
            update(&|t| t.retries += 1);
            tokio::time::sleep(backoff).await;
            continue;
        }
        tally.count(keys.iter().map(Vec::as_slice));
        let ranges = tally.progress();
        update(&|t| {
            t.records += count;
            t.ranges = ranges.to_vec();
        });
        pace.take(count).await;
        match next_after {
            Some(next) => {
                let saved = tally.save(&node.store, &ranges_name).and_then(|()| {
                    (node.store.meta_put(&cursor_name, &next)).map_err(|error| error.to_string())
                });
                if let Err(error) = saved {
                    tracing::warn!(%error, "joining: cannot save where a transfer stands");
                }
                after = Some(next);
            }
            None => {
                update(&|t| t.state = "done".into());
                return;
            }
        }
    }
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
    let request = PeerRequest::CountRanges {
        keyspace: keyspace.to_owned(),
        ranges: ranges.clone(),
    };
    let timeout = COUNT_WAIT + PAGE_TIMEOUT;
    let expected = match ask_within(node, &view, donor, request, timeout).await {
        Ok(PeerResponse::Counted(Ok(counts))) if counts.len() == ranges.len() => {
            counts.into_iter().map(Some).collect()
        }
        other => {
            tracing::debug!(donor, keyspace, answer = ?other.err(), "joining: ranges not counted");
            Vec::new()
        }
    };
    RangeTally::new(keyspace, donor, &ranges, &expected)
}

/// A donor's answer to [`PeerRequest::CountRanges`]: its records of `keyspace` in each of
/// `ranges`, from its hash trees' index (turned on, and waited for up to [`COUNT_WAIT`], if
/// they are not up to date).
pub async fn count_ranges(
    node: &Arc<Node>,
    keyspace: String,
    ranges: Vec<(u64, u64)>,
) -> Result<Vec<u64>, RemoteError> {
    let node = Arc::clone(node);
    let counted = tokio::task::spawn_blocking(move || {
        if !node.store.trees_ready(COUNT_WAIT) {
            return Err(RemoteError::Failed(
                "hash trees are not up to date yet".into(),
            ));
        }
        ranges
            .iter()
            .map(|&(low, high)| node.store.tree_count(&keyspace, low, high))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(RemoteError::from)
    })
    .await;
    counted.map_err(|error| RemoteError::Failed(error.to_string()))?
}

/// The rate all of a join's transfers share: after each page, a transfer waits until the
/// records taken so far fit the rate since the join began.
struct Pace {
    per_second: u64,
    started: Instant,
    taken: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn new(per_second: u64) -> Self {
        Self {
            per_second,
            started: Instant::now(),
            taken: Default::default(),
        }
    }

    async fn take(&self, records: u64) {
        if self.per_second == 0 {
            return;
        }
        let taken = self
            .taken
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed)
            + records;
        let due = Duration::from_secs_f64(taken as f64 / self.per_second as f64);
        if let Some(early) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(early).await;
        }
    }
}

/// Merges a page of a donor's records into the local store.
async fn store_page(
    node: &Arc<Node>,
    keyspace: &str,
    records: Vec<(Vec<u8>, ringkv_core::record::Record)>,
) -> Result<(), String> {
    let conflict = node.keyspaces.conflict_of(keyspace);
    let merges = records.into_iter().map(|(key, record)| {
        node.store.merge(MergeRequest {
            keyspace: keyspace.to_owned(),
            key,
            record,
            conflict,
        })
    });
    let results: Vec<_> = futures_util::stream::iter(merges)
        .buffer_unordered(MERGES_IN_FLIGHT)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<bool>, _>>()
        .map(|_| ())
        .map_err(|error| error.to_string())
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

/// A donor's answer to [`PeerRequest::Transfer`]: the records of `keyspace` after `after`
/// (at most `limit` examined) that node `joiner` will replicate and that this node is the
/// first live replica of now.
pub fn answer(
    node: &Node,
    keyspace: &str,
    joiner: &str,
    after: Option<&[u8]>,
    limit: u32,
) -> Result<ScannedPage, RemoteError> {
    let Some(def) = node.keyspaces.get(keyspace) else {
        return Err(RemoteError::Invalid(format!("no keyspace {keyspace:?}")));
    };
    let replication = def.replication as usize;
    let view = node.view();
    let Some(future) = &view.joining_ring else {
        return Err(RemoteError::Invalid(format!("{joiner} is not joining")));
    };
    if !view.is_joining(joiner) {
        return Err(RemoteError::Invalid(format!("{joiner} is not joining")));
    }
    let limit = limit.min(TRANSFER_PAGE) as usize;
    let (records, next_after) = node
        .store
        .scan_records(keyspace, b"", after, limit)
        .map_err(RemoteError::from)?;
    let records = records
        .into_iter()
        .filter(|(key, _)| {
            let first_live = view
                .ring
                .preference_list(key, replication)
                .into_iter()
                .find(|member| !view.is_down(&member.id));
            first_live.is_some_and(|member| member.id == view.me)
                && future
                    .preference_list(key, replication)
                    .iter()
                    .any(|member| member.id == joiner)
        })
        .collect();
    Ok(ScannedPage {
        records,
        next_after,
    })
}
