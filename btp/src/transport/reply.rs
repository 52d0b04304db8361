//! What a request gets back: a [`Reply`], or an [`RpcError`] saying why there is none.

use thiserror::Error;

use crate::packet::{BtpError, Packet, ProtocolData};

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
    /// [`MAX_PENDING_REQUESTS`](crate::transport::MAX_PENDING_REQUESTS) requests are already in flight on this
    /// session.
    #[error("too many pending requests")]
    TooManyPending,
    /// The session was closed.
    #[error("session closed")]
    Closed,
}
