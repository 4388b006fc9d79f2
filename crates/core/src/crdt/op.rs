//! The operations on typed values, applied by a key's lead replica to the value it holds
//! (its versions merged, see [`Value::of_versions`]), stamped with the lead's replica id and
//! the write's hybrid-clock timestamp. Each gives the new state and the answer Redis gives.

use super::counter::Counter;
use super::ormap::OrMap;
use super::register::{Field, IncrementError, Score, Stamp};
use super::typed::{Typed, Value};
use crate::causal::ReplicaId;
use crate::record::DataType;
use serde::{Deserialize, Serialize};

/// An operation on a key's typed value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `INCRBY`: add to a counter (made from a string holding an integer, or from nothing).
    Increment(i64),
    /// `SADD`.
    SetAdd(Vec<Vec<u8>>),
    /// `SREM`.
    SetRemove(Vec<Vec<u8>>),
    /// `SPOP`: remove members chosen from `seed`; one (a bulk answer) or up to `count`.
    SetPop { count: Option<u64>, seed: u64 },
    /// `HSET` (`only_new`: `HSETNX`, which sets a field only if absent).
    HashSet {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        only_new: bool,
    },
    /// `HDEL`.
    HashDelete(Vec<Vec<u8>>),
    /// `HINCRBY`.
    HashIncrement { field: Vec<u8>, by: i64 },
    /// `HINCRBYFLOAT`.
    HashIncrementFloat { field: Vec<u8>, by: f64 },
    /// `ZADD` with its flags.
    SortedAdd {
        pairs: Vec<(f64, Vec<u8>)>,
        flags: AddFlags,
    },
    /// `ZREM`.
    SortedRemove(Vec<Vec<u8>>),
    /// `ZPOPMIN` / `ZPOPMAX`.
    SortedPop { max: bool, count: u64 },
    /// `LPUSH`/`RPUSH` (`only_existing`: `LPUSHX`/`RPUSHX`).
    ListPush {
        left: bool,
        values: Vec<Vec<u8>>,
        only_existing: bool,
    },
    /// `LPOP`/`RPOP`: one (a bulk answer) or up to `count`.
    ListPop { left: bool, count: Option<u64> },
    /// `LSET`.
    ListSet { index: i64, value: Vec<u8> },
    /// `LREM`.
    ListRemove { count: i64, value: Vec<u8> },
    /// `LTRIM`.
    ListTrim { start: i64, stop: i64 },
    /// `LINSERT`.
    ListInsert {
        before: bool,
        pivot: Vec<u8>,
        value: Vec<u8>,
    },
    /// Replace the whole value (`SINTERSTORE`, `ZUNIONSTORE`, `RENAME` of a typed key...):
    /// removes every element held and adds these, so concurrent adds of others still win.
    Replace(Contents),
}

/// A whole collection's elements, for [`Op::Replace`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Contents {
    /// A counter's value.
    Counter(i64),
    /// A set's members.
    Set(Vec<Vec<u8>>),
    /// A hash's fields and values.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// A sorted set's members and scores.
    SortedSet(Vec<(f64, Vec<u8>)>),
    /// A list's items.
    List(Vec<Vec<u8>>),
}

/// `ZADD`'s options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members.
    pub xx: bool,
    /// Only update a score to a greater one.
    pub gt: bool,
    /// Only update a score to a lesser one.
    pub lt: bool,
    /// Count changed scores too.
    pub ch: bool,
    /// Increment the one member's score (`ZINCRBY`'s behaviour).
    pub incr: bool,
}

/// What an operation answers, in Redis's terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// An integer.
    Integer(i64),
    /// A bulk string, or nil.
    Bulk(Option<Vec<u8>>),
    /// An array of bulk strings.
    Array(Vec<Vec<u8>>),
    /// A null array (`LPOP key count` of a missing key).
    NullArray,
    /// `+OK`.
    Ok,
}

/// Why an operation cannot apply.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpError {
    /// The key holds another type.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A counter, hash field or score could not take the increment.
    #[error(transparent)]
    Increment(#[from] IncrementError),
    /// The string to count from is not an integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// `ZADD INCR` or `ZINCRBY` made NaN.
    #[error("resulting score is not a number (NaN)")]
    ScoreNaN,
    /// `LSET` of a missing key.
    #[error("no such key")]
    NoSuchKey,
    /// `LSET` past the end.
    #[error("index out of range")]
    OutOfRange,
}

/// The outcome of an operation: the state to store and the answer. Every operation is stored,
/// even one that changes nothing visible: re-adding a present member gives it a new dot, which
/// is what makes the add win over a concurrent remove.
#[derive(Debug, PartialEq)]
pub struct Applied {
    /// The new state.
    pub state: Typed,
    /// What the client is told.
    pub answer: Answer,
}

impl Op {
    /// The type the operation works on.
    pub fn data_type(&self) -> DataType {
        match self {
            Op::Increment(_) => DataType::Counter,
            Op::SetAdd(_) | Op::SetRemove(_) | Op::SetPop { .. } => DataType::Set,
            Op::HashSet { .. }
            | Op::HashDelete(_)
            | Op::HashIncrement { .. }
            | Op::HashIncrementFloat { .. } => DataType::Hash,
            Op::SortedAdd { .. } | Op::SortedRemove(_) | Op::SortedPop { .. } => {
                DataType::SortedSet
            }
            Op::ListPush { .. }
            | Op::ListPop { .. }
            | Op::ListSet { .. }
            | Op::ListRemove { .. }
            | Op::ListTrim { .. }
            | Op::ListInsert { .. } => DataType::List,
            Op::Replace(contents) => match contents {
                Contents::Counter(_) => DataType::Counter,
                Contents::Set(_) => DataType::Set,
                Contents::Hash(_) => DataType::Hash,
                Contents::SortedSet(_) => DataType::SortedSet,
                Contents::List(_) => DataType::List,
            },
        }
    }

    /// Bytes the operation carries, for sizing write groups and checking limits.
    pub fn bytes(&self) -> usize {
        let all = |items: &[Vec<u8>]| items.iter().map(Vec::len).sum::<usize>();
        match self {
            Op::SetAdd(items) | Op::SetRemove(items) | Op::HashDelete(items) => all(items),
            Op::SortedRemove(items) => all(items),
            Op::ListPush { values, .. } => all(values),
            Op::HashSet { pairs, .. } => pairs.iter().map(|(f, v)| f.len() + v.len()).sum(),
            Op::SortedAdd { pairs, .. } => pairs.iter().map(|(_, m)| m.len() + 8).sum(),
            Op::HashIncrement { field, .. } | Op::HashIncrementFloat { field, .. } => field.len(),
            Op::ListSet { value, .. } | Op::ListRemove { value, .. } => value.len(),
            Op::ListInsert { pivot, value, .. } => pivot.len() + value.len(),
            Op::Replace(Contents::Set(items) | Contents::List(items)) => all(items),
            Op::Replace(Contents::Hash(pairs)) => {
                pairs.iter().map(|(f, v)| f.len() + v.len()).sum()
            }
            Op::Replace(Contents::SortedSet(pairs)) => pairs.iter().map(|(_, m)| m.len() + 8).sum(),
            Op::Increment(_) | Op::SetPop { .. } | Op::SortedPop { .. } | Op::ListPop { .. } => 0,
            Op::ListTrim { .. } | Op::Replace(Contents::Counter(_)) => 0,
        }
    }

    /// Applies the operation to `current` (`None`: the key is absent) as `replica` at
    /// `stamp`.
    pub fn apply(self, current: Option<Value>, stamp: Stamp) -> Result<Applied, OpError> {
        let data_type = self.data_type();
        let current = match current {
            None => None,
            Some(Value::Bytes(bytes, timestamp)) if data_type == DataType::Counter => {
                if matches!(self, Op::Replace(_)) {
                    None
                } else {
                    Some(counter_of_string(&bytes, timestamp)?)
                }
            }
            Some(Value::Typed(typed)) if typed.data_type() == data_type => Some(typed),
            Some(_) if matches!(self, Op::Replace(_)) => None,
            Some(_) => return Err(OpError::WrongType),
        };
        let existed = current.is_some();
        let mut state = current.unwrap_or_else(|| Typed::empty(data_type).expect("typed"));
        let answer = apply_to(self, &mut state, existed, stamp)?;
        Ok(Applied { state, answer })
    }
}

/// The counter a string holding an integer becomes. Its value is counted under an id made
/// from the string's version, not the lead's: two replicas converting the same string
/// concurrently count it once, as the merge takes the larger sum per id.
fn counter_of_string(bytes: &[u8], timestamp: crate::hlc::Timestamp) -> Result<Typed, OpError> {
    let base = super::register::parse_integer(bytes).ok_or(OpError::NotAnInteger)?;
    let mut seed = timestamp.0.to_le_bytes().to_vec();
    seed.extend_from_slice(bytes);
    let id = ReplicaId(xxhash_rust::xxh3::xxh3_64(&seed) | 1 << 63);
    let mut counter = Counter::new();
    counter
        .increment(id, base)
        .map_err(|_| OpError::NotAnInteger)?;
    Ok(Typed::Counter(counter))
}

fn apply_to(op: Op, state: &mut Typed, existed: bool, stamp: Stamp) -> Result<Answer, OpError> {
    let replica = stamp.replica;
    let floor = stamp.timestamp.0;
    Ok(match (op, state) {
        (Op::Increment(by), Typed::Counter(counter)) => {
            let next = counter
                .increment(replica, by)
                .map_err(|_| IncrementError::Overflow)?;
            Answer::Integer(next)
        }
        (Op::SetAdd(members), Typed::Set(set)) => {
            let mut added = 0;
            for member in members {
                if set.insert_after(replica, floor, &member, ()) {
                    added += 1;
                }
            }
            Answer::Integer(added)
        }
        (Op::SetRemove(members), Typed::Set(set)) => {
            Answer::Integer(members.iter().filter(|m| set.remove(m)).count() as i64)
        }
        (Op::SetPop { count, seed }, Typed::Set(set)) => {
            let chosen = choose(set.keys().map(<[u8]>::to_vec).collect(), count, seed);
            for member in &chosen {
                set.remove(member);
            }
            one_or_many(chosen, count, existed)
        }
        (Op::HashSet { pairs, only_new }, Typed::Hash(hash)) => {
            let mut added = 0;
            for (field, value) in pairs {
                if only_new && hash.contains(&field) {
                    continue;
                }
                let fresh = Field::new(stamp, value);
                if hash.insert_after(replica, floor, &field, fresh) {
                    added += 1;
                }
            }
            Answer::Integer(added)
        }
        (Op::HashDelete(fields), Typed::Hash(hash)) => {
            Answer::Integer(fields.iter().filter(|f| hash.remove(f)).count() as i64)
        }
        (Op::HashIncrement { field, by }, Typed::Hash(hash)) => {
            let mut value = hash
                .get(&field)
                .unwrap_or_else(|| Field::new(stamp, b"0".to_vec()));
            let next = value.increment(replica, by)?;
            hash.insert_after(replica, floor, &field, value);
            Answer::Integer(next)
        }
        (Op::HashIncrementFloat { field, by }, Typed::Hash(hash)) => {
            let mut value = hash
                .get(&field)
                .unwrap_or_else(|| Field::new(stamp, b"0".to_vec()));
            let next = value.increment_float(replica, by)?;
            hash.insert_after(replica, floor, &field, value);
            Answer::Bulk(Some(next.into_bytes()))
        }
        (Op::SortedAdd { pairs, flags }, Typed::SortedSet(zset)) => {
            sorted_add(zset, pairs, flags, stamp)?
        }
        (Op::SortedRemove(members), Typed::SortedSet(zset)) => {
            Answer::Integer(members.iter().filter(|m| zset.remove(m)).count() as i64)
        }
        (Op::SortedPop { max, count }, Typed::SortedSet(zset)) => {
            let mut members = ranked(zset);
            if max {
                members.reverse();
            }
            let mut out = Vec::new();
            for (score, member) in members.into_iter().take(count as usize) {
                zset.remove(&member);
                out.push(member);
                out.push(super::register::format_score(score).into_bytes());
            }
            Answer::Array(out)
        }
        (
            op @ (Op::ListPush { .. }
            | Op::ListPop { .. }
            | Op::ListSet { .. }
            | Op::ListRemove { .. }
            | Op::ListTrim { .. }
            | Op::ListInsert { .. }),
            Typed::List(list),
        ) => list_op(op, list, existed)?,
        (Op::Replace(contents), state) => {
            replace(contents, state, stamp);
            Answer::Ok
        }
        _ => return Err(OpError::WrongType),
    })
}

/// The members of a sorted set with their scores, lowest first (ties by member bytes).
pub fn ranked(zset: &OrMap<Score>) -> Vec<(f64, Vec<u8>)> {
    let mut members: Vec<(f64, Vec<u8>)> = zset
        .iter()
        .map(|(member, score)| (score.value(), member.to_vec()))
        .collect();
    members.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    members
}

fn sorted_add(
    zset: &mut OrMap<Score>,
    pairs: Vec<(f64, Vec<u8>)>,
    flags: AddFlags,
    stamp: Stamp,
) -> Result<Answer, OpError> {
    let (replica, floor) = (stamp.replica, stamp.timestamp.0);
    let mut added = 0;
    let mut changed = 0;
    let mut incremented = None;
    for (score, member) in pairs {
        let current = zset.get(&member);
        let Some(mut held) = current else {
            if flags.xx {
                continue;
            }
            zset.insert_after(replica, floor, &member, Score::new(stamp, score));
            added += 1;
            incremented = Some(score);
            continue;
        };
        if flags.nx {
            continue;
        }
        let old = held.value();
        let new = if flags.incr { old + score } else { score };
        if new.is_nan() {
            return Err(OpError::ScoreNaN);
        }
        if (flags.gt && new <= old) || (flags.lt && new >= old) {
            continue;
        }
        if new == old {
            incremented = Some(new);
            continue;
        }
        if flags.incr {
            held.increment(replica, score)
                .map_err(|_| OpError::ScoreNaN)?;
        } else {
            held = Score::new(stamp, new);
        }
        zset.insert_after(replica, floor, &member, held);
        changed += 1;
        incremented = Some(new);
    }
    if flags.incr {
        return Ok(Answer::Bulk(
            incremented.map(|s| super::register::format_score(s).into_bytes()),
        ));
    }
    Ok(Answer::Integer(if flags.ch {
        added + changed
    } else {
        added
    }))
}

fn list_op(op: Op, list: &mut Vec<Vec<u8>>, existed: bool) -> Result<Answer, OpError> {
    let len = list.len() as i64;
    let index_of = |index: i64| if index < 0 { len + index } else { index };
    Ok(match op {
        Op::ListPush {
            left,
            values,
            only_existing,
        } => {
            if only_existing && !existed {
                return Ok(Answer::Integer(0));
            }
            for value in values {
                if left {
                    list.insert(0, value);
                } else {
                    list.push(value);
                }
            }
            Answer::Integer(list.len() as i64)
        }
        Op::ListPop { left, count } => {
            if !existed {
                return Ok(match count {
                    Some(_) => Answer::NullArray,
                    None => Answer::Bulk(None),
                });
            }
            let take = count.unwrap_or(1).min(list.len() as u64) as usize;
            let popped: Vec<Vec<u8>> = if left {
                list.drain(..take).collect()
            } else {
                let mut tail: Vec<Vec<u8>> = list.drain(list.len() - take..).collect();
                tail.reverse();
                tail
            };
            one_or_many(popped, count, existed)
        }
        Op::ListSet { index, value } => {
            if !existed {
                return Err(OpError::NoSuchKey);
            }
            let at = index_of(index);
            if at < 0 || at >= len {
                return Err(OpError::OutOfRange);
            }
            list[at as usize] = value;
            Answer::Ok
        }
        Op::ListRemove { count, value } => {
            let mut removed = 0i64;
            let limit = if count == 0 { i64::MAX } else { count.abs() };
            if count >= 0 {
                list.retain(|item| {
                    let drop = removed < limit && *item == value;
                    removed += i64::from(drop);
                    !drop
                });
            } else {
                list.reverse();
                list.retain(|item| {
                    let drop = removed < limit && *item == value;
                    removed += i64::from(drop);
                    !drop
                });
                list.reverse();
            }
            Answer::Integer(removed)
        }
        Op::ListTrim { start, stop } => {
            let start = index_of(start).max(0);
            let stop = index_of(stop).min(len - 1);
            if start > stop || start >= len {
                list.clear();
            } else {
                list.truncate(stop as usize + 1);
                list.drain(..start as usize);
            }
            Answer::Ok
        }
        Op::ListInsert {
            before,
            pivot,
            value,
        } => {
            if !existed {
                return Ok(Answer::Integer(0));
            }
            match list.iter().position(|item| *item == pivot) {
                None => Answer::Integer(-1),
                Some(at) => {
                    list.insert(if before { at } else { at + 1 }, value);
                    Answer::Integer(list.len() as i64)
                }
            }
        }
        _ => unreachable!("list_op takes list operations"),
    })
}

fn replace(contents: Contents, state: &mut Typed, stamp: Stamp) {
    let (replica, floor) = (stamp.replica, stamp.timestamp.0);
    match (contents, state) {
        (Contents::Counter(value), Typed::Counter(counter)) => {
            let by = i128::from(value) - counter.value();
            // A counter cannot be set, only counted to: count the difference.
            let by = i64::try_from(by).unwrap_or(0);
            let _ = counter.increment(replica, by);
        }
        (Contents::Set(members), Typed::Set(set)) => {
            for old in set.keys().map(<[u8]>::to_vec).collect::<Vec<_>>() {
                set.remove(&old);
            }
            for member in members {
                set.insert_after(replica, floor, &member, ());
            }
        }
        (Contents::Hash(pairs), Typed::Hash(hash)) => {
            for old in hash.keys().map(<[u8]>::to_vec).collect::<Vec<_>>() {
                hash.remove(&old);
            }
            for (field, value) in pairs {
                hash.insert_after(replica, floor, &field, Field::new(stamp, value));
            }
        }
        (Contents::SortedSet(pairs), Typed::SortedSet(zset)) => {
            for old in zset.keys().map(<[u8]>::to_vec).collect::<Vec<_>>() {
                zset.remove(&old);
            }
            for (score, member) in pairs {
                zset.insert_after(replica, floor, &member, Score::new(stamp, score));
            }
        }
        (Contents::List(items), Typed::List(list)) => *list = items,
        _ => {}
    }
}

/// `count` (all if more) of `items` chosen by `seed`, or one when `count` is `None`.
fn choose(mut items: Vec<Vec<u8>>, count: Option<u64>, seed: u64) -> Vec<Vec<u8>> {
    let want = count.unwrap_or(1).min(items.len() as u64) as usize;
    let mut state = seed | 1;
    let mut chosen = Vec::with_capacity(want);
    for _ in 0..want {
        // xorshift64: spread enough for picking members, and the same at every replica.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % items.len() as u64) as usize;
        chosen.push(items.swap_remove(at));
    }
    chosen
}

fn one_or_many(mut items: Vec<Vec<u8>>, count: Option<u64>, existed: bool) -> Answer {
    match count {
        None => Answer::Bulk(items.pop()),
        Some(_) if !existed => Answer::NullArray,
        Some(_) => Answer::Array(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::orset::OrSet;
    use crate::hlc::Timestamp;

    fn stamp(at: u64, replica: u64) -> Stamp {
        Stamp {
            timestamp: Timestamp(at),
            replica: ReplicaId(replica),
        }
    }

    fn run(ops: Vec<(Op, u64)>) -> (Option<Value>, Vec<Answer>) {
        let mut value = None;
        let mut answers = Vec::new();
        for (at, (op, replica)) in ops.into_iter().enumerate() {
            let applied = op
                .apply(value.clone(), stamp(at as u64 + 1, replica))
                .unwrap();
            answers.push(applied.answer);
            value = Some(Value::Typed(applied.state));
        }
        (value, answers)
    }

    #[test]
    fn a_string_holding_an_integer_becomes_a_counter_and_others_refuse() {
        let string = Value::Bytes(b"10".to_vec(), Timestamp(5));
        let applied = Op::Increment(5)
            .apply(Some(string.clone()), stamp(6, 1))
            .unwrap();
        assert_eq!(applied.answer, Answer::Integer(15));
        // The same string converted through another replica at once counts once.
        let other = Op::Increment(1).apply(Some(string), stamp(6, 2)).unwrap();
        let (Typed::Counter(mut a), Typed::Counter(b)) = (applied.state, other.state) else {
            panic!("counters expected");
        };
        a.merge(&b);
        assert_eq!(a.value(), 16);
        let text = Value::Bytes(b"x".to_vec(), Timestamp(1));
        assert_eq!(
            Op::Increment(1).apply(Some(text.clone()), stamp(2, 1)),
            Err(OpError::NotAnInteger)
        );
        assert_eq!(
            Op::SetAdd(vec![b"a".to_vec()]).apply(Some(text), stamp(2, 1)),
            Err(OpError::WrongType)
        );
    }

    #[test]
    fn sets_hashes_sorted_sets_and_lists_answer_as_redis_does() {
        let (value, answers) = run(vec![
            (
                Op::SetAdd(vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]),
                1,
            ),
            (Op::SetRemove(vec![b"a".to_vec(), b"z".to_vec()]), 2),
        ]);
        assert_eq!(answers, [Answer::Integer(2), Answer::Integer(1)]);
        let Some(Value::Typed(Typed::Set(set))) = value else {
            panic!()
        };
        assert_eq!(set.elements().collect::<Vec<_>>(), [b"b"]);

        let pair = |f: &str, v: &str| (f.as_bytes().to_vec(), v.as_bytes().to_vec());
        let (_, answers) = run(vec![
            (
                Op::HashSet {
                    pairs: vec![pair("f", "1"), pair("g", "x")],
                    only_new: false,
                },
                1,
            ),
            (
                Op::HashIncrement {
                    field: b"f".to_vec(),
                    by: 4,
                },
                1,
            ),
            (
                Op::HashSet {
                    pairs: vec![pair("f", "9")],
                    only_new: true,
                },
                1,
            ),
            (
                Op::HashIncrementFloat {
                    field: b"f".to_vec(),
                    by: 0.5,
                },
                1,
            ),
        ]);
        assert_eq!(
            answers[..3],
            [Answer::Integer(2), Answer::Integer(5), Answer::Integer(0)]
        );
        assert_eq!(answers[3], Answer::Bulk(Some(b"5.5".to_vec())));

        let flags = AddFlags::default();
        let (value, answers) = run(vec![
            (
                Op::SortedAdd {
                    pairs: vec![(2.0, b"b".to_vec()), (1.0, b"a".to_vec())],
                    flags,
                },
                1,
            ),
            (
                Op::SortedAdd {
                    pairs: vec![(5.0, b"a".to_vec())],
                    flags: AddFlags { ch: true, ..flags },
                },
                1,
            ),
            (
                Op::SortedAdd {
                    pairs: vec![(1.0, b"b".to_vec())],
                    flags: AddFlags { gt: true, ..flags },
                },
                1,
            ),
            (
                Op::SortedAdd {
                    pairs: vec![(1.5, b"b".to_vec())],
                    flags: AddFlags {
                        incr: true,
                        ..flags
                    },
                },
                1,
            ),
            (
                Op::SortedPop {
                    max: false,
                    count: 1,
                },
                1,
            ),
        ]);
        assert_eq!(
            answers[..3],
            [Answer::Integer(2), Answer::Integer(1), Answer::Integer(0)]
        );
        assert_eq!(answers[3], Answer::Bulk(Some(b"3.5".to_vec())));
        assert_eq!(
            answers[4],
            Answer::Array(vec![b"b".to_vec(), b"3.5".to_vec()])
        );
        let Some(Value::Typed(Typed::SortedSet(zset))) = value else {
            panic!()
        };
        assert_eq!(ranked(&zset), [(5.0, b"a".to_vec())]);

        let items = |xs: &[&str]| xs.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        let (value, answers) = run(vec![
            (
                Op::ListPush {
                    left: false,
                    values: items(&["a", "b", "c", "b"]),
                    only_existing: false,
                },
                1,
            ),
            (
                Op::ListPush {
                    left: true,
                    values: items(&["z"]),
                    only_existing: true,
                },
                1,
            ),
            (
                Op::ListRemove {
                    count: -1,
                    value: b"b".to_vec(),
                },
                1,
            ),
            (
                Op::ListInsert {
                    before: true,
                    pivot: b"c".to_vec(),
                    value: b"y".to_vec(),
                },
                1,
            ),
            (Op::ListTrim { start: 1, stop: -1 }, 1),
            (
                Op::ListPop {
                    left: false,
                    count: Some(2),
                },
                1,
            ),
        ]);
        assert_eq!(
            answers[..4],
            [
                Answer::Integer(4),
                Answer::Integer(5),
                Answer::Integer(1),
                Answer::Integer(5)
            ]
        );
        assert_eq!(answers[5], Answer::Array(items(&["c", "y"])));
        assert_eq!(value, Some(Value::Typed(Typed::List(items(&["a", "b"])))));
    }

    #[test]
    fn concurrent_adds_and_removes_through_two_replicas_converge_add_wins() {
        let start = run(vec![(Op::SetAdd(vec![b"x".to_vec(), b"y".to_vec()]), 1)]).0;
        let left = Op::SetRemove(vec![b"x".to_vec(), b"y".to_vec()])
            .apply(start.clone(), stamp(10, 1))
            .unwrap();
        let right = Op::SetAdd(vec![b"x".to_vec()])
            .apply(start, stamp(10, 2))
            .unwrap();
        let (left, right) = (left.state, right.state);
        let versions = [
            (left.kind(), left.encode(), Timestamp(10)),
            (right.kind(), right.encode(), Timestamp(11)),
        ];
        let merged = Value::of_versions(versions.iter().map(|(k, b, t)| (*k, &b[..], *t)));
        let Some(Value::Typed(Typed::Set(set))) = merged.unwrap() else {
            panic!()
        };
        assert_eq!(set.elements().collect::<Vec<_>>(), [b"x"]);
        let _: &OrSet = &set;
    }

    mod laws {
        use super::*;
        use proptest::prelude::*;

        const REPLICAS: usize = 3;

        /// A step of a history: an operation through a replica, or a merge between two.
        #[derive(Clone, Debug)]
        enum Step {
            Apply { at: usize, op: Op },
            Sync { from: usize, at: usize },
        }

        fn name(i: u8) -> Vec<u8> {
            vec![b'a' + i]
        }

        fn hash_op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..4, 0u8..4).prop_map(|(f, v)| Op::HashSet {
                    pairs: vec![(name(f), name(v))],
                    only_new: false,
                }),
                (0u8..4).prop_map(|f| Op::HashDelete(vec![name(f)])),
                (0u8..4, -5i64..5).prop_map(|(f, by)| Op::HashIncrement { field: name(f), by }),
            ]
        }

        fn zset_op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..4, -4i32..4).prop_map(|(m, s)| Op::SortedAdd {
                    pairs: vec![(f64::from(s), name(m))],
                    flags: AddFlags::default(),
                }),
                (0u8..4).prop_map(|m| Op::SortedRemove(vec![name(m)])),
                (0u8..4, -4i32..4).prop_map(|(m, s)| Op::SortedAdd {
                    pairs: vec![(f64::from(s) / 2.0, name(m))],
                    flags: AddFlags {
                        incr: true,
                        ..AddFlags::default()
                    },
                }),
            ]
        }

        fn steps(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Vec<Step>> {
            let replica = 0..REPLICAS;
            let step = prop_oneof![
                (replica.clone(), op).prop_map(|(at, op)| Step::Apply { at, op }),
                (replica.clone(), replica).prop_map(|(from, at)| Step::Sync { from, at }),
            ];
            proptest::collection::vec(step, 0..40)
        }

        /// Runs `steps` from empty states of `data_type`; the replicas' states.
        fn run(data_type: DataType, steps: &[Step]) -> Vec<Typed> {
            let empty = Typed::empty(data_type).unwrap();
            let mut replicas = vec![empty; REPLICAS];
            for (time, step) in steps.iter().enumerate() {
                match step {
                    Step::Apply { at, op } => {
                        let current = Some(Value::Typed(replicas[*at].clone()));
                        let stamp = stamp(time as u64 + 1, *at as u64 + 1);
                        // A refused operation (an increment of a non-number) changes nothing.
                        if let Ok(applied) = op.clone().apply(current, stamp) {
                            replicas[*at] = applied.state;
                        }
                    }
                    Step::Sync { from, at } => {
                        let source = replicas[*from].clone();
                        replicas[*at].merge(&source);
                    }
                }
            }
            replicas
        }

        fn merged(a: &Typed, b: &Typed) -> Typed {
            let mut out = a.clone();
            out.merge(b);
            out
        }

        fn check_laws(replicas: &[Typed]) -> Result<(), TestCaseError> {
            let (x, y, z) = (&replicas[0], &replicas[1], &replicas[2]);
            prop_assert_eq!(merged(x, y), merged(y, x));
            prop_assert_eq!(merged(&merged(x, y), z), merged(x, &merged(y, z)));
            prop_assert_eq!(merged(x, x), x.clone());
            // Replicas that saw everything hold one state, and it survives its encoding.
            let all = merged(&merged(x, y), z);
            for replica in replicas {
                prop_assert_eq!(merged(replica, &all), all.clone());
            }
            prop_assert_eq!(Typed::decode(all.kind(), &all.encode()).unwrap(), all);
            Ok(())
        }

        proptest! {
            #[test]
            fn hash_merges_are_commutative_associative_idempotent_and_converge(
                steps in steps(hash_op())
            ) {
                check_laws(&run(DataType::Hash, &steps))?;
            }

            #[test]
            fn sorted_set_merges_are_commutative_associative_idempotent_and_converge(
                steps in steps(zset_op())
            ) {
                check_laws(&run(DataType::SortedSet, &steps))?;
            }

            #[test]
            fn concurrent_hash_increments_all_count(
                increments in proptest::collection::vec((0..REPLICAS, -9i64..9), 1..20)
            ) {
                // Every replica starts from one field and increments it without hearing
                // from the others; the merge counts every increment once.
                let start = Op::HashSet { pairs: vec![(name(0), b"10".to_vec())], only_new: false }
                    .apply(None, stamp(1, 1))
                    .unwrap()
                    .state;
                let mut replicas = vec![start; REPLICAS];
                for (time, (at, by)) in increments.iter().enumerate() {
                    let op = Op::HashIncrement { field: name(0), by: *by };
                    let current = Some(Value::Typed(replicas[*at].clone()));
                    replicas[*at] = op.apply(current, stamp(time as u64 + 2, *at as u64 + 1))
                        .unwrap().state;
                }
                let all = replicas.iter().skip(1).fold(replicas[0].clone(), |all, r| merged(&all, r));
                let Typed::Hash(hash) = all else { panic!("a hash") };
                let total = 10 + increments.iter().map(|(_, by)| by).sum::<i64>();
                prop_assert_eq!(hash.get(&name(0)).unwrap().value(), total.to_string().into_bytes());
            }
        }
    }
}
