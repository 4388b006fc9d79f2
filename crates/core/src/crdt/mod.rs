//! Data types whose replicas merge without conflicts (CRDTs), as pure values: each is a state
//! with its operations and a `merge` that is commutative, associative and idempotent, so
//! replicas that have seen the same operations, in any order and any number of times, hold
//! the same state. Property tests check those laws on states reached by random operations
//! at random replicas, merged in random orders.
//!
//! - [`counter`]: a PN-counter: concurrent increments through different replicas all count.
//! - [`orset`]: an add-wins observed-remove set with dots (no tombstones per element: one
//!   version vector remembers what was removed), its metadata bounded by the replicas that
//!   write it.
//!
//! Operations are applied by one replica to the state it holds, which includes every
//! operation it issued before (a key's lead replica applies them, as it does a write), and
//! are stamped with that replica's id; the merge law settles what replicas applied
//! concurrently.

pub mod counter;
pub mod orset;

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
