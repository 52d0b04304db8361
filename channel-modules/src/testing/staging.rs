//! [`StagedHost`]: an engine-mode view of a [`TestHost`], the way an RFC 38 engine runs
//! [`ChannelModule::handle_incoming_claim`](crate::ChannelModule::handle_incoming_claim): max-value tracker
//! writes are held back and written only by [`StagedHost::commit`], after the hook returned (an engine commits
//! them in one batch with the credit), or never, if the stage is dropped (a request that was dropped, or a
//! credit that failed). Everything else goes to the host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::TestHost;
use crate::context::{ChannelContext, ContextHost};
use crate::error::ModuleError;
use crate::identity::IdentityOrigin;
use crate::store::{MaxValue, MaxValueTracker, StoreError, TransferLog};
use crate::sync::lock;

/// A tracker whose writes are staged over the host's tracker.
struct StagedTracker {
    base: Arc<dyn MaxValueTracker>,
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
            Some(value) => Ok(value),
            None => self.base.get_max().await,
        }
    }
}

/// Tracker writes staged over a [`TestHost`] (see the module docs). Build one per incoming claim with
/// [`TestHost::stage`].
pub struct StagedHost {
    base: Arc<TestHost>,
    staged: Mutex<BTreeMap<String, Arc<StagedTracker>>>,
}

impl StagedHost {
    /// A context on this stage, for a module with `options` and the account `account_id`.
    pub fn context(
        self: &Arc<Self>,
        options: serde_json::Value,
        account_id: &str,
    ) -> ChannelContext {
        ChannelContext::new(
            Arc::clone(self) as Arc<dyn ContextHost>,
            options,
            account_id,
        )
    }

    /// Writes the staged tracker values to the host. Fails, writing nothing, when a tracker of the host moved
    /// to or past its staged value since the stage read it (another writer raced the staged hook), as an
    /// engine's commit does.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let staged: Vec<(String, Arc<StagedTracker>)> = lock(&self.staged)
            .iter()
            .map(|(key, tracker)| (key.clone(), Arc::clone(tracker)))
            .collect();
        let mut writes = Vec::new();
        for (key, tracker) in staged {
            let Some(value) = lock(&tracker.staged).clone() else {
                continue;
            };
            if tracker.base.get_max().await?.value >= value.value {
                return Err(StoreError::Corrupt {
                    key,
                    reason: "the tracker changed during a staged incoming claim".to_owned(),
                });
            }
            writes.push((tracker, value));
        }
        for (tracker, value) in writes {
            tracker.base.set_if_max(value).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ContextHost for StagedHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.base.transfer_log(key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        let mut staged = lock(&self.staged);
        if let Some(tracker) = staged.get(key) {
            return Ok(Arc::clone(tracker) as Arc<dyn MaxValueTracker>);
        }
        let tracker = Arc::new(StagedTracker {
            base: self.base.max_value_tracker(key)?,
            staged: Mutex::new(None),
        });
        staged.insert(key.to_owned(), Arc::clone(&tracker));
        Ok(tracker)
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

impl TestHost {
    /// An engine-mode stage over this host (see [`StagedHost`]).
    pub fn stage(self: &Arc<Self>) -> Arc<StagedHost> {
        Arc::new(StagedHost {
            base: Arc::clone(self),
            staged: Mutex::new(BTreeMap::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use num_bigint::BigUint;

    use super::*;

    fn entry(value: u32) -> MaxValue {
        MaxValue {
            value: BigUint::from(value),
            data: serde_json::json!(value),
        }
    }

    #[tokio::test]
    async fn staged_writes_reach_the_host_only_on_commit() -> Result<(), StoreError> {
        let host = TestHost::new();
        let tracker = host.stores().max_value_tracker("k")?;
        let stage = host.stage();
        let ctx = stage.context(serde_json::json!({}), "a");
        ctx.max_value_tracker("k")?.set_if_max(entry(5)).await?;
        // Read back through the stage, not yet on the host.
        assert_eq!(ctx.max_value_tracker("k")?.get_max().await?, entry(5));
        assert_eq!(tracker.get_max().await?.value, BigUint::default());
        stage.commit().await?;
        assert_eq!(tracker.get_max().await?, entry(5));
        // A dropped stage writes nothing; a stage the host overtook refuses to commit.
        let dropped = host.stage();
        dropped
            .context(serde_json::json!({}), "a")
            .max_value_tracker("k")?
            .set_if_max(entry(7))
            .await?;
        drop(dropped);
        assert_eq!(tracker.get_max().await?, entry(5));
        let raced = host.stage();
        raced
            .context(serde_json::json!({}), "a")
            .max_value_tracker("k")?
            .set_if_max(entry(8))
            .await?;
        tracker.set_if_max(entry(9)).await?;
        assert!(raced.commit().await.is_err());
        assert_eq!(tracker.get_max().await?, entry(9));
        Ok(())
    }
}
