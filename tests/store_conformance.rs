//! The store conformance suite (`channel_modules::testing::store_conformance`) on both of ilp-bridge's
//! TransferLog / MaxValueTracker implementations: the in-memory stores and the RocksDB stores. One test per
//! behaviour and store, named `memory::<check>` and `rocks::<check>`.

use std::sync::Arc;

use channel_modules::store::{Limit, MaxValueTracker, StoreError, TransferLog};
use channel_modules::testing::store_conformance::ConformanceStores;
use ilp_bridge::store::{Db, RocksStores};
use tempfile::TempDir;

/// The RocksDB stores of one namespace in a database of their own, removed with the value.
struct RocksEnv {
    stores: RocksStores,
    _dir: TempDir,
}

impl ConformanceStores for RocksEnv {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.stores.transfer_log(key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        self.stores.max_value_tracker(key)
    }
}

fn rocks_stores(maximum: Limit, minimum: Limit) -> Box<dyn ConformanceStores> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open db");
    Box::new(RocksEnv {
        stores: RocksStores::new(db, "peer", maximum, minimum),
        _dir: dir,
    })
}

mod memory {
    channel_modules::store_conformance_tests!(
        channel_modules::testing::store_conformance::memory_stores
    );
}

mod rocks {
    channel_modules::store_conformance_tests!(super::rocks_stores);
}
