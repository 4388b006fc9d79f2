//! Data types whose replicas merge without conflicts (CRDTs), as pure values: each is a state
//! with its operations and a `merge` that is commutative, associative and idempotent, so
//! replicas that have seen the same operations, in any order and any number of times, hold
//! the same state. Property tests check those laws on states reached by random operations
//! at random replicas, merged in random orders.
//!
//! - [`counter`]: a PN-counter: concurrent increments through different replicas all count.
//! - [`ormap`]: an add-wins observed-remove map with dots (no tombstones per key: one
//!   version vector remembers what was removed), its metadata bounded by the replicas that
//!   write it; each key's value merges by its own law.
//! - [`orset`]: the set that is an [`ormap`] of presence alone.
//! - [`register`]: last-writer-wins registers with counters inside (hash fields, scores).
//! - [`typed`]: a key's typed value, and how its concurrent versions become one.
//! - [`op`]: the operations Redis's commands make of them, with Redis's answers.
//!
//! Operations are applied by one replica to the state it holds, which includes every
//! operation it issued before (a key's lead replica applies them, as it does a write), and
//! are stamped with that replica's id; the merge law settles what replicas applied
//! concurrently.

pub mod counter;
pub mod op;
pub mod ormap;
pub mod orset;
pub mod register;
pub mod typed;

/// Why a stored state could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// The bytes are not a state of this type.
    #[error("malformed state: {0}")]
    Malformed(#[from] crate::codec::CodecError),
    /// The state breaks an invariant of its type (entries out of order, a dot its context
    /// has not seen).
    #[error("invalid state: {0}")]
    Invalid(&'static str),
}
