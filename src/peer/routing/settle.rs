//! Passing a forwarded transfer's outcome back to the transfer it was forwarded from (the source). When the
//! forwarded transfer is fulfilled, the source is fulfilled with the same preimage: sent even if it is past its
//! expiry by our clock (the payer decides whether it is late; we have paid the next hop), and re-sent while
//! its outcome is unknown; the source's own expiry does not cancel it meanwhile (the expiry hold). When the
//! forwarded transfer is rejected or expires, the source is rejected.

use btp::ilp_v1::IlpV1Error;
use bytes::Bytes;
use channel_modules::store::{Transfer, TransferId, TransferState};

use super::{forward_id, Router, Source};
use crate::peer::error::PeerError;
use crate::peer::trustline::{TransferOutcome, Trustline};

impl Router {
    /// Passes the outcome of our forwarded `transfer` to `peer` back to its source: fulfilled with the same
    /// preimage, or rejected with the same ILP Error plus our address in `forwardedBy` (an expiry: the R00).
    pub(super) async fn settle_source(
        &self,
        peer: Trustline,
        transfer: Transfer,
        outcome: TransferOutcome,
    ) {
        let Some(source) = self
            .lock_forwarded()
            .remove(&(peer.name().to_owned(), transfer.id))
        else {
            return;
        };
        match outcome {
            TransferOutcome::Fulfilled { fulfillment, ilp } => {
                self.fulfill_back(source, fulfillment, ilp).await
            }
            TransferOutcome::Rejected(mut err) | TransferOutcome::Expired(mut err) => {
                if let Some(me) = source.peer.account() {
                    err.forwarded_by.push(me);
                }
                self.refuse(&source.peer, source.id, err).await;
            }
        }
    }

    /// Holds the expiry of a source whose forwarded transfer the next hop fulfilled, or is fulfilling right
    /// now (its Fulfill passed the expiry check and is being applied), and delivers the fulfillment. The
    /// forwarded transfer is found by its ID in the other peers' logs, as in [`Router::recover`], so this
    /// also covers a restart, where the expiry of a source can fire before recovery.
    ///
    /// Why this cannot miss a Fulfill that is being accepted: the next peer marks its transfer before it
    /// reads its clock to check the expiry, and the source's timer read the clock, at or after the source's
    /// expiry, before this looks for the mark. If the mark is not seen, the next peer's reading comes later,
    /// past the forwarded expiry (the margin is at least 1 ms), so it refuses that Fulfill.
    pub(super) async fn hold_source_expiry(&self, peer: Trustline, transfer: Transfer) -> bool {
        let out_id = forward_id(peer.name(), &transfer.id);
        for next in self.peers().into_iter().filter(|p| p.name() != peer.name()) {
            if next.is_accepting_fulfill(&out_id) {
                return true;
            }
            match next.log().get(&out_id).await {
                Ok(Some(out)) => {
                    let TransferState::Fulfilled { fulfillment } = out.state else {
                        return false;
                    };
                    tracing::info!(peer = peer.name(), transfer = %transfer.id, next = next.name(), "source due to expire but its forwarded transfer was fulfilled; fulfilling it");
                    let source = Source {
                        peer,
                        id: transfer.id,
                    };
                    self.fulfill_back(source, fulfillment, None).await;
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    // Unknown: hold, and look again at the next attempt.
                    tracing::warn!(peer = peer.name(), transfer = %transfer.id, next = next.name(), error = %e, "cannot read the forwarded transfer; source expiry held");
                    return true;
                }
            }
        }
        false
    }

    /// Fulfills the source transfer: at once when its peer is connected, else (and whenever the outcome is
    /// unknown) the source trustline delivers it itself, from a durable note, across reconnects and restarts.
    /// We have paid the next hop, so the Fulfill goes out even when the source is past its expiry by our clock:
    /// the payer decides whether it is late.
    pub(super) async fn fulfill_back(
        &self,
        source: Source,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
    ) {
        let result = match source
            .peer
            .fulfill_when_possible(source.id, fulfillment, ilp)
            .await
        {
            // The trustline re-sends a Fulfill whose outcome is unknown.
            Err(PeerError::Rpc(_)) => Ok(()),
            other => other,
        };
        if let Err(e) = result {
            tracing::warn!(peer = source.peer.name(), transfer = %source.id, error = %e, "fulfilling the source transfer failed");
        }
    }

    /// Rejects the source transfer `id` from `from` with `err`.
    pub(super) async fn refuse(&self, from: &Trustline, id: TransferId, err: IlpV1Error) {
        tracing::debug!(peer = from.name(), transfer = %id, code = err.code_str(), "refusing payment");
        if let Err(e) = from.reject_incoming_transfer(id, err).await {
            tracing::warn!(peer = from.name(), transfer = %id, error = %e, "reject failed");
        }
    }
}
