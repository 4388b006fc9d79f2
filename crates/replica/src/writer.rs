//! Applying writes: the `Writer`, of which each store has one behind a mutex, so that one
//! group is applied at a time and every read-merge-write and every condition check is atomic
//! without locks of its own; and the writer thread, which commits the writes queued for it.
//! Threads that serve connections on event loops of their own commit their writes with the
//! same `Writer` instead ([`crate::loop_commit`]).
//!
//! The writer thread takes whatever writes are queued (up to [`GROUP_WRITES_MAX`] or
//! [`GROUP_BYTES_MAX`]), applies them in order against the stored records plus the ones
//! changed earlier in the same group, commits the whole group as one engine batch, then —
//! under `sync = always` — one fsync for all of them, and only then answers each caller.
//! While one group is being synced the next one queues up, so concurrent writers share
//! fsyncs (group commit). A large group is synced by a second thread while the writer applies
//! the next one; a small one by the writer itself, which saves two thread wake-ups where
//! little could overlap, after it has also stored what arrived while the group was applied,
//! so that one sync covers both.
//!
//! What can be done off this thread is: a plain SET arrives with its new record already
//! encoded by its submitter from a snapshot of the cache ([`crate::store::PreparedWrite`]),
//! and the writer only checks that the snapshot still holds before storing it.

use crate::answers::{answer_all, copied, Answer, Mailbox};
use crate::cache::{CacheKey, Cached, StoredRecord};
use crate::error::ReplicaError;
use crate::layout::{self, ExpiryEntry, KeyspaceId};
use crate::loop_commit::LoopQueue;
use crate::store::{
    Change, Condition, ConflictMode, Entry, Expiry, MergeRequest, PreparedWrite, Reaping,
    ReplicatedStamp, Report, SeenReplaced, SeenWrite, Shared, SyncPolicy, WriteOutcome,
    WriteRequest,
};
use parking_lot::{Mutex, MutexGuard};
use ringkv_core::causal::{ReplicaId, VersionVector};
use ringkv_core::crdt::op::{Answer as OpAnswer, Op};
use ringkv_core::crdt::register::Stamp;
use ringkv_core::crdt::typed::Value;
use ringkv_core::limits::VALUE_BYTES_MAX;
use ringkv_core::record::{Mutation, Record, Replaced, ValueKind};
use ringkv_storage::{copy_key, StorageError, WriteBatch};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes committed as one group (a group may exceed it by its last job's writes).
pub const GROUP_WRITES_MAX: usize = 1024;

/// Most value bytes committed as one group (a group may exceed it by its last write).
pub const GROUP_BYTES_MAX: usize = 64 << 20;

/// Groups with fewer writes than this (and fewer bytes than [`INLINE_SYNC_BYTES_MAX`]) are
/// synced by the writer itself. Handing a group to the syncer costs a thread wake-up on each
/// side, and pays only when applying the next group takes about as long as the fsync. With
/// 50 clients of one request each (`redis-benchmark -P 1`, always below this size), syncing
/// in place gave 6 % more SETs per second over 8 alternating runs (-9 % to +17 %); pipelined
/// clients (`-P 16`) make groups of hundreds, which still overlap.
pub const INLINE_SYNC_WRITES_MAX: usize = 64;

/// Most writes of a small group and of the jobs that arrived while it was applied that the
/// writer syncs itself (see the writer's `store_arrivals`); when more are queued, the writer
/// is busy and hands the sync to the syncer. Above the number of clients that send one
/// request at a time in the usual benchmarks (50), so that they are all synced in place.
pub const ARRIVALS_WRITES_MAX: usize = 2 * INLINE_SYNC_WRITES_MAX;

/// Value bytes from which a group is handed to the syncer whatever its number of writes.
pub const INLINE_SYNC_BYTES_MAX: usize = 1 << 20;

/// Where the outcomes of a [`Job::WriteMany`] go.
pub(crate) type ManyReply =
    oneshot::Sender<Result<Vec<Result<WriteOutcome, ReplicaError>>, ReplicaError>>;

/// Work for the writer thread.
pub(crate) enum Job {
    /// A client write; the outcome goes back on `reply` once durable.
    Write {
        request: WriteRequest,
        reply: oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
    },
    /// Several writes applied in one engine batch: other readers see all or none of them.
    /// Each may come with what its submitter saw of the record it replaces, and a plain SET
    /// with its new record already encoded ([`SeenWrite::Encoded`]).
    WriteMany {
        requests: Vec<PreparedWrite>,
        reply: ManyReply,
    },
    /// Another replica's record of a key (replication, read repair) to merge with the
    /// stored one; the reply says whether the stored record changed.
    Merge {
        request: MergeRequest,
        reply: oneshot::Sender<Result<bool, ReplicaError>>,
    },
    /// Expiry-index entries that are due; the reply counts the siblings removed and lists
    /// the wholly dead records left for confirmation.
    Sweep {
        entries: Vec<ExpiryEntry>,
        reply: oneshot::Sender<Result<Swept, ReplicaError>>,
    },
    /// Wholly dead records of `keyspace` to remove, each only if the stored record still has
    /// the given fingerprint; the reply says, per key, whether it is gone now.
    Reap {
        keyspace: String,
        records: Vec<(Vec<u8>, u64)>,
        reply: oneshot::Sender<Result<Vec<bool>, ReplicaError>>,
    },
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Siblings removed.
    pub removed: u64,
    /// Records found wholly dead and left in place for confirmation
    /// ([`crate::store::Reaping::WhenConfirmed`]), with their fingerprints.
    pub dead: Vec<(ExpiryEntry, u64)>,
}

impl Job {
    /// How many records the job may change: what a group's size is counted in.
    pub(crate) fn writes(&self) -> usize {
        match self {
            Job::WriteMany { requests, .. } => requests.len(),
            Job::Sweep { entries, .. } => entries.len(),
            Job::Reap { records, .. } => records.len(),
            Job::Write { .. } | Job::Merge { .. } => 1,
        }
    }

    /// Whether the job is durable without a sync of its own: a strong keyspace's write, whose
    /// shard's log was synced before it was applied (a crash replays the log from the last
    /// applied position saved, and that position is saved after the writes, in the same
    /// engine log, so it is never durable before them).
    fn durable_elsewhere(&self) -> bool {
        matches!(self, Job::Write { request, .. } if request.replicated.is_some())
    }

    fn bytes(&self) -> usize {
        match self {
            Job::Write { request, .. } => request.bytes(),
            Job::WriteMany { requests, .. } => requests.iter().map(PreparedWrite::bytes).sum(),
            Job::Merge { request, .. } => request.key.len() + request.record.value_bytes(),
            Job::Sweep { entries, .. } => entries.len() * 64,
            Job::Reap { records, .. } => records.iter().map(|(key, _)| key.len() + 8).sum(),
        }
    }
}

/// What applies writes to the stored records: one [`Mutex`] of it per store, so that only one
/// group is applied at a time — every read-merge-write and condition check is atomic without
/// locks of its own. The [`WriterThread`] holds it while it stores a group, and so does a
/// thread that commits its own writes ([`crate::loop_commit`]).
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// The writer thread's syncer, while it runs (under `sync = always`): large groups that
    /// a committing thread stores are synced there, as the writer thread's are.
    syncer: Option<Syncer>,
}

/// Where groups go to be synced by the syncer thread.
type Syncer = std::sync::mpsc::Sender<Handoff>;

/// A stored group's answers, for the syncer to send after its next sync, or to leave in the
/// mailbox of the thread that committed the group (see [`crate::answers`]).
struct Handoff {
    answers: Vec<Answer>,
    mailbox: Option<Arc<Mailbox>>,
}

/// The writer thread: commits the writes queued on the store's channel.
pub(crate) struct WriterThread {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Writer>>,
    /// What committing threads queued: committed after each group, since a thread that found
    /// the writer busy left its writes to whoever held it.
    loops: Arc<LoopQueue>,
    jobs: mpsc::Receiver<Job>,
}

/// The records a group has changed so far (`None`: deleted), the batch that stores them, and
/// — when the store caches records — their stored bytes for the cache.
#[derive(Default)]
struct Group {
    /// Looked up and inserted once per write; aHash (randomly keyed per process, so clients
    /// cannot choose colliding keys) costs a fraction of std's SipHash here.
    /// Kept as stored (`None`: deleted): a later write of the key in the group decodes what
    /// it needs, and the group holds no second copy of each value.
    records: HashMap<CacheKey, Option<StoredRecord>, ahash::RandomState>,
    batch: WriteBatch,
    cached: Option<Vec<(CacheKey, Cached)>>,
}

/// Takes queued jobs after `first` while the group stays under [`GROUP_WRITES_MAX`] and
/// [`GROUP_BYTES_MAX`]; returns the group and its writes and bytes.
fn gather(first: Job, mut next: impl FnMut() -> Option<Job>) -> (Vec<Job>, usize, usize) {
    let (mut writes, mut bytes) = (first.writes(), first.bytes());
    let mut jobs = vec![first];
    while writes < GROUP_WRITES_MAX && bytes < GROUP_BYTES_MAX {
        let Some(job) = next() else { break };
        writes += job.writes();
        bytes += job.bytes();
        jobs.push(job);
    }
    (jobs, writes, bytes)
}

impl WriterThread {
    pub fn new(
        writer: Arc<Mutex<Writer>>,
        loops: Arc<LoopQueue>,
        jobs: mpsc::Receiver<Job>,
    ) -> Self {
        let shared = Arc::clone(&writer.lock().shared);
        Self {
            shared,
            writer,
            loops,
            jobs,
        }
    }

    /// Runs until every sender is gone and the queue is drained. Under `sync = always` a
    /// second thread syncs large groups, so the next group is applied while the last one's
    /// fsync runs (pipelined group commit); it stops once the writer has handed it everything.
    pub fn run(mut self) {
        let syncer = (self.shared.options.sync == SyncPolicy::Always).then(|| {
            let (handoff, groups) = std::sync::mpsc::channel::<Handoff>();
            let shared = Arc::clone(&self.shared);
            let thread = std::thread::Builder::new()
                .name("ringkv-syncer".into())
                .spawn(move || run_syncer(&shared, &groups))
                .expect("the syncer thread starts");
            self.writer.lock().syncer = Some(handoff.clone());
            (handoff, thread)
        });
        while let Some(first) = self.jobs.blocking_recv() {
            let (jobs, writes, bytes) = gather(first, || self.jobs.try_recv().ok());
            self.commit(
                jobs,
                writes,
                bytes,
                syncer.as_ref().map(|(handoff, _)| handoff),
            );
            // Until writes of its own are queued again: under steady loads on both sides it
            // would otherwise keep committing the loops' writes while its own wait.
            self.loops.commit(|| !self.jobs.is_empty(), None);
        }
        if let Some((handoff, thread)) = syncer {
            self.writer.lock().syncer = None;
            drop(handoff);
            let _ = thread.join();
        }
    }

    /// Applies a group and stores it as one engine batch. Its callers are answered at once,
    /// or — given a syncer — once a sync that began after the batch was stored has finished
    /// (the syncer's, or for a small group the writer's own; either covers the groups stored
    /// before it, so answers may overtake those of an earlier group still being synced):
    /// even a group that changed nothing waits, since what it reports may rest on an earlier
    /// group's writes that are not durable yet.
    fn commit(&mut self, jobs: Vec<Job>, writes: usize, bytes: usize, syncer: Option<&Syncer>) {
        let small = writes < INLINE_SYNC_WRITES_MAX && bytes < INLINE_SYNC_BYTES_MAX;
        let syncer = syncer.filter(|_| !jobs.iter().all(Job::durable_elsewhere));
        let writer = self.writer.lock();
        let (answers, stored) = writer.store_group(jobs, writes);
        match (stored, syncer) {
            (Ok(()), Some(syncer)) if small => {
                let (answers, busy) =
                    Self::store_arrivals(&mut self.jobs, &writer, answers, writes, bytes);
                drop(writer);
                if busy {
                    hand_to_syncer(syncer, answers, None);
                } else {
                    answer_all(answers, &sync(&self.shared));
                }
            }
            (Ok(()), Some(syncer)) => {
                drop(writer);
                hand_to_syncer(syncer, answers, None);
            }
            (stored, _) => {
                drop(writer);
                answer_all(answers, &stored);
            }
        }
    }

    /// Before a small group's sync: stores, as groups of their own, the jobs that arrived while
    /// it was applied, so that the one sync covers them too, up to [`ARRIVALS_WRITES_MAX`]
    /// writes (or [`INLINE_SYNC_BYTES_MAX`] bytes) in all. Returns the answers that wait for
    /// the sync (a group that could not be stored is answered with its error at once), and
    /// whether more are queued beyond those: then the writer is busy, and the sync is better
    /// left to the syncer while the writer applies the rest.
    ///
    /// Without this, what arrives during a group's few tens of microseconds of applying waits
    /// for the whole of its sync (hundreds) and then gets a sync of its own. With 50 clients of
    /// one SET each (`redis-benchmark -P 1`), taking them in raised the writes per sync from
    /// about 25 to 31-39 and SETs per second by 5-15 % (3 of 3 alternating runs, and 4 of 4
    /// with an earlier version), with a lower p99 in each; -P 16 was unchanged (3 runs).
    /// Redis's `appendfsync always` does the same in effect: one fsync per turn of its event
    /// loop covers every command the turn read.
    fn store_arrivals(
        queue: &mut mpsc::Receiver<Job>,
        writer: &Writer,
        mut waiting: Vec<Answer>,
        mut writes: usize,
        mut bytes: usize,
    ) -> (Vec<Answer>, bool) {
        while writes < ARRIVALS_WRITES_MAX && bytes < INLINE_SYNC_BYTES_MAX {
            let mut jobs = Vec::new();
            let mut added = 0;
            while writes + added < ARRIVALS_WRITES_MAX && bytes < INLINE_SYNC_BYTES_MAX {
                let Ok(job) = queue.try_recv() else { break };
                added += job.writes();
                bytes += job.bytes();
                jobs.push(job);
            }
            if jobs.is_empty() {
                break;
            }
            writes += added;
            match writer.store_group(jobs, added) {
                (answers, Ok(())) => waiting.extend(answers),
                (answers, failed) => answer_all(answers, &failed),
            }
        }
        let full = writes >= ARRIVALS_WRITES_MAX || bytes >= INLINE_SYNC_BYTES_MAX;
        (waiting, full && !queue.is_empty())
    }
}

impl Writer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            syncer: None,
        }
    }

    /// Commits jobs that a thread queued for itself ([`crate::loop_commit`]): stores them, in
    /// groups as the writer thread would, then syncs once for all of them as the store's
    /// policy says, then answers them.
    ///
    /// A small group is synced in place, as Redis's event loop does, holding the writer
    /// through the sync: what other committing threads queue meanwhile waits for it and
    /// joins the next group, where a sync of their own beside it would wait for this one
    /// anyway (the engine runs one at a time). A large one is handed to the
    /// syncer, as the writer thread's are, so that the thread serves the requests that came
    /// in meanwhile while the disk works (`redis-benchmark -P 16`, whose 50 pipelines arrive
    /// in about two waves).
    ///
    /// Answers that the syncer sends go to `mailbox`, if given, for the committing thread to
    /// send them itself.
    pub fn commit_queued(
        guard: MutexGuard<'_, Writer>,
        jobs: Vec<Job>,
        mailbox: Option<&Arc<Mailbox>>,
    ) {
        let mut waiting = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        let (mut writes, mut bytes) = (0, 0);
        while let Some(first) = jobs.next() {
            let (group, group_writes, group_bytes) = gather(first, || jobs.next());
            writes += group_writes;
            bytes += group_bytes;
            match guard.store_group(group, group_writes) {
                (answers, Ok(())) => waiting.extend(answers),
                (answers, failed) => answer_all(answers, &failed),
            }
        }
        if guard.shared.options.sync != SyncPolicy::Always || waiting.is_empty() {
            drop(guard);
            answer_all(waiting, &Ok(()));
            return;
        }
        let small = writes < INLINE_SYNC_WRITES_MAX && bytes < INLINE_SYNC_BYTES_MAX;
        match &guard.syncer {
            Some(syncer) if !small => hand_to_syncer(syncer, waiting, mailbox.cloned()),
            _ => {
                let synced = sync(&guard.shared);
                drop(guard);
                answer_all(waiting, &synced);
            }
        }
    }

    /// Applies `jobs` (of `writes` writes in all) and stores them as one engine batch; the
    /// answers wait for a sync, unless the batch could not be stored.
    fn store_group(
        &self,
        jobs: Vec<Job>,
        writes: usize,
    ) -> (Vec<Answer>, Result<(), StorageError>) {
        let started = std::time::Instant::now();
        let mut group = Group {
            records: HashMap::with_capacity_and_hasher(writes, ahash::RandomState::new()),
            batch: WriteBatch::with_capacity(writes),
            cached: self
                .shared
                .cache
                .is_some()
                .then(|| Vec::with_capacity(writes)),
        };
        let answers: Vec<Answer> = jobs
            .into_iter()
            .map(|job| match job {
                Job::Write { request, reply } => Answer::Write(
                    reply,
                    self.apply_write(&mut group, request, Report::FULL, None),
                ),
                Job::WriteMany { requests, reply } => {
                    let outcomes = requests
                        .into_iter()
                        .map(|w| self.apply_write(&mut group, w.request, w.report, w.seen));
                    Answer::WriteMany(reply, outcomes.collect())
                }
                Job::Merge { request, reply } => {
                    Answer::Merge(reply, self.apply_merge(&mut group, request))
                }
                Job::Sweep { entries, reply } => {
                    Answer::Sweep(reply, self.apply_sweep(&mut group, entries))
                }
                Job::Reap {
                    keyspace,
                    records,
                    reply,
                } => Answer::Reap(reply, self.apply_reap(&mut group, &keyspace, records)),
            })
            .collect();
        let stored = if group.batch.is_empty() {
            Ok(())
        } else {
            self.shared.engine.write(group.batch)
        };
        let changed = group.records.iter();
        let changed = changed.map(|(key, stored)| (key, stored.as_ref().map(|s| &s.bytes)));
        self.shared.trees.feed(changed, stored.is_ok());
        // Readers may learn of these records as soon as the engine holds them, so the cache
        // must stop answering with older ones now. After a failed write the engine may hold
        // some of the group or none of it: forget those keys so their next read asks it.
        if let Some(cached) = group.cached {
            match &stored {
                Ok(()) => self.shared.cache_stored(cached),
                Err(_) => self
                    .shared
                    .cache_forget(cached.into_iter().map(|(key, _)| key)),
            }
        }
        let metrics = &self.shared.metrics;
        metrics.group_size.observe(writes as f64);
        metrics
            .group_seconds
            .observe(started.elapsed().as_secs_f64());
        (answers, stored)
    }

    /// The current record of a data key: as changed earlier in this group, else as stored.
    fn current(
        &self,
        group: &Group,
        keyspace: &str,
        key: &[u8],
    ) -> Result<Option<Record>, ReplicaError> {
        // A keyspace without a number has no records, neither stored nor in this group.
        let Some(id) = self.shared.keyspace_ids.get(keyspace) else {
            return Ok(None);
        };
        match group.records.get(&layout::lookup_key(id, key)[..]) {
            Some(Some(stored)) => self.shared.decode(keyspace, key, &stored.bytes).map(Some),
            Some(None) => Ok(None),
            None => self.shared.load(keyspace, key),
        }
    }

    /// The number of `keyspace`, given one now if this is its first record here.
    fn keyspace_id(&self, keyspace: &str) -> Result<KeyspaceId, ReplicaError> {
        let shared = &self.shared;
        shared
            .keyspace_ids
            .get_or_assign(shared.engine.as_ref(), keyspace)
    }

    fn apply_write(
        &self,
        group: &mut Group,
        mut request: WriteRequest,
        report: Report,
        mut seen: Option<SeenReplaced>,
    ) -> Result<WriteOutcome, ReplicaError> {
        if supersedes_all(&request, report) {
            match self.replacing(group, &request.keyspace, &request.key, &mut seen)? {
                Some(SeenWrite::Encoded { stored, dues }) => {
                    return self.store_ahead(group, &request, stored, dues);
                }
                Some(SeenWrite::Summary(replacing)) => {
                    restore_value(&mut request, seen);
                    return self.apply_replacing(group, request, report, replacing);
                }
                None => {}
            }
        }
        restore_value(&mut request, seen);
        let shared = &self.shared;
        // A write a strong keyspace's log ordered runs at the time its stamp says, so that
        // every replica sees the same values live or expired.
        let now_ms = match request.replicated {
            Some(stamp) => stamp.timestamp.wall_ms(),
            None => shared.clock.now_ms(),
        };
        let stored = match self.current(group, &request.keyspace, &request.key) {
            Ok(stored) => stored,
            // An unconditional write replaces a damaged record: that is how it gets repaired.
            Err(ReplicaError::Corruption { .. }) if request.condition == Condition::Always => None,
            Err(error) => return Err(error),
        };
        if let Some(stamp) = request.replicated {
            if let Some(record) = stored.as_ref().filter(|r| already_applied(r, stamp)) {
                return Ok(WriteOutcome {
                    context: record.context.clone(),
                    ..WriteOutcome::default()
                });
            }
        }
        // What a read would see now, copied only when something needs it: the condition, a
        // change built on the current value, or the caller.
        let reads_current = report.previous
            || request.condition != Condition::Always
            || request.change.reads_current();
        let previous = stored
            .as_ref()
            .filter(|_| reads_current)
            .and_then(|record| Entry::visible(record, now_ms));
        check_condition(request.condition, previous.as_ref()).inspect_err(|_| {
            shared.metrics.condition_failures.inc();
        })?;
        if let Some(newest) = stored.as_ref().and_then(Record::newest_timestamp) {
            shared.hlc.observe(newest);
        }
        let seen = seen_context(&request, stored.as_ref());
        let WriteRequest {
            keyspace,
            key,
            change,
            conflict,
            return_record,
            ..
        } = request;
        let stamp = match request.replicated {
            Some(replicated) => Stamp {
                timestamp: replicated.timestamp,
                replica: ReplicaId(replicated.replica),
            },
            None => Stamp {
                timestamp: shared.hlc.tick(now_ms),
                replica: shared.replica_id,
            },
        };
        let Resolved {
            mutation,
            integer,
            answer,
        } = resolve_change(change, previous.as_ref(), stamp)?;
        let old_due = stored.as_ref().and_then(Record::next_dead_ms);
        let mut record =
            Record::update_owned(stored, &seen, mutation, stamp.replica, stamp.timestamp)?;
        if conflict == ConflictMode::LastWriterWins {
            record.resolve_last_writer_wins();
        }
        let written = Written {
            old_due,
            previous: previous.filter(|_| report.previous),
            integer,
            answer,
            return_record,
        };
        self.store_written(group, &keyspace, &key, report, record, written)
    }

    /// [`Writer::apply_write`] of a write that [`supersedes_all`] the key's versions, from the
    /// summary of what it replaces (`None`: nothing): what the general path computes, without
    /// decoding the old value only to drop it.
    fn apply_replacing(
        &self,
        group: &mut Group,
        request: WriteRequest,
        report: Report,
        replacing: Option<Replaced>,
    ) -> Result<WriteOutcome, ReplicaError> {
        let shared = &self.shared;
        let now_ms = shared.clock.now_ms();
        if let Some(newest) = replacing.as_ref().and_then(|r| r.newest_timestamp) {
            shared.hlc.observe(newest);
        }
        let WriteRequest {
            keyspace,
            key,
            change,
            return_record,
            ..
        } = request;
        let timestamp = shared.hlc.tick(now_ms);
        let stamp = Stamp {
            timestamp,
            replica: shared.replica_id,
        };
        let Resolved {
            mutation, integer, ..
        } = resolve_change(change, None, stamp)?;
        let old_due = replacing.as_ref().and_then(|r| r.next_dead_ms);
        if !return_record && !report.context {
            // Nothing needs the new record but its bytes: encode them straight away.
            let (stored, new_due) = crate::record_bytes::encode_replacement(
                replacing,
                mutation.view(),
                shared.replica_id,
                timestamp,
            );
            let id = self.keyspace_id(&keyspace)?;
            store_encoded(group, &keyspace, id, &key, (old_due, new_due), Some(stored));
            shared.metrics.writes.inc();
            return Ok(WriteOutcome {
                context: VersionVector::new(),
                previous: None,
                integer,
                answer: None,
                record: None,
                previous_unknown: false,
            });
        }
        let record = Record::replace(replacing, mutation, shared.replica_id, timestamp)?;
        let written = Written {
            old_due,
            previous: None,
            integer,
            answer: None,
            return_record,
        };
        self.store_written(group, &keyspace, &key, report, record, written)
    }

    /// What a write that [`supersedes_all`] replaces; `Ok(None)` when its record cannot be
    /// summarised so (see [`Replaced::of_encoded`]) and the general path must apply it. What
    /// the submitter `seen` is used unless this group or a cache change since has made it
    /// stale.
    fn replacing(
        &self,
        group: &Group,
        keyspace: &str,
        key: &[u8],
        seen: &mut Option<SeenReplaced>,
    ) -> Result<Option<SeenWrite>, ReplicaError> {
        let Some(id) = self.shared.keyspace_ids.get(keyspace) else {
            return Ok(Some(SeenWrite::Summary(None)));
        };
        if let Some(record) = group.records.get(&layout::lookup_key(id, key)[..]) {
            return Ok(match record {
                // Bytes this writer made; failing that, the general path finds out why.
                Some(stored) => stored
                    .replaced()
                    .ok()
                    .flatten()
                    .map(|r| SeenWrite::Summary(Some(r))),
                None => Some(SeenWrite::Summary(None)),
            });
        }
        // Every change to a stored record moves its cache version once the engine has it;
        // changes earlier in this group are in `group.records`, looked up above.
        let cache = self.shared.cache.as_ref();
        if let Some(current) = seen.take_if(|s| cache.is_some_and(|c| c.unchanged_since(s.version)))
        {
            self.shared.metrics.writes_from_snapshot.inc();
            return Ok(Some(current.write));
        }
        let loaded = self.shared.load_with(keyspace, key, StoredRecord::replaced);
        match loaded {
            Ok(None) => Ok(Some(SeenWrite::Summary(None))),
            Ok(Some(summary)) => Ok(summary.map(|r| SeenWrite::Summary(Some(r)))),
            // The write is unconditional, so it replaces a damaged record: that repairs it.
            Err(ReplicaError::Corruption { .. }) => Ok(Some(SeenWrite::Summary(None))),
            Err(error) => Err(error),
        }
    }

    /// Stores a plain SET its submitter encoded ([`SeenWrite::Encoded`]).
    fn store_ahead(
        &self,
        group: &mut Group,
        request: &WriteRequest,
        stored: StoredRecord,
        dues: (Option<u64>, Option<u64>),
    ) -> Result<WriteOutcome, ReplicaError> {
        let id = self.keyspace_id(&request.keyspace)?;
        store_encoded(
            group,
            &request.keyspace,
            id,
            &request.key,
            dues,
            Some(stored),
        );
        self.shared.metrics.writes.inc();
        Ok(WriteOutcome {
            context: VersionVector::new(),
            previous: None,
            integer: None,
            answer: None,
            record: None,
            previous_unknown: false,
        })
    }

    /// Adds an applied write's new record to the group and builds its outcome.
    fn store_written(
        &self,
        group: &mut Group,
        keyspace: &str,
        key: &[u8],
        report: Report,
        record: Record,
        written: Written,
    ) -> Result<WriteOutcome, ReplicaError> {
        let outcome = WriteOutcome {
            context: if report.context {
                record.context.clone()
            } else {
                VersionVector::new()
            },
            previous: written.previous.map(Box::new),
            integer: written.integer,
            answer: written.answer.map(Box::new),
            record: written.return_record.then(|| Box::new(record.clone())),
            previous_unknown: false,
        };
        let id = self.keyspace_id(keyspace)?;
        store(group, keyspace, id, key, written.old_due, Some(record));
        self.shared.metrics.writes.inc();
        Ok(outcome)
    }

    fn apply_merge(&self, group: &mut Group, request: MergeRequest) -> Result<bool, ReplicaError> {
        let MergeRequest {
            keyspace,
            key,
            record: incoming,
            conflict,
        } = request;
        let stored = match self.current(group, &keyspace, &key) {
            Ok(stored) => stored,
            // A damaged local copy is replaced by the incoming one: that is how it is repaired.
            Err(ReplicaError::Corruption { .. }) => None,
            Err(error) => return Err(error),
        };
        if let Some(newest) = incoming.newest_timestamp() {
            self.shared.hlc.observe(newest);
        }
        let mut merged = match &stored {
            Some(stored) => stored.sync(&incoming),
            None => incoming,
        };
        if conflict == ConflictMode::LastWriterWins {
            merged.resolve_last_writer_wins();
        }
        if stored.as_ref() == Some(&merged) {
            return Ok(false);
        }
        let id = self.keyspace_id(&keyspace)?;
        let old_due = stored.as_ref().and_then(Record::next_dead_ms);
        store(group, &keyspace, id, &key, old_due, Some(merged));
        self.shared.metrics.merges.inc();
        Ok(true)
    }

    fn apply_sweep(
        &self,
        group: &mut Group,
        entries: Vec<ExpiryEntry>,
    ) -> Result<Swept, ReplicaError> {
        let shared = &self.shared;
        let now_ms = shared.clock.now_ms();
        let grace_ms = shared.options.tombstone_grace_ms;
        let confirmed_only = shared.options.reaping == Reaping::WhenConfirmed;
        let mut swept = Swept::default();
        for entry in entries {
            let index_key = layout::expiry_key(entry.due_ms, &entry.keyspace, &entry.key);
            let stored = match self.current(group, &entry.keyspace, &entry.key) {
                Ok(Some(record)) if record.next_dead_ms() == Some(entry.due_ms) => record,
                // Gone, rewritten since (its current index entry is elsewhere), or damaged
                // (reported on read; sweeping cannot fix it): drop this index entry.
                Ok(_) | Err(ReplicaError::Corruption { .. }) => {
                    group.batch.delete(index_key);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut record = stored.clone();
            let dropped = record.purge_dead(now_ms, grace_ms);
            if dropped == 0 {
                continue;
            }
            if record.siblings.is_empty() && confirmed_only {
                swept.dead.push((entry, stored.fingerprint()));
                continue;
            }
            swept.removed += dropped as u64;
            let remaining = Some(record).filter(|r| !r.siblings.is_empty());
            let id = self.keyspace_id(&entry.keyspace)?;
            store(
                group,
                &entry.keyspace,
                id,
                &entry.key,
                stored.next_dead_ms(),
                remaining,
            );
        }
        shared.metrics.swept.inc_by(swept.removed);
        Ok(swept)
    }

    /// Removes each of `records` whose stored record still has the fingerprint given (one
    /// rewritten since is left alone), and says per key whether none is stored now.
    fn apply_reap(
        &self,
        group: &mut Group,
        keyspace: &str,
        records: Vec<(Vec<u8>, u64)>,
    ) -> Result<Vec<bool>, ReplicaError> {
        let mut gone = Vec::with_capacity(records.len());
        let mut removed = 0;
        for (key, fingerprint) in records {
            let stored = match self.current(group, keyspace, &key) {
                Ok(stored) => stored,
                Err(ReplicaError::Corruption { .. }) => {
                    gone.push(false);
                    continue;
                }
                Err(error) => return Err(error),
            };
            gone.push(match stored {
                None => true,
                Some(record) if record.fingerprint() == fingerprint => {
                    let id = self.keyspace_id(keyspace)?;
                    removed += record.siblings.len() as u64;
                    store(group, keyspace, id, &key, record.next_dead_ms(), None);
                    true
                }
                Some(_) => false,
            });
        }
        self.shared.metrics.swept.inc_by(removed);
        Ok(gone)
    }
}

/// The syncer thread: waits for groups stored by the writer, syncs once for all of those
/// waiting, then answers them (or leaves their answers in their committing thread's mailbox).
fn run_syncer(shared: &Shared, groups: &std::sync::mpsc::Receiver<Handoff>) {
    while let Ok(first) = groups.recv() {
        let mut waiting = vec![first];
        waiting.extend(groups.try_iter());
        let synced = sync(shared);
        for Handoff { answers, mailbox } in waiting {
            match mailbox {
                Some(mailbox) => mailbox.deliver(answers, copied(&synced)),
                None => answer_all(answers, &synced),
            }
        }
    }
}

/// Syncs the engine, counted and timed.
fn sync(shared: &Shared) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let synced = shared.engine.sync();
    shared.metrics.syncs.inc();
    let elapsed = started.elapsed().as_secs_f64();
    shared.metrics.sync_seconds.observe(elapsed);
    synced
}

/// Hands a stored group's answers to the syncer, to be sent after its next sync (or left in
/// `mailbox`).
fn hand_to_syncer(syncer: &Syncer, answers: Vec<Answer>, mailbox: Option<Arc<Mailbox>>) {
    if let Err(std::sync::mpsc::SendError(Handoff { answers, .. })) =
        syncer.send(Handoff { answers, mailbox })
    {
        answer_all(
            answers,
            &Err(StorageError::Io(std::io::Error::other("syncer stopped"))),
        );
    }
}

/// What an applied write reports besides its new record.
struct Written {
    /// When the replaced record was due in the expiry index.
    old_due: Option<u64>,
    previous: Option<Entry>,
    integer: Option<i64>,
    answer: Option<OpAnswer>,
    /// Whether the outcome carries the new record.
    return_record: bool,
}

/// Puts back the value of a SET whose submitter encoded it ahead and left it out of the
/// request ([`crate::LocalStore::prepare_put`]), when the writer applies the SET itself after
/// all (its snapshot went stale, or the group changed the key first): the encoded record
/// holds exactly the value.
fn restore_value(request: &mut WriteRequest, seen: Option<SeenReplaced>) {
    let Some(SeenReplaced {
        write: SeenWrite::Encoded { stored, .. },
        ..
    }) = seen
    else {
        return;
    };
    if let Change::Put { value, .. } = &mut request.change {
        if let Some(range) = stored.point.and_then(|point| point.value_range()) {
            if value.is_empty() {
                value.extend_from_slice(&stored.bytes[range]);
            }
        }
    }
}

/// Whether `request` supersedes every version of its key whatever they hold, so applying it
/// needs only a summary of the record it replaces: a last-writer-wins put or delete without a
/// causal context (it sees the stored context, which covers every stored sibling), that no
/// condition, change or caller needs the current value for. A plain SET.
pub(crate) fn supersedes_all(request: &WriteRequest, report: Report) -> bool {
    request.context.is_none()
        && request.replicated.is_none()
        && request.conflict == ConflictMode::LastWriterWins
        && request.condition == Condition::Always
        && !request.change.reads_current()
        && !report.previous
}

/// Whether the stored record already holds the write stamped `stamp`, or a later one: a
/// strong keyspace's stamps grow with its log, so a record at least as new was written by this
/// entry before a restart (its applied position is saved after the records) or by a later one
/// (a snapshot or a range stream brought it). Applying it again would count an increment
/// twice.
fn already_applied(stored: &Record, stamp: ReplicatedStamp) -> bool {
    stored
        .newest_timestamp()
        .is_some_and(|newest| newest >= stamp.timestamp)
}

/// The context a write supersedes: what the client read if it sent a context; otherwise,
/// everything this replica holds for last-writer-wins writes and for deletes, and nothing for
/// a put into a siblings keyspace (it becomes a sibling, as in Riak's allow_mult).
fn seen_context(request: &WriteRequest, stored: Option<&Record>) -> VersionVector {
    let stored_context = || {
        stored
            .map(|record| record.context.clone())
            .unwrap_or_default()
    };
    match (&request.context, request.conflict) {
        (Some(context), _) => context.clone(),
        (None, ConflictMode::LastWriterWins) => stored_context(),
        (None, ConflictMode::Siblings) if matches!(request.change, Change::Put { .. }) => {
            VersionVector::new()
        }
        (None, ConflictMode::Siblings) => stored_context(),
    }
}

/// The record a *stand-in* issues for a blind write (no condition, nothing read from the
/// stored value) that none of the key's replicas could lead, because every one is down: the
/// write applied to no stored record, for the fallbacks to keep as hints.
///
/// Its dot is stamped with a fresh random id, not this node's. A node's counters are unique
/// per key only because it holds the key's record when it issues them: a later write it led
/// would otherwise carry a context entry `{node: later}` that covers this dot without having
/// seen it, and the merge would drop this write. A one-off id covers nothing else; the cost
/// is one context entry per stand-in write, within the pruned bound like any other.
pub(crate) fn stand_in_record(
    shared: &Shared,
    request: WriteRequest,
) -> Result<Record, ReplicaError> {
    debug_assert_eq!(request.condition, Condition::Always);
    let seen = seen_context(&request, None);
    let timestamp = shared.hlc.tick(shared.clock.now_ms());
    let actor = ringkv_core::causal::ReplicaId(rand::random::<u64>().max(1));
    let stamp = Stamp {
        timestamp,
        replica: actor,
    };
    let mutation = resolve_change(request.change, None, stamp)?.mutation;
    let mut record = Record::update_owned(None, &seen, mutation, actor, timestamp)?;
    if request.conflict == ConflictMode::LastWriterWins {
        record.resolve_last_writer_wins();
    }
    Ok(record)
}

/// What a change makes: the new sibling, and what the client is told.
struct Resolved {
    mutation: Mutation,
    /// The new integer of an increment or a string edit.
    integer: Option<i64>,
    /// A typed operation's answer.
    answer: Option<OpAnswer>,
}

impl Resolved {
    fn of(mutation: Mutation) -> Self {
        Resolved {
            mutation,
            integer: None,
            answer: None,
        }
    }
}

/// Turns a change into the new sibling's value and expiry, given what a read sees now and
/// the write's stamp (typed values record it).
fn resolve_change(
    change: Change,
    current: Option<&Entry>,
    stamp: Stamp,
) -> Result<Resolved, ReplicaError> {
    let current_value = current.map(Entry::winner);
    let kept_expiry = current_value.and_then(|v| v.expires_at_ms);
    let expiry_ms = |expiry: Expiry| match expiry {
        Expiry::Never => None,
        Expiry::At(at) => Some(at),
        Expiry::Keep => kept_expiry,
    };
    Ok(match change {
        Change::Put { value, expiry } => Resolved::of(Mutation::bytes(value, expiry_ms(expiry))),
        Change::Delete => Resolved::of(Mutation::delete()),
        Change::Increment(by) => {
            let resolved = resolve_typed(Op::Increment(by), current, kept_expiry, stamp)?;
            let integer = match resolved.answer {
                Some(OpAnswer::Integer(next)) => Some(next),
                _ => None,
            };
            Resolved {
                integer,
                answer: None,
                ..resolved
            }
        }
        Change::Typed(op) => resolve_typed(op, current, kept_expiry, stamp)?,
        Change::Edit(edit) => {
            let now = current.map(Entry::string).transpose()?.unwrap_or_default();
            let (value, answer) = edit.apply(&now)?;
            Resolved {
                integer: answer,
                ..Resolved::of(Mutation::bytes(value, kept_expiry))
            }
        }
        Change::Expire(expiry) => {
            let entry = current.ok_or(ReplicaError::ConditionFailed { current: None })?;
            // The value stays as it is, a typed value's versions merged into one.
            let (value, kind) = match entry.value()? {
                Value::Bytes(bytes, _) => (bytes, ValueKind::BYTES),
                Value::Typed(typed) => (typed.encode(), typed.kind()),
            };
            Resolved::of(Mutation {
                value: Some(value),
                expires_at_ms: expiry_ms(expiry),
                kind,
            })
        }
    })
}

/// Applies a typed operation to the value `current` holds, keeping its expiry.
fn resolve_typed(
    op: Op,
    current: Option<&Entry>,
    expires_at_ms: Option<u64>,
    stamp: Stamp,
) -> Result<Resolved, ReplicaError> {
    let value = current.map(Entry::value).transpose()?;
    let applied = op.apply(value, stamp)?;
    let state = applied.state;
    let bytes = state.encode();
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(ReplicaError::ValueTooLarge {
            len: bytes.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(Resolved {
        mutation: Mutation {
            value: Some(bytes),
            expires_at_ms,
            kind: state.kind(),
        },
        integer: None,
        answer: Some(applied.answer),
    })
}

fn check_condition(condition: Condition, current: Option<&Entry>) -> Result<(), ReplicaError> {
    let holds = match condition {
        Condition::Always => true,
        Condition::IfAbsent => current.is_none(),
        Condition::IfPresent => current.is_some(),
        Condition::IfVersion(version) => current.is_some_and(|entry| entry.version() == version),
        Condition::IfValue(digest) => current.is_some_and(|entry| {
            entry
                .string()
                .is_ok_and(|value| Condition::value_digest(&value) == digest)
        }),
    };
    if holds {
        Ok(())
    } else {
        Err(ReplicaError::ConditionFailed {
            current: current.cloned().map(Box::new),
        })
    }
}

/// Adds a record change to the group's batch, keeping the expiry index in step: one index
/// entry per record, at the moment its earliest sibling dies (`old_due`: when the record
/// being replaced was due).
fn store(
    group: &mut Group,
    keyspace: &str,
    id: KeyspaceId,
    key: &[u8],
    old_due: Option<u64>,
    new: Option<Record>,
) {
    let new_due = new.as_ref().and_then(Record::next_dead_ms);
    let encoded = new.as_ref().map(|record| {
        let (bytes, point) = record.encode_for_reads();
        StoredRecord {
            bytes: crate::record_bytes::shared(bytes),
            point,
        }
    });
    store_encoded(group, keyspace, id, key, (old_due, new_due), encoded);
}

/// [`store`] of a record already encoded, which dies at `due.1` (the one it replaces at
/// `due.0`).
fn store_encoded(
    group: &mut Group,
    keyspace: &str,
    id: KeyspaceId,
    key: &[u8],
    (old_due, new_due): (Option<u64>, Option<u64>),
    encoded: Option<StoredRecord>,
) {
    if old_due != new_due {
        if let Some(due) = old_due {
            group.batch.delete(layout::expiry_key(due, keyspace, key));
        }
        if let Some(due) = new_due {
            group
                .batch
                .put(layout::expiry_key(due, keyspace, key), Vec::new());
        }
    }
    let data_key = layout::batch_key(id, key);
    // One buffer shared by the batch, the group and the cache, which hold their keys inline
    // (unless the key is long).
    let cache_key = copy_key(&data_key);
    match &encoded {
        Some(stored) => group.batch.put(data_key, stored.bytes.clone()),
        None => group.batch.delete(data_key),
    }
    if let Some(cached) = &mut group.cached {
        cached.push((copy_key(&cache_key), encoded.clone()));
    }
    group.records.insert(cache_key, encoded);
}
