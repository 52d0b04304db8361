//! Our Fulfill of an incoming transfer (we are the payee): checked, noted durably, sent, applied when the peer
//! accepts it, and re-sent until the peer answers when its outcome is unknown.
//!
//! Legacy applied its own Fulfill whether or not the peer ever saw it. Here the Fulfill is sent first and
//! applied when the peer accepts it, so a peer that refuses it (e.g. already expired there) leaves both sides
//! cancelled, never disagreeing. When its outcome is unknown (no reply in time, socket dropped, no socket), the
//! transfer stays prepared, its expiry is held, and the Fulfill is re-sent with backoff (also after the
//! transfer's expiry) until the peer answers: accepted (a bridge answers a repeat idempotently, legacy with F00
//! `TypeError` because it already finished it, docs/legacy-btp.md §16.3; after its restart, ambiguous, §16.23:
//! decided by the balances, `unsure_fulfill`) → applied; refused (F02 unknown, F05
//! expired) → it expires here too. Before a Fulfill goes out its preimage is noted durably (one synced write,
//! [`TransferLog::note_fulfillment`](channel_modules::store::TransferLog::note_fulfillment)), so after a crash
//! [`Trustline::start`] resumes sending it instead of letting a transfer the payer may already have paid
//! expire here.

use std::sync::Arc;
use std::time::Duration;

use btp::packet::{Fulfill, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::{Reply, RpcError};
use bytes::Bytes;
use channel_modules::store::{Direction, TransferId, TransferRecord, TransferState};
use channel_modules::sync::lock;
use sha2::{Digest, Sha256};

use super::guards::FulfillGuard;
use super::side_protocols::{entry_claim, names};
use super::unsure_fulfill::{Judgement, Probe, Verdict};
use super::{unix_ms, Trustline};
use crate::peer::error::{log_err_to_peer, PeerError};
use crate::peer::events::PeerEvent;

/// First delay before re-sending a Fulfill whose outcome is unknown; doubles up to [`FULFILL_RETRY_MAX`].
pub const FULFILL_RETRY_MIN: Duration = Duration::from_millis(200);

/// Longest delay between two re-sends of an unacknowledged Fulfill.
pub const FULFILL_RETRY_MAX: Duration = Duration::from_secs(30);

/// Checks a fulfillment against a condition (SHA-256).
pub fn fulfillment_matches(fulfillment: &[u8; 32], condition: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(fulfillment).into();
    digest == *condition
}

/// What one attempt to deliver our Fulfill came to.
enum FulfillAttempt {
    /// The peer answered (accepted → applied, or refused), or the request could not be made at all.
    Done(Result<(), PeerError>),
    /// No answer: the Fulfill may or may not have arrived.
    Unknown(RpcError),
    /// An answer that does not say whether the peer applied it (see `unsure_fulfill`): send it again later.
    Undecided,
}

/// The Fulfill packet for transfer `id` (with the `ilp` entry when there is one).
fn fulfill_packet(id: &TransferId, fulfillment: [u8; 32], ilp: Option<&Bytes>) -> Packet {
    let mut pd = ProtocolData::new();
    if let Some(ilp) = ilp.filter(|i| !i.is_empty()) {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::ILP),
            ilp.clone(),
        ));
    }
    Packet::Fulfill(Fulfill {
        transfer_id: id.0,
        fulfillment,
        protocol_data: pd,
    })
}

/// Whether a request that failed with `e` may still have reached the peer (it was written, or may have been).
fn reply_may_have_arrived(e: RpcError) -> bool {
    !matches!(e, RpcError::NotConnected | RpcError::TooManyPending)
}

impl Trustline {
    /// Legacy `fulfillCondition(id, fulfillment, ilp)`: we are the payee. Checks the transfer and the
    /// preimage, sends the Fulfill, applies it when the peer accepts, then hands the `claim` in the Response
    /// to the module's `handle_incoming_claim`. A repeated Fulfill with the right preimage succeeds.
    pub async fn fulfill_condition(
        &self,
        id: TransferId,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
    ) -> Result<(), PeerError> {
        self.assert_connected("fulfillCondition")?;
        // Taken before the expiry check and held until the outcome is known: an expiry (or Reject) that has
        // not begun now waits for us, and one that has begun makes us refuse, so the preimage never goes out
        // for a transfer being cancelled here.
        let Some(_guard) = FulfillGuard::take(&self.inner, id) else {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!("{id} is being cancelled"),
            ));
        };
        let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
        if matches!(rec.state, TransferState::Cancelled { .. }) {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!(
                    "{id} has already been cancelled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction != Direction::Incoming {
            return Err(PeerError::refused(
                "Error",
                format!("{id} is outgoing; cannot fulfill"),
            ));
        }
        let already = matches!(rec.state, TransferState::Fulfilled { .. });
        if !already && rec.transfer.expires_at_ms < unix_ms(self.now()) {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!("{id} has already expired: {}", self.legacy_json(&rec)),
            ));
        }
        if !fulfillment_matches(&fulfillment, &rec.transfer.execution_condition) {
            return Err(PeerError::refused(
                "NotAcceptedError",
                "Fulfillment does not match the condition",
            ));
        }
        if !already {
            // Write-ahead: once the preimage is out the payer may apply it at any moment, so a crash from here
            // on must not let this transfer silently expire here (see `start`).
            let ilp_bytes = ilp.as_deref().unwrap_or_default();
            self.inner
                .log
                .note_fulfillment(&id, &fulfillment, ilp_bytes)
                .await
                .map_err(log_err_to_peer)?;
        }
        self.fulfill_inner(&rec, fulfillment, ilp, already).await
    }

    /// Hands a Fulfill to the trustline to deliver whenever it can: checks the transfer and the preimage,
    /// notes the preimage durably, sends it at once when connected, and otherwise (or when its outcome is
    /// unknown) re-sends it, also across reconnects and restarts, until the peer answers. Unlike
    /// [`Trustline::fulfill_condition`] it needs no connection and does not refuse a transfer past its expiry
    /// by our clock: the payer decides whether it is late (if the payer refuses it and the transfer is past its
    /// expiry here, it is cancelled here too). Used by a router that has already paid the next hop. `Ok` if the
    /// transfer is already fulfilled, or our Fulfill of it is already on its way.
    pub async fn fulfill_when_possible(
        &self,
        id: TransferId,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
    ) -> Result<(), PeerError> {
        let (rec, refused) = {
            let guard = FulfillGuard::take_unless_delivering(&self.inner, id).map_err(|()| {
                PeerError::refused("AlreadyRolledBackError", format!("{id} is being cancelled"))
            })?;
            if guard.is_none() {
                return Ok(());
            }
            let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
            match rec.state {
                TransferState::Fulfilled { .. } => return Ok(()),
                TransferState::Cancelled { .. } => {
                    return Err(PeerError::refused(
                        "AlreadyRolledBackError",
                        format!("{id} has already been cancelled"),
                    ))
                }
                TransferState::Prepared => {}
            }
            if rec.direction != Direction::Incoming
                || !fulfillment_matches(&fulfillment, &rec.transfer.execution_condition)
            {
                return Err(PeerError::refused(
                    "NotAcceptedError",
                    "not an incoming transfer with this condition",
                ));
            }
            self.inner
                .log
                .note_fulfillment(&id, &fulfillment, ilp.as_deref().unwrap_or_default())
                .await
                .map_err(log_err_to_peer)?;
            if !self.is_connected() {
                // Nothing was sent for it by this call: a TypeError to the first send is not an earlier one's
                // echo.
                self.resend_fulfill_later(rec, fulfillment, ilp, false);
                return Ok(());
            }
            match self.fulfill_inner(&rec, fulfillment, ilp, false).await {
                Err(PeerError::Remote(e)) => (rec, e),
                other => return other,
            }
        };
        // The payer refused it. Past its expiry here too, the transfer ends cancelled on both sides.
        if rec.transfer.expires_at_ms <= unix_ms(self.now()) {
            self.expire_unheld(id).await;
        }
        Err(PeerError::Remote(refused))
    }

    /// Sends our Fulfill once; an unknown outcome hands it to [`Trustline::resend_fulfill_later`].
    async fn fulfill_inner(
        &self,
        rec: &TransferRecord,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
        already: bool,
    ) -> Result<(), PeerError> {
        let packet = fulfill_packet(&rec.transfer.id, fulfillment, ilp.as_ref());
        let reply = self.request(packet).await;
        match self
            .settle_fulfill_reply(rec, fulfillment, already, reply, false)
            .await
        {
            FulfillAttempt::Done(result) => result,
            FulfillAttempt::Unknown(e) => {
                self.resend_fulfill_later(rec.clone(), fulfillment, ilp, reply_may_have_arrived(e));
                Err(PeerError::Rpc(e))
            }
            // Only a re-sent Fulfill is judged by the balances.
            FulfillAttempt::Undecided => {
                self.resend_fulfill_later(rec.clone(), fulfillment, ilp, true);
                Err(PeerError::Rpc(RpcError::Timeout))
            }
        }
    }

    /// Applies the peer's answer to one of our Fulfills. `retry`: an earlier attempt's outcome was unknown,
    /// so the peer may already have finished the transfer.
    async fn settle_fulfill_reply(
        &self,
        rec: &TransferRecord,
        fulfillment: [u8; 32],
        already: bool,
        reply: Result<Reply, RpcError>,
        retry: bool,
    ) -> FulfillAttempt {
        let id = rec.transfer.id;
        let accepted_pd = match reply {
            Ok(Reply::Response(pd)) => Some(pd),
            // Legacy answers a repeated Fulfill of a transfer it already finished with F00 TypeError (it reads
            // its stored record as a string): after an unknown outcome that means our first one arrived.
            Ok(Reply::Error(e)) if retry && e.name == "TypeError" => {
                // Ambiguous by legacy's own bug: a legacy peer that restarted answers the same way for a transfer
                // it applied our earlier Fulfill of and for one it still holds prepared. The balances decide.
                if already {
                    None
                } else {
                    match self.judge_by_balance(rec).await {
                        Verdict::Applied => {
                            tracing::info!(peer = %self.inner.name, transfer = %id, "legacy peer answered a re-sent Fulfill with TypeError; its balance shows it applied the first");
                            None
                        }
                        Verdict::NotApplied => {
                            tracing::warn!(peer = %self.inner.name, transfer = %id, "legacy peer answered a re-sent Fulfill with TypeError; its balance shows it never applied it (it restarted): the transfer expires here too");
                            return FulfillAttempt::Done(Err(PeerError::Remote(e)));
                        }
                        Verdict::Undecided => {
                            tracing::info!(peer = %self.inner.name, transfer = %id, "legacy peer answered a re-sent Fulfill with TypeError and the balances do not tell yet whether it applied it; asking again later");
                            return FulfillAttempt::Undecided;
                        }
                    }
                }
            }
            Ok(Reply::Error(e)) => return FulfillAttempt::Done(Err(PeerError::Remote(e))),
            // No answer, whatever the reason (a closed session fails requests already written too): the payer
            // may have it, so only its answer to a re-send decides.
            Err(e) => return FulfillAttempt::Unknown(e),
        };
        if !already {
            // Deferred durability: the fulfillment was noted durably before it was sent, so if a power cut loses
            // this change, `start` re-sends the Fulfill and applies the peer's answer then.
            match self.inner.log.fulfill_deferred(&id, &fulfillment).await {
                Ok(_) => {
                    self.finished(&id);
                    self.emit(PeerEvent::IncomingFulfill {
                        transfer: rec.transfer.clone(),
                        fulfillment,
                    });
                }
                Err(e) => {
                    tracing::error!(peer = %self.inner.name, transfer = %id, error = %e, "fulfill accepted by peer but not applied locally");
                    return FulfillAttempt::Done(Err(log_err_to_peer(e)));
                }
            }
        }
        if let (Some(pd), Some(m)) = (accepted_pd, &self.inner.module) {
            let claim = pd.get(names::CLAIM).and_then(entry_claim);
            match m
                .handle_incoming_claim(&self.inner.ctx, claim.as_ref())
                .await
            {
                Ok(Some(credit)) => {
                    tracing::debug!(peer = %self.inner.name, increase = %credit.amount, "incoming claim accepted")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer = %self.inner.name, error = %e, "error handling incoming claim")
                }
            }
        }
        FulfillAttempt::Done(Ok(()))
    }

    /// Re-sends a Fulfill whose outcome is unknown until the peer answers it (see the module docs). Holds the
    /// transfer's expiry meanwhile; one task per transfer; stops when the trustline is dropped.
    /// `may_have_arrived`: an earlier send of it may have reached the peer; only then is a legacy `TypeError`
    /// (its answer to a Fulfill of a transfer it already finished) taken as accepted.
    pub(super) fn resend_fulfill_later(
        &self,
        rec: TransferRecord,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
        may_have_arrived: bool,
    ) {
        let id = rec.transfer.id;
        if !lock(&self.inner.settling).start_resending(id) {
            return; // a task already re-sends it
        }
        tracing::warn!(peer = %self.inner.name, transfer = %id, "fulfill outcome unknown; re-sending until the peer answers");
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut delay = FULFILL_RETRY_MIN;
            let mut sent_before = may_have_arrived;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(FULFILL_RETRY_MAX);
                let Some(inner) = weak.upgrade() else { return };
                let tl = Trustline { inner };
                let already = matches!(
                    tl.inner.log.get(&id).await,
                    Ok(Some(TransferRecord {
                        state: TransferState::Fulfilled { .. },
                        ..
                    }))
                );
                let reply = tl
                    .request(fulfill_packet(&id, fulfillment, ilp.as_ref()))
                    .await;
                match tl
                    .settle_fulfill_reply(&rec, fulfillment, already, reply, sent_before)
                    .await
                {
                    FulfillAttempt::Unknown(e) => {
                        sent_before |= reply_may_have_arrived(e);
                        continue;
                    }
                    FulfillAttempt::Undecided => continue,
                    FulfillAttempt::Done(result) => {
                        lock(&tl.inner.settling).stop_resending(&id);
                        // Finished, whichever answer finished it: no longer one of the unsure, whose amounts
                        // decide the others.
                        lock(&tl.inner.unsure).remove(&id);
                        match result {
                            Ok(()) => {
                                tracing::info!(peer = %tl.inner.name, transfer = %id, "re-sent fulfill accepted")
                            }
                            Err(e) => {
                                tracing::warn!(peer = %tl.inner.name, transfer = %id, error = %e, "re-sent fulfill refused; the transfer expires here too");
                                if rec.transfer.expires_at_ms <= unix_ms(tl.now()) {
                                    tl.expire_unheld(id).await;
                                }
                            }
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Our Fulfills whose outcome is unknown and that are being re-sent.
    pub fn unacknowledged_fulfills(&self) -> Vec<TransferId> {
        lock(&self.inner.settling).resending()
    }
}

impl Trustline {
    /// Judges an ambiguous answer to our re-sent Fulfill of `rec` by the balances (see `unsure_fulfill`): the
    /// peer's balance, negated, less ours is what the peer applied of the Fulfills we are unsure of, when nothing
    /// else moved while both were read.
    async fn judge_by_balance(&self, rec: &TransferRecord) -> Verdict {
        let id = rec.transfer.id;
        {
            let mut unsure = lock(&self.inner.unsure);
            // Decided by another transfer's probe.
            let verdict = unsure.take_verdict(&id);
            if verdict != Verdict::Undecided {
                return verdict;
            }
            unsure.insert(id, rec.transfer.amount.0, rec.transfer.expires_at_ms);
        }
        let before = self.inner.log.sums();
        let theirs = match self.get_peer_balance().await {
            Ok(b) => b.parse::<i128>().ok(),
            Err(error) => {
                tracing::debug!(peer = %self.inner.name, transfer = %id, %error, "asking the peer's balance failed");
                None
            }
        };
        let Some(theirs) = theirs else {
            return Verdict::Undecided;
        };
        let after = self.inner.log.sums();
        let mut unsure = lock(&self.inner.unsure);
        // Quiet: our sums did not move while the peer answered, nothing is prepared outgoing, and every incoming
        // transfer prepared here is one of the unsure (so none of another kind can be in the peer's balance).
        let in_flight = after
            .incoming_fulfilled_and_prepared
            .0
            .checked_sub(after.incoming_fulfilled.0);
        let quiet = before == after
            && after.outgoing_fulfilled_and_prepared == after.outgoing_fulfilled
            && in_flight == Some(unsure.pending_total());
        let Some(probe) = Probe::of_balances(theirs, after.balance().0, quiet, unix_ms(self.now()))
        else {
            tracing::warn!(peer = %self.inner.name, transfer = %id, balance = theirs, "peer's balance out of range; fulfill left undecided");
            return Verdict::Undecided;
        };
        let pending: Vec<String> = unsure.pending().map(ToString::to_string).collect();
        let judgement = unsure.judge(probe);
        if let Judgement::BySum { sets } = judgement {
            tracing::warn!(
                peer = %self.inner.name,
                transfers = %pending.join(","),
                sets,
                "legacy peer answered re-sent Fulfills with TypeError and several sets of them make up its balance; \
                 all have expired, so they are decided by their sum (the balance agrees; which of them it applied \
                 cannot be told)"
            );
        }
        unsure.take_verdict(&id)
    }
}
