//! In-memory [`TransferLog`] and [`MaxValueTracker`].
//!
//! They have exactly the semantics of the durable RocksDB stores (`ilp_bridge::store`): both apply the rules of
//! [`crate::ledger`] and both run one conformance suite. They keep everything in a `HashMap` behind a mutex, so
//! a change is "durable" the moment the lock is released, and nothing survives the process. Used in module
//! tests (see `crate::testing`) and in the stateless mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ledger::{
    check_idempotent_prepare, not_prepared_error, reserve, settle, SettleTo, Settlement,
};
use crate::store::{
    validate_key, Direction, Limit, MaxValue, MaxValueTracker, NotedFulfillment, PrepareOutcome,
    StoreError, Sums, Transfer, TransferId, TransferLog, TransferLogError, TransferRecord,
    TransferState,
};
use crate::sync::lock;

#[derive(Debug, Default)]
struct LogState {
    records: HashMap<TransferId, TransferRecord>,
    /// Noted fulfillments of prepared transfers.
    notes: HashMap<TransferId, NotedFulfillment>,
    sums: Sums,
    maximum: Option<Limit>,
    minimum: Option<Limit>,
}

/// An in-memory [`TransferLog`] with the exact semantics of the durable one.
#[derive(Debug)]
pub struct MemoryTransferLog {
    configured_maximum: Limit,
    configured_minimum: Limit,
    state: Mutex<LogState>,
}

impl MemoryTransferLog {
    /// An empty log with the configured limits (used when no override is stored).
    pub fn new(maximum: Limit, minimum: Limit) -> Self {
        MemoryTransferLog {
            configured_maximum: maximum,
            configured_minimum: minimum,
            state: Mutex::new(LogState::default()),
        }
    }

    /// Every record in any state (tests use it to check sums against records).
    pub fn records(&self) -> Vec<TransferRecord> {
        lock(&self.state).records.values().cloned().collect()
    }
}

#[async_trait]
impl TransferLog for MemoryTransferLog {
    async fn prepare(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError> {
        let mut state = lock(&self.state);
        if let Some(stored) = state.records.get(&transfer.id) {
            return check_idempotent_prepare(stored, transfer, direction);
        }
        let maximum = state.maximum.unwrap_or(self.configured_maximum);
        let minimum = state.minimum.unwrap_or(self.configured_minimum);
        let sums = reserve(&state.sums, direction, transfer.amount, maximum, minimum)?;
        state.records.insert(
            transfer.id,
            TransferRecord {
                transfer: transfer.clone(),
                direction,
                state: TransferState::Prepared,
            },
        );
        state.sums = sums;
        Ok(PrepareOutcome::Prepared)
    }

    async fn fulfill(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError> {
        self.settle_in_memory(id, SettleTo::Fulfill(fulfillment))
    }

    async fn cancel(
        &self,
        id: &TransferId,
        reason: &str,
    ) -> Result<TransferRecord, TransferLogError> {
        self.settle_in_memory(id, SettleTo::Cancel(reason))
    }

    async fn get(&self, id: &TransferId) -> Result<Option<TransferRecord>, TransferLogError> {
        Ok(lock(&self.state).records.get(id).cloned())
    }

    fn sums(&self) -> Sums {
        lock(&self.state).sums
    }

    fn maximum(&self) -> Limit {
        lock(&self.state).maximum.unwrap_or(self.configured_maximum)
    }

    fn minimum(&self) -> Limit {
        lock(&self.state).minimum.unwrap_or(self.configured_minimum)
    }

    async fn set_maximum(&self, maximum: Limit) -> Result<(), TransferLogError> {
        lock(&self.state).maximum = Some(maximum);
        Ok(())
    }

    async fn set_minimum(&self, minimum: Limit) -> Result<(), TransferLogError> {
        lock(&self.state).minimum = Some(minimum);
        Ok(())
    }

    async fn prepared(&self) -> Result<Vec<TransferRecord>, TransferLogError> {
        Ok(lock(&self.state)
            .records
            .values()
            .filter(|r| r.state == TransferState::Prepared)
            .cloned()
            .collect())
    }

    async fn note_fulfillment(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
        ilp: &[u8],
    ) -> Result<(), TransferLogError> {
        let mut state = lock(&self.state);
        let record = state
            .records
            .get(id)
            .ok_or(TransferLogError::NotFound(*id))?;
        if let Some(e) = not_prepared_error(record) {
            return Err(e);
        }
        state.notes.insert(
            *id,
            NotedFulfillment {
                id: *id,
                fulfillment: *fulfillment,
                ilp: ilp.to_vec(),
            },
        );
        Ok(())
    }

    async fn noted_fulfillments(&self) -> Result<Vec<NotedFulfillment>, TransferLogError> {
        Ok(lock(&self.state).notes.values().cloned().collect())
    }
}

impl MemoryTransferLog {
    fn settle_in_memory(
        &self,
        id: &TransferId,
        to: SettleTo<'_>,
    ) -> Result<TransferRecord, TransferLogError> {
        let mut state = lock(&self.state);
        let stored = state
            .records
            .get(id)
            .ok_or(TransferLogError::NotFound(*id))?;
        match settle(&state.sums, stored, to)? {
            Settlement::Unchanged(record) => Ok(record),
            Settlement::Changed { record, sums } => {
                state.records.insert(*id, record.clone());
                state.notes.remove(id);
                state.sums = sums;
                Ok(record)
            }
        }
    }
}

/// An in-memory [`MaxValueTracker`].
#[derive(Debug, Default)]
pub struct MemoryMaxValueTracker {
    entry: Mutex<Option<MaxValue>>,
}

impl MemoryMaxValueTracker {
    /// An empty tracker (`get_max` returns `{0, null}`).
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl MaxValueTracker for MemoryMaxValueTracker {
    async fn set_if_max(&self, entry: MaxValue) -> Result<MaxValue, StoreError> {
        let mut stored = lock(&self.entry);
        let previous = stored.clone().unwrap_or_default();
        if entry.value > previous.value {
            *stored = Some(entry);
            Ok(previous)
        } else {
            Ok(entry)
        }
    }

    async fn get_max(&self) -> Result<MaxValue, StoreError> {
        Ok(lock(&self.entry).clone().unwrap_or_default())
    }
}

#[derive(Default)]
struct StoresInner {
    logs: HashMap<String, Arc<MemoryTransferLog>>,
    trackers: HashMap<String, Arc<MemoryMaxValueTracker>>,
}

/// Hands out in-memory stores by key: the same key always gives the same instance, so two handles never see
/// different states. New logs get the limits given at construction.
#[derive(Clone)]
pub struct MemoryStores {
    maximum: Limit,
    minimum: Limit,
    inner: Arc<Mutex<StoresInner>>,
}

impl MemoryStores {
    /// Stores whose new logs use `maximum` / `minimum` (legacy: `maxBalance`, `minBalance`; an unset
    /// `minBalance` is [`Limit::Unbounded`], i.e. −Infinity).
    pub fn new(maximum: Limit, minimum: Limit) -> Self {
        MemoryStores {
            maximum,
            minimum,
            inner: Arc::new(Mutex::new(StoresInner::default())),
        }
    }

    /// Stores with no limits at all (the legacy stateless mode).
    pub fn unbounded() -> Self {
        Self::new(Limit::Unbounded, Limit::Unbounded)
    }

    /// The concrete log under `key` (created on first use). `""` is the main log.
    pub fn memory_log(&self, key: &str) -> Result<Arc<MemoryTransferLog>, StoreError> {
        validate_key(key)?;
        let mut inner = lock(&self.inner);
        let log = inner
            .logs
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(MemoryTransferLog::new(self.maximum, self.minimum)));
        Ok(Arc::clone(log))
    }

    /// The log under `key` as a trait object.
    pub fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        Ok(self.memory_log(key)?)
    }

    /// The tracker under `key` (created on first use).
    pub fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        validate_key(key)?;
        let mut inner = lock(&self.inner);
        let tracker = inner
            .trackers
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(MemoryMaxValueTracker::new()));
        Ok(Arc::clone(tracker) as Arc<dyn MaxValueTracker>)
    }
}

impl std::fmt::Debug for MemoryStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStores")
            .field("maximum", &self.maximum)
            .field("minimum", &self.minimum)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::{LedgerAmount, LedgerBalance, LedgerSum};

    fn transfer(n: u8, amount: u64) -> Transfer {
        Transfer {
            id: TransferId([n; 16]),
            amount: LedgerAmount(amount),
            execution_condition: [n; 32],
            expires_at_ms: 1_000,
            ilp: vec![],
            custom: None,
        }
    }

    #[tokio::test]
    async fn limit_equality_allowed_and_retry_refused_again() {
        let log = MemoryTransferLog::new(Limit::Finite(LedgerBalance(100)), Limit::Unbounded);
        let t = transfer(1, 100);
        assert_eq!(
            log.prepare(&t, Direction::Incoming).await,
            Ok(PrepareOutcome::Prepared)
        );
        let over = transfer(2, 1);
        for _ in 0..2 {
            assert!(matches!(
                log.prepare(&over, Direction::Incoming).await,
                Err(TransferLogError::IncomingLimitExceeded {
                    after: LedgerBalance(101),
                    maximum: LedgerBalance(100)
                })
            ));
        }
        assert_eq!(log.sums().incoming_fulfilled_and_prepared, LedgerSum(100));
        assert_eq!(log.get(&over.id).await, Ok(None));
    }

    #[tokio::test]
    async fn stores_hand_out_same_instance_and_reject_bad_keys() {
        let stores = MemoryStores::new(
            Limit::Finite(LedgerBalance(10)),
            Limit::Finite(LedgerBalance(-5)),
        );
        let a = stores.transfer_log("k").expect("valid key");
        let b = stores.transfer_log("k").expect("valid key");
        a.prepare(&transfer(1, 7), Direction::Incoming)
            .await
            .expect("within limit");
        assert_eq!(b.sums().incoming_fulfilled_and_prepared, LedgerSum(7));
        assert_eq!(b.minimum(), Limit::Finite(LedgerBalance(-5)));
        assert!(matches!(
            stores.transfer_log("test:"),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(stores.max_value_tracker("a b").is_err());
    }
}
