//! Store benchmarks, run with `cargo bench --bench store` (release build, durable: every
//! acknowledged change is in the synced WAL).
//!
//! * prepare+fulfill pairs per second on one log, with 1 and with 64 concurrent writers;
//! * start-up time (open the database and load the log) with 1,000,000 finished transfers in the log, after
//!   a clean close and after a close that leaves the memtables to WAL replay.
//!
//! Environment: `STORE_BENCH_DIR` (database folder parent; default the system temp dir),
//! `STORE_BENCH_HISTORY` (finished transfers for the start-up test; default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_modules::amount::LedgerAmount;
use channel_modules::store::{Direction, Limit, Transfer, TransferId, TransferLog};
use ilp_bridge::store::{Db, RocksStores};

const SINGLE_WRITER_PAIRS: u64 = 3_000;
const CONCURRENT_WRITERS: u64 = 64;
const PAIRS_PER_CONCURRENT_WRITER: u64 = 1_500;
const HISTORY_WRITERS: u64 = 256;
const DEFAULT_HISTORY: u64 = 1_000_000;

fn transfer(n: u64) -> Transfer {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0x80;
    Transfer {
        id: TransferId(id),
        amount: LedgerAmount(1 + n % 1000),
        execution_condition: [7; 32],
        expires_at_ms: 1_763_000_000_000 + 30_000,
        // A typical ILP v1 payment packet is ~40 bytes.
        ilp: vec![1; 40],
        custom: None,
    }
}

async fn pair(log: &dyn TransferLog, n: u64) {
    let t = transfer(n);
    let direction = if n % 2 == 0 {
        Direction::Incoming
    } else {
        Direction::Outgoing
    };
    log.prepare(&t, direction).await.expect("prepare");
    log.fulfill(&t.id, &[9; 32]).await.expect("fulfill");
}

/// Runs `writers` tasks, each doing `per_writer` pairs, and returns pairs per second.
async fn pairs_per_second(
    db: &Arc<Db>,
    log: Arc<dyn TransferLog>,
    writers: u64,
    per_writer: u64,
    base: u64,
) -> (f64, f64) {
    let groups_before = db.group_writes();
    let seq_before = db.submitted_seq();
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0..per_writer {
                    pair(&*log, base + w * per_writer + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let elapsed = start.elapsed();
    let batches = db.submitted_seq() - seq_before;
    let groups = (db.group_writes() - groups_before).max(1);
    (
        (writers * per_writer) as f64 / elapsed.as_secs_f64(),
        batches as f64 / groups as f64,
    )
}

fn open_log(db: &Arc<Db>) -> Arc<dyn TransferLog> {
    RocksStores::new(Arc::clone(db), "bench", Limit::Unbounded, Limit::Unbounded)
        .transfer_log("")
        .expect("log")
}

fn timed_open(path: &std::path::Path) -> (Duration, Duration, Arc<Db>, Arc<dyn TransferLog>) {
    let start = Instant::now();
    let db = Db::open(path).expect("reopen");
    let opened = start.elapsed();
    let log = open_log(&db);
    (opened, start.elapsed(), db, log)
}

fn main() {
    // `cargo bench` passes `--bench`; no other arguments are supported.
    let parent = std::env::var_os("STORE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let history: u64 = std::env::var("STORE_BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_HISTORY);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir_in(&parent).expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let log = open_log(&db);

        let (one, _) = pairs_per_second(&db, Arc::clone(&log), 1, SINGLE_WRITER_PAIRS, 0).await;
        println!("store/pairs_1_writer: {one:.0} pairs/s ({SINGLE_WRITER_PAIRS} pairs)");
        let (many, group) = pairs_per_second(
            &db,
            Arc::clone(&log),
            CONCURRENT_WRITERS,
            PAIRS_PER_CONCURRENT_WRITER,
            1_000_000_000,
        )
        .await;
        println!(
            "store/pairs_{CONCURRENT_WRITERS}_writers: {many:.0} pairs/s ({} pairs, {group:.1} batches per synced write)",
            CONCURRENT_WRITERS * PAIRS_PER_CONCURRENT_WRITER
        );
        drop(log);
        drop(db);

        // Start-up with a long history of finished transfers.
        let dir = tempfile::tempdir_in(&parent).expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let log = open_log(&db);
        let start = Instant::now();
        let per_writer = history / HISTORY_WRITERS;
        let (rate, _) = pairs_per_second(&db, Arc::clone(&log), HISTORY_WRITERS, per_writer, 0).await;
        // Leave a few transfers prepared, as a live node would.
        for n in 0..10 {
            log.prepare(&transfer(u64::MAX - n), Direction::Incoming)
                .await
                .expect("prepare");
        }
        let finished = per_writer * HISTORY_WRITERS;
        let expected_sums = log.sums();
        println!(
            "store/history_fill: {finished} finished transfers in {:.1} s ({rate:.0} pairs/s, {HISTORY_WRITERS} writers)",
            start.elapsed().as_secs_f64()
        );
        drop(log);
        drop(db);

        let (db_open, total, db, log) = timed_open(dir.path());
        assert_eq!(log.sums(), expected_sums);
        assert_eq!(log.prepared().await.expect("prepared").len(), 10);
        println!(
            "store/startup_clean_close: {:.1} ms (database open {:.1} ms) with {finished} finished transfers",
            total.as_secs_f64() * 1e3,
            db_open.as_secs_f64() * 1e3
        );
        // Now a close that skips the memtable flush, so the next start replays the WAL (as after a crash).
        pairs_per_second(&db, Arc::clone(&log), CONCURRENT_WRITERS, 50_000 / CONCURRENT_WRITERS, 2_000_000_000).await;
        let expected_sums = log.sums();
        db.set_flush_on_close(false);
        drop(log);
        drop(db);
        let (db_open, total, _db, log) = timed_open(dir.path());
        assert_eq!(log.sums(), expected_sums);
        println!(
            "store/startup_wal_replay: {:.1} ms (database open {:.1} ms) with {} finished transfers, memtables not flushed",
            total.as_secs_f64() * 1e3,
            db_open.as_secs_f64() * 1e3,
            finished + 50_000 / CONCURRENT_WRITERS * CONCURRENT_WRITERS
        );
    });
}
