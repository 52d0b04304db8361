//! The dialer: connects to a `btp+ws[s]://` URL, authenticates, and redials after a drop.
//!
//! One dialer task runs per dialing session. It dials only while the session has no socket at all (so a peer
//! that dialed us is not dialed back, as in legacy), waits [`ClientOptions::backoff_min`] doubling up to
//! [`ClientOptions::backoff_max`] (plus up to 50 % random jitter) between failed attempts, and stops when the
//! session is closed.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, info_span, warn, Instrument};

use super::auth::auth_protocol_data;
use super::limits::{
    DEFAULT_AUTH_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, RECONNECT_BACKOFF_MAX,
    RECONNECT_BACKOFF_MIN,
};
use super::session::{ConnectionState, SessionInner};
use super::socket::{spawn_socket, SocketControl, SocketOrigin};
use super::stream::{ws_config, BtpStream, WsStream};
use super::tls::TlsClientConfig;
use super::url::BtpUrl;
use crate::packet::{BtpError, BtpVersion, Frame, Packet};

/// Dialer settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Trust settings for `btp+wss` URLs; `None` trusts the `webpki-roots` set only.
    pub tls: Option<TlsClientConfig>,
    /// Time allowed for the TCP connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Time allowed for TLS, the websocket handshake and the auth Response (default [`DEFAULT_AUTH_TIMEOUT`];
    /// legacy waits forever).
    pub auth_timeout: Duration,
    /// First redial delay (default [`RECONNECT_BACKOFF_MIN`]).
    pub backoff_min: Duration,
    /// Largest redial delay (default [`RECONNECT_BACKOFF_MAX`]).
    pub backoff_max: Duration,
    /// Ping interval; `None` disables keepalive (default [`KEEPALIVE_INTERVAL`]).
    pub keepalive: Option<Duration>,
    /// Send the endpoint's election nonce in the auth Message (default true; legacy and interledger-rs
    /// servers ignore the extra entry).
    pub send_nonce: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            backoff_min: RECONNECT_BACKOFF_MIN,
            backoff_max: RECONNECT_BACKOFF_MAX,
            keepalive: Some(KEEPALIVE_INTERVAL),
            send_nonce: true,
        }
    }
}

/// Why one dial attempt failed (logged, then retried).
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("tcp connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("invalid tls server name")]
    ServerName,
    #[error("tls handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("websocket failed: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("auth refused: {} {} {}", .0.code_str(), .0.name, .0.data)]
    Refused(Box<BtpError>),
    #[error("socket closed during auth")]
    Closed,
}

/// Starts the dialer task for `session` (once per session).
pub(crate) fn spawn_dialer(
    session: Arc<SessionInner>,
    url: BtpUrl,
    opts: ClientOptions,
    nonce: u64,
) {
    if !session.set_dialing() {
        return;
    }
    session.state.send_if_modified(|s| {
        if *s == ConnectionState::Disconnected {
            *s = ConnectionState::Connecting;
            true
        } else {
            false
        }
    });
    let span = info_span!("btp_dialer", peer = %session.peer, url = %url);
    tokio::spawn(dial_loop(session, url, opts, nonce).instrument(span));
}

fn jittered(delay: Duration) -> Duration {
    let jitter = rand::random::<f64>() * 0.5;
    delay + delay.mul_f64(jitter)
}

async fn dial_loop(session: Arc<SessionInner>, url: BtpUrl, opts: ClientOptions, nonce: u64) {
    let mut state = session.state.subscribe();
    let mut backoff = opts.backoff_min;
    loop {
        // Dial only while the session has no socket (an inbound one counts).
        match state.wait_for(|s| *s != ConnectionState::Connected).await {
            Ok(s) if *s == ConnectionState::Closed => return,
            Ok(_) => {}
            Err(_) => return,
        }
        // Boxed, and freed once the socket runs: the dial (TLS, the websocket handshake, auth) is most of the
        // room this task's future needs, and the task lives as long as the session.
        match Box::pin(dial_and_attach(&session, &url, &opts, nonce)).await {
            Ok(Some((control, reader))) => {
                backoff = opts.backoff_min;
                let _ = reader.await;
                drop(control);
                if session.is_closed() {
                    return;
                }
            }
            // The per-peer limit applies to accepted sockets only, so this does not happen; a refused socket
            // is simply dropped.
            Ok(None) => debug!("dialed socket refused by the session"),
            Err(err) => {
                warn!(%err, retry_in_ms = backoff.as_millis() as u64, "dial failed");
            }
        }
        // Wait before redialing, but stop at once if the session is closed.
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(opts.backoff_max);
        tokio::select! {
            _ = sleep(delay) => {}
            _ = async { let _ = state.wait_for(|s| *s == ConnectionState::Closed).await; } => return,
        }
    }
}

/// Dials and, once authenticated, starts the socket's tasks on `session`: its control and reader task, or
/// `None` when the session refused the socket.
async fn dial_and_attach(
    session: &Arc<SessionInner>,
    url: &BtpUrl,
    opts: &ClientOptions,
    nonce: u64,
) -> Result<Option<(Arc<SocketControl>, JoinHandle<()>)>, DialError> {
    let ws = dial(url, opts, nonce).await?;
    Ok(spawn_socket(session, SocketOrigin::Dialed, ws, None, opts.keepalive).ok())
}

/// Opens TCP (+ TLS) and the websocket, sends the auth Message and waits for its Response.
async fn dial(url: &BtpUrl, opts: &ClientOptions, nonce: u64) -> Result<WsStream, DialError> {
    debug!("dialing");
    let tcp = timeout(
        opts.connect_timeout,
        TcpStream::connect((url.host(), url.port())),
    )
    .await
    .map_err(|_| DialError::Timeout)?
    .map_err(DialError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + opts.auth_timeout;
    let stream = if url.is_tls() {
        let tls = opts.tls.clone().unwrap_or_default();
        let name =
            ServerName::try_from(url.host().to_owned()).map_err(|_| DialError::ServerName)?;
        let tls_stream = timeout_at(deadline, tls.connector().connect(name, tcp))
            .await
            .map_err(|_| DialError::Timeout)?
            .map_err(DialError::Tls)?;
        BtpStream::client_tls(tls_stream)
    } else {
        BtpStream::plain(tcp)
    };
    let (mut ws, _) = timeout_at(
        deadline,
        tokio_tungstenite::client_async_with_config(url.ws_url(), stream, Some(ws_config())),
    )
    .await
    .map_err(|_| DialError::Timeout)??;
    let request_id = rand::random::<u32>();
    let auth = auth_protocol_data(
        url.username(),
        url.token(),
        opts.send_nonce.then_some(nonce),
    );
    let frame = Frame::new(request_id, Packet::Message(auth)).to_bytes();
    timeout_at(deadline, ws.send(Message::Binary(frame)))
        .await
        .map_err(|_| DialError::Timeout)??;
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| DialError::Timeout)?;
        let bytes = match msg {
            None | Some(Ok(Message::Close(_))) => return Err(DialError::Closed),
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(_)) => continue,
        };
        match Frame::decode(&bytes, BtpVersion::Btp1) {
            Ok(Frame {
                request_id: id,
                packet: Packet::Response(_),
            }) if id == request_id => {
                info!("authenticated");
                return Ok(ws);
            }
            Ok(Frame {
                request_id: id,
                packet: Packet::Error(err),
            }) if id == request_id => return Err(DialError::Refused(Box::new(err))),
            Ok(_) | Err(_) => debug!("ignoring frame before auth response"),
        }
    }
}
