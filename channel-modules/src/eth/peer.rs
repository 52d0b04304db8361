//! [`PeerAddress`]: the peer's Ethereum address, shared by both Ethereum modules. It comes from the
//! `peerAddress` option (trusted: the operator said so) or from the module RPC [`RPC_ETH_ADDRESS`], whose
//! reply must **prove** ownership of the address, and the first one learned is pinned durably in the max-value
//! tracker `peer_address` (value 2, data `{"address": "0x..", "via": "proof"|"configured"}`, see `PinVia`): a
//! peer cannot later switch to another address and so claim someone else's on-chain payments as its own. A pin
//! in the bare form (value 1, data a bare address string, `PinVia::Unproven`) was never proven: it is kept
//! only once the peer proves that same address (or it is the configured one), else refused.
//!
//! Before an address is used it is also held in the node's identity registry
//! ([`ChannelContext::hold_identity`], identity `eth:<chainId>:<address>`), and re-checked there on every
//! [`PeerAddress::get`], i.e. right before each credit: two accounts of one node can never both be credited
//! for the same on-chain payments or channel. A proof can be **relayed**: a squatter peering with both the
//! owner and us can forward our challenge to the owner (who signs it, not having learned the squatter's
//! address) and never answer the owner's own challenge. This protocol cannot stop that, so the registry does:
//! a second account proving an address another account already proved makes it *contested*, and both are
//! refused until the operator configures `peerAddress` on the rightful account (a configured hold takes the
//! identity over; see [`crate::identity::decide_identity_hold`]).
//!
//! The proof (the fix interledger-rs made for the same spoofing bug, its issue #149): the caller sends a fresh
//! random 32-byte challenge and its own address; the callee answers with its address and a recoverable
//! secp256k1 signature over [`address_proof_digest`], which binds [`ADDRESS_PROOF_DOMAIN`], the chain ID, the
//! caller's address, the challenge and the callee's address. The caller pins only once the signer recovered
//! from the signature is the address claimed. The callee pins nothing on a call: whatever address a caller
//! names is unproven; each side learns the other's address only through its own challenge. A peer that still
//! speaks the unproven form (a bare address either way) is refused with an error saying so.

use std::sync::RwLock;

use num_bigint::BigUint;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::key::{recover_address, PrivateKey, RecoverableSignature};
use super::types::{decode_fixed_hex, decode_hex, encode_hex, keccak256, Address};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::identity::IdentityOrigin;
use crate::store::MaxValue;

/// Tracker pinning the peer's address.
pub const PEER_ADDRESS_KEY: &str = "peer_address";
/// Module RPC proving the callee's address. Args: `[{"challenge": "0x<32 bytes hex>", "address": "0x<caller's
/// address>"}]`; reply: `{"address": "0x<callee's address>", "signature": "0x<65 bytes hex: r ‖ s ‖ v,
/// v = 27 + recovery bit>"}`, the callee's signature over [`address_proof_digest`]. The unproven form (args
/// `["0x<caller's address>"]`, reply a bare address string) is refused at both ends.
pub const RPC_ETH_ADDRESS: &str = "eth_address";
/// Domain string opening every [`RPC_ETH_ADDRESS`] proof, so the signature can never stand for anything else.
pub const ADDRESS_PROOF_DOMAIN: &[u8] = b"ilp-bridge eth_address v1";
/// Length of an [`RPC_ETH_ADDRESS`] challenge, in bytes.
pub const ADDRESS_CHALLENGE_BYTES: usize = 32;
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

/// How a pinned address came to be pinned (the `via` of the `peer_address` tracker's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum PinVia {
    /// The peer proved it ([`RPC_ETH_ADDRESS`]): data `{"address": "0x..", "via": "proof"}`, value 2.
    Proof,
    /// The `peerAddress` option: data `{"address": "0x..", "via": "configured"}`, value 2.
    Configured,
    /// The bare form, written by a module that pinned whatever address a caller named, with no proof: data a
    /// bare address string, value 1. Proven again before use (see [`PeerAddress::get`]).
    Unproven,
}

/// Tracker value of a pin with a recorded origin (a pin in the bare form has value 1, so a
/// re-proven pin replaces it).
const PIN_VALUE: u8 = 2;

/// Reads the `peer_address` tracker's data: the pinned address and how it was pinned.
pub(crate) fn parse_pin(data: &Value) -> Option<(Address, PinVia)> {
    if let Some(bare) = data.as_str() {
        return bare.parse().ok().map(|a| (a, PinVia::Unproven));
    }
    let address = data.get("address")?.as_str()?.parse().ok()?;
    let via = match data.get("via")?.as_str()? {
        "proof" => PinVia::Proof,
        "configured" => PinVia::Configured,
        _ => return None,
    };
    Some((address, via))
}

/// The `peer_address` tracker's data for `address` pinned `via` (never `PinVia::Unproven`).
fn pin_data(address: &Address, via: PinVia) -> Value {
    let via = match via {
        PinVia::Configured => "configured",
        PinVia::Proof | PinVia::Unproven => "proof",
    };
    json!({ "address": address.to_string(), "via": via })
}

/// The peer's address as far as this process knows it.
#[derive(Debug)]
pub struct PeerAddress {
    own: Address,
    configured: Option<Address>,
    /// Set only once the address is pinned (with a recorded origin) and its identity held by this account.
    known: RwLock<Option<Address>>,
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

    /// How this account claims `address` in the node's registry: configured when it is the `peerAddress`
    /// option, else proven.
    fn origin(&self, address: &Address) -> IdentityOrigin {
        if self.configured == Some(*address) {
            IdentityOrigin::Configured
        } else {
            IdentityOrigin::Proven
        }
    }

    /// Holds (or re-checks the hold of) `address`'s identity on chain `chain_id` in the node's registry.
    async fn hold(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        address: &Address,
    ) -> Result<(), ModuleError> {
        let result = ctx
            .hold_identity(&peer_identity(chain_id, address), self.origin(address))
            .await;
        if let Err(err) = &result {
            warn!(account = ctx.account_id(), peer = %address, %err, "peer address refused by the node's identity registry");
        }
        result
    }

    /// Pins `candidate` `via` (first one wins, durably, per account; a re-proven `PinVia::Unproven` pin of
    /// the same address is rewritten with its origin), after holding its identity node-wide on chain
    /// `chain_id`; errors if a different address is pinned or the registry refuses. Callers pass only a
    /// configured address or one whose ownership was proven.
    async fn pin(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        candidate: Address,
        via: PinVia,
    ) -> Result<(), ModuleError> {
        if candidate == self.own {
            return Err(ModuleError::InvalidFields(
                "peer claims our own address".to_owned(),
            ));
        }
        let tracker = ctx.max_value_tracker(PEER_ADDRESS_KEY)?;
        let stored = tracker.get_max().await?;
        if let Some((pinned, pinned_via)) = parse_pin(&stored.data) {
            // Only a configured address may replace a pin, and only an unproven one (the bare form).
            let replaceable = pinned_via == PinVia::Unproven && via == PinVia::Configured;
            if pinned != candidate && !replaceable {
                return Err(ModuleError::NotAccepted(format!(
                    "peer address {candidate} differs from pinned {pinned}"
                )));
            }
        }
        self.hold(ctx, chain_id, &candidate).await?;
        tracker
            .set_if_max(MaxValue {
                value: BigUint::from(PIN_VALUE),
                data: pin_data(&candidate, via),
            })
            .await?;
        let pinned = parse_pin(&tracker.get_max().await?.data)
            .ok_or_else(|| ModuleError::Ledger("stored peer address is unreadable".into()))?;
        if pinned.0 != candidate || pinned.1 == PinVia::Unproven {
            return Err(ModuleError::NotAccepted(format!(
                "peer address {candidate} differs from pinned {}",
                pinned.0
            )));
        }
        self.remember(candidate);
        Ok(())
    }

    /// Refuses a configured `peerAddress` that differs from the address pinned earlier (a misconfiguration:
    /// the pinned peer's payments would be lost to the new one).
    pub async fn check_configured(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let Some(configured) = self.configured else {
            return Ok(());
        };
        let stored = ctx.max_value_tracker(PEER_ADDRESS_KEY)?.get_max().await?;
        match parse_pin(&stored.data) {
            // An unproven pin (the bare form) gives way to the operator's word (see `get`).
            Some((pinned, via)) if pinned != configured && via != PinVia::Unproven => {
                Err(ModuleError::NotAccepted(format!(
                    "peerAddress {configured} differs from pinned {pinned}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Asks the peer to prove its address with a fresh challenge; returns the proven address.
    async fn ask(&self, ctx: &ChannelContext, chain_id: u64) -> Result<Address, ModuleError> {
        let challenge: [u8; ADDRESS_CHALLENGE_BYTES] = rand::random();
        let reply = ctx
            .rpc(RPC_ETH_ADDRESS, address_request(&self.own, &challenge))
            .await?;
        verify_address_proof(chain_id, &self.own, &challenge, &reply)
    }

    /// The address on chain `chain_id`, with its identity (re-)checked in the node's registry on **every**
    /// call (callers credit right after: an account whose identity became contested, or was taken over by a
    /// configured account, is refused from then on): known in memory, pinned in the store, configured, or
    /// asked from the peer now with a fresh challenge (and pinned once its proof checks out). A pin in the
    /// bare form (`PinVia::Unproven`) is kept only once the peer proves that same address (or it is
    /// the configured one); otherwise refused.
    pub async fn get(&self, ctx: &ChannelContext, chain_id: u64) -> Result<Address, ModuleError> {
        if let Some(peer) = self.verified() {
            self.hold(ctx, chain_id, &peer).await?;
            return Ok(peer);
        }
        let stored = ctx.max_value_tracker(PEER_ADDRESS_KEY)?.get_max().await?;
        if let Some((pinned, via)) = parse_pin(&stored.data) {
            if via == PinVia::Unproven {
                if let Some(configured) = self.configured {
                    // The operator's word replaces an unproven pin, whatever address it named.
                    self.pin(ctx, chain_id, configured, PinVia::Configured)
                        .await?;
                    return Ok(configured);
                }
                return self.reprove(ctx, chain_id, pinned).await;
            }
            if self.configured.is_some_and(|c| c != pinned) {
                return Err(ModuleError::NotAccepted(format!(
                    "peer address {pinned} is pinned, not the configured one"
                )));
            }
            // Pinned by an earlier run: hold it now.
            self.hold(ctx, chain_id, &pinned).await?;
            self.remember(pinned);
            return Ok(pinned);
        }
        if let Some(configured) = self.configured {
            self.pin(ctx, chain_id, configured, PinVia::Configured)
                .await?;
            return Ok(configured);
        }
        let peer = self.ask(ctx, chain_id).await?;
        self.pin(ctx, chain_id, peer, PinVia::Proof).await?;
        info!(account = ctx.account_id(), %peer, "peer proved its address");
        Ok(peer)
    }

    /// Keeps an unproven pin in the bare form (`pinned`) only once the peer proves that address now (or
    /// it is configured), rewriting it with its origin.
    async fn reprove(
        &self,
        ctx: &ChannelContext,
        chain_id: u64,
        pinned: Address,
    ) -> Result<Address, ModuleError> {
        if self.configured == Some(pinned) {
            self.pin(ctx, chain_id, pinned, PinVia::Configured).await?;
            return Ok(pinned);
        }
        let unproven = |why: String| {
            warn!(account = ctx.account_id(), %pinned, %why, "unproven peer address pin refused");
            ModuleError::NotAccepted(format!(
                "peer address {pinned} is pinned without a proof of ownership (a bare-address pin in a version-1 \
                 database), and {why}; configure peerAddress with the peer's real address"
            ))
        };
        let proven = match self.ask(ctx, chain_id).await {
            Ok(proven) => proven,
            Err(ModuleError::Rpc(err)) => {
                // The peer is unreachable: not a refusal of the pin yet, ask again later.
                return Err(ModuleError::Rpc(err));
            }
            Err(err) => return Err(unproven(format!("the peer could not prove it ({err})"))),
        };
        if proven != pinned {
            return Err(unproven(format!("the peer proves {proven} instead")));
        }
        self.pin(ctx, chain_id, pinned, PinVia::Proof).await?;
        info!(account = ctx.account_id(), peer = %pinned, "peer proved its earlier pinned address");
        Ok(pinned)
    }

    /// Handles the peer's [`RPC_ETH_ADDRESS`]: answers its challenge with our address and our signature (`key`
    /// is our key). Pins nothing: the address the caller names is unproven. Refuses the unproven request form
    /// (a bare address), a caller naming our own address, and a caller naming another address than the one
    /// configured or pinned for this account (someone relaying another peer's challenge). A relay by a caller
    /// whose address this account has not learned yet cannot be told apart here: the node's identity registry
    /// catches it instead (the identity becomes contested, see [`crate::identity::decide_identity_hold`]).
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
            // An unproven pin (the bare form) is not this account's peer yet: it may be whatever a caller
            // named, and the real peer must be able to get our proof (and so pay us) meanwhile.
            None => parse_pin(
                &ctx.max_value_tracker(PEER_ADDRESS_KEY)?
                    .get_max()
                    .await?
                    .data,
            )
            .filter(|(_, via)| *via != PinVia::Unproven)
            .map(|(address, _)| address),
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
