//! Coordinated scans: keys are spread over the ring by hash, so a page in key order needs a
//! page from every node. Each returns up to `limit` records after the cursor, tombstones
//! included; the coordinator merges them per key (so a delete one replica saw hides the key
//! everywhere), keeps the visible ones, and stops at the smallest key where some node's page
//! was cut short — beyond it that node's keys are not known yet, and the next page resumes
//! there. Nodes that are down are skipped: every key they hold has other replicas (a
//! keyspace with N = 1 loses sight of their keys until they return).

use super::{ask, CoordinatorError};
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse, ScannedPage};
use ringkv_core::record::Record;
use ringkv_replica::{ConflictMode, Entry, ScanPage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Up to `limit` keys of `keyspace` starting with `prefix`, after `after`, with their values.
pub async fn scan(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<ScanPage, CoordinatorError> {
    let view = node.view();
    if view.is_single() {
        return Ok(node.store.scan(&keyspace.name, prefix, after, limit)?);
    }
    let nodes: Vec<&String> = view.members.keys().filter(|id| !view.is_down(id)).collect();
    let asks = nodes.iter().map(|id| {
        let request = PeerRequest::Scan {
            keyspace: keyspace.name.clone(),
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        ask(node, &view, id, request)
    });
    let mut pages = Vec::new();
    let mut failures = Vec::new();
    for (id, answer) in nodes.iter().zip(futures_util::future::join_all(asks).await) {
        match answer {
            Ok(PeerResponse::Scanned(Ok(page))) => pages.push(page),
            Ok(PeerResponse::Scanned(Err(error))) => failures.push(format!("{id}: {error}")),
            Ok(other) => failures.push(format!("{id}: unexpected answer {other:?}")),
            Err(failure) => failures.push(failure),
        }
    }
    if pages.is_empty() {
        return Err(CoordinatorError::Unavailable {
            needed: 1,
            answered: 0,
            replicas: nodes.len(),
            detail: format!("; {}", failures.join("; ")),
        });
    }
    Ok(merge_pages(
        pages,
        keyspace.conflict.into(),
        limit,
        node.now_ms(),
    ))
}

/// Merges nodes' pages into one page of visible entries; see the module comment.
fn merge_pages(
    pages: Vec<ScannedPage>,
    conflict: ConflictMode,
    limit: usize,
    now_ms: u64,
) -> ScanPage {
    // Keys beyond the first place a node stopped are not complete yet.
    let cut: Option<Vec<u8>> = pages.iter().filter_map(|p| p.next_after.clone()).min();
    let mut merged: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
    for page in pages {
        for (key, record) in page.records {
            if cut.as_ref().is_some_and(|cut| key > *cut) {
                continue;
            }
            merged
                .entry(key)
                .and_modify(|held| *held = held.sync(&record))
                .or_insert(record);
        }
    }
    let mut entries = Vec::new();
    let mut last = None;
    for (key, mut record) in merged {
        if entries.len() == limit {
            break;
        }
        if conflict == ConflictMode::LastWriterWins {
            record.resolve_last_writer_wins();
        }
        if let Some(entry) = Entry::from_record(record, now_ms) {
            entries.push((key.clone(), entry));
        }
        last = Some(key);
    }
    let truncated = entries.len() == limit;
    let next_after = match (truncated, cut) {
        (true, _) => last,
        (false, Some(cut)) => Some(cut),
        (false, None) => None,
    };
    ScanPage {
        entries,
        next_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::causal::{ReplicaId, VersionVector};
    use ringkv_core::hlc::Timestamp;
    use ringkv_core::record::Mutation;

    fn record(value: Option<&str>, replica: u64, time: u64, seen: &VersionVector) -> Record {
        let mutation = match value {
            Some(v) => Mutation::bytes(v.as_bytes().to_vec(), None),
            None => Mutation::delete(),
        };
        Record::update(None, seen, mutation, ReplicaId(replica), Timestamp(time)).unwrap()
    }

    fn page(records: &[(&str, Record)], next_after: Option<&str>) -> ScannedPage {
        ScannedPage {
            records: records
                .iter()
                .map(|(k, r)| (k.as_bytes().to_vec(), r.clone()))
                .collect(),
            next_after: next_after.map(|k| k.as_bytes().to_vec()),
        }
    }

    fn keys(page: &ScanPage) -> Vec<String> {
        page.entries
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn pages_merge_in_key_order_and_stop_where_a_node_was_cut_short() {
        let none = VersionVector::new();
        let a = page(
            &[
                ("a", record(Some("1"), 1, 1, &none)),
                ("c", record(Some("3"), 1, 1, &none)),
            ],
            Some("c"),
        );
        let b = page(
            &[
                ("b", record(Some("2"), 2, 1, &none)),
                ("d", record(Some("4"), 2, 1, &none)),
            ],
            None,
        );
        let merged = merge_pages(vec![a, b], ConflictMode::LastWriterWins, 10, 0);
        assert_eq!(keys(&merged), ["a", "b", "c"], "d is past node a's cut");
        assert_eq!(merged.next_after.as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn a_tombstone_on_one_replica_hides_the_key() {
        let value = record(Some("v"), 1, 1, &VersionVector::new());
        let tombstone = Record::update(
            Some(&value),
            &value.context,
            Mutation::delete(),
            ReplicaId(2),
            Timestamp(2),
        )
        .unwrap();
        let stale = page(&[("k", value)], None);
        let fresh = page(&[("k", tombstone)], None);
        let merged = merge_pages(vec![stale, fresh], ConflictMode::LastWriterWins, 10, 0);
        assert!(merged.entries.is_empty());
        assert_eq!(merged.next_after, None);
    }

    #[test]
    fn a_full_page_resumes_after_its_last_key() {
        let none = VersionVector::new();
        let a = page(
            &[
                ("a", record(Some("1"), 1, 1, &none)),
                ("b", record(Some("2"), 1, 1, &none)),
            ],
            None,
        );
        let merged = merge_pages(vec![a], ConflictMode::LastWriterWins, 1, 0);
        assert_eq!(keys(&merged), ["a"]);
        assert_eq!(merged.next_after.as_deref(), Some(&b"a"[..]));
    }
}
