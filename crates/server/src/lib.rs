//! The client-facing APIs of a ringkv node, over the coordinator crate
//! (`ringkv_coordinator`), which they reach for every read and write.
//!
//! - [`http`]: the REST API.
//! - [`resp`]: the Redis protocol.
//! - [`serve`]: binding both over an opened node, with its cluster services.
//! - [`tls`]: TLS for both, reloadable.
//!
//! The coordinator's modules are re-exported under their names, so callers of a node need
//! one crate.

pub mod http;
pub mod resp;
pub mod serve;
pub mod tls;

pub use ringkv_coordinator::{
    config, consistency, coordinator, gossip, keyspaces, node, peers, strong, Node, NodeError,
    ServerConfig,
};
pub use serve::{serve, start, RunningNode, StartError};
