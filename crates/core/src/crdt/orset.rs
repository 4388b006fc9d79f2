//! An add-wins observed-remove set (the "ORSWOT" of Bieniusa et al., as Riak's `riak_dt`
//! has it): an [`OrMap`] whose elements carry nothing but their presence. An add concurrent
//! with a remove of the same element wins; a remove is never lost to a concurrent add of
//! another element; no tombstone per element is kept (see [`super::ormap`]).

use super::ormap::OrMap;
use crate::causal::ReplicaId;

/// An observed-remove set of byte strings.
pub type OrSet = OrMap<()>;

impl OrMap<()> {
    /// Adds `element` as an operation of `replica`; whether it was absent.
    pub fn add(&mut self, replica: ReplicaId, element: &[u8]) -> bool {
        self.insert(replica, element, ())
    }

    /// The elements, in byte order.
    pub fn elements(&self) -> impl Iterator<Item = &[u8]> {
        self.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Reader;
    use proptest::prelude::*;

    const REPLICAS: usize = 3;

    #[derive(Clone, Debug)]
    enum Step {
        Add { at: usize, element: u8 },
        Remove { at: usize, element: u8 },
        Sync { from: usize, at: usize },
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let replica = 0..REPLICAS;
        let element = 0u8..6;
        let step = prop_oneof![
            (replica.clone(), element.clone()).prop_map(|(at, element)| Step::Add { at, element }),
            (replica.clone(), element).prop_map(|(at, element)| Step::Remove { at, element }),
            (replica.clone(), replica).prop_map(|(from, at)| Step::Sync { from, at }),
        ];
        proptest::collection::vec(step, 0..50)
    }

    fn run(steps: &[Step]) -> Vec<OrSet> {
        let mut replicas = vec![OrSet::new(); REPLICAS];
        for step in steps {
            match *step {
                Step::Add { at, element } => {
                    replicas[at].add(ReplicaId(at as u64 + 1), &[element]);
                }
                Step::Remove { at, element } => {
                    replicas[at].remove(&[element]);
                }
                Step::Sync { from, at } => {
                    let source = replicas[from].clone();
                    replicas[at].merge(&source);
                }
            }
        }
        replicas
    }

    fn merged(first: &OrSet, second: &OrSet) -> OrSet {
        let mut out = first.clone();
        out.merge(second);
        out
    }

    fn elements(set: &OrSet) -> Vec<Vec<u8>> {
        set.elements().map(<[u8]>::to_vec).collect()
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(steps in steps()) {
            // States of one history: what replicas really hold (whose dots are consistent).
            let replicas = run(&steps);
            let (x, y, z) = (&replicas[0], &replicas[1], &replicas[2]);
            prop_assert_eq!(merged(x, y), merged(y, x));
            prop_assert_eq!(merged(&merged(x, y), z), merged(x, &merged(y, z)));
            prop_assert_eq!(merged(x, x), x.clone());
        }

        #[test]
        fn replicas_that_saw_the_same_operations_converge(steps in steps()) {
            let replicas = run(&steps);
            let all = replicas.iter().fold(OrSet::new(), |all, r| merged(&all, r));
            for replica in &replicas {
                prop_assert_eq!(merged(replica, &all), all.clone());
            }
        }

        #[test]
        fn without_concurrency_it_is_a_plain_set(
            operations in proptest::collection::vec((any::<bool>(), 0u8..6, 0..REPLICAS), 0..40)
        ) {
            // Each operation at some replica, every replica caught up before the next.
            let mut replicas = vec![OrSet::new(); REPLICAS];
            let mut model = std::collections::BTreeSet::new();
            for (add, element, at) in operations {
                let all = replicas.iter().fold(OrSet::new(), |all, r| merged(&all, r));
                replicas[at] = all;
                if add {
                    replicas[at].add(ReplicaId(at as u64 + 1), &[element]);
                    model.insert(vec![element]);
                } else {
                    replicas[at].remove(&[element]);
                    model.remove(&vec![element]);
                }
            }
            let all = replicas.iter().fold(OrSet::new(), |all, r| merged(&all, r));
            prop_assert_eq!(elements(&all), model.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn metadata_stays_bounded_by_replicas_and_elements(steps in steps()) {
            let all = run(&steps).iter().fold(OrSet::new(), |all, r| merged(&all, r));
            // One context entry per replica, at most one dot per replica per element.
            prop_assert!(all.metadata_entries() <= REPLICAS + all.len() * REPLICAS);
        }

        #[test]
        fn states_round_trip_through_their_encoding(steps in steps()) {
            let state = run(&steps)[0].clone();
            let mut bytes = Vec::new();
            state.encode_into(&mut bytes);
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(OrSet::decode_from(&mut reader).unwrap(), state);
            prop_assert_eq!(reader.remaining(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = OrSet::decode_from(&mut Reader::new(&bytes));
        }
    }

    /// The encoded bytes of a set of `members` members of 10 bytes, after churn: each member
    /// added through one of three replicas, a third removed and added again through another,
    /// every replica merged with the others after each round.
    fn bytes_after_churn(members: u32) -> (usize, usize) {
        let mut replicas = vec![OrSet::new(); 3];
        let name = |i: u32| format!("m{i:09}").into_bytes();
        for round in 0..3u32 {
            for i in 0..members {
                let at = ((i + round) % 3) as usize;
                match round {
                    1 if i % 3 == 0 => {
                        replicas[at].remove(&name(i));
                    }
                    _ => {
                        replicas[at].add(ReplicaId(at as u64 + 1), &name(i));
                    }
                }
            }
            let all = replicas.iter().fold(OrSet::new(), |all, r| merged(&all, r));
            replicas = vec![all; 3];
        }
        let mut bytes = Vec::new();
        replicas[0].encode_into(&mut bytes);
        (bytes.len(), replicas[0].len())
    }

    #[test]
    fn metadata_after_churn_is_one_dot_per_member() {
        for members in [1_000, 100_000] {
            let (bytes, present) = bytes_after_churn(members);
            assert_eq!(present, members as usize);
            // Per member: 10 bytes, a length byte, a dot count, an 8-byte replica id and a
            // varint counter of up to 3 bytes; the context is a few dozen bytes in all.
            let per_member = bytes as f64 / present as f64;
            eprintln!("{members} members after churn: {bytes} bytes, {per_member:.1} per member");
            assert!(
                per_member <= 10.0 + 1.0 + 1.0 + 8.0 + 3.0 + 0.1,
                "{per_member}"
            );
        }
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove_and_a_remove_of_another_element_is_kept() {
        let (a, b) = (ReplicaId(1), ReplicaId(2));
        let mut left = OrSet::new();
        left.add(a, b"x");
        left.add(a, b"y");
        let mut right = left.clone();
        // Concurrently: left removes x and y; right adds x again and adds z.
        left.remove(b"x");
        left.remove(b"y");
        right.add(b, b"x");
        right.add(b, b"z");
        let one = merged(&left, &right);
        assert_eq!(one, merged(&right, &left));
        assert_eq!(elements(&one), [b"x".to_vec(), b"z".to_vec()]);
        // y's remove is not lost to the concurrent add of another element.
        assert!(!one.contains(b"y"));
    }
}
