//! The [`ContextHost`] of trustline mode, and [`PeerStores`]: where a trustline's durable records live.
//!
//! A trustline's module sees its peer only through the [`ChannelContext`](channel_modules::ChannelContext):
//! the main log `""` is the trustline's own log, other keys are namespaced per peer, and `rpc` becomes a BTP
//! Message whose one entry is named after the method (legacy `CustomRpc.call`).

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::memory::MemoryStores;
use channel_modules::store::{MaxValueTracker, StoreError, TransferLog};
use channel_modules::{ContextHost, ModuleError};

use super::trustline::{Trustline, TrustlineInner};

/// The stores of one peer, by key (`""` is the main log). The same key must always yield the same instance.
pub trait PeerStores: Send + Sync {
    /// The transfer log under `key`.
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;
    /// The max-value tracker under `key`.
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError>;
}

impl PeerStores for MemoryStores {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        MemoryStores::transfer_log(self, key)
    }
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        MemoryStores::max_value_tracker(self, key)
    }
}

impl PeerStores for crate::store::RocksStores {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        crate::store::RocksStores::transfer_log(self, key)
    }
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        crate::store::RocksStores::max_value_tracker(self, key)
    }
}

/// A clock; injected so tests can move time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system wall clock (production).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that follows tokio's (pausable) time from a starting wall-clock time; with
/// `#[tokio::test(start_paused = true)]` it moves only when tokio time advances.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current wall-clock time.
    pub fn new() -> Self {
        TokioClock {
            start_wall: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}

/// The context host of one trustline.
pub(crate) struct TrustlineHost {
    pub(crate) trustline: Weak<TrustlineInner>,
    pub(crate) stores: Arc<dyn PeerStores>,
    pub(crate) main_log: Arc<dyn TransferLog>,
    pub(crate) clock: Arc<dyn Clock>,
}

#[async_trait]
impl ContextHost for TrustlineHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        if key.is_empty() {
            Ok(Arc::clone(&self.main_log))
        } else {
            self.stores.transfer_log(key)
        }
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        self.stores.max_value_tracker(key)
    }

    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        let inner = self
            .trustline
            .upgrade()
            .ok_or_else(|| ModuleError::Rpc("trustline stopped".to_owned()))?;
        Trustline { inner }.module_rpc(method, args).await
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    async fn claim_identity(&self, identity: &str, account_id: &str) -> Result<(), ModuleError> {
        // Scoped to this trustline: the host has no node-wide registry yet (each peer's module is built from
        // that peer's own configuration). Recorded in the trace so an operator can spot a shared identity.
        tracing::debug!(%identity, account = %account_id, "ledger identity claimed (trustline scope)");
        Ok(())
    }
}
