//! The [`ContextHost`] of peer mode (a channel module inside a BTP/1.0 trustline), and [`PeerStores`]: where a
//! trustline's durable records live.
//!
//! A trustline's module sees its peer only through the [`ChannelContext`](channel_modules::ChannelContext):
//! the main log `""` is the trustline's own log, other keys are namespaced per peer, and `rpc` goes to the
//! trustline's `ModuleRpc` (a BTP Message whose one entry is named after the method, legacy `CustomRpc.call`).
//! Ledger identities ([`ContextHost::hold_identity`]) go to the node's [`NodeIdentities`], shared by all its
//! trustlines and kept in the node's database (`se/pin/<identity>`, one registry with the node's settlement
//! engine, if it runs one).

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::identity::{IdentityOrigin, IdentityRecord};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{MaxValueTracker, StoreError, TransferLog};
use channel_modules::{ContextHost, ModuleError};

use crate::settlement::identity::{
    claim_identity_in, identity_record_in, identity_records_in, IDENTITY_CLAIMS,
};
use crate::settlement::store::{Family, MemorySeStore, RocksSeStore, SeBatch, SeStore};
use crate::store::Db;

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
        self.identities.claim(identity, account_id, origin).await
    }
}

/// Prefix of peer mode's ledger identity records in the node's database: the settlement engine's
/// ([`crate::settlement::identity::IDENTITY_PIN_PREFIX`], `se/pin/<identity>`), so that a node running both keeps one
/// registry. Trustline accounts are recorded as `peer:<name>` ([`registry_account`]).
pub const NODE_IDENTITY_PREFIX: &str = crate::settlement::identity::IDENTITY_PIN_PREFIX;

/// How a trustline's peer name is recorded in the registry: `peer:<name>`, never equal to an engine account ID
/// (those never hold a `:`).
pub fn registry_account(peer: &str) -> String {
    format!("peer:{peer}")
}

/// The node-wide registry of ledger identities in peer mode ([`ContextHost::hold_identity`]): every
/// trustline of one [`PeerNode`](super::PeerNode) shares it (through [`TrustlineOptions`](super::trustline::TrustlineOptions)),
/// so two peers can never both be credited for the same on-chain payments or channel claims. It is the settlement
/// engine's registry ([`crate::settlement::identity::claim_identity_in`] and its rules, records [`NODE_IDENTITY_PREFIX`])
/// over the node's database, with trustline accounts named [`registry_account`].
pub struct NodeIdentities {
    store: Arc<dyn SeStore>,
}

impl std::fmt::Debug for NodeIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentities").finish_non_exhaustive()
    }
}

impl NodeIdentities {
    /// A registry in memory (not durable: tests, and trustlines built outside a [`PeerNode`](super::PeerNode)).
    pub fn memory() -> Arc<Self> {
        Arc::new(NodeIdentities {
            store: Arc::new(MemorySeStore::new()),
        })
    }

    /// A durable registry in `db` (production: every trustline of a node shares one [`Db`]).
    pub fn rocks(db: Arc<Db>) -> Arc<Self> {
        Arc::new(NodeIdentities {
            store: Arc::new(RocksSeStore::new(db)),
        })
    }

    /// The stored record of `identity`, if any.
    pub fn record(&self, identity: &str) -> Result<Option<IdentityRecord>, ModuleError> {
        identity_record_in(self.store.as_ref(), identity)
    }

    /// Lets go of what trustline peers that are no longer configured held, once the node knows its whole
    /// configuration (`peers`: the names of every configured peer): a renamed or removed peer's hold (proven or
    /// configured) is deleted, and it leaves the contests it was in (a contest left with one account becomes a
    /// proven hold of that account, none: deleted). Otherwise a peer renamed in the configuration would be
    /// refused its own identity for good. Engine accounts' records are not touched. Returns how many records
    /// changed; each change is logged at warn.
    pub async fn release_unconfigured(&self, peers: &[String]) -> Result<usize, ModuleError> {
        let configured: std::collections::HashSet<String> =
            peers.iter().map(|p| registry_account(p)).collect();
        let gone = |account: &str| account.starts_with("peer:") && !configured.contains(account);
        let _ordered = IDENTITY_CLAIMS.lock().await;
        let mut batch = SeBatch::new();
        let mut changed = 0;
        for (identity, record) in identity_records_in(self.store.as_ref())? {
            let next = match &record {
                IdentityRecord::Held { account, .. } if gone(account) => None,
                IdentityRecord::Contested { accounts } if accounts.iter().any(|a| gone(a)) => {
                    let kept: Vec<String> = accounts.iter().filter(|a| !gone(a)).cloned().collect();
                    match kept.as_slice() {
                        [] => None,
                        [only] => Some(IdentityRecord::Held {
                            account: only.clone(),
                            origin: IdentityOrigin::Proven,
                        }),
                        _ => Some(IdentityRecord::Contested { accounts: kept }),
                    }
                }
                _ => continue,
            };
            let key = format!("{NODE_IDENTITY_PREFIX}{identity}");
            match &next {
                Some(next) => batch.put_json(Family::Main, key, &next.to_json())?,
                None => batch.delete(Family::Main, key),
            }
            tracing::warn!(
                %identity, previous = %record.to_json(), now = %next.as_ref().map(IdentityRecord::to_json).unwrap_or_default(),
                "ledger identity released by a peer that is no longer configured"
            );
            changed += 1;
        }
        if changed > 0 {
            self.store.submit(batch)?.await?;
        }
        Ok(changed)
    }

    /// Claims `identity` for `account` with `origin` ([`decide_identity_claim`]): one read when nothing
    /// changes, a durable write when the record does; refusals are logged at warn, naming every account.
    pub async fn claim(
        &self,
        identity: &str,
        account: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        claim_identity_in(
            self.store.as_ref(),
            identity,
            &registry_account(account),
            origin,
        )
        .await
    }
}
