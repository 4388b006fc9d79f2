//! Writes committed by the event-loop thread that submitted them (`LocalStore::
//! commit_on_this_thread`): when the thread parks (the second time) and not before, never by
//! the writer thread, by a fallback when the thread never parks, one group at a time with the
//! writer thread, and nothing left behind when the thread stops committing.

use prometheus_client::registry::Registry;
use ringkv_core::clock::SystemClock;
use ringkv_replica::{
    commit_parked, Change, LocalStore, ReplicaError, StoreOptions, WriteOutcome, WriteRequest,
};
use ringkv_storage::{open, EngineKind};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const KS: &str = "default";

/// Bounds every wait, so that a write nobody commits fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

fn open_store(dir: &tempfile::TempDir, options: StoreOptions) -> (Arc<LocalStore>, Registry) {
    let engine = open(EngineKind::Lsm, dir.path()).unwrap();
    let mut registry = Registry::default();
    let store = LocalStore::open(engine, options, Arc::new(SystemClock), &mut registry).unwrap();
    (Arc::new(store), registry)
}

/// A current-thread runtime that commits its writes before it parks, as the server's
/// Redis-protocol event loops are built.
fn event_loop() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(commit_parked)
        .build()
        .unwrap()
}

/// Polls `future` once, without waiting.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn syncs(registry: &Registry) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|line| line.starts_with("ringkv_store_syncs_total"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .expect("the syncs counter is registered")
}

fn integer(outcome: Result<WriteOutcome, ReplicaError>) -> i64 {
    outcome
        .unwrap()
        .integer
        .expect("an increment reports its value")
}

#[test]
fn a_queued_write_waits_for_its_thread_and_is_committed_when_that_thread_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = open_store(&dir, StoreOptions::default());
    event_loop().block_on(async {
        let _commits = store.commit_on_this_thread();
        let before = syncs(&registry);
        let pending = store.submit(WriteRequest::put(KS, b"k", b"v")).unwrap();
        let mut answer = pin!(pending.wait());
        // The thread has not parked (it sleeps without yielding): had the write gone to the
        // writer thread instead, it would be committed long before this.
        std::thread::sleep(Duration::from_millis(200));
        assert!(poll_once(answer.as_mut()).is_pending());
        assert_eq!(store.get_value(KS, b"k").unwrap(), None);
        // The first park puts the commit off, to look at the network once more; the next
        // commits.
        commit_parked();
        assert!(poll_once(answer.as_mut()).is_pending());
        commit_parked();
        assert!(matches!(poll_once(answer.as_mut()), Poll::Ready(Ok(_))));
        assert_eq!(
            store.get_value(KS, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(
            syncs(&registry) - before,
            1.0,
            "acknowledged after one sync"
        );
    });
}

#[test]
fn writes_of_one_turn_of_the_loop_share_one_group_and_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = open_store(&dir, StoreOptions::default());
    event_loop().block_on(async {
        let _commits = store.commit_on_this_thread();
        let before = syncs(&registry);
        let writers: Vec<_> = (0..40)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let key = format!("key-{i}");
                    store
                        .write(WriteRequest::put(KS, key.as_bytes(), b"v"))
                        .await
                })
            })
            .collect();
        for writer in writers {
            tokio::time::timeout(PATIENCE, writer)
                .await
                .expect("committed when the loop parked")
                .unwrap()
                .unwrap();
        }
        // Every task queued its write before the loop first ran out of work and parked.
        assert_eq!(syncs(&registry) - before, 1.0);
    });
    for i in 0..40 {
        let key = format!("key-{i}");
        assert!(store.get_value(KS, key.as_bytes()).unwrap().is_some());
    }
}

#[test]
fn a_loop_that_never_parks_still_gets_its_writes_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _registry) = open_store(&dir, StoreOptions::default());
    event_loop().block_on(async {
        let _commits = store.commit_on_this_thread();
        // Always ready to run, so the runtime never parks and its park hook never runs.
        let spinner = tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        let written =
            tokio::time::timeout(PATIENCE, store.write(WriteRequest::put(KS, b"busy", b"v"))).await;
        spinner.abort();
        written.expect("the fallback commits it").unwrap();
    });
}

#[test]
fn a_committing_thread_and_the_writer_thread_apply_one_group_at_a_time() {
    const EACH: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let (store, _registry) = open_store(&dir, StoreOptions::default());
    let increment = || WriteRequest::new(KS, b"counter", Change::Increment(1));
    // Increments of one key from both sides at once: one lost update would show as a total
    // short of 2 * EACH.
    let looping = std::thread::spawn({
        let store = Arc::clone(&store);
        move || {
            event_loop().block_on(async {
                let _commits = store.commit_on_this_thread();
                for _ in 0..EACH {
                    let done = tokio::time::timeout(PATIENCE, store.write(increment())).await;
                    integer(done.expect("committed"));
                }
            })
        }
    });
    let other = tokio::runtime::Runtime::new().unwrap();
    other.block_on(async {
        for _ in 0..EACH {
            let done = tokio::time::timeout(PATIENCE, store.write(increment())).await;
            integer(done.expect("committed"));
        }
    });
    looping.join().unwrap();
    let last = other.block_on(store.write(WriteRequest::new(KS, b"counter", Change::Increment(0))));
    assert_eq!(integer(last), 2 * EACH);
}

#[test]
fn a_full_queue_refuses_what_need_not_wait_and_stopping_commits_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        write_queue_max: 3,
        ..StoreOptions::default()
    };
    let (store, _registry) = open_store(&dir, options);
    event_loop().block_on(async {
        let commits = store.commit_on_this_thread();
        let pending: Vec<_> = (0..3)
            .map(|i| {
                let key = format!("queued-{i}");
                store
                    .submit(WriteRequest::put(KS, key.as_bytes(), b"v"))
                    .unwrap()
            })
            .collect();
        let refused = store.submit(WriteRequest::put(KS, b"one-too-many", b"v"));
        assert!(
            matches!(refused, Err(ReplicaError::Busy)),
            "{:?}",
            refused.err()
        );
        // Stopping commits what was queued, without a park in between.
        drop(commits);
        for answer in pending {
            let mut answer = pin!(answer.wait());
            assert!(matches!(poll_once(answer.as_mut()), Poll::Ready(Ok(_))));
        }
        // Later writes of this thread go to the writer thread.
        tokio::time::timeout(PATIENCE, store.write(WriteRequest::put(KS, b"after", b"v")))
            .await
            .expect("the writer thread commits it")
            .unwrap();
    });
    for key in ["queued-0", "queued-1", "queued-2", "after"] {
        assert!(
            store.get_value(KS, key.as_bytes()).unwrap().is_some(),
            "{key}"
        );
    }
    assert_eq!(store.get_value(KS, b"one-too-many").unwrap(), None);
}
