//! [`SeStore`]: the settlement engine's durable key-value interface, its record types and key layout.
//!
//! The engine keeps its whole state in memory and writes every state change through [`SeStore::submit`] as one
//! [`SeBatch`]: atomic, durable when the returned ticket resolves, and durable in submission order (so a
//! snapshot submitted later never loses to one submitted earlier). It reads at start-up
//! ([`SeStore::scan_prefix`]), idempotency records on demand ([`SeStore::get_main`]: only recent keys are kept
//! in memory), and in pages when purging ([`SeStore::scan_page`]). Two implementations: [`RocksSeStore`] on the node's [`Db`] and [`MemorySeStore`]
//! for tests (which keeps its data across engine restarts when the same instance is reused).
//!
//! Key layout (all under `se/`; `<acct>` is an account ID, which never contains `/`; `<seq>` is a 16-digit
//! hex sequence number so keys sort in acceptance order):
//!
//! | key | family | value (JSON) |
//! |--|--|--|
//! | `se/a/<acct>` | main | [`AccountRecord`] |
//! | `se/o/<acct>` | main | [`OutgoingRecord`]: totals, leftover, last error of the settle path |
//! | `se/i/<acct>` | main | [`IncomingRecord`]: incoming leftover and totals |
//! | `se/m/<acct>/<key>` | main | a module max-value tracker ([`channel_modules::store::MaxValue`]) |
//! | `se/k/<acct>/<idempotency key>` | main | [`IdempotencyRecord`] (kept ≥ 24 h after the last request) |
//! | `se/q/<acct>/<seq>` | pending | [`QueuedRequest`]: accepted, not yet taken by the settle worker |
//! | `se/h/<acct>/<seq>` | main | [`HistoryRecord`]: an accepted settle request, once taken |
//! | `se/s/<acct>/<seq>` | main | [`SentRecord`]: a claim sent (cumulative total) |
//! | `se/c/<acct>/<settlement id>` | pending | [`CreditRecord`]: an incoming settlement not yet credited (or refused with 409) |
//! | `se/r/<acct>/<seq>` | main | [`CreditRecord`]: an incoming settlement credited |

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use channel_modules::store::StoreError;
use channel_modules::sync::lock;
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

use super::amount::{decimal_string, Scaled};
use crate::store::Db;

/// Prefix of every settlement-engine key.
pub const SE_PREFIX: &str = "se/";

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

/// In-memory [`SeStore`] for tests. Reusing one instance across engine restarts keeps the data, like a disk.
/// [`MemorySeStore::fail_next_writes`] injects write failures.
#[derive(Clone, Default, Debug)]
pub struct MemorySeStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default, Debug)]
struct MemoryInner {
    data: BTreeMap<(Family, String), Vec<u8>>,
    fail_next: u64,
}

impl MemorySeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` submits fail with [`StoreError::Io`] and change nothing.
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_next_writes(&self, n: u64) {
        lock(&self.inner).fail_next = n;
    }

    /// Number of keys stored (both families).
    pub fn len(&self) -> usize {
        lock(&self.inner).data.len()
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SeStore for MemorySeStore {
    fn submit(&self, batch: SeBatch) -> Result<SeTicket, StoreError> {
        let mut inner = lock(&self.inner);
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError::Io("injected write failure".to_owned()));
        }
        for op in batch.ops {
            match op {
                Op::Put(f, k, v) => {
                    let key = String::from_utf8_lossy(&k).into_owned();
                    inner.data.insert((f, key), v);
                }
                Op::Delete(f, k) => {
                    let key = String::from_utf8_lossy(&k).into_owned();
                    inner.data.remove(&(f, key));
                }
            }
        }
        Ok(Box::pin(async { Ok(()) }))
    }

    fn scan_prefix(
        &self,
        family: Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = lock(&self.inner);
        Ok(inner
            .data
            .range((family, prefix.to_owned())..)
            .take_while(|((f, k), _)| *f == family && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = lock(&self.inner);
        Ok(inner
            .data
            .range((Family::Main, prefix.to_owned())..)
            .take_while(|((f, k), _)| *f == Family::Main && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|after| k.as_str() > after))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.inner)
            .data
            .get(&(Family::Main, key.to_owned()))
            .cloned())
    }
}

/// Decodes a JSON record read at start-up.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Keys of the layout in the module doc.
pub mod keys {
    /// `se/a/<acct>`.
    pub fn account(acct: &str) -> String {
        format!("se/a/{acct}")
    }
    /// `se/o/<acct>`.
    pub fn outgoing(acct: &str) -> String {
        format!("se/o/{acct}")
    }
    /// `se/i/<acct>`.
    pub fn incoming(acct: &str) -> String {
        format!("se/i/{acct}")
    }
    /// `se/m/<acct>/<key>`.
    pub fn tracker(acct: &str, key: &str) -> String {
        format!("se/m/{acct}/{key}")
    }
    /// `se/k/<acct>/<idempotency key>`.
    pub fn idempotency(acct: &str, key: &str) -> String {
        format!("se/k/{acct}/{key}")
    }
    /// `se/q/<acct>/<seq>`.
    pub fn queued(acct: &str, seq: u64) -> String {
        format!("se/q/{acct}/{seq:016x}")
    }
    /// `se/h/<acct>/<seq>`.
    pub fn history(acct: &str, seq: u64) -> String {
        format!("se/h/{acct}/{seq:016x}")
    }
    /// `se/s/<acct>/<seq>`.
    pub fn sent(acct: &str, seq: u64) -> String {
        format!("se/s/{acct}/{seq:016x}")
    }
    /// `se/c/<acct>/<settlement id>`.
    pub fn credit(acct: &str, settlement_id: &str) -> String {
        format!("se/c/{acct}/{settlement_id}")
    }
    /// `se/r/<acct>/<seq>`.
    pub fn credited(acct: &str, seq: u64) -> String {
        format!("se/r/{acct}/{seq:016x}")
    }
    /// Prefix of every record kind `kind` (one letter) of every account: `se/<kind>/`.
    pub fn kind_prefix(kind: char) -> String {
        format!("se/{kind}/")
    }
    /// Prefix of the records of kind `kind` of one account: `se/<kind>/<acct>/`.
    pub fn account_prefix(kind: char, acct: &str) -> String {
        format!("se/{kind}/{acct}/")
    }
    /// The part of `key` after `prefix`.
    pub fn suffix<'a>(key: &'a str, prefix: &str) -> &'a str {
        key.get(prefix.len()..).unwrap_or("")
    }
    /// The account and the rest of a `se/<kind>/<acct>/<rest>` key.
    pub fn split_account(key: &str) -> Option<(&str, &str)> {
        let rest = key.strip_prefix("se/")?.get(2..)?;
        rest.split_once('/')
    }
    /// Parses a 16-digit hex sequence number.
    pub fn parse_seq(s: &str) -> Option<u64> {
        u64::from_str_radix(s, 16).ok()
    }
}

/// `se/a/<acct>`: an account known to the engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account ID (the connector's; a UUID for interledger-rs).
    pub id: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

/// `se/o/<acct>`: the settle path's state. Only the account's settle worker writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct OutgoingRecord {
    /// Cumulative amount to have settled, in module units (sum of every request taken, converted).
    #[serde(with = "decimal_string")]
    pub target_total: BigUint,
    /// Cumulative amount whose claim the peer engine acknowledged (or the module reported paid), module units.
    #[serde(with = "decimal_string")]
    pub settled_total: BigUint,
    /// Part of the requests worth less than one module unit, not settled yet.
    pub leftover: Scaled,
    /// The connector's scale, learned from its latest settle request.
    pub connector_scale: Option<u8>,
    /// Settle requests taken so far.
    pub requests_taken: u64,
    /// The last failure of the settle path, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Claim or transaction ID of the last settlement sent.
    pub last_claim_id: Option<String>,
}

/// `se/i/<acct>`: the incoming side's state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct IncomingRecord {
    /// Part of incoming settlements worth less than one connector unit, not credited yet.
    pub leftover: Scaled,
    /// Cumulative increase the module reported, module units.
    #[serde(with = "decimal_string")]
    pub received_total: BigUint,
}

/// The stored response of a settle request, for replays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 (hex) of the account and the normalized Quantity.
    pub input_hash: String,
    /// HTTP status of the stored response.
    pub status: u16,
    /// Body of the stored response (JSON).
    pub body: String,
    /// First request with this key, ms since the epoch.
    pub first_ms: u64,
    /// Latest request with this key, ms since the epoch (the key is kept ≥ 24 h after it).
    pub last_ms: u64,
}

/// `se/q/<acct>/<seq>`: a settle request accepted and durable, not yet taken by the worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedRequest {
    /// Sequence number (acceptance order).
    pub seq: u64,
    /// The request's Idempotency-Key, if it had one.
    pub key: Option<String>,
    /// The amount at the connector's scale.
    pub amount: Scaled,
    /// Acceptance time, ms since the epoch.
    pub accepted_ms: u64,
}

/// `se/h/<acct>/<seq>`: a settle request after the worker took it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The request.
    pub request: QueuedRequest,
    /// Whole module units it contributed (after leftovers).
    #[serde(with = "decimal_string")]
    pub module_units: BigUint,
    /// The cumulative target total once it was taken: the request is settled once `settled_total` reaches this.
    #[serde(with = "decimal_string")]
    pub target_total_after: BigUint,
}

/// `se/s/<acct>/<seq>`: a claim (or payment) the peer acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SentRecord {
    /// Cumulative total it covers, module units.
    #[serde(with = "decimal_string")]
    pub total: BigUint,
    /// Claim or transaction ID (a `txId`/`id`/`hash` field of the claim, else the total).
    pub claim_id: String,
    /// When it was acknowledged, ms since the epoch.
    pub sent_ms: u64,
}

/// Where an incoming settlement stands with the connector.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreditStatus {
    /// Not acknowledged yet; retried with backoff.
    Pending,
    /// The connector answered 409 (key already used): not retried; an operator must reconcile.
    Conflict,
    /// The connector acknowledged it (any 2xx).
    Credited,
}

/// An incoming settlement to credit to the connector.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreditRecord {
    /// The module's settlement ID (claim value or ledger tx id).
    pub settlement_id: String,
    /// The Idempotency-Key used for every attempt (derived from the account and settlement ID).
    pub idempotency_key: String,
    /// Amount at the connector's scale.
    pub amount: Scaled,
    /// Status.
    pub status: CreditStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Last failure.
    pub last_error: Option<String>,
    /// When the module reported it, ms since the epoch.
    pub received_ms: u64,
    /// When it was acknowledged (or refused), ms since the epoch.
    pub done_ms: Option<u64>,
}
