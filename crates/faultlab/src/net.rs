//! The lab's network: where each node lives and how links between nodes are cut or slowed.
//!
//! - As root, each node gets a Linux network namespace of its own, joined to the others by a
//!   bridge in the lab's namespace through a veth pair, with an address on a /24 of its own.
//!   A link is cut by routing the peer's address, inside a namespace, into a veth pair that
//!   goes nowhere, with a fixed neighbour entry: packets vanish silently, as on a real
//!   partition (connections time out; nothing is refused). Cutting one side only is a
//!   one-way partition. A node's links are slowed by a queueing discipline on its interface
//!   (`netem` delay where the kernel has it, otherwise a `tbf` rate limit).
//! - Otherwise every node gets its own loopback address (127.x.y.z): kill, pause, restart,
//!   wipe, join, leave and remove work; cutting and slowing links need root and say so.
//!
//! Everything made is removed when the [`Network`] is dropped.

use std::collections::BTreeSet;
use std::process::Command;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command of iproute2 failed.
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    /// The operation needs network namespaces, which need root.
    #[error("{0} needs network namespaces, which need root")]
    NeedsNamespaces(&'static str),
}

/// The lab's network.
pub struct Network {
    kind: Kind,
    /// Links cut, as (from, to): packets from node `from` to node `to` are dropped.
    cut: BTreeSet<(usize, usize)>,
    /// Nodes whose interface has a queueing discipline added.
    slowed: BTreeSet<usize>,
    /// Node namespaces made so far (index → made).
    made: usize,
}

enum Kind {
    /// Namespaces on a bridge: `10.a.b.0/24`, the bridge at `.1`, node `i` at `.(10 + i)`.
    Namespaces { tag: String, subnet: [u8; 3] },
    /// Loopback addresses `127.a.b.(10 + i)`.
    Loopback { subnet: [u8; 3] },
}

/// Nodes a lab may have.
pub const NODES_MAX: usize = 200;

impl Network {
    /// A new network: namespaces when running as root (and `loopback` is false), loopback
    /// addresses otherwise. A random tag keeps labs that run at once apart.
    pub fn new(loopback: bool) -> Result<Self, NetError> {
        let tag: u16 = rand::random();
        let subnet = [10, 100 + (tag % 100) as u8, (tag / 100 % 250) as u8];
        let kind = if !loopback && is_root() {
            Kind::Namespaces {
                tag: format!("rkv{tag:04x}"),
                subnet,
            }
        } else {
            Kind::Loopback {
                subnet: [127, subnet[1], subnet[2]],
            }
        };
        let network = Self {
            kind,
            cut: BTreeSet::new(),
            slowed: BTreeSet::new(),
            made: 0,
        };
        if let Kind::Namespaces { tag, subnet } = &network.kind {
            // Made after `network`, so that its drop removes the bridge if a step fails.
            let bridge = format!("{tag}b");
            run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
            let address = format!("{}.1/24", dotted(*subnet));
            run(&["ip", "addr", "add", &address, "dev", &bridge])?;
            run(&["ip", "link", "set", &bridge, "up"])?;
        }
        Ok(network)
    }

    /// Whether nodes live in namespaces of their own (links can be cut and slowed).
    pub fn has_namespaces(&self) -> bool {
        matches!(self.kind, Kind::Namespaces { .. })
    }

    /// What the lab runs on, for reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Namespaces { subnet, .. } => {
                format!("network namespaces on a bridge, {}.0/24", dotted(*subnet))
            }
            Kind::Loopback { subnet } => format!("loopback addresses {}.*", dotted(*subnet)),
        }
    }

    /// Node `index`'s address.
    pub fn address(&self, index: usize) -> String {
        let subnet = match &self.kind {
            Kind::Namespaces { subnet, .. } | Kind::Loopback { subnet } => *subnet,
        };
        format!("{}.{}", dotted(subnet), 10 + index)
    }

    /// Makes node `index`'s place on the network (its namespace, wired to the bridge); nothing
    /// to do on loopback. Called once per node, in index order.
    pub fn add_node(&mut self, index: usize) -> Result<(), NetError> {
        assert!(
            index < NODES_MAX && index == self.made,
            "nodes are added in order"
        );
        self.made += 1;
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return Ok(());
        };
        let (namespace, host_side) = (format!("{tag}n{index}"), format!("{tag}h{index}"));
        let bridge = format!("{tag}b");
        run(&["ip", "netns", "add", &namespace])?;
        run(&[
            "ip", "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns",
            &namespace,
        ])?;
        run(&["ip", "link", "set", &host_side, "master", &bridge, "up"])?;
        let address = format!("{}/24", self.address(index));
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &namespace];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&["ip", "addr", "add", &address, "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        // Where cut links lead: a veth pair whose far end owns no address.
        inside(&[
            "ip", "link", "add", "cut0", "type", "veth", "peer", "name", "cut1",
        ])?;
        inside(&["ip", "link", "set", "cut0", "up"])?;
        inside(&["ip", "link", "set", "cut1", "up"])?;
        Ok(())
    }

    /// The command prefix that runs a program as node `index` (inside its namespace).
    pub fn command_prefix(&self, index: usize) -> Vec<String> {
        match &self.kind {
            Kind::Namespaces { tag, .. } => vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                format!("{tag}n{index}"),
            ],
            Kind::Loopback { .. } => Vec::new(),
        }
    }

    /// Drops every packet node `from` sends to node `to` (a one-way cut).
    pub fn cut(&mut self, from: usize, to: usize) -> Result<(), NetError> {
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return Err(NetError::NeedsNamespaces("cutting a link"));
        };
        if !self.cut.insert((from, to)) {
            return Ok(());
        }
        let namespace = format!("{tag}n{from}");
        let peer = self.address(to);
        let route = format!("{peer}/32");
        run(&[
            "ip", "netns", "exec", &namespace, "ip", "route", "add", &route, "dev", "cut0",
        ])?;
        // A fixed neighbour entry: no ARP query, so nothing tells the sender the peer is gone.
        run(&[
            "ip",
            "netns",
            "exec",
            &namespace,
            "ip",
            "neigh",
            "replace",
            &peer,
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "cut0",
            "nud",
            "permanent",
        ])
    }

    /// Restores every cut link; returns how many there were.
    pub fn heal(&mut self) -> Result<usize, NetError> {
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return Ok(0);
        };
        let cut = std::mem::take(&mut self.cut);
        let count = cut.len();
        for (from, to) in cut {
            let namespace = format!("{tag}n{from}");
            let route = format!("{}/32", self.address(to));
            run(&[
                "ip", "netns", "exec", &namespace, "ip", "route", "del", &route,
            ])?;
        }
        Ok(count)
    }

    /// Delays every packet node `index` sends by about `delay_ms`: with `netem` where the
    /// kernel has it, otherwise by a `tbf` rate limit that queues packets for about that long
    /// under load. Returns which was used.
    pub fn slow(&mut self, index: usize, delay_ms: u64) -> Result<&'static str, NetError> {
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return Err(NetError::NeedsNamespaces("slowing a link"));
        };
        let namespace = format!("{tag}n{index}");
        let prefix = ["ip", "netns", "exec", namespace.as_str()];
        let tc = |args: &[&str]| {
            let mut all = prefix.to_vec();
            all.extend_from_slice(args);
            run(&all)
        };
        self.slowed.insert(index);
        let delay = format!("{delay_ms}ms");
        let netem = [
            "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay",
        ];
        if tc(&[&netem[..], &[delay.as_str()]].concat()).is_ok() {
            return Ok("netem");
        }
        let latency = format!("{}ms", delay_ms.max(1) * 4);
        tc(&[
            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst",
            "16kb", "latency", &latency,
        ])?;
        Ok("tbf")
    }

    /// Takes node `index`'s added delay away.
    pub fn unslow(&mut self, index: usize) -> Result<(), NetError> {
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return Ok(());
        };
        if self.slowed.remove(&index) {
            let namespace = format!("{tag}n{index}");
            run(&[
                "ip", "netns", "exec", &namespace, "tc", "qdisc", "del", "dev", "eth0", "root",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let Kind::Namespaces { tag, .. } = &self.kind else {
            return;
        };
        // Deleting a namespace deletes its end of each veth pair, and so the pair.
        for index in 0..self.made {
            let _ = run(&["ip", "netns", "del", &format!("{tag}n{index}")]);
        }
        let _ = run(&["ip", "link", "del", &format!("{tag}b")]);
    }
}

/// Whether this process runs as root (namespaces need it).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn dotted(subnet: [u8; 3]) -> String {
    format!("{}.{}.{}", subnet[0], subnet[1], subnet[2])
}

/// Runs a command, failing with its standard error.
fn run(args: &[&str]) -> Result<(), NetError> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|error| NetError::Command {
            command: args.join(" "),
            message: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
