//! The library API mirroring the legacy plugin's LPI v1 methods (docs/legacy-btp.md §9.3): `connect`,
//! `disconnect`, `getInfo`, `getAccount`, `getBalance`, `getLimit`, `sendTransfer`, `rejectIncomingTransfer`,
//! `sendRequest`, and the module RPC; `fulfillCondition` is in `fulfill`. Plus [`Trustline::start`], which
//! resumes what a restart interrupted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use btp::packet::{Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName, Reject};
use btp::transport::{Reply, RpcError};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::store::{Direction, PrepareOutcome, Transfer, TransferId, TransferState};
use channel_modules::sync::lock;
use channel_modules::ModuleError;
use serde_json::Value;

use super::guards::CancelGuard;
use super::legacy_format::{bignumber_string, string_negate};
use super::side_protocols::{ilp_and_custom, names, parse_entry, INFO_REQUEST_FULL};
use super::{read, write, Trustline, TrustlineInner};
use crate::peer::error::{log_err_to_peer, PeerError, ReplyError};
use crate::peer::events::{PeerEvent, PeerMessage};
use crate::peer::host::ModuleRpc;

#[async_trait]
impl ModuleRpc for TrustlineInner {
    async fn module_rpc(self: Arc<Self>, method: &str, args: Value) -> Result<Value, ModuleError> {
        Trustline { inner: self }.module_rpc(method, args).await
    }
}

impl Trustline {
    /// After a restart: resumes sending the Fulfills we had started (noted fulfillments of transfers still
    /// prepared: the peer may have them already) and re-arms the expiry timers of every prepared transfer.
    /// Call once before serving.
    pub async fn start(&self) -> Result<usize, PeerError> {
        let prepared = self.inner.log.prepared().await.map_err(log_err_to_peer)?;
        let notes = self
            .inner
            .log
            .noted_fulfillments()
            .await
            .map_err(log_err_to_peer)?;
        let mut resumed = 0;
        for note in notes {
            let Some(rec) = prepared.iter().find(|r| r.transfer.id == note.id) else {
                continue;
            };
            let ilp = (!note.ilp.is_empty()).then(|| Bytes::from(note.ilp));
            // Noted before it was sent: it may have reached the peer before the restart.
            self.resend_fulfill_later(rec.clone(), note.fulfillment, ilp, true);
            resumed += 1;
        }
        let n = prepared.len();
        {
            let mut counted = lock(&self.inner.prepared);
            for r in &prepared {
                counted.insert(r.direction, r.transfer.id);
            }
        }
        for r in prepared {
            self.arm_expiry(r.transfer.id, r.transfer.expires_at_ms);
        }
        tracing::info!(peer = %self.inner.name, prepared = n, fulfills_resumed = resumed, "trustline started; expiry timers re-armed");
        Ok(n)
    }

    /// Legacy `connect()`: learns prefix and info from the peer if not configured, runs the module's
    /// `connect`, emits `connect`. Concurrent calls share one attempt.
    pub async fn connect(&self) -> Result<(), PeerError> {
        let _guard = self.inner.connect_lock.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        if read(&self.inner.info).is_none() || self.prefix().is_none() {
            let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static(names::INFO),
                Bytes::from_static(&[INFO_REQUEST_FULL]),
            ));
            let reply = self.request_response(Packet::Message(pd)).await?;
            let info = match reply.get(names::INFO) {
                Some(e) => {
                    parse_entry(e).map_err(|e| PeerError::InvalidReply(ReplyError::Json(e)))?
                }
                None => Value::Object(serde_json::Map::new()),
            };
            let remote_prefix = info
                .get("prefix")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (&self.inner.configured_prefix, remote_prefix) {
                (Some(p), Some(r)) if *p != r => {
                    return Err(PeerError::refused(
                        "Error",
                        "Remote prefix does not match configured prefix",
                    ))
                }
                (Some(p), None) => {
                    return Err(PeerError::refused(
                        "Error",
                        format!("Remote prefix does not match configured prefix ({p} vs none)"),
                    ))
                }
                (_, Some(r)) => write(&self.inner.prefix, Some(r)),
                (None, None) => return Err(PeerError::InvalidReply(ReplyError::NoPrefix)),
            }
            write(&self.inner.info, Some(info));
        }
        if let Some(m) = &self.inner.module {
            m.connect(&self.inner.ctx).await?;
        }
        self.inner.connected.store(true, Ordering::SeqCst);
        tracing::info!(peer = %self.inner.name, account = ?self.account(), "trustline connected");
        self.emit(PeerEvent::Connect);
        Ok(())
    }

    /// Legacy `disconnect()`: runs the module's `disconnect` and emits `disconnect`. The link stays (the
    /// transport owns sockets).
    pub async fn disconnect(&self) -> Result<(), PeerError> {
        if !self.inner.connected.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(m) = &self.inner.module {
            if let Err(e) = m.disconnect(&self.inner.ctx).await {
                tracing::warn!(peer = %self.inner.name, error = %e, "module disconnect failed");
            }
        }
        self.emit(PeerEvent::Disconnect);
        Ok(())
    }

    /// Legacy `getAccount()`.
    pub fn get_account(&self) -> Result<String, PeerError> {
        self.assert_connected("getAccount")?;
        self.account().ok_or(PeerError::NotConnected("getAccount"))
    }

    /// Legacy `getPeerAccount()`.
    pub fn get_peer_account(&self) -> Result<String, PeerError> {
        self.assert_connected("getPeerAccount")?;
        self.peer_account()
            .ok_or(PeerError::NotConnected("getPeerAccount"))
    }

    /// Legacy `getInfo()`: the LedgerInfo JSON (with module extras, if any).
    pub fn get_info(&self) -> Option<Value> {
        let mut info = read(&self.inner.info)?;
        if let (Some(m), Value::Object(obj)) = (&self.inner.module, &mut info) {
            if let Some(Value::Object(extra)) = m.info() {
                for (k, v) in extra {
                    obj.entry(k).or_insert(v);
                }
            }
        }
        Some(info)
    }

    /// Legacy `getBalance()`: our balance (IF − OF) when stateful; the negated peer balance when stateless.
    pub async fn get_balance(&self) -> Result<String, PeerError> {
        self.assert_connected("getBalance")?;
        if self.inner.stateful {
            Ok(bignumber_string(self.inner.log.balance()))
        } else {
            self.get_peer_balance().await
        }
    }

    /// Legacy `getPeerBalance()`: the peer's balance, negated as a string (`"-0"` for 0).
    pub async fn get_peer_balance(&self) -> Result<String, PeerError> {
        self.assert_connected("getPeerBalance")?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::BALANCE),
            Bytes::from_static(&[0]),
        ));
        let reply = self.request_response(Packet::Message(pd)).await?;
        let b = reply
            .data(names::BALANCE)
            .ok_or(PeerError::InvalidReply(ReplyError::NoBalance))?;
        let arr: [u8; 8] = b[..]
            .try_into()
            .map_err(|_| PeerError::InvalidReply(ReplyError::BalanceLength(b.len())))?;
        Ok(string_negate(&i64::from_be_bytes(arr).to_string()))
    }

    /// Legacy `getLimit()`: the peer's maxBalance, negated as a string.
    pub async fn get_limit(&self) -> Result<String, PeerError> {
        self.assert_connected("getLimit")?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::LIMIT),
            Bytes::from_static(&[0]),
        ));
        let reply = self.request_response(Packet::Message(pd)).await?;
        let e = reply
            .get(names::LIMIT)
            .ok_or(PeerError::InvalidReply(ReplyError::NoLimit))?;
        let v = parse_entry(e).map_err(|e| PeerError::InvalidReply(ReplyError::Json(e)))?;
        let s = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => return Err(PeerError::InvalidReply(ReplyError::Limit(other))),
        };
        Ok(string_negate(&s))
    }

    /// Legacy `sendTransfer`: prepares the transfer locally (outgoing limit), sends the Prepare and returns
    /// once the peer accepted it (then `outgoing_prepare` is emitted and the expiry timer armed). Refused
    /// beyond the peer's prepared-transfer cap. A Prepare the peer refuses with an Error is cancelled here
    /// (legacy left it prepared forever); one with no reply keeps its expiry timer and expires normally.
    pub async fn send_transfer(&self, transfer: Transfer) -> Result<(), PeerError> {
        self.assert_connected("sendTransfer")?;
        if transfer.amount.is_zero() {
            return Err(PeerError::refused(
                "InvalidFieldsError",
                "amount (0) must be positive",
            ));
        }
        let expires_at = Timestamp::from_unix_millis(transfer.expires_at_ms)
            .ok_or_else(|| PeerError::refused("InvalidFieldsError", "expiresAt is out of range"))?;
        let reservation = self
            .reserve_prepared(Direction::Outgoing, transfer.id)
            .map_err(PeerError::Refused)?;
        match self.inner.log.prepare(&transfer, Direction::Outgoing).await {
            Ok(PrepareOutcome::Prepared) => {}
            // Same contents and direction (anything else is DuplicateId from the log).
            Ok(PrepareOutcome::AlreadyExists(rec)) => {
                if rec.state != TransferState::Prepared {
                    // Legacy: re-preparing a finished ID silently succeeds.
                    self.unreserve(reservation, &transfer.id);
                    return Ok(());
                }
            }
            Err(e) => {
                self.unreserve(reservation, &transfer.id);
                return Err(log_err_to_peer(e));
            }
        }
        let packet = Packet::Prepare(Prepare {
            transfer_id: transfer.id.0,
            amount: transfer.amount.0,
            execution_condition: transfer.execution_condition,
            expires_at,
            protocol_data: ilp_and_custom(Some(&transfer.ilp), transfer.custom.as_ref()),
        });
        match self.request(packet).await {
            Ok(Reply::Response(_)) => {
                self.emit(PeerEvent::OutgoingPrepare(transfer.clone()));
                self.arm_expiry(transfer.id, transfer.expires_at_ms);
                Ok(())
            }
            Ok(Reply::Error(e)) => {
                // The peer refused it, so it is not prepared there: release our reservation.
                match self.inner.log.cancel(&transfer.id, "refused by peer").await {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel after refusal failed")
                    }
                }
                Err(PeerError::Remote(e))
            }
            Err(e @ (RpcError::Timeout | RpcError::Disconnected | RpcError::Closed)) => {
                // It may have arrived (`Closed` also fails requests already written): keep it prepared until it
                // expires.
                self.arm_expiry(transfer.id, transfer.expires_at_ms);
                Err(PeerError::Rpc(e))
            }
            Err(e) => {
                // Never sent.
                match self.inner.log.cancel(&transfer.id, "not sent").await {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel of unsent transfer failed")
                    }
                }
                Err(PeerError::Rpc(e))
            }
        }
    }

    /// Legacy `rejectIncomingTransfer(id, reason)`: cancels an incoming transfer and sends a Reject carrying
    /// the ILP v1 Error `reason`.
    pub async fn reject_incoming_transfer(
        &self,
        id: TransferId,
        reason: IlpV1Error,
    ) -> Result<(), PeerError> {
        self.assert_connected("rejectIncomingTransfer")?;
        let Some(_guard) = CancelGuard::take(&self.inner, id) else {
            // Our Fulfill is out (or going out): the preimage decides, not a Reject.
            return Err(PeerError::refused(
                "Error",
                format!("{id} is being fulfilled; cannot reject"),
            ));
        };
        let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
        if matches!(rec.state, TransferState::Fulfilled { .. }) {
            return Err(PeerError::refused(
                "AlreadyFulfilledError",
                format!(
                    "{id} has already been fulfilled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction != Direction::Incoming {
            return Err(PeerError::refused(
                "Error",
                format!("{id} is outgoing; cannot reject."),
            ));
        }
        let was_prepared = rec.state == TransferState::Prepared;
        self.inner
            .log
            .cancel(&id, "rejected")
            .await
            .map_err(log_err_to_peer)?;
        self.finished(&id);
        if was_prepared {
            self.emit(PeerEvent::IncomingReject {
                transfer: rec.transfer.clone(),
                reason: reason.clone(),
            });
        }
        let bytes = IlpV1Packet::Error(reason).to_bytes();
        let packet = Packet::Reject(Reject {
            transfer_id: id.0,
            protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static(names::ILP),
                bytes,
            )),
        });
        self.request_response(packet).await.map(|_| ())
    }

    /// Legacy `sendRequest({ilp, custom})`: sends a Message and returns the peer's `{ilp, custom}`.
    pub async fn send_request(&self, message: PeerMessage) -> Result<PeerMessage, PeerError> {
        self.assert_connected("sendRequest")?;
        self.emit(PeerEvent::OutgoingRequest(message.clone()));
        let pd = ilp_and_custom(message.ilp.as_deref(), message.custom.as_ref());
        let reply = self.request_response(Packet::Message(pd)).await?;
        let custom = match reply.get(names::CUSTOM) {
            Some(e) => {
                Some(parse_entry(e).map_err(|e| PeerError::InvalidReply(ReplyError::Json(e)))?)
            }
            None => None,
        };
        let response = PeerMessage {
            ilp: reply.data(names::ILP).cloned(),
            custom,
        };
        self.emit(PeerEvent::IncomingResponse(response.clone()));
        Ok(response)
    }

    /// A module RPC to the peer's module (legacy `CustomRpc.call`): a Message with one JSON entry named after
    /// the method; the reply entry of the same name is parsed as JSON (`{}` when absent).
    pub async fn module_rpc(&self, method: &str, args: Value) -> Result<Value, ModuleError> {
        let name = ProtocolName::new(method.to_owned())
            .map_err(|e| ModuleError::InvalidFields(format!("bad rpc method name: {e}")))?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::json(name, args.to_string()));
        let reply = match self.request(Packet::Message(pd)).await {
            Ok(Reply::Response(pd)) => pd,
            Ok(Reply::Error(e)) => {
                return Err(ModuleError::Rpc(format!(
                    "{} {}: {}",
                    e.code_str(),
                    e.name,
                    e.data
                )))
            }
            Err(e) => return Err(ModuleError::Rpc(e.to_string())),
        };
        let matching: Vec<_> = reply.iter().filter(|e| e.name == *method).collect();
        match matching.as_slice() {
            [] => Ok(Value::Object(serde_json::Map::new())),
            [one] => serde_json::from_slice(&one.data)
                .map_err(|e| ModuleError::Rpc(format!("reply is not JSON: {e}"))),
            _ => Err(ModuleError::Rpc(format!("Ambigious response for {method}"))),
        }
    }
}
