//! What the workload did, and the checker of what the cluster kept of it.
//!
//! Each key's operations form a sequence (one client at a time per key). Once the cluster
//! has converged, each key's final state must be one the history allows:
//! - the state left by the key's last acknowledged write (its value, or nothing after a
//!   delete); or
//! - the state left by any write that was not acknowledged: one that failed or timed out may
//!   still have been applied, and later than it seemed (a paused node resuming);
//! - nothing, if no write of the key was acknowledged.
//!
//! Anything else is a violation: an **acknowledged write lost** (the key holds an older
//! acknowledged value, or nothing, where a newer acknowledged write should be), or a
//! **resurrection** (the key holds a value that an acknowledged delete had removed).

use std::collections::BTreeMap;
use std::time::Duration;

/// One operation and its outcome.
#[derive(Clone, Debug)]
pub struct Op {
    /// The key's index.
    pub key: usize,
    /// What was asked.
    pub kind: Kind,
    /// What came of it.
    pub outcome: Outcome,
    /// When it was sent, since the workload started.
    pub start: Duration,
    /// When its answer (or the lack of one) was known.
    pub end: Duration,
    /// The node it was sent to.
    pub node: String,
}

/// What an operation asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Store this value.
    Put(String),
    /// Delete the key.
    Delete,
    /// Read the key; what was read, if it succeeded.
    Get(Option<String>),
}

/// What came of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused with this HTTP status: not acknowledged (it may still have been applied on
    /// some replica).
    Failed(u16),
    /// No answer in time: it may or may not have been applied.
    Unknown,
}

/// Every operation of a workload, in the order they were sent.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations, by start time.
    pub ops: Vec<Op>,
    /// How long the workload ran.
    pub duration: Duration,
}

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Keys checked (those the history wrote or deleted).
    pub keys_checked: usize,
    /// Acknowledged writes lost, one line each.
    pub lost: Vec<String>,
    /// Deleted values that came back, one line each.
    pub resurrected: Vec<String>,
    /// The keys of both, for a closer look.
    pub keys: Vec<usize>,
}

impl History {
    /// Operations with each outcome: (acknowledged, failed, unknown).
    pub fn outcomes(&self) -> (usize, usize, usize) {
        let count =
            |wanted: fn(&Outcome) -> bool| self.ops.iter().filter(|op| wanted(&op.outcome)).count();
        (
            count(|o| *o == Outcome::Ok),
            count(|o| matches!(o, Outcome::Failed(_))),
            count(|o| *o == Outcome::Unknown),
        )
    }

    /// The keys the history wrote or deleted.
    pub fn keys_written(&self) -> Vec<usize> {
        let mut keys: Vec<usize> = self
            .ops
            .iter()
            .filter(|op| !matches!(op.kind, Kind::Get(_)))
            .map(|op| op.key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Checks each written key's final state (`None`: no value) against the history.
    pub fn check(&self, finals: &BTreeMap<usize, Option<String>>) -> Findings {
        let mut findings = Findings::default();
        for key in self.keys_written() {
            findings.keys_checked += 1;
            let writes: Vec<&Op> = self
                .ops
                .iter()
                .filter(|op| op.key == key && !matches!(op.kind, Kind::Get(_)))
                .collect();
            let found = finals.get(&key).cloned().flatten();
            if allowed(&writes).contains(&found) {
                continue;
            }
            let shown = found.as_deref().unwrap_or("nothing");
            let deleted_after_it = found.as_ref().is_some_and(|value| {
                let written = writes
                    .iter()
                    .position(|op| op.kind == Kind::Put(value.clone()));
                written.is_some_and(|at| {
                    writes[at + 1..]
                        .iter()
                        .any(|op| op.kind == Kind::Delete && op.outcome == Outcome::Ok)
                })
            });
            let mut line = format!(
                "fl-{key}: holds {shown}; the history allows {:?}; its last writes:",
                allowed(&writes)
            );
            for op in writes.iter().rev().take(6).rev() {
                line.push_str(&format!(
                    "\n    {:>9.3}-{:<9.3} {:?} via {} -> {:?}",
                    op.start.as_secs_f64(),
                    op.end.as_secs_f64(),
                    op.kind,
                    op.node,
                    op.outcome
                ));
            }
            findings.keys.push(key);
            if deleted_after_it {
                findings.resurrected.push(line);
            } else {
                findings.lost.push(line);
            }
        }
        findings
    }
}

/// The final states a key's writes (in order) allow.
fn allowed(writes: &[&Op]) -> Vec<Option<String>> {
    let state = |op: &Op| match &op.kind {
        Kind::Put(value) => Some(value.clone()),
        Kind::Delete | Kind::Get(_) => None,
    };
    let mut states: Vec<Option<String>> =
        match writes.iter().rposition(|op| op.outcome == Outcome::Ok) {
            Some(last) => vec![state(writes[last])],
            None => vec![None],
        };
    states.extend(
        writes
            .iter()
            .filter(|op| op.outcome != Outcome::Ok)
            .map(|op| state(op)),
    );
    states.dedup();
    states
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: usize, kind: Kind, outcome: Outcome, at: u64) -> Op {
        Op {
            key,
            kind,
            outcome,
            start: Duration::from_millis(at),
            end: Duration::from_millis(at + 1),
            node: "n".into(),
        }
    }

    fn put(value: &str) -> Kind {
        Kind::Put(value.into())
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            duration: Duration::from_secs(1),
        }
    }

    fn finals(pairs: &[(usize, Option<&str>)]) -> BTreeMap<usize, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn the_last_acknowledged_write_is_the_expected_state() {
        let h = history(vec![
            op(0, put("a"), Outcome::Ok, 0),
            op(0, put("b"), Outcome::Ok, 10),
        ]);
        assert!(h.check(&finals(&[(0, Some("b"))])).lost.is_empty());
        let found = h.check(&finals(&[(0, Some("a"))]));
        assert_eq!(
            found.lost.len(),
            1,
            "an older acknowledged value is a lost write"
        );
        assert_eq!(h.check(&finals(&[(0, None)])).lost.len(), 1);
    }

    #[test]
    fn a_write_without_acknowledgement_may_or_may_not_have_landed() {
        let h = history(vec![
            op(0, put("a"), Outcome::Ok, 0),
            op(0, put("b"), Outcome::Unknown, 10),
            op(0, put("c"), Outcome::Failed(503), 20),
        ]);
        for state in ["a", "b", "c"] {
            assert!(
                h.check(&finals(&[(0, Some(state))])).lost.is_empty(),
                "{state}"
            );
        }
        let unacknowledged_only = history(vec![op(1, put("x"), Outcome::Unknown, 0)]);
        assert!(unacknowledged_only
            .check(&finals(&[(1, None)]))
            .lost
            .is_empty());
        assert!(unacknowledged_only
            .check(&finals(&[(1, Some("x"))]))
            .lost
            .is_empty());
    }

    #[test]
    fn a_value_back_after_an_acknowledged_delete_is_a_resurrection() {
        let h = history(vec![
            op(0, put("a"), Outcome::Ok, 0),
            op(0, Kind::Delete, Outcome::Ok, 10),
            op(0, Kind::Get(None), Outcome::Ok, 20),
        ]);
        let found = h.check(&finals(&[(0, Some("a"))]));
        assert_eq!(found.resurrected.len(), 1);
        assert!(found.lost.is_empty());
        assert!(h.check(&finals(&[(0, None)])).resurrected.is_empty());
    }

    #[test]
    fn outcomes_and_written_keys_are_counted() {
        let h = history(vec![
            op(0, put("a"), Outcome::Ok, 0),
            op(1, Kind::Get(None), Outcome::Unknown, 1),
            op(2, Kind::Delete, Outcome::Failed(503), 2),
        ]);
        assert_eq!(h.outcomes(), (1, 1, 1));
        assert_eq!(h.keys_written(), vec![0, 2]);
    }
}
