//! A ringkv node: its configuration, the assembly of the layers (storage → replica →
//! APIs), and the client-facing APIs.
//!
//! - [`config`]: the one configuration struct and its defaults.
//! - [`node`]: opening a node and serving it.
//! - [`gossip`]: cluster membership over UDP.
//! - [`keyspaces`]: keyspace definitions.
//! - [`http`]: the REST API.
//! - [`resp`]: the Redis protocol.

pub mod config;
pub mod gossip;
pub mod http;
pub mod keyspaces;
pub mod node;
pub mod resp;

pub use config::ServerConfig;
pub use node::{serve, start, Node, NodeError, RunningNode};
