//! What a strong keyspace's Raft groups agree on: the groups' names, their members, the
//! commands in their logs and what applying one gives.

use crate::peers::RemoteError;
use ringkv_replica::{WriteOutcome, WriteRequest};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft node's id: the hash of the node's name ([`raft_id`]).
pub type RaftId = u64;

openraft::declare_raft_types!(
    /// The Raft types of a strong keyspace's shard.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = RaftId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// The Raft instance of one shard.
pub type Raft = openraft::Raft<TypeConfig>;

/// One shard of a strong keyspace: a Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId {
    /// The keyspace.
    pub keyspace: String,
    /// The shard, `0..shards`.
    pub shard: u32,
}

impl GroupId {
    /// The replica id every replica of this shard stamps on the versions it applies, so that
    /// all of them store the same records: derived from the name, never 0.
    pub fn replica(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(format!("ringkv-shard:{self}").as_bytes()).max(1)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.keyspace, self.shard)
    }
}

/// A member of a group: a node, by its name in the ring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: String,
}

/// The Raft id of node `node_id`: a hash of its name, so every node computes the same one.
pub fn raft_id(node_id: &str) -> RaftId {
    xxhash_rust::xxh3::xxh3_64(node_id.as_bytes())
}

/// A log entry's command: the writes one client request makes, applied in order and as one
/// (an `MSET` of keys in one shard), at the leader's time of proposal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Command {
    /// The writes.
    pub writes: Vec<WriteRequest>,
    /// The leader's clock when it proposed them, unix ms: every replica applies them at this
    /// time (raised to stay above the previous entry's), so expiry is decided alike.
    pub wall_ms: u64,
}

/// What applying one entry gave, write by write.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Applied(pub Vec<Result<WriteOutcome, RemoteError>>);
