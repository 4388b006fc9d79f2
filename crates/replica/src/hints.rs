//! Hints: copies of records that a coordinator could not deliver to one of their replicas
//! (down, or failing), kept durably in this node's engine until the handoff service delivers
//! them (hinted handoff, as in Dynamo and Cassandra). This module is the durable queue only:
//! which hints to take and when to replay them is the coordinator's.
//!
//! Layout: `h | target length (u8) | target | sequence (u64 big-endian)` → the encoded hint,
//! so one target's hints are contiguous and in the order they were stored. Each target's
//! queue is bounded in count and bytes; past a bound a hint is refused (anti-entropy covers
//! that data instead), never queued without end.

use crate::layout;
use parking_lot::Mutex;
use ringkv_core::codec::{put_bytes, Reader};
use ringkv_core::limits::{KEYSPACE_NAME_BYTES_MAX, RECORD_BYTES_MAX, STORED_KEY_BYTES_READ_MAX};
use ringkv_core::record::Record;
use ringkv_storage::{Engine, StorageError, WriteBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// Longest node id a hint may be addressed to (its length is one byte of the engine key).
pub const TARGET_BYTES_MAX: usize = u8::MAX as usize;

/// A record to deliver to one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    /// When the hint was made, unix ms (it expires a window after).
    pub created_ms: u64,
    /// The record's keyspace.
    pub keyspace: String,
    /// The record's key.
    pub key: Vec<u8>,
    /// The record, to merge into the replica's copy.
    pub record: Record,
}

/// A hint as stored: its place in its target's queue and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHint {
    /// Its place in the target's queue (hints are replayed in this order).
    pub sequence: u64,
    /// Bytes it takes in the engine.
    pub bytes: u64,
    /// The hint.
    pub hint: Hint,
}

/// Bounds of one target's queue.
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    /// Most hints queued for one target.
    pub count_max: u64,
    /// Most bytes of hints queued for one target.
    pub bytes_max: u64,
}

/// What storing a hint came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// It is durable in the target's queue.
    Queued,
    /// The target's queue is full (or the target's id too long): not kept.
    Refused,
}

/// One target's queue, as counted in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// The sequence the next hint gets.
    next: u64,
    /// Hints queued.
    pub count: u64,
    /// Bytes of hints queued.
    pub bytes: u64,
}

/// Every target's durable queue of hints on this node.
pub struct Hints {
    engine: Arc<dyn Engine>,
    limits: HintLimits,
    queues: Mutex<HashMap<String, QueueState>>,
}

impl Hints {
    /// The hints stored in `engine`, counted by a scan of them.
    pub fn open(engine: Arc<dyn Engine>, limits: HintLimits) -> Result<Self, StorageError> {
        let mut queues: HashMap<String, QueueState> = HashMap::new();
        let mut range = layout::hints_range();
        loop {
            let page = engine.scan(&range, 1024)?;
            for (engine_key, value) in &page {
                let Some((target, sequence)) = layout::parse_hint_key(engine_key) else {
                    continue;
                };
                let queue = queues.entry(target.to_owned()).or_default();
                queue.next = queue.next.max(sequence + 1);
                queue.count += 1;
                queue.bytes += (engine_key.len() + value.len()) as u64;
            }
            match page.last() {
                Some((last, _)) if page.len() == 1024 => range = range.after(last),
                _ => break,
            }
        }
        Ok(Self {
            engine,
            limits,
            queues: Mutex::new(queues),
        })
    }

    /// Stores `hints` (target, hint) durably, with one sync for all; each is queued or
    /// refused as its target's bounds allow.
    pub fn store(&self, hints: &[(String, Hint)]) -> Result<Vec<Stored>, StorageError> {
        let mut batch = WriteBatch::new();
        let mut outcomes = Vec::with_capacity(hints.len());
        let mut queues = self.queues.lock();
        let before = queues.clone();
        for (target, hint) in hints {
            let value = encode(hint);
            let queue = queues.entry(target.clone()).or_default();
            let key = layout::hint_key(target, queue.next);
            let bytes = (key.len() + value.len()) as u64;
            let fits = target.len() <= TARGET_BYTES_MAX
                && queue.count < self.limits.count_max
                && queue.bytes + bytes <= self.limits.bytes_max;
            if !fits {
                outcomes.push(Stored::Refused);
                continue;
            }
            queue.next += 1;
            queue.count += 1;
            queue.bytes += bytes;
            batch.put(key, value);
            outcomes.push(Stored::Queued);
        }
        if !batch.is_empty() {
            if let Err(error) = self.engine.write_durable(batch) {
                *queues = before;
                return Err(error);
            }
        }
        Ok(outcomes)
    }

    /// Up to `limit` of `target`'s hints, oldest first. A hint whose bytes do not decode is
    /// returned as `Err` with its sequence, for the caller to drop.
    #[allow(clippy::type_complexity)]
    pub fn oldest(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<Result<StoredHint, (u64, u64)>>, StorageError> {
        let page = self.engine.scan(&layout::hints_of(target), limit)?;
        Ok(page
            .into_iter()
            .filter_map(|(engine_key, value)| {
                let (_, sequence) = layout::parse_hint_key(&engine_key)?;
                let bytes = (engine_key.len() + value.len()) as u64;
                Some(match decode(&value) {
                    Some(hint) => Ok(StoredHint {
                        sequence,
                        bytes,
                        hint,
                    }),
                    None => Err((sequence, bytes)),
                })
            })
            .collect())
    }

    /// Removes `target`'s hint `sequence` of `bytes` (delivered, expired or damaged).
    pub fn remove(&self, target: &str, sequence: u64, bytes: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.delete(layout::hint_key(target, sequence));
        self.engine.write(batch)?;
        let mut queues = self.queues.lock();
        if let Some(queue) = queues.get_mut(target) {
            queue.count = queue.count.saturating_sub(1);
            queue.bytes = queue.bytes.saturating_sub(bytes);
        }
        Ok(())
    }

    /// Every target with hints queued, and its queue's figures.
    pub fn queues(&self) -> Vec<(String, QueueState)> {
        let queues = self.queues.lock();
        let mut all: Vec<_> = queues
            .iter()
            .filter(|(_, queue)| queue.count > 0)
            .map(|(target, queue)| (target.clone(), *queue))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A hint's stored form: created time, keyspace, key, record.
fn encode(hint: &Hint) -> Vec<u8> {
    let record = hint.record.encode();
    let mut out = Vec::with_capacity(16 + hint.keyspace.len() + hint.key.len() + record.len());
    out.extend_from_slice(&hint.created_ms.to_le_bytes());
    put_bytes(&mut out, hint.keyspace.as_bytes());
    put_bytes(&mut out, &hint.key);
    put_bytes(&mut out, &record);
    out
}

/// A hint from its stored form; `None` if damaged.
fn decode(bytes: &[u8]) -> Option<Hint> {
    let mut reader = Reader::new(bytes);
    let created_ms = reader.u64().ok()?;
    let keyspace = reader.bytes("keyspace", KEYSPACE_NAME_BYTES_MAX).ok()?;
    let keyspace = std::str::from_utf8(keyspace).ok()?.to_owned();
    let key = reader
        .bytes("key", STORED_KEY_BYTES_READ_MAX)
        .ok()?
        .to_vec();
    let record = Record::decode(reader.bytes("record", RECORD_BYTES_MAX).ok()?).ok()?;
    reader.finish().ok()?;
    Some(Hint {
        created_ms,
        keyspace,
        key,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::causal::{ReplicaId, VersionVector};
    use ringkv_core::hlc::Timestamp;
    use ringkv_core::record::Mutation;
    use ringkv_storage::EngineKind;

    fn hint(key: &str) -> Hint {
        let mutation = Mutation::bytes(key.as_bytes().to_vec(), None);
        let record = Record::update(
            None,
            &VersionVector::new(),
            mutation,
            ReplicaId(1),
            Timestamp::from_wall_ms(5),
        )
        .unwrap();
        Hint {
            created_ms: 7,
            keyspace: "default".into(),
            key: key.as_bytes().to_vec(),
            record,
        }
    }

    const ROOMY: HintLimits = HintLimits {
        count_max: 100,
        bytes_max: 1 << 20,
    };

    #[test]
    fn hints_come_back_in_order_per_target_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = ringkv_storage::open(EngineKind::Lsm, dir.path()).unwrap();
            let hints = Hints::open(engine, ROOMY).unwrap();
            let stored = hints
                .store(&[
                    ("b".into(), hint("1")),
                    ("a".into(), hint("x")),
                    ("b".into(), hint("2")),
                ])
                .unwrap();
            assert_eq!(stored, vec![Stored::Queued; 3]);
        }
        let engine = ringkv_storage::open(EngineKind::Lsm, dir.path()).unwrap();
        let hints = Hints::open(engine, ROOMY).unwrap();
        let queues = hints.queues();
        assert_eq!(queues.len(), 2);
        assert_eq!((queues[1].0.as_str(), queues[1].1.count), ("b", 2));
        let of_b: Vec<Hint> = hints
            .oldest("b", 10)
            .unwrap()
            .into_iter()
            .map(|h| h.unwrap().hint)
            .collect();
        assert_eq!(of_b, vec![hint("1"), hint("2")]);
        let first = hints.oldest("b", 1).unwrap().remove(0).unwrap();
        hints.remove("b", first.sequence, first.bytes).unwrap();
        hints.store(&[("b".into(), hint("3"))]).unwrap();
        let keys: Vec<Vec<u8>> = hints
            .oldest("b", 10)
            .unwrap()
            .into_iter()
            .map(|h| h.unwrap().hint.key)
            .collect();
        assert_eq!(
            keys,
            vec![b"2".to_vec(), b"3".to_vec()],
            "a later hint queues after"
        );
    }

    #[test]
    fn a_full_queue_refuses_hints_and_takes_them_again_once_drained() {
        let dir = tempfile::tempdir().unwrap();
        let engine = ringkv_storage::open(EngineKind::Memory, dir.path()).unwrap();
        let limits = HintLimits {
            count_max: 2,
            bytes_max: 1 << 20,
        };
        let hints = Hints::open(engine, limits).unwrap();
        let three: Vec<(String, Hint)> = ["1", "2", "3"]
            .iter()
            .map(|k| ("t".into(), hint(k)))
            .collect();
        assert_eq!(
            hints.store(&three).unwrap(),
            vec![Stored::Queued, Stored::Queued, Stored::Refused]
        );
        let long_target = "n".repeat(TARGET_BYTES_MAX + 1);
        assert_eq!(
            hints.store(&[(long_target, hint("4"))]).unwrap(),
            vec![Stored::Refused]
        );
        for stored in hints.oldest("t", 10).unwrap() {
            let stored = stored.unwrap();
            hints.remove("t", stored.sequence, stored.bytes).unwrap();
        }
        assert!(hints.queues().is_empty());
        assert_eq!(hints.store(&three[2..]).unwrap(), vec![Stored::Queued]);

        let small = HintLimits {
            count_max: 100,
            bytes_max: 10,
        };
        let dir = tempfile::tempdir().unwrap();
        let engine = ringkv_storage::open(EngineKind::Memory, dir.path()).unwrap();
        let hints = Hints::open(engine, small).unwrap();
        assert_eq!(
            hints.store(&three[..1]).unwrap(),
            vec![Stored::Refused],
            "bytes bound"
        );
    }
}
