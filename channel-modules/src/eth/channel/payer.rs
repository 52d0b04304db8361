//! The payer side of `eth-channel`: funding channels and signing claims.
//!
//! The first settlement deploys a channel to the peer with `channelDeposit` wei and an expiry
//! `channelTimeoutSecs` ahead; each settlement signs a cumulative claim ([`super::contract::claim_digest`]),
//! topping the deposit up first when the claim would exceed it, and moves to a new channel when the current one
//! is closed, has less than two `closeMarginSecs` left, or runs the first contract version. A new channel's
//! claims carry the final claims on retired channels the payee may still close (see [`super::payee`]). Every
//! payer transaction (deploy, top-up) is recorded in the transfer log [`CHANNEL_TXS_LOG_KEY`] with its signed
//! raw bytes *before* it is broadcast, and followed to the end at the next call or connect, so a crash never
//! deposits twice. Expired or closed retired channels are reclaimed ([`Inner::reclaim_expired`], also run at
//! connect).

use num_bigint::BigUint;
use num_traits::Zero;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::super::abi;
use super::super::types::{encode_hex, TxHash};
use super::super::wallet::TxStatus;
use super::contract::{
    claim_digest, create_address, payment_channel_init_code, read_channel, ChannelVersion,
};
use super::wire::{
    CarriedClaim, ChannelTx, OutgoingChannelRecord, OutgoingClaim, OutgoingClaimRecord,
};
use super::{
    log_err, Inner, CHANNEL_TXS_LOG_KEY, MAX_DEPOSIT_PER_TX_WEI, MAX_RETIRED_CLAIMS,
    OPT_CHANNEL_DEPOSIT, OUTGOING_CHANNEL_KEY, OUTGOING_CLAIM_KEY,
};
use crate::amount::{LedgerAmount, ModuleUnits};
use crate::claim::Claim;
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::{
    Direction, MaxValue, Transfer, TransferId, TransferLog, TransferRecord, TransferState,
};

/// Most deploy/top-up rounds one settlement may take before giving up.
const MAX_FUNDING_ROUNDS: usize = 4;

/// A payer transaction to record and send: a deploy (`to: None`) or a top-up.
struct PayerTx {
    kind: &'static str,
    to: Option<super::super::types::Address>,
    value: BigUint,
    data: Vec<u8>,
}

impl Inner {
    /// Follows recorded payer transactions to the end; `false` if one is still undecided.
    pub(super) async fn reconcile(&self, log: &dyn TransferLog) -> Result<bool, ModuleError> {
        let mut all_final = true;
        for record in log.prepared().await.map_err(log_err)? {
            if record.direction != Direction::Outgoing {
                continue;
            }
            let custom = record.transfer.custom.clone().unwrap_or_default();
            let Some((hash, raw, nonce, kind)) = ChannelTx::read_to_follow(&custom) else {
                return Err(ModuleError::Ledger(
                    "recorded channel tx is unreadable".into(),
                ));
            };
            info!(%hash, nonce, kind = kind.as_deref().unwrap_or_default(), "reconciling channel transaction");
            match self.wallet.follow(&raw, &hash, nonce).await {
                Ok(status) => self.finish(log, &record, &hash, &status).await?,
                Err(err) => {
                    warn!(%hash, %err, "channel transaction still undecided");
                    all_final = false;
                }
            }
        }
        Ok(all_final)
    }

    async fn finish(
        &self,
        log: &dyn TransferLog,
        record: &TransferRecord,
        hash: &TxHash,
        status: &TxStatus,
    ) -> Result<(), ModuleError> {
        match status {
            TxStatus::Confirmed(_) => {
                log.fulfill(&record.transfer.id, &hash.0)
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Reverted(_) | TxStatus::Superseded => {
                warn!(%hash, ?status, "channel transaction did not happen");
                log.cancel(&record.transfer.id, "reverted or superseded")
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Unconfirmed | TxStatus::NotMined => {}
        }
        Ok(())
    }

    /// Signs, records (before broadcast), broadcasts and follows one payer transaction. `new_channel` (with
    /// its sequence number) is written, under the sender lock once the transaction is signed, as the current
    /// channel with the address the deploy gets.
    async fn send_recorded(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
        tx: PayerTx,
        mut new_channel: Option<(u64, OutgoingChannelRecord)>,
    ) -> Result<(), ModuleError> {
        let PayerTx {
            kind,
            to,
            value,
            data,
        } = tx;
        let amount = u64::try_from(&value)
            .map_err(|_| ModuleError::InvalidFields("one deposit is at most 2^64-1 wei".into()))?;
        let (signed, record) = {
            let guard = self.wallet.lock_sender().await;
            let signed = self.wallet.sign_next(&guard, to, value, data).await?;
            let channel = match to {
                Some(addr) => addr,
                None => create_address(&self.wallet.address(), signed.nonce),
            };
            if let Some((seq, mut entry)) = new_channel.take() {
                entry.address = Some(channel);
                let previous = ctx
                    .max_value_tracker(OUTGOING_CHANNEL_KEY)?
                    .set_if_max(MaxValue {
                        value: BigUint::from(seq),
                        data: entry.to_json(),
                    })
                    .await?;
                if previous.value >= BigUint::from(seq) {
                    return Err(ModuleError::Ledger(
                        "channel record changed concurrently".into(),
                    ));
                }
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&signed.hash.0[..16]);
            let recorded = ChannelTx {
                kind: kind.to_owned(),
                channel,
                tx_hash: signed.hash,
                raw: signed.raw.clone(),
                nonce: signed.nonce,
            };
            let transfer = Transfer {
                id: TransferId(id),
                amount: LedgerAmount(amount),
                execution_condition: Sha256::digest(signed.hash.0).into(),
                expires_at_ms: i64::MAX,
                ilp: Vec::new(),
                custom: Some(recorded.to_json()),
            };
            log.prepare(&transfer, Direction::Outgoing)
                .await
                .map_err(log_err)?;
            info!(hash = %signed.hash, kind, %channel, amount, "channel transaction");
            if let Err(err) = self.wallet.broadcast(&signed.raw, &signed.hash).await {
                warn!(hash = %signed.hash, %err, "broadcast failed; following will retry");
            }
            (
                signed,
                TransferRecord {
                    transfer,
                    direction: Direction::Outgoing,
                    state: TransferState::Prepared,
                },
            )
        };
        let status = self
            .wallet
            .follow(&signed.raw, &signed.hash, signed.nonce)
            .await?;
        self.finish(log, &record, &signed.hash, &status).await?;
        match status {
            TxStatus::Confirmed(_) => Ok(()),
            other => Err(ModuleError::Ledger(format!(
                "{kind} transaction {} failed: {other:?}",
                signed.hash
            ))),
        }
    }

    /// The claim for the cumulative `total`: the best one signed if it covers `total`, else a new one, after
    /// opening or funding a channel as needed (see the module docs).
    pub(super) async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        // The module's units are wei, which the contract and the claims count in.
        let total = &total.0;
        let _settling = self.settle_lock.lock().await;
        let log = ctx.transfer_log(CHANNEL_TXS_LOG_KEY)?;
        if !self.reconcile(log.as_ref()).await? {
            return Err(ModuleError::Ledger(
                "an earlier channel transaction is still pending".into(),
            ));
        }
        let claims = ctx.max_value_tracker(OUTGOING_CLAIM_KEY)?;
        let best = claims.get_max().await?;
        if *total <= best.value {
            // Covered: the best claim again, exactly as it was sent.
            let signed = OutgoingClaimRecord::read(&best.data).signature.is_some();
            return Ok(signed.then(|| Claim::Json(best.data.clone())));
        }
        if self.settings.deposit.is_zero() {
            return Err(ModuleError::InvalidFields(format!(
                "{OPT_CHANNEL_DEPOSIT} must be set to pay over eth-channel"
            )));
        }
        let best_claim = OutgoingClaimRecord::read(&best.data);
        let chain_id = self.wallet.chain_id().await?;
        let peer = self.peer.get(ctx, chain_id).await?;
        let channels = ctx.max_value_tracker(OUTGOING_CHANNEL_KEY)?;
        for _ in 0..MAX_FUNDING_ROUNDS {
            let entry = channels.get_max().await?;
            let record = OutgoingChannelRecord::read(&entry.data);
            let current = match record.address {
                Some(address) => read_channel(&self.wallet, &address).await?,
                None => None,
            };
            let now = self.chain_now().await?;
            let usable = current.filter(|c| {
                // A channel of the first contract version takes no claims the payee would accept: open a new
                // one.
                c.version == ChannelVersion::Current
                    && !c.closed
                    && c.payee == peer
                    && c.payer == self.wallet.address()
                    && c.expires_at >= now.saturating_add(self.settings.margin_secs * 2)
            });
            let Some(channel) = usable else {
                // Open a new channel whose claims start after everything signed so far.
                let base = best.value.clone();
                let needed = total - &base;
                // One transaction carries at most 2^64-1 wei (a transfer log amount); the funding loop tops
                // up the rest on its next round.
                let deposit = needed
                    .max(self.settings.deposit.clone())
                    .min(BigUint::from(MAX_DEPOSIT_PER_TX_WEI));
                let mut retired = record.retired.clone();
                retired.extend(record.address);
                let retired_claims = self
                    .retired_claims_to_carry(&record, &best_claim, now)
                    .await;
                let seq = u64::try_from(&entry.value).unwrap_or(u64::MAX - 1) + 1;
                let expires = now + self.settings.timeout_secs;
                let init = payment_channel_init_code(&peer, expires)?;
                let new_channel = OutgoingChannelRecord {
                    base: Some(base),
                    retired,
                    expires_at: Some(expires),
                    retired_claims,
                    address: None,
                };
                self.send_recorded(
                    ctx,
                    log.as_ref(),
                    PayerTx {
                        kind: "open",
                        to: None,
                        value: deposit,
                        data: init,
                    },
                    Some((seq, new_channel)),
                )
                .await?;
                continue;
            };
            let base = record
                .base
                .clone()
                .ok_or_else(|| ModuleError::Ledger("channel record lacks base".into()))?;
            let amount = total - &base;
            if amount > channel.balance {
                let top_up = (&amount - &channel.balance).max(self.settings.deposit.clone());
                let top_up = top_up.min(BigUint::from(MAX_DEPOSIT_PER_TX_WEI));
                let data = abi::encode_call("deposit()", &[])?;
                self.send_recorded(
                    ctx,
                    log.as_ref(),
                    PayerTx {
                        kind: "deposit",
                        to: Some(channel.address),
                        value: top_up,
                        data,
                    },
                    None,
                )
                .await?;
                continue;
            }
            let digest = claim_digest(chain_id, &channel.address, &amount)?;
            let signature = self.wallet.key().sign_personal(&digest)?;
            let claim = OutgoingClaim {
                channel: channel.address,
                amount,
                signature: encode_hex(&signature.to_bytes65()),
                base,
                retired: record
                    .retired_claims
                    .into_iter()
                    .filter(|c| c.expires_at.is_none_or(|at| at > now))
                    .collect(),
            };
            let data = claim.to_json();
            claims
                .set_if_max(MaxValue {
                    value: total.clone(),
                    data: data.clone(),
                })
                .await?;
            return Ok(Some(Claim::Json(data)));
        }
        Err(ModuleError::Ledger(
            "could not fund a channel for this settlement".into(),
        ))
    }

    /// Payer, opening a new channel: the final claims on retired channels that the payee may still close,
    /// to carry on the new channel's claims. Those of the current channel's `record` plus the best claim
    /// signed (`best`) if it is on the channel being retired, minus those closed or expired (chain reads:
    /// opening is rare), at most the [`MAX_RETIRED_CLAIMS`] most recent. Each keeps its channel's expiry, so
    /// claims stop carrying it once it expired. A channel that cannot be read is kept: the payee checks.
    async fn retired_claims_to_carry(
        &self,
        record: &OutgoingChannelRecord,
        best: &OutgoingClaimRecord,
        now: u64,
    ) -> Vec<CarriedClaim> {
        let mut claims = record.retired_claims.clone();
        if let Some(old) = record.address {
            let carried = claims.iter().any(|c| c.channel == old);
            if let (true, false, Some(amount), Some(signature)) = (
                best.channel == Some(old),
                carried,
                best.amount.clone(),
                best.signature.clone(),
            ) {
                claims.push(CarriedClaim {
                    channel: old,
                    amount,
                    signature,
                    expires_at: record.expires_at,
                });
            }
        }
        let mut kept = Vec::new();
        for claim in claims {
            if claim.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            let address = claim.channel;
            match read_channel(&self.wallet, &address).await {
                // The payee refuses claims on the first contract version's channels: nothing to carry.
                Ok(Some(state)) if state.closed || state.version != ChannelVersion::Current => {}
                Ok(None) => {}
                Ok(Some(_)) => kept.push(claim),
                Err(err) => {
                    warn!(%address, %err, "could not read a retired channel; still carrying its claim");
                    kept.push(claim);
                }
            }
        }
        let skip = kept.len().saturating_sub(MAX_RETIRED_CLAIMS);
        kept.split_off(skip)
    }

    /// Reclaims the deposits of retired channels that expired (or were closed with a failed refund).
    pub(super) async fn reclaim_expired(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Vec<TxHash>, ModuleError> {
        let entry = ctx
            .max_value_tracker(OUTGOING_CHANNEL_KEY)?
            .get_max()
            .await?;
        let record = OutgoingChannelRecord::read(&entry.data);
        let now = self.chain_now().await?;
        let mut sent = Vec::new();
        for address in record.retired {
            let Some(state) = read_channel(&self.wallet, &address).await? else {
                continue;
            };
            let reclaimable = !state.balance.is_zero() && (state.closed || now >= state.expires_at);
            if !reclaimable || state.payer != self.wallet.address() {
                continue;
            }
            let status = self
                .wallet
                .send_and_follow(
                    Some(address),
                    BigUint::zero(),
                    abi::encode_call("reclaim()", &[])?,
                )
                .await?;
            match status {
                TxStatus::Confirmed(receipt) => {
                    info!(%address, refunded = %state.balance, "channel reclaimed");
                    sent.push(receipt.transaction_hash);
                }
                other => warn!(%address, ?other, "reclaim failed"),
            }
        }
        Ok(sent)
    }
}
