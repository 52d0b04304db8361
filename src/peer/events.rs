//! The events a trustline emits (legacy plugin events), on a tokio broadcast channel.

use std::sync::Arc;

use btp::ilp_v1::IlpV1Error;
use bytes::Bytes;
use channel_modules::store::Transfer;
use tokio::sync::broadcast;

/// Capacity of a trustline's event channel; a subscriber that falls further behind misses events (it gets
/// `RecvError::Lagged`), the trustline never waits for subscribers. Tokio allocates every slot up front, so this
/// is kept small: at 1,024 slots the channel alone cost ≈ 380 KiB per idle peer (BENCHMARKS.md). A slot holds an
/// `Arc` of the event (8 bytes), not the event (456 bytes), which at 64 slots kept ≈ 29 KiB per idle peer.
pub const EVENT_CHANNEL_CAPACITY: usize = 64;

/// A rejection as the legacy plugin reports it (`RejectionMessage`, snake_case in 1.3.x).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionMessage {
    /// ILP error code (`R00`, `F02`, …).
    pub code: String,
    /// ILP error name.
    pub name: String,
    /// Address that triggered the error.
    pub triggered_by: String,
    /// Last hop that forwarded it (legacy 1.3.5 reports only the last one), if any.
    pub forwarded_by: Option<String>,
    /// When it was triggered (unix milliseconds).
    pub triggered_at_ms: i64,
    /// `data` parsed as JSON, or the string `"not JSON"` (legacy).
    pub additional_info: serde_json::Value,
    /// The ILP v1 Error as received.
    pub ilp_error: IlpV1Error,
}

/// A request or response message (`sendRequest` / request handler; legacy `{ilp, custom}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerMessage {
    /// The ILP v1 packet, if any.
    pub ilp: Option<Bytes>,
    /// The `custom` JSON, if any.
    pub custom: Option<serde_json::Value>,
}

/// An event of a trustline (legacy names in snake_case).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PeerEvent {
    /// `connect`.
    Connect,
    /// `disconnect`.
    Disconnect,
    /// `incoming_prepare`: the peer prepared a transfer to us.
    IncomingPrepare(Transfer),
    /// `outgoing_prepare`: the peer accepted our Prepare.
    OutgoingPrepare(Transfer),
    /// `incoming_fulfill`: we fulfilled an incoming transfer.
    IncomingFulfill {
        /// The transfer.
        transfer: Transfer,
        /// The preimage.
        fulfillment: [u8; 32],
    },
    /// `outgoing_fulfill`: the peer fulfilled our transfer.
    OutgoingFulfill {
        /// The transfer.
        transfer: Transfer,
        /// The preimage.
        fulfillment: [u8; 32],
        /// The `ilp` data that came with the Fulfill (1.3.x), if any.
        ilp: Option<Bytes>,
    },
    /// `incoming_reject`: we rejected an incoming transfer.
    IncomingReject {
        /// The transfer.
        transfer: Transfer,
        /// The ILP v1 Error we sent.
        reason: IlpV1Error,
    },
    /// `outgoing_reject`: the peer rejected our transfer.
    OutgoingReject {
        /// The transfer.
        transfer: Transfer,
        /// The reason.
        reason: RejectionMessage,
    },
    /// `incoming_cancel`: an incoming transfer expired.
    IncomingCancel(Transfer),
    /// `outgoing_cancel`: an outgoing transfer expired.
    OutgoingCancel(Transfer),
    /// `incoming_request`.
    IncomingRequest(PeerMessage),
    /// `outgoing_response`.
    OutgoingResponse(PeerMessage),
    /// `outgoing_request`.
    OutgoingRequest(PeerMessage),
    /// `incoming_response`.
    IncomingResponse(PeerMessage),
}

impl PeerEvent {
    /// The legacy event name.
    pub fn name(&self) -> &'static str {
        match self {
            PeerEvent::Connect => "connect",
            PeerEvent::Disconnect => "disconnect",
            PeerEvent::IncomingPrepare(_) => "incoming_prepare",
            PeerEvent::OutgoingPrepare(_) => "outgoing_prepare",
            PeerEvent::IncomingFulfill { .. } => "incoming_fulfill",
            PeerEvent::OutgoingFulfill { .. } => "outgoing_fulfill",
            PeerEvent::IncomingReject { .. } => "incoming_reject",
            PeerEvent::OutgoingReject { .. } => "outgoing_reject",
            PeerEvent::IncomingCancel(_) => "incoming_cancel",
            PeerEvent::OutgoingCancel(_) => "outgoing_cancel",
            PeerEvent::IncomingRequest(_) => "incoming_request",
            PeerEvent::OutgoingResponse(_) => "outgoing_response",
            PeerEvent::OutgoingRequest(_) => "outgoing_request",
            PeerEvent::IncomingResponse(_) => "incoming_response",
        }
    }
}

/// A subscription to a trustline's events (`Trustline::subscribe`). The channel holds each event once, shared
/// (its slots are allocated for every peer up front, so they hold a pointer, not the event); a receiver gets its
/// own copy.
#[derive(Debug)]
pub struct EventReceiver {
    inner: broadcast::Receiver<Arc<PeerEvent>>,
}

impl EventReceiver {
    /// Wraps a receiver of the trustline's channel.
    pub(crate) fn new(inner: broadcast::Receiver<Arc<PeerEvent>>) -> Self {
        EventReceiver { inner }
    }

    /// The next event, waiting for it; `Lagged(n)` when `n` events were missed, `Closed` when the trustline is
    /// gone.
    pub async fn recv(&mut self) -> Result<PeerEvent, broadcast::error::RecvError> {
        self.recv_shared()
            .await
            .map(|event| PeerEvent::clone(&event))
    }

    /// As [`EventReceiver::recv`], without the copy: for subscribers that only read the event.
    pub async fn recv_shared(&mut self) -> Result<Arc<PeerEvent>, broadcast::error::RecvError> {
        self.inner.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<PeerEvent, broadcast::error::TryRecvError> {
        self.inner.try_recv().map(|event| PeerEvent::clone(&event))
    }
}
