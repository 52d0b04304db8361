//! The payer side of `xrp-paychan`: it pays through its own outgoing channel (option `channel`, source = us,
//! destination = the peer), signing a claim for the cumulative total it owes (refusing more than the channel
//! holds) and keeping the best claim signed in [`MVT_OUTGOING_CLAIM`].

use num_bigint::BigUint;
use num_traits::ToPrimitive;
use serde_json::Value;

use super::crypto::ChannelId;
use super::wire::{claim_json, same_channel_as_before};
use super::{invalid, Cached, Inner, XrpPaychan, MVT_OUTGOING_CLAIM};
use crate::amount::ModuleUnits;
use crate::claim::Claim;
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::MaxValue;
use crate::sync::lock;

impl Inner {
    /// Reads our outgoing channel and checks that it is ours.
    pub(super) async fn load_own_channel(
        &self,
        ctx: &ChannelContext,
        id: &ChannelId,
    ) -> Result<Cached, ModuleError> {
        let facts = self.fetch_channel(id).await?.ok_or_else(|| {
            invalid(format!(
                "xrp-paychan: outgoing channel {id} does not exist on the ledger"
            ))
        })?;
        if facts.account != self.opts.address {
            return Err(invalid(format!(
                "xrp-paychan: outgoing channel {id} belongs to {}, not to us ({})",
                facts.account, self.opts.address
            )));
        }
        if facts.public_key != self.opts.claim_keys().public_key() {
            return Err(invalid(format!(
                "xrp-paychan: outgoing channel {id} names another key than ours{}",
                if self.opts.channel_keys.is_some() {
                    " (channelSecret)"
                } else {
                    " (the account key; a channel created with another key needs channelSecret)"
                }
            )));
        }
        let cached = Cached {
            facts,
            read_at: ctx.now(),
        };
        lock(&self.state).own = Some(cached.clone());
        Ok(cached)
    }
}

impl XrpPaychan {
    /// The claim for the cumulative `total` drops: the best one signed again when it covers `total`.
    pub(super) async fn sign_claim_for(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        let inner = &self.inner;
        let Some(channel) = inner.opts.channel else {
            return Err(invalid(
                "xrp-paychan has no outgoing channel configured (option channel)",
            ));
        };
        let drops = total.0.to_u64().ok_or_else(|| {
            ModuleError::InsufficientBalance(format!("{total} drops exceeds any channel"))
        })?;
        if drops == 0 {
            return Ok(None);
        }
        let tracker = ctx.max_value_tracker(MVT_OUTGOING_CLAIM)?;
        let best = tracker.get_max().await?;
        // Claims are cumulative over one channel: signing our whole total on another would pay again.
        same_channel_as_before(&best, &channel).map_err(|e| invalid(e.to_string()))?;
        if best.value >= total.0 {
            // Already covered: hand out the best claim again (idempotent).
            return Ok(best.data.is_object().then_some(Claim::Json(best.data)));
        }
        let cached = lock(&inner.state).own.clone();
        let own = match cached {
            Some(c) if drops <= c.facts.amount => c,
            // Unknown or too small in the cache: the deposit may have grown since.
            _ => inner.load_own_channel(ctx, &channel).await?,
        };
        if drops > own.facts.amount {
            return Err(ModuleError::InsufficientBalance(format!(
                "claim of {drops} drops exceeds the channel deposit of {} drops",
                own.facts.amount
            )));
        }
        let signature = inner
            .opts
            .claim_keys()
            .sign_claim(&channel, drops)
            .map_err(|e| ModuleError::InvalidFields(e.to_string()))?;
        let claim = claim_json(
            &channel,
            drops,
            &signature,
            &inner.opts.claim_keys().public_key().to_hex(),
        );
        tracker
            .set_if_max(MaxValue {
                value: BigUint::from(drops),
                data: claim.clone(),
            })
            .await?;
        tracing::debug!(account = ctx.account_id(), %channel, drops, "signed outgoing claim");
        Ok(Some(Claim::Json(claim)))
    }

    /// Answers the peer's [`super::RPC_LATEST_CLAIM`]: the claim for everything our log says we owe it
    /// (`null` without an outgoing channel or with nothing owed).
    pub(super) async fn latest_claim_reply(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Value, ModuleError> {
        if self.inner.opts.channel.is_none() {
            return Ok(Value::Null);
        }
        // Exactly what the Fulfill path signs: the claim for everything our log says we owe the peer.
        // Durable sums: the claim leaves the node and must not cover a fulfill a crash could undo.
        let owed = ModuleUnits::from_peer_ledger(
            ctx.main_log()?
                .durable_sums()
                .await
                .map_err(|e| ModuleError::Ledger(format!("main log: {e}")))?
                .outgoing_fulfilled,
        );
        match self.create_outgoing_claim(ctx, &owed).await? {
            Some(Claim::Json(claim)) => Ok(claim),
            Some(_) | None => Ok(Value::Null),
        }
    }
}
