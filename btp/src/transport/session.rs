//! [`BtpSession`]: one logical, authenticated relationship with one peer, independent of sockets.
//!
//! A session owns the things that must survive a reconnect or span several sockets: the table of requests
//! waiting for a reply (matched by request ID, whichever socket the reply arrives on), the deduplication table
//! of incoming request IDs, the list of live sockets ("links") with the election between them, and the
//! [`ConnectionState`]. Links are attached by the listener (after auth) and by the dialer, and detached by
//! their own tasks when they end.
//!
//! Locks are `std::sync::Mutex`es held for a few map operations only, never across an `.await`, and never two
//! at a time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, Instrument};

use super::link::{LinkControl, LinkOrigin};
use super::{
    ConnectionState, PeerKey, Reply, RequestHandler, RpcError, DEDUPE_WINDOW,
    MAX_CONCURRENT_HANDLERS, MAX_DEDUPE_ENTRIES, MAX_PENDING_REQUESTS,
};
use crate::packet::{BtpVersion, Frame, Packet};

/// Locks a mutex, ignoring poisoning: every critical section leaves the maps consistent even if a panic
/// interrupts it (single insert/remove operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A live socket as the session sees it.
#[derive(Clone)]
pub(crate) struct LinkHandle {
    /// Process-unique link ID (also in the tracing span).
    pub(crate) id: u64,
    /// Who dialed, and the dialer's election nonce.
    pub(crate) origin: LinkOrigin,
    /// Frames to write on this socket.
    pub(crate) tx: mpsc::Sender<Bytes>,
    /// Closes the socket.
    pub(crate) control: Arc<LinkControl>,
}

/// A request waiting for its reply.
struct Pending {
    /// The link the request was written to; its drop fails the request.
    link_id: u64,
    /// Completes [`BtpSession::request`].
    tx: oneshot::Sender<Result<Reply, RpcError>>,
}

/// Request IDs being handled or handled recently.
#[derive(Default)]
struct Dedupe {
    /// Being handled now.
    in_flight: HashSet<DedupeKey>,
    /// Handled, with the time they finished.
    done: HashMap<DedupeKey, Instant>,
    /// `done` in completion order, for expiry.
    order: VecDeque<(DedupeKey, Instant)>,
}

/// What makes two incoming requests "the same request": the request ID *and* a digest of the whole frame.
///
/// Request IDs are random 32-bit numbers, so two different requests share an ID now and then (with
/// [`MAX_DEDUPE_ENTRIES`] remembered IDs, about once per 10⁶ requests). Keyed on the ID alone, such a request
/// was dropped as a "duplicate" and its sender timed out (a lost Fulfill: the payee counted it, the payer did
/// not). A true duplicate (the same frame sent on two sockets) has the same bytes, hence the same digest.
type DedupeKey = (u32, u64);

/// Digest of a received frame for [`DedupeKey`]: SipHash with fixed keys (only accidental collisions matter;
/// a peer that forges one only loses its own request).
fn frame_digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Dedupe {
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if now.duration_since(at) < DEDUPE_WINDOW && self.order.len() <= MAX_DEDUPE_ENTRIES {
                break;
            }
            self.order.pop_front();
            if self.done.get(&key) == Some(&at) {
                self.done.remove(&key);
            }
        }
        if self.order.is_empty() && self.done.capacity() > 64 {
            // Give back memory after a burst: idle sessions should stay small.
            self.done = HashMap::new();
            self.order = VecDeque::new();
        }
    }

    /// True if `key` is new (and marks it in flight).
    fn begin(&mut self, key: DedupeKey, now: Instant) -> bool {
        self.expire(now);
        if self.in_flight.contains(&key) || self.done.contains_key(&key) {
            return false;
        }
        self.in_flight.insert(key);
        true
    }

    fn complete(&mut self, key: DedupeKey, now: Instant) {
        self.in_flight.remove(&key);
        self.done.insert(key, now);
        self.order.push_back((key, now));
        self.expire(now);
    }
}

/// Shared state of a session.
pub(crate) struct SessionInner {
    /// Who the session is with.
    pub(crate) peer: PeerKey,
    /// Answers the peer's requests.
    handler: Arc<dyn RequestHandler>,
    /// This node's election nonce.
    node_nonce: u64,
    /// Current state; the dialer and `request` wait on it.
    pub(crate) state: watch::Sender<ConnectionState>,
    /// True once a dialer runs for this session (then requests wait for a socket instead of failing).
    dialing: AtomicBool,
    /// Live, elected sockets; the first is used for new requests.
    links: Mutex<Vec<LinkHandle>>,
    /// Requests waiting for replies, by request ID.
    pending: Mutex<HashMap<u32, Pending>>,
    /// Incoming request IDs seen recently.
    dedupe: Mutex<Dedupe>,
    /// Bounds the concurrently running handler calls.
    handler_permits: Arc<Semaphore>,
    /// Most live sockets; a newly accepted one beyond it is refused
    /// ([`ConnectionLimits::max_sockets_per_peer`](super::ConnectionLimits::max_sockets_per_peer)).
    max_sockets: usize,
}

/// What [`SessionInner::attach`] did with a new link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attached {
    /// The link is in use.
    Elected,
    /// The link lost the election (or the session is closed): it was told to close, after the frames already
    /// queued on it (the listener's auth Response).
    Closing,
    /// An accepted link beyond the per-peer socket limit: nothing changed, the caller refuses the socket.
    Full,
}

/// One authenticated logical session with one peer. Cheap to clone (an `Arc`).
///
/// Obtained from [`BtpEndpoint`](super::BtpEndpoint) (`connect`, `register`, `session`) or passed to the
/// [`RequestHandler`]. It outlives sockets: on the dialer side it redials after a drop; on the listener side
/// the peer's next authenticated socket joins it.
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
        lock(&self.inner.pending).remove(&self.request_id);
    }
}

/// Marks an incoming request ID as handled when the handler finishes, panics or is cancelled.
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
                peer,
                handler,
                node_nonce,
                state,
                dialing: AtomicBool::new(false),
                links: Mutex::new(Vec::new()),
                pending: Mutex::new(HashMap::new()),
                dedupe: Mutex::new(Dedupe::default()),
                handler_permits: Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS)),
                max_sockets: max_sockets.max(1),
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
        let link = inner.link_for_request(deadline).await?;
        let (request_id, rx) = inner.register_pending(link.id)?;
        let _guard = PendingGuard { inner, request_id };
        let bytes = Frame::new(request_id, packet).to_bytes();
        match timeout_at(deadline, link.tx.send(bytes)).await {
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
        lock(&self.inner.links).len()
    }

    /// Closes the session for good: stops the dialer, closes its sockets and fails waiting requests with
    /// [`RpcError::Closed`]. Sockets the peer opens later are refused.
    pub fn close(&self) {
        let inner = &*self.inner;
        inner.state.send_replace(ConnectionState::Closed);
        let links = std::mem::take(&mut *lock(&inner.links));
        for link in links {
            link.control.close(false);
        }
        let pending = std::mem::take(&mut *lock(&inner.pending));
        for (_, p) in pending {
            let _ = p.tx.send(Err(RpcError::Closed));
        }
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

    /// Marks the session as having a dialer.
    pub(crate) fn set_dialing(&self) -> bool {
        !self.dialing.swap(true, Ordering::SeqCst)
    }

    /// Recomputes the state from the links (never leaves `Closed`).
    fn update_state(&self, links: usize) {
        let next = if links > 0 {
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

    /// The link new requests go to, waiting for the dialer if there is one.
    async fn link_for_request(&self, deadline: Instant) -> Result<LinkHandle, RpcError> {
        let mut state = self.state.subscribe();
        loop {
            if let Some(link) = lock(&self.links).first().cloned() {
                return Ok(link);
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

    fn register_pending(
        &self,
        link_id: u64,
    ) -> Result<(u32, oneshot::Receiver<Result<Reply, RpcError>>), RpcError> {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING_REQUESTS {
            return Err(RpcError::TooManyPending);
        }
        let mut request_id = rand::random::<u32>();
        while pending.contains_key(&request_id) {
            request_id = rand::random::<u32>();
        }
        let (tx, rx) = oneshot::channel();
        pending.insert(request_id, Pending { link_id, tx });
        Ok((request_id, rx))
    }

    fn take_pending(&self, request_id: u32) -> Option<Pending> {
        lock(&self.pending).remove(&request_id)
    }

    fn is_pending(&self, request_id: u32) -> bool {
        lock(&self.pending).contains_key(&request_id)
    }

    /// Adds an authenticated link and runs the election (see [`Attached`]). An accepted link that would be
    /// one live socket more than `max_sockets` is not added; links that are closing or presumed dead (see
    /// [`LinkControl::is_live`]) and links the new one replaces do not count, so a peer that redials after a
    /// drop is not refused.
    pub(crate) fn attach(&self, link: LinkHandle) -> Attached {
        let mut links = lock(&self.links);
        if self.is_closed() {
            drop(links);
            link.control.close(false);
            return Attached::Closing;
        }
        let mut losers: Vec<LinkHandle> = Vec::new();
        let mut new_loses = false;
        match link.origin {
            LinkOrigin::Accepted {
                nonce: Some(theirs),
            } => {
                for old in links.iter() {
                    match old.origin {
                        // The same bridge node dialed again: its older socket is stale.
                        LinkOrigin::Accepted { nonce: Some(n) } if n == theirs => {
                            losers.push(old.clone())
                        }
                        LinkOrigin::Dialed if self.node_nonce > theirs => new_loses = true,
                        LinkOrigin::Dialed if self.node_nonce < theirs => losers.push(old.clone()),
                        _ => {}
                    }
                }
            }
            LinkOrigin::Dialed => {
                for old in links.iter() {
                    match old.origin {
                        LinkOrigin::Accepted { nonce: Some(n) } if self.node_nonce > n => {
                            losers.push(old.clone())
                        }
                        LinkOrigin::Accepted { nonce: Some(n) } if self.node_nonce < n => {
                            new_loses = true
                        }
                        _ => {}
                    }
                }
            }
            LinkOrigin::Accepted { nonce: None } => {}
        }
        if new_loses {
            // A losing new link replaces nothing: the existing links won against it.
            losers.clear();
        } else if matches!(link.origin, LinkOrigin::Accepted { .. }) {
            let live = links
                .iter()
                .filter(|l| l.control.is_live() && !losers.iter().any(|x| x.id == l.id))
                .count();
            if live >= self.max_sockets {
                return Attached::Full;
            }
        }
        links.retain(|l| !losers.iter().any(|x| x.id == l.id));
        let (new_id, new_origin, new_control) = (link.id, link.origin, link.control.clone());
        if !new_loses {
            links.push(link);
        }
        let count = links.len();
        drop(links);
        for loser in &losers {
            info!(peer = %self.peer, link = loser.id, origin = ?loser.origin, "closing socket that lost the election");
            loser.control.close(true);
        }
        if new_loses {
            info!(peer = %self.peer, link = new_id, origin = ?new_origin, "new socket lost the election");
            new_control.close(true);
        }
        self.update_state(count);
        if new_loses {
            Attached::Closing
        } else {
            Attached::Elected
        }
    }

    /// Removes a link whose task ended and fails the requests written to it (unless it was closed by the
    /// election while another link remains: bridge peers then answer on the surviving link).
    pub(crate) fn detach(&self, link_id: u64, by_election: bool) {
        let remaining = {
            let mut links = lock(&self.links);
            links.retain(|l| l.id != link_id);
            links.len()
        };
        if !(by_election && remaining > 0) {
            let failed: Vec<Pending> = {
                let mut pending = lock(&self.pending);
                let ids: Vec<u32> = pending
                    .iter()
                    .filter(|(_, p)| p.link_id == link_id)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| pending.remove(&id))
                    .collect()
            };
            for p in failed {
                let _ = p.tx.send(Err(RpcError::Disconnected));
            }
        }
        self.update_state(remaining);
    }

    /// Sends a reply on the link the request came in on, or on the current link if that one is gone.
    /// Sends a reply on the socket the request came in on, or, if that one is closing or gone, on another
    /// open one: a request read during a socket's close linger is answered on the socket that stays (its copy
    /// on that socket was dropped as a duplicate).
    async fn send_reply(&self, link_id: u64, bytes: Bytes) {
        let tx = {
            let links = lock(&self.links);
            let open = |l: &&LinkHandle| !l.control.is_closing();
            links
                .iter()
                .filter(open)
                .find(|l| l.id == link_id)
                .or_else(|| links.iter().find(open))
                .or_else(|| links.iter().find(|l| l.id == link_id))
                .or_else(|| links.first())
                .map(|l| l.tx.clone())
        };
        match tx {
            Some(tx) => {
                if tx.send(bytes).await.is_err() {
                    debug!(peer = %self.peer, "reply dropped: socket closed");
                }
            }
            None => debug!(peer = %self.peer, "reply dropped: no socket"),
        }
    }

    /// Classifies one incoming binary message (see "Inbound classification" in the module docs).
    pub(crate) async fn on_frame(self: &Arc<Self>, link_id: u64, bytes: Bytes) {
        // A Prepare's expiry is read the way legacy reads it (see `legacy_time`): the codec's parse is checked
        // for legacy's form below; only a frame the codec refuses is looked at again here.
        let (frame, bytes) = match Frame::decode(&bytes, BtpVersion::Btp1) {
            Ok(frame) => (frame, bytes),
            Err(err) => match super::legacy_time::check_prepare_time(&bytes) {
                super::legacy_time::PrepareTime::Rewritten(b) => {
                    match Frame::decode(&b, BtpVersion::Btp1) {
                        Ok(frame) => (frame, b),
                        Err(err) => {
                            debug!(%err, len = b.len(), "ignoring undecodable frame");
                            return;
                        }
                    }
                }
                super::legacy_time::PrepareTime::Refuse { request_id } => {
                    self.refuse_expiry(link_id, (request_id, frame_digest(&bytes)))
                        .await;
                    return;
                }
                super::legacy_time::PrepareTime::Keep => {
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
                if let Some(p) = self.take_pending(request_id) {
                    let _ = p.tx.send(Ok(Reply::Response(pd)));
                } else if pd.get("ilp").is_some() {
                    // interledger-rs sends Prepares in Response frames.
                    self.dispatch(link_id, key(), Packet::Response(pd)).await;
                } else {
                    debug!(request_id, "ignoring stray response");
                }
            }
            Packet::Error(err) => match self.take_pending(request_id) {
                Some(p) => {
                    let _ = p.tx.send(Ok(Reply::Error(err)));
                }
                None => debug!(request_id, "ignoring stray error"),
            },
            Packet::Message(pd) if pd.get("ilp").is_some() && self.is_pending(request_id) => {
                // interledger-rs answers Prepares with Fulfill/Reject in Message frames.
                if let Some(p) = self.take_pending(request_id) {
                    let _ = p.tx.send(Ok(Reply::Response(pd)));
                }
            }
            Packet::Prepare(p)
                if !super::legacy_time::decoded_expiry_is_legacy(&bytes, p.expires_at) =>
            {
                self.refuse_expiry(link_id, key()).await;
            }
            packet => self.dispatch(link_id, key(), packet).await,
        }
    }

    /// Answers a Prepare whose expiry legacy refuses with legacy's RangeError, once per request (a duplicate
    /// sent on another socket gets nothing, like any duplicate request).
    async fn refuse_expiry(self: &Arc<Self>, link_id: u64, key: DedupeKey) {
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
        let reply = super::legacy_time::range_error(request_id, crate::Timestamp::now());
        self.send_reply(link_id, reply).await;
    }

    /// Runs the handler for a request once per request ID.
    async fn dispatch(self: &Arc<Self>, link_id: u64, key: DedupeKey, packet: Packet) {
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
                session.inner.send_reply(link_id, bytes).await;
            }
            drop(permit);
        };
        tokio::spawn(task.in_current_span());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ProtocolData, ProtocolDataEntry, ProtocolName};

    #[test]
    fn dedupe_forgets_after_window_and_bound() {
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        let k = |id: u32| (id, 7);
        assert!(d.begin(k(1), t0));
        assert!(!d.begin(k(1), t0), "in flight");
        d.complete(k(1), t0);
        assert!(!d.begin(k(1), t0 + Duration::from_secs(1)), "recently done");
        assert!(
            d.begin(k(1), t0 + DEDUPE_WINDOW + Duration::from_secs(1)),
            "expired"
        );
        d.complete(k(1), t0 + DEDUPE_WINDOW + Duration::from_secs(1));
        let t1 = t0 + DEDUPE_WINDOW * 2;
        for id in 10..(10 + MAX_DEDUPE_ENTRIES as u32 + 5) {
            assert!(d.begin(k(id), t1));
            d.complete(k(id), t1);
        }
        assert!(d.order.len() <= MAX_DEDUPE_ENTRIES);
        assert!(d.begin(k(10), t1), "oldest evicted by the bound");
        assert!(!d.begin(k(10 + MAX_DEDUPE_ENTRIES as u32), t1));
    }

    #[test]
    fn same_id_with_other_contents_is_a_new_request() {
        let a = Frame::new(5, Packet::Message(ProtocolData::new())).to_bytes();
        let mut pd = ProtocolData::new();
        pd.push(ProtocolDataEntry::json(
            ProtocolName::from_static("custom"),
            b"{}".to_vec(),
        ));
        let b = Frame::new(5, Packet::Message(pd)).to_bytes();
        let (ka, kb) = ((5, frame_digest(&a)), (5, frame_digest(&b)));
        assert_ne!(ka, kb);
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        assert!(d.begin(ka, t0));
        d.complete(ka, t0);
        assert!(
            d.begin(kb, t0),
            "a different request that reuses the ID is handled"
        );
        assert!(
            !d.begin((5, frame_digest(&a)), t0),
            "the same frame again is a duplicate"
        );
    }
}
