//! Running configured peers: [`PeerNode::start`] builds one [`Trustline`] per [`PeerConfig`] on the node's
//! RocksDB ([`Db`], namespace = peer name), wires them to one BTP endpoint (listeners grouped by port; clients
//! dial and redial), re-arms expiry timers, recovers forwarded transfers and connects every trustline.
//! [`run_peers`] does that and waits for a shutdown signal.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use btp::transport::{
    Authenticator, BtpEndpoint, BtpUrl, ClientOptions, ConnectionLimits, EndpointConfig, PeerKey,
    RequestHandler, ServerConfig, SessionFactory, TlsClientConfig, TlsServerConfig,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::error::PeerError;
use super::host::PeerStores;
use super::identities::NodeIdentities;
use super::routing::Router;
use super::trustline::{Trustline, TrustlineHandler, TrustlineOptions};
use crate::config::error::ConfigError;
use crate::config::legacy::{validate_peer_set, PeerConfig};
use crate::config::routing::RoutingConfig;
use crate::store::{Db, RocksStores};

/// First delay between attempts to connect a trustline (fetch info, module connect).
const CONNECT_RETRY_MIN: Duration = Duration::from_millis(250);

/// Largest delay between connect attempts.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(10);

/// Node-wide options of [`PeerNode::start`].
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// Routing settings.
    pub routing: RoutingConfig,
    /// Trustline tunables.
    pub trustline: TrustlineOptions,
    /// Address listeners bind to (default `0.0.0.0`; tests use `127.0.0.1`).
    pub bind_host: Option<std::net::IpAddr>,
    /// Extra CA for `btp+wss` clients, for peers without a [`PeerConfig::ca_bundle`] of their own.
    pub client_tls: Option<TlsClientConfig>,
    /// Limits on the BTP sockets the listeners accept (`ilp-bridge run` sizes them from its file descriptor
    /// budget, see [`crate::fd_budget`]).
    pub connections: ConnectionLimits,
    /// Peers whose traffic goes to a modern connector (bridge mode): they are not routed; their hook is set
    /// between [`PeerNode::build`] and [`PeerNode::launch`].
    pub bridged: BTreeSet<String>,
}

/// Running peers: their trustlines, the router and the bound listener addresses.
pub struct PeerNode {
    trustlines: BTreeMap<String, Trustline>,
    router: Arc<Router>,
    listen_addrs: BTreeMap<u16, SocketAddr>,
    endpoint: BtpEndpoint,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Listeners to bind at [`PeerNode::launch`], by port.
    pending_listeners: BTreeMap<u16, PortPeers>,
    options: NodeOptions,
}

impl std::fmt::Debug for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNode")
            .field("peers", &self.trustlines.keys().collect::<Vec<_>>())
            .field("listen_addrs", &self.listen_addrs)
            .finish_non_exhaustive()
    }
}

/// The peers of one listener port: (incoming secret, peer key) pairs, and the TLS files if any.
type PortPeers = (
    Vec<(String, PeerKey)>,
    Option<crate::config::legacy::TlsFiles>,
);

/// The legacy authentication check of one listener: empty username and one of the secrets on that port.
struct PortAuth {
    secrets: Vec<(String, PeerKey)>,
}

impl Authenticator for PortAuth {
    fn authenticate(&self, username: &str, token: &str) -> Option<PeerKey> {
        if !username.is_empty() {
            return None;
        }
        self.secrets
            .iter()
            .find(|(s, _)| constant_time_eq(s.as_bytes(), token.as_bytes()))
            .map(|(_, k)| k.clone())
    }
}

/// Compares a configured secret with a token without telling anything about the secret through the time it
/// takes: both are hashed to fixed-size SHA-256 digests, which are compared without an early exit. Comparing
/// the raw bytes after a length check would tell the secret's length to anyone who tries tokens of growing
/// length (only equal lengths take the time of a comparison).
fn constant_time_eq(secret: &[u8], token: &[u8]) -> bool {
    let secret: [u8; 32] = Sha256::digest(secret).into();
    let token: [u8; 32] = Sha256::digest(token).into();
    secret.iter().zip(&token).fold(0u8, |acc, (x, y)| {
        #[cfg(test)]
        tests::note_byte_compared();
        acc | (x ^ y)
    }) == 0
}

/// Refuses unknown peers (every configured peer is registered up front).
struct NoNewSessions;

impl SessionFactory for NoNewSessions {
    fn handler_for(&self, _peer: &PeerKey) -> Option<Arc<dyn RequestHandler>> {
        None
    }
}

impl PeerNode {
    /// Starts every peer. Listeners are bound before this returns (port 0 gets a free port, see
    /// [`PeerNode::listen_addr`]); trustlines connect in the background.
    pub async fn start(
        configs: Vec<PeerConfig>,
        db: Arc<Db>,
        mut options: NodeOptions,
    ) -> Result<PeerNode, PeerError> {
        // Ledger identities are node-wide and durable: in the node's database, shared by every trustline.
        options.trustline.identities = NodeIdentities::on_db(Arc::clone(&db));
        let stores = |c: &PeerConfig| -> Arc<dyn PeerStores> {
            Arc::new(RocksStores::new(
                Arc::clone(&db),
                &c.name,
                c.max_balance,
                c.min_balance,
            ))
        };
        Self::start_with_stores(configs, stores, options).await
    }

    /// [`PeerNode::start`] with any store (tests use the in-memory one).
    pub async fn start_with_stores(
        configs: Vec<PeerConfig>,
        stores: impl Fn(&PeerConfig) -> Arc<dyn PeerStores>,
        options: NodeOptions,
    ) -> Result<PeerNode, PeerError> {
        let mut node = Self::build(configs, stores, options)?;
        node.launch().await?;
        Ok(node)
    }

    /// The first half of [`PeerNode::start_with_stores`]: builds the trustlines, their links and the router,
    /// and starts nothing (no timer, listener or connection). A bridged peer gets its hook now, before
    /// [`PeerNode::launch`] re-arms its expiry timers (which ask the hook).
    pub fn build(
        configs: Vec<PeerConfig>,
        stores: impl Fn(&PeerConfig) -> Arc<dyn PeerStores>,
        options: NodeOptions,
    ) -> Result<PeerNode, PeerError> {
        // Refuse conflicting peers (bad or duplicate names, a shared port with a duplicate secret or differing
        // TLS) before anything starts.
        validate_peer_set(&configs)?;
        options.routing.validate()?;
        for c in &configs {
            c.limits.validate(&format!("peer {:?}", c.name))?;
        }
        let endpoint = BtpEndpoint::new(EndpointConfig {
            limits: options.connections,
            ..EndpointConfig::default()
        });
        let router = Router::new(
            options.routing.clone(),
            Arc::clone(&options.trustline.clock),
        );
        let (stop, _) = watch::channel(false);
        let mut trustlines = BTreeMap::new();
        let mut by_port: BTreeMap<u16, PortPeers> = BTreeMap::new();
        for c in &configs {
            let module = match &c.module {
                Some(m) => Some(
                    channel_modules::build_module(m, &c.module_options()).map_err(|e| {
                        ConfigError::field(format!("{}.module", c.name), e.to_string())
                    })?,
                ),
                None => None,
            };
            let tl = Trustline::new(c, stores(c), module, options.trustline.clone())?;
            if !options.bridged.contains(&c.name) {
                router.add_peer(&tl);
            }
            let key = PeerKey::new(&c.name);
            let handler: Arc<dyn RequestHandler> = Arc::new(TrustlineHandler(tl.clone()));
            let session = match &c.server {
                Some(server) => {
                    let url = BtpUrl::parse(server.url.expose()).map_err(|e| {
                        ConfigError::field(format!("{}.server", c.name), e.to_string())
                    })?;
                    // The peer's own CA bundle wins over the node-wide extra CA.
                    let tls = match &c.ca_bundle {
                        Some(path) => {
                            Some(TlsClientConfig::with_extra_ca_file(path).map_err(|e| {
                                ConfigError::field(format!("{}.ca_bundle", c.name), e.to_string())
                            })?)
                        }
                        None => options.client_tls.clone(),
                    };
                    let opts = ClientOptions {
                        tls,
                        ..ClientOptions::default()
                    };
                    endpoint.connect(key.clone(), &url, opts, handler)
                }
                None => endpoint.register(key.clone(), handler),
            };
            tl.set_link(Arc::new(session));
            if let Some(l) = &c.listener {
                let secret = c
                    .incoming_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default();
                // validate_peer_set made the TLS settings of every peer on this port equal.
                let entry = by_port
                    .entry(l.port)
                    .or_insert_with(|| (Vec::new(), l.tls.clone()));
                entry.0.push((secret, key));
            }
            trustlines.insert(c.name.clone(), tl);
        }
        Ok(PeerNode {
            trustlines,
            router,
            listen_addrs: BTreeMap::new(),
            endpoint,
            stop,
            tasks: Vec::new(),
            pending_listeners: by_port,
            options,
        })
    }

    /// The second half of [`PeerNode::start_with_stores`]: re-arms the trustlines' timers, binds the
    /// listeners (port 0 gets a free port, see [`PeerNode::listen_addr`]), recovers forwarded transfers and
    /// connects every trustline in the background. Call once.
    pub async fn launch(&mut self) -> Result<(), PeerError> {
        // Every peer is known to the router (and every bridged peer has its hook) before any expiry timer is
        // re-armed: the expiry of a source whose forwarded transfer was fulfilled before a restart asks its hook,
        // which looks in the other side's log (`TransferHook::hold_incoming_expiry`).
        for tl in self.trustlines.values() {
            tl.start().await?;
        }
        let host = self
            .options
            .bind_host
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        for (port, (secrets, tls)) in std::mem::take(&mut self.pending_listeners) {
            let listener = TcpListener::bind((host, port)).await.map_err(|e| {
                ConfigError::field(
                    "listener.port",
                    format!("cannot listen on {host}:{port}: {e}"),
                )
            })?;
            let addr = listener.local_addr().map_err(|e| {
                ConfigError::field("listener.port", format!("no local address: {e}"))
            })?;
            self.listen_addrs.insert(port, addr);
            let server_config = ServerConfig {
                tls: match &tls {
                    Some(t) => Some(
                        TlsServerConfig::from_pem_files(&t.cert, &t.key, Some(t.ca.as_path()))
                            .map_err(|e| ConfigError::field("listener.cert", e.to_string()))?,
                    ),
                    None => None,
                },
                ..ServerConfig::default()
            };
            let ep = self.endpoint.clone();
            let mut rx = self.stop.subscribe();
            tracing::info!(%addr, peers = secrets.len(), "BTP/1.0 listener started");
            self.tasks.push(tokio::spawn(async move {
                ep.serve(
                    listener,
                    server_config,
                    Arc::new(PortAuth { secrets }),
                    Arc::new(NoNewSessions),
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )
                .await;
            }));
        }

        if let Err(e) = self.router.recover().await {
            tracing::warn!(error = %e, "router recovery failed");
        }
        for tl in self.trustlines.values() {
            let tl = tl.clone();
            let mut rx = self.stop.subscribe();
            self.tasks.push(tokio::spawn(async move {
                let mut delay = CONNECT_RETRY_MIN;
                loop {
                    match tl.connect().await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::debug!(peer = tl.name(), error = %e, "connect failed; retrying");
                            tl.note_error(format!("connect failed: {e}"));
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = rx.wait_for(|s| *s) => return,
                    }
                    delay = (delay * 2).min(CONNECT_RETRY_MAX);
                }
            }));
        }
        Ok(())
    }

    /// The node's BTP endpoint (its sessions; a bridged peer's modern BTP/2.0 session joins it).
    pub fn endpoint(&self) -> &BtpEndpoint {
        &self.endpoint
    }

    /// A receiver that turns `true` when the node shuts down (for tasks that live as long as the node).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The trustline of peer `name`.
    pub fn trustline(&self, name: &str) -> Option<&Trustline> {
        self.trustlines.get(name)
    }

    /// All trustlines by name.
    pub fn trustlines(&self) -> &BTreeMap<String, Trustline> {
        &self.trustlines
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The address the listener configured with `port` is bound to.
    pub fn listen_addr(&self, port: u16) -> Option<SocketAddr> {
        self.listen_addrs.get(&port).copied()
    }

    /// Stops: disconnects every trustline (module `disconnect`), closes listeners and sessions.
    pub async fn shutdown(self) {
        for tl in self.trustlines.values() {
            if let Err(e) = tl.disconnect().await {
                tracing::warn!(peer = tl.name(), error = %e, "disconnect failed");
            }
        }
        self.router.clear();
        self.stop.send_replace(true);
        for s in self.endpoint.all_sessions() {
            s.close();
        }
        for tl in self.trustlines.values() {
            tl.clear_link();
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Runs `configs` on `db` until `shutdown` completes (the CLI's `ilp-bridge run`). `configs` is the node's
/// whole peer configuration: ledger identities held by peers not in it are released first
/// ([`NodeIdentities::release_unconfigured`]).
pub async fn run_peers(
    configs: Vec<PeerConfig>,
    db: Arc<Db>,
    options: NodeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PeerError> {
    // The whole configuration is known here: identities held by peers no longer in it are released.
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    NodeIdentities::on_db(Arc::clone(&db))
        .release_unconfigured(&names)
        .await?;
    let node = PeerNode::start(configs, db, options).await?;
    shutdown.await;
    node.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Byte pairs the secret comparison looked at on this thread.
        static BYTES_COMPARED: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn note_byte_compared() {
        BYTES_COMPARED.with(|n| n.set(n.get() + 1));
    }

    /// `check()` and the number of byte pairs the comparison looked at meanwhile.
    fn compared<T>(check: impl FnOnce() -> T) -> (T, usize) {
        BYTES_COMPARED.with(|n| n.set(0));
        let out = check();
        (out, BYTES_COMPARED.with(Cell::get))
    }

    #[test]
    fn checking_a_token_does_the_same_work_whatever_its_length() {
        const SECRET: &str = "s3cret-of-some-length";
        let auth = PortAuth {
            secrets: vec![(SECRET.to_owned(), PeerKey::new("alice"))],
        };
        let long = "x".repeat(1000);
        let tokens = [
            "",
            "s",
            "s3cret",
            "s3cret-of-some-lengtX",
            SECRET,
            "s3cret-of-some-length!",
            long.as_str(),
        ];
        let mut work = Vec::new();
        for token in tokens {
            let (peer, n) = compared(|| auth.authenticate("", token));
            assert_eq!(peer.is_some(), token == SECRET, "{token:?}");
            work.push(n);
        }
        // The same work for every token, however long: the secret's length is not told by the comparison's
        // time (comparing only equal lengths told it to anyone who tried tokens of growing length).
        let lengths: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        assert!(
            work.iter().all(|n| *n == work[0]) && work[0] > 0,
            "bytes compared for tokens of lengths {lengths:?}: {work:?}"
        );
        // A username is refused before any comparison, as legacy does.
        assert_eq!(auth.authenticate("bob", SECRET), None);
    }
}
