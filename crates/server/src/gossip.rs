//! The membership service of a node: foca's SWIM state machine (`ringkv_cluster::membership`)
//! driven over UDP on the `--listen` address, with timers on the tokio clock. It starts from
//! the `--join` seeds, and answers who is in the cluster for `/v1/cluster`.

use parking_lot::Mutex;
use ringkv_cluster::membership::{Liveness, Membership, NodeIdentity, NodeStatus};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Largest gossip datagram read (foca's LAN packets are at most 1,400 bytes).
const DATAGRAM_BYTES_MAX: usize = 64 * 1024;

/// Timer events waiting to be handled.
const TIMER_QUEUE_MAX: usize = 4096;

/// Who is in the cluster, as this node sees it.
pub struct Gossip {
    membership: Mutex<Membership>,
    /// The address peers reach this node's gossip on.
    pub address: SocketAddr,
}

/// One member, for `/v1/cluster`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// Its gossip / RPC address.
    pub address: String,
    /// Its REST address.
    pub http: String,
    /// Its zone.
    pub zone: String,
    /// Its weight.
    pub weight: u32,
    /// joining / normal / leaving / left.
    pub status: String,
    /// alive / suspect / down, as seen from this node.
    pub liveness: String,
}

impl MemberView {
    fn of(identity: &NodeIdentity, liveness: Liveness) -> Self {
        Self {
            id: identity.id.clone(),
            address: identity.address.clone(),
            http: identity.http.clone(),
            zone: identity.zone.clone(),
            weight: identity.weight,
            status: format!("{:?}", identity.status).to_lowercase(),
            liveness: format!("{liveness:?}").to_lowercase(),
        }
    }
}

impl Gossip {
    /// Every member, this node first.
    pub fn members(&self) -> Vec<MemberView> {
        let membership = self.membership.lock();
        let mut members = vec![MemberView::of(membership.me(), Liveness::Alive)];
        members.extend(
            membership
                .members()
                .iter()
                .map(|(identity, liveness)| MemberView::of(identity, *liveness)),
        );
        members
    }
}

/// Binds the gossip socket and starts the service; it runs until `shutdown` turns true.
pub async fn start(
    socket: UdpSocket,
    me: NodeIdentity,
    seeds: &[String],
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Arc<Gossip>> {
    let address = socket.local_addr()?;
    let mut membership = Membership::new(me, 16, rand::random());
    for seed in seeds {
        if let Err(error) = membership.join_via(NodeIdentity::seed(seed)) {
            tracing::warn!(seed, %error, "cannot announce to seed");
        }
    }
    let gossip = Arc::new(Gossip {
        membership: Mutex::new(membership),
        address,
    });
    tokio::spawn(run(Arc::clone(&gossip), Arc::new(socket), shutdown));
    Ok(gossip)
}

async fn run(gossip: Arc<Gossip>, socket: Arc<UdpSocket>, mut shutdown: watch::Receiver<bool>) {
    let (timers, mut due) = mpsc::channel(TIMER_QUEUE_MAX);
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    flush(&gossip, &socket, &timers).await;
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                if let Ok((length, _from)) = received {
                    if let Err(error) = gossip.membership.lock().receive(&buffer[..length]) {
                        tracing::debug!(%error, "dropping a gossip message");
                    }
                }
            }
            Some(timer) = due.recv() => {
                if let Err(error) = gossip.membership.lock().timer(timer) {
                    tracing::debug!(%error, "gossip timer failed");
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        flush(&gossip, &socket, &timers).await;
    }
    // Tell the others this node left on purpose, so they need not wait to declare it down.
    let left = gossip.membership.lock().set_status(NodeStatus::Left);
    if left.is_ok() {
        let _ = gossip.membership.lock().gossip();
    }
    flush(&gossip, &socket, &timers).await;
}

/// Sends what membership wants sent, and sets the timers it asked for.
async fn flush(
    gossip: &Gossip,
    socket: &UdpSocket,
    timers: &mpsc::Sender<foca::Timer<NodeIdentity>>,
) {
    let (outgoing, scheduled) = {
        let mut membership = gossip.membership.lock();
        (membership.outgoing(), membership.timers())
    };
    for (to, bytes) in outgoing {
        if let Err(error) = socket.send_to(&bytes, &to.address).await {
            tracing::debug!(to = %to.address, %error, "gossip send failed");
        }
    }
    for (delay, timer) in scheduled {
        let timers = timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = timers.send(timer).await;
        });
    }
}
