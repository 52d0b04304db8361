//! BTP over websockets: listener, dialer, authentication and request/response matching.
//!
//! This module moves [`Frame`](crate::packet::Frame)s between two nodes and knows nothing about transfers or
//! balances. The host (the peer layer) plugs in two things:
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
//!   endpoint for both, so that the inbound and the outbound socket of the same peer meet in the same session
//!   (that is what makes the election below possible). [`serve`] and [`connect`] are shortcuts that use a
//!   private endpoint each.
//! * [`BtpEndpoint::register`] creates a session for a peer that only dials in (so requests to it fail with
//!   [`RpcError::NotConnected`] until it does); otherwise [`SessionFactory::handler_for`] is asked for a handler
//!   the first time an unknown peer authenticates.
//! * A session lives as long as the endpoint (or until [`BtpSession::close`]); it outlives every socket. On the
//!   dialer side it redials after a drop, with exponential backoff plus jitter, and re-authenticates.
//!
//! # Layout
//!
//! One concept per file. Imports run one way: a file imports only files below it in this list, never one
//! above it, so there is no import circle.
//!
//! ```text
//! endpoint     BtpEndpoint, the host's handle              → server, client, registry, admission
//! server       the listener: accept, TLS, handshake, auth  → registry, session, socket, auth, admission, stream
//! client       the dialer: dial, auth, redial              → session, socket, auth, stream
//! registry     sessions by peer, SessionFactory            → session
//! session      BtpSession, RequestHandler, classification  → socket_set, pending, dedupe, socket, legacy_time
//! socket_set   a session's sockets and the election        → socket
//! pending      requests waiting for their reply            → reply
//! dedupe       incoming requests seen recently
//! socket       one websocket's reader and writer tasks     → stream
//! leaves       auth, admission, stream, tls, url, legacy_time, reply, peer_key, limits, sync
//! ```
//!
//! A socket reports to its session through the `SocketOwner` trait it defines and the session implements,
//! and the listener reaches sessions through the registry rather than the endpoint that owns both.
//!
//! # Authentication (docs/legacy-btp.md §3)
//!
//! The dialer sends a Message with `auth` (octet-stream, empty), `auth_username` (text), `auth_token` (text) in
//! that order, plus [`NONCE_PROTOCOL`] (octet-stream, 8 bytes, see "Election"), and waits up to
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
//! **interledger-rs clients** send `auth` and `auth_token` only (docs/modern.md §5.8). With
//! [`ServerConfig::require_username`] set to `false` a missing `auth_username` is treated as the empty username
//! and passed to the [`Authenticator`] (which then decides); the default `true` keeps the legacy F01 reply.
//!
//! # One socket per peer, deduplication and election
//!
//! A session sends its requests on one socket (the oldest live one). A reply goes out on the socket the
//! request arrived on, or on another of the session's sockets if that one is closing or gone (legacy and
//! bridge peers match replies by ID, not by socket). Incoming requests are deduplicated per session by request
//! ID *and* frame contents: a frame identical to one being handled, or handled in the last [`DEDUPE_WINDOW`]
//! (at most [`MAX_DEDUPE_ENTRIES`] frames), is dropped, so the handler sees each request once and the reply is
//! sent once (legacy peers that hold two sockets send every request on both; docs/legacy-btp.md §4.3).
//!
//! **Election.** When two bridge nodes both listen and dial, each may end up with two sockets to the other.
//! Every endpoint has a random 64-bit nonce ([`EndpointConfig::nonce`]), sent by its dialer in the auth
//! Message. When a session holds both a socket it dialed and an accepted socket whose auth carried a nonce,
//! the socket dialed by the node with the larger nonce survives and the other is closed (both nodes compute
//! the same answer); a newer accepted socket with the same nonce replaces the older one. Sockets from peers
//! that sent no nonce (legacy JS, interledger-rs) are **never** closed by the election. A dialer only dials
//! while its session has no socket at all (like legacy), so the election only settles simultaneous dials.
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
//! Every socket runs in a tracing span `btp_link` with the peer key and the socket's ID (field `link`); tokens
//! are never logged.

mod admission;
mod auth;
mod client;
mod dedupe;
mod endpoint;
mod legacy_time;
mod limits;
mod peer_key;
mod pending;
mod registry;
mod reply;
mod server;
mod session;
mod socket;
mod socket_set;
mod stream;
mod sync;
mod tls;
mod url;

pub use admission::ConnectionLimits;
pub use auth::{Authenticator, NONCE_PROTOCOL};
pub use client::ClientOptions;
pub use endpoint::{connect, serve, BtpEndpoint, EndpointConfig};
pub use limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, AUTH_FAILURE_MEMORY, AUTH_PENALTY_BASE,
    AUTH_PENALTY_MAX, CLOSE_LINGER, DEDUPE_WINDOW, DEFAULT_AUTH_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_AUTHENTICATED_SOCKETS, DEFAULT_MAX_SOCKETS_PER_PEER,
    DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS, DEFAULT_MAX_UNAUTHENTICATED_SOCKETS,
    DEFAULT_REQUEST_TIMEOUT, KEEPALIVE_GRACE, KEEPALIVE_INTERVAL, MAX_CONCURRENT_HANDLERS,
    MAX_DEDUPE_ENTRIES, MAX_PENALTY_ENTRIES, MAX_PENDING_REQUESTS, MAX_PREAUTH_BYTES,
    MAX_PREAUTH_FRAME_BYTES, OUTBOUND_QUEUE_FRAMES, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN,
    WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES,
};
pub use peer_key::PeerKey;
pub use registry::SessionFactory;
pub use reply::{Reply, RpcError};
pub use server::ServerConfig;
pub use session::{BtpSession, ConnectionState, RequestHandler};
pub use tls::{TlsClientConfig, TlsError, TlsServerConfig, MAX_PEM_FILE_BYTES};
pub use url::{BtpUrl, UrlError};
