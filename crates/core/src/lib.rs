//! Pure logic of ringkv: everything here is deterministic, does no I/O and takes time as an
//! argument, so it can be unit-, property- and simulation-tested in isolation.
//!
//! - [`limits`]: the named size limits every layer enforces.
//! - [`codec`]: the bounded binary reader/writer that record and log encodings use.
//! - [`crdt`]: data types that merge without conflicts (a PN-counter, an add-wins set).
//! - [`causal`]: dots and version vectors (the causal context clients carry).
//! - [`record`]: what a replica stores per key: siblings plus their causal context, the merge
//!   laws (Riak 2.0's dotted version vector sets) and the checksummed on-disk encoding.
//! - [`clock`]: wall time, injected so tests control it.
//! - [`hlc`]: the hybrid logical clock that orders truly concurrent last-writer-wins writes.
//! - [`ring`]: the consistent-hash ring and preference lists.
//! - [`backup`]: the backup file format, read with hard limits.
//! - [`wire`]: serde forms of contexts and records for node-to-node messages.

pub mod backup;
pub mod causal;
pub mod clock;
pub mod codec;
pub mod crdt;
pub mod hlc;
pub mod limits;
pub mod record;
pub mod ring;
pub mod wire;
