//! A ringkv node: its configuration, the assembly of the layers (storage → replica →
//! APIs), and the client-facing APIs.
//!
//! - [`config`]: the one configuration struct and its defaults.
//! - [`node`]: opening a node and serving it.
//! - [`gossip`]: cluster membership over UDP.
//! - [`keyspaces`]: keyspace definitions, spread to every node.
//! - [`consistency`]: per-request consistency levels.
//! - [`coordinator`]: routing each key's reads and writes to its replicas.
//! - [`peers`]: what nodes ask of each other over the cluster RPC.
//! - [`http`]: the REST API.
//! - [`resp`]: the Redis protocol.

pub mod config;
pub mod consistency;
pub mod coordinator;
pub mod gossip;
pub mod http;
pub mod keyspaces;
pub mod node;
pub mod peers;
pub mod resp;

pub use config::ServerConfig;
pub use node::{serve, start, Node, NodeError, RunningNode};
