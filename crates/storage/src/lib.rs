//! Storage: the [`Engine`] trait every layer above writes through, and the engines behind it.
//!
//! - [`background`]: the lower CPU priority of background threads, and their paced writes.
//! - [`engine`]: the trait, write batches, scan ranges and errors. It depends on no engine.
//! - [`buffered`]: ringkv's own write path — log, memtables and the flusher — in front of an
//!   ordered store of tables; the lsm and btree engines are both built on it.
//! - [`lsm`]: the default engine, a log-structured merge tree: [`buffered`] over fjall's
//!   tables and compaction.
//! - [`btree`]: [`buffered`] over a copy-on-write B-tree (redb), for read-heavy data that
//!   fits its page cache.
//! - [`memory`]: an ordered in-memory map made durable by a write-ahead log and snapshots.
//! - [`wal`]: the write-ahead log every engine writes first.
//! - [`log_files`]: the files the log is written into, made ahead of time.
//! - [`conformance`]: the one test suite every engine must pass.
//!
//! Engines store opaque bytes. Versioning, checksums of values and TTL live above, in the
//! replica layer; durability policy (when to call [`Engine::sync`]) lives there too.

pub mod background;
pub mod btree;
pub mod buffered;
pub mod conformance;
pub mod engine;
pub mod log_files;
pub mod lsm;
pub mod memory;
pub mod wal;

pub use engine::{
    copy_key, open, BatchKey, Engine, EngineKind, KeyValue, ScanRange, Snapshot, StorageError,
    WriteBatch, WriteOp,
};
