//! Coordinated writes.
//!
//! One replica, the *lead*, applies the write: it checks the condition, issues the new
//! version's dot and returns the resulting record. The coordinator then sends that record to
//! the key's other replicas, which merge it into theirs (merging is idempotent and
//! commutative, so retries and reordering are harmless). The client is answered once W
//! replicas — the lead included — hold the write durably; the rest finish in the background.
//!
//! The lead is this node when it is a replica and the write is *blind* (a plain put or
//! delete: nothing to check against the stored value), saving a network hop. A write that
//! reads before it writes — a condition, an increment, `KEEPTTL` — goes to the first live
//! replica in preference order instead, so concurrent ones meet at the same replica. A lead
//! that fails is replaced by the next candidate; a write is never applied twice, because the
//! next lead is tried only when the previous one reported that it did not apply it or did not
//! answer (a lead that applied but did not answer may leave a sibling — the usual Dynamo
//! trade-off — never a lost write).
//!
//! When no replica can lead — every one is down — a blind write is issued by this node as a
//! *stand-in* and kept by fallback nodes as hints (sloppy quorum); a write that reads first,
//! or one that demands acknowledgements from the key's own replicas (pw), is refused.

use super::read::{ask_record, merge};
use super::{ask, CoordinatorError, Placement};
use crate::consistency::Consistency;
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use ringkv_replica::{
    Change, Condition, Expiry, MergeRequest, ReplicaError, WriteOutcome, WriteRequest,
};
use std::collections::VecDeque;
use std::sync::Arc;

/// Applies `request` to the key's replicas and returns once `consistency` is met.
pub async fn write(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    request: WriteRequest,
    consistency: Consistency,
) -> Result<WriteOutcome, CoordinatorError> {
    if keyspace.is_strong() {
        // Boxed: the strong path's future is large, and every write's future would carry it
        // (the Redis event loops' threads have small stacks).
        return Box::pin(crate::strong::write(node, keyspace, vec![request]))
            .await?
            .pop()
            .expect("one outcome per write")
            .map_err(CoordinatorError::from);
    }
    // A bad request is answered here, once, rather than by every replica it would reach.
    request.validate()?;
    let placement = match Placement::of(node, keyspace, &request.key) {
        Some(placement) if !placement.is_local_only() => placement,
        _ => return Ok(node.store.try_write(request).await?),
    };
    let needed = Needed {
        copies: consistency.writes(placement.replicas.len()),
        primaries: consistency.primary_writes(placement.replicas.len()),
    };
    let key = request.key.to_vec();
    let mut failures = Vec::new();
    let (lead, mut outcome) = match apply_at_lead(node, &placement, request, &mut failures).await? {
        Ok((lead, outcome)) => (Some(lead), outcome),
        Err(request) if is_blind(&request) && needed.primaries == 0 => {
            (None, stand_in(node, request)?)
        }
        Err(_) => return Err(placement.unavailable(node, needed.copies, 0, &failures)),
    };
    let record = *outcome
        .record
        .take()
        .expect("the lead was asked to return the record");
    let merge = MergeRequest {
        keyspace: keyspace.name.clone(),
        key,
        record,
        conflict: keyspace.conflict.into(),
    };
    copy_to_joining(node, &placement, keyspace.replication as usize, &merge);
    replicate(node, &placement, lead.as_deref(), merge, needed, failures).await?;
    Ok(outcome)
}

/// Merges a record from outside the cluster (a backup's) into the replicas of its key, as
/// read repair sends a merged record: each replica merges it into its own copy, so a newer
/// write there is never overwritten and a write the record has seen is never resurrected.
/// Returns once as many replicas (or fallbacks keeping hints) hold it as `consistency`'s W.
pub async fn merge_record(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    merge: MergeRequest,
    consistency: Consistency,
) -> Result<(), CoordinatorError> {
    if keyspace.is_strong() {
        // Merged behind its log's back, a record would differ between the shard's members.
        return Err(ReplicaError::Invalid(format!(
            "records cannot be merged into strong keyspace {}: write its keys instead",
            keyspace.name
        ))
        .into());
    }
    let placement = match Placement::of(node, keyspace, &merge.key) {
        Some(placement) if !placement.is_local_only() => placement,
        _ => {
            node.store.merge(merge).await?;
            return Ok(());
        }
    };
    let needed = Needed {
        copies: consistency.writes(placement.replicas.len()),
        primaries: 0,
    };
    copy_to_joining(node, &placement, keyspace.replication as usize, &merge);
    replicate(node, &placement, None, merge, needed, Vec::new()).await
}

/// Issues a blind write that no replica of the key could lead (every one is down or did not
/// answer) here, as Dynamo's sloppy quorum does: the record goes only to fallbacks, as hints
/// each delivers when its replica is back. The write is acknowledged once W fallbacks hold
/// it; it cannot see the key's stored value, so the outcome says its `previous` is unknown.
fn stand_in(node: &Node, request: WriteRequest) -> Result<WriteOutcome, CoordinatorError> {
    let record = node.store.stand_in_record(request)?;
    Ok(WriteOutcome {
        context: record.context.clone(),
        previous: None,
        integer: None,
        answer: None,
        record: Some(Box::new(record)),
        previous_unknown: true,
    })
}

/// Sends the write's record, in the background and uncounted, to the members joining as the
/// key's replicas: a joining member's stream of its ranges may have passed the key already.
/// One that misses it is brought up to date by anti-entropy once it has joined.
fn copy_to_joining(
    node: &Arc<Node>,
    placement: &Placement,
    replication: usize,
    merge: &MergeRequest,
) {
    let joining = placement.view.joining_replicas(&merge.key, replication);
    for id in joining {
        if placement.replicas.contains(&id) {
            continue;
        }
        let (node, view, copy) = (
            Arc::clone(node),
            Arc::clone(&placement.view),
            PeerRequest::Merge(merge.clone()),
        );
        tokio::spawn(async move {
            if let Err(failure) = ask(&node, &view, &id, copy).await {
                tracing::debug!(%failure, "a joining member missed a write's copy");
            }
        });
    }
}

/// Applies each write on its own (in parallel); a single-node cluster applies them as one
/// engine batch, so readers see all or none (MSET, multi-key DEL). Across nodes there is no
/// such atomicity: each key is its own coordinated write.
pub async fn write_many(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    requests: Vec<WriteRequest>,
    consistency: Consistency,
) -> Result<Vec<Result<WriteOutcome, CoordinatorError>>, CoordinatorError> {
    if keyspace.is_strong() {
        // One entry per shard: each shard's writes apply together.
        return Box::pin(write_many_strong(node, keyspace, requests)).await;
    }
    if node.is_alone() {
        let outcomes = node.store.write_many(requests).await?;
        return Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(CoordinatorError::from))
            .collect());
    }
    let writes = requests
        .into_iter()
        .map(|request| write(node, keyspace, request, consistency));
    Ok(futures_util::future::join_all(writes).await)
}

/// [`write_many`] to a strong keyspace: the writes of each shard as one entry of its log.
async fn write_many_strong(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    requests: Vec<WriteRequest>,
) -> Result<Vec<Result<WriteOutcome, CoordinatorError>>, CoordinatorError> {
    let mut by_shard: std::collections::BTreeMap<u32, Vec<(usize, WriteRequest)>> =
        Default::default();
    let count = requests.len();
    for (index, request) in requests.into_iter().enumerate() {
        let shard = crate::strong::shard_of(&request.key, keyspace.shards);
        by_shard.entry(shard).or_default().push((index, request));
    }
    let shards = by_shard.into_values().map(|writes| async move {
        let (indexes, writes): (Vec<usize>, Vec<WriteRequest>) = writes.into_iter().unzip();
        (indexes, crate::strong::write(node, keyspace, writes).await)
    });
    let mut outcomes: Vec<Option<Result<WriteOutcome, CoordinatorError>>> =
        (0..count).map(|_| None).collect();
    for (indexes, result) in futures_util::future::join_all(shards).await {
        match result {
            Ok(results) => {
                for (index, result) in indexes.into_iter().zip(results) {
                    outcomes[index] = Some(result.map_err(CoordinatorError::from));
                }
            }
            Err(error) => {
                for index in indexes {
                    outcomes[index] = Some(Err(error.for_each_write()));
                }
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every write has an outcome"))
        .collect())
}

/// Whether a write needs nothing from the stored value, so any replica may lead it.
fn is_blind(request: &WriteRequest) -> bool {
    request.condition == Condition::Always
        && match &request.change {
            Change::Put { expiry, .. } => *expiry != Expiry::Keep,
            Change::Delete => true,
            Change::Increment(_) | Change::Expire(_) | Change::Edit(_) | Change::Typed(_) => false,
        }
}

/// Has the first willing replica apply the write; the request back if none could. A
/// replica's verdict on the request itself (a failed condition...) ends the attempt with that
/// error.
async fn apply_at_lead(
    node: &Arc<Node>,
    placement: &Placement,
    request: WriteRequest,
    failures: &mut Vec<String>,
) -> Result<Result<(String, WriteOutcome), WriteRequest>, CoordinatorError> {
    let me = &placement.view.me;
    let mut candidates: Vec<&String> = placement.replicas.iter().collect();
    if is_blind(&request) {
        if let Some(position) = candidates.iter().position(|id| *id == me) {
            candidates.swap(0, position);
        }
    }
    let request = request.returning_record();
    for id in candidates {
        if !is_blind(&request) {
            // A write that reads first must read what a quorum read would: bring the lead up
            // to the merge of every replica before it checks the condition or increments.
            if let Err(failure) = catch_up(node, placement, &request, id).await {
                failures.push(failure);
                continue;
            }
        }
        let response = ask(
            node,
            &placement.view,
            id,
            PeerRequest::Apply(request.clone()),
        )
        .await;
        match response {
            Ok(PeerResponse::Applied(Ok(outcome))) => return Ok(Ok((id.clone(), outcome))),
            Ok(PeerResponse::Applied(Err(error))) => match error.into_request_error() {
                Ok(verdict) => return Err(verdict.into()),
                Err(failure) => failures.push(format!("{id}: {failure}")),
            },
            Ok(other) => failures.push(format!("{id}: unexpected answer {other:?}")),
            Err(failure) => failures.push(failure),
        }
    }
    Ok(Err(request))
}

/// Merges every reachable replica's record of the key into replica `lead`'s copy (the first
/// answer from each, waiting at most the RPC timeout for the slowest). Fails only if the
/// lead itself cannot be brought up to date.
async fn catch_up(
    node: &Arc<Node>,
    placement: &Placement,
    request: &WriteRequest,
    lead: &str,
) -> Result<(), String> {
    let answers = futures_util::future::join_all(
        placement
            .replicas
            .iter()
            .map(|id| ask_record(node, placement, &request.keyspace, &request.key, id)),
    )
    .await;
    let lead_record = answers
        .iter()
        .find(|(id, _)| id == lead)
        .and_then(|(_, answer)| answer.as_ref().ok())
        .cloned()
        .flatten();
    let records = answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok().and_then(Option::as_ref));
    let Some(merged) = merge(records, request.conflict) else {
        return Ok(());
    };
    if lead_record.as_ref() == Some(&merged) {
        return Ok(());
    }
    let update = PeerRequest::Merge(MergeRequest {
        keyspace: request.keyspace.to_string(),
        key: request.key.to_vec(),
        record: merged,
        conflict: request.conflict,
    });
    match ask(node, &placement.view, lead, update).await {
        Ok(PeerResponse::Merged(Ok(_))) => Ok(()),
        Ok(PeerResponse::Merged(Err(error))) => Err(format!("{lead}: {error}")),
        Ok(other) => Err(format!("{lead}: unexpected answer {other:?}")),
        Err(failure) => Err(failure),
    }
}

/// How many acknowledgements a write waits for: `copies` in all (W), of which `primaries`
/// from the key's own replicas (pw); the lead is one of each.
#[derive(Clone, Copy)]
struct Needed {
    copies: usize,
    primaries: usize,
}

/// Who acknowledged a copy: the replica itself, or a fallback node that keeps it as a hint.
enum Ack {
    Primary,
    Fallback,
}

/// Sends the lead's record to the other replicas (to all of them when a stand-in issued it:
/// `lead` is `None`); returns once enough hold it (`needed`), leaving the rest to finish in
/// the background. A replica that does not take its copy gets it through a fallback node,
/// the next healthy one on the ring, which keeps it durably as a hint and counts towards W
/// (sloppy quorum, as Dynamo's); when no fallback can, the coordinator keeps the hint
/// itself, which does not count ([`crate::handoff`]).
async fn replicate(
    node: &Arc<Node>,
    placement: &Placement,
    lead: Option<&str>,
    merge: MergeRequest,
    needed: Needed,
    mut failures: Vec<String>,
) -> Result<(), CoordinatorError> {
    let started = std::time::Instant::now();
    let merge = Arc::new(merge);
    // Worked out at the first copy that needs one: most writes need none.
    let fallbacks: Arc<parking_lot::Mutex<Option<VecDeque<String>>>> = Arc::default();
    let shared_placement = Arc::new(Placement {
        view: Arc::clone(&placement.view),
        replicas: placement.replicas.clone(),
    });
    let mut pending: FuturesUnordered<_> = placement
        .replicas
        .iter()
        .filter(|id| Some(id.as_str()) != lead)
        .map(|id| {
            let (node, view, id) = (Arc::clone(node), Arc::clone(&placement.view), id.clone());
            let (merge, fallbacks) = (Arc::clone(&merge), Arc::clone(&fallbacks));
            let placement = Arc::clone(&shared_placement);
            async move {
                let copy = PeerRequest::Merge(MergeRequest::clone(&merge));
                let failure = match ask(&node, &view, &id, copy).await {
                    Ok(PeerResponse::Merged(Ok(_))) => return Ok(Ack::Primary),
                    Ok(PeerResponse::Merged(Err(error))) => format!("{id}: {error}"),
                    Ok(other) => format!("{id}: unexpected answer {other:?}"),
                    Err(failure) => failure,
                };
                // Taken one at a time, so no two missed copies share a fallback.
                loop {
                    let next = fallbacks
                        .lock()
                        .get_or_insert_with(|| placement.fallbacks(&merge.key))
                        .pop_front();
                    let Some(fallback) = next else { break };
                    if hint_at(&node, &view, &fallback, &id, &merge).await {
                        return Ok(Ack::Fallback);
                    }
                }
                node.handoff.hint(&id, &merge, written_ms(&node, &merge));
                Err(failure)
            }
        })
        .collect();
    // The lead holds the write already.
    let (mut copies, mut primaries) = if lead.is_some() { (1, 1) } else { (0, 0) };
    while copies < needed.copies || primaries < needed.primaries {
        match pending.next().await {
            Some(Ok(Ack::Primary)) => (copies, primaries) = (copies + 1, primaries + 1),
            Some(Ok(Ack::Fallback)) => copies += 1,
            Some(Err(failure)) => failures.push(failure),
            None if copies < needed.copies => {
                return Err(placement.unavailable(node, needed.copies, copies, &failures))
            }
            None => {
                failures.push("fallbacks do not count towards pw".into());
                return Err(placement.unavailable(node, needed.primaries, primaries, &failures));
            }
        }
    }
    if pending.is_empty() {
        node.traffic.record_replication(started.elapsed());
        return Ok(());
    }
    let node = Arc::clone(node);
    tokio::spawn(async move {
        while let Some(result) = pending.next().await {
            if let Err(failure) = result {
                tracing::debug!(%failure, "background replication failed; hinted");
            }
        }
        node.traffic.record_replication(started.elapsed());
    });
    Ok(())
}

/// Asks node `fallback` to keep `merge`'s record as a hint for replica `target`; whether it
/// did (durably).
async fn hint_at(
    node: &Arc<Node>,
    view: &crate::gossip::ClusterView,
    fallback: &str,
    target: &str,
    merge: &MergeRequest,
) -> bool {
    let request = PeerRequest::Hint {
        target: target.to_owned(),
        merge: merge.clone(),
        created_ms: written_ms(node, merge),
    };
    matches!(
        ask(node, view, fallback, request).await,
        Ok(PeerResponse::Hinted(Ok(true)))
    )
}

/// When the write was made: its record's newest timestamp (never later than now). A hint
/// expires `hint_window_ms` after that, not after its copy failed (a timeout later), so no
/// hint outlives the window the reaper counts on ([`crate::reaper`]).
fn written_ms(node: &Node, merge: &MergeRequest) -> u64 {
    let now = node.now_ms();
    merge
        .record
        .newest_timestamp()
        .map_or(now, |written| written.wall_ms().min(now))
}
