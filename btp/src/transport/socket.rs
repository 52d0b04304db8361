//! One authenticated websocket (a "socket"): its reader and writer tasks, its control block, and what the
//! session holds of it ([`SocketHandle`]).
//!
//! The **reader** decodes incoming binary messages and hands them to the socket's [`SocketOwner`] (its
//! session); it stops on a close frame, a read error or the close signal (then it keeps reading for up to
//! [`CLOSE_LINGER`] so replies still in flight are not lost and the peer's close frame is consumed). The
//! **writer** drains the bounded outbound queue, sends keepalive pings and, when told to close, sends a close
//! frame (code 1000) after the frames already queued. Reading and writing in separate tasks means a slow peer
//! cannot deadlock us with both sides blocked on writes.
//!
//! When both tasks have ended the socket detaches itself from its owner, which fails the requests written to
//! it. The owner is reached only through the [`SocketOwner`] trait, so this module does not depend on the
//! session that implements it.
//!
//! Each socket's tasks run in the tracing span `btp_link` (fields `peer`, `link`: the socket ID, `origin`);
//! the span and field names are kept as they were for the operators' log queries.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, info_span, warn, Instrument};

use super::limits::{CLOSE_LINGER, KEEPALIVE_GRACE, OUTBOUND_QUEUE_FRAMES};
use super::peer_key::PeerKey;
use super::stream::WsStream;

/// Most queued frames written before one flush (bounds the write buffer and keeps latency low).
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// Who opened a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketOrigin {
    /// We dialed it.
    Dialed,
    /// The peer dialed it; `nonce` is its election nonce if it is a bridge node.
    Accepted {
        /// The peer's `ilp_bridge_nonce`.
        nonce: Option<u64>,
    },
}

/// Shared between a socket's tasks and its owner: the close signal and liveness.
pub(crate) struct SocketControl {
    /// Set to true to close the socket.
    closing: watch::Sender<bool>,
    /// True if the election (rather than an error, the peer or shutdown) closed the socket.
    by_election: AtomicBool,
    /// When the socket's tasks started.
    started: Instant,
    /// Milliseconds after `started` at which something was last received.
    last_rx_ms: AtomicU64,
    /// Silence after which the socket is presumed dead: the keepalive interval plus [`KEEPALIVE_GRACE`] (a
    /// live peer answers every ping); `None` without keepalive.
    presumed_dead_after: Option<Duration>,
}

impl SocketControl {
    fn new(keepalive: Option<Duration>) -> Self {
        SocketControl {
            closing: watch::Sender::new(false),
            by_election: AtomicBool::new(false),
            started: Instant::now(),
            last_rx_ms: AtomicU64::new(0),
            presumed_dead_after: keepalive.map(|k| k + KEEPALIVE_GRACE),
        }
    }

    /// False once the socket is closing, or has been silent for longer than its keepalive interval plus
    /// [`KEEPALIVE_GRACE`] (its peer is gone without a FIN; keepalive will close it).
    pub(crate) fn is_live(&self) -> bool {
        !self.is_closing()
            && self
                .presumed_dead_after
                .is_none_or(|limit| self.idle() <= limit)
    }

    /// Asks the socket to close (idempotent).
    pub(crate) fn close(&self, by_election: bool) {
        if by_election {
            self.by_election.store(true, Ordering::SeqCst);
        }
        self.closing.send_replace(true);
    }

    /// Whether the socket was asked to close (its writer may already have stopped).
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_rx_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_rx_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// A live socket as its owner sees it.
#[derive(Clone)]
pub(crate) struct SocketHandle {
    /// Process-unique socket ID (the `link` field of the tracing span).
    pub(crate) id: u64,
    /// Who dialed, and the dialer's election nonce.
    pub(crate) origin: SocketOrigin,
    /// Frames to write on this socket.
    pub(crate) tx: mpsc::Sender<Bytes>,
    /// Closes the socket.
    pub(crate) control: Arc<SocketControl>,
}

/// What [`SocketOwner::attach`] did with a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attached {
    /// The socket is in use.
    Elected,
    /// The socket lost the election (or the owner is closed): it was told to close, after the frames already
    /// queued on it (the listener's auth Response).
    Closing,
    /// An accepted socket beyond the per-peer socket limit: nothing changed, the caller refuses the socket.
    Full,
}

/// What a socket reports to: its peer's session. The session implements it, so sockets depend on this trait
/// and not on the session.
pub(crate) trait SocketOwner: Send + Sync + 'static {
    /// The peer the socket belongs to (for the tracing span).
    fn peer(&self) -> &PeerKey;

    /// Takes a new authenticated socket into use, or refuses it.
    fn attach(&self, socket: SocketHandle) -> Attached;

    /// Handles one binary websocket message received on socket `socket_id`. The reader reads nothing more
    /// until it completes (backpressure).
    fn on_frame(self: &Arc<Self>, socket_id: u64, bytes: Bytes) -> impl Future<Output = ()> + Send;

    /// Socket `socket_id` has ended; `by_election` if the election closed it.
    fn detach(&self, socket_id: u64, by_election: bool);
}

/// Resolves once the flag is true (or its sender is gone). Returns nothing, so no borrow of the watch value
/// is held across an `.await` (which would make the future `!Send`).
pub(crate) async fn signalled(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

fn next_socket_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Starts the tasks for an authenticated websocket and attaches it to `owner`. `first` is written before
/// anything else (the listener's auth Response). Returns the socket's control and the reader task, which ends
/// after the socket has detached, or gives the websocket back untouched when the owner refused it
/// ([`Attached::Full`]: an accepted socket beyond the per-peer limit).
pub(crate) fn spawn_socket<O: SocketOwner>(
    owner: &Arc<O>,
    origin: SocketOrigin,
    ws: WsStream,
    first: Option<Bytes>,
    keepalive: Option<Duration>,
) -> Result<(Arc<SocketControl>, JoinHandle<()>), Box<WsStream>> {
    let id = next_socket_id();
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_FRAMES);
    if let Some(first) = first {
        // The queue is new and empty, so this cannot fail for lack of room.
        let _ = tx.try_send(first);
    }
    let control = Arc::new(SocketControl::new(keepalive));
    let span = info_span!("btp_link", peer = %owner.peer(), link = id, origin = ?origin);
    let handle = SocketHandle {
        id,
        origin,
        tx,
        control: control.clone(),
    };
    match span.in_scope(|| owner.attach(handle)) {
        Attached::Full => return Err(Box::new(ws)),
        Attached::Elected => span.in_scope(|| info!("socket authenticated")),
        Attached::Closing => {}
    }
    let task = run(ws, rx, owner.clone(), control.clone(), id, keepalive).instrument(span);
    Ok((control, tokio::spawn(task)))
}

/// The reader: hands every binary message to `owner` until the socket ends, then lingers, waits for the
/// writer and detaches the socket.
async fn run<O: SocketOwner>(
    ws: WsStream,
    rx: mpsc::Receiver<Bytes>,
    owner: Arc<O>,
    control: Arc<SocketControl>,
    id: u64,
    keepalive: Option<Duration>,
) {
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, rx, control.clone(), keepalive).in_current_span());
    let mut closing = control.closing.subscribe();
    loop {
        tokio::select! {
            _ = signalled(&mut closing) => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    control.touch();
                    // Boxed (one allocation per frame): inline, the frame's handling would be most of the
                    // room this task keeps for the whole life of the socket, idle or not.
                    Box::pin(owner.on_frame(id, bytes)).await;
                }
                Some(Ok(Message::Close(frame))) => {
                    debug!(?frame, "peer closed the socket");
                    break;
                }
                Some(Ok(_)) => control.touch(),
                Some(Err(err)) => {
                    debug!(%err, "socket error");
                    break;
                }
                None => break,
            }
        }
    }
    control.close(false);
    // Keep reading briefly: replies may still arrive, and the peer's close frame completes the handshake.
    let linger = async {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Binary(bytes) = msg {
                owner.on_frame(id, bytes).await;
            }
        }
    };
    let _ = Box::pin(timeout(CLOSE_LINGER, linger)).await;
    let _ = writer.await;
    owner.detach(id, control.by_election.load(Ordering::SeqCst));
    info!("socket closed");
}

/// Writes `first` and every frame already queued behind it (at most [`MAX_FRAMES_PER_FLUSH`]), then flushes
/// once: under load many frames leave in one `send` system call instead of one call each.
async fn write_batch(
    sink: &mut futures::stream::SplitSink<WsStream, Message>,
    rx: &mut mpsc::Receiver<Bytes>,
    first: Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    sink.feed(Message::Binary(first)).await?;
    for _ in 1..MAX_FRAMES_PER_FLUSH {
        match rx.try_recv() {
            Ok(bytes) => sink.feed(Message::Binary(bytes)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}

/// The writer: drains the outbound queue in batches, pings every `keepalive` and closes a socket silent for
/// two intervals; on the close signal it writes what is already queued, then a close frame.
async fn write_loop(
    mut sink: futures::stream::SplitSink<WsStream, Message>,
    mut rx: mpsc::Receiver<Bytes>,
    control: Arc<SocketControl>,
    keepalive: Option<Duration>,
) {
    let mut closing = control.closing.subscribe();
    let mut ping = keepalive.map(|every| interval_at(Instant::now() + every, every));
    loop {
        tokio::select! {
            biased;
            frame = rx.recv() => match frame {
                Some(bytes) => {
                    if let Err(err) = write_batch(&mut sink, &mut rx, bytes).await {
                        debug!(%err, "write failed");
                        control.close(false);
                        return;
                    }
                }
                None => break,
            },
            _ = signalled(&mut closing) => break,
            _ = async {
                match ping.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                let limit = keepalive.map(|k| k * 2).unwrap_or(Duration::MAX);
                if control.idle() > limit {
                    warn!(idle_ms = control.idle().as_millis() as u64, "keepalive timeout, closing socket");
                    break;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    control.close(false);
                    return;
                }
            }
        }
    }
    // Frames queued before the close signal go out first (the auth Response of a socket that lost the
    // election, replies); nothing is queued after the owner dropped the socket.
    while let Ok(bytes) = rx.try_recv() {
        if sink.send(Message::Binary(bytes)).await.is_err() {
            break;
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    control.close(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_socket_silent_past_its_keepalive_is_presumed_dead() {
        let interval = Duration::from_secs(30);
        let socket = SocketControl::new(Some(interval));
        assert!(socket.is_live());
        tokio::time::advance(interval + KEEPALIVE_GRACE - Duration::from_secs(1)).await;
        assert!(socket.is_live(), "a pong may still be on its way");
        socket.touch();
        tokio::time::advance(interval).await;
        assert!(socket.is_live(), "heard from recently");
        tokio::time::advance(KEEPALIVE_GRACE + Duration::from_secs(1)).await;
        assert!(!socket.is_live(), "missed a pong: presumed dead");

        let without_keepalive = SocketControl::new(None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(
            without_keepalive.is_live(),
            "silence means nothing without pings"
        );
        without_keepalive.close(false);
        assert!(!without_keepalive.is_live(), "closing");
    }
}
