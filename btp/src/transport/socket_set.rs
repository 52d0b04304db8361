//! The sockets one session uses, and the election between them.
//!
//! A session sends its requests on one socket (the oldest live one) and its replies on the socket the request
//! arrived on. Legacy peers hold two sockets to us and expect both kept (docs/legacy-btp.md §4.3), so several
//! sockets may be attached at once. When two bridge nodes both listen and dial, each may end up with two
//! sockets to the other; the **election** keeps one:
//!
//! * every endpoint has a random 64-bit nonce, which its dialer sends in the auth Message's
//!   `ilp_bridge_nonce` entry (legacy and interledger-rs servers ignore unknown entries);
//! * when a session holds both a socket it dialed and an accepted socket whose auth carried a nonce, the socket
//!   dialed by the node with the larger nonce survives and the other is closed (both nodes compute the same
//!   answer);
//! * a newer accepted socket with the same nonce as an older one replaces it (the peer redialed);
//! * sockets from peers that sent no nonce (legacy JS, interledger-rs) are never closed by the election: a
//!   legacy peer keeps a closed socket in its list and fails every later call, so extra sockets are kept and
//!   their requests deduplicated instead.
//!
//! An accepted socket beyond the per-peer limit is refused. Sockets that are closing or presumed dead (see
//! [`SocketControl::is_live`](super::socket::SocketControl::is_live)) and sockets the new one replaces do not
//! count, so a peer that redials after a drop is not refused while its old socket is still being noticed dead.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::info;

use super::peer_key::PeerKey;
use super::socket::{Attached, SocketHandle, SocketOrigin};
use super::sync::lock;

/// The live, elected sockets of one session; the first is used for new requests.
pub(crate) struct SocketSet {
    /// The session's peer (for the election's log lines).
    peer: PeerKey,
    /// This node's election nonce.
    node_nonce: u64,
    /// Most live sockets; a newly accepted one beyond it is refused
    /// ([`ConnectionLimits::max_sockets_per_peer`](crate::transport::ConnectionLimits::max_sockets_per_peer)).
    max_sockets: usize,
    sockets: Mutex<Vec<SocketHandle>>,
}

impl SocketSet {
    /// An empty set (`max_sockets` of 0 is raised to 1).
    pub(crate) fn new(peer: PeerKey, node_nonce: u64, max_sockets: usize) -> Self {
        SocketSet {
            peer,
            node_nonce,
            max_sockets: max_sockets.max(1),
            sockets: Mutex::new(Vec::new()),
        }
    }

    /// Adds an authenticated socket and runs the election (see the module docs and [`Attached`]), unless
    /// `session_closed` says the session is closed (checked under the set's lock, so a socket attached
    /// concurrently with a close is either refused here or closed by [`SocketSet::close_all`]). Returns what
    /// happened and how many sockets the set holds now.
    pub(crate) fn attach(
        &self,
        socket: SocketHandle,
        session_closed: impl FnOnce() -> bool,
    ) -> (Attached, usize) {
        let mut sockets = lock(&self.sockets);
        if session_closed() {
            let count = sockets.len();
            drop(sockets);
            socket.control.close(false);
            return (Attached::Closing, count);
        }
        let mut losers: Vec<SocketHandle> = Vec::new();
        let mut new_loses = false;
        match socket.origin {
            SocketOrigin::Accepted {
                nonce: Some(theirs),
            } => {
                for old in sockets.iter() {
                    match old.origin {
                        // The same bridge node dialed again: its older socket is stale.
                        SocketOrigin::Accepted { nonce: Some(n) } if n == theirs => {
                            losers.push(old.clone())
                        }
                        SocketOrigin::Dialed if self.node_nonce > theirs => new_loses = true,
                        SocketOrigin::Dialed if self.node_nonce < theirs => {
                            losers.push(old.clone())
                        }
                        _ => {}
                    }
                }
            }
            SocketOrigin::Dialed => {
                for old in sockets.iter() {
                    match old.origin {
                        SocketOrigin::Accepted { nonce: Some(n) } if self.node_nonce > n => {
                            losers.push(old.clone())
                        }
                        SocketOrigin::Accepted { nonce: Some(n) } if self.node_nonce < n => {
                            new_loses = true
                        }
                        _ => {}
                    }
                }
            }
            SocketOrigin::Accepted { nonce: None } => {}
        }
        if new_loses {
            // A losing new socket replaces nothing: the existing sockets won against it.
            losers.clear();
        } else if matches!(socket.origin, SocketOrigin::Accepted { .. }) {
            let live = sockets
                .iter()
                .filter(|s| s.control.is_live() && !losers.iter().any(|x| x.id == s.id))
                .count();
            if live >= self.max_sockets {
                return (Attached::Full, sockets.len());
            }
        }
        sockets.retain(|s| !losers.iter().any(|x| x.id == s.id));
        let (new_id, new_origin, new_control) = (socket.id, socket.origin, socket.control.clone());
        if !new_loses {
            sockets.push(socket);
        }
        let count = sockets.len();
        drop(sockets);
        for loser in &losers {
            info!(peer = %self.peer, link = loser.id, origin = ?loser.origin, "closing socket that lost the election");
            loser.control.close(true);
        }
        if new_loses {
            info!(peer = %self.peer, link = new_id, origin = ?new_origin, "new socket lost the election");
            new_control.close(true);
            (Attached::Closing, count)
        } else {
            (Attached::Elected, count)
        }
    }

    /// Removes socket `socket_id`; returns how many sockets remain.
    pub(crate) fn detach(&self, socket_id: u64) -> usize {
        let mut sockets = lock(&self.sockets);
        sockets.retain(|s| s.id != socket_id);
        sockets.len()
    }

    /// The socket new requests go to: the oldest one.
    pub(crate) fn for_request(&self) -> Option<SocketHandle> {
        lock(&self.sockets).first().cloned()
    }

    /// Where a reply to a request read on socket `socket_id` goes: that socket, or, if it is closing or gone,
    /// another open one (a request read during a socket's close linger is answered on the socket that stays;
    /// its copy on that socket was dropped as a duplicate); failing both, any socket still attached.
    pub(crate) fn for_reply(&self, socket_id: u64) -> Option<mpsc::Sender<Bytes>> {
        let sockets = lock(&self.sockets);
        let open = |s: &&SocketHandle| !s.control.is_closing();
        sockets
            .iter()
            .filter(open)
            .find(|s| s.id == socket_id)
            .or_else(|| sockets.iter().find(open))
            .or_else(|| sockets.iter().find(|s| s.id == socket_id))
            .or_else(|| sockets.first())
            .map(|s| s.tx.clone())
    }

    /// How many sockets are attached.
    pub(crate) fn len(&self) -> usize {
        lock(&self.sockets).len()
    }

    /// Detaches every socket and tells each to close.
    pub(crate) fn close_all(&self) {
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        for socket in sockets {
            socket.control.close(false);
        }
    }
}
