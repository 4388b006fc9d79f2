//! `ringkv dev-cluster --nodes N`: N nodes of this same binary on loopback, for trying
//! things. The first node starts alone; the others join it. Each node's addresses are
//! printed, one node per line; Ctrl-C or SIGTERM stops them all.

use anyhow::{bail, Context};
use clap::Args;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long one node may take to report its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Most nodes one dev cluster may run (each is a process with its own files).
const NODES_MAX: usize = 64;

/// Options of `ringkv dev-cluster`.
#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node i listens on P+10i (REST), P+10i+1 (Redis protocol) and P+10i+2 (cluster);
    /// 0 lets every node pick free ports.
    #[arg(long, default_value_t = 17080)]
    base_port: u16,
    /// Where the nodes keep their data (node-i below it).
    #[arg(long, default_value = "./ringkv-dev-cluster")]
    data_dir: PathBuf,
    /// Storage engine of every node.
    #[arg(long, default_value = "lsm")]
    engine: String,
    /// Spread the nodes over this many zones, round robin (default: one zone per node).
    /// Replicas prefer distinct zones, so a zone with fewer nodes holds more per node.
    #[arg(long)]
    zones: Option<usize>,
}

/// The running nodes; killed when dropped, whatever happens.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if !(1..=NODES_MAX).contains(&args.nodes) {
        bail!("--nodes must be 1 to {NODES_MAX}");
    }
    let port = |node: usize, offset: usize| -> anyhow::Result<String> {
        if args.base_port == 0 {
            return Ok("127.0.0.1:0".into());
        }
        let port = u16::try_from(usize::from(args.base_port) + node * 10 + offset)
            .context("ports run past 65535")?;
        Ok(format!("127.0.0.1:{port}"))
    };
    let zones = args.zones.unwrap_or(args.nodes);
    if zones == 0 {
        bail!("--zones must be at least 1");
    }
    let executable = std::env::current_exe().context("cannot find the ringkv executable")?;
    let mut nodes = Nodes(Vec::new());
    let mut seed: Option<String> = None;
    for node in 0..args.nodes {
        let mut command = Command::new(&executable);
        command
            .arg("server")
            .args([
                "--node-id",
                &format!("node-{node}"),
                "--engine",
                &args.engine,
            ])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{node}")))
            .args([
                "--http",
                &port(node, 0)?,
                "--resp",
                &port(node, 1)?,
                "--listen",
                &port(node, 2)?,
            ])
            .args(["--zone", &format!("zone-{}", node % zones)]);
        if let Some(seed) = &seed {
            command.args(["--join", seed]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a node")?;
        let line = first_line(&mut child).with_context(|| format!("node-{node} did not start"))?;
        nodes.0.push(child);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "node-{node} http={} resp={} cluster={}",
            field("http="),
            field("resp="),
            field("cluster=")
        );
        seed.get_or_insert_with(|| field("cluster="));
    }
    eprintln!("{} nodes running; Ctrl-C stops them", args.nodes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    })?;
    drop(nodes);
    Ok(())
}

/// The node's "serving" line (with its addresses), read within the start timeout.
fn first_line(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("stdout is piped")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = sender.send(line);
        }
        // Keep draining so the node never blocks on a full pipe.
        for _ in lines {}
    });
    receiver
        .recv_timeout(START_TIMEOUT)
        .context("no address line in time")
}
