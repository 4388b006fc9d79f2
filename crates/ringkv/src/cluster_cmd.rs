//! Operator commands: `ringkv cluster status` (like `nodetool status`) and
//! `ringkv cluster endpoints KEY` (like `nodetool getendpoints`), asked of one node.

use clap::{Args, Subcommand};
use ringkv_core::ring::{Member, Ring, VNODES_DEFAULT};

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
    /// Every member: id, address, zone, status, liveness and share of the ring.
    Status,
    /// The replicas of a key, in preference order.
    Endpoints {
        /// The key.
        key: String,
        /// How many replicas (the keyspace's replication factor).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let view = args.connection.client().cluster()?;
    let json = args.connection.json;
    match args.command {
        ClusterCommand::Status => {
            if json {
                println!("{}", serde_json::to_string(&view)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<22} {:<10} {:<8} {:<8} {:>9}",
                "node", "address", "zone", "status", "state", "owns"
            );
            for m in &view.members {
                let owns = format!("{:.1}%", m.ownership * 100.0);
                println!(
                    "{:<24} {:<22} {:<10} {:<8} {:<8} {:>9}",
                    m.id, m.address, m.zone, m.status, m.liveness, owns
                );
            }
        }
        ClusterCommand::Endpoints { key, replicas } => {
            let members: Vec<Member> = view
                .members
                .iter()
                .filter(|m| {
                    m.liveness == "alive" && (m.status == "normal" || m.status == "joining")
                })
                .map(|m| Member {
                    id: m.id.clone(),
                    zone: m.zone.clone(),
                    weight: m.weight.max(1),
                })
                .collect();
            let ring = Ring::new(&members, VNODES_DEFAULT);
            let endpoints: Vec<&str> = ring
                .preference_list(key.as_bytes(), replicas)
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "key": key, "endpoints": endpoints })
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
