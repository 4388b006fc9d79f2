//! Goal: with `--sync always`, every write the server acknowledged before it was killed with
//! SIGKILL is there, intact, after a restart — for every engine.
//!
//! Method: start the real binary; writer threads put unique keys through the REST API and
//! record each acknowledged one; at a random moment the process gets `kill -9`; it is
//! restarted on the same data directory and every acknowledged key is read back and compared
//! byte for byte. Iterations per engine: `RINGKV_CRASH_ITERATIONS` (default 2 here; the soak
//! script `bench/crash-soak.sh` runs many more). A second test does the same with pipelined
//! RESP SETs that overwrite cached keys, the path on which SETs are encoded ahead of the
//! writer.

mod support;

use rand::{Rng, SeedableRng};
use ringkv_client::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{resp_command, resp_pipeline, ServerProcess};

const WRITERS: usize = 4;
/// Writes per writer per iteration, at most: bounds the loop if the kill comes late.
const WRITES_PER_WRITER_MAX: usize = 50_000;

fn iterations() -> usize {
    env_or("RINGKV_CRASH_ITERATIONS", 2)
}

/// The number in environment variable `name`, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// Keys the RESP crash test overwrites.
const RESP_KEYS: usize = 500;

/// SETs per pipeline in the RESP crash test, as `redis-benchmark -P 16` sends them.
const RESP_PIPELINE: usize = 16;

/// Bytes added to every value of the RESP crash test (`RINGKV_CRASH_RESP_PAD_BYTES`, default
/// 0): with large values a soak fills the log fast enough to cross memtable seals, flushes
/// and log files written over as later logs between two kills.
fn resp_pad() -> u64 {
    env_or("RINGKV_CRASH_RESP_PAD_BYTES", 0) as u64
}

/// Longest wait, in ms, before the kill in the RESP crash test (`RINGKV_CRASH_RESP_KILL_MS`,
/// default 1200; the wait is random, from a sixth of it).
fn resp_kill_ms() -> u64 {
    env_or("RINGKV_CRASH_RESP_KILL_MS", 1200) as u64
}

/// The value of `key`'s write number `seq`: it starts with the number, so a read says which
/// write it is, and its length varies so that a torn or misplaced value would show.
fn resp_value(key: usize, seq: u64) -> Vec<u8> {
    let mut value = format!("{seq}-").into_bytes();
    let len = (key as u64 * 7 + seq) % 300 + resp_pad();
    value.extend((0..len).map(|i| b'a' + ((key as u64 + seq + i) % 26) as u8));
    value
}

/// Goal: pipelined RESP SETs that overwrite cached keys — the path on which a connection
/// thread encodes each new record ahead of the writer — lose no acknowledged write to
/// `kill -9`. After the restart every key holds the last value acknowledged for it, or one
/// sent after it that was in flight when the process died; never an older one.
#[test]
fn pipelined_resp_overwrites_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--sync", "always"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let key = |k: usize| format!("k{k}").into_bytes();
    let connect = |server: &ServerProcess| {
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.resp_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    };
    // The highest acknowledged write of each key, and the next write's number.
    let mut acked = vec![0u64; RESP_KEYS];
    let mut next = 1u64;
    for iteration in 0..iterations() {
        let server = ServerProcess::start(dir.path(), &flags);
        let (mut stream, mut reader) = connect(&server);
        // Every key read once, so the record cache holds it and SETs are encoded ahead.
        let sets: Vec<_> = (0..RESP_KEYS)
            .map(|k| resp_command(&[b"SET", &key(k), &resp_value(k, acked[k])]))
            .collect();
        resp_pipeline(&mut stream, &mut reader, &sets).unwrap();
        let gets: Vec<_> = (0..RESP_KEYS)
            .map(|k| resp_command(&[b"GET", &key(k)]))
            .collect();
        resp_pipeline(&mut stream, &mut reader, &gets).unwrap();

        let kill_ms = resp_kill_ms().max(2);
        let delay = Duration::from_millis(rng.random_range(kill_ms / 6..kill_ms));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            server.kill_9();
        });
        let mut pipelines = 0;
        // Bounded: a pipeline takes far less than the time the kill may wait.
        while pipelines < 1_000_000 {
            let batch: Vec<(usize, u64)> = (0..RESP_PIPELINE)
                .map(|i| (rng.random_range(0..RESP_KEYS), next + i as u64))
                .collect();
            next += RESP_PIPELINE as u64;
            let commands: Vec<_> = batch
                .iter()
                .map(|&(k, seq)| resp_command(&[b"SET", &key(k), &resp_value(k, seq)]))
                .collect();
            let Ok(replies) = resp_pipeline(&mut stream, &mut reader, &commands) else {
                break; // the server is gone
            };
            for (&(k, seq), reply) in batch.iter().zip(replies) {
                assert_eq!(reply.as_deref(), Some(&b"+OK"[..]));
                acked[k] = seq;
            }
            pipelines += 1;
        }
        killer.join().unwrap();
        assert!(
            pipelines > 0,
            "no pipeline was acknowledged before the kill"
        );

        let server = ServerProcess::start(dir.path(), &flags);
        let (mut stream, mut reader) = connect(&server);
        let replies = resp_pipeline(&mut stream, &mut reader, &gets).unwrap();
        for (k, reply) in replies.into_iter().enumerate() {
            let value = reply.unwrap_or_else(|| panic!("k{k} lost (iteration {iteration})"));
            let text = String::from_utf8_lossy(&value);
            let seq: u64 = text
                .split('-')
                .next()
                .and_then(|seq| seq.parse().ok())
                .unwrap_or_else(|| panic!("k{k} holds {text:?}, which no write sent"));
            assert!(
                seq >= acked[k],
                "k{k} went back from write {} to {seq} (iteration {iteration})",
                acked[k]
            );
            assert_eq!(value, resp_value(k, seq), "k{k} came back damaged");
            acked[k] = seq;
        }
        eprintln!(
            "resp: iteration {iteration}: {pipelines} pipelines of {RESP_PIPELINE} SETs, \
             every key at or after its last acknowledged write after kill -9"
        );
        server.kill_9();
    }
}
