//! [`PeerAddress`]: the peer's Ethereum address, shared by both Ethereum modules. It comes from the
//! `peerAddress` option (trusted: the operator said so) or from the module RPC [`RPC_ETH_ADDRESS`], whose
//! reply must **prove** ownership of the address, and the first one learned is pinned durably in the max-value
//! tracker `peer_address` (value 1, data = the address): a peer cannot later switch to another address and so
//! claim someone else's on-chain payments as its own. Before an address is used it is also claimed node-wide
//! ([`ChannelContext::claim_identity`], identity `eth:<chainId>:<address>`): two accounts of one node
//! (settlement-engine accounts share one module configuration) can never both be the peer at one address, so
//! the same on-chain payments or channel cannot be credited to two accounts.
//!
//! The proof (the fix interledger-rs made for the same spoofing bug, its issue #149): the caller sends a fresh
//! random 32-byte challenge and its own address; the callee answers with its address and a recoverable
//! secp256k1 signature over [`address_proof_digest`], which binds [`ADDRESS_PROOF_DOMAIN`], the chain ID, the
//! caller's address, the challenge and the callee's address. The caller pins only once the signer recovered
//! from the signature is the address claimed. The callee pins nothing on a call: whatever address a caller
//! names is unproven; each side learns the other's address only through its own challenge. A peer that still
//! speaks the unproven form (a bare address either way) is refused with an error saying so.
//!
//! Also the two ends of [`RPC_LATEST_CLAIM`], shared by both modules: [`latest_claim_reply`] (payer) and
//! [`pull_latest_claim`] (payee), the latter behind a [`PullLimiter`].

use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use num_bigint::BigUint;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::key::{recover_address, PrivateKey, RecoverableSignature};
use super::types::{decode_fixed_hex, decode_hex, encode_hex, keccak256, Address};
use crate::context::ChannelContext;
use crate::module::{ChannelModule, Claim, ModuleError};
use crate::store::MaxValue;
use crate::sync::lock;

/// Tracker pinning the peer's address.
pub const PEER_ADDRESS_KEY: &str = "peer_address";
/// Module RPC proving the callee's address. Args: `[{"challenge": "0x<32 bytes hex>", "address": "0x<caller's
/// address>"}]`; reply: `{"address": "0x<callee's address>", "signature": "0x<65 bytes hex: r ‖ s ‖ v,
/// v = 27 + recovery bit>"}`, the callee's signature over [`address_proof_digest`]. The unproven form of
/// earlier versions (args `["0x<caller's address>"]`, reply a bare address string) is refused at both ends.
pub const RPC_ETH_ADDRESS: &str = "eth_address";
/// Domain string opening every [`RPC_ETH_ADDRESS`] proof, so the signature can never stand for anything else.
pub const ADDRESS_PROOF_DOMAIN: &[u8] = b"ilp-bridge eth_address v1";
/// Length of an [`RPC_ETH_ADDRESS`] challenge, in bytes.
pub const ADDRESS_CHALLENGE_BYTES: usize = 32;
/// Module RPC asking the payer for its claim covering everything it owes (args `[]`; reply: the claim JSON,
/// or `null`). The payee calls it before refusing a transfer over `maxUnsecured`: the claim that should have
/// come with a Fulfill response may have been lost (a response sent before the payment was confirmed, a
/// payer restart), and without it the payee would refuse every further transfer.
pub const RPC_LATEST_CLAIM: &str = "eth_latest_claim";
/// Shortest time between two [`RPC_LATEST_CLAIM`] pulls of one account, in milliseconds (see
/// [`PullLimiter`]): a peer sending a burst of prepares over the limit costs at most one round trip per this
/// interval.
pub const LATEST_CLAIM_PULL_MIN_INTERVAL_MS: u64 = 1_000;

/// The node-wide identity of the peer at `address` on chain `chain_id`: `eth:<chainId>:<address>`.
pub fn peer_identity(chain_id: u64, address: &Address) -> String {
    format!("eth:{chain_id}:{address}")
}

/// The digest the callee of [`RPC_ETH_ADDRESS`] signs: `keccak256(ADDRESS_PROOF_DOMAIN ‖ chainId as a 32-byte
/// big-endian word ‖ caller's address (20 bytes) ‖ challenge (32 bytes) ‖ callee's address (20 bytes))`. Every
/// field after the domain has a fixed length, so the encoding is unambiguous.
pub fn address_proof_digest(
    chain_id: u64,
    caller: &Address,
    challenge: &[u8; ADDRESS_CHALLENGE_BYTES],
    callee: &Address,
) -> [u8; 32] {
    let mut data = Vec::with_capacity(ADDRESS_PROOF_DOMAIN.len() + 32 + 20 + 32 + 20);
    data.extend_from_slice(ADDRESS_PROOF_DOMAIN);
    let mut chain_word = [0u8; 32];
    chain_word[24..].copy_from_slice(&chain_id.to_be_bytes());
    data.extend_from_slice(&chain_word);
    data.extend_from_slice(&caller.0);
    data.extend_from_slice(challenge);
    data.extend_from_slice(&callee.0);
    keccak256(&data)
}

/// The [`RPC_ETH_ADDRESS`] arguments for a caller at `caller` sending `challenge`.
pub fn address_request(caller: &Address, challenge: &[u8; ADDRESS_CHALLENGE_BYTES]) -> Value {
    json!([{ "challenge": encode_hex(challenge), "address": caller.to_string() }])
}

/// The callee's [`RPC_ETH_ADDRESS`] reply: its address and its signature over [`address_proof_digest`].
pub fn address_proof(
    key: &PrivateKey,
    chain_id: u64,
    caller: &Address,
    challenge: &[u8; ADDRESS_CHALLENGE_BYTES],
) -> Result<Value, ModuleError> {
    let own = key.address();
    let signature = key.sign_hash(&address_proof_digest(chain_id, caller, challenge, &own))?;
    Ok(json!({
        "address": own.to_string(),
        "signature": encode_hex(&signature.to_bytes65()),
    }))
}

/// Checks the callee's [`RPC_ETH_ADDRESS`] `reply` to `challenge` sent by `caller`: returns the callee's
/// address once the signer recovered from the signature is that address.
pub fn verify_address_proof(
    chain_id: u64,
    caller: &Address,
    challenge: &[u8; ADDRESS_CHALLENGE_BYTES],
    reply: &Value,
) -> Result<Address, ModuleError> {
    let refused = |why: String| ModuleError::NotAccepted(format!("eth_address reply: {why}"));
    if reply.is_string() {
        return Err(refused(
            "a bare address without a proof of ownership (the peer runs an older ilp-bridge; upgrade it, \
             or configure peerAddress)"
                .to_owned(),
        ));
    }
    let claimed: Address = reply
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("no address".to_owned()))?
        .parse()
        .map_err(|e| refused(format!("address: {e}")))?;
    let signature = reply
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("no signature".to_owned()))?;
    let signature = RecoverableSignature::from_bytes65(
        &decode_hex(signature).map_err(|e| refused(format!("signature: {e}")))?,
    )
    .map_err(|e| refused(format!("signature: {e}")))?;
    let signer = recover_address(
        &address_proof_digest(chain_id, caller, challenge, &claimed),
        &signature,
    )
    .map_err(|e| refused(format!("signature: {e}")))?;
    if signer != claimed {
        return Err(refused(format!(
            "the proof for {claimed} is signed by {signer}"
        )));
    }
    Ok(claimed)
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
    /// Callers pass only a configured address or one whose ownership was proven.
    async fn pin(
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
    /// asked from the peer now with a fresh challenge (and pinned once its proof checks out).
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
        let challenge: [u8; ADDRESS_CHALLENGE_BYTES] = rand::random();
        let reply = ctx
            .rpc(RPC_ETH_ADDRESS, address_request(&self.own, &challenge))
            .await?;
        let peer = verify_address_proof(chain_id, &self.own, &challenge, &reply)?;
        self.pin(ctx, chain_id, peer).await?;
        info!(account = ctx.account_id(), %peer, "peer proved its address");
        Ok(peer)
    }

    /// Handles the peer's [`RPC_ETH_ADDRESS`]: answers its challenge with our address and our signature (`key`
    /// is our key). Pins nothing: the address the caller names is unproven. Refuses the unproven form of
    /// earlier versions, a caller naming our own address, and a caller naming another address than the one
    /// configured or pinned for this account (someone relaying another peer's challenge).
    pub async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        key: &PrivateKey,
        args: &Value,
    ) -> Result<Value, ModuleError> {
        let request = args.get(0).and_then(Value::as_object).ok_or_else(|| {
            ModuleError::InvalidFields(
                "eth_address needs [{challenge, address}]; a bare address is the unproven form of an older \
                 ilp-bridge, refused (upgrade the peer)"
                    .to_owned(),
            )
        })?;
        let challenge: [u8; ADDRESS_CHALLENGE_BYTES] = request
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| ModuleError::InvalidFields("eth_address: no challenge".to_owned()))
            .and_then(|c| {
                decode_fixed_hex(c)
                    .map_err(|e| ModuleError::InvalidFields(format!("eth_address challenge: {e}")))
            })?;
        let caller: Address = request
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| ModuleError::InvalidFields("eth_address: no address".to_owned()))?
            .parse()
            .map_err(|e| ModuleError::InvalidFields(format!("eth_address address: {e}")))?;
        if caller == self.own {
            return Err(ModuleError::NotAccepted(
                "eth_address caller claims our own address".to_owned(),
            ));
        }
        let expected = match self.known() {
            Some(address) => Some(address),
            None => parse_address(
                &ctx.max_value_tracker(PEER_ADDRESS_KEY)?
                    .get_max()
                    .await?
                    .data,
            ),
        };
        if let Some(expected) = expected.filter(|e| *e != caller) {
            warn!(account = ctx.account_id(), %caller, %expected, "eth_address from a caller naming another address");
            return Err(ModuleError::NotAccepted(format!(
                "eth_address caller names {caller}, but this account's peer is {expected}"
            )));
        }
        debug!(account = ctx.account_id(), %caller, "proving our address");
        address_proof(key, chain_id, &caller, &challenge)
    }
}

/// Limits [`pull_latest_claim`] per account (one limiter per module; one module per account): at most one pull
/// in flight, and after a pull that credited nothing, no new one until [`LATEST_CLAIM_PULL_MIN_INTERVAL_MS`]
/// after it started, on the context's clock ([`ChannelContext::now`]; a clock that went backwards allows a
/// pull). A pull that credited something does not hold the next one back: each such pull was paid for, and a
/// payee whose claims keep getting lost still gets them at the pace of its transfers.
#[derive(Debug, Default)]
pub struct PullLimiter {
    state: Mutex<PullState>,
}

#[derive(Debug, Default)]
struct PullState {
    in_flight: bool,
    /// When the last pull that credited nothing (or is still running) started.
    last_unproductive: Option<SystemTime>,
}

/// Marks a pull in flight until dropped (also when the pulling future is dropped midway).
struct PullPermit<'a> {
    limiter: &'a PullLimiter,
}

impl PullPermit<'_> {
    /// The pull credited something: the next one need not wait.
    fn productive(self) {
        lock(&self.limiter.state).last_unproductive = None;
    }
}

impl Drop for PullPermit<'_> {
    fn drop(&mut self) {
        lock(&self.limiter.state).in_flight = false;
    }
}

impl PullLimiter {
    /// A permit to pull now, or `None` while a pull is in flight or an unproductive one started less than
    /// [`LATEST_CLAIM_PULL_MIN_INTERVAL_MS`] before `now`.
    fn try_start(&self, now: SystemTime) -> Option<PullPermit<'_>> {
        let mut state = lock(&self.state);
        if state.in_flight {
            return None;
        }
        let min_interval = Duration::from_millis(LATEST_CLAIM_PULL_MIN_INTERVAL_MS);
        if let Some(last) = state.last_unproductive {
            if now
                .duration_since(last)
                .is_ok_and(|elapsed| elapsed < min_interval)
            {
                return None;
            }
        }
        state.in_flight = true;
        state.last_unproductive = Some(now);
        Some(PullPermit { limiter: self })
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
/// `module.handle_incoming_claim`, which checks it like any other. Callers ask only when a claim can help (the
/// peer owes more than it has paid or signed for); `limiter` drops the pull while another is in flight or an
/// unproductive one started too recently. Failures are logged; the caller re-checks its limit afterwards.
/// Returns whether the pull credited something.
pub async fn pull_latest_claim(
    module: &dyn ChannelModule,
    ctx: &ChannelContext,
    limiter: &PullLimiter,
) -> bool {
    let Some(permit) = limiter.try_start(ctx.now()) else {
        debug!(
            account = ctx.account_id(),
            "latest-claim pull skipped (one in flight or too recent)"
        );
        return false;
    };
    let claim = match ctx.rpc(RPC_LATEST_CLAIM, json!([])).await {
        Ok(Value::Null) => return false,
        Ok(Value::Object(map)) if map.is_empty() => return false,
        Ok(claim) => claim,
        Err(err) => {
            warn!(%err, "could not ask the peer for its latest claim");
            return false;
        }
    };
    match module
        .handle_incoming_claim(ctx, Some(&Claim::Json(claim)))
        .await
    {
        Ok(Some(credit)) => {
            info!(amount = %credit.amount, settlement_id = %credit.settlement_id, "credited the peer's latest claim");
            permit.productive();
            true
        }
        Ok(None) => false,
        Err(err) => {
            warn!(%err, "the peer's latest claim was refused");
            false
        }
    }
}
