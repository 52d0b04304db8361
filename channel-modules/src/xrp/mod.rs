//! `xrp-paychan`: the claim-based XRP Ledger payment-channel module. Its flow follows the legacy
//! `ilp-plugin-xrp-paychan` as described; it is tested between ilp-bridge nodes only, never against that plugin.
//!
//! Each side may pay through its own outgoing channel. Money moves off-ledger as **claims**: signatures over
//! "`CLM\0` ‖ channel ‖ cumulative drops" ([`crypto`]). The payer signs (`payer`); the payee checks and keeps
//! the best claim (`payee`) and redeems it on the ledger with a `PaymentChannelClaim` transaction, at the
//! latest when it disconnects or shortly before the channel expires (`watcher`). `options` reads the
//! options, `wire` the claim's JSON; [`rpc`] speaks to rippled.
//!
//! Amounts are drops (asset scale 6). The module holds no durable state in memory: the three trackers are the
//! truth, the channel facts are a cache refreshed from rippled.

pub mod crypto;
#[cfg(feature = "testing")]
pub mod fake_rippled;
pub mod legacy;
mod options;
mod payee;
mod payer;
pub mod rpc;
mod watcher;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::TransferRecord;
use crate::sync::lock;

use self::crypto::{ChannelId, PublicKey};
use self::options::Options;
use self::rpc::{ChannelFacts, RippledClient, RippledError};
use self::watcher::Redemption;
use self::wire::same_channel_as_before;

/// Configuration name of this module.
pub const XRP_PAYCHAN_MODULE_NAME: &str = "xrp-paychan";
/// Drops have 6 decimal places relative to XRP.
pub const XRP_ASSET_SCALE: u8 = 6;
/// RPC by which a payee asks the payer for its outgoing channel ID.
pub const RPC_CHANNEL_ID: &str = "ripple_channel_id";
/// RPC by which a payee asks the payer for the claim covering everything the payer's main log says it owes
/// (reply: the claim JSON, or `null`). Used before refusing a transfer over `maxUnsecured`, so a claim missing
/// from a Fulfill response (lost, or not signable at the time) cannot stall a trustline.
pub const RPC_LATEST_CLAIM: &str = "ripple_latest_claim";
/// Tracker holding the best claim we signed (value: drops, data: the claim JSON).
pub const MVT_OUTGOING_CLAIM: &str = "outgoing_claim";
/// Tracker holding the best claim received (value: drops, data: the claim JSON).
pub const MVT_INCOMING_CLAIM: &str = "incoming_claim";
/// Tracker holding the best claim submitted to the ledger (value: drops, data: submit outcome).
pub const MVT_INCOMING_CLAIM_SUBMITTED: &str = "incoming_claim_submitted";
/// Default minimum settle delay accepted on the peer's channel: the payer can close after this many seconds,
/// so the payee needs at least this long to redeem its best claim.
pub const DEFAULT_MIN_SETTLE_DELAY_SECS: u32 = 3600;
/// Default margin before the peer's channel expires at which the payee redeems its best claim.
pub const DEFAULT_EXPIRY_MARGIN_SECS: u64 = 1800;
/// Default interval of the payee's channel watcher (option `expiryCheckInterval`, ms): how often the peer's
/// channel is read again from rippled to catch a payer that started closing it and stopped sending claims.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest watcher interval the clamping in [`XrpPaychan::expiry_check_interval`] goes down to.
pub const MIN_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long cached channel facts are trusted before they are read again from rippled.
pub const CHANNEL_FACTS_MAX_AGE: Duration = Duration::from_secs(60);

/// Channel facts with the time they were read.
#[derive(Clone)]
struct Cached {
    facts: ChannelFacts,
    read_at: SystemTime,
}

#[derive(Default)]
struct State {
    /// Our outgoing channel, checked at connect.
    own: Option<Cached>,
    /// The peer's channel ID, once known.
    peer_channel: Option<ChannelId>,
    /// The peer's channel facts, once read and accepted.
    peer: Option<Cached>,
}

struct Inner {
    opts: Options,
    client: RippledClient,
    state: Mutex<State>,
    /// Serialises submissions so two triggers never race on the same claim.
    submit_lock: tokio::sync::Mutex<()>,
    /// The periodic claim-submission task (option `claimInterval`).
    claim_task: Mutex<Option<JoinHandle<()>>>,
    /// The channel watcher (always running while connected; option `expiryCheckInterval`).
    watch_task: Mutex<Option<JoinHandle<()>>>,
}

/// The `xrp-paychan` module; see the module docs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct XrpPaychan {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XrpPaychan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XrpPaychan")
            .field("address", &self.inner.opts.address)
            .field("channel", &self.inner.opts.channel)
            .field("rippled", &self.inner.client.url())
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> ModuleError {
    ModuleError::InvalidFields(message.into())
}

fn ledger_error(err: RippledError) -> ModuleError {
    match err {
        // Configuration, not the ledger: retrying cannot help.
        RippledError::SeedInClearText(_) | RippledError::InvalidUrl(_) => {
            ModuleError::InvalidFields(err.to_string())
        }
        other => ModuleError::Ledger(other.to_string()),
    }
}

/// The node-wide identity of the peer's channel `id` ([`ChannelContext::hold_identity`]): `xrp:<channel id>`.
pub fn channel_identity(id: &ChannelId) -> String {
    format!("xrp:{id}")
}

impl XrpPaychan {
    /// The public key our outgoing channel must name: `channelSecret`'s, else the account's.
    pub fn public_key(&self) -> PublicKey {
        self.inner.opts.claim_keys().public_key()
    }

    /// How often the payee's watcher re-reads the peer's channel (see `expiryCheckInterval`).
    pub fn expiry_check_interval(&self) -> Duration {
        self.inner.opts.expiry_check_interval
    }

    /// The peer's channel ID, once known.
    pub fn peer_channel(&self) -> Option<ChannelId> {
        lock(&self.inner.state).peer_channel
    }

    /// Submits the best incoming claim to the ledger if it beats what was already redeemed. Returns the
    /// cumulative drops now redeemed (or `None` if there was nothing to submit).
    pub async fn submit_best_claim(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<u64>, ModuleError> {
        self.inner.submit_best_claim(ctx).await
    }
}

impl Inner {
    async fn fetch_channel(&self, id: &ChannelId) -> Result<Option<ChannelFacts>, ModuleError> {
        self.client.payment_channel(id).await.map_err(ledger_error)
    }
}

#[async_trait]
impl ChannelModule for XrpPaychan {
    fn name(&self) -> &str {
        XRP_PAYCHAN_MODULE_NAME
    }

    /// The value of the best incoming claim kept.
    async fn incoming_total(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ModuleUnits>, ModuleError> {
        Ok(Some(ModuleUnits(
            ctx.max_value_tracker(MVT_INCOMING_CLAIM)?
                .get_max()
                .await?
                .value,
        )))
    }

    fn asset_scale(&self) -> u8 {
        XRP_ASSET_SCALE
    }

    /// Claims are cumulative `u64` drops: an account can never settle more than `u64::MAX` drops in all.
    fn max_cumulative_settlement(&self) -> Option<ModuleUnits> {
        Some(ModuleUnits::from(u64::MAX))
    }

    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let inner = &self.inner;
        if let Some(id) = inner.opts.channel {
            let best = ctx.max_value_tracker(MVT_OUTGOING_CLAIM)?.get_max().await?;
            same_channel_as_before(&best, &id).map_err(|e| invalid(e.to_string()))?;
            let own = inner.load_own_channel(ctx, &id).await?;
            tracing::info!(
                account = ctx.account_id(),
                channel = %id,
                deposit_drops = own.facts.amount,
                "xrp outgoing channel ready"
            );
        }
        match inner.learn_peer_channel(ctx).await {
            Ok(Some(id)) => match inner.peer_channel_facts(ctx, 0).await {
                Ok(facts) => tracing::info!(
                    account = ctx.account_id(),
                    channel = %id,
                    deposit_drops = facts.amount,
                    "xrp incoming channel ready"
                ),
                // A configured peer channel that is wrong is our misconfiguration; a learned one is the peer's.
                Err(err) if inner.opts.peer_channel.is_some() => return Err(err),
                Err(err) => {
                    tracing::warn!(account = ctx.account_id(), %err, "peer's xrp channel refused; claims will be refused")
                }
            },
            Ok(None) => tracing::info!(
                account = ctx.account_id(),
                "peer has no xrp channel to us yet"
            ),
            // A configured channel another account of this node holds (configured engine-wide): this account's
            // claims will be refused; the other account is unaffected.
            Err(err @ ModuleError::NotAccepted(_)) => {
                tracing::warn!(account = ctx.account_id(), %err, "peer's xrp channel refused; claims will be refused")
            }
            Err(err) => return Err(err),
        }
        inner.spawn_tasks(ctx);
        Ok(())
    }

    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        if let Some(task) = lock(&self.inner.claim_task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.inner.watch_task).take() {
            task.abort();
        }
        match self.inner.redeem_best_claim(ctx).await? {
            Redemption::Nothing | Redemption::Redeemed(_) => Ok(()),
            // Nothing is left to protect by failing (a host may keep the records only while disconnect fails).
            Redemption::ChannelClosed(message) => {
                tracing::error!(account = ctx.account_id(), %message, "best incoming claim lost");
                Ok(())
            }
        }
    }

    fn account(&self) -> Option<String> {
        Some(self.inner.opts.address.clone())
    }

    fn peer_account(&self) -> Option<String> {
        lock(&self.inner.state)
            .peer
            .as_ref()
            .map(|c| c.facts.account.clone())
    }

    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        self.check_incoming_prepare(ctx, record).await
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        self.sign_claim_for(ctx, total).await
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let Some(claim) = claim else {
            return Ok(None);
        };
        self.accept_claim(ctx, claim).await
    }

    async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        method: &str,
        _args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_CHANNEL_ID => Ok(self
                .inner
                .opts
                .channel
                .map(|c| Value::String(c.to_string()))
                .unwrap_or(Value::Null)),
            RPC_LATEST_CLAIM => self.latest_claim_reply(ctx).await,
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.claim_task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.watch_task).take() {
            task.abort();
        }
    }
}
