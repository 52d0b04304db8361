//! [`StagingHost`]: an account's host while the engine runs `handle_incoming_claim`. Tracker writes are held
//! back and committed in the same batch as the resulting credit record, so a crash can never leave a claim
//! recorded as "best" without the credit it is worth (which a replay of the claim could not recover).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::identity::IdentityOrigin;
use channel_modules::store::{MaxValue, MaxValueTracker, StoreError, TransferLog};
use channel_modules::sync::lock;
use channel_modules::{ContextHost, ModuleError};

use super::tracker::SeTracker;
use super::AccountHost;
use crate::settlement::store::{Family, SeBatch, SeStore};

/// Tracker writes staged during `handle_incoming_claim` (see the module doc).
pub(crate) struct StagingHost {
    base: Arc<AccountHost>,
    staged: Mutex<BTreeMap<String, Arc<StagedTracker>>>,
}

struct StagedTracker {
    base: Arc<SeTracker>,
    staged: Mutex<Option<MaxValue>>,
}

#[async_trait]
impl MaxValueTracker for StagedTracker {
    async fn set_if_max(&self, entry: MaxValue) -> Result<MaxValue, StoreError> {
        let current = self.get_max().await?;
        if entry.value > current.value {
            *lock(&self.staged) = Some(entry);
            Ok(current)
        } else {
            Ok(entry)
        }
    }

    async fn get_max(&self) -> Result<MaxValue, StoreError> {
        let staged = lock(&self.staged).clone();
        match staged {
            Some(v) => Ok(v),
            None => self.base.get_max().await,
        }
    }
}

impl StagingHost {
    /// Stages tracker writes on top of `base`.
    pub(crate) fn new(base: Arc<AccountHost>) -> Self {
        StagingHost {
            base,
            staged: Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes the staged tracker values together with `batch`, atomically, and publishes them. Fails (and
    /// writes nothing) if a tracker moved since it was read (another writer raced the staged hook).
    pub(crate) async fn commit(
        &self,
        mut batch: SeBatch,
        store: &dyn SeStore,
    ) -> Result<(), StoreError> {
        let staged: Vec<(String, Arc<SeTracker>, MaxValue)> = lock(&self.staged)
            .iter()
            .filter_map(|(k, t)| {
                lock(&t.staged)
                    .clone()
                    .map(|v| (k.clone(), Arc::clone(&t.base), v))
            })
            .collect();
        let trackers: Vec<Arc<SeTracker>> = staged.iter().map(|(_, t, _)| Arc::clone(t)).collect();
        // Lock every touched tracker (in key order: the BTreeMap's) for the duration of the write.
        let mut guards = Vec::with_capacity(staged.len());
        for (tracker, (key, _, value)) in trackers.iter().zip(&staged) {
            let guard = tracker.value.lock().await;
            if value.value <= guard.value {
                return Err(StoreError::Io(format!(
                    "max-value tracker {key} changed during an incoming claim"
                )));
            }
            batch.put_json(Family::Main, tracker.key.clone(), value)?;
            guards.push(guard);
        }
        if !batch.is_empty() {
            store.submit(batch)?.await?;
        }
        for (guard, (_, _, value)) in guards.iter_mut().zip(staged) {
            **guard = value;
        }
        Ok(())
    }
}

#[async_trait]
impl ContextHost for StagingHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.base.transfer_log(key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        let mut staged = lock(&self.staged);
        let t = staged.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(StagedTracker {
                base: self.base.tracker(key),
                staged: Mutex::new(None),
            })
        });
        Ok(Arc::clone(t) as Arc<dyn MaxValueTracker>)
    }

    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        self.base.rpc(method, args).await
    }

    fn now(&self) -> SystemTime {
        self.base.now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.base.hold_identity(identity, account_id, origin).await
    }
}
