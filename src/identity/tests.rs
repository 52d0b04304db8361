use super::*;

const PROVEN: IdentityOrigin = IdentityOrigin::Proven;
const CONFIGURED: IdentityOrigin = IdentityOrigin::Configured;

fn refused_naming(result: &Result<(), ModuleError>, names: &[&str]) -> bool {
    matches!(result, Err(ModuleError::NotAccepted(m)) if names.iter().all(|n| m.contains(n)))
}

#[tokio::test]
async fn the_first_account_keeps_an_identity_and_a_second_prover_contests_it_durably(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let registry = IdentityRegistry::on_db(Arc::clone(&db));
    registry
        .hold_identity("eth:1:0xabc", "alice", PROVEN)
        .await?;
    // Idempotent for the holder.
    registry
        .hold_identity("eth:1:0xabc", "alice", PROVEN)
        .await?;
    // Other identities are independent, and a prefix of a held identity is a different identity.
    registry.hold_identity("eth:1:0xab", "bob", PROVEN).await?;
    registry.hold_identity("xrp:ABC", "bob", PROVEN).await?;
    // A second account proving the same identity: contested, and from then on BOTH are refused.
    let refused = registry.hold_identity("eth:1:0xabc", "bob", PROVEN).await;
    assert!(
        refused_naming(&refused, &["eth:1:0xabc", "alice", "bob", "peerAddress"]),
        "{refused:?}"
    );
    let alice = registry.hold_identity("eth:1:0xabc", "alice", PROVEN).await;
    assert!(
        refused_naming(&alice, &["contested", "alice", "bob"]),
        "{alice:?}"
    );
    // The database is the registry: another registry on it (a restarted node) still sees the contest.
    let restarted = IdentityRegistry::on_db(Arc::clone(&db));
    assert!(restarted
        .hold_identity("eth:1:0xabc", "alice", PROVEN)
        .await
        .is_err());
    assert_eq!(
        restarted.record("eth:1:0xabc")?,
        Some(IdentityRecord::Contested {
            accounts: vec!["alice".to_owned(), "bob".to_owned()]
        })
    );
    // The operator configures the rightful account: it takes the identity, the other stays refused.
    restarted
        .hold_identity("eth:1:0xabc", "alice", CONFIGURED)
        .await?;
    restarted
        .hold_identity("eth:1:0xabc", "alice", PROVEN)
        .await?;
    assert!(restarted
        .hold_identity("eth:1:0xabc", "bob", PROVEN)
        .await
        .is_err());
    // A configured hold against another configured holder is refused.
    assert!(restarted
        .hold_identity("eth:1:0xabc", "bob", CONFIGURED)
        .await
        .is_err());
    // A configured hold takes an uncontested proven hold over.
    registry
        .hold_identity("xrp:ABC", "carol", CONFIGURED)
        .await?;
    assert!(registry
        .hold_identity("xrp:ABC", "bob", PROVEN)
        .await
        .is_err());
    Ok(())
}

/// The records are keyed `se/pin/<identity>` in the database's default column family, their values the JSON
/// of [`IdentityRecord::to_json`], byte for byte: databases written before the registry had its own module
/// read the same.
#[tokio::test]
async fn records_are_stored_under_se_pin_as_json() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let registry = IdentityRegistry::on_db(Arc::clone(&db));
    registry.hold_identity("xrp:ABC", "alice", PROVEN).await?;
    assert_eq!(
        db.get(b"se/pin/xrp:ABC")?.as_deref(),
        Some(&br#"{"account":"alice","origin":"proven"}"#[..])
    );
    assert!(registry
        .hold_identity("xrp:ABC", "bob", PROVEN)
        .await
        .is_err());
    assert_eq!(
        db.get(b"se/pin/xrp:ABC")?.as_deref(),
        Some(&br#"{"contested":["alice","bob"]}"#[..])
    );
    registry.assign("xrp:ABC", "bob").await?;
    assert_eq!(
        db.get(b"se/pin/xrp:ABC")?.as_deref(),
        Some(&br#"{"account":"bob","origin":"configured"}"#[..])
    );
    assert_eq!(
        registry.records()?,
        vec![(
            "xrp:ABC".to_owned(),
            IdentityRecord::Held {
                account: "bob".to_owned(),
                origin: CONFIGURED
            }
        )]
    );
    Ok(())
}

#[tokio::test]
async fn a_bare_string_record_is_a_proven_hold() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(b"se/pin/xrp:OLD", br#""alice""#);
    db.write(batch).await?;
    let registry = IdentityRegistry::on_db(db);
    registry.hold_identity("xrp:OLD", "alice", PROVEN).await?;
    assert!(registry
        .hold_identity("xrp:OLD", "bob", PROVEN)
        .await
        .is_err());
    assert!(registry
        .hold_identity("xrp:OLD", "alice", PROVEN)
        .await
        .is_err());
    Ok(())
}

#[tokio::test]
async fn an_unreadable_record_is_a_corrupt_store() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(b"se/pin/xrp:BAD", b"7");
    db.write(batch).await?;
    let registry = IdentityRegistry::on_db(db);
    let err = registry.hold_identity("xrp:BAD", "alice", PROVEN).await;
    assert!(
        matches!(&err, Err(ModuleError::Store(StoreError::Corrupt { key, .. })) if key == "se/pin/xrp:BAD"),
        "{err:?}"
    );
    assert!(registry.records().is_err());
    Ok(())
}

#[tokio::test]
async fn a_failed_write_holds_nothing() -> Result<(), ModuleError> {
    let registry = IdentityRegistry::memory();
    registry.fail_next_writes(1);
    assert!(registry
        .hold_identity("xrp:ABC", "alice", PROVEN)
        .await
        .is_err());
    registry.hold_identity("xrp:ABC", "bob", PROVEN).await?;
    registry.hold_identity("xrp:ABC", "bob", PROVEN).await?;
    Ok(())
}

#[tokio::test]
async fn release_deletes_the_holds_of_gone_accounts_and_leaves_their_contests(
) -> Result<(), ModuleError> {
    let registry = IdentityRegistry::memory();
    registry.hold_identity("a", "gone", PROVEN).await?;
    registry.hold_identity("b", "kept", PROVEN).await?;
    assert!(registry.hold_identity("b", "gone", PROVEN).await.is_err());
    registry.hold_identity("c", "gone", CONFIGURED).await?;
    registry.hold_identity("d", "kept", PROVEN).await?;
    let released = registry.release(|account| account == "gone").await?;
    let changed: Vec<(&str, Option<&IdentityRecord>)> = released
        .iter()
        .map(|r| (r.identity.as_str(), r.now.as_ref()))
        .collect();
    let kept = IdentityRecord::Held {
        account: "kept".to_owned(),
        origin: PROVEN,
    };
    assert_eq!(changed, [("a", None), ("b", Some(&kept)), ("c", None)]);
    assert_eq!(registry.record("a")?, None);
    assert_eq!(registry.record("b")?, Some(kept));
    assert!(registry
        .release(|account| account == "gone")
        .await?
        .is_empty());
    Ok(())
}
