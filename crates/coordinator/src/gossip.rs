//! The membership service of a node: foca's SWIM state machine (`ringkv_cluster::membership`)
//! driven over UDP on the `--listen` address, with timers on the tokio clock. It starts from
//! the `--join` seeds, answers who is in the cluster for `/v1/cluster`, and keeps the
//! [`ClusterView`] — ring plus liveness — that coordinators route requests by.
//!
//! The ring holds every node ever seen that has not left for good: a node that stops or
//! crashes is *down*, not gone, and keeps owning its keys (reads and writes skip it), as in
//! Dynamo and Cassandra. Only a node announcing `left`, a new node taking over its address,
//! or an operator's `ringkv cluster remove` of a dead node ([`Gossip::remove_member`])
//! removes it; a removed node stays out of the ring unless it comes back as a new
//! generation (restarted, so its incarnation is newer).

use parking_lot::{Mutex, RwLock};
use ringkv_cluster::auth::ClusterKey;
use ringkv_cluster::membership::{Liveness, Membership, NodeIdentity, NodeStatus};
use ringkv_core::ring::{Member, Ring, VNODES_DEFAULT};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Largest gossip datagram read (foca's LAN packets are at most 1,400 bytes).
const DATAGRAM_BYTES_MAX: usize = 64 * 1024;

/// Timer events waiting to be handled.
const TIMER_QUEUE_MAX: usize = 4096;

/// How often a node no member has answered since its identity changed announces itself
/// again ([`ringkv_cluster::membership::Membership::rejoin_if_isolated`]).
const REJOIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What the node is told as membership changes.
pub struct Hooks {
    /// Called with every ring member (but this node) whenever the set changes, so it can be
    /// saved and the ring rebuilt at the next start before anyone is heard from.
    pub members_changed: Box<dyn Fn(Vec<NodeIdentity>) + Send + Sync>,
    /// Called with a member's address when the failure detector finds it alive again after
    /// suspecting it or declaring it down, so connections to it stop backing off at once.
    pub back_alive: Box<dyn Fn(&str) + Send + Sync>,
}

/// Who is in the cluster, as this node sees it.
pub struct Gossip {
    membership: Mutex<Membership>,
    /// Every node in the ring, by id, as last heard of.
    known: Mutex<BTreeMap<String, NodeIdentity>>,
    /// Nodes an operator removed, by id, with the generation they were removed at: gossip of
    /// them at that generation or older is not taken back into the ring.
    removed: Mutex<BTreeMap<String, u64>>,
    view: RwLock<Arc<ClusterView>>,
    /// Whether `view` has this node alone, readable without the lock and the reference count
    /// that taking the view costs (single-node requests check it every time).
    single: std::sync::atomic::AtomicBool,
    hooks: Hooks,
    /// The cluster secret every datagram is tagged with, if one is configured.
    key: Option<Arc<ClusterKey>>,
    /// Links cut and latency added on purpose (chaos mode).
    faults: Arc<ringkv_cluster::faults::LinkFaults>,
    /// The address peers reach this node's gossip on.
    pub address: SocketAddr,
}

/// What membership starts from besides this node's identity.
pub struct Start<'a> {
    /// Seed nodes to join through (`--join`).
    pub seeds: &'a [String],
    /// The ring members saved at the last run: in the ring at once (as down until heard
    /// from, so requests needing them fail rather than a restarted node serving alone), and
    /// asked to let this node back in, like the seeds.
    pub remembered: Vec<NodeIdentity>,
    /// The nodes removed by an operator, as saved.
    pub removed: BTreeMap<String, u64>,
    /// What the node is told as membership changes.
    pub hooks: Hooks,
    /// The cluster secret datagrams are tagged and checked with, if one is configured.
    pub key: Option<Arc<ClusterKey>>,
    /// Links cut and latency added on purpose (chaos mode).
    pub faults: Arc<ringkv_cluster::faults::LinkFaults>,
}

/// The ring and each member's state, as one immutable snapshot: a request takes the current
/// one and routes by it without holding any lock.
pub struct ClusterView {
    /// This node's id.
    pub me: String,
    /// The ring requests are routed by: every member that has not left and is done joining.
    pub ring: Ring,
    /// The ring once the members now joining have joined; `None` while none is. Writes also
    /// go to the joining members this ring makes a key's replicas, and they stream the rest
    /// of their ranges from the members that hold them ([`crate::join`]).
    pub joining_ring: Option<Ring>,
    /// Each member's settings and liveness, by id (joining members included).
    pub members: HashMap<String, (NodeIdentity, Liveness)>,
}

impl ClusterView {
    fn build(
        me: &NodeIdentity,
        known: &BTreeMap<String, NodeIdentity>,
        seen: &[(NodeIdentity, Liveness)],
    ) -> Self {
        let liveness: HashMap<&str, Liveness> = seen
            .iter()
            .map(|(identity, liveness)| (identity.id.as_str(), *liveness))
            .collect();
        let mut members: HashMap<String, (NodeIdentity, Liveness)> = known
            .values()
            .map(|identity| {
                // Forgotten by foca after long enough down: still down, still a member.
                let state = liveness
                    .get(identity.id.as_str())
                    .copied()
                    .unwrap_or(Liveness::Down);
                (identity.id.clone(), (identity.clone(), state))
            })
            .collect();
        members.insert(me.id.clone(), (me.clone(), Liveness::Alive));
        let ring_of = |keep: &dyn Fn(&NodeIdentity) -> bool| {
            let chosen: Vec<Member> = members
                .values()
                .filter(|(identity, _)| keep(identity))
                .map(|(identity, _)| Member {
                    id: identity.id.clone(),
                    zone: identity.zone.clone(),
                    weight: identity.weight.max(1),
                })
                .collect();
            Ring::new(&chosen, VNODES_DEFAULT)
        };
        let any_joining = members
            .values()
            .any(|(identity, _)| identity.status == NodeStatus::Joining);
        Self {
            me: me.id.clone(),
            ring: ring_of(&|identity| identity.status != NodeStatus::Joining),
            joining_ring: any_joining.then(|| ring_of(&|_| true)),
            members,
        }
    }

    /// The view of a node alone in its ring.
    pub fn alone(id: &str, zone: &str, weight: u32) -> Self {
        let me = NodeIdentity {
            id: id.to_owned(),
            address: String::new(),
            http: String::new(),
            zone: zone.to_owned(),
            weight,
            status: NodeStatus::Normal,
            generation: 0,
        };
        Self::build(&me, &BTreeMap::new(), &[])
    }

    /// Whether requests should skip `id`: declared down by the failure detector.
    pub fn is_down(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_none_or(|(_, liveness)| *liveness == Liveness::Down)
    }

    /// The RPC address of `id`.
    pub fn address(&self, id: &str) -> Option<&str> {
        self.members
            .get(id)
            .map(|(identity, _)| identity.address.as_str())
    }

    /// Whether this node is alone in the ring (every request is served locally): a node
    /// still joining never is, even before it has heard from anyone.
    pub fn is_single(&self) -> bool {
        self.members.len() == 1 && !self.is_joining(&self.me)
    }

    /// The other members the failure detector does not see down.
    pub fn live_peers(&self) -> impl Iterator<Item = &String> {
        self.members
            .keys()
            .filter(|id| **id != self.me && !self.is_down(id))
    }

    /// Whether member `id` is joining: taking writes and streaming its ranges, not yet
    /// serving them.
    pub fn is_joining(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|(identity, _)| identity.status == NodeStatus::Joining)
    }

    /// The joining members that will be replicas of `key` in a keyspace of `replication`
    /// copies: its writes go to them too, uncounted (none while no member is joining).
    pub fn joining_replicas(&self, key: &[u8], replication: usize) -> Vec<String> {
        let Some(ring) = &self.joining_ring else {
            return Vec::new();
        };
        ring.preference_list(key, replication)
            .into_iter()
            .filter(|member| self.is_joining(&member.id))
            .map(|member| member.id.clone())
            .collect()
    }
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
    /// Every member of the ring, this node first, then by id.
    pub fn members(&self) -> Vec<MemberView> {
        let view = self.view();
        let mut members: Vec<MemberView> = view
            .members
            .values()
            .map(|(identity, liveness)| MemberView::of(identity, *liveness))
            .collect();
        members.sort_by(|a, b| (a.id != view.me, &a.id).cmp(&(b.id != view.me, &b.id)));
        members
    }

    /// The current ring and member states.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.read())
    }

    /// Changes this node's status (leaving, left), spread by gossip from the next message
    /// on; the view follows at once.
    pub fn set_status(&self, status: NodeStatus) -> Result<(), String> {
        self.membership
            .lock()
            .set_status(status)
            .map_err(|error| error.to_string())?;
        self.rebuild();
        Ok(())
    }

    /// Takes node `id` out of the ring as removed at `generation` (and keeps it out until it
    /// returns as a newer generation); `true` if that changed anything.
    pub fn remove_member(&self, id: &str, generation: u64) -> bool {
        {
            let mut removed = self.removed.lock();
            let at = removed.entry(id.to_owned()).or_insert(generation);
            if *at > generation {
                return false;
            }
            *at = generation;
            if self.known.lock().remove(id).is_none() {
                return false;
            }
        }
        self.rebuild();
        (self.hooks.members_changed)(self.known.lock().values().cloned().collect());
        true
    }

    /// The nodes removed by an operator, with the generations they were removed at.
    pub fn removed(&self) -> BTreeMap<String, u64> {
        self.removed.lock().clone()
    }

    /// Builds the view anew from the ring members and what membership knows of them.
    fn rebuild(&self) {
        let (me, seen) = {
            let membership = self.membership.lock();
            (membership.me().clone(), membership.members())
        };
        let fresh = ClusterView::build(&me, &self.known.lock(), &seen);
        let single = fresh.is_single();
        *self.view.write() = Arc::new(fresh);
        self.single
            .store(single, std::sync::atomic::Ordering::Release);
    }

    /// Whether this node is alone in the current view; as `view().is_single()`, but cheap.
    pub fn is_single(&self) -> bool {
        self.single.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Brings the ring members and the view up to date with what membership knows; cheap
    /// when nothing changed.
    fn refresh(&self) {
        let (me, seen) = {
            let membership = self.membership.lock();
            (membership.me().clone(), membership.members())
        };
        let mut known = self.known.lock();
        let removed = self.removed.lock().clone();
        let mut changed = false;
        for (identity, _) in &seen {
            changed |= remember(&mut known, &removed, identity);
        }
        let current = self.view();
        let same_states = current.members.len() == known.len() + 1
            && seen.iter().all(|(identity, liveness)| {
                identity.status == NodeStatus::Left
                    || current.members.get(&identity.id) == Some(&(identity.clone(), *liveness))
            })
            && current
                .members
                .get(&me.id)
                .is_some_and(|(identity, _)| *identity == me);
        if changed || !same_states {
            let fresh = ClusterView::build(&me, &known, &seen);
            for (id, (identity, liveness)) in &fresh.members {
                let was_alive = current
                    .members
                    .get(id)
                    .is_some_and(|(_, before)| *before == Liveness::Alive);
                if *liveness == Liveness::Alive && !was_alive && *id != me.id {
                    (self.hooks.back_alive)(&identity.address);
                }
            }
            let single = fresh.is_single();
            *self.view.write() = Arc::new(fresh);
            self.single
                .store(single, std::sync::atomic::Ordering::Release);
        }
        if changed {
            (self.hooks.members_changed)(known.values().cloned().collect());
        }
    }
}

/// Records what gossip said of a node; `true` if the ring members changed.
fn remember(
    known: &mut BTreeMap<String, NodeIdentity>,
    removed: &BTreeMap<String, u64>,
    identity: &NodeIdentity,
) -> bool {
    let removed_since = removed
        .get(&identity.id)
        .is_some_and(|&at| identity.generation <= at);
    if identity.status == NodeStatus::Left || removed_since {
        return known.remove(&identity.id).is_some();
    }
    if known
        .get(&identity.id)
        .is_some_and(|old| old.generation >= identity.generation)
    {
        return false;
    }
    // A new node on an old node's address replaced it (foca keys members by address).
    known.retain(|id, old| *id == identity.id || old.address != identity.address);
    known.insert(identity.id.clone(), identity.clone());
    true
}

/// Starts the membership service on a bound socket; it runs until `shutdown` turns true.
pub async fn start(
    socket: UdpSocket,
    me: NodeIdentity,
    start: Start<'_>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Arc<Gossip>> {
    let Start {
        seeds,
        remembered,
        removed,
        hooks,
        key,
        faults,
    } = start;
    let address = socket.local_addr()?;
    let mut known = BTreeMap::new();
    for member in remembered {
        if member.id != me.id && member.address != me.address {
            remember(&mut known, &removed, &member);
        }
    }
    let mut membership = Membership::new(me, 16, rand::random());
    let mut contacts: Vec<&str> = seeds.iter().map(String::as_str).collect();
    contacts.extend(known.values().map(|member| member.address.as_str()));
    contacts.sort_unstable();
    contacts.dedup();
    for contact in contacts {
        if let Err(error) = membership.join_via(NodeIdentity::seed(contact)) {
            tracing::warn!(contact, %error, "cannot announce to a member");
        }
    }
    let view = ClusterView::build(membership.me(), &known, &[]);
    let gossip = Arc::new(Gossip {
        membership: Mutex::new(membership),
        known: Mutex::new(known),
        removed: Mutex::new(removed),
        single: std::sync::atomic::AtomicBool::new(view.is_single()),
        view: RwLock::new(Arc::new(view)),
        hooks,
        key,
        faults,
        address,
    });
    tokio::spawn(run(Arc::clone(&gossip), Arc::new(socket), shutdown));
    Ok(gossip)
}

async fn run(gossip: Arc<Gossip>, socket: Arc<UdpSocket>, mut shutdown: watch::Receiver<bool>) {
    let (timers, mut due) = mpsc::channel(TIMER_QUEUE_MAX);
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut rejoin = tokio::time::interval(REJOIN_EVERY);
    rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush(&gossip, &socket, &timers).await;
    loop {
        tokio::select! {
            _ = rejoin.tick() => {
                if let Err(error) = gossip.membership.lock().rejoin_if_isolated() {
                    tracing::debug!(%error, "cannot announce this node again");
                }
            }
            received = socket.recv_from(&mut buffer) => {
                if let Ok((length, from)) = received {
                    if gossip.faults.blocks_addr(&from) {
                        continue;
                    }
                    let datagram = match &gossip.key {
                        Some(key) => key.open_gossip(&buffer[..length]),
                        None => Some(&buffer[..length]),
                    };
                    let Some(datagram) = datagram else {
                        let from = from.to_string();
                        ringkv_cluster::auth::log_refusal(
                            "gossip",
                            &from,
                            "no valid tag of the cluster secret",
                        );
                        continue;
                    };
                    if let Err(error) = gossip.membership.lock().receive(datagram) {
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
        gossip.refresh();
        flush(&gossip, &socket, &timers).await;
    }
    // Tell the others this node is stopping, so they need not wait to declare it down.
    if gossip.membership.lock().leave().is_ok() {
        flush(&gossip, &socket, &timers).await;
    }
}

/// Sends what membership wants sent, and sets the timers it asked for.
async fn flush(
    gossip: &Gossip,
    socket: &Arc<UdpSocket>,
    timers: &mpsc::Sender<foca::Timer<NodeIdentity>>,
) {
    let (outgoing, scheduled) = {
        let mut membership = gossip.membership.lock();
        (membership.outgoing(), membership.timers())
    };
    for (to, bytes) in outgoing {
        let sealed;
        let bytes: &[u8] = match &gossip.key {
            Some(key) => {
                sealed = key.seal_gossip(&bytes);
                &sealed
            }
            None => &bytes,
        };
        if gossip.faults.blocks(&to.address) {
            continue;
        }
        if let Some(delay) = gossip.faults.delay() {
            let (socket, bytes, to) = (Arc::clone(socket), bytes.to_vec(), to.address.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&bytes, &to).await;
            });
            continue;
        }
        if let Err(error) = socket.send_to(bytes, &to.address).await {
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
