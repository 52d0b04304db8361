//! [`BtpSession`]: one logical, authenticated relationship with one peer, independent of sockets, and the
//! [`RequestHandler`] that answers the peer's requests on it.
//!
//! A session owns what must survive a reconnect or span several sockets: the [`PendingRequests`] waiting for
//! a reply, the [`Dedupe`] table of incoming requests, the [`SocketSet`] with the election between sockets,
//! and the [`ConnectionState`]. Sockets are attached by the listener (after auth) and by the dialer, and
//! detached by their own tasks when they end; they reach the session through [`SocketOwner`]. Incoming frames
//! are classified here (see "Inbound classification" in the [transport docs](crate::transport)).
//!
//! Locks are `std::sync::Mutex`es held for a few map operations only, never across an `.await`, and never two
//! at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, Instrument};

use super::dedupe::{frame_digest, Dedupe, DedupeKey};
use super::legacy_time::{self, PrepareTime};
use super::limits::MAX_CONCURRENT_HANDLERS;
use super::peer_key::PeerKey;
use super::pending::PendingRequests;
use super::reply::{Reply, RpcError};
use super::socket::{Attached, SocketHandle, SocketOwner};
use super::socket_set::SocketSet;
use super::sync::lock;
use crate::packet::{BtpVersion, Frame, Packet};
use crate::time::Timestamp;

/// Implemented by the host: answers the requests a peer sends on an authenticated session.
///
/// Called once per request (see "Inbound classification" in the [transport docs](crate::transport) for which
/// frames are requests: Prepare, Fulfill, Reject, Message, Transfer, and Responses that carry an unsolicited
/// `ilp` packet). Calls for one session run concurrently (at most [`MAX_CONCURRENT_HANDLERS`]); the host
/// orders them itself if it needs to.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. `Some(reply)` is sent back with the same request ID; `None` sends nothing (legacy
    /// sends no reply for unknown types). The reply is dropped if the session has no socket by then.
    async fn handle_request(
        &self,
        session: &BtpSession,
        request_id: u32,
        packet: Packet,
    ) -> Option<Reply>;
}

/// Whether a session currently has an authenticated socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// No socket, and no dial in progress (listener-side sessions wait for the peer to dial).
    Disconnected,
    /// No socket yet; the dialer is dialling or authenticating (or waiting to redial).
    Connecting,
    /// At least one authenticated socket.
    Connected,
    /// [`BtpSession::close`] was called; final.
    Closed,
}

/// Shared state of a session.
pub(crate) struct SessionInner {
    /// Who the session is with.
    pub(crate) peer: PeerKey,
    /// Answers the peer's requests.
    handler: Arc<dyn RequestHandler>,
    /// Current state; the dialer and `request` wait on it.
    pub(crate) state: watch::Sender<ConnectionState>,
    /// True once a dialer runs for this session (then requests wait for a socket instead of failing).
    dialing: AtomicBool,
    /// Live, elected sockets.
    sockets: SocketSet,
    /// Requests waiting for replies.
    pending: PendingRequests,
    /// Incoming requests seen recently.
    dedupe: Mutex<Dedupe>,
    /// Bounds the concurrently running handler calls.
    handler_permits: Arc<Semaphore>,
}

/// One authenticated logical session with one peer. Cheap to clone (an `Arc`).
///
/// Obtained from [`BtpEndpoint`](crate::transport::BtpEndpoint) (`connect`, `register`, `session`) or passed
/// to the [`RequestHandler`]. It outlives sockets: on the dialer side it redials after a drop; on the listener
/// side the peer's next authenticated socket joins it.
#[derive(Clone)]
pub struct BtpSession {
    pub(crate) inner: Arc<SessionInner>,
}

impl std::fmt::Debug for BtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtpSession")
            .field("peer", &self.inner.peer)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// Removes a pending entry when `request` returns or is cancelled.
struct PendingGuard<'a> {
    inner: &'a SessionInner,
    request_id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.remove(self.request_id);
    }
}

/// Marks an incoming request as handled when the handler finishes, panics or is cancelled.
struct DedupeGuard {
    inner: Arc<SessionInner>,
    key: DedupeKey,
}

impl Drop for DedupeGuard {
    fn drop(&mut self) {
        lock(&self.inner.dedupe).complete(self.key, Instant::now());
    }
}

impl BtpSession {
    pub(crate) fn new(
        peer: PeerKey,
        handler: Arc<dyn RequestHandler>,
        node_nonce: u64,
        max_sockets: usize,
    ) -> Self {
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        BtpSession {
            inner: Arc::new(SessionInner {
                sockets: SocketSet::new(peer.clone(), node_nonce, max_sockets),
                peer,
                handler,
                state,
                dialing: AtomicBool::new(false),
                pending: PendingRequests::default(),
                dedupe: Mutex::new(Dedupe::default()),
                handler_permits: Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS)),
            }),
        }
    }

    /// Sends `packet` as a request with a fresh random request ID and waits for the Response or Error with that
    /// ID, for at most `timeout` (which includes waiting for the dialer to connect, on the dialer side).
    ///
    /// Errors: see [`RpcError`] for which ones guarantee the frame was never written.
    pub async fn request(&self, packet: Packet, timeout: Duration) -> Result<Reply, RpcError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + timeout;
        let socket = inner.socket_for_request(deadline).await?;
        let (request_id, rx) = inner.pending.register(socket.id)?;
        let _guard = PendingGuard { inner, request_id };
        let bytes = Frame::new(request_id, packet).to_bytes();
        match timeout_at(deadline, socket.tx.send(bytes)).await {
            Err(_) => return Err(RpcError::Timeout),
            // The socket's writer is gone, so nothing was written.
            Ok(Err(_)) => return Err(RpcError::NotConnected),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, rx).await {
            Err(_) => Err(RpcError::Timeout),
            Ok(Err(_)) => Err(RpcError::Disconnected),
            Ok(Ok(result)) => result,
        }
    }

    /// The peer this session is with.
    pub fn peer(&self) -> &PeerKey {
        &self.inner.peer
    }

    /// True while at least one authenticated socket is up.
    pub fn is_connected(&self) -> bool {
        *self.inner.state.borrow() == ConnectionState::Connected
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// How many authenticated sockets the session uses now (normally 1; more only with legacy peers that
    /// dialed us while we dialed them).
    pub fn socket_count(&self) -> usize {
        self.inner.sockets.len()
    }

    /// Closes the session for good: stops the dialer, closes its sockets and fails waiting requests with
    /// [`RpcError::Closed`]. Sockets the peer opens later are refused.
    pub fn close(&self) {
        let inner = &*self.inner;
        inner.state.send_replace(ConnectionState::Closed);
        inner.sockets.close_all();
        inner.pending.fail_all(RpcError::Closed);
    }

    /// True if both handles refer to the same session.
    pub fn ptr_eq(&self, other: &BtpSession) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl SessionInner {
    pub(crate) fn is_closed(&self) -> bool {
        *self.state.borrow() == ConnectionState::Closed
    }

    /// Marks the session as having a dialer; false if it already had one.
    pub(crate) fn set_dialing(&self) -> bool {
        !self.dialing.swap(true, Ordering::SeqCst)
    }

    /// Recomputes the state from the number of sockets (never leaves `Closed`).
    fn update_state(&self, sockets: usize) {
        let next = if sockets > 0 {
            ConnectionState::Connected
        } else if self.dialing.load(Ordering::SeqCst) {
            ConnectionState::Connecting
        } else {
            ConnectionState::Disconnected
        };
        self.state.send_if_modified(|s| {
            if *s == ConnectionState::Closed || *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// The socket new requests go to, waiting for the dialer if there is one.
    async fn socket_for_request(&self, deadline: Instant) -> Result<SocketHandle, RpcError> {
        let mut state = self.state.subscribe();
        loop {
            if let Some(socket) = self.sockets.for_request() {
                return Ok(socket);
            }
            if self.is_closed() {
                return Err(RpcError::Closed);
            }
            if !self.dialing.load(Ordering::SeqCst) {
                return Err(RpcError::NotConnected);
            }
            let wait = async {
                state
                    .wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::Closed))
                    .await
                    .is_ok()
            };
            if !matches!(timeout_at(deadline, wait).await, Ok(true)) {
                return Err(RpcError::NotConnected);
            }
        }
    }

    /// Sends a reply on the socket the request came in on, or on another one (see [`SocketSet::for_reply`]).
    async fn send_reply(&self, socket_id: u64, bytes: Bytes) {
        match self.sockets.for_reply(socket_id) {
            Some(tx) => {
                if tx.send(bytes).await.is_err() {
                    debug!(peer = %self.peer, "reply dropped: socket closed");
                }
            }
            None => debug!(peer = %self.peer, "reply dropped: no socket"),
        }
    }

    /// Classifies one incoming binary message (see "Inbound classification" in the transport docs).
    async fn classify(self: &Arc<Self>, socket_id: u64, bytes: Bytes) {
        // A Prepare's expiry is read the way legacy reads it (see `legacy_time`): the codec's parse is checked
        // for legacy's form below; only a frame the codec refuses is looked at again here.
        let (frame, bytes) = match Frame::decode(&bytes, BtpVersion::Btp1) {
            Ok(frame) => (frame, bytes),
            Err(err) => match legacy_time::check_prepare_time(&bytes) {
                PrepareTime::Rewritten(b) => match Frame::decode(&b, BtpVersion::Btp1) {
                    Ok(frame) => (frame, b),
                    Err(err) => {
                        debug!(%err, len = b.len(), "ignoring undecodable frame");
                        return;
                    }
                },
                PrepareTime::Refuse { request_id } => {
                    self.refuse_expiry(socket_id, (request_id, frame_digest(&bytes)))
                        .await;
                    return;
                }
                PrepareTime::Keep => {
                    debug!(%err, len = bytes.len(), "ignoring undecodable frame");
                    return;
                }
            },
        };
        let request_id = frame.request_id;
        // Only requests are deduplicated; replies are matched by ID and need no digest.
        let key = || (request_id, frame_digest(&bytes));
        match frame.packet {
            Packet::Response(pd) => {
                if let Some(tx) = self.pending.take(request_id) {
                    let _ = tx.send(Ok(Reply::Response(pd)));
                } else if pd.get("ilp").is_some() {
                    // interledger-rs sends Prepares in Response frames.
                    self.dispatch(socket_id, key(), Packet::Response(pd)).await;
                } else {
                    debug!(request_id, "ignoring stray response");
                }
            }
            Packet::Error(err) => match self.pending.take(request_id) {
                Some(tx) => {
                    let _ = tx.send(Ok(Reply::Error(err)));
                }
                None => debug!(request_id, "ignoring stray error"),
            },
            Packet::Message(pd) if pd.get("ilp").is_some() && self.pending.contains(request_id) => {
                // interledger-rs answers Prepares with Fulfill/Reject in Message frames.
                if let Some(tx) = self.pending.take(request_id) {
                    let _ = tx.send(Ok(Reply::Response(pd)));
                }
            }
            Packet::Prepare(p) if !legacy_time::decoded_expiry_is_legacy(&bytes, p.expires_at) => {
                self.refuse_expiry(socket_id, key()).await;
            }
            packet => self.dispatch(socket_id, key(), packet).await,
        }
    }

    /// Answers a Prepare whose expiry legacy refuses with legacy's RangeError, once per request (a duplicate
    /// sent on another socket gets nothing, like any duplicate request).
    async fn refuse_expiry(self: &Arc<Self>, socket_id: u64, key: DedupeKey) {
        let request_id = key.0;
        if !lock(&self.dedupe).begin(key, Instant::now()) {
            debug!(request_id, "dropping duplicate request");
            return;
        }
        // Completes the request even if this future is dropped mid-send.
        let _done = DedupeGuard {
            inner: self.clone(),
            key,
        };
        debug!(
            request_id,
            "prepare with an invalid expiry: legacy RangeError"
        );
        let reply = legacy_time::range_error(request_id, Timestamp::now());
        self.send_reply(socket_id, reply).await;
    }

    /// Runs the handler for a request once per request (see [`Dedupe`]).
    async fn dispatch(self: &Arc<Self>, socket_id: u64, key: DedupeKey, packet: Packet) {
        let request_id = key.0;
        if !lock(&self.dedupe).begin(key, Instant::now()) {
            debug!(request_id, "dropping duplicate request");
            return;
        }
        let guard = DedupeGuard {
            inner: self.clone(),
            key,
        };
        let Ok(permit) = self.handler_permits.clone().acquire_owned().await else {
            return;
        };
        let session = BtpSession {
            inner: self.clone(),
        };
        let task = async move {
            let reply = session
                .inner
                .handler
                .handle_request(&session, request_id, packet)
                .await;
            drop(guard);
            if let Some(reply) = reply {
                let bytes = Frame::new(request_id, reply.into_packet()).to_bytes();
                session.inner.send_reply(socket_id, bytes).await;
            }
            drop(permit);
        };
        tokio::spawn(task.in_current_span());
    }
}

impl SocketOwner for SessionInner {
    fn peer(&self) -> &PeerKey {
        &self.peer
    }

    fn attach(&self, socket: SocketHandle) -> Attached {
        let (attached, count) = self.sockets.attach(socket, || self.is_closed());
        if attached != Attached::Full {
            self.update_state(count);
        }
        attached
    }

    fn on_frame(
        self: &Arc<Self>,
        socket_id: u64,
        bytes: Bytes,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.classify(socket_id, bytes)
    }

    /// Removes a socket whose tasks ended and fails the requests written to it (unless the election closed it
    /// while another socket remains: bridge peers then answer on the surviving socket).
    fn detach(&self, socket_id: u64, by_election: bool) {
        let remaining = self.sockets.detach(socket_id);
        if !(by_election && remaining > 0) {
            self.pending.fail_socket(socket_id, RpcError::Disconnected);
        }
        self.update_state(remaining);
    }
}
