//! Errors of the replica layer, in its own terms; the API edge maps them to HTTP statuses and
//! RESP error strings.

use crate::store::Version;
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
    /// A conditional write's condition did not hold; `current` is the version now stored.
    #[error("precondition failed")]
    ConditionFailed { current: Option<Version> },
    /// The key holds too many siblings to add another without resolving them.
    #[error(transparent)]
    TooManySiblings(#[from] ringkv_core::record::UpdateError),
    /// The write queue is full: the node is overloaded.
    #[error("node is busy: write queue full")]
    Busy,
    /// The store is shutting down.
    #[error("store is shutting down")]
    ShuttingDown,
    /// The request itself is invalid (bad keyspace name, key too long...).
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
