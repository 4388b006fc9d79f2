//! `ringkv-faultlab`: runs fault scenarios against real `ringkv` nodes and prints what was
//! injected, what the workload did, and what the checker found.

use anyhow::Context;
use clap::Parser;
use ringkv_faultlab::scenarios::{self, Settings, SCENARIOS};
use std::path::PathBuf;
use std::time::Duration;

/// Runs fault scenarios against real ringkv nodes (in network namespaces when run as root,
/// otherwise on loopback addresses) and checks that no acknowledged write is lost, no deleted
/// key comes back, and every replica converges after healing.
#[derive(Parser)]
#[command(version, after_help = scenario_help())]
struct Args {
    /// Scenarios to run, in order (default: all); `--rounds` repeats the list.
    scenarios: Vec<String>,
    /// The ringkv binary (default: `ringkv` beside this program, else on PATH).
    #[arg(long)]
    ringkv: Option<PathBuf>,
    /// Seconds of load, faults included, in each scenario.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Keys the workload uses.
    #[arg(long, default_value_t = 500)]
    keys: usize,
    /// Times to run the list of scenarios.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Seconds the cluster may take to converge after healing.
    #[arg(long, default_value_t = 120)]
    converge_within: u64,
    /// Use loopback addresses even as root (no partitions or slow links).
    #[arg(long)]
    loopback: bool,
}

fn scenario_help() -> String {
    let mut help = String::from("Scenarios:\n");
    for (name, what) in SCENARIOS {
        help.push_str(&format!("  {name:<18} {what}\n"));
    }
    help
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let names: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect()
    } else {
        args.scenarios.clone()
    };
    for name in &names {
        anyhow::ensure!(
            SCENARIOS.iter().any(|(known, _)| known == name),
            "no scenario {name:?}\n{}",
            scenario_help()
        );
    }
    let settings = Settings {
        ringkv: args.ringkv.clone().unwrap_or_else(default_ringkv),
        load: Duration::from_secs(args.seconds),
        keys: args.keys,
        loopback: args.loopback,
        converge_within: Duration::from_secs(args.converge_within),
    };
    let mut reports = Vec::new();
    for round in 1..=args.rounds {
        for name in &names {
            eprintln!("round {round}: {name} ...");
            let report = scenarios::run(name, &settings)
                .with_context(|| format!("scenario {name} could not run"))?;
            eprintln!("  {} faults on {}", report.faults.len(), report.network);
            for (at, fault) in &report.faults {
                eprintln!("    {:>6.1} s  {fault}", at.as_secs_f64());
            }
            reports.push(report);
        }
    }
    print!("{}", scenarios::table(&reports));
    anyhow::ensure!(
        reports.iter().all(scenarios::Report::passed),
        "a scenario lost data, resurrected a delete or did not converge"
    );
    Ok(())
}

/// `ringkv` beside this program (both are built into the same directory), else on PATH.
fn default_ringkv() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ringkv")))
        .filter(|path| path.exists());
    beside.unwrap_or_else(|| PathBuf::from("ringkv"))
}
