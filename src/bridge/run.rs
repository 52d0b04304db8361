//! Starting the bridged peers of a node: [`BridgeNode::wire`] joins each bridged trustline of a built (not yet
//! launched) [`PeerNode`] with its modern connector, as its `[peer.modern]` says; [`BridgeNode::launch`] then,
//! once the peer node runs, finishes what was in flight before a restart and starts the per-pair tasks (asking a
//! parent for our address, sending a child or peer our routes when the link comes up).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v4::Address;
use btp::transport::{
    BtpSession, BtpUrl, ClientOptions, ConnectionState, PeerKey, RequestHandler, ServerConfig,
    SessionFactory,
};
use channel_modules::clock::{Clock, SystemClock};
use channel_modules::store::{Limit, TransferLog};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::modern::btp2::{Btp2Handler, Btp2Link, TokenAuth};
use super::modern::http::{self, HttpLink};
use super::modern::IlpHandler;
use super::pair::{BridgedPair, PairSettings, Relation};
use super::scale::Scales;
use super::settlement::record::SettlementStore;
use super::settlement::PairSettlement;
use crate::config::bridge::{ModernConfig, ModernRelation, ModernTransport};
use crate::config::legacy::PeerConfig;
use crate::peer::PeerNode;
use crate::store::{Db, RocksStores};

/// First delay between attempts to ask a parent for our address; doubles up to [`ADDRESS_RETRY_MAX`].
const ADDRESS_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest delay between attempts to ask a parent for our address.
const ADDRESS_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why the bridged peers could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A `[peer.modern]` names a peer that is not configured.
    #[error("[peer.modern] of {0:?}: no such peer")]
    NoSuchPeer(String),
    /// A setting cannot be used.
    #[error("[peer.modern] of {peer:?}: {reason}")]
    Config {
        /// The peer.
        peer: String,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("[peer.modern] of {peer:?}: cannot listen on {addr}: {source}")]
    Listen {
        /// The peer.
        peer: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The modern side's store could not be opened.
    #[error("[peer.modern] of {peer:?}: {source}")]
    Store {
        /// The peer.
        peer: String,
        /// The cause.
        #[source]
        source: channel_modules::store::StoreError,
    },
}

/// Where each pair keeps its modern side's transfer log.
pub enum ModernStores {
    /// The node's database: namespace `bridge/<name>` (no peer name holds a `/`).
    Rocks(Arc<Db>),
    /// In memory (tests).
    Memory,
}

impl ModernStores {
    fn settlement(&self) -> SettlementStore {
        match self {
            ModernStores::Rocks(db) => SettlementStore::Rocks(Arc::clone(db)),
            ModernStores::Memory => SettlementStore::memory(),
        }
    }

    fn log(&self, name: &str) -> Result<Arc<dyn TransferLog>, channel_modules::store::StoreError> {
        match self {
            ModernStores::Rocks(db) => RocksStores::new(
                Arc::clone(db),
                &format!("bridge/{name}"),
                Limit::Unbounded,
                Limit::Unbounded,
            )
            .transfer_log(""),
            ModernStores::Memory => {
                channel_modules::memory::MemoryStores::new(Limit::Unbounded, Limit::Unbounded)
                    .transfer_log("")
            }
        }
    }
}

/// Refuses modern connectors that dial in without a session registered for them.
struct NoNewSessions;

impl SessionFactory for NoNewSessions {
    fn handler_for(&self, _peer: &PeerKey) -> Option<Arc<dyn RequestHandler>> {
        None
    }
}

/// The bridged pairs of a node.
pub struct BridgeNode {
    pairs: BTreeMap<String, BridgedPair>,
    /// The handlers BTP/2.0 sessions hold weakly (so a stopped bridge is not kept alive by its sessions): kept
    /// alive here while the bridge runs.
    handlers: Vec<Arc<dyn IlpHandler>>,
    sessions: BTreeMap<String, BtpSession>,
    listen_addrs: BTreeMap<String, SocketAddr>,
    settlements: BTreeMap<String, PairSettlement>,
    settlement_addrs: BTreeMap<String, SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for BridgeNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeNode")
            .field("pairs", &self.pairs.keys().collect::<Vec<_>>())
            .field("listen_addrs", &self.listen_addrs)
            .finish_non_exhaustive()
    }
}

fn relation(r: ModernRelation) -> Relation {
    match r {
        ModernRelation::Child => Relation::Child,
        ModernRelation::Parent => Relation::Parent,
        ModernRelation::Peer => Relation::Peer,
    }
}

fn address(peer: &str, field: &str, a: &str) -> Result<Address, BridgeError> {
    Address::new(a).map_err(|e| BridgeError::Config {
        peer: peer.to_owned(),
        reason: format!("{field} {a:?}: {e}"),
    })
}

impl BridgeNode {
    /// Joins every bridged peer of `node` (built with these peers in `NodeOptions::bridged`, not launched)
    /// with its modern connector. Listeners are bound here.
    pub async fn wire(
        node: &PeerNode,
        peers: &[PeerConfig],
        modern: &BTreeMap<String, ModernConfig>,
        stores: ModernStores,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<BridgeNode, BridgeError> {
        let stop = node.stopping();
        let mut bridge = BridgeNode {
            pairs: BTreeMap::new(),
            handlers: Vec::new(),
            sessions: BTreeMap::new(),
            listen_addrs: BTreeMap::new(),
            settlements: BTreeMap::new(),
            settlement_addrs: BTreeMap::new(),
            tasks: Vec::new(),
            stop: stop.clone(),
        };
        let settlement_store = stores.settlement();
        for (name, cfg) in modern {
            let trustline = node
                .trustline(name)
                .ok_or_else(|| BridgeError::NoSuchPeer(name.clone()))?
                .clone();
            let peer = peers
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| BridgeError::NoSuchPeer(name.clone()))?;
            let own = match (&cfg.ilp_address, &peer.prefix) {
                (Some(a), _) => a.clone(),
                (None, Some(prefix)) => format!("{prefix}server"),
                // Only a parent tells it (the configuration allows no other case): a placeholder until then.
                (None, None) => "self.bridge".to_owned(),
            };
            let own = address(name, "ilp_address", &own)?;
            let child_address = match &cfg.child_address {
                Some(a) => Some(address(name, "child_address", a)?),
                None => Address::new(&format!("{own}.child")).ok(),
            };
            let settings = PairSettings {
                scales: Scales {
                    legacy: cfg.legacy_scale,
                    modern: cfg.asset_scale,
                },
                asset_code: cfg.asset_code.clone(),
                expiry_margin: cfg.expiry_margin,
                min_window: cfg.min_window,
                legacy_max_hold: peer.limits.max_hold,
                relation: relation(cfg.relation),
                modern_address: own,
                child_address,
            };
            let log = stores.log(name).map_err(|source| BridgeError::Store {
                peer: name.clone(),
                source,
            })?;
            let pair = BridgedPair::new(trustline, log, settings, clock.clone());
            let handler: Arc<dyn IlpHandler> = Arc::new(pair.clone());
            let key = PeerKey::new(format!("modern/{name}"));
            match &cfg.transport {
                ModernTransport::BtpClient { url } => {
                    let url = BtpUrl::parse(url.expose()).map_err(|e| BridgeError::Config {
                        peer: name.clone(),
                        reason: format!("url: {e}"),
                    })?;
                    let session = node.endpoint().connect(
                        key,
                        &url,
                        ClientOptions::default(),
                        Arc::new(Btp2Handler::new(&handler)),
                    );
                    pair.set_link(Arc::new(Btp2Link::new(session.clone())));
                    bridge.sessions.insert(name.clone(), session);
                }
                ModernTransport::BtpServer {
                    listen,
                    incoming_token,
                } => {
                    let session = node
                        .endpoint()
                        .register(key.clone(), Arc::new(Btp2Handler::new(&handler)));
                    let listener = bind(name, *listen).await?;
                    bridge
                        .listen_addrs
                        .insert(name.clone(), local(&listener, *listen));
                    let token = incoming_token.as_ref().map(|t| t.expose().to_owned());
                    let auth = Arc::new(TokenAuth::new(token.as_deref().unwrap_or(""), key));
                    let ep = node.endpoint().clone();
                    let mut rx = stop.clone();
                    let config = ServerConfig {
                        require_username: false,
                        ..ServerConfig::default()
                    };
                    tracing::info!(peer = %name, addr = %local(&listener, *listen), "BTP/2.0 listener for the modern connector started");
                    bridge.tasks.push(tokio::spawn(async move {
                        ep.serve(
                            listener,
                            config,
                            auth,
                            Arc::new(NoNewSessions),
                            async move {
                                let _ = rx.wait_for(|s| *s).await;
                            },
                        )
                        .await;
                    }));
                    pair.set_link(Arc::new(Btp2Link::new(session.clone())));
                    bridge.sessions.insert(name.clone(), session);
                }
                ModernTransport::Http {
                    url,
                    token,
                    listen,
                    path,
                    incoming_token,
                } => {
                    let link = HttpLink::new(url, token.as_ref().map(|t| t.expose().to_owned()))
                        .map_err(|e| BridgeError::Config {
                            peer: name.clone(),
                            reason: e.to_string(),
                        })?;
                    pair.set_link(Arc::new(link));
                    let listener = bind(name, *listen).await?;
                    bridge
                        .listen_addrs
                        .insert(name.clone(), local(&listener, *listen));
                    let router = http::router(
                        path,
                        Arc::clone(&handler),
                        incoming_token.as_ref().map(|t| t.expose()),
                    );
                    let mut rx = stop.clone();
                    tracing::info!(peer = %name, addr = %local(&listener, *listen), %path, "ILP-over-HTTP endpoint for the modern connector started");
                    bridge
                        .tasks
                        .push(tokio::spawn(http::serve(listener, router, async move {
                            let _ = rx.wait_for(|s| *s).await;
                        })));
                }
            }
            if let Some(settle) = &cfg.settlement {
                let settlement = PairSettlement::open(
                    name,
                    pair.trustline().clone(),
                    cfg.legacy_scale,
                    settlement_store.clone(),
                    &settle.connector_url,
                    clock.clone().unwrap_or_else(|| Arc::new(SystemClock)),
                )
                .await
                .map_err(|e| BridgeError::Config {
                    peer: name.clone(),
                    reason: format!("settlement: {e}"),
                })?;
                let listener = bind(name, settle.listen).await?;
                let addr = local(&listener, settle.listen);
                let router = crate::bridge::settlement::api::router(settlement.clone());
                let mut rx = stop.clone();
                tracing::info!(peer = %name, %addr, connector = %settle.connector_url, "settlement-engine API for the modern connector started");
                bridge
                    .tasks
                    .push(tokio::spawn(crate::settlement::http::serve(
                        listener,
                        router,
                        crate::settlement::http::HttpLimits::ENGINE,
                        "bridge-settlement",
                        async move {
                            let _ = rx.wait_for(|s| *s).await;
                        },
                    )));
                bridge.settlement_addrs.insert(name.clone(), addr);
                bridge.settlements.insert(name.clone(), settlement);
            }
            bridge.handlers.push(handler);
            bridge.pairs.insert(name.clone(), pair);
        }
        Ok(bridge)
    }

    /// After the peer node launched: finishes what each pair had in flight, and starts its tasks.
    pub async fn launch(&mut self) {
        for (name, pair) in &self.pairs {
            if let Err(error) = pair.recover().await {
                tracing::error!(pair = %name, %error, "recovering the bridged transfers failed");
            }
            if let Some(settlement) = self.settlements.get(name) {
                self.tasks.push(settlement.start(self.stop.clone()));
            }
            let session = self.sessions.get(name).cloned();
            let pair = pair.clone();
            let stop = self.stop.clone();
            self.tasks
                .push(tokio::spawn(pair_task(pair, session, stop)));
        }
    }

    /// The pair of peer `name`.
    pub fn pair(&self, name: &str) -> Option<&BridgedPair> {
        self.pairs.get(name)
    }

    /// Every pair by name.
    pub fn pairs(&self) -> &BTreeMap<String, BridgedPair> {
        &self.pairs
    }

    /// The settlement of pair `name`, if it settles through the node.
    pub fn settlement(&self, name: &str) -> Option<&PairSettlement> {
        self.settlements.get(name)
    }

    /// Where the settlement-engine API of pair `name` listens, if it settles through the node.
    pub fn settlement_addr(&self, name: &str) -> Option<SocketAddr> {
        self.settlement_addrs.get(name).copied()
    }

    /// Where the modern side of pair `name` listens, if it does.
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listen_addrs.get(name).copied()
    }

    /// Stops the pairs' tasks (the peer node's shutdown closes the sessions and listeners) and breaks the
    /// pairs' reference cycles.
    pub async fn shutdown(self) {
        drop(self.handlers);
        for pair in self.pairs.values() {
            pair.clear();
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn bind(peer: &str, addr: SocketAddr) -> Result<TcpListener, BridgeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BridgeError::Listen {
            peer: peer.to_owned(),
            addr,
            source,
        })
}

fn local(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// Each time the BTP/2.0 link comes up: a parent is asked for our address (until it answers), and a child or
/// peer gets our routes (it also asks with a control request; sending them at once covers a connector that
/// restarted while we were away). An HTTP link is "up" once, at start.
async fn pair_task(
    pair: BridgedPair,
    session: Option<BtpSession>,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = session.as_ref().map(BtpSession::state);
    loop {
        if let Some(rx) = state.as_mut() {
            let up = rx.wait_for(|s| *s == ConnectionState::Connected);
            tokio::select! {
                r = up => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let relation = pair.settings().relation;
        if relation == Relation::Parent {
            let mut delay = ADDRESS_RETRY_MIN;
            loop {
                match pair.ask_address().await {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(pair = pair.name(), %error, "asking the modern connector for our address failed; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                delay = (delay * 2).min(ADDRESS_RETRY_MAX);
            }
        }
        if relation.sends_routes() {
            pair.send_routes().await;
        }
        match state.as_mut() {
            Some(rx) => {
                let down = rx.wait_for(|s| *s != ConnectionState::Connected);
                tokio::select! {
                    r = down => if r.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            None => return,
        }
    }
}

/// Runs the node's BTP/1.0 peers, bridged ones joined with their modern connectors, on `db` until `shutdown`
/// completes (the CLI's `ilp-bridge run`). `configs` is the node's whole peer configuration.
pub async fn run_peers(
    configs: Vec<PeerConfig>,
    modern: BTreeMap<String, ModernConfig>,
    db: Arc<Db>,
    options: crate::peer::NodeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    run_peers_observed(configs, modern, db, options, shutdown, |_, _| {}).await
}

/// [`run_peers`], calling `started` once every peer and pair runs (the node's admin listener and metrics
/// take their handles there).
pub async fn run_peers_observed(
    configs: Vec<PeerConfig>,
    modern: BTreeMap<String, ModernConfig>,
    db: Arc<Db>,
    mut options: crate::peer::NodeOptions,
    shutdown: impl std::future::Future<Output = ()>,
    started: impl FnOnce(&PeerNode, &BridgeNode),
) -> Result<(), RunError> {
    // The whole configuration is known here: identities held by peers no longer in it are released.
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    crate::peer::NodeIdentities::on_db(Arc::clone(&db))
        .release_unconfigured(&names)
        .await
        .map_err(crate::peer::PeerError::from)?;
    options.bridged = modern.keys().cloned().collect();
    options.trustline.identities = crate::peer::NodeIdentities::on_db(Arc::clone(&db));
    let stores = |c: &PeerConfig| -> Arc<dyn crate::peer::PeerStores> {
        Arc::new(RocksStores::new(
            Arc::clone(&db),
            &c.name,
            c.max_balance,
            c.min_balance,
        ))
    };
    let mut node = PeerNode::build(configs.clone(), stores, options)?;
    let mut bridge = BridgeNode::wire(
        &node,
        &configs,
        &modern,
        ModernStores::Rocks(Arc::clone(&db)),
        None,
    )
    .await?;
    node.launch().await?;
    bridge.launch().await;
    started(&node, &bridge);
    shutdown.await;
    bridge.shutdown().await;
    node.shutdown().await;
    Ok(())
}

/// Why [`run_peers`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The peers.
    #[error(transparent)]
    Peer(#[from] crate::peer::PeerError),
    /// The bridged pairs.
    #[error(transparent)]
    Bridge(#[from] BridgeError),
}
