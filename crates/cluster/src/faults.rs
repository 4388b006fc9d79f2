//! Network faults injected between nodes, for the chaos mode of dev clusters: links to some
//! peers cut (a partition) and latency added to this node's messages. Gossip and the RPC
//! client ask here before each message; with no fault set, that is one relaxed atomic load.
//!
//! Only a node started by `ringkv dev-cluster` accepts faults (its REST API refuses them
//! otherwise). On loopback every node shares one network, so a partition cannot be made in the
//! kernel without root and a namespace per node, as the fault lab does; cutting links here
//! gives the same effect to the cluster: each side stops hearing the other, its failure
//! detector declares the other side down, and requests needing replicas there fail over.

use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The most latency that may be added to a node's messages.
pub const DELAY_MAX: Duration = Duration::from_secs(10);

/// The faults on this node's links.
#[derive(Default)]
pub struct LinkFaults {
    /// Whether any fault is set: the fast path's only check.
    active: AtomicBool,
    /// Cluster addresses of the peers this node neither sends to nor hears from.
    blocked: RwLock<BTreeSet<String>>,
    /// Milliseconds added before each message this node sends, and each RPC answer it gives.
    delay_ms: AtomicU64,
}

impl LinkFaults {
    /// Sets the faults: the peers cut off (by cluster address) and the added latency,
    /// replacing what was set before. No peers and no latency heals every link.
    pub fn set(&self, blocked: BTreeSet<String>, delay: Duration) {
        let delay = delay.min(DELAY_MAX);
        let active = !blocked.is_empty() || !delay.is_zero();
        *self.blocked.write() = blocked;
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        self.active.store(active, Ordering::Release);
    }

    /// Whether messages to or from the peer at `address` are dropped.
    pub fn blocks(&self, address: &str) -> bool {
        self.active.load(Ordering::Acquire) && self.blocked.read().contains(address)
    }

    /// [`LinkFaults::blocks`] for a socket address.
    pub fn blocks_addr(&self, address: &std::net::SocketAddr) -> bool {
        self.active.load(Ordering::Acquire) && self.blocked.read().contains(&address.to_string())
    }

    /// The latency to add before a message, if any.
    pub fn delay(&self) -> Option<Duration> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let delay = self.delay_ms.load(Ordering::Relaxed);
        (delay > 0).then(|| Duration::from_millis(delay))
    }

    /// The peers cut off and the latency added, as set.
    pub fn current(&self) -> (Vec<String>, u64) {
        (
            self.blocked.read().iter().cloned().collect(),
            self.delay_ms.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_until_healed() {
        let faults = LinkFaults::default();
        assert!(!faults.blocks("127.0.0.1:1") && faults.delay().is_none());
        faults.set(
            BTreeSet::from(["127.0.0.1:1".to_owned()]),
            Duration::from_millis(50),
        );
        assert!(faults.blocks("127.0.0.1:1"));
        assert!(faults.blocks_addr(&"127.0.0.1:1".parse().unwrap()));
        assert!(!faults.blocks("127.0.0.1:2"));
        assert_eq!(faults.delay(), Some(Duration::from_millis(50)));
        faults.set(BTreeSet::new(), Duration::from_secs(3600));
        assert!(!faults.blocks("127.0.0.1:1"));
        assert_eq!(faults.delay(), Some(DELAY_MAX));
        faults.set(BTreeSet::new(), Duration::ZERO);
        assert!(faults.delay().is_none());
    }
}
