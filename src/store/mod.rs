//! Durable storage: the node's RocksDB database ([`Db`], one folder per node, group-committed synced writes)
//! and the durable [`TransferLog`] / [`MaxValueTracker`] implementations on it. The in-memory implementations
//! of the same traits live in [`channel_modules::memory`]; one conformance suite runs against both
//! (`tests/store_conformance.rs`).
//!
//! Layout:
//! * [`db`]: the database, its write path (atomic, durable, ordered, group commit, poisoning) and reads;
//! * [`codec`]: key layout and binary record encodings;
//! * [`schema`]: the database's one schema version, checked at open, and the record forms each version wrote;
//! * [`transfer_log`] / [`max_value`]: the two primitives, one instance per key;
//! * [`legacy_import`]: imports a legacy plugin store (string rows) into a namespace.
//!
//! A [`RocksStores`] hands out the primitives of one namespace (a peer or settlement account), so that every
//! trustline keeps its own main log `""` in the node's one database.

pub mod codec;
pub mod db;
pub mod legacy_import;
pub mod max_value;
pub mod schema;
pub mod transfer_log;

use std::sync::Arc;

use channel_modules::store::{validate_key, Limit, MaxValueTracker, StoreError, TransferLog};

pub use db::{Db, DbMemory, DbOptions, WriteTicket, DEFAULT_MIN_FREE_BYTES, DEFERRED_SYNC_DELAY};
pub use max_value::RocksMaxValueTracker;
pub use transfer_log::RocksTransferLog;

/// The durable stores of one namespace on a [`Db`]. The same key always yields the same instance (also across
/// `RocksStores` values on the same namespace), so all handles share one in-memory state.
#[derive(Clone, Debug)]
pub struct RocksStores {
    db: Arc<Db>,
    namespace: String,
    maximum: Limit,
    minimum: Limit,
}

impl RocksStores {
    /// Stores of `namespace` whose logs use the configured `maximum` / `minimum` unless an override is stored
    /// (legacy: `maxBalance`; an unset `minBalance` is [`Limit::Unbounded`], i.e. −Infinity). A log already open
    /// keeps the configured limits it was opened with.
    pub fn new(db: Arc<Db>, namespace: &str, maximum: Limit, minimum: Limit) -> Self {
        RocksStores {
            db,
            namespace: namespace.to_owned(),
            maximum,
            minimum,
        }
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The concrete log under `key` (`""` is the main log), loaded on first use.
    pub fn rocks_log(&self, key: &str) -> Result<Arc<RocksTransferLog>, StoreError> {
        validate_key(key)?;
        let prefix = codec::log_prefix(&self.namespace, key)?;
        self.db.shared_instance(&prefix.clone(), || {
            Ok(Arc::new(RocksTransferLog::open(
                Arc::clone(&self.db),
                prefix,
                self.maximum,
                self.minimum,
            )?))
        })
    }

    /// The log under `key` as a trait object.
    pub fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        Ok(self.rocks_log(key)?)
    }

    /// The concrete tracker under `key`, loaded on first use.
    pub fn rocks_tracker(&self, key: &str) -> Result<Arc<RocksMaxValueTracker>, StoreError> {
        validate_key(key)?;
        let mvt_key = codec::mvt_key(&self.namespace, key)?;
        self.db.shared_instance(&mvt_key.clone(), || {
            Ok(Arc::new(RocksMaxValueTracker::open(
                Arc::clone(&self.db),
                mvt_key,
            )?))
        })
    }

    /// The tracker under `key` as a trait object.
    pub fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        Ok(self.rocks_tracker(key)?)
    }
}
