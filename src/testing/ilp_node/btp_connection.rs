//! An authenticated BTP/2.0 connection of the mock node, as interledger-rs's `BtpOutgoingService` runs it
//! (docs/modern.md §5.8), whichever side dialled:
//!
//! * **Sending a Prepare:** a **Response (type 1)** frame with a random u32 request ID and one `ilp` entry
//!   (octet-stream). The reply is matched by request ID in the node-wide pending map.
//! * **Answering a Prepare:** a **Message (type 6)** frame with the Prepare's request ID and the Fulfill or Reject
//!   in `ilp`.
//! * **Input:** Message and Response frames alike; the `ilp` entry's ILP type byte decides (12 Prepare: handle
//!   it; 13/14: resolve the pending request). Transfer (7) and Error (2) frames, frames without `ilp`, and frames
//!   the strict BTP/2.0 codec refuses are dropped without an answer.
//! * **Liveness:** a websocket ping every [`super::NodeConfig::ping_interval`]; no pong by the next ping closes
//!   the connection. A closed connection is never re-dialled.
//!
//! Only one connection per account is kept: a newer one replaces it.

use std::sync::Arc;

use btp::ilp_v4::{IlpV4Packet, Prepare};
use btp::packet::{BtpVersion, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use bytes::Bytes;
use channel_modules::sync::lock;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;
use uuid::Uuid;

use super::records::{Direction, PacketRecord, Transport};
use super::{pipeline, IlpResult, Node};

/// Frames waiting to be written on one connection (bounded; a stalled peer makes senders wait).
pub const OUTBOUND_QUEUE_FRAMES: usize = 256;

/// The handle the node keeps for a live connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// Frames to write.
    pub(crate) tx: mpsc::Sender<Message>,
    /// Distinguishes this connection from a newer one for the same account.
    pub(crate) id: u64,
}

/// A connection registered for an account, not yet running.
pub(crate) struct Registered {
    id: u64,
    tx: mpsc::Sender<Message>,
    rx: mpsc::Receiver<Message>,
}

/// Registers a connection for `account`, replacing an older one, so Prepares can be queued on it at once.
pub(crate) fn register(node: &Node, account: Uuid) -> Registered {
    let (tx, rx) = mpsc::channel::<Message>(OUTBOUND_QUEUE_FRAMES);
    let id = node.connection_id();
    lock(&node.connections).insert(account, Connection { tx: tx.clone(), id });
    Registered { id, tx, rx }
}

/// Forgets a registered connection that will not run (unless a newer one replaced it).
pub(crate) fn unregister(node: &Node, account: Uuid, registered: &Registered) {
    let mut connections = lock(&node.connections);
    if connections.get(&account).map(|c| c.id) == Some(registered.id) {
        connections.remove(&account);
    }
}

/// Runs a registered connection until it closes or the node shuts down, then unregisters it.
pub(crate) async fn run<S>(
    node: Arc<Node>,
    account: Uuid,
    ws: WebSocketStream<S>,
    registered: Registered,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let Registered { id, tx, mut rx } = registered;
    let mut shutdown = node.shutdown.clone();
    let mut ping = tokio::time::interval(node.config.ping_interval);
    // The first tick fires at once; the first ping goes one interval after the connection opened.
    ping.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Binary(bytes))) => handle_frame(&node, account, &tx, bytes),
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            outgoing = rx.recv() => match outgoing {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    debug!(%account, "no pong before the next ping: closing");
                    break;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
                awaiting_pong = true;
            }
            _ = shutdown.changed() => break,
        }
    }
    let mut connections = lock(&node.connections);
    if connections.get(&account).map(|c| c.id) == Some(id) {
        connections.remove(&account);
    }
}

/// A binary frame from an authenticated peer.
fn handle_frame(node: &Arc<Node>, account: Uuid, tx: &mpsc::Sender<Message>, bytes: Bytes) {
    let frame = match Frame::decode(&bytes, BtpVersion::Btp2) {
        Ok(frame) => frame,
        Err(err) => {
            debug!(%account, %err, "undecodable BTP frame dropped");
            return;
        }
    };
    let protocol_data = match &frame.packet {
        Packet::Message(pd) | Packet::Response(pd) => pd,
        // Transfer and Error frames (and anything else) get no answer.
        _ => return,
    };
    let Some(ilp) = protocol_data.data("ilp") else {
        return;
    };
    let packet = match IlpV4Packet::decode(ilp) {
        Ok(packet) => packet,
        Err(err) => {
            debug!(%account, %err, "undecodable ILP packet dropped");
            return;
        }
    };
    let Some(from) = node.account(account) else {
        return;
    };
    node.record_packet(PacketRecord {
        account: from.username.clone(),
        direction: Direction::In,
        transport: Transport::Btp,
        packet: packet.clone(),
    });
    match packet {
        IlpV4Packet::Prepare(prepare) => {
            let node = Arc::clone(node);
            let tx = tx.clone();
            let request_id = frame.request_id;
            tokio::spawn(async move {
                let username = from.username.clone();
                let result = pipeline::handle_incoming(&node, from, prepare).await;
                let reply = match result {
                    Ok(f) => IlpV4Packet::Fulfill(f),
                    Err(r) => IlpV4Packet::Reject(r),
                };
                node.record_packet(PacketRecord {
                    account: username,
                    direction: Direction::Out,
                    transport: Transport::Btp,
                    packet: reply.clone(),
                });
                let _ = tx
                    .send(ilp_frame(request_id, reply, FrameKind::Message))
                    .await;
            });
        }
        IlpV4Packet::Fulfill(f) => resolve(node, frame.request_id, Ok(f)),
        IlpV4Packet::Reject(r) => resolve(node, frame.request_id, Err(r)),
    }
}

fn resolve(node: &Node, request_id: u32, result: IlpResult) {
    if let Some(waiter) = lock(&node.pending).remove(&request_id) {
        let _ = waiter.send(result);
    }
}

/// Which BTP frame type carries an ILP packet.
#[derive(Debug, Clone, Copy)]
enum FrameKind {
    /// Type 1: what interledger-rs sends Prepares in.
    Response,
    /// Type 6: what interledger-rs sends Fulfills and Rejects in.
    Message,
}

fn ilp_frame(request_id: u32, packet: IlpV4Packet, kind: FrameKind) -> Message {
    let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
        ProtocolName::from_static("ilp"),
        packet.to_bytes(),
    ));
    let packet = match kind {
        FrameKind::Response => Packet::Response(pd),
        FrameKind::Message => Packet::Message(pd),
    };
    Message::Binary(Frame::new(request_id, packet).to_bytes())
}

/// Sends a Prepare to `account` over its BTP connection. `None` when there is no connection (the next service
/// in the chain decides); otherwise waits for the reply (the caller's expiry timer bounds the wait: a connection
/// that drops leaves the request pending until then, as in interledger-rs).
pub(crate) async fn send_prepare(
    node: &Arc<Node>,
    account: Uuid,
    username: &str,
    prepare: Prepare,
) -> Option<IlpResult> {
    let connection = lock(&node.connections).get(&account).cloned()?;
    let (waiter, reply) = oneshot::channel();
    let request_id = {
        let mut pending = lock(&node.pending);
        let mut id = rand::random::<u32>();
        while pending.contains_key(&id) {
            id = rand::random::<u32>();
        }
        pending.insert(id, waiter);
        id
    };
    let packet = IlpV4Packet::Prepare(prepare);
    node.record_packet(PacketRecord {
        account: username.to_owned(),
        direction: Direction::Out,
        transport: Transport::Btp,
        packet: packet.clone(),
    });
    // A send error means the connection just closed: the request stays pending until its expiry.
    let _ = connection
        .tx
        .send(ilp_frame(request_id, packet, FrameKind::Response))
        .await;
    // Removes the pending entry however this future ends (a reply, or the caller's expiry timer dropping it).
    let _guard = PendingGuard { node, request_id };
    match reply.await {
        Ok(result) => Some(result),
        // Not reached while the entry is in the map (the guard removes it only after this await).
        Err(_) => Some(Err(pipeline::reject(
            b"T00",
            "",
            Some(&node.address()),
            Bytes::new(),
        ))),
    }
}

/// Forgets a pending request when the request's future ends.
struct PendingGuard<'a> {
    node: &'a Node,
    request_id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.node.pending).remove(&self.request_id);
    }
}
