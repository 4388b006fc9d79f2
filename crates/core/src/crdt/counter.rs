//! A PN-counter: per replica, the sum of its increments and the sum of its decrements. The
//! value is all increments less all decrements; a merge takes each replica's larger sums, so
//! no increment made through any replica is lost or counted twice.

use super::StateError;
use crate::causal::ReplicaId;
use crate::codec::{put_varint, Reader};

/// Most replicas one counter records: a counter written through more nodes than any cluster
/// has is refused as malformed.
pub const REPLICAS_MAX: usize = 1024;

/// A PN-counter's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// `(replica, increments, decrements)`, sorted by replica, each replica once.
    entries: Vec<(ReplicaId, u64, u64)>,
}

/// A counter's value would leave the 64-bit range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("increment or decrement would overflow")]
pub struct Overflow;

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value: every increment less every decrement.
    pub fn value(&self) -> i128 {
        self.entries
            .iter()
            .map(|&(_, up, down)| i128::from(up) - i128::from(down))
            .sum()
    }

    /// Adds `by` (negative: subtracts) as an operation of `replica`, refusing one that would
    /// take the value out of the 64-bit range (as Redis's INCRBY does) or a replica's sums
    /// past 2^64.
    pub fn increment(&mut self, replica: ReplicaId, by: i64) -> Result<i64, Overflow> {
        let next = self.value() + i128::from(by);
        let next = i64::try_from(next).map_err(|_| Overflow)?;
        let entry = entry_of(&mut self.entries, replica);
        let sum = if by >= 0 { &mut entry.1 } else { &mut entry.2 };
        *sum = sum.checked_add(by.unsigned_abs()).ok_or(Overflow)?;
        Ok(next)
    }

    /// Takes in everything `other` has counted.
    pub fn merge(&mut self, other: &Counter) {
        merge_sums(&mut self.entries, &other.entries);
    }

    /// How many replicas it records (its metadata).
    pub fn replicas(&self) -> usize {
        self.entries.len()
    }

    /// Appends the binary form: a count, then per replica its id (u64 LE) and two varints.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(replica, up, down) in &self.entries {
            out.extend_from_slice(&replica.0.to_le_bytes());
            put_varint(out, up);
            put_varint(out, down);
        }
    }

    /// Reads the binary form, checking its invariants.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        let count = reader.bounded_varint("counter replicas", REPLICAS_MAX)?;
        let mut entries: Vec<(ReplicaId, u64, u64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let replica = ReplicaId(reader.u64()?);
            if entries.last().is_some_and(|last| last.0 >= replica) {
                return Err(StateError::Invalid("counter replicas out of order"));
            }
            entries.push((replica, reader.varint()?, reader.varint()?));
        }
        Ok(Self { entries })
    }
}

/// A PN-counter of floating-point amounts (Redis's `ZINCRBY` and `HINCRBYFLOAT`): per
/// replica, the sum of what it added and of what it took away, each only growing, so a merge
/// takes each replica's larger sums as [`Counter`] does. The total adds the replicas' net
/// amounts in replica order, so every replica computes the same float from the same state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatCounter {
    /// `(replica, added, taken)`, sorted by replica, each replica once; never NaN, never
    /// negative.
    entries: Vec<(ReplicaId, f64, f64)>,
}

impl FloatCounter {
    /// The net amount: everything added less everything taken.
    pub fn value(&self) -> f64 {
        self.entries.iter().map(|&(_, up, down)| up - down).sum()
    }

    /// Whether no replica has counted anything.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `by` (negative: takes away) as an operation of `replica`. The caller checks that
    /// the result is a number first.
    pub fn add(&mut self, replica: ReplicaId, by: f64) {
        let entry = entry_of(&mut self.entries, replica);
        if by >= 0.0 {
            entry.1 += by;
        } else {
            entry.2 -= by;
        }
    }

    /// Takes in everything `other` has counted.
    pub fn merge(&mut self, other: &FloatCounter) {
        merge_sums(&mut self.entries, &other.entries);
    }

    /// Appends the binary form: a count, then per replica its id and two f64s (all LE).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(replica, up, down) in &self.entries {
            out.extend_from_slice(&replica.0.to_le_bytes());
            out.extend_from_slice(&up.to_le_bytes());
            out.extend_from_slice(&down.to_le_bytes());
        }
    }

    /// Reads the binary form, checking its invariants.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        let count = reader.bounded_varint("counter replicas", REPLICAS_MAX)?;
        let mut entries: Vec<(ReplicaId, f64, f64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let replica = ReplicaId(reader.u64()?);
            if entries.last().is_some_and(|last| last.0 >= replica) {
                return Err(StateError::Invalid("counter replicas out of order"));
            }
            let up = f64::from_bits(reader.u64()?);
            let down = f64::from_bits(reader.u64()?);
            if !(up >= 0.0 && down >= 0.0) {
                return Err(StateError::Invalid(
                    "a float counter sum is negative or NaN",
                ));
            }
            entries.push((replica, up, down));
        }
        Ok(Self { entries })
    }
}

/// The sums `replica` has counted, added (at zero) if it has counted nothing yet.
fn entry_of<T: Copy + Default>(
    entries: &mut Vec<(ReplicaId, T, T)>,
    replica: ReplicaId,
) -> &mut (ReplicaId, T, T) {
    let index = match entries.binary_search_by_key(&replica, |e| e.0) {
        Ok(index) => index,
        Err(index) => {
            entries.insert(index, (replica, T::default(), T::default()));
            index
        }
    };
    &mut entries[index]
}

/// Takes each replica's larger sums from `other`: the merge of both counters, whose sums only
/// grow.
fn merge_sums<T: Copy + Default + PartialOrd>(
    entries: &mut Vec<(ReplicaId, T, T)>,
    other: &[(ReplicaId, T, T)],
) {
    for &(replica, up, down) in other {
        let entry = entry_of(entries, replica);
        if up > entry.1 {
            entry.1 = up;
        }
        if down > entry.2 {
            entry.2 = down;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REPLICAS: u64 = 3;

    /// An operation: `by` through replica `at`, or a merge of replica `from` into `at`.
    #[derive(Clone, Debug)]
    enum Step {
        Add { at: usize, by: i64 },
        Sync { from: usize, at: usize },
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let replica = 0..REPLICAS as usize;
        let step = prop_oneof![
            (replica.clone(), -1000i64..1000).prop_map(|(at, by)| Step::Add { at, by }),
            (replica.clone(), replica).prop_map(|(from, at)| Step::Sync { from, at }),
        ];
        proptest::collection::vec(step, 0..40)
    }

    /// Runs `steps` on three replicas; their states and the sum of every increment made.
    fn run(steps: &[Step]) -> (Vec<Counter>, i128) {
        let mut replicas = vec![Counter::new(); REPLICAS as usize];
        let mut total = 0;
        for step in steps {
            match *step {
                Step::Add { at, by } => {
                    replicas[at]
                        .increment(ReplicaId(at as u64 + 1), by)
                        .unwrap();
                    total += i128::from(by);
                }
                Step::Sync { from, at } => {
                    let source = replicas[from].clone();
                    replicas[at].merge(&source);
                }
            }
        }
        (replicas, total)
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in steps(), b in steps(), c in steps()
        ) {
            let (x, y, z) = (run(&a).0[0].clone(), run(&b).0[1].clone(), run(&c).0[2].clone());
            let merged = |first: &Counter, second: &Counter| {
                let mut out = first.clone();
                out.merge(second);
                out
            };
            prop_assert_eq!(merged(&x, &y), merged(&y, &x));
            prop_assert_eq!(merged(&merged(&x, &y), &z), merged(&x, &merged(&y, &z)));
            prop_assert_eq!(merged(&x, &x), x.clone());
        }

        #[test]
        fn replicas_that_saw_everything_agree_on_every_increment(steps in steps()) {
            let (replicas, total) = run(&steps);
            let mut all = Counter::new();
            for replica in &replicas {
                all.merge(replica);
            }
            prop_assert_eq!(all.value(), total);
            for replica in &replicas {
                let mut caught_up = replica.clone();
                caught_up.merge(&all);
                prop_assert_eq!(&caught_up, &all);
            }
        }

        #[test]
        fn states_round_trip_through_their_encoding(steps in steps()) {
            let state = run(&steps).0[0].clone();
            let mut bytes = Vec::new();
            state.encode_into(&mut bytes);
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(Counter::decode_from(&mut reader).unwrap(), state);
            prop_assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn increments_past_the_64_bit_range_are_refused_and_change_nothing() {
        let mut counter = Counter::new();
        counter.increment(ReplicaId(1), i64::MAX).unwrap();
        let before = counter.clone();
        assert_eq!(counter.increment(ReplicaId(2), 1), Err(Overflow));
        assert_eq!(counter, before);
        assert_eq!(counter.increment(ReplicaId(2), -5), Ok(i64::MAX - 5));
    }
}
