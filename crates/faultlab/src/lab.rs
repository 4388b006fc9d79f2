//! A lab: real `ringkv server` processes, one per node, on the lab's [`Network`], and the
//! faults an operator's worst day brings: kill -9, pause (SIGSTOP) and resume, restart,
//! a wiped data directory, partitions (and one-way ones), slow links, nodes joining, leaving
//! and being removed. Every fault is logged with the time it was injected.
//!
//! Each node `i` is `node-i` in zone `zone-i`, at its own address with the same ports (REST
//! 7000, Redis 7001, cluster 7946), so a node restarts at the address its peers know. Every
//! node shares one cluster secret.

use crate::net::{NetError, Network};
use ringkv_client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Why the lab could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The network could not be set up or changed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A node could not be started, stopped or reached.
    #[error("node-{node}: {message}")]
    Node { node: usize, message: String },
    /// Something did not happen within its bound.
    #[error("{what}: not within {within:?}")]
    Timeout { what: String, within: Duration },
    /// The scratch directory could not be made or changed.
    #[error("scratch directory: {0}")]
    Io(#[from] std::io::Error),
}

/// What a node is doing, as the lab made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// Stopped by SIGSTOP.
    Paused,
    /// Not running (killed or stopped); may be restarted.
    Down,
    /// Out of the cluster for good (left or removed).
    Gone,
}

struct LabNode {
    child: Option<Child>,
    state: NodeState,
}

/// How a lab's nodes run.
#[derive(Clone, Debug)]
pub struct LabSettings {
    /// The `ringkv` binary.
    pub ringkv: PathBuf,
    /// Use loopback addresses even as root.
    pub loopback: bool,
    /// Lines of TOML every node's configuration file holds.
    pub config: String,
}

/// A running lab.
pub struct Lab {
    settings: LabSettings,
    network: Network,
    nodes: Vec<LabNode>,
    dir: tempfile::TempDir,
    started: Instant,
    faults: Vec<(Duration, String)>,
    targets: Arc<RwLock<Vec<String>>>,
}

/// The REST port of every node.
const HTTP_PORT: u16 = 7000;
/// The Redis-protocol port of every node.
const RESP_PORT: u16 = 7001;
/// The cluster port of every node.
const CLUSTER_PORT: u16 = 7946;
/// How long a node may take to serve after it is started.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long cluster-wide changes (liveness, leaving) may take.
const CHANGE_WITHIN: Duration = Duration::from_secs(60);

impl Lab {
    /// A lab with no nodes yet.
    pub fn new(settings: LabSettings) -> Result<Self, LabError> {
        let network = Network::new(settings.loopback)?;
        Ok(Self {
            settings,
            network,
            nodes: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("ringkv-faultlab")
                .tempdir()?,
            started: Instant::now(),
            faults: Vec::new(),
            targets: Arc::default(),
        })
    }

    /// What the lab runs on.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Starts a node that joins the cluster under way and waits until it serves (a fault:
    /// logged); returns its index.
    pub fn add_node(&mut self) -> Result<usize, LabError> {
        let index = self.start_node()?;
        self.log(format!("node-{index} joins"));
        Ok(index)
    }

    /// Starts a node that joins the cluster (the first one founds it) and waits until it
    /// serves; returns its index.
    fn start_node(&mut self) -> Result<usize, LabError> {
        let index = self.nodes.len();
        self.network.add_node(index)?;
        self.nodes.push(LabNode {
            child: None,
            state: NodeState::Down,
        });
        self.spawn(index)?;
        Ok(index)
    }

    /// Starts `count` nodes and waits until each sees all of them alive.
    pub fn start_cluster(&mut self, count: usize) -> Result<(), LabError> {
        for _ in 0..count {
            self.start_node()?;
        }
        self.await_alive()
    }

    /// The REST URL of node `index`.
    pub fn url(&self, index: usize) -> String {
        format!("http://{}:{HTTP_PORT}", self.network.address(index))
    }

    /// The URLs clients send requests to: every node not known to be down or gone (paused
    /// and partitioned nodes included: clients cannot tell). The workload reads this list
    /// before each request.
    pub fn targets(&self) -> Arc<RwLock<Vec<String>>> {
        Arc::clone(&self.targets)
    }

    /// Nodes in the cluster and running (up or paused).
    pub fn members(&self) -> Vec<usize> {
        self.indexes(|state| matches!(state, NodeState::Up | NodeState::Paused))
    }

    /// Nodes in state `Up`.
    pub fn up(&self) -> Vec<usize> {
        self.indexes(|state| state == NodeState::Up)
    }

    fn indexes(&self, keep: impl Fn(NodeState) -> bool) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| keep(self.nodes[i].state))
            .collect()
    }

    /// The faults injected so far, each with when (since the lab started).
    pub fn faults(&self) -> &[(Duration, String)] {
        &self.faults
    }

    /// A client of node `index` whose requests give up after `timeout`.
    pub fn client(&self, index: usize, timeout: Duration) -> Client {
        Client::with_timeout(&self.url(index), timeout)
    }

    /// Kills node `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) -> Result<(), LabError> {
        self.signal(index, "CONT")?;
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.set_state(index, NodeState::Down);
        self.log(format!("kill -9 node-{index}"));
        Ok(())
    }

    /// Pauses node `index` (SIGSTOP): it holds its connections and answers nothing.
    pub fn pause(&mut self, index: usize) -> Result<(), LabError> {
        self.signal(index, "STOP")?;
        self.set_state(index, NodeState::Paused);
        self.log(format!("pause node-{index}"));
        Ok(())
    }

    /// Resumes a paused node (SIGCONT).
    pub fn resume(&mut self, index: usize) -> Result<(), LabError> {
        self.signal(index, "CONT")?;
        self.set_state(index, NodeState::Up);
        self.log(format!("resume node-{index}"));
        Ok(())
    }

    /// Starts a down node again on its data directory.
    pub fn restart(&mut self, index: usize) -> Result<(), LabError> {
        self.spawn(index)?;
        self.log(format!("restart node-{index}"));
        Ok(())
    }

    /// Empties a down node's data directory, as a lost disk would.
    pub fn wipe(&mut self, index: usize) -> Result<(), LabError> {
        assert_eq!(
            self.nodes[index].state,
            NodeState::Down,
            "only a down node is wiped"
        );
        std::fs::remove_dir_all(self.data_dir(index))?;
        self.log(format!("wipe node-{index}'s data directory"));
        Ok(())
    }

    /// Cuts every link between the nodes of `side` and the others, both ways.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), LabError> {
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if side.contains(&a) != side.contains(&b) {
                    self.network.cut(a, b)?;
                }
            }
        }
        self.log(format!("partition {side:?} from the rest"));
        Ok(())
    }

    /// Cuts the link from `from` to `to` only: what `from` sends `to` is lost, what `to` sends
    /// `from` arrives.
    pub fn cut_one_way(&mut self, from: usize, to: usize) -> Result<(), LabError> {
        self.network.cut(from, to)?;
        self.log(format!("cut node-{from} -> node-{to} (one way)"));
        Ok(())
    }

    /// Restores every cut link.
    pub fn heal(&mut self) -> Result<(), LabError> {
        if self.network.heal()? > 0 {
            self.log("heal every link".into());
        }
        Ok(())
    }

    /// Delays node `index`'s packets by about `delay_ms`.
    pub fn slow(&mut self, index: usize, delay_ms: u64) -> Result<(), LabError> {
        let how = self.network.slow(index, delay_ms)?;
        self.log(format!("slow node-{index}'s link by {delay_ms} ms ({how})"));
        Ok(())
    }

    /// Takes node `index`'s added delay away.
    pub fn unslow(&mut self, index: usize) -> Result<(), LabError> {
        self.network.unslow(index)?;
        self.log(format!("node-{index}'s link back to speed"));
        Ok(())
    }

    /// Has node `index` leave the cluster (`ringkv cluster leave`), waits until it has handed
    /// its ranges off and left, and stops it.
    pub fn leave(&mut self, index: usize) -> Result<(), LabError> {
        self.log(format!("node-{index} leaves"));
        let client = self.client(index, Duration::from_secs(10));
        client
            .leave()
            .map_err(|error| self.node_error(index, error))?;
        self.wait_for(&format!("node-{index} has left"), CHANGE_WITHIN, || {
            client.leave_progress().is_ok_and(|p| p.state == "left")
        })?;
        self.stop(index)?;
        self.set_state(index, NodeState::Gone);
        Ok(())
    }

    /// Kills node `index`, waits until the others see it down, and removes it from the ring
    /// (`ringkv cluster remove`).
    pub fn remove(&mut self, index: usize) -> Result<(), LabError> {
        if self.nodes[index].state != NodeState::Down {
            self.kill(index)?;
        }
        let id = format!("node-{index}");
        let asker = *self.up().first().expect("a node is up to ask");
        let client = self.client(asker, Duration::from_secs(10));
        self.wait_for(&format!("{id} is seen down"), CHANGE_WITHIN, || {
            client.cluster().is_ok_and(|view| {
                view.members
                    .iter()
                    .any(|m| m.id == id && m.liveness == "down")
            })
        })?;
        client
            .remove_member(&id)
            .map_err(|error| self.node_error(asker, error))?;
        self.set_state(index, NodeState::Gone);
        self.log(format!("remove {id}"));
        Ok(())
    }

    /// Waits until every up node sees every member (up or paused) alive and done joining.
    pub fn await_alive(&self) -> Result<(), LabError> {
        let members: Vec<String> = self.members().iter().map(|i| format!("node-{i}")).collect();
        for index in self.up() {
            let client = self.client(index, Duration::from_secs(5));
            // What the node saw last, for the error if it never sees them all.
            let mut seen = String::from("no answer");
            let waited = self.wait_for(
                &format!("node-{index} sees {members:?} alive"),
                CHANGE_WITHIN,
                || match client.cluster() {
                    Ok(view) => {
                        seen = view
                            .members
                            .iter()
                            .map(|m| format!("{} {} {}", m.id, m.liveness, m.status))
                            .collect::<Vec<_>>()
                            .join(", ");
                        members.iter().all(|id| {
                            view.members.iter().any(|m| {
                                &m.id == id && m.liveness == "alive" && m.status == "normal"
                            })
                        })
                    }
                    Err(error) => {
                        seen = error.to_string();
                        false
                    }
                },
            );
            if let Err(LabError::Timeout { what, within }) = waited {
                return Err(LabError::Timeout {
                    what: format!("{what} (it last saw: {seen})"),
                    within,
                });
            }
            waited?;
        }
        Ok(())
    }

    /// Waits until anti-entropy has converged: every pair of up nodes has equal tree roots
    /// for each other over the keys they share, in `keyspace`. Returns how long it took.
    pub fn converge(&self, keyspace: &str, within: Duration) -> Result<Duration, LabError> {
        let started = Instant::now();
        let up = self.up();
        let clients: Vec<(usize, Client)> = up
            .iter()
            .map(|&i| (i, self.client(i, Duration::from_secs(30))))
            .collect();
        self.wait_for("every replica's tree roots agree", within, || {
            let mut roots = Vec::new();
            for (index, client) in &clients {
                match client.roots(keyspace) {
                    Ok(found) => roots.push((format!("node-{index}"), found)),
                    Err(_) => return false,
                }
            }
            roots.iter().all(|(a, of_a)| {
                roots.iter().filter(|(b, _)| b != a).all(
                    |(b, of_b)| matches!((of_a.get(b), of_b.get(a)), (Some(x), Some(y)) if x == y),
                )
            })
        })?;
        Ok(started.elapsed())
    }

    /// The sum over the up nodes of a metric's value (a counter or gauge without labels, as
    /// `/metrics` shows it); a node that does not answer counts 0.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        self.up()
            .iter()
            .filter_map(|&index| {
                let text = agent
                    .get(&format!("{}/metrics", self.url(index)))
                    .call()
                    .ok()?
                    .body_mut()
                    .read_to_string()
                    .ok()?;
                text.lines().find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(" ")?
                        .parse::<f64>()
                        .ok()
                })
            })
            .sum()
    }

    /// Polls `check` every 250 ms until it holds, for at most `within`.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + within;
        loop {
            if check() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: what.to_owned(),
                    within,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Where node `index`'s log is.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}.log"))
    }

    fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}"))
    }

    /// Starts node `index`'s process, joining through the first other member, and waits until
    /// it serves.
    fn spawn(&mut self, index: usize) -> Result<(), LabError> {
        let address = self.network.address(index);
        let config = self.dir.path().join(format!("node-{index}.toml"));
        // Every lab cluster runs with a cluster secret, as a real one should.
        let secret = self.dir.path().join("cluster-secret");
        if !secret.exists() {
            let random: [u8; 32] = rand::random();
            let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&secret, text)?;
        }
        let settings = format!(
            // The workload and checker reach the nodes from outside their namespaces, and
            // the lab makes no users: a trusted network, as protected_mode = false says.
            "{}\ncluster_secret_file = {:?}\nprotected_mode = false\n",
            self.settings.config,
            secret.display().to_string()
        );
        std::fs::write(&config, settings)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))?;
        let seed = self.members().into_iter().find(|&i| i != index);
        let mut args: Vec<String> = self.network.command_prefix(index);
        args.push(self.settings.ringkv.display().to_string());
        args.extend(
            [
                "server",
                "--config",
                &config.display().to_string(),
                "--node-id",
                &format!("node-{index}"),
                "--data-dir",
                &self.data_dir(index).display().to_string(),
                "--http",
                &format!("{address}:{HTTP_PORT}"),
                "--resp",
                &format!("{address}:{RESP_PORT}"),
                "--listen",
                &format!("{address}:{CLUSTER_PORT}"),
                "--zone",
                &format!("zone-{index}"),
            ]
            .map(str::to_owned),
        );
        if let Some(seed) = seed {
            args.push("--join".into());
            args.push(format!("{}:{CLUSTER_PORT}", self.network.address(seed)));
        }
        let child = Command::new(&args[0])
            .args(&args[1..])
            .env(
                "RINGKV_LOG",
                std::env::var("RINGKV_FAULTLAB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|error| LabError::Node {
                node: index,
                message: format!("cannot start {}: {error}", args[0]),
            })?;
        self.nodes[index].child = Some(child);
        let client = self.client(index, Duration::from_secs(2));
        self.wait_for(&format!("node-{index} serves"), START_WITHIN, || {
            client.cluster().is_ok()
        })?;
        self.set_state(index, NodeState::Up);
        Ok(())
    }

    /// Stops node `index` with SIGTERM, as an operator would, and waits for it to exit.
    fn stop(&mut self, index: usize) -> Result<(), LabError> {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.set_state(index, NodeState::Down);
        Ok(())
    }

    fn signal(&self, index: usize, signal: &str) -> Result<(), LabError> {
        if let Some(child) = &self.nodes[index].child {
            Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()?;
        }
        Ok(())
    }

    fn set_state(&mut self, index: usize, state: NodeState) {
        self.nodes[index].state = state;
        let targets = self.members().iter().map(|&i| self.url(i)).collect();
        *self.targets.write().expect("no writer panics") = targets;
    }

    fn log(&mut self, fault: String) {
        self.faults.push((self.started.elapsed(), fault));
    }

    fn node_error(&self, node: usize, error: ringkv_client::ClientError) -> LabError {
        LabError::Node {
            node,
            message: error.to_string(),
        }
    }

    /// The lab's scratch directory (data directories, configurations, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("RINGKV_FAULTLAB_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a scratch dir"));
            eprintln!("keeping the lab's directory: {}", dir.keep().display());
        }
        for index in 0..self.nodes.len() {
            let _ = self.signal(index, "CONT");
            if let Some(mut child) = self.nodes[index].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
