//! [`Engine`]: the settlement engine's core, a cheap handle on its accounts. The HTTP layers ([`super::api`],
//! [`super::admin`]) only parse, call a method here and map the error. The engine's parts live in the files
//! beside this one (see [`crate::settlement`]); what ties them together is here: the state they share
//! (`Inner`), opening ([`EngineBuilder`]), the clock and shutting down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::UNIX_EPOCH;

use channel_modules::clock::{Clock, SystemClock};
use channel_modules::iou::{selects_iou_module, IouModule};
use channel_modules::sync::lock;
use channel_modules::{build_module, ChannelModule, ModuleError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::account::Account;
use super::client::ConnectorClient;
use super::error::EngineError;
use super::host::ModuleLogs;
use super::idempotency::IdemCache;
use super::lifecycle::KeptAccount;
use super::purge::purge_task;
use super::store::SeStore;
use crate::config::settlement::SeConfig;
use crate::identity::IdentityRegistry;

/// Builds a channel module from its configured name and options; [`Engine::open`] uses [`engine_module`] (the
/// stock modules), [`EngineBuilder::modules`] takes another.
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

/// What every clone of an [`Engine`] shares.
pub(super) struct Inner {
    pub(super) config: SeConfig,
    pub(super) store: Arc<dyn SeStore>,
    pub(super) logs: Arc<dyn ModuleLogs>,
    /// The node's ledger-identity registry, where the accounts hold their peers' ledger identities.
    pub(super) identities: Arc<IdentityRegistry>,
    pub(super) client: ConnectorClient,
    pub(super) modules: ModuleFactory,
    /// Where every time the engine records or compares comes from.
    pub(super) clock: Arc<dyn Clock>,
    /// The running accounts, by ID.
    pub(super) accounts: RwLock<HashMap<String, Arc<Account>>>,
    /// Accounts kept by a failed delete whose state could not be read back from the store (see
    /// [`Engine::delete_account`]): each lookup, and a background task, tries again.
    pub(super) broken: Mutex<HashMap<String, KeptAccount>>,
    /// Serializes account creation and deletion.
    pub(super) create_lock: tokio::sync::Mutex<()>,
    pub(super) idem: IdemCache,
    /// The next sequence number of queued requests and history records.
    pub(super) seq: AtomicU64,
    pub(super) shutdown: watch::Sender<bool>,
    /// Engine-wide tasks (the purge, reloads of kept accounts).
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The settlement engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
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
    /// Loads the engine's state from `store` and starts every account's workers, with the stock modules and
    /// the system clock; its accounts hold ledger identities in `identities` (the node's registry, on the same
    /// database as `store`). Must run inside a tokio runtime. The module named in `config` is checked by
    /// building it once.
    pub async fn open(
        config: SeConfig,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
        identities: Arc<IdentityRegistry>,
    ) -> Result<Engine, EngineError> {
        Engine::builder(config, store, logs, identities)
            .open()
            .await
    }

    /// An engine to open with other modules or another clock than [`Engine::open`]'s.
    pub fn builder(
        config: SeConfig,
        store: Arc<dyn SeStore>,
        logs: Arc<dyn ModuleLogs>,
        identities: Arc<IdentityRegistry>,
    ) -> EngineBuilder {
        EngineBuilder {
            config,
            store,
            logs,
            identities,
            modules: Arc::new(engine_module),
            clock: Arc::new(SystemClock),
        }
    }

    /// The engine clock's time in milliseconds since the Unix epoch, as the engine's records hold it (0 before
    /// the epoch).
    pub(super) fn now_ms(&self) -> u64 {
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// A sequence number above every one used before.
    pub(super) fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// The configuration.
    pub fn config(&self) -> &SeConfig {
        &self.inner.config
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
}

/// Opens an [`Engine`] (see [`Engine::builder`]): the stock modules and the system clock unless told otherwise.
pub struct EngineBuilder {
    config: SeConfig,
    store: Arc<dyn SeStore>,
    logs: Arc<dyn ModuleLogs>,
    identities: Arc<IdentityRegistry>,
    modules: ModuleFactory,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Builds the accounts' modules with `modules` (from `config.module` and `config.module_options`) instead
    /// of the stock [`engine_module`]: for modules outside this workspace.
    pub fn modules(mut self, modules: ModuleFactory) -> Self {
        self.modules = modules;
        self
    }

    /// Reads the time from `clock` instead of the system clock, for the engine's records and its modules.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Loads the engine's state from the store and starts every account's workers. Must run inside a tokio
    /// runtime. The configured module is checked by building it once.
    pub async fn open(self) -> Result<Engine, EngineError> {
        let EngineBuilder {
            config,
            store,
            logs,
            identities,
            modules,
            clock,
        } = self;
        modules(&config.module, &config.module_options).map_err(|source| {
            EngineError::ModuleConfig {
                module: config.module.clone(),
                source,
            }
        })?;
        let client = ConnectorClient::new(&config.connector)?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            store,
            logs,
            identities,
            client,
            modules,
            clock,
            accounts: RwLock::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            idem: IdemCache::new(),
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
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::*;
    use crate::settlement::host::MemoryModuleLogs;
    use crate::settlement::store::MemorySeStore;

    /// A clock stopped at one instant.
    struct StoppedClock(SystemTime);

    impl Clock for StoppedClock {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[tokio::test]
    async fn the_engine_stamps_its_records_with_the_clock_it_is_given(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // 2017-10-01T00:00:00Z: far from the system clock, so a record stamped by it would show.
        const AT_MS: u64 = 1_506_816_000_000;
        let engine = Engine::builder(
            SeConfig::default(),
            Arc::new(MemorySeStore::new()),
            Arc::new(MemoryModuleLogs::new()),
            IdentityRegistry::memory(),
        )
        .clock(Arc::new(StoppedClock(
            UNIX_EPOCH + Duration::from_millis(AT_MS),
        )))
        .open()
        .await?;
        let id = engine.create_account(Some("acct".to_owned())).await?;
        let body = Bytes::from_static(br#"{"amount":"1","scale":0}"#);
        let (status, _) = engine
            .accept_settlement(&id, Some("key".to_owned()), body)
            .await?;
        assert_eq!(status, 201);
        assert_eq!(engine.account_view(&id)?.created_ms, AT_MS);
        let accepted: Vec<u64> = engine
            .account_history(&id)?
            .settlements
            .iter()
            .map(|s| s.accepted_ms)
            .collect();
        assert_eq!(accepted, vec![AT_MS]);
        engine.shutdown().await;
        Ok(())
    }
}
