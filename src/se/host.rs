//! The engine-mode [`ContextHost`]: what a channel module reaches when it runs behind an RFC 38 account.
//!
//! * Max-value trackers are engine records (`se/m/<acct>/<key>`, one namespace per account), kept in memory and
//!   written through the engine's [`SeStore`].
//! * Transfer logs come from a [`ModuleLogs`] provider (RocksDB namespace `se/<acct>` in production, memory in
//!   tests). Modules rarely need them in engine mode: `handle_incoming_prepare` is never called there.
//! * RPCs are settlement messages `{"type":"rpc","method","args"}` sent through the connector to the peer engine.
//! * The clock is the system clock.
//! * Ledger identities ([`ContextHost::hold_identity`]) are engine-wide records `se/pin/<identity>` holding an
//!   [`IdentityRecord`] (the holder and how it claimed, or the accounts contesting it), with the rules of
//!   [`decide_identity_hold`]; written through the [`SeStore`] like trackers, never removed. A process-wide
//!   lock orders claims so two accounts never both win one identity.
//!
//! [`StagingHost`] wraps an account's host while the engine runs `handle_incoming_claim`: tracker writes are
//! held back and committed in the *same* batch as the resulting credit record, so a crash can never leave a
//! claim recorded as "best" without the credit it is worth (which a replay of the claim could not recover).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use channel_modules::identity::{
    decide_identity_hold, IdentityDecision, IdentityOrigin, IdentityRecord,
};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Limit, MaxValue, MaxValueTracker, StoreError, TransferLog};
use channel_modules::sync::lock;
use channel_modules::{ContextHost, ModuleError};

use super::client::ConnectorClient;
use super::store::{keys, Family, SeBatch, SeStore};
use super::wire;
use crate::store::{Db, RocksStores};

/// Prefix of the ledger identity records: `se/pin/<identity>` → the [`IdentityRecord`] as JSON (a bare JSON
/// string, the holding account, in records of earlier versions: a proven hold). A node that runs a settlement
/// engine and trustline peers on one database keeps one registry for both: trustline mode writes its records
/// here too, its accounts named `peer:<name>` (engine account IDs never hold a `:`), so an identity held on one
/// side is contested or refused on the other like between two accounts of one side.
pub const IDENTITY_PIN_PREFIX: &str = "se/pin/";

/// Orders identity claims (read, then write if needed) across every account of every engine in the process,
/// and every trustline (trustline mode's registry, `crate::peer::host::NodeIdentities`, takes it too).
pub(crate) static IDENTITY_CLAIMS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The stored record of `identity` in `store`, if any.
pub fn identity_record_in(
    store: &dyn SeStore,
    identity: &str,
) -> Result<Option<IdentityRecord>, ModuleError> {
    let key = format!("{IDENTITY_PIN_PREFIX}{identity}");
    let Some(bytes) = store.get_main(&key)? else {
        return Ok(None);
    };
    decode_identity_record(&key, &bytes).map(Some)
}

fn decode_identity_record(key: &str, bytes: &[u8]) -> Result<IdentityRecord, ModuleError> {
    let value: serde_json::Value = super::store::decode(key, bytes)?;
    IdentityRecord::from_json(&value).ok_or_else(|| {
        ModuleError::Store(StoreError::Corrupt {
            key: key.to_owned(),
            reason: "unreadable ledger identity record".to_owned(),
        })
    })
}

/// Claims `identity` for `account` in `store` with `origin` (see [`ContextHost::hold_identity`] and
/// [`decide_identity_hold`]): one read when nothing changes, a durable write when the record does.
pub async fn claim_identity_in(
    store: &dyn SeStore,
    identity: &str,
    account: &str,
    origin: IdentityOrigin,
) -> Result<(), ModuleError> {
    let _ordered = IDENTITY_CLAIMS.lock().await;
    let existing = identity_record_in(store, identity)?;
    let decision = decide_identity_hold(identity, existing.as_ref(), account, origin);
    if let Some(record) = &decision.write {
        let mut batch = SeBatch::new();
        batch.put_json(
            Family::Main,
            format!("{IDENTITY_PIN_PREFIX}{identity}"),
            &record.to_json(),
        )?;
        store.submit(batch)?.await?;
    }
    log_identity_decision(identity, account, origin, existing.as_ref(), &decision);
    decision.outcome
}

/// Every ledger identity record in `store`, by identity.
pub fn identity_records_in(
    store: &dyn SeStore,
) -> Result<Vec<(String, IdentityRecord)>, ModuleError> {
    let mut out = Vec::new();
    for (key, bytes) in store.scan_prefix(Family::Main, IDENTITY_PIN_PREFIX)? {
        if let Some(identity) = key.strip_prefix(IDENTITY_PIN_PREFIX) {
            out.push((identity.to_owned(), decode_identity_record(&key, &bytes)?));
        }
    }
    Ok(out)
}

/// Gives `identity` to `account` as a configured hold, whatever the record said before: the operator's
/// decision (e.g. settling a contest). From then on only `account` is credited on its behalf; every other
/// account's claim is refused at its next credit.
pub async fn assign_identity_in(
    store: &dyn SeStore,
    identity: &str,
    account: &str,
) -> Result<(), ModuleError> {
    let _ordered = IDENTITY_CLAIMS.lock().await;
    let previous = identity_record_in(store, identity)?;
    let record = IdentityRecord::Held {
        account: account.to_owned(),
        origin: IdentityOrigin::Configured,
    };
    let mut batch = SeBatch::new();
    batch.put_json(
        Family::Main,
        format!("{IDENTITY_PIN_PREFIX}{identity}"),
        &record.to_json(),
    )?;
    store.submit(batch)?.await?;
    tracing::warn!(
        %identity, %account, previous = %previous.as_ref().map(IdentityRecord::to_json).unwrap_or_default(),
        "ledger identity assigned by the operator"
    );
    Ok(())
}

/// Logs what a registry did with a claim: a new hold or a takeover at info, a contest or a refusal at warn
/// (naming the identity and every account involved).
fn log_identity_decision(
    identity: &str,
    account: &str,
    origin: IdentityOrigin,
    existing: Option<&IdentityRecord>,
    decision: &IdentityDecision,
) {
    let origin = origin.as_str();
    match (&decision.outcome, &decision.write, existing) {
        (Ok(()), None, _) => {}
        (Ok(()), Some(_), None) => {
            tracing::info!(%identity, %account, origin, "ledger identity claimed");
        }
        (Ok(()), Some(_), Some(previous)) => tracing::warn!(
            %identity, %account, origin, previous = %previous.to_json(),
            "ledger identity taken over by a configured account"
        ),
        (Err(err), _, previous) => tracing::warn!(
            %identity, %account, origin, holder = %previous.map(IdentityRecord::to_json).unwrap_or_default(), %err,
            "ledger identity claim refused; configure peerAddress / peerChannel on the rightful account"
        ),
    }
}

/// Hands out the transfer logs of engine accounts.
pub trait ModuleLogs: Send + Sync + 'static {
    /// The transfer log `key` (`""` = main log) of `account`. Engine-mode logs have no limits.
    fn transfer_log(&self, account: &str, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;
}

/// Transfer logs in memory (tests).
#[derive(Default)]
pub struct MemoryModuleLogs {
    stores: Mutex<HashMap<String, MemoryStores>>,
}

impl MemoryModuleLogs {
    /// No logs yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ModuleLogs for MemoryModuleLogs {
    fn transfer_log(&self, account: &str, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        let stores = lock(&self.stores)
            .entry(account.to_owned())
            .or_insert_with(MemoryStores::unbounded)
            .clone();
        stores.transfer_log(key)
    }
}

/// Transfer logs in the node's database, namespace `se/<account>`.
pub struct RocksModuleLogs {
    db: Arc<Db>,
}

impl RocksModuleLogs {
    /// Logs on `db`.
    pub fn new(db: Arc<Db>) -> Self {
        RocksModuleLogs { db }
    }
}

impl ModuleLogs for RocksModuleLogs {
    fn transfer_log(&self, account: &str, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        RocksStores::new(
            Arc::clone(&self.db),
            &format!("se/{account}"),
            Limit::Unbounded,
            Limit::Unbounded,
        )
        .transfer_log(key)
    }
}

/// A max-value tracker stored as an engine record.
pub struct SeTracker {
    key: String,
    store: Arc<dyn SeStore>,
    value: tokio::sync::Mutex<MaxValue>,
}

impl SeTracker {
    fn new(key: String, store: Arc<dyn SeStore>, value: MaxValue) -> Self {
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

/// The [`ContextHost`] of one engine account.
pub struct AccountHost {
    account: String,
    store: Arc<dyn SeStore>,
    logs: Arc<dyn ModuleLogs>,
    client: ConnectorClient,
    trackers: Mutex<HashMap<String, Arc<SeTracker>>>,
}

impl AccountHost {
    /// A host for `account`, with the trackers loaded at start-up (`key → value`).
    pub fn new(
        account: &str,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
        client: ConnectorClient,
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
        SystemTime::now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        _account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        // This host serves exactly one account: that account claims.
        claim_identity_in(self.store.as_ref(), identity, &self.account, origin).await
    }
}

/// Tracker writes staged during `handle_incoming_claim` (see the module doc).
pub struct StagingHost {
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
    pub fn new(base: Arc<AccountHost>) -> Self {
        StagingHost {
            base,
            staged: Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes the staged tracker values together with `batch`, atomically, and publishes them. Fails (and
    /// writes nothing) if a tracker moved since it was read (another writer raced the staged hook).
    pub async fn commit(&self, mut batch: SeBatch, store: &dyn SeStore) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::se::store::MemorySeStore;

    const PROVEN: IdentityOrigin = IdentityOrigin::Proven;
    const CONFIGURED: IdentityOrigin = IdentityOrigin::Configured;

    fn refused_naming(result: &Result<(), ModuleError>, names: &[&str]) -> bool {
        matches!(result, Err(ModuleError::NotAccepted(m)) if names.iter().all(|n| m.contains(n)))
    }

    /// A node running a settlement engine and trustline peers on one database keeps one registry: an identity
    /// an engine account holds cannot also be held by a trustline, and the other way round.
    #[tokio::test]
    async fn engine_accounts_and_trustlines_of_one_database_share_the_registry(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::peer::host::NodeIdentities;
        use crate::se::store::RocksSeStore;

        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let engine = RocksSeStore::new(Arc::clone(&db));
        let trustlines = NodeIdentities::rocks(Arc::clone(&db));

        claim_identity_in(&engine, "eth:1:0xabc", "acct", PROVEN).await?;
        let refused = trustlines.claim("eth:1:0xabc", "alice", PROVEN).await;
        assert!(
            refused_naming(&refused, &["contested", "acct", "peer:alice"]),
            "{refused:?}"
        );
        assert!(claim_identity_in(&engine, "eth:1:0xabc", "acct", PROVEN)
            .await
            .is_err());

        trustlines.claim("xrp:ABC", "bob", CONFIGURED).await?;
        let refused = claim_identity_in(&engine, "xrp:ABC", "acct", PROVEN).await;
        assert!(refused_naming(&refused, &["peer:bob"]), "{refused:?}");
        // Both sides read the same records.
        let listed = identity_records_in(&engine)?;
        assert_eq!(listed.len(), 2, "{listed:?}");
        Ok(())
    }

    /// A trustline peer renamed or removed in the configuration lets go of what it held, so the renamed peer
    /// is not refused its own identity for good; engine accounts and configured peers keep theirs.
    #[tokio::test]
    async fn identities_of_peers_no_longer_configured_are_released(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::peer::host::NodeIdentities;
        use crate::se::store::RocksSeStore;

        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let engine = RocksSeStore::new(Arc::clone(&db));
        let node = NodeIdentities::rocks(Arc::clone(&db));
        node.claim("eth:1:0xa", "alice", CONFIGURED).await?;
        node.claim("eth:1:0xb", "bob", PROVEN).await?;
        node.claim("xrp:C", "bob", PROVEN).await?;
        assert!(node.claim("xrp:C", "carol", PROVEN).await.is_err());
        claim_identity_in(&engine, "xrp:D", "acct", PROVEN).await?;
        assert!(node.claim("xrp:D", "dave", PROVEN).await.is_err());

        // alice is renamed alice-eth; bob is kept; carol and dave are gone.
        let configured = ["alice-eth".to_owned(), "bob".to_owned()];
        assert_eq!(node.release_unconfigured(&configured).await?, 3);
        node.claim("eth:1:0xa", "alice-eth", CONFIGURED).await?;
        node.claim("eth:1:0xb", "bob", PROVEN).await?;
        // bob is left alone in the contest over xrp:C: it holds it again.
        node.claim("xrp:C", "bob", PROVEN).await?;
        // The engine account's hold stands.
        claim_identity_in(&engine, "xrp:D", "acct", PROVEN).await?;
        assert!(node.claim("xrp:D", "bob", PROVEN).await.is_err());
        // Nothing left to release (bob is configured, so its contest stands).
        assert_eq!(node.release_unconfigured(&configured).await?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn the_first_account_keeps_an_identity_and_a_second_prover_contests_it_durably(
    ) -> Result<(), ModuleError> {
        let store = MemorySeStore::new();
        claim_identity_in(&store, "eth:1:0xabc", "alice", PROVEN).await?;
        // Idempotent for the holder.
        claim_identity_in(&store, "eth:1:0xabc", "alice", PROVEN).await?;
        // Other identities are independent, and a prefix of a held identity is a different identity.
        claim_identity_in(&store, "eth:1:0xab", "bob", PROVEN).await?;
        claim_identity_in(&store, "xrp:ABC", "bob", PROVEN).await?;
        // A second account proving the same identity: contested, and from then on BOTH are refused.
        let refused = claim_identity_in(&store, "eth:1:0xabc", "bob", PROVEN).await;
        assert!(
            refused_naming(&refused, &["eth:1:0xabc", "alice", "bob", "peerAddress"]),
            "{refused:?}"
        );
        let alice = claim_identity_in(&store, "eth:1:0xabc", "alice", PROVEN).await;
        assert!(
            refused_naming(&alice, &["contested", "alice", "bob"]),
            "{alice:?}"
        );
        // The store is the registry: a restarted engine (same store) still sees the contest.
        let restarted = store.clone();
        assert!(
            claim_identity_in(&restarted, "eth:1:0xabc", "alice", PROVEN)
                .await
                .is_err()
        );
        assert_eq!(
            identity_record_in(&restarted, "eth:1:0xabc")?,
            Some(IdentityRecord::Contested {
                accounts: vec!["alice".to_owned(), "bob".to_owned()]
            })
        );
        // The operator configures the rightful account: it takes the identity, the other stays refused.
        claim_identity_in(&restarted, "eth:1:0xabc", "alice", CONFIGURED).await?;
        claim_identity_in(&restarted, "eth:1:0xabc", "alice", PROVEN).await?;
        assert!(claim_identity_in(&restarted, "eth:1:0xabc", "bob", PROVEN)
            .await
            .is_err());
        // A configured claim against another configured holder is refused.
        assert!(
            claim_identity_in(&restarted, "eth:1:0xabc", "bob", CONFIGURED)
                .await
                .is_err()
        );
        // A configured claim takes an uncontested proven hold over.
        claim_identity_in(&store, "xrp:ABC", "carol", CONFIGURED).await?;
        assert!(claim_identity_in(&store, "xrp:ABC", "bob", PROVEN)
            .await
            .is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_record_of_an_earlier_version_is_a_proven_hold() -> Result<(), ModuleError> {
        let store = MemorySeStore::new();
        let mut batch = SeBatch::new();
        batch.put_json(
            Family::Main,
            format!("{IDENTITY_PIN_PREFIX}xrp:OLD"),
            &"alice",
        )?;
        store.submit(batch)?.await?;
        claim_identity_in(&store, "xrp:OLD", "alice", PROVEN).await?;
        assert!(claim_identity_in(&store, "xrp:OLD", "bob", PROVEN)
            .await
            .is_err());
        assert!(claim_identity_in(&store, "xrp:OLD", "alice", PROVEN)
            .await
            .is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_write_claims_nothing() -> Result<(), ModuleError> {
        let store = MemorySeStore::new();
        store.fail_next_writes(1);
        assert!(claim_identity_in(&store, "xrp:ABC", "alice", PROVEN)
            .await
            .is_err());
        claim_identity_in(&store, "xrp:ABC", "bob", PROVEN).await?;
        claim_identity_in(&store, "xrp:ABC", "bob", PROVEN).await?;
        Ok(())
    }
}
