//! [`ModuleLogs`]: where the transfer logs of engine accounts live.

use std::sync::Arc;

use channel_modules::store::{Limit, StoreError, TransferLog};

use crate::store::{Db, RocksStores};

/// Hands out the transfer logs of engine accounts.
pub trait ModuleLogs: Send + Sync + 'static {
    /// The transfer log `key` (`""` = main log) of `account`. Engine-mode logs have no limits.
    fn transfer_log(&self, account: &str, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;
}

#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryModuleLogs;

#[cfg(any(test, feature = "testing"))]
mod memory {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use channel_modules::memory::MemoryStores;
    use channel_modules::store::{StoreError, TransferLog};
    use channel_modules::sync::lock;

    use super::ModuleLogs;

    /// Transfer logs in memory, for tests (`testing` feature).
    #[derive(Default)]
    pub struct MemoryModuleLogs {
        stores: Mutex<HashMap<String, MemoryStores>>,
    }

    impl MemoryModuleLogs {
        /// No logs yet.
        pub fn new() -> Self {
            Self::default()
        }
    }

    impl ModuleLogs for MemoryModuleLogs {
        fn transfer_log(
            &self,
            account: &str,
            key: &str,
        ) -> Result<Arc<dyn TransferLog>, StoreError> {
            let stores = lock(&self.stores)
                .entry(account.to_owned())
                .or_insert_with(MemoryStores::unbounded)
                .clone();
            stores.transfer_log(key)
        }
    }
}

/// Transfer logs in the node's database, namespace `se/<account>`.
pub struct RocksModuleLogs {
    db: Arc<Db>,
}

impl RocksModuleLogs {
    /// Logs on `db`.
    pub fn new(db: Arc<Db>) -> Self {
        RocksModuleLogs { db }
    }
}

impl ModuleLogs for RocksModuleLogs {
    fn transfer_log(&self, account: &str, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        RocksStores::new(
            Arc::clone(&self.db),
            &format!("se/{account}"),
            Limit::Unbounded,
            Limit::Unbounded,
        )
        .transfer_log(key)
    }
}
