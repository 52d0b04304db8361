//! The listener: accepts sockets, runs TLS, the websocket handshake and BTP auth, then hands each socket to
//! its peer's session.
//!
//! Every accepted socket runs in its own task, and the endpoint's admission (module `admission`) decides
//! what it may hold: right after `accept()` it takes a slot in the unauthenticated pool (or is closed at once
//! when its address already has its share, or evicts an older unauthenticated socket when the pool is full);
//! until it authenticates it may send only a few KiB ([`MAX_PREAUTH_BYTES`](super::limits::MAX_PREAUTH_BYTES)); its
//! auth attempt waits out the penalty of its address's earlier failures; once authenticated it moves to the
//! authenticated pool and counts toward its peer's socket limit. Anything that goes wrong with one
//! connection (handshake errors, bad auth, silence) ends that task only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission::{AddressKey, Admission, Admit, PreauthSlot};
use super::auth::{
    check_auth, not_accepted, AuthOutcome, Authenticator, NOT_ACCEPTED_DATA,
    TOO_MANY_CONNECTIONS_DATA, TOO_MANY_PEER_SOCKETS_DATA,
};
use super::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, CLOSE_LINGER, DEFAULT_AUTH_TIMEOUT, KEEPALIVE_INTERVAL,
};
use super::registry::{SessionFactory, SessionRegistry};
use super::session::BtpSession;
use super::socket::{signalled, spawn_socket, SocketControl, SocketOrigin};
use super::stream::{ws_config, BtpStream, WsStream};
use super::tls::TlsServerConfig;
use crate::packet::{BtpError, BtpVersion, Frame, Packet, ProtocolData};

/// Listener settings (the legacy `listener: {port, cert, key, ca}` plus our own knobs).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS (`wss`) when set; plain `ws` otherwise.
    pub tls: Option<TlsServerConfig>,
    /// Time a new socket has to finish TLS, the websocket handshake and auth (default
    /// [`DEFAULT_AUTH_TIMEOUT`], legacy 2000 ms).
    pub auth_timeout: Duration,
    /// Refuse auth Messages without `auth_username` with the legacy F01 (default true). Set to false to
    /// accept interledger-rs clients, which send only `auth_token`; the username is then `""`.
    pub require_username: bool,
    /// Ping interval on accepted sockets; `None` disables keepalive (default [`KEEPALIVE_INTERVAL`]).
    pub keepalive: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            require_username: true,
            keepalive: Some(KEEPALIVE_INTERVAL),
        }
    }
}

/// Everything a connection task needs.
struct Listener {
    /// The endpoint's sessions, which authenticated sockets join.
    registry: Arc<SessionRegistry>,
    /// The endpoint's socket admission.
    admission: Arc<Admission>,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    factory: Arc<dyn SessionFactory>,
    shutdown: watch::Receiver<bool>,
}

/// Runs one listener of an endpoint (see [`BtpEndpoint::serve`](crate::transport::BtpEndpoint::serve)).
pub(crate) async fn serve(
    registry: Arc<SessionRegistry>,
    admission: Arc<Admission>,
    listener: TcpListener,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    factory: Arc<dyn SessionFactory>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Listener {
        registry,
        admission: admission.clone(),
        config,
        auth,
        factory,
        shutdown: stop_rx,
    });
    // Every connection task holds a sender; `recv` returns `None` once all of them have ended.
    let (running, mut all_ended) = mpsc::channel::<()>(1);
    let local = listener.local_addr().ok();
    let limits = admission.limits();
    info!(
        ?local,
        tls = shared.config.tls.is_some(),
        max_authenticated = limits.max_authenticated,
        max_unauthenticated = limits.max_unauthenticated,
        max_unauthenticated_per_address = limits.max_unauthenticated_per_address,
        max_sockets_per_peer = limits.max_sockets_per_peer,
        "btp listener started"
    );
    tokio::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures: u32 = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                failures = 0;
                accepted
            }
            Err(err) => {
                // Out of file descriptors and the like: the connection stays in the backlog, so retrying at
                // once would spin. Logged on the first failure and then about once a second.
                failures = failures.saturating_add(1);
                if failures == 1 || backoff == ACCEPT_BACKOFF_MAX {
                    warn!(%err, consecutive = failures, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let address = AddressKey::of(addr.ip());
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            admit = admission.admit(address) => match admit {
                Admit::Admitted(slot) => slot,
                Admit::AddressFull => {
                    debug!(%addr, "too many unauthenticated sockets from this address; closed");
                    continue;
                }
                Admit::Busy => {
                    warn!(%addr, "no unauthenticated slot came free; closed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let running = running.clone();
        let span = info_span!("btp_conn", %addr);
        tokio::spawn(
            async move {
                handle_connection(&shared, tcp, slot).await;
                drop(running);
            }
            .instrument(span),
        );
    }
    drop(listener);
    info!("btp listener stopping");
    stop_tx.send_replace(true);
    drop(running);
    // Wait (bounded) for the connection tasks to close their sockets.
    let _ = timeout(CLOSE_LINGER * 2, all_ended.recv()).await;
}

fn auth_error_frame(request_id: u32, err: BtpError) -> Message {
    Message::Binary(Frame::new(request_id, Packet::Error(err)).to_bytes())
}

/// Sends a close frame (1000) and waits briefly for the peer's, so that frames sent just before are not lost
/// to a TCP reset.
async fn close_gracefully(ws: &mut WsStream) {
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = ws.send(Message::Close(Some(close))).await;
    let _ = timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Answers the auth Message `request_id` with `F00 NotAcceptedError` carrying `data`, then closes.
async fn refuse(ws: &mut WsStream, request_id: u32, data: &str) {
    let _ = ws
        .send(auth_error_frame(request_id, not_accepted(data)))
        .await;
    close_gracefully(ws).await;
}

/// Why TLS or the websocket handshake of an accepted socket failed (logged, and the socket dropped).
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// The TLS handshake failed.
    #[error(transparent)]
    Tls(std::io::Error),
    /// The websocket upgrade failed (or the pre-auth limit ended it).
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

async fn accept_ws(shared: &Listener, tcp: TcpStream) -> Result<WsStream, HandshakeError> {
    let _ = tcp.set_nodelay(true);
    let stream = match &shared.config.tls {
        Some(tls) => BtpStream::server_tls(
            tls.acceptor()
                .accept(tcp)
                .await
                .map_err(HandshakeError::Tls)?,
        ),
        None => BtpStream::plain(tcp),
    };
    // Any path is accepted, like the legacy listener.
    Ok(
        tokio_tungstenite::accept_async_with_config(stream.with_preauth_limit(), Some(ws_config()))
            .await?,
    )
}

/// A socket that authenticated: its websocket, the auth Message's request ID, its peer's session and the
/// peer's election nonce.
struct Authenticated {
    ws: WsStream,
    request_id: u32,
    session: BtpSession,
    nonce: Option<u64>,
}

/// A socket that passed auth and took its place: its control, its reader task, and its place among the
/// authenticated sockets (held as long as the socket lives).
struct Admitted {
    control: Arc<SocketControl>,
    reader: JoinHandle<()>,
    _place: OwnedSemaphorePermit,
}

async fn handle_connection(shared: &Listener, tcp: TcpStream, slot: PreauthSlot) {
    let mut shutdown = shared.shutdown.clone();
    // Boxed, and freed once the socket is admitted: TLS, the websocket handshake and auth are most of the
    // room this task's future needs, and the task lives as long as the socket (unboxed, each connected peer
    // kept ≈ 3.5 KiB for a handshake long finished; BENCHMARKS.md, memory per idle peer).
    let Some(Admitted {
        control,
        mut reader,
        _place,
    }) = Box::pin(admit(shared, tcp, slot, &mut shutdown)).await
    else {
        return;
    };
    tokio::select! {
        _ = &mut reader => {}
        _ = signalled(&mut shutdown) => {
            control.close(false);
            let _ = reader.await;
        }
    }
}

/// Authenticates the socket and starts its tasks: `None` once it has been refused, evicted or has failed, or
/// the listener is shutting down.
async fn admit(
    shared: &Listener,
    tcp: TcpStream,
    mut slot: PreauthSlot,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Admitted> {
    let address = slot.address();
    let authenticated = tokio::select! {
        authenticated = authenticate(shared, tcp, address) => authenticated,
        () = slot.evicted() => {
            debug!("unauthenticated socket evicted to make room for a newer one");
            return None;
        }
        () = signalled(shutdown) => return None,
    };
    let Authenticated {
        mut ws,
        request_id,
        session,
        nonce,
    } = authenticated?;
    let peer = session.peer().clone();
    // The socket leaves the unauthenticated pool only once it has a place in the authenticated one (or has
    // been refused and closed), so it is counted in one of them all along.
    let Some(place) = shared.admission.authenticated_slot() else {
        warn!(%peer, limit = shared.admission.limits().max_authenticated, "authenticated sockets at their limit; refusing");
        refuse(&mut ws, request_id, TOO_MANY_CONNECTIONS_DATA).await;
        return None;
    };
    drop(slot);
    ws.get_mut().lift_preauth_limit();
    let response = Frame::new(request_id, Packet::Response(ProtocolData::new())).to_bytes();
    let origin = SocketOrigin::Accepted { nonce };
    match spawn_socket(
        &session.inner,
        origin,
        ws,
        Some(response),
        shared.config.keepalive,
    ) {
        Ok((control, reader)) => Some(Admitted {
            control,
            reader,
            _place: place,
        }),
        Err(ws) => {
            let mut ws = *ws;
            warn!(%peer, limit = shared.admission.limits().max_sockets_per_peer, "peer has its most sockets already; refusing the new one");
            refuse(&mut ws, request_id, TOO_MANY_PEER_SOCKETS_DATA).await;
            None
        }
    }
}

/// TLS, the websocket handshake and the auth exchange, within the auth timeout: the authenticated socket, or
/// `None` once the socket has been refused (and closed) or has failed.
async fn authenticate(
    shared: &Listener,
    tcp: TcpStream,
    address: AddressKey,
) -> Option<Authenticated> {
    let deadline = Instant::now() + shared.config.auth_timeout;
    let mut ws = match timeout_at(deadline, accept_ws(shared, tcp)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            debug!(%err, "handshake failed");
            return None;
        }
        Err(_) => {
            debug!("handshake timed out");
            return None;
        }
    };
    debug!("websocket open, waiting for auth");
    let admission = &shared.admission;
    loop {
        let msg = match timeout_at(deadline, ws.next()).await {
            Err(_) => {
                debug!("no auth within the timeout, closing");
                close_gracefully(&mut ws).await;
                return None;
            }
            Ok(Some(Err(err))) => {
                debug!(%err, "socket failed before auth");
                return None;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
            Ok(Some(Ok(_))) => continue,
        };
        let frame = match Frame::decode(&msg, BtpVersion::Btp1) {
            Ok(frame) => frame,
            Err(err) => {
                // Legacy sends nothing for an undecodable frame and keeps waiting.
                debug!(%err, "ignoring undecodable frame before auth");
                continue;
            }
        };
        let penalty = admission.penalty(address);
        if !penalty.is_zero() {
            // Slows down guessing: the attempt is looked at only after the delay, whatever it holds.
            debug!(
                delay_ms = penalty.as_millis() as u64,
                "earlier auth failures from this address: attempt delayed"
            );
            sleep(penalty).await;
        }
        let refusal = match check_auth(&frame, &*shared.auth, shared.config.require_username) {
            AuthOutcome::Accepted { peer, nonce } => {
                match shared.registry.session_for_inbound(&peer, &*shared.factory) {
                    Some(session) => {
                        admission.auth_succeeded(address);
                        return Some(Authenticated {
                            ws,
                            request_id: frame.request_id,
                            session,
                            nonce,
                        });
                    }
                    None => {
                        info!(%peer, "no session for authenticated peer, refusing");
                        not_accepted(NOT_ACCEPTED_DATA)
                    }
                }
            }
            AuthOutcome::Refused(err) => {
                info!(code = err.code_str(), data = %err.data, "auth refused");
                err
            }
        };
        admission.auth_failed(address);
        let _ = ws.send(auth_error_frame(frame.request_id, refusal)).await;
        close_gracefully(&mut ws).await;
        return None;
    }
}
