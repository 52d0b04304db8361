//! [`PeerAddress`]: the peer's Ethereum address, shared by both Ethereum modules. It comes from the
//! `peerAddress` option or from the module RPC `eth_address`, and the first one learned is pinned durably in
//! the max-value tracker `peer_address` (value 1, data = the address): a peer cannot later switch to another
//! address and so claim someone else's on-chain payments as its own.
//!
//! Also the two ends of [`RPC_LATEST_CLAIM`], shared by both modules: [`latest_claim_reply`] (payer) and
//! [`pull_latest_claim`] (payee).

use std::sync::RwLock;

use num_bigint::BigUint;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::types::Address;
use crate::context::ChannelContext;
use crate::module::{ChannelModule, Claim, ModuleError};
use crate::store::MaxValue;

/// Tracker pinning the peer's address.
pub const PEER_ADDRESS_KEY: &str = "peer_address";
/// Module RPC exchanging addresses: args `[caller's address]`, reply: the callee's address.
pub const RPC_ETH_ADDRESS: &str = "eth_address";
/// Module RPC asking the payer for its claim covering everything it owes (args `[]`; reply: the claim JSON,
/// or `null`). The payee calls it before refusing a transfer over `maxUnsecured`: the claim that should have
/// come with a Fulfill response may have been lost (a response sent before the payment was confirmed, a
/// payer restart), and without it the payee would refuse every further transfer.
pub const RPC_LATEST_CLAIM: &str = "eth_latest_claim";

/// The peer's address as far as this process knows it.
#[derive(Debug)]
pub struct PeerAddress {
    own: Address,
    known: RwLock<Option<Address>>,
}

fn parse_address(value: &Value) -> Option<Address> {
    value.as_str().and_then(|s| s.parse().ok())
}

impl PeerAddress {
    /// Our own address is `own`; `configured` is the `peerAddress` option.
    pub fn new(own: Address, configured: Option<Address>) -> Result<Self, ModuleError> {
        if configured == Some(own) {
            return Err(ModuleError::InvalidFields(
                "peerAddress is our own address".to_owned(),
            ));
        }
        Ok(PeerAddress {
            own,
            known: RwLock::new(configured),
        })
    }

    /// The address, if known in memory.
    pub fn known(&self) -> Option<Address> {
        *self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, address: Address) {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Some(address);
    }

    /// Pins `candidate` (first one wins, durably); errors if a different address is pinned.
    pub async fn pin(&self, ctx: &ChannelContext, candidate: Address) -> Result<(), ModuleError> {
        if candidate == self.own {
            return Err(ModuleError::InvalidFields(
                "peer claims our own address".to_owned(),
            ));
        }
        let tracker = ctx.max_value_tracker(PEER_ADDRESS_KEY)?;
        tracker
            .set_if_max(MaxValue {
                value: BigUint::from(1u8),
                data: json!(candidate.to_string()),
            })
            .await?;
        let pinned = parse_address(&tracker.get_max().await?.data)
            .ok_or_else(|| ModuleError::Ledger("stored peer address is unreadable".into()))?;
        if pinned != candidate {
            return Err(ModuleError::NotAccepted(format!(
                "peer address {candidate} differs from pinned {pinned}"
            )));
        }
        self.remember(pinned);
        Ok(())
    }

    /// The address: known, pinned in the store, or asked from the peer now (and pinned).
    pub async fn get(&self, ctx: &ChannelContext) -> Result<Address, ModuleError> {
        if let Some(peer) = self.known() {
            return Ok(peer);
        }
        let stored = ctx.max_value_tracker(PEER_ADDRESS_KEY)?.get_max().await?;
        if let Some(pinned) = parse_address(&stored.data) {
            self.remember(pinned);
            return Ok(pinned);
        }
        let reply = ctx
            .rpc(RPC_ETH_ADDRESS, json!([self.own.to_string()]))
            .await?;
        let peer = parse_address(&reply).ok_or_else(|| {
            ModuleError::InvalidFields("eth_address reply is not an address".into())
        })?;
        self.pin(ctx, peer).await?;
        Ok(peer)
    }

    /// Handles the peer's `eth_address` RPC: pins its address if given, replies with ours.
    pub async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        args: &Value,
    ) -> Result<Value, ModuleError> {
        if let Some(text) = args.get(0).and_then(Value::as_str) {
            let candidate: Address = text
                .parse()
                .map_err(|e| ModuleError::InvalidFields(format!("eth_address argument: {e}")))?;
            self.pin(ctx, candidate).await?;
        }
        Ok(json!(self.own.to_string()))
    }
}

/// Payer side of [`RPC_LATEST_CLAIM`]: the claim for everything the main log says we owe (outgoing
/// fulfilled), exactly what the next Fulfill would carry (`create_outgoing_claim` pays or signs only what is
/// not yet covered, so asking again is harmless). `null` when there is nothing to claim.
pub async fn latest_claim_reply(
    module: &dyn ChannelModule,
    ctx: &ChannelContext,
) -> Result<Value, ModuleError> {
    let owed = BigUint::from(ctx.main_log()?.sums().outgoing_fulfilled);
    match module.create_outgoing_claim(ctx, &owed).await? {
        Some(Claim::Json(claim)) => Ok(claim),
        Some(_) => Err(ModuleError::Ledger(
            "this module's claims are JSON".to_owned(),
        )),
        None => Ok(Value::Null),
    }
}

/// Payee side of [`RPC_LATEST_CLAIM`]: asks the peer for its latest claim and hands it to
/// `module.handle_incoming_claim`, which checks it like any other. Failures are logged; the caller re-checks
/// its limit afterwards.
pub async fn pull_latest_claim(module: &dyn ChannelModule, ctx: &ChannelContext) {
    let claim = match ctx.rpc(RPC_LATEST_CLAIM, json!([])).await {
        Ok(Value::Null) => return,
        Ok(Value::Object(map)) if map.is_empty() => return,
        Ok(claim) => claim,
        Err(err) => {
            warn!(%err, "could not ask the peer for its latest claim");
            return;
        }
    };
    match module
        .handle_incoming_claim(ctx, Some(&Claim::Json(claim)))
        .await
    {
        Ok(Some(credit)) => {
            info!(amount = %credit.amount, settlement_id = %credit.settlement_id, "credited the peer's latest claim")
        }
        Ok(None) => {}
        Err(err) => warn!(%err, "the peer's latest claim was refused"),
    }
}
