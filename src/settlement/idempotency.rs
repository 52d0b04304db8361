//! Idempotency keys: a settle request's `Idempotency-Key` (checked, remembered with its answer, recent ones
//! cached in memory in [`IdemCache`], the others read back from the store), and the key each incoming
//! settlement is credited under ([`credit_idempotency_key`]). RFC 38's rules: docs/modern.md §1.9.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use channel_modules::sync::lock;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::engine::Engine;
use super::error::EngineError;
use super::store::{decode, keys, IdempotencyRecord};

/// Longest Idempotency-Key, in bytes.
pub(super) const IDEMPOTENCY_KEY_MAX_BYTES: usize = 256;
/// How long an idempotency key is kept after its latest request (RFC 38: at least 24 h).
pub(super) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(25 * 3600);
/// A replay refreshes the stored "latest request" time only if it is older than this (keeps replays cheap).
pub(super) const IDEMPOTENCY_REFRESH: Duration = Duration::from_secs(3600);

/// Shards of the idempotency map (spreads lock contention).
const IDEMPOTENCY_SHARDS: usize = 64;
/// Answered idempotency keys each shard keeps in memory per generation; older ones are read from the store
/// when they come back. Bounds the memory to ≈ 2 × 64 × 1,024 keys (≈ 40 MB) however high the settle rate.
const IDEMPOTENCY_CACHE_PER_SHARD: usize = 1024;

/// Checks an Idempotency-Key: 1 to [`IDEMPOTENCY_KEY_MAX_BYTES`] visible ASCII characters.
pub(super) fn validate_idempotency_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_MAX_BYTES
        || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(EngineError::BadRequest(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_BYTES} visible ASCII characters"
        )));
    }
    Ok(())
}

/// The Idempotency-Key of an incoming settlement's credit: a UUID derived from the account and the module's
/// settlement ID, so every attempt (also after a restart) uses the same key.
pub(super) fn credit_idempotency_key(account: &str, settlement_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"ilp-bridge se credit v1\n");
    h.update(account.as_bytes());
    h.update(b"\n");
    h.update(settlement_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// What the cache holds for one key.
pub(super) enum IdemEntry {
    /// A request with this key is being written; wait for it.
    Pending {
        hash: String,
        done: watch::Receiver<bool>,
    },
    /// Answered: replay.
    Done(IdempotencyRecord),
}

/// An account ID and one of its idempotency keys.
pub(super) type IdemKey = (String, String);

/// One shard of the in-memory idempotency keys: two generations of recently used keys. Lookups promote a key
/// from the previous generation; when the current one is full it becomes the previous one, and the old
/// previous generation is dropped except for its `Pending` entries (a request being written must always be
/// found, or a concurrent one with the same key could be accepted too). A dropped answered key is still in the
/// store and is read back when it is used again.
#[derive(Default)]
pub(super) struct IdemShard {
    current: HashMap<IdemKey, IdemEntry>,
    previous: HashMap<IdemKey, IdemEntry>,
}

impl IdemShard {
    pub(super) fn get_mut(&mut self, key: &IdemKey) -> Option<&mut IdemEntry> {
        if !self.current.contains_key(key) {
            let entry = self.previous.remove(key)?;
            self.insert(key.clone(), entry);
        }
        self.current.get_mut(key)
    }

    /// Inserts into the current generation (rotating first if it is full, so the key is there afterwards).
    pub(super) fn insert(&mut self, key: IdemKey, entry: IdemEntry) {
        self.previous.remove(&key);
        if self.current.len() >= IDEMPOTENCY_CACHE_PER_SHARD && !self.current.contains_key(&key) {
            self.rotate();
        }
        self.current.insert(key, entry);
    }

    pub(super) fn contains(&self, key: &IdemKey) -> bool {
        self.current.contains_key(key) || self.previous.contains_key(key)
    }

    fn rotate(&mut self) {
        let dropped = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
        for (key, entry) in dropped {
            if matches!(entry, IdemEntry::Pending { .. }) {
                self.previous.insert(key, entry);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &IdemKey) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    fn retain(&mut self, mut keep: impl FnMut(&IdemKey, &IdemEntry) -> bool) {
        self.current.retain(|k, e| keep(k, e));
        self.previous.retain(|k, e| keep(k, e));
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The idempotency keys held in memory (answered recently or being written), in [`IDEMPOTENCY_SHARDS`]
/// shards.
pub(super) struct IdemCache {
    shards: Vec<Mutex<IdemShard>>,
}

impl IdemCache {
    /// An empty cache.
    pub(super) fn new() -> Self {
        IdemCache {
            shards: (0..IDEMPOTENCY_SHARDS)
                .map(|_| Mutex::new(IdemShard::default()))
                .collect(),
        }
    }

    /// The shard that holds key `key` of account `acct`.
    pub(super) fn shard(&self, acct: &str, key: &str) -> &Mutex<IdemShard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(acct, key), &mut h);
        let i = (std::hash::Hasher::finish(&h) as usize) % IDEMPOTENCY_SHARDS;
        &self.shards[i]
    }

    /// Keeps only the entries `keep` accepts, in every shard.
    pub(super) fn retain(&self, mut keep: impl FnMut(&IdemKey, &IdemEntry) -> bool) {
        for shard in &self.shards {
            lock(shard).retain(&mut keep);
        }
    }

    /// Number of keys held.
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

impl Engine {
    /// The stored answer for idempotency key `key` of account `id`, unless it has expired.
    pub(super) fn stored_idempotency(
        &self,
        id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, EngineError> {
        let store_key = keys::idempotency(id, key);
        let Some(bytes) = self.inner.store.get_main(&store_key)? else {
            return Ok(None);
        };
        let rec: IdempotencyRecord = decode(&store_key, &bytes)?;
        Ok((rec.last_ms + IDEMPOTENCY_TTL.as_millis() as u64 >= self.now_ms()).then_some(rec))
    }

    /// Number of idempotency keys held in memory (answered recently or being written).
    pub fn idempotency_keys_in_memory(&self) -> usize {
        self.inner.idem.len()
    }

    /// Test hook (`testing` feature): forgets every answered idempotency key held in memory, as if the cache
    /// had rotated them out; they are read from the store when used again. Keys being written stay.
    #[cfg(any(test, feature = "testing"))]
    pub fn forget_cached_idempotency_keys(&self) {
        self.inner
            .idem
            .retain(|_, e| matches!(e, IdemEntry::Pending { .. }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem_key(n: usize) -> IdemKey {
        ("acct".to_owned(), format!("key-{n}"))
    }

    fn done() -> IdemEntry {
        IdemEntry::Done(IdempotencyRecord {
            input_hash: "h".to_owned(),
            status: 201,
            body: "{}".to_owned(),
            first_ms: 1,
            last_ms: 1,
        })
    }

    #[test]
    fn the_idempotency_cache_is_bounded_and_keeps_keys_being_written() {
        let mut shard = IdemShard::default();
        let (_tx, rx) = watch::channel(false);
        shard.insert(
            idem_key(0),
            IdemEntry::Pending {
                hash: "h".to_owned(),
                done: rx,
            },
        );
        for n in 1..5 * IDEMPOTENCY_CACHE_PER_SHARD {
            shard.insert(idem_key(n), done());
            assert!(shard.len() <= 2 * IDEMPOTENCY_CACHE_PER_SHARD + 1);
        }
        // The request being written survived every rotation.
        assert!(matches!(
            shard.get_mut(&idem_key(0)),
            Some(IdemEntry::Pending { .. })
        ));
        // Old answered keys left memory; recent ones are there.
        assert!(shard.get_mut(&idem_key(1)).is_none());
        assert!(shard
            .get_mut(&idem_key(5 * IDEMPOTENCY_CACHE_PER_SHARD - 1))
            .is_some());
    }

    #[test]
    fn a_used_key_is_promoted_and_survives_the_next_rotation() {
        let mut shard = IdemShard::default();
        shard.insert(idem_key(0), done());
        for n in 1..=IDEMPOTENCY_CACHE_PER_SHARD {
            shard.insert(idem_key(n), done());
        }
        // One rotation happened: key 0 is in the previous generation; using it moves it to the current one.
        assert!(shard.previous.contains_key(&idem_key(0)));
        assert!(shard.get_mut(&idem_key(0)).is_some());
        assert!(shard.current.contains_key(&idem_key(0)));
        for n in IDEMPOTENCY_CACHE_PER_SHARD + 1..=2 * IDEMPOTENCY_CACHE_PER_SHARD + 1 {
            shard.insert(idem_key(n), done());
        }
        // A second rotation happened since key 0 was used.
        assert!(
            !shard.previous.contains_key(&idem_key(1)) && !shard.current.contains_key(&idem_key(1))
        );
        assert!(
            shard.get_mut(&idem_key(0)).is_some(),
            "promoted key dropped"
        );
        shard.remove(&idem_key(0));
        assert!(shard.get_mut(&idem_key(0)).is_none());
    }

    #[test]
    fn credit_keys_are_stable_and_distinct() {
        let a = credit_idempotency_key("acct", "100");
        assert_eq!(a, credit_idempotency_key("acct", "100"));
        assert_ne!(a, credit_idempotency_key("acct", "101"));
        assert_ne!(a, credit_idempotency_key("acct2", "100"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
