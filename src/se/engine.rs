//! [`Engine`]: the settlement engine's core. The HTTP layers ([`super::api`], [`super::admin`]) only parse,
//! call a method here and map the error.
//!
//! Per account the engine runs two tasks:
//!
//! * the **settle worker** sets the module up (`connect`, retried until it succeeds, e.g. until the peer's account
//!   exists), takes accepted settle requests off the queue, converts them to module units with the leftover,
//!   and asks the module for a claim for the *cumulative* total, which it sends to the peer engine. A failure is
//!   recorded and retried with backoff; since claims are cumulative, a retry after a lost reply is harmless.
//! * the **credit worker** credits incoming settlements to the connector with one stable Idempotency-Key each,
//!   retrying with exponential backoff and jitter (capped at 1 h) until a 2xx; 409 stops and raises an alert;
//!   404 keeps retrying. Everything pending is retried at start-up.
//!
//! Invariants:
//! * A settle request is answered 201 only after its queue record is durable.
//! * `settled_total ≤ target_total`; both only grow. Every accepted unit ends in `target_total` or the leftover.
//! * An incoming increase and its credit record are written in one batch with the module's tracker update.
//! * Everything accepted (`target_total`, queue and leftover, in whole module units) stays within the module's
//!   [`ChannelModule::max_cumulative_settlement`]: a request that would pass it is refused before it is written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use channel_modules::iou::{selects_iou_module, IouModule};
use channel_modules::store::{MaxValue, StoreError};
use channel_modules::sync::lock;
use channel_modules::{build_module, ChannelContext, ChannelModule, ContextHost, ModuleError};
use num_bigint::BigUint;
use num_traits::Zero;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::amount::{convert_with_leftover, parse_quantity, Quantity, QuantityError, Scaled};
use super::client::{ClientError, ConnectorClient, CreditOutcome};
use super::config::SeConfig;
use super::host::{AccountHost, ModuleLogs, StagingHost};
use super::store::{
    decode, keys, AccountRecord, CreditRecord, CreditStatus, Family, HistoryRecord,
    IdempotencyRecord, IncomingRecord, OutgoingRecord, QueuedRequest, SeBatch, SeStore, SentRecord,
};
use super::wire::{self, Message};

/// Longest account ID, in bytes.
pub const ACCOUNT_ID_MAX_BYTES: usize = 128;
/// Longest Idempotency-Key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 256;
/// How long an idempotency key is kept after its latest request (RFC 38: at least 24 h).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(25 * 3600);
/// A replay refreshes the stored "latest request" time only if it is older than this (keeps replays cheap).
const IDEMPOTENCY_REFRESH: Duration = Duration::from_secs(3600);
/// How long settle and credit history records are kept.
pub const HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// History entries per kind and account kept in memory for the operator view.
pub const HISTORY_IN_MEMORY: usize = 1000;
/// How often expired idempotency keys and old history are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Shards of the idempotency map (spreads lock contention).
const IDEMPOTENCY_SHARDS: usize = 64;
/// Answered idempotency keys each shard keeps in memory per generation; older ones are read from the store
/// when they come back. Bounds the memory to ≈ 2 × 64 × 1,024 keys (≈ 40 MB) however high the settle rate.
const IDEMPOTENCY_CACHE_PER_SHARD: usize = 1024;
/// Idempotency records read from the store per page when purging.
const PURGE_PAGE: usize = 4096;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds a channel module from its configured name and options; [`Engine::open`] uses [`engine_module`] (the
/// stock modules), [`Engine::open_with_modules`] takes another.
pub type ModuleFactory = Arc<
    dyn Fn(&str, &serde_json::Value) -> Result<Arc<dyn ChannelModule>, ModuleError> + Send + Sync,
>;

/// The stock modules as an engine runs them: [`channel_modules::build_module`], except `iou` (or its alias
/// `trustline`), which is built with [`IouModule::for_engine`]. Here an accepted IOU credits the connector with
/// money the peer has not paid, and no transfer log bounds the peer, so the module accepts IOUs only up to its
/// `trustLimit` option, 0 (no credit) when unset.
pub fn engine_module(
    name: &str,
    options: &serde_json::Value,
) -> Result<Arc<dyn ChannelModule>, ModuleError> {
    if selects_iou_module(name) {
        return Ok(Arc::new(
            IouModule::for_engine(options)?.configured_as(name),
        ));
    }
    build_module(name, options)
}

/// Errors of engine operations; [`super::api`] maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Unknown account (404).
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// Idempotency-Key reused with another request (409).
    #[error("idempotency key {0:?} was already used with a different request")]
    KeyConflict(String),
    /// Not ready or a dependency failed; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed (503; the node must restart if the store is poisoned).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The module refused (400).
    #[error("module refused: {0}")]
    Refused(ModuleError),
    /// Start-up or configuration failure.
    #[error("{0}")]
    Config(String),
}

impl From<QuantityError> for EngineError {
    fn from(e: QuantityError) -> Self {
        EngineError::BadRequest(e.to_string())
    }
}

/// Checks an account ID: 1..=128 bytes of `[A-Za-z0-9._~-]` (URL-safe, no `/` or `:`).
pub fn validate_account_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() || id.len() > ACCOUNT_ID_MAX_BYTES {
        return Err(EngineError::BadRequest(format!(
            "account id must be 1 to {ACCOUNT_ID_MAX_BYTES} bytes"
        )));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(EngineError::BadRequest(
            "account id may only contain [A-Za-z0-9._~-]".to_owned(),
        ));
    }
    Ok(())
}

fn validate_idempotency_key(key: &str) -> Result<(), EngineError> {
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
pub fn credit_idempotency_key(account: &str, settlement_id: &str) -> String {
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

/// Backoff before attempt `attempts + 1`: `initial × 2^attempts`, capped, times a jitter factor in [0.5, 1].
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempts.min(30));
    let capped = exp.min(max);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    capped.mul_f64(jitter)
}

enum IdemEntry {
    /// A request with this key is being written; wait for it.
    Pending {
        hash: String,
        done: watch::Receiver<bool>,
    },
    /// Answered: replay.
    Done(IdempotencyRecord),
}

type IdemKey = (String, String);

/// One shard of the in-memory idempotency keys: two generations of recently used keys. Lookups promote a key
/// from the previous generation; when the current one is full it becomes the previous one, and the old
/// previous generation is dropped except for its `Pending` entries (a request being written must always be
/// found, or a concurrent one with the same key could be accepted too). A dropped answered key is still in the
/// store and is read back when it is used again.
#[derive(Default)]
struct IdemShard {
    current: HashMap<IdemKey, IdemEntry>,
    previous: HashMap<IdemKey, IdemEntry>,
}

impl IdemShard {
    fn get_mut(&mut self, key: &IdemKey) -> Option<&mut IdemEntry> {
        if !self.current.contains_key(key) {
            let entry = self.previous.remove(key)?;
            self.insert(key.clone(), entry);
        }
        self.current.get_mut(key)
    }

    /// Inserts into the current generation (rotating first if it is full, so the key is there afterwards).
    fn insert(&mut self, key: IdemKey, entry: IdemEntry) {
        self.previous.remove(&key);
        if self.current.len() >= IDEMPOTENCY_CACHE_PER_SHARD && !self.current.contains_key(&key) {
            self.rotate();
        }
        self.current.insert(key, entry);
    }

    fn contains(&self, key: &IdemKey) -> bool {
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

    fn remove(&mut self, key: &IdemKey) {
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

/// Mutable status of an account that is not persisted (for the operator view).
#[derive(Default)]
struct Status {
    connected: bool,
    connect_error: Option<String>,
    in_flight: Option<BigUint>,
    next_settle_retry_ms: Option<u64>,
}

/// Everything accepted for settlement on an account, in module units: the taken total (`target_total`, settled
/// or in flight), the queued requests, the outgoing leftover, and requests being written. Taking requests off the
/// queue only moves value between those parts, so this changes only when a request is accepted (or its write is
/// refused). Checked, with the request added, against [`ChannelModule::max_cumulative_settlement`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AcceptedTotal {
    /// Whole module units.
    units: BigUint,
    /// Below one module unit.
    leftover: Scaled,
}

impl AcceptedTotal {
    /// The total with `amount` (at any scale) added.
    fn plus(&self, amount: &Scaled, module_scale: u8) -> AcceptedTotal {
        let (units, leftover) = convert_with_leftover(&self.leftover, amount, module_scale);
        AcceptedTotal {
            units: &self.units + units,
            leftover,
        }
    }

    /// The total with `amount` taken out again; `None` if it was never added.
    fn minus(&self, amount: &Scaled, module_scale: u8) -> Option<AcceptedTotal> {
        let value = Scaled::new(self.units.clone(), module_scale)
            .add(&self.leftover)
            .checked_sub(amount)?;
        Some(AcceptedTotal::default().plus(&value, module_scale))
    }
}

/// An account a failed delete kept but could not read back (see [`Engine::delete_account`]).
struct KeptAccount {
    rec: AccountRecord,
    /// A reload from the store is running.
    reloading: bool,
}

/// A pending credit with its next attempt time (memory only: everything is due at start-up).
struct PendingCredit {
    record: CreditRecord,
    due: Instant,
}

/// One RFC 38 account and its module.
pub(crate) struct Account {
    id: String,
    created_ms: u64,
    module: Arc<dyn ChannelModule>,
    host: Arc<AccountHost>,
    ctx: ChannelContext,
    /// Configured connector scale (account override, else engine default).
    connector_scale_config: Option<u8>,
    queue: Mutex<Vec<QueuedRequest>>,
    out: Mutex<OutgoingRecord>,
    /// See [`AcceptedTotal`]; a request is checked and added under this lock, so two concurrent requests cannot
    /// both fit the module's limit only on their own.
    accepted: Mutex<AcceptedTotal>,
    status: Mutex<Status>,
    incoming: tokio::sync::Mutex<IncomingRecord>,
    /// The incoming leftover, mirrored for the operator view.
    incoming_view: Mutex<IncomingRecord>,
    credits: Mutex<BTreeMap<String, PendingCredit>>,
    history: Mutex<VecDeque<HistoryRecord>>,
    sent: Mutex<VecDeque<SentRecord>>,
    credited: Mutex<VecDeque<CreditRecord>>,
    wake_settle: Notify,
    wake_credit: Notify,
    deleted: AtomicBool,
    /// Settle requests hold it shared from their `deleted` check until they are queued; a delete holds it
    /// exclusively, so no request is written for an account the connector is told is gone.
    gate: tokio::sync::RwLock<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Account {
    /// The scale incoming settlements are credited at.
    fn credit_scale(&self) -> u8 {
        self.connector_scale_config
            .or(lock(&self.out).connector_scale)
            .unwrap_or_else(|| self.module.asset_scale())
    }
}

fn push_bounded<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    let mut r = lock(ring);
    if r.len() >= HISTORY_IN_MEMORY {
        r.pop_front();
    }
    r.push_back(item);
}

struct Inner {
    config: SeConfig,
    store: Arc<dyn SeStore>,
    logs: Arc<dyn ModuleLogs>,
    client: ConnectorClient,
    modules: ModuleFactory,
    accounts: RwLock<HashMap<String, Arc<Account>>>,
    /// Accounts kept by a failed delete whose state could not be read back from the store (see
    /// [`Engine::delete_account`]): each lookup, and a background task, tries again.
    broken: Mutex<HashMap<String, KeptAccount>>,
    create_lock: tokio::sync::Mutex<()>,
    idem: Vec<Mutex<IdemShard>>,
    seq: AtomicU64,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The settlement engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("module", &self.inner.config.module)
            .field("connector", &self.inner.config.connector)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the engine's state from `store` and starts every account's workers. Must run inside a tokio
    /// runtime. The module named in `config` is checked by building it once.
    pub async fn open(
        config: SeConfig,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
    ) -> Result<Engine, EngineError> {
        Engine::open_with_modules(config, store, logs, Arc::new(engine_module)).await
    }

    /// [`Engine::open`] with the accounts' modules built by `modules` (from `config.module` and
    /// `config.module_options`) instead of the stock [`engine_module`]: for modules outside this workspace.
    pub async fn open_with_modules(
        config: SeConfig,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
        modules: ModuleFactory,
    ) -> Result<Engine, EngineError> {
        modules(&config.module, &config.module_options)
            .map_err(|e| EngineError::Config(format!("module {:?}: {e}", config.module)))?;
        let client = ConnectorClient::new(&config.connector)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            store,
            logs,
            client,
            modules,
            accounts: RwLock::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            idem: (0..IDEMPOTENCY_SHARDS)
                .map(|_| Mutex::new(IdemShard::default()))
                .collect(),
            seq: AtomicU64::new(1),
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        let engine = Engine { inner };
        engine.load()?;
        let purge = tokio::spawn(purge_task(engine.clone()));
        lock(&engine.inner.tasks).push(purge);
        Ok(engine)
    }

    fn load(&self) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let mut max_seq = 0u64;
        let mut accounts = Vec::new();
        for (key, bytes) in store.scan_prefix(Family::Main, &keys::kind_prefix('a'))? {
            let rec: AccountRecord = decode(&key, &bytes)?;
            accounts.push(rec);
        }
        // Idempotency keys are not loaded: each is read from the store when it is used again.
        for rec in accounts {
            let acct = self.load_account(rec, &mut max_seq)?;
            self.start_account(acct);
        }
        // Time-based floor as well, so sequence numbers keep growing even if old records were purged.
        let floor = now_ms().saturating_mul(1000);
        self.inner
            .seq
            .store(max_seq.max(floor) + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Builds account `rec` from what the store holds for it (totals, leftovers, module trackers, queued
    /// requests, pending credits, recent history): at start-up, when an account is created again after a
    /// delete, and when a failed delete puts the account back. Raises `max_seq` to the highest sequence seen.
    fn load_account(
        &self,
        rec: AccountRecord,
        max_seq: &mut u64,
    ) -> Result<Arc<Account>, EngineError> {
        let store = &self.inner.store;
        let id = rec.id.clone();
        let out: OutgoingRecord = match store
            .scan_prefix(Family::Main, &keys::outgoing(&id))?
            .into_iter()
            .find(|(k, _)| *k == keys::outgoing(&id))
        {
            Some((k, v)) => decode(&k, &v)?,
            None => OutgoingRecord::default(),
        };
        let incoming: IncomingRecord = match store
            .scan_prefix(Family::Main, &keys::incoming(&id))?
            .into_iter()
            .find(|(k, _)| *k == keys::incoming(&id))
        {
            Some((k, v)) => decode(&k, &v)?,
            None => IncomingRecord::default(),
        };
        let mprefix = keys::account_prefix('m', &id);
        let mut trackers = Vec::new();
        for (k, v) in store.scan_prefix(Family::Main, &mprefix)? {
            let value: MaxValue = decode(&k, &v)?;
            trackers.push((keys::suffix(&k, &mprefix).to_owned(), value));
        }
        let mut queued = Vec::new();
        for (k, v) in store.scan_prefix(Family::Pending, &keys::account_prefix('q', &id))? {
            let q: QueuedRequest = decode(&k, &v)?;
            *max_seq = (*max_seq).max(q.seq);
            queued.push(q);
        }
        let mut credits = Vec::new();
        for (k, v) in store.scan_prefix(Family::Pending, &keys::account_prefix('c', &id))? {
            let c: CreditRecord = decode(&k, &v)?;
            credits.push(c);
        }
        let acct = self.build_account(&id, rec.created_ms, trackers)?;
        let module_scale = acct.module.asset_scale();
        let mut accepted = AcceptedTotal {
            units: out.target_total.clone(),
            leftover: Scaled::zero(module_scale),
        }
        .plus(&out.leftover, module_scale);
        for q in &queued {
            accepted = accepted.plus(&q.amount, module_scale);
        }
        *lock(&acct.accepted) = accepted;
        *lock(&acct.out) = out;
        *acct
            .incoming
            .try_lock()
            .map_err(|_| EngineError::Config("account state locked during load".to_owned()))? =
            incoming.clone();
        *lock(&acct.incoming_view) = incoming;
        *lock(&acct.queue) = queued;
        {
            let mut map = lock(&acct.credits);
            for c in credits {
                map.insert(
                    c.idempotency_key.clone(),
                    PendingCredit {
                        record: c,
                        due: Instant::now(),
                    },
                );
            }
        }
        for (kind, ring) in [('h', 0u8), ('s', 1), ('r', 2)] {
            let rows = store.scan_prefix(Family::Main, &keys::account_prefix(kind, &id))?;
            let start = rows.len().saturating_sub(HISTORY_IN_MEMORY);
            for (k, v) in rows.iter().skip(start) {
                if let Some(seq) = keys::split_account(k).and_then(|(_, s)| keys::parse_seq(s)) {
                    *max_seq = (*max_seq).max(seq);
                }
                match ring {
                    0 => push_bounded(&acct.history, decode(k, v)?),
                    1 => push_bounded(&acct.sent, decode(k, v)?),
                    _ => push_bounded(&acct.credited, decode(k, v)?),
                }
            }
        }
        Ok(acct)
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn shard(&self, acct: &str, key: &str) -> &Mutex<IdemShard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(acct, key), &mut h);
        let i = (std::hash::Hasher::finish(&h) as usize) % IDEMPOTENCY_SHARDS;
        &self.inner.idem[i]
    }

    fn build_account(
        &self,
        id: &str,
        created_ms: u64,
        trackers: Vec<(String, MaxValue)>,
    ) -> Result<Arc<Account>, EngineError> {
        let cfg = &self.inner.config;
        let module = (self.inner.modules)(&cfg.module, &cfg.module_options)
            .map_err(|e| EngineError::Config(format!("module {:?}: {e}", cfg.module)))?;
        let host = Arc::new(AccountHost::new(
            id,
            Arc::clone(&self.inner.store),
            Arc::clone(&self.inner.logs),
            self.inner.client.clone(),
            trackers,
        ));
        let ctx = ChannelContext::new(
            Arc::clone(&host) as Arc<dyn ContextHost>,
            cfg.module_options.clone(),
            id,
        );
        let connector_scale_config = cfg
            .account_connector_scales
            .get(id)
            .copied()
            .or(cfg.connector_scale);
        Ok(Arc::new(Account {
            id: id.to_owned(),
            created_ms,
            module,
            host,
            ctx,
            connector_scale_config,
            queue: Mutex::new(Vec::new()),
            out: Mutex::new(OutgoingRecord::default()),
            accepted: Mutex::new(AcceptedTotal::default()),
            status: Mutex::new(Status::default()),
            incoming: tokio::sync::Mutex::new(IncomingRecord::default()),
            incoming_view: Mutex::new(IncomingRecord::default()),
            credits: Mutex::new(BTreeMap::new()),
            history: Mutex::new(VecDeque::new()),
            sent: Mutex::new(VecDeque::new()),
            credited: Mutex::new(VecDeque::new()),
            wake_settle: Notify::new(),
            wake_credit: Notify::new(),
            deleted: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            tasks: Mutex::new(Vec::new()),
        }))
    }

    fn start_account(&self, acct: Arc<Account>) {
        acct.wake_settle.notify_one();
        acct.wake_credit.notify_one();
        let s = tokio::spawn(settle_worker(self.clone(), Arc::clone(&acct)));
        let c = tokio::spawn(credit_worker(self.clone(), Arc::clone(&acct)));
        lock(&acct.tasks).extend([s, c]);
        self.inner
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(acct.id.clone(), acct);
    }

    fn account(&self, id: &str) -> Result<Arc<Account>, EngineError> {
        match self.live_account(id) {
            Some(acct) => Ok(acct),
            None => self.reload_kept_account(id),
        }
    }

    fn live_account(&self, id: &str) -> Option<Arc<Account>> {
        self.inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Tries again to read back an account a failed delete kept but could not read back (see
    /// [`Engine::delete_account`]); starts it on success. [`EngineError::AccountNotFound`] for any other ID.
    /// One reload per account at a time: a caller that finds one running gets [`EngineError::Unavailable`]
    /// at once. The store is read without holding the engine-wide `broken` lock, so lookups of other IDs do not
    /// wait for it.
    fn reload_kept_account(&self, id: &str) -> Result<Arc<Account>, EngineError> {
        let rec = {
            let mut broken = lock(&self.inner.broken);
            let Some(kept) = broken.get_mut(id) else {
                drop(broken);
                return self
                    .live_account(id)
                    .ok_or_else(|| EngineError::AccountNotFound(id.to_owned()));
            };
            if kept.reloading {
                return Err(EngineError::Unavailable(format!(
                    "account {id} was kept by a failed delete and is being read back from the store"
                )));
            }
            kept.reloading = true;
            kept.rec.clone()
        };
        let loaded = self.load_account(rec, &mut 0);
        let mut broken = lock(&self.inner.broken);
        match loaded {
            Ok(acct) => {
                broken.remove(id);
                // Started under the lock, so no caller finds the account neither kept nor live.
                self.start_account(Arc::clone(&acct));
                drop(broken);
                tracing::info!(account = %id, "kept account read back from the store");
                Ok(acct)
            }
            Err(error) => {
                if let Some(kept) = broken.get_mut(id) {
                    kept.reloading = false;
                }
                Err(EngineError::Unavailable(format!(
                    "account {id} was kept by a failed delete but cannot be read back from the store \
                     (retried in the background): {error}"
                )))
            }
        }
    }

    /// Retries [`Engine::reload_kept_account`] with backoff until it succeeds, the account is no longer waiting
    /// for it, or the engine shuts down.
    fn spawn_reload(&self, id: &str) {
        let engine = self.clone();
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            let mut shutdown = engine.inner.shutdown.subscribe();
            let mut attempts = 0u32;
            loop {
                let d = backoff(
                    attempts,
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                attempts = attempts.saturating_add(1);
                if !wait(&Notify::new(), Some(d), &mut shutdown).await {
                    return;
                }
                if !lock(&engine.inner.broken).contains_key(&id) {
                    return;
                }
                match engine.reload_kept_account(&id) {
                    Ok(_) => return,
                    Err(error) => {
                        tracing::warn!(account = %id, %error, attempts, "reading a kept account back failed")
                    }
                }
            }
        });
        lock(&self.inner.tasks).push(task);
    }

    /// The configuration.
    pub fn config(&self) -> &SeConfig {
        &self.inner.config
    }

    /// IDs of every account (also those a failed delete kept and that are still being read back).
    pub fn account_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.extend(lock(&self.inner.broken).keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// `POST /accounts`: creates the account (a UUID if `id` is `None`) and returns its ID. Creating an existing
    /// account succeeds and changes nothing. The module's setup runs in the background and is retried.
    ///
    /// The work runs in its own task, so a client that hangs up mid-request cannot leave the account stored but
    /// not started.
    pub async fn create_account(&self, id: Option<String>) -> Result<String, EngineError> {
        let engine = self.clone();
        tokio::spawn(async move { engine.create_account_inner(id).await })
            .await
            .map_err(|e| EngineError::Unavailable(format!("create task failed: {e}")))?
    }

    async fn create_account_inner(&self, id: Option<String>) -> Result<String, EngineError> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
        validate_account_id(&id)?;
        let _guard = self.inner.create_lock.lock().await;
        match self.account(&id) {
            Ok(_) => return Ok(id),
            Err(EngineError::AccountNotFound(_)) => {}
            // Kept by a failed delete and not readable yet: creating it again would read the same records.
            Err(e) => return Err(e),
        }
        let rec = AccountRecord {
            id: id.clone(),
            created_ms: now_ms(),
        };
        // An ID deleted earlier keeps its cumulative totals and module records (see `delete_account`), so
        // it resumes where it stopped instead of restarting from zero against a peer that did not.
        let acct = self.load_account(rec.clone(), &mut 0)?;
        let mut batch = SeBatch::new();
        batch.put_json(Family::Main, keys::account(&id), &rec)?;
        self.inner.store.submit(batch)?.await?;
        tracing::info!(account = %id, "settlement account created");
        self.start_account(acct);
        Ok(id)
    }

    /// `DELETE /accounts/{id}`: stops the account's workers, disconnects the module and deletes the account,
    /// its queued requests, pending credits, idempotency keys and history. Amounts still queued or uncredited
    /// are logged and dropped. The cumulative totals, leftovers and module records stay: the peer's engine
    /// keeps its own, so an account created again under this ID resumes from them (starting again from zero
    /// would make the peer ignore our new claims, or make an eth-payment payee credit old payments twice).
    ///
    /// If the module's `disconnect` fails (e.g. a payee cannot redeem its best claim because the ledger is
    /// unreachable), nothing is deleted: the module's records may be money not yet collected. The account is
    /// rebuilt from the store and keeps running, and the call fails with [`EngineError::Unavailable`];
    /// deleting again later retries. If even reading the account back fails (the store failing), the account
    /// stays listed and every call for it reads it back first (failing with [`EngineError::Unavailable`] while
    /// the store does), and a background task retries with backoff; the error says so.
    ///
    /// The work runs in its own task: a client that hangs up while the module disconnects (which may wait on
    /// a ledger) cannot leave the account half deleted, unreachable but still stored.
    pub async fn delete_account(&self, id: &str) -> Result<(), EngineError> {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.delete_account_inner(&id).await })
            .await
            .map_err(|e| EngineError::Unavailable(format!("delete task failed: {e}")))?
    }

    async fn delete_account_inner(&self, id: &str) -> Result<(), EngineError> {
        let _guard = self.inner.create_lock.lock().await;
        let acct = self.account(id)?;
        // No settle request is between its `deleted` check and its queue while we hold this.
        let gate = acct.gate.write().await;
        acct.deleted.store(true, Ordering::SeqCst);
        self.inner
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        let tasks: Vec<JoinHandle<()>> = lock(&acct.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        // An incoming claim being handled finishes first (later ones see `deleted`), so the module closes with
        // the latest best claim.
        let incoming_guard = acct.incoming.lock().await;
        // Barrier: a stopped worker may have left a write in the queue; once this empty batch is durable, so
        // is every earlier one, and the store holds the account's true state.
        self.inner.store.submit(SeBatch::new())?.await?;
        if let Err(error) = acct.module.disconnect(&acct.ctx).await {
            tracing::error!(account = %id, %error, "module disconnect failed; account kept");
            drop(incoming_guard);
            drop(gate);
            // The old instance stays `deleted` (late callers holding it are refused); the account goes on from
            // what the store holds, not from memory a stopped worker may have left behind.
            let rec = AccountRecord {
                id: id.to_owned(),
                created_ms: acct.created_ms,
            };
            match self.load_account(rec.clone(), &mut 0) {
                Ok(fresh) => self.start_account(fresh),
                Err(reload_error) => {
                    tracing::error!(account = %id, error = %reload_error,
                        "reading the kept account back from the store failed; retrying in the background");
                    lock(&self.inner.broken).insert(
                        id.to_owned(),
                        KeptAccount {
                            rec,
                            reloading: false,
                        },
                    );
                    self.spawn_reload(id);
                    return Err(EngineError::Unavailable(format!(
                        "module disconnect failed, account kept: {error}; reading the account back from the \
                         store failed too ({reload_error}): it answers 503 until a retry (on every call and \
                         in the background) succeeds"
                    )));
                }
            }
            return Err(EngineError::Unavailable(format!(
                "module disconnect failed, account kept: {error}"
            )));
        }
        let view = self.view(&acct);
        if view.queued.amount != "0" || view.in_flight.amount != "0" || !view.uncredited.is_empty()
        {
            tracing::warn!(account = %id, queued = %view.queued.amount, in_flight = %view.in_flight.amount,
                uncredited = view.uncredited.len(), "account deleted with unsettled or uncredited amounts");
        }
        let mut batch = SeBatch::new();
        batch.delete(Family::Main, keys::account(id));
        for kind in ['k', 'h', 's', 'r'] {
            for (k, _) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix(kind, id))?
            {
                batch.delete(Family::Main, k);
            }
        }
        for kind in ['q', 'c'] {
            for (k, _) in self
                .inner
                .store
                .scan_prefix(Family::Pending, &keys::account_prefix(kind, id))?
            {
                batch.delete(Family::Pending, k);
            }
        }
        self.inner.store.submit(batch)?.await?;
        for shard in &self.inner.idem {
            lock(shard).retain(|(a, _), _| a != id);
        }
        tracing::info!(account = %id, "settlement account deleted");
        Ok(())
    }

    /// `POST /accounts/{id}/settlements`: validates, dedupes by Idempotency-Key, persists the request and
    /// returns the response to send (status and JSON body). Settlement happens asynchronously.
    ///
    /// The work runs in its own task, so a client that hangs up mid-request cannot leave a key half-recorded.
    pub async fn accept_settlement(
        &self,
        id: &str,
        key: Option<String>,
        body: Bytes,
    ) -> Result<(u16, String), EngineError> {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.accept_settlement_inner(&id, key, &body).await })
            .await
            .map_err(|e| EngineError::Unavailable(format!("settle task failed: {e}")))?
    }

    async fn accept_settlement_inner(
        &self,
        id: &str,
        key: Option<String>,
        body: &[u8],
    ) -> Result<(u16, String), EngineError> {
        let acct = self.account(id)?;
        let amount = parse_quantity(body)?;
        let module_scale = acct.module.asset_scale();
        let (units, _) = convert_with_leftover(&Scaled::zero(module_scale), &amount, module_scale);
        if units > BigUint::from(u64::MAX) {
            // Modules settle at most 2^64 − 1 units at once; a larger amount would be accepted and then block
            // every later settlement of the account.
            return Err(EngineError::BadRequest(format!(
                "amount {} at scale {} is more than the module can settle (2^64 - 1 units at scale {module_scale})",
                amount.amount, amount.scale
            )));
        }
        let quantity = amount.to_quantity();
        let response_body = serde_json::to_string(&quantity)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let Some(key) = key else {
            self.enqueue(&acct, None, amount, None).await?;
            return Ok((201, response_body));
        };
        validate_idempotency_key(&key)?;
        let hash = {
            let mut h = Sha256::new();
            h.update(id.as_bytes());
            h.update(b"\n");
            h.update(quantity.amount.as_bytes());
            h.update(b"\n");
            h.update([quantity.scale]);
            hex::encode(h.finalize())
        };
        let map_key = (id.to_owned(), key.clone());
        let done_tx = loop {
            let mut wait = {
                let mut shard = lock(self.shard(id, &key));
                if shard.get_mut(&map_key).is_none() {
                    // Not in memory: answered long enough ago to have left the cache, or new. Read under the
                    // shard lock, so no request with this key can start in between.
                    if let Some(rec) = self.stored_idempotency(id, &key)? {
                        shard.insert(map_key.clone(), IdemEntry::Done(rec));
                    }
                }
                match shard.get_mut(&map_key) {
                    Some(IdemEntry::Done(rec)) => {
                        if rec.input_hash != hash {
                            return Err(EngineError::KeyConflict(key));
                        }
                        let now = now_ms();
                        let refresh = now.saturating_sub(rec.last_ms)
                            > IDEMPOTENCY_REFRESH.as_millis() as u64;
                        rec.last_ms = now;
                        let reply = (rec.status, rec.body.clone());
                        // Not while the account is being deleted, or after: the refresh would outlive the
                        // delete's removal of the account's keys (a try: a delete holds the gate throughout).
                        let gate = acct
                            .gate
                            .try_read()
                            .ok()
                            .filter(|_| !acct.deleted.load(Ordering::SeqCst));
                        if refresh && gate.is_some() {
                            let mut batch = SeBatch::new();
                            batch.put_json(Family::Main, keys::idempotency(id, &key), &*rec)?;
                            // Best effort: the replay is answered either way; the write keeps the key alive
                            // across restarts.
                            drop(self.inner.store.submit(batch));
                        }
                        return Ok(reply);
                    }
                    Some(IdemEntry::Pending { hash: h, done }) => {
                        if *h != hash {
                            return Err(EngineError::KeyConflict(key));
                        }
                        done.clone()
                    }
                    None => {
                        let (tx, rx) = watch::channel(false);
                        shard.insert(
                            map_key.clone(),
                            IdemEntry::Pending {
                                hash: hash.clone(),
                                done: rx,
                            },
                        );
                        break tx;
                    }
                }
            };
            // Another request with the same key is being written: wait for it, then look again.
            let _ = wait.wait_for(|done| *done).await;
        };
        let now = now_ms();
        let rec = IdempotencyRecord {
            input_hash: hash,
            status: 201,
            body: response_body.clone(),
            first_ms: now,
            last_ms: now,
        };
        let result = self
            .enqueue(&acct, Some(key.clone()), amount, Some(&rec))
            .await;
        {
            let mut shard = lock(self.shard(id, &key));
            match &result {
                Ok(()) => {
                    shard.insert(map_key, IdemEntry::Done(rec));
                }
                Err(_) => {
                    shard.remove(&map_key);
                }
            }
        }
        let _ = done_tx.send(true);
        result.map(|()| (201, response_body))
    }

    /// The stored answer for idempotency key `key` of account `id`, unless it has expired.
    fn stored_idempotency(
        &self,
        id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, EngineError> {
        let store_key = keys::idempotency(id, key);
        let Some(bytes) = self.inner.store.get_main(&store_key)? else {
            return Ok(None);
        };
        let rec: IdempotencyRecord = decode(&store_key, &bytes)?;
        Ok((rec.last_ms + IDEMPOTENCY_TTL.as_millis() as u64 >= now_ms()).then_some(rec))
    }

    /// Number of idempotency keys held in memory (answered recently or being written).
    pub fn idempotency_keys_in_memory(&self) -> usize {
        self.inner.idem.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Test hook: forgets every answered idempotency key held in memory, as if the cache had rotated them
    /// out; they are read from the store when used again. Keys being written stay.
    pub fn forget_cached_idempotency_keys(&self) {
        for shard in &self.inner.idem {
            lock(shard).retain(|_, e| matches!(e, IdemEntry::Pending { .. }));
        }
    }

    async fn enqueue(
        &self,
        acct: &Arc<Account>,
        key: Option<String>,
        amount: Scaled,
        idem: Option<&IdempotencyRecord>,
    ) -> Result<(), EngineError> {
        let req = QueuedRequest {
            seq: self.next_seq(),
            key: key.clone(),
            amount,
            accepted_ms: now_ms(),
        };
        let _gate = acct.gate.read().await;
        if acct.deleted.load(Ordering::SeqCst) {
            // Checked before anything is written: a request the connector is told failed is never settled.
            return Err(EngineError::AccountNotFound(acct.id.clone()));
        }
        let mut batch = SeBatch::new();
        batch.put_json(Family::Pending, keys::queued(&acct.id, req.seq), &req)?;
        if let (Some(key), Some(rec)) = (&key, idem) {
            batch.put_json(Family::Main, keys::idempotency(&acct.id, key), rec)?;
        }
        let module_scale = acct.module.asset_scale();
        {
            // Checked and counted in one step, before anything is written: concurrent requests of the account
            // each see the ones before them (replays of an accepted key never get here).
            let mut accepted = lock(&acct.accepted);
            let after = accepted.plus(&req.amount, module_scale);
            if let Some(limit) = acct.module.max_cumulative_settlement() {
                if after.units > limit {
                    return Err(EngineError::BadRequest(format!(
                        "amount {} at scale {} would take the account's cumulative settlements to {} units at \
                         scale {module_scale}, more than the module can ever settle ({limit}); {} are already \
                         settled, in flight or queued",
                        req.amount.amount, req.amount.scale, after.units, accepted.units
                    )));
                }
            }
            *accepted = after;
        }
        let written: Result<(), EngineError> = match self.inner.store.submit(batch) {
            Ok(ticket) => ticket.await.map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            // Not accepted: give the share back, so that a retry is answered with the store's error (503), not
            // with a limit this request never used. A write that failed after it was queued may still be on
            // disk, but a failed write poisons the store: nothing else is written before the restart, which
            // rebuilds the total from what is stored.
            let mut accepted = lock(&acct.accepted);
            if let Some(before) = accepted.minus(&req.amount, module_scale) {
                *accepted = before;
            }
            return Err(e);
        }
        lock(&acct.queue).push(req);
        acct.wake_settle.notify_one();
        Ok(())
    }

    /// `POST /accounts/{id}/messages`: handles a message from the peer engine and returns the reply bytes.
    pub async fn handle_message(&self, id: &str, body: Bytes) -> Result<Vec<u8>, EngineError> {
        let acct = self.account(id)?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let msg = wire::parse(&body).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        match msg {
            Message::Claim(claim) => self.handle_claim(&acct, claim).await,
            Message::Rpc { method, args } => {
                let result = acct.module.handle_rpc(&acct.ctx, &method, args).await;
                if let Err(error) = &result {
                    tracing::debug!(account = %acct.id, %method, %error, "module rpc failed");
                }
                Ok(wire::rpc_reply(&result))
            }
            Message::Other { kind, body } => {
                match acct.module.handle_rpc(&acct.ctx, &kind, body).await {
                    Ok(v) => Ok(v.to_string().into_bytes()),
                    Err(ModuleError::UnknownMethod(_)) => Err(EngineError::BadRequest(format!(
                        "unknown message type {kind:?}"
                    ))),
                    Err(e) => Err(EngineError::Refused(e)),
                }
            }
        }
    }

    async fn handle_claim(
        &self,
        acct: &Arc<Account>,
        claim: channel_modules::Claim,
    ) -> Result<Vec<u8>, EngineError> {
        if !lock(&acct.status).connected {
            return Err(EngineError::Unavailable(
                "account setup has not finished; retry later".to_owned(),
            ));
        }
        // One incoming claim per account at a time: the module's tracker and our records move together.
        let mut incoming = acct.incoming.lock().await;
        if acct.deleted.load(Ordering::SeqCst) {
            return Err(EngineError::AccountNotFound(acct.id.clone()));
        }
        let staging = Arc::new(StagingHost::new(Arc::clone(&acct.host)));
        let ctx = ChannelContext::new(
            Arc::clone(&staging) as Arc<dyn ContextHost>,
            self.inner.config.module_options.clone(),
            acct.id.as_str(),
        );
        let credit = match acct.module.handle_incoming_claim(&ctx, Some(&claim)).await {
            Ok(c) => c,
            Err(e @ (ModuleError::NotAccepted(_) | ModuleError::InvalidFields(_))) => {
                tracing::warn!(account = %acct.id, error = %e, "incoming claim refused");
                return Err(EngineError::Refused(e));
            }
            Err(e) => {
                tracing::warn!(account = %acct.id, error = %e, "incoming claim failed");
                return Err(EngineError::Unavailable(e.to_string()));
            }
        };
        let Some(credit) = credit else {
            staging.commit(SeBatch::new(), &*self.inner.store).await?;
            return Ok(wire::ack("0", acct.credit_scale()));
        };
        let scale = acct.credit_scale();
        let module_amount = Scaled::new(credit.amount.clone(), acct.module.asset_scale());
        let (units, leftover) = convert_with_leftover(&incoming.leftover, &module_amount, scale);
        let new_incoming = IncomingRecord {
            leftover,
            received_total: &incoming.received_total + &credit.amount,
        };
        let mut batch = SeBatch::new();
        batch.put_json(Family::Main, keys::incoming(&acct.id), &new_incoming)?;
        let mut record = None;
        if !units.is_zero() {
            let key = credit_idempotency_key(&acct.id, &credit.settlement_id);
            if lock(&acct.credits).contains_key(&key) {
                // Equal settlement IDs must mean the same settlement; a module reporting a second increase
                // under one ID is a module bug. Refuse rather than merge two credits under one key.
                return Err(EngineError::Unavailable(format!(
                    "settlement id {:?} is already pending",
                    credit.settlement_id
                )));
            }
            let rec = CreditRecord {
                settlement_id: credit.settlement_id.clone(),
                idempotency_key: key.clone(),
                amount: Scaled::new(units.clone(), scale),
                status: CreditStatus::Pending,
                attempts: 0,
                last_error: None,
                received_ms: now_ms(),
                done_ms: None,
            };
            batch.put_json(Family::Pending, keys::credit(&acct.id, &key), &rec)?;
            record = Some(rec);
        }
        staging.commit(batch, &*self.inner.store).await?;
        *lock(&acct.incoming_view) = new_incoming.clone();
        *incoming = new_incoming;
        tracing::info!(account = %acct.id, increase = %credit.amount, settlement_id = %credit.settlement_id,
            credit = %units, scale, "incoming settlement");
        if let Some(rec) = record {
            lock(&acct.credits).insert(
                rec.idempotency_key.clone(),
                PendingCredit {
                    record: rec,
                    due: Instant::now(),
                },
            );
            acct.wake_credit.notify_one();
        }
        Ok(wire::ack(&units.to_string(), scale))
    }

    /// Admin: retry every pending settlement and credit of the account now.
    pub fn retry_now(&self, id: &str) -> Result<(), EngineError> {
        let acct = self.account(id)?;
        for c in lock(&acct.credits).values_mut() {
            c.due = Instant::now();
        }
        acct.wake_settle.notify_one();
        acct.wake_credit.notify_one();
        Ok(())
    }

    /// Admin: the operator view of one account.
    pub fn account_view(&self, id: &str) -> Result<AccountView, EngineError> {
        let acct = self.account(id)?;
        Ok(self.view(&acct))
    }

    /// Admin: the history of one account (most recent last).
    pub fn account_history(&self, id: &str) -> Result<HistoryView, EngineError> {
        let acct = self.account(id)?;
        let out = lock(&acct.out).clone();
        let sent: Vec<SentRecord> = lock(&acct.sent).iter().cloned().collect();
        let mut settlements: Vec<SettlementView> = lock(&acct.history)
            .iter()
            .map(|h| {
                let state = if h.target_total_after <= out.settled_total {
                    "settled"
                } else {
                    "in_flight"
                };
                let claim_id = if state == "settled" {
                    sent.iter()
                        .find(|s| s.total >= h.target_total_after)
                        .map(|s| s.claim_id.clone())
                } else {
                    None
                };
                SettlementView {
                    seq: h.request.seq,
                    idempotency_key: h.request.key.clone(),
                    amount: h.request.amount.to_quantity(),
                    accepted_ms: h.request.accepted_ms,
                    module_units: h.module_units.to_string(),
                    cumulative_target: Some(h.target_total_after.to_string()),
                    state,
                    claim_id,
                }
            })
            .collect();
        settlements.extend(lock(&acct.queue).iter().map(|q| SettlementView {
            seq: q.seq,
            idempotency_key: q.key.clone(),
            amount: q.amount.to_quantity(),
            accepted_ms: q.accepted_ms,
            module_units: "0".to_owned(),
            cumulative_target: None,
            state: "queued",
            claim_id: None,
        }));
        let mut credits: Vec<CreditRecord> = lock(&acct.credited).iter().cloned().collect();
        credits.extend(lock(&acct.credits).values().map(|p| p.record.clone()));
        Ok(HistoryView {
            account: acct.id.clone(),
            settlements,
            claims_sent: sent,
            credits,
        })
    }

    /// `GET /identities` (admin): every ledger identity the engine's accounts hold or contest.
    pub fn identities(&self) -> Result<Vec<IdentityView>, EngineError> {
        let records = super::host::identity_records_in(self.inner.store.as_ref())
            .map_err(identity_store_error)?;
        Ok(records
            .into_iter()
            .map(|(identity, record)| IdentityView {
                identity,
                record: record.to_json(),
            })
            .collect())
    }

    /// `PUT /identities/{identity}` (admin): gives `identity` (one some account holds or contests) to account
    /// `id` as if configured for it, whatever held or contested it (see `README.md`, ledger identities). Only `id` is credited on its behalf from its
    /// next claim on; any other account is refused.
    pub async fn assign_identity(&self, identity: &str, id: &str) -> Result<(), EngineError> {
        if identity.is_empty() || identity.len() > IDENTITY_MAX_BYTES || identity.contains('/') {
            return Err(EngineError::BadRequest(format!(
                "identity must be 1..={IDENTITY_MAX_BYTES} bytes without '/'"
            )));
        }
        self.account(id)?;
        // Only an identity some account claimed: a mistyped one (an Ethereum address in mixed case, say) would
        // otherwise be recorded, answered 204, and settle nothing.
        if super::host::identity_record_in(self.inner.store.as_ref(), identity)
            .map_err(identity_store_error)?
            .is_none()
        {
            return Err(EngineError::BadRequest(format!(
                "no account holds or contests {identity:?}; use an identity exactly as GET /identities lists it"
            )));
        }
        super::host::assign_identity_in(self.inner.store.as_ref(), identity, id)
            .await
            .map_err(identity_store_error)
    }

    /// Admin: every 409 alert (incoming settlements the connector refused as already credited).
    pub fn alerts(&self) -> Vec<AlertView> {
        let accounts: Vec<Arc<Account>> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for a in accounts {
            for p in lock(&a.credits).values() {
                if p.record.status == CreditStatus::Conflict {
                    out.push(AlertView {
                        account: a.id.clone(),
                        kind: "credit_conflict",
                        credit: p.record.clone(),
                    });
                }
            }
        }
        out
    }

    fn view(&self, acct: &Account) -> AccountView {
        let out = lock(&acct.out).clone();
        let status = lock(&acct.status);
        let module_scale = acct.module.asset_scale();
        let mut queued = out.leftover.clone();
        let mut queued_requests = 0;
        for q in lock(&acct.queue).iter() {
            queued = queued.add(&q.amount);
            queued_requests += 1;
        }
        let in_flight = if out.target_total > out.settled_total {
            &out.target_total - &out.settled_total
        } else {
            BigUint::zero()
        };
        let incoming = lock(&acct.incoming_view).clone();
        let uncredited: Vec<CreditRecord> = lock(&acct.credits)
            .values()
            .map(|p| p.record.clone())
            .collect();
        AccountView {
            id: acct.id.clone(),
            created_ms: acct.created_ms,
            module: acct.module.name().to_owned(),
            module_scale,
            connector_scale: acct.connector_scale_config.or(out.connector_scale),
            connected: status.connected,
            settled: Scaled::new(out.settled_total.clone(), module_scale).to_quantity(),
            requested: Scaled::new(out.target_total.clone(), module_scale).to_quantity(),
            queued: queued.to_quantity(),
            queued_requests,
            in_flight: Scaled::new(in_flight, module_scale).to_quantity(),
            leftover: out.leftover.to_quantity(),
            received: Scaled::new(incoming.received_total, module_scale).to_quantity(),
            incoming_leftover: incoming.leftover.to_quantity(),
            uncredited,
            last_error: out
                .last_error
                .clone()
                .or_else(|| status.connect_error.clone()),
            attempts: out.attempts,
            next_retry_ms: status.next_settle_retry_ms,
            last_claim_id: out.last_claim_id.clone(),
        }
    }

    /// Stops every worker (in-flight HTTP calls are abandoned; everything accepted is durable and resumes at the
    /// next start).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let accounts: Vec<Arc<Account>> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut handles = Vec::new();
        for a in &accounts {
            handles.extend(lock(&a.tasks).drain(..));
        }
        handles.extend(lock(&self.inner.tasks).drain(..));
        for h in handles {
            h.abort();
            let _ = h.await;
        }
    }

    /// Purges idempotency keys past [`IDEMPOTENCY_TTL`] and history past [`HISTORY_RETENTION`].
    pub async fn purge_expired(&self) -> Result<(), EngineError> {
        let now = now_ms();
        let ttl = IDEMPOTENCY_TTL.as_millis() as u64;
        for shard in &self.inner.idem {
            lock(shard)
                .retain(|_, e| !matches!(e, IdemEntry::Done(rec) if rec.last_ms + ttl < now));
        }
        // The store holds every answered key (memory only the recent ones): page through it, so keys that
        // expired while the engine was down go too, without reading them all into memory at once.
        let prefix = keys::kind_prefix('k');
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .scan_page(&prefix, after.as_deref(), PURGE_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == PURGE_PAGE;
            let mut tickets = Vec::new();
            for (k, v) in page {
                let rec: IdempotencyRecord = match decode(&k, &v) {
                    Ok(rec) => rec,
                    Err(error) => {
                        // One bad row must not stop the purge of every key after it.
                        tracing::warn!(key = %k, %error, "undecodable idempotency record skipped by the purge");
                        continue;
                    }
                };
                if rec.last_ms + ttl >= now {
                    continue;
                }
                let Some((acct, idem_key)) = keys::split_account(&k) else {
                    continue;
                };
                // Decide and delete under the key's shard lock: a request reusing the key holds an entry
                // there (it is skipped) or starts after the delete is queued (its write lands after it), and
                // the re-read sees any newer answer that has already left the cache.
                let shard = lock(self.shard(acct, idem_key));
                if shard.contains(&(acct.to_owned(), idem_key.to_owned()))
                    || self.stored_idempotency(acct, idem_key)?.is_some()
                {
                    continue;
                }
                let mut delete = SeBatch::new();
                delete.delete(Family::Main, k.clone());
                tickets.push(self.inner.store.submit(delete)?);
                drop(shard);
            }
            for ticket in tickets {
                ticket.await?;
            }
            if !full {
                break;
            }
        }
        let mut batch = SeBatch::new();
        let horizon = now.saturating_sub(HISTORY_RETENTION.as_millis() as u64);
        for id in self.account_ids() {
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('h', &id))?
            {
                let h: HistoryRecord = decode(&k, &v)?;
                if h.request.accepted_ms >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('s', &id))?
            {
                let s: SentRecord = decode(&k, &v)?;
                if s.sent_ms >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('r', &id))?
            {
                let r: CreditRecord = decode(&k, &v)?;
                if r.done_ms.unwrap_or(0) >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
        }
        if !batch.is_empty() {
            self.inner.store.submit(batch)?.await?;
        }
        Ok(())
    }
}

async fn purge_task(engine: Engine) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = engine.purge_expired().await {
            tracing::warn!(%error, "settlement engine purge failed");
        }
    }
}

/// Waits for a wake-up, a retry deadline or shutdown. Returns false on shutdown.
async fn wait(
    notify: &Notify,
    retry_in: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    match retry_in {
        Some(d) => tokio::select! {
            _ = notify.notified() => true,
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
        },
        None => tokio::select! {
            _ = notify.notified() => true,
            _ = shutdown.changed() => false,
        },
    }
}

async fn settle_worker(engine: Engine, acct: Arc<Account>) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    let mut retry_in = None;
    let mut failures = 0u32;
    while wait(&acct.wake_settle, retry_in, &mut shutdown).await {
        match settle_once(&engine, &acct).await {
            Ok(()) => {
                failures = 0;
                retry_in = None;
                lock(&acct.status).next_settle_retry_ms = None;
            }
            Err(error) => {
                let d = backoff(
                    failures,
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                failures = failures.saturating_add(1);
                tracing::warn!(account = %acct.id, %error, retry_in_ms = d.as_millis() as u64, "settlement attempt failed");
                lock(&acct.status).next_settle_retry_ms = Some(now_ms() + d.as_millis() as u64);
                retry_in = Some(d);
            }
        }
    }
}

/// One pass of the settle path: setup, take the queue, send a claim for the cumulative total.
async fn settle_once(engine: &Engine, acct: &Arc<Account>) -> Result<(), String> {
    let store = &engine.inner.store;
    let connected = lock(&acct.status).connected;
    if !connected {
        match acct.module.connect(&acct.ctx).await {
            Ok(()) => {
                let mut st = lock(&acct.status);
                st.connected = true;
                st.connect_error = None;
                tracing::info!(account = %acct.id, module = acct.module.name(), "module connected");
            }
            Err(e) => {
                let msg = format!("module setup failed: {e}");
                lock(&acct.status).connect_error = Some(msg.clone());
                return Err(msg);
            }
        }
    }

    // Take the queue.
    let taken = std::mem::take(&mut *lock(&acct.queue));
    if !taken.is_empty() {
        let mut out = lock(&acct.out).clone();
        let module_scale = acct.module.asset_scale();
        let mut batch = SeBatch::new();
        let mut hist = Vec::with_capacity(taken.len());
        let mut encode = || -> Result<(), StoreError> {
            for req in &taken {
                let (units, leftover) =
                    convert_with_leftover(&out.leftover, &req.amount, module_scale);
                out.leftover = leftover;
                out.target_total += &units;
                out.requests_taken += 1;
                out.connector_scale = Some(req.amount.scale);
                let h = HistoryRecord {
                    request: req.clone(),
                    module_units: units,
                    target_total_after: out.target_total.clone(),
                };
                batch.delete(Family::Pending, keys::queued(&acct.id, req.seq));
                batch.put_json(Family::Main, keys::history(&acct.id, req.seq), &h)?;
                hist.push(h);
            }
            batch.put_json(Family::Main, keys::outgoing(&acct.id), &out)?;
            Ok(())
        };
        let written = match encode() {
            Ok(()) => match store.submit(batch) {
                Ok(ticket) => ticket.await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let mut q = lock(&acct.queue);
            let newer = std::mem::take(&mut *q);
            *q = taken;
            q.extend(newer);
            return Err(format!("store: {e}"));
        }
        *lock(&acct.out) = out;
        for h in hist {
            push_bounded(&acct.history, h);
        }
    }

    let (target, settled) = {
        let out = lock(&acct.out);
        (out.target_total.clone(), out.settled_total.clone())
    };
    if target <= settled {
        return Ok(());
    }
    lock(&acct.status).in_flight = Some(&target - &settled);
    let result = send_claim(engine, acct, &target).await;
    lock(&acct.status).in_flight = None;
    let mut out = lock(&acct.out).clone();
    let mut batch = SeBatch::new();
    let seq = engine.next_seq();
    let outcome = match result {
        Ok(claim_id) => {
            out.settled_total = target.clone();
            out.attempts = 0;
            out.last_error = None;
            out.last_claim_id = Some(claim_id.clone());
            let sent = SentRecord {
                total: target.clone(),
                claim_id,
                sent_ms: now_ms(),
            };
            batch
                .put_json(Family::Main, keys::sent(&acct.id, seq), &sent)
                .map_err(|e| e.to_string())?;
            Ok(sent)
        }
        Err(e) => {
            out.attempts = out.attempts.saturating_add(1);
            out.last_error = Some(e.clone());
            Err(e)
        }
    };
    batch
        .put_json(Family::Main, keys::outgoing(&acct.id), &out)
        .map_err(|e| e.to_string())?;
    let written = match store.submit(batch) {
        Ok(t) => t.await,
        Err(e) => Err(e),
    };
    // Publish even if the write failed: the claim went out; after a restart the same cumulative claim is sent
    // again and the peer credits nothing twice.
    *lock(&acct.out) = out;
    match outcome {
        Ok(sent) => {
            tracing::info!(account = %acct.id, total = %sent.total, claim_id = %sent.claim_id, "settlement sent");
            push_bounded(&acct.sent, sent);
            written.map_err(|e| format!("store: {e}"))
        }
        Err(e) => Err(e),
    }
}

/// Asks the module for a claim for `total` and sends it to the peer engine. Returns the claim ID.
async fn send_claim(
    engine: &Engine,
    acct: &Arc<Account>,
    total: &BigUint,
) -> Result<String, String> {
    let claim = acct
        .module
        .create_outgoing_claim(&acct.ctx, total)
        .await
        .map_err(|e| format!("module could not make a claim: {e}"))?;
    let fallback = total.to_string();
    let Some(claim) = claim else {
        // Payment modules settle on the ledger and have nothing to send.
        return Ok(fallback);
    };
    let id = wire::claim_id(&claim, &fallback);
    engine
        .inner
        .client
        .send_message(&acct.id, wire::claim_message(&claim))
        .await
        .map_err(|e| format!("sending the claim failed: {e}"))?;
    Ok(id)
}

async fn credit_worker(engine: Engine, acct: Arc<Account>) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    let mut retry_in = None;
    while wait(&acct.wake_credit, retry_in, &mut shutdown).await {
        credit_due(&engine, &acct).await;
        let now = Instant::now();
        retry_in = lock(&acct.credits)
            .values()
            .filter(|p| p.record.status == CreditStatus::Pending)
            .map(|p| p.due.saturating_duration_since(now))
            .min();
    }
}

async fn credit_due(engine: &Engine, acct: &Arc<Account>) {
    let now = Instant::now();
    let due: Vec<CreditRecord> = lock(&acct.credits)
        .values()
        .filter(|p| p.record.status == CreditStatus::Pending && p.due <= now)
        .map(|p| p.record.clone())
        .collect();
    for mut rec in due {
        let outcome = engine
            .inner
            .client
            .credit(&acct.id, &rec.idempotency_key, &rec.amount.to_quantity())
            .await;
        rec.attempts = rec.attempts.saturating_add(1);
        let mut batch = SeBatch::new();
        let pending_key = keys::credit(&acct.id, &rec.idempotency_key);
        let mut next_due = None;
        let done = match outcome {
            Ok(CreditOutcome::Credited) => {
                rec.status = CreditStatus::Credited;
                rec.done_ms = Some(now_ms());
                rec.last_error = None;
                batch.delete(Family::Pending, pending_key);
                let seq = engine.next_seq();
                if let Err(error) =
                    batch.put_json(Family::Main, keys::credited(&acct.id, seq), &rec)
                {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                tracing::info!(account = %acct.id, key = %rec.idempotency_key, amount = %rec.amount, "settlement credited");
                true
            }
            Ok(CreditOutcome::AlreadyUsed) => {
                rec.status = CreditStatus::Conflict;
                rec.done_ms = Some(now_ms());
                rec.last_error =
                    Some("connector answered 409: idempotency key already used".to_owned());
                tracing::error!(account = %acct.id, key = %rec.idempotency_key, amount = %rec.amount,
                    settlement_id = %rec.settlement_id, "credit refused with 409: reconcile with the connector");
                if let Err(error) = batch.put_json(Family::Pending, pending_key, &rec) {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                false
            }
            Ok(CreditOutcome::UnknownAccount) | Err(_) => {
                let msg = match outcome {
                    Err(ClientError::Transport(e)) => format!("connector unreachable: {e}"),
                    Err(e) => e.to_string(),
                    _ => "connector does not know the account yet (404)".to_owned(),
                };
                let d = backoff(
                    rec.attempts.saturating_sub(1),
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                tracing::warn!(account = %acct.id, key = %rec.idempotency_key, error = %msg,
                    retry_in_ms = d.as_millis() as u64, "credit failed");
                rec.last_error = Some(msg);
                next_due = Some(Instant::now() + d);
                if let Err(error) = batch.put_json(Family::Pending, pending_key, &rec) {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                false
            }
        };
        let written = match engine.inner.store.submit(batch) {
            Ok(t) => t.await,
            Err(e) => Err(e),
        };
        if let Err(error) = &written {
            // Not recorded: keep it pending in memory; it is retried (and still pending on disk).
            tracing::error!(account = %acct.id, %error, "recording a credit outcome failed");
        }
        let mut credits = lock(&acct.credits);
        if done && written.is_ok() {
            credits.remove(&rec.idempotency_key);
            drop(credits);
            push_bounded(&acct.credited, rec);
        } else if let Some(p) = credits.get_mut(&rec.idempotency_key) {
            if done {
                // Credited but not recorded: the next attempt will get 409 from interledger-rs; keep the
                // acknowledgement in memory instead of retrying.
                rec.status = CreditStatus::Credited;
                p.record = rec;
                continue;
            }
            p.record = rec;
            p.due = next_due.unwrap_or_else(Instant::now);
        }
    }
}

/// Operator view of one account. Module amounts are at the module's scale; `queued` and `leftover` at the
/// connector's.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// Account ID.
    pub id: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Module name.
    pub module: String,
    /// Module's scale.
    pub module_scale: u8,
    /// Connector's scale (configured, else learned from settle requests).
    pub connector_scale: Option<u8>,
    /// Module setup done.
    pub connected: bool,
    /// Cumulative amount settled (acknowledged by the peer engine).
    pub settled: Quantity,
    /// Cumulative amount taken from settle requests (settled + in flight).
    pub requested: Quantity,
    /// Accepted but not yet converted (queue plus leftover), at the finest scale involved.
    pub queued: Quantity,
    /// Number of accepted requests not yet taken.
    pub queued_requests: u64,
    /// Taken but not yet acknowledged by the peer.
    pub in_flight: Quantity,
    /// Outgoing leftover below one module unit.
    pub leftover: Quantity,
    /// Cumulative incoming increase reported by the module.
    pub received: Quantity,
    /// Incoming leftover below one connector unit.
    pub incoming_leftover: Quantity,
    /// Incoming settlements not yet credited (pending or refused with 409).
    pub uncredited: Vec<CreditRecord>,
    /// The last failure of the settle path or setup.
    pub last_error: Option<String>,
    /// Failed settle attempts since the last success.
    pub attempts: u32,
    /// Next settle retry, ms since the epoch.
    pub next_retry_ms: Option<u64>,
    /// Claim or transaction ID of the last settlement sent.
    pub last_claim_id: Option<String>,
}

/// One settle request in the history.
#[derive(Debug, Clone, Serialize)]
pub struct SettlementView {
    /// Acceptance order.
    pub seq: u64,
    /// Its Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// The amount requested.
    pub amount: Quantity,
    /// Acceptance time, ms since the epoch.
    pub accepted_ms: u64,
    /// Whole module units it contributed.
    pub module_units: String,
    /// Cumulative module total it is part of.
    pub cumulative_target: Option<String>,
    /// `queued`, `in_flight` or `settled`.
    pub state: &'static str,
    /// The claim or transaction that settled it.
    pub claim_id: Option<String>,
}

/// History of one account.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Account ID.
    pub account: String,
    /// Settle requests, oldest first.
    pub settlements: Vec<SettlementView>,
    /// Claims acknowledged by the peer, oldest first.
    pub claims_sent: Vec<SentRecord>,
    /// Incoming settlements: credited, then pending or refused.
    pub credits: Vec<CreditRecord>,
}

/// Longest ledger identity the admin API accepts, in bytes (`eth:<chainId>:0x…` and `xrp:<64 hex>` are far
/// shorter).
const IDENTITY_MAX_BYTES: usize = 256;

/// A module error of the identity registry as an engine error (its store failing, or an unreadable record).
fn identity_store_error(e: ModuleError) -> EngineError {
    match e {
        ModuleError::Store(e) => EngineError::Store(e),
        other => EngineError::Unavailable(other.to_string()),
    }
}

/// One ledger identity record (admin view).
#[derive(Debug, Clone, Serialize)]
pub struct IdentityView {
    /// The identity, e.g. `eth:1:0x…` or `xrp:<channel id>`.
    pub identity: String,
    /// `{"account", "origin": "proven"|"configured"}` or `{"contested": [accounts]}`.
    pub record: serde_json::Value,
}

/// A reconciliation alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Account ID.
    pub account: String,
    /// `credit_conflict`: the connector answered 409 to a credit.
    pub kind: &'static str,
    /// The credit concerned.
    pub credit: CreditRecord,
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
    fn the_accepted_total_adds_and_gives_back_across_scales() {
        let q = |a: u64, scale: u8| Scaled::new(BigUint::from(a), scale);
        // Module scale 0: 2.5 + 0.7 = 3 units and 0.2 left over.
        let start = AcceptedTotal::default().plus(&q(25, 1), 0);
        assert_eq!(start.units, BigUint::from(2u8));
        let more = start.plus(&q(700, 3), 0);
        assert_eq!(
            (more.units.clone(), more.leftover.clone()),
            (BigUint::from(3u8), q(2, 1))
        );
        // Taking the 0.7 out again gives the first total back (same value; leftover normalized).
        let back = more.minus(&q(700, 3), 0).expect("was added");
        assert_eq!(back.units, start.units);
        assert_eq!(
            back.leftover.upscale(3),
            start.leftover.upscale(3),
            "{back:?}"
        );
        // More than was ever added cannot be taken out.
        assert!(more.minus(&q(4, 0), 0).is_none());
    }

    #[test]
    fn account_ids() {
        assert!(validate_account_id("3f0c8e2a-7f5e-4a52-9c1b-2d1b1f0a9c11").is_ok());
        assert!(validate_account_id("a.b_c~d-e").is_ok());
        for bad in [
            "",
            "a/b",
            "a:b",
            "a b",
            "é",
            &"x".repeat(ACCOUNT_ID_MAX_BYTES + 1),
        ] {
            assert!(validate_account_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credit_keys_are_stable_and_distinct() {
        let a = credit_idempotency_key("acct", "100");
        assert_eq!(a, credit_idempotency_key("acct", "100"));
        assert_ne!(a, credit_idempotency_key("acct", "101"));
        assert_ne!(a, credit_idempotency_key("acct2", "100"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let init = Duration::from_secs(1);
        let max = Duration::from_secs(3600);
        for attempts in 0..64 {
            let d = backoff(attempts, init, max);
            assert!(d <= max);
            let expected = init.saturating_mul(1u32 << attempts.min(30)).min(max);
            assert!(d >= expected / 2, "{attempts}: {d:?}");
        }
    }
}
