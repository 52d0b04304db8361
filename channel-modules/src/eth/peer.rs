//! [`PeerAddress`]: the peer's Ethereum address, shared by both Ethereum modules. It comes from the
//! `peerAddress` option or from the module RPC `eth_address`, and the first one learned is pinned durably in
//! the max-value tracker `peer_address` (value 1, data = the address): a peer cannot later switch to another
//! address and so claim someone else's on-chain payments as its own. Before an address is used it is also
//! claimed node-wide ([`ChannelContext::claim_identity`], identity `eth:<chainId>:<address>`): two accounts of
//! one node (settlement-engine accounts share one module configuration) can never both be the peer at one
//! address, so the same on-chain payments or channel cannot be credited to two accounts.
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

/// The node-wide identity of the peer at `address` on chain `chain_id`: `eth:<chainId>:<address>`.
pub fn peer_identity(chain_id: u64, address: &Address) -> String {
    format!("eth:{chain_id}:{address}")
}

/// The peer's address as far as this process knows it.
#[derive(Debug)]
pub struct PeerAddress {
    own: Address,
    configured: Option<Address>,
    /// Set only once the address is pinned and its identity claimed for this account.
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
            configured,
            known: RwLock::new(None),
        })
    }

    /// The address, if known in memory (pinned, or configured).
    pub fn known(&self) -> Option<Address> {
        self.verified().or(self.configured)
    }

    fn verified(&self) -> Option<Address> {
        *self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, address: Address) {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Some(address);
    }

    /// Pins `candidate` (first one wins, durably, per account), after claiming its identity node-wide on
    /// chain `chain_id`; errors if a different address is pinned or another account holds the identity.
    pub async fn pin(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        candidate: Address,
    ) -> Result<(), ModuleError> {
        if candidate == self.own {
            return Err(ModuleError::InvalidFields(
                "peer claims our own address".to_owned(),
            ));
        }
        let tracker = ctx.max_value_tracker(PEER_ADDRESS_KEY)?;
        let stored = tracker.get_max().await?;
        if let Some(pinned) = parse_address(&stored.data) {
            if pinned != candidate {
                return Err(ModuleError::NotAccepted(format!(
                    "peer address {candidate} differs from pinned {pinned}"
                )));
            }
        }
        ctx.claim_identity(&peer_identity(chain_id, &candidate))
            .await?;
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

    /// Refuses a configured `peerAddress` that differs from the address pinned earlier (a misconfiguration:
    /// the pinned peer's payments would be lost to the new one).
    pub async fn check_configured(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let Some(configured) = self.configured else {
            return Ok(());
        };
        let stored = ctx.max_value_tracker(PEER_ADDRESS_KEY)?.get_max().await?;
        match parse_address(&stored.data) {
            Some(pinned) if pinned != configured => Err(ModuleError::NotAccepted(format!(
                "peerAddress {configured} differs from pinned {pinned}"
            ))),
            _ => Ok(()),
        }
    }

    /// The address on chain `chain_id`: known, pinned in the store (its identity claimed now), configured, or
    /// asked from the peer now (and pinned).
    pub async fn get(&self, ctx: &ChannelContext, chain_id: u64) -> Result<Address, ModuleError> {
        if let Some(peer) = self.verified() {
            return Ok(peer);
        }
        let stored = ctx.max_value_tracker(PEER_ADDRESS_KEY)?.get_max().await?;
        if let Some(pinned) = parse_address(&stored.data) {
            if self.configured.is_some_and(|c| c != pinned) {
                return Err(ModuleError::NotAccepted(format!(
                    "peer address {pinned} is pinned, not the configured one"
                )));
            }
            // Pinned before identities were claimed node-wide, or by an earlier run: claim it now.
            ctx.claim_identity(&peer_identity(chain_id, &pinned))
                .await?;
            self.remember(pinned);
            return Ok(pinned);
        }
        if let Some(configured) = self.configured {
            self.pin(ctx, chain_id, configured).await?;
            return Ok(configured);
        }
        let reply = ctx
            .rpc(RPC_ETH_ADDRESS, json!([self.own.to_string()]))
            .await?;
        let peer = parse_address(&reply).ok_or_else(|| {
            ModuleError::InvalidFields("eth_address reply is not an address".into())
        })?;
        self.pin(ctx, chain_id, peer).await?;
        Ok(peer)
    }

    /// Handles the peer's `eth_address` RPC: pins its address if given, replies with ours.
    pub async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        args: &Value,
    ) -> Result<Value, ModuleError> {
        if let Some(text) = args.get(0).and_then(Value::as_str) {
            let candidate: Address = text
                .parse()
                .map_err(|e| ModuleError::InvalidFields(format!("eth_address argument: {e}")))?;
            self.pin(ctx, chain_id, candidate).await?;
        }
        Ok(json!(self.own.to_string()))
    }
}

/// A main-log error as a module error.
fn log_error(e: crate::store::TransferLogError) -> ModuleError {
    match e {
        crate::store::TransferLogError::Store(e) => ModuleError::Store(e),
        other => ModuleError::Ledger(format!("main log: {other}")),
    }
}

/// Payer side of [`RPC_LATEST_CLAIM`]: the claim for everything the main log says we owe (outgoing
/// fulfilled), exactly what the next Fulfill would carry (`create_outgoing_claim` pays or signs only what is
/// not yet covered, so asking again is harmless). `null` when there is nothing to claim.
pub async fn latest_claim_reply(
    module: &dyn ChannelModule,
    ctx: &ChannelContext,
) -> Result<Value, ModuleError> {
    // Durable sums: the claim leaves the node and must not cover a fulfill a crash could still undo.
    let sums = ctx.main_log()?.durable_sums().await.map_err(log_error)?;
    let owed = BigUint::from(sums.outgoing_fulfilled);
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
