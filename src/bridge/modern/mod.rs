//! The modern side of a bridged pair: ILPv4 packets to and from the modern connector, over BTP/2.0 (either side
//! may dial: [`btp2`]) or ILP-over-HTTP ([`http`]). Each link only moves packets: what they mean is the bridge's
//! ([`super::pair`]).

pub mod btp2;
pub mod http;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use btp::ilp_v4::{self, IlpV4Packet};
use bytes::Bytes;

/// The answer to an ILPv4 Prepare.
pub type IlpReply = Result<ilp_v4::Fulfill, ilp_v4::Reject>;

/// Why a Prepare got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// It was never sent (no connection, or too many in flight): nothing can have happened to it.
    #[error("not sent: {0}")]
    NotSent(String),
    /// It was sent (or may have been) and no answer came before the deadline, or the connection dropped: the
    /// connector may have fulfilled it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The connector answered with something that is not a Fulfill or Reject of this Prepare (a BTP Error, an
    /// unreadable packet, an HTTP error status).
    #[error("invalid answer: {0}")]
    InvalidAnswer(String),
}

/// A way to send ILPv4 Prepares to the modern connector.
#[async_trait]
pub trait ModernLink: Send + Sync {
    /// Sends `prepare` and waits for its Fulfill or Reject for up to `wait` (the caller gives the time its
    /// clock says is left: the bridge waits as long as the legacy transfer behind it stays prepared, so a
    /// Fulfill the connector sends late is still taken, the connector having paid onwards by then). A Fulfill
    /// whose preimage does not match the condition is returned as it came; checking it is the caller's.
    async fn send(&self, prepare: &ilp_v4::Prepare, wait: Duration) -> Result<IlpReply, LinkError>;

    /// Whether a Prepare sent now would go out at once (BTP: an authenticated socket; HTTP: always).
    fn is_connected(&self) -> bool;
}

/// What answers the connector's Prepares: the bridge.
#[async_trait]
pub trait IlpHandler: Send + Sync {
    /// Handles one Prepare from the modern connector.
    async fn handle_prepare(&self, prepare: ilp_v4::Prepare) -> IlpReply;
}

/// The time left from `now` until `deadline`, at least 1 ms (a transport timeout of 0 would not send at all).
pub(crate) fn time_until(deadline: SystemTime, now: SystemTime) -> Duration {
    deadline
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_millis(1))
}

/// Reads a Fulfill or Reject.
pub(crate) fn decode_reply(bytes: &Bytes) -> Result<IlpReply, LinkError> {
    match IlpV4Packet::decode(bytes) {
        Ok(IlpV4Packet::Fulfill(f)) => Ok(Ok(f)),
        Ok(IlpV4Packet::Reject(r)) => Ok(Err(r)),
        Ok(IlpV4Packet::Prepare(_)) => Err(LinkError::InvalidAnswer(
            "a Prepare where a Fulfill or Reject belongs".to_owned(),
        )),
        Err(e) => Err(LinkError::InvalidAnswer(format!(
            "unreadable ILPv4 packet: {e}"
        ))),
    }
}

/// The bytes of an answer.
pub(crate) fn encode_reply(reply: &IlpReply) -> Bytes {
    match reply {
        Ok(f) => IlpV4Packet::Fulfill(f.clone()).to_bytes(),
        Err(r) => IlpV4Packet::Reject(r.clone()).to_bytes(),
    }
}
