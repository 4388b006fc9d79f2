//! Keyspace definitions: named namespaces with their replication factor and conflict mode.
//! `default` (the keyspace `/v1/keys` serves) and `db1`..`db15` (Redis databases) always
//! exist with last-writer-wins; others are created with `PUT /v1/ks/{name}`.
//!
//! Definitions are cluster metadata, stored durably in each node's engine and versioned: a
//! node that defines one pushes it to every member, and every second each node asks a
//! random live peer for its definitions and adopts the newer ones ([`spread`]), so every
//! node converges on the newest definition even if it missed the push.

use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use parking_lot::RwLock;
use ringkv_replica::{ConflictMode, LocalStore, ReplicaError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// How a keyspace replicates its writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Any replica takes a write; quorums, versions and repair reconcile them (Dynamo).
    #[default]
    Leaderless,
    /// Each shard's Raft group orders every write; reads and writes are linearizable
    /// ([`crate::strong`]).
    Strong,
}

/// Shards a strong keyspace has when its request names none.
pub const SHARDS_DEFAULT: u32 = 8;

/// Most shards a strong keyspace may have: each is a Raft group on N nodes.
pub const SHARDS_MAX: u32 = 64;

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
    /// Leaderless or strong; fixed when the keyspace is created.
    #[serde(default)]
    pub mode: Mode,
    /// A strong keyspace's shards (Raft groups), fixed when it is created; 0 for a
    /// leaderless one.
    #[serde(default)]
    pub shards: u32,
    /// A strong keyspace's first members of each shard, by shard: the ring's replicas of the
    /// shard's range when it was created. Every node starts a shard's group with exactly
    /// these, so no two can start it differently; Raft's membership changes follow the ring
    /// from there.
    #[serde(default)]
    pub placement: Vec<Vec<String>>,
}

impl KeyspaceDef {
    /// Whether Raft groups order this keyspace's writes.
    pub fn is_strong(&self) -> bool {
        self.mode == Mode::Strong
    }
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
    /// `leaderless` (the default) or `strong`.
    #[serde(default)]
    pub mode: Option<String>,
    /// A strong keyspace's shards; [`SHARDS_DEFAULT`] when not given.
    #[serde(default)]
    pub shards: Option<u32>,
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
    /// Bumped on every change of a definition, so connections may keep the definitions they
    /// use and look again only after a change (reading it shares no cache line for writing,
    /// unlike taking the lock on every request).
    generation: std::sync::atomic::AtomicU64,
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
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The built-in keyspaces: `default` and the Redis databases.
    fn builtin(name: &str) -> Option<KeyspaceDef> {
        let redis_db = name
            .strip_prefix("db")
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..16).contains(&n));
        (name == DEFAULT_KEYSPACE || redis_db).then(|| KeyspaceDef {
            name: name.to_owned(),
            replication: 3,
            conflict: Conflict::Lww,
            version: 0,
            mode: Mode::Leaderless,
            shards: 0,
            placement: Vec::new(),
        })
    }

    /// Changes with every change of any definition.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called with `defined` locked for writing, after it changed.
    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The definition of `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<KeyspaceDef> {
        self.defined
            .read()
            .get(name)
            .cloned()
            .or_else(|| Self::builtin(name))
    }

    /// How replicas of `name` merge concurrent writes; last-writer-wins for a keyspace this
    /// node does not know (a record heard of before its definition, as `default` merges).
    pub fn conflict_of(&self, name: &str) -> ConflictMode {
        self.get(name)
            .map_or(ConflictMode::LastWriterWins, |def| def.conflict.into())
    }

    /// Every defined keyspace, built-in `default` included.
    pub fn list(&self) -> Vec<KeyspaceDef> {
        let mut all = self.defined.read().clone();
        all.entry(DEFAULT_KEYSPACE.into())
            .or_insert_with(|| Self::builtin(DEFAULT_KEYSPACE).expect("default is built in"));
        all.into_values().collect()
    }

    /// Takes a definition heard from another node if it is newer than the one held (on equal
    /// versions, the greater encoding wins, so every node picks the same one). Returns
    /// whether it was taken.
    pub fn adopt(&self, store: &LocalStore, def: KeyspaceDef) -> Result<bool, KeyspaceError> {
        ringkv_replica::layout::validate_keyspace(&def.name).map_err(KeyspaceError::Invalid)?;
        if def.version > DEFINITION_VERSION_MAX {
            return Err(KeyspaceError::Invalid(format!(
                "definition version {} is above the highest, {DEFINITION_VERSION_MAX}",
                def.version
            )));
        }
        if !(1..=REPLICATION_MAX).contains(&def.replication) {
            return Err(KeyspaceError::Invalid("replication out of range".into()));
        }
        let mut defined = self.defined.write();
        let held = defined
            .get(&def.name)
            .cloned()
            .or_else(|| Self::builtin(&def.name));
        let newer = held.as_ref().is_none_or(|held| {
            let encoded = |d: &KeyspaceDef| serde_json::to_vec(d).unwrap_or_default();
            (def.version, encoded(&def)) > (held.version, encoded(held))
        });
        if !newer {
            return Ok(false);
        }
        // The same rule as `define`: a keyspace's records were merged under its conflict
        // mode, so no definition, however new, may change it (nor a built-in's).
        if let Some(held) = &held {
            if (held.conflict, held.mode, held.shards) != (def.conflict, def.mode, def.shards) {
                return Err(KeyspaceError::Conflict(format!(
                    "refusing a definition of {} that changes its conflict mode, mode or shards",
                    def.name
                )));
            }
        }
        if def.is_strong()
            && (!(1..=SHARDS_MAX).contains(&def.shards)
                || def.placement.len() != def.shards as usize)
        {
            return Err(KeyspaceError::Invalid(
                "shards out of range, or a placement of another number of shards".into(),
            ));
        }
        let bytes = serde_json::to_vec(&def).expect("a definition always serializes");
        store.meta_put(&format!("{META_PREFIX}{}", def.name), &bytes)?;
        defined.insert(def.name.clone(), def);
        self.changed();
        Ok(true)
    }

    /// Creates `name`, or updates its replication factor; the conflict mode of an existing
    /// keyspace cannot change (its stored records were written under the old one).
    /// `placement` gives a new strong keyspace's first members of each shard.
    pub fn define(
        &self,
        store: &LocalStore,
        name: &str,
        request: KeyspaceRequest,
        placement: impl FnOnce(&KeyspaceDef) -> Vec<Vec<String>>,
    ) -> Result<KeyspaceDef, KeyspaceError> {
        ringkv_replica::layout::validate_keyspace(name).map_err(KeyspaceError::Invalid)?;
        if !(1..=REPLICATION_MAX).contains(&request.replication) {
            return Err(KeyspaceError::Invalid(format!(
                "replication must be 1 to {REPLICATION_MAX}"
            )));
        }
        let (mode, shards) = mode_of(&request)?;
        let mut defined = self.defined.write();
        let existing = defined.get(name).cloned().or_else(|| Self::builtin(name));
        if let Some(existing) = &existing {
            if existing.conflict != request.conflict {
                return Err(KeyspaceError::Conflict(format!(
                    "keyspace {name} exists with conflict {:?}; the conflict mode cannot change",
                    existing.conflict
                )));
            }
            if (existing.mode, existing.shards) != (mode, shards) {
                return Err(KeyspaceError::Conflict(format!(
                    "keyspace {name} exists as {:?} with {} shards; mode and shards cannot change",
                    existing.mode, existing.shards
                )));
            }
        }
        let mut def = KeyspaceDef {
            name: name.to_owned(),
            replication: request.replication,
            conflict: request.conflict,
            version: next_version(existing.as_ref())?,
            mode,
            shards,
            placement: existing.map(|e| e.placement).unwrap_or_default(),
        };
        if def.is_strong() && def.placement.is_empty() {
            def.placement = placement(&def);
        }
        let bytes = serde_json::to_vec(&def).expect("a definition always serializes");
        store.meta_put(&format!("{META_PREFIX}{name}"), &bytes)?;
        defined.insert(name.to_owned(), def.clone());
        self.changed();
        Ok(def)
    }
}

pub use ringkv_replica::keyspace_ids::DEFAULT_KEYSPACE;

/// The mode and shard count a keyspace request asks for, checked.
fn mode_of(request: &KeyspaceRequest) -> Result<(Mode, u32), KeyspaceError> {
    match request.mode.as_deref() {
        None | Some("leaderless") => match request.shards {
            None => Ok((Mode::Leaderless, 0)),
            Some(_) => Err(KeyspaceError::Invalid(
                "shards apply to strong keyspaces only".into(),
            )),
        },
        Some("strong") => {
            if request.conflict != Conflict::Lww {
                return Err(KeyspaceError::Invalid(
                    "a strong keyspace has one value per key: conflict must be lww".into(),
                ));
            }
            let shards = request.shards.unwrap_or(SHARDS_DEFAULT);
            if !(1..=SHARDS_MAX).contains(&shards) {
                return Err(KeyspaceError::Invalid(format!(
                    "shards must be 1 to {SHARDS_MAX}"
                )));
            }
            Ok((Mode::Strong, shards))
        }
        Some(other) => Err(KeyspaceError::Invalid(format!(
            "unknown mode {other:?}: use leaderless or strong"
        ))),
    }
}

/// Highest version a definition may carry: more changes than any keyspace will see, and far
/// enough below the integer's end that no definition heard from a peer can make the next
/// version wrap around.
pub const DEFINITION_VERSION_MAX: u64 = u32::MAX as u64;

/// The version a change of `existing` (or a new keyspace) gets.
fn next_version(existing: Option<&KeyspaceDef>) -> Result<u64, KeyspaceError> {
    let Some(existing) = existing else {
        return Ok(1);
    };
    existing
        .version
        .checked_add(1)
        .filter(|&version| version <= DEFINITION_VERSION_MAX)
        .ok_or_else(|| {
            KeyspaceError::Conflict(format!(
                "keyspace {} is at its highest definition version",
                existing.name
            ))
        })
}

/// How often a node compares its keyspace definitions with a random peer's.
const SPREAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends `def` to every member that is not down, without waiting (best effort: [`spread`]
/// catches up any that miss it).
pub fn announce(node: &Arc<Node>, def: &KeyspaceDef) {
    announce_metadata(node, || PeerRequest::DefineKeyspace(def.clone()));
}

/// Sends the change `change` makes to every member that is not down, without waiting:
/// cluster metadata (keyspaces, users) that [`spread`] catches up any member that missed.
pub fn announce_metadata(node: &Arc<Node>, change: impl Fn() -> PeerRequest) {
    let view = node.view();
    for id in view.live_peers() {
        let Some(address) = view.address(id) else {
            continue;
        };
        let peer = node.peers.get(address);
        let (request, timeout) = (change(), rpc_timeout(node));
        tokio::spawn(async move {
            if let Err(error) = peer.call(request, timeout).await {
                tracing::debug!(peer = peer.address(), %error, "metadata announcement failed");
            }
        });
    }
}

/// Metadata anti-entropy: every `SPREAD_INTERVAL`, pulls a random live peer's keyspace
/// definitions, users and removed members, and adopts the newer ones. Runs until `shutdown`
/// turns true.
pub async fn spread(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SPREAD_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let view = node.view();
        let peers: Vec<&String> = view.live_peers().collect();
        let Some(id) = peers.get(rand::random_range(0..peers.len().max(1))) else {
            continue;
        };
        let Some(address) = view.address(id) else {
            continue;
        };
        let answer = node
            .peers
            .get(address)
            .call(PeerRequest::Keyspaces, rpc_timeout(&node))
            .await;
        if let Ok(PeerResponse::Keyspaces(defs)) = answer {
            for def in defs {
                if let Err(error) = node.keyspaces.adopt(&node.store, def) {
                    tracing::warn!(%error, "cannot adopt a peer's keyspace definition");
                }
            }
        }
        let answer = node
            .peers
            .get(address)
            .call(PeerRequest::Users, rpc_timeout(&node))
            .await;
        if let Ok(PeerResponse::Users(users)) = answer {
            for user in users {
                if let Err(error) = node.users.adopt(&node.store, user) {
                    tracing::warn!(%error, "cannot adopt a peer's user");
                }
            }
        }
        // Removals of dead nodes spread the same way, so a member that missed one learns it.
        let answer = node
            .peers
            .get(address)
            .call(PeerRequest::RemovedMembers, rpc_timeout(&node))
            .await;
        if let Ok(PeerResponse::Removed(Ok(removed))) = answer {
            let known = node
                .gossip
                .get()
                .map(|gossip| gossip.removed())
                .unwrap_or_default();
            for (id, generation) in removed {
                if known.get(&id).is_none_or(|&at| at < generation) {
                    if let Err(error) = node.adopt_removal(&id, generation).await {
                        tracing::warn!(%error, "cannot adopt a peer's removal of a node");
                    }
                }
            }
        }
    }
}

fn rpc_timeout(node: &Node) -> std::time::Duration {
    std::time::Duration::from_millis(node.config.rpc_timeout_ms)
}
