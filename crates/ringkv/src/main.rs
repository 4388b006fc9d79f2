//! The `ringkv` binary: the server, the command-line client and the tools, as subcommands.
//! Errors end here: each becomes one readable line on stderr and a non-zero exit code.

mod backup_cmd;
mod bench;
mod client_cmd;
mod cluster_cmd;
mod dev_cluster;
mod engine_bench;
mod server_cmd;
mod user_cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a request's buffers are allocated on an I/O thread
/// and freed on the writer thread, the pattern glibc's allocator handles worst (its arena
/// locks and consolidation were a fifth of the writer thread's time under redis-benchmark SET).
/// Its v2 line: v3's path for memory freed by another thread (`_mi_page_abandon`,
/// `mi_abandoned_page_try_reclaim`) took 13 % of the writer's instructions against v2's 8.6 %.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version `--version` prints: the release and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGKV_GIT_COMMIT"),
    ")"
);

/// ringkv — a distributed key-value store.
#[derive(Parser)]
#[command(name = "ringkv", version = VERSION, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: a one-node cluster with data in ./ringkv-data).
    Server(Box<server_cmd::ServerArgs>),
    /// Store a value.
    Put(client_cmd::PutArgs),
    /// Read a value.
    Get(client_cmd::GetArgs),
    /// Delete a key.
    Del(client_cmd::DelArgs),
    /// List keys with a prefix.
    Scan(client_cmd::ScanArgs),
    /// Run an N-node cluster on loopback, for trying things: its dashboard's chaos panel kills,
    /// pauses and restarts nodes (Ctrl-C stops it).
    DevCluster(dev_cluster::DevClusterArgs),
    /// Write a point-in-time backup of a node's records (or one keyspace's) to a file, with
    /// their causal versions, streamed with progress shown.
    Backup(backup_cmd::BackupArgs),
    /// Merge a backup's records into a node's cluster (any size): each replica merges them
    /// into what it holds, so newer writes are kept. Creates the keyspaces it lacks.
    Restore(backup_cmd::RestoreArgs),
    /// Operator commands: cluster status, a key's replicas.
    Cluster(cluster_cmd::ClusterArgs),
    /// Manage the users clients log in as: add, remove, list, whoami.
    User(user_cmd::UserArgs),
    /// Load-test ringkv (REST) or any Redis-protocol server: YCSB workloads, HDR latencies.
    Bench(bench::BenchArgs),
    /// Measure a storage engine directly through the Engine trait (no network, no replica).
    EngineBench(engine_bench::EngineBenchArgs),
}

fn main() {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Put(_)
            | Command::Get(_)
            | Command::Del(_)
            | Command::Scan(_)
            | Command::Cluster(_)
            | Command::User(_)
    ) {
        die_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Server(args) => server_cmd::run(*args),
        Command::Put(args) => client_cmd::put(args),
        Command::Get(args) => client_cmd::get(args),
        Command::Del(args) => client_cmd::del(args),
        Command::Scan(args) => client_cmd::scan(args),
        Command::DevCluster(args) => dev_cluster::run(args),
        Command::Cluster(args) => cluster_cmd::run(args),
        Command::Backup(args) => backup_cmd::backup(args),
        Command::Restore(args) => backup_cmd::restore(args),
        Command::User(args) => user_cmd::run(args),
        Command::Bench(args) => bench::run(args),
        Command::EngineBench(args) => engine_bench::run(args),
    };
    if let Err(error) = result {
        eprintln!("ringkv: {error:#}");
        std::process::exit(1);
    }
}

/// Lets the one-shot client commands end silently when the reader of their output goes away
/// (`ringkv scan | head`), like other Unix tools, instead of panicking on a failed print.
/// Servers keep Rust's default (SIGPIPE ignored), so a closed socket is an error, not death.
fn die_quietly_on_closed_pipe() {
    // SAFETY: `signal` only changes this process's disposition for SIGPIPE; it is called
    // before any other thread exists and passes a valid signal number and the default
    // handler, so no Rust state can be observed half-changed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
