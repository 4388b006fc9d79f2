//! The coordinator layer (DESIGN.md, layer 2) and the node's cluster services, below the
//! client APIs: Cargo keeps the direction API → coordinator → replica → storage, so every
//! client request, the Redis protocol's single-node fast path included, reaches the replica
//! through this crate, where hints, metrics, authorization and anti-entropy bookkeeping hook
//! in once.
//!
//! - [`backup`]: point-in-time backups of a node, and restoring them into any cluster.
//! - [`config`]: the one configuration struct and its defaults.
//! - [`node`]: a node's state (its replica, keyspaces, peers, membership) and its cluster
//!   services.
//! - [`coordinator`]: routing each key's reads and writes to its replicas, and the
//!   single-node fast paths ([`coordinator::local`]).
//! - [`consistency`]: per-request consistency levels.
//! - [`keyspaces`]: keyspace definitions, spread to every node.
//! - [`gossip`]: cluster membership over UDP.
//! - [`anti_entropy`]: replicas comparing hash trees and repairing what differs.
//! - [`join`]: a new node streaming its ranges from their holders before it serves them.
//! - [`streams`]: pulling ranges of the ring from a donor, for joins and restores.
//! - [`leave`]: handing a node's ranges to their next owners before it leaves the ring.
//! - [`handoff`]: hinted handoff: copies of writes a replica missed, delivered when it is back.
//! - [`reaper`]: removing tombstones once every replica of their key holds them.
//! - [`restore`]: after a removal, streaming the ranges a node took over from survivors.
//! - [`ranges`]: the ranges of the ring where a property of the replicas holds, and how far
//!   their moves have gone.
//! - [`traffic`]: reads and writes per second, latencies, replication lag and hot keys.
//! - [`peers`]: what nodes ask of each other over the cluster RPC.

pub mod anti_entropy;
pub mod backup;
pub mod config;
pub mod consistency;
pub mod coordinator;
pub mod gossip;
pub mod handoff;
pub mod join;
pub mod keyspaces;
pub mod leave;
pub mod logins;
pub mod node;
pub mod peers;
pub mod ranges;
pub mod reaper;
pub mod restore;
pub mod streams;
pub mod strong;
pub mod traffic;
pub mod users;

/// The request and answer types the client APIs share with the layers below: what a read or
/// write asks and what it returns, re-exported so the APIs need no crate below this one.
pub mod request {
    pub use ringkv_core::causal::VersionVector;
    pub use ringkv_replica::store::{add_floats, format_float};
    pub use ringkv_replica::{
        Change, Condition, ConflictMode, Entry, Expiry, ReplicaError, Report, StringEdit,
        SyncPolicy, Version, VisibleValue, WriteOutcome, WriteRequest,
    };
}

pub use config::ServerConfig;
pub use node::{Node, NodeError};
