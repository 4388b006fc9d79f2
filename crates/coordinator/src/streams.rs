//! Pulling ranges of the ring from a donor: what a joining node does to fill the ranges it
//! will own ([`crate::join`]), and what a node does after a dead node's removal to fill the
//! ranges it took over ([`crate::restore`]).
//!
//! The puller decides the ranges and asks the donor for them a page at a time: the donor
//! scans its records of the keyspace in key order and returns those whose ring position lies
//! in the ranges. Before the first page it asks the donor how many records it holds in each
//! range (from its hash trees' index), so progress is shown per range ([`RangeTally`]). A
//! failing page is asked again, with growing pauses, until the donor has been unreachable for
//! [`DONOR_GIVE_UP`]; anti-entropy then brings what the stream did not.

use crate::coordinator::ask_within;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, RemoteError, ScannedPage};
use crate::ranges::{covered, RangeProgress, RangeTally};
use futures_util::StreamExt;
use ringkv_core::ring::key_hash;
use ringkv_replica::MergeRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records a donor examines per page.
pub const TRANSFER_PAGE: u32 = 1_000;

/// How long a donor may stay unreachable before its stream is given up (anti-entropy then
/// brings its keys).
pub const DONOR_GIVE_UP: Duration = Duration::from_secs(60);

/// How long a donor is given to answer one page.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Records merged at once while a page is stored.
const MERGES_IN_FLIGHT: usize = 16;

/// How long a donor waits for its hash trees before it gives up counting a stream's ranges.
const COUNT_WAIT: Duration = Duration::from_secs(10);

/// One donor's stream of one keyspace's ranges to this node, as `cluster status` shows it.
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

impl Transfer {
    /// A stream of `tally`'s ranges of `keyspace` from `donor`, just begun.
    pub fn streaming(donor: &str, keyspace: &str, tally: &RangeTally) -> Self {
        Self {
            donor: donor.to_owned(),
            keyspace: keyspace.to_owned(),
            state: "streaming".into(),
            ranges: tally.progress().to_vec(),
            ..Self::default()
        }
    }
}

/// Where a stream saves its progress in this node's metadata, so that it resumes after a
/// restart: the last key the donor examined, and the ranges' tally.
pub struct Saved {
    /// The cursor's name.
    pub cursor: String,
    /// The tally's name.
    pub ranges: String,
}

/// Applies a change to a stream's [`Transfer`] in the node's progress.
pub type Update<'a> = &'a (dyn Fn(&dyn Fn(&mut Transfer)) + Sync);

/// What a stream is for, and how it reports: `what` names it in logs ("joining"...), and
/// `update` changes its entry in the node's progress.
pub struct Report<'a> {
    /// Names the stream in logs.
    pub what: &'static str,
    /// Applies a change to the stream's [`Transfer`].
    pub update: Update<'a>,
}

/// The tally of `ranges` of `keyspace` to pull from `donor`, with the donor's count of its
/// records in each; counts are best effort (a donor that cannot leaves them unknown).
pub async fn counted(
    node: &Arc<Node>,
    donor: &str,
    keyspace: &str,
    ranges: Vec<(u64, u64)>,
) -> RangeTally {
    let request = PeerRequest::CountRanges {
        keyspace: keyspace.to_owned(),
        ranges: ranges.clone(),
    };
    let timeout = COUNT_WAIT + PAGE_TIMEOUT;
    let expected = match ask_within(node, &node.view(), donor, request, timeout).await {
        Ok(PeerResponse::Counted(Ok(counts))) if counts.len() == ranges.len() => {
            counts.into_iter().map(Some).collect()
        }
        other => {
            tracing::debug!(donor, keyspace, answer = ?other.err(), "ranges not counted");
            Vec::new()
        }
    };
    RangeTally::new(keyspace, donor, &ranges, &expected)
}

/// Pulls the ranges of `tally` of `keyspace` from `donor`, after key `after`, storing each
/// page and counting it against its ranges, saving where it stands after each page if
/// `saved` says where; returns once the donor has no more, or has been unreachable for
/// [`DONOR_GIVE_UP`].
#[allow(clippy::too_many_arguments)]
pub async fn pull(
    node: &Arc<Node>,
    donor: &str,
    keyspace: &str,
    mut tally: RangeTally,
    mut after: Option<Vec<u8>>,
    saved: Option<&Saved>,
    pace: &Pace,
    report: Report<'_>,
) {
    let (what, update) = (report.what, report.update);
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = PeerRequest::Transfer {
            keyspace: keyspace.to_owned(),
            ranges: tally.bounds().to_vec(),
            after: after.clone(),
            limit: TRANSFER_PAGE,
        };
        let page = match ask_within(node, &node.view(), donor, request, PAGE_TIMEOUT).await {
            Ok(PeerResponse::Scanned(Ok(page))) => page,
            other => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::debug!(donor, keyspace, what, answer = ?other.err(), "a page failed");
                update(&|t| t.retries += 1);
                if since.elapsed() > DONOR_GIVE_UP {
                    tracing::warn!(
                        donor,
                        keyspace,
                        what,
                        "donor unreachable; anti-entropy will bring its keys"
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
            tracing::warn!(donor, keyspace, what, %error, "cannot store a page; asking again");
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
        let Some(next) = next_after else {
            update(&|t| t.state = "done".into());
            return;
        };
        if let Some(saved) = saved {
            let stored = tally.save(&node.store, &saved.ranges).and_then(|()| {
                (node.store.meta_put(&saved.cursor, &next)).map_err(|error| error.to_string())
            });
            if let Err(error) = stored {
                tracing::warn!(what, %error, "cannot save where a stream stands");
            }
        }
        after = Some(next);
    }
}

/// The rate all of one move's streams share: after each page, a stream waits until the
/// records taken so far fit the rate since the move began (0: no limit).
pub struct Pace {
    per_second: u64,
    started: Instant,
    taken: std::sync::atomic::AtomicU64,
}

impl Pace {
    /// A pace of `per_second` records in all.
    pub fn new(per_second: u64) -> Self {
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

/// A donor's answer to [`PeerRequest::Transfer`]: its records of `keyspace` after `after`
/// (at most `limit` examined) whose ring positions lie in `ranges` (sorted, disjoint).
pub fn answer(
    node: &Node,
    keyspace: &str,
    ranges: &[(u64, u64)],
    after: Option<&[u8]>,
    limit: u32,
) -> Result<ScannedPage, RemoteError> {
    if node.keyspaces.get(keyspace).is_none() {
        return Err(RemoteError::Invalid(format!("no keyspace {keyspace:?}")));
    }
    let limit = limit.min(TRANSFER_PAGE) as usize;
    let (records, next_after) = node
        .store
        .scan_records(keyspace, b"", after, limit)
        .map_err(RemoteError::from)?;
    let records = records
        .into_iter()
        .filter(|(key, _)| {
            let position = key_hash(key);
            covered(ranges, position, position).next().is_some()
        })
        .collect();
    Ok(ScannedPage {
        records,
        next_after,
    })
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
