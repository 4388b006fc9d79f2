//! Errors of the replica layer, in its own terms; the API edge maps them to HTTP statuses and
//! RESP error strings.

use crate::store::Entry;
use ringkv_storage::StorageError;

/// Why a read or write of the local replica failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The stored data for this key is damaged; other keys are unaffected.
    #[error("stored data for this key is corrupted: {detail}")]
    Corruption { detail: String },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(StorageError),
    /// A conditional write's condition did not hold; `current` is what a read saw when the
    /// condition was checked (so a caller can report it without a racy second read).
    #[error("precondition failed")]
    ConditionFailed { current: Option<Box<Entry>> },
    /// The key holds too many siblings to add another without resolving them.
    #[error(transparent)]
    TooManySiblings(#[from] ringkv_core::record::UpdateError),
    /// An increment met a value that is not a decimal 64-bit integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// The key holds a value of another type than the operation works on.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A typed operation could not apply (its message is Redis's).
    #[error("{0}")]
    Operation(String),
    /// An increment would leave the 64-bit range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// The write queue is full: the node is overloaded.
    #[error("node is busy: write queue full")]
    Busy,
    /// The store is shutting down.
    #[error("store is shutting down")]
    ShuttingDown,
    /// The key is longer than the limit.
    #[error("key of {len} bytes is above the limit of {max}")]
    KeyTooLong { len: usize, max: usize },
    /// The value is larger than the limit.
    #[error("value of {len} bytes is above the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    /// The request itself is invalid (a bad keyspace name...).
    #[error("{0}")]
    Invalid(String),
}

impl From<StorageError> for ReplicaError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Corruption(detail) => ReplicaError::Corruption { detail },
            other => ReplicaError::Storage(other),
        }
    }
}

impl From<ringkv_core::crdt::op::OpError> for ReplicaError {
    fn from(error: ringkv_core::crdt::op::OpError) -> Self {
        use ringkv_core::crdt::op::OpError;
        match error {
            OpError::WrongType => ReplicaError::WrongType,
            OpError::NotAnInteger => ReplicaError::NotAnInteger,
            OpError::Increment(ringkv_core::crdt::register::IncrementError::Overflow) => {
                ReplicaError::Overflow
            }
            other => ReplicaError::Operation(other.to_string()),
        }
    }
}
