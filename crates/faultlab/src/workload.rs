//! The workload: clients writing, deleting and reading keys through random nodes over REST
//! while faults happen, recording every operation with its outcome.
//!
//! Each key belongs to one worker, which never has two operations on it at once: a key's
//! history is a sequence, so the checker can tell what its final state may be. Values are
//! unique (`w{worker}-{n}`), so a value read back names the write that stored it.

use crate::history::{History, Kind, Op, Outcome};
use rand::seq::IndexedRandom;
use rand::Rng;
use ringkv_client::{Client, ClientError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the workload does.
#[derive(Clone, Debug)]
pub struct WorkloadSettings {
    /// Keys `fl-0 ..`.
    pub keys: usize,
    /// Client threads.
    pub workers: usize,
    /// Share of operations that delete, in percent.
    pub delete_percent: u32,
    /// Share of operations that read, in percent (the rest write).
    pub read_percent: u32,
    /// How long a client waits for an answer before it counts the outcome unknown.
    pub timeout: Duration,
    /// How often each client deletes one of its keys for good (never touching it again, up
    /// to half of them): tombstones that stay, for the reaper to remove and the checker to
    /// see stay deleted. Busy keys are rewritten too often for their tombstones to age.
    pub retire_every: Duration,
}

impl Default for WorkloadSettings {
    fn default() -> Self {
        Self {
            keys: 200,
            workers: 4,
            delete_percent: 20,
            read_percent: 10,
            timeout: Duration::from_secs(3),
            retire_every: Duration::from_secs(2),
        }
    }
}

/// The name of key `index`.
pub fn key_name(index: usize) -> String {
    format!("fl-{index}")
}

/// Least time between the end of one operation on a key and the start of the next: writes
/// are ordered by their timestamps, and two within the same millisecond through different
/// nodes could be ordered either way.
const SAME_KEY_GAP: Duration = Duration::from_millis(3);

/// A running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Op>>>,
    started: Instant,
}

impl Workload {
    /// Starts the workload against the nodes whose URLs `targets` lists (read before each
    /// request).
    pub fn start(targets: Arc<RwLock<Vec<String>>>, settings: &WorkloadSettings) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers = (0..settings.workers)
            .map(|worker| {
                let (stop, targets, settings) =
                    (Arc::clone(&stop), Arc::clone(&targets), settings.clone());
                std::thread::spawn(move || run_worker(worker, &settings, &targets, &stop, started))
            })
            .collect();
        Self {
            stop,
            workers,
            started,
        }
    }

    /// Stops the clients (each finishes the operation it is in) and returns the history.
    pub fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut ops: Vec<Op> = self
            .workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a worker does not panic"))
            .collect();
        ops.sort_by_key(|op| op.start);
        History {
            ops,
            duration: self.started.elapsed(),
        }
    }
}

fn run_worker(
    worker: usize,
    settings: &WorkloadSettings,
    targets: &RwLock<Vec<String>>,
    stop: &AtomicBool,
    started: Instant,
) -> Vec<Op> {
    let mut rng = rand::rng();
    let mut mine: Vec<usize> = (worker..settings.keys).step_by(settings.workers).collect();
    let retire_most = mine.len() / 2;
    let (mut retired, mut next_retire) = (0, Instant::now() + settings.retire_every);
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut last_end: HashMap<usize, Instant> = HashMap::new();
    let mut ops = Vec::new();
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) && !mine.is_empty() {
        let Some(url) = targets
            .read()
            .expect("no writer panics")
            .choose(&mut rng)
            .cloned()
        else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let client = clients
            .entry(url.clone())
            .or_insert_with(|| Client::with_timeout(&url, settings.timeout));
        let retire = retired < retire_most && Instant::now() >= next_retire;
        let key = if retire {
            (retired, next_retire) = (retired + 1, Instant::now() + settings.retire_every);
            mine.swap_remove(rng.random_range(0..mine.len()))
        } else {
            *mine.choose(&mut rng).expect("the worker keeps keys")
        };
        if let Some(wait) = last_end
            .get(&key)
            .and_then(|end| (*end + SAME_KEY_GAP).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        let roll = rng.random_range(0..100);
        let reads = !retire && roll < settings.read_percent;
        let deletes = retire || roll < settings.read_percent + settings.delete_percent;
        let start = started.elapsed();
        let (kind, outcome) = if reads {
            match client.get(&key_name(key)) {
                Ok(value) => (
                    Kind::Get(value.map(|v| String::from_utf8_lossy(&v.value).into_owned())),
                    Outcome::Ok,
                ),
                Err(error) => (Kind::Get(None), outcome_of(&error)),
            }
        } else if deletes {
            let outcome = client
                .delete(&key_name(key))
                .map_or_else(|e| outcome_of(&e), |_| Outcome::Ok);
            (Kind::Delete, outcome)
        } else {
            written += 1;
            let value = format!("w{worker}-{written}");
            let outcome = client
                .put(&key_name(key), value.as_bytes(), None)
                .map_or_else(|e| outcome_of(&e), |_| Outcome::Ok);
            (Kind::Put(value), outcome)
        };
        let end = started.elapsed();
        last_end.insert(key, started + end);
        ops.push(Op {
            key,
            kind,
            outcome,
            start,
            end,
            node: url,
        });
    }
    ops
}

/// An error answer means the operation failed; no answer (a timeout, a broken connection)
/// means it may or may not have been applied.
fn outcome_of(error: &ClientError) -> Outcome {
    match error {
        ClientError::Server { status, .. } => Outcome::Failed(*status),
        ClientError::Transport { .. } | ClientError::Protocol(_) => Outcome::Unknown,
    }
}
