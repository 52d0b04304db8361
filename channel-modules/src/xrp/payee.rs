//! The payee side of `xrp-paychan`: it learns the peer's channel at `connect` (option `peerChannel`, or the
//! RPC [`RPC_CHANNEL_ID`] to the peer), reads the channel's facts from rippled (`ledger_entry`), and checks each
//! claim (right channel, destination is us, signature by the channel's key, not above the deposit, channel not
//! expired) before keeping it in [`MVT_INCOMING_CLAIM`] and crediting the increase.
//!
//! The channel is held node-wide as identity `xrp:<channel id>` ([`super::channel_identity`]) only once a claim
//! signed by the channel's key has verified, and re-checked before every credit: a peer merely *naming*
//! someone else's channel cannot lock the rightful account out, since it cannot sign for that channel. Claims
//! *can* be replayed (a redeemed claim is public), so a second account presenting verified claims on a channel
//! another account holds makes the identity *contested* and both are refused until the operator configures
//! `peerChannel` on the rightful one. A configured `peerChannel` is trusted, held at `connect`, and takes the
//! identity over from accounts that only learned it. Prepares that would leave more than `maxUnsecured` drops
//! not covered by the best claim are refused, after asking the payer for its latest claim
//! ([`super::RPC_LATEST_CLAIM`]) when fulfilled transfers are not covered yet.

use num_bigint::BigUint;
use num_traits::ToPrimitive;
use serde_json::{json, Value};

use super::crypto::{ChannelId, PublicKey};
use super::rpc::ChannelFacts;
use super::wire::{claim_json, same_channel_as_before, IncomingClaim};
use super::{
    channel_identity, invalid, Cached, Inner, XrpPaychan, CHANNEL_FACTS_MAX_AGE,
    MVT_INCOMING_CLAIM, RPC_CHANNEL_ID, RPC_LATEST_CLAIM,
};
use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::identity::IdentityOrigin;
use crate::module::ChannelModule;
use crate::store::{MaxValue, TransferRecord};
use crate::sync::lock;

impl Inner {
    /// Learns the peer's channel ID (option, else RPC). `Ok(None)` if the peer has none (yet).
    pub(super) async fn learn_peer_channel(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ChannelId>, ModuleError> {
        if let Some(id) = lock(&self.state).peer_channel {
            return Ok(Some(id));
        }
        let id = match self.opts.peer_channel {
            Some(id) => Some(id),
            None => match ctx.rpc(RPC_CHANNEL_ID, json!([])).await {
                Ok(Value::String(s)) => Some(
                    s.parse::<ChannelId>()
                        .map_err(|e| invalid(format!("peer's {RPC_CHANNEL_ID} reply: {e}")))?,
                ),
                Ok(Value::Null) => None,
                Ok(other) => {
                    return Err(invalid(format!(
                        "peer's {RPC_CHANNEL_ID} reply is not a channel id: {other}"
                    )))
                }
                Err(err) => {
                    tracing::warn!(account = ctx.account_id(), %err, "could not learn the peer's xrp channel");
                    None
                }
            },
        };
        if let Some(id) = id {
            if self.opts.peer_channel.is_some() {
                // Configured: trusted (the operator said so), held now. A learned channel is only a name the
                // peer gave; it is held once a claim signed by its key verifies (`hold_peer_identity`).
                self.hold_peer_identity(ctx, &id).await?;
            }
            lock(&self.state).peer_channel = Some(id);
        }
        Ok(id)
    }

    /// Makes this account hold the node-wide identity of the peer's channel `id`, or re-checks that it still
    /// holds it (one registry read): called right before every credit, so an account whose channel identity
    /// became contested (another account of this node proved the same channel with a verified claim) or was
    /// taken over by an account with `peerChannel` configured is refused from then on. A configured
    /// `peerChannel` is held as [`IdentityOrigin::Configured`], a learned channel as [`IdentityOrigin::Proven`]
    /// (and only after a claim signed by its key verified).
    async fn hold_peer_identity(
        &self,
        ctx: &ChannelContext,
        id: &ChannelId,
    ) -> Result<(), ModuleError> {
        let origin = if self.opts.peer_channel == Some(*id) {
            IdentityOrigin::Configured
        } else {
            IdentityOrigin::Proven
        };
        ctx.hold_identity(&channel_identity(id), origin).await
    }

    /// The peer's channel facts, read again when older than [`CHANNEL_FACTS_MAX_AGE`] or when `needed_drops`
    /// exceeds the cached deposit; checks that the channel pays us and can be relied upon.
    pub(super) async fn peer_channel_facts(
        &self,
        ctx: &ChannelContext,
        needed_drops: u64,
    ) -> Result<ChannelFacts, ModuleError> {
        let id = self.learn_peer_channel(ctx).await?.ok_or_else(|| {
            ModuleError::NotAccepted("the peer has no payment channel to us".to_owned())
        })?;
        let now = ctx.now();
        let cached = lock(&self.state).peer.clone();
        if let Some(c) = cached {
            let fresh = now
                .duration_since(c.read_at)
                .map(|age| age < CHANNEL_FACTS_MAX_AGE)
                .unwrap_or(true);
            if fresh && needed_drops <= c.facts.amount {
                return Ok(c.facts);
            }
        }
        let facts = self.fetch_channel(&id).await?.ok_or_else(|| {
            ModuleError::NotAccepted(format!(
                "the peer's channel {id} does not exist on the ledger"
            ))
        })?;
        if facts.destination != self.opts.address {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's channel {id} pays {}, not us ({})",
                facts.destination, self.opts.address
            )));
        }
        if facts.settle_delay < self.opts.min_settle_delay_secs {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's channel {id} has settle delay {} s, below the minimum {} s",
                facts.settle_delay, self.opts.min_settle_delay_secs
            )));
        }
        lock(&self.state).peer = Some(Cached {
            facts: facts.clone(),
            read_at: now,
        });
        Ok(facts)
    }
}

impl XrpPaychan {
    /// Refuses a prepare that leaves more than `maxUnsecured` drops not covered by the best claim, after
    /// asking the payer for its latest claim when fulfilled transfers are not covered yet.
    pub(super) async fn check_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        let sums = ctx.main_log()?.sums();
        // Peer mode: the trustline's ledger counts drops, one ledger unit for one drop (as
        // `ModuleUnits::from_peer_ledger` says), compared here as plain integers.
        let (prepared, fulfilled) = (
            sums.incoming_fulfilled_and_prepared.0,
            sums.incoming_fulfilled.0,
        );
        let mut secured = self.secured_drops(ctx).await?;
        if prepared.saturating_sub(secured) > self.inner.opts.max_unsecured
            && fulfilled > secured
            && self.fetch_latest_claim(ctx).await
        {
            secured = self.secured_drops(ctx).await?;
        }
        let unsecured = prepared.saturating_sub(secured);
        if unsecured > self.inner.opts.max_unsecured {
            tracing::warn!(
                account = ctx.account_id(),
                unsecured_drops = unsecured,
                max_unsecured_drops = self.inner.opts.max_unsecured,
                "incoming transfer refused: not secured by a claim"
            );
            return Err(ModuleError::NotAccepted(format!(
                "unsecured balance {unsecured} drops would exceed maxUnsecured {} drops",
                self.inner.opts.max_unsecured
            )));
        }
        Ok(())
    }

    /// Checks a claim from the peer, keeps it if it is the best, and credits the increase.
    pub(super) async fn accept_claim(
        &self,
        ctx: &ChannelContext,
        claim: &Claim,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let inner = &self.inner;
        let expected = inner.learn_peer_channel(ctx).await?.ok_or_else(|| {
            ModuleError::NotAccepted("the peer has no payment channel to us".to_owned())
        })?;
        // A 2017 plugin's claim names no channel: it is on the channel the peer named.
        let claim = IncomingClaim::from_claim(claim, Some(expected))?;
        if claim.channel != expected {
            tracing::warn!(account = ctx.account_id(), claimed = %claim.channel, %expected, "claim on a foreign channel");
            return Err(ModuleError::NotAccepted(format!(
                "claim is for channel {}, not the peer's channel {expected}",
                claim.channel
            )));
        }
        let tracker = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?;
        let best = tracker.get_max().await?;
        // The best claim's amount is cumulative on its channel; a claim on another channel cannot be compared
        // with it (crediting the difference while redeeming the whole claim would be wrong both ways).
        same_channel_as_before(&best, &claim.channel)
            .map_err(|e| ModuleError::NotAccepted(e.to_string()))?;
        let value = BigUint::from(claim.drops);
        if value <= best.value {
            tracing::debug!(
                account = ctx.account_id(),
                drops = claim.drops,
                "claim not above the best; nothing new"
            );
            return Ok(None);
        }
        let facts = inner.peer_channel_facts(ctx, claim.drops).await?;
        if let Some(key) = &claim.public_key {
            if PublicKey::parse(key).ok().as_ref() != Some(&facts.public_key) {
                return Err(ModuleError::NotAccepted(
                    "claim public key is not the channel's key".to_owned(),
                ));
            }
        }
        if !facts
            .public_key
            .verify_claim(&claim.channel, claim.drops, &claim.signature)
        {
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                "claim with an invalid signature"
            );
            return Err(ModuleError::NotAccepted(
                "claim signature is invalid".to_owned(),
            ));
        }
        if facts.is_expired_at(ctx.now()) {
            return Err(ModuleError::NotAccepted(format!(
                "channel {} has expired",
                claim.channel
            )));
        }
        if claim.drops > facts.amount {
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                deposit_drops = facts.amount,
                "claim above the channel deposit"
            );
            return Err(ModuleError::NotAccepted(format!(
                "claim of {} drops exceeds the channel deposit of {} drops",
                claim.drops, facts.amount
            )));
        }
        if claim.drops <= facts.balance {
            // Already paid out on the ledger, by us, with a claim at least this high (the holder's best is never
            // below it): it can credit nothing, and since redeemed claims are public it proves nothing about who
            // controls the channel either, so it must not contest the channel's identity.
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                paid_out_drops = facts.balance,
                "claim already paid out on the ledger"
            );
            return Err(ModuleError::NotAccepted(format!(
                "claim of {} drops is not above the {} drops the channel already paid out",
                claim.drops, facts.balance
            )));
        }
        // The claim is signed by the channel's key: only now may this account take the channel's identity, and
        // it re-checks it before every credit (refused if another account of the node holds it, or if it is
        // contested), before anything is kept or credited.
        if let Err(err) = inner.hold_peer_identity(ctx, &claim.channel).await {
            tracing::warn!(account = ctx.account_id(), channel = %claim.channel, %err, "claim on a channel another account holds");
            return Err(err);
        }
        let data = claim_json(
            &claim.channel,
            claim.drops,
            &claim.signature,
            &facts.public_key.to_hex(),
        );
        let previous = tracker
            .set_if_max(MaxValue {
                value: value.clone(),
                data,
            })
            .await?;
        // Stored only if strictly larger, in which case `previous` is the old best; otherwise it is our entry.
        if previous.value >= value {
            return Ok(None);
        }
        let increase = &value - &previous.value;
        tracing::debug!(account = ctx.account_id(), drops = claim.drops, increase = %increase, "claim accepted");
        inner.submit_if_expiring(ctx, &facts).await;
        Ok(Some(IncomingCredit {
            amount: ModuleUnits(increase),
            settlement_id: format!("{}:{}", claim.channel, claim.drops),
        }))
    }

    /// Drops covered by the best incoming claim.
    async fn secured_drops(&self, ctx: &ChannelContext) -> Result<u128, ModuleError> {
        let best = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?.get_max().await?;
        Ok(best.value.to_u128().unwrap_or(u128::MAX))
    }

    /// Asks the payer for its latest claim ([`RPC_LATEST_CLAIM`]) and takes it like any incoming claim. True if
    /// it raised the best claim.
    async fn fetch_latest_claim(&self, ctx: &ChannelContext) -> bool {
        let claim = match ctx.rpc(RPC_LATEST_CLAIM, json!([])).await {
            Ok(Value::Null) => return false,
            Ok(claim) => claim,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "could not get the peer's latest claim");
                return false;
            }
        };
        match self
            .handle_incoming_claim(ctx, Some(&Claim::Json(claim)))
            .await
        {
            Ok(credit) => credit.is_some(),
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "the peer's latest claim was refused");
                false
            }
        }
    }
}
