//! Laws of records, checked on records produced by simulated histories: several replicas take
//! writes (with or without the context a client read from some replica) and sync pairwise.

use super::*;
use crate::hlc::HybridClock;
use proptest::prelude::*;

const REPLICAS: usize = 3;

/// One step of a simulated history.
#[derive(Clone, Debug)]
enum Step {
    /// A client writes through `replica`, carrying the context it read from `read_from`
    /// (or none), possibly deleting.
    Write {
        replica: usize,
        read_from: Option<usize>,
        delete: bool,
    },
    /// Replica `to` merges in the record of replica `from`.
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0..REPLICAS,
            proptest::option::of(0..REPLICAS),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(replica, read_from, delete)| Step::Write {
                replica,
                read_from,
                delete
            }),
        (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Runs a history and returns every replica's final record, plus every record seen on the way.
fn run(steps: &[Step]) -> (Vec<Record>, Vec<Record>) {
    let clocks: Vec<HybridClock> = (0..REPLICAS).map(|_| HybridClock::new()).collect();
    let mut replicas = vec![Record::default(); REPLICAS];
    let mut seen = Vec::new();
    for (wall_ms, step) in steps.iter().enumerate() {
        match *step {
            Step::Write {
                replica,
                read_from,
                delete,
            } => {
                let context = read_from
                    .map(|r| replicas[r].context.clone())
                    .unwrap_or_default();
                let mutation = Mutation {
                    value: (!delete).then(|| format!("v{wall_ms}").into_bytes()),
                    expires_at_ms: None,
                    kind: ValueKind::BYTES,
                };
                let timestamp = clocks[replica].tick(wall_ms as u64);
                let id = ReplicaId(replica as u64 + 1);
                if let Ok(next) =
                    Record::update(Some(&replicas[replica]), &context, mutation, id, timestamp)
                {
                    replicas[replica] = next;
                }
            }
            Step::Sync { from, to } => replicas[to] = replicas[to].sync(&replicas[from]),
        }
        seen.extend(replicas.iter().cloned());
    }
    (replicas, seen)
}

fn histories() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 0..40)
}

fn well_formed(record: &Record) -> bool {
    record.siblings.windows(2).all(|w| w[0].dot < w[1].dot)
        && record.siblings.iter().all(|s| record.context.covers(s.dot))
}

proptest! {
    #[test]
    fn sync_is_commutative_associative_and_idempotent(steps in histories()) {
        let (r, _) = run(&steps);
        prop_assert_eq!(r[0].sync(&r[1]), r[1].sync(&r[0]));
        prop_assert_eq!(r[0].sync(&r[1]).sync(&r[2]), r[0].sync(&r[1].sync(&r[2])));
        prop_assert_eq!(r[0].sync(&r[0]), r[0].clone());
    }

    #[test]
    fn records_stay_well_formed(steps in histories()) {
        let (_, seen) = run(&steps);
        for record in &seen {
            prop_assert!(well_formed(record), "{:?}", record);
        }
    }

    #[test]
    fn a_value_a_context_has_seen_is_never_resurrected(steps in histories()) {
        // For every record A seen in the history and every dot A's context covers but A no
        // longer holds, no merge of A with any other record of the history brings it back.
        let (_, seen) = run(&steps);
        for a in seen.iter().step_by(REPLICAS) {
            for other in &seen {
                let merged = a.sync(other);
                for sibling in &merged.siblings {
                    let superseded = a.context.covers(sibling.dot)
                        && !a.siblings.iter().any(|s| s.dot == sibling.dot);
                    prop_assert!(!superseded, "{:?} resurrected by merging {:?}", sibling.dot, other);
                }
            }
        }
    }

    #[test]
    fn replicas_converge_after_full_sync(steps in histories()) {
        let (mut r, _) = run(&steps);
        for _ in 0..2 {
            for from in 0..REPLICAS {
                for to in 0..REPLICAS {
                    r[to] = r[to].sync(&r[from]);
                }
            }
        }
        prop_assert_eq!(&r[0], &r[1]);
        prop_assert_eq!(&r[1], &r[2]);
    }

    #[test]
    fn encoding_round_trips(steps in histories()) {
        let (replicas, _) = run(&steps);
        for record in replicas {
            prop_assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn the_in_place_view_reads_what_decode_reads(steps in histories()) {
        // The view's newest visible value is the one a read of the decoded record returns:
        // the visible siblings ordered by time (dot order on ties), the last of them.
        let (replicas, _) = run(&steps);
        for record in replicas {
            let bytes = record.encode();
            let view = RecordView::decode(&bytes).unwrap();
            prop_assert_eq!(&view.context, &record.context);
            let mut visible: Vec<&Sibling> = record.visible(0).collect();
            visible.sort_by_key(|sibling| sibling.timestamp);
            let expected = visible.last().and_then(|sibling| sibling.value.as_deref());
            prop_assert_eq!(view.newest_visible(0).and_then(|sibling| sibling.value), expected);
            prop_assert_eq!(newest_visible_value(&bytes, 0).unwrap().and_then(|s| s.value), expected);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(steps in histories(), position: prop::sample::Index, bit in 0u8..8) {
        let (replicas, _) = run(&steps);
        let mut bytes = replicas[0].encode();
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        prop_assert!(Record::decode(&bytes).is_err());
        prop_assert!(newest_visible_value(&bytes, 0).is_err());
        prop_assert!(PointRead::of_encoded(&bytes).is_err());
        prop_assert!(Replaced::of_encoded(&bytes).is_err());
    }

    #[test]
    fn replacing_a_summary_gives_what_updating_the_record_gives(
        steps in histories(),
        delete in any::<bool>(),
        expires_at_ms in proptest::option::of(1u64..1_000),
    ) {
        let (replicas, _) = run(&steps);
        for record in replicas {
            let replaced = Replaced::of_encoded(&record.encode()).unwrap();
            prop_assert_eq!(&replaced, &Replaced::of_record(&record));
            prop_assert_eq!(&replaced, &Replaced::of_checked(&record.encode()).unwrap());
            // Through the point read, for a record of one sibling, as the record cache reads it.
            let (bytes, point) = record.encode_for_reads();
            if let Some(point) = point {
                prop_assert_eq!(&Replaced::of_point(&bytes, &point).unwrap(), &replaced);
            }
            let replaced = replaced.expect("records built here cover their siblings");
            prop_assert_eq!(replaced.newest_timestamp, record.newest_timestamp());
            prop_assert_eq!(replaced.next_dead_ms, record.next_dead_ms());
            let mutation = Mutation {
                value: (!delete).then(|| b"new".to_vec()),
                expires_at_ms,
                kind: ValueKind::BYTES,
            };
            let (replica, at) = (ReplicaId(2), Timestamp::from_wall_ms(5_000));
            let updated =
                Record::update_owned(Some(record.clone()), &record.context, mutation.clone(), replica, at);
            let replacing = Record::replace(Some(replaced.clone()), mutation.clone(), replica, at).unwrap();
            prop_assert_eq!(&replacing, updated.as_ref().unwrap());
            // Encoded in one step, as the writer does for a plain SET: the same bytes.
            for (replaced, expected) in [
                (Some(replaced), replacing),
                (None, Record::replace(None, mutation.clone(), replica, at).unwrap()),
            ] {
                let encoded = Record::encode_replacement(replaced.clone(), mutation.view(), replica, at);
                let (bytes, point) = expected.encode_for_reads();
                prop_assert_eq!(&encoded.bytes, &bytes);
                prop_assert_eq!(encoded.point, point);
                prop_assert_eq!(encoded.next_dead_ms, expected.next_dead_ms());
                // Into a buffer that held something else: the same bytes, nothing left over.
                let mut reused = vec![0xAB; 700];
                let into = Record::encode_replacement_into(&mut reused, replaced, mutation.view(), replica, at);
                prop_assert_eq!(&reused, &bytes);
                prop_assert_eq!(into, (point, expected.next_dead_ms()));
            }
        }
    }

    #[test]
    fn a_point_read_returns_what_a_decoding_read_returns(
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        expires_at_ms in proptest::option::of(1u64..1_000),
        extra_siblings in 0usize..3,
        nows in proptest::collection::vec(0u64..1_100, 1..8),
    ) {
        let sibling = |counter: u64, value: Option<Vec<u8>>| Sibling {
            dot: Dot { replica: ReplicaId(1), counter },
            timestamp: Timestamp::from_wall_ms(counter),
            expires_at_ms,
            value,
            kind: ValueKind::BYTES,
        };
        let record = Record {
            context: VersionVector::new(),
            siblings: (0..=extra_siblings as u64)
                .map(|counter| sibling(counter + 1, value.clone()))
                .collect(),
        };
        let (bytes, point) = record.encode_for_reads();
        prop_assert_eq!(&bytes, &record.encode());
        prop_assert_eq!(PointRead::of_encoded(&bytes).unwrap(), point);
        // Only a record of one sibling has a point read; the others take the full decode.
        prop_assert_eq!(point.is_some(), extra_siblings == 0);
        if let Some(point) = point {
            // The context covers no sibling here: no summary, as from the whole record.
            prop_assert_eq!(Replaced::of_point(&bytes, &point).unwrap(), None);
            prop_assert_eq!(Replaced::of_checked(&bytes).unwrap(), None);
            for now in nows {
                let expected = newest_visible_value(&bytes, now).unwrap().and_then(|s| s.value);
                prop_assert_eq!(point.visible(now).map(|range| &bytes[range]), expected);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes: Vec<u8>) {
        let _ = Record::decode(&bytes);
        let _ = newest_visible_value(&bytes, 0);
        let _ = PointRead::of_encoded(&bytes);
        let _ = Replaced::of_encoded(&bytes);
        // Bytes that skip the checksum are still parsed within their bounds.
        let _ = Replaced::of_checked(&bytes);
    }
}

fn write(
    stored: Option<&Record>,
    seen: &VersionVector,
    value: &str,
    replica: u64,
    at: u64,
) -> Record {
    let mutation = Mutation {
        value: Some(value.as_bytes().to_vec()),
        expires_at_ms: None,
        kind: ValueKind::BYTES,
    };
    Record::update(
        stored,
        seen,
        mutation,
        ReplicaId(replica),
        Timestamp::from_wall_ms(at),
    )
    .unwrap()
}

#[test]
fn a_record_whose_context_misses_a_sibling_has_no_replacement_summary() {
    let mut record = write(None, &VersionVector::new(), "a", 1, 10);
    record.context = VersionVector::new();
    assert_eq!(Replaced::of_record(&record), None);
    assert_eq!(Replaced::of_encoded(&record.encode()).unwrap(), None);
}

#[test]
fn a_write_with_the_read_context_replaces_what_was_read() {
    let first = write(None, &VersionVector::new(), "a", 1, 10);
    let second = write(Some(&first), &first.context, "b", 1, 20);
    assert_eq!(second.siblings.len(), 1);
    assert_eq!(second.siblings[0].value.as_deref(), Some(&b"b"[..]));
}

#[test]
fn a_write_without_context_becomes_a_sibling() {
    let first = write(None, &VersionVector::new(), "a", 1, 10);
    let second = write(Some(&first), &VersionVector::new(), "b", 1, 20);
    assert_eq!(second.siblings.len(), 2);
}

#[test]
fn concurrent_writes_on_two_replicas_become_siblings_and_a_context_write_resolves_them() {
    let on_one = write(None, &VersionVector::new(), "a", 1, 10);
    let on_two = write(None, &VersionVector::new(), "b", 2, 11);
    let merged = on_one.sync(&on_two);
    assert_eq!(merged.siblings.len(), 2);
    let resolved = write(Some(&merged), &merged.context, "c", 1, 12);
    assert_eq!(resolved.siblings.len(), 1);
    // The stale replica learns of the resolution and drops its sibling.
    assert_eq!(on_two.sync(&resolved), resolved);
}

#[test]
fn last_writer_wins_keeps_the_newest_timestamp() {
    let on_one = write(None, &VersionVector::new(), "old", 1, 10);
    let on_two = write(None, &VersionVector::new(), "new", 2, 20);
    let mut merged = on_one.sync(&on_two);
    merged.resolve_last_writer_wins();
    assert_eq!(merged.siblings.len(), 1);
    assert_eq!(merged.siblings[0].value.as_deref(), Some(&b"new"[..]));
    // The loser cannot come back from the replica that still holds it.
    assert_eq!(merged.sync(&on_one).siblings.len(), 1);
}

#[test]
fn sibling_count_is_bounded() {
    let mut record = write(None, &VersionVector::new(), "0", 1, 1);
    for i in 1..SIBLINGS_MAX {
        record = write(Some(&record), &VersionVector::new(), "x", 1, i as u64 + 1);
    }
    let mutation = Mutation {
        value: Some(b"y".to_vec()),
        expires_at_ms: None,
        kind: ValueKind::BYTES,
    };
    let error = Record::update(
        Some(&record),
        &VersionVector::new(),
        mutation,
        ReplicaId(1),
        Timestamp(u64::MAX / 2),
    );
    assert_eq!(
        error,
        Err(UpdateError::TooManySiblings {
            count: SIBLINGS_MAX
        })
    );
}

#[test]
fn expired_values_are_invisible_and_purged_after_grace() {
    let mutation = Mutation {
        value: Some(b"v".to_vec()),
        expires_at_ms: Some(1_000),
        kind: ValueKind::BYTES,
    };
    let mut record = Record::update(
        None,
        &VersionVector::new(),
        mutation,
        ReplicaId(1),
        Timestamp::from_wall_ms(500),
    )
    .unwrap();
    assert_eq!(record.visible(999).count(), 1);
    assert_eq!(record.visible(1_000).count(), 0);
    assert_eq!(record.next_dead_ms(), Some(1_000));
    assert_eq!(record.purge_dead(1_500, 1_000), 0);
    assert_eq!(record.purge_dead(2_000, 1_000), 1);
    assert!(record.siblings.is_empty());
}

#[test]
fn counters_stay_unique_after_a_record_is_forgotten() {
    let clock = HybridClock::new();
    let first = write(None, &VersionVector::new(), "a", 1, clock.tick(5).wall_ms());
    // The record is reaped; a later write through the same replica starts from nothing.
    let later = Record::update(
        None,
        &VersionVector::new(),
        Mutation {
            value: Some(b"b".to_vec()),
            expires_at_ms: None,
            kind: ValueKind::BYTES,
        },
        ReplicaId(1),
        clock.tick(5),
    )
    .unwrap();
    assert!(later.siblings[0].dot.counter > first.siblings[0].dot.counter);
}

#[test]
fn a_context_past_its_bound_is_pruned_on_write_oldest_first_and_reads_back() {
    // Goal: a key written through more nodes than a context may name is still stored and
    // read back. Method: a context of CONTEXT_ENTRIES_MAX entries, the lowest counters from
    // the highest replica ids, plus a concurrent sibling from the oldest writer; one more
    // coordinator's write must prune exactly the oldest entry that holds no sibling's dot.
    let mut seen = VersionVector::new();
    for replica in 0..CONTEXT_ENTRIES_MAX as u64 {
        seen.observe(ReplicaId(1_000 + replica), 10_000 - replica);
    }
    let oldest = ReplicaId(1_000 + CONTEXT_ENTRIES_MAX as u64 - 1);
    let sibling_holder = write(None, &VersionVector::new(), "kept", oldest.0, 1);
    let stored = sibling_holder.sync(&Record {
        context: seen.clone(),
        siblings: Vec::new(),
    });
    assert_eq!(stored.context.len(), CONTEXT_ENTRIES_MAX);
    let written = write(Some(&stored), &seen, "new", 7, 20);

    assert_eq!(written.context.len(), CONTEXT_ENTRIES_MAX);
    let second_oldest = ReplicaId(oldest.0 - 1);
    assert_eq!(
        written.context.get(second_oldest),
        0,
        "the oldest prunable entry goes"
    );
    assert!(
        written.context.get(oldest) > 0,
        "an entry of a sibling's dot stays"
    );
    assert!(written
        .siblings
        .iter()
        .all(|s| written.context.covers(s.dot)));
    let read_back = Record::decode(&written.encode()).expect("what is written reads back");
    assert_eq!(read_back, written);
    let mutation = MutationView {
        value: Some(b"v"),
        expires_at_ms: None,
        kind: ValueKind::BYTES,
    };
    let replacement = Record::encode_replacement(
        Replaced::of_record(&read_back),
        mutation,
        ReplicaId(8),
        Timestamp::from_wall_ms(30),
    );
    let replaced =
        Record::decode(&replacement.bytes).expect("a replacement's context is bounded too");
    assert_eq!(replaced.context.len(), CONTEXT_ENTRIES_MAX);
}
