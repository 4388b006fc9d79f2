//! This node's numbers for keyspace names, used in engine keys instead of the names (see
//! [`layout`]).
//!
//! The numbers are local: each node numbers the keyspaces it stores in the order it first
//! writes to them, and keeps the numbering in its metadata (`m | keyspace-id/NAME` → u16
//! little-endian). `default` is number 0 on every node. A number is stored durably before
//! the first record that uses it, so a record never outlives the meaning of its key.

use crate::error::ReplicaError;
use crate::layout::{self, KeyspaceId};
use parking_lot::{Mutex, RwLock};
use ringkv_storage::{Engine, ScanRange, WriteBatch};
use std::collections::HashMap;

/// The metadata names of the numbering.
const META_PREFIX: &str = "keyspace-id/";

/// The keyspace every node has, always number 0: the one `/v1/keys` and Redis database 0
/// serve. Defined here, the lowest layer that knows it, and used by every layer above.
pub const DEFAULT_KEYSPACE: &str = "default";

/// The numbering of keyspace names.
pub struct KeyspaceIds {
    by_name: RwLock<HashMap<String, KeyspaceId>>,
    /// Held while a number is given out, so two are never given the same.
    assigning: Mutex<()>,
}

impl KeyspaceIds {
    /// Loads the numbering from the engine's metadata, numbering `default` on first use.
    pub fn load(engine: &dyn Engine) -> Result<Self, ReplicaError> {
        let range = ScanRange::prefix(&layout::meta_key(META_PREFIX));
        let mut by_name = HashMap::new();
        for (key, value) in engine.scan(&range, usize::MAX)? {
            let name = String::from_utf8_lossy(&key[1 + META_PREFIX.len()..]).into_owned();
            let bytes: [u8; 2] =
                value
                    .as_slice()
                    .try_into()
                    .map_err(|_| ReplicaError::Corruption {
                        detail: format!("the number of keyspace {name} is not 2 bytes"),
                    })?;
            by_name.insert(name, KeyspaceId::from_le_bytes(bytes));
        }
        let ids = Self {
            by_name: RwLock::new(by_name),
            assigning: Mutex::new(()),
        };
        let default = ids.by_name.read().get(DEFAULT_KEYSPACE).copied();
        match default {
            None => ids.store(engine, DEFAULT_KEYSPACE, 0)?,
            Some(0) => {}
            Some(other) => {
                return Err(ReplicaError::Corruption {
                    detail: format!("keyspace default is numbered {other}, not 0"),
                })
            }
        }
        Ok(ids)
    }

    /// The number of `name`, if this node has given it one (if not, it stores nothing of it).
    pub fn get(&self, name: &str) -> Option<KeyspaceId> {
        // Numbered at load on every node; answered without the lock, whose reference count
        // every core would otherwise write on every request to the usual keyspace.
        if name == DEFAULT_KEYSPACE {
            return Some(0);
        }
        self.by_name.read().get(name).copied()
    }

    /// Every keyspace name this node has numbered, by number.
    pub fn names(&self) -> HashMap<KeyspaceId, String> {
        let by_name = self.by_name.read();
        by_name
            .iter()
            .map(|(name, &id)| (id, name.clone()))
            .collect()
    }

    /// The number of `name`, giving it the next free one (stored durably) if it has none.
    pub fn get_or_assign(
        &self,
        engine: &dyn Engine,
        name: &str,
    ) -> Result<KeyspaceId, ReplicaError> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let _assigning = self.assigning.lock();
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let next = self
            .by_name
            .read()
            .values()
            .max()
            .map_or(Some(0), |max| max.checked_add(1));
        let id = next.ok_or_else(|| {
            ReplicaError::Invalid(format!(
                "this node already stores {} keyspaces, the most it can",
                usize::from(KeyspaceId::MAX) + 1
            ))
        })?;
        self.store(engine, name, id)?;
        Ok(id)
    }

    fn store(&self, engine: &dyn Engine, name: &str, id: KeyspaceId) -> Result<(), ReplicaError> {
        let mut batch = WriteBatch::new();
        batch.put(
            layout::meta_key(&format!("{META_PREFIX}{name}")),
            id.to_le_bytes().to_vec(),
        );
        engine.write_durable(batch)?;
        self.by_name.write().insert(name.to_owned(), id);
        Ok(())
    }
}

/// Records moved per batch when a data directory of the first layout is migrated.
const MIGRATION_BATCH_MAX: usize = 1024;

/// Records moved between two progress lines of a migration (it runs before the node serves,
/// so an operator must see that it is working).
const MIGRATION_PROGRESS_EVERY: u64 = 100_000;

/// Moves records of the first layout (the keyspace's name in every key) to numbered keys.
/// Each batch moves its records atomically and durably (new key in, old key out), so a
/// crash part-way leaves each record in exactly one form and the next start carries on.
/// Returns how many records moved.
pub(crate) fn migrate_named_records(
    engine: &dyn Engine,
    ids: &KeyspaceIds,
) -> Result<u64, ReplicaError> {
    let mut moved = 0;
    loop {
        let page = engine.scan(&layout::named_data_range(), MIGRATION_BATCH_MAX)?;
        if page.is_empty() {
            return Ok(moved);
        }
        if moved == 0 {
            tracing::info!("moving records to the numbered keyspace layout before serving");
        }
        let mut batch = WriteBatch::new();
        for (old_key, value) in page {
            let (name, key) =
                layout::parse_named_data_key(&old_key).ok_or_else(|| ReplicaError::Corruption {
                    detail: format!(
                        "engine key {old_key:?} has the record tag but does not parse; restore \
                         the data directory from a backup or a replica"
                    ),
                })?;
            let id = ids.get_or_assign(engine, name)?;
            batch.put(layout::data_key(id, key), value);
            batch.delete(old_key);
            moved += 1;
            if moved % MIGRATION_PROGRESS_EVERY == 0 {
                tracing::info!(moved, "moving records to the numbered keyspace layout");
            }
        }
        engine.write_durable(batch)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_stable_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let engine = ringkv_storage::open(ringkv_storage::EngineKind::Memory, dir.path()).unwrap();
        let ids = KeyspaceIds::load(engine.as_ref()).unwrap();
        assert_eq!(ids.get("default"), Some(0));
        assert_eq!(ids.get("carts"), None);
        let carts = ids.get_or_assign(engine.as_ref(), "carts").unwrap();
        let db1 = ids.get_or_assign(engine.as_ref(), "db1").unwrap();
        assert_ne!(carts, db1);
        assert_ne!(carts, 0);
        assert_eq!(ids.get_or_assign(engine.as_ref(), "carts").unwrap(), carts);
        let reloaded = KeyspaceIds::load(engine.as_ref()).unwrap();
        assert_eq!(reloaded.get("carts"), Some(carts));
        assert_eq!(reloaded.get("db1"), Some(db1));
        let next = reloaded.get_or_assign(engine.as_ref(), "third").unwrap();
        assert!(next != carts && next != db1 && next != 0);
    }

    #[test]
    fn records_of_the_first_layout_move_to_numbered_keys() {
        // 2,500 records over two keyspaces in the first layout (more than one batch).
        let dir = tempfile::tempdir().unwrap();
        let engine = ringkv_storage::open(ringkv_storage::EngineKind::Memory, dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for i in 0..2500u32 {
            let keyspace: &[u8] = if i % 2 == 0 { b"default" } else { b"db3" };
            let mut old_key = vec![b'd', keyspace.len() as u8];
            old_key.extend_from_slice(keyspace);
            old_key.extend_from_slice(format!("key{i}").as_bytes());
            batch.put(old_key, i.to_le_bytes().to_vec());
        }
        engine.write(batch).unwrap();
        let ids = KeyspaceIds::load(engine.as_ref()).unwrap();
        assert_eq!(migrate_named_records(engine.as_ref(), &ids).unwrap(), 2500);
        assert!(engine
            .scan(&layout::named_data_range(), 1)
            .unwrap()
            .is_empty());
        let db3 = ids.get("db3").expect("db3 was numbered");
        let moved = engine.get(&layout::data_key(db3, b"key7")).unwrap();
        assert_eq!(moved, Some(7u32.to_le_bytes().to_vec()));
        let moved = engine.get(&layout::data_key(0, b"key2498")).unwrap();
        assert_eq!(moved, Some(2498u32.to_le_bytes().to_vec()));
        assert_eq!(migrate_named_records(engine.as_ref(), &ids).unwrap(), 0);
    }
}
