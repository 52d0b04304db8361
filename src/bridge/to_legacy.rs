//! M → P: an ILPv4 Prepare from M crosses as a BTP/1.0 transfer to P, and P's answer goes back to M.
//!
//! 1. `peer.*` destinations are M's own protocols (`peer_protocols`); anything else is translated
//!    ([`Translation::prepare_to_legacy`](super::translate::Translation::prepare_to_legacy)), or rejected at once,
//!    as is everything while P is not connected (T01).
//! 2. The modern record is written (deferred: if a power cut loses it, M's Prepare simply times out, and the
//!    legacy transfer's own synced record is what the books are rebuilt from), then the transfer goes to P under
//!    a fresh ID, and the Prepare waits for P's outcome, which the trustline reports
//!    ([`TransferHook::outgoing_settled`](crate::peer::trustline::TransferHook::outgoing_settled)).
//! 3. P's refusal of the transfer itself (a BTP Error, or a local limit) becomes a Reject at once; P's Fulfill,
//!    Reject or our expiry of the transfer becomes the answer to M. An outcome that arrives when M's Prepare no
//!    longer waits (a restart in between) is written down; a Fulfill then is the bridge's loss (P was paid, M
//!    was not asked to pay), counted in the books and logged.

use btp::ilp_v4;
use bytes::Bytes;
use channel_modules::amount::ConnectorAmount;
use channel_modules::store::{Direction, Transfer, TransferId};
use channel_modules::sync::lock;

use super::modern::IlpReply;
use super::pair::{connector_amount_of, modern_id, modern_record, BridgedPair, Counters, Waiter};
use super::translate::fulfill_to_modern;
use crate::peer::error::PeerError;
use crate::peer::trustline::TransferOutcome;

/// Addresses of the peer protocols (docs/modern.md §4): never forwarded to P.
const PEER_PREFIX: &str = "peer.";

impl BridgedPair {
    pub(super) async fn forward_to_legacy(&self, prepare: ilp_v4::Prepare) -> IlpReply {
        if prepare.destination.as_str().starts_with(PEER_PREFIX) {
            return self.peer_protocol(&prepare).await;
        }
        let translation = self.translation();
        let legacy = translation.prepare_to_legacy(&prepare, self.now_ms())?;
        if !self.inner.trustline.is_connected() {
            return Err(translation.modern_reject(
                b"T01",
                "the legacy peer is not connected",
                Bytes::new(),
            ));
        }
        let legacy_id = TransferId(*uuid::Uuid::new_v4().as_bytes());
        let id = modern_id(self.name(), &legacy_id);
        if let Err(error) = self
            .inner
            .modern_log
            .prepare_deferred(
                &modern_record(id, &legacy_id, &prepare),
                Direction::Incoming,
            )
            .await
        {
            tracing::error!(pair = self.name(), %error, "recording a Prepare from the modern connector failed");
            return Err(translation.modern_reject(
                b"T00",
                "the bridge could not record the transfer",
                Bytes::new(),
            ));
        }
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.waiting).insert(legacy_id, Waiter { reply: reply_tx });
        let transfer = Transfer {
            id: legacy_id,
            amount: legacy.amount,
            execution_condition: legacy.execution_condition,
            expires_at_ms: legacy.expires_at_ms,
            ilp: legacy.ilp.to_vec(),
            custom: None,
        };
        tracing::debug!(pair = self.name(), transfer = %legacy_id, modern = %id, amount = legacy.amount.0, destination = %prepare.destination, "forwarding to the legacy peer");
        match self.inner.trustline.send_transfer(transfer).await {
            Ok(()) => {}
            // Written, maybe prepared there: its outcome (or its expiry here) answers.
            Err(PeerError::Rpc(
                btp::transport::RpcError::Timeout
                | btp::transport::RpcError::Disconnected
                | btp::transport::RpcError::Closed,
            )) => {}
            Err(e) => {
                self.take_waiter(&legacy_id);
                if let Err(error) = self
                    .inner
                    .modern_log
                    .cancel(&id, "refused by the legacy peer")
                    .await
                {
                    tracing::error!(pair = self.name(), modern = %id, %error, "recording a refused transfer failed");
                }
                return Err(self.refusal(&e));
            }
        }
        // P's transfer expires a margin before M's Prepare, so its outcome normally arrives first; past M's
        // expiry, M has given up anyway.
        let wait = super::modern::time_until(prepare.expires_at.to_system_time(), self.now());
        match tokio::time::timeout(wait, reply_rx).await {
            Ok(Ok(reply)) => reply,
            _ => {
                self.take_waiter(&legacy_id);
                Err(translation.modern_reject(
                    b"R00",
                    "no answer from the legacy peer before the transfer expired",
                    Bytes::new(),
                ))
            }
        }
    }

    /// The Reject for P's (or our own trustline's) refusal of the transfer.
    fn refusal(&self, error: &PeerError) -> ilp_v4::Reject {
        let translation = self.translation();
        match error {
            PeerError::Remote(e) => {
                let message = serde_json::from_str::<serde_json::Value>(&e.data)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| e.data.clone());
                translation.refusal_to_modern(&e.name, &message)
            }
            PeerError::Refused(w) => translation.refusal_to_modern(&w.name, &w.message),
            PeerError::NotConnected(_) | PeerError::Rpc(btp::transport::RpcError::NotConnected) => {
                translation.modern_reject(b"T01", "the legacy peer is not connected", Bytes::new())
            }
            other => translation.modern_reject(b"T00", &other.to_string(), Bytes::new()),
        }
    }

    /// P's outcome of a transfer we sent it: written on the modern side and handed to the Prepare that waits.
    pub(super) async fn legacy_outcome(&self, transfer: Transfer, outcome: TransferOutcome) {
        let id = modern_id(self.name(), &transfer.id);
        let translation = self.translation();
        let (reply, written) = match &outcome {
            TransferOutcome::Fulfilled { fulfillment, ilp } => (
                Ok(fulfill_to_modern(*fulfillment, ilp.as_ref())),
                self.inner
                    .modern_log
                    .fulfill(&id, fulfillment)
                    .await
                    .map(|_| ()),
            ),
            TransferOutcome::Rejected(e) | TransferOutcome::Expired(e) => (
                Err(translation.error_to_modern(e)),
                self.inner
                    .modern_log
                    .cancel(&id, "rejected or expired on the legacy side")
                    .await
                    .map(|_| ()),
            ),
        };
        if let Err(error) = written {
            tracing::error!(pair = self.name(), modern = %id, %error, "recording the legacy peer's outcome failed");
        }
        let delivered = match self.take_waiter(&transfer.id) {
            Some(waiter) => waiter.reply.send(reply).is_ok(),
            None => false,
        };
        if !delivered {
            if let TransferOutcome::Fulfilled { .. } = outcome {
                let amount = self
                    .inner
                    .modern_log
                    .get(&id)
                    .await
                    .ok()
                    .flatten()
                    .map_or(ConnectorAmount::ZERO, |r| connector_amount_of(&r.transfer));
                Counters::add(
                    &self.inner.counters.undelivered_count,
                    &self.inner.counters.undelivered_amount,
                    amount,
                );
                tracing::error!(pair = self.name(), transfer = %transfer.id, modern = %id, amount = amount.0,
                    "the legacy peer fulfilled a transfer whose Prepare from the modern connector no longer waits: paid to the legacy peer, not collected from the modern connector");
            }
        }
    }
}
