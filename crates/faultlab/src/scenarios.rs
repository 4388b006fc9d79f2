//! The scenarios: each starts a cluster, runs the workload, injects its faults while the
//! workload runs, heals everything, waits for anti-entropy to converge (equal tree roots
//! between every pair of replicas), reads every key's final state and checks it against the
//! history.

use crate::history::Findings;
use crate::lab::{Lab, LabError, LabSettings};
use crate::workload::{key_name, Workload, WorkloadSettings};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How a run of scenarios goes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `ringkv` binary.
    pub ringkv: PathBuf,
    /// How long the workload runs in each scenario, faults included.
    pub load: Duration,
    /// Keys the workload uses.
    pub keys: usize,
    /// Use loopback addresses even as root.
    pub loopback: bool,
    /// How long the cluster may take to converge once healed.
    pub converge_within: Duration,
}

/// Every scenario: its name, and what it does.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "crash",
        "a node is killed (kill -9) during writes, and restarted",
    ),
    (
        "partition",
        "one node is cut off from the others, healed, then cut off one way",
    ),
    (
        "pause-slow",
        "a node is paused (SIGSTOP) and resumed; another's link is slowed",
    ),
    (
        "wipe",
        "a replica is killed, its data directory wiped, and restarted",
    ),
    ("join", "a fourth node joins under load"),
    (
        "leave",
        "one of four nodes leaves under load (cluster leave)",
    ),
    (
        "remove",
        "one of four nodes dies and is removed (cluster remove)",
    ),
    (
        "delete-while-down",
        "keys are deleted while a replica is down; it returns",
    ),
];

/// What one scenario run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// What the lab ran on.
    pub network: String,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// Faults injected, each with when.
    pub faults: Vec<(Duration, String)>,
    /// Operations the workload made.
    pub ops: usize,
    /// Of those: acknowledged, failed, unknown.
    pub outcomes: (usize, usize, usize),
    /// What the checker found.
    pub findings: Findings,
    /// How long convergence took after healing; `None` if it did not happen in time.
    pub converged_in: Option<Duration>,
    /// Each up node's own copy of every key the checker flagged, one line per key.
    pub copies: Vec<String>,
    /// Tombstones the nodes up at the end reaped (removed once every replica held them),
    /// since each last started.
    pub reaped: u64,
}

impl Report {
    /// Whether the run kept every promise: nothing lost, nothing resurrected, converged.
    pub fn passed(&self) -> bool {
        self.skipped.is_some()
            || (self.findings.lost.is_empty()
                && self.findings.resurrected.is_empty()
                && self.converged_in.is_some())
    }
}

/// The settings of every node in a lab: anti-entropy every 2 s and a short hint window, so
/// that healing and tombstone reaping happen within a scenario; tombstones are kept no longer
/// than the hint window demands (5 s: more than the RPC timeout plus the clock skew, which is
/// small because the nodes share one clock).
const NODE_CONFIG: &str = "anti_entropy_interval_ms = 2000\n\
                           hint_window_ms = 5000\n\
                           tombstone_grace_ms = 0\n\
                           clock_skew_max_ms = 1000\n\
                           sweep_interval_ms = 500\n";

/// Runs scenario `name`.
pub fn run(name: &str, settings: &Settings) -> Result<Report, LabError> {
    let mut lab = Lab::new(LabSettings {
        ringkv: settings.ringkv.clone(),
        loopback: settings.loopback,
        config: NODE_CONFIG.into(),
    })?;
    let mut report = Report {
        scenario: name.to_owned(),
        network: lab.network().describe(),
        ..Report::default()
    };
    let needs_namespaces = matches!(name, "partition" | "pause-slow");
    if needs_namespaces && !lab.network().has_namespaces() {
        report.skipped = Some("needs network namespaces (run as root)".into());
        return Ok(report);
    }
    let nodes = if matches!(name, "leave" | "remove") {
        4
    } else {
        3
    };
    lab.start_cluster(nodes)?;
    let workload_settings = WorkloadSettings {
        keys: settings.keys,
        delete_percent: if name == "delete-while-down" { 45 } else { 20 },
        ..WorkloadSettings::default()
    };
    let workload = Workload::start(lab.targets(), &workload_settings);
    let faults = inject(name, &mut lab, settings.load);
    let history = workload.stop();
    faults?;
    // Whatever the scenario left broken is mended before convergence is awaited.
    lab.heal()?;
    lab.await_alive()?;
    report.converged_in = match lab.converge("default", settings.converge_within) {
        Ok(took) => Some(took),
        Err(LabError::Timeout { .. }) => None,
        Err(error) => return Err(error),
    };
    let finals = read_finals(&lab, &history.keys_written())?;
    report.findings = history.check(&finals);
    report.copies = copies_of(&lab, &report.findings.keys);
    report.ops = history.ops.len();
    report.outcomes = history.outcomes();
    report.faults = lab.faults().to_vec();
    report.reaped = lab.metric_sum("ringkv_cluster_tombstones_reaped_total") as u64;
    Ok(report)
}

/// Injects scenario `name`'s faults over `load`.
fn inject(name: &str, lab: &mut Lab, load: Duration) -> Result<(), LabError> {
    let part = |n: u32| load / n;
    match name {
        "crash" => {
            sleep(part(3));
            lab.kill(2)?;
            sleep(part(3));
            lab.restart(2)?;
            sleep(part(3));
        }
        "partition" => {
            sleep(part(4));
            lab.partition(&[2])?;
            sleep(part(4));
            lab.heal()?;
            sleep(part(4));
            lab.cut_one_way(0, 2)?;
            sleep(part(4));
            lab.heal()?;
        }
        "pause-slow" => {
            sleep(part(4));
            lab.pause(1)?;
            sleep(part(4));
            lab.resume(1)?;
            lab.slow(2, 50)?;
            sleep(part(4));
            lab.unslow(2)?;
            sleep(part(4));
        }
        "wipe" => {
            sleep(part(3));
            lab.kill(2)?;
            lab.wipe(2)?;
            lab.restart(2)?;
            sleep(part(3) * 2);
        }
        "join" => {
            sleep(part(3));
            lab.add_node()?;
            sleep(part(3) * 2);
        }
        "leave" => {
            sleep(part(3));
            lab.leave(3)?;
            sleep(part(3));
        }
        "remove" => {
            sleep(part(3));
            lab.remove(3)?;
            sleep(part(3));
        }
        "delete-while-down" => {
            sleep(part(4));
            lab.kill(2)?;
            sleep(part(2));
            lab.restart(2)?;
            sleep(part(4));
        }
        other => panic!("no scenario {other:?}; see SCENARIOS"),
    }
    Ok(())
}

fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// Each key's state once converged, read from every replica at once (`consistency=all`)
/// through the first node up; a read that fails (a replica busy past the RPC timeout) is
/// tried again a few times.
fn read_finals(lab: &Lab, keys: &[usize]) -> Result<BTreeMap<usize, Option<String>>, LabError> {
    const ATTEMPTS: usize = 5;
    let reader = *lab.up().first().expect("a node is up after healing");
    let client = lab
        .client(reader, Duration::from_secs(10))
        .with_consistency("all");
    let mut finals = BTreeMap::new();
    for &key in keys {
        let mut attempt = 0;
        let value = loop {
            attempt += 1;
            match client.get(&key_name(key)) {
                Ok(value) => break value,
                Err(error) if attempt == ATTEMPTS => {
                    return Err(LabError::Node {
                        node: reader,
                        message: format!("reading {}: {error}", key_name(key)),
                    })
                }
                Err(_) => sleep(Duration::from_millis(500)),
            }
        };
        finals.insert(
            key,
            value.map(|v| String::from_utf8_lossy(&v.value).into_owned()),
        );
    }
    Ok(finals)
}

/// Each up node's own copy (`?local=true`) of each of `keys`, one line per key.
fn copies_of(lab: &Lab, keys: &[usize]) -> Vec<String> {
    keys.iter()
        .map(|&key| {
            let mut line = format!("{}:", key_name(key));
            for index in lab.up() {
                let copy = match lab
                    .client(index, Duration::from_secs(5))
                    .get_local(&key_name(key))
                {
                    Ok(Some(value)) => format!(
                        "{} (version {})",
                        String::from_utf8_lossy(&value.value),
                        value.version
                    ),
                    Ok(None) => "nothing".into(),
                    Err(error) => format!("? ({error})"),
                };
                line.push_str(&format!(" node-{index} holds {copy};"));
            }
            line
        })
        .collect()
}

/// The reports as a table, with every violation listed below it.
pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<18} {:>6} {:>7} {:>6} {:>6} {:>7} {:>5} {:>12} {:>10} {:>7}\n",
        "scenario",
        "faults",
        "ops",
        "acked",
        "failed",
        "unknown",
        "lost",
        "resurrected",
        "converged",
        "reaped"
    );
    for r in reports {
        if let Some(why) = &r.skipped {
            out.push_str(&format!("{:<18} skipped: {why}\n", r.scenario));
            continue;
        }
        let converged = r.converged_in.map_or("NO".to_owned(), |took| {
            format!("{:.1} s", took.as_secs_f64())
        });
        out.push_str(&format!(
            "{:<18} {:>6} {:>7} {:>6} {:>6} {:>7} {:>5} {:>12} {:>10} {:>7}\n",
            r.scenario,
            r.faults.len(),
            r.ops,
            r.outcomes.0,
            r.outcomes.1,
            r.outcomes.2,
            r.findings.lost.len(),
            r.findings.resurrected.len(),
            converged,
            r.reaped
        ));
    }
    for r in reports {
        for line in r.findings.lost.iter().chain(&r.findings.resurrected) {
            out.push_str(&format!("{}: {line}\n", r.scenario));
        }
        for line in &r.copies {
            out.push_str(&format!("{}: copies of {line}\n", r.scenario));
        }
    }
    out
}
