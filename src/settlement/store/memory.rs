//! [`MemorySeStore`]: the engine's store in memory, for tests (`testing` feature).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use channel_modules::store::StoreError;
use channel_modules::sync::lock;

use super::{Family, Op, SeBatch, SeStore, SeTicket};

/// In-memory [`SeStore`] for tests. Reusing one instance across engine restarts keeps the data, like a disk;
/// [`MemorySeStore::fail_next_writes`] injects write failures.
#[derive(Clone, Default, Debug)]
pub struct MemorySeStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default, Debug)]
struct MemoryInner {
    data: BTreeMap<(Family, String), Vec<u8>>,
    fail_next: u64,
}

impl MemorySeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` submits fail with [`StoreError::Io`] and change nothing.
    pub fn fail_next_writes(&self, n: u64) {
        lock(&self.inner).fail_next = n;
    }

    /// Number of keys stored (both families).
    pub fn len(&self) -> usize {
        lock(&self.inner).data.len()
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SeStore for MemorySeStore {
    fn submit(&self, batch: SeBatch) -> Result<SeTicket, StoreError> {
        let mut inner = lock(&self.inner);
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError::Io("injected write failure".to_owned()));
        }
        for op in batch.ops {
            match op {
                Op::Put(f, k, v) => {
                    let key = String::from_utf8_lossy(&k).into_owned();
                    inner.data.insert((f, key), v);
                }
                Op::Delete(f, k) => {
                    let key = String::from_utf8_lossy(&k).into_owned();
                    inner.data.remove(&(f, key));
                }
            }
        }
        Ok(Box::pin(async { Ok(()) }))
    }

    fn scan_prefix(
        &self,
        family: Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = lock(&self.inner);
        Ok(inner
            .data
            .range((family, prefix.to_owned())..)
            .take_while(|((f, k), _)| *f == family && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = lock(&self.inner);
        Ok(inner
            .data
            .range((Family::Main, prefix.to_owned())..)
            .take_while(|((f, k), _)| *f == Family::Main && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|after| k.as_str() > after))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.inner)
            .data
            .get(&(Family::Main, key.to_owned()))
            .cloned())
    }
}
