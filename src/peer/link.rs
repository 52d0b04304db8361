//! [`PeerLink`]: "send a request to the peer and get its [`Reply`]". The trustline core only talks to its peer
//! through this trait, so it does not care about sockets: the websocket transport's [`BtpSession`] implements
//! it, and `MemoryLink` (`testing` feature) wires two trustlines in memory for tests, delivering each request
//! to the other side's [`PacketHandler`]. A link knows nothing of the trustline: it carries packets.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use btp::packet::Packet;
use btp::transport::{BtpSession, Reply, RpcError};

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

/// Answers the requests a link delivers (what an in-memory link hands each request to; the trustline
/// implements it).
#[async_trait]
pub trait PacketHandler: Send + Sync {
    /// Answers one request from the peer. `None` for packets that get no reply (Response, Error, Transfer).
    async fn handle_packet(self: Arc<Self>, packet: Packet) -> Option<Reply>;
}

#[cfg(any(test, feature = "testing"))]
pub use memory::{LinkEnd, MemoryLink};

/// The in-memory link of tests (`testing` feature).
#[cfg(any(test, feature = "testing"))]
mod memory {
    use std::sync::{Arc, RwLock, Weak};
    use std::time::Duration;

    use async_trait::async_trait;
    use btp::packet::Packet;
    use btp::transport::{Reply, RpcError};

    use super::{PacketHandler, PeerLink};

    /// One end of a [`MemoryLink`] (a [`Trustline`](crate::peer::Trustline)): where requests to it are delivered, and
    /// how its own link to the other end is set.
    pub trait LinkEnd {
        /// The handler of requests sent to this end. Weak: a link does not keep the other end alive.
        fn packet_handler(&self) -> Weak<dyn PacketHandler>;
        /// Sets (or replaces) this end's link to its peer.
        fn set_link(&self, link: Arc<dyn PeerLink>);
    }

    /// An in-memory link to another trustline in the same process: a request is handed straight to the other
    /// side's [`PacketHandler`]. Can be cut ([`MemoryLink::set_up`]) to simulate a dropped connection.
    pub struct MemoryLink {
        target: RwLock<Option<Weak<dyn PacketHandler>>>,
        up: std::sync::atomic::AtomicBool,
    }

    impl MemoryLink {
        /// A link delivering to `target`.
        pub fn new(target: &dyn LinkEnd) -> Arc<Self> {
            Arc::new(MemoryLink {
                target: RwLock::new(Some(target.packet_handler())),
                up: std::sync::atomic::AtomicBool::new(true),
            })
        }

        /// Connects two trustlines to each other.
        pub fn pair(a: &dyn LinkEnd, b: &dyn LinkEnd) -> (Arc<MemoryLink>, Arc<MemoryLink>) {
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
        pub fn retarget(&self, target: &dyn LinkEnd) {
            if let Ok(mut t) = self.target.write() {
                *t = Some(target.packet_handler());
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
            match tokio::time::timeout(timeout, target.handle_packet(packet)).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) | Err(_) => Err(RpcError::Timeout),
            }
        }
    }
}
