//! The payee closing channels with its best claims: on disconnect, when the payer moves to a new channel (the
//! background check, woken at once), and when a channel's expiry comes within `closeMarginSecs` (that check,
//! every `expiryCheckIntervalMs`).
//!
//! Closing and crediting never disagree: the payee credits only what its closes collect. Crediting
//! ([`super::payee`]) notes each amount it accepts on a channel (under the close lock, which every close
//! holds); a close puts off a channel while a higher accepted amount is not in the committed tracker, for at
//! most [`UNCOMMITTED_RAISE_WINDOW_SECS`] (then the request is taken as dropped). What is left: a commit later
//! than that window after the module returned could credit a raise whose channel was closed with the recorded
//! amount meanwhile; and a close we signed that left the node's pool without being mined but is broadcast again
//! later (by anyone who kept it) could close a channel below a claim credited in between.

use std::sync::Arc;
use std::time::Duration;

use num_bigint::BigUint;
use num_traits::Zero;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::super::abi::{self, Token};
use super::super::types::{decode_hex, Address, TxHash};
use super::super::wallet::TxStatus;
use super::contract::read_channel;
use super::wire::{IncomingRecord, SubmittedClose};
use super::{
    Inner, INCOMING_CLAIM_KEY, INCOMING_SUBMITTED_KEY, UNCOMMITTED_RAISE_RECHECK_MS,
    UNCOMMITTED_RAISE_WINDOW_SECS,
};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::MaxValue;
use crate::sync::lock;

/// What one [`Inner::submit_claims`] run did.
#[derive(Debug, Default)]
pub(super) struct Closes {
    /// Close transactions confirmed.
    pub(super) sent: Vec<TxHash>,
    /// A close was put off for an uncommitted raise: look again soon.
    pub(super) deferred: bool,
}

/// A channel [`Inner::submit_claims`] may close, with the best claim the record holds on it.
struct Candidate {
    channel: Option<Address>,
    amount: Option<BigUint>,
    signature: Option<String>,
    /// Close it even when its expiry is not near (a retired channel, or every channel at disconnect).
    force: bool,
    /// The cumulative total through it.
    cumulative: BigUint,
}

impl Inner {
    /// How long a close waits for an uncommitted raise: [`UNCOMMITTED_RAISE_WINDOW_SECS`], at most half the
    /// close margin (a raised channel had more than the margin left, so the wait ends before its expiry).
    fn uncommitted_window(&self) -> Duration {
        Duration::from_secs(UNCOMMITTED_RAISE_WINDOW_SECS.min(self.settings.margin_secs / 2))
    }

    /// Notes that `amount` was accepted on `channel` and may not be in the tracker yet (call under
    /// `close_lock`). Forgets notes older than the window.
    pub(super) fn note_uncommitted(&self, channel: Address, amount: &BigUint) {
        let window = self.uncommitted_window();
        let mut notes = lock(&self.uncommitted);
        notes.retain(|_, (_, since)| since.elapsed() < window);
        let now = Instant::now();
        let note = notes
            .entry(channel)
            .or_insert_with(|| (amount.clone(), now));
        if *amount >= note.0 {
            *note = (amount.clone(), now);
        }
    }

    /// Whether `channel` may be closed with `recorded` (what the tracker holds on it): no raise above it was
    /// accepted within the window. A raise the tracker caught up with, or one older than the window (its
    /// request was dropped before the commit), is forgotten.
    fn may_close_with(&self, channel: &Address, recorded: &BigUint) -> bool {
        let window = self.uncommitted_window();
        let mut notes = lock(&self.uncommitted);
        let Some((raised, since)) = notes.get(channel) else {
            return true;
        };
        if recorded >= raised {
            notes.remove(channel);
            return true;
        }
        if since.elapsed() < window {
            return false;
        }
        warn!(%channel, %raised, %recorded, "an accepted claim was never recorded; closing with the recorded one");
        notes.remove(channel);
        true
    }

    /// Closes channels with their best claims: the retired ones always, the current one when `all` or when
    /// its expiry is within the margin. Already closed channels are skipped, so repeating is harmless. A
    /// channel with an accepted amount above the recorded one (not committed yet) is put off (`deferred`).
    pub(super) async fn submit_claims(
        &self,
        ctx: &ChannelContext,
        all: bool,
    ) -> Result<Closes, ModuleError> {
        let _closing = self.close_lock.lock().await;
        let best = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?.get_max().await?;
        let record = IncomingRecord::read(&best.data);
        let mut candidates: Vec<Candidate> = record
            .retired
            .iter()
            .map(|r| Candidate {
                channel: r.channel,
                amount: r.amount.clone(),
                signature: r.signature.clone(),
                force: true,
                cumulative: r.cumulative.clone().unwrap_or_default(),
            })
            .collect();
        if record.signature.is_some() {
            candidates.push(Candidate {
                channel: record.channel,
                amount: record.amount.clone(),
                signature: record.signature.clone(),
                force: all,
                cumulative: best.value.clone(),
            });
        }
        let now = self.chain_now().await?;
        let submitted = ctx.max_value_tracker(INCOMING_SUBMITTED_KEY)?;
        let mut closes = Closes::default();
        for candidate in candidates {
            let (Some(channel), Some(amount)) = (candidate.channel, candidate.amount) else {
                continue;
            };
            let Some(state) = read_channel(&self.wallet, &channel).await? else {
                continue;
            };
            if state.closed || amount.is_zero() {
                continue;
            }
            let expiring = now.saturating_add(self.settings.margin_secs) >= state.expires_at;
            if !candidate.force && !expiring {
                continue;
            }
            if !self.may_close_with(&channel, &amount) {
                info!(%channel, recorded = %amount, "close put off: a higher accepted claim is not recorded yet");
                closes.deferred = true;
                continue;
            }
            let signature = candidate
                .signature
                .as_deref()
                .map(decode_hex)
                .transpose()?
                .ok_or_else(|| ModuleError::Ledger("stored claim lacks its signature".into()))?;
            let data = abi::encode_call(
                "close(uint256,bytes)",
                &[Token::Uint(amount.clone()), Token::Bytes(signature)],
            )?;
            match self
                .wallet
                .send_and_follow(Some(channel), BigUint::zero(), data)
                .await?
            {
                TxStatus::Confirmed(receipt) => {
                    info!(%channel, %amount, hash = %receipt.transaction_hash, "channel closed with best claim");
                    let close = SubmittedClose {
                        channel,
                        amount,
                        tx_hash: receipt.transaction_hash,
                    };
                    submitted
                        .set_if_max(MaxValue {
                            value: candidate.cumulative,
                            data: close.to_json(),
                        })
                        .await?;
                    closes.sent.push(receipt.transaction_hash);
                }
                other => warn!(%channel, ?other, "close transaction failed"),
            }
        }
        Ok(closes)
    }

    /// Starts the payee's background check: every `expiryCheckIntervalMs`, and at once when crediting wakes
    /// it, [`Inner::submit_claims`] closes retired and expiring channels. It holds the module and the host only
    /// weakly, and stops once either is gone.
    pub(super) fn spawn_close_check(self: &Arc<Self>, ctx: &ChannelContext) -> JoinHandle<()> {
        let weak_inner = Arc::downgrade(self);
        let weak_ctx = ctx.downgrade();
        let check_interval = self.settings.check_interval;
        let recheck = Duration::from_millis(UNCOMMITTED_RAISE_RECHECK_MS);
        let wakeup = Arc::clone(&self.close_wakeup);
        tokio::spawn(async move {
            let mut wait = check_interval;
            loop {
                // Woken early when the payer retired or raised a channel (see `handle_incoming_claim`).
                let woken = tokio::select! {
                    () = tokio::time::sleep(wait) => false,
                    () = wakeup.notified() => true,
                };
                let (Some(inner), Some(ctx)) = (weak_inner.upgrade(), weak_ctx.upgrade()) else {
                    return;
                };
                // After a wake-up, look once more shortly: an engine commits the claim's records just after
                // the module returned, possibly after this check read them.
                wait = match inner.submit_claims(&ctx, false).await {
                    Ok(closes) if closes.deferred || woken => recheck,
                    Ok(_) => check_interval,
                    Err(err) => {
                        warn!(%err, "expiry check failed");
                        check_interval
                    }
                };
            }
        })
    }
}
