//! Goal: with `--sync always`, every write the server acknowledged before it was killed with
//! SIGKILL is there, intact, after a restart — for every engine.
//!
//! Method: start the real binary; writer threads put unique keys through the REST API and
//! record each acknowledged one; at a random moment the process gets `kill -9`; it is
//! restarted on the same data directory and every acknowledged key is read back and compared
//! byte for byte. Iterations per engine: `RINGKV_CRASH_ITERATIONS` (default 2 here; the soak
//! script `bench/crash-soak.sh` runs many more).

mod support;

use rand::{Rng, SeedableRng};
use ringkv_client::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::ServerProcess;

const WRITERS: usize = 4;
/// Writes per writer per iteration, at most: bounds the loop if the kill comes late.
const WRITES_PER_WRITER_MAX: usize = 50_000;

fn iterations() -> usize {
    std::env::var("RINGKV_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The value written for a key: derived from the key so a read can be checked exactly, and
/// long enough (and varied in length) that a torn write would show.
fn value_for(key: &str) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let len = 50 + (seed % 2000) as usize;
    (0..len)
        .map(|i| (seed.wrapping_add(i as u64) % 251) as u8)
        .collect()
}

fn crash_and_recover(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--engine", engine, "--sync", "always"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for iteration in 0..iterations() {
        let server = ServerProcess::start(dir.path(), &flags);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (client, stop, acked) = (
                    Client::with_timeout(&server.url, Duration::from_secs(5)),
                    stop.clone(),
                    acknowledged.clone(),
                );
                std::thread::spawn(move || {
                    for n in 0..WRITES_PER_WRITER_MAX {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let key = format!("i{iteration}-w{writer}-{n}");
                        match client.put(&key, &value_for(&key), None) {
                            Ok(_) => acked.lock().unwrap().push(key),
                            Err(_) => break, // the server is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        stop.store(true, Ordering::Release);
        server.kill_9();
        for writer in writers {
            writer.join().unwrap();
        }

        let server = ServerProcess::start(dir.path(), &flags);
        let client = Client::new(&server.url);
        let acked = acknowledged.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "{engine}: no write was acknowledged before the kill"
        );
        for key in &acked {
            let found = client
                .get(key)
                .unwrap_or_else(|e| panic!("{engine}: reading {key}: {e}"));
            let found = found.unwrap_or_else(|| {
                panic!("{engine}: acknowledged write {key} lost (iteration {iteration})")
            });
            assert_eq!(
                found.value,
                value_for(key),
                "{engine}: {key} came back damaged"
            );
        }
        eprintln!(
            "{engine}: iteration {iteration}: {} acknowledged writes all present after kill -9",
            acked.len()
        );
        server.kill_9();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_with_lsm() {
    crash_and_recover("lsm");
}

#[test]
fn acknowledged_writes_survive_kill_9_with_btree() {
    crash_and_recover("btree");
}

#[test]
fn acknowledged_writes_survive_kill_9_with_memory() {
    crash_and_recover("memory");
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::start(dir.path(), &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["server", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another ringkv process"),
        "{stderr}"
    );
}
