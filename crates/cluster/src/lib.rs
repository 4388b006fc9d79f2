//! Node-to-node communication (DESIGN.md, "Cluster RPC").
//!
//! - [`rpc`]: long-lived multiplexed connections carrying length-delimited, postcard-encoded
//!   messages with request ids and deadlines; a peer that is down costs one failed connect,
//!   then calls fail fast until its reconnect backoff has passed.
//!
//! Membership, the coordinator and handoff build on this (issue 5).

pub mod frames;
pub mod membership;
pub mod rpc;
