//! Restoring copies after a dead node's removal (`ringkv cluster remove`): every node that
//! the new ring makes a replica of ranges it did not replicate before streams those ranges
//! from a surviving replica at once ([`crate::streams`]), so that every key is back at N
//! copies without waiting for anti-entropy, which stays the backstop for anything a stream
//! misses (a donor that dies too, a write racing the stream). Progress is shown per range in
//! `cluster status`.
//!
//! Only ranges this node *gains* are pulled, each from the first live node that replicated it
//! before and still does, so each key comes from one donor and only the removed node's share
//! of the data moves.

use crate::gossip::ClusterView;
use crate::node::Node;
use crate::ranges::ranges_where;
use crate::streams::{Pace, Report, Transfer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where the restoring of copies after one removal stands, as `cluster status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    /// The removed node.
    pub removed: String,
    /// `restoring` until every stream is done, then `done`.
    pub state: String,
    /// One stream per donor and keyspace.
    pub transfers: Vec<Transfer>,
}

/// This node's restores, one per removal it adopted in this run.
#[derive(Default)]
pub struct Restoring {
    progress: parking_lot::Mutex<Vec<RestoreProgress>>,
}

impl Restoring {
    /// Every restore of this run, oldest first.
    pub fn progress(&self) -> Vec<RestoreProgress> {
        self.progress.lock().clone()
    }

    fn update(&self, restore: usize, change: impl FnOnce(&mut RestoreProgress)) {
        if let Some(progress) = self.progress.lock().get_mut(restore) {
            change(progress);
        }
    }
}

/// Streams the ranges this node gained when `removed` left the ring (the ring was `before`,
/// and is the node's current view now) from their surviving replicas.
///
/// A boxed future, named as `Send`: a removal can be adopted while answering a peer, and a
/// restore asks peers, so an `async fn` here would be a future type containing itself.
pub fn run(
    node: Arc<Node>,
    removed: String,
    before: Arc<ClusterView>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(restore(node, removed, before))
}

async fn restore(node: Arc<Node>, removed: String, before: Arc<ClusterView>) {
    let after = node.view();
    let streams = gained_ranges(&node, &before, &after);
    let restore = {
        let mut all = node.restoring.progress.lock();
        all.push(RestoreProgress {
            removed: removed.clone(),
            state: "restoring".into(),
            transfers: Vec::new(),
        });
        all.len() - 1
    };
    if !streams.is_empty() {
        tracing::info!(
            removed,
            streams = streams.len(),
            "restoring copies of ranges taken over"
        );
    }
    let pace = Pace::new(node.config.join_records_per_second);
    let pulls = streams.into_iter().map(|(donor, keyspace, ranges)| {
        let (node, pace) = (&node, &pace);
        async move {
            let tally = crate::streams::counted(node, &donor, &keyspace, ranges).await;
            let mut index = 0;
            node.restoring.update(restore, |progress| {
                progress
                    .transfers
                    .push(Transfer::streaming(&donor, &keyspace, &tally));
                index = progress.transfers.len() - 1;
            });
            let update = |change: &dyn Fn(&mut Transfer)| {
                node.restoring.update(restore, |progress| {
                    change(&mut progress.transfers[index]);
                });
            };
            let report = Report {
                what: "restoring",
                update: &update,
            };
            crate::streams::pull(node, &donor, &keyspace, tally, None, None, pace, report).await;
        }
    });
    futures_util::future::join_all(pulls).await;
    node.restoring
        .update(restore, |progress| progress.state = "done".into());
}

/// A stream to pull: donor, keyspace and ranges.
type Stream = (String, String, Vec<(u64, u64)>);

/// Per donor and keyspace, the ranges this node replicates in `after` but did not in
/// `before`, each from the first live node that replicates it in both.
fn gained_ranges(node: &Node, before: &ClusterView, after: &ClusterView) -> Vec<Stream> {
    let me = after.me.as_str();
    let mut streams = Vec::new();
    for def in node.keyspaces.list() {
        let replication = def.replication as usize;
        let donor_at = |position: u64| {
            let now = after.ring.preference_list_at(position, replication);
            let then = before.ring.preference_list_at(position, replication);
            let gained = now.iter().any(|m| m.id == me) && !then.iter().any(|m| m.id == me);
            gained
                .then(|| {
                    now.iter()
                        .find(|m| {
                            m.id != me && !after.is_down(&m.id) && then.iter().any(|t| t.id == m.id)
                        })
                        .map(|m| m.id.clone())
                })
                .flatten()
        };
        for donor in after.live_peers() {
            let ranges = ranges_where(&[&before.ring, &after.ring], |position| {
                donor_at(position).as_deref() == Some(donor.as_str())
            });
            if !ranges.is_empty() {
                streams.push((donor.clone(), def.name.clone(), ranges));
            }
        }
    }
    streams
}
