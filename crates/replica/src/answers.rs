//! The answers to committed writes, sent once their group is durable: by the thread that
//! synced the group, or — for a group that a thread serving connections committed and handed
//! to the syncer — by that thread, from its [`Mailbox`].
//!
//! Why the detour: a task is woken from another thread by pushing it onto its runtime's queue
//! and writing to that runtime's eventfd, a system call per task. The syncer answering a
//! group of pipelined connections itself made one such call per connection: 25,587 eventfd
//! writes for 400,000 SETs under `redis-benchmark -t set -P 16` (about 29 per sync), on a
//! machine whose two cores the client and the node's RESP thread already keep busy. Through
//! the mailbox it is one wake-up per group, and the thread wakes its own tasks without a
//! system call.

use crate::error::ReplicaError;
use crate::store::WriteOutcome;
use crate::writer::{ManyReply, Swept};
use parking_lot::Mutex;
use ringkv_storage::StorageError;
use tokio::sync::{oneshot, Notify};

/// The answer a job gets once its group is committed.
pub(crate) enum Answer {
    Write(
        oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
        Result<WriteOutcome, ReplicaError>,
    ),
    WriteMany(ManyReply, Vec<Result<WriteOutcome, ReplicaError>>),
    Merge(
        oneshot::Sender<Result<bool, ReplicaError>>,
        Result<bool, ReplicaError>,
    ),
    Sweep(
        oneshot::Sender<Result<Swept, ReplicaError>>,
        Result<Swept, ReplicaError>,
    ),
    Reap(
        oneshot::Sender<Result<Vec<bool>, ReplicaError>>,
        Result<Vec<bool>, ReplicaError>,
    ),
}

/// Sends each caller its outcome, or the error that kept its group from being stored.
pub(crate) fn answer_all(answers: Vec<Answer>, committed: &Result<(), StorageError>) {
    for answer in answers {
        // A caller that gave up waiting is not an error of the write.
        match answer {
            Answer::Write(reply, outcome) => {
                let _ = reply.send(committed.as_ref().map_err(fresh_error).and(outcome));
            }
            Answer::WriteMany(reply, outcomes) => {
                let _ = reply.send(committed.as_ref().map_err(fresh_error).map(|()| outcomes));
            }
            Answer::Merge(reply, outcome) => {
                let _ = reply.send(committed.as_ref().map_err(fresh_error).and(outcome));
            }
            Answer::Sweep(reply, outcome) => {
                let _ = reply.send(committed.as_ref().map_err(fresh_error).and(outcome));
            }
            Answer::Reap(reply, outcome) => {
                let _ = reply.send(committed.as_ref().map_err(fresh_error).and(outcome));
            }
        }
    }
}

/// A commit error for one caller (errors are not `Clone`; each caller gets its own).
fn fresh_error(error: &StorageError) -> ReplicaError {
    match error {
        StorageError::Corruption(detail) => ReplicaError::Corruption {
            detail: detail.clone(),
        },
        other => ReplicaError::Storage(copied_error(other)),
    }
}

/// A copy of a sync's outcome, for one more group that waited for it.
pub(crate) fn copied(synced: &Result<(), StorageError>) -> Result<(), StorageError> {
    synced.as_ref().map(|_| ()).map_err(copied_error)
}

fn copied_error(error: &StorageError) -> StorageError {
    match error {
        StorageError::Corruption(detail) => StorageError::Corruption(detail.clone()),
        other => StorageError::Io(std::io::Error::other(other.to_string())),
    }
}

/// Where the syncer leaves the answers of the groups that a thread serving connections
/// handed it, for that thread to send (see the module documentation).
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailboxState>,
    /// Told when the first group arrives in an empty mailbox.
    delivered: Notify,
}

#[derive(Default)]
struct MailboxState {
    /// Answers, each group's with the outcome of the sync it waited for.
    groups: Vec<(Vec<Answer>, Result<(), StorageError>)>,
    /// Set once the thread no longer answers: the syncer then answers itself.
    closed: bool,
}

impl Mailbox {
    /// Leaves a synced group's answers for the mailbox's thread, or sends them at once if it
    /// is closed.
    pub(crate) fn deliver(&self, answers: Vec<Answer>, synced: Result<(), StorageError>) {
        let mut state = self.state.lock();
        if state.closed {
            drop(state);
            answer_all(answers, &synced);
            return;
        }
        let first = state.groups.is_empty();
        state.groups.push((answers, synced));
        drop(state);
        if first {
            self.delivered.notify_one();
        }
    }

    /// Sends what is delivered, as it is, until dropped: the task of the mailbox's thread.
    pub(crate) async fn answer(&self) {
        loop {
            self.delivered.notified().await;
            self.answer_delivered();
        }
    }

    /// Sends what has been delivered and answers later deliveries at once: for the thread
    /// that stops answering, which must leave nobody waiting.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.answer_delivered();
    }

    fn answer_delivered(&self) {
        let groups = std::mem::take(&mut self.state.lock().groups);
        for (answers, synced) in groups {
            answer_all(answers, &synced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_write() -> (
        Answer,
        oneshot::Receiver<Result<WriteOutcome, ReplicaError>>,
    ) {
        let (reply, answered) = oneshot::channel();
        let outcome = WriteOutcome {
            context: Default::default(),
            previous: None,
            integer: None,
            answer: None,
            record: None,
            previous_unknown: false,
        };
        (Answer::Write(reply, Ok(outcome)), answered)
    }

    #[tokio::test]
    async fn delivered_answers_are_sent_by_the_mailboxs_task_and_after_closing_at_once() {
        let mailbox = std::sync::Arc::new(Mailbox::default());
        let (first, mut first_answered) = waiting_write();
        mailbox.deliver(vec![first], Ok(()));
        assert!(first_answered.try_recv().is_err(), "left in the mailbox");
        let answering = tokio::spawn({
            let mailbox = std::sync::Arc::clone(&mailbox);
            async move { mailbox.answer().await }
        });
        assert!(first_answered.await.unwrap().is_ok(), "sent by the task");
        let (failed, failed_answered) = waiting_write();
        mailbox.deliver(
            vec![failed],
            Err(StorageError::Corruption("bad block".into())),
        );
        let error = failed_answered.await.unwrap().unwrap_err();
        assert!(matches!(error, ReplicaError::Corruption { .. }), "{error}");
        answering.abort();
        // Delivered after the task stopped: closing sends it.
        let (left, mut left_answered) = waiting_write();
        mailbox.deliver(vec![left], Ok(()));
        assert!(left_answered.try_recv().is_err());
        mailbox.close();
        assert!(left_answered.try_recv().unwrap().is_ok(), "sent on closing");
        // Delivered after closing: sent at once.
        let (late, mut late_answered) = waiting_write();
        mailbox.deliver(vec![late], Ok(()));
        assert!(late_answered.try_recv().unwrap().is_ok(), "sent at once");
    }
}
