//! The flusher thread: writes sealed memtables into the tables, oldest first, then retires
//! the logs they came from (see [`crate::log_files::SpareLog::retire`]: each is written over
//! as a later log, or deleted).
//!
//! A memtable leaves the list of sealed ones only once the tables hold its entries durably
//! and visibly, so every read finds them in one place or the other. A crash between the
//! ingestion and the retiring of the logs replays them again at the next open, which only
//! writes the same entries again.

use super::{Sealed, Shared, Tables};
use crate::engine::StorageError;
use crate::wal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a flush waits while the tables are [backlogged](Tables::backlogged); after
/// it, the flush goes ahead regardless.
const COMPACTION_WAIT_MAX: Duration = Duration::from_secs(30);

/// How long the flusher waits before retrying a failed flush.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Flushes sealed memtables until the engine closes.
pub(super) fn run<T: Tables>(shared: &Shared<T>) {
    let _reports_a_panic = PanicReport(shared);
    loop {
        let Some(sealed) = next(shared) else { return };
        let result = ingest(shared, &sealed).and_then(|()| finish(shared, &sealed));
        if result.is_ok() {
            keep_for_reuse(shared, sealed);
        }
        let mut state = shared.flush.lock();
        match result {
            Ok(()) => state.error = None,
            Err(error) => {
                tracing::error!(%error, "memtable flush failed; retrying");
                state.error = Some(error.to_string());
                shared.flushed.notify_all();
                if !state.closing {
                    shared.flush_wanted.wait_for(&mut state, RETRY_AFTER);
                }
            }
        }
        shared.flushed.notify_all();
    }
}

/// Tells writers waiting for room that no flush will make it, if the flusher panics: they
/// fail with its error instead of waiting for ever.
struct PanicReport<'a, T: Tables>(&'a Shared<T>);

impl<T: Tables> Drop for PanicReport<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.flush.lock();
            state.error = Some("the flusher thread panicked; restart the node".into());
            self.0.flushed.notify_all();
        }
    }
}

/// The oldest sealed memtable, waiting for one; `None` once the engine is closing (what is
/// left is in the log, for the next open).
fn next<T: Tables>(shared: &Shared<T>) -> Option<Arc<Sealed>> {
    let mut state = shared.flush.lock();
    loop {
        if state.closing {
            return None;
        }
        if let Some(oldest) = shared.memtables.read().sealed.first() {
            return Some(Arc::clone(oldest));
        }
        shared.flush_wanted.wait(&mut state);
    }
}

/// Writes `sealed` into the tables.
fn ingest<T: Tables>(shared: &Shared<T>, sealed: &Sealed) -> Result<(), StorageError> {
    wait_while_backlogged(shared);
    shared.tables.ingest(sealed.memtable.iter())
}

/// Drops `sealed` from the list, now that the tables hold it, and retires its logs.
fn finish<T: Tables>(shared: &Shared<T>, sealed: &Arc<Sealed>) -> Result<(), StorageError> {
    {
        let mut memtables = shared.memtables.write();
        let oldest = memtables.sealed.first();
        debug_assert!(oldest.is_some_and(|oldest| Arc::ptr_eq(oldest, sealed)));
        memtables.sealed.remove(0);
    }
    for number in wal::list_logs(&shared.log_directory)? {
        if number <= sealed.last_log {
            shared.spare.retire(number)?;
        }
    }
    // Made durable before a later flush retires newer logs: after a power loss, an old log
    // that came back beside the tables' newer entries without the newer logs would be replayed
    // over them, and older values would win. (A retired log is renamed, not a log any more.)
    wal::sync_directory(&shared.log_directory)
}

/// Empties a flushed memtable (dropping its entries here, off the writer's path) and keeps it
/// for the next seal, unless one is kept already, a reader still holds it, or its table was
/// not reserved for the memtable's budget (the one replayed from the log at open).
fn keep_for_reuse<T: Tables>(shared: &Shared<T>, sealed: Arc<Sealed>) {
    if shared.spare_memtable.lock().is_some() {
        return;
    }
    let budget = shared.options.memtable_bytes;
    if let Ok(Sealed { mut memtable, .. }) = Arc::try_unwrap(sealed) {
        if !memtable.is_sized_for(budget) {
            return;
        }
        memtable.clear();
        *shared.spare_memtable.lock() = Some(memtable);
    }
}

/// Waits, within [`COMPACTION_WAIT_MAX`], while the tables are backlogged.
fn wait_while_backlogged<T: Tables>(shared: &Shared<T>) {
    let deadline = Instant::now() + COMPACTION_WAIT_MAX;
    while shared.tables.backlogged() && Instant::now() < deadline {
        if shared.flush.lock().closing {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
