//! The payee side of `eth-channel`: checking and crediting claims.
//!
//! A claim counts only if the contract's runtime code is this version's `PaymentChannel` (immutables masked),
//! its payer is the peer and its payee is us, it is open with more than `closeMarginSecs` left, the amount is
//! within the deposit, and the signature recovers to the payer ([`Inner::check_signature`],
//! [`Inner::check_on_chain`]). The best claim is kept in the max-value tracker [`INCOMING_CLAIM_KEY`] (an
//! [`IncomingRecord`]; value: the cumulative amount credited over all channels). Before refusing a transfer
//! over `maxUnsecured`, the payee asks the payer for its current claim ([`super::super::peer`]).
//!
//! Retired claims: the payer's last claims on a channel may never reach the payee (a lost Fulfill response, a
//! restart), and once the payer moves to a new channel the payee would close the old one with a lower claim
//! than the payer signed, losing the difference (`close()` refunds it to the payer). So the payer carries those
//! final claims on its new channel's claims. Each retired claim above what the payee holds on that channel is
//! checked like a current one (signature first, with no chain read and no lock). One refused by a check
//! credits nothing (a lasting refusal is remembered, so carrying it again costs no chain read); one that could
//! not be checked (the chain unreachable) fails the whole claim, which is sent or pulled again; one not above
//! what the payee holds costs nothing. An accepted one raises that channel's amount in the record (or adds a
//! channel it never had a claim on) and credits the difference once, under the settlement ID
//! `<channel>:<amount>:<new total>`. The base of a new channel is what the payee can prove (its credited total
//! after the retired claims): the payer's stated `base` is compared and a difference logged, never credited.
//!
//! Crediting never closes a channel ([`super::close`] does): the context may be staged (an engine commits the
//! tracker writes with the credit after the module returns, or never if the request is dropped). It notes each
//! amount it accepts on a channel, under the close lock, and wakes the background check.

use num_bigint::BigUint;
use num_traits::Zero;
use tokio::sync::MutexGuard;
use tracing::{debug, info, warn};

use super::super::key::{eip191_hash, recover_address};
use super::super::types::Address;
use super::contract::{claim_digest, read_channel, v1_claim_digest, ChannelVersion};
use super::wire::{IncomingRecord, RetiredChannel, SignedClaim, WireClaim};
use super::{
    EthChannelModule, Inner, INCOMING_CLAIM_KEY, MAX_DEAD_CHANNELS_REMEMBERED,
    MAX_REFUSED_CLAIMS_REMEMBERED, MAX_RETIRED_CLAIMS,
};
use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::MaxValue;
use crate::sync::lock;

/// The payee's record as one incoming claim changes it, and what the change credits.
struct Tally {
    /// The best claim's amount on the payer's current channel (0 when unknown).
    current_amount: BigUint,
    /// Its signature, as stored.
    current_signature: Option<String>,
    /// What the retired channels carry.
    base: BigUint,
    /// The retired channels.
    retired: Vec<RetiredChannel>,
    /// Everything credited, the gains of this claim included so far.
    value: BigUint,
    /// Channels whose amount this claim raised, with the new amount (noted as uncommitted once recorded).
    raised: Vec<(Address, BigUint)>,
    /// What the retired claims added.
    retired_gain: BigUint,
    /// Whether the retired channels changed (the background check then closes them soon).
    retired_changed: bool,
}

/// What the claims an incoming claim carries are checked against.
struct Checking<'a> {
    chain_id: u64,
    peer: Address,
    /// The record as stored before this claim.
    held: &'a IncomingRecord,
}

impl Inner {
    /// Notes a channel whose claims can never count again (closed, or within the margin of its expiry).
    fn remember_dead(&self, channel: Address) {
        let mut dead = lock(&self.dead_channels);
        if dead.len() >= MAX_DEAD_CHANNELS_REMEMBERED {
            dead.clear();
        }
        dead.insert(channel);
    }

    fn is_dead(&self, channel: &Address) -> bool {
        lock(&self.dead_channels).contains(channel)
    }

    /// Notes a retired claim refused for a lasting reason, so carrying it again costs no chain read.
    fn remember_refused(&self, claim: &SignedClaim) {
        let mut refused = lock(&self.refused_claims);
        if refused.len() >= MAX_REFUSED_CLAIMS_REMEMBERED {
            refused.clear();
        }
        refused.insert((claim.channel, claim.amount.clone()));
    }

    fn was_refused(&self, claim: &SignedClaim) -> bool {
        lock(&self.refused_claims).contains(&(claim.channel, claim.amount.clone()))
    }

    /// Refuses (as a ledger error, so the claim is sent or pulled again later) while a transaction of our
    /// wallet is pending: it may be a close of a channel that the chain still shows open. A close of ours still
    /// pending (its follow timed out, or an earlier process sent it, e.g. at disconnect) is invisible to the
    /// checks, which read the latest block: so whenever a channel is read for a credit, this ran first, under
    /// the close lock (no close of ours starts after it, and one mined in between is seen closed by the read).
    async fn ensure_nothing_pending(&self) -> Result<(), ModuleError> {
        let rpc = self.wallet.rpc();
        let address = self.wallet.address();
        let pending = rpc.transaction_count(&address, "pending").await?;
        let latest = rpc.transaction_count(&address, "latest").await?;
        if pending > latest {
            return Err(ModuleError::Ledger(format!(
                "{} transaction(s) of ours are pending (perhaps a close): retry the claim later",
                pending - latest
            )));
        }
        Ok(())
    }

    /// The claim is signed by the channel's payer (`peer`) for this chain (`chain_id`). No chain read.
    fn check_signature(
        &self,
        chain_id: u64,
        peer: &Address,
        claim: &SignedClaim,
    ) -> Result<(), ModuleError> {
        let digest = claim_digest(chain_id, &claim.channel, &claim.amount)?;
        let signer = recover_address(&eip191_hash(&digest), &claim.signature)?;
        if signer == *peer {
            return Ok(());
        }
        // Refused either way; the reason tells an operator whether the peer needs to upgrade.
        let v1_digest = v1_claim_digest(&claim.channel, &claim.amount)?;
        if recover_address(&eip191_hash(&v1_digest), &claim.signature).ok() == Some(*peer) {
            return Err(ModuleError::NotAccepted(
                "claim is signed without the chain ID (the peer runs an earlier release of eth-channel)"
                    .to_owned(),
            ));
        }
        Err(ModuleError::NotAccepted(
            "claim is not signed by the channel's payer for this chain".to_owned(),
        ))
    }

    /// Checks a (signed) claim on chain the way every claim is checked: the contract is our `PaymentChannel`,
    /// from the peer to us, open with more than `closeMarginSecs` left, the amount within the deposit.
    /// `NotAccepted` for a claim that fails; `Ledger` when the chain could not be read.
    async fn check_on_chain(&self, peer: &Address, claim: &SignedClaim) -> Result<(), ModuleError> {
        let state = read_channel(&self.wallet, &claim.channel)
            .await?
            .ok_or_else(|| ModuleError::NotAccepted(format!("no channel at {}", claim.channel)))?;
        if state.version != ChannelVersion::Current {
            self.remember_dead(claim.channel);
            return Err(ModuleError::NotAccepted(format!(
                "channel {} runs the earlier PaymentChannel, whose claims do not commit to the chain: it takes \
                 no claims",
                claim.channel
            )));
        }
        if state.payer != *peer || state.payee != self.wallet.address() {
            return Err(ModuleError::NotAccepted(
                "channel is not from the peer to us".to_owned(),
            ));
        }
        if state.closed {
            self.remember_dead(claim.channel);
            return Err(ModuleError::NotAccepted("channel is closed".to_owned()));
        }
        let now = self.chain_now().await?;
        if now.saturating_add(self.settings.margin_secs) > state.expires_at {
            self.remember_dead(claim.channel);
            return Err(ModuleError::NotAccepted(
                "channel expires too soon to accept claims".to_owned(),
            ));
        }
        if claim.amount > state.balance {
            return Err(ModuleError::NotAccepted(format!(
                "claim {} exceeds the deposit {}",
                claim.amount, state.balance
            )));
        }
        Ok(())
    }

    /// Takes the close lock (once per claim) and, right after it, refuses while a transaction of ours is
    /// pending ([`Inner::ensure_nothing_pending`]).
    async fn lock_closes<'a>(
        &'a self,
        closing: &mut Option<MutexGuard<'a, ()>>,
    ) -> Result<(), ModuleError> {
        if closing.is_none() {
            *closing = Some(self.close_lock.lock().await);
            self.ensure_nothing_pending().await?;
        }
        Ok(())
    }

    /// Credits an incoming claim (see the module docs). The tracker [`INCOMING_CLAIM_KEY`] holds `value` =
    /// everything credited, and in its data the current channel's best claim, `base` (what the retired
    /// channels carry: `value = base + amount`) and each retired channel's best claim with the cumulative total
    /// through it. Never closes a channel itself: it notes each accepted amount as uncommitted (so no close
    /// goes below it meanwhile) and wakes the background check.
    pub(super) async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: &Claim,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let wire = WireClaim::parse(claim)?;
        let claim = &wire.current;
        let chain_id = self.wallet.chain_id().await?;
        let peer = self.peer.get(ctx, chain_id).await?;
        let crediting = self.credit_lock.lock().await;
        let tracker = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?;
        let best = tracker.get_max().await?;
        let held = IncomingRecord::read(&best.data);
        let mut tally = Tally {
            current_amount: held.amount.clone().unwrap_or_default(),
            current_signature: held.signature.clone(),
            base: held.base.clone().unwrap_or_default(),
            retired: held.retired.clone(),
            value: best.value.clone(),
            raised: Vec::new(),
            retired_gain: BigUint::zero(),
            retired_changed: false,
        };
        let same_channel = held.channel == Some(claim.channel);
        let current_is_new = !(same_channel && claim.amount <= tally.current_amount);
        // Held from the first chain check of a claim that raises a channel until that amount is noted as
        // uncommitted: a close is either seen by the check or sees the note.
        let mut closing = None;
        if current_is_new {
            if held.retired_position(&claim.channel).is_some() {
                return Err(ModuleError::NotAccepted(format!(
                    "channel {} is retired",
                    claim.channel
                )));
            }
            self.check_signature(chain_id, &peer, claim)?;
            self.lock_closes(&mut closing).await?;
            self.check_on_chain(&peer, claim).await?;
        }
        let checking = Checking {
            chain_id,
            peer,
            held: &held,
        };
        self.credit_retired(&checking, &wire, &mut tally, &mut closing)
            .await?;
        if !current_is_new && tally.retired_gain.is_zero() {
            return Ok(None);
        }
        let moved = current_is_new && !same_channel;
        if moved {
            if let (Some(old), Some(signature)) = (held.channel, tally.current_signature.clone()) {
                tally.retired.push(RetiredChannel {
                    channel: Some(old),
                    amount: Some(tally.current_amount.clone()),
                    signature: Some(signature),
                    cumulative: Some(tally.value.clone()),
                });
                tally.retired_changed = true;
            }
            tally.base = tally.value.clone();
        }
        if current_is_new {
            tally.current_amount = claim.amount.clone();
            tally.current_signature = Some(claim.signature_hex());
            tally.raised.push((claim.channel, claim.amount.clone()));
        }
        let cumulative = &tally.base + &tally.current_amount;
        if let Some(stated) = wire.base.as_ref().filter(|stated| **stated != tally.base) {
            // We credit only what we can close: the payer's figure is not ours to trust. Said loudly once per
            // new channel or raise, not on every claim after it.
            if moved || !tally.retired_gain.is_zero() {
                warn!(%stated, proven = %tally.base, channel = %claim.channel,
                    "the payer's base differs from what its retired claims prove");
            } else {
                debug!(%stated, proven = %tally.base, channel = %claim.channel, "payer's base differs");
            }
        }
        if cumulative < best.value {
            return Err(ModuleError::Ledger(
                "incoming claim record is inconsistent (value above base + amount)".into(),
            ));
        }
        let increase = &cumulative - &best.value;
        // The chain reads took a while: the peer's identity may have been taken over meanwhile (an operator
        // assignment, a configured hold by another account). Re-check it right before recording the credit.
        let again = self.peer.get(ctx, chain_id).await?;
        if again != peer {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's address changed from {peer} to {again} while its claim was checked"
            )));
        }
        let record = IncomingRecord {
            // A new claim is on our current channel or moves us to its own; an old one is on the current one.
            channel: Some(claim.channel),
            amount: Some(tally.current_amount.clone()),
            base: Some(tally.base.clone()),
            retired: tally.retired,
            signature: tally.current_signature,
        };
        let previous = tracker
            .set_if_max(MaxValue {
                value: cumulative.clone(),
                data: record.to_json(),
            })
            .await?;
        if previous.value != best.value {
            return Err(ModuleError::Ledger(
                "incoming claim changed concurrently".into(),
            ));
        }
        for (channel, amount) in &tally.raised {
            self.note_uncommitted(*channel, amount);
        }
        drop(closing);
        drop(crediting);
        let retired_gain = tally.retired_gain;
        info!(channel = %claim.channel, amount = %claim.amount, %increase, %retired_gain, "incoming claim accepted");
        if tally.retired_changed {
            // The payer moved on (or raised a retired channel): the background check closes those channels
            // now, not at expiry, with what the tracker holds once this claim is committed.
            self.close_wakeup.notify_one();
        }
        if increase.is_zero() {
            return Ok(None);
        }
        let settlement_id = if retired_gain.is_zero() {
            format!("{}:{}", claim.channel, claim.amount)
        } else {
            // A raise of a retired channel may come with a claim already credited: the new total keeps it unique.
            format!("{}:{}:{}", claim.channel, claim.amount, cumulative)
        };
        Ok(Some(IncomingCredit {
            amount: ModuleUnits(increase),
            settlement_id,
        }))
    }

    /// Credits the claims on channels the payer retired that `wire` carries (what the payer signed there may
    /// never have reached us): each one above what we hold on its channel, signed by the peer and passing the
    /// chain checks raises that channel in `tally` by its gain. A check that could not run fails the claim.
    async fn credit_retired<'a>(
        &'a self,
        checking: &Checking<'_>,
        wire: &WireClaim,
        tally: &mut Tally,
        closing: &mut Option<MutexGuard<'a, ()>>,
    ) -> Result<(), ModuleError> {
        let Checking {
            chain_id,
            peer,
            held,
        } = checking;
        if wire.retired.len() > MAX_RETIRED_CLAIMS {
            warn!(
                count = wire.retired.len(),
                max = MAX_RETIRED_CLAIMS,
                "claim carries too many retired claims; checking the first ones only"
            );
        }
        for old in wire.retired.iter().take(MAX_RETIRED_CLAIMS) {
            if old.channel == wire.current.channel {
                warn!(channel = %old.channel, "retired claim on the claim's own channel ignored");
                continue;
            }
            let on_current = held.channel == Some(old.channel);
            let position = retired_position(tally, &old.channel);
            // What we hold on that channel: nothing if it is new to us. A record we cannot read is never
            // taken for nothing (that would credit the channel twice): its claims are skipped.
            let holding = if on_current {
                // As raised by an earlier entry of this claim, if one was.
                held.amount.as_ref().map(|_| tally.current_amount.clone())
            } else {
                match position {
                    Some(i) => tally.retired[i].amount.clone(),
                    None => Some(BigUint::zero()),
                }
            };
            let Some(holding) = holding else {
                warn!(channel = %old.channel, "our record of this channel is unreadable; retired claim skipped");
                continue;
            };
            if old.amount <= holding || self.is_dead(&old.channel) || self.was_refused(old) {
                continue;
            }
            // A forged entry costs neither a chain read nor a wait for the close lock.
            if let Err(err) = self.check_signature(*chain_id, peer, old) {
                warn!(channel = %old.channel, amount = %old.amount, %err, "retired claim refused");
                continue;
            }
            self.lock_closes(closing).await?;
            match self.check_on_chain(peer, old).await {
                Ok(()) => {}
                Err(err @ (ModuleError::NotAccepted(_) | ModuleError::InvalidFields(_))) => {
                    warn!(channel = %old.channel, amount = %old.amount, %err, "retired claim refused");
                    self.remember_refused(old);
                    continue;
                }
                // Not a verdict on the claim (the chain could not be read): retry all of it later rather than
                // move on without it. Crediting is idempotent, so the retry credits it once.
                Err(err) => return Err(err),
            }
            let gain = &old.amount - &holding;
            tally.raise(old, position, on_current, &gain);
            info!(channel = %old.channel, amount = %old.amount, %gain, "retired channel claim accepted");
        }
        Ok(())
    }
}

/// Where `channel` is among the retired channels of `tally`.
fn retired_position(tally: &Tally, channel: &Address) -> Option<usize> {
    tally
        .retired
        .iter()
        .position(|entry| entry.channel == Some(*channel))
}

impl Tally {
    /// Raises `old`'s channel by `gain`: the current channel's amount when `on_current`, else the retired
    /// channel at `position` (and the totals through it and every channel retired after it), or a new retired
    /// channel.
    fn raise(
        &mut self,
        old: &SignedClaim,
        position: Option<usize>,
        on_current: bool,
        gain: &BigUint,
    ) {
        let signature = old.signature_hex();
        if on_current {
            self.current_amount = old.amount.clone();
            self.current_signature = Some(signature);
        } else {
            self.base += gain;
            self.retired_changed = true;
            match position {
                Some(i) => {
                    self.retired[i].amount = Some(old.amount.clone());
                    self.retired[i].signature = Some(signature);
                    for later in self.retired.iter_mut().skip(i) {
                        later.cumulative =
                            Some(later.cumulative.clone().unwrap_or_default() + gain);
                    }
                }
                None => self.retired.push(RetiredChannel {
                    channel: Some(old.channel),
                    amount: Some(old.amount.clone()),
                    signature: Some(signature),
                    cumulative: Some(&self.value + gain),
                }),
            }
        }
        self.value += gain;
        self.retired_gain += gain;
        self.raised.push((old.channel, old.amount.clone()));
    }
}

impl EthChannelModule {
    /// `Some((incoming fulfilled + prepared, best claim + maxUnsecured))` when the first exceeds the second.
    pub(super) async fn unsecured_excess(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<(BigUint, BigUint)>, ModuleError> {
        let prepared =
            ModuleUnits::from_peer_ledger(ctx.main_log()?.sums().incoming_fulfilled_and_prepared).0;
        let secured = ctx
            .max_value_tracker(INCOMING_CLAIM_KEY)?
            .get_max()
            .await?
            .value
            + &self.inner.common.max_unsecured;
        Ok((prepared > secured).then_some((prepared, secured)))
    }

    /// Whether the payer owes us for fulfilled transfers beyond the best claim, so that asking it for its latest
    /// claim ([`super::RPC_LATEST_CLAIM`]) can raise what is secured.
    pub(super) async fn claim_can_help(&self, ctx: &ChannelContext) -> Result<bool, ModuleError> {
        let fulfilled = ModuleUnits::from_peer_ledger(ctx.main_log()?.sums().incoming_fulfilled).0;
        let best = ctx
            .max_value_tracker(INCOMING_CLAIM_KEY)?
            .get_max()
            .await?
            .value;
        Ok(fulfilled > best)
    }
}
