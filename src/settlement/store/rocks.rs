//! [`RocksSeStore`]: the engine's store on the node's RocksDB database.

use std::sync::Arc;

use channel_modules::store::StoreError;

use super::{Family, Op, SeBatch, SeStore, SeTicket};
use crate::store::Db;

fn utf8_rows(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    rows.into_iter()
        .map(|(k, v)| {
            String::from_utf8(k)
                .map(|k| (k, v))
                .map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    reason: "settlement-engine key is not UTF-8".to_owned(),
                })
        })
        .collect()
}

/// [`SeStore`] on the node's RocksDB [`Db`] (group commit, WAL sync, poisoning).
#[derive(Clone, Debug)]
pub struct RocksSeStore {
    db: Arc<Db>,
}

impl RocksSeStore {
    /// The engine's store on `db`.
    pub fn new(db: Arc<Db>) -> Self {
        RocksSeStore { db }
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }
}

impl SeStore for RocksSeStore {
    fn submit(&self, batch: SeBatch) -> Result<SeTicket, StoreError> {
        let mut wb = rocksdb::WriteBatch::default();
        let pending = self.db.pending_cf()?;
        for op in batch.ops {
            match op {
                Op::Put(Family::Main, k, v) => wb.put(k, v),
                Op::Put(Family::Pending, k, v) => wb.put_cf(pending, k, v),
                Op::Delete(Family::Main, k) => wb.delete(k),
                Op::Delete(Family::Pending, k) => wb.delete_cf(pending, k),
            }
        }
        let ticket = self.db.submit(wb)?;
        Ok(Box::pin(ticket.wait()))
    }

    fn scan_prefix(
        &self,
        family: Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = match family {
            Family::Main => self.db.scan_prefix(prefix.as_bytes())?,
            Family::Pending => self.db.scan_pending_prefix(prefix.as_bytes())?,
        };
        utf8_rows(rows)
    }

    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        utf8_rows(
            self.db
                .scan_prefix_page(prefix.as_bytes(), after.map(str::as_bytes), limit)?,
        )
    }

    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key.as_bytes())
    }
}
