//! The [`ContextHost`] of peer mode (a channel module inside a BTP/1.0 trustline), and [`PeerStores`]: where a
//! trustline's durable records live.
//!
//! A trustline's module sees its peer only through the [`ChannelContext`](channel_modules::ChannelContext):
//! the main log `""` is the trustline's own log, other keys are namespaced per peer, and `rpc` goes to the
//! trustline's `ModuleRpc` (a BTP Message whose one entry is named after the method, legacy `CustomRpc.call`).
//! Ledger identities ([`ContextHost::hold_identity`]) go to the node's [`NodeIdentities`], shared by all its
//! trustlines: the node's one registry ([`crate::identity`]), which its settlement engine, if it runs one,
//! shares.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::clock::Clock;
use channel_modules::identity::IdentityOrigin;
use channel_modules::memory::MemoryStores;
use channel_modules::store::{MaxValueTracker, StoreError, TransferLog};
use channel_modules::{ContextHost, ModuleError};

use super::identities::NodeIdentities;

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

/// Sends a module's RPC to the peer's module: what [`ContextHost::rpc`] of peer mode needs from the trustline.
#[async_trait]
pub(crate) trait ModuleRpc: Send + Sync {
    /// Calls `method` with `args` on the peer's module and returns its reply.
    async fn module_rpc(
        self: Arc<Self>,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError>;
}

/// The context host of one trustline.
pub(crate) struct TrustlineHost {
    /// The trustline's RPC (weak: the trustline owns its host).
    pub(crate) rpc: Weak<dyn ModuleRpc>,
    pub(crate) stores: Arc<dyn PeerStores>,
    pub(crate) main_log: Arc<dyn TransferLog>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The node's ledger identity registry (shared by every trustline of the node).
    pub(crate) identities: Arc<NodeIdentities>,
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
        let rpc = self
            .rpc
            .upgrade()
            .ok_or_else(|| ModuleError::Rpc("trustline stopped".to_owned()))?;
        rpc.module_rpc(method, args).await
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.identities
            .hold_identity(identity, account_id, origin)
            .await
    }
}
