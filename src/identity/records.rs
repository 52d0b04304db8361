//! Where an [`IdentityRegistry`](super::IdentityRegistry) keeps its records: the node's database, or memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use channel_modules::identity::IdentityRecord;
use channel_modules::store::StoreError;
use channel_modules::sync::lock;

use crate::store::Db;

/// One change to the records.
pub(super) enum RecordWrite {
    /// Store the record (JSON bytes) under the key.
    Put(String, Vec<u8>),
    /// Remove the key.
    Delete(String),
}

impl RecordWrite {
    /// A put of `record` as JSON ([`IdentityRecord::to_json`]).
    pub(super) fn put(key: String, record: &IdentityRecord) -> Result<Self, StoreError> {
        let bytes = serde_json::to_vec(&record.to_json()).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("encode: {e}"),
        })?;
        Ok(RecordWrite::Put(key, bytes))
    }
}

/// The records of one registry.
#[derive(Debug)]
pub(super) enum Records {
    /// In the node's database (default column family), written through its group commit: durable once the
    /// write returns, and ordered with every other write of the node.
    Db(Arc<Db>),
    /// In memory.
    Memory(Mutex<MemoryRecords>),
}

/// The records of an in-memory registry.
#[derive(Debug, Default)]
pub(super) struct MemoryRecords {
    records: BTreeMap<String, Vec<u8>>,
    /// How many of the next writes fail (failure injection).
    fail_next: u64,
}

impl Records {
    pub(super) fn memory() -> Self {
        Records::Memory(Mutex::new(MemoryRecords::default()))
    }

    #[cfg(any(test, feature = "testing"))]
    pub(super) fn fail_next_writes(&self, n: u64) {
        if let Records::Memory(memory) = self {
            lock(memory).fail_next = n;
        }
    }

    /// The value of `key`.
    pub(super) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Records::Db(db) => db.get(key.as_bytes()),
            Records::Memory(memory) => Ok(lock(memory).records.get(key).cloned()),
        }
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub(super) fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Records::Db(db) => db
                .scan_prefix(prefix.as_bytes())?
                .into_iter()
                .map(|(key, value)| {
                    String::from_utf8(key).map(|key| (key, value)).map_err(|e| {
                        StoreError::Corrupt {
                            key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                            reason: "ledger identity key is not UTF-8".to_owned(),
                        }
                    })
                })
                .collect(),
            Records::Memory(memory) => Ok(lock(memory)
                .records
                .range(prefix.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()),
        }
    }

    /// Applies `writes` atomically; returns once they are durable.
    pub(super) async fn write(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        match self {
            Records::Db(db) => {
                let mut batch = rocksdb::WriteBatch::default();
                for write in writes {
                    match write {
                        RecordWrite::Put(key, value) => batch.put(key, value),
                        RecordWrite::Delete(key) => batch.delete(key),
                    }
                }
                db.submit(batch)?.wait().await
            }
            Records::Memory(memory) => {
                let mut memory = lock(memory);
                if memory.fail_next > 0 {
                    memory.fail_next -= 1;
                    return Err(StoreError::Io("injected write failure".to_owned()));
                }
                for write in writes {
                    match write {
                        RecordWrite::Put(key, value) => {
                            memory.records.insert(key, value);
                        }
                        RecordWrite::Delete(key) => {
                            memory.records.remove(&key);
                        }
                    }
                }
                Ok(())
            }
        }
    }
}
