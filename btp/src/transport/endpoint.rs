//! [`BtpEndpoint`]: a node's BTP transport, the one handle the host holds: its sessions, listeners and dialers.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::admission::{Admission, ConnectionLimits};
use super::auth::Authenticator;
use super::client::{spawn_dialer, ClientOptions};
use super::peer_key::PeerKey;
use super::registry::{SessionFactory, SessionRegistry};
use super::server::{self, ServerConfig};
use super::session::{BtpSession, RequestHandler};
use super::url::BtpUrl;

/// Node-wide transport settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Election nonce (see "Election" in the [transport docs](crate::transport)); random by default. Two
    /// nodes that peer with each other must have different nonces.
    pub nonce: u64,
    /// Limits on accepted sockets, shared by all the endpoint's listeners, and on sockets per peer.
    pub limits: ConnectionLimits,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            nonce: rand::random(),
            limits: ConnectionLimits::default(),
        }
    }
}

struct EndpointInner {
    /// The sessions by peer.
    registry: Arc<SessionRegistry>,
    /// Node-wide socket admission (pools, per-address limits, auth penalties).
    admission: Arc<Admission>,
}

/// One node's BTP transport: the sessions by peer, the listener(s) and the dialers. Cheap to clone.
///
/// Use one endpoint for everything a node does so that a peer's inbound and outbound sockets join the same
/// session.
#[derive(Clone)]
pub struct BtpEndpoint {
    inner: Arc<EndpointInner>,
}

impl std::fmt::Debug for BtpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtpEndpoint")
            .field("nonce", &self.nonce())
            .finish()
    }
}

impl BtpEndpoint {
    /// An endpoint with no sessions.
    pub fn new(config: EndpointConfig) -> Self {
        let admission = Arc::new(Admission::new(config.limits));
        let registry = Arc::new(SessionRegistry::new(
            config.nonce,
            admission.limits().max_sockets_per_peer,
        ));
        BtpEndpoint {
            inner: Arc::new(EndpointInner {
                registry,
                admission,
            }),
        }
    }

    /// This node's election nonce.
    pub fn nonce(&self) -> u64 {
        self.inner.registry.nonce()
    }

    /// The socket limits in force (a 0 in [`EndpointConfig::limits`] is raised to 1).
    pub fn limits(&self) -> ConnectionLimits {
        self.inner.admission.limits()
    }

    /// Accepted sockets that have not authenticated yet, over all listeners.
    pub fn unauthenticated_sockets(&self) -> usize {
        self.inner.admission.unauthenticated_count()
    }

    /// Auth attempts refused on this endpoint's listeners since it was made (wrong token or username).
    pub fn auth_failures(&self) -> u64 {
        self.inner.admission.auth_failures()
    }

    /// Accepted sockets that have authenticated, over all listeners.
    pub fn authenticated_sockets(&self) -> usize {
        self.inner.admission.authenticated_count()
    }

    /// The session for `peer`, creating it (disconnected, no dialer) with `handler` if there is none. An
    /// existing session keeps its handler. Use this for peers that dial us, so requests to them fail fast
    /// with [`RpcError::NotConnected`](crate::transport::RpcError::NotConnected) until they do.
    pub fn register(&self, peer: PeerKey, handler: Arc<dyn RequestHandler>) -> BtpSession {
        self.inner.registry.register(peer, handler)
    }

    /// The session for `peer` (as [`register`](Self::register)) with a dialer for `url` started in the
    /// background: it connects at once, re-authenticates after every drop and redials with backoff. Calling it
    /// again for the same peer returns the same session and starts no second dialer. Needs a tokio runtime.
    pub fn connect(
        &self,
        peer: PeerKey,
        url: &BtpUrl,
        opts: ClientOptions,
        handler: Arc<dyn RequestHandler>,
    ) -> BtpSession {
        let session = self.register(peer, handler);
        spawn_dialer(session.inner.clone(), url.clone(), opts, self.nonce());
        session
    }

    /// The session for `peer`, if one exists.
    pub fn session(&self, peer: &PeerKey) -> Option<BtpSession> {
        self.inner.registry.get(peer)
    }

    /// All sessions.
    pub fn all_sessions(&self) -> Vec<BtpSession> {
        self.inner.registry.all()
    }

    /// Accepts BTP sockets on `listener` until `shutdown` completes, then stops accepting, closes the sockets
    /// it accepted (code 1000) and returns after they are closed (or after a short grace period).
    ///
    /// `auth` decides who may connect; `handler_for` supplies the handler for peers without a session.
    pub async fn serve(
        &self,
        listener: TcpListener,
        config: ServerConfig,
        auth: Arc<dyn Authenticator>,
        handler_for: Arc<dyn SessionFactory>,
        shutdown: impl Future<Output = ()>,
    ) {
        server::serve(
            self.inner.registry.clone(),
            self.inner.admission.clone(),
            listener,
            config,
            auth,
            handler_for,
            shutdown,
        )
        .await;
    }
}

/// [`BtpEndpoint::serve`] on a fresh endpoint of its own (no election with dialers elsewhere).
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    handler_for: Arc<dyn SessionFactory>,
    shutdown: impl Future<Output = ()>,
) {
    BtpEndpoint::new(EndpointConfig::default())
        .serve(listener, config, auth, handler_for, shutdown)
        .await;
}

/// [`BtpEndpoint::connect`] on a fresh endpoint of its own.
pub fn connect(
    peer: PeerKey,
    url: &BtpUrl,
    opts: ClientOptions,
    handler: Arc<dyn RequestHandler>,
) -> BtpSession {
    BtpEndpoint::new(EndpointConfig::default()).connect(peer, url, opts, handler)
}
