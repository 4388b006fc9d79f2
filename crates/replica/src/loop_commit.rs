//! Writes committed by the threads that submitted them, the way Redis's event loop commits
//! its writes: a thread that serves connections on a single-threaded tokio runtime of its own
//! queues its tasks' writes without waking anybody, and commits them — stored as one group,
//! covered by one sync — when its runtime has run every task it could and is about to wait
//! for the network again (tokio's `on_thread_park`). The answers wake tasks of that same
//! thread, so a request crosses no thread on its way to the disk and back. (A large group is
//! synced by the writer thread's syncer instead, so that the thread can serve what arrived
//! meanwhile: see `Writer::commit_queued`.) A store's committing threads share one queue,
//! and whichever parks first commits every one's writes.
//!
//! Through the writer thread, each group costs two hand-offs that this saves: the submitter
//! wakes the writer, and the writer wakes the submitter's thread with the answers. On two
//! cores shared with the client (`redis-benchmark -t set -c 50 -P 1`, `perf stat`), a node
//! made 0.43 context switches per SET that way and 0.14-0.18 this way, as Redis does (0.13),
//! and spent 15.5 µs of CPU per SET instead of 18-21.
//!
//! Committing takes the store's `Writer`, so it is still one group at a time across the
//! writer thread and every committing thread.
//!
//! A runtime that never runs out of work would never park, so a fallback task commits a
//! group that has waited [`FALLBACK`] without a park.

use crate::answers::Mailbox;
use crate::error::ReplicaError;
use crate::writer::{Job, Writer};
use parking_lot::Mutex;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a queued write may wait for a park before the fallback commits it.
pub const FALLBACK: Duration = Duration::from_millis(1);

thread_local! {
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
}

/// The writes that a store's committing threads have queued: one queue for all of them, so
/// that whichever commits takes every thread's writes into its group (with one thread per
/// queue, two threads would each sync a group of half the size, one after the other: 12
/// writes per sync instead of 25 with 50 clients of one SET each).
pub(crate) struct LoopQueue {
    writer: Arc<Mutex<Writer>>,
    jobs: Mutex<Vec<Job>>,
    /// Jobs queued at most (the store's `write_queue_max`); past it writes are refused as
    /// busy, as when the writer thread's queue is full.
    jobs_max: usize,
    /// Commits so far, so that a fallback can tell whether the writes it was armed for have
    /// been committed.
    committed: AtomicU64,
}

/// What a committing thread holds: the queue of the store it commits for, and what wakes its
/// fallback.
struct Here {
    queue: Arc<LoopQueue>,
    /// Told when this thread queues the first job of an empty queue.
    armed: Arc<Notify>,
    /// Whether this thread has queued jobs since it last took the queue.
    queued: Cell<bool>,
    /// Whether the last park put its commit off to look at the network once more.
    looked_again: Cell<bool>,
    /// Woken to make the runtime look at the network again instead of waiting on it: a task
    /// that is ready to run keeps it from parking.
    nudge: Arc<Notify>,
    /// Where the syncer leaves the answers of the groups this thread hands it, for this
    /// thread to send ([`crate::answers`]).
    mailbox: Arc<Mailbox>,
}

/// How a job offered to this thread's queue fared.
pub(crate) enum Queued {
    /// Queued: it is committed when this thread (or another of the store's) parks.
    Here,
    /// This thread does not commit for that store: the job goes to the writer thread.
    Elsewhere(Job),
}

impl LoopQueue {
    /// An empty queue for the store whose writes `writer` applies.
    pub(crate) fn new(writer: Arc<Mutex<Writer>>, jobs_max: usize) -> Self {
        Self {
            writer,
            jobs: Mutex::new(Vec::new()),
            jobs_max: jobs_max.max(1),
            committed: AtomicU64::new(0),
        }
    }

    /// Queues `job` if this thread commits for this store. With `bounded`, a full queue
    /// refuses it with [`ReplicaError::Busy`]; without, the caller is one that would wait for
    /// room, and the room it waits for comes only when a committing thread parks, so it is
    /// queued all the same.
    pub(crate) fn offer(self: &Arc<Self>, job: Job, bounded: bool) -> Result<Queued, ReplicaError> {
        HERE.with_borrow(|here| match here {
            Some(here) if Arc::ptr_eq(&here.queue, self) => {
                let mut jobs = self.jobs.lock();
                if bounded && jobs.len() >= self.jobs_max {
                    return Err(ReplicaError::Busy);
                }
                if jobs.is_empty() {
                    here.armed.notify_one();
                }
                jobs.push(job);
                here.queued.set(true);
                Ok(Queued::Here)
            }
            _ => Ok(Queued::Elsewhere(job)),
        })
    }

    fn is_empty(&self) -> bool {
        self.jobs.lock().is_empty()
    }

    /// Commits what is queued, in one group, unless the writer is busy: whoever holds it
    /// then commits it after (see below), so a thread that finds it busy goes back to its
    /// connections instead of waiting, and its writes join the next group instead of making
    /// a smaller one of their own. (Waiting made each of two loops sync about half of what
    /// one loop syncs: 13 writes per sync instead of 25, with 50 clients of one SET each.)
    ///
    /// Once done, a thread checks the queue again: what was queued while it held the writer
    /// is either in the queue then, or its thread found the writer free. It goes on
    /// committing unless `done` says it has other work: a committing thread whose group held
    /// some of its own writes has their answers to send (and commits what is queued when it
    /// next parks), and the writer thread has its own queue.
    ///
    /// The syncer leaves the answers of a group it syncs in `mailbox`, if given.
    pub(crate) fn commit(&self, mut done: impl FnMut() -> bool, mailbox: Option<&Arc<Mailbox>>) {
        loop {
            if self.is_empty() {
                return;
            }
            let Some(writer) = self.writer.try_lock() else {
                return;
            };
            let Some(jobs) = self.take() else {
                return;
            };
            let done = done();
            self.committed.fetch_add(1, Ordering::Relaxed);
            Writer::commit_queued(writer, jobs, mailbox);
            if done {
                return;
            }
        }
    }

    /// Commits what is queued, waiting for the writer if it is busy.
    fn commit_now(&self) {
        let writer = self.writer.lock();
        if let Some(jobs) = self.take() {
            self.committed.fetch_add(1, Ordering::Relaxed);
            Writer::commit_queued(writer, jobs, None);
        }
    }

    /// Takes every queued job, if any, leaving room for as many: the next group is likely
    /// about as large, and growing a vector to it push by push cost more instructions per
    /// SET than its own queueing (`redis-benchmark -P 1`, callgrind).
    fn take(&self) -> Option<Vec<Job>> {
        let mut jobs = self.jobs.lock();
        if jobs.is_empty() {
            return None;
        }
        let room = jobs.len();
        Some(std::mem::replace(&mut *jobs, Vec::with_capacity(room)))
    }
}

/// Commits what this store's committing threads have queued, if anything: what the runtime
/// of such a thread calls before it parks (`on_thread_park`). Does nothing on any other
/// thread.
///
/// The first park that finds writes queued puts the commit off once: it wakes a task, so the
/// runtime polls the network (without waiting) and runs what that readied before it parks
/// again. The runtime last polled before it ran the tasks that wrote the previous group's
/// replies, so the requests that clients sent in answer to those replies join this group
/// instead of the next one, as they do in Redis, which polls after writing its replies. With
/// 50 clients of one SET each (`redis-benchmark -P 1`, 4 alternating runs) this raised the
/// writes per sync from 25 to 32, and SETs per second by 2-18 %, on 8-10 % less CPU per SET.
pub fn commit_parked() {
    HERE.with_borrow(|here| {
        let Some(here) = here else { return };
        if !here.queue.is_empty() && !here.looked_again.replace(true) {
            here.nudge.notify_one();
            return;
        }
        here.looked_again.set(false);
        commit_now_here(here);
    });
}

/// Commits what is queued unless the writer is busy, without putting it off.
fn commit_now_here(here: &Here) {
    here.queue
        .commit(|| here.queued.replace(false), Some(&here.mailbox));
}

/// Commits everything queued for the store this thread commits for, if any, waiting for the
/// writer if need be: for a thread that stops committing, which must leave nothing behind.
fn commit_all_here() {
    HERE.with_borrow(|here| {
        if let Some(here) = here {
            here.queue.commit_now();
        }
    });
}

/// While alive, the thread that made it commits its own writes to one store (see the module
/// doc). Dropping it commits what is still queued and hands later writes back to the writer
/// thread.
pub struct LoopCommits {
    fallback: tokio::task::JoinHandle<()>,
    nudged: tokio::task::JoinHandle<()>,
    answering: tokio::task::JoinHandle<()>,
    mailbox: Arc<Mailbox>,
}

impl LoopCommits {
    /// Makes this thread commit the writes its tasks submit to the store of `queue` (one
    /// store per thread: what an earlier one queued is committed first). Must be called
    /// inside a current-thread runtime built with `on_thread_park(commit_parked)`.
    pub(crate) fn start(queue: Arc<LoopQueue>) -> Self {
        commit_all_here();
        let armed = Arc::new(Notify::new());
        let nudge = Arc::new(Notify::new());
        let mailbox = Arc::new(Mailbox::default());
        HERE.set(Some(Here {
            queue: Arc::clone(&queue),
            armed: Arc::clone(&armed),
            queued: Cell::new(false),
            looked_again: Cell::new(false),
            nudge: Arc::clone(&nudge),
            mailbox: Arc::clone(&mailbox),
        }));
        let answering = tokio::spawn({
            let mailbox = Arc::clone(&mailbox);
            async move { mailbox.answer().await }
        });
        let nudged = tokio::spawn(async move {
            loop {
                nudge.notified().await;
            }
        });
        let fallback = tokio::spawn(async move {
            loop {
                armed.notified().await;
                let armed_at = queue.committed.load(Ordering::Relaxed);
                tokio::time::sleep(FALLBACK).await;
                if queue.committed.load(Ordering::Relaxed) == armed_at {
                    HERE.with_borrow(|here| {
                        if let Some(here) = here {
                            commit_now_here(here);
                        }
                    });
                }
            }
        });
        Self {
            fallback,
            nudged,
            answering,
            mailbox,
        }
    }
}

impl Drop for LoopCommits {
    fn drop(&mut self) {
        self.fallback.abort();
        self.nudged.abort();
        commit_all_here();
        HERE.set(None);
        // Groups still being synced are answered by the syncer from now on.
        self.answering.abort();
        self.mailbox.close();
    }
}
