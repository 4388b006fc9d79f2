//! `ringkv engine-bench`: db_bench-style fillrandom / readrandom straight through the
//! `Engine` trait, one thread, so engines can be compared with each other and with RocksDB's
//! own `db_bench` at the same sizes (see bench/compare-rocksdb.sh).

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringkv_storage::{Engine, EngineKind};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `ringkv engine-bench`.
#[derive(Args, Debug)]
pub struct EngineBenchArgs {
    /// Engine to measure: lsm, btree or memory.
    #[arg(long, default_value = "lsm")]
    engine: EngineKind,
    /// Number of keys (16-byte keys, as db_bench uses).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Comma-separated list of fillrandom, fillseq, readrandom (run in that order).
    #[arg(long, default_value = "fillrandom,readrandom")]
    benchmarks: String,
    /// fsync after every write (db_bench --sync=1); otherwise one sync at the end of a fill.
    #[arg(long)]
    sync_every_write: bool,
    /// Where to put the engine's files [default: a temporary directory, removed after].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object per benchmark instead of text.
    #[arg(long)]
    json: bool,
}

/// The figures of one benchmark.
struct Figures {
    name: &'static str,
    operations: u64,
    elapsed: Duration,
    found: Option<u64>,
}

pub fn run(args: EngineBenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::Builder::new()
        .prefix("ringkv-engine-bench")
        .tempdir_in(".")?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let engine = ringkv_storage::open(args.engine, &dir)
        .with_context(|| format!("opening {}", dir.display()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let values: Vec<u8> = (0..(1 << 20) + args.value_size)
        .map(|_| rng.random())
        .collect();
    for name in args.benchmarks.split(',').map(str::trim) {
        let figures = match name {
            "fillrandom" => fill(engine.as_ref(), &args, &values, true, &mut rng)?,
            "fillseq" => fill(engine.as_ref(), &args, &values, false, &mut rng)?,
            "readrandom" => read_random(engine.as_ref(), &args, &mut rng)?,
            other => {
                anyhow::bail!("unknown benchmark {other:?}: use fillrandom, fillseq or readrandom")
            }
        };
        report(&args, &figures, engine.as_ref());
    }
    Ok(())
}

fn key(index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(format!("{index:016}").as_bytes());
    key
}

fn progress(args: &EngineBenchArgs, name: &str) -> ProgressBar {
    let bar = ProgressBar::new(args.keys);
    bar.set_style(
        ProgressStyle::with_template("{msg:>11} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    bar
}

fn fill(
    engine: &dyn Engine,
    args: &EngineBenchArgs,
    values: &[u8],
    random_order: bool,
    rng: &mut impl Rng,
) -> anyhow::Result<Figures> {
    let mut order: Vec<u64> = (0..args.keys).collect();
    if random_order {
        order.shuffle(rng);
    }
    let bar = progress(
        args,
        if random_order {
            "fillrandom"
        } else {
            "fillseq"
        },
    );
    let started = Instant::now();
    for (done, &index) in order.iter().enumerate() {
        let offset = (index as usize * 7919) % (values.len() - args.value_size);
        engine.put(&key(index), &values[offset..offset + args.value_size])?;
        if args.sync_every_write {
            engine.sync()?;
        }
        if done % 4096 == 0 {
            bar.set_position(done as u64);
        }
    }
    engine.sync()?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let name = if random_order {
        "fillrandom"
    } else {
        "fillseq"
    };
    Ok(Figures {
        name,
        operations: args.keys,
        elapsed,
        found: None,
    })
}

fn read_random(
    engine: &dyn Engine,
    args: &EngineBenchArgs,
    rng: &mut impl Rng,
) -> anyhow::Result<Figures> {
    let bar = progress(args, "readrandom");
    let started = Instant::now();
    let mut found = 0;
    for done in 0..args.keys {
        if engine.get(&key(rng.random_range(0..args.keys)))?.is_some() {
            found += 1;
        }
        if done % 4096 == 0 {
            bar.set_position(done);
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Figures {
        name: "readrandom",
        operations: args.keys,
        elapsed,
        found: Some(found),
    })
}

fn report(args: &EngineBenchArgs, figures: &Figures, engine: &dyn Engine) {
    let seconds = figures.elapsed.as_secs_f64();
    let ops_per_second = figures.operations as f64 / seconds;
    let micros_per_op = seconds * 1e6 / figures.operations as f64;
    if args.json {
        println!(
            "{}",
            json!({
                "engine": args.engine.name(), "benchmark": figures.name, "operations": figures.operations,
                "value_size": args.value_size, "seconds": seconds, "ops_per_second": ops_per_second,
                "micros_per_op": micros_per_op, "found": figures.found, "disk_bytes": engine.disk_bytes(),
                "sync_every_write": args.sync_every_write,
            })
        );
    } else {
        let found = figures
            .found
            .map(|f| format!(" ({f} of {} found)", figures.operations))
            .unwrap_or_default();
        println!(
            "{:<7} {:<11} {:>10.0} ops/s {:>8.3} micros/op{found}",
            args.engine.name(),
            figures.name,
            ops_per_second,
            micros_per_op
        );
    }
}
