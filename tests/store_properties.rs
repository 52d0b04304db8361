//! Property tests: random operation sequences run against the in-memory and the RocksDB transfer log side by
//! side. Both must give the same answer to every call, and after every call the sums must equal the sums of
//! the records by state (IF = Σ fulfilled incoming, IFP = IF + Σ prepared incoming, likewise outgoing). A
//! reopen in the middle of the sequence must change nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{
    Direction, Limit, Sums, Transfer, TransferId, TransferLog, TransferState,
};
use ilp_bridge::store::{Db, RocksStores};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Prepare { n: u8, amount: u64, incoming: bool },
    Fulfill { n: u8, f: u8 },
    Cancel { n: u8 },
    SetMaximum(Option<i64>),
    SetMinimum(Option<i64>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, 1u64..60, any::<bool>())
            .prop_map(|(n, amount, incoming)| Op::Prepare { n, amount, incoming }),
        3 => (0u8..24, 0u8..2).prop_map(|(n, f)| Op::Fulfill { n, f }),
        2 => (0u8..24).prop_map(|n| Op::Cancel { n }),
        1 => proptest::option::of(0i64..300).prop_map(Op::SetMaximum),
        1 => proptest::option::of(-300i64..50).prop_map(Op::SetMinimum),
        1 => Just(Op::Reopen),
    ]
}

fn id(n: u8) -> TransferId {
    TransferId([n; 16])
}

fn limit(v: Option<i64>) -> Limit {
    v.map_or(Limit::Unbounded, |v| {
        Limit::Finite(LedgerBalance(i128::from(v)))
    })
}

fn add(sum: LedgerSum, amount: LedgerAmount) -> LedgerSum {
    sum.checked_add(amount)
        .expect("sums of test amounts stay far below the maximum")
}

/// Sums recomputed from the records of every ID ever used.
async fn sums_from_records(log: &dyn TransferLog, ids: &BTreeSet<u8>) -> Sums {
    let mut s = Sums::default();
    for n in ids {
        let Some(r) = log.get(&id(*n)).await.expect("get") else {
            continue;
        };
        let amount = r.transfer.amount;
        let (fulfilled, with_prepared) = match r.direction {
            Direction::Incoming => (
                &mut s.incoming_fulfilled,
                &mut s.incoming_fulfilled_and_prepared,
            ),
            Direction::Outgoing => (
                &mut s.outgoing_fulfilled,
                &mut s.outgoing_fulfilled_and_prepared,
            ),
        };
        match r.state {
            TransferState::Prepared => *with_prepared = add(*with_prepared, amount),
            TransferState::Fulfilled { .. } => {
                *fulfilled = add(*fulfilled, amount);
                *with_prepared = add(*with_prepared, amount);
            }
            TransferState::Cancelled { .. } => {}
        }
    }
    s
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (max, min) = (
        Limit::Finite(LedgerBalance(200)),
        Limit::Finite(LedgerBalance(-150)),
    );
    let memory = MemoryStores::new(max, min).transfer_log("k").expect("log");
    let mut db = Some(Db::open(dir.path()).expect("open"));
    let open = |db: &Arc<Db>| {
        RocksStores::new(Arc::clone(db), "prop", max, min)
            .transfer_log("k")
            .expect("log")
    };
    let mut rocks = open(db.as_ref().expect("open"));
    let mut ids = BTreeSet::new();
    for op in ops {
        match &op {
            Op::Prepare {
                n,
                amount,
                incoming,
            } => {
                ids.insert(*n);
                let t = Transfer {
                    id: id(*n),
                    amount: LedgerAmount(*amount),
                    execution_condition: [*n; 32],
                    expires_at_ms: 1_000 * i64::from(*n),
                    ilp: vec![],
                    custom: None,
                };
                let d = if *incoming {
                    Direction::Incoming
                } else {
                    Direction::Outgoing
                };
                assert_eq!(
                    memory.prepare(&t, d).await,
                    rocks.prepare(&t, d).await,
                    "{op:?}"
                );
            }
            Op::Fulfill { n, f } => {
                let f = [*f; 32];
                assert_eq!(
                    memory.fulfill(&id(*n), &f).await,
                    rocks.fulfill(&id(*n), &f).await,
                    "{op:?}"
                );
            }
            Op::Cancel { n } => {
                assert_eq!(
                    memory.cancel(&id(*n), "c").await,
                    rocks.cancel(&id(*n), "c").await,
                    "{op:?}"
                );
            }
            Op::SetMaximum(v) => {
                memory.set_maximum(limit(*v)).await.expect("memory");
                rocks.set_maximum(limit(*v)).await.expect("rocks");
            }
            Op::SetMinimum(v) => {
                memory.set_minimum(limit(*v)).await.expect("memory");
                rocks.set_minimum(limit(*v)).await.expect("rocks");
            }
            Op::Reopen => {
                drop(rocks);
                drop(db.take());
                let reopened = Db::open(dir.path()).expect("reopen");
                rocks = open(&reopened);
                db = Some(reopened);
            }
        }
        assert_eq!(memory.sums(), rocks.sums(), "after {op:?}");
        assert_eq!(memory.maximum(), rocks.maximum());
        assert_eq!(memory.minimum(), rocks.minimum());
        assert_eq!(
            sums_from_records(&*rocks, &ids).await,
            rocks.sums(),
            "after {op:?}"
        );
        assert_eq!(
            sums_from_records(&*memory, &ids).await,
            memory.sums(),
            "after {op:?}"
        );
        let s = rocks.sums();
        assert!(s.incoming_fulfilled <= s.incoming_fulfilled_and_prepared);
        assert!(s.outgoing_fulfilled <= s.outgoing_fulfilled_and_prepared);
    }
    let mut a: Vec<_> = memory.prepared().await.expect("prepared");
    let mut b: Vec<_> = rocks.prepared().await.expect("prepared");
    a.sort_by_key(|r| r.transfer.id);
    b.sort_by_key(|r| r.transfer.id);
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sums_always_equal_the_records_by_state(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}
