//! Membership: who is in the cluster, with what settings, and who is alive — SWIM gossip
//! and failure detection by foca, kept sans-IO: bytes and timer events go in, bytes to send
//! and timers to set come out, so a test can step a thousand members in one process.
//!
//! A node's settings (addresses, zone, weight, status) ride in its foca identity. Changing
//! them means switching to a new identity with a higher generation; the newer one wins
//! wherever the two meet, and reaches everyone through gossip like any update.

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Config, Foca, Identity, Incarnation, Member, NoCustomBroadcast,
    OwnedNotification, PostcardCodec, State, Timer,
};
use rand::seq::IndexedRandom;
use rand_gossip::rngs::StdRng;
use rand_gossip::SeedableRng;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::time::Duration;

/// Where a node is in its life in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Receiving its share of data; not yet serving it.
    Joining,
    /// A full member.
    Normal,
    /// Handing its data off before leaving.
    Leaving,
    /// Gone for good.
    Left,
}

/// What the cluster knows of a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Its unique name.
    pub id: String,
    /// Where peers reach it (cluster RPC and gossip).
    pub address: String,
    /// Where clients reach its REST API.
    pub http: String,
    /// Its failure domain.
    pub zone: String,
    /// Its relative share of data.
    pub weight: u32,
    /// Its status.
    pub status: NodeStatus,
    /// Bumped on every change, so the newest settings win.
    pub generation: u64,
}

impl NodeIdentity {
    /// A stand-in for a seed node known only by its address (`--join HOST:PORT`). It shares
    /// the seed's address, so the seed's real identity replaces it as soon as one is heard.
    pub fn seed(address: &str) -> Self {
        Self {
            id: String::new(),
            address: address.to_owned(),
            http: String::new(),
            zone: String::new(),
            weight: 0,
            status: NodeStatus::Normal,
            generation: 0,
        }
    }

    /// Whether this is a seed stand-in rather than a real node.
    pub fn is_seed_placeholder(&self) -> bool {
        self.id.is_empty()
    }
}

impl Identity for NodeIdentity {
    /// One member per network address: a node that restarts on the same address replaces
    /// its old self.
    type Addr = String;

    /// A node declared down comes back with a newer generation, and so rejoins at once.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.address.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        match (self.is_seed_placeholder(), adversary.is_seed_placeholder()) {
            (true, _) => false,
            (false, true) => true,
            (false, false) => self.generation > adversary.generation,
        }
    }
}

/// How a member is seen from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Answering probes.
    Alive,
    /// Missed probes; may be down.
    Suspect,
    /// Declared down.
    Down,
}

/// Why membership could not process an input.
#[derive(Debug, thiserror::Error)]
#[error("membership: {0}")]
pub struct MembershipError(String);

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

/// One node's membership state machine.
pub struct Membership {
    swim: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    /// Whether some member is known to have heard of this node's current identity (foca's
    /// `Active`, until `Idle`, `Defunct` or a change of identity).
    active: bool,
    /// Members seen suspect, with the incarnation they were suspected at and how many
    /// checks (about a second apart) have found them so since (see
    /// [`Membership::expire_stale_suspicions`]).
    suspects: std::collections::HashMap<String, (Incarnation, u32)>,
}

/// Checks (about a second apart) after which a member still suspect at the same incarnation
/// is declared down here: foca's own timer is a few seconds (`suspect_to_down_after`), so this
/// acts only when that timer was lost.
const STALE_SUSPICION_CHECKS: u32 = 15;

/// Members a node that is cut off announces itself to per [`Membership::rejoin_if_isolated`].
const REJOIN_ANNOUNCES: usize = 3;

impl Membership {
    /// A member with settings `me`, tuned for a LAN cluster of about `expected_size` nodes;
    /// `seed` makes its random choices repeatable in tests.
    pub fn new(me: NodeIdentity, expected_size: u32, seed: u64) -> Self {
        let config = Config::new_lan(NonZeroU32::new(expected_size.max(1)).expect("at least 1"));
        let swim = Foca::new(me, config, StdRng::seed_from_u64(seed), PostcardCodec);
        Self {
            swim,
            runtime: AccumulatingRuntime::new(),
            active: false,
            suspects: std::collections::HashMap::new(),
        }
    }

    /// This node's current identity.
    pub fn me(&self) -> &NodeIdentity {
        self.swim.identity()
    }

    /// Asks `seed` to let this node in (the `--join` path).
    pub fn join_via(&mut self, seed: NodeIdentity) -> Result<(), MembershipError> {
        self.swim
            .announce(seed, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Takes members known from elsewhere (a saved member list at restart) as alive, without
    /// gossiping about them: the cluster is assumed to know them already.
    pub fn learn(
        &mut self,
        members: impl IntoIterator<Item = NodeIdentity>,
    ) -> Result<(), MembershipError> {
        let members = members.into_iter().map(foca::Member::alive);
        self.swim
            .apply_many(members, false, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Handles bytes a peer sent.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), MembershipError> {
        self.swim
            .handle_data(data, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Handles a timer set earlier (see [`Membership::timers`]).
    pub fn timer(&mut self, timer: Timer<NodeIdentity>) -> Result<(), MembershipError> {
        self.swim
            .handle_timer(timer, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Sends pending updates to a few random members (one gossip round).
    pub fn gossip(&mut self) -> Result<(), MembershipError> {
        self.swim
            .gossip(&mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Changes this node's status (e.g. Joining -> Normal); spreads by gossip.
    ///
    /// The new status rides in a new identity, and foca takes only messages addressed to a
    /// node's current identity: until a peer has heard of the new one, everything sent to
    /// this node is dropped, and it stops probing. The peers foca tells at once may drop the
    /// news in turn, if they changed identity meanwhile (nodes finishing a join together), and
    /// the node would then be cut off for good. So it also announces itself — an announce is
    /// taken by address — and keeps doing so while no one has answered
    /// ([`Membership::rejoin_if_isolated`]).
    pub fn set_status(&mut self, status: NodeStatus) -> Result<(), MembershipError> {
        let me = self.me();
        let next = NodeIdentity {
            status,
            generation: me.generation + 1,
            ..me.clone()
        };
        self.swim
            .change_identity(next, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))?;
        self.active = false;
        self.rejoin_if_isolated()
    }

    /// While no member is known to have heard of this node's current identity (just after a
    /// change of identity, or after being declared down), announces it to a few random known
    /// members; does nothing otherwise. The gossip service calls it about once a second.
    pub fn rejoin_if_isolated(&mut self) -> Result<(), MembershipError> {
        self.note_events();
        self.expire_stale_suspicions()?;
        if self.active {
            return Ok(());
        }
        let me = self.me().clone();
        let known: Vec<NodeIdentity> = self
            .swim
            .iter_membership_state()
            .map(|member| member.id().clone())
            .filter(|id| id.address != me.address)
            .collect();
        let picked = known.choose_multiple(&mut rand::rng(), REJOIN_ANNOUNCES);
        for member in picked {
            self.swim
                .announce(member.clone(), &mut self.runtime)
                .map_err(|e| MembershipError(e.to_string()))?;
        }
        Ok(())
    }

    /// Declares down, here and to the cluster, a member that has stayed suspect at the same
    /// incarnation for [`STALE_SUSPICION_CHECKS`] checks, as foca's suspicion timer would
    /// have. foca drops the timers it set before this node changed identity (each status
    /// change is a new identity), and a suspect that answers probes but never hears it is
    /// suspected (so never refutes) then stays suspect for good: seen in the fault lab under
    /// CPU starvation, a member suspect for over a minute while alive. Declared down, it hears
    /// so, renews its identity and rejoins, as after any false suspicion.
    fn expire_stale_suspicions(&mut self) -> Result<(), MembershipError> {
        let suspect: Vec<(NodeIdentity, Incarnation)> = self
            .swim
            .iter_membership_state()
            .filter(|member| member.state() == State::Suspect)
            .map(|member| (member.id().clone(), member.incarnation()))
            .collect();
        let mut stale = Vec::new();
        let mut still = std::collections::HashMap::new();
        for (id, incarnation) in suspect {
            let checks = match self.suspects.get(&id.address) {
                Some(&(seen, checks)) if seen == incarnation => checks + 1,
                _ => 1,
            };
            if checks >= STALE_SUSPICION_CHECKS {
                stale.push(Member::new(id, incarnation, State::Down));
            } else {
                still.insert(id.address.clone(), (incarnation, checks));
            }
        }
        self.suspects = still;
        if stale.is_empty() {
            return Ok(());
        }
        self.swim
            .apply_many(stale.into_iter(), true, &mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Takes in foca's notifications (which must be drained, or they pile up), keeping track
    /// of whether this node's identity is known to the cluster.
    fn note_events(&mut self) {
        while let Some(event) = self.runtime.to_notify() {
            match event {
                OwnedNotification::Active => self.active = true,
                OwnedNotification::Idle
                | OwnedNotification::Defunct
                | OwnedNotification::Rejoin(_) => self.active = false,
                _ => {}
            }
        }
    }

    /// Tells the cluster this node is stopping, so peers mark it down at once instead of
    /// after missed probes. It stays a member: stopping is not leaving the ring.
    pub fn leave(&mut self) -> Result<(), MembershipError> {
        self.swim
            .leave_cluster(&mut self.runtime)
            .map_err(|e| MembershipError(e.to_string()))
    }

    /// Messages to send: (destination, bytes).
    pub fn outgoing(&mut self) -> Vec<(NodeIdentity, Bytes)> {
        self.note_events();
        std::iter::from_fn(|| self.runtime.to_send()).collect()
    }

    /// Timers to set: fire each with [`Membership::timer`] after its delay.
    pub fn timers(&mut self) -> Vec<(Duration, Timer<NodeIdentity>)> {
        std::iter::from_fn(|| self.runtime.to_schedule()).collect()
    }

    /// How this node sees the member named `id`, if it knows it.
    pub fn find(&self, id: &str) -> Option<(NodeIdentity, Liveness)> {
        self.swim
            .iter_membership_state()
            .find(|member| member.id().id == id)
            .map(|member| (member.id().clone(), liveness(member.state())))
    }

    /// Every other member this node knows, with how it sees it.
    pub fn members(&self) -> Vec<(NodeIdentity, Liveness)> {
        self.swim
            .iter_membership_state()
            .filter(|member| !member.id().is_seed_placeholder())
            .map(|member| (member.id().clone(), liveness(member.state())))
            .collect()
    }
}

fn liveness(state: State) -> Liveness {
    match state {
        State::Alive => Liveness::Alive,
        State::Suspect => Liveness::Suspect,
        State::Down => Liveness::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> NodeIdentity {
        NodeIdentity {
            id: id.into(),
            address: format!("{id}:1"),
            http: String::new(),
            zone: String::new(),
            weight: 1,
            status: NodeStatus::Normal,
            generation: 1,
        }
    }

    /// Goal: a member left suspect (its suspicion timer lost, and it never refuting) is
    /// declared down after [`STALE_SUSPICION_CHECKS`] checks, and a suspicion refuted
    /// meanwhile (a higher incarnation) starts the count again.
    #[test]
    fn a_member_suspect_for_too_long_is_declared_down() {
        let mut a = Membership::new(identity("a"), 5, 1);
        let b = identity("b");
        let apply = |a: &mut Membership, incarnation, state| {
            let update = Member::new(b.clone(), incarnation, state);
            a.swim
                .apply_many(std::iter::once(update), false, &mut a.runtime)
                .unwrap();
        };
        apply(&mut a, 0, State::Alive);
        apply(&mut a, 0, State::Suspect);
        for _ in 0..STALE_SUSPICION_CHECKS - 1 {
            a.rejoin_if_isolated().unwrap();
        }
        assert_eq!(a.find("b").map(|(_, l)| l), Some(Liveness::Suspect));
        // Refuted, then suspected again at the new incarnation: the count starts over.
        apply(&mut a, 1, State::Alive);
        apply(&mut a, 1, State::Suspect);
        for _ in 0..STALE_SUSPICION_CHECKS - 1 {
            a.rejoin_if_isolated().unwrap();
        }
        assert_eq!(a.find("b").map(|(_, l)| l), Some(Liveness::Suspect));
        a.rejoin_if_isolated().unwrap();
        assert_eq!(a.find("b").map(|(_, l)| l), Some(Liveness::Down));
    }
}
