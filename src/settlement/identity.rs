//! The node's ledger-identity registry in the engine's store: which account holds each ledger identity (an
//! Ethereum address, an XRP channel), or which accounts contest it.
//!
//! Each identity is one record `se/pin/<identity>` holding an [`IdentityRecord`] (the holder and how it got it,
//! or the accounts contesting it), decided by [`decide_identity_hold`]; written through the [`SeStore`],
//! never removed. Engine accounts reach it through their host ([`ContextHost::hold_identity`]); trustline
//! peers of the same database through `crate::peer::host::NodeIdentities`. A process-wide lock orders the
//! decisions, so two accounts never both hold one identity.
//!
//! [`ContextHost::hold_identity`]: channel_modules::ContextHost::hold_identity

use channel_modules::identity::{
    decide_identity_hold, IdentityDecision, IdentityOrigin, IdentityRecord,
};
use channel_modules::store::StoreError;
use channel_modules::ModuleError;

use super::store::{Family, SeBatch, SeStore};

/// Prefix of the ledger identity records: `se/pin/<identity>` → the [`IdentityRecord`] as JSON. A record that is
/// a bare JSON string (the holding account) is a proven hold: databases of store format 1 (`meta/format`, see
/// `crate::store::codec`) hold both forms. A node that runs a settlement engine and trustline peers on one
/// database keeps one registry for both: peer mode writes its records here too, its accounts named
/// `peer:<name>` (engine account IDs never hold a `:`), so an identity held on one side is contested or refused
/// on the other like between two accounts of one side.
pub const IDENTITY_PIN_PREFIX: &str = "se/pin/";

/// Orders identity claims (read, then write if needed) across every account of every engine in the process,
/// and every trustline (peer mode's registry, `crate::peer::host::NodeIdentities`, takes it too).
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

/// Has `account` hold `identity` in `store` with `origin` (see
/// [`ContextHost::hold_identity`](channel_modules::ContextHost::hold_identity) and
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::settlement::store::MemorySeStore;
    use crate::store::Db;

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
        use crate::settlement::store::RocksSeStore;

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
        use crate::settlement::store::RocksSeStore;

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
    async fn a_bare_string_record_is_a_proven_hold() -> Result<(), ModuleError> {
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
