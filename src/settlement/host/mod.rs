//! The engine-mode [`ContextHost`]: what a channel module reaches when it runs behind an RFC 38 account.
//!
//! * Max-value trackers are engine records (`SeTracker`, one namespace per account), kept in memory and
//!   written through the engine's [`SeStore`]; `StagingHost` holds their writes back while an incoming claim
//!   is handled.
//! * Transfer logs come from a [`ModuleLogs`] provider (RocksDB namespace `se/<acct>` in production, memory in
//!   tests). Modules rarely need them in engine mode: `handle_incoming_prepare` is never called there.
//! * RPCs are settlement messages `{"type":"rpc","method","args"}` sent through the connector to the peer engine.
//! * The clock is the engine's.
//! * Ledger identities go to the node's registry ([`IdentityRegistry`]).

mod logs;
mod staging;
mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::clock::Clock;
use channel_modules::identity::IdentityOrigin;
use channel_modules::store::{MaxValue, MaxValueTracker, StoreError, TransferLog};
use channel_modules::sync::lock;
use channel_modules::{ContextHost, ModuleError};

#[cfg(any(test, feature = "testing"))]
pub use logs::MemoryModuleLogs;
pub use logs::{ModuleLogs, RocksModuleLogs};
pub(crate) use staging::StagingHost;
use tracker::SeTracker;

use super::client::ConnectorClient;
use super::store::{keys, SeStore};
use super::wire;
use crate::identity::IdentityRegistry;

/// The [`ContextHost`] of one engine account.
pub(crate) struct AccountHost {
    account: String,
    store: Arc<dyn SeStore>,
    logs: Arc<dyn ModuleLogs>,
    client: ConnectorClient,
    /// The engine's clock ([`ContextHost::now`]).
    clock: Arc<dyn Clock>,
    /// The node's ledger-identity registry ([`ContextHost::hold_identity`]).
    identities: Arc<IdentityRegistry>,
    trackers: Mutex<HashMap<String, Arc<SeTracker>>>,
}

impl AccountHost {
    /// A host for `account`, with the trackers loaded at start-up (`key → value`).
    pub(crate) fn new(
        account: &str,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
        client: ConnectorClient,
        clock: Arc<dyn Clock>,
        identities: Arc<IdentityRegistry>,
        loaded: Vec<(String, MaxValue)>,
    ) -> Self {
        let trackers = loaded
            .into_iter()
            .map(|(key, value)| {
                let t = SeTracker::new(keys::tracker(account, &key), Arc::clone(&store), value);
                (key, Arc::new(t))
            })
            .collect();
        AccountHost {
            account: account.to_owned(),
            store,
            logs,
            client,
            clock,
            identities,
            trackers: Mutex::new(trackers),
        }
    }

    fn tracker(&self, key: &str) -> Arc<SeTracker> {
        let mut trackers = lock(&self.trackers);
        let t = trackers.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(SeTracker::new(
                keys::tracker(&self.account, key),
                Arc::clone(&self.store),
                MaxValue::default(),
            ))
        });
        Arc::clone(t)
    }
}

#[async_trait]
impl ContextHost for AccountHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.logs.transfer_log(&self.account, key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        Ok(self.tracker(key))
    }

    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        let message = wire::rpc_request(method, args);
        let reply = self
            .client
            .send_message(&self.account, message)
            .await
            .map_err(|e| ModuleError::Rpc(e.to_string()))?;
        wire::parse_rpc_reply(&reply)
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        _account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        // This host serves exactly one account: that account holds.
        self.identities
            .hold_identity(identity, &self.account, origin)
            .await
    }
}
