//! Membership simulated in one process: many members exchanging gossip through an in-memory
//! network and a virtual clock, so dissemination and failure detection are measured without
//! sockets or sleeping.

use ringkv_cluster::membership::{Liveness, Membership, NodeIdentity, NodeStatus};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

fn identity(i: usize) -> NodeIdentity {
    NodeIdentity {
        id: format!("node-{i}"),
        address: format!("10.0.0.{i}:7946"),
        http: format!("10.0.0.{i}:7080"),
        zone: format!("zone-{}", i % 3),
        weight: 1,
        status: NodeStatus::Normal,
        generation: 0,
    }
}

/// Members, an in-memory network that can cut a member off, and a virtual clock for timers.
struct Simulation {
    members: Vec<Membership>,
    index: HashMap<String, usize>,
    /// Members whose traffic is dropped both ways (crashed or partitioned).
    cut: HashSet<usize>,
    now: Duration,
    timers: BTreeMap<(Duration, u64), (usize, foca::Timer<NodeIdentity>)>,
    timer_seq: u64,
}

impl Simulation {
    fn new(count: usize) -> Self {
        let members = (0..count)
            .map(|i| Membership::new(identity(i), count as u32, i as u64))
            .collect();
        let index = (0..count).map(|i| (identity(i).id, i)).collect();
        Self {
            members,
            index,
            cut: HashSet::new(),
            now: Duration::ZERO,
            timers: BTreeMap::new(),
            timer_seq: 0,
        }
    }

    /// Delivers every pending message (and the replies they cause), a bounded number of hops.
    fn deliver(&mut self) {
        for _ in 0..20 {
            let mut sent = Vec::new();
            for (from, member) in self.members.iter_mut().enumerate() {
                for (to, bytes) in member.outgoing() {
                    sent.push((from, self.index[&to.id], bytes));
                }
                for (delay, timer) in member.timers() {
                    self.timer_seq += 1;
                    self.timers
                        .insert((self.now + delay, self.timer_seq), (from, timer));
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, to, bytes) in sent {
                if !self.cut.contains(&from) && !self.cut.contains(&to) {
                    let _ = self.members[to].receive(&bytes);
                }
            }
        }
    }

    /// Every member gossips once, and everything is delivered.
    fn gossip_round(&mut self) {
        for member in &mut self.members {
            member.gossip().unwrap();
        }
        self.deliver();
    }

    /// Advances the virtual clock, firing due timers and delivering what they cause.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some((&(at, seq), _)) = self.timers.iter().next() {
            if at > until {
                break;
            }
            let (member, timer) = self.timers.remove(&(at, seq)).expect("just seen");
            self.now = at;
            if !self.cut.contains(&member) {
                let _ = self.members[member].timer(timer);
            }
            self.deliver();
        }
        self.now = until;
    }

    fn knows_everyone(&self) -> bool {
        let everyone = self.members.len() - 1;
        self.members.iter().all(|m| {
            m.members()
                .iter()
                .filter(|(_, l)| *l == Liveness::Alive)
                .count()
                == everyone
        })
    }

    fn liveness_of(&self, observer: usize, member: usize) -> Option<Liveness> {
        let id = identity(member).id;
        self.members[observer]
            .members()
            .into_iter()
            .find(|(who, _)| who.id == id)
            .map(|(_, l)| l)
    }
}

#[test]
fn members_joining_through_one_seed_all_learn_of_each_other() {
    let count = 10;
    let mut simulation = Simulation::new(count);
    for i in 1..count {
        simulation.members[i].join_via(identity(0)).unwrap();
    }
    simulation.deliver();
    let rounds = (1..=50).find(|_| {
        simulation.gossip_round();
        simulation.knows_everyone()
    });
    assert!(
        rounds.is_some(),
        "{count} members joining through node-0 did not converge in 50 rounds"
    );
}

/// Rounds until one member's status change has reached every other member of a cluster of
/// `count` members that already know each other.
fn rounds_to_disseminate_one_update(count: usize) -> usize {
    let mut simulation = Simulation::new(count);
    for i in 0..count {
        let others = (0..count).filter(|&j| j != i).map(identity);
        simulation.members[i].learn(others).unwrap();
    }
    simulation.members[0]
        .set_status(NodeStatus::Leaving)
        .unwrap();
    let informed = |sim: &Simulation| {
        (1..count).all(|o| {
            sim.members[o]
                .members()
                .iter()
                .any(|(who, _)| who.id == "node-0" && who.status == NodeStatus::Leaving)
        })
    };
    (1..=100)
        .find(|_| {
            simulation.gossip_round();
            informed(&simulation)
        })
        .unwrap_or_else(|| panic!("an update did not reach all {count} members in 100 rounds"))
}

#[test]
fn one_update_reaches_every_member_in_about_log_n_rounds() {
    // Goal: an update spreads epidemically. Method: a cluster whose members know each other;
    // one changes its status; every member gossips once per round (to 3 random members,
    // foca's LAN setting); count rounds until all have the change. Prints the figures.
    for count in [10usize, 100, 1000] {
        let rounds = rounds_to_disseminate_one_update(count);
        eprintln!("{count} members: one update reached everyone after {rounds} gossip rounds");
        assert!(
            rounds <= 4 * (count as f64).log2().ceil() as usize,
            "{count} members took {rounds} rounds"
        );
    }
}

#[test]
fn a_silent_member_is_suspected_then_declared_down_and_a_status_change_spreads() {
    let count = 10;
    let mut simulation = Simulation::new(count);
    for i in 1..count {
        simulation.members[i].join_via(identity(0)).unwrap();
    }
    simulation.deliver();
    for _ in 0..30 {
        simulation.gossip_round();
    }
    assert!(simulation.knows_everyone());
    // Start every member's probe cycle, then let time pass with all healthy.
    simulation.advance(Duration::from_secs(5));
    assert!((1..count).all(|o| simulation.liveness_of(o, 0) == Some(Liveness::Alive)));

    // A status change spreads through gossip.
    simulation.members[3]
        .set_status(NodeStatus::Leaving)
        .unwrap();
    for _ in 0..30 {
        simulation.gossip_round();
    }
    let leaving = |sim: &Simulation, observer: usize| {
        sim.members[observer]
            .members()
            .into_iter()
            .any(|(who, _)| who.id == "node-3" && who.status == NodeStatus::Leaving)
    };
    assert!(
        (0..count)
            .filter(|&o| o != 3)
            .all(|o| leaving(&simulation, o)),
        "everyone sees node-3 leaving"
    );

    // Node 9 goes silent: within a bounded virtual time every other member declares it down.
    simulation.cut.insert(9);
    let mut declared_down = false;
    for _ in 0..120 {
        simulation.advance(Duration::from_millis(500));
        if (0..9).all(|o| {
            simulation
                .liveness_of(o, 9)
                .is_none_or(|l| l == Liveness::Down)
        }) {
            declared_down = true;
            break;
        }
    }
    assert!(declared_down, "node-9 was not declared down by everyone");
    assert!(
        (0..9).all(|o| simulation.liveness_of(o, 0) != Some(Liveness::Down)),
        "healthy members stay up"
    );
}

/// Goal: members that change their status at the same moment (nodes finishing a join
/// together) all end up seeing each other's new status, alive. Each change makes a new
/// identity, and a member drops messages addressed to an identity it no longer has: the news
/// each sends at once is dropped by the others, who changed too, and without announcing
/// itself again each would stay cut off for good, declared down by the rest. Method: five
/// members that know each other, probing; four change status before any message is
/// delivered; virtual time passes, with the gossip service's once-a-second
/// `rejoin_if_isolated`.
#[test]
fn members_changing_status_at_once_all_see_each_others_new_status() {
    let count = 5;
    let mut simulation = Simulation::new(count);
    for i in 1..count {
        simulation.members[i].join_via(identity(0)).unwrap();
    }
    simulation.deliver();
    for _ in 0..20 {
        simulation.gossip_round();
    }
    assert!(simulation.knows_everyone());
    simulation.advance(Duration::from_secs(3));
    for member in &mut simulation.members[1..] {
        member.set_status(NodeStatus::Leaving).unwrap();
    }
    let settled = |sim: &Simulation| {
        (0..count).all(|observer| {
            let seen = sim.members[observer].members();
            (1..count).filter(|&o| o != observer).all(|other| {
                seen.iter().any(|(who, liveness)| {
                    who.id == identity(other).id
                        && who.status == NodeStatus::Leaving
                        && *liveness == Liveness::Alive
                })
            })
        })
    };
    let mut seconds = 0;
    while !settled(&simulation) && seconds < 60 {
        for member in &mut simulation.members {
            member.rejoin_if_isolated().unwrap();
        }
        simulation.deliver();
        simulation.advance(Duration::from_secs(1));
        seconds += 1;
    }
    assert!(
        settled(&simulation),
        "after {seconds} s some member still misses another's new status"
    );
    // And it lasts: probing goes on, with no one declared down.
    simulation.advance(Duration::from_secs(30));
    assert!(settled(&simulation), "someone was declared down afterwards");
}
