//! [`SeStore`]: the settlement engine's durable key-value interface, the records it holds and their [`keys`].
//!
//! The engine keeps its whole state in memory and writes every state change through [`SeStore::submit`] as one
//! [`SeBatch`]: atomic, durable when the returned ticket resolves, and durable in submission order (so a
//! snapshot submitted later never loses to one submitted earlier). It reads at start-up
//! ([`SeStore::scan_prefix`]), idempotency records on demand ([`SeStore::get_main`]: only recent keys are kept
//! in memory), and in pages when purging ([`SeStore::scan_page`]). Two implementations: [`RocksSeStore`] on
//! the node's database and `MemorySeStore` for tests (`testing` feature) (which keeps its data across engine restarts when the
//! same instance is reused).
//!
//! The records are JSON, one type per key kind of the [`keys`] layout: [`AccountRecord`], [`OutgoingRecord`],
//! [`IncomingRecord`], [`IdempotencyRecord`], [`QueuedRequest`], [`HistoryRecord`], [`SentRecord`],
//! [`CreditRecord`].

pub mod keys;
#[cfg(any(test, feature = "testing"))]
mod memory;
mod records;
mod rocks;

use std::future::Future;
use std::pin::Pin;

use channel_modules::store::StoreError;
use serde::{Deserialize, Serialize};

#[cfg(any(test, feature = "testing"))]
pub use memory::MemorySeStore;
pub use records::{
    AccountRecord, CreditRecord, CreditStatus, HistoryRecord, IdempotencyRecord, IncomingRecord,
    OutgoingRecord, QueuedRequest, SentRecord,
};
pub use rocks::RocksSeStore;

/// Which column family a key lives in: `Pending` for short-lived records, so their tombstones do not slow the
/// start-up scan of what is still pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Long-lived records.
    Main,
    /// Short-lived records (queued requests, uncredited settlements).
    Pending,
}

/// One write operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or overwrite.
    Put(Family, Vec<u8>, Vec<u8>),
    /// Remove.
    Delete(Family, Vec<u8>),
}

/// An atomic group of writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeBatch {
    ops: Vec<Op>,
}

impl SeBatch {
    /// An empty batch.
    pub fn new() -> Self {
        SeBatch::default()
    }

    /// Adds a put of a JSON-encoded record.
    pub fn put_json<T: Serialize>(
        &mut self,
        family: Family,
        key: String,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("encode: {e}"),
        })?;
        self.ops.push(Op::Put(family, key.into_bytes(), bytes));
        Ok(())
    }

    /// Adds a delete.
    pub fn delete(&mut self, family: Family, key: String) {
        self.ops.push(Op::Delete(family, key.into_bytes()));
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// True if the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Resolves when a submitted batch is durable (`Ok`) or failed.
pub type SeTicket = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// The engine's durable store. See the module doc for the contract.
pub trait SeStore: Send + Sync + 'static {
    /// Queues `batch` and returns a ticket. Batches become durable atomically and in submission order; the
    /// batch is written even if the ticket is dropped. Errors here mean nothing was queued.
    fn submit(&self, batch: SeBatch) -> Result<SeTicket, StoreError>;

    /// Every `(key, value)` of `family` whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        family: Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// At most `limit` `(key, value)` pairs of the main family whose key starts with `prefix` and sorts after
    /// `after`, in key order (one page of a long scan).
    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The value of `key` in the main family (durable: a batch becomes readable only once synced). There is no
    /// point read of the pending family (see `store::db::PENDING_CF`).
    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Decodes a JSON record read at start-up.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
