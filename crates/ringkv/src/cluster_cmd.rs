//! Operator commands, asked of one node: `ringkv cluster status` (like `nodetool status`),
//! `ringkv cluster ring` (like `nodetool ring`), `ringkv cluster endpoints KEY` (like
//! `nodetool getendpoints`) and `ringkv cluster repair` (like `nodetool repair`, though
//! anti-entropy also runs on its own).

use clap::{Args, Subcommand};
use ringkv_client::RangeProgress;
use ringkv_core::ring::{Member, Ring};

/// `ringkv cluster ...`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    connection: crate::client_cmd::Connection,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Every member: id, address, zone, status, liveness, share of the ring, keys, disk use;
    /// for a member joining or leaving, each stream of its ranges and how far it has come.
    Status {
        /// List every range being moved, with its records moved and expected.
        #[arg(long)]
        ranges: bool,
    },
    /// The ring: each member's tokens and share; with --tokens, every token and its owner.
    Ring {
        /// List every token (vnodes × weight per member) in ring order.
        #[arg(long)]
        tokens: bool,
    },
    /// Make the node (the one --node names) leave the cluster: it streams its key ranges to
    /// the nodes that take them over, then leaves the ring, with progress shown. Stop the
    /// process afterwards.
    Leave,
    /// Take a dead node out of the ring for good (like `nodetool removenode`): its key
    /// ranges pass to the next nodes of the ring, which stream them from the surviving
    /// replicas until every key has its replicas again (`cluster status` shows progress per
    /// range; anti-entropy catches anything missed). Refused for a node that is not down.
    Remove {
        /// The node's id, as `cluster status` shows it.
        node_id: String,
    },
    /// Run an anti-entropy round on the node now (it also runs on its own every
    /// anti_entropy_interval_ms): compare hash trees with every live peer and repair what
    /// differs, with a progress bar.
    Repair {
        /// Only this keyspace.
        #[arg(long)]
        keyspace: Option<String>,
    },
    /// The replicas of a key, in preference order.
    Endpoints {
        /// The key.
        key: String,
        /// The keyspace whose replication factor to use.
        #[arg(long, default_value = "default")]
        keyspace: String,
        /// How many replicas, instead of the keyspace's replication factor.
        #[arg(long)]
        replicas: Option<usize>,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let json = args.connection.json;
    match args.command {
        ClusterCommand::Status { ranges } => {
            let view = client.cluster()?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<22} {:<10} {:<8} {:<8} {:>7} {:>10} {:>10} {:>10} {:>8} {:>7}",
                "node",
                "address",
                "zone",
                "status",
                "state",
                "owns",
                "keys",
                "disk",
                "synced",
                "diverged",
                "hints"
            );
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            for m in &view.members {
                let owns = format!("{:.1}%", m.ownership * 100.0);
                let keys = match (m.keys, m.keys_exact) {
                    (Some(keys), Some(false)) => format!("~{keys}"),
                    (Some(keys), _) => keys.to_string(),
                    (None, _) => "?".into(),
                };
                let disk = m.disk_bytes.map_or("?".into(), human_bytes);
                let synced = match m.anti_entropy_last_ms {
                    None => "?".into(),
                    Some(0) => "never".into(),
                    Some(at) => format!("{}s ago", now_ms.saturating_sub(at) / 1000),
                };
                let or_unknown = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
                println!(
                    "{:<24} {:<22} {:<10} {:<8} {:<8} {:>7} {:>10} {:>10} {:>10} {:>8} {:>7}",
                    m.id,
                    m.address,
                    m.zone,
                    m.status,
                    m.liveness,
                    owns,
                    keys,
                    disk,
                    synced,
                    or_unknown(m.anti_entropy_divergence),
                    or_unknown(m.hints_pending)
                );
                let transfers = m.joining.iter().flat_map(|joining| &joining.transfers);
                for transfer in transfers.filter(|t| m.status == "joining" || t.state != "done") {
                    println!(
                        "  <- {:<21} {:<10} {:>10} records  {} ({} retries); {}",
                        transfer.donor,
                        transfer.keyspace,
                        transfer.records,
                        transfer.state,
                        transfer.retries,
                        range_summary(&transfer.ranges)
                    );
                    if ranges {
                        print_ranges(&transfer.ranges);
                    }
                }
                let restores = m.restoring.iter().flatten();
                for restore in restores.filter(|r| r.state != "done") {
                    for transfer in &restore.transfers {
                        println!(
                            "  <= {:<21} {:<10} {:>10} records  {} (restoring {}'s copies); {}",
                            transfer.donor,
                            transfer.keyspace,
                            transfer.records,
                            transfer.state,
                            restore.removed,
                            range_summary(&transfer.ranges)
                        );
                        if ranges {
                            print_ranges(&transfer.ranges);
                        }
                    }
                }
                if let Some(leaving) = m.leaving.as_ref().filter(|l| l.state == "leaving") {
                    println!(
                        "  -> {:>10} records handed off ({} failed); {}",
                        leaving.records_sent,
                        leaving.sends_failed,
                        range_summary(&leaving.ranges)
                    );
                    if ranges {
                        print_ranges(&leaving.ranges);
                    }
                }
            }
            print_shards(&view.members);
        }
        ClusterCommand::Ring { tokens } => {
            let ring = client.ring()?;
            if json {
                println!("{}", serde_json::to_string(&ring)?);
                return Ok(());
            }
            println!(
                "hash {}, {} virtual nodes per unit of weight",
                ring.hash, ring.vnodes
            );
            println!(
                "{:<24} {:<10} {:>6} {:>7} {:>7}",
                "node", "zone", "weight", "tokens", "owns"
            );
            for m in &ring.members {
                let owns = format!("{:.1}%", m.ownership * 100.0);
                println!(
                    "{:<24} {:<10} {:>6} {:>7} {:>7}",
                    m.id, m.zone, m.weight, m.tokens, owns
                );
            }
            if tokens {
                println!();
                println!("{:>20}  node", "token");
                for (token, id) in &ring.tokens {
                    println!("{token:>20}  {id}");
                }
            }
        }
        ClusterCommand::Repair { keyspace } => repair(&client, keyspace.as_deref(), json)?,
        ClusterCommand::Leave => leave(&client, json)?,
        ClusterCommand::Remove { node_id } => {
            client.remove_member(&node_id)?;
            if json {
                println!("{}", serde_json::json!({ "removed": node_id }));
            } else {
                println!(
                    "{node_id} removed from the ring; the nodes taking over its ranges now \
                     stream its copies from the others (see cluster status)"
                );
            }
        }
        ClusterCommand::Endpoints {
            key,
            keyspace,
            replicas,
        } => {
            let replicas = match replicas {
                Some(replicas) => replicas,
                None => client.keyspace_replication(&keyspace)?,
            };
            // The ring is a pure function of the member list: every member that has not
            // left, up or down, exactly as the nodes build it.
            let view = client.cluster()?;
            let members: Vec<Member> = view
                .members
                .iter()
                .filter(|m| m.status != "left")
                .map(|m| Member {
                    id: m.id.clone(),
                    zone: m.zone.clone(),
                    weight: m.weight.max(1),
                })
                .collect();
            let ring = Ring::new(&members, ringkv_core::ring::VNODES_DEFAULT);
            let endpoints: Vec<&str> = ring
                .preference_list(key.as_bytes(), replicas)
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "key": key, "keyspace": keyspace, "endpoints": endpoints })
                );
            } else {
                for endpoint in endpoints {
                    println!("{endpoint}");
                }
            }
        }
    }
    Ok(())
}

/// Asks the node to leave and follows it until it has left, with a spinner and its counts.
fn leave(client: &ringkv_client::Client, json: bool) -> anyhow::Result<()> {
    client.leave()?;
    let spinner = indicatif::ProgressBar::new_spinner();
    if json {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let deadline = std::time::Instant::now() + REPAIR_WAIT_MAX;
    let left = loop {
        let progress = client.leave_progress()?;
        spinner.set_message(format!(
            "{}: {} records examined, {} handed off, {} sent again, {} failed; {}",
            progress.state,
            progress.records_examined,
            progress.records_sent,
            progress.send_retries,
            progress.sends_failed,
            range_summary(&progress.ranges)
        ));
        spinner.tick();
        if progress.state == "left" {
            break progress;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the node did not finish leaving"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    spinner.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&left)?);
    } else {
        println!(
            "left the cluster: {} records handed off ({} failed; anti-entropy covers those); \
             the node's process can be stopped",
            left.records_sent, left.sends_failed
        );
    }
    Ok(())
}

/// One line on a stream's ranges: how many are complete, and its records moved against
/// those its sender counted.
fn range_summary(ranges: &[RangeProgress]) -> String {
    let complete = ranges.iter().filter(|r| r.complete()).count();
    let moved: u64 = ranges.iter().map(|r| r.moved).sum();
    let expected: Option<u64> = ranges.iter().map(|r| r.expected).sum();
    match expected {
        Some(expected) if expected > 0 => format!(
            "{complete}/{} ranges complete, {moved}/{expected} of their records ({:.0}%)",
            ranges.len(),
            (moved.min(expected) as f64) * 100.0 / expected as f64
        ),
        _ => format!(
            "{complete}/{} ranges complete, {moved} of their records",
            ranges.len()
        ),
    }
}

/// Every range of a stream, one per line.
fn print_ranges(ranges: &[RangeProgress]) {
    for range in ranges {
        let expected = range.expected.map_or("?".into(), |e| e.to_string());
        println!(
            "       {:<10} {}..{} {:>8}/{:<8} {}",
            range.keyspace,
            range.low,
            range.high,
            range.moved,
            expected,
            if range.complete() { "complete" } else { "" }
        );
    }
}

/// How long `cluster repair` waits for a round before giving up on it.
const REPAIR_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Starts a round on the node and follows it to its end with a progress bar (exchanges of
/// trees, one per peer and keyspace), then prints what it found.
fn repair(
    client: &ringkv_client::Client,
    keyspace: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let started = client.start_repair(keyspace)?;
    let before = started.last_finished_ms;
    let bar = indicatif::ProgressBar::new(started.exchanges_total.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "repair [{bar:30}] {pos}/{len} exchanges, {msg} ({elapsed})",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let deadline = std::time::Instant::now() + REPAIR_WAIT_MAX;
    let finished = loop {
        let progress = client.repair_progress()?;
        bar.set_length(progress.exchanges_total.max(1));
        bar.set_position(progress.exchanges_done);
        bar.set_message(format!(
            "{} leaves differed, {} keys repaired",
            progress.leaves_differing, progress.keys_repaired
        ));
        if !progress.running && progress.last_finished_ms > before {
            break progress;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the round did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&finished)?);
    } else {
        println!(
            "repair finished: {} exchanges, {} tree leaves differed, {} keys repaired",
            finished.exchanges_done, finished.leaves_differing, finished.keys_repaired
        );
    }
    Ok(())
}

/// Bytes in the largest unit that keeps the number at least 1.
/// The strong keyspaces' shards, one line each, from their leaders' reports: members
/// lagging by more than a few entries are named with their lag.
fn print_shards(members: &[ringkv_client::ClusterMember]) {
    let mut shards: Vec<&ringkv_client::ShardStatus> = members
        .iter()
        .filter_map(|m| m.shards.as_ref())
        .flatten()
        .collect();
    if shards.is_empty() {
        return;
    }
    shards.sort_by(|a, b| a.group.cmp(&b.group));
    println!();
    println!(
        "{:<24} {:<24} {:>6} {:>10} {:>10}  lagging",
        "shard", "leader", "term", "commit", "applied"
    );
    for shard in shards {
        let lagging: Vec<String> = shard
            .members
            .iter()
            .filter(|m| m.lag.is_none_or(|lag| lag > SHARD_LAG_SHOWN))
            .map(|m| {
                let role = if m.voter { "" } else { " learner" };
                match m.lag {
                    Some(lag) => format!("{} ({lag} behind{role})", m.id),
                    None => format!("{} (not heard from{role})", m.id),
                }
            })
            .collect();
        println!(
            "{:<24} {:<24} {:>6} {:>10} {:>10}  {}",
            shard.group,
            shard.leader,
            shard.term,
            shard.commit_index,
            shard.applied_index,
            if lagging.is_empty() {
                "-".to_string()
            } else {
                lagging.join(", ")
            }
        );
    }
}

/// Entries a shard member may trail its leader by without being listed as lagging: the
/// entries in flight under load.
const SHARD_LAG_SHOWN: u64 = 100;

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
