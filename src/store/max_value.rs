//! [`RocksMaxValueTracker`]: the durable [`MaxValueTracker`] of one key.
//!
//! The entry is loaded once and kept in memory. `set_if_max` compares and updates it under the tracker's lock,
//! submits one batch (the new entry) to the [`Db`] writer, and returns after the group-committed sync, with the
//! lock released meanwhile. `get_max` waits until the entry it reports is durable. A failed write poisons the
//! database, so, as for the transfer log, no rollback is needed (see `transfer_log`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use channel_modules::store::{MaxValue, MaxValueTracker, StoreError};
use channel_modules::sync::lock;
use rocksdb::WriteBatch;

use super::codec;
use super::db::Db;

#[derive(Debug)]
struct Entry {
    value: Option<MaxValue>,
    /// Sequence number of the batch that wrote `value` (0: loaded from disk).
    seq: u64,
}

/// The durable max-value tracker of one key. Open it through [`super::RocksStores`].
#[derive(Debug)]
pub struct RocksMaxValueTracker {
    db: Arc<Db>,
    key: Vec<u8>,
    entry: Mutex<Entry>,
}

impl RocksMaxValueTracker {
    /// Loads the tracker stored under `key` (see [`codec::mvt_key`]).
    pub(crate) fn open(db: Arc<Db>, key: Vec<u8>) -> Result<Self, StoreError> {
        let value = db
            .get(&key)?
            .map(|bytes| codec::decode_max_value(&key, &bytes))
            .transpose()?;
        Ok(RocksMaxValueTracker {
            db,
            key,
            entry: Mutex::new(Entry { value, seq: 0 }),
        })
    }
}

#[async_trait]
impl MaxValueTracker for RocksMaxValueTracker {
    async fn set_if_max(&self, entry: MaxValue) -> Result<MaxValue, StoreError> {
        let outcome = {
            let mut stored = lock(&self.entry);
            let previous = stored.value.clone().unwrap_or_default();
            if entry.value <= previous.value {
                Err(stored.seq)
            } else {
                let mut batch = WriteBatch::default();
                batch.put(&self.key, codec::encode_max_value(&entry)?);
                let ticket = self.db.submit(batch)?;
                stored.seq = ticket.seq();
                stored.value = Some(entry.clone());
                Ok((ticket, previous))
            }
        };
        match outcome {
            Ok((ticket, previous)) => {
                ticket.wait().await?;
                Ok(previous)
            }
            Err(seq) => {
                // The stored entry that beat this one must itself be durable before we report it as such.
                self.db.wait_durable(seq).await?;
                Ok(entry)
            }
        }
    }

    async fn get_max(&self) -> Result<MaxValue, StoreError> {
        let (value, seq) = {
            let stored = lock(&self.entry);
            (stored.value.clone().unwrap_or_default(), stored.seq)
        };
        self.db.wait_durable(seq).await?;
        Ok(value)
    }
}
