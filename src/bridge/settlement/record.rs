//! What a pair's settlement keeps durably: one [`SettlementRecord`] (the reconciliation ledger) and the
//! idempotency keys of the settle requests it answered ([`KeptAnswer`]), in a [`SettlementStore`].
//!
//! Key layout (default column family of the node's database):
//!
//! | key | value |
//! |--|--|
//! | `bs/<pair>/state` | the [`SettlementRecord`], JSON |
//! | `bs/<pair>/k/<idempotency key>` | a [`KeptAnswer`], JSON |
//!
//! Pair names hold no `/` (peer names are checked at configuration), so one pair's keys never run into
//! another's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use channel_modules::amount::ModuleUnits;
use channel_modules::store::StoreError;
use channel_modules::sync::lock;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::settlement::quantity::{decimal_string, Quantity};
use crate::store::Db;

/// The reconciliation ledger of one pair. Amounts in legacy ledger units (the units the trustline's module
/// settles in, in peer mode) unless said otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    /// The modern connector's ID for its account of P (from its `POST /accounts`); the newest setup wins.
    pub account: Option<String>,
    /// Everything the connector asked the pair to settle, in whole legacy units.
    #[serde(with = "decimal_string")]
    pub requested: ModuleUnits,
    /// What the requests held below one legacy unit, kept until it adds up to one (RFC 38 leftovers).
    pub requested_leftover: Quantity,
    /// Settle requests accepted.
    pub requests: u64,
    /// What P's module has paid that the connector acknowledged as credited, cumulative.
    #[serde(with = "decimal_string")]
    pub credited: ModuleUnits,
    /// The credit being reported, written before it is first sent and kept until the connector acknowledges
    /// it, so a retry after a crash repeats the same key and amount.
    pub pending: Option<PendingCredit>,
    /// Credits acknowledged.
    pub credits: u64,
}

/// A credit to the modern connector not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCredit {
    /// The `Idempotency-Key` it is sent with, every time.
    pub key: String,
    /// The connector account it is for.
    pub account: String,
    /// What P's module reported paid in total when the credit was made; becomes `credited` once acknowledged.
    #[serde(with = "decimal_string")]
    pub total: ModuleUnits,
    /// The credit: `total` minus what was credited before.
    #[serde(with = "decimal_string")]
    pub amount: ModuleUnits,
}

/// The answer given to a settle request, kept under its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAnswer {
    /// SHA-256 of the account ID and the request body, hex: a reused key with another request is refused.
    pub request_hash: String,
    /// HTTP status answered.
    pub status: u16,
    /// Body answered.
    pub body: String,
    /// When the key was last used, ms since the epoch (kept for [`IDEMPOTENCY_KEEP_MS`]).
    pub used_ms: u64,
}

/// How long an idempotency key is kept after its last use: 25 hours (RFC 38 asks for at least 24).
pub const IDEMPOTENCY_KEEP_MS: u64 = 25 * 3600 * 1000;

/// Where a pair's settlement records live.
#[derive(Clone)]
pub enum SettlementStore {
    /// The node's database (synced writes).
    Rocks(Arc<Db>),
    /// In memory (tests).
    Memory(Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>),
}

impl std::fmt::Debug for SettlementStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettlementStore::Rocks(_) => f.write_str("SettlementStore::Rocks"),
            SettlementStore::Memory(_) => f.write_str("SettlementStore::Memory"),
        }
    }
}

fn state_key(pair: &str) -> Vec<u8> {
    format!("bs/{pair}/state").into_bytes()
}

fn answer_prefix(pair: &str) -> Vec<u8> {
    format!("bs/{pair}/k/").into_bytes()
}

fn answer_key(pair: &str, key: &str) -> Vec<u8> {
    let mut k = answer_prefix(pair);
    k.extend_from_slice(key.as_bytes());
    k
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Io(format!("encoding a bridge settlement record: {e}")))
}

impl SettlementStore {
    /// An empty in-memory store.
    pub fn memory() -> SettlementStore {
        SettlementStore::Memory(Arc::new(Mutex::new(BTreeMap::new())))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            SettlementStore::Rocks(db) => db.get(key),
            SettlementStore::Memory(m) => Ok(lock(m).get(key).cloned()),
        }
    }

    async fn write(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        match self {
            SettlementStore::Rocks(db) => {
                let mut batch = WriteBatch::default();
                for (k, v) in puts {
                    batch.put(k, v);
                }
                for k in deletes {
                    batch.delete(k);
                }
                db.write(batch).await
            }
            SettlementStore::Memory(m) => {
                let mut m = lock(m);
                for (k, v) in puts {
                    m.insert(k, v);
                }
                for k in deletes {
                    m.remove(&k);
                }
                Ok(())
            }
        }
    }

    /// The pair's record, `None` if none was written yet.
    pub fn load(&self, pair: &str) -> Result<Option<SettlementRecord>, StoreError> {
        let key = state_key(pair);
        match self.get(&key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the pair's record, with a kept answer if given, atomically and synced.
    pub async fn save(
        &self,
        pair: &str,
        record: &SettlementRecord,
        answer: Option<(&str, &KeptAnswer)>,
    ) -> Result<(), StoreError> {
        let mut puts = vec![(state_key(pair), encode(record)?)];
        if let Some((key, answer)) = answer {
            puts.push((answer_key(pair, key), encode(answer)?));
        }
        self.write(puts, Vec::new()).await
    }

    /// The answer kept under idempotency key `key`.
    pub fn answer(&self, pair: &str, key: &str) -> Result<Option<KeptAnswer>, StoreError> {
        let key = answer_key(pair, key);
        match self.get(&key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes the kept answers last used before `before_ms`; returns how many.
    pub async fn purge_answers(&self, pair: &str, before_ms: u64) -> Result<usize, StoreError> {
        let prefix = answer_prefix(pair);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = match self {
            SettlementStore::Rocks(db) => db.scan_prefix(&prefix)?,
            SettlementStore::Memory(m) => lock(m)
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut old = Vec::new();
        for (k, v) in entries {
            let answer: KeptAnswer = decode(&k, &v)?;
            if answer.used_ms < before_ms {
                old.push(k);
            }
        }
        let n = old.len();
        if n > 0 {
            self.write(Vec::new(), old).await?;
        }
        Ok(n)
    }
}
