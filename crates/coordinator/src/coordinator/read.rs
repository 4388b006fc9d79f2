//! Coordinated reads and read repair.
//!
//! Every replica of the key is asked for its record; once R have answered, their records are
//! merged (the causal merge keeps every version no answer has superseded; last-writer-wins
//! keyspaces then keep the newest) and the client gets the visible part. Replicas whose
//! record differs from the merge — stale, missing the key, or holding a damaged copy — are
//! sent the merged record, including the ones that answer after the client was served.

use super::{ask, CoordinatorError, Placement};
use crate::consistency::Consistency;
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, RemoteError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use ringkv_core::record::Record;
use ringkv_replica::{ConflictMode, Entry, MergeRequest};
use std::sync::Arc;

/// One replica's answer: its record (`None`: it has none, or its copy is damaged).
type Answer = (String, Result<Option<Record>, String>);

/// The visible value(s) of a key, read from as many replicas as `consistency` needs.
pub async fn read(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    key: &[u8],
    consistency: Consistency,
) -> Result<Option<Entry>, CoordinatorError> {
    // A bad request is answered here, once, rather than by every replica it would reach.
    ringkv_replica::store::check_key(key)?;
    if keyspace.is_strong() {
        // Boxed: the strong path's future is large, and every read's future would carry it
        // (the Redis event loops' threads have small stacks).
        let linearizable = consistency.linearizable();
        return Box::pin(crate::strong::read(node, keyspace, key, linearizable)).await;
    }
    let placement = match Placement::of(node, keyspace, key) {
        Some(placement) if !placement.is_local_only() => placement,
        _ => return read_local(node, keyspace, key),
    };
    // At least one: a node still joining, before it has heard of any member that serves,
    // knows no replica of any key, and must not answer "absent".
    let needed = consistency.reads(placement.replicas.len()).max(1);
    let mut pending: FuturesUnordered<_> = placement
        .replicas
        .iter()
        .map(|id| ask_record(node, &placement, &keyspace.name, key, id))
        .collect();
    let mut answers: Vec<(String, Option<Record>)> = Vec::new();
    let mut failures = Vec::new();
    while answers.len() < needed {
        match pending.next().await {
            Some((id, Ok(record))) => answers.push((id, record)),
            Some((_, Err(failure))) => failures.push(failure),
            None => return Err(placement.unavailable(node, needed, answers.len(), &failures)),
        }
    }
    let conflict: ConflictMode = keyspace.conflict.into();
    let merged = merge(
        answers.iter().filter_map(|(_, record)| record.as_ref()),
        conflict,
    );
    if let Some(merged) = &merged {
        let repair = Repair {
            node: Arc::clone(node),
            placement,
            keyspace: keyspace.name.clone(),
            key: key.to_vec(),
            conflict,
            merged: merged.clone(),
        };
        tokio::spawn(repair.run(answers, pending));
    }
    Ok(merged.and_then(|record| Entry::from_record(record, node.now_ms())))
}

/// The visible value(s) of a key in this node's own replica only (`?local=true`).
pub fn read_local(
    node: &Node,
    keyspace: &KeyspaceDef,
    key: &[u8],
) -> Result<Option<Entry>, CoordinatorError> {
    Ok(node.store.get(&keyspace.name, key)?)
}

pub(super) fn ask_record<'a>(
    node: &'a Arc<Node>,
    placement: &'a Placement,
    keyspace: &'a str,
    key: &'a [u8],
    id: &'a str,
) -> impl std::future::Future<Output = Answer> + Send + 'static {
    let (node, view, id) = (Arc::clone(node), Arc::clone(&placement.view), id.to_owned());
    let request = PeerRequest::Read {
        keyspace: keyspace.to_owned(),
        key: key.to_vec(),
    };
    async move {
        let result = match ask(&node, &view, &id, request).await {
            Ok(PeerResponse::Record(Ok(record))) => Ok(record),
            // A damaged copy answers as a missing one, and so gets repaired.
            Ok(PeerResponse::Record(Err(RemoteError::Corrupt(_)))) => Ok(None),
            Ok(PeerResponse::Record(Err(error))) => Err(format!("{id}: {error}")),
            Ok(other) => Err(format!("{id}: unexpected answer {other:?}")),
            Err(failure) => Err(failure),
        };
        (id, result)
    }
}

/// The causal merge of replicas' records.
pub(super) fn merge<'a>(
    records: impl Iterator<Item = &'a Record>,
    conflict: ConflictMode,
) -> Option<Record> {
    let mut merged = records.fold(None::<Record>, |merged, record| {
        Some(match merged {
            Some(merged) => merged.sync(record),
            None => record.clone(),
        })
    })?;
    if conflict == ConflictMode::LastWriterWins {
        merged.resolve_last_writer_wins();
    }
    Some(merged)
}

/// Brings the replicas of one key up to the merged record, after the client was answered.
struct Repair {
    node: Arc<Node>,
    placement: Placement,
    keyspace: String,
    key: Vec<u8>,
    conflict: ConflictMode,
    merged: Record,
}

impl Repair {
    async fn run(
        self,
        answered: Vec<(String, Option<Record>)>,
        mut late: FuturesUnordered<impl std::future::Future<Output = Answer>>,
    ) {
        for (id, record) in answered {
            self.repair_if_stale(&id, record.as_ref()).await;
        }
        while let Some((id, result)) = late.next().await {
            if let Ok(record) = result {
                self.repair_if_stale(&id, record.as_ref()).await;
            }
        }
    }

    async fn repair_if_stale(&self, id: &str, record: Option<&Record>) {
        if record == Some(&self.merged) {
            return;
        }
        let merge = PeerRequest::Merge(MergeRequest {
            keyspace: self.keyspace.clone(),
            key: self.key.clone(),
            record: self.merged.clone(),
            conflict: self.conflict,
        });
        match ask(&self.node, &self.placement.view, id, merge).await {
            Ok(PeerResponse::Merged(Ok(_))) => {
                self.node.cluster_metrics.read_repairs.inc();
            }
            Ok(other) => tracing::debug!(id, ?other, "read repair refused"),
            Err(failure) => tracing::debug!(%failure, "read repair failed"),
        };
    }
}
