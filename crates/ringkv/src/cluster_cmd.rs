//! Operator commands, asked of one node: `ringkv cluster status` (like `nodetool status`),
//! `ringkv cluster ring` (like `nodetool ring`) and `ringkv cluster endpoints KEY` (like
//! `nodetool getendpoints`).

use clap::{Args, Subcommand};
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
    /// Every member: id, address, zone, status, liveness, share of the ring, keys, disk use.
    Status,
    /// The ring: each member's tokens and share; with --tokens, every token and its owner.
    Ring {
        /// List every token (vnodes × weight per member) in ring order.
        #[arg(long)]
        tokens: bool,
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
    let client = args.connection.client();
    let json = args.connection.json;
    match args.command {
        ClusterCommand::Status => {
            let view = client.cluster()?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<22} {:<10} {:<8} {:<8} {:>7} {:>10} {:>10}",
                "node", "address", "zone", "status", "state", "owns", "keys", "disk"
            );
            for m in &view.members {
                let owns = format!("{:.1}%", m.ownership * 100.0);
                let keys = match (m.keys, m.keys_exact) {
                    (Some(keys), Some(false)) => format!("~{keys}"),
                    (Some(keys), _) => keys.to_string(),
                    (None, _) => "?".into(),
                };
                let disk = m.disk_bytes.map_or("?".into(), human_bytes);
                println!(
                    "{:<24} {:<22} {:<10} {:<8} {:<8} {:>7} {:>10} {:>10}",
                    m.id, m.address, m.zone, m.status, m.liveness, owns, keys, disk
                );
            }
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

/// Bytes in the largest unit that keeps the number at least 1.
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
