//! The peer's requests: [`Trustline::handle_packet`] answers a Prepare, Fulfill, Reject or Message with a
//! Response or a legacy BTP Error (docs/legacy-btp.md §5, §6, §14), and [`TrustlineHandler`] plugs it into the
//! websocket transport.
//!
//! Unlike legacy (docs/legacy-btp.md §16): a repeated Prepare of a known transfer (identical contents)
//! succeeds without re-running the module or re-emitting `incoming_prepare`; a limit failure leaves nothing
//! behind; a Prepare over the peer's [`PrepareLimits`](crate::config::prepare_limits::PrepareLimits) (expiring too far
//! ahead, too much `ilp`/`custom` data, too many prepared) is refused with `NotAcceptedError` before anything
//! is stored. An already-expired Prepare is accepted and then rejected at once with R00, as legacy does.

use std::sync::Arc;

use async_trait::async_trait;
use btp::ilp_v1::IlpV1Packet;
use btp::packet::{
    ContentType, Fulfill, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName, Reject,
};
use btp::transport::{BtpSession, Reply, RequestHandler};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, ModuleUnits};
use channel_modules::store::{
    Direction, Limit, PrepareOutcome, Transfer, TransferId, TransferLogError, TransferRecord,
    TransferState,
};
use channel_modules::sync::lock;
use serde_json::Value;

use super::fulfill::fulfillment_matches;
use super::guards::AcceptGuard;
use super::hooks::TransferOutcome;
use super::legacy_format::{balance_to_int64, limit_string};
use super::side_protocols::{
    claim_entry, entry_claim, entry_json, ilp_and_custom, names, INFO_REQUEST_FULL,
};
use super::{read, unix_ms, Trustline, TrustlineInner};
use crate::peer::error::{
    fulfill_err_to_wire, handler_err_to_ilp, log_err_to_wire, prepare_err_to_wire, WireError,
};
use crate::peer::events::{PeerEvent, PeerMessage, RejectionMessage};
use crate::peer::link::PacketHandler;

/// Adapts a [`Trustline`] to the transport's [`RequestHandler`].
#[derive(Clone, Debug)]
pub struct TrustlineHandler(pub Trustline);

#[async_trait]
impl RequestHandler for TrustlineHandler {
    async fn handle_request(
        &self,
        _session: &BtpSession,
        _request_id: u32,
        packet: Packet,
    ) -> Option<Reply> {
        self.0.handle_packet(packet).await
    }
}

#[async_trait]
impl PacketHandler for TrustlineInner {
    async fn handle_packet(self: Arc<Self>, packet: Packet) -> Option<Reply> {
        Trustline { inner: self }.handle_packet(packet).await
    }
}

impl Trustline {
    /// Answers one request from the peer. `None` for packets that get no reply (Response, Error, Transfer).
    pub async fn handle_packet(&self, packet: Packet) -> Option<Reply> {
        let request = packet_kind(&packet);
        let result = match packet {
            Packet::Prepare(p) => self.handle_prepare(p).await,
            Packet::Fulfill(f) => self.handle_fulfill(f).await,
            Packet::Reject(r) => self.handle_reject(r).await,
            Packet::Message(pd) => self.handle_message(pd).await,
            Packet::Response(_) | Packet::Error(_) | Packet::Transfer(_) => return None,
        };
        Some(match result {
            Ok(pd) => Reply::Response(pd),
            Err(e) => {
                // Every refusal of a peer's request is worth an operator's eye: info, with the reason.
                tracing::info!(peer = %self.inner.name, request, reason = %e, "request refused");
                self.note_error(format!("refused {request}: {e}"));
                Reply::Error(e.to_btp(self.now_ts()))
            }
        })
    }

    async fn handle_prepare(&self, p: Prepare) -> Result<ProtocolData, WireError> {
        if self.prefix().is_none() {
            return Err(WireError::new("Error", "not connected"));
        }
        if p.amount == 0 {
            return Err(WireError::new(
                "InvalidFieldsError",
                "amount (0) must be positive",
            ));
        }
        // Before the data is parsed or anything is stored.
        self.check_prepare_limits(&p)?;
        let custom = match p.protocol_data.get(names::CUSTOM) {
            Some(e) => Some(entry_json(e)?),
            None => None,
        };
        let transfer = Transfer {
            id: TransferId(p.transfer_id),
            amount: LedgerAmount(p.amount),
            execution_condition: p.execution_condition,
            expires_at_ms: p.expires_at.unix_millis(),
            ilp: p
                .protocol_data
                .data(names::ILP)
                .map(|b| b.to_vec())
                .unwrap_or_default(),
            custom,
        };
        let record = TransferRecord {
            transfer: transfer.clone(),
            direction: Direction::Incoming,
            state: TransferState::Prepared,
        };
        let reservation = self.reserve_prepared(Direction::Incoming, transfer.id)?;
        // Deferred durability: if a power cut loses this record, the payer's copy simply expires, and before
        // anything consequential happens to it here (noting a fulfillment, forwarding it, cancelling it) a
        // synced write of this node's database makes it durable too.
        let prepared = self
            .inner
            .log
            .prepare_deferred(&transfer, Direction::Incoming)
            .await;
        if !matches!(prepared, Ok(PrepareOutcome::Prepared)) {
            self.unreserve(reservation, &transfer.id);
        }
        match prepared {
            Ok(PrepareOutcome::Prepared) => {}
            Ok(PrepareOutcome::AlreadyExists(_)) => {
                // The peer repeated a Prepare we already have (same contents and direction; anything else is
                // DuplicateId from the log): nothing to do (legacy: silent success).
                return Ok(ProtocolData::new());
            }
            Err(e) => {
                let existing = match e {
                    TransferLogError::DuplicateId(_) => self
                        .inner
                        .log
                        .get(&transfer.id)
                        .await
                        .ok()
                        .flatten()
                        .map(|r| self.legacy_json(&r))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                return Err(prepare_err_to_wire(
                    e,
                    &self.legacy_json(&record),
                    &existing,
                ));
            }
        }
        if let Some(m) = &self.inner.module {
            if let Err(e) = m.handle_incoming_prepare(&self.inner.ctx, &record).await {
                tracing::debug!(peer = %self.inner.name, transfer = %transfer.id, error = %e, "module rejected incoming prepare");
                match self
                    .inner
                    .log
                    .cancel(&transfer.id, "refused by module")
                    .await
                {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel after module refusal failed")
                    }
                }
                return Err(WireError::from_module(&e));
            }
        }
        self.emit(PeerEvent::IncomingPrepare(transfer.clone()));
        self.arm_expiry(transfer.id, transfer.expires_at_ms);
        self.notify_prepared(transfer);
        Ok(ProtocolData::new())
    }

    /// The peer's Fulfill of our transfer (docs/legacy-btp.md §14.1). A repeated Fulfill with the right
    /// preimage succeeds.
    async fn handle_fulfill(&self, f: Fulfill) -> Result<ProtocolData, WireError> {
        let id = TransferId(f.transfer_id);
        let rec = self.stored(&id).await.map_err(log_err_to_wire)?;
        if matches!(rec.state, TransferState::Cancelled { .. }) {
            return Err(WireError::new(
                "AlreadyRolledBackError",
                format!(
                    "{id} has already been cancelled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction == Direction::Incoming {
            return Err(WireError::new(
                "Error",
                format!("{id} is incoming; refusing to fulfill."),
            ));
        }
        let already = matches!(rec.state, TransferState::Fulfilled { .. });
        // Marked before the clock is read, and held until the Fulfill is applied: whoever does not see the
        // mark (our expiry of this transfer, or a router deciding whether the transfer it was forwarded from
        // may expire) looked before this clock reading, so if the transfer had expired by then we refuse.
        let _accepting = if already {
            None
        } else {
            Some(AcceptGuard::take(&self.inner, id).ok_or_else(|| {
                WireError::new("AlreadyRolledBackError", format!("{id} is being cancelled"))
            })?)
        };
        if !already && rec.transfer.expires_at_ms < unix_ms(self.now()) {
            return Err(WireError::new(
                "AlreadyRolledBackError",
                format!("{id} has already expired: {}", self.legacy_json(&rec)),
            ));
        }
        if !fulfillment_matches(&f.fulfillment, &rec.transfer.execution_condition) {
            return Err(WireError::new(
                "NotAcceptedError",
                "Fulfillment does not match the condition",
            ));
        }
        let ilp = f.protocol_data.data(names::ILP).cloned();
        if !already {
            self.inner
                .log
                .fulfill(&id, &f.fulfillment)
                .await
                .map_err(fulfill_err_to_wire)?;
            self.finished(&id);
            self.emit(PeerEvent::OutgoingFulfill {
                transfer: rec.transfer.clone(),
                fulfillment: f.fulfillment,
                ilp: ilp.clone(),
            });
            self.notify_settled(
                rec.transfer.clone(),
                TransferOutcome::Fulfilled {
                    fulfillment: f.fulfillment,
                    ilp,
                },
            );
        }
        let mut pd = ProtocolData::new();
        if let Some(m) = &self.inner.module {
            // Durable sums only: a claim leaves the node, and must not cover a concurrent fulfill that a crash
            // could still undo here.
            let of = match self.inner.log.durable_sums().await {
                Ok(sums) => ModuleUnits::from_peer_ledger(sums.outgoing_fulfilled),
                Err(e) => return Err(log_err_to_wire(e)),
            };
            let total = of.max(lock(&self.inner.claim_floor).clone());
            match m.create_outgoing_claim(&self.inner.ctx, &total).await {
                Ok(Some(claim)) => {
                    pd.push(claim_entry(&claim));
                    self.note_settled(&total);
                }
                Ok(None) => self.note_settled(&total),
                Err(e) => {
                    tracing::warn!(peer = %self.inner.name, error = %e, "error creating outgoing claim")
                }
            }
        }
        Ok(pd)
    }

    /// The peer's Reject of our transfer (docs/legacy-btp.md §14.2).
    async fn handle_reject(&self, r: Reject) -> Result<ProtocolData, WireError> {
        let id = TransferId(r.transfer_id);
        let ilp_error = match r.protocol_data.data(names::ILP).map(IlpV1Packet::decode) {
            Some(Ok(IlpV1Packet::Error(e))) => e,
            Some(Ok(_)) => {
                return Err(WireError::new(
                    "TypeError",
                    "Cannot read properties of undefined (reading 'length')",
                ))
            }
            Some(Err(e)) => return Err(WireError::from_ilp_decode(&e)),
            None => {
                return Err(WireError::new(
                    "TypeError",
                    "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received undefined",
                ))
            }
        };
        let rec = self.stored(&id).await.map_err(log_err_to_wire)?;
        if matches!(rec.state, TransferState::Fulfilled { .. }) {
            return Err(WireError::new(
                "AlreadyFulfilledError",
                format!(
                    "{id} has already been fulfilled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction == Direction::Incoming {
            return Err(WireError::new(
                "Error",
                format!("{id} is incoming; peer cannot reject."),
            ));
        }
        if rec.state != TransferState::Prepared {
            return Err(WireError::new(
                "TransferNotFoundError",
                format!("No prepared transfer with ID {id}"),
            ));
        }
        self.inner
            .log
            .cancel(&id, "rejected by peer")
            .await
            .map_err(log_err_to_wire)?;
        self.finished(&id);
        let additional_info = serde_json::from_slice(&ilp_error.data)
            .unwrap_or_else(|_| Value::String("not JSON".to_owned()));
        let reason = RejectionMessage {
            code: ilp_error.code_str().to_owned(),
            name: ilp_error.name.clone(),
            triggered_by: ilp_error.triggered_by.clone(),
            forwarded_by: ilp_error.forwarded_by.last().cloned(),
            triggered_at_ms: ilp_error.triggered_at.unix_millis(),
            additional_info,
            ilp_error: ilp_error.clone(),
        };
        self.emit(PeerEvent::OutgoingReject {
            transfer: rec.transfer.clone(),
            reason,
        });
        self.notify_settled(rec.transfer, TransferOutcome::Rejected(ilp_error));
        Ok(ProtocolData::new())
    }

    /// A Message, dispatched as legacy does (docs/legacy-btp.md §5 "Dispatch of a received Message"): the
    /// built-in `info`, `balance` and `limit`, then `ilp`/`custom` to the quote hook or the request handler,
    /// then the module's RPC.
    async fn handle_message(&self, pd: ProtocolData) -> Result<ProtocolData, WireError> {
        let ilp = pd.data(names::ILP).cloned();
        let custom = match pd.get(names::CUSTOM) {
            Some(e) => Some(entry_json(e)?),
            None => None,
        };
        if ilp.is_none() {
            if let Some(e) = pd.get(names::INFO) {
                let full = e.content_type == ContentType::OCTET_STREAM
                    && e.data.first() == Some(&INFO_REQUEST_FULL);
                return Ok(if full {
                    let info = self.get_info().unwrap_or(Value::Null);
                    ProtocolData::new().with(ProtocolDataEntry::json(
                        ProtocolName::from_static(names::INFO),
                        info.to_string(),
                    ))
                } else {
                    ProtocolData::new().with(ProtocolDataEntry::text(
                        ProtocolName::from_static(names::INFO),
                        self.account().unwrap_or_default(),
                    ))
                });
            }
            if pd.get(names::BALANCE).is_some() {
                let bytes = balance_to_int64(self.inner.log.balance()).ok_or_else(|| {
                    WireError::new("Error", "balance does not fit in a 64-bit integer")
                })?;
                return Ok(ProtocolData::new().with(ProtocolDataEntry::octets(
                    ProtocolName::from_static(names::BALANCE),
                    Bytes::copy_from_slice(&bytes),
                )));
            }
            if pd.get(names::LIMIT).is_some() {
                let max = if self.inner.stateful {
                    self.inner.log.maximum()
                } else {
                    Limit::Unbounded
                };
                return Ok(ProtocolData::new().with(ProtocolDataEntry::json(
                    ProtocolName::from_static(names::LIMIT),
                    Value::String(limit_string(max)).to_string(),
                )));
            }
            if custom.is_none() {
                return self.handle_module_protocols(&pd).await;
            }
        }
        let message = PeerMessage { ilp, custom };
        self.emit(PeerEvent::IncomingRequest(message.clone()));
        if let Some(answer) = self.answer_quote(message.ilp.as_ref()).await {
            let response = PeerMessage {
                ilp: Some(answer),
                custom: None,
            };
            self.emit(PeerEvent::OutgoingResponse(response.clone()));
            return Ok(ilp_and_custom(response.ilp.as_deref(), None));
        }
        let Some(handler) = read(&self.inner.request_handler) else {
            return Err(WireError::new(
                "NotAcceptedError",
                "no request handler registered",
            ));
        };
        let response = match handler.handle_request(message).await {
            Ok(r) => r,
            Err(e) => PeerMessage {
                ilp: Some(handler_err_to_ilp(
                    &e,
                    self.account().unwrap_or_default(),
                    self.now_ts(),
                )),
                custom: None,
            },
        };
        self.emit(PeerEvent::OutgoingResponse(response.clone()));
        Ok(ilp_and_custom(
            response.ilp.as_deref(),
            response.custom.as_ref(),
        ))
    }

    /// Hands an ILQP quote request (ILP v1 types 2, 4, 6) to the routing hook; `None` when there is no hook,
    /// the packet is something else, or the hook leaves it to the request handler.
    async fn answer_quote(&self, ilp: Option<&Bytes>) -> Option<Bytes> {
        let hook = read(&self.inner.hook)?;
        let request = match IlpV1Packet::decode(ilp?) {
            Ok(
                p @ (IlpV1Packet::LiquidityRequest(_)
                | IlpV1Packet::BySourceRequest(_)
                | IlpV1Packet::ByDestinationRequest(_)),
            ) => p,
            _ => return None,
        };
        hook.quote_request(self.clone(), request).await
    }

    /// Side protocols that are not built in: the module's RPC methods (legacy `CustomRpc.handleProtocols`),
    /// plus a `claim` Message handed to `handle_incoming_claim`.
    async fn handle_module_protocols(&self, pd: &ProtocolData) -> Result<ProtocolData, WireError> {
        let Some(m) = &self.inner.module else {
            return Err(WireError::new(
                "TypeError",
                "Cannot read properties of undefined (reading 'handleProtocols')",
            ));
        };
        let mut out = ProtocolData::new();
        for e in pd.iter() {
            if e.name == *names::CLAIM {
                let claim = entry_claim(e);
                m.handle_incoming_claim(&self.inner.ctx, claim.as_ref())
                    .await
                    .map_err(|err| WireError::from_module(&err))?;
                continue;
            }
            let args = entry_json(e)?;
            let result = m
                .handle_rpc(&self.inner.ctx, e.name.as_str(), args)
                .await
                .map_err(|err| WireError::from_module(&err))?;
            out.push(ProtocolDataEntry::json(e.name.clone(), result.to_string()));
        }
        Ok(out)
    }
}

/// The kind of request `packet` is, for logs.
fn packet_kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Prepare(_) => "prepare",
        Packet::Fulfill(_) => "fulfill",
        Packet::Reject(_) => "reject",
        Packet::Message(_) => "message",
        Packet::Response(_) => "response",
        Packet::Error(_) => "error",
        Packet::Transfer(_) => "transfer",
    }
}
