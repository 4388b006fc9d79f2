//! Strong keyspaces (DESIGN.md, "Strong keyspaces"): each shard of the keyspace — a fixed
//! range of key hashes — is a Raft group ([openraft]) over the replicas the ring gives the
//! range. Its leader orders every write in its log; once a majority holds an entry, every
//! member applies it to its local store ([`machine`]), so reads and writes are linearizable
//! and a compare-and-set is decided once, by the log.
//!
//! - Any node takes a request and sends it to the shard's leader ([`write`], [`read`]).
//!   A member that is not the leader names the one it knows, and the request goes there. A
//!   write is sent again only when it cannot have been applied: the node it went to was not
//!   the leader (openraft refuses such proposals, and answers the same for an entry a new
//!   leader discarded), or the connection failed before it was sent. A write whose answer
//!   was lost is reported as of unknown outcome, never silently applied twice.
//! - A linearizable read asks the leader, which confirms with a majority that it still
//!   leads (a read index) and waits until it has applied everything committed before it
//!   reads its store. A serializable read reads any member's store.
//! - Groups start with the members the keyspace's definition names for each shard
//!   ([`placement`]), and then follow the ring: the leader adds each new replica as a learner,
//!   waits for it to catch up, and changes the voters through Raft ([`run`]).
//! - Keys choose their shard by their hash tag, as in Redis Cluster: the part between the
//!   first `{` and the next `}`, if not empty. Keys that share a tag share a shard, so a
//!   multi-key write of them is one entry, applied at once.

// Openraft's storage traits return its `StorageError` by value, large as it is; the helpers
// that build one do too.
#![allow(clippy::result_large_err)]

mod log;
mod machine;
mod network;
pub mod types;

pub use network::{RaftMessage, RaftReply};
pub use types::GroupId;

use crate::coordinator::CoordinatorError;
use crate::gossip::ClusterView;
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, RemoteError};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use ringkv_cluster::rpc::RpcError;
use ringkv_replica::{Entry, ReplicaError, WriteOutcome, WriteRequest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use types::{Command, Member, Raft};

/// How long a request looks for its shard's leader (an election takes about one second)
/// before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Pause before asking again when no member knows a leader (an election is under way).
const ELECTION_PAUSE: Duration = Duration::from_millis(50);

/// How often each node checks its shards' groups: opens those it should hold, starts new
/// ones, and (where it leads) moves members to follow the ring.
const TICK: Duration = Duration::from_millis(250);

/// Longest a new member may take to catch up before the leader gives up adding it (and
/// tries again on a later tick).
const CATCH_UP_MAX: Duration = Duration::from_secs(120);

/// The shard of `key` among `shards`: where the hash of its hash tag (or of the whole key,
/// without one) falls among `shards` equal ranges of hashes.
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    let hash = ringkv_core::ring::key_hash(hash_tag(key));
    ((u128::from(hash) * u128::from(shards.max(1))) >> 64) as u32
}

/// The part of `key` that chooses its shard: Redis Cluster's hash tag.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(length) = key[open + 1..].iter().position(|&b| b == b'}') {
            if length > 0 {
                return &key[open + 1..open + 1 + length];
            }
        }
    }
    key
}

/// Where shard `shard`'s range of hashes starts on the ring.
fn shard_position(shard: u32, shards: u32) -> u64 {
    ((u128::from(shard) << 64) / u128::from(shards.max(1))) as u64
}

/// The nodes shard `shard` of `def` should have now: the ring's replicas of its range.
pub fn members_of(view: &ClusterView, def: &KeyspaceDef, shard: u32) -> Vec<String> {
    view.ring
        .preference_list_at(shard_position(shard, def.shards), def.replication as usize)
        .into_iter()
        .map(|member| member.id.clone())
        .collect()
}

/// The first members of each shard of a new strong keyspace `def`, from the ring in `view`.
pub fn placement(view: &ClusterView, def: &KeyspaceDef) -> Vec<Vec<String>> {
    (0..def.shards)
        .map(|shard| members_of(view, def, shard))
        .collect()
}

/// A shard as its leader sees it (`ringkv cluster status`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardStatus {
    /// `keyspace/shard`.
    pub group: String,
    /// The leader: this node.
    pub leader: String,
    /// The leader's term.
    pub term: u64,
    /// The highest index a majority of the voters hold: committed.
    pub commit_index: u64,
    /// The leader's last log index.
    pub last_index: u64,
    /// The last index this node applied.
    pub applied_index: u64,
    /// The last snapshot's index, if there is one.
    pub snapshot_index: Option<u64>,
    /// Every member: its id, whether it votes, and how many entries it lags the leader by.
    pub members: Vec<ShardMember>,
}

/// One member of a shard, as its leader sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardMember {
    /// The node.
    pub id: String,
    /// A voter (else a learner catching up).
    pub voter: bool,
    /// Entries behind the leader's last one (`None`: not heard from yet).
    pub lag: Option<u64>,
}

impl Groups {
    /// The shards this node leads, with their members' progress.
    pub fn led(&self) -> Vec<ShardStatus> {
        self.list()
            .into_iter()
            .filter_map(|(group, raft)| shard_status(&group, &raft))
            .collect()
    }
}

/// `group`'s status if this node leads it.
fn shard_status(group: &GroupId, raft: &Raft) -> Option<ShardStatus> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let replication = metrics.replication.as_ref()?;
    if metrics.current_leader != Some(metrics.id) {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let last_index = metrics.last_log_index.unwrap_or(0);
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let matched = |id: &u64| -> Option<u64> {
        if *id == metrics.id {
            return Some(last_index);
        }
        replication
            .get(id)
            .and_then(|m| m.as_ref())
            .map(|m| m.index)
    };
    let mut voter_matches: Vec<u64> = voters.iter().map(|id| matched(id).unwrap_or(0)).collect();
    voter_matches.sort_unstable_by(|a, b| b.cmp(a));
    let commit_index = voter_matches
        .get(voter_matches.len() / 2)
        .copied()
        .unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, member)| ShardMember {
            id: member.id.clone(),
            voter: voters.contains(id),
            lag: matched(id).map(|index| last_index.saturating_sub(index)),
        })
        .collect();
    let leader = membership
        .get_node(&metrics.id)
        .map_or_else(String::new, |member| member.id.clone());
    Some(ShardStatus {
        group: group.to_string(),
        leader,
        term: metrics.current_term,
        commit_index,
        last_index,
        applied_index: metrics.last_applied.map_or(0, |id| id.index),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        members,
    })
}

/// The strong keyspaces' metrics (prefix `ringkv_strong_`).
#[derive(Default)]
pub struct StrongMetrics {
    /// Writes proposed to a shard this node led.
    pub proposals: Counter,
    /// Of those, writes whose outcome is unknown (the leader stopped, or the deadline passed).
    pub proposals_unknown: Counter,
    /// Elections seen: a shard of this node's entered a new term.
    pub elections: Counter,
    /// Shards this node leads.
    pub leaders: Gauge<i64, AtomicI64>,
    /// The largest number of committed entries a shard here has not applied yet.
    pub apply_lag: Gauge<i64, AtomicI64>,
    /// Bytes of the shards' current snapshots here.
    pub snapshot_bytes: Gauge<i64, AtomicI64>,
    /// Each group's term when last seen, and its snapshot's size.
    seen: Mutex<HashMap<GroupId, (u64, u64)>>,
}

impl StrongMetrics {
    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let strong = registry.sub_registry_with_prefix("ringkv_strong");
        strong.register(
            "proposals",
            "Writes proposed to a shard this node led",
            self.proposals.clone(),
        );
        strong.register(
            "proposals_unknown",
            "Writes proposed whose outcome is unknown (the leader stopped or the deadline passed)",
            self.proposals_unknown.clone(),
        );
        strong.register(
            "elections",
            "Shards of this node that entered a new term",
            self.elections.clone(),
        );
        strong.register("leaders", "Shards this node leads", self.leaders.clone());
        strong.register(
            "apply_lag_entries",
            "The most committed entries a shard here has yet to apply",
            self.apply_lag.clone(),
        );
        strong.register(
            "snapshot_bytes",
            "Bytes of the shards' current snapshots here",
            self.snapshot_bytes.clone(),
        );
    }

    /// Records a snapshot of `group` of `bytes`.
    pub(super) fn snapshot(&self, group: &GroupId, bytes: u64) {
        let mut seen = self.seen.lock();
        seen.entry(group.clone()).or_default().1 = bytes;
        self.snapshot_bytes
            .set(seen.values().map(|(_, bytes)| *bytes as i64).sum());
    }

    /// Updates the gauges and the elections seen from every group's metrics.
    fn observe(&self, groups: &[(GroupId, Raft)]) {
        let (mut leaders, mut lag) = (0, 0);
        let mut seen = self.seen.lock();
        for (group, raft) in groups {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let entry = seen.entry(group.clone()).or_default();
            if metrics.current_term > entry.0 {
                if entry.0 > 0 {
                    self.elections.inc_by(metrics.current_term - entry.0);
                }
                entry.0 = metrics.current_term;
            }
            leaders += i64::from(metrics.current_leader == Some(metrics.id));
            let applied = metrics.last_applied.map_or(0, |id| id.index);
            lag = lag.max(metrics.last_log_index.unwrap_or(0).saturating_sub(applied) as i64);
        }
        self.leaders.set(leaders);
        self.apply_lag.set(lag);
    }
}

/// The Raft groups this node holds.
#[derive(Default)]
pub struct Groups {
    /// Their metrics.
    pub metrics: Arc<StrongMetrics>,
    open: Mutex<HashMap<GroupId, Raft>>,
    /// Opening a group happens once at a time, so two callers never open one twice.
    opening: tokio::sync::Mutex<()>,
    /// Groups whose membership change is under way (one at a time per group).
    changing: Mutex<HashSet<GroupId>>,
    /// Syncs the appends of every group's log together, once a group needs it.
    syncer: Mutex<Option<Arc<log::LogSyncer>>>,
}

impl Groups {
    /// No groups yet, with metrics registered in `registry`.
    pub fn new(registry: &mut prometheus_client::registry::Registry) -> Self {
        let groups = Self::default();
        groups.metrics.register(registry);
        groups
    }

    /// The Raft of `group`, if this node holds it.
    pub fn get(&self, group: &GroupId) -> Option<Raft> {
        self.open.lock().get(group).cloned()
    }

    /// Every group this node holds.
    pub fn list(&self) -> Vec<(GroupId, Raft)> {
        let mut groups: Vec<_> = self
            .open
            .lock()
            .iter()
            .map(|(id, raft)| (id.clone(), raft.clone()))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    /// The Raft of `group`, opened from the node's engine if it is not open yet.
    async fn open(&self, node: &Arc<Node>, group: &GroupId) -> Result<Raft, String> {
        if let Some(raft) = self.get(group) {
            return Ok(raft);
        }
        let _opening = self.opening.lock().await;
        if let Some(raft) = self.get(group) {
            return Ok(raft);
        }
        let raft = start(node, group).await?;
        self.open.lock().insert(group.clone(), raft.clone());
        Ok(raft)
    }

    /// Stops every group (the node is shutting down).
    pub async fn shutdown(&self) {
        let groups: Vec<Raft> = self.open.lock().drain().map(|(_, raft)| raft).collect();
        for raft in groups {
            let _ = raft.shutdown().await;
        }
    }
}

/// Starts the Raft of `group` on `node`, from what its engine holds.
async fn start(node: &Arc<Node>, group: &GroupId) -> Result<Raft, String> {
    let config = openraft::Config {
        cluster_name: group.to_string(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        // A snapshot every 20,000 entries; 1,000 kept after it for members slightly behind.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    }
    .validate()
    .map_err(|error| error.to_string())?;
    let engine = node.store.engine();
    let syncer = (node.config.sync == ringkv_replica::SyncPolicy::Always).then(|| {
        let mut syncer = node.strong.syncer.lock();
        let started =
            syncer.get_or_insert_with(|| Arc::new(log::LogSyncer::start(Arc::clone(engine))));
        Arc::clone(started)
    });
    let log = log::LogStore::new(Arc::clone(engine), group.to_string(), syncer);
    let machine =
        machine::StateMachine::open(node, group.clone()).map_err(|error| error.to_string())?;
    let network = network::Network {
        node: Arc::downgrade(node),
        group: group.clone(),
    };
    Raft::new(
        types::raft_id(&node.node_id),
        Arc::new(config),
        network,
        log,
        machine,
    )
    .await
    .map_err(|error| error.to_string())
}

/// A request for a shard's leader (or, serializable, any member).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StrongRequest {
    /// Propose these writes as one entry.
    Write {
        group: GroupId,
        writes: Vec<WriteRequest>,
    },
    /// Read one key: linearizable through the leader, or from this member's store.
    Read {
        group: GroupId,
        key: Vec<u8>,
        linearizable: bool,
    },
}

impl StrongRequest {
    fn group(&self) -> &GroupId {
        match self {
            StrongRequest::Write { group, .. } | StrongRequest::Read { group, .. } => group,
        }
    }
}

/// A member's answer to a [`StrongRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum StrongReply {
    /// The writes applied, write by write.
    Written(Vec<Result<WriteOutcome, RemoteError>>),
    /// The key as read.
    Read(Result<Option<Entry>, RemoteError>),
    /// This member is not the leader; the leader it knows of, if any. Nothing was applied.
    NotLeader(Option<String>),
    /// The write was proposed but its outcome is not known (the leader stopped).
    Unknown(String),
    /// The member could not serve, and applied nothing.
    Failed(String),
}

/// Answers a [`StrongRequest`] as this node's member of the shard.
pub async fn serve(node: &Arc<Node>, request: StrongRequest) -> StrongReply {
    let Some(raft) = node.strong.get(request.group()) else {
        return StrongReply::NotLeader(None);
    };
    match request {
        StrongRequest::Write { writes, .. } => {
            let command = Command {
                writes,
                wall_ms: node.now_ms(),
            };
            // Proposed, an entry may commit later even if this leader stops: past the
            // deadline its outcome is unknown.
            let metrics = &node.strong.metrics;
            let proposed = tokio::time::timeout(LEADER_WAIT, raft.client_write(command)).await;
            let forwarded = matches!(
                proposed,
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                    _
                ))))
            );
            if !forwarded {
                metrics.proposals.inc();
                if !matches!(proposed, Ok(Ok(_))) {
                    metrics.proposals_unknown.inc();
                }
            }
            match proposed {
                Ok(Ok(response)) => StrongReply::Written(response.data.0),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    StrongReply::NotLeader(forward.leader_node.map(|member| member.id))
                }
                Ok(Err(error)) => StrongReply::Unknown(error.to_string()),
                Err(_) => StrongReply::Unknown(format!("not committed within {LEADER_WAIT:?}")),
            }
        }
        StrongRequest::Read {
            group,
            key,
            linearizable,
        } => {
            if linearizable {
                match tokio::time::timeout(LEADER_WAIT, raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                        return StrongReply::NotLeader(f.leader_node.map(|m| m.id));
                    }
                    Ok(Err(error)) => return StrongReply::Failed(error.to_string()),
                    Err(_) => {
                        return StrongReply::Failed(format!(
                            "leadership not confirmed within {LEADER_WAIT:?}"
                        ))
                    }
                }
            }
            StrongReply::Read(
                node.store
                    .get(&group.keyspace, &key)
                    .map_err(RemoteError::from),
            )
        }
    }
}

/// The leader of `raft`'s group as this member knows it, by node id.
fn known_leader(raft: &Raft) -> Option<String> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let leader = metrics.current_leader?;
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|member| member.id.clone())
}

/// Sends `request` to its shard's leader (see the module documentation for when it is sent
/// again), and returns the leader's answer.
async fn route(
    node: &Arc<Node>,
    def: &KeyspaceDef,
    request: StrongRequest,
) -> Result<StrongReply, CoordinatorError> {
    let group = request.group().clone();
    let is_write = matches!(request, StrongRequest::Write { .. });
    let view = node.view();
    let mut candidates = members_of(&view, def, group.shard);
    if let Some(first) = def.placement.get(group.shard as usize) {
        for id in first {
            if !candidates.contains(id) {
                candidates.push(id.clone());
            }
        }
    }
    let mut next = node.strong.get(&group).and_then(|raft| known_leader(&raft));
    let deadline = Instant::now() + LEADER_WAIT;
    let timeout = Duration::from_millis(node.config.rpc_timeout_ms);
    let mut attempt = 0usize;
    let mut failures = Vec::new();
    while Instant::now() < deadline {
        let target = next
            .take()
            .unwrap_or_else(|| candidates[attempt % candidates.len()].clone());
        attempt += 1;
        let reply = if target == view.me {
            Ok(serve(node, request.clone()).await)
        } else if let Some(address) = view.address(&target) {
            let peer = node.peers.get(address);
            match peer
                .call(PeerRequest::Strong(request.clone()), timeout)
                .await
            {
                Ok(PeerResponse::Strong(reply)) => Ok(reply),
                Ok(other) => Err((false, format!("{target}: unexpected answer {other:?}"))),
                Err(RpcError::Unavailable { reason, .. }) => Err((false, reason)),
                Err(error) => Err((true, format!("{target}: {error}"))),
            }
        } else {
            Err((false, format!("{target} is unknown")))
        };
        match reply {
            Ok(StrongReply::NotLeader(Some(leader))) if leader != target => next = Some(leader),
            Ok(StrongReply::NotLeader(_)) => tokio::time::sleep(ELECTION_PAUSE).await,
            Ok(StrongReply::Failed(reason)) => failures.push(format!("{target}: {reason}")),
            Ok(answer) => return Ok(answer),
            // A write sent, whose answer was lost, may have been applied.
            Err((true, reason)) if is_write => {
                return Ok(StrongReply::Unknown(reason));
            }
            Err((_, reason)) => {
                failures.push(reason);
                tokio::time::sleep(ELECTION_PAUSE).await;
            }
        }
    }
    failures.dedup();
    Err(CoordinatorError::NoLeader {
        group: group.to_string(),
        waited: LEADER_WAIT,
        detail: failures.join("; "),
    })
}

/// The shard of a strong keyspace that `writes` go to: every key must be in the same one.
fn shard_of_writes(def: &KeyspaceDef, writes: &[WriteRequest]) -> Result<u32, CoordinatorError> {
    let mut shards = writes.iter().map(|w| shard_of(&w.key, def.shards));
    let first = shards.next().unwrap_or(0);
    if shards.any(|shard| shard != first) {
        return Err(ReplicaError::Invalid(
            "CROSSSLOT keys of one request must be in one shard of a strong keyspace: give them \
             the same hash tag, as {user1}.name and {user1}.email"
                .into(),
        )
        .into());
    }
    Ok(first)
}

/// Writes `writes` to strong keyspace `def` as one entry of their shard's log: all apply,
/// in order, or (if the leader cannot be reached) none. Each write's own outcome comes back
/// (a failed condition fails that write only).
pub async fn write(
    node: &Arc<Node>,
    def: &KeyspaceDef,
    writes: Vec<WriteRequest>,
) -> Result<Vec<Result<WriteOutcome, ReplicaError>>, CoordinatorError> {
    for write in &writes {
        write.validate()?;
    }
    let group = GroupId {
        keyspace: def.name.clone(),
        shard: shard_of_writes(def, &writes)?,
    };
    match route(node, def, StrongRequest::Write { group, writes }).await? {
        StrongReply::Written(results) => Ok(results
            .into_iter()
            .map(|result| result.map_err(into_replica_error))
            .collect()),
        StrongReply::Unknown(reason) => Err(CoordinatorError::OutcomeUnknown(reason)),
        other => Err(CoordinatorError::OutcomeUnknown(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Reads `key` of strong keyspace `def`: linearizable through the shard's leader, or
/// (`linearizable` false) from the first member that answers, which may be behind.
pub async fn read(
    node: &Arc<Node>,
    def: &KeyspaceDef,
    key: &[u8],
    linearizable: bool,
) -> Result<Option<Entry>, CoordinatorError> {
    let group = GroupId {
        keyspace: def.name.clone(),
        shard: shard_of(key, def.shards),
    };
    if !linearizable && node.strong.get(&group).is_some() {
        return Ok(node.store.get(&def.name, key)?);
    }
    let request = StrongRequest::Read {
        group,
        key: key.to_vec(),
        linearizable,
    };
    match route(node, def, request).await? {
        StrongReply::Read(result) => result.map_err(|error| match error.into_request_error() {
            Ok(error) => error.into(),
            Err(detail) => CoordinatorError::ShardFailed {
                group: shard_name(def, key),
                detail,
            },
        }),
        other => Err(CoordinatorError::OutcomeUnknown(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// A write's error as applied. Only errors about the request itself reach here: a member
/// whose store fails stops its group instead of answering ([`machine`]).
fn into_replica_error(error: RemoteError) -> ReplicaError {
    error
        .into_request_error()
        .unwrap_or_else(ReplicaError::Invalid)
}

/// The name of the shard of `key`, for errors.
fn shard_name(def: &KeyspaceDef, key: &[u8]) -> String {
    GroupId {
        keyspace: def.name.clone(),
        shard: shard_of(key, def.shards),
    }
    .to_string()
}

/// Answers a Raft message for `group`, opening the group if this node should hold it (a
/// leader adding this node as a learner reaches it before its own tick does).
pub async fn receive(node: &Arc<Node>, group: GroupId, message: RaftMessage) -> RaftReply {
    let known = node
        .keyspaces
        .get(&group.keyspace)
        .is_some_and(|def| def.is_strong() && group.shard < def.shards);
    let raft = match node.strong.get(&group) {
        Some(raft) => Some(raft),
        None if known => node.strong.open(node, &group).await.ok(),
        None => None,
    };
    match (raft, message) {
        (Some(raft), RaftMessage::Append(request)) => {
            RaftReply::Append(raft.append_entries(request).await)
        }
        (Some(raft), RaftMessage::Vote(request)) => RaftReply::Vote(raft.vote(request).await),
        (Some(raft), RaftMessage::Snapshot(request)) => {
            RaftReply::Snapshot(raft.install_snapshot(request).await)
        }
        (None, RaftMessage::Append(_)) => RaftReply::Append(Err(network::stopped())),
        (None, RaftMessage::Vote(_)) => RaftReply::Vote(Err(network::stopped())),
        (None, RaftMessage::Snapshot(_)) => {
            RaftReply::Snapshot(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)))
        }
    }
}

/// Keeps this node's groups as the keyspaces and the ring say, every [`TICK`], until
/// `signal` turns true: opens the groups of the shards it is a member of, starts those it
/// was a first member of, and where it leads, changes the members to follow the ring.
pub async fn run(node: Arc<Node>, mut signal: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = signal.changed() => {}
        }
        if *signal.borrow() {
            node.strong.shutdown().await;
            return;
        }
        let view = node.view();
        for def in node.keyspaces.list().into_iter().filter(|d| d.is_strong()) {
            for shard in 0..def.shards {
                tend(&node, &view, &def, shard).await;
            }
        }
        node.strong.metrics.observe(&node.strong.list());
    }
}

/// One tick of [`run`] for one shard.
async fn tend(node: &Arc<Node>, view: &Arc<ClusterView>, def: &KeyspaceDef, shard: u32) {
    let group = GroupId {
        keyspace: def.name.clone(),
        shard,
    };
    let desired = members_of(view, def, shard);
    let first = def
        .placement
        .get(shard as usize)
        .cloned()
        .unwrap_or_default();
    let me = &view.me;
    let raft = match node.strong.get(&group) {
        Some(raft) => raft,
        None if desired.contains(me) || first.contains(me) => {
            match node.strong.open(node, &group).await {
                Ok(raft) => raft,
                Err(error) => {
                    tracing::warn!(%group, %error, "cannot open the shard's Raft group");
                    return;
                }
            }
        }
        None => return,
    };
    if first.contains(me) && raft.is_initialized().await == Ok(false) {
        let members: BTreeMap<_, _> = first
            .iter()
            .map(|id| (types::raft_id(id), Member { id: id.clone() }))
            .collect();
        // Every first member starts the group with the same members: safe, and the group
        // starts even if some of them are down.
        if let Err(error) = raft.initialize(members).await {
            tracing::debug!(%group, %error, "shard group not initialized");
        }
    }
    follow_ring(node, view, &group, &raft, desired);
}

/// Where this node leads `group` and its voters are not `desired`, starts (in the
/// background, one at a time) the change: each new member is added as a learner and caught
/// up, then the voters become `desired` through Raft's joint consensus. Waits while a
/// desired member is down: it could not catch up.
fn follow_ring(
    node: &Arc<Node>,
    view: &ClusterView,
    group: &GroupId,
    raft: &Raft,
    desired: Vec<String>,
) {
    let me = types::raft_id(&view.me);
    let (voters, nodes, leader) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        (voters, nodes, metrics.current_leader)
    };
    let wanted: BTreeSet<u64> = desired.iter().map(|id| types::raft_id(id)).collect();
    if leader != Some(me) || voters == wanted || desired.is_empty() {
        return;
    }
    if desired.iter().any(|id| view.is_down(id)) {
        return;
    }
    if !node.strong.changing.lock().insert(group.clone()) {
        return;
    }
    let (node, group, raft) = (Arc::clone(node), group.clone(), raft.clone());
    tokio::spawn(async move {
        let change = async {
            for id in &desired {
                let raft_id = types::raft_id(id);
                if !nodes.contains(&raft_id) {
                    let member = Member { id: id.clone() };
                    raft.add_learner(raft_id, member, true)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            raft.change_membership(wanted, false)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(CATCH_UP_MAX, change).await {
            Ok(Ok(_)) => tracing::info!(%group, members = ?desired, "shard members changed"),
            Ok(Err(error)) => tracing::warn!(%group, %error, "shard member change failed"),
            Err(_) => tracing::warn!(%group, "shard member change timed out"),
        }
        node.strong.changing.lock().remove(&group);
    });
}
