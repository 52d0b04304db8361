//! [`Engine`]: the settlement engine's core, a cheap handle on its accounts. The HTTP layers ([`super::api`],
//! [`super::admin`]) only parse, call a method here and map the error. The engine's parts live beside it:
//! accounts ([`super::account`]) and their lifecycle, settle requests, incoming messages, the workers, the
//! operator views and the purge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use channel_modules::sync::lock;
use channel_modules::trustline::{TrustlineModule, TRUSTLINE_MODULE_NAME};
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

/// The wall-clock time in milliseconds since the Unix epoch, as the engine's records hold it.
pub(super) fn now_ms() -> u64 {
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

/// The stock modules as an engine runs them: [`channel_modules::build_module`], except `trustline`, which is
/// built with [`TrustlineModule::for_engine`]. Here an accepted IOU credits the connector with money the peer
/// has not paid, and no transfer log bounds the peer, so the module accepts IOUs only up to its `trustLimit`
/// option, 0 (no credit) when unset.
pub fn engine_module(
    name: &str,
    options: &serde_json::Value,
) -> Result<Arc<dyn ChannelModule>, ModuleError> {
    if name == TRUSTLINE_MODULE_NAME {
        return Ok(Arc::new(TrustlineModule::for_engine(options)?));
    }
    build_module(name, options)
}

/// What every clone of an [`Engine`] shares.
pub(super) struct Inner {
    pub(super) config: SeConfig,
    pub(super) store: Arc<dyn SeStore>,
    pub(super) logs: Arc<dyn ModuleLogs>,
    pub(super) client: ConnectorClient,
    pub(super) modules: ModuleFactory,
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
            client,
            modules,
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
