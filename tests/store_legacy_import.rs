//! Legacy store import, tested with rows exactly as the legacy plugin 1.3.5 wrote them
//! (`tests/fixtures/legacy_store_1.3.5.json`, captured by `tests/fixtures/legacy_store_gen.js` from a real
//! server/client run: fulfilled both ways, expired, rejected, with `custom`, left prepared, a module-keyed log,
//! stored limit overrides and max-value trackers).

use std::sync::Arc;

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{
    Direction, Limit, MaxValue, PrepareOutcome, Transfer, TransferId, TransferState,
};
use ilp_bridge::store::legacy_import::{
    import_legacy_rows, rows_from_csv, rows_from_json_object, ImportError, ImportWarning,
    STALE_REASON,
};
use ilp_bridge::store::{Db, RocksStores};
use num_bigint::BigUint;

const FIXTURE: &str = include_str!("fixtures/legacy_store_1.3.5.json");

fn side(name: &str) -> (Vec<(String, String)>, String) {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
    let rows = rows_from_json_object(&v[name]["rows"].to_string()).expect("rows");
    let balance = v[name]["balance"].as_str().expect("balance").to_owned();
    (rows, balance)
}

fn tid(s: &str) -> TransferId {
    s.parse().expect("uuid")
}

fn stores(db: &Arc<Db>, ns: &str) -> RocksStores {
    RocksStores::new(
        Arc::clone(db),
        ns,
        Limit::Finite(LedgerBalance(10_000)),
        Limit::Unbounded,
    )
}

#[tokio::test]
async fn server_rows_import_with_the_exact_legacy_balance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let (rows, legacy_balance) = side("server");
    let s = stores(&db, "server");
    let report = import_legacy_rows(&s, rows).await.expect("import");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.trackers, vec!["amount_settled", "incoming_claim"]);
    let main = report
        .logs
        .iter()
        .find(|l| l.key.is_empty())
        .expect("main log");
    assert_eq!(main.transfers, 6);
    assert_eq!(main.stale_cancelled, 1);
    assert_eq!(main.maximum, Some(Limit::Finite(LedgerBalance(20_000))));

    let log = s.transfer_log("").expect("log");
    assert_eq!(log.balance().to_string(), legacy_balance);
    assert_eq!(log.balance(), LedgerBalance(9));
    let sums = log.sums();
    assert_eq!(
        (
            sums.incoming_fulfilled,
            sums.incoming_fulfilled_and_prepared
        ),
        (LedgerSum(13), LedgerSum(13))
    );
    assert_eq!(
        (
            sums.outgoing_fulfilled,
            sums.outgoing_fulfilled_and_prepared
        ),
        (LedgerSum(4), LedgerSum(4))
    );
    assert_eq!(
        log.maximum(),
        Limit::Finite(LedgerBalance(20_000)),
        "stored override beats the configured 10000"
    );
    assert_eq!(log.minimum(), Limit::Unbounded);
    assert!(log.prepared().await.expect("prepared").is_empty());

    // The stale prepared row became cancelled; its amount is not held.
    let stale = log
        .get(&tid("abcdef01-2345-4678-9abc-def012345678"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        stale.state,
        TransferState::Cancelled {
            reason: STALE_REASON.to_owned()
        }
    );
    assert_eq!(stale.transfer.amount, LedgerAmount(2));
    assert_eq!(stale.direction, Direction::Incoming);

    // A fulfilled record keeps its fulfillment, condition, expiry, ilp and custom data.
    let custom = log
        .get(&tid("c0ffee00-1111-4222-8333-444455556666"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        custom.transfer.custom,
        Some(serde_json::json!({"note": "hi", "n": [1, 2]}))
    );
    assert!(matches!(custom.state, TransferState::Fulfilled { .. }));
    assert_eq!(custom.transfer.expires_at_ms, 1_795_280_146_513); // 2026-11-21T16:55:46.513Z
    assert_eq!(
        custom.transfer.ilp.first(),
        Some(&1u8),
        "ILP v1 payment packet type"
    );
    let back = log
        .get(&tid("11112222-3333-4444-8555-666677778888"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(back.direction, Direction::Outgoing);

    // A re-sent Prepare of an imported ID with identical contents is a no-op on the stored record.
    let again = Transfer {
        ..stale.transfer.clone()
    };
    assert_eq!(
        log.prepare(&again, Direction::Incoming).await,
        Ok(PrepareOutcome::AlreadyExists(stale))
    );

    // The module-keyed log and the trackers.
    let chan = s.transfer_log("chan").expect("chan");
    assert_eq!(chan.balance(), LedgerBalance(40));
    assert_eq!(chan.minimum(), Limit::Finite(LedgerBalance(-50)));
    let claim = s
        .max_value_tracker("incoming_claim")
        .expect("mvt")
        .get_max()
        .await
        .expect("get");
    assert_eq!(
        claim,
        MaxValue {
            value: BigUint::parse_bytes(b"12345678901234567890123", 10).expect("num"),
            data: serde_json::json!({"signature": "abc", "channel": "xyz"}),
        }
    );
    assert_eq!(
        s.max_value_tracker("amount_settled")
            .expect("mvt")
            .get_max()
            .await
            .expect("get"),
        MaxValue {
            value: BigUint::from(7u8),
            data: serde_json::Value::Null
        }
    );
}

#[tokio::test]
async fn client_rows_import_with_a_negative_balance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let (rows, legacy_balance) = side("client");
    let s = stores(&db, "client");
    let report = import_legacy_rows(&s, rows).await.expect("import");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let log = s.transfer_log("").expect("log");
    assert_eq!(log.balance().to_string(), legacy_balance);
    assert_eq!(log.balance(), LedgerBalance(-9));
    // No stored override: the configured limits apply.
    assert_eq!(log.maximum(), Limit::Finite(LedgerBalance(10_000)));
}

#[tokio::test]
async fn importing_twice_changes_nothing_and_other_rows_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rows, _) = side("server");
    {
        let db = Db::open(dir.path()).expect("open");
        let s = stores(&db, "server");
        let first = import_legacy_rows(&s, rows.clone()).await.expect("import");
        assert!(first.logs.iter().all(|l| !l.already_imported));
        // One batch for everything (main log, chan, two trackers): an import is written whole or not at all.
        assert_eq!(db.submitted_seq(), 1);
    }
    let db = Db::open(dir.path()).expect("reopen");
    let s = stores(&db, "server");
    let seq = db.submitted_seq();
    let second = import_legacy_rows(&s, rows.clone())
        .await
        .expect("re-import");
    assert!(second.logs.iter().all(|l| l.already_imported));
    assert_eq!(db.submitted_seq(), seq, "nothing written");
    assert_eq!(s.transfer_log("").expect("log").balance(), LedgerBalance(9));

    // Different rows for a log that already holds data are refused.
    let mut changed = rows.clone();
    for (key, value) in &mut changed {
        if key == ":tl:balance:if" {
            *value = "14".to_owned();
        }
    }
    let s2 = stores(&db, "server");
    drop(s);
    // The main log is open (cached) in this process: the import must refuse rather than go stale.
    let log = s2.transfer_log("").expect("log");
    assert!(matches!(
        import_legacy_rows(&s2, changed.clone()).await,
        Err(ImportError::InUse(_))
    ));
    drop(log);
    assert!(matches!(
        import_legacy_rows(&s2, changed).await,
        Err(ImportError::NotEmpty { .. })
    ));
    assert_eq!(
        s2.transfer_log("").expect("log").balance(),
        LedgerBalance(9)
    );
}

#[tokio::test]
async fn a_balance_that_disagrees_with_the_records_is_reported_not_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let (mut rows, _) = side("server");
    for (key, value) in &mut rows {
        if key == ":tl:balance:of" {
            *value = "5".to_owned(); // legacy bugs could leave such a store behind
        }
    }
    let s = stores(&db, "server");
    let report = import_legacy_rows(&s, rows).await.expect("import");
    assert_eq!(
        report.warnings,
        vec![ImportWarning::BalanceMismatch {
            key: String::new(),
            balance_rows: (13, 5),
            records: (13, 4),
        }]
    );
    // The balance rows win: balance = IF − OF exactly as legacy reported it.
    assert_eq!(s.transfer_log("").expect("log").balance(), LedgerBalance(8));
}

#[tokio::test]
async fn bad_rows_fail_the_import_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = stores(&db, "x");
    let rows = vec![
        (":tl:balance:if".to_owned(), "10".to_owned()),
        (
            ":tl:transfer:5857d460-2a46-4545-8311-1539d6b50678".to_owned(),
            "{\"transfer\":{\"id\":\"5857d460-2a46-4545-8311-1539d6b50678\",\"amount\":\"1.5\"},\"isIncoming\":true,\"state\":\"fulfilled\"}".to_owned(),
        ),
    ];
    assert!(matches!(
        import_legacy_rows(&s, rows).await,
        Err(ImportError::BadRow { .. })
    ));
    assert_eq!(db.submitted_seq(), 0);
    assert!(matches!(
        import_legacy_rows(
            &s,
            vec![("bad key:tl:balance:if".to_owned(), "1".to_owned())]
        )
        .await,
        Err(ImportError::BadRow { .. })
    ));
}

#[tokio::test]
async fn postgres_csv_export_imports_like_the_json_dump() {
    // The ILP Kit table holds the same rows; a COPY … WITH (FORMAT csv) export quotes JSON values.
    let (rows, _) = side("client");
    let mut csv = String::from("key,value,createdAt,updatedAt\n");
    for (k, v) in &rows {
        csv.push_str(&format!(
            "{},\"{}\",2017-10-01 00:00:00+00,2017-10-01 00:00:00+00\n",
            k,
            v.replace('"', "\"\"")
        ));
    }
    let parsed = rows_from_csv(&csv).expect("csv");
    assert_eq!(parsed, rows);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = stores(&db, "client");
    import_legacy_rows(&s, parsed).await.expect("import");
    assert_eq!(
        s.transfer_log("").expect("log").balance(),
        LedgerBalance(-9)
    );
}

fn transfer_row(expires_at: &str, amount: &str) -> (String, String) {
    let id = "5857d460-2a46-4545-8311-1539d6b50678";
    (
        format!(":tl:transfer:{id}"),
        format!(
            "{{\"transfer\":{{\"id\":\"{id}\",\"amount\":\"{amount}\",\
             \"executionCondition\":\"36J9Ieja8QFhZtqsYijI_Zpcmk_D1yfCTnndLQJeFWs\",\
             \"expiresAt\":\"{expires_at}\"}},\"isIncoming\":true,\"state\":\"fulfilled\",\
             \"fulfillment\":\"NFgFZNdIp3p9x04WsKaLVWWz9ciieMmD0Jv_tMnNJRY\"}}"
        ),
    )
}

#[tokio::test]
async fn impossible_dates_and_extreme_numbers_are_bad_rows_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = stores(&db, "x");
    // The same row with a valid date imports: the failures below are the date's.
    import_legacy_rows(
        &s,
        vec![
            (":tl:balance:if".to_owned(), "10".to_owned()),
            transfer_row("2017-02-28T00:00:00.000Z", "10"),
        ],
    )
    .await
    .expect("valid row imports");
    let before = db.submitted_seq();
    for bad in [
        vec![transfer_row("2017-02-31T00:00:00.000Z", "10")],
        vec![transfer_row(
            "+9223372036854775807-01-01T00:00:00.000Z",
            "10",
        )],
        vec![transfer_row("+275761-01-01T00:00:00.000Z", "10")],
        vec![transfer_row(
            "2017-02-28T00:00:00.000Z",
            "1.5e-9223372036854775808",
        )],
        vec![(
            "m:mvt:maximum".to_owned(),
            "{\"value\":\"1.5e-9223372036854775808\",\"data\":null}".to_owned(),
        )],
    ] {
        let s = stores(&db, "y");
        let key = bad[0].0.clone();
        let result = import_legacy_rows(&s, bad).await;
        assert!(
            matches!(&result, Err(ImportError::BadRow { key: k, .. }) if *k == key),
            "{key}: {result:?}"
        );
    }
    assert_eq!(db.submitted_seq(), before, "nothing written");
}

#[tokio::test]
async fn a_log_holding_only_records_is_not_empty() {
    use ilp_bridge::store::codec::{self, tag};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let id = tid("5857d460-2a46-4545-8311-1539d6b50678");
    let rows = vec![(":tl:balance:if".to_owned(), "10".to_owned())];

    // A finished record alone (no sums row) makes the log non-empty.
    let mut batch = rocksdb::WriteBatch::default();
    let prefix = codec::log_prefix("finished", "").expect("prefix");
    batch.put(codec::sub_key(&prefix, tag::FINISHED, Some(&id)), b"x");
    db.write(batch).await.expect("write");
    assert!(matches!(
        import_legacy_rows(&stores(&db, "finished"), rows.clone()).await,
        Err(ImportError::NotEmpty { .. })
    ));

    // So does a prepared record alone, in the pending column family.
    let mut batch = rocksdb::WriteBatch::default();
    let prefix = codec::log_prefix("pending", "").expect("prefix");
    let cf = db.pending_cf().expect("cf");
    batch.put_cf(cf, codec::sub_key(&prefix, tag::PREPARED, Some(&id)), b"x");
    db.write(batch).await.expect("write");
    assert!(matches!(
        import_legacy_rows(&stores(&db, "pending"), rows.clone()).await,
        Err(ImportError::NotEmpty { .. })
    ));

    // Records of a neighbouring log (same namespace, another key) do not count.
    let mut batch = rocksdb::WriteBatch::default();
    let prefix = codec::log_prefix("neighbour", "chan").expect("prefix");
    batch.put(codec::sub_key(&prefix, tag::FINISHED, Some(&id)), b"x");
    db.write(batch).await.expect("write");
    let report = import_legacy_rows(&stores(&db, "neighbour"), rows)
        .await
        .expect("import next to another log");
    assert_eq!(report.logs.len(), 1);
}
