//! Running the engine with its servers: [`start`] serves on listeners the caller bound, [`run`] binds them
//! from the configuration and runs until shut down; [`SeHandle`] stops them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::engine::Engine;
use super::error::EngineError;
use super::host::{ModuleLogs, RocksModuleLogs};
use super::store::{RocksSeStore, SeStore};
use super::{admin, api, auth, http};
use crate::config::settlement::SeConfig;
use crate::identity::IdentityRegistry;
use crate::store::Db;

/// Errors of starting or running the engine's servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeError {
    /// Binding or serving a listener failed.
    #[error("settlement engine listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration is refused (an empty token, an unauthenticated engine API off loopback).
    #[error("settlement engine configuration: {0}")]
    Config(#[from] crate::config::error::ConfigError),
}

/// A running engine with its listeners (see [`start`]).
pub struct SeHandle {
    /// The engine (for direct calls and views).
    pub engine: Engine,
    /// Address of the engine API.
    pub addr: SocketAddr,
    /// Address of the admin API, if running.
    pub admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeHandle")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl SeHandle {
    /// Stops the servers and the engine's workers and waits for them.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.engine.shutdown().await;
    }
}

impl Drop for SeHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Opens the engine on `store`/`logs`/`identities` (see [`Engine::open`]) and serves the engine API on `listener` and, if given with a token, the
/// admin API on `admin`, both with [`http::serve`]'s limits. Refuses a configuration with an empty token, and an
/// engine API reachable from other hosts without `api_token` (unless `allow_unauthenticated`), judged on the
/// address `listener` is bound to. Returns once serving; stop with [`SeHandle::stop`].
pub async fn start(
    config: SeConfig,
    store: Arc<dyn SeStore>,
    logs: Arc<dyn ModuleLogs>,
    identities: Arc<IdentityRegistry>,
    listener: TcpListener,
    admin: Option<TcpListener>,
) -> Result<SeHandle, SeError> {
    let addr = local_addr(&listener)?;
    config.check_secrets()?;
    config.check_listen(addr)?;
    if !addr.ip().is_loopback() && config.api_token.is_none() {
        tracing::warn!(%addr, "engine API served to other hosts without authentication (allow_unauthenticated = true)");
    }
    let admin = match (admin, config.admin_token.clone()) {
        (Some(l), Some(token)) => Some((local_addr(&l)?, l, token)),
        _ => None,
    };
    let api_token = config.api_token.clone();
    log_trust(&config);
    let engine = Engine::open(config, store, logs, identities).await?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (admin_stop_tx, admin_stop_rx) = oneshot::channel::<()>();
    let mut api = api::router(engine.clone());
    if let Some(token) = &api_token {
        api = api.layer(axum::middleware::from_fn_with_state(
            auth::BearerToken::new(token),
            auth::require_bearer,
        ));
    }
    let admin_addr = admin.as_ref().map(|(a, _, _)| *a);
    let admin_task = admin.map(|(_, l, token)| {
        let router = admin::router(engine.clone(), &token);
        tokio::spawn(http::serve(
            l,
            router,
            http::HttpLimits::ADMIN,
            "admin",
            async move {
                let _ = admin_stop_rx.await;
            },
        ))
    });
    let task = tokio::spawn(async move {
        http::serve(
            listener,
            api,
            http::HttpLimits::ENGINE,
            "engine",
            async move {
                let _ = stop_rx.await;
            },
        )
        .await;
        let _ = admin_stop_tx.send(());
        if let Some(t) = admin_task {
            let _ = t.await;
        }
    });
    tracing::info!(%addr, admin = ?admin_addr, authenticated = api_token.is_some(), "settlement engine listening");
    Ok(SeHandle {
        engine,
        addr,
        admin_addr,
        stop: Some(stop_tx),
        task,
    })
}

/// Says at start what credit the `iou` module (configured as `iou` or its alias `trustline`) extends, since
/// without `trustLimit` it extends none: the zero-config engine of `ilp-bridge run` then refuses every IOU, and
/// the operator should know why and what to set. The log lines name it "the trustline module", as they always
/// have.
fn log_trust(config: &SeConfig) {
    if !channel_modules::iou::selects_iou_module(&config.module) {
        return;
    }
    // A bad option is reported by `Engine::open`, which builds the module.
    let Ok(limit) = channel_modules::iou::engine_trust_limit(&config.module_options) else {
        return;
    };
    if limit.is_zero() {
        tracing::warn!(
            module = %config.module,
            "the trustline module extends no credit: every IOU from a peer is refused until \
             [settlement-engine] module_options.trustLimit is set to the most the peer's IOUs may reach \
             (in the module's units)"
        );
    } else {
        tracing::info!(module = %config.module, trust_limit = %limit, "trustline module trust limit");
    }
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, SeError> {
    l.local_addr().map_err(|source| SeError::Listen {
        addr: "?".to_owned(),
        source,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SeError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Runs the engine on the node's database until `shutdown` resolves: binds `config.listen` and (when
/// `config.admin_token` is set) `config.admin_listen`.
pub async fn run(
    config: SeConfig,
    db: Arc<Db>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SeError> {
    run_observed(config, db, shutdown, |_| {}).await
}

/// [`run`], calling `started` with the engine once it serves (the node's admin listener takes it there).
pub async fn run_observed(
    config: SeConfig,
    db: Arc<Db>,
    shutdown: impl Future<Output = ()> + Send,
    started: impl FnOnce(&Engine),
) -> Result<(), SeError> {
    config.validate()?;
    let listener = bind(config.listen).await?;
    let admin = if config.admin_token.is_some() {
        Some(bind(config.admin_listen).await?)
    } else {
        None
    };
    let store: Arc<dyn SeStore> = Arc::new(RocksSeStore::new(Arc::clone(&db)));
    let logs: Arc<dyn ModuleLogs> = Arc::new(RocksModuleLogs::new(Arc::clone(&db)));
    let identities = IdentityRegistry::on_db(db);
    let handle = start(config, store, logs, identities, listener, admin).await?;
    started(&handle.engine);
    shutdown.await;
    handle.stop().await;
    Ok(())
}
