//! [`PeerLink`]: "send a request to the peer and get its [`Reply`]". The trustline core only talks to its peer
//! through this trait, so it does not care about sockets: the websocket transport's [`BtpSession`] implements
//! it, and [`MemoryLink`] wires two trustlines in memory for tests.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use btp::packet::Packet;
use btp::transport::{BtpSession, Reply, RpcError};

use super::trustline::{Trustline, TrustlineInner};

/// A way to send requests to the peer.
#[async_trait]
pub trait PeerLink: Send + Sync {
    /// Sends `packet` (Prepare, Fulfill, Reject or Message) and waits up to `timeout` for the Response or
    /// Error. Errors follow [`RpcError`]: `NotConnected`/`TooManyPending`/`Closed` mean "never sent".
    async fn request(&self, packet: Packet, timeout: Duration) -> Result<Reply, RpcError>;
}

#[async_trait]
impl PeerLink for BtpSession {
    async fn request(&self, packet: Packet, timeout: Duration) -> Result<Reply, RpcError> {
        BtpSession::request(self, packet, timeout).await
    }
}

/// An in-memory link to another [`Trustline`] in the same process: a request is handed straight to the other
/// side's packet handler. Can be cut ([`MemoryLink::set_up`]) to simulate a dropped connection.
pub struct MemoryLink {
    target: RwLock<Option<Weak<TrustlineInner>>>,
    up: std::sync::atomic::AtomicBool,
}

impl MemoryLink {
    /// A link delivering to `target`.
    pub fn new(target: &Trustline) -> Arc<Self> {
        Arc::new(MemoryLink {
            target: RwLock::new(Some(Arc::downgrade(&target.inner))),
            up: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Connects two trustlines to each other.
    pub fn pair(a: &Trustline, b: &Trustline) -> (Arc<MemoryLink>, Arc<MemoryLink>) {
        let ab = MemoryLink::new(b);
        let ba = MemoryLink::new(a);
        a.set_link(ab.clone());
        b.set_link(ba.clone());
        (ab, ba)
    }

    /// Brings the link up or down; while down every request fails with [`RpcError::NotConnected`].
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }

    /// Points the link at another trustline (e.g. a restarted one).
    pub fn retarget(&self, target: &Trustline) {
        if let Ok(mut t) = self.target.write() {
            *t = Some(Arc::downgrade(&target.inner));
        }
    }
}

#[async_trait]
impl PeerLink for MemoryLink {
    async fn request(&self, packet: Packet, timeout: Duration) -> Result<Reply, RpcError> {
        if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RpcError::NotConnected);
        }
        let target = self
            .target
            .read()
            .ok()
            .and_then(|t| t.as_ref().and_then(Weak::upgrade))
            .ok_or(RpcError::NotConnected)?;
        let peer = Trustline { inner: target };
        match tokio::time::timeout(timeout, peer.handle_packet(packet)).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => Err(RpcError::Timeout),
        }
    }
}
