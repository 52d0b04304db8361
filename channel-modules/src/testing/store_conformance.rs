//! The conformance suite of [`TransferLog`] and [`MaxValueTracker`]: every behaviour the traits' docs promise,
//! including each legacy bug that must not exist (docs/legacy-btp.md §10, §11, §16), as one check per
//! behaviour. Every store implementation runs all of them: ilp-bridge runs them on the in-memory stores
//! ([`MemoryStores`]) and on its RocksDB stores, and a third-party store runs them the same way.
//!
//! A store under test implements [`ConformanceStores`]; a [`MakeStores`] function builds a fresh, empty set
//! of them per check. [`store_conformance_tests!`](crate::store_conformance_tests) turns the suite into one
//! `#[test]` per check:
//!
//! ```ignore
//! fn my_stores(maximum: Limit, minimum: Limit) -> Box<dyn ConformanceStores> {
//!     Box::new(MyStores::new(maximum, minimum))
//! }
//!
//! mod my_store {
//!     channel_modules::store_conformance_tests!(super::my_stores);
//! }
//! ```
//!
//! Each check panics (an assertion) on the first behaviour that differs. The racing checks spawn tasks, so a
//! check runs on a multi-threaded tokio runtime ([`run`] makes one).

use std::future::Future;
use std::sync::Arc;

use num_bigint::BigUint;

use crate::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use crate::memory::MemoryStores;
use crate::store::{
    Direction, Limit, MaxValue, MaxValueTracker, NotedFulfillment, PrepareOutcome, StoreError,
    Sums, Transfer, TransferId, TransferLog, TransferLogError, TransferRecord, TransferState,
};

/// A store implementation under test: its transfer logs and max-value trackers by key. Two calls with the same
/// key must reach the same state (the checks open a key more than once).
pub trait ConformanceStores: Send + Sync {
    /// The transfer log under `key` (`""` is the main log); [`StoreError::InvalidKey`] outside the legacy
    /// alphabet.
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;

    /// The max-value tracker under `key`; [`StoreError::InvalidKey`] outside the legacy alphabet.
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError>;
}

impl ConformanceStores for MemoryStores {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        MemoryStores::transfer_log(self, key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        MemoryStores::max_value_tracker(self, key)
    }
}

/// Builds a fresh, empty set of stores whose logs use the configured `maximum` and `minimum` limits.
pub type MakeStores = fn(Limit, Limit) -> Box<dyn ConformanceStores>;

/// [`MakeStores`] for the in-memory stores.
pub fn memory_stores(maximum: Limit, minimum: Limit) -> Box<dyn ConformanceStores> {
    Box::new(MemoryStores::new(maximum, minimum))
}

/// Runs one check with `make` on a fresh multi-threaded tokio runtime (four workers, so the racing checks
/// really race).
pub fn run<F: Future<Output = ()>>(check: impl FnOnce(MakeStores) -> F, make: MakeStores) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance check");
    runtime.block_on(check(make));
}

/// One `#[test]` per check of [`testing::store_conformance`](crate::testing::store_conformance), each run
/// with the given [`MakeStores`] function (a path) on its own runtime. Use it inside a module named for the
/// store under test, so the test names say which store failed.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@checks $make; exact_sums_through_prepare_fulfill_and_cancel_both_ways,
            incoming_limit_allows_equality_and_refuses_above,
            outgoing_limit_uses_minus_minimum,
            outgoing_prepared_never_relieves_incoming_limit,
            unbounded_limits_never_refuse,
            stored_overrides_beat_configured_limits,
            same_id_same_contents_is_a_noop,
            same_id_different_contents_is_duplicate_id,
            legacy_bug_retried_over_limit_prepare_is_refused_again,
            legacy_bug_reprepare_of_finished_ids,
            legacy_bug_repeated_fulfill_is_idempotent,
            legacy_bug_cancel_after_fulfill_and_fulfill_after_cancel,
            unknown_ids_are_not_found,
            get_returns_records_in_every_state_and_prepared_lists_only_prepared,
            far_future_expiry_is_stored_intact,
            keys_are_isolated_and_validated,
            racing_prepares_never_exceed_the_limit,
            racing_duplicate_fulfills_apply_once,
            max_value_tracker_semantics,
            racing_set_if_max_keeps_the_largest,
            noted_fulfillments_last_until_the_transfer_is_finished,
            deferred_changes_follow_the_same_rules,
        );
    };
    (@checks $make:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::testing::store_conformance::run(
                    $crate::testing::store_conformance::$check,
                    $make,
                )
            }
        )*
    };
}

fn open_log(env: &dyn ConformanceStores, key: &str) -> Arc<dyn TransferLog> {
    env.transfer_log(key).expect("valid key")
}

fn open_tracker(env: &dyn ConformanceStores, key: &str) -> Arc<dyn MaxValueTracker> {
    env.max_value_tracker(key).expect("valid key")
}

fn id(n: u32) -> TransferId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[6] = 0x40; // a v4 UUID, like the legacy plugin's
    TransferId(bytes)
}

fn transfer(n: u32, amount: u64) -> Transfer {
    Transfer {
        id: id(n),
        amount: LedgerAmount(amount),
        execution_condition: [n as u8; 32],
        expires_at_ms: 1_506_816_010_000,
        ilp: vec![1, n as u8],
        custom: None,
    }
}

fn fulfillment(n: u32) -> [u8; 32] {
    [n as u8 ^ 0xff; 32]
}

const MAX: Limit = Limit::Finite(LedgerBalance(100));
const MIN: Limit = Limit::Finite(LedgerBalance(-100));

async fn prepare_ok(log: &dyn TransferLog, t: &Transfer, d: Direction) {
    assert_eq!(
        log.prepare(t, d).await,
        Ok(PrepareOutcome::Prepared),
        "prepare {t:?}"
    );
}

fn sums(ifl: u128, ifp: u128, of: u128, ofp: u128) -> Sums {
    Sums {
        incoming_fulfilled: LedgerSum(ifl),
        incoming_fulfilled_and_prepared: LedgerSum(ifp),
        outgoing_fulfilled: LedgerSum(of),
        outgoing_fulfilled_and_prepared: LedgerSum(ofp),
    }
}

// ---------------------------------------------------------------------------------------------- sums

/// The four sums move exactly with prepare, fulfill and cancel in both directions, and the balance follows.
pub async fn exact_sums_through_prepare_fulfill_and_cancel_both_ways(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 10), Direction::Incoming).await;
    assert_eq!(log.sums(), sums(0, 10, 0, 0));
    prepare_ok(&*log, &transfer(2, 7), Direction::Outgoing).await;
    assert_eq!(log.sums(), sums(0, 10, 0, 7));
    let rec = log.fulfill(&id(1), &fulfillment(1)).await.expect("fulfill");
    assert_eq!(
        rec.state,
        TransferState::Fulfilled {
            fulfillment: fulfillment(1)
        }
    );
    assert_eq!(log.sums(), sums(10, 10, 0, 7));
    log.fulfill(&id(2), &fulfillment(2)).await.expect("fulfill");
    assert_eq!(log.sums(), sums(10, 10, 7, 7));
    assert_eq!(log.balance(), LedgerBalance(3));
    prepare_ok(&*log, &transfer(3, 5), Direction::Incoming).await;
    prepare_ok(&*log, &transfer(4, 6), Direction::Outgoing).await;
    let rec = log.cancel(&id(3), "expired").await.expect("cancel");
    assert_eq!(
        rec.state,
        TransferState::Cancelled {
            reason: "expired".to_owned()
        }
    );
    log.cancel(&id(4), "rejected").await.expect("cancel");
    assert_eq!(log.sums(), sums(10, 10, 7, 7));
    assert_eq!(log.balance(), LedgerBalance(3));
    prepare_ok(&*log, &transfer(5, 20), Direction::Outgoing).await;
    log.fulfill(&id(5), &fulfillment(5)).await.expect("fulfill");
    assert_eq!(log.balance(), LedgerBalance(-17));
}

// ---------------------------------------------------------------------------------------------- limits

/// An incoming prepare may bring `(IFP + amount) − OF` up to the maximum, not beyond; a refused prepare
/// leaves nothing behind.
pub async fn incoming_limit_allows_equality_and_refuses_above(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 60), Direction::Incoming).await;
    prepare_ok(&*log, &transfer(2, 40), Direction::Incoming).await; // (IFP + amt) − OF = 100 = maximum
    assert_eq!(
        log.prepare(&transfer(3, 1), Direction::Incoming).await,
        Err(TransferLogError::IncomingLimitExceeded {
            after: LedgerBalance(101),
            maximum: LedgerBalance(100)
        })
    );
    assert_eq!(log.sums(), sums(0, 100, 0, 0));
    assert_eq!(
        log.get(&id(3)).await,
        Ok(None),
        "a refused prepare leaves nothing"
    );
}

/// An outgoing prepare may bring `(OFP + amount) − IF` up to minus the minimum (a positive minimum too);
/// incoming fulfilled money relieves it.
pub async fn outgoing_limit_uses_minus_minimum(make: MakeStores) {
    let env = make(MAX, Limit::Finite(LedgerBalance(-30)));
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 30), Direction::Outgoing).await;
    assert_eq!(
        log.prepare(&transfer(2, 1), Direction::Outgoing).await,
        Err(TransferLogError::OutgoingLimitExceeded {
            after: LedgerBalance(31),
            minimum: LedgerBalance(-30)
        })
    );
    // Incoming fulfilled money relieves the outgoing limit: (OFP + amt) − IF.
    prepare_ok(&*log, &transfer(3, 10), Direction::Incoming).await;
    log.fulfill(&id(3), &fulfillment(3)).await.expect("fulfill");
    prepare_ok(&*log, &transfer(4, 10), Direction::Outgoing).await;
    assert!(matches!(
        log.prepare(&transfer(5, 1), Direction::Outgoing).await,
        Err(TransferLogError::OutgoingLimitExceeded {
            after: LedgerBalance(31),
            ..
        })
    ));
    // A positive minimum (we must stay in credit) works the same way.
    let env = make(MAX, Limit::Finite(LedgerBalance(5)));
    let log = open_log(&*env, "");
    assert!(matches!(
        log.prepare(&transfer(6, 1), Direction::Outgoing).await,
        Err(TransferLogError::OutgoingLimitExceeded {
            after: LedgerBalance(1),
            minimum: LedgerBalance(5)
        })
    ));
}

/// Outgoing money relieves the incoming limit only once fulfilled, never while prepared.
pub async fn outgoing_prepared_never_relieves_incoming_limit(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 50), Direction::Outgoing).await;
    prepare_ok(&*log, &transfer(2, 100), Direction::Incoming).await;
    assert!(matches!(
        log.prepare(&transfer(3, 1), Direction::Incoming).await,
        Err(TransferLogError::IncomingLimitExceeded {
            after: LedgerBalance(101),
            ..
        })
    ));
    // Once fulfilled (OF), the outgoing amount does count.
    log.fulfill(&id(1), &fulfillment(1)).await.expect("fulfill");
    prepare_ok(&*log, &transfer(3, 50), Direction::Incoming).await;
    assert!(matches!(
        log.prepare(&transfer(4, 1), Direction::Incoming).await,
        Err(TransferLogError::IncomingLimitExceeded {
            after: LedgerBalance(101),
            ..
        })
    ));
}

/// Unbounded limits never refuse, even for sums far beyond `u64`.
pub async fn unbounded_limits_never_refuse(make: MakeStores) {
    let env = make(Limit::Unbounded, Limit::Unbounded);
    let log = open_log(&*env, "");
    for n in 0..4 {
        prepare_ok(&*log, &transfer(n, u64::MAX), Direction::Incoming).await;
        prepare_ok(&*log, &transfer(100 + n, u64::MAX), Direction::Outgoing).await;
    }
    assert_eq!(
        log.sums().incoming_fulfilled_and_prepared,
        LedgerSum(4 * u128::from(u64::MAX))
    );
    assert_eq!(log.maximum(), Limit::Unbounded);
    assert_eq!(log.minimum(), Limit::Unbounded);
}

/// Stored limit overrides (also unbounded) beat the configured limits, are seen by every handle on the key,
/// and do not reach other keys.
pub async fn stored_overrides_beat_configured_limits(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    assert_eq!(log.maximum(), MAX);
    log.set_maximum(Limit::Finite(LedgerBalance(10)))
        .await
        .expect("set max");
    log.set_minimum(Limit::Finite(LedgerBalance(-3)))
        .await
        .expect("set min");
    assert_eq!(log.maximum(), Limit::Finite(LedgerBalance(10)));
    assert_eq!(log.minimum(), Limit::Finite(LedgerBalance(-3)));
    assert!(log
        .prepare(&transfer(1, 11), Direction::Incoming)
        .await
        .is_err());
    assert!(log
        .prepare(&transfer(2, 4), Direction::Outgoing)
        .await
        .is_err());
    prepare_ok(&*log, &transfer(3, 10), Direction::Incoming).await;
    // Another handle on the same key sees the override (one instance per key).
    assert_eq!(
        open_log(&*env, "").maximum(),
        Limit::Finite(LedgerBalance(10))
    );
    // Unbounded can be stored as an override too (legacy "Infinity").
    log.set_maximum(Limit::Unbounded).await.expect("set max");
    prepare_ok(&*log, &transfer(4, 1_000), Direction::Incoming).await;
    // Other keys keep the configured limits.
    assert_eq!(open_log(&*env, "other").maximum(), MAX);
}

// ---------------------------------------------------------------------------------------------- idempotency

/// Preparing the same transfer again returns the stored record and changes nothing.
pub async fn same_id_same_contents_is_a_noop(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let t = transfer(1, 10);
    prepare_ok(&*log, &t, Direction::Incoming).await;
    let stored = TransferRecord {
        transfer: t.clone(),
        direction: Direction::Incoming,
        state: TransferState::Prepared,
    };
    assert_eq!(
        log.prepare(&t, Direction::Incoming).await,
        Ok(PrepareOutcome::AlreadyExists(stored))
    );
    assert_eq!(log.sums(), sums(0, 10, 0, 0));
}

/// Preparing an ID again with other contents or another direction is `DuplicateId`.
pub async fn same_id_different_contents_is_duplicate_id(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let t = transfer(1, 10);
    prepare_ok(&*log, &t, Direction::Incoming).await;
    let mut other_amount = t.clone();
    other_amount.amount = LedgerAmount(11);
    let mut other_custom = t.clone();
    other_custom.custom = Some(serde_json::json!({"a": 1}));
    let mut other_expiry = t.clone();
    other_expiry.expires_at_ms += 1;
    for (changed, direction) in [
        (&other_amount, Direction::Incoming),
        (&other_custom, Direction::Incoming),
        (&other_expiry, Direction::Incoming),
        (&t, Direction::Outgoing),
    ] {
        assert_eq!(
            log.prepare(changed, direction).await,
            Err(TransferLogError::DuplicateId(t.id))
        );
    }
    assert_eq!(log.sums(), sums(0, 10, 0, 0));
}

/// A prepare refused for its limit is refused again on every retry, and counted once when there is room
/// (legacy accepted the retry unaccounted, docs/legacy-btp.md §16.2).
pub async fn legacy_bug_retried_over_limit_prepare_is_refused_again(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 100), Direction::Incoming).await;
    let over = transfer(2, 50);
    for _ in 0..3 {
        assert!(matches!(
            log.prepare(&over, Direction::Incoming).await,
            Err(TransferLogError::IncomingLimitExceeded {
                after: LedgerBalance(150),
                ..
            })
        ));
    }
    assert_eq!(log.sums(), sums(0, 100, 0, 0));
    // Once there is room, the same transfer is accepted and counted once.
    log.cancel(&id(1), "room").await.expect("cancel");
    prepare_ok(&*log, &over, Direction::Incoming).await;
    assert_eq!(log.sums(), sums(0, 50, 0, 0));
}

/// Re-preparing a finished ID returns its record when identical and is `DuplicateId` otherwise (legacy accepted
/// any contents, docs/legacy-btp.md §16.1).
pub async fn legacy_bug_reprepare_of_finished_ids(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let f = transfer(1, 10);
    let c = transfer(2, 20);
    prepare_ok(&*log, &f, Direction::Incoming).await;
    prepare_ok(&*log, &c, Direction::Outgoing).await;
    let fulfilled = log.fulfill(&f.id, &fulfillment(1)).await.expect("fulfill");
    let cancelled = log.cancel(&c.id, "rejected").await.expect("cancel");
    let before = log.sums();
    assert_eq!(
        log.prepare(&f, Direction::Incoming).await,
        Ok(PrepareOutcome::AlreadyExists(fulfilled))
    );
    assert_eq!(
        log.prepare(&c, Direction::Outgoing).await,
        Ok(PrepareOutcome::AlreadyExists(cancelled))
    );
    let mut f2 = f.clone();
    f2.amount = LedgerAmount(9);
    assert_eq!(
        log.prepare(&f2, Direction::Incoming).await,
        Err(TransferLogError::DuplicateId(f.id))
    );
    assert_eq!(
        log.prepare(&c, Direction::Incoming).await,
        Err(TransferLogError::DuplicateId(c.id))
    );
    assert_eq!(log.sums(), before);
}

/// A repeated fulfill with the same fulfillment succeeds and applies once; another fulfillment is
/// `AlreadyFulfilled` (legacy refused the repeat with a TypeError, docs/legacy-btp.md §16.3).
pub async fn legacy_bug_repeated_fulfill_is_idempotent(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 10), Direction::Incoming).await;
    let first = log.fulfill(&id(1), &fulfillment(1)).await.expect("fulfill");
    let again = log.fulfill(&id(1), &fulfillment(1)).await.expect("repeat");
    assert_eq!(first, again);
    assert_eq!(log.sums(), sums(10, 10, 0, 0), "applied once");
    assert_eq!(
        log.fulfill(&id(1), &fulfillment(2)).await,
        Err(TransferLogError::AlreadyFulfilled(id(1)))
    );
}

/// Cancelling a fulfilled transfer is `AlreadyFulfilled`, fulfilling a cancelled one `AlreadyRolledBack`, and a
/// repeated cancel returns the record (legacy practically never reached these answers, docs/legacy-btp.md §10.4).
pub async fn legacy_bug_cancel_after_fulfill_and_fulfill_after_cancel(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 10), Direction::Incoming).await;
    prepare_ok(&*log, &transfer(2, 10), Direction::Outgoing).await;
    log.fulfill(&id(1), &fulfillment(1)).await.expect("fulfill");
    let cancelled = log.cancel(&id(2), "expired").await.expect("cancel");
    assert_eq!(
        log.cancel(&id(1), "late").await,
        Err(TransferLogError::AlreadyFulfilled(id(1)))
    );
    assert_eq!(
        log.fulfill(&id(2), &fulfillment(2)).await,
        Err(TransferLogError::AlreadyRolledBack(id(2)))
    );
    assert_eq!(
        log.cancel(&id(2), "again").await,
        Ok(cancelled),
        "cancel is idempotent"
    );
    assert_eq!(log.sums(), sums(10, 10, 0, 0));
}

/// Unknown IDs are absent for `get` and `NotFound` for fulfill and cancel.
pub async fn unknown_ids_are_not_found(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    assert_eq!(log.get(&id(9)).await, Ok(None));
    assert_eq!(
        log.fulfill(&id(9), &fulfillment(9)).await,
        Err(TransferLogError::NotFound(id(9)))
    );
    assert_eq!(
        log.cancel(&id(9), "x").await,
        Err(TransferLogError::NotFound(id(9)))
    );
}

// ---------------------------------------------------------------------------------------------- records

/// `get` returns records in every state, with their custom data; `prepared` lists only prepared ones.
pub async fn get_returns_records_in_every_state_and_prepared_lists_only_prepared(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let mut t1 = transfer(1, 10);
    t1.custom = Some(serde_json::json!({"note": "hi", "n": [1, 2]}));
    prepare_ok(&*log, &t1, Direction::Incoming).await;
    prepare_ok(&*log, &transfer(2, 10), Direction::Outgoing).await;
    prepare_ok(&*log, &transfer(3, 10), Direction::Outgoing).await;
    log.fulfill(&id(2), &fulfillment(2)).await.expect("fulfill");
    log.cancel(&id(3), "r").await.expect("cancel");
    let got = log.get(&id(1)).await.expect("get").expect("present");
    assert_eq!(got.transfer, t1);
    assert_eq!(got.state, TransferState::Prepared);
    assert!(matches!(
        log.get(&id(2)).await,
        Ok(Some(TransferRecord {
            state: TransferState::Fulfilled { .. },
            direction: Direction::Outgoing,
            ..
        }))
    ));
    assert!(matches!(
        log.get(&id(3)).await,
        Ok(Some(TransferRecord {
            state: TransferState::Cancelled { .. },
            ..
        }))
    ));
    let prepared = log.prepared().await.expect("prepared");
    assert_eq!(prepared.len(), 1);
    assert_eq!(prepared[0].transfer, t1);
}

/// Expiries more than 2^31−1 ms ahead, up to the largest JavaScript date, are stored and returned intact
/// (legacy's timer fired at once, docs/legacy-btp.md §16.10).
pub async fn far_future_expiry_is_stored_intact(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let thirty_days_ms: i64 = 30 * 24 * 3600 * 1000;
    assert!(thirty_days_ms > i64::from(i32::MAX));
    let mut far = transfer(1, 1);
    far.expires_at_ms = 1_506_816_000_000 + thirty_days_ms;
    let mut farthest = transfer(2, 1);
    farthest.expires_at_ms = 8_640_000_000_000_000; // the largest JavaScript date
    prepare_ok(&*log, &far, Direction::Incoming).await;
    prepare_ok(&*log, &farthest, Direction::Outgoing).await;
    let got = log.get(&far.id).await.expect("get").expect("present");
    assert_eq!(got.transfer.expires_at_ms, far.expires_at_ms);
    let mut prepared: Vec<i64> = log
        .prepared()
        .await
        .expect("prepared")
        .iter()
        .map(|r| r.transfer.expires_at_ms)
        .collect();
    prepared.sort_unstable();
    assert_eq!(prepared, vec![far.expires_at_ms, farthest.expires_at_ms]);
}

/// Logs and trackers under different keys are independent; keys outside the legacy alphabet are refused.
pub async fn keys_are_isolated_and_validated(make: MakeStores) {
    let env = make(MAX, MIN);
    let main = open_log(&*env, "");
    let chan = open_log(&*env, "chan_1-A");
    prepare_ok(&*main, &transfer(1, 10), Direction::Incoming).await;
    assert_eq!(chan.sums(), Sums::default());
    assert_eq!(chan.get(&id(1)).await, Ok(None));
    prepare_ok(&*chan, &transfer(1, 99), Direction::Outgoing).await; // same ID, other log: fine
    for bad in ["test:", "a b", "ü", "x/y"] {
        assert!(
            matches!(env.transfer_log(bad), Err(StoreError::InvalidKey(_))),
            "{bad}"
        );
        assert!(
            matches!(env.max_value_tracker(bad), Err(StoreError::InvalidKey(_))),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------- concurrency

/// Concurrent prepares never take a log past its limits (the check and the increment are one step).
pub async fn racing_prepares_never_exceed_the_limit(make: MakeStores) {
    let env = make(
        Limit::Finite(LedgerBalance(50)),
        Limit::Finite(LedgerBalance(-20)),
    );
    let log = open_log(&*env, "");
    let mut tasks = Vec::new();
    for n in 0..64u32 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let incoming = log.prepare(&transfer(n, 1), Direction::Incoming).await;
            let outgoing = log
                .prepare(&transfer(1000 + n, 1), Direction::Outgoing)
                .await;
            (incoming.is_ok(), outgoing.is_ok())
        }));
    }
    let (mut ins, mut outs) = (0, 0);
    for task in tasks {
        let (i, o) = task.await.expect("task");
        ins += usize::from(i);
        outs += usize::from(o);
    }
    assert_eq!(ins, 50);
    assert_eq!(outs, 20);
    assert_eq!(log.sums(), sums(0, 50, 0, 20));
    assert_eq!(log.prepared().await.expect("prepared").len(), 70);
}

/// Concurrent fulfills of one transfer all succeed and apply once.
pub async fn racing_duplicate_fulfills_apply_once(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    prepare_ok(&*log, &transfer(1, 10), Direction::Outgoing).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            log.fulfill(&id(1), &fulfillment(1)).await
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task").is_ok());
    }
    assert_eq!(log.sums(), sums(0, 0, 10, 10));
}

// ---------------------------------------------------------------------------------------------- max value

/// A max-value tracker keeps only a strictly larger value (returning what it replaced, or the argument
/// when it is not larger), with its data, for values beyond `u64`.
pub async fn max_value_tracker_semantics(make: MakeStores) {
    let env = make(MAX, MIN);
    let mvt = open_tracker(&*env, "incoming_claim");
    assert_eq!(mvt.get_max().await, Ok(MaxValue::default()));
    let e = |v: u64, d: &str| MaxValue {
        value: BigUint::from(v),
        data: serde_json::json!(d),
    };
    assert_eq!(mvt.set_if_max(e(5, "five")).await, Ok(MaxValue::default()));
    assert_eq!(mvt.set_if_max(e(7, "seven")).await, Ok(e(5, "five")));
    // Lower and equal values return the argument unchanged and store nothing.
    assert_eq!(mvt.set_if_max(e(3, "three")).await, Ok(e(3, "three")));
    assert_eq!(mvt.set_if_max(e(7, "other")).await, Ok(e(7, "other")));
    assert_eq!(mvt.get_max().await, Ok(e(7, "seven")));
    let huge = MaxValue {
        value: BigUint::parse_bytes(b"123456789012345678901234567890123456789", 10).expect("num"),
        data: serde_json::json!({"signature": "abc", "nested": [1, null, true]}),
    };
    assert_eq!(mvt.set_if_max(huge.clone()).await, Ok(e(7, "seven")));
    assert_eq!(
        open_tracker(&*env, "incoming_claim").get_max().await,
        Ok(huge)
    );
    assert_eq!(
        open_tracker(&*env, "outgoing_channel").get_max().await,
        Ok(MaxValue::default())
    );
}

/// Concurrent `set_if_max` calls on separately opened handles keep the largest value.
pub async fn racing_set_if_max_keeps_the_largest(make: MakeStores) {
    let env = make(MAX, MIN);
    let mut tasks = Vec::new();
    for n in 1..=64u64 {
        // Handles fetched separately per task: trackers sharing a key neither go stale nor clobber.
        let mvt = open_tracker(&*env, "best");
        tasks.push(tokio::spawn(async move {
            mvt.set_if_max(MaxValue {
                value: BigUint::from((n * 37) % 64 + 1),
                data: serde_json::json!(n),
            })
            .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("set");
    }
    assert_eq!(
        open_tracker(&*env, "best")
            .get_max()
            .await
            .expect("get")
            .value,
        BigUint::from(64u8)
    );
}

// ---------------------------------------------------------------------------------- noted fulfillments

/// Noted fulfillments change no sum or state, are listed until their transfer is fulfilled or cancelled,
/// and cannot be noted on finished or unknown transfers.
pub async fn noted_fulfillments_last_until_the_transfer_is_finished(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    for n in 1..=3 {
        prepare_ok(&*log, &transfer(n, 10), Direction::Incoming).await;
    }
    assert_eq!(log.noted_fulfillments().await, Ok(vec![]));
    log.note_fulfillment(&id(1), &fulfillment(1), b"ilp-1")
        .await
        .expect("note 1");
    log.note_fulfillment(&id(2), &fulfillment(2), b"")
        .await
        .expect("note 2");
    // Noting again is a no-op.
    log.note_fulfillment(&id(1), &fulfillment(1), b"ilp-1")
        .await
        .expect("note 1 again");
    let mut noted = log.noted_fulfillments().await.expect("noted");
    noted.sort_by_key(|n| n.id.0);
    assert_eq!(
        noted,
        vec![
            NotedFulfillment {
                id: id(1),
                fulfillment: fulfillment(1),
                ilp: b"ilp-1".to_vec()
            },
            NotedFulfillment {
                id: id(2),
                fulfillment: fulfillment(2),
                ilp: vec![]
            },
        ]
    );
    // Notes change no sum and no state.
    assert_eq!(log.sums(), sums(0, 30, 0, 0));
    assert_eq!(log.prepared().await.expect("prepared").len(), 3);
    // Finishing the transfer removes its note, whichever way it ends.
    log.fulfill(&id(1), &fulfillment(1)).await.expect("fulfill");
    log.cancel(&id(2), "expired").await.expect("cancel");
    assert_eq!(log.noted_fulfillments().await, Ok(vec![]));
    // Finished or unknown transfers cannot be noted.
    assert_eq!(
        log.note_fulfillment(&id(1), &fulfillment(1), b"").await,
        Err(TransferLogError::AlreadyFulfilled(id(1)))
    );
    assert_eq!(
        log.note_fulfillment(&id(2), &fulfillment(2), b"").await,
        Err(TransferLogError::AlreadyRolledBack(id(2)))
    );
    assert_eq!(
        log.note_fulfillment(&id(9), &fulfillment(9), b"").await,
        Err(TransferLogError::NotFound(id(9)))
    );
    assert_eq!(log.noted_fulfillments().await, Ok(vec![]));
    assert_eq!(log.sums(), sums(10, 20, 0, 0));
    assert_eq!(log.durable_sums().await, Ok(sums(10, 20, 0, 0)));
}

// ---------------------------------------------------------------------------------------------- deferred

/// The deferred-durability variants check and apply exactly what the synced ones do: limits, idempotency,
/// duplicate IDs, finished states and sums.
pub async fn deferred_changes_follow_the_same_rules(make: MakeStores) {
    let env = make(MAX, MIN);
    let log = open_log(&*env, "");
    let t = transfer(1, 60);
    assert_eq!(
        log.prepare_deferred(&t, Direction::Incoming).await,
        Ok(PrepareOutcome::Prepared)
    );
    assert_eq!(log.sums(), sums(0, 60, 0, 0));
    // Over the incoming limit (100): refused, nothing recorded, refused again on retry.
    for _ in 0..2 {
        assert!(matches!(
            log.prepare_deferred(&transfer(2, 41), Direction::Incoming)
                .await,
            Err(TransferLogError::IncomingLimitExceeded { .. })
        ));
    }
    assert_eq!(log.get(&id(2)).await, Ok(None));
    let stored = TransferRecord {
        transfer: t.clone(),
        direction: Direction::Incoming,
        state: TransferState::Prepared,
    };
    assert_eq!(
        log.prepare_deferred(&t, Direction::Incoming).await,
        Ok(PrepareOutcome::AlreadyExists(stored))
    );
    let mut other = t.clone();
    other.amount = LedgerAmount(61);
    assert_eq!(
        log.prepare_deferred(&other, Direction::Incoming).await,
        Err(TransferLogError::DuplicateId(t.id))
    );
    let rec = log
        .fulfill_deferred(&t.id, &fulfillment(1))
        .await
        .expect("fulfill");
    assert_eq!(
        rec.state,
        TransferState::Fulfilled {
            fulfillment: fulfillment(1)
        }
    );
    assert_eq!(log.sums(), sums(60, 60, 0, 0));
    // Repeats and conflicts as for the synced calls.
    assert_eq!(
        log.fulfill_deferred(&t.id, &fulfillment(1)).await,
        Ok(rec.clone())
    );
    assert!(matches!(
        log.fulfill_deferred(&t.id, &fulfillment(9)).await,
        Err(TransferLogError::AlreadyFulfilled(_))
    ));
    assert!(matches!(
        log.fulfill_deferred(&id(3), &fulfillment(3)).await,
        Err(TransferLogError::NotFound(_))
    ));
    prepare_ok(&*log, &transfer(4, 5), Direction::Incoming).await;
    log.cancel(&id(4), "expired").await.expect("cancel");
    assert!(matches!(
        log.fulfill_deferred(&id(4), &fulfillment(4)).await,
        Err(TransferLogError::AlreadyRolledBack(_))
    ));
    assert_eq!(log.sums(), sums(60, 60, 0, 0));
    assert_eq!(log.durable_sums().await, Ok(sums(60, 60, 0, 0)));
}
