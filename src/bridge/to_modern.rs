//! P → M: a transfer P prepared to us crosses as an ILPv4 Prepare, and M's answer comes back to P.
//!
//! 1. Translate ([`Translation::prepare_to_modern`](super::translate::Translation::prepare_to_modern)); what cannot
//!    cross is rejected to P at once, as is everything while M is not connected (T01).
//! 2. Write the modern side's record (synced), then send. We wait for M's answer as long as P's transfer stays
//!    prepared: a Fulfill M sends late still counts, since M has paid onwards by then.
//! 3. A Fulfill (whose preimage matches) is written down on the modern side first, then handed to the trustline
//!    to deliver ([`Trustline::fulfill_when_possible`](crate::peer::trustline::Trustline::fulfill_when_possible): it notes the preimage durably and re-sends until P
//!    answers, across reconnects and restarts): a Fulfill the node received is never lost. While that happens,
//!    P's transfer may not expire here ([`BridgedPair::hold_expiry`]).
//! 4. A Reject goes back to P translated; a Prepare never sent (no connection) is rejected T01; an answer that
//!    is neither gets T00. When no answer comes at all, P's transfer expires on its own (R00), and the modern
//!    record is cancelled at its expiry as an unknown outcome: M may have fulfilled it.

use btp::ilp_v1::IlpV1Error;
use btp::ilp_v4;
use channel_modules::amount::ConnectorAmount;
use channel_modules::store::{Direction, PrepareOutcome, Transfer, TransferId, TransferState};
use channel_modules::sync::lock;

use super::modern::{time_until, LinkError};
use super::pair::{modern_id, modern_record, system_time, BridgedPair, Counters};
use super::translate::fulfill_to_legacy;
use crate::peer::trustline::fulfillment_matches;

impl BridgedPair {
    pub(super) async fn forward_to_modern(&self, transfer: Transfer) {
        let legacy_id = transfer.id;
        let translation = self.translation();
        let now_ms = self.now_ms();
        let prepare = match translation.prepare_to_modern(&transfer, now_ms) {
            Ok(p) => p,
            Err(e) => return self.reject_to_legacy(legacy_id, e).await,
        };
        let Some(link) = self.link().filter(|l| l.is_connected()) else {
            let e = translation.legacy_error(
                b"T01",
                "the modern connector is not connected",
                self.now_stamp(),
            );
            return self.reject_to_legacy(legacy_id, e).await;
        };
        let id = modern_id(self.name(), &legacy_id);
        match self
            .inner
            .modern_log
            .prepare(
                &modern_record(id, &legacy_id, &prepare),
                Direction::Outgoing,
            )
            .await
        {
            Ok(PrepareOutcome::Prepared) => {}
            // Sent already (a hook repeated after a restart): its answer is handled by whoever sent it.
            Ok(PrepareOutcome::AlreadyExists(_)) => return,
            Err(error) => {
                tracing::error!(pair = self.name(), transfer = %legacy_id, %error, "recording a transfer to the modern connector failed");
                let e = translation.legacy_error(
                    b"T00",
                    "the bridge could not record the transfer",
                    self.now_stamp(),
                );
                return self.reject_to_legacy(legacy_id, e).await;
            }
        }
        tracing::debug!(pair = self.name(), transfer = %legacy_id, modern = %id, amount = prepare.amount, destination = %prepare.destination, "forwarding to the modern connector");
        let wait = time_until(system_time(transfer.expires_at_ms), self.now());
        match link.send(&prepare, wait).await {
            Ok(Ok(fulfill))
                if fulfillment_matches(&fulfill.fulfillment, &prepare.execution_condition) =>
            {
                self.modern_fulfilled(legacy_id, id, &fulfill).await
            }
            Ok(Ok(_)) => {
                tracing::warn!(pair = self.name(), transfer = %legacy_id, "the modern connector fulfilled with a preimage that does not match the condition");
                let reject = translation.modern_reject(
                    b"F09",
                    "the fulfillment does not match the condition",
                    bytes::Bytes::new(),
                );
                self.modern_failed(
                    legacy_id,
                    id,
                    "wrong fulfillment",
                    translation.reject_to_legacy(&reject, self.now_ms()),
                )
                .await
            }
            Ok(Err(reject)) => {
                let e = translation.reject_to_legacy(&reject, self.now_ms());
                self.modern_failed(legacy_id, id, "rejected by the modern connector", e)
                    .await
            }
            Err(LinkError::NotSent(reason)) => {
                let e = translation.legacy_error(
                    b"T01",
                    &format!("the modern connector is not reachable: {reason}"),
                    self.now_stamp(),
                );
                self.modern_failed(legacy_id, id, "not sent", e).await
            }
            Err(LinkError::InvalidAnswer(reason)) => {
                tracing::warn!(pair = self.name(), transfer = %legacy_id, %reason, "invalid answer from the modern connector");
                let e = translation.legacy_error(
                    b"T00",
                    &format!("invalid answer from the modern connector: {reason}"),
                    self.now_stamp(),
                );
                self.modern_failed(legacy_id, id, "invalid answer", e).await
            }
            Err(LinkError::NoAnswer(reason)) => {
                tracing::warn!(pair = self.name(), transfer = %legacy_id, modern = %id, %reason, "no answer from the modern connector: its outcome there is unknown; the transfer expires on the legacy side");
                Counters::add(
                    &self.inner.counters.unknown_count,
                    &self.inner.counters.unknown_amount,
                    ConnectorAmount(prepare.amount),
                );
                self.expire_modern_later(id, prepare.expires_at.unix_millis());
            }
        }
    }

    /// M fulfilled: written down on the modern side, then delivered to P by the trustline.
    async fn modern_fulfilled(
        &self,
        legacy_id: TransferId,
        id: TransferId,
        fulfill: &ilp_v4::Fulfill,
    ) {
        lock(&self.inner.fulfilling).insert(legacy_id);
        if let Err(error) = self
            .inner
            .modern_log
            .fulfill(&id, &fulfill.fulfillment)
            .await
        {
            // Delivered all the same: the legacy note below is what a restart finishes from.
            tracing::error!(pair = self.name(), modern = %id, %error, "recording the modern connector's Fulfill failed");
        }
        let (fulfillment, ilp) = fulfill_to_legacy(fulfill);
        if let Err(error) = self
            .inner
            .trustline
            .fulfill_when_possible(legacy_id, fulfillment, ilp)
            .await
        {
            tracing::error!(pair = self.name(), transfer = %legacy_id, %error, "the modern connector fulfilled a transfer the legacy peer can no longer be paid for");
        }
        lock(&self.inner.fulfilling).remove(&legacy_id);
    }

    /// M did not take it: the modern record is cancelled and P's transfer rejected with `error`.
    async fn modern_failed(
        &self,
        legacy_id: TransferId,
        id: TransferId,
        reason: &str,
        error: IlpV1Error,
    ) {
        if let Err(e) = self.inner.modern_log.cancel(&id, reason).await {
            tracing::error!(pair = self.name(), modern = %id, error = %e, "recording a refused transfer failed");
        }
        self.reject_to_legacy(legacy_id, error).await;
    }

    pub(super) async fn reject_to_legacy(&self, legacy_id: TransferId, error: IlpV1Error) {
        tracing::debug!(pair = self.name(), transfer = %legacy_id, code = error.code_str(), "rejecting to the legacy peer");
        if let Err(e) = self
            .inner
            .trustline
            .reject_incoming_transfer(legacy_id, error)
            .await
        {
            tracing::warn!(pair = self.name(), transfer = %legacy_id, error = %e, "rejecting to the legacy peer failed; the transfer expires");
        }
    }

    /// Whether P's transfer `transfer` may not expire yet: M's Fulfill of it is being written down, or is
    /// written down already (then it is delivered from here: our clock does not decide that P's transfer is
    /// too late to fulfil, P does).
    pub(super) async fn hold_expiry(&self, transfer: &Transfer) -> bool {
        if lock(&self.inner.fulfilling).contains(&transfer.id) {
            return true;
        }
        let id = modern_id(self.name(), &transfer.id);
        match self.inner.modern_log.get(&id).await {
            Ok(Some(rec)) if rec.direction == Direction::Outgoing => {
                if let TransferState::Fulfilled { fulfillment } = rec.state {
                    let pair = self.clone();
                    let legacy_id = transfer.id;
                    tokio::spawn(async move {
                        if let Err(error) = pair
                            .inner
                            .trustline
                            .fulfill_when_possible(legacy_id, fulfillment, None)
                            .await
                        {
                            tracing::error!(pair = pair.name(), transfer = %legacy_id, %error, "delivering a modern Fulfill to the legacy peer failed");
                        }
                    });
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    /// Cancels modern record `id` once `expires_at_ms` has passed, if no outcome reached it by then (its outcome
    /// on M's side stays unknown; the legacy side finished on its own).
    pub(super) fn expire_modern_later(&self, id: TransferId, expires_at_ms: i64) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let wait = std::time::Duration::from_millis(
            u64::try_from(expires_at_ms.saturating_sub(self.now_ms())).unwrap_or(0),
        );
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(inner) = weak.upgrade() else { return };
            let pair = BridgedPair { inner };
            if let Ok(Some(rec)) = pair.inner.modern_log.get(&id).await {
                if rec.state == TransferState::Prepared {
                    if let Err(error) = pair
                        .inner
                        .modern_log
                        .cancel(&id, "expired without an answer")
                        .await
                    {
                        tracing::warn!(pair = pair.name(), modern = %id, %error, "expiring a modern record failed");
                    }
                }
            }
        });
    }
}
