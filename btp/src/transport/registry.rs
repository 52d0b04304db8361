//! [`SessionRegistry`]: a node's sessions by peer, shared by its listeners and dialers so that a peer's inbound
//! and outbound sockets meet in one session, and the [`SessionFactory`] that supplies handlers for peers that
//! authenticate without one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::peer_key::PeerKey;
use super::session::{BtpSession, RequestHandler};
use super::sync::lock;

/// Chooses the handler for a peer that authenticated on a listener and has no session yet.
pub trait SessionFactory: Send + Sync + 'static {
    /// The handler for `peer`'s new session, or `None` to refuse the socket (it gets the legacy
    /// `F00 NotAcceptedError "invalid auth token and/or username"`). Called at most once per peer and endpoint
    /// (the session is then kept); not called for peers created with
    /// [`BtpEndpoint::register`](crate::transport::BtpEndpoint::register) or
    /// [`BtpEndpoint::connect`](crate::transport::BtpEndpoint::connect).
    fn handler_for(&self, peer: &PeerKey) -> Option<Arc<dyn RequestHandler>>;
}

impl<F> SessionFactory for F
where
    F: Fn(&PeerKey) -> Option<Arc<dyn RequestHandler>> + Send + Sync + 'static,
{
    fn handler_for(&self, peer: &PeerKey) -> Option<Arc<dyn RequestHandler>> {
        self(peer)
    }
}

/// One session per peer. New sessions get the node's election nonce and per-peer socket limit.
pub(crate) struct SessionRegistry {
    /// This node's election nonce.
    nonce: u64,
    /// Most live sockets per peer (see [`SocketSet`](super::socket_set::SocketSet)).
    max_sockets_per_peer: usize,
    sessions: Mutex<HashMap<PeerKey, BtpSession>>,
}

impl SessionRegistry {
    /// A registry with no sessions.
    pub(crate) fn new(nonce: u64, max_sockets_per_peer: usize) -> Self {
        SessionRegistry {
            nonce,
            max_sockets_per_peer,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// This node's election nonce.
    pub(crate) fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The session for `peer`, created (disconnected, no dialer) with `handler` if there is none. An existing
    /// session keeps its handler.
    pub(crate) fn register(&self, peer: PeerKey, handler: Arc<dyn RequestHandler>) -> BtpSession {
        let (nonce, max_sockets) = (self.nonce, self.max_sockets_per_peer);
        lock(&self.sessions)
            .entry(peer.clone())
            .or_insert_with(|| BtpSession::new(peer, handler, nonce, max_sockets))
            .clone()
    }

    /// The session for `peer`, if one exists.
    pub(crate) fn get(&self, peer: &PeerKey) -> Option<BtpSession> {
        lock(&self.sessions).get(peer).cloned()
    }

    /// All sessions.
    pub(crate) fn all(&self) -> Vec<BtpSession> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// The session an authenticated inbound socket joins: the existing one, or a new one if `factory` gives a
    /// handler. `None` refuses the socket; a closed session refuses too.
    pub(crate) fn session_for_inbound(
        &self,
        peer: &PeerKey,
        factory: &dyn SessionFactory,
    ) -> Option<BtpSession> {
        if let Some(session) = self.get(peer) {
            return (!session.inner.is_closed()).then_some(session);
        }
        // Ask the factory without holding the lock (it is host code).
        let handler = factory.handler_for(peer)?;
        Some(self.register(peer.clone(), handler))
    }
}
