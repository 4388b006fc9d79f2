//! The local store's public face: opening it over an engine, reads and scans (served directly
//! from the engine by the calling thread), and writes (handed to the [writer](crate::writer)
//! thread, which applies them in order and acknowledges them once durable).

use crate::cache::{CacheKey, Cached, Lookup, RecordCache, SlotVersion, StoredRecord};
use crate::error::ReplicaError;
use crate::hashtree::HashTrees;
use crate::hints::{HintLimits, Hints};
use crate::keyspace_ids::KeyspaceIds;
use crate::layout;
use crate::loop_commit::{LoopCommits, LoopQueue, Queued};
use crate::metrics::StoreMetrics;
use crate::writer::{Job, Writer, WriterThread};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use ringkv_core::causal::{ReplicaId, VersionVector};
use ringkv_core::clock::WallClock;
use ringkv_core::crdt::op::Op;
use ringkv_core::crdt::typed::Value;
use ringkv_core::hlc::{HybridClock, Timestamp};
use ringkv_core::limits::{self, KEY_BYTES_MAX, SCAN_PAGE_RECORDS_MAX, VALUE_BYTES_MAX};
use ringkv_core::record::{self, Record, RecordError, ValueKind};
use ringkv_storage::{Engine, WriteBatch};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// When a write counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Acknowledge only after fsync; concurrent writers share one fsync (group commit).
    #[default]
    Always,
    /// fsync every `sync_interval_ms`; a machine crash may lose the writes since the last one.
    Periodic,
    /// Never fsync explicitly; the operating system decides.
    None,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncPolicy::Always => "always",
            SyncPolicy::Periodic => "periodic",
            SyncPolicy::None => "none",
        })
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "always" => Ok(SyncPolicy::Always),
            "periodic" => Ok(SyncPolicy::Periodic),
            "none" => Ok(SyncPolicy::None),
            other => Err(format!(
                "unknown sync policy {other:?}: expected always, periodic or none"
            )),
        }
    }
}

/// Settings of a [`LocalStore`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When writes are acknowledged.
    pub sync: SyncPolicy,
    /// The fsync interval under [`SyncPolicy::Periodic`].
    pub sync_interval_ms: u64,
    /// How long a tombstone or expired value is kept after it died, so every replica learns
    /// of it before it is forgotten.
    pub tombstone_grace_ms: u64,
    /// How often the sweeper looks for expired data.
    pub sweep_interval_ms: u64,
    /// Writes that may wait for the writer thread before callers wait for room.
    pub write_queue_max: usize,
    /// Records swept since the last compaction that make the sweeper ask the engine to
    /// reclaim their space.
    pub compact_after_swept: u64,
    /// Bytes of recently used records cached in front of the engine (0: no cache).
    pub cache_bytes: u64,
    /// Bounds of each target's queue of hints (see [`crate::hints`]).
    pub hint_limits: HintLimits,
    /// Who removes records whose every sibling is dead.
    pub reaping: Reaping,
}

/// Who removes a record once every sibling of it is dead (deleted or expired) and its grace
/// has passed. Dead siblings beside live ones are always dropped by the sweeper: the record
/// stays, and its causal context still keeps the writes they replaced from coming back.
/// Removing a whole record forgets that context, which is safe only once no replica holds
/// an older write it would bring back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaping {
    /// The sweeper removes such records itself (a store with no other replica).
    BySweeper,
    /// The sweeper leaves them, and [`LocalStore::sweep_due`] lists them for the caller
    /// (the coordinator), which removes them with [`LocalStore::reap`] once it has seen that
    /// every replica of the key holds the same record or nothing.
    WhenConfirmed,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::Always,
            sync_interval_ms: 1000,
            tombstone_grace_ms: 0,
            sweep_interval_ms: 1000,
            write_queue_max: 4096,
            compact_after_swept: 100_000,
            cache_bytes: CACHE_BYTES_DEFAULT,
            hint_limits: HintLimits {
                count_max: 100_000,
                bytes_max: 256 << 20,
            },
            reaping: Reaping::BySweeper,
        }
    }
}

/// The record cache's size when nothing else is configured.
pub const CACHE_BYTES_DEFAULT: u64 = 64 << 20;

/// Records larger than this are not cached: one would crowd out thousands of small ones.
const CACHED_RECORD_BYTES_MAX: usize = 64 << 10;

/// A short fingerprint of a causal context, used as an HTTP ETag and for compare-and-set:
/// every write changes the context, so it changes the version.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Version(pub u64);

impl Version {
    /// The version of a record whose context is `context`.
    pub fn of(context: &VersionVector) -> Self {
        // Sized up front: this runs for every write, and growing the buffer showed in profiles.
        let mut bytes = Vec::with_capacity(context.encoded_len_max());
        context.encode_into(&mut bytes);
        Version(xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().trim_start_matches("W/").trim_matches('"');
        if text.len() != 16 {
            return Err(format!("version {text:?} is not 16 hex digits"));
        }
        u64::from_str_radix(text, 16)
            .map(Version)
            .map_err(|_| format!("version {text:?} is not hex"))
    }
}

/// How concurrent writes to one key are reconciled (a keyspace setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConflictMode {
    /// Keep the write with the newest hybrid-logical-clock timestamp.
    #[default]
    LastWriterWins,
    /// Keep concurrent writes as siblings for the client to resolve.
    Siblings,
}

/// What must hold for a write to apply; checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Condition {
    /// Apply unconditionally.
    #[default]
    Always,
    /// Apply only if the key has no visible value (create).
    IfAbsent,
    /// Apply only if the key has a visible value.
    IfPresent,
    /// Apply only if the key's current version is this one (compare-and-set).
    IfVersion(Version),
    /// Apply only if the key holds a string whose [`Condition::value_digest`] is this one
    /// (compare-and-set on the value).
    IfValue(u64),
}

impl Condition {
    /// The digest [`Condition::IfValue`] compares: 64 bits of xxh3, as a [`Version`] is, so
    /// that a request stays small and copyable (every write carries a condition); two
    /// different values share one with odds of 2^-64.
    pub fn value_digest(value: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(value)
    }
}

/// When a written value expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Expiry {
    /// Never.
    #[default]
    Never,
    /// At this unix time in milliseconds.
    At(u64),
    /// Whenever the value being replaced would have (Redis's `KEEPTTL`).
    Keep,
}

/// What a write does to a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Store a value.
    Put { value: Vec<u8>, expiry: Expiry },
    /// Delete the key.
    Delete,
    /// Add to the decimal integer stored (an absent key counts as 0), keeping its expiry.
    Increment(i64),
    /// Keep the value and set its expiry; the key must be present.
    Expire(Expiry),
    /// Edit the string stored (an absent key counts as empty), keeping its expiry.
    Edit(StringEdit),
    /// An operation on the typed value stored (a set, hash, sorted set, list or counter),
    /// keeping its expiry.
    Typed(Op),
}

impl Change {
    /// Whether the new version depends on the value it replaces (its integer or expiry).
    pub fn reads_current(&self) -> bool {
        match self {
            Change::Put { expiry, .. } => matches!(expiry, Expiry::Keep),
            Change::Delete => false,
            Change::Increment(_) | Change::Expire(_) | Change::Edit(_) | Change::Typed(_) => true,
        }
    }
}

/// An edit of a string value, applied by the key's lead replica to the value it holds, so two
/// edits through one replica never lose each other (Redis's string commands that read, then
/// write). Edits led by different replicas at once (a partition) conflict like any writes: the
/// keyspace's conflict mode settles them, last writer wins by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringEdit {
    /// `APPEND`: these bytes at the end. The outcome's integer is the new length.
    Append(Vec<u8>),
    /// `SETRANGE`: these bytes from `offset` on, zero bytes filling any gap. The outcome's
    /// integer is the new length.
    SetRange { offset: usize, bytes: Vec<u8> },
    /// `SETBIT`: bit `offset` (bit 0 is the most significant of byte 0) set or cleared, zero
    /// bytes added as needed. The outcome's integer is the bit's old value.
    SetBit { offset: usize, bit: bool },
    /// `INCRBYFLOAT`: this decimal number added to the decimal number stored. The outcome's
    /// integer is unset; the new value is what [`format_float`] makes of the sum.
    IncrementFloat(String),
}

impl StringEdit {
    /// The string `current` becomes, and the edit's integer answer.
    pub fn apply(&self, current: &[u8]) -> Result<(Vec<u8>, Option<i64>), ReplicaError> {
        let too_large = |len: usize| ReplicaError::ValueTooLarge {
            len,
            max: VALUE_BYTES_MAX,
        };
        Ok(match self {
            StringEdit::Append(bytes) => {
                let len = current.len() + bytes.len();
                if len > VALUE_BYTES_MAX {
                    return Err(too_large(len));
                }
                let mut value = Vec::with_capacity(len);
                value.extend_from_slice(current);
                value.extend_from_slice(bytes);
                (value, Some(len as i64))
            }
            StringEdit::SetRange { offset, bytes } => {
                let end = offset.saturating_add(bytes.len());
                if end > VALUE_BYTES_MAX {
                    return Err(too_large(end));
                }
                let mut value = current.to_vec();
                if value.len() < end {
                    value.resize(end, 0);
                }
                value[*offset..end].copy_from_slice(bytes);
                let len = value.len() as i64;
                (value, Some(len))
            }
            StringEdit::SetBit { offset, bit } => {
                let byte = offset / 8;
                if byte >= VALUE_BYTES_MAX {
                    return Err(too_large(byte + 1));
                }
                let mut value = current.to_vec();
                if value.len() <= byte {
                    value.resize(byte + 1, 0);
                }
                let mask = 0x80u8 >> (offset % 8);
                let old = value[byte] & mask != 0;
                if *bit {
                    value[byte] |= mask;
                } else {
                    value[byte] &= !mask;
                }
                (value, Some(i64::from(old)))
            }
            StringEdit::IncrementFloat(by) => {
                let sum = add_floats(current, by)?;
                (format_float(sum).into_bytes(), None)
            }
        })
    }
}

/// `current` (empty: 0) plus the decimal `by`, as Redis's INCRBYFLOAT adds them.
pub fn add_floats(current: &[u8], by: &str) -> Result<f64, ReplicaError> {
    let not_a_float = || ReplicaError::Invalid("value is not a valid float".into());
    let parse = |text: &str| -> Option<f64> {
        // Redis takes no leading or trailing spaces, and no NaN.
        if text.is_empty() || text.trim() != text {
            return None;
        }
        text.parse::<f64>().ok().filter(|number| !number.is_nan())
    };
    let now = match current {
        [] => 0.0,
        bytes => std::str::from_utf8(bytes)
            .ok()
            .and_then(parse)
            .ok_or_else(not_a_float)?,
    };
    let by = parse(by).ok_or_else(not_a_float)?;
    let sum = now + by;
    if !sum.is_finite() {
        return Err(ReplicaError::Invalid(
            "increment would produce NaN or Infinity".into(),
        ));
    }
    Ok(sum)
}

pub use ringkv_core::crdt::register::format_float;

/// A [`WriteRequest`]'s key: inline up to 24 bytes, so that a SET's submitter allocates
/// nothing for it and the writer thread frees nothing another thread allocated. Serialized as
/// a `Vec<u8>` is.
pub type WriteKey = smallvec::SmallVec<[u8; 24]>;

/// One write of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The keyspace's name, inline when short (24 bytes; all builtin names are), for the
    /// reasons [`WriteKey`] gives.
    pub keyspace: compact_str::CompactString,
    /// The key, inline when short (as [`WriteKey`] says why).
    pub key: WriteKey,
    /// What the write does.
    pub change: Change,
    /// The causal context the client read, if it sent one. Without it, a last-writer-wins
    /// write or any delete supersedes everything this replica holds; a put in a siblings
    /// keyspace becomes a new sibling.
    pub context: Option<VersionVector>,
    /// What must hold for the write to apply.
    pub condition: Condition,
    /// How to reconcile with concurrent versions.
    pub conflict: ConflictMode,
    /// Return the whole record after the write (a coordinator replicates it to the others).
    pub return_record: bool,
    /// Set by a strong keyspace's state machine: the stamp its Raft log gave the write, so
    /// that every replica applies it identically — that replica id and timestamp on the new
    /// version, and that time for expiry and conditions. A record already at least that new
    /// is left as it is: the write is a replay of one applied before a restart.
    #[serde(default)]
    pub replicated: Option<ReplicatedStamp>,
}

/// The stamp of a write a strong keyspace's log ordered (see [`WriteRequest::replicated`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedStamp {
    /// The write's timestamp: above every earlier write of its shard.
    pub timestamp: Timestamp,
    /// The shard's replica id, the same on every replica of it.
    pub replica: u64,
}

impl WriteRequest {
    /// An unconditional put of `value` into `keyspace`.
    pub fn put(keyspace: &str, key: &[u8], value: &[u8]) -> Self {
        Self::new(
            keyspace,
            key,
            Change::Put {
                value: value.to_vec(),
                expiry: Expiry::Never,
            },
        )
    }

    /// An unconditional delete.
    pub fn delete(keyspace: &str, key: &[u8]) -> Self {
        Self::new(keyspace, key, Change::Delete)
    }

    /// A write of `change` to `keyspace`/`key`.
    pub fn new(keyspace: &str, key: &[u8], change: Change) -> Self {
        Self {
            keyspace: keyspace.into(),
            key: WriteKey::from_slice(key),
            change,
            context: None,
            condition: Condition::Always,
            conflict: ConflictMode::LastWriterWins,
            return_record: false,
            replicated: None,
        }
    }

    /// Sets the absolute expiry of a put.
    pub fn expiring_at(mut self, expires_at_ms: u64) -> Self {
        if let Change::Put { expiry, .. } = &mut self.change {
            *expiry = Expiry::At(expires_at_ms);
        }
        self
    }

    /// Sets the condition.
    pub fn when(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Sets the causal context the client read.
    pub fn with_context(mut self, context: VersionVector) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets the conflict mode.
    pub fn conflict(mut self, conflict: ConflictMode) -> Self {
        self.conflict = conflict;
        self
    }

    /// Asks for the record after the write in [`WriteOutcome::record`].
    pub fn returning_record(mut self) -> Self {
        self.return_record = true;
        self
    }

    /// Bytes of key and value, for sizing write groups.
    pub fn bytes(&self) -> usize {
        match &self.change {
            Change::Put { value, .. } => self.key.len() + value.len(),
            Change::Edit(StringEdit::Append(bytes) | StringEdit::SetRange { bytes, .. }) => {
                self.key.len() + bytes.len()
            }
            Change::Typed(op) => self.key.len() + op.bytes(),
            _ => self.key.len(),
        }
    }

    /// Checks the request's sizes as the store will (a caller that queues requests itself can
    /// answer a bad one at once).
    pub fn validate(&self) -> Result<(), ReplicaError> {
        layout::validate_keyspace(&self.keyspace).map_err(ReplicaError::Invalid)?;
        check_key(&self.key)?;
        let len = match &self.change {
            Change::Put { value, .. } => value.len(),
            Change::Edit(StringEdit::Append(bytes)) => bytes.len(),
            Change::Edit(StringEdit::SetRange { offset, bytes }) => {
                offset.saturating_add(bytes.len())
            }
            Change::Edit(StringEdit::SetBit { offset, .. }) => offset / 8 + 1,
            Change::Edit(StringEdit::IncrementFloat(by)) => by.len(),
            Change::Typed(op) => op.bytes(),
            Change::Delete | Change::Increment(_) | Change::Expire(_) => 0,
        };
        if len > VALUE_BYTES_MAX {
            return Err(ReplicaError::ValueTooLarge {
                len,
                max: VALUE_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// Another replica's record of a key, to merge into the local copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequest {
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: Vec<u8>,
    /// The record as the sender holds it.
    pub record: Record,
    /// The keyspace's conflict mode: under last-writer-wins the merged record keeps one
    /// winner.
    pub conflict: ConflictMode,
}

/// One value a read may return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisibleValue {
    /// The bytes.
    pub value: Vec<u8>,
    /// Absolute expiry in unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// When it was written.
    pub timestamp: Timestamp,
    /// What the bytes are: a plain value, or a typed value's state.
    #[serde(default)]
    pub kind: ValueKind,
}

impl VisibleValue {
    /// The value of a sibling, `None` for a tombstone.
    fn from_sibling(sibling: ringkv_core::record::Sibling) -> Option<Self> {
        Some(Self {
            value: sibling.value?,
            expires_at_ms: sibling.expires_at_ms,
            timestamp: sibling.timestamp,
            kind: sibling.kind,
        })
    }
}

/// What a read of a present key returns: its visible values (more than one only when there
/// are siblings) and the context a write must send back to supersede them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The causal context of the record.
    pub context: VersionVector,
    /// The visible values, oldest first; never empty.
    pub values: Vec<VisibleValue>,
}

impl Entry {
    /// The record's fingerprint (ETag); computed when asked, since most reads never need it.
    pub fn version(&self) -> Version {
        Version::of(&self.context)
    }

    /// The visible part of `record` at `now_ms`, or `None` if nothing is visible.
    pub fn visible(record: &Record, now_ms: u64) -> Option<Entry> {
        let values = record
            .visible(now_ms)
            .cloned()
            .filter_map(VisibleValue::from_sibling)
            .collect();
        Self::assemble(record.context.clone(), values)
    }

    /// Like [`Entry::visible`], but takes the record, moving its values instead of copying
    /// them (the read path: a value is copied out of the engine once, and no more).
    pub fn from_record(record: Record, now_ms: u64) -> Option<Entry> {
        let values = record
            .siblings
            .into_iter()
            .filter(|sibling| sibling.is_visible(now_ms))
            .filter_map(VisibleValue::from_sibling)
            .collect();
        Self::assemble(record.context, values)
    }

    fn assemble(context: VersionVector, mut values: Vec<VisibleValue>) -> Option<Entry> {
        if values.is_empty() {
            return None;
        }
        values.sort_by_key(|v| v.timestamp);
        Some(Entry { context, values })
    }

    /// The newest sibling, taken out of the entry.
    pub fn into_winner(mut self) -> VisibleValue {
        self.values.pop().expect("an entry has at least one value")
    }

    /// The value a single-value protocol (RESP) returns: the newest sibling.
    pub fn winner(&self) -> &VisibleValue {
        self.values.last().expect("an entry has at least one value")
    }

    /// The one value the versions make: typed versions merged by their type's law, others
    /// by last writer wins (see [`Value::of_versions`]).
    pub fn value(&self) -> Result<Value, ReplicaError> {
        let versions = self
            .values
            .iter()
            .map(|v| (v.kind, v.value.as_slice(), v.timestamp));
        Value::of_versions(versions)
            .map_err(|error| ReplicaError::Corruption {
                detail: error.to_string(),
            })
            .map(|value| value.expect("an entry has at least one value"))
    }

    /// The string a Redis string command sees: the newest value's bytes, or a counter's
    /// decimal value; [`ReplicaError::WrongType`] for a collection.
    pub fn string(&self) -> Result<Vec<u8>, ReplicaError> {
        let winner = self.winner();
        if winner.kind.is_bytes() {
            return Ok(winner.value.clone());
        }
        let value = self.value()?;
        value
            .as_string()
            .map(std::borrow::Cow::into_owned)
            .ok_or(ReplicaError::WrongType)
    }
}

/// The result of a write that applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// The record's context after the write.
    pub context: VersionVector,
    /// What a read would have returned just before the write, when the request asked for it.
    /// Boxed, like `record`: few writes carry either, and every outcome is moved several times
    /// on its way from the writer to the caller (136 bytes unboxed, 56 boxed).
    pub previous: Option<Box<Entry>>,
    /// The new value of an [`Change::Increment`].
    pub integer: Option<i64>,
    /// What a [`Change::Typed`] operation answers.
    pub answer: Option<Box<ringkv_core::crdt::op::Answer>>,
    /// The whole record after the write, when the request asked for it.
    pub record: Option<Box<Record>>,
    /// Set when no replica of the key led the write (every one was down, and a stand-in
    /// issued it for the fallbacks to keep): `previous` is then not known rather than absent.
    pub previous_unknown: bool,
}

impl WriteOutcome {
    /// The record's fingerprint after the write; computed when asked, since most writes
    /// (every RESP SET) never report it.
    pub fn version(&self) -> Version {
        Version::of(&self.context)
    }
}

/// The parts of a [`WriteOutcome`] a caller of [`LocalStore::submit_many`] reads; the others
/// come back empty, and the writer neither copies them nor the caller frees them. A SET in a
/// pipeline reads only whether it applied (and, with its GET option, what it replaced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// [`WriteOutcome::previous`].
    pub previous: bool,
    /// [`WriteOutcome::context`] (and so its version).
    pub context: bool,
}

impl Report {
    /// Every part of the outcome.
    pub const FULL: Report = Report {
        previous: true,
        context: true,
    };
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys with visible values, in key order.
    pub entries: Vec<(Vec<u8>, Entry)>,
    /// Pass as `after` to get the next page; `None` when the scan is complete.
    pub next_after: Option<Vec<u8>>,
}

/// Fails if `key` is longer than a client may store: the one check every read and write of
/// the replica makes, whichever API or peer it came from.
pub fn check_key(key: &[u8]) -> Result<(), ReplicaError> {
    if limits::key_fits(key) {
        return Ok(());
    }
    Err(ReplicaError::KeyTooLong {
        len: key.len(),
        max: KEY_BYTES_MAX,
    })
}

/// Raw entries a scan examines per visible entry requested before it returns a short page
/// (expired and deleted records are skipped, and must not make one call unbounded).
const SCAN_EXAMINED_PER_RESULT: usize = 16;

/// Most records read from the engine in one step of a scan.
const SCAN_PAGE_MAX: usize = 1024;

/// Bytes of records after which a scan returns its page, short or not: a page of many large
/// values must not be held whole (callers page on with `next_after`).
const SCAN_PAGE_BYTES_MAX: usize = 32 << 20;

/// A submitted write whose outcome has not been waited for yet.
pub struct PendingWrite {
    answer: oneshot::Receiver<Result<WriteOutcome, ReplicaError>>,
}

impl PendingWrite {
    /// Waits until the write is applied and durable under the sync policy.
    pub async fn wait(self) -> Result<WriteOutcome, ReplicaError> {
        self.answer.await.map_err(|_| ReplicaError::ShuttingDown)?
    }
}

/// Writes queued together by [`LocalStore::submit_many`], not yet answered.
pub struct PendingWrites {
    answer: oneshot::Receiver<Result<Vec<Result<WriteOutcome, ReplicaError>>, ReplicaError>>,
}

impl PendingWrites {
    /// Waits until the writes are applied and durable under the sync policy: each write's
    /// outcome, in order, or the error that kept all of them from being stored.
    pub async fn wait(self) -> Result<Vec<Result<WriteOutcome, ReplicaError>>, ReplicaError> {
        self.answer.await.map_err(|_| ReplicaError::ShuttingDown)?
    }
}

/// State the store shares with its writer and background threads.
pub(crate) struct Shared {
    pub engine: Arc<dyn Engine>,
    pub clock: Arc<dyn WallClock>,
    pub hlc: HybridClock,
    pub replica_id: ReplicaId,
    pub metrics: StoreMetrics,
    pub options: StoreOptions,
    /// Siblings swept since the engine was last asked to compact.
    pub swept_since_compaction: std::sync::atomic::AtomicU64,
    /// Recently used records, if caching is on.
    pub cache: Option<RecordCache>,
    /// This node's numbers for the keyspaces in its engine keys.
    pub keyspace_ids: KeyspaceIds,
    /// The digests of the records, for anti-entropy.
    pub trees: Arc<HashTrees>,
}

/// What the record cache held, before a write was queued, for the record the write replaces,
/// and what the submitter prepared from it: the writer uses it if the key's [`SlotVersion`]
/// has not moved since, instead of looking the record up itself (see
/// [`RecordCache::snapshot`]).
pub(crate) struct SeenReplaced {
    pub version: SlotVersion,
    pub write: SeenWrite,
}

/// The part of a write that [`Shared::seen_replaced`] did ahead of the writer.
pub(crate) enum SeenWrite {
    /// The summary of the record the write replaces (`None`: the key had no record).
    Summary(Option<record::Replaced>),
    /// A plain SET that needs nothing back, encoded from that summary: all that is left for
    /// the writer is to store it. `dues` are the replaced and the new record's expiry-index
    /// times ([`record::Record::next_dead_ms`]).
    Encoded {
        stored: StoredRecord,
        dues: (Option<u64>, Option<u64>),
    },
}

/// A write validated and made ready for the writer by the submitting thread
/// ([`LocalStore::prepare`], [`LocalStore::prepare_put`]), to be submitted with others by
/// [`LocalStore::submit_prepared`].
pub struct PreparedWrite {
    pub(crate) request: WriteRequest,
    pub(crate) report: Report,
    pub(crate) seen: Option<SeenReplaced>,
}

impl PreparedWrite {
    /// What the write's outcome will hold.
    pub fn report(&self) -> Report {
        self.report
    }

    /// Bytes of key and value, for sizing groups ([`WriteRequest::bytes`]): a value encoded
    /// ahead ([`SeenWrite::Encoded`]) may be in the encoded record only.
    pub(crate) fn bytes(&self) -> usize {
        match &self.seen {
            Some(SeenReplaced {
                write: SeenWrite::Encoded { stored, .. },
                ..
            }) => self
                .request
                .bytes()
                .max(self.request.key.len() + stored.bytes.len()),
            _ => self.request.bytes(),
        }
    }
}

impl Shared {
    /// The cache's summary of the record `request` replaces, for a write the writer applies
    /// from such a summary ([`crate::writer::supersedes_all`]) when the cache holds the key,
    /// and for a plain SET the new record itself: encoding it (the value's copy and the
    /// checksum) is most of a SET's work, and the caller's thread has time to spare where
    /// the single writer has none. Its timestamp is ticked here, so a write the writer finds
    /// stale and applies itself skips one. A record that cannot be summarised so, or whose
    /// bytes fail the structure check, is left to the writer.
    pub fn seen_replaced(&self, request: &WriteRequest, report: Report) -> Option<SeenReplaced> {
        self.seen_replaced_putting(request, report, plain_put(request, report))
    }

    /// [`Shared::seen_replaced`], given the mutation of a plain put (whose value need not be
    /// in `request`) or `None` for any other write.
    fn seen_replaced_putting(
        &self,
        request: &WriteRequest,
        report: Report,
        put: Option<record::MutationView<'_>>,
    ) -> Option<SeenReplaced> {
        if !crate::writer::supersedes_all(request, report) {
            return None;
        }
        let cache = self.cache.as_ref()?;
        let id = self.keyspace_ids.get(&request.keyspace)?;
        let (cached, version) = cache.snapshot(&layout::lookup_key(id, &request.key))?;
        let replacing = match cached {
            Some(stored) => Some(stored.replaced().ok()??),
            None => None,
        };
        let write = match put {
            Some(mutation) => self.encode_ahead(replacing, mutation),
            None => SeenWrite::Summary(replacing),
        };
        Some(SeenReplaced { version, write })
    }

    /// A SET of `mutation` over the record `replacing` summarises, encoded as the writer's
    /// own path for it ([`record::Record::encode_replacement`]) encodes it.
    fn encode_ahead(
        &self,
        replacing: Option<record::Replaced>,
        mutation: record::MutationView<'_>,
    ) -> SeenWrite {
        let now_ms = self.clock.now_ms();
        if let Some(newest) = replacing.as_ref().and_then(|r| r.newest_timestamp) {
            self.hlc.observe(newest);
        }
        let timestamp = self.hlc.tick(now_ms);
        let old_due = replacing.as_ref().and_then(|r| r.next_dead_ms);
        let (stored, new_due) = crate::record_bytes::encode_replacement(
            replacing,
            mutation,
            self.replica_id,
            timestamp,
        );
        SeenWrite::Encoded {
            stored,
            dues: (old_due, new_due),
        }
    }

    /// Decodes stored bytes, counting and logging damage.
    pub fn decode(&self, keyspace: &str, key: &[u8], bytes: &[u8]) -> Result<Record, ReplicaError> {
        Record::decode(bytes).map_err(|error| self.corrupt(keyspace, key, error.to_string()))
    }

    /// Counts and logs damaged data, and makes the error a read or write returns.
    pub fn corrupt(&self, keyspace: &str, key: &[u8], detail: String) -> ReplicaError {
        self.metrics.corruption.inc();
        if let Some(id) = self.keyspace_ids.get(keyspace) {
            self.trees.feed_damaged(id, key);
        }
        tracing::error!(keyspace, key = %String::from_utf8_lossy(key), %detail, "corrupted record");
        ReplicaError::Corruption { detail }
    }

    /// The stored record of a key, from the cache when it holds it.
    pub fn load(&self, keyspace: &str, key: &[u8]) -> Result<Option<Record>, ReplicaError> {
        self.load_with(keyspace, key, |stored| Record::decode(&stored.bytes))
    }

    /// A key's stored record, from the cache when it holds it (filling it when not), read by
    /// `read`; bytes found damaged are reported as the key's corruption and forgotten by the
    /// cache. `read` gets bytes whose checksum has been verified (or that the writer made).
    pub fn load_with<T>(
        &self,
        keyspace: &str,
        key: &[u8],
        read: impl FnOnce(&StoredRecord) -> Result<T, RecordError>,
    ) -> Result<Option<T>, ReplicaError> {
        check_key(key)?;
        let Some(id) = self.keyspace_ids.get(keyspace) else {
            return Ok(None);
        };
        let data_key = layout::lookup_key(id, key);
        let corrupt = |error: RecordError| self.corrupt(keyspace, key, error.to_string());
        let Some(cache) = &self.cache else {
            let stored = self.stored_bytes(keyspace, key, &data_key)?;
            let record = stored
                .map(StoredRecord::from_engine)
                .transpose()
                .map_err(corrupt)?;
            return record.as_ref().map(read).transpose().map_err(corrupt);
        };
        let miss = match cache.lookup(&data_key) {
            Lookup::Hit(None) => return Ok(None),
            Lookup::Hit(Some(stored)) => {
                return read(&stored)
                    .map(Some)
                    .map_err(corrupt)
                    .inspect_err(|_| cache.forget(&data_key))
            }
            Lookup::Miss(miss) => miss,
        };
        let found = self
            .stored_bytes(keyspace, key, &data_key)?
            .map(StoredRecord::from_engine)
            .transpose()
            .map_err(corrupt)?;
        let value = found.as_ref().map(read).transpose().map_err(corrupt)?;
        if found
            .as_ref()
            .is_none_or(|stored| stored.bytes.len() <= CACHED_RECORD_BYTES_MAX)
        {
            cache.fill(&data_key, miss, found);
        }
        Ok(value)
    }

    /// A key's stored bytes as the engine has them; damage the engine detects is reported as
    /// the key's corruption.
    fn stored_bytes(
        &self,
        keyspace: &str,
        key: &[u8],
        data_key: &[u8],
    ) -> Result<Option<Bytes>, ReplicaError> {
        self.engine.get_bytes(data_key).map_err(|error| {
            if error.is_corruption() {
                self.corrupt(keyspace, key, error.to_string())
            } else {
                error.into()
            }
        })
    }

    /// Brings the cache up to date with records the writer has just stored (`None`:
    /// deleted); large records are dropped from the cache instead.
    pub fn cache_stored(&self, stored: Vec<(CacheKey, Cached)>) {
        let Some(cache) = &self.cache else { return };
        for (data_key, record) in stored {
            match record {
                Some(record) if record.bytes.len() > CACHED_RECORD_BYTES_MAX => {
                    cache.forget(&data_key)
                }
                record => cache.update(data_key, record),
            }
        }
    }

    /// Drops keys from the cache, so their next read goes to the engine.
    pub fn cache_forget(&self, data_keys: impl IntoIterator<Item = CacheKey>) {
        let Some(cache) = &self.cache else { return };
        for data_key in data_keys {
            cache.forget(&data_key);
        }
    }
}

/// A node's local replica of the keys it stores.
pub struct LocalStore {
    pub(crate) shared: Arc<Shared>,
    /// The writes of threads that commit their own ([`LocalStore::commit_on_this_thread`]).
    loops: Arc<LoopQueue>,
    /// The writer thread's queue.
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// The hash trees' thread: it ends saying whether the trees were complete.
    trees_thread: Option<JoinHandle<bool>>,
    /// Records to deliver to other replicas, kept for the coordinator's handoff.
    hints: Hints,
}

impl LocalStore {
    /// Opens the store over `engine`, starting its writer and background threads. Metrics are
    /// registered in `registry`.
    pub fn open(
        engine: Arc<dyn Engine>,
        options: StoreOptions,
        clock: Arc<dyn WallClock>,
        registry: &mut Registry,
    ) -> Result<Self, ReplicaError> {
        let replica_id = load_or_create_replica_id(engine.as_ref())?;
        let keyspace_ids = KeyspaceIds::load(engine.as_ref())?;
        let moved = crate::keyspace_ids::migrate_named_records(engine.as_ref(), &keyspace_ids)?;
        if moved > 0 {
            tracing::info!(moved, "moved records to the numbered keyspace layout");
        }
        let hints = Hints::open(Arc::clone(&engine), options.hint_limits)?;
        let cache = (options.cache_bytes > 0).then(|| RecordCache::new(options.cache_bytes));
        let metrics = StoreMetrics::register(registry);
        let trees = HashTrees::open(Arc::clone(&engine), registry)?;
        metrics
            .changes_refused_at_open
            .set(engine.changes_refused_at_open());
        let shared = Arc::new(Shared {
            engine,
            clock,
            hlc: HybridClock::new(),
            replica_id,
            metrics,
            options,
            swept_since_compaction: Default::default(),
            cache,
            keyspace_ids,
            trees: Arc::clone(&trees),
        });
        let (writer_tx, writer_rx) = mpsc::channel(shared.options.write_queue_max.max(1));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let writer = Arc::new(parking_lot::Mutex::new(Writer::new(Arc::clone(&shared))));
        let loops = Arc::new(LoopQueue::new(
            Arc::clone(&writer),
            shared.options.write_queue_max,
        ));
        let mut threads = vec![spawn("ringkv-writer", {
            let thread = WriterThread::new(writer, Arc::clone(&loops), writer_rx);
            move || thread.run()
        })?];
        threads.push(spawn("ringkv-background", {
            let shared = Arc::clone(&shared);
            let writer_tx = writer_tx.clone();
            move || {
                ringkv_storage::background::lower_this_thread();
                crate::sweeper::run_background(shared, writer_tx, stop_rx)
            }
        })?);
        let trees_thread = std::thread::Builder::new()
            .name("ringkv-hashtree".into())
            .spawn(move || {
                ringkv_storage::background::lower_this_thread();
                trees.run()
            })
            .map_err(|error| ReplicaError::Storage(error.into()))?;
        Ok(Self {
            shared,
            loops,
            jobs: Some(writer_tx),
            threads,
            stop: Some(stop_tx),
            trees_thread: Some(trees_thread),
            hints,
        })
    }

    /// The store's counters and histograms (for figures beyond `/metrics`, such as the
    /// dashboard's rates).
    pub fn metrics(&self) -> &crate::metrics::StoreMetrics {
        &self.shared.metrics
    }

    /// The hints this node keeps for other replicas: the coordinator's durable queue for
    /// hinted handoff.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// The id this node stamps on the writes it coordinates.
    pub fn replica_id(&self) -> ReplicaId {
        self.shared.replica_id
    }

    /// The engine underneath (for operators' statistics and benchmarks).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.shared.engine
    }

    /// The visible value(s) of a key, or `None` if absent, deleted or expired.
    pub fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Entry>, ReplicaError> {
        let now_ms = self.shared.clock.now_ms();
        Ok(self
            .shared
            .load(keyspace, key)?
            .and_then(|record| Entry::from_record(record, now_ms)))
    }

    /// The value a single-value read (RESP's GET) returns: the newest visible sibling's,
    /// sharing the stored record's buffer instead of copying it; `None` if absent, deleted or
    /// expired.
    pub fn get_value(&self, keyspace: &str, key: &[u8]) -> Result<Option<Bytes>, ReplicaError> {
        let now_ms = self.shared.clock.now_ms();
        let value = self.shared.load_with(keyspace, key, |stored| {
            if let Some(value) = stored.point_value(now_ms) {
                return Ok(Ok(value));
            }
            let bytes = &stored.bytes;
            let newest = record::newest_visible_value(bytes, now_ms)?;
            match newest {
                None => Ok(Ok(None)),
                Some(sibling) if sibling.kind.is_bytes() => {
                    Ok(Ok(sibling.value.map(|value| bytes.slice_ref(value))))
                }
                // A typed value: its versions merged, a counter read as its decimal value.
                Some(_) => {
                    let entry = Entry::from_record(Record::decode(bytes)?, now_ms);
                    Ok(entry
                        .map(|entry| entry.string().map(Bytes::from))
                        .transpose())
                }
            }
        })?;
        match value {
            None => Ok(None),
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(error),
        }
    }

    /// The stored record of a key, dead siblings included (for replication and debugging).
    pub fn get_record(&self, keyspace: &str, key: &[u8]) -> Result<Option<Record>, ReplicaError> {
        self.shared.load(keyspace, key)
    }

    /// Up to `limit` keys of `keyspace` starting with `prefix`, strictly after `after`, that
    /// have visible values. A short page is not the end: only `next_after == None` is.
    pub fn scan(
        &self,
        keyspace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, ReplicaError> {
        let now_ms = self.shared.clock.now_ms();
        let (entries, next_after) =
            self.scan_with(keyspace, prefix, after, limit, false, |record| {
                Entry::from_record(record, now_ms)
            })?;
        Ok(ScanPage {
            entries,
            next_after,
        })
    }

    /// Like [`LocalStore::scan`], but returns the stored records themselves, tombstones and
    /// expired values included, so a coordinator merging several replicas' pages sees
    /// deletions too. Returns the records and where the next page starts. A damaged record
    /// is left out (and counted and logged as corruption) rather than failing the page: the
    /// other replicas supply it, and anti-entropy, seeing it missing here, replaces it.
    #[allow(clippy::type_complexity)]
    pub fn scan_records(
        &self,
        keyspace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<(Vec<u8>, Record)>, Option<Vec<u8>>), ReplicaError> {
        self.scan_with(keyspace, prefix, after, limit, true, Some)
    }

    /// The scan loop: walks the keyspace's records in key order after `after`, keeping up to
    /// `limit` of those `keep` maps to `Some`, and examining a bounded number of records. A
    /// damaged record fails the scan, or is passed over when `skip_damaged`.
    #[allow(clippy::type_complexity)]
    fn scan_with<T>(
        &self,
        keyspace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        skip_damaged: bool,
        mut keep: impl FnMut(Record) -> Option<T>,
    ) -> Result<(Vec<(Vec<u8>, T)>, Option<Vec<u8>>), ReplicaError> {
        layout::validate_keyspace(keyspace).map_err(ReplicaError::Invalid)?;
        check_key(after.unwrap_or_default())?;
        let Some(id) = self.shared.keyspace_ids.get(keyspace) else {
            return Ok((Vec::new(), None));
        };
        if !limits::key_fits(prefix) {
            // No key is that long, so none starts with it.
            return Ok((Vec::new(), None));
        }
        let limit = limit.min(SCAN_PAGE_RECORDS_MAX);
        let page_size = limit.clamp(1, SCAN_PAGE_MAX);
        let budget = limit
            .saturating_mul(SCAN_EXAMINED_PER_RESULT)
            .max(page_size);
        let mut entries = Vec::with_capacity(page_size);
        let mut resume = after.map(|after| layout::data_key(id, after));
        let (mut examined, mut kept_bytes) = (0, 0);
        loop {
            let mut range = layout::data_range(id, prefix);
            if let Some(resume) = &resume {
                range = range.after(resume);
            }
            let page = self.shared.engine.scan(&range, page_size)?;
            let exhausted = page.len() < page_size;
            let mut page = page.into_iter().peekable();
            while entries.len() < limit && kept_bytes < SCAN_PAGE_BYTES_MAX {
                let Some((engine_key, bytes)) = page.next() else {
                    break;
                };
                examined += 1;
                let key = layout::user_key(&engine_key);
                let record = match self.shared.decode(keyspace, key, &bytes) {
                    Ok(record) => record,
                    Err(_) if skip_damaged => {
                        resume = Some(engine_key);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if let Some(kept) = keep(record) {
                    kept_bytes += engine_key.len() + bytes.len();
                    entries.push((key.to_vec(), kept));
                }
                resume = Some(engine_key);
            }
            let finished = exhausted && page.peek().is_none();
            let full = entries.len() >= limit || kept_bytes >= SCAN_PAGE_BYTES_MAX;
            if finished || full || examined >= budget {
                let next_after = resume
                    .filter(|_| !finished)
                    .map(|engine_key| layout::user_key(&engine_key).to_vec());
                return Ok((entries, next_after));
            }
        }
    }

    /// Applies a write and returns once it is durable under the sync policy.
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, ReplicaError> {
        request.validate()?;
        let (reply, answer) = oneshot::channel();
        self.send(Job::Write { request, reply }).await?;
        answer.await.map_err(|_| ReplicaError::ShuttingDown)?
    }

    /// Applies several writes as one engine batch, so readers see all of them or none (Redis's
    /// MSET, multi-key DEL). Each write succeeds or fails on its own; the outer error is for
    /// the batch as a whole (storage failure, shutdown).
    pub async fn write_many(
        &self,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<Result<WriteOutcome, ReplicaError>>, ReplicaError> {
        for request in &requests {
            request.validate()?;
        }
        let (reply, answer) = oneshot::channel();
        let requests = requests
            .into_iter()
            .map(|request| PreparedWrite {
                request,
                report: Report::FULL,
                seen: None,
            })
            .collect();
        self.send(Job::WriteMany { requests, reply }).await?;
        answer.await.map_err(|_| ReplicaError::ShuttingDown)?
    }

    /// Like [`LocalStore::write`], but refuses at once with [`ReplicaError::Busy`] when the
    /// write queue is full instead of waiting for room.
    pub async fn try_write(&self, request: WriteRequest) -> Result<WriteOutcome, ReplicaError> {
        self.submit(request)?.wait().await
    }

    /// The record a stand-in coordinator issues for a blind write none of the key's replicas
    /// could lead (every one is down), stored nowhere here: the caller hands it to fallbacks
    /// as hints. See [`crate::writer::stand_in_record`] for why its dot is not this node's.
    pub fn stand_in_record(&self, request: WriteRequest) -> Result<Record, ReplicaError> {
        request.validate()?;
        crate::writer::stand_in_record(&self.shared, request)
    }

    /// Queues a write without waiting for it, refusing with [`ReplicaError::Busy`] when the
    /// queue is full. Writes are applied in the order they are submitted, so a caller may
    /// submit several (a pipeline) and then wait for each: they share group commits.
    pub fn submit(&self, request: WriteRequest) -> Result<PendingWrite, ReplicaError> {
        request.validate()?;
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Write { request, reply })?;
        Ok(PendingWrite { answer })
    }

    /// Queues several writes as one job without waiting for them, refusing all of them with
    /// [`ReplicaError::Busy`] when the queue is full: a pipeline's writes cost the writer one
    /// job and their caller one wake-up instead of one each. They are applied in order, each
    /// with its own outcome, in one group commit; each outcome holds what its [`Report`] asks.
    pub fn submit_many(
        &self,
        requests: Vec<(WriteRequest, Report)>,
    ) -> Result<PendingWrites, ReplicaError> {
        let prepared = requests
            .into_iter()
            .map(|(request, report)| self.prepare(request, report))
            .collect::<Result<_, _>>()?;
        self.submit_prepared(prepared)
    }

    /// Validates a write and does on the caller's thread what can be done ahead of the
    /// writer: the caller's thread has time to spare, the single writer has none. For a
    /// plain SET, it reads the record it replaces from the cache and encodes the new one
    /// (`Shared::seen_replaced`).
    pub fn prepare(
        &self,
        request: WriteRequest,
        report: Report,
    ) -> Result<PreparedWrite, ReplicaError> {
        request.validate()?;
        let seen = self.shared.seen_replaced(&request, report);
        Ok(PreparedWrite {
            request,
            report,
            seen,
        })
    }

    /// [`LocalStore::prepare`] of a plain SET of `value` (no expiry, in `conflict` mode),
    /// copying the value only if the record could not be encoded ahead: then the writer
    /// needs it; otherwise the encoded record holds it, and the value is copied once rather
    /// than twice (the RESP server's SET).
    pub fn prepare_put(
        &self,
        keyspace: &str,
        key: &[u8],
        value: &[u8],
        conflict: ConflictMode,
        report: Report,
    ) -> Result<PreparedWrite, ReplicaError> {
        let mut request = WriteRequest::put(keyspace, key, b"").conflict(conflict);
        request.validate()?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(ReplicaError::ValueTooLarge {
                len: value.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        let put = (!report.context).then_some(record::MutationView {
            value: Some(value),
            expires_at_ms: None,
            kind: ValueKind::BYTES,
        });
        let seen = self.shared.seen_replaced_putting(&request, report, put);
        if !matches!(
            seen,
            Some(SeenReplaced {
                write: SeenWrite::Encoded { .. },
                ..
            })
        ) {
            request.change = Change::Put {
                value: value.to_vec(),
                expiry: Expiry::Never,
            };
        }
        Ok(PreparedWrite {
            request,
            report,
            seen,
        })
    }

    /// Queues prepared writes as one job, as [`LocalStore::submit_many`] does.
    pub fn submit_prepared(
        &self,
        requests: Vec<PreparedWrite>,
    ) -> Result<PendingWrites, ReplicaError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::WriteMany { requests, reply })?;
        Ok(PendingWrites { answer })
    }

    /// Makes the calling thread commit the writes it submits to this store itself, when its
    /// runtime parks, instead of handing them to the writer thread (see [`crate::loop_commit`]):
    /// for a thread that serves connections on a current-thread runtime built with
    /// `on_thread_park(ringkv_replica::commit_parked)`, and called inside it. Lasts until the
    /// returned value is dropped, which commits what is still queued.
    pub fn commit_on_this_thread(&self) -> LoopCommits {
        LoopCommits::start(Arc::clone(&self.loops))
    }

    /// Hands a job to this thread's own commits or to the writer, waiting for room in the
    /// writer's queue.
    async fn send(&self, job: Job) -> Result<(), ReplicaError> {
        let Queued::Elsewhere(job) = self.loops.offer(job, false)? else {
            return Ok(());
        };
        let jobs = self.jobs.as_ref().ok_or(ReplicaError::ShuttingDown)?;
        jobs.send(job).await.map_err(|_| ReplicaError::ShuttingDown)
    }

    /// Hands a job to this thread's own commits or to the writer, refusing it with
    /// [`ReplicaError::Busy`] when the queue is full.
    fn enqueue(&self, job: Job) -> Result<(), ReplicaError> {
        let Queued::Elsewhere(job) = self.loops.offer(job, true)? else {
            return Ok(());
        };
        let jobs = self.jobs.as_ref().ok_or(ReplicaError::ShuttingDown)?;
        jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ReplicaError::Busy,
            mpsc::error::TrySendError::Closed(_) => ReplicaError::ShuttingDown,
        })
    }

    /// Counts the keys with a visible value, in every keyspace, examining at most `limit`
    /// records; returns the count and whether every record was examined (operators'
    /// statistics: it reads the data, so it is not for hot paths).
    pub fn count_keys(&self, limit: u64) -> Result<(u64, bool), ReplicaError> {
        let now_ms = self.shared.clock.now_ms();
        let (mut visible, mut examined) = (0, 0);
        let mut resume: Option<Vec<u8>> = None;
        while examined < limit {
            let mut range = layout::all_data_range();
            if let Some(resume) = &resume {
                range = range.after(resume);
            }
            let page = self.shared.engine.scan(&range, SCAN_PAGE_MAX)?;
            let exhausted = page.len() < SCAN_PAGE_MAX;
            for (engine_key, bytes) in page {
                examined += 1;
                // A damaged record is not a visible key; reads report it.
                if Record::decode(&bytes)
                    .is_ok_and(|r| r.visible(now_ms).any(|s| s.value.is_some()))
                {
                    visible += 1;
                }
                resume = Some(engine_key);
            }
            if exhausted {
                return Ok((visible, true));
            }
        }
        Ok((visible, false))
    }

    /// Merges another replica's record of a key into the local copy and returns once that
    /// is durable; `true` if the local copy changed. Waits for room in the write queue.
    pub async fn merge(&self, request: MergeRequest) -> Result<bool, ReplicaError> {
        layout::validate_keyspace(&request.keyspace).map_err(ReplicaError::Invalid)?;
        check_key(&request.key)?;
        let (reply, answer) = oneshot::channel();
        self.send(Job::Merge { request, reply }).await?;
        answer.await.map_err(|_| ReplicaError::ShuttingDown)?
    }

    /// Reads a node metadata item (keyspace definitions and the like).
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        Ok(self.shared.engine.get(&layout::meta_key(name))?)
    }

    /// Every metadata item whose name starts with `prefix`.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ReplicaError> {
        let range = ringkv_storage::ScanRange::prefix(&layout::meta_key(prefix));
        let entries = self.shared.engine.scan(&range, usize::MAX)?;
        Ok(entries
            .into_iter()
            .map(|(key, value)| (String::from_utf8_lossy(&key[1..]).into_owned(), value))
            .collect())
    }

    /// Stores a metadata item durably. Metadata never shares keys with records, so this
    /// bypasses the writer thread.
    pub fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), ReplicaError> {
        let mut batch = WriteBatch::new();
        batch.put(layout::meta_key(name), value.to_vec());
        Ok(self.shared.engine.write_durable(batch)?)
    }

    /// Removes the node metadata entry `name`, durably.
    pub fn meta_delete(&self, name: &str) -> Result<(), ReplicaError> {
        let mut batch = WriteBatch::new();
        batch.delete(layout::meta_key(name));
        Ok(self.shared.engine.write_durable(batch)?)
    }

    /// The engine key holding the record of `keyspace`/`key`, if this node has numbered the
    /// keyspace (for tests and tools that reach into the engine).
    pub fn data_key(&self, keyspace: &str, key: &[u8]) -> Option<Vec<u8>> {
        let id = self.shared.keyspace_ids.get(keyspace)?;
        Some(layout::data_key(id, key))
    }

    /// Empties the record cache: for tests and tools that change the engine's files behind
    /// the store's back.
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.shared.cache {
            cache.clear();
        }
    }

    /// Forgets what the store knew of the engine's contents (its cache and hash trees) and
    /// learns them again, as a restart would: for tests and tools that change the engine
    /// behind the store's back.
    pub fn reload_from_engine(&self) {
        self.clear_cache();
        self.shared.trees.rebuild();
    }

    /// Turns the hash trees on, if they are off (a node alone keeps none): every write is
    /// hashed from now on, and a rebuild in the background covers the records already here.
    pub fn enable_trees(&self) {
        self.shared.trees.enable();
    }

    /// Waits up to `timeout` for the hash trees to be up to date (turning them on, with a
    /// rebuild, if they were off); whether they are.
    pub fn trees_ready(&self, timeout: std::time::Duration) -> bool {
        self.shared.trees.wait_ready(timeout)
    }

    /// Hashes the record of `key` into the trees again, as the engine holds it: for a key
    /// anti-entropy found differing that a merge did not change, should the trees have drifted
    /// from the records (a write fed after the trees stopped at shutdown).
    pub fn refresh_tree(&self, keyspace: &str, key: &[u8]) -> Result<(), ReplicaError> {
        match self.shared.keyspace_ids.get(keyspace) {
            Some(id) => Ok(self.shared.trees.refresh(id, key)?),
            None => Ok(()),
        }
    }

    /// The leaves of `keyspace`'s hash tree ([`crate::hashtree`]).
    pub fn tree_leaves(&self, keyspace: &str) -> Vec<u64> {
        match self.shared.keyspace_ids.get(keyspace) {
            Some(id) => self.shared.trees.leaves(id),
            None => vec![0; crate::hashtree::LEAVES],
        }
    }

    /// The key and digest of every record of `keyspace` whose ring hash lies in
    /// `[low, high]`, in ring order, from the hash trees' index.
    #[allow(clippy::type_complexity)]
    pub fn tree_digests(
        &self,
        keyspace: &str,
        low: u64,
        high: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, ReplicaError> {
        match self.shared.keyspace_ids.get(keyspace) {
            Some(id) => Ok(self.shared.trees.digests(id, low, high)?),
            None => Ok(Vec::new()),
        }
    }

    /// How many records of `keyspace` have a ring hash in `[low, high]`, from the hash
    /// trees' index (so only once [`LocalStore::trees_ready`]).
    pub fn tree_count(&self, keyspace: &str, low: u64, high: u64) -> Result<u64, ReplicaError> {
        match self.shared.keyspace_ids.get(keyspace) {
            Some(id) => Ok(self.shared.trees.count(id, low, high)?),
            None => Ok(0),
        }
    }

    /// Brings sampled gauges (disk use) up to date.
    pub fn refresh_gauges(&self) {
        let (metrics, engine) = (&self.shared.metrics, &self.shared.engine);
        metrics.disk_bytes.set(engine.disk_bytes());
        metrics.engine_entries.set(engine.approximate_entries());
    }

    /// Sweeps up to `limit` expiry-index entries of records whose first sibling died at or
    /// before `cutoff_ms` (at least the grace period ago), after index key `after`: dead
    /// siblings beside live ones are removed; under [`Reaping::WhenConfirmed`] wholly dead
    /// records are left and listed instead. Returns what was done, and the index key to
    /// continue after (`None` once every due entry was seen).
    pub async fn sweep_due(
        &self,
        cutoff_ms: u64,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(crate::writer::Swept, Option<Vec<u8>>), ReplicaError> {
        let shared = Arc::clone(&self.shared);
        let grace_cutoff = shared
            .clock
            .now_ms()
            .saturating_sub(shared.options.tombstone_grace_ms);
        let cutoff = cutoff_ms.min(grace_cutoff);
        let (entries, next) = tokio::task::spawn_blocking(move || {
            crate::sweeper::due_entries(&shared, cutoff, after.as_deref(), limit)
        })
        .await
        .map_err(|_| ReplicaError::ShuttingDown)??;
        if entries.is_empty() {
            return Ok((crate::writer::Swept::default(), next));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Job::Sweep { entries, reply }).await?;
        let swept = answer.await.map_err(|_| ReplicaError::ShuttingDown)??;
        self.count_swept(swept.removed).await?;
        Ok((swept, next))
    }

    /// Removes wholly dead records of `keyspace` (those [`LocalStore::sweep_due`] listed),
    /// each only if its stored record still has the fingerprint given. Says per key whether
    /// the key holds no record now.
    pub async fn reap(
        &self,
        keyspace: &str,
        records: Vec<(Vec<u8>, u64)>,
    ) -> Result<Vec<bool>, ReplicaError> {
        layout::validate_keyspace(keyspace).map_err(ReplicaError::Invalid)?;
        for (key, _) in &records {
            check_key(key)?;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Job::Reap {
            keyspace: keyspace.to_owned(),
            records,
            reply,
        })
        .await?;
        let gone = answer.await.map_err(|_| ReplicaError::ShuttingDown)??;
        self.count_swept(gone.iter().filter(|&&g| g).count() as u64)
            .await?;
        Ok(gone)
    }

    /// Counts removals towards the next compaction, compacting when it is due.
    async fn count_swept(&self, swept: u64) -> Result<(), ReplicaError> {
        if swept == 0 {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || crate::sweeper::count_swept(&shared, swept))
            .await
            .map_err(|_| ReplicaError::ShuttingDown)?
    }

    /// Runs one sweeper pass now, compaction included (tests and operators; it also runs on
    /// its own every `sweep_interval_ms`). Returns how many siblings were removed.
    pub async fn sweep_now(&self) -> Result<u64, ReplicaError> {
        let writer = self
            .jobs
            .as_ref()
            .ok_or(ReplicaError::ShuttingDown)?
            .clone();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || crate::sweeper::sweep_pass(&shared, &writer))
            .await
            .map_err(|_| ReplicaError::ShuttingDown)?
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Closing both channels stops the background thread, then the writer once it has
        // drained every queued write; a final checkpoint makes a clean shutdown durable and
        // leaves little in the engine's log to replay.
        self.stop.take();
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The writer has fed the trees every write it stored: once their thread has applied
        // them, complete trees are kept for the next start.
        self.shared.trees.stop();
        if let Some(thread) = self.trees_thread.take() {
            if thread.join().unwrap_or(false) {
                if let Err(error) = self.shared.trees.mark_clean() {
                    tracing::error!(%error, "could not keep the hash trees for the next start");
                }
            }
        }
        if let Err(error) = self.shared.engine.checkpoint() {
            tracing::error!(%error, "final checkpoint at shutdown failed");
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, ReplicaError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|error| ReplicaError::Storage(error.into()))
}

/// Reads this data directory's replica id, creating (and syncing) a random one on first use.
fn load_or_create_replica_id(engine: &dyn Engine) -> Result<ReplicaId, ReplicaError> {
    let key = layout::meta_key("replica-id");
    if let Some(bytes) = engine.get(&key)? {
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| ReplicaError::Corruption {
            detail: "replica id is not 8 bytes".into(),
        })?;
        return Ok(ReplicaId(u64::from_le_bytes(bytes)));
    }
    let id = ReplicaId(rand::random::<u64>().max(1));
    let mut batch = WriteBatch::new();
    batch.put(key, id.0.to_le_bytes().to_vec());
    engine.write_durable(batch)?;
    Ok(id)
}

/// The mutation of a write that [`crate::writer::supersedes_all`] when it is a put whose
/// caller needs nothing back but whether it applied: what [`Shared::seen_replaced`] encodes
/// ahead of the writer.
fn plain_put<'r>(request: &'r WriteRequest, report: Report) -> Option<record::MutationView<'r>> {
    if request.return_record || report.context {
        return None;
    }
    let Change::Put { value, expiry } = &request.change else {
        return None;
    };
    let expires_at_ms = match *expiry {
        Expiry::Never => None,
        Expiry::At(at) => Some(at),
        // It keeps the replaced value's expiry: not a write that supersedes all.
        Expiry::Keep => return None,
    };
    Some(record::MutationView {
        value: Some(value),
        expires_at_ms,
        kind: ValueKind::BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::clock::SystemClock;
    use ringkv_storage::{EngineKind, ScanRange};

    const BARE: Report = Report {
        previous: false,
        context: false,
    };

    #[test]
    fn a_write_requests_names_go_on_the_wire_as_a_string_and_a_byte_vector_do() {
        // Nodes exchange write requests (postcard); keeping the keyspace and key inline must
        // not change the bytes, so that nodes of releases before and after still understand
        // each other.
        for key in [&b"k"[..], &[7u8; 24], &[9u8; 200]] {
            let inline = postcard::to_stdvec(&WriteKey::from_slice(key)).unwrap();
            assert_eq!(inline, postcard::to_stdvec(&key.to_vec()).unwrap());
            let back: WriteKey = postcard::from_bytes(&inline).unwrap();
            assert_eq!(&back[..], key);
        }
        for name in ["default", "a-keyspace-name-longer-than-24-bytes"] {
            let request = WriteRequest::put(name, b"k", b"v");
            let wire = postcard::to_stdvec(&request.keyspace).unwrap();
            assert_eq!(wire, postcard::to_stdvec(&name.to_owned()).unwrap());
            let back: WriteRequest =
                postcard::from_bytes(&postcard::to_stdvec(&request).unwrap()).unwrap();
            assert_eq!(back, request);
        }
    }

    /// A store over a new LSM engine in `dir`.
    fn open_store(dir: &tempfile::TempDir) -> LocalStore {
        let engine = ringkv_storage::open(EngineKind::Lsm, dir.path()).unwrap();
        let registry = &mut Registry::default();
        LocalStore::open(
            engine,
            StoreOptions::default(),
            Arc::new(SystemClock),
            registry,
        )
        .unwrap()
    }

    /// Applies `request` as a pipeline of one that comes with `seen`.
    async fn apply_with(store: &LocalStore, request: WriteRequest, seen: SeenReplaced) {
        let (reply, answer) = oneshot::channel();
        let requests = vec![PreparedWrite {
            request,
            report: BARE,
            seen: Some(seen),
        }];
        store.enqueue(Job::WriteMany { requests, reply }).unwrap();
        let mut outcomes = answer.await.unwrap().unwrap();
        outcomes.remove(0).unwrap();
    }

    /// The writer uses a submitter's snapshot of the record a SET replaces only while it is
    /// current: the SET here replaces a record that expires, whose expiry-index entry must go
    /// with it, and replacing the older record a stale snapshot saw would leave that entry.
    #[tokio::test]
    async fn a_snapshot_is_used_while_current_and_never_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let index = || {
            let index = store.shared.engine.scan(&ScanRange::prefix(b"x"), 10);
            index.unwrap().len()
        };
        let expiring = |value: &[u8]| {
            let due = SystemClock.now_ms() + 1_000_000_000;
            WriteRequest::put("default", b"k", value).expiring_at(due)
        };
        let plain = || WriteRequest::put("default", b"k", b"plain");
        let from_snapshot = || store.shared.metrics.writes_from_snapshot.get();

        store
            .write(WriteRequest::put("default", b"k", b"1"))
            .await
            .unwrap();
        let stale = store.shared.seen_replaced(&plain(), BARE).expect("cached");
        store.write(expiring(b"2")).await.unwrap();
        assert_eq!(index(), 1);
        apply_with(&store, plain(), stale).await;
        assert_eq!(index(), 0, "the replaced record's expiry entry is gone");
        assert_eq!(from_snapshot(), 0, "a stale snapshot is not used");

        store.write(expiring(b"3")).await.unwrap();
        let before = store.get("default", b"k").unwrap().unwrap();
        let current = store.shared.seen_replaced(&plain(), BARE).expect("cached");
        assert!(
            matches!(current.write, SeenWrite::Encoded { .. }),
            "a plain SET is encoded ahead"
        );
        apply_with(&store, plain(), current).await;
        assert_eq!(index(), 0);
        assert_eq!(from_snapshot(), 1, "a current snapshot is used");
        let after = store.get("default", b"k").unwrap().unwrap();
        assert_eq!(after.values.len(), 1);
        assert_eq!(after.winner().value, b"plain");
        assert!(
            after.context.descends(&before.context) && after.context != before.context,
            "the SET supersedes what it replaced: {:?} after {:?}",
            after.context,
            before.context
        );
    }

    /// A SET prepared from a borrowed value leaves the value to its encoded record; when the
    /// writer applies it itself after all (a stale snapshot, or an earlier SET of the key in
    /// the same job), it takes the value back from that record.
    #[tokio::test]
    async fn a_set_prepared_ahead_stores_its_value_however_it_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let lww = ConflictMode::LastWriterWins;
        let prepare = |value: &[u8]| {
            store
                .prepare_put("default", b"k", value, lww, BARE)
                .unwrap()
        };
        let overwrite =
            |value: &'static [u8]| store.write(WriteRequest::put("default", b"k", value));
        let stored = || store.get("default", b"k").unwrap().unwrap();
        let submit = |writes: Vec<PreparedWrite>| async {
            for outcome in store.submit_prepared(writes).unwrap().wait().await.unwrap() {
                outcome.unwrap();
            }
        };
        overwrite(b"0").await.unwrap();

        // Current snapshot: stored as encoded ahead.
        let prepared = prepare(b"ahead");
        assert!(
            matches!(
                &prepared.request.change,
                Change::Put { value, .. } if value.is_empty()
            ),
            "the value is left to the encoded record"
        );
        submit(vec![prepared]).await;
        assert_eq!(stored().winner().value, b"ahead");

        // Stale snapshot: the writer applies it from the value it takes back.
        let prepared = prepare(b"stale");
        overwrite(b"between").await.unwrap();
        submit(vec![prepared]).await;
        assert_eq!(stored().winner().value, b"stale");

        // Two in one job: the second replaces the first.
        submit(vec![prepare(b"first"), prepare(b"second")]).await;
        let entry = stored();
        assert_eq!(entry.values.len(), 1);
        assert_eq!(entry.winner().value, b"second");

        // An empty value is a value.
        let prepared = prepare(b"");
        overwrite(b"x").await.unwrap();
        submit(vec![prepared]).await;
        assert_eq!(stored().winner().value, b"");

        // A key the cache does not hold: the request keeps its value.
        let prepared = store
            .prepare_put("default", b"new", b"v", lww, BARE)
            .unwrap();
        assert!(prepared.seen.is_none());
        submit(vec![prepared]).await;
        let entry = store.get("default", b"new").unwrap().unwrap();
        assert_eq!(entry.winner().value, b"v");

        let too_large = vec![0u8; VALUE_BYTES_MAX + 1];
        assert!(matches!(
            store.prepare_put("default", b"k", &too_large, lww, BARE),
            Err(ReplicaError::ValueTooLarge { .. })
        ));
    }

    /// Two SETs of one key in one pipeline, both seen before either was applied: the second
    /// replaces the first, not the record both snapshots saw, so the first's expiry-index
    /// entry goes and its version is superseded.
    #[tokio::test]
    async fn a_pipeline_that_sets_a_key_twice_replaces_its_own_first_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        store
            .write(WriteRequest::put("default", b"k", b"0"))
            .await
            .unwrap();
        let due = SystemClock.now_ms() + 1_000_000_000;
        let first = WriteRequest::put("default", b"k", b"1").expiring_at(due);
        let second = WriteRequest::put("default", b"k", b"2");
        let requests: Vec<_> = [first, second]
            .into_iter()
            .map(|request| {
                let seen = store.shared.seen_replaced(&request, BARE).expect("cached");
                PreparedWrite {
                    request,
                    report: BARE,
                    seen: Some(seen),
                }
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        store.enqueue(Job::WriteMany { requests, reply }).unwrap();
        for outcome in answer.await.unwrap().unwrap() {
            outcome.unwrap();
        }
        let index = store.shared.engine.scan(&ScanRange::prefix(b"x"), 10);
        assert_eq!(
            index.unwrap().len(),
            0,
            "the first SET's expiry entry is gone"
        );
        let entry = store.get("default", b"k").unwrap().unwrap();
        assert_eq!(entry.values.len(), 1);
        assert_eq!(entry.winner().value, b"2");
        assert_eq!(entry.winner().expires_at_ms, None);
        assert_eq!(
            store.shared.metrics.writes_from_snapshot.get(),
            1,
            "only the first SET could use its snapshot"
        );
    }
}
