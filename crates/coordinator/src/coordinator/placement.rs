//! Where a key lives, for operators (the dashboard's key lookup): its replicas in preference
//! order and what each holds of it, asked of each replica itself.

use super::read::ask_record;
use super::{CoordinatorError, Placement};
use crate::keyspaces::KeyspaceDef;
use crate::node::Node;
use ringkv_core::record::Record;
use std::sync::Arc;

/// What one replica holds of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Copy {
    /// A value a read could return.
    Value,
    /// Only deleted or expired versions.
    Tombstone,
    /// No record of the key.
    None,
    /// The replica did not answer (down, or failed).
    Unreachable,
}

/// One replica of a key and its copy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaCopy {
    /// The node.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Whether the failure detector sees it down.
    pub down: bool,
    /// What it holds.
    pub copy: Copy,
}

/// The replicas of `key` in `keyspace`, in preference order, each with what it holds.
pub async fn copies(
    node: &Arc<Node>,
    keyspace: &KeyspaceDef,
    key: &[u8],
) -> Result<Vec<ReplicaCopy>, CoordinatorError> {
    ringkv_replica::store::check_key(key)?;
    let view = node.view();
    let members: Vec<(String, String)> = view
        .ring
        .preference_list(key, keyspace.replication as usize)
        .into_iter()
        .map(|member| (member.id.clone(), member.zone.clone()))
        .collect();
    let placement = Placement {
        view: Arc::clone(&view),
        replicas: members.iter().map(|(id, _)| id.clone()).collect(),
    };
    let answers = futures_util::future::join_all(
        members
            .iter()
            .map(|(id, _)| ask_record(node, &placement, &keyspace.name, key, id)),
    )
    .await;
    let now_ms = node.now_ms();
    Ok(members
        .into_iter()
        .zip(answers)
        .map(|((id, zone), (_, answer))| ReplicaCopy {
            down: view.is_down(&id),
            copy: match answer {
                Err(_) => Copy::Unreachable,
                Ok(None) => Copy::None,
                Ok(Some(record)) if holds_value(&record, now_ms) => Copy::Value,
                Ok(Some(_)) => Copy::Tombstone,
            },
            id,
            zone,
        })
        .collect())
}

/// Whether a record holds a value a read could return at `now_ms`.
fn holds_value(record: &Record, now_ms: u64) -> bool {
    record.siblings.iter().any(|sibling| {
        sibling.value.is_some() && sibling.expires_at_ms.is_none_or(|at| at > now_ms)
    })
}
