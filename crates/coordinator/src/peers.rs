//! What nodes ask of each other over the cluster RPC (`ringkv_cluster::rpc`): the messages,
//! the service that answers them from the local replica, and the pool of connections to
//! peers.
//!
//! Records travel in their checksummed storage form (`ringkv_core::wire`), so a receiver
//! verifies every record before merging it.

use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use parking_lot::Mutex;
use ringkv_cluster::rpc::{Peer, Service};
use ringkv_core::record::{Record, UpdateError};
use ringkv_replica::{Entry, MergeRequest, ReplicaError, WriteOutcome, WriteRequest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Apply a client write as the key's lead replica and return the resulting record, which
    /// the coordinator then sends to the other replicas.
    Apply(WriteRequest),
    /// Merge another replica's record into the local copy (replication, read repair).
    Merge(MergeRequest),
    /// The local record of one key, dead siblings included.
    Read { keyspace: String, key: Vec<u8> },
    /// Local records of a keyspace in key order, after `after`, at most `limit`.
    Scan {
        keyspace: String,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// Every keyspace definition this node knows, for metadata anti-entropy.
    Keyspaces,
    /// A keyspace definition to adopt if it is newer than the one held.
    DefineKeyspace(KeyspaceDef),
    /// This node's figures for `ringkv cluster status`.
    Stats,
    /// Take dead node `id` out of the ring, as removed at `generation`.
    RemoveMember { id: String, generation: u64 },
    /// The nodes removed from the ring, with their generations (metadata anti-entropy).
    RemovedMembers,
    /// Anti-entropy: what this node's hash tree of `keyspace` over the keys it shares with
    /// node `peer` holds, as `question` asks.
    AntiEntropy {
        keyspace: String,
        peer: String,
        question: crate::anti_entropy::Question,
    },
    /// Keep `merge`'s record durably as a hint for replica `target`, which could not take
    /// it, and deliver it when `target` is back (a fallback's part in a sloppy quorum).
    Hint {
        target: String,
        merge: MergeRequest,
        created_ms: u64,
    },
    /// Streaming ranges to the asking node (joining, or restoring copies after a removal):
    /// a page of this node's records of `keyspace` after `after` (at most `limit` examined)
    /// whose ring positions lie in `ranges` (see [`crate::streams`]).
    Transfer {
        keyspace: String,
        ranges: Vec<(u64, u64)>,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// Reaping: whether this node holds each record (by key and fingerprint) or none of the
    /// key; with `remove`, remove each that still has its fingerprint (see
    /// [`crate::reaper`]).
    Reap {
        keyspace: String,
        records: Vec<(Vec<u8>, u64)>,
        remove: bool,
    },
    /// Every user this node knows, removed ones included (metadata anti-entropy).
    Users,
    /// A user to adopt if it is newer than the one held.
    DefineUser(crate::users::UserDef),
    /// Streaming ranges: how many records of `keyspace` this node holds in each of the ring
    /// `ranges` (inclusive), counted from its hash trees' index, so the asking node can show
    /// how far each range's stream has come.
    CountRanges {
        keyspace: String,
        ranges: Vec<(u64, u64)>,
    },
    /// A Raft message for this node's member of a strong keyspace's shard.
    Raft {
        group: crate::strong::GroupId,
        message: crate::strong::RaftMessage,
    },
    /// A read or write of a strong keyspace, for its shard's leader (see [`crate::strong`]).
    Strong(crate::strong::StrongRequest),
}

/// The answer to a [`PeerRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The outcome of [`PeerRequest::Apply`], with the record.
    Applied(Result<WriteOutcome, RemoteError>),
    /// Whether the local copy changed.
    Merged(Result<bool, RemoteError>),
    /// The local record, if any.
    Record(Result<Option<Record>, RemoteError>),
    /// Records and where the next page starts.
    Scanned(Result<ScannedPage, RemoteError>),
    /// Keyspace definitions.
    Keyspaces(Vec<KeyspaceDef>),
    /// Node figures.
    Stats(Box<NodeStats>),
    /// Whether the hint is kept (`false`: this node's queue for the target is full).
    Hinted(Result<bool, RemoteError>),
    /// Whether a removal was applied; the removed nodes.
    Removed(Result<std::collections::BTreeMap<String, u64>, RemoteError>),
    /// An anti-entropy tree.
    Tree(Result<crate::anti_entropy::Tree, RemoteError>),
    /// Anti-entropy key digests.
    Digests(Result<Vec<(Vec<u8>, u64)>, RemoteError>),
    /// Per record of a [`PeerRequest::Reap`]: held or none (or, removing: none now).
    Reaped(Result<Vec<bool>, RemoteError>),
    /// Users (their hashes included: only authenticated members may ask).
    Users(Vec<crate::users::UserDef>),
    /// Records per range of a [`PeerRequest::CountRanges`].
    Counted(Result<Vec<u64>, RemoteError>),
    /// The answer to a [`PeerRequest::Raft`].
    Raft(crate::strong::RaftReply),
    /// The answer to a [`PeerRequest::Strong`].
    Strong(crate::strong::StrongReply),
}

/// One page of a peer's records.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScannedPage {
    /// Keys and their records, in key order.
    pub records: Vec<(Vec<u8>, Record)>,
    /// Where the next page starts; `None` when the peer has no more.
    pub next_after: Option<Vec<u8>>,
}

/// A node's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStats {
    /// Keys with a visible value.
    pub keys: u64,
    /// Whether `keys` is exact (small stores) or the engine's estimate (large ones).
    pub keys_exact: bool,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// When this node last finished an anti-entropy round, unix ms (0: none yet).
    pub anti_entropy_last_ms: u64,
    /// Tree leaves that differed from its peers' in that round.
    pub anti_entropy_divergence: u64,
    /// Hints this node keeps for other replicas.
    pub hints_pending: u64,
    /// Where its joining stands, if it joined in this run.
    pub joining: Option<crate::join::JoinProgress>,
    /// Where its leaving stands, if it was asked to leave.
    pub leaving: Option<crate::leave::LeaveProgress>,
    /// Its restores of copies after removals, in this run.
    pub restoring: Vec<crate::restore::RestoreProgress>,
    /// Its traffic over the last second: rates, latencies, hot keys.
    pub traffic: crate::traffic::TrafficSummary,
    /// The strong keyspaces' shards this node leads.
    pub shards: Vec<crate::strong::ShardStatus>,
    /// Its counters since it started, from which a watcher works out rates.
    pub counters: NodeCounters,
}

/// A node's running totals since it started (the dashboard turns them into rates).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Writes applied to its store (by any API, and as a replica).
    pub writes: u64,
    /// Records from other replicas that changed its copy.
    pub merges: u64,
    /// Stale replicas it sent a merged record to on a read.
    pub read_repairs: u64,
    /// Requests it refused for want of replicas.
    pub unavailable: u64,
}

/// A replica error as it crosses the wire. Errors about the request itself (a failed
/// condition, a value that is not an integer) reach the client; the others mean only that
/// this replica could not serve, and the coordinator tries elsewhere.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// See [`ReplicaError::ConditionFailed`].
    #[error("precondition failed")]
    ConditionFailed(Option<Box<Entry>>),
    /// See [`ReplicaError::TooManySiblings`].
    #[error(transparent)]
    TooManySiblings(UpdateError),
    /// See [`ReplicaError::NotAnInteger`].
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// See [`ReplicaError::Overflow`].
    #[error("increment or decrement would overflow")]
    Overflow,
    /// See [`ReplicaError::KeyTooLong`].
    #[error("key of {len} bytes is above the limit of {max}")]
    KeyTooLong { len: usize, max: usize },
    /// See [`ReplicaError::ValueTooLarge`].
    #[error("value of {len} bytes is above the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    /// See [`ReplicaError::Invalid`].
    #[error("{0}")]
    Invalid(String),
    /// See [`ReplicaError::WrongType`].
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// See [`ReplicaError::Operation`].
    #[error("{0}")]
    Operation(String),
    /// The replica's copy of the key is damaged.
    #[error("replica's copy is corrupted: {0}")]
    Corrupt(String),
    /// The replica could not serve (storage failure, overload, shutdown).
    #[error("replica failed: {0}")]
    Failed(String),
}

impl From<ReplicaError> for RemoteError {
    fn from(error: ReplicaError) -> Self {
        match error {
            ReplicaError::ConditionFailed { current } => RemoteError::ConditionFailed(current),
            ReplicaError::TooManySiblings(error) => RemoteError::TooManySiblings(error),
            ReplicaError::NotAnInteger => RemoteError::NotAnInteger,
            ReplicaError::Overflow => RemoteError::Overflow,
            ReplicaError::KeyTooLong { len, max } => RemoteError::KeyTooLong { len, max },
            ReplicaError::ValueTooLarge { len, max } => RemoteError::ValueTooLarge { len, max },
            ReplicaError::Invalid(message) => RemoteError::Invalid(message),
            ReplicaError::WrongType => RemoteError::WrongType,
            ReplicaError::Operation(message) => RemoteError::Operation(message),
            ReplicaError::Corruption { detail } => RemoteError::Corrupt(detail),
            other => RemoteError::Failed(other.to_string()),
        }
    }
}

impl RemoteError {
    /// The client-facing error, or `None` if the failure was the replica's own.
    pub fn into_request_error(self) -> Result<ReplicaError, String> {
        Ok(match self {
            RemoteError::ConditionFailed(current) => ReplicaError::ConditionFailed { current },
            RemoteError::TooManySiblings(error) => ReplicaError::TooManySiblings(error),
            RemoteError::NotAnInteger => ReplicaError::NotAnInteger,
            RemoteError::Overflow => ReplicaError::Overflow,
            RemoteError::KeyTooLong { len, max } => ReplicaError::KeyTooLong { len, max },
            RemoteError::ValueTooLarge { len, max } => ReplicaError::ValueTooLarge { len, max },
            RemoteError::Invalid(message) => ReplicaError::Invalid(message),
            RemoteError::WrongType => ReplicaError::WrongType,
            RemoteError::Operation(message) => ReplicaError::Operation(message),
            RemoteError::Corrupt(message) | RemoteError::Failed(message) => return Err(message),
        })
    }
}

/// A client of one peer.
pub type PeerClient = Peer<PeerRequest, PeerResponse>;

/// Connections to peers, one per RPC address, made on first use and kept.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<HashMap<String, Arc<PeerClient>>>,
    key: Option<Arc<ringkv_cluster::auth::ClusterKey>>,
    tls: Option<Arc<ringkv_cluster::tls::ClusterTls>>,
    /// The faults chaos mode injects on this node's links.
    pub faults: Arc<ringkv_cluster::faults::LinkFaults>,
}

impl Peers {
    /// Connections that speak mutual TLS by `tls` and prove the cluster secret `key` (each
    /// when there is one).
    pub fn new(
        key: Option<Arc<ringkv_cluster::auth::ClusterKey>>,
        tls: Option<Arc<ringkv_cluster::tls::ClusterTls>>,
    ) -> Self {
        Self {
            clients: Mutex::default(),
            key,
            tls,
            faults: Arc::default(),
        }
    }

    /// The client of the peer at `address`.
    pub fn get(&self, address: &str) -> Arc<PeerClient> {
        let mut clients = self.clients.lock();
        Arc::clone(clients.entry(address.to_owned()).or_insert_with(|| {
            Arc::new(
                Peer::secured(address, self.key.clone(), self.tls.clone())
                    .with_faults(Arc::clone(&self.faults)),
            )
        }))
    }

    /// Lets the next call to the peer at `address` connect at once, whatever its backoff:
    /// the failure detector has just heard from it.
    pub fn retry_now(&self, address: &str) {
        if let Some(client) = self.clients.lock().get(address) {
            client.retry_now();
        }
    }
}

/// Answers peers' requests from this node's replica and metadata. Holds the node weakly: the
/// RPC server must not keep a stopped node alive.
pub struct PeerService {
    node: Weak<Node>,
}

impl PeerService {
    /// The service of `node`.
    pub fn new(node: &Arc<Node>) -> Self {
        Self {
            node: Arc::downgrade(node),
        }
    }
}

impl Service<PeerRequest, PeerResponse> for PeerService {
    async fn handle(&self, request: PeerRequest) -> Result<PeerResponse, String> {
        let node = self.node.upgrade().ok_or("node is shutting down")?;
        // Latency added to this node's links (chaos mode) slows its answers too.
        if let Some(delay) = node.peers.faults.delay() {
            tokio::time::sleep(delay).await;
        }
        answer(&node, request).await
    }

    fn cluster_key(&self) -> Option<Arc<ringkv_cluster::auth::ClusterKey>> {
        self.node
            .upgrade()
            .and_then(|node| node.cluster_key.clone())
    }

    fn cluster_tls(&self) -> Option<Arc<ringkv_cluster::tls::ClusterTls>> {
        self.node
            .upgrade()
            .and_then(|node| node.cluster_tls.clone())
    }

    fn clock_skew_max(&self) -> std::time::Duration {
        self.node
            .upgrade()
            .map_or(ringkv_cluster::rpc::CLOCK_SKEW_MAX_DEFAULT, |node| {
                std::time::Duration::from_millis(node.config.clock_skew_max_ms)
            })
    }
}

/// Answers one request from `node`'s own replica and metadata (for peers, and for the
/// coordinator when this node is one of a key's replicas).
pub async fn answer(node: &Arc<Node>, request: PeerRequest) -> Result<PeerResponse, String> {
    let store = &node.store;
    Ok(match request {
        PeerRequest::Apply(request) => PeerResponse::Applied(
            store
                .try_write(request.returning_record())
                .await
                .map_err(RemoteError::from),
        ),
        PeerRequest::Merge(request) => {
            PeerResponse::Merged(store.merge(request).await.map_err(RemoteError::from))
        }
        PeerRequest::Read { keyspace, key } => {
            PeerResponse::Record(store.get_record(&keyspace, &key).map_err(RemoteError::from))
        }
        PeerRequest::Scan {
            keyspace,
            prefix,
            after,
            limit,
        } => PeerResponse::Scanned(
            store
                .scan_records(&keyspace, &prefix, after.as_deref(), limit as usize)
                .map(|(records, next_after)| ScannedPage {
                    records,
                    next_after,
                })
                .map_err(RemoteError::from),
        ),
        PeerRequest::Keyspaces => PeerResponse::Keyspaces(node.keyspaces.list()),
        PeerRequest::DefineKeyspace(def) => {
            node.keyspaces
                .adopt(store, def)
                .map_err(|error| error.to_string())?;
            PeerResponse::Keyspaces(Vec::new())
        }
        PeerRequest::Users => PeerResponse::Users(node.users.all()),
        PeerRequest::DefineUser(user) => {
            node.users
                .adopt(store, user)
                .map_err(|error| error.to_string())?;
            PeerResponse::Users(Vec::new())
        }
        PeerRequest::Hint {
            target,
            merge,
            created_ms,
        } => PeerResponse::Hinted(keep_hint(node, target, merge, created_ms).await),
        PeerRequest::RemoveMember { id, generation } => PeerResponse::Removed(
            node.adopt_removal(&id, generation)
                .await
                .map(|()| removed_members(node))
                .map_err(|error| RemoteError::Failed(error.to_string())),
        ),
        PeerRequest::RemovedMembers => PeerResponse::Removed(Ok(removed_members(node))),
        PeerRequest::AntiEntropy {
            keyspace,
            peer,
            question,
        } => crate::anti_entropy::answer(node, keyspace, peer, question).await?,
        PeerRequest::Transfer {
            keyspace,
            ranges,
            after,
            limit,
        } => PeerResponse::Scanned(crate::streams::answer(
            node,
            &keyspace,
            &ranges,
            after.as_deref(),
            limit,
        )),
        PeerRequest::Reap {
            keyspace,
            records,
            remove,
        } => PeerResponse::Reaped(crate::reaper::answer(node, keyspace, records, remove).await),
        PeerRequest::CountRanges { keyspace, ranges } => {
            PeerResponse::Counted(crate::streams::count_ranges(node, keyspace, ranges).await)
        }
        PeerRequest::Raft { group, message } => {
            PeerResponse::Raft(crate::strong::receive(node, group, message).await)
        }
        PeerRequest::Strong(request) => {
            PeerResponse::Strong(crate::strong::serve(node, request).await)
        }
        PeerRequest::Stats => {
            let node = Arc::clone(node);
            let stats = tokio::task::spawn_blocking(move || node.stats()).await;
            PeerResponse::Stats(Box::new(stats.map_err(|error| error.to_string())?))
        }
    })
}

/// Stores a hint for `target` durably (with a sync of its own) before answering, so the
/// write may count this node's answer as an acknowledgement.
async fn keep_hint(
    node: &Arc<Node>,
    target: String,
    merge: MergeRequest,
    created_ms: u64,
) -> Result<bool, RemoteError> {
    ringkv_replica::store::check_key(&merge.key).map_err(RemoteError::from)?;
    let hint = ringkv_replica::hints::Hint {
        created_ms,
        keyspace: merge.keyspace,
        key: merge.key,
        record: merge.record,
    };
    let keeper = Arc::clone(node);
    let stored = tokio::task::spawn_blocking(move || keeper.store.hints().store(&[(target, hint)]))
        .await
        .map_err(|error| RemoteError::Failed(error.to_string()))?
        .map_err(|error| RemoteError::Failed(error.to_string()))?;
    let outcome = stored
        .first()
        .copied()
        .unwrap_or(ringkv_replica::hints::Stored::Refused);
    node.handoff.metrics.count(outcome);
    Ok(outcome == ringkv_replica::hints::Stored::Queued)
}

/// The nodes removed from `node`'s ring, with their generations.
fn removed_members(node: &Node) -> std::collections::BTreeMap<String, u64> {
    node.gossip
        .get()
        .map(|gossip| gossip.removed())
        .unwrap_or_default()
}
