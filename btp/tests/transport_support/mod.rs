//! Helpers shared by the `transport_*` integration tests: a recording handler, a listener on 127.0.0.1:0 that
//! shuts down on drop, a raw websocket client, and legacy frame builders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use btp::packet::{ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::{
    Authenticator, BtpEndpoint, BtpSession, EndpointConfig, PeerKey, Reply, RequestHandler,
    ServerConfig, SessionFactory,
};
use btp::BtpVersion;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub(crate) type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The shared secret the test authenticators accept (with an empty username).
pub(crate) const SECRET: &str = "s@cret";

/// Records every request and answers with a Response that echoes the request's protocol data.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) seen: Mutex<Vec<(u32, Packet)>>,
    pub(crate) calls: AtomicUsize,
    /// Sleep this long before answering.
    pub(crate) delay: Mutex<Option<Duration>>,
    /// Return `None` (no reply).
    pub(crate) silent: std::sync::atomic::AtomicBool,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    pub(crate) fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn ids(&self) -> Vec<u32> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }
}

#[async_trait]
impl RequestHandler for Recorder {
    async fn handle_request(
        &self,
        _session: &BtpSession,
        request_id: u32,
        packet: Packet,
    ) -> Option<Reply> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .expect("lock")
            .push((request_id, packet.clone()));
        let delay = *self.delay.lock().expect("lock");
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if self.silent.load(Ordering::SeqCst) {
            return None;
        }
        Some(Reply::Response(packet.protocol_data().clone()))
    }
}

/// Legacy default authCheck: empty username and the secret; everyone is peer "alice".
pub(crate) fn legacy_auth() -> Arc<dyn Authenticator> {
    Arc::new(|username: &str, token: &str| {
        (username.is_empty() && token == SECRET).then(|| PeerKey::new("alice"))
    })
}

/// A factory that hands every new peer the same handler.
pub(crate) fn factory(handler: Arc<dyn RequestHandler>) -> Arc<dyn SessionFactory> {
    Arc::new(move |_: &PeerKey| Some(handler.clone()))
}

/// A running listener; dropping it shuts it down.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) endpoint: BtpEndpoint,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// The listener-side session of peer `name`; panics when there is none.
    pub(crate) fn session(&self, name: &str) -> BtpSession {
        self.endpoint.session(&PeerKey::new(name)).expect("session")
    }

    /// Stops accepting, closes the accepted sockets and waits for the listener to finish.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn start_server_on(
    listener: TcpListener,
    endpoint: BtpEndpoint,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    handler: Arc<dyn RequestHandler>,
) -> TestServer {
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let ep = endpoint.clone();
    let task = tokio::spawn(async move {
        ep.serve(listener, config, auth, factory(handler), async move {
            let _ = stopped.await;
        })
        .await;
    });
    TestServer {
        addr,
        endpoint,
        stop: Some(stop),
        task: Some(task),
    }
}

pub(crate) async fn start_server(
    endpoint: BtpEndpoint,
    config: ServerConfig,
    auth: Arc<dyn Authenticator>,
    handler: Arc<dyn RequestHandler>,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_server_on(listener, endpoint, config, auth, handler).await
}

/// A listener on `listener` with a fresh endpoint, `config`, the legacy authenticator ([`legacy_auth`]) and a
/// [`Recorder`] for every peer.
pub(crate) async fn legacy_server_on(
    listener: TcpListener,
    config: ServerConfig,
) -> (TestServer, Arc<Recorder>) {
    let handler = Recorder::new();
    let server = start_server_on(
        listener,
        BtpEndpoint::new(EndpointConfig::default()),
        config,
        legacy_auth(),
        handler.clone(),
    )
    .await;
    (server, handler)
}

/// [`legacy_server_on`] a new listener on 127.0.0.1:0.
pub(crate) async fn legacy_server_with(config: ServerConfig) -> (TestServer, Arc<Recorder>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    legacy_server_on(listener, config).await
}

/// [`legacy_server_with`] the default server config.
pub(crate) async fn legacy_server() -> (TestServer, Arc<Recorder>) {
    legacy_server_with(ServerConfig::default()).await
}

/// A raw client to `addr` that has sent the legacy auth Message (request `request_id`) and received a reply.
pub(crate) async fn authed_legacy_client(addr: SocketAddr, request_id: u32) -> RawWs {
    let mut ws = raw_client(addr).await;
    send(&mut ws, legacy_auth_frame(request_id, "", SECRET)).await;
    assert!(next_binary(&mut ws).await.is_some(), "auth reply");
    ws
}

/// A raw websocket client to `addr` whose socket is bound to `source` (another loopback address, say), so
/// that per-address limits see it as a different host.
pub(crate) async fn raw_client_from(source: std::net::IpAddr, addr: SocketAddr) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    let tcp = socket.connect(addr).await.expect("tcp connect");
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/any/path"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .expect("websocket connect");
    ws
}

pub(crate) async fn raw_client(addr: SocketAddr) -> RawWs {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/any/path"))
        .await
        .expect("websocket connect");
    ws
}

fn entry(name: &'static str, ct: ContentType, data: &[u8]) -> ProtocolDataEntry {
    ProtocolDataEntry::new(ProtocolName::from_static(name), ct, data.to_vec())
}

/// The auth Message a legacy client sends.
pub(crate) fn legacy_auth_frame(request_id: u32, username: &str, token: &str) -> Bytes {
    let pd = ProtocolData::new()
        .with(entry("auth", ContentType::OCTET_STREAM, b""))
        .with(entry(
            "auth_username",
            ContentType::TEXT_PLAIN_UTF8,
            username.as_bytes(),
        ))
        .with(entry(
            "auth_token",
            ContentType::TEXT_PLAIN_UTF8,
            token.as_bytes(),
        ));
    Frame::new(request_id, Packet::Message(pd)).to_bytes()
}

/// A Message with one `test` entry holding `data`.
pub(crate) fn message(data: &[u8]) -> Packet {
    Packet::Message(ProtocolData::new().with(entry("test", ContentType::OCTET_STREAM, data)))
}

/// Sends a binary frame.
pub(crate) async fn send(ws: &mut RawWs, bytes: Bytes) {
    ws.send(Message::Binary(bytes)).await.expect("send");
}

/// The next binary frame (skipping pings), or `None` when the socket closes; panics after 10 s.
pub(crate) async fn next_binary(ws: &mut RawWs) -> Option<Bytes> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s");
        match msg {
            Some(Ok(Message::Binary(b))) => return Some(b),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Waits for the close frame and returns its code (`None` if the socket ended without one).
pub(crate) async fn close_code(ws: &mut RawWs) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("socket not closed within 10 s");
        match msg {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Sends a `marker` request (ID `marker_id`) and reads replies until the marker's: the request IDs of the
/// replies that came before it, in order (`what` names the socket in a panic).
pub(crate) async fn replies_before_marker(ws: &mut RawWs, marker_id: u32, what: &str) -> Vec<u32> {
    send(ws, Frame::new(marker_id, message(b"marker")).to_bytes()).await;
    let mut replies = Vec::new();
    loop {
        let f = decode(&next_binary(ws).await.expect(what));
        if f.request_id == marker_id {
            return replies;
        }
        replies.push(f.request_id);
    }
}

pub(crate) fn decode(bytes: &Bytes) -> Frame {
    Frame::decode(bytes, BtpVersion::Btp1).expect("decodable frame")
}

/// Polls `cond` every 10 ms for up to 10 s.
pub(crate) async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
