//! The node's operator listener (`[admin]`): what an operator running ilp-bridge in place of ILP Kit sees and
//! does, for the whole node (BTP peers, bridged pairs, the settlement engine, the store).
//!
//! | route | auth | answer |
//! |--|--|--|
//! | `GET /health` | none | 200 while the process serves HTTP (liveness) |
//! | `GET /ready` | none | 200 when the store takes a write, is not poisoned, and every configured part listens; 503 with the reasons otherwise |
//! | `GET /metrics` | none | Prometheus text ([`metrics`]) |
//! | `GET /` | none | the status page (static HTML/JS embedded in the binary; it asks the API with the token) |
//! | `GET /openapi.yaml` | none | this API's OpenAPI document ([`OPENAPI_YAML`]) |
//! | `GET /status` | bearer | [`views::StatusView`]: peers, engine accounts, bridged pairs, alerts, readiness |
//! | `GET /peers`, `GET /peers/{name}` | bearer | [`views::PeerView`]s |
//! | `GET /peers/{name}/transfers` | bearer | the peer's prepared transfers |
//! | `GET /peers/{name}/transfers/{id}` | bearer | one transfer, in any state |
//! | `PUT /peers/{name}/limits` | bearer | sets the stored balance limits (the legacy store override) |
//! | `POST /peers/{name}/disconnect`, `/reconnect` | bearer | the legacy plugin's `disconnect()` / `connect()` |
//! | `POST /peers/{name}/pay` | bearer | a test payment through the peer ([`pay`]) |
//! | `GET /settlements` | bearer | engine accounts, alerts and bridged pairs' settlement ledgers |
//! | anything else | bearer | the settlement engine's admin routes (`/accounts`, `/alerts`, `/identities`, …) when it runs |
//!
//! The parts of the node register with a [`NodeView`] as they start ([`NodeView::add_peers`],
//! [`NodeView::set_engine`]); the listener itself starts first, so `/health` answers while they start and
//! `/ready` says which one is not up yet.

pub mod client;
pub mod metrics;
pub mod pay;
mod routes;
pub mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use btp::transport::{BtpEndpoint, BtpSession, PeerKey};
use channel_modules::sync::lock;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bridge::run::BridgeNode;
use crate::bridge::settlement::PairSettlement;
use crate::peer::{PeerNode, Trustline};
use crate::settlement::Engine;
use crate::store::Db;

pub use routes::{router, ROUTES};

/// The OpenAPI document of the node's admin API.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

/// The status page, served at `/`.
pub const STATUS_PAGE_HTML: &str = include_str!("status.html");

/// The build's commit (short hash), from `build.rs`; `unknown` when built outside a git checkout.
pub const COMMIT: &str = env!("ILP_BRIDGE_COMMIT");

/// `ilp-bridge --version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ILP_BRIDGE_COMMIT"),
    ")"
);

/// Longest `/ready` waits for its probe write to become durable: 2 s. A healthy disk syncs in milliseconds; a
/// store that needs longer cannot serve payments either, so the node is not ready.
pub const READY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A part of the node that `/ready` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The BTP peers (their listeners bound, trustlines started).
    Peers,
    /// The settlement engine (its listeners bound).
    Engine,
}

impl Part {
    /// The name `/ready` reports.
    pub fn name(self) -> &'static str {
        match self {
            Part::Peers => "peers",
            Part::Engine => "settlement engine",
        }
    }
}

/// One BTP peer as the admin listener sees it.
#[derive(Clone)]
pub(crate) struct PeerEntry {
    pub(crate) trustline: Trustline,
    /// The BTP session (absent for trustlines on an in-memory link).
    pub(crate) session: Option<BtpSession>,
    /// Whether the peer's traffic goes to a modern connector (bridge mode).
    pub(crate) bridged: bool,
}

/// What the metrics collector and the routes read: the running parts' handles.
#[derive(Default)]
pub(crate) struct Sources {
    pub(crate) db: Option<Arc<Db>>,
    pub(crate) peers: RwLock<BTreeMap<String, PeerEntry>>,
    pub(crate) pairs: RwLock<BTreeMap<String, PairSettlement>>,
    pub(crate) engine: RwLock<Option<Engine>>,
    pub(crate) endpoint: RwLock<Option<BtpEndpoint>>,
}

/// The running node as the admin listener sees it: the handles of its parts, which parts are expected and up,
/// and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct NodeView {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Arc<Sources>,
    /// Configured parts and whether each is up.
    parts: std::sync::Mutex<BTreeMap<Part, bool>>,
    /// The engine's admin router, answering the routes this listener does not have itself.
    engine_admin: RwLock<Option<Router>>,
    metrics: metrics::Metrics,
    started: std::time::Instant,
}

impl std::fmt::Debug for NodeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeView")
            .field("parts", &*lock(&self.inner.parts))
            .finish_non_exhaustive()
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
}

impl NodeView {
    /// A view of a node storing in `db` (`None`: no store, e.g. a test on memory stores), expecting `parts`.
    /// The store's write latencies are observed from now on.
    pub fn new(db: Option<Arc<Db>>, parts: &[Part]) -> NodeView {
        let sources = Arc::new(Sources {
            db,
            ..Sources::default()
        });
        let metrics = metrics::Metrics::new(Arc::clone(&sources));
        if let Some(db) = &sources.db {
            metrics.observe_store(db);
        }
        NodeView {
            inner: Arc::new(Inner {
                sources,
                parts: std::sync::Mutex::new(parts.iter().map(|p| (*p, false)).collect()),
                engine_admin: RwLock::new(None),
                metrics,
                started: std::time::Instant::now(),
            }),
        }
    }

    pub(crate) fn sources(&self) -> &Sources {
        &self.inner.sources
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Seconds since the view was made (≈ since the node started).
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Marks `part` up (`true`) or down.
    pub fn set_up(&self, part: Part, up: bool) {
        lock(&self.inner.parts).insert(part, up);
    }

    /// Registers the running peers of `node` (and the bridged pairs of `bridge`): the admin API shows them,
    /// their events are counted and logged until the node stops, and [`Part::Peers`] is up.
    pub fn add_peers(&self, node: &PeerNode, bridge: Option<&BridgeNode>) {
        let endpoint = node.endpoint().clone();
        let bridged: Vec<String> = bridge
            .map(|b| b.pairs().keys().cloned().collect())
            .unwrap_or_default();
        {
            let mut peers = self
                .inner
                .sources
                .peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, tl) in node.trustlines() {
                let session = endpoint.session(&PeerKey::new(name));
                let entry = PeerEntry {
                    trustline: tl.clone(),
                    session: session.clone(),
                    bridged: bridged.contains(name),
                };
                self.inner
                    .metrics
                    .watch_peer(tl, session.as_ref(), node.stopping());
                peers.insert(name.clone(), entry);
            }
        }
        if let Some(bridge) = bridge {
            let mut pairs = self
                .inner
                .sources
                .pairs
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in bridge.pairs().keys() {
                if let Some(s) = bridge.settlement(name) {
                    pairs.insert(name.clone(), s.clone());
                }
            }
        }
        write(&self.inner.sources.endpoint, Some(endpoint));
        self.set_up(Part::Peers, true);
    }

    /// Registers the running settlement engine: its accounts are shown and measured, its admin routes are
    /// served here with this listener's `token`, and [`Part::Engine`] is up.
    pub fn set_engine(&self, engine: &Engine, token: &str) {
        write(&self.inner.sources.engine, Some(engine.clone()));
        write(
            &self.inner.engine_admin,
            Some(crate::settlement::admin::router(engine.clone(), token)),
        );
        self.set_up(Part::Engine, true);
    }

    /// The engine's admin router, once the engine runs.
    pub(crate) fn engine_admin(&self) -> Option<Router> {
        read(&self.inner.engine_admin)
    }

    /// The trustline of peer `name`.
    pub(crate) fn peer(&self, name: &str) -> Option<PeerEntry> {
        self.inner
            .sources
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Why the node is not ready (empty: ready). Writes a probe record to the store to prove it takes writes.
    pub async fn not_ready(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (part, up) in lock(&self.inner.parts).iter() {
            if !*up {
                problems.push(format!("{} not started", part.name()));
            }
        }
        if let Some(db) = &self.inner.sources.db {
            if db.is_poisoned() {
                let cause = db
                    .poisoned_by()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                problems.push(format!(
                    "store poisoned by a failed write{cause}: restart the node"
                ));
            } else {
                let mut batch = rocksdb::WriteBatch::default();
                batch.put(READY_PROBE_KEY, self.uptime().as_millis().to_string());
                match tokio::time::timeout(READY_WRITE_TIMEOUT, db.write(batch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => problems.push(format!("store write failed: {e}")),
                    Err(_) => problems.push(format!(
                        "store write not durable within {} ms",
                        READY_WRITE_TIMEOUT.as_millis()
                    )),
                }
            }
        }
        problems
    }
}

/// The record `/ready` writes to prove the store takes writes (its own `admin/` key prefix, see
/// [`crate::store::db`]); it holds the node's uptime in ms and nothing reads it.
pub const READY_PROBE_KEY: &[u8] = b"admin/ready-probe";

/// The admin listener, running (see [`start`]).
#[derive(Debug)]
pub struct AdminHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminHandle {
    /// Stops the listener and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Serves the node's admin API for `view` on `listener`, with the engine admin API's limits
/// ([`crate::settlement::http::HttpLimits::ADMIN`]); `token` guards every route but the probes, the metrics,
/// the page and the document.
pub fn start(listener: TcpListener, view: NodeView, token: &str) -> std::io::Result<AdminHandle> {
    let addr = listener.local_addr()?;
    let (stop, mut rx) = watch::channel(false);
    let app = router(view, token);
    let task = tokio::spawn(crate::settlement::http::serve(
        listener,
        app,
        crate::settlement::http::HttpLimits::ADMIN,
        "node-admin",
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(%addr, "admin listener started (health, ready, metrics, admin API, status page)");
    Ok(AdminHandle { addr, stop, task })
}
