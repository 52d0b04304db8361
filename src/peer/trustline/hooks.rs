//! What a trustline asks of the code above it: a router ([`TransferHook`]) told how transfers go and asked
//! for quotes and expiry holds, and the handler of the peer's `ilp`/`custom` requests
//! ([`IncomingRequestHandler`], legacy `registerRequestHandler`).

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use bytes::Bytes;
use channel_modules::store::Transfer;

use super::{read, Trustline};
use crate::peer::error::PeerError;
use crate::peer::events::PeerMessage;

/// Answers `ilp`/`custom` requests from the peer (legacy `registerRequestHandler`).
#[async_trait]
pub trait IncomingRequestHandler: Send + Sync {
    /// Handles a request; an `Err` is answered with a Response carrying an ILP v1 Error F00 "Bad Request".
    async fn handle_request(&self, request: PeerMessage) -> Result<PeerMessage, PeerError>;
}

/// How an outgoing transfer ended.
#[derive(Debug, Clone)]
pub enum TransferOutcome {
    /// The peer fulfilled it.
    Fulfilled {
        /// The preimage.
        fulfillment: [u8; 32],
        /// `ilp` data that came with the Fulfill.
        ilp: Option<Bytes>,
    },
    /// The peer rejected it with this ILP v1 Error.
    Rejected(IlpV1Error),
    /// It expired here (we sent the R00 Reject).
    Expired(IlpV1Error),
}

/// Hooks for a router: told about new incoming transfers and about how outgoing transfers end (called on
/// their own tasks, never while a peer waits for our reply), and asked to answer ILQP quote requests (called
/// while the peer waits).
#[async_trait]
pub trait TransferHook: Send + Sync {
    /// A new incoming transfer was prepared (after the module accepted it).
    async fn incoming_prepared(&self, peer: Trustline, transfer: Transfer);
    /// An outgoing transfer was fulfilled, rejected or expired.
    async fn outgoing_settled(&self, peer: Trustline, transfer: Transfer, outcome: TransferOutcome);
    /// A Message whose `ilp` is an ILQP quote request (ILP v1 type 2, 4 or 6) arrived from `peer`. Returns the
    /// `ilp` of the Response (a quote response or an ILP v1 Error), or `None` to leave the request to the
    /// registered request handler. Unlike the other hooks this runs while the peer waits for the reply.
    async fn quote_request(&self, _peer: Trustline, _request: IlpV1Packet) -> Option<Bytes> {
        None
    }
    /// The expiry timer of `peer`'s incoming `transfer` fired and it is still prepared. `true` holds the
    /// expiry (checked again [`EXPIRY_RETRY_DELAY`](super::EXPIRY_RETRY_DELAY) later): the hook has, or is
    /// about to have, the transfer's fulfillment (a router whose next hop fulfilled the transfer it forwarded)
    /// and delivers it itself (with [`Trustline::fulfill_when_possible`]), because the payer, not our clock,
    /// decides whether that Fulfill is late. Runs on the expiry's own task.
    async fn hold_incoming_expiry(&self, _peer: Trustline, _transfer: Transfer) -> bool {
        false
    }
}

impl Trustline {
    /// Tells the hook, on its own task, how our transfer ended.
    pub(super) fn notify_settled(&self, transfer: Transfer, outcome: TransferOutcome) {
        if let Some(hook) = read(&self.inner.hook) {
            let tl = self.clone();
            tokio::spawn(async move { hook.outgoing_settled(tl, transfer, outcome).await });
        }
    }

    /// Tells the hook, on its own task, about a new incoming transfer.
    pub(super) fn notify_prepared(&self, transfer: Transfer) {
        if let Some(hook) = read(&self.inner.hook) {
            let tl = self.clone();
            tokio::spawn(async move { hook.incoming_prepared(tl, transfer).await });
        }
    }
}
