//! The coordinator (DESIGN.md, layer 2): any node serves any key. It finds the key's replicas
//! on the ring, asks them over the cluster RPC (or its own replica directly), waits for as
//! many answers as the request's consistency needs, merges versions and repairs stale
//! replicas.
//!
//! - [`write()`]: one replica (the *lead*) applies the write and issues its dot; the resulting
//!   record goes to the other replicas, which merge it; W acknowledgements answer the client.
//! - [`read`]: every replica is asked; R answers are merged; replicas found stale or missing
//!   the key are sent the merged record (read repair).
//! - [`scan`]: every node's page of records, merged in key order.
//!
//! While the node is alone in its ring, every call goes straight to the local store: a
//! single node pays nothing for the cluster. [`local`] has the Redis protocol's fast paths
//! for that case.

pub mod local;
pub mod placement;
mod read;
mod scan;
mod write;

pub use read::{read, read_local};
pub use scan::scan;
pub use write::{merge_record, write, write_many};

use crate::gossip::ClusterView;
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use ringkv_replica::ReplicaError;
use std::sync::Arc;
use std::time::Duration;

/// Why a coordinated request failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request itself failed (a condition did not hold, a value too large...), or the
    /// local replica failed on a single-node cluster.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// Fewer replicas answered than the consistency level needs.
    #[error(
        "{answered} of the {needed} replicas needed answered ({replicas} hold the key{detail})"
    )]
    Unavailable {
        /// Replicas the request needed (R or W).
        needed: usize,
        /// Replicas that answered in time.
        answered: usize,
        /// Replicas the key has (N, bounded by the cluster's size).
        replicas: usize,
        /// What went wrong with the others, for the operator.
        detail: String,
    },
    /// No leader of a strong keyspace's shard answered in time; nothing was applied.
    #[error("no leader of shard {group} answered within {waited:?} ({detail})")]
    NoLeader {
        /// The shard.
        group: String,
        /// How long the request looked.
        waited: Duration,
        /// What went wrong, for the operator.
        detail: String,
    },
    /// The shard's member that answered could not read its own copy.
    #[error("shard {group} could not serve: {detail}")]
    ShardFailed {
        /// The shard.
        group: String,
        /// What failed.
        detail: String,
    },
    /// A strong keyspace's write was sent to its leader but the answer was lost: it may or
    /// may not have applied. The client must read before trying again.
    #[error("outcome unknown: the write may or may not have applied ({0})")]
    OutcomeUnknown(String),
}

impl CoordinatorError {
    /// The same error again, for each write of a request it failed as a whole (a strong
    /// keyspace's shard that had no leader fails all its writes alike). A request error
    /// keeps its message but not its kind.
    pub fn for_each_write(&self) -> CoordinatorError {
        match self {
            CoordinatorError::NoLeader {
                group,
                waited,
                detail,
            } => CoordinatorError::NoLeader {
                group: group.clone(),
                waited: *waited,
                detail: detail.clone(),
            },
            CoordinatorError::ShardFailed { group, detail } => CoordinatorError::ShardFailed {
                group: group.clone(),
                detail: detail.clone(),
            },
            CoordinatorError::OutcomeUnknown(reason) => {
                CoordinatorError::OutcomeUnknown(reason.clone())
            }
            CoordinatorError::Unavailable {
                needed,
                answered,
                replicas,
                detail,
            } => CoordinatorError::Unavailable {
                needed: *needed,
                answered: *answered,
                replicas: *replicas,
                detail: detail.clone(),
            },
            CoordinatorError::Replica(error) => {
                CoordinatorError::Replica(ReplicaError::Invalid(error.to_string()))
            }
        }
    }
}

/// The replicas of one key, and the view they were chosen in.
struct Placement {
    view: Arc<ClusterView>,
    /// Replica node ids, in preference order.
    replicas: Vec<String>,
}

impl Placement {
    /// The replicas of `key`; `None` when this node is alone in its ring and so holds every
    /// key (the fast path: no ring walk, no allocation).
    fn of(node: &Node, keyspace: &KeyspaceDef, key: &[u8]) -> Option<Self> {
        if node.is_alone() {
            return None;
        }
        let view = node.view();
        if view.is_single() {
            return None;
        }
        let n = keyspace.replication as usize;
        let replicas = view
            .ring
            .preference_list(key, n)
            .into_iter()
            .map(|member| member.id.clone())
            .collect();
        Some(Self { view, replicas })
    }

    /// The nodes that may stand in for the key's replicas in a sloppy quorum: the rest of
    /// the ring in the key's preference order, those the failure detector sees alive.
    fn fallbacks(&self, key: &[u8]) -> std::collections::VecDeque<String> {
        let view = &self.view;
        view.ring
            .preference_list(key, view.members.len())
            .into_iter()
            .map(|member| member.id.clone())
            .filter(|id| !self.replicas.contains(id) && !view.is_down(id))
            .collect()
    }

    /// Whether this node is the key's only replica, so the local store serves it alone.
    fn is_local_only(&self) -> bool {
        self.replicas.len() == 1 && self.replicas[0] == self.view.me
    }

    fn unavailable(
        &self,
        node: &Node,
        needed: usize,
        answered: usize,
        failures: &[String],
    ) -> CoordinatorError {
        node.cluster_metrics.unavailable.inc();
        // A replica tried as the lead and again as a follower fails twice; say it once.
        let mut detail = String::new();
        for (index, failure) in failures.iter().enumerate() {
            if !failures[..index].contains(failure) {
                detail.push_str("; ");
                detail.push_str(failure);
            }
        }
        CoordinatorError::Unavailable {
            needed,
            answered,
            replicas: self.replicas.len(),
            detail,
        }
    }
}

/// Asks replica `id` — this node's own directly, a peer over RPC — unless the failure
/// detector has declared it down, which then costs nothing. Errors say which node failed.
pub(crate) async fn ask(
    node: &Arc<Node>,
    view: &ClusterView,
    id: &str,
    request: PeerRequest,
) -> Result<PeerResponse, String> {
    let timeout = Duration::from_millis(node.config.rpc_timeout_ms);
    ask_within(node, view, id, request, timeout).await
}

/// [`ask`], waiting up to `timeout` for the answer (a question that takes a scan).
pub(crate) async fn ask_within(
    node: &Arc<Node>,
    view: &ClusterView,
    id: &str,
    request: PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, String> {
    if id == view.me {
        return crate::peers::answer(node, request).await;
    }
    if view.is_down(id) {
        return Err(format!("{id} is down"));
    }
    let address = view.address(id).ok_or_else(|| format!("{id} is unknown"))?;
    node.peers
        .get(address)
        .call(request, timeout)
        .await
        .map_err(|error| format!("{id}: {error}"))
}

/// The coordinator's metrics (prefix `ringkv_cluster_`).
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// Replicas sent a merged record because a read found them stale.
    pub read_repairs: prometheus_client::metrics::counter::Counter,
    /// Requests refused because too few replicas answered.
    pub unavailable: prometheus_client::metrics::counter::Counter,
}

impl ClusterMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        let cluster = registry.sub_registry_with_prefix("ringkv_cluster");
        cluster.register(
            "read_repairs",
            "Replicas sent a merged record because a read found them stale",
            metrics.read_repairs.clone(),
        );
        cluster.register(
            "unavailable",
            "Requests refused because too few replicas answered",
            metrics.unavailable.clone(),
        );
        metrics
    }
}
