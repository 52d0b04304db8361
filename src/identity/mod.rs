//! The node's ledger-identity registry: which account holds each ledger identity (an Ethereum address, an XRP
//! channel), or which accounts contest it, so that two accounts are never both credited for the same on-chain
//! payments or channel claims.
//!
//! The rules and the record types are the channel modules' ([`channel_modules::identity`]: modules need them
//! to hold identities through [`ContextHost::hold_identity`]); this module keeps the records. One
//! [`IdentityRegistry`] serves both host modes of a node: the settlement engine's accounts (its `AccountHost`)
//! and peer mode's trustlines (through `crate::peer::NodeIdentities`, which names them `peer:<name>`), so an
//! identity held on one side is contested or refused on the other as between two accounts of one side. It
//! sits below both and imports neither. Its records live in the node's database ([`crate::store::Db`], keys
//! [`IDENTITY_KEY_PREFIX`]`<identity>`), or in memory for tests and for trustlines built outside a node.
//!
//! [`ContextHost::hold_identity`]: channel_modules::ContextHost::hold_identity

mod records;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use channel_modules::identity::{
    decide_identity_hold, IdentityDecision, IdentityOrigin, IdentityRecord,
};
use channel_modules::store::StoreError;
use channel_modules::ModuleError;

use crate::store::Db;
use records::{RecordWrite, Records};

/// Prefix of the ledger identity records: `se/pin/<identity>` → the [`IdentityRecord`] as JSON
/// ([`IdentityRecord::to_json`]). A record that is a bare JSON string (the holding account) is a proven hold:
/// databases of schema version 1 (`meta/format`, see [`crate::store::schema`]) may hold both forms. The `se/`
/// prefix is the settlement engine's key space, where the registry's records were first kept; peer mode's
/// records are kept there too, so a node keeps one registry.
pub const IDENTITY_KEY_PREFIX: &str = "se/pin/";

/// The key of `identity`'s record.
fn identity_key(identity: &str) -> String {
    format!("{IDENTITY_KEY_PREFIX}{identity}")
}

/// Orders the decisions of every registry in the process (read, then write if needed): the engine's and peer
/// mode's registries on one database are distinct values, and two accounts must never both come to hold one
/// identity through them.
static IDENTITY_HOLDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node's ledger-identity registry (see the module documentation). Cheap to share behind an [`Arc`]; every
/// registry on one database reads and writes the same records.
pub struct IdentityRegistry {
    records: Records,
}

impl std::fmt::Debug for IdentityRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityRegistry")
            .field("records", &self.records)
            .finish()
    }
}

/// One record [`IdentityRegistry::release`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityRelease {
    /// The identity.
    pub identity: String,
    /// Its record before.
    pub previous: IdentityRecord,
    /// Its record now; `None`: deleted (nobody holds or contests it any more).
    pub now: Option<IdentityRecord>,
}

impl IdentityRegistry {
    /// The durable registry in the node's database `db`.
    pub fn on_db(db: Arc<Db>) -> Arc<Self> {
        Arc::new(IdentityRegistry {
            records: Records::Db(db),
        })
    }

    /// A registry in memory (not durable), empty.
    pub fn memory() -> Arc<Self> {
        Arc::new(IdentityRegistry {
            records: Records::memory(),
        })
    }

    /// Failure injection of a [`IdentityRegistry::memory`] registry: its next `n` writes fail with
    /// [`StoreError::Io`] and change nothing (a registry on a database: see `Db::inject_write_failures`).
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_next_writes(&self, n: u64) {
        self.records.fail_next_writes(n);
    }

    /// The stored record of `identity`, if any.
    pub fn record(&self, identity: &str) -> Result<Option<IdentityRecord>, StoreError> {
        let key = identity_key(identity);
        let Some(bytes) = self.records.get(&key)? else {
            return Ok(None);
        };
        decode_record(&key, &bytes).map(Some)
    }

    /// Every ledger identity record, by identity, in key order.
    pub fn records(&self) -> Result<Vec<(String, IdentityRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.records.scan(IDENTITY_KEY_PREFIX)? {
            if let Some(identity) = key.strip_prefix(IDENTITY_KEY_PREFIX) {
                out.push((identity.to_owned(), decode_record(&key, &bytes)?));
            }
        }
        Ok(out)
    }

    /// Has `account` hold `identity` with `origin` (see
    /// [`ContextHost::hold_identity`](channel_modules::ContextHost::hold_identity) and [`decide_identity_hold`]):
    /// one read when nothing changes, a durable write when the record does. New holds are logged at info,
    /// takeovers, contests and refusals at warn, naming every account involved.
    pub async fn hold_identity(
        &self,
        identity: &str,
        account: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        let _ordered = IDENTITY_HOLDS.lock().await;
        let existing = self.record(identity)?;
        let decision = decide_identity_hold(identity, existing.as_ref(), account, origin);
        if let Some(record) = &decision.write {
            self.records
                .write(vec![RecordWrite::put(identity_key(identity), record)?])
                .await?;
        }
        log_hold_decision(identity, account, origin, existing.as_ref(), &decision);
        decision.outcome
    }

    /// Gives `identity` to `account` as a configured hold, whatever the record said before: the operator's
    /// decision (e.g. settling a contest). From then on only `account` is credited on its behalf; every other
    /// account is refused at its next credit.
    pub async fn assign(&self, identity: &str, account: &str) -> Result<(), StoreError> {
        let _ordered = IDENTITY_HOLDS.lock().await;
        let previous = self.record(identity)?;
        let record = IdentityRecord::Held {
            account: account.to_owned(),
            origin: IdentityOrigin::Configured,
        };
        self.records
            .write(vec![RecordWrite::put(identity_key(identity), &record)?])
            .await?;
        tracing::warn!(
            %identity, %account, previous = %previous.as_ref().map(IdentityRecord::to_json).unwrap_or_default(),
            "ledger identity assigned by the operator"
        );
        Ok(())
    }

    /// Lets go of what the accounts for which `gone` is true held: their holds (proven or configured) are
    /// deleted, and they leave the contests they were in (a contest left with one account becomes a proven hold
    /// of that account; with none, it is deleted). Every change is written in one durable batch and returned.
    pub async fn release(
        &self,
        gone: impl Fn(&str) -> bool,
    ) -> Result<Vec<IdentityRelease>, StoreError> {
        let _ordered = IDENTITY_HOLDS.lock().await;
        let mut writes = Vec::new();
        let mut released = Vec::new();
        for (identity, record) in self.records()? {
            let now = match &record {
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
            let key = identity_key(&identity);
            writes.push(match &now {
                Some(now) => RecordWrite::put(key, now)?,
                None => RecordWrite::Delete(key),
            });
            released.push(IdentityRelease {
                identity,
                previous: record,
                now,
            });
        }
        if !writes.is_empty() {
            self.records.write(writes).await?;
        }
        Ok(released)
    }
}

/// Reads a stored record: JSON in one of [`IdentityRecord::from_json`]'s forms.
fn decode_record(key: &str, bytes: &[u8]) -> Result<IdentityRecord, StoreError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    IdentityRecord::from_json(&value).ok_or_else(|| StoreError::Corrupt {
        key: key.to_owned(),
        reason: "unreadable ledger identity record".to_owned(),
    })
}

/// Logs what the registry did with a request to hold an identity: a new hold at info, a takeover or a refusal
/// at warn (naming the identity and every account involved). The messages say "claim" as they always have:
/// operators' log filters match them.
fn log_hold_decision(
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
