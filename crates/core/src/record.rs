//! What a replica stores for one key: a [`Record`] of concurrent [`Sibling`]s plus the causal
//! context that summarises every write the record has seen, with the merge laws of Riak 2.0's
//! dotted version vector sets, and its checksummed binary encoding.
//!
//! Each sibling carries its own [`Dot`], so a sibling is obsolete exactly when another
//! record's context covers its dot without still holding it. That one rule gives
//! [`Record::sync`] its laws (commutative, associative, idempotent) and guarantees that a
//! value a context has seen is never resurrected.

use crate::causal::{ContextError, Dot, ReplicaId, VersionVector};
use crate::codec::{put_bytes, put_varint, CodecError, Reader};
use crate::hlc::Timestamp;
use crate::limits::{CONTEXT_ENTRIES_MAX, RECORD_BYTES_MAX, SIBLINGS_MAX, VALUE_BYTES_MAX};

pub mod kind;
pub use kind::{DataType, ValueKind};

/// The encoding version written by this release. Readers accept every version up to it.
pub const RECORD_FORMAT: u8 = 1;

const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
/// A typed value: its [`ValueKind`] byte follows, then the state's bytes.
const KIND_TYPED: u8 = 2;

/// One version of a key's value, or of its deletion.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sibling {
    /// The write that made this version.
    pub dot: Dot,
    /// When it was written, for last-writer-wins ordering.
    pub timestamp: Timestamp,
    /// Absolute expiry in unix milliseconds; the value is invisible from that moment.
    pub expires_at_ms: Option<u64>,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// What the value is: bytes, or a typed value's state (ignored for a tombstone).
    pub kind: ValueKind,
}

impl Sibling {
    /// The sibling with its value borrowed.
    pub fn view(&self) -> SiblingView<'_> {
        SiblingView {
            dot: self.dot,
            timestamp: self.timestamp,
            expires_at_ms: self.expires_at_ms,
            value: self.value.as_deref(),
            kind: self.kind,
        }
    }

    /// Whether this sibling is a value a read may return at `now_ms`.
    pub fn is_visible(&self, now_ms: u64) -> bool {
        self.view().is_visible(now_ms)
    }

    /// When this sibling stops carrying data a read could return: its expiry, or the moment
    /// a tombstone (or an emptied collection) was written. `None` for a value that never
    /// expires.
    pub fn dead_since_ms(&self) -> Option<u64> {
        self.view().dead_since_ms()
    }

    /// The order last-writer-wins uses: newest timestamp, dot as a deterministic tie-break.
    fn lww_rank(&self) -> (Timestamp, Dot) {
        (self.timestamp, self.dot)
    }

    /// The type whose law merges this sibling with others of it, if it has one.
    fn merging_type(&self) -> Option<DataType> {
        let data_type = self.kind.data_type();
        (self.value.is_some() && data_type.merges()).then_some(data_type)
    }
}

/// The new version a write brings, before it is given a dot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mutation {
    /// The value, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// Absolute expiry in unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// What the value is.
    pub kind: ValueKind,
}

/// A [`Mutation`] whose value is borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MutationView<'a> {
    /// The value, or `None` to delete.
    pub value: Option<&'a [u8]>,
    /// Absolute expiry in unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// What the value is.
    pub kind: ValueKind,
}

impl Mutation {
    /// A put of plain bytes.
    pub fn bytes(value: Vec<u8>, expires_at_ms: Option<u64>) -> Self {
        Mutation {
            value: Some(value),
            expires_at_ms,
            kind: ValueKind::BYTES,
        }
    }

    /// A delete.
    pub fn delete() -> Self {
        Mutation {
            value: None,
            expires_at_ms: None,
            kind: ValueKind::BYTES,
        }
    }

    /// The mutation with its value borrowed.
    pub fn view(&self) -> MutationView<'_> {
        MutationView {
            value: self.value.as_deref(),
            expires_at_ms: self.expires_at_ms,
            kind: self.kind,
        }
    }
}

/// Why a write cannot be applied to a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateError {
    /// The key already holds the most siblings allowed; resolve them with a context first.
    #[error("key has {count} siblings, the most allowed; write with a causal context to resolve")]
    TooManySiblings { count: usize },
}

/// Why stored bytes could not be decoded into a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The checksum does not match: the bytes were damaged after they were written.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The record is shorter than its fixed framing.
    #[error("record of {len} bytes is too short")]
    TooShort { len: usize },
    /// The record is longer than any record this release writes.
    #[error("record of {len} bytes is above the limit")]
    TooLong { len: usize },
    /// Written by a newer release.
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    /// The checksum matched but the contents do not parse (a bug, or a forged checksum).
    #[error("malformed record: {0}")]
    Malformed(#[from] CodecError),
    /// The causal context inside does not parse.
    #[error("malformed record context: {0}")]
    Context(#[from] ContextError),
}

/// Every version of one key a replica holds, and the causal history they came from.
/// Invariants: siblings are sorted by dot and unique; the context covers every sibling's dot.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Record {
    /// Every write this record has seen, superseded or not.
    pub context: VersionVector,
    /// The versions not yet superseded.
    pub siblings: Vec<Sibling>,
}

impl Record {
    /// Applies a write coordinated by `replica` at time `timestamp`. The write supersedes the
    /// siblings its causal context `seen` covers; the others stay as concurrent siblings.
    pub fn update(
        stored: Option<&Record>,
        seen: &VersionVector,
        mutation: Mutation,
        replica: ReplicaId,
        timestamp: Timestamp,
    ) -> Result<Record, UpdateError> {
        Self::update_owned(stored.cloned(), seen, mutation, replica, timestamp)
    }

    /// [`Record::update`] of a record the caller gives up, so the siblings the write
    /// supersedes (usually all of them, values included) are dropped instead of copied first.
    pub fn update_owned(
        stored: Option<Record>,
        seen: &VersionVector,
        mutation: Mutation,
        replica: ReplicaId,
        timestamp: Timestamp,
    ) -> Result<Record, UpdateError> {
        let mut record = stored.unwrap_or_default();
        record.siblings.retain(|sibling| !seen.covers(sibling.dot));
        if record.siblings.len() >= SIBLINGS_MAX {
            return Err(UpdateError::TooManySiblings {
                count: record.siblings.len(),
            });
        }
        record.context.merge(seen);
        let dot = next_dot(&mut record.context, replica, timestamp);
        let sibling = Sibling {
            dot,
            timestamp,
            expires_at_ms: mutation.expires_at_ms,
            value: mutation.value,
            kind: mutation.kind,
        };
        let position = record.siblings.partition_point(|s| s.dot < dot);
        record.siblings.insert(position, sibling);
        record.bound_context();
        Ok(record)
    }

    /// Prunes the context to [`CONTEXT_ENTRIES_MAX`] entries if it grew past them (see
    /// [`VersionVector::pruned`]), so the context a write returns to its client is the one
    /// stored.
    fn bound_context(&mut self) {
        let dots = self.siblings.iter().map(|s| s.dot);
        if let Some(pruned) = bounded_context(&self.context, dots) {
            self.context = pruned;
        }
    }

    /// The record after a write that supersedes every version `replaced` summarises (a
    /// last-writer-wins write without a causal context): what [`Record::update_owned`] gives
    /// for the replaced record with its own context as `seen`, built without its siblings.
    pub fn replace(
        replaced: Option<Replaced>,
        mutation: Mutation,
        replica: ReplicaId,
        timestamp: Timestamp,
    ) -> Result<Record, UpdateError> {
        let stored = replaced.map(|replaced| Record {
            context: replaced.context,
            siblings: Vec::with_capacity(1),
        });
        Self::update_owned(stored, &VersionVector::new(), mutation, replica, timestamp)
    }

    /// Merges two replicas' records of one key: a sibling survives unless the other side's
    /// context covers its dot and the other side no longer holds it.
    pub fn sync(&self, other: &Record) -> Record {
        let mut context = self.context.clone();
        context.merge(&other.context);
        let mut siblings = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (mut left, mut right) = (
            self.siblings.iter().peekable(),
            other.siblings.iter().peekable(),
        );
        loop {
            let take_left = match (left.peek().map(|s| s.dot), right.peek().map(|s| s.dot)) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    right.next();
                    siblings.extend(left.next().cloned());
                    continue;
                }
                (Some(a), Some(b)) => a < b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            let (sibling, other_context) = if take_left {
                (left.next(), &other.context)
            } else {
                (right.next(), &self.context)
            };
            siblings.extend(sibling.filter(|s| !other_context.covers(s.dot)).cloned());
        }
        let mut synced = Record { context, siblings };
        synced.bound_context();
        synced
    }

    /// Keeps only the last-writer-wins winner. Safe at any time: the context still covers the
    /// dropped dots, so they cannot come back through a later sync.
    ///
    /// A winner of a type that merges by law ([`DataType::merges`]) keeps the siblings of its
    /// type written after every sibling of another kind: they are concurrent states of one
    /// value (increments through different nodes, say), which a read merges and the next
    /// write through the key's lead folds into one. Picking one of them would lose the
    /// others' operations.
    pub fn resolve_last_writer_wins(&mut self) {
        // In place: the winner is moved to the front, not copied (values can be 10 MiB).
        let winner = (0..self.siblings.len()).max_by_key(|&i| self.siblings[i].lww_rank());
        let Some(winner) = winner else { return };
        if let Some(data_type) = self.siblings[winner].merging_type() {
            let others_newest = self
                .siblings
                .iter()
                .filter(|s| s.merging_type() != Some(data_type))
                .map(|s| s.timestamp)
                .max();
            self.siblings.retain(|s| {
                s.merging_type() == Some(data_type)
                    && others_newest.is_none_or(|newest| s.timestamp > newest)
            });
            return;
        }
        self.siblings.swap(0, winner);
        self.siblings.truncate(1);
    }

    /// The sibling last-writer-wins picks, tombstones included.
    pub fn winner(&self) -> Option<&Sibling> {
        self.siblings.iter().max_by_key(|s| s.lww_rank())
    }

    /// The values a read at `now_ms` may return, in dot order.
    pub fn visible(&self, now_ms: u64) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter().filter(move |s| s.is_visible(now_ms))
    }

    /// The newest timestamp among the siblings.
    pub fn newest_timestamp(&self) -> Option<Timestamp> {
        self.siblings.iter().map(|s| s.timestamp).max()
    }

    /// The earliest moment a sibling became or becomes dead (expired or deleted), which is
    /// when the record next needs the sweeper's attention.
    pub fn next_dead_ms(&self) -> Option<u64> {
        self.siblings
            .iter()
            .filter_map(Sibling::dead_since_ms)
            .min()
    }

    /// Drops siblings dead for at least `grace_ms` at `now_ms`. The grace period lets
    /// tombstones reach every replica before they are forgotten. Returns how many were dropped.
    pub fn purge_dead(&mut self, now_ms: u64, grace_ms: u64) -> usize {
        let before = self.siblings.len();
        self.siblings.retain(|s| {
            s.dead_since_ms()
                .is_none_or(|dead| dead.saturating_add(grace_ms) > now_ms)
        });
        before - self.siblings.len()
    }

    /// A 64-bit hash of the record's encoding: two replicas hold the same record exactly when
    /// (short of a hash collision) their fingerprints are equal.
    pub fn fingerprint(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.encode())
    }

    /// Bytes of every sibling's value.
    pub fn value_bytes(&self) -> usize {
        value_bytes(&self.siblings)
    }

    /// The binary form: format byte, context, siblings, then a CRC32C of all of it.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_for_reads().0
    }

    /// [`Record::encode`], with the [`PointRead`] of the encoding when the record has one
    /// sibling (found while encoding, at no extra cost).
    pub fn encode_for_reads(&self) -> (Vec<u8>, Option<PointRead>) {
        encode_parts(&self.context, self.siblings.iter().map(Sibling::view))
    }

    /// What [`Record::replace`] gives for `mutation`, encoded as [`Record::encode_for_reads`]
    /// would encode it, without building the record: a plain SET's whole write, which
    /// allocates no list for the one sibling and frees none. It only reads the value, so the
    /// submitter of a SET can encode it ahead of the writer while its request keeps the value.
    pub fn encode_replacement(
        replaced: Option<Replaced>,
        mutation: MutationView<'_>,
        replica: ReplicaId,
        timestamp: Timestamp,
    ) -> EncodedRecord {
        let mut bytes = Vec::new();
        let (point, next_dead_ms) =
            Self::encode_replacement_into(&mut bytes, replaced, mutation, replica, timestamp);
        EncodedRecord {
            bytes,
            point,
            next_dead_ms,
        }
    }

    /// [`Record::encode_replacement`] into `out`, which it empties first: a caller that
    /// copies the bytes elsewhere reuses one buffer instead of allocating one per record.
    /// Returns the point read and [`Record::next_dead_ms`].
    pub fn encode_replacement_into(
        out: &mut Vec<u8>,
        replaced: Option<Replaced>,
        mutation: MutationView<'_>,
        replica: ReplicaId,
        timestamp: Timestamp,
    ) -> (Option<PointRead>, Option<u64>) {
        let mut context = replaced
            .map(|replaced| replaced.context)
            .unwrap_or_default();
        let sibling = SiblingView {
            dot: next_dot(&mut context, replica, timestamp),
            timestamp,
            expires_at_ms: mutation.expires_at_ms,
            value: mutation.value,
            kind: mutation.kind,
        };
        let point = encode_parts_into(out, &context, std::iter::once(sibling));
        (point, sibling.dead_since_ms())
    }

    /// Decodes bytes written by [`Record::encode`], verifying the checksum before trusting any
    /// length inside.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let view = RecordView::decode(bytes)?;
        Ok(Record {
            context: view.context,
            siblings: view
                .siblings
                .into_iter()
                .map(SiblingView::to_sibling)
                .collect(),
        })
    }
}

/// A record read in place from its stored bytes: checked exactly as [`Record::decode`]
/// checks them, but the values stay borrowed, so a read that returns one value copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Every write this record has seen.
    pub context: VersionVector,
    /// The versions not yet superseded, in dot order.
    pub siblings: Vec<SiblingView<'a>>,
}

/// One [`Sibling`] of a [`RecordView`], its value borrowed from the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiblingView<'a> {
    /// The write that made this version.
    pub dot: Dot,
    /// When it was written.
    pub timestamp: Timestamp,
    /// Absolute expiry in unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// The value, or `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// What the value is.
    pub kind: ValueKind,
}

impl SiblingView<'_> {
    /// As [`Sibling::dead_since_ms`].
    pub fn dead_since_ms(&self) -> Option<u64> {
        match self.value {
            Some(_) if !self.kind.is_emptied() => self.expires_at_ms,
            _ => Some(self.timestamp.wall_ms()),
        }
    }

    /// Whether this sibling is a value a read may return at `now_ms` (as
    /// [`Sibling::is_visible`]).
    pub fn is_visible(&self, now_ms: u64) -> bool {
        self.value.is_some()
            && !self.kind.is_emptied()
            && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }

    fn to_sibling(self) -> Sibling {
        Sibling {
            dot: self.dot,
            timestamp: self.timestamp,
            expires_at_ms: self.expires_at_ms,
            value: self.value.map(<[u8]>::to_vec),
            kind: self.kind,
        }
    }
}

impl<'a> RecordView<'a> {
    /// Reads bytes written by [`Record::encode`], verifying the checksum before trusting any
    /// length inside.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let mut reader = checked_body(bytes)?;
        let context = VersionVector::decode_from(&mut reader)?;
        let count = sibling_count(&mut reader)?;
        let mut siblings = Vec::with_capacity(count);
        for _ in 0..count {
            siblings.push(decode_sibling(&mut reader)?);
        }
        reader.finish()?;
        Ok(RecordView { context, siblings })
    }

    /// The value a single-value read returns at `now_ms`: the visible sibling with the newest
    /// timestamp (the later in dot order on a tie), as [`Record::visible`] ordered by time.
    pub fn newest_visible(&self, now_ms: u64) -> Option<&SiblingView<'a>> {
        self.siblings
            .iter()
            .filter(|sibling| sibling.is_visible(now_ms))
            .max_by_key(|sibling| sibling.timestamp)
    }
}

/// The sibling a single-value read returns at `now_ms` — what
/// `RecordView::decode(bytes)?.newest_visible(now_ms)` holds — read from the stored bytes with
/// the same checks but without building the record: the hot path of a point read.
pub fn newest_visible_value(
    bytes: &[u8],
    now_ms: u64,
) -> Result<Option<SiblingView<'_>>, RecordError> {
    let mut reader = checked_body(bytes)?;
    VersionVector::skip_from(&mut reader)?;
    let mut newest: Option<SiblingView<'_>> = None;
    for _ in 0..sibling_count(&mut reader)? {
        let sibling = decode_sibling(&mut reader)?;
        // `>=`: on a tie the later sibling in dot order wins, as `max_by_key` picks it.
        if sibling.is_visible(now_ms) && newest.is_none_or(|n| sibling.timestamp >= n.timestamp) {
            newest = Some(sibling);
        }
    }
    reader.finish()?;
    Ok(newest)
}

/// The body of a stored record, past its format byte, once its length, checksum and format
/// are checked: nothing inside is trusted before that.
fn checked_body(bytes: &[u8]) -> Result<Reader<'_>, RecordError> {
    let (body, stored) = split_checksum(bytes)?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(RecordError::ChecksumMismatch { stored, computed });
    }
    body_reader(body)
}

/// [`checked_body`] without the checksum, for bytes verified before.
fn unchecked_body(bytes: &[u8]) -> Result<Reader<'_>, RecordError> {
    body_reader(split_checksum(bytes)?.0)
}

/// An encoded record's body and the checksum stored after it, once its length is plausible.
fn split_checksum(bytes: &[u8]) -> Result<(&[u8], u32), RecordError> {
    if bytes.len() < 5 {
        return Err(RecordError::TooShort { len: bytes.len() });
    }
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::TooLong { len: bytes.len() });
    }
    let (body, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes(stored.try_into().expect("split left 4 bytes"));
    Ok((body, stored))
}

/// A reader of a record's body, past its format byte.
fn body_reader(body: &[u8]) -> Result<Reader<'_>, RecordError> {
    let mut reader = Reader::new(body);
    let format = reader.u8()?;
    if format != RECORD_FORMAT {
        return Err(RecordError::UnknownFormat(format));
    }
    Ok(reader)
}

/// What a write that supersedes every version of a key needs of the record it replaces:
/// its context, and the two facts the writer keeps up to date elsewhere (the hybrid clock,
/// the expiry index). Read from stored bytes without copying any value out of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// Every write the record has seen.
    pub context: VersionVector,
    /// [`Record::newest_timestamp`].
    pub newest_timestamp: Option<Timestamp>,
    /// [`Record::next_dead_ms`].
    pub next_dead_ms: Option<u64>,
}

impl Replaced {
    /// The summary of encoded `bytes`, checked as [`Record::decode`] checks them. `None` when
    /// the record's context does not cover each of its siblings (never so for a record built
    /// by this module), so that superseding its context would not supersede them all.
    pub fn of_encoded(bytes: &[u8]) -> Result<Option<Replaced>, RecordError> {
        Self::of_body(checked_body(bytes)?)
    }

    /// [`Replaced::of_encoded`] of bytes whose checksum was verified when they entered memory
    /// (or that this process encoded): the structure is still checked, the checksum is not
    /// computed again. The record every plain SET replaces is read so from the record cache
    /// (by the SET's submitter, or by the writer), whose entries are checked as they come in,
    /// as a block cache checks a block.
    pub fn of_checked(bytes: &[u8]) -> Result<Option<Replaced>, RecordError> {
        Self::of_body(unchecked_body(bytes)?)
    }

    fn of_body(mut reader: Reader<'_>) -> Result<Option<Replaced>, RecordError> {
        let context = VersionVector::decode_from(&mut reader)?;
        let mut summary = Summary::default();
        for _ in 0..sibling_count(&mut reader)? {
            let sibling = decode_sibling(&mut reader)?;
            if !context.covers(sibling.dot) {
                return Ok(None);
            }
            summary.add(sibling.timestamp, sibling.dead_since_ms());
        }
        reader.finish()?;
        Ok(Some(summary.with(context)))
    }

    /// [`Replaced::of_checked`] of bytes whose [`PointRead`] is `point`: the same summary,
    /// for which only the context is decoded (the rest is in `point`).
    pub fn of_point(bytes: &[u8], point: &PointRead) -> Result<Option<Replaced>, RecordError> {
        let Some(timestamp) = point.covered_timestamp else {
            return Ok(None);
        };
        let context = VersionVector::decode_from(&mut unchecked_body(bytes)?)?;
        let next_dead_ms = match point.value {
            Some(_) if !point.kind.is_emptied() => point.expires_at_ms,
            _ => Some(timestamp.wall_ms()),
        };
        Ok(Some(Replaced {
            context,
            newest_timestamp: Some(timestamp),
            next_dead_ms,
        }))
    }

    /// The summary of a record in memory; `None` as for [`Replaced::of_encoded`].
    pub fn of_record(record: &Record) -> Option<Replaced> {
        let mut summary = Summary::default();
        for sibling in &record.siblings {
            if !record.context.covers(sibling.dot) {
                return None;
            }
            summary.add(sibling.timestamp, sibling.dead_since_ms());
        }
        Some(summary.with(record.context.clone()))
    }
}

/// The newest timestamp and earliest death over a record's siblings.
#[derive(Default)]
struct Summary {
    newest_timestamp: Option<Timestamp>,
    next_dead_ms: Option<u64>,
}

impl Summary {
    fn add(&mut self, timestamp: Timestamp, dead_since_ms: Option<u64>) {
        self.newest_timestamp = self.newest_timestamp.max(Some(timestamp));
        self.next_dead_ms = match (self.next_dead_ms, dead_since_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn with(self, context: VersionVector) -> Replaced {
        Replaced {
            context,
            newest_timestamp: self.newest_timestamp,
            next_dead_ms: self.next_dead_ms,
        }
    }
}

/// All a point read needs of an encoded record that has one sibling (nearly every record:
/// siblings come only from concurrent writes): where its value lies in the bytes and when it
/// expires. Found once, when the record is encoded or first read from storage, so a cache
/// holding both can answer a read without decoding or checksumming the bytes again.
///
/// It also keeps the sibling's timestamp when the record's context covers the sibling (as it
/// does in every record this module builds), so that the summary a plain SET needs of the
/// record it replaces ([`Replaced::of_point`]) decodes only the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointRead {
    /// The value's start and length in the encoded bytes; `None` for a tombstone.
    value: Option<(usize, usize)>,
    expires_at_ms: Option<u64>,
    /// The sibling's timestamp if the context covers its dot; `None` if it does not.
    covered_timestamp: Option<Timestamp>,
    /// What the value is.
    kind: ValueKind,
}

impl PointRead {
    /// The summary of encoded `bytes` when they hold one sibling (`None` when they hold
    /// several or none), checked exactly as [`Record::decode`] checks them.
    pub fn of_encoded(bytes: &[u8]) -> Result<Option<PointRead>, RecordError> {
        let mut reader = checked_body(bytes)?;
        let context = VersionVector::decode_from(&mut reader)?;
        if sibling_count(&mut reader)? != 1 {
            return Ok(None);
        }
        let sibling = decode_sibling(&mut reader)?;
        reader.finish()?;
        let body_len = bytes.len() - CHECKSUM_BYTES;
        Ok(Some(PointRead::ending_at(
            body_len,
            &sibling,
            Some(sibling.timestamp).filter(|_| context.covers(sibling.dot)),
        )))
    }

    /// The point read of `sibling`, whose value ends at `end` in the encoded bytes.
    fn ending_at(
        end: usize,
        sibling: &SiblingView<'_>,
        covered_timestamp: Option<Timestamp>,
    ) -> PointRead {
        PointRead {
            value: sibling.value.map(|value| (end - value.len(), value.len())),
            expires_at_ms: sibling.expires_at_ms,
            covered_timestamp,
            kind: sibling.kind,
        }
    }

    /// What the value is: a read of a typed value decodes its state instead of returning
    /// the bytes.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// Where the value is in the encoded bytes, whether or not it has expired; `None` for a
    /// tombstone.
    pub fn value_range(&self) -> Option<std::ops::Range<usize>> {
        self.value.map(|(start, len)| start..start + len)
    }

    /// Where in the encoded bytes the value a read at `now_ms` returns lies, if it returns
    /// one: what [`newest_visible_value`] finds for the same bytes.
    pub fn visible(&self, now_ms: u64) -> Option<std::ops::Range<usize>> {
        let (start, len) = self.value?;
        if self.kind.is_emptied() || self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            return None;
        }
        Some(start..start + len)
    }
}

/// The CRC32C that ends every encoded record.
const CHECKSUM_BYTES: usize = 4;

/// A record encoded by [`Record::encode_replacement`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRecord {
    /// [`Record::encode`]'s bytes.
    pub bytes: Vec<u8>,
    /// The point read of the bytes: always there, as the record has one sibling.
    pub point: Option<PointRead>,
    /// [`Record::next_dead_ms`].
    pub next_dead_ms: Option<u64>,
}

/// The dot of `replica`'s next write at `timestamp` into a record of `context`, which it
/// then covers. Counters are seeded from the hybrid clock, which ticks at least once per
/// write, so a counter stays unique even after the record was reaped and its context
/// forgotten.
fn next_dot(context: &mut VersionVector, replica: ReplicaId, timestamp: Timestamp) -> Dot {
    let counter = (context.get(replica) + 1).max(timestamp.0);
    context.observe(replica, counter);
    Dot { replica, counter }
}

/// `context` cut to [`CONTEXT_ENTRIES_MAX`] entries by [`VersionVector::pruned`], keeping
/// the entries of the siblings' dots; `None` if it is within the bound already.
fn bounded_context(
    context: &VersionVector,
    dots: impl Iterator<Item = Dot> + Clone,
) -> Option<VersionVector> {
    if context.len() <= CONTEXT_ENTRIES_MAX {
        return None;
    }
    context.pruned(CONTEXT_ENTRIES_MAX, |replica| {
        dots.clone().any(|dot| dot.replica == replica)
    })
}

/// Bytes of the siblings' values.
fn value_bytes(siblings: &[Sibling]) -> usize {
    siblings
        .iter()
        .map(|s| s.value.as_ref().map_or(0, Vec::len))
        .sum()
}

/// The binary form of a record of `context` and `siblings` (see [`Record::encode`]), and
/// its [`PointRead`] when there is one sibling. The siblings come as views, so a value the
/// caller only borrows is encoded without a copy of its own first.
fn encode_parts<'a>(
    context: &VersionVector,
    siblings: impl ExactSizeIterator<Item = SiblingView<'a>> + Clone,
) -> (Vec<u8>, Option<PointRead>) {
    let mut out = Vec::new();
    let point = encode_parts_into(&mut out, context, siblings);
    (out, point)
}

/// [`encode_parts`] into `out`, emptied first; returns the point read.
fn encode_parts_into<'a>(
    out: &mut Vec<u8>,
    context: &VersionVector,
    siblings: impl ExactSizeIterator<Item = SiblingView<'a>> + Clone,
) -> Option<PointRead> {
    // Bounded on write, so what is written always reads back (see `bounded_context`).
    let pruned = bounded_context(context, siblings.clone().map(|s| s.dot));
    let context = pruned.as_ref().unwrap_or(context);
    let count = siblings.len();
    let value_bytes: usize = siblings
        .clone()
        .map(|s| s.value.map_or(0, <[u8]>::len))
        .sum();
    out.clear();
    out.reserve(value_bytes + 32 + 40 * count);
    out.push(RECORD_FORMAT);
    context.encode_into(out);
    put_varint(out, count as u64);
    let mut last = None;
    for sibling in siblings {
        out.extend_from_slice(&sibling.dot.replica.0.to_le_bytes());
        put_varint(out, sibling.dot.counter);
        out.extend_from_slice(&sibling.timestamp.0.to_le_bytes());
        // Expiry 0 means none: no value is written already expired at the epoch.
        put_varint(out, sibling.expires_at_ms.unwrap_or(0));
        match sibling.value {
            Some(value) if sibling.kind.is_bytes() => {
                out.push(KIND_VALUE);
                put_bytes(out, value);
            }
            Some(value) => {
                out.push(KIND_TYPED);
                out.push(sibling.kind.to_byte());
                put_bytes(out, value);
            }
            None => out.push(KIND_TOMBSTONE),
        }
        last = Some(sibling);
    }
    // A single sibling is the last thing before the checksum, so its value ends here.
    let point = match last {
        Some(only) if count == 1 => Some(PointRead::ending_at(
            out.len(),
            &only,
            Some(only.timestamp).filter(|_| context.covers(only.dot)),
        )),
        _ => None,
    };
    let checksum = crc32c::crc32c(out);
    out.extend_from_slice(&checksum.to_le_bytes());
    point
}

/// How many siblings follow the context: at most [`SIBLINGS_MAX`].
fn sibling_count(reader: &mut Reader<'_>) -> Result<usize, RecordError> {
    Ok(reader.bounded_varint("siblings", SIBLINGS_MAX)?)
}

fn decode_sibling<'a>(reader: &mut Reader<'a>) -> Result<SiblingView<'a>, RecordError> {
    let replica = ReplicaId(reader.u64()?);
    let counter = reader.varint()?;
    let timestamp = Timestamp(reader.u64()?);
    let expires_at_ms = Some(reader.varint()?).filter(|&at| at != 0);
    let (value, kind) = match reader.u8()? {
        KIND_VALUE => (
            Some(reader.bytes("value length", VALUE_BYTES_MAX)?),
            ValueKind::BYTES,
        ),
        KIND_TOMBSTONE => (None, ValueKind::BYTES),
        KIND_TYPED => {
            let byte = reader.u8()?;
            // Bytes are never written as a typed value: one value, one encoding.
            let kind = ValueKind::from_byte(byte).filter(|k| !k.is_bytes());
            let kind = kind.ok_or(CodecError::Unknown {
                what: "value kind",
                value: byte.into(),
            })?;
            (Some(reader.bytes("value length", VALUE_BYTES_MAX)?), kind)
        }
        other => {
            return Err(CodecError::Unknown {
                what: "sibling kind",
                value: other.into(),
            }
            .into())
        }
    };
    Ok(SiblingView {
        dot: Dot { replica, counter },
        timestamp,
        expires_at_ms,
        value,
        kind,
    })
}

#[cfg(test)]
mod tests;
