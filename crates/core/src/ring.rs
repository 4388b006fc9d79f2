//! The consistent-hash ring: which nodes hold a key.
//!
//! Keys and tokens live on a 64-bit ring, hashed with xxh3-64 (seed 0) — fixed and
//! documented, because client SDKs must compute the same ring. Each node owns
//! `vnodes × weight` tokens, `xxh3_64("{node_id}#{i}")` for `i` in `0..vnodes × weight`, so
//! the ring is a pure function of the membership list. A key's [`PreferenceList`] is the owner
//! of the first token clockwise from the key's hash, then the next distinct physical nodes,
//! preferring nodes in zones not yet used (racks, data centres), then any remaining nodes.

use std::collections::HashSet;
use xxhash_rust::xxh3::xxh3_64;

/// Virtual nodes per unit of weight when nothing else is configured.
pub const VNODES_DEFAULT: u32 = 256;

/// Most tokens one node may own (bounds memory for a hostile weight).
pub const TOKENS_PER_NODE_MAX: u32 = 65_536;

/// A member of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node's id (its name in the cluster).
    pub id: String,
    /// Its failure domain.
    pub zone: String,
    /// Its relative share of data (at least 1).
    pub weight: u32,
}

/// The nodes that hold one key, in order of preference (the first is the primary).
pub type PreferenceList<'a> = Vec<&'a Member>;

/// The ring of a membership list.
#[derive(Clone, Debug)]
pub struct Ring {
    members: Vec<Member>,
    /// (token, index into `members`), sorted by token.
    tokens: Vec<(u64, usize)>,
}

/// Where a key sits on the ring.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The tokens a node owns.
pub fn node_tokens(id: &str, count: u32) -> impl Iterator<Item = u64> + '_ {
    (0..count).map(move |i| xxh3_64(format!("{id}#{i}").as_bytes()))
}

impl Ring {
    /// The ring of `members`, each owning `vnodes × weight` tokens. Members are sorted by id,
    /// so the ring does not depend on the order they are given in.
    pub fn new(members: &[Member], vnodes: u32) -> Self {
        let mut members = members.to_vec();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        let mut tokens = Vec::new();
        for (index, member) in members.iter().enumerate() {
            let count = vnodes
                .max(1)
                .saturating_mul(member.weight.max(1))
                .min(TOKENS_PER_NODE_MAX);
            tokens.extend(node_tokens(&member.id, count).map(|token| (token, index)));
        }
        // Ties between tokens of different nodes are astronomically rare; the index breaks
        // them deterministically.
        tokens.sort_unstable();
        Self { members, tokens }
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The first `n` distinct nodes for `key`, preferring distinct zones.
    pub fn preference_list(&self, key: &[u8], n: usize) -> PreferenceList<'_> {
        self.preference_list_at(key_hash(key), n)
    }

    /// The preference list for a position on the ring.
    pub fn preference_list_at(&self, position: u64, n: usize) -> PreferenceList<'_> {
        let wanted = n.min(self.members.len());
        let mut chosen: Vec<usize> = Vec::with_capacity(wanted);
        let mut skipped: Vec<usize> = Vec::new();
        let mut zones: HashSet<&str> = HashSet::new();
        if wanted == 0 {
            return Vec::new();
        }
        let start = self.tokens.partition_point(|&(token, _)| token < position);
        let walk = self.tokens[start..].iter().chain(&self.tokens[..start]);
        for &(_, index) in walk {
            if chosen.contains(&index) || skipped.contains(&index) {
                continue;
            }
            let zone = self.members[index].zone.as_str();
            if zones.insert(zone) {
                chosen.push(index);
                if chosen.len() == wanted {
                    break;
                }
            } else {
                skipped.push(index);
            }
            if chosen.len() + skipped.len() == self.members.len() {
                break;
            }
        }
        // Fewer zones than replicas: fill up with the skipped nodes, in ring order.
        chosen.extend(skipped.into_iter().take(wanted - chosen.len()));
        chosen
            .into_iter()
            .map(|index| &self.members[index])
            .collect()
    }

    /// Every token and the member owning it, in ring order.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, &Member)> + '_ {
        self.tokens
            .iter()
            .map(|&(token, index)| (token, &self.members[index]))
    }

    /// Each member's share of the ring as primary owner (sums to 1).
    pub fn ownership(&self) -> Vec<(&Member, f64)> {
        let mut owned = vec![0u128; self.members.len()];
        for (i, &(token, index)) in self.tokens.iter().enumerate() {
            // A token owns the arc from the previous token (exclusive) up to itself.
            let previous = if i == 0 {
                self.tokens.last().map_or(0, |t| t.0)
            } else {
                self.tokens[i - 1].0
            };
            owned[index] += u128::from(token.wrapping_sub(previous));
        }
        let total: u128 = owned.iter().sum::<u128>().max(1);
        self.members
            .iter()
            .zip(owned)
            .map(|(member, arc)| (member, arc as f64 / total as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(count: usize, zones: usize) -> Vec<Member> {
        (0..count)
            .map(|i| Member {
                id: format!("node-{i}"),
                zone: format!("zone-{}", i % zones.max(1)),
                weight: 1,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn preference_lists_hold_distinct_nodes(count in 1usize..12, n in 1usize..6, key: Vec<u8>) {
            let ring = Ring::new(&members(count, 3), 16);
            let list = ring.preference_list(&key, n);
            prop_assert_eq!(list.len(), n.min(count));
            let ids: HashSet<_> = list.iter().map(|m| &m.id).collect();
            prop_assert_eq!(ids.len(), list.len());
        }

        #[test]
        fn preference_lists_use_distinct_zones_when_they_can(count in 3usize..12, key: Vec<u8>) {
            let ring = Ring::new(&members(count, 3), 16);
            let zones: HashSet<_> = ring.preference_list(&key, 3).iter().map(|m| m.zone.clone()).collect();
            prop_assert_eq!(zones.len(), 3);
        }

        #[test]
        fn adding_a_node_moves_keys_only_to_it(count in 1usize..10, keys in proptest::collection::vec(any::<u64>(), 200)) {
            let before = Ring::new(&members(count, 1), 32);
            let mut grown = members(count, 1);
            grown.push(Member { id: "newcomer".into(), zone: "zone-0".into(), weight: 1 });
            let after = Ring::new(&grown, 32);
            for key in keys {
                let (old, new) = (&before.preference_list_at(key, 1)[0].id, &after.preference_list_at(key, 1)[0].id);
                prop_assert!(old == new || new == "newcomer", "{} moved to {}", old, new);
            }
        }

        #[test]
        fn the_ring_does_not_depend_on_member_order(count in 1usize..8, key: Vec<u8>) {
            let forward = members(count, 2);
            let mut backward = forward.clone();
            backward.reverse();
            let a: Vec<_> = Ring::new(&forward, 8).preference_list(&key, 3).iter().map(|m| m.id.clone()).collect();
            let b: Vec<_> = Ring::new(&backward, 8).preference_list(&key, 3).iter().map(|m| m.id.clone()).collect();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn weight_scales_ownership() {
        let mut list = members(4, 1);
        list[0].weight = 3;
        let ring = Ring::new(&list, VNODES_DEFAULT);
        let shares = ring.ownership();
        let heavy = shares.iter().find(|(m, _)| m.id == "node-0").unwrap().1;
        assert!((0.45..0.55).contains(&heavy), "weight 3 of 6 owns {heavy}");
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn defaults_balance_load_and_move_about_one_in_s_plus_one_keys() {
        // Goal: with the default vnodes, no node owns far more than its share, and adding a
        // node moves close to the ideal 1/(S+1) of the keys. Method: ownership of the ring's
        // arcs for balance; 100,000 sample keys for movement. Prints the figures it checks.
        for count in [3usize, 10, 100] {
            let list = members(count, 1);
            let ring = Ring::new(&list, VNODES_DEFAULT);
            let shares: Vec<f64> = ring.ownership().iter().map(|(_, share)| *share).collect();
            let balance = shares.iter().cloned().fold(0.0, f64::max) * count as f64;
            let mut grown = list.clone();
            grown.push(Member {
                id: "newcomer".into(),
                zone: "zone-0".into(),
                weight: 1,
            });
            let after = Ring::new(&grown, VNODES_DEFAULT);
            let samples = 100_000u64;
            let moved = (0..samples)
                .map(|i| key_hash(&i.to_le_bytes()))
                .filter(|&h| {
                    ring.preference_list_at(h, 1)[0].id != after.preference_list_at(h, 1)[0].id
                })
                .count();
            let moved = moved as f64 / samples as f64;
            let ideal = 1.0 / (count as f64 + 1.0);
            eprintln!(
                "ring of {count} nodes, {VNODES_DEFAULT} vnodes: largest share / mean = {balance:.3}; \
                 adding one node moves {:.2}% of keys (ideal {:.2}%)",
                moved * 100.0,
                ideal * 100.0
            );
            assert!(
                balance < 1.25,
                "{count} nodes: largest share is {balance:.3} x the mean"
            );
            assert!(
                (moved - ideal).abs() < ideal * 0.25,
                "{count} nodes: moved {moved}, ideal {ideal}"
            );
        }
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // Pinned: client SDKs compute the same ring, so this must never change.
        assert_eq!(key_hash(b"hello"), 0x9555_e855_5c62_dcfd);
        assert_eq!(node_tokens("node-a", 1).next(), Some(xxh3_64(b"node-a#0")));
    }
}
