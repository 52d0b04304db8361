//! The payer side of `eth-payment`: each settlement is one on-chain transfer of ETH (or of the ERC-20 token) to
//! the peer. The transaction is recorded in [`PAYMENTS_LOG_KEY`] with its signed raw bytes *before* it is
//! broadcast (the intent), and followed to the end at the next settlement or connect: fulfilled once
//! confirmed, cancelled if it reverted or its nonce went to another transaction. So OFP is everything paid or
//! possibly being paid, and `total − OFP` is exactly what is left to pay: a crash at any point neither pays
//! twice nor forgets. A confirmed payment's hash goes into the recent hashes every claim carries
//! ([`AMOUNT_SETTLED_KEY`]) and into the kept list [`RPC_PAYMENTS_SINCE`] answers from ([`KEPT_PAYMENTS_KEY`]).

use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::super::abi::{self, Token};
use super::super::types::TxHash;
use super::super::wallet::TxStatus;
use super::wire::{kept_payments_with, recent_hashes_with};
use super::{
    condition_of, log_err, transfer_id, EthPaymentModule, AMOUNT_SETTLED_KEY, KEPT_PAYMENTS_KEY,
    MAX_TX_HASHES_PER_PAYMENTS_REPLY, PAYMENTS_LOG_KEY, RPC_PAYMENTS_SINCE,
};
use crate::amount::{parse_amount, LedgerAmount, ModuleUnits};
use crate::claim::Claim;
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::{Direction, MaxValue, Transfer, TransferLog, TransferRecord, TransferState};

impl EthPaymentModule {
    /// Follows every outgoing payment still prepared (recorded, maybe not broadcast) to its end. Returns
    /// `false` when one is still undecided after the receipt timeout.
    pub(super) async fn reconcile(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
    ) -> Result<bool, ModuleError> {
        let mut all_final = true;
        for record in log.prepared().await.map_err(log_err)? {
            if record.direction != Direction::Outgoing {
                continue;
            }
            let custom = record.transfer.custom.clone().unwrap_or(Value::Null);
            let hash: TxHash = custom["txHash"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks txHash".into()))?;
            let raw = custom["raw"]
                .as_str()
                .and_then(|s| super::super::types::decode_hex(s).ok())
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks raw tx".into()))?;
            let nonce = custom["nonce"]
                .as_u64()
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks nonce".into()))?;
            info!(%hash, nonce, "reconciling pending payment");
            match self.wallet.follow(&raw, &hash, nonce).await {
                Ok(status) => self.finish(ctx, log, &record, &hash, status).await?,
                Err(err) => {
                    warn!(%hash, %err, "pending payment still undecided");
                    all_final = false;
                }
            }
        }
        Ok(all_final)
    }

    /// Records the final status of an outgoing payment.
    async fn finish(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
        record: &TransferRecord,
        hash: &TxHash,
        status: TxStatus,
    ) -> Result<(), ModuleError> {
        let id = record.transfer.id;
        match status {
            TxStatus::Confirmed(_) => {
                // The kept list, then the claim data, then the log: a crash in between leaves the record
                // prepared, so `reconcile` finishes it (each hash is kept and carried once, so nothing is added
                // twice). The other order could leave the payment fulfilled with its hash never reaching the
                // peer.
                let settled = ctx.max_value_tracker(AMOUNT_SETTLED_KEY)?;
                let listed = ctx.max_value_tracker(KEPT_PAYMENTS_KEY)?;
                let previous = settled.get_max().await?;
                let kept = match listed.get_max().await?.data.get("payments") {
                    Some(list) => list.clone(),
                    None => seed_kept_payments(log, &previous)
                        .await?
                        .unwrap_or_else(|| json!([])),
                };
                // Settle lock held: no other outgoing payment is fulfilled concurrently.
                let paid = (ModuleUnits::from_own_log(log.sums().outgoing_fulfilled)
                    + ModuleUnits::from_own_log(record.transfer.amount))
                .0;
                listed
                    .set_if_max(MaxValue {
                        value: paid.clone(),
                        data: json!({ "payments": kept_payments_with(&kept, hash, &paid) }),
                    })
                    .await?;
                settled
                    .set_if_max(MaxValue {
                        value: paid.clone(),
                        data: json!({ "txHashes": recent_hashes_with(&previous.data, hash) }),
                    })
                    .await?;
                log.fulfill(&id, &hash.0).await.map_err(log_err)?;
                info!(%hash, amount = record.transfer.amount.0, %paid, "payment confirmed");
            }
            TxStatus::Reverted(_) | TxStatus::Superseded => {
                warn!(%hash, ?status, "payment did not happen; releasing its amount");
                log.cancel(&id, "transaction reverted or superseded")
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Unconfirmed | TxStatus::NotMined => {}
        }
        Ok(())
    }

    /// Payer side of [`RPC_PAYMENTS_SINCE`] (see the module docs): the kept confirmed payments whose total
    /// exceeds `after`, oldest first, at most [`MAX_TX_HASHES_PER_PAYMENTS_REPLY`].
    pub(super) async fn payments_since_reply(
        &self,
        ctx: &ChannelContext,
        args: &Value,
    ) -> Result<Value, ModuleError> {
        let after = args
            .get(0)
            .and_then(|request| request.get("after"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModuleError::InvalidFields(format!(
                    "{RPC_PAYMENTS_SINCE} needs [{{\"after\": \"<decimal total>\"}}]"
                ))
            })?;
        let after = parse_amount(after)?;
        let listed = ctx.max_value_tracker(KEPT_PAYMENTS_KEY)?.get_max().await?;
        let kept = listed.data["payments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut hashes = Vec::new();
        let mut last = None;
        let mut more = false;
        for entry in kept {
            let total = entry["total"]
                .as_str()
                .and_then(|t| t.parse::<BigUint>().ok())
                .ok_or_else(|| ModuleError::Ledger("kept payment lacks its total".to_owned()))?;
            let hash = entry["txHash"]
                .as_str()
                .ok_or_else(|| ModuleError::Ledger("kept payment lacks its hash".to_owned()))?;
            if total <= after {
                continue;
            }
            if hashes.len() == MAX_TX_HASHES_PER_PAYMENTS_REPLY {
                more = true;
                break;
            }
            hashes.push(json!(hash));
            last = Some(total);
        }
        debug!(account = ctx.account_id(), %after, listed = hashes.len(), more, "listing payments");
        Ok(json!({
            "txHashes": hashes,
            "last": last.map(|t| t.to_string()),
            "more": more,
        }))
    }

    pub(super) async fn latest_claim(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<Claim>, ModuleError> {
        let settled = ctx.max_value_tracker(AMOUNT_SETTLED_KEY)?.get_max().await?;
        match settled.data.get("txHashes") {
            Some(Value::Array(hashes)) if !hashes.is_empty() => {
                Ok(Some(Claim::Json(json!({ "txHashes": hashes }))))
            }
            _ => Ok(None),
        }
    }

    /// Pays what `total` leaves unpaid (at most `u64::MAX` units per transaction) and returns the claim naming
    /// the recent payments; a `total` already paid or being paid gives the latest claim again.
    pub(super) async fn pay(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        let _settling = self.settle_lock.lock().await;
        let log = ctx.transfer_log(PAYMENTS_LOG_KEY)?;
        if !self.reconcile(ctx, log.as_ref()).await? {
            return Err(ModuleError::Ledger(
                "an earlier payment is still pending".to_owned(),
            ));
        }
        let committed = ModuleUnits::from_own_log(log.sums().outgoing_fulfilled_and_prepared);
        if *total <= committed {
            return self.latest_claim(ctx).await;
        }
        let owed = total - &committed;
        let amount = u64::try_from(&owed.0).unwrap_or(u64::MAX);
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let (to, value, data) = match self.token {
            None => (peer, BigUint::from(amount), Vec::new()),
            Some(token) => (
                token,
                BigUint::zero(),
                abi::encode_call(
                    "transfer(address,uint256)",
                    &[Token::Address(peer), Token::Uint(BigUint::from(amount))],
                )?,
            ),
        };
        let (signed, record) = {
            let guard = self.wallet.lock_sender().await;
            let signed = self.wallet.sign_next(&guard, Some(to), value, data).await?;
            let transfer = Transfer {
                id: transfer_id(&signed.hash),
                amount: LedgerAmount(amount),
                execution_condition: condition_of(&signed.hash),
                expires_at_ms: i64::MAX,
                ilp: Vec::new(),
                custom: Some(json!({
                    "txHash": signed.hash.to_string(),
                    "raw": super::super::types::encode_hex(&signed.raw),
                    "nonce": signed.nonce,
                    "to": peer.to_string(),
                })),
            };
            // The intent is durable before anything reaches the chain.
            log.prepare(&transfer, Direction::Outgoing)
                .await
                .map_err(log_err)?;
            info!(hash = %signed.hash, amount, %peer, "paying peer");
            if let Err(err) = self.wallet.broadcast(&signed.raw, &signed.hash).await {
                warn!(hash = %signed.hash, %err, "broadcast failed; following will retry");
            }
            let record = TransferRecord {
                transfer,
                direction: Direction::Outgoing,
                state: TransferState::Prepared,
            };
            (signed, record)
        };
        let status = self
            .wallet
            .follow(&signed.raw, &signed.hash, signed.nonce)
            .await?;
        let confirmed = matches!(status, TxStatus::Confirmed(_));
        self.finish(ctx, log.as_ref(), &record, &signed.hash, status)
            .await?;
        if !confirmed {
            return Err(ModuleError::Ledger(format!(
                "payment {} did not go through",
                signed.hash
            )));
        }
        self.latest_claim(ctx).await
    }
}

/// The kept payments list for a store that holds `amount_settled`'s `txHashes` but no kept list: those
/// recent hashes, each with its total, walked back from the confirmed total with each payment's amount from the
/// log (stopping at a hash the log does not hold as outgoing). `None` when there is nothing to seed from.
async fn seed_kept_payments(
    log: &dyn TransferLog,
    previous: &MaxValue,
) -> Result<Option<Value>, ModuleError> {
    let Some(recent) = previous.data.get("txHashes").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut total = previous.value.clone();
    let mut seeded = Vec::new();
    for text in recent.iter().rev() {
        let Some(hash) = text.as_str().and_then(|t| t.parse::<TxHash>().ok()) else {
            break;
        };
        let Some(record) = log.get(&transfer_id(&hash)).await.map_err(log_err)? else {
            break;
        };
        let amount = ModuleUnits::from_own_log(record.transfer.amount).0;
        if record.direction != Direction::Outgoing || amount > total {
            break;
        }
        seeded.push(json!({ "txHash": hash.to_string(), "total": total.to_string() }));
        total -= amount;
    }
    seeded.reverse();
    Ok(Some(Value::Array(seeded)))
}
