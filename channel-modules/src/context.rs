//! [`ChannelContext`]: everything a module may touch (the legacy module's `ctx`): store handles by key, RPC to
//! the peer's module, the node's clock, the module's options and the node's ledger identity registry. Never the
//! socket. A host (peer mode: a BTP/1.0 trustline; engine mode: an RFC 38 account) provides it through
//! [`ContextHost`].

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::ModuleError;
use crate::identity::IdentityOrigin;
use crate::store::{validate_key, MaxValueTracker, StoreError, TransferLog};

/// What the host (a BTP/1.0 trustline in peer mode, a settlement-engine account in engine mode) provides to its
/// module.
#[async_trait]
pub trait ContextHost: Send + Sync {
    /// The transfer log stored under `key` (already validated). `""` is the trustline's main log.
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;
    /// The max-value tracker stored under `key` (already validated).
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError>;
    /// Sends a module RPC to the peer's module and waits for its reply (BTP Message in peer mode; a
    /// settlement message through the connectors in engine mode).
    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError>;
    /// The node's clock (injected so tests can move time).
    fn now(&self) -> SystemTime;
    /// Makes the account `account_id` hold the ledger identity `identity` (e.g. `eth:<chainId>:<address>`,
    /// `xrp:<channel id>`), node-wide and durably, with the rules of
    /// [`decide_identity_hold`](crate::identity::decide_identity_hold) ("first account wins" for proven holds,
    /// a second proven account makes the identity *contested* and both are refused, a configured hold takes
    /// over from proven holders). `Ok` when `account_id` holds the identity afterwards;
    /// [`ModuleError::NotAccepted`] otherwise. A host serving a single account may use its own account ID
    /// instead of `account_id`. Modules ask to hold an identity before they pin it **and again right before
    /// every credit** on its behalf (one read when nothing changes), so two accounts can never both be credited
    /// for the same on-chain payments or channel, and an account is refused as soon as its identity is
    /// contested.
    async fn hold_identity(
        &self,
        identity: &str,
        account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError>;
}

/// The handle a module receives on every hook. Cheap to clone.
#[derive(Clone)]
pub struct ChannelContext {
    host: Arc<dyn ContextHost>,
    options: Arc<serde_json::Value>,
    account_id: Arc<str>,
}

impl ChannelContext {
    /// Builds a context for the peer or account `account_id`, with the module's `options`.
    pub fn new(
        host: Arc<dyn ContextHost>,
        options: serde_json::Value,
        account_id: impl Into<Arc<str>>,
    ) -> Self {
        ChannelContext {
            host,
            options: Arc::new(options),
            account_id: account_id.into(),
        }
    }

    /// The peer (trustline) or SE account this context belongs to.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The module's options, as configured (legacy plugin options JSON).
    pub fn options(&self) -> &serde_json::Value {
        &self.options
    }

    /// The trustline's main transfer log (key `""`).
    pub fn main_log(&self) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.host.transfer_log("")
    }

    /// A transfer log by key; keys follow the legacy alphabet `[A-Za-z0-9_-]`.
    pub fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        validate_key(key)?;
        self.host.transfer_log(key)
    }

    /// A max-value tracker by key; keys follow the legacy alphabet `[A-Za-z0-9_-]`.
    pub fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        validate_key(key)?;
        self.host.max_value_tracker(key)
    }

    /// RPC to the peer's module.
    pub async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        self.host.rpc(method, args).await
    }

    /// The node's clock.
    pub fn now(&self) -> SystemTime {
        self.host.now()
    }

    /// A handle that does not keep the host (and so its stores) alive: for background tasks, which
    /// [`WeakChannelContext::upgrade`] only while they work and stop once the host is gone.
    pub fn downgrade(&self) -> WeakChannelContext {
        WeakChannelContext {
            host: Arc::downgrade(&self.host),
            options: Arc::clone(&self.options),
            account_id: Arc::clone(&self.account_id),
        }
    }

    /// Makes this context's account hold the ledger identity `identity` (see [`ContextHost::hold_identity`]):
    /// refused when another account of the node holds it or it is contested.
    pub async fn hold_identity(
        &self,
        identity: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.host
            .hold_identity(identity, &self.account_id, origin)
            .await
    }
}

/// A [`ChannelContext`] that does not keep its host alive (see [`ChannelContext::downgrade`]).
#[derive(Clone)]
pub struct WeakChannelContext {
    host: std::sync::Weak<dyn ContextHost>,
    options: Arc<serde_json::Value>,
    account_id: Arc<str>,
}

impl WeakChannelContext {
    /// The context, if its host still exists.
    pub fn upgrade(&self) -> Option<ChannelContext> {
        Some(ChannelContext {
            host: self.host.upgrade()?,
            options: Arc::clone(&self.options),
            account_id: Arc::clone(&self.account_id),
        })
    }
}
