//! A linearizability checker for per-key histories of register and compare-and-set
//! operations, for the strong keyspaces' fault tests.
//!
//! A history is linearizable when each operation can be given a single instant between its
//! invocation and its response such that, taken in the order of those instants, the
//! operations are a valid sequential run of the object (Herlihy and Wing). The search is
//! Wing and Gong's, with Lowe's memoization, as porcupine does it: walk the invocations and
//! responses in time order; at an invocation, try to linearize that operation next (if the
//! model accepts it from the current state and that set of linearized operations with that
//! state has not been tried before); at the response of an operation not yet linearized,
//! back out the last choice. Keys are independent objects, so each key's history is
//! checked on its own.
//!
//! An operation that crashed or timed out has no response: it may have taken effect at any
//! time after its invocation, or never. Its response is put after every other event, where
//! the search may leave it out, and its output, unknown, is whatever the model says.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential object the history should be a run of.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// What an operation asks.
    type Input;
    /// What an operation answered.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` is applied to `state`, if that can answer `output` (`None`:
    /// the answer is unknown, and any answer will do); `None` if it cannot.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// What it asked.
    pub input: I,
    /// What it answered; `None` if it never answered (crashed or timed out).
    pub output: Option<O>,
    /// When it was invoked.
    pub start: u64,
    /// When its answer came; `None` if it never came. An operation that ended before another
    /// started precedes it; one that ended at the instant another started does not.
    pub end: Option<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists: the history is wrong.
    NotLinearizable,
    /// The search gave up after its step budget (a history too concurrent to settle).
    Unknown,
}

/// One invocation or response, in time order.
#[derive(Clone, Copy, Debug)]
struct Event {
    operation: usize,
    call: bool,
}

/// Checks one object's history against `model`, trying at most `steps_max` linearization
/// steps.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    steps_max: u64,
) -> Verdict {
    let events = ordered_events(history);
    // A doubly linked list over the events, so that linearizing an operation lifts its two
    // events out and backing out puts them back, in constant time.
    let count = events.len();
    let mut next: Vec<usize> = (1..=count).collect();
    let mut prev: Vec<usize> = (0..count).map(|i| i.wrapping_sub(1)).collect();
    let head = usize::MAX; // `prev` of the first event, `next` sentinel value is `count`.
    let mut first = if count == 0 { count } else { 0 };
    let mut response_of = vec![0; history.len()];
    let mut call_of = vec![0; history.len()];
    for (index, event) in events.iter().enumerate() {
        if event.call {
            call_of[event.operation] = index;
        } else {
            response_of[event.operation] = index;
        }
    }
    let lift = |first: &mut usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (before, after) = (prev[at], next[at]);
        if before == head {
            *first = after;
        } else {
            next[before] = after;
        }
        if after != count {
            prev[after] = before;
        }
    };
    let unlift = |first: &mut usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (before, after) = (prev[at], next[at]);
        if before == head {
            *first = at;
        } else {
            next[before] = at;
        }
        if after != count {
            prev[after] = at;
        }
    };
    let completed: usize = history.iter().filter(|op| op.end.is_some()).count();
    let mut linearized = vec![false; history.len()];
    let mut linearized_completed = 0;
    let mut tried: HashSet<(Vec<bool>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut at = first;
    let mut steps = 0;
    loop {
        if linearized_completed == completed {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > steps_max {
            return Verdict::Unknown;
        }
        let event = if at == count { None } else { Some(events[at]) };
        match event {
            Some(Event {
                operation,
                call: true,
            }) => {
                let op = &history[operation];
                let stepped = model.step(&state, &op.input, op.output.as_ref());
                let fresh = stepped.as_ref().is_some_and(|after| {
                    linearized[operation] = true;
                    let fresh = tried.insert((linearized.clone(), after.clone()));
                    linearized[operation] = false;
                    fresh
                });
                match stepped {
                    Some(after) if fresh => {
                        linearized[operation] = true;
                        if op.end.is_some() {
                            linearized_completed += 1;
                        }
                        stack.push((operation, std::mem::replace(&mut state, after)));
                        lift(&mut first, &mut next, &mut prev, call_of[operation]);
                        lift(&mut first, &mut next, &mut prev, response_of[operation]);
                        at = first;
                    }
                    _ => at = next[at],
                }
            }
            // A response (or the end) reached with its operation not linearized: back out the
            // last choice and try the invocation after it.
            _ => {
                let Some((operation, before)) = stack.pop() else {
                    return Verdict::NotLinearizable;
                };
                state = before;
                linearized[operation] = false;
                if history[operation].end.is_some() {
                    linearized_completed -= 1;
                }
                unlift(&mut first, &mut next, &mut prev, response_of[operation]);
                unlift(&mut first, &mut next, &mut prev, call_of[operation]);
                at = next[call_of[operation]];
            }
        }
    }
}

/// The invocations and responses in time order, an operation without a response getting
/// one after every other event. At equal times invocations come first: operations that
/// touch at an instant are concurrent.
fn ordered_events<I, O>(history: &[Operation<I, O>]) -> Vec<Event> {
    let mut keyed: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (operation, op) in history.iter().enumerate() {
        keyed.push((op.start, false, operation));
        keyed.push((op.end.unwrap_or(u64::MAX), true, operation));
    }
    // (time, is response, operation): invocations before responses at equal times.
    keyed.sort_unstable();
    keyed
        .into_iter()
        .map(|(_, response, operation)| Event {
            operation,
            call: !response,
        })
        .collect()
}

/// A key's value, as the strong keyspaces serve it: read, write, delete and compare-and-set.
#[derive(Clone, Copy, Debug, Default)]
pub struct CasRegister;

/// An operation of a [`CasRegister`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CasInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write(u64),
    /// Remove the value.
    Delete,
    /// Set the value to `new` if it is `expected` (`None`: if there is none).
    Cas { expected: Option<u64>, new: u64 },
}

/// An answer of a [`CasRegister`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CasOutput {
    /// What a read saw.
    Read(Option<u64>),
    /// A write or delete was done.
    Done,
    /// Whether a compare-and-set applied.
    Cas(bool),
}

impl Model for CasRegister {
    type State = Option<u64>;
    type Input = CasInput;
    type Output = CasOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(
        &self,
        state: &Option<u64>,
        input: &CasInput,
        output: Option<&CasOutput>,
    ) -> Option<Option<u64>> {
        let (after, answer) = match *input {
            CasInput::Read => (*state, CasOutput::Read(*state)),
            CasInput::Write(value) => (Some(value), CasOutput::Done),
            CasInput::Delete => (None, CasOutput::Done),
            CasInput::Cas { expected, new } if *state == expected => {
                (Some(new), CasOutput::Cas(true))
            }
            CasInput::Cas { .. } => (*state, CasOutput::Cas(false)),
        };
        match output {
            Some(output) if *output != answer => None,
            _ => Some(after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        input: CasInput,
        output: Option<CasOutput>,
        start: u64,
        end: Option<u64>,
    ) -> Operation<CasInput, CasOutput> {
        Operation {
            input,
            output,
            start,
            end,
        }
    }

    fn verdict(history: &[Operation<CasInput, CasOutput>]) -> Verdict {
        check(&CasRegister, history, 1_000_000)
    }

    use CasInput::*;

    #[test]
    fn known_linearizable_histories_are_accepted() {
        // Two overlapping writes; reads after both may see either, but both the same one.
        let concurrent = [
            op(Write(1), Some(CasOutput::Done), 0, Some(10)),
            op(Write(2), Some(CasOutput::Done), 5, Some(15)),
            op(Read, Some(CasOutput::Read(Some(1))), 20, Some(25)),
            op(Read, Some(CasOutput::Read(Some(1))), 30, Some(35)),
        ];
        assert_eq!(verdict(&concurrent), Verdict::Linearizable);
        // A read overlapping a write may see the old value or the new.
        let overlapping = [
            op(Write(1), Some(CasOutput::Done), 0, Some(5)),
            op(Write(2), Some(CasOutput::Done), 10, Some(20)),
            op(Read, Some(CasOutput::Read(Some(1))), 12, Some(14)),
            op(Read, Some(CasOutput::Read(Some(2))), 15, Some(30)),
        ];
        assert_eq!(verdict(&overlapping), Verdict::Linearizable);
        // A write that timed out may have applied, late.
        let crashed = [
            op(Write(1), Some(CasOutput::Done), 0, Some(5)),
            op(Write(9), None, 6, None),
            op(Read, Some(CasOutput::Read(Some(1))), 10, Some(11)),
            op(Read, Some(CasOutput::Read(Some(9))), 20, Some(21)),
        ];
        assert_eq!(verdict(&crashed), Verdict::Linearizable);
        // ... or never.
        let never = [
            op(Write(1), Some(CasOutput::Done), 0, Some(5)),
            op(Write(9), None, 6, None),
            op(Read, Some(CasOutput::Read(Some(1))), 20, Some(21)),
        ];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        // CAS races: one of two concurrent CAS from the same value wins.
        let race = [
            op(Write(0), Some(CasOutput::Done), 0, Some(1)),
            op(
                Cas {
                    expected: Some(0),
                    new: 1,
                },
                Some(CasOutput::Cas(true)),
                2,
                Some(10),
            ),
            op(
                Cas {
                    expected: Some(0),
                    new: 2,
                },
                Some(CasOutput::Cas(false)),
                3,
                Some(9),
            ),
            op(Read, Some(CasOutput::Read(Some(1))), 11, Some(12)),
        ];
        assert_eq!(verdict(&race), Verdict::Linearizable);
        assert_eq!(verdict(&[]), Verdict::Linearizable);
    }

    #[test]
    fn known_non_linearizable_histories_are_rejected() {
        // A stale read: the write finished before the read began.
        let stale = [
            op(Write(1), Some(CasOutput::Done), 0, Some(5)),
            op(Write(2), Some(CasOutput::Done), 6, Some(10)),
            op(Read, Some(CasOutput::Read(Some(1))), 11, Some(12)),
        ];
        assert_eq!(verdict(&stale), Verdict::NotLinearizable);
        // Two reads after both writes disagree on their order.
        let flip_flop = [
            op(Write(1), Some(CasOutput::Done), 0, Some(10)),
            op(Write(2), Some(CasOutput::Done), 0, Some(10)),
            op(Read, Some(CasOutput::Read(Some(2))), 11, Some(12)),
            op(Read, Some(CasOutput::Read(Some(1))), 13, Some(14)),
        ];
        assert_eq!(verdict(&flip_flop), Verdict::NotLinearizable);
        // Both of two concurrent CAS from the same value won: a double apply.
        let double = [
            op(Write(0), Some(CasOutput::Done), 0, Some(1)),
            op(
                Cas {
                    expected: Some(0),
                    new: 1,
                },
                Some(CasOutput::Cas(true)),
                2,
                Some(10),
            ),
            op(
                Cas {
                    expected: Some(0),
                    new: 2,
                },
                Some(CasOutput::Cas(true)),
                3,
                Some(9),
            ),
        ];
        assert_eq!(verdict(&double), Verdict::NotLinearizable);
        // A value no one wrote.
        let invented = [op(Read, Some(CasOutput::Read(Some(7))), 0, Some(1))];
        assert_eq!(verdict(&invented), Verdict::NotLinearizable);
        // A read of a deleted value, after the delete finished.
        let resurrected = [
            op(Write(1), Some(CasOutput::Done), 0, Some(1)),
            op(Delete, Some(CasOutput::Done), 2, Some(3)),
            op(Read, Some(CasOutput::Read(Some(1))), 4, Some(5)),
        ];
        assert_eq!(verdict(&resurrected), Verdict::NotLinearizable);
    }

    #[test]
    fn a_too_concurrent_history_gives_up_within_its_budget() {
        // Many overlapping writes and a read that no order explains.
        let mut history: Vec<_> = (0..12)
            .map(|i| op(Write(i), Some(CasOutput::Done), 0, Some(100)))
            .collect();
        history.push(op(Read, Some(CasOutput::Read(Some(99))), 0, Some(100)));
        assert_eq!(check(&CasRegister, &history, 1000), Verdict::Unknown);
        assert_eq!(
            check(&CasRegister, &history, u64::MAX),
            Verdict::NotLinearizable
        );
    }

    /// Small random histories (three clients, each running up to three operations one after
    /// another, the last one possibly never answered), with random answers, so that many
    /// are not linearizable: the verdict must be stateright's.
    mod against_stateright {
        use super::*;
        use proptest::prelude::*;
        use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

        #[derive(Clone, Debug, Default)]
        struct Spec(Option<u64>);

        impl SequentialSpec for Spec {
            type Op = CasInput;
            type Ret = CasOutput;

            // Written apart from `CasRegister`, so the cross-check covers the model too.
            fn invoke(&mut self, op: &CasInput) -> CasOutput {
                match *op {
                    Read => CasOutput::Read(self.0),
                    Write(value) => {
                        self.0 = Some(value);
                        CasOutput::Done
                    }
                    Delete => {
                        self.0 = None;
                        CasOutput::Done
                    }
                    Cas { expected, new } => {
                        let applies = self.0 == expected;
                        if applies {
                            self.0 = Some(new);
                        }
                        CasOutput::Cas(applies)
                    }
                }
            }
        }

        fn input() -> impl Strategy<Value = CasInput> {
            let value = 1u64..3;
            prop_oneof![
                Just(Read),
                value.clone().prop_map(Write),
                Just(Delete),
                (proptest::option::of(value.clone()), value)
                    .prop_map(|(expected, new)| Cas { expected, new }),
            ]
        }

        fn output_for(input: &CasInput) -> BoxedStrategy<CasOutput> {
            match input {
                Read => proptest::option::of(1u64..3)
                    .prop_map(CasOutput::Read)
                    .boxed(),
                Write(_) | Delete => Just(CasOutput::Done).boxed(),
                Cas { .. } => any::<bool>().prop_map(CasOutput::Cas).boxed(),
            }
        }

        /// Per client, its operations with answers, and whether its last never answered.
        type Clients = Vec<(Vec<(CasInput, CasOutput)>, bool)>;

        fn clients() -> impl Strategy<Value = Clients> {
            let operation = input().prop_flat_map(|input| {
                let output = output_for(&input);
                (Just(input), output)
            });
            proptest::collection::vec(
                (proptest::collection::vec(operation, 1..4), any::<bool>()),
                1..4,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn the_verdicts_agree(clients in clients(), seed in any::<u64>()) {
                // Interleave the clients' invocations and responses at random.
                let mut next = vec![(0usize, false); clients.len()]; // (operation, invoked)
                let mut tester = LinearizabilityTester::new(Spec::default());
                let mut history = Vec::new();
                let mut open: Vec<Option<usize>> = vec![None; clients.len()];
                let mut rng = seed;
                let mut time = 0;
                loop {
                    let live: Vec<usize> = (0..clients.len())
                        .filter(|&c| {
                            let (ops, crash) = &clients[c];
                            let (at, invoked) = next[c];
                            at < ops.len() && !(invoked && *crash && at + 1 == ops.len())
                        })
                        .collect();
                    if live.is_empty() {
                        break;
                    }
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let client = live[(rng >> 33) as usize % live.len()];
                    let (at, invoked) = next[client];
                    let (input, output) = clients[client].0[at].clone();
                    time += 1;
                    if !invoked {
                        tester.on_invoke(client, input.clone()).unwrap();
                        open[client] = Some(history.len());
                        history.push(Operation { input, output: None, start: time, end: None });
                        next[client] = (at, true);
                    } else {
                        tester.on_return(client, output.clone()).unwrap();
                        let index = open[client].take().unwrap();
                        history[index].output = Some(output);
                        history[index].end = Some(time);
                        next[client] = (at + 1, false);
                    }
                }
                let ours = check(&CasRegister, &history, u64::MAX);
                let theirs = tester.is_consistent();
                prop_assert_eq!(ours == Verdict::Linearizable, theirs, "{:?}", history);
            }
        }
    }
}
