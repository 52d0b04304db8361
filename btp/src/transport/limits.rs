//! The transport's named limits and defaults: timeouts, queue and buffer sizes, socket pools, pre-auth
//! budgets, penalties and backoffs. Each says why it has its value; the tables in the [transport
//! docs](crate::transport) say where each applies.

use std::time::Duration;

/// Default time a request waits for its reply (legacy `DEFAULT_TIMEOUT`, 5000 ms).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(5000);

/// Default time a new socket has to complete TLS, the websocket handshake and BTP auth (legacy
/// `DEFAULT_AUTH_TIMEOUT`, 2000 ms). The dialer waits as long for the auth Response.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_millis(2000);

/// Default time the dialer waits for the TCP connection to open.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most requests one session may have in flight; more fail at once with
/// [`RpcError::TooManyPending`](crate::transport::RpcError::TooManyPending).
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

/// Default [`ConnectionLimits::max_authenticated`](crate::transport::ConnectionLimits::max_authenticated): most
/// authenticated accepted sockets per endpoint. A node sizes it from its file descriptor limit instead (`ilp-bridge`
/// does, see its README); this default is the ceiling it uses (at a few KiB per idle socket, 16,384 sockets take some
/// 100 MiB).
pub const DEFAULT_MAX_AUTHENTICATED_SOCKETS: usize = 16_384;

/// Default [`ConnectionLimits::max_unauthenticated`](crate::transport::ConnectionLimits::max_unauthenticated): most
/// accepted sockets still in TLS, the websocket handshake or auth. Legitimate sockets spend milliseconds there, so a
/// small pool serves many peers; it bounds what a flood of sockets that never authenticate can hold (file descriptors,
/// a few KiB each).
pub const DEFAULT_MAX_UNAUTHENTICATED_SOCKETS: usize = 1024;

/// Default [`ConnectionLimits::max_unauthenticated_per_address`][per-address]: legacy peers open one or two sockets
/// and authenticate at once, so even several peers behind one NAT address rarely have more than a few sockets in auth
/// at the same moment; a refused one is redialed.
///
/// [per-address]: crate::transport::ConnectionLimits::max_unauthenticated_per_address
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 8;

/// Default [`ConnectionLimits::max_sockets_per_peer`](crate::transport::ConnectionLimits::max_sockets_per_peer): a
/// legacy peer holds one or two sockets, a bridge peer one after the election; four leaves room for a redial while an
/// old socket is still being noticed dead.
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

/// A socket that has received nothing (not even a pong) for its keepalive interval plus this is presumed dead: it no
/// longer counts toward
/// [`ConnectionLimits::max_sockets_per_peer`](crate::transport::ConnectionLimits::max_sockets_per_peer) (keepalive
/// closes it within one more interval).
pub const KEEPALIVE_GRACE: Duration = Duration::from_secs(5);

/// First redial delay after a failed dial or a dropped socket.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Largest redial delay (the delay doubles per failure, plus up to 50 % jitter, up to this).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a socket closed by us waits for the peer's close frame before the TCP connection is dropped
/// (so a final Error frame is not lost to a TCP reset).
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);
