//! Keyspace definitions: named namespaces with their replication factor and conflict mode.
//! `default` (the keyspace `/v1/keys` serves) and `db1`..`db15` (Redis databases) always
//! exist with last-writer-wins; others are created with `PUT /v1/ks/{name}`.
//!
//! Definitions are node metadata, stored durably in the engine and versioned, so that when
//! the cluster spreads them by gossip (issue 5) every node can converge on the newest one.

use parking_lot::RwLock;
use ringkv_replica::{ConflictMode, LocalStore, ReplicaError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most replicas a keyspace may ask for.
pub const REPLICATION_MAX: u32 = 16;

const META_PREFIX: &str = "keyspace/";

/// How a keyspace reconciles concurrent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// Newest hybrid-logical-clock timestamp wins.
    Lww,
    /// Concurrent writes are kept as siblings for the client to resolve.
    Siblings,
}

impl From<Conflict> for ConflictMode {
    fn from(conflict: Conflict) -> Self {
        match conflict {
            Conflict::Lww => ConflictMode::LastWriterWins,
            Conflict::Siblings => ConflictMode::Siblings,
        }
    }
}

/// One keyspace's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    /// The name.
    pub name: String,
    /// Replicas of each key (N).
    pub replication: u32,
    /// Conflict handling.
    pub conflict: Conflict,
    /// Bumped on every change, so the newest definition wins when nodes compare.
    pub version: u64,
}

/// The body of `PUT /v1/ks/{name}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceRequest {
    /// Replicas of each key; 3 when not given.
    #[serde(default = "default_replication")]
    pub replication: u32,
    /// Conflict handling; `lww` when not given.
    #[serde(default = "default_conflict")]
    pub conflict: Conflict,
    /// `leaderless` (the default); `strong` is refused until Raft keyspaces exist.
    #[serde(default)]
    pub mode: Option<String>,
}

fn default_replication() -> u32 {
    3
}

fn default_conflict() -> Conflict {
    Conflict::Lww
}

/// Why a keyspace cannot be defined as asked.
#[derive(Debug, thiserror::Error)]
pub enum KeyspaceError {
    /// The name or settings are invalid.
    #[error("{0}")]
    Invalid(String),
    /// The change is not allowed on an existing keyspace.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ReplicaError),
}

/// The keyspaces a node knows.
pub struct Keyspaces {
    defined: RwLock<BTreeMap<String, KeyspaceDef>>,
}

impl Keyspaces {
    /// Loads the stored definitions.
    pub fn load(store: &LocalStore) -> Result<Self, ReplicaError> {
        let mut defined = BTreeMap::new();
        for (_, bytes) in store.meta_scan(META_PREFIX)? {
            match serde_json::from_slice::<KeyspaceDef>(&bytes) {
                Ok(def) => {
                    defined.insert(def.name.clone(), def);
                }
                Err(error) => tracing::error!(%error, "ignoring an unreadable keyspace definition"),
            }
        }
        Ok(Self {
            defined: RwLock::new(defined),
        })
    }

    /// The built-in keyspaces: `default` and the Redis databases.
    fn builtin(name: &str) -> Option<KeyspaceDef> {
        let redis_db = name
            .strip_prefix("db")
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..16).contains(&n));
        (name == "default" || redis_db).then(|| KeyspaceDef {
            name: name.to_owned(),
            replication: 3,
            conflict: Conflict::Lww,
            version: 0,
        })
    }

    /// The definition of `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<KeyspaceDef> {
        self.defined
            .read()
            .get(name)
            .cloned()
            .or_else(|| Self::builtin(name))
    }

    /// Every defined keyspace, built-in `default` included.
    pub fn list(&self) -> Vec<KeyspaceDef> {
        let mut all = self.defined.read().clone();
        all.entry("default".into())
            .or_insert_with(|| Self::builtin("default").expect("default is built in"));
        all.into_values().collect()
    }

    /// Creates `name`, or updates its replication factor; the conflict mode of an existing
    /// keyspace cannot change (its stored records were written under the old one).
    pub fn define(
        &self,
        store: &LocalStore,
        name: &str,
        request: KeyspaceRequest,
    ) -> Result<KeyspaceDef, KeyspaceError> {
        ringkv_replica::layout::validate_keyspace(name).map_err(KeyspaceError::Invalid)?;
        if !(1..=REPLICATION_MAX).contains(&request.replication) {
            return Err(KeyspaceError::Invalid(format!(
                "replication must be 1 to {REPLICATION_MAX}"
            )));
        }
        match request.mode.as_deref() {
            None | Some("leaderless") => {}
            Some("strong") => {
                return Err(KeyspaceError::Invalid(
                    "strong keyspaces are not available yet".into(),
                ))
            }
            Some(other) => {
                return Err(KeyspaceError::Invalid(format!(
                    "unknown mode {other:?}: use leaderless"
                )))
            }
        }
        let mut defined = self.defined.write();
        let existing = defined.get(name).cloned().or_else(|| Self::builtin(name));
        if let Some(existing) = &existing {
            if existing.conflict != request.conflict {
                return Err(KeyspaceError::Conflict(format!(
                    "keyspace {name} exists with conflict {:?}; the conflict mode cannot change",
                    existing.conflict
                )));
            }
        }
        let def = KeyspaceDef {
            name: name.to_owned(),
            replication: request.replication,
            conflict: request.conflict,
            version: existing.map_or(1, |e| e.version + 1),
        };
        let bytes = serde_json::to_vec(&def).expect("a definition always serializes");
        store.meta_put(&format!("{META_PREFIX}{name}"), &bytes)?;
        defined.insert(name.to_owned(), def.clone());
        Ok(def)
    }
}
