//! A copy-on-write B-tree engine on redb.
//!
//! Plain writes commit with `Durability::None`: visible at once and cheap, made durable by the
//! next commit with `Durability::Immediate`, which is what [`Engine::sync`] issues. A durable
//! write does both in one transaction, so a group commit costs one fsync.
//!
//! The whole file is verified against redb's page checksums when it is opened.
//!
//! redb keeps only the last durable commit across a crash, so with `--sync none|periodic` this
//! engine may lose the writes since the last sync even when only the process dies; the other
//! engines lose them only when the machine dies.

use crate::engine::{Engine, KeyValue, ScanRange, StorageError, WriteBatch, WriteOp};
use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const ENGINE: &str = "btree";

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");

/// A redb database with one table.
pub struct BtreeEngine {
    database: Database,
    path: std::path::PathBuf,
}

impl BtreeEngine {
    /// Opens or creates `directory/btree.redb`.
    pub fn open(directory: &Path) -> Result<Self, StorageError> {
        let path = directory.join("btree.redb");
        // redb checksums every page but only verifies them when asked; a plain open of a file
        // damaged outside redb may even panic. Verify at open: damage that cannot be pinned to
        // keys refuses the start with a clear error instead of serving wrong answers.
        let database = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|error| match convert(error) {
                StorageError::Corruption(detail) => StorageError::Corruption(format!(
                    "{} is damaged ({detail}); restore it from a backup or a replica",
                    path.display()
                )),
                other => other,
            })?;
        let engine = Self { database, path };
        // Create the table up front so reads of an empty database find it.
        engine.commit(WriteBatch::new(), Durability::Immediate)?;
        Ok(engine)
    }

    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut transaction = self.database.begin_write().map_err(convert)?;
        transaction.set_durability(durability).map_err(convert)?;
        {
            let mut table = transaction.open_table(DATA).map_err(convert)?;
            for op in &batch.ops {
                match op {
                    WriteOp::Put { key, value } => {
                        table.insert(key.as_slice(), &value[..]).map_err(convert)?;
                    }
                    WriteOp::Delete { key } => {
                        table.remove(key.as_slice()).map_err(convert)?;
                    }
                }
            }
        }
        transaction.commit().map_err(convert)
    }
}

impl Engine for BtreeEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let transaction = self.database.begin_read().map_err(convert)?;
        let table = transaction.open_table(DATA).map_err(convert)?;
        Ok(table
            .get(key)
            .map_err(convert)?
            .map(|value| value.value().to_vec()))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.commit(batch, Durability::None)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.commit(WriteBatch::new(), Durability::Immediate)
    }

    fn write_durable(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.commit(batch, Durability::Immediate)
    }

    fn scan(&self, range: &ScanRange, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let transaction = self.database.begin_read().map_err(convert)?;
        let table = transaction.open_table(DATA).map_err(convert)?;
        let mut entries = Vec::new();
        for entry in table
            .range::<&[u8]>(range.as_bounds())
            .map_err(convert)?
            .take(limit)
        {
            let (key, value) = entry.map_err(convert)?;
            entries.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(entries)
    }

    fn approximate_entries(&self) -> u64 {
        let count = || -> Result<u64, StorageError> {
            let transaction = self.database.begin_read().map_err(convert)?;
            let table = transaction.open_table(DATA).map_err(convert)?;
            table.len().map_err(convert)
        };
        count().unwrap_or(0)
    }

    fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// redb reports damaged files as `Corrupted`; everything else is an engine error.
fn convert(error: impl Into<redb::Error>) -> StorageError {
    match error.into() {
        redb::Error::Io(io) => StorageError::Io(io),
        redb::Error::Corrupted(message) => StorageError::Corruption(message),
        other => StorageError::Engine {
            engine: ENGINE,
            message: other.to_string(),
        },
    }
}
