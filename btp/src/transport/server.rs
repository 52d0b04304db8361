//! The listener: accepts sockets, runs TLS, the websocket handshake and BTP auth, then hands each socket to
//! its peer's session.
//!
//! Every accepted connection runs in its own task, bounded by [`MAX_CONNECTIONS`]. Anything that goes wrong
//! with one connection (handshake errors, bad auth, silence) ends that task only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, info_span, warn, Instrument};

use super::auth::{check_auth, AuthOutcome, NOT_ACCEPTED_DATA};
use super::endpoint::BtpEndpoint;
use super::link::{signalled, spawn_link, LinkOrigin};
use super::stream::{ws_config, BtpStream, WsStream};
use super::{
    Authenticator, SessionFactory, TlsServerConfig, CLOSE_LINGER, DEFAULT_AUTH_TIMEOUT,
    KEEPALIVE_INTERVAL, MAX_CONNECTIONS,
};
use crate::packet::{BtpError, BtpVersion, Frame, Packet, ProtocolData};
use crate::time::Timestamp;

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
    endpoint: BtpEndpoint,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    factory: Arc<dyn SessionFactory>,
    shutdown: watch::Receiver<bool>,
}

pub(crate) async fn serve(
    endpoint: BtpEndpoint,
    listener: TcpListener,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    factory: Arc<dyn SessionFactory>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Listener {
        endpoint,
        config,
        auth,
        factory,
        shutdown: stop_rx,
    });
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let local = listener.local_addr().ok();
    info!(
        ?local,
        tls = shared.config.tls.is_some(),
        "btp listener started"
    );
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                let shared = shared.clone();
                let span = info_span!("btp_conn", %addr);
                tokio::spawn(
                    async move {
                        handle_connection(&shared, tcp, addr).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(%err, "accept failed");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    info!("btp listener stopping");
    stop_tx.send_replace(true);
    // Wait (bounded) for the connection tasks to close their sockets.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = timeout(CLOSE_LINGER * 2, connections.acquire_many(all)).await;
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

async fn accept_ws(shared: &Listener, tcp: TcpStream) -> Result<WsStream, String> {
    let _ = tcp.set_nodelay(true);
    let stream = match &shared.config.tls {
        Some(tls) => BtpStream::ServerTls(Box::new(
            tls.acceptor()
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?,
        )),
        None => BtpStream::Plain(tcp),
    };
    // Any path is accepted, like the legacy listener.
    tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
        .await
        .map_err(|e| e.to_string())
}

async fn handle_connection(shared: &Listener, tcp: TcpStream, addr: SocketAddr) {
    let deadline = Instant::now() + shared.config.auth_timeout;
    let mut ws = match timeout_at(deadline, accept_ws(shared, tcp)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            debug!(%err, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    debug!(%addr, "websocket open, waiting for auth");
    loop {
        let msg = match timeout_at(deadline, ws.next()).await {
            Err(_) => {
                info!("no auth within the timeout, closing");
                close_gracefully(&mut ws).await;
                return;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
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
        let (peer, nonce) = match check_auth(&frame, &*shared.auth, shared.config.require_username)
        {
            AuthOutcome::Accepted { peer, nonce } => (peer, nonce),
            AuthOutcome::Refused(err) => {
                info!(code = err.code_str(), data = %err.data, "auth refused");
                let _ = ws.send(auth_error_frame(frame.request_id, err)).await;
                close_gracefully(&mut ws).await;
                return;
            }
        };
        let Some(session) = shared.endpoint.session_for_inbound(&peer, &*shared.factory) else {
            info!(%peer, "no session for authenticated peer, refusing");
            let err = BtpError {
                code: *b"F00",
                name: "NotAcceptedError".to_owned(),
                triggered_at: Timestamp::now(),
                data: NOT_ACCEPTED_DATA.to_owned(),
                protocol_data: ProtocolData::new(),
            };
            let _ = ws.send(auth_error_frame(frame.request_id, err)).await;
            close_gracefully(&mut ws).await;
            return;
        };
        let response =
            Frame::new(frame.request_id, Packet::Response(ProtocolData::new())).to_bytes();
        let origin = LinkOrigin::Accepted { nonce };
        let (control, mut reader) = spawn_link(
            &session.inner,
            origin,
            ws,
            Some(response),
            shared.config.keepalive,
        );
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            _ = &mut reader => {}
            _ = signalled(&mut shutdown) => {
                control.close(false);
                let _ = reader.await;
            }
        }
        return;
    }
}
