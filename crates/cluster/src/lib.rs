//! Node-to-node communication (DESIGN.md, "Cluster RPC").
//!
//! - [`rpc`]: long-lived multiplexed connections carrying length-delimited, postcard-encoded
//!   messages with request ids and deadlines; a peer that is down costs one failed connect,
//!   then calls fail fast until its reconnect backoff has passed.
//! - [`membership`]: who is in the cluster (SWIM gossip by foca, kept sans-IO).
//! - [`faults`]: links cut and latency added on purpose, for dev clusters' chaos mode.
//! - [`auth`]: the cluster secret that authenticates gossip and RPC between members.
//! - [`frames`]: the bounded frame decoder the RPC reads with.
//! - [`tls`]: mutual TLS for the RPC, with certificates of the cluster's own CA.

pub mod auth;
pub mod faults;
pub mod frames;
pub mod membership;
pub mod rpc;
pub mod tls;
