//! `ringkv bench`: a YCSB-style load generator for ringkv's REST API or any Redis-protocol
//! server. A load phase inserts the records, a run phase executes the workload; each reports
//! throughput and latency percentiles per operation from HDR histograms.
//!
//! - [`workload`]: the workloads and key distributions (pure logic).
//! - [`target`]: connections and wire formats.
//! - [`report`]: histograms and the text / JSON report.

pub mod report;
pub mod target;
pub mod workload;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use report::{PhaseReport, Recorder};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{Request, Response, Target};
use workload::{key_name, KeyChooser, Op, Workload};

/// Options of `ringkv bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure: http://HOST:PORT (ringkv REST) or redis://HOST:PORT (any RESP server).
    #[arg(long, default_value = "http://127.0.0.1:7080")]
    target: String,
    /// Workload: YCSB a, b, c, d, e, f, or plain set / get.
    #[arg(long, default_value = "a")]
    workload: String,
    /// Key distribution (default: the workload's own): uniform, zipfian or latest.
    #[arg(long)]
    distribution: Option<workload::Distribution>,
    /// Records inserted by the load phase (the keyspace the run phase works on).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Operations in the run phase.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    operations: u64,
    /// Run for this many seconds instead of a number of operations.
    #[arg(long)]
    duration: Option<u64>,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection (pipelining).
    #[arg(long, short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Bytes per value.
    #[arg(long, short = 'd', default_value_t = 100)]
    value_size: usize,
    /// Consistency of every request: one, quorum or all (REST: `?consistency=`; Redis
    /// protocol: `RINGKV.CONSISTENCY` on each connection, so ringkv targets only).
    #[arg(long)]
    consistency: Option<String>,
    /// Which phases to run: load, run, or both.
    #[arg(long, default_value = "both")]
    phase: String,
    /// Keys per scan in workload e (the most; each scan picks 1 to this many).
    #[arg(long, default_value_t = 100)]
    scan_length: usize,
    /// Random seed, for repeatable key choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object per phase instead of tables.
    #[arg(long)]
    json: bool,
}

/// What every worker of a phase shares.
struct Phase {
    workload: Workload,
    chooser: KeyChooser,
    /// Operations not yet claimed (count mode).
    remaining: AtomicI64,
    deadline: Option<Instant>,
    /// Records inserted so far; inserts claim the next number.
    inserted: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    value: Arc<[u8]>,
    args: BenchArgs,
}

/// Runs `ringkv bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.target, args.consistency.clone())?;
    let workload = Workload::named(&args.workload).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.connections > 0 && args.pipeline > 0,
        "connections and pipeline must be at least 1"
    );
    anyhow::ensure!(
        ["load", "run", "both"].contains(&args.phase.as_str()),
        "phase must be load, run or both"
    );
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if args.phase != "run" {
            let load = Workload {
                name: "load",
                mix: vec![(Op::Insert, 1.0)],
                distribution: workload.distribution,
            };
            let report = run_phase(&target, load, &args, args.records, 0).await?;
            report.print(&args.target, "load", args.json);
        }
        if args.phase != "load" {
            let mut workload = workload.clone();
            if let Some(distribution) = args.distribution {
                workload.distribution = distribution;
            }
            let report = run_phase(&target, workload, &args, args.operations, args.records).await?;
            report.print(&args.target, "run", args.json);
        }
        anyhow::Ok(())
    })
}

async fn run_phase(
    target: &Target,
    workload: Workload,
    args: &BenchArgs,
    operations: u64,
    already_inserted: u64,
) -> anyhow::Result<PhaseReport> {
    let is_load = workload.name == "load";
    let duration = if is_load {
        None
    } else {
        args.duration.map(Duration::from_secs)
    };
    let total = if duration.is_some() {
        i64::MAX
    } else {
        operations as i64
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let value: Vec<u8> = (0..args.value_size)
        .map(|_| rng.random_range(b'a'..=b'z'))
        .collect();
    let phase = Arc::new(Phase {
        chooser: KeyChooser::new(workload.distribution, args.records.max(1)),
        workload,
        remaining: AtomicI64::new(total),
        deadline: duration.map(|d| Instant::now() + d),
        inserted: AtomicU64::new(already_inserted),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        value: value.into(),
        args: args.clone(),
    });
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(target.connect().await?);
    }
    let started = Instant::now();
    let progress = spawn_progress(Arc::clone(&phase), duration.is_none().then_some(operations));
    let workers: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, connection)| {
            let phase = Arc::clone(&phase);
            tokio::spawn(worker(
                connection,
                phase,
                args.seed.wrapping_add(index as u64 * 7919),
            ))
        })
        .collect();
    let mut recorder = Recorder::new();
    let mut failure = None;
    for worker in workers {
        match worker.await? {
            Ok(recorded) => recorder.merge(&recorded),
            Err(error) => failure = Some(error),
        }
    }
    let elapsed = started.elapsed();
    phase.stop.store(true, Ordering::Release);
    let _ = progress.await;
    if let Some(error) = failure {
        return Err(error.context("a connection failed during the benchmark"));
    }
    Ok(recorder.report(
        phase.workload.name,
        elapsed,
        args.connections,
        args.pipeline,
    ))
}

fn spawn_progress(phase: Arc<Phase>, operations: Option<u64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = match operations {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new(phase.args.duration.unwrap_or(0)),
        };
        let template = "{msg:>8} [{bar:30}] {pos}/{len} {elapsed_precise} {prefix}";
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(phase.workload.name.to_owned());
        let started = Instant::now();
        let (mut last_done, mut last_at) = (0, Instant::now());
        while !phase.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let done = phase.done.load(Ordering::Relaxed);
            let rate = (done - last_done) as f64 / last_at.elapsed().as_secs_f64();
            (last_done, last_at) = (done, Instant::now());
            bar.set_prefix(format!("{rate:.0} ops/s"));
            bar.set_position(if operations.is_some() {
                done
            } else {
                started.elapsed().as_secs()
            });
        }
        bar.finish_and_clear();
    })
}

/// Claims up to `pipeline` operations; zero when the phase is over.
fn claim(phase: &Phase) -> usize {
    if phase
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        return 0;
    }
    let want = phase.args.pipeline as i64;
    let before = phase.remaining.fetch_sub(want, Ordering::AcqRel);
    before.clamp(0, want) as usize
}

async fn worker(
    mut connection: target::Connection,
    phase: Arc<Phase>,
    seed: u64,
) -> anyhow::Result<Recorder> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut recorder = Recorder::new();
    let mut ops = Vec::with_capacity(phase.args.pipeline);
    let mut requests = Vec::with_capacity(phase.args.pipeline);
    loop {
        let count = claim(&phase);
        if count == 0 {
            return Ok(recorder);
        }
        ops.clear();
        requests.clear();
        for _ in 0..count {
            let op = phase.workload.next_op(&mut rng);
            requests.push(first_request(&phase, op, &mut rng));
            ops.push(op);
        }
        let started = Instant::now();
        let mut responses = connection.execute(&requests).await?;
        // A read-modify-write writes back what it read, in a second round trip.
        let writes: Vec<Request> = ops
            .iter()
            .zip(&requests)
            .filter(|(op, _)| **op == Op::ReadModifyWrite)
            .map(|(_, request)| match request {
                Request::Get(key) => Request::Set(key.clone(), Arc::clone(&phase.value)),
                other => other.clone(),
            })
            .collect();
        if !writes.is_empty() {
            let written = connection.execute(&writes).await?;
            let mut written = written.into_iter();
            for (op, response) in ops.iter().zip(responses.iter_mut()) {
                if *op == Op::ReadModifyWrite {
                    let write = written.next().unwrap_or(Response::Ok);
                    if matches!(write, Response::Error(_)) {
                        *response = write;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        for (op, response) in ops.iter().zip(&responses) {
            recorder.record(*op, elapsed, response);
        }
        phase.done.fetch_add(count as u64, Ordering::Relaxed);
    }
}

fn first_request(phase: &Phase, op: Op, rng: &mut impl Rng) -> Request {
    match op {
        Op::Read | Op::ReadModifyWrite => Request::Get(existing_key(phase, rng)),
        Op::Update => Request::Set(existing_key(phase, rng), Arc::clone(&phase.value)),
        Op::Insert => {
            let number = phase.inserted.fetch_add(1, Ordering::AcqRel);
            Request::Set(key_name(number), Arc::clone(&phase.value))
        }
        Op::Scan => Request::Scan(rng.random_range(1..=phase.args.scan_length.max(1))),
    }
}

fn existing_key(phase: &Phase, rng: &mut impl Rng) -> String {
    key_name(
        phase
            .chooser
            .next(rng, phase.inserted.load(Ordering::Relaxed)),
    )
}
