//! BTP over websockets: listener, dialer, authentication and request/response matching.
//!
//! This module moves [`Frame`](crate::packet::Frame)s between two nodes and knows nothing about transfers or
//! balances. The host (the trustline/peer layer) plugs in two things:
//! * an [`Authenticator`], which turns the `(auth_username, auth_token)` of an incoming connection into a
//!   [`PeerKey`] (or refuses it), and
//! * a [`RequestHandler`] per peer, which answers every request frame that arrives (Prepare, Fulfill, Reject,
//!   Message, Transfer; see "Inbound classification" below).
//!
//! In return it gets a [`BtpSession`] per peer, on which it sends requests with [`BtpSession::request`].
//!
//! # Entry points
//!
//! ```text
//! let endpoint = BtpEndpoint::new(EndpointConfig::default());        // one per node
//! endpoint.serve(listener, ServerConfig::default(), auth, handler_for, shutdown).await?;   // listener side
//! let session = endpoint.connect(peer_key, &url, ClientOptions::default(), handler);      // dialer side
//! let reply = session.request(packet, DEFAULT_REQUEST_TIMEOUT).await?;
//! ```
//!
//! * [`BtpEndpoint`] holds one [`BtpSession`] per [`PeerKey`]. A node that both listens and dials must use **one**
//!   endpoint for both, so that the inbound and the outbound connection of the same peer meet in the same
//!   session (that is what makes the election below possible). [`serve`] and [`connect`] are shortcuts that
//!   use a private endpoint each.
//! * [`BtpEndpoint::register`] creates a session for a peer that only dials in (so requests to it fail with
//!   [`RpcError::NotConnected`] until it does); otherwise [`SessionFactory::handler_for`] is asked for a handler
//!   the first time an unknown peer authenticates.
//! * A session lives as long as the endpoint (or until [`BtpSession::close`]); it outlives every socket. On the
//!   dialer side it redials after a drop, with exponential backoff plus jitter, and re-authenticates.
//!
//! # Authentication (legacy-plugin spec §2)
//!
//! The dialer sends a Message with `auth` (octet-stream, empty), `auth_username` (text), `auth_token` (text) in
//! that order, plus `ilp_bridge_nonce` (octet-stream, 8 bytes, see "Election"), and waits up to
//! [`DEFAULT_AUTH_TIMEOUT`] for the Response. The listener treats every frame on an unauthenticated socket as
//! an auth attempt and answers failures with exactly the legacy Errors (protocol data empty, `triggeredAt` =
//! now), then closes the socket with code 1000:
//!
//! | checked in this order | Error |
//! |--|--|
//! | not a Message | `F01 InvalidFieldsError {"message":"invalid method on unauthenticated socket"}` |
//! | first entry is not `auth` | `F01 … "auth must be primary protocol on unauthenticated message"` |
//! | no `auth_token` entry | `F01 … "missing \"auth_token\" secondary protocol"` |
//! | no `auth_username` entry | `F01 … "missing \"auth_username\" secondary protocol"` (see below) |
//! | a content type is not 1, or the [`Authenticator`] refuses | `F00 NotAcceptedError … "invalid auth token and/or username"` |
//!
//! Undecodable frames on an unauthenticated socket get no reply (like legacy); a socket that has not
//! authenticated within [`ServerConfig::auth_timeout`] (default [`DEFAULT_AUTH_TIMEOUT`], legacy 2000 ms) is
//! closed. That covers the TLS and websocket handshakes too, and affects nothing but that socket. Unlike
//! legacy, an unauthenticated socket may send only a few KiB, an auth attempt from an address that failed
//! before is delayed, and two more refusals exist for sockets beyond the limits (see "Limits on accepted
//! sockets" below).
//!
//! **interledger-rs clients** send `auth` and `auth_token` only. With [`ServerConfig::require_username`] set to
//! `false` a missing `auth_username` is treated as the empty username and passed to the [`Authenticator`]
//! (which then decides); the default `true` keeps the legacy F01 reply.
//!
//! # One socket per peer, deduplication and election
//!
//! A session sends its requests on one socket (the oldest live one). Incoming requests are deduplicated per
//! session by request ID *and* frame contents: a frame identical to one that is being handled, or was handled
//! in the last [`DEDUPE_WINDOW`] (at most [`MAX_DEDUPE_ENTRIES`] frames), is dropped, so the handler sees each
//! request once and the reply is sent once. This is for legacy peers that hold two sockets to us and send every
//! request on both with the same ID. A different request that happens to reuse a random ID is handled (keyed
//! on the ID alone, about one request in a million was dropped and its sender timed out). A
//! reply goes out on the socket the request arrived on, or on the session's current socket if that one is gone
//! (legacy and bridge peers match replies by ID, not by socket).
//!
//! **Election.** When two bridge nodes both listen and dial, each may end up with two sockets to the other.
//! Every endpoint has a random 64-bit nonce ([`EndpointConfig::nonce`]) which its dialer sends in the
//! `ilp_bridge_nonce` entry of the auth Message (legacy and interledger-rs servers ignore unknown entries).
//! When a session holds both a socket it dialed and an accepted socket whose auth carried a nonce, the socket
//! dialed by the node with the larger nonce survives and the other is closed (both nodes compute the same
//! answer). A newer accepted socket with the same nonce as an older one replaces it (the peer redialed).
//! Sockets from peers that sent no nonce (legacy JS, interledger-rs) are **never** closed by election: a legacy
//! peer keeps a closed socket in its list and fails every later call, so extra sockets are kept and
//! deduplicated instead. A dialer only dials while its session has no socket at all (like legacy), so the
//! election only settles simultaneous dials.
//!
//! # Requests and replies
//!
//! [`BtpSession::request`] picks a random request ID not in flight, sends the frame and waits for the Response
//! or Error with that ID ([`Reply`]) until the timeout ([`DEFAULT_REQUEST_TIMEOUT`], legacy 5 s). There are no
//! retries. At most [`MAX_PENDING_REQUESTS`] requests may be in flight per session; beyond that a request
//! fails at once with [`RpcError::TooManyPending`]. Which errors mean "never sent" is documented on
//! [`RpcError`].
//!
//! # Inbound classification
//!
//! Each binary websocket message is decoded as a BTP/1.0 frame (which accepts types 1–7, so BTP/2.0 frames too):
//! * undecodable frames and unknown types are ignored (no reply, like legacy and RFC 23);
//! * a Response or Error whose ID we are waiting for completes that request;
//! * a **Message that carries an `ilp` entry and whose ID we are waiting for** also completes it as a
//!   [`Reply::Response`]: interledger-rs answers Prepares with Fulfill/Reject in Message frames;
//! * a **Response that carries an `ilp` entry and whose ID we are not waiting for** is a request:
//!   interledger-rs sends Prepares in Response frames. It is handed to the [`RequestHandler`] as
//!   [`Packet::Response`](crate::packet::Packet::Response), so RFC 23's "drop unexpected Responses" rule is
//!   deliberately not applied to it;
//! * any other Response or Error is stray and ignored;
//! * Prepare, Fulfill, Reject, Message and Transfer go to the [`RequestHandler`] (after deduplication). If it
//!   returns `None`, nothing is sent;
//! * except a legacy Prepare whose only fault is its `expiresAt` (module `legacy_time`): the transport answers
//!   it with legacy's RangeError itself, once per request even if it arrives on two sockets, and it never
//!   reaches the handler (a rolled-over date is rewritten and handled normally).
//!
//! Handlers run on their own tasks, at most [`MAX_CONCURRENT_HANDLERS`] per session; beyond that the socket is
//! not read until one finishes (backpressure, never unbounded queues).
//!
//! # Resources
//!
//! Websocket messages are limited to [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES); the read buffer is
//! [`WS_READ_BUFFER_BYTES`] and the write buffer is written out beyond [`WS_WRITE_BUFFER_BYTES`] or at each
//! flush, so an idle socket costs a few KiB. Keepalive pings are
//! sent every [`KEEPALIVE_INTERVAL`] and a socket that has not received anything for two intervals is closed.
//!
//! # Limits on accepted sockets
//!
//! A socket that has not authenticated costs a file descriptor and a task while holding nothing of value, so
//! the listener bounds such sockets separately from authenticated ones ([`ConnectionLimits`], set in
//! [`EndpointConfig::limits`] and shared by every listener of the endpoint; `ilp-bridge` sizes them from its
//! open file limit). In the order a socket meets them:
//!
//! | when | limit (default) | beyond it |
//! |--|--|--|
//! | `accept()` fails (out of file descriptors) | pause [`ACCEPT_BACKOFF_MIN`] doubling to [`ACCEPT_BACKOFF_MAX`] | the connection waits in the backlog; no busy loop |
//! | accepted | [`ConnectionLimits::max_unauthenticated_per_address`] ([`DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS`]) unauthenticated sockets per IPv4 address or IPv6 /64 | closed at once, nothing sent |
//! | accepted | [`ConnectionLimits::max_unauthenticated`] ([`DEFAULT_MAX_UNAUTHENTICATED_SOCKETS`]) unauthenticated sockets in all | the oldest unauthenticated socket of the address holding the most is closed to make room (a lone socket from a quiet address goes last) |
//! | before auth | [`MAX_PREAUTH_BYTES`] bytes in all (upgrade request and frames), frames of at most [`MAX_PREAUTH_FRAME_BYTES`] | the socket is dropped, nothing sent |
//! | before auth | auth within [`ServerConfig::auth_timeout`] ([`DEFAULT_AUTH_TIMEOUT`]) | closed with 1000 |
//! | auth attempt | after failures from its address, looked at only after [`AUTH_PENALTY_BASE`], doubling per failure to [`AUTH_PENALTY_MAX`] (forgotten after [`AUTH_FAILURE_MEMORY`] or a success; at most [`MAX_PENALTY_ENTRIES`] addresses remembered) | — |
//! | authenticated | [`ConnectionLimits::max_authenticated`] ([`DEFAULT_MAX_AUTHENTICATED_SOCKETS`]) authenticated accepted sockets | `F00 NotAcceptedError {"message":"too many connections"}`, closed with 1000 |
//! | authenticated | [`ConnectionLimits::max_sockets_per_peer`] ([`DEFAULT_MAX_SOCKETS_PER_PEER`]) live sockets per peer | `F00 NotAcceptedError {"message":"too many connections for this account"}`, closed with 1000 |
//!
//! A socket holds its unauthenticated slot from `accept()` until its auth is decided and moves to the
//! authenticated pool only then, so sockets that never authenticate cannot take the places of peers. For the
//! per-peer limit, sockets that are closing and sockets silent for a keepalive interval plus
//! [`KEEPALIVE_GRACE`] (a missed pong: the peer is gone without a FIN) do not count, so a legacy peer that
//! redials after a drop gets in while its old socket is still being closed. Sockets we dial are not counted
//! in either pool.
//!
//! Every socket runs in a tracing span `btp_link` with the peer key and link ID; tokens are never logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::packet::{BtpError, Packet, ProtocolData};

mod admission;
mod auth;
mod client;
mod endpoint;
mod legacy_time;
mod link;
mod server;
mod session;
mod stream;
mod tls;
mod url;

pub use admission::ConnectionLimits;
pub use client::ClientOptions;
pub use endpoint::{connect, serve, BtpEndpoint, EndpointConfig, SessionFactory};
pub use server::ServerConfig;
pub use session::BtpSession;
pub use tls::{TlsClientConfig, TlsError, TlsServerConfig};
pub use url::{BtpUrl, UrlError};

/// Default time a request waits for its reply (legacy `DEFAULT_TIMEOUT`, 5000 ms).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(5000);

/// Default time a new socket has to complete TLS, the websocket handshake and BTP auth (legacy
/// `DEFAULT_AUTH_TIMEOUT`, 2000 ms). The dialer waits as long for the auth Response.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_millis(2000);

/// Default time the dialer waits for the TCP connection to open.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most requests one session may have in flight; more fail at once with [`RpcError::TooManyPending`].
pub const MAX_PENDING_REQUESTS: usize = 4096;

/// Most incoming requests one session handles at the same time; beyond that its sockets are not read.
pub const MAX_CONCURRENT_HANDLERS: usize = 256;

/// Frames that may wait in one socket's outbound queue before senders wait.
pub const OUTBOUND_QUEUE_FRAMES: usize = 32;

/// How long the ID of a handled request is remembered to drop duplicates.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(30);

/// Most handled request IDs remembered per session for deduplication (the oldest are forgotten first).
pub const MAX_DEDUPE_ENTRIES: usize = 4096;

/// Interval between websocket pings; a socket that received nothing for two intervals is closed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Websocket read buffer per socket, in bytes (small: idle peers should cost little memory).
pub const WS_READ_BUFFER_BYTES: usize = 4096;

/// Websocket write buffer per socket, in bytes: frames are written to the socket when more than this is
/// queued or when the socket's writer flushes, which it does after every batch of queued frames (one `send`
/// per batch, or per 4 KiB of a large batch, instead of one per frame). The buffer keeps its capacity, at most
/// about twice this plus one frame, so a socket that was once busy keeps a few KiB more while idle.
pub const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Default [`ConnectionLimits::max_authenticated`]: most authenticated accepted sockets per endpoint. A node
/// sizes it from its file descriptor limit instead (`ilp-bridge` does, see its README); this default is the
/// ceiling it uses (at a few KiB per idle socket, 16,384 sockets take some 100 MiB).
pub const DEFAULT_MAX_AUTHENTICATED_SOCKETS: usize = 16_384;

/// Default [`ConnectionLimits::max_unauthenticated`]: most accepted sockets still in TLS, the websocket
/// handshake or auth. Legitimate sockets spend milliseconds there, so a small pool serves many peers; it
/// bounds what a flood of sockets that never authenticate can hold (file descriptors, a few KiB each).
pub const DEFAULT_MAX_UNAUTHENTICATED_SOCKETS: usize = 1024;

/// Default [`ConnectionLimits::max_unauthenticated_per_address`]: legacy peers open one or two sockets and
/// authenticate at once, so even several peers behind one NAT address rarely have more than a few sockets in
/// auth at the same moment; a refused one is redialed.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 8;

/// Default [`ConnectionLimits::max_sockets_per_peer`]: a legacy peer holds one or two sockets, a bridge peer
/// one after the election; four leaves room for a redial while an old socket is still being noticed dead.
pub const DEFAULT_MAX_SOCKETS_PER_PEER: usize = 4;

/// Most bytes an accepted socket may send before it has authenticated: the websocket upgrade request (a few
/// hundred bytes from the legacy `ws` client and from ours) and the auth Message (about 60 bytes plus the
/// token). More ends the socket.
pub const MAX_PREAUTH_BYTES: usize = 16 * 1024;

/// Largest websocket frame an unauthenticated socket may send (declared length, checked as soon as the frame
/// header arrives); after auth the limit is [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES). A legacy auth
/// Message is about 60 bytes plus its token.
pub const MAX_PREAUTH_FRAME_BYTES: usize = 4 * 1024;

/// Delay before the auth attempt that follows one failure from the same address is looked at; it doubles with
/// every further failure, up to [`AUTH_PENALTY_MAX`]. A success clears the failures.
pub const AUTH_PENALTY_BASE: Duration = Duration::from_millis(250);

/// Longest auth penalty delay. Beyond the dialer's auth timeout on purpose: a guesser gets at most
/// [`DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS`] attempts per 5 s from one address, while a peer that fixed its
/// secret still gets in (its delayed attempt is checked even if it gave up waiting, and a success clears the
/// failures, so its next attempt is not delayed).
pub const AUTH_PENALTY_MAX: Duration = Duration::from_secs(5);

/// Failed auth attempts of an address are forgotten this long after the last one.
pub const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(600);

/// Most addresses whose auth failures are remembered (the one whose last failure is oldest is forgotten
/// first); about 50 bytes each.
pub const MAX_PENALTY_ENTRIES: usize = 4096;

/// First pause after `accept()` fails (out of file descriptors, out of memory): the failing connection stays
/// in the backlog, so retrying at once would spin. Doubles per consecutive failure up to
/// [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between failing `accept()` calls.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A socket that has received nothing (not even a pong) for its keepalive interval plus this is presumed
/// dead: it no longer counts toward [`ConnectionLimits::max_sockets_per_peer`] (keepalive closes it within one
/// more interval).
pub const KEEPALIVE_GRACE: Duration = Duration::from_secs(5);

/// First redial delay after a failed dial or a dropped socket.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Largest redial delay (the delay doubles per failure, plus up to 50 % jitter, up to this).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a socket closed by us waits for the peer's close frame before the TCP connection is dropped
/// (so a final Error frame is not lost to a TCP reset).
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Name of the protocol-data entry that carries a bridge dialer's election nonce (8 bytes, big-endian).
pub const NONCE_PROTOCOL: &str = "ilp_bridge_nonce";

/// Who a session is with: the account name the [`Authenticator`] (listener side) or the host (dialer side)
/// assigned. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(Arc<str>);

impl PeerKey {
    /// A key.
    pub fn new(key: impl AsRef<str>) -> Self {
        PeerKey(Arc::from(key.as_ref()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({:?})", &*self.0)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerKey {
    fn from(s: &str) -> Self {
        PeerKey::new(s)
    }
}

impl From<String> for PeerKey {
    fn from(s: String) -> Self {
        PeerKey(Arc::from(s))
    }
}

/// The reply to a BTP request: a Response (type 1) or an Error (type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Response: protocol data (possibly empty).
    Response(ProtocolData),
    /// Error.
    Error(BtpError),
}

impl Reply {
    /// The packet this reply is sent as.
    pub fn into_packet(self) -> Packet {
        match self {
            Reply::Response(pd) => Packet::Response(pd),
            Reply::Error(e) => Packet::Error(e),
        }
    }
}

/// Implemented by the host: answers the requests a peer sends on an authenticated session.
///
/// Called once per request ID (see "Inbound classification" in the [module docs](self) for which frames are
/// requests: Prepare, Fulfill, Reject, Message, Transfer, and Responses that carry an unsolicited `ilp`
/// packet). Calls for one session run concurrently (at most [`MAX_CONCURRENT_HANDLERS`]); the host orders
/// them itself if it needs to.
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

/// Decides who may connect to a listener.
pub trait Authenticator: Send + Sync + 'static {
    /// The peer that `(username, token)` authenticates as, or `None` to refuse (the client gets
    /// `F00 NotAcceptedError`). The legacy default accepts only an empty username plus the shared secret.
    /// Called with `username == ""` when the client sent no `auth_username` and
    /// [`ServerConfig::require_username`] is off. Never log `token`.
    fn authenticate(&self, username: &str, token: &str) -> Option<PeerKey>;
}

impl<F> Authenticator for F
where
    F: Fn(&str, &str) -> Option<PeerKey> + Send + Sync + 'static,
{
    fn authenticate(&self, username: &str, token: &str) -> Option<PeerKey> {
        self(username, token)
    }
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
    /// [`BtpSession::close`] was called or the endpoint shut the session down; final.
    Closed,
}

/// Why a request got no reply.
///
/// `NotConnected` and `TooManyPending` mean the frame was **never written**: retrying is safe.
/// `Timeout` and `Disconnected` mean it may have been delivered and handled; so may `Closed`, which also fails
/// requests that were written and still waiting for their reply when the session closed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RpcError {
    /// No reply within the timeout.
    #[error("request timed out")]
    Timeout,
    /// The socket the request was sent on dropped before the reply came.
    #[error("connection lost before the reply arrived")]
    Disconnected,
    /// The session has no socket (listener side), or none came up within the timeout (dialer side).
    #[error("peer not connected")]
    NotConnected,
    /// [`MAX_PENDING_REQUESTS`] requests are already in flight on this session.
    #[error("too many pending requests")]
    TooManyPending,
    /// The session was closed.
    #[error("session closed")]
    Closed,
}
