//! Writes committed by the thread that submitted them, the way Redis's event loop commits its
//! writes: a thread that serves connections on a single-threaded tokio runtime of its own
//! queues its tasks' writes without waking anybody, and commits them all — stored as one
//! group, covered by one sync — when its runtime has run every task it could and is about to
//! wait for the network again (tokio's `on_thread_park`). The answers wake tasks of that same
//! thread, so a request crosses no thread on its way to the disk and back. (A large group is
//! synced by the writer thread's syncer instead, so that the thread can serve what arrived
//! meanwhile: see [`Writer::commit_queued`].)
//!
//! Through the writer thread, each group costs two hand-offs that this saves: the submitter
//! wakes the writer, and the writer wakes the submitter's thread with the answers. On two
//! cores shared with the client (`redis-benchmark -c 50`), those wake-ups were most of what
//! ringkv spent beyond Redis per SET (see `bench/compare-redis.sh` in the README).
//!
//! Committing takes the store's [`Writer`], so it is still one group at a time across the
//! writer thread and every committing thread; the sync comes after the writer is let go, so
//! one thread's sync does not hold up another's group (a sync covers everything stored before
//! it began, whichever thread stored it).
//!
//! A runtime that never runs out of work would never park, so a fallback task commits a
//! group that has waited [`FALLBACK`] without a park.

use crate::error::ReplicaError;
use crate::writer::{Job, Writer};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a queued write may wait for its thread to park before the fallback commits it.
pub const FALLBACK: Duration = Duration::from_millis(1);

thread_local! {
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
}

/// What a committing thread holds: which store it commits for and what its tasks queued.
struct Here {
    writer: Arc<Mutex<Writer>>,
    jobs: Vec<Job>,
    /// Jobs queued at most (the store's `write_queue_max`); past it writes are refused as
    /// busy, as when the writer thread's queue is full.
    jobs_max: usize,
    /// Groups committed so far, so that the fallback can tell whether the group it was armed
    /// for has been.
    committed: u64,
    /// Told when a group's first job is queued.
    armed: Arc<Notify>,
}

/// How a job offered to this thread's queue fared.
pub(crate) enum Queued {
    /// Queued: it is committed when this thread parks.
    Here,
    /// This thread does not commit for that store: the job goes to the writer thread.
    Elsewhere(Job),
}

/// Queues `job` if this thread commits for the store of `writer`. With `bounded`, a full
/// queue refuses it with [`ReplicaError::Busy`]; without, the caller is one that would
/// wait for room, and the room it waits for comes only when this thread parks, so it is
/// queued all the same.
pub(crate) fn queue(
    writer: &Arc<Mutex<Writer>>,
    job: Job,
    bounded: bool,
) -> Result<Queued, ReplicaError> {
    HERE.with_borrow_mut(|here| match here {
        Some(here) if Arc::ptr_eq(&here.writer, writer) => {
            if bounded && here.jobs.len() >= here.jobs_max {
                return Err(ReplicaError::Busy);
            }
            if here.jobs.is_empty() {
                here.armed.notify_one();
            }
            here.jobs.push(job);
            Ok(Queued::Here)
        }
        _ => Ok(Queued::Elsewhere(job)),
    })
}

/// Commits what this thread's tasks have queued, if anything: what the runtime of a thread
/// that commits its own writes calls before it parks (`on_thread_park`). Does nothing on any
/// other thread.
pub fn commit_parked() {
    let taken = HERE.with_borrow_mut(|here| {
        let here = here.as_mut()?;
        if here.jobs.is_empty() {
            return None;
        }
        here.committed += 1;
        Some((Arc::clone(&here.writer), std::mem::take(&mut here.jobs)))
    });
    // Committed outside the borrow: answering wakes tasks, which a later commit may queue.
    if let Some((writer, jobs)) = taken {
        Writer::commit_queued(&writer, jobs);
    }
}

fn committed() -> u64 {
    HERE.with_borrow(|here| here.as_ref().map_or(0, |here| here.committed))
}

/// While alive, the thread that made it commits its own writes to one store (see the module
/// doc). Dropping it commits what is still queued and hands later writes back to the writer
/// thread.
pub struct LoopCommits {
    fallback: tokio::task::JoinHandle<()>,
}

impl LoopCommits {
    /// Makes this thread commit the writes its tasks submit to the store of `writer` (one
    /// store per thread: what an earlier one queued is committed first). Must be called
    /// inside a current-thread runtime built with `on_thread_park(commit_parked)`.
    pub(crate) fn start(writer: Arc<Mutex<Writer>>, jobs_max: usize) -> Self {
        commit_parked();
        let armed = Arc::new(Notify::new());
        HERE.set(Some(Here {
            writer,
            jobs: Vec::new(),
            jobs_max: jobs_max.max(1),
            committed: 0,
            armed: Arc::clone(&armed),
        }));
        let fallback = tokio::spawn(async move {
            loop {
                armed.notified().await;
                let armed_at = committed();
                tokio::time::sleep(FALLBACK).await;
                if committed() == armed_at {
                    commit_parked();
                }
            }
        });
        Self { fallback }
    }
}

impl Drop for LoopCommits {
    fn drop(&mut self) {
        self.fallback.abort();
        commit_parked();
        HERE.set(None);
    }
}
