//! Finished transfers written into a peer's main log before a benchmark, so that it runs against a store with a
//! history (`benches/harness_startup.rs`, `benches/trustline.rs --history N`). Generated stores are cached: a
//! store is generated once into a cache folder (marked complete when done) and later runs reuse it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channel_modules::amount::{LedgerAmount, LedgerSum};
use channel_modules::store::{Direction, Limit, Transfer, TransferId, TransferLog};
use ilp_bridge::store::{Db, RocksStores};
use sha2::{Digest, Sha256};

use super::fail;

/// Concurrent writers while generating (group commit makes many share one sync).
const GENERATE_CONCURRENCY: usize = 512;
/// The file that marks a cached store complete. Version 2: the store is compacted after it is generated (a
/// cache of version 1 is generated again).
pub(crate) const COMPLETE_MARKER: &str = "complete-v2";

/// Writes `transfers` transfers of amount 1 in `direction`, each prepared then fulfilled (as a trustline does),
/// into the main log of `peer` in the database at `path`. Transfer IDs are a counter in UUID v4 layout, so they
/// never meet the random IDs of a run.
pub(crate) async fn generate(path: &Path, peer: &str, direction: Direction, transfers: u64) {
    let db = Db::open(path).unwrap_or_else(|e| fail(&format!("open {}: {e}", path.display())));
    let stores = RocksStores::new(Arc::clone(&db), peer, Limit::Unbounded, Limit::Unbounded);
    let log = stores
        .rocks_log("")
        .unwrap_or_else(|e| fail(&format!("log: {e}")));
    let fulfillment: [u8; 32] = Sha256::digest(b"ilp-bridge benchmark preimage").into();
    let condition: [u8; 32] = Sha256::digest(fulfillment).into();
    let expires_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
        + Duration::from_secs(3600).as_millis() as i64;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..GENERATE_CONCURRENCY {
        let log = Arc::clone(&log);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= transfers {
                    return;
                }
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&n.to_be_bytes());
                id[6] = 0x40; // UUID version 4 layout, deterministic
                id[8] = (id[8] & 0x3f) | 0x80;
                let transfer = Transfer {
                    id: TransferId(id),
                    amount: LedgerAmount(1),
                    execution_condition: condition,
                    expires_at_ms,
                    ilp: Vec::new(),
                    custom: None,
                };
                // Deferred durability: the same records, without waiting for a sync per change (the store
                // syncs them with the next synced write or within its deferred delay; the last write below
                // waits for all of them).
                if let Err(e) = log.prepare_deferred(&transfer, direction).await {
                    fail(&format!("prepare {n}: {e}"));
                }
                if let Err(e) = log.fulfill_deferred(&transfer.id, &fulfillment).await {
                    fail(&format!("fulfill {n}: {e}"));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            fail(&format!("generator task: {e}"));
        }
    }
    // Everything written before it is durable once this synced write is.
    db.write(rocksdb::WriteBatch::default())
        .await
        .unwrap_or_else(|e| fail(&format!("final sync: {e}")));
    // A node that wrote this history over months would hold it compacted, not as a backlog of level-0 files
    // whose compaction would then run during the benchmark and be charged to it.
    db.rocks().compact_range::<&[u8], &[u8]>(None, None);
    let pending = db
        .pending_cf()
        .unwrap_or_else(|e| fail(&format!("pending family: {e}")));
    db.rocks()
        .compact_range_cf::<&[u8], &[u8]>(pending, None, None);
    let sums = log.sums();
    let fulfilled = match direction {
        Direction::Incoming => sums.incoming_fulfilled,
        Direction::Outgoing => sums.outgoing_fulfilled,
    };
    if fulfilled != LedgerSum(u128::from(transfers)) {
        fail(&format!(
            "generated store holds {fulfilled} fulfilled, expected {transfers}"
        ));
    }
}

/// Makes `to` a copy of the closed database `from` that a run may change without changing `from`: table files
/// (never modified by RocksDB once written) are hard-linked, everything else is copied.
pub(crate) fn working_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| fail(&format!("{}: {e}", to.display())));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| fail(&format!("{}: {e}", from.display())));
    for entry in entries.flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        let is_table = path.extension().is_some_and(|x| x == "sst");
        let done = if is_table {
            std::fs::hard_link(&path, &target)
                .or_else(|_| std::fs::copy(&path, &target).map(|_| ()))
        } else {
            std::fs::copy(&path, &target).map(|_| ())
        };
        done.unwrap_or_else(|e| fail(&format!("{} → {}: {e}", path.display(), target.display())));
    }
}
