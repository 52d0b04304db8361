//! `eth-channel`: a claim-based module on one-way payment channel contracts (`PaymentChannel`, one contract per
//! channel). The payer deposits into a channel to the peer and hands it signed cumulative claims off-ledger; the
//! payee checks them and closes the channel with the best one.
//!
//! * [`contract`]: the contract: artifacts, code and version checks, the claim digest, reading a channel;
//! * `wire`: the claim on the wire and the records kept in the context's stores, typed;
//! * `payer`: funding channels and signing claims; `payee`: checking and crediting claims; `close`: closing
//!   channels with the best claims, at expiry, after the payer moved on, and on disconnect.
//!
//! The peer's address is configured or proven, and held in the node's identity registry
//! ([`super::peer::PeerAddress`]); a payee missing a claim pulls it
//! ([`super::latest_claim::pull_latest_claim`]).
//! Channels of the first contract version ([`contract::ChannelVersion::V1`]) take no claims: the payer opens a new
//! channel instead, the payee refuses claims on one, and what the records already hold on them is still closed
//! and reclaimed.

mod close;
pub mod contract;
mod payee;
mod payer;
pub(crate) mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use num_bigint::BigUint;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::latest_claim::{latest_claim_reply, pull_latest_claim, PullLimiter};
use super::options::{amount_option, u64_option, CommonOptions};
use super::peer::PeerAddress;
use super::types::{Address, TxHash};
use super::wallet::Wallet;
use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::{Limit, TransferLogError, TransferRecord};
use crate::sync::lock;

use self::wire::OutgoingChannelRecord;
pub use super::latest_claim::RPC_LATEST_CLAIM;
pub use super::peer::{PEER_ADDRESS_KEY, RPC_ETH_ADDRESS};

/// Stock name.
pub const ETH_CHANNEL_MODULE_NAME: &str = "eth-channel";
/// Transfer log of the payer's own channel transactions (deploys, top-ups), recorded before broadcast.
pub const CHANNEL_TXS_LOG_KEY: &str = "eth_channel_txs";
/// Payer: the current channel (value: its sequence number; data: address, base, retired channels).
pub const OUTGOING_CHANNEL_KEY: &str = "outgoing_channel";
/// Payer: the best claim signed (value: cumulative total over all channels).
pub const OUTGOING_CLAIM_KEY: &str = "outgoing_claim";
/// Payee: the best claim received (value: cumulative total credited over all channels).
pub const INCOMING_CLAIM_KEY: &str = "incoming_claim";
/// Payee: the last channel closed on chain (value: cumulative total through it).
pub const INCOMING_SUBMITTED_KEY: &str = "incoming_claim_submitted";
/// Option: wei deposited when opening a channel and the minimum top-up (payer; required to pay).
pub const OPT_CHANNEL_DEPOSIT: &str = "channelDeposit";
/// Option: channel lifetime, seconds (default [`DEFAULT_CHANNEL_TIMEOUT_SECS`]).
pub const OPT_CHANNEL_TIMEOUT_SECS: &str = "channelTimeoutSecs";
/// Option: safety margin before expiry, seconds (default [`DEFAULT_CLOSE_MARGIN_SECS`]).
pub const OPT_CLOSE_MARGIN_SECS: &str = "closeMarginSecs";
/// Option: interval of the payee's expiry check, milliseconds (default [`DEFAULT_EXPIRY_CHECK_INTERVAL_MS`]).
pub const OPT_EXPIRY_CHECK_INTERVAL_MS: &str = "expiryCheckIntervalMs";
/// Default channel lifetime: 7 days.
pub const DEFAULT_CHANNEL_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Default close margin: 1 hour.
pub const DEFAULT_CLOSE_MARGIN_SECS: u64 = 3600;
/// Smallest `closeMarginSecs` accepted, in seconds.
pub const MIN_CLOSE_MARGIN_SECS: u64 = 60;
/// Default payee expiry check interval: 1 minute.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL_MS: u64 = 60_000;
/// Most claims on retired channels one claim carries (the payer sends the most recent ones) and a payee checks
/// per claim (it ignores the rest).
pub const MAX_RETIRED_CLAIMS: usize = 4;
/// Most closed or expiring channels a payee remembers in order to skip their retired claims without chain
/// reads (the set is emptied when full).
pub const MAX_DEAD_CHANNELS_REMEMBERED: usize = 1024;
/// Most retired claims a payee remembers refusing for a lasting reason (no contract, not ours, not from the
/// peer to us, above the deposit), keyed by channel and amount, so a claim carrying them again costs no chain
/// read (the set is emptied when full).
pub const MAX_REFUSED_CLAIMS_REMEMBERED: usize = 1024;
/// Payee: how long a channel whose claim was raised by an accepted claim is not closed with a lower amount
/// while that raise is not yet in the `incoming_claim` tracker (an engine commits the tracker after the module
/// returns; a dropped request never commits it). At most half of `closeMarginSecs`. After it, the channel is
/// closed with the amount the tracker holds.
pub const UNCOMMITTED_RAISE_WINDOW_SECS: u64 = 60;
/// Payee: how soon the background check looks again at a close it put off for an uncommitted raise.
pub const UNCOMMITTED_RAISE_RECHECK_MS: u64 = 500;
/// Most wei one deposit transaction (open or top-up) carries: a transfer log amount is a `u64`.
pub const MAX_DEPOSIT_PER_TX_WEI: u64 = u64::MAX;

/// Parses [`OPT_CHANNEL_DEPOSIT`]: at most [`MAX_DEPOSIT_PER_TX_WEI`], since it is paid in one transaction.
fn deposit_option(options: &Value) -> Result<BigUint, ModuleError> {
    let deposit = amount_option(options, OPT_CHANNEL_DEPOSIT)?.unwrap_or_default();
    if deposit > BigUint::from(MAX_DEPOSIT_PER_TX_WEI) {
        return Err(ModuleError::InvalidFields(format!(
            "{OPT_CHANNEL_DEPOSIT} must be at most {MAX_DEPOSIT_PER_TX_WEI} wei (one transaction's deposit)"
        )));
    }
    Ok(deposit)
}

/// A channel transaction log error as a module error.
fn log_err(err: TransferLogError) -> ModuleError {
    match err {
        TransferLogError::Store(store) => ModuleError::Store(store),
        other => ModuleError::Ledger(format!("channel tx log: {other}")),
    }
}

/// Module settings beyond the common ones.
#[derive(Clone, Debug)]
struct ChannelSettings {
    deposit: BigUint,
    timeout_secs: u64,
    margin_secs: u64,
    check_interval: Duration,
}

/// Everything the module and its background check share.
#[derive(Debug)]
struct Inner {
    wallet: Wallet,
    common: CommonOptions,
    settings: ChannelSettings,
    peer: PeerAddress,
    /// Payer: one settlement at a time.
    settle_lock: tokio::sync::Mutex<()>,
    /// Payee: one credit at a time.
    credit_lock: tokio::sync::Mutex<()>,
    /// Payee: held while closing channels, and while a claim that raises a channel's amount is checked on
    /// chain and noted in `uncommitted`, so a raise never races a close. Taken after `credit_lock`.
    close_lock: tokio::sync::Mutex<()>,
    /// Payee: amounts accepted on a channel (by `handle_incoming_claim`) that the `incoming_claim` tracker may
    /// not hold yet: channel -> (amount, when). A close waits (at most the uncommitted-raise window) until the
    /// tracker holds at least that amount, so a channel is never closed below what a credit committed later
    /// counts. Entries leave when the tracker catches up or the window passes.
    uncommitted: Mutex<HashMap<Address, (BigUint, Instant)>>,
    /// Payee: retired claims refused for a lasting reason, at most [`MAX_REFUSED_CLAIMS_REMEMBERED`].
    refused_claims: Mutex<HashSet<(Address, BigUint)>>,
    /// Payee: wakes the background check (the payer retired or raised a channel: close it soon).
    close_wakeup: Arc<Notify>,
    /// Payee: channels found closed or too near their expiry, whose claims can never count again: a retired
    /// claim on one is skipped without chain reads (a payer carries a retired claim until the channel expires).
    /// In memory only, at most [`MAX_DEAD_CHANNELS_REMEMBERED`]. (An expiry moved later by the contract's
    /// `extend()`, which this module never calls, is not noticed: that only credits less, never more.)
    dead_channels: Mutex<HashSet<Address>>,
}

impl Inner {
    async fn chain_now(&self) -> Result<u64, ModuleError> {
        Ok(self.wallet.rpc().latest_timestamp().await?)
    }
}

/// The `eth-channel` module. See the module docs.
#[derive(Debug)]
pub struct EthChannelModule {
    inner: Arc<Inner>,
    watcher: Mutex<Option<JoinHandle<()>>>,
    /// Rate limit of [`RPC_LATEST_CLAIM`] pulls.
    pulls: PullLimiter,
}

impl Drop for EthChannelModule {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.watcher).take() {
            handle.abort();
        }
    }
}

impl EthChannelModule {
    /// Builds the module from its options (see the README "Module: eth-channel").
    pub fn from_options(options: &Value) -> Result<Self, ModuleError> {
        let common = CommonOptions::parse(options)?;
        let wallet = common.wallet(options)?;
        contract::check_artifact()?;
        let settings = ChannelSettings {
            deposit: deposit_option(options)?,
            timeout_secs: u64_option(options, OPT_CHANNEL_TIMEOUT_SECS)?
                .unwrap_or(DEFAULT_CHANNEL_TIMEOUT_SECS),
            margin_secs: u64_option(options, OPT_CLOSE_MARGIN_SECS)?
                .unwrap_or(DEFAULT_CLOSE_MARGIN_SECS),
            check_interval: Duration::from_millis(
                u64_option(options, OPT_EXPIRY_CHECK_INTERVAL_MS)?
                    .unwrap_or(DEFAULT_EXPIRY_CHECK_INTERVAL_MS)
                    .max(1),
            ),
        };
        if settings.margin_secs < MIN_CLOSE_MARGIN_SECS {
            return Err(ModuleError::InvalidFields(format!(
                "{OPT_CLOSE_MARGIN_SECS} must be at least {MIN_CLOSE_MARGIN_SECS} (a close needs time to be \
                 mined, and an uncommitted raise holds a close back for up to half of it)"
            )));
        }
        if settings.timeout_secs <= settings.margin_secs.saturating_mul(2) {
            return Err(ModuleError::InvalidFields(format!(
                "{OPT_CHANNEL_TIMEOUT_SECS} must exceed twice {OPT_CLOSE_MARGIN_SECS}"
            )));
        }
        Ok(EthChannelModule {
            inner: Arc::new(Inner {
                peer: PeerAddress::new(wallet.address(), common.peer_address)?,
                wallet,
                common,
                settings,
                settle_lock: tokio::sync::Mutex::new(()),
                credit_lock: tokio::sync::Mutex::new(()),
                close_lock: tokio::sync::Mutex::new(()),
                dead_channels: Mutex::new(HashSet::new()),
                uncommitted: Mutex::new(HashMap::new()),
                refused_claims: Mutex::new(HashSet::new()),
                close_wakeup: Arc::new(Notify::new()),
            }),
            watcher: Mutex::new(None),
            pulls: PullLimiter::default(),
        })
    }

    /// Our wallet.
    pub fn wallet(&self) -> &Wallet {
        &self.inner.wallet
    }

    /// Payee: closes any channel whose expiry is within `closeMarginSecs` with its best claim (what the
    /// background check runs). Returns the close transactions sent.
    /// Retired channels are closed too (the background check runs this after the payer retires a channel),
    /// except one whose raised claim the tracker does not hold yet (see [`UNCOMMITTED_RAISE_WINDOW_SECS`]).
    pub async fn submit_if_expiring(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Vec<TxHash>, ModuleError> {
        Ok(self.inner.submit_claims(ctx, false).await?.sent)
    }

    /// Payer: reclaims the deposits of retired channels that expired (or were closed with a failed refund).
    pub async fn reclaim_expired(&self, ctx: &ChannelContext) -> Result<Vec<TxHash>, ModuleError> {
        self.inner.reclaim_expired(ctx).await
    }

    /// Payer: the current channel's address, if one was opened.
    pub async fn current_channel(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<Address>, ModuleError> {
        let entry = ctx
            .max_value_tracker(OUTGOING_CHANNEL_KEY)?
            .get_max()
            .await?;
        Ok(OutgoingChannelRecord::read(&entry.data).address)
    }
}

#[async_trait]
impl ChannelModule for EthChannelModule {
    fn name(&self) -> &str {
        ETH_CHANNEL_MODULE_NAME
    }

    /// The value of the best incoming claim kept.
    async fn incoming_total(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ModuleUnits>, ModuleError> {
        Ok(Some(ModuleUnits(
            ctx.max_value_tracker(INCOMING_CLAIM_KEY)?
                .get_max()
                .await?
                .value,
        )))
    }

    fn asset_scale(&self) -> u8 {
        super::payment::WEI_SCALE
    }

    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let inner = &self.inner;
        let chain_id = inner.wallet.chain_id().await?;
        let log = ctx.transfer_log(CHANNEL_TXS_LOG_KEY)?;
        // Bookkeeping of our own transactions, never a credit line.
        if log.maximum() != Limit::Unbounded {
            log.set_maximum(Limit::Unbounded).await.map_err(log_err)?;
        }
        if log.minimum() != Limit::Unbounded {
            log.set_minimum(Limit::Unbounded).await.map_err(log_err)?;
        }
        // A configured address differing from the pinned one is our misconfiguration: fail. One held by
        // another account of this node only refuses this account's claims (warned below).
        inner.peer.check_configured(ctx).await?;
        match inner.peer.get(ctx, chain_id).await {
            Ok(peer) => {
                info!(chain_id, address = %inner.wallet.address(), %peer, "eth-channel connected")
            }
            Err(err) => warn!(%err, "peer address not known yet; will ask again when needed"),
        }
        {
            let _settling = inner.settle_lock.lock().await;
            inner.reconcile(log.as_ref()).await?;
        }
        if let Err(err) = inner.reclaim_expired(ctx).await {
            warn!(%err, "reclaiming expired channels failed");
        }
        let handle = inner.spawn_close_check(ctx);
        if let Some(old) = lock(&self.watcher).replace(handle) {
            old.abort();
        }
        Ok(())
    }

    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        if let Some(handle) = lock(&self.watcher).take() {
            handle.abort();
        }
        // A close put off for an uncommitted raise is retried until it goes (at most the uncommitted-raise
        // window, after which the recorded amount is used).
        loop {
            if !self.inner.submit_claims(ctx, true).await?.deferred {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(UNCOMMITTED_RAISE_RECHECK_MS)).await;
        }
    }

    fn info(&self) -> Option<Value> {
        Some(json!({ "address": self.inner.wallet.address().to_string(), "currencyScale": 18 }))
    }

    fn account(&self) -> Option<String> {
        Some(self.inner.wallet.address().to_string())
    }

    fn peer_account(&self) -> Option<String> {
        self.inner.peer.known().map(|a| a.to_string())
    }

    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        if self.unsecured_excess(ctx).await?.is_none() {
            return Ok(());
        }
        // Before refusing: the peer may have signed a claim that never reached us. Asking can help only if it
        // owes for fulfilled transfers beyond the best claim (prepared ones are not owed yet).
        if self.claim_can_help(ctx).await? {
            pull_latest_claim(self, ctx, &self.pulls).await;
        }
        if let Some((prepared, secured)) = self.unsecured_excess(ctx).await? {
            warn!(id = %record.transfer.id, %prepared, %secured, "incoming prepare over maxUnsecured");
            return Err(ModuleError::NotAccepted(format!(
                "incoming total {prepared} would exceed the best claim plus maxUnsecured ({secured})"
            )));
        }
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        self.inner.create_outgoing_claim(ctx, total).await
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        match claim {
            Some(claim) => self.inner.handle_incoming_claim(ctx, claim).await,
            None => Ok(None),
        }
    }

    async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_ETH_ADDRESS => {
                let chain_id = self.inner.wallet.chain_id().await?;
                self.inner
                    .peer
                    .handle_rpc(ctx, chain_id, self.inner.wallet.key(), &args)
                    .await
            }
            RPC_LATEST_CLAIM => latest_claim_reply(self, ctx).await,
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}
