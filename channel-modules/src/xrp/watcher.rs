//! The payee redeeming its best claim on the ledger (`PaymentChannelClaim`): at disconnect, every
//! `claimInterval` if set, and when the watcher, re-reading the peer's channel every `expiryCheckInterval`,
//! finds it closing within `expiryMargin` (`Expiration` set by a closing payer, or `CancelAfter`): a payer that
//! starts closing and stops sending claims cannot take back what it owes. Submissions are recorded in
//! [`MVT_INCOMING_CLAIM_SUBMITTED`].

use std::sync::Arc;

use num_traits::ToPrimitive;
use serde_json::json;

use super::rpc::ChannelFacts;
use super::wire::IncomingClaim;
use super::{invalid, ledger_error, Inner, MVT_INCOMING_CLAIM, MVT_INCOMING_CLAIM_SUBMITTED};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::MaxValue;
use crate::sync::lock;

/// What an attempt to redeem the best incoming claim came to.
pub(super) enum Redemption {
    /// Nothing beyond what is already redeemed.
    Nothing,
    /// The channel's balance on the ledger now covers the best claim (cumulative drops).
    Redeemed(u64),
    /// The channel is gone from the ledger: the best claim can never be redeemed (the message says so).
    ChannelClosed(String),
}

impl Inner {
    /// [`Inner::redeem_best_claim`], a closed channel reported as an error.
    pub(super) async fn submit_best_claim(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<u64>, ModuleError> {
        match self.redeem_best_claim(ctx).await? {
            Redemption::Nothing => Ok(None),
            Redemption::Redeemed(drops) => Ok(Some(drops)),
            Redemption::ChannelClosed(message) => Err(ModuleError::Ledger(message)),
        }
    }

    pub(super) async fn redeem_best_claim(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Redemption, ModuleError> {
        let _guard = self.submit_lock.lock().await;
        let best = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?.get_max().await?;
        let Some(best_drops) = best.value.to_u64().filter(|d| *d > 0) else {
            return Ok(Redemption::Nothing);
        };
        let submitted_tracker = ctx.max_value_tracker(MVT_INCOMING_CLAIM_SUBMITTED)?;
        if submitted_tracker.get_max().await?.value >= best.value {
            return Ok(Redemption::Nothing);
        }
        let claim = IncomingClaim::from_json(&best.data, None)?;
        let on_ledger = self.fetch_channel(&claim.channel).await?;
        let Some(on_ledger) = on_ledger else {
            return Ok(Redemption::ChannelClosed(format!(
                "channel {} is closed; the best claim ({best_drops} drops) can no longer be redeemed",
                claim.channel
            )));
        };
        if on_ledger.balance >= best_drops {
            submitted_tracker
                .set_if_max(MaxValue {
                    value: best.value.clone(),
                    data: json!({ "alreadyRedeemed": on_ledger.balance.to_string() }),
                })
                .await?;
            return Ok(Redemption::Redeemed(on_ledger.balance));
        }
        let seed = self.opts.keys.seed().ok_or_else(|| {
            invalid("xrp-paychan: submitting claims needs the secret as a family seed (s…), not a private key")
        })?;
        let tx_json = json!({
            "TransactionType": "PaymentChannelClaim",
            "Account": self.opts.address,
            "Channel": claim.channel.to_string(),
            "Balance": best_drops.to_string(),
            "Amount": best_drops.to_string(),
            "Signature": hex::encode_upper(&claim.signature),
            "PublicKey": on_ledger.public_key.to_hex(),
        });
        let outcome = self
            .client
            .submit_with_secret(tx_json, seed)
            .await
            .map_err(ledger_error)?;
        if !outcome.is_success() {
            tracing::error!(
                account = ctx.account_id(),
                channel = %claim.channel,
                drops = best_drops,
                engine_result = %outcome.engine_result,
                "payment channel claim submission failed"
            );
            return Err(ModuleError::Ledger(format!(
                "PaymentChannelClaim failed: {}: {}",
                outcome.engine_result, outcome.engine_result_message
            )));
        }
        tracing::info!(
            account = ctx.account_id(),
            channel = %claim.channel,
            drops = best_drops,
            hash = outcome.hash.as_deref().unwrap_or(""),
            "payment channel claim submitted"
        );
        submitted_tracker
            .set_if_max(MaxValue {
                value: best.value,
                data: json!({ "engineResult": outcome.engine_result, "hash": outcome.hash }),
            })
            .await?;
        Ok(Redemption::Redeemed(best_drops))
    }

    /// One round of the channel watcher: re-reads the peer's channel from rippled (bypassing the cache) and
    /// redeems the best claim if the channel closes within the expiry margin. Errors are logged.
    async fn watch_once(&self, ctx: &ChannelContext) {
        match self.learn_peer_channel(ctx).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "channel watcher: peer channel unknown");
                return;
            }
        }
        // Asking for more than any deposit forces a fresh read.
        match self.peer_channel_facts(ctx, u64::MAX).await {
            Ok(facts) => self.submit_if_expiring(ctx, &facts).await,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "channel watcher: could not read the peer's channel")
            }
        }
    }

    /// Submits at once if the channel closes within the expiry margin.
    pub(super) async fn submit_if_expiring(&self, ctx: &ChannelContext, facts: &ChannelFacts) {
        let Some(closes_at) = facts.closes_at() else {
            return;
        };
        if ctx.now() + self.opts.expiry_margin < closes_at {
            return;
        }
        if let Err(err) = self.submit_best_claim(ctx).await {
            tracing::warn!(account = ctx.account_id(), %err, "could not redeem claim before channel expiry");
        }
    }

    /// Starts the watcher and, with `claimInterval`, the periodic submission. Both hold the module and the
    /// host only weakly (a sleeping task must not keep a dropped module, or the host's database, alive), and
    /// stop once either is gone.
    pub(super) fn spawn_tasks(self: &Arc<Self>, ctx: &ChannelContext) {
        // The watcher: a payer that starts closing its channel and stops sending claims would otherwise
        // take back everything since the last redemption. Weak, so it never keeps a dropped module alive.
        let weak = Arc::downgrade(self);
        // Weak too: a sleeping task must not keep the host's stores (a database) open.
        let weak_ctx = ctx.downgrade();
        let interval = self.opts.expiry_check_interval;
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (Some(inner), Some(task_ctx)) = (weak.upgrade(), weak_ctx.upgrade()) else {
                    return;
                };
                inner.watch_once(&task_ctx).await;
            }
        });
        if let Some(old) = lock(&self.watch_task).replace(handle) {
            old.abort();
        }
        if let Some(interval) = self.opts.claim_interval {
            // Weak, so that the task never keeps a dropped module alive.
            let weak = Arc::downgrade(self);
            // Weak too: a sleeping task must not keep the host's stores (a database) open.
            let weak_ctx = ctx.downgrade();
            let handle = tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let (Some(inner), Some(task_ctx)) = (weak.upgrade(), weak_ctx.upgrade()) else {
                        return;
                    };
                    if let Err(err) = inner.submit_best_claim(&task_ctx).await {
                        tracing::warn!(account = task_ctx.account_id(), %err, "periodic claim submission failed");
                    }
                }
            });
            if let Some(old) = lock(&self.claim_task).replace(handle) {
                old.abort();
            }
        }
    }
}
