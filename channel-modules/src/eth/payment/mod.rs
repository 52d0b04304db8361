//! `eth-payment`: a payment-based module. Each settlement is an on-chain transfer of ETH (or of an ERC-20
//! token, option `tokenAddress`) from our address to the peer's; the claim handed to the peer names the
//! transaction hashes, and the peer checks them on chain before crediting. `payer` pays, `payee` verifies and
//! credits, `wire` reads and writes the JSON forms; the peer's address is configured or proven
//! ([`super::peer`]).
//!
//! Durable state (all in the context's stores):
//! * transfer log [`PAYMENTS_LOG_KEY`]: one record per on-chain payment, keyed by the first 16 bytes of its
//!   transaction hash (the full hash is the record's fulfillment and sits in `custom`); outgoing records are
//!   the payer's intents, incoming ones the peer's payments we verified (a hash in the log is never verified
//!   again);
//! * max-value tracker [`AMOUNT_RECEIVED_KEY`]: value = incoming total credited;
//! * max-value tracker [`AMOUNT_SETTLED_KEY`]: value = outgoing confirmed total (OF), data = `{"txHashes":
//!   [the last MAX_TX_HASHES_PER_CLAIM hashes]}`, re-sent in every claim, so a payment confirmed after a crash
//!   still reaches the peer;
//! * max-value tracker [`KEPT_PAYMENTS_KEY`]: value = the same total, data = `{"payments": [{"txHash",
//!   "total"}, …]}`, the last [`MAX_KEPT_PAYMENTS`] confirmed payments, oldest first, each with the confirmed
//!   total after it, for [`RPC_PAYMENTS_SINCE`]; written before `amount_settled`, and kept apart from it
//!   because every claim reads `amount_settled`. A store holding `txHashes` but no kept list gets the list
//!   seeded at its next confirmed payment with those hashes (their totals walked back from the confirmed
//!   total);
//! * max-value tracker [`AMOUNT_RECEIVED_INIT_KEY`]: marks `amount_received` as authoritative (see
//!   `EthPaymentModule::seed_amount_received`);
//! * max-value tracker [`PEER_ADDRESS_KEY`]: the peer's address, pinned the first time it is proven.
//!
//! Amounts are in the module's unit (wei, or the token's base unit). One transaction pays at most
//! `u64::MAX` units (a transfer log amount); a larger debt is paid over successive settlements.

mod payee;
mod payer;
mod wire;

use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::latest_claim::{latest_claim_reply, PullLimiter};
use super::options::{str_option, u64_option, CommonOptions};
use super::peer::PeerAddress;
use super::types::{Address, TxHash};
use super::wallet::Wallet;
use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::{Limit, TransferId, TransferLog, TransferLogError, TransferRecord};

use self::wire::parse_claim_hashes;

/// Stock name.
pub const ETH_PAYMENT_MODULE_NAME: &str = "eth-payment";
/// Transfer log holding one record per on-chain payment, both directions.
pub const PAYMENTS_LOG_KEY: &str = "eth_payments";
/// Tracker of the outgoing confirmed total and recent payment hashes.
pub const AMOUNT_SETTLED_KEY: &str = "amount_settled";
/// Tracker of the payer's kept confirmed payments (value: the confirmed total; data: `{"payments": [{"txHash",
/// "total"}, …]}`, the last [`MAX_KEPT_PAYMENTS`], oldest first), read only to answer [`RPC_PAYMENTS_SINCE`]. Kept
/// apart from `amount_settled`, which every claim reads.
pub const KEPT_PAYMENTS_KEY: &str = "amount_settled_payments";
/// Tracker of the incoming total credited (value), always at most the log's incoming fulfilled total.
pub const AMOUNT_RECEIVED_KEY: &str = "amount_received";
/// Tracker marking `amount_received` as authoritative for this store (value 1; data: what it was seeded with):
/// written by the first `connect` that finds it unset (see `EthPaymentModule::seed_amount_received`).
pub const AMOUNT_RECEIVED_INIT_KEY: &str = "amount_received_init";
pub use super::latest_claim::RPC_LATEST_CLAIM;
pub use super::peer::{PEER_ADDRESS_KEY, RPC_ETH_ADDRESS};
/// Module RPC listing the payer's kept confirmed payments after a confirmed total (its forms: `wire`).
pub const RPC_PAYMENTS_SINCE: &str = "eth_payments_since";
/// ERC-20 token contract to pay in instead of ETH.
pub const OPT_TOKEN_ADDRESS: &str = "tokenAddress";
/// Decimals of the token (the module's asset scale); default 18.
pub const OPT_TOKEN_DECIMALS: &str = "tokenDecimals";
/// Scale of wei.
pub const WEI_SCALE: u8 = 18;
/// Most payment hashes one claim carries (and the payee checks).
pub const MAX_TX_HASHES_PER_CLAIM: usize = 8;
/// Most confirmed payments the payer keeps listed (with their totals) in `amount_settled` for
/// [`RPC_PAYMENTS_SINCE`]: the payee can recover the payments of this many consecutive lost claims.
pub const MAX_KEPT_PAYMENTS: usize = 256;
/// Most payment hashes one [`RPC_PAYMENTS_SINCE`] reply lists (and the payee checks).
pub const MAX_TX_HASHES_PER_PAYMENTS_REPLY: usize = 32;
/// Most [`RPC_PAYMENTS_SINCE`] requests of one pull: enough to page through the whole kept list.
pub const MAX_PAYMENTS_SINCE_REQUESTS_PER_PULL: usize =
    MAX_KEPT_PAYMENTS.div_ceil(MAX_TX_HASHES_PER_PAYMENTS_REPLY) + 1;

/// Longest a refused prepare waits for one [`RPC_PAYMENTS_SINCE`] pull (every page and every on-chain check).
pub const PAYMENTS_SINCE_PULL_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn transfer_id(hash: &TxHash) -> TransferId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.0[..16]);
    TransferId(id)
}

fn condition_of(hash: &TxHash) -> [u8; 32] {
    Sha256::digest(hash.0).into()
}

fn log_err(err: TransferLogError) -> ModuleError {
    match err {
        TransferLogError::Store(store) => ModuleError::Store(store),
        other => ModuleError::Ledger(format!("payments log: {other}")),
    }
}

/// The `eth-payment` module. See the module docs.
#[derive(Debug)]
pub struct EthPaymentModule {
    wallet: Wallet,
    common: CommonOptions,
    token: Option<Address>,
    scale: u8,
    peer: PeerAddress,
    /// Serialises our own settlements: one payment in flight per module.
    settle_lock: tokio::sync::Mutex<()>,
    /// Serialises crediting, so a hash raced by two claims is credited once.
    credit_lock: tokio::sync::Mutex<()>,
    /// Rate limit of [`RPC_LATEST_CLAIM`] pulls.
    pulls: PullLimiter,
    /// Rate limit of [`RPC_PAYMENTS_SINCE`] pulls.
    since_pulls: PullLimiter,
}

impl EthPaymentModule {
    /// Builds the module from its options (see the README "Module: eth-payment").
    pub fn from_options(options: &Value) -> Result<Self, ModuleError> {
        let common = CommonOptions::parse(options)?;
        let wallet = common.wallet(options)?;
        let token = match str_option(options, OPT_TOKEN_ADDRESS)? {
            Some(text) => Some(
                text.parse::<Address>()
                    .map_err(|e| ModuleError::InvalidFields(format!("{OPT_TOKEN_ADDRESS}: {e}")))?,
            ),
            None => None,
        };
        let scale = match u64_option(options, OPT_TOKEN_DECIMALS)? {
            Some(d) => u8::try_from(d).map_err(|_| {
                ModuleError::InvalidFields(format!("{OPT_TOKEN_DECIMALS} must be below 256"))
            })?,
            None => WEI_SCALE,
        };
        Ok(EthPaymentModule {
            peer: PeerAddress::new(wallet.address(), common.peer_address)?,
            wallet,
            common,
            token,
            scale,
            settle_lock: tokio::sync::Mutex::new(()),
            credit_lock: tokio::sync::Mutex::new(()),
            pulls: PullLimiter::default(),
            since_pulls: PullLimiter::default(),
        })
    }

    /// Our wallet (address, endpoint).
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    async fn ensure_unbounded(log: &dyn TransferLog) -> Result<(), ModuleError> {
        // This log is bookkeeping of on-chain payments, never a credit line: no limit applies.
        if log.maximum() != Limit::Unbounded {
            log.set_maximum(Limit::Unbounded).await.map_err(log_err)?;
        }
        if log.minimum() != Limit::Unbounded {
            log.set_minimum(Limit::Unbounded).await.map_err(log_err)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ChannelModule for EthPaymentModule {
    fn name(&self) -> &str {
        ETH_PAYMENT_MODULE_NAME
    }

    fn asset_scale(&self) -> u8 {
        self.scale
    }

    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let log = ctx.transfer_log(PAYMENTS_LOG_KEY)?;
        Self::ensure_unbounded(log.as_ref()).await?;
        self.seed_amount_received(ctx, log.as_ref()).await?;
        let chain_id = self.wallet.chain_id().await?;
        // A configured address differing from the pinned one is our misconfiguration: fail. One held by
        // another account of this node only refuses this account's claims (warned below).
        self.peer.check_configured(ctx).await?;
        match self.peer.get(ctx, chain_id).await {
            Ok(peer) => {
                info!(chain_id, address = %self.wallet.address(), %peer, "eth-payment connected")
            }
            Err(err) => warn!(%err, "peer address not known yet; will ask again when needed"),
        }
        let _settling = self.settle_lock.lock().await;
        self.reconcile(ctx, log.as_ref()).await?;
        Ok(())
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    fn info(&self) -> Option<Value> {
        Some(json!({
            "address": self.wallet.address().to_string(),
            "token": self.token.map(|t| t.to_string()),
            "currencyScale": self.scale,
        }))
    }

    fn account(&self) -> Option<String> {
        Some(self.wallet.address().to_string())
    }

    fn peer_account(&self) -> Option<String> {
        self.peer.known().map(|a| a.to_string())
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
        self.pay(ctx, total).await
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let Some(claim) = claim else { return Ok(None) };
        let hashes = parse_claim_hashes(claim)?;
        self.credit_hashes(ctx, &hashes).await
    }

    async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_ETH_ADDRESS => {
                let chain_id = self.wallet.chain_id().await?;
                self.peer
                    .handle_rpc(ctx, chain_id, self.wallet.key(), &args)
                    .await
            }
            RPC_LATEST_CLAIM => latest_claim_reply(self, ctx).await,
            RPC_PAYMENTS_SINCE => self.payments_since_reply(ctx, &args).await,
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        assert!(
            EthPaymentModule::from_options(&json!({ "rpcUri": "http://127.0.0.1:1" })).is_err()
        );
        assert!(EthPaymentModule::from_options(&json!({
            "rpcUri": "http://127.0.0.1:1", "privateKey": key,
            "peerAddress": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        }))
        .is_err());
        let module = EthPaymentModule::from_options(&json!({
            "rpcUri": "http://127.0.0.1:1", "privateKey": key, "tokenDecimals": 6
        }));
        assert!(matches!(module, Ok(ref m) if m.asset_scale() == 6));
    }
}
