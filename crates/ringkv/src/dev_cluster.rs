//! `ringkv dev-cluster --nodes N`: N nodes of this same binary on loopback, for trying
//! things. The first node starts alone; the others join it. Each node's addresses are
//! printed, one node per line; Ctrl-C or SIGTERM stops them all.
//!
//! This process supervises the nodes, so it is what carries out the dashboard's chaos
//! actions: every node is started with `--chaos-control` naming a small HTTP API here
//! (loopback only), to which its `/v1/chaos` passes kill, pause, resume and restart of a
//! node, partitions and latency, and start and stop of a load (`ringkv bench` in the
//! background).
//!
//! Partitions and latency are set on the nodes themselves (`PUT /v1/chaos/links`): on one
//! loopback network the kernel cannot cut some links and not others without root, so each
//! node drops what it would send to, or hears from, the peers across the cut. The isolated
//! nodes form one side, the others the other; healing clears every fault.

use anyhow::{bail, Context};
use clap::Args;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency `slow` adds to a node's links.
const SLOW_LINK_MS: u64 = 200;

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

/// One node process of the cluster, and how to start it again.
struct NodeProcess {
    name: String,
    /// `ringkv` arguments: the first start's, with the addresses it bound since.
    args: Vec<String>,
    child: Option<Child>,
    state: ProcessState,
    http: String,
    resp: String,
    /// Its cluster (gossip and RPC) address, which the faults on other nodes' links name.
    cluster: String,
    /// On the isolated side of the partition.
    isolated: bool,
    /// With latency added to its links.
    slow: bool,
}

/// What a node process is doing, as the chaos panel shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum ProcessState {
    Running,
    /// Stopped with SIGSTOP: alive to the kernel, silent to the cluster.
    Paused,
    /// Ended with SIGKILL.
    Killed,
}

/// The cluster's processes (nodes, and the load if one runs); all ended when dropped,
/// whatever happens.
struct Supervisor {
    executable: PathBuf,
    nodes: Vec<NodeProcess>,
    load: Option<Child>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut load) = self.load.take() {
            let _ = load.kill();
            let _ = load.wait();
        }
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                let pid = child.id().to_string();
                if node.state == ProcessState::Paused {
                    let _ = Command::new("kill").args(["-CONT", &pid]).status();
                }
                let _ = Command::new("kill").args(["-TERM", &pid]).status();
            }
        }
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.wait();
            }
        }
    }
}

impl Supervisor {
    /// Starts node `name` with `args`; its addresses, once it serves.
    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<(Child, String)> {
        let mut child = Command::new(&self.executable)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a node")?;
        match first_line(&mut child) {
            Ok(line) => Ok((child, line)),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error.context(format!("{name} did not start")))
            }
        }
    }

    /// What the chaos panel shows: each node's state, and whether the load runs.
    fn state(&mut self) -> serde_json::Value {
        let load = match self.load.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => "running",
            _ => "stopped",
        };
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|node| {
                serde_json::json!({
                    "name": node.name, "state": node.state, "http": node.http,
                    "isolated": node.isolated, "delay_ms": if node.slow { SLOW_LINK_MS } else { 0 },
                })
            })
            .collect();
        serde_json::json!({ "enabled": true, "nodes": nodes, "load": load })
    }

    /// Carries out a chaos action; the state after it, or why not (with an HTTP status).
    fn act(&mut self, target: &str, action: &str) -> Result<serde_json::Value, (u16, String)> {
        if target == "load" {
            match action {
                "start" => self
                    .start_load()
                    .map_err(|error| (500, format!("{error:#}")))?,
                "stop" => {
                    if let Some(mut load) = self.load.take() {
                        let _ = load.kill();
                        let _ = load.wait();
                    }
                }
                _ => return Err((400, format!("the load takes start or stop, not {action:?}"))),
            }
            return Ok(self.state());
        }
        if target == "network" {
            if action != "heal" {
                return Err((400, format!("the network takes heal, not {action:?}")));
            }
            for node in &mut self.nodes {
                (node.isolated, node.slow) = (false, false);
            }
            self.push_links()?;
            return Ok(self.state());
        }
        let Some(index) = self.nodes.iter().position(|node| node.name == target) else {
            return Err((404, format!("no node {target:?} in this dev cluster")));
        };
        let signal = |node: &NodeProcess, signal: &str| {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .args([signal, &child.id().to_string()])
                    .status();
            }
        };
        let node = &mut self.nodes[index];
        match (action, node.state) {
            ("kill", ProcessState::Killed) => {}
            ("kill", _) => {
                if let Some(mut child) = node.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                node.state = ProcessState::Killed;
            }
            ("pause", ProcessState::Running) => {
                signal(node, "-STOP");
                node.state = ProcessState::Paused;
            }
            ("resume", ProcessState::Paused) => {
                signal(node, "-CONT");
                node.state = ProcessState::Running;
            }
            ("pause" | "resume", state) => {
                return Err((409, format!("{target} is {state:?}, so it cannot {action}")));
            }
            ("isolate" | "slow" | "fast", _) => {
                match action {
                    "isolate" => node.isolated = true,
                    "slow" => node.slow = true,
                    _ => node.slow = false,
                }
                self.push_links()?;
            }
            ("restart", _) => {
                if let Some(mut child) = node.child.take() {
                    signal(node, "-CONT");
                    let _ = child.kill();
                    let _ = child.wait();
                }
                node.state = ProcessState::Killed;
                let (name, args) = (node.name.clone(), node.args.clone());
                let (child, _) = self
                    .spawn(&name, &args)
                    .map_err(|error| (500, format!("{error:#}")))?;
                let node = &mut self.nodes[index];
                node.child = Some(child);
                node.state = ProcessState::Running;
                // A new process starts with no faults: give it those of the cluster.
                self.push_links()?;
            }
            _ => {
                return Err((
                    400,
                    format!("nodes take kill, pause, resume, restart, isolate, slow or fast, not {action:?}"),
                ))
            }
        }
        Ok(self.state())
    }

    /// Tells every running node the faults on its links: the isolated nodes cut off from the
    /// rest and the rest from them, and latency on the slow ones.
    fn push_links(&self) -> Result<(), (u16, String)> {
        let side = |isolated: bool| -> Vec<String> {
            self.nodes
                .iter()
                .filter(|node| node.isolated == isolated)
                .map(|node| node.cluster.clone())
                .collect()
        };
        let (isolated, connected) = (side(true), side(false));
        for node in self
            .nodes
            .iter()
            .filter(|n| n.state == ProcessState::Running)
        {
            let blocked = if node.isolated { &connected } else { &isolated };
            let delay = if node.slow { SLOW_LINK_MS } else { 0 };
            ringkv_client::Client::with_timeout(&format!("http://{}", node.http), START_TIMEOUT)
                .set_links(blocked, delay)
                .map_err(|error| {
                    (
                        502,
                        format!("{} did not take its faults: {error}", node.name),
                    )
                })?;
        }
        Ok(())
    }

    /// Runs `ringkv bench` (YCSB a, quorum, 8 connections) against the first running node's
    /// Redis port until stopped, so that the effect of a fault shows in the dashboard.
    fn start_load(&mut self) -> anyhow::Result<()> {
        if let Some(load) = &mut self.load {
            if load.try_wait()?.is_none() {
                return Ok(());
            }
        }
        let target = self
            .nodes
            .iter()
            .find(|node| node.state == ProcessState::Running)
            .context("no node is running")?;
        let load = Command::new(&self.executable)
            .args(["bench", "--target", &format!("redis://{}", target.resp)])
            .args([
                "--workload",
                "a",
                "--records",
                "10000",
                "--duration",
                "86400",
            ])
            .args(["-c", "8", "--consistency", "quorum"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the load")?;
        self.load = Some(load);
        Ok(())
    }
}

/// Serves the supervisor's control API on `listener` for the nodes' `/v1/chaos`:
/// `GET /state` and `POST /{target}/{action}`.
async fn serve_control(
    listener: std::net::TcpListener,
    supervisor: Arc<Mutex<Supervisor>>,
) -> anyhow::Result<()> {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    type Shared = Arc<Mutex<Supervisor>>;
    async fn state(State(supervisor): State<Shared>) -> axum::response::Response {
        let state = tokio::task::spawn_blocking(move || lock(&supervisor).state()).await;
        match state {
            Ok(state) => axum::Json(state).into_response(),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        }
    }
    async fn act(
        State(supervisor): State<Shared>,
        Path((target, action)): Path<(String, String)>,
    ) -> axum::response::Response {
        let done =
            tokio::task::spawn_blocking(move || lock(&supervisor).act(&target, &action)).await;
        match done {
            Ok(Ok(state)) => axum::Json(state).into_response(),
            Ok(Err((status, message))) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let body =
                    serde_json::json!({ "error": { "code": "chaos_refused", "message": message } });
                (status, axum::Json(body)).into_response()
            }
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        }
    }
    let router = axum::Router::new()
        .route("/state", axum::routing::get(state))
        .route("/{target}/{action}", axum::routing::post(act))
        .with_state(supervisor);
    listener.set_nonblocking(true)?;
    axum::serve(tokio::net::TcpListener::from_std(listener)?, router).await?;
    Ok(())
}

/// The supervisor, even if a thread panicked holding it.
fn lock(supervisor: &Mutex<Supervisor>) -> std::sync::MutexGuard<'_, Supervisor> {
    supervisor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    // The chaos panel's actions reach this process through every node (`--chaos-control`).
    let control =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the chaos control")?;
    let control_address = control.local_addr()?.to_string();
    let executable = std::env::current_exe().context("cannot find the ringkv executable")?;
    let mut supervisor = Supervisor {
        executable,
        nodes: Vec::new(),
        load: None,
    };
    let mut seed: Option<String> = None;
    for node in 0..args.nodes {
        let name = format!("node-{node}");
        let data_dir = args.data_dir.join(&name);
        let addresses = [port(node, 0)?, port(node, 1)?, port(node, 2)?];
        let node_args = |[http, resp, listen]: &[String; 3]| -> Vec<String> {
            let mut list: Vec<String> = vec![
                "server".into(),
                "--node-id".into(),
                name.clone(),
                "--engine".into(),
                args.engine.clone(),
                "--data-dir".into(),
                data_dir.to_string_lossy().into_owned(),
                "--http".into(),
                http.clone(),
                "--resp".into(),
                resp.clone(),
                "--listen".into(),
                listen.clone(),
                "--zone".into(),
                format!("zone-{}", node % zones),
                "--chaos-control".into(),
                control_address.clone(),
            ];
            if let Some(seed) = &seed {
                list.extend(["--join".into(), seed.clone()]);
            }
            list
        };
        let (child, line) = supervisor.spawn(&name, &node_args(&addresses))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("?")
                .to_owned()
        };
        let bound = [field("http="), field("resp="), field("cluster=")];
        println!(
            "{name} http={} resp={} cluster={}",
            bound[0], bound[1], bound[2]
        );
        // A restart must come back on the same addresses, whatever port 0 chose.
        let restart_args = node_args(&bound);
        seed.get_or_insert_with(|| bound[2].clone());
        supervisor.nodes.push(NodeProcess {
            name,
            args: restart_args,
            child: Some(child),
            state: ProcessState::Running,
            http: bound[0].clone(),
            resp: bound[1].clone(),
            cluster: bound[2].clone(),
            isolated: false,
            slow: false,
        });
    }
    eprintln!(
        "{} nodes running; the dashboard is at http://{}/ (its chaos panel kills, pauses, \
         restarts, isolates and slows nodes); Ctrl-C stops them",
        args.nodes, supervisor.nodes[0].http
    );
    let supervisor = Arc::new(Mutex::new(supervisor));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(anyhow::Error::from),
            _ = terminate.recv() => Ok(()),
            served = serve_control(control, Arc::clone(&supervisor)) => served,
        }
    })?;
    // An action under way (a restart waits for its node) holds the supervisor: let it end,
    // so that dropping the supervisor below stops every node.
    runtime.shutdown_timeout(START_TIMEOUT + Duration::from_secs(5));
    drop(supervisor);
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
