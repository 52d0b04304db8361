//! Durability tests of the RocksDB stores: write → drop → reopen, one write per change, a crash at every
//! write, poisoning, group commit and a start-up that does not read the finished history.

use std::sync::Arc;

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{
    Direction, Limit, MaxValue, PrepareOutcome, StoreError, Sums, Transfer, TransferId,
    TransferLog, TransferLogError, TransferState,
};
use ilp_bridge::store::{Db, DbOptions, RocksStores};
use num_bigint::BigUint;

const MAX: Limit = Limit::Finite(LedgerBalance(1_000));
const MIN: Limit = Limit::Finite(LedgerBalance(-1_000));

fn id(n: u32) -> TransferId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    TransferId(bytes)
}

fn transfer(n: u32, amount: u64) -> Transfer {
    Transfer {
        id: id(n),
        amount: LedgerAmount(amount),
        execution_condition: [n as u8; 32],
        expires_at_ms: 1_506_816_000_000 + i64::from(n),
        ilp: vec![n as u8; 3],
        custom: Some(serde_json::json!({ "n": n })),
    }
}

fn stores(db: &Arc<Db>) -> RocksStores {
    RocksStores::new(Arc::clone(db), "peer-a", MAX, MIN)
}

#[tokio::test]
async fn write_drop_reopen_keeps_sums_limits_prepared_and_max_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let far_expiry = 1_506_816_000_000 + 40 * 24 * 3600 * 1000;
    let before_sums;
    {
        let db = Db::open(dir.path()).expect("open");
        let s = stores(&db);
        let log = s.transfer_log("").expect("log");
        for n in 0..10 {
            log.prepare(&transfer(n, 10), Direction::Incoming)
                .await
                .expect("in");
            log.prepare(&transfer(100 + n, 3), Direction::Outgoing)
                .await
                .expect("out");
        }
        for n in 0..5 {
            log.fulfill(&id(n), &[n as u8; 32]).await.expect("fulfill");
            log.cancel(&id(100 + n), "rejected").await.expect("cancel");
        }
        let mut far = transfer(500, 1);
        far.expires_at_ms = far_expiry;
        log.prepare(&far, Direction::Incoming).await.expect("far");
        log.set_maximum(Limit::Finite(LedgerBalance(777)))
            .await
            .expect("max");
        log.set_minimum(Limit::Unbounded).await.expect("min");
        s.max_value_tracker("incoming_claim")
            .expect("mvt")
            .set_if_max(MaxValue {
                value: BigUint::from(42u8),
                data: serde_json::json!({"sig": "x"}),
            })
            .await
            .expect("set");
        before_sums = log.sums();
        assert_eq!(before_sums.incoming_fulfilled, LedgerSum(50));
    }
    // The database (and every handle on it) is dropped; reopen the folder.
    let db = Db::open(dir.path()).expect("reopen");
    let s = stores(&db);
    let log = s.transfer_log("").expect("log");
    assert_eq!(log.sums(), before_sums);
    assert_eq!(log.balance(), LedgerBalance(50));
    assert_eq!(log.maximum(), Limit::Finite(LedgerBalance(777)));
    assert_eq!(log.minimum(), Limit::Unbounded);
    let mut prepared = log.prepared().await.expect("prepared");
    prepared.sort_by_key(|r| r.transfer.id);
    assert_eq!(prepared.len(), 11);
    assert!(prepared.iter().all(|r| r.state == TransferState::Prepared));
    assert_eq!(prepared[5].transfer, transfer(100 + 5, 3));
    assert!(prepared
        .iter()
        .any(|r| r.transfer.expires_at_ms == far_expiry));
    assert!(matches!(
        log.get(&id(0)).await,
        Ok(Some(r)) if r.state == TransferState::Fulfilled { fulfillment: [0; 32] }
    ));
    assert!(matches!(
        log.get(&id(100)).await,
        Ok(Some(r)) if matches!(r.state, TransferState::Cancelled { ref reason } if reason == "rejected")
    ));
    // Restored prepared transfers are live: they can be fulfilled and cancelled, and count against limits.
    log.fulfill(&id(9), &[9; 32])
        .await
        .expect("fulfill after restart");
    log.cancel(&id(109), "expired")
        .await
        .expect("cancel after restart");
    assert_eq!(log.sums().incoming_fulfilled, LedgerSum(60));
    assert_eq!(
        s.max_value_tracker("incoming_claim")
            .expect("mvt")
            .get_max()
            .await,
        Ok(MaxValue {
            value: BigUint::from(42u8),
            data: serde_json::json!({"sig": "x"})
        })
    );
    // Another namespace on the same database is untouched.
    let other = RocksStores::new(Arc::clone(&db), "peer-b", MAX, MIN);
    assert_eq!(other.transfer_log("").expect("log").sums(), Sums::default());
}

/// Every state-changing call submits exactly one batch (so there is no pair of writes a crash could fall
/// between); idempotent repeats and refusals submit none.
#[tokio::test]
async fn every_change_is_exactly_one_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = stores(&db);
    let log = s.transfer_log("").expect("log");
    let mvt = s.max_value_tracker("m").expect("mvt");
    let writes = |f: u64| db.submitted_seq() - f;

    let start = db.submitted_seq();
    log.prepare(&transfer(1, 10), Direction::Incoming)
        .await
        .expect("prepare");
    assert_eq!(writes(start), 1, "prepare");
    let start = db.submitted_seq();
    log.fulfill(&id(1), &[1; 32]).await.expect("fulfill");
    assert_eq!(writes(start), 1, "fulfill");
    log.prepare(&transfer(2, 10), Direction::Outgoing)
        .await
        .expect("prepare");
    let start = db.submitted_seq();
    log.cancel(&id(2), "r").await.expect("cancel");
    assert_eq!(writes(start), 1, "cancel");
    let start = db.submitted_seq();
    log.set_maximum(Limit::Finite(LedgerBalance(500)))
        .await
        .expect("max");
    assert_eq!(writes(start), 1, "set_maximum");
    let start = db.submitted_seq();
    mvt.set_if_max(MaxValue {
        value: BigUint::from(3u8),
        data: serde_json::Value::Null,
    })
    .await
    .expect("mvt");
    assert_eq!(writes(start), 1, "set_if_max");

    let start = db.submitted_seq();
    log.fulfill(&id(1), &[1; 32]).await.expect("repeat fulfill");
    log.cancel(&id(2), "again").await.expect("repeat cancel");
    log.prepare(&transfer(1, 10), Direction::Incoming)
        .await
        .expect("repeat prepare");
    assert!(log
        .prepare(&transfer(3, 501), Direction::Incoming)
        .await
        .is_err());
    mvt.set_if_max(MaxValue {
        value: BigUint::from(2u8),
        data: serde_json::Value::Null,
    })
    .await
    .expect("lower");
    assert_eq!(writes(start), 0, "no-ops write nothing");
}

/// A crash at the one write of each operation: the failed write poisons the database, the caller gets an
/// error, and after a restart the state is exactly the one before the operation.
#[tokio::test]
async fn crash_at_each_write_leaves_the_previous_state() {
    type Op = fn(
        Arc<dyn TransferLog>,
    ) -> futures::future::BoxFuture<'static, Result<(), TransferLogError>>;
    let ops: [(&str, Op); 4] = [
        ("prepare", |log| {
            Box::pin(async move {
                log.prepare(&transfer(7, 5), Direction::Incoming)
                    .await
                    .map(|_| ())
            })
        }),
        ("fulfill", |log| {
            Box::pin(async move { log.fulfill(&id(1), &[1; 32]).await.map(|_| ()) })
        }),
        ("cancel", |log| {
            Box::pin(async move { log.cancel(&id(1), "x").await.map(|_| ()) })
        }),
        ("set_maximum", |log| {
            Box::pin(async move { log.set_maximum(Limit::Finite(LedgerBalance(3))).await })
        }),
    ];
    for (name, op) in ops {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected_sums;
        {
            let db = Db::open(dir.path()).expect("open");
            let log = stores(&db).transfer_log("").expect("log");
            log.prepare(&transfer(1, 10), Direction::Incoming)
                .await
                .expect("setup");
            expected_sums = log.sums();
            db.inject_write_failures(1);
            let result = op(Arc::clone(&log)).await;
            assert!(
                matches!(result, Err(TransferLogError::Store(StoreError::Io(_)))),
                "{name}: {result:?}"
            );
            assert!(db.is_poisoned(), "{name}");
        }
        let db = Db::open(dir.path()).expect("reopen");
        let log = stores(&db).transfer_log("").expect("log");
        assert_eq!(log.sums(), expected_sums, "{name}");
        assert_eq!(log.maximum(), MAX, "{name}");
        assert_eq!(log.get(&id(7)).await, Ok(None), "{name}");
        let prepared = log.prepared().await.expect("prepared");
        assert_eq!(prepared.len(), 1, "{name}");
        assert_eq!(prepared[0].state, TransferState::Prepared, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_all_durable_and_share_syncs() {
    // Many concurrent writers: group commit puts many batches in one synced write, and every acknowledged
    // batch must be there after a reopen that replays the WAL.
    let dir = tempfile::tempdir().expect("tempdir");
    let writers = 64u32;
    let per_writer = 50u32;
    {
        let db = Db::open(dir.path()).expect("open");
        let mut tasks = Vec::new();
        for w in 0..writers {
            let db = Arc::clone(&db);
            tasks.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let mut batch = rocksdb::WriteBatch::default();
                    batch.put(format!("test/{w}/{i}"), i.to_be_bytes());
                    db.write(batch).await.expect("write");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(db.durable_seq(), db.submitted_seq());
        assert!(
            db.group_writes() < u64::from(writers * per_writer),
            "concurrent writers share syncs"
        );
        db.set_flush_on_close(false); // the reopen must find them in the synced WAL
    }
    let db = Db::open(dir.path()).expect("reopen");
    for w in 0..writers {
        assert_eq!(
            db.scan_prefix(format!("test/{w}/").as_bytes())
                .expect("scan")
                .len(),
            per_writer as usize,
            "writer {w}"
        );
    }
}

#[tokio::test]
async fn noted_fulfillments_survive_a_reopen_and_go_with_their_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path()).expect("open");
        let log = stores(&db).transfer_log("").expect("log");
        for n in 1..=2 {
            log.prepare(&transfer(n, 10), Direction::Incoming)
                .await
                .expect("prepare");
            log.note_fulfillment(&id(n), &[n as u8; 32], &[n as u8; 3])
                .await
                .expect("note");
        }
        log.fulfill(&id(2), &[2; 32]).await.expect("fulfill");
        db.set_flush_on_close(false); // found again by WAL replay
    }
    let db = Db::open(dir.path()).expect("reopen");
    let log = stores(&db).transfer_log("").expect("log");
    let noted = log.noted_fulfillments().await.expect("noted");
    assert_eq!(noted.len(), 1, "{noted:?}");
    assert_eq!(noted[0].id, id(1));
    assert_eq!(noted[0].fulfillment, [1; 32]);
    assert_eq!(noted[0].ilp, vec![1; 3]);
    log.cancel(&id(1), "expired").await.expect("cancel");
    drop(log);
    drop(db);
    let db = Db::open(dir.path()).expect("reopen again");
    let log = stores(&db).transfer_log("").expect("log");
    assert_eq!(log.noted_fulfillments().await, Ok(vec![]));
    assert_eq!(log.sums().incoming_fulfilled, LedgerSum(10));
}

#[tokio::test]
async fn a_failed_write_poisons_every_later_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = stores(&db);
    let log = s.transfer_log("").expect("log");
    log.prepare(&transfer(1, 10), Direction::Incoming)
        .await
        .expect("ok before");
    db.inject_write_failures(1);
    assert!(matches!(
        log.prepare(&transfer(2, 10), Direction::Incoming).await,
        Err(TransferLogError::Store(StoreError::Io(_)))
    ));
    // The injected failure is used up, yet every later write is refused.
    assert_eq!(
        log.prepare(&transfer(3, 10), Direction::Incoming).await,
        Err(TransferLogError::Store(StoreError::Poisoned))
    );
    assert_eq!(
        log.fulfill(&id(1), &[1; 32]).await,
        Err(TransferLogError::Store(StoreError::Poisoned))
    );
    assert_eq!(
        s.max_value_tracker("m")
            .expect("mvt")
            .set_if_max(MaxValue {
                value: BigUint::from(1u8),
                data: serde_json::Value::Null
            })
            .await,
        Err(StoreError::Poisoned)
    );
    assert_eq!(
        db.write(rocksdb::WriteBatch::default()).await,
        Err(StoreError::Poisoned)
    );
    // A reopened database is healthy again and holds only what was acknowledged.
    drop(log);
    drop(s);
    drop(db);
    let db = Db::open(dir.path()).expect("reopen");
    let log = stores(&db).transfer_log("").expect("log");
    assert_eq!(log.sums().incoming_fulfilled_and_prepared, LedgerSum(10));
    assert_eq!(
        log.prepare(&transfer(2, 10), Direction::Incoming).await,
        Ok(PrepareOutcome::Prepared)
    );
}

/// A deferred change is written and synced in order like any other: it is durable once a later synced write
/// is, and even with no later write it reaches the disk without anyone waiting for it.
#[tokio::test]
async fn deferred_changes_become_durable_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path()).expect("open");
        let log = stores(&db).transfer_log("").expect("log");
        log.prepare_deferred(&transfer(1, 10), Direction::Incoming)
            .await
            .expect("deferred prepare");
        log.prepare_deferred(&transfer(2, 20), Direction::Incoming)
            .await
            .expect("deferred prepare");
        // A synced write submitted after them: once it is acknowledged, so are they.
        log.note_fulfillment(&id(2), &[2; 32], b"ilp")
            .await
            .expect("note");
        log.fulfill_deferred(&id(2), &[2; 32])
            .await
            .expect("deferred fulfill");
        // Nothing else is written; the writer still syncs the fulfill.
        db.wait_durable(db.submitted_seq()).await.expect("durable");
        // No flush on close: the reopen reads what the synced WAL holds.
        db.set_flush_on_close(false);
    }
    let db = Db::open(dir.path()).expect("reopen");
    let log = stores(&db).transfer_log("").expect("log");
    assert_eq!(log.sums().incoming_fulfilled_and_prepared, LedgerSum(30));
    assert_eq!(log.sums().incoming_fulfilled, LedgerSum(20));
    assert_eq!(
        log.get(&id(1)).await.expect("get").map(|r| r.state),
        Some(TransferState::Prepared)
    );
    assert_eq!(log.noted_fulfillments().await, Ok(vec![]));
}

/// If a deferred write fails, the database is poisoned, so the synced write that would act on it (here the
/// note that precedes revealing a preimage) fails too: nothing is ever revealed on top of a lost change.
#[tokio::test]
async fn a_failed_deferred_write_fails_the_next_synced_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path()).expect("open");
        let log = stores(&db).transfer_log("").expect("log");
        db.inject_write_failures(1);
        log.prepare_deferred(&transfer(1, 10), Direction::Incoming)
            .await
            .expect("a deferred prepare returns before its write");
        assert!(matches!(
            log.note_fulfillment(&id(1), &[1; 32], b"").await,
            Err(TransferLogError::Store(
                StoreError::Io(_) | StoreError::Poisoned
            ))
        ));
        assert!(db.is_poisoned());
    }
    let db = Db::open(dir.path()).expect("reopen");
    let log = stores(&db).transfer_log("").expect("log");
    assert_eq!(log.get(&id(1)).await, Ok(None));
    assert_eq!(log.sums(), Sums::default());
}

/// A deferred batch asks for no sync of its own: it is durable once a synced batch submitted after it is, and a
/// lone one is synced by the writer shortly after (its ticket resolves then).
#[tokio::test]
async fn deferred_batches_ride_on_the_next_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(b"test/deferred-1", b"1");
    let deferred = db.submit_deferred(batch).expect("submit");
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(b"test/synced", b"2");
    db.write(batch).await.expect("synced write");
    assert!(db.durable_seq() >= deferred.seq());
    deferred
        .wait()
        .await
        .expect("deferred is durable with the synced one");

    let groups = db.group_writes();
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(b"test/deferred-2", b"3");
    let lone = db.submit_deferred(batch).expect("submit");
    let seq = lone.seq();
    lone.wait()
        .await
        .expect("a lone deferred batch is synced after the delay");
    assert_eq!(db.durable_seq(), seq);
    assert_eq!(db.group_writes(), groups + 1, "one sync for the lone batch");
    db.set_flush_on_close(false);
    drop(db);
    let db = Db::open(dir.path()).expect("reopen");
    for key in [&b"test/deferred-1"[..], b"test/synced", b"test/deferred-2"] {
        assert!(db.get(key).expect("get").is_some(), "{key:?} lost");
    }
}

/// Deferred batches arriving back to back, with no synced batch among them, are still synced within the delay
/// (not only once the stream pauses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_deferred_batches_is_synced_while_it_lasts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let writer = Arc::clone(&db);
    let synced_during_stream = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut first = None;
        let mut n: u64 = 0;
        // Keep the queue busy for up to 500 × the delay (slow disks under load); from 10 × on, look for a sync.
        while start.elapsed() < ilp_bridge::store::DEFERRED_SYNC_DELAY * 500 {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put(format!("test/stream/{n}"), b"x");
            n += 1;
            let seq = writer.submit_deferred(batch).expect("submit").seq();
            first.get_or_insert(seq);
            if start.elapsed() > ilp_bridge::store::DEFERRED_SYNC_DELAY * 10
                && writer.durable_seq() >= first.unwrap_or(u64::MAX)
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("stream");
    assert!(
        synced_during_stream,
        "deferred batches stayed unsynced while the stream lasted"
    );
}

/// Concurrent writers share syncs: 64 racing prepares need fewer than 64 synced group writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_group_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let log = RocksStores::new(Arc::clone(&db), "g", Limit::Unbounded, Limit::Unbounded)
        .transfer_log("")
        .expect("log");
    let groups_before = db.group_writes();
    let tasks: Vec<_> = (0..64u32)
        .map(|n| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.prepare(&transfer(n, 1), Direction::Incoming).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Ok(PrepareOutcome::Prepared));
    }
    let groups = db.group_writes() - groups_before;
    assert!(
        (1..64).contains(&groups),
        "{groups} group writes for 64 batches"
    );
    assert_eq!(db.durable_seq(), db.submitted_seq());
}

/// Start-up reads the prepared index, never the finished history: after many finished transfers the index
/// holds only what is still prepared, and the in-flight overlay drains.
#[tokio::test]
async fn prepared_index_holds_only_prepared_transfers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = RocksStores::new(Arc::clone(&db), "p", Limit::Unbounded, Limit::Unbounded);
    let log = s.rocks_log("").expect("log");
    for n in 0..300u32 {
        log.prepare(&transfer(n, 1), Direction::Incoming)
            .await
            .expect("prepare");
        if n % 3 == 0 {
            log.prepare(&transfer(n, 1), Direction::Incoming)
                .await
                .expect("repeat");
        } else if n % 3 == 1 {
            log.fulfill(&id(n), &[1; 32]).await.expect("fulfill");
        } else {
            log.cancel(&id(n), "r").await.expect("cancel");
        }
    }
    let pending = db.scan_pending_prefix(b"tl/").expect("scan");
    assert_eq!(pending.len(), 100);
    assert_eq!(log.overlay_len(), 0);
    assert_eq!(log.prepared().await.expect("prepared").len(), 100);
}

#[tokio::test]
async fn sums_are_capped_at_i128_max() {
    // Reach the cap through an imported legacy balance (no test could prepare 2^63 transfers).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let s = RocksStores::new(Arc::clone(&db), "o", Limit::Unbounded, Limit::Unbounded);
    let near = (i128::MAX - 5).to_string();
    ilp_bridge::store::legacy_import::import_legacy_rows(
        &s,
        vec![(":tl:balance:if".to_owned(), near)],
    )
    .await
    .expect("import");
    let log = s.transfer_log("").expect("log");
    assert_eq!(
        log.prepare(&transfer(1, 6), Direction::Incoming).await,
        Err(TransferLogError::Store(StoreError::Overflow))
    );
    assert_eq!(
        log.prepare(&transfer(1, 5), Direction::Incoming).await,
        Ok(PrepareOutcome::Prepared)
    );
    assert_eq!(
        log.fulfill(&id(1), &[0; 32])
            .await
            .map(|r| r.transfer.amount),
        Ok(LedgerAmount(5))
    );
    assert_eq!(log.balance(), LedgerBalance(i128::MAX));
}

#[tokio::test]
async fn one_instance_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let a = stores(&db).rocks_log("k").expect("log");
    let b = RocksStores::new(
        Arc::clone(&db),
        "peer-a",
        Limit::Unbounded,
        Limit::Unbounded,
    )
    .rocks_log("k")
    .expect("log");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(
        b.maximum(),
        MAX,
        "the first opener's configured limits stay"
    );
}

/// Prepares transfer `n` (amount 1, incoming) for every `n` in `ns`, and fulfils it if `fulfil`, from 50
/// concurrent tasks, so that group commit writes them in a few syncs.
async fn prepare_concurrently(log: &Arc<dyn TransferLog>, ns: Vec<u32>, fulfil: bool) {
    const WRITERS: usize = 50;
    let ns = Arc::new(ns);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, ns) = (Arc::clone(log), Arc::clone(&ns));
            tokio::spawn(async move {
                for &n in ns.iter().skip(w).step_by(WRITERS) {
                    let prepared = log.prepare(&transfer(n, 1), Direction::Incoming).await;
                    assert_eq!(prepared, Ok(PrepareOutcome::Prepared), "transfer {n}");
                    if fulfil {
                        log.fulfill(&id(n), &[0; 32]).await.expect("fulfill");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

/// A prepare looks its ID up among the finished transfers (a re-used ID is refused). For a new ID the table files'
/// bloom filters answer almost every lookup, but a false positive (≈ 1 % per file) reads a data block. Those
/// blocks hold random IDs nobody will look up again; kept in the block cache, they filled it for nothing, which
/// the soak saw as resident memory growing by ≈ 190 bytes per payment (RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_new_ids_leave_the_block_cache_empty() {
    const HISTORY: u32 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let log = RocksStores::new(Arc::clone(&db), "h", Limit::Unbounded, Limit::Unbounded)
        .transfer_log("")
        .expect("log");
    // The new IDs fall between the finished ones, so no lookup is answered by a table file's key range alone.
    let run = |parity: u32, fulfil: bool| {
        prepare_concurrently(&log, (0..HISTORY).map(|n| 2 * n + parity).collect(), fulfil)
    };
    run(0, true).await;
    // The history goes to a table file, as it does on a running node once the memtable fills.
    db.rocks().flush().expect("flush");
    let before = db.memory().expect("memory");
    run(1, false).await;
    let after = db.memory().expect("memory");
    assert!(
        after.block_cache_bytes <= before.block_cache_bytes + (16 << 10),
        "{HISTORY} lookups of new IDs grew the block cache from {} to {} bytes",
        before.block_cache_bytes,
        after.block_cache_bytes
    );
}

/// Opening a log scans its prepared transfers in the pending family, whose table files also hold the
/// tombstones of every transfer finished since their last compaction; the scan reads through them once. Kept in
/// the block cache, those blocks made a restarted node's memory start higher the longer it had run (the soak:
/// 601 KiB after a 30 s lifetime, 1,045 KiB after a 5 min one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_log_leaves_the_block_cache_empty() {
    const TRANSFERS: u32 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path()).expect("open");
        let log = RocksStores::new(Arc::clone(&db), "r", Limit::Unbounded, Limit::Unbounded)
            .transfer_log("")
            .expect("log");
        prepare_concurrently(&log, (0..TRANSFERS).collect(), true).await;
    }
    // Closed with a flush: the pending family's puts and tombstones are in a table file now.
    let db = Db::open(dir.path()).expect("reopen");
    let before = db.memory().expect("memory");
    let log = RocksStores::new(Arc::clone(&db), "r", Limit::Unbounded, Limit::Unbounded)
        .transfer_log("")
        .expect("log");
    assert_eq!(
        log.sums().incoming_fulfilled,
        LedgerSum(u128::from(TRANSFERS))
    );
    let after = db.memory().expect("memory");
    assert!(
        after.block_cache_bytes <= before.block_cache_bytes + (16 << 10),
        "opening the log grew the block cache from {} to {} bytes",
        before.block_cache_bytes,
        after.block_cache_bytes
    );
}

/// `DbOptions::keep_finished`: a compaction drops the records of transfers that expired longer ago than that,
/// and nothing else: recent finished transfers, prepared ones (however old), the sums. Without it nothing is
/// dropped.
#[tokio::test]
async fn finished_transfers_older_than_the_retention_are_dropped_at_compaction() {
    let far_future = 4_102_444_800_000; // 2100-01-01
    for keep in [Some(std::time::Duration::from_secs(3600)), None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_with(
            dir.path(),
            DbOptions {
                keep_finished: keep,
                ..DbOptions::default()
            },
        )
        .expect("open");
        let log = RocksStores::new(Arc::clone(&db), "k", Limit::Unbounded, Limit::Unbounded)
            .transfer_log("")
            .expect("log");
        // 0..10 expired in 2017, 10..20 expire in 2100; even ones fulfilled, odd ones cancelled; 20 stays prepared.
        for n in 0..21 {
            let mut t = transfer(n, 1);
            if n >= 10 {
                t.expires_at_ms = far_future;
            }
            log.prepare(&t, Direction::Incoming).await.expect("prepare");
            if n == 20 {
                continue;
            }
            if n % 2 == 0 {
                log.fulfill(&id(n), &[0; 32]).await.expect("fulfill");
            } else {
                log.cancel(&id(n), "rejected").await.expect("cancel");
            }
        }
        let sums = log.sums();
        db.rocks().flush().expect("flush");
        db.rocks().compact_range::<&[u8], &[u8]>(None, None);
        for n in 0..21 {
            let found = log.get(&id(n)).await.expect("get").map(|r| r.state);
            let dropped = keep.is_some() && n < 10;
            assert_eq!(
                found.is_none(),
                dropped,
                "transfer {n} (keep {keep:?}): {found:?}"
            );
        }
        assert_eq!(
            log.get(&id(20)).await.expect("get").map(|r| r.state),
            Some(TransferState::Prepared)
        );
        assert_eq!(log.sums(), sums);
        drop(log);
        drop(db);
        // The sums come back from the store, not from memory.
        let db = Db::open(dir.path()).expect("reopen");
        let log = RocksStores::new(Arc::clone(&db), "k", Limit::Unbounded, Limit::Unbounded)
            .transfer_log("")
            .expect("log");
        assert_eq!(log.sums(), sums, "keep {keep:?}");
    }
}
