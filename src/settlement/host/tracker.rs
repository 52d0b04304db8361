//! [`SeTracker`]: a module's max-value tracker kept as an engine record (`se/m/<acct>/<key>`).

use std::sync::Arc;

use async_trait::async_trait;
use channel_modules::store::{MaxValue, MaxValueTracker, StoreError};

use crate::settlement::store::{Family, SeBatch, SeStore};

/// A max-value tracker stored as an engine record.
pub(crate) struct SeTracker {
    pub(super) key: String,
    store: Arc<dyn SeStore>,
    pub(super) value: tokio::sync::Mutex<MaxValue>,
}

impl SeTracker {
    pub(super) fn new(key: String, store: Arc<dyn SeStore>, value: MaxValue) -> Self {
        SeTracker {
            key,
            store,
            value: tokio::sync::Mutex::new(value),
        }
    }
}

#[async_trait]
impl MaxValueTracker for SeTracker {
    async fn set_if_max(&self, entry: MaxValue) -> Result<MaxValue, StoreError> {
        let mut current = self.value.lock().await;
        if entry.value > current.value {
            let mut batch = SeBatch::new();
            batch.put_json(Family::Main, self.key.clone(), &entry)?;
            self.store.submit(batch)?.await?;
            Ok(std::mem::replace(&mut *current, entry))
        } else {
            Ok(entry)
        }
    }

    async fn get_max(&self) -> Result<MaxValue, StoreError> {
        Ok(self.value.lock().await.clone())
    }
}
