//! `eth-channel`: a claim-based module on one-way payment channel contracts
//! (`channel-modules/contracts/PaymentChannel.sol`, one contract per channel).
//!
//! Payer side: the first settlement deploys a channel to the peer with `channelDeposit` wei and an expiry
//! `channelTimeoutSecs` ahead; each settlement signs a cumulative claim (EIP-191 over
//! `keccak256(chain ID ‖ contract ‖ amount)`, see [`claim_digest`]), topping the deposit up first when the claim
//! would exceed it, and moving to a new channel when the current one is closed, has less than two
//! `closeMarginSecs` left, or is of the earlier contract version. Expired old
//! channels are reclaimed (`reclaimExpired`, also run at connect). Every payer transaction (deploy, top-up) is
//! recorded in the transfer log `eth_channel_txs` with its signed raw bytes *before* it is broadcast, and
//! followed to the end at the next call or connect, so a crash never deposits twice.
//!
//! Payee side: a claim counts only if the contract's runtime code is this version's `PaymentChannel`
//! (immutables masked), its payer is the peer and its payee is us, it is open with at least `closeMarginSecs` left, the
//! amount is within the deposit, and the signature recovers to the payer. The best claim is kept in the
//! max-value tracker `incoming_claim` (value: the cumulative amount credited over all channels). The payee
//! closes the channel with it on disconnect, when the payer moves to a new channel (the background check, woken
//! at once), and (that check, every `expiryCheckIntervalMs`) when the expiry comes within `closeMarginSecs`.
//! Before refusing a transfer over `maxUnsecured`, the payee asks the payer for its current claim (RPC `eth_latest_claim`, see
//! [`super::peer`]): a claim lost with a Fulfill response or a payer restart does not block the trustline. It
//! asks only when fulfilled transfers exceed the best claim, rate-limited per account
//! ([`super::peer::PullLimiter`]). The peer's address is configured or proven (`eth_address`, [`super::peer`]).
//!
//! Claims on the wire: `Claim::Json({"channel": "0x…", "amount": "<wei on this channel>", "signature": "0x…",
//! "base": "<wei>", "retired": [{"channel": "0x…", "amount": "<wei>", "signature": "0x…"}, …]})`. `signature`
//! is the payer's over `channel` and `amount` only. `base` (what the payer's earlier channels carried, so its
//! cumulative total is `base + amount`) is advisory and unsigned. `retired` (absent when empty) holds the
//! payer's final claim on each channel it retired that may still be closed (not closed or expired when it
//! opened the current one, not expired now), at most [`MAX_RETIRED_CLAIMS`], each signed on its own. Both
//! fields are optional: a peer that sends neither is understood, and one that ignores them still works.
//!
//! Retired claims: the payer's last claims on a channel may never reach the payee (a lost Fulfill response, a
//! restart), and once the payer moves to a new channel the payee would close the old one with a lower claim
//! than the payer signed, losing the difference (`close()` refunds it to the payer). So the payer carries those
//! final claims on its new channel's claims (and in its `eth_latest_claim` reply, which is its best claim).
//! The payee checks each retired claim that is above what it holds on that channel exactly as a current one
//! (signature first, with no chain read and no lock; then contract code, payer and payee, within the deposit,
//! not closed, more than `closeMarginSecs` left). One refused by a check credits nothing (refusals for a lasting
//! reason are remembered, so carrying it again costs no chain read); one that could not be checked (the chain
//! unreachable) fails the whole claim, which is sent or pulled again; one not above what the payee holds costs
//! nothing, so a replayed claim credits nothing. An accepted one raises that channel's amount in the payee's
//! record (or adds a channel it never had a claim on) and credits the difference once, under the settlement ID
//! `<channel>:<amount>:<new total>` (the claim it came with may already have been credited as
//! `<channel>:<amount>`). The base of the new channel is always what the payee can prove (its credited total
//! after the retired claims): the payer's stated `base` is compared and a difference logged, never credited.
//! A retired channel already closed with a lower claim cannot be raised: `close()` refunded the rest of its
//! deposit to the payer, so that difference stays with the payer.
//!
//! Channels of the earlier contract ([`ChannelVersion::V1`], `contracts/v1`, whose claims sign only the
//! contract and the amount, so a claim earned on one chain could close the same-address channel on another)
//! are recognised but take no claims: the payer opens a new channel instead of paying on one, and carries no
//! retired claim for it; the payee refuses claims on one. What the records already hold on them still works:
//! the payee closes them with the claims it kept (they verify under the earlier contract's digest) and the
//! payer reclaims them once expired or closed.
//!
//! Closing and crediting never disagree (the payee credits only what its closes collect):
//! `handle_incoming_claim` never closes a channel itself, since its context may be staged (an engine commits
//! the tracker writes with the credit after the module returns, or never if the request is dropped). It notes
//! each amount it accepts on a channel (under `close_lock`, which every close holds) and wakes the background
//! check, which closes retired channels with what the committed tracker holds and puts off a close while a
//! higher accepted amount is not in the tracker, for at most [`UNCOMMITTED_RAISE_WINDOW_SECS`] (then the
//! request is taken as dropped). And since a close of ours that is still pending is invisible to the checks
//! (they read the latest block), no claim is credited while a transaction of the payee's wallet is pending: it
//! fails with a ledger error and is retried. What is left: a commit later than that window after the module
//! returned could credit a raise whose channel was closed with the recorded amount meanwhile; and a close we
//! signed that left the node's pool without being mined but is broadcast again later (by anyone who kept it)
//! could close a channel below a claim credited in between.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::abi::{self, Token};
use super::key::{eip191_hash, recover_address, RecoverableSignature};
use super::options::{amount_option, u64_option, CommonOptions};
use super::peer::{latest_claim_reply, pull_latest_claim, PeerAddress, PullLimiter};
use super::rlp::{self, Item};
use super::types::{decode_hex, encode_hex, keccak256, Address, TxHash};
use super::wallet::{TxStatus, Wallet};
use super::EthError;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::{
    Direction, Limit, MaxValue, Transfer, TransferId, TransferLog, TransferLogError, TransferRecord,
};

/// Stock name.
pub const ETH_CHANNEL_MODULE_NAME: &str = "eth-channel";
/// The compiled contract (`contracts/build.sh` regenerates it from `PaymentChannel.sol`).
pub const PAYMENT_CHANNEL_ARTIFACT: &str = include_str!("../../contracts/PaymentChannel.json");
/// The earlier contract, frozen (`contracts/v1`): its channels are recognised in order to close and reclaim
/// them, never to take claims (see [`ChannelVersion::V1`]).
pub const PAYMENT_CHANNEL_V1_ARTIFACT: &str =
    include_str!("../../contracts/v1/PaymentChannel.json");
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
pub use super::peer::{PEER_ADDRESS_KEY, RPC_ETH_ADDRESS, RPC_LATEST_CLAIM};
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
/// Width of a claim's amount in the contract (`uint256`), in bits.
const UINT256_BITS: u64 = 256;
/// Most deploy/top-up rounds one settlement may take before giving up.
const MAX_FUNDING_ROUNDS: usize = 4;
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

/// Which `PaymentChannel` contract a channel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelVersion {
    /// This release's contract: claims commit to the chain ID ([`claim_digest`]).
    Current,
    /// The earlier contract (`contracts/v1`): claims sign only the contract and the amount
    /// ([`v1_claim_digest`]), so one earned on a chain would close the channel at the same address on another
    /// chain. Takes no new claims; closed with the claims already kept, and reclaimed.
    V1,
}

/// A compiled contract, parsed once.
struct Artifact {
    bytecode: Vec<u8>,
    runtime: Vec<u8>,
    immutables: Vec<(usize, usize)>,
}

fn artifact() -> Result<&'static Artifact, EthError> {
    static ARTIFACT: OnceLock<Result<Artifact, EthError>> = OnceLock::new();
    ARTIFACT
        .get_or_init(|| parse_artifact(PAYMENT_CHANNEL_ARTIFACT))
        .as_ref()
        .map_err(Clone::clone)
}

fn v1_artifact() -> Result<&'static Artifact, EthError> {
    static ARTIFACT: OnceLock<Result<Artifact, EthError>> = OnceLock::new();
    ARTIFACT
        .get_or_init(|| parse_artifact(PAYMENT_CHANNEL_V1_ARTIFACT))
        .as_ref()
        .map_err(Clone::clone)
}

fn parse_artifact(text: &str) -> Result<Artifact, EthError> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| EthError::BadResponse(format!("artifact: {e}")))?;
    let text = |name: &str| {
        json[name]
            .as_str()
            .ok_or_else(|| EthError::BadResponse(format!("artifact lacks {name}")))
    };
    let mut immutables = Vec::new();
    if let Some(refs) = json["immutableReferences"].as_object() {
        for ranges in refs.values() {
            for range in ranges.as_array().map(Vec::as_slice).unwrap_or_default() {
                let start = range["start"].as_u64().unwrap_or(0) as usize;
                let length = range["length"].as_u64().unwrap_or(0) as usize;
                immutables.push((start, length));
            }
        }
    }
    Ok(Artifact {
        bytecode: decode_hex(text("bytecode")?)?,
        runtime: decode_hex(text("deployedBytecode")?)?,
        immutables,
    })
}

/// Whether `code` is `artifact`'s runtime code with some values in the immutable slots.
fn runs(artifact: &Artifact, code: &[u8]) -> bool {
    if code.len() != artifact.runtime.len() {
        return false;
    }
    let mut masked = code.to_vec();
    for (start, length) in &artifact.immutables {
        if let Some(slot) = masked.get_mut(*start..start + length) {
            slot.fill(0);
        }
    }
    masked == artifact.runtime
}

/// Which `PaymentChannel` `code` is the runtime code of (immutables masked), if any.
pub fn payment_channel_version(code: &[u8]) -> Result<Option<ChannelVersion>, EthError> {
    if runs(artifact()?, code) {
        Ok(Some(ChannelVersion::Current))
    } else if runs(v1_artifact()?, code) {
        Ok(Some(ChannelVersion::V1))
    } else {
        Ok(None)
    }
}

/// Whether `code` is this version's contract's runtime code with some values in the immutable slots.
pub fn is_payment_channel_code(code: &[u8]) -> Result<bool, EthError> {
    Ok(payment_channel_version(code)? == Some(ChannelVersion::Current))
}

/// The address a contract deployed by `sender` with `nonce` gets: `keccak256(rlp([sender, nonce]))[12..]`.
pub fn create_address(sender: &Address, nonce: u64) -> Address {
    let encoded = rlp::encode(&Item::List(vec![
        Item::Bytes(sender.0.to_vec()),
        Item::u64(nonce),
    ]));
    let hash = keccak256(&encoded);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Address(out)
}

/// The digest a claim signs (before the EIP-191 prefix): `keccak256(uint256 chain ID ‖ channel ‖ uint256
/// amount)`, the contract's `abi.encodePacked(block.chainid, address(this), amount)`. The chain ID comes from
/// `eth_chainId` ([`Wallet::chain_id`]).
pub fn claim_digest(
    chain_id: u64,
    channel: &Address,
    amount: &BigUint,
) -> Result<[u8; 32], EthError> {
    let mut data = super::types::u256_word(&BigUint::from(chain_id))?.to_vec();
    data.extend_from_slice(&channel.0);
    data.extend_from_slice(&super::types::u256_word(amount)?);
    Ok(keccak256(&data))
}

/// The earlier contract's claim digest (`keccak256(channel ‖ uint256 amount)`, no chain ID): used only to tell
/// a peer still on an earlier release apart from a forger in the refusal.
pub fn v1_claim_digest(channel: &Address, amount: &BigUint) -> Result<[u8; 32], EthError> {
    let mut data = channel.0.to_vec();
    data.extend_from_slice(&super::types::u256_word(amount)?);
    Ok(keccak256(&data))
}

/// Init code deploying a channel to `payee` expiring at `expires_at` (Unix seconds): bytecode ‖ arguments.
pub fn payment_channel_init_code(payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    init_code(artifact()?, payee, expires_at)
}

/// [`payment_channel_init_code`] of the earlier contract ([`ChannelVersion::V1`]): for tests of the upgrade.
pub fn payment_channel_v1_init_code(payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    init_code(v1_artifact()?, payee, expires_at)
}

fn init_code(artifact: &Artifact, payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    let mut init = artifact.bytecode.clone();
    init.extend(abi::encode(&[
        Token::Address(*payee),
        Token::Uint(BigUint::from(expires_at)),
    ])?);
    Ok(init)
}

/// A channel's on-chain state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// Contract address.
    pub address: Address,
    /// Funder and signer.
    pub payer: Address,
    /// Who may close.
    pub payee: Address,
    /// Unix seconds from which the payer may reclaim.
    pub expires_at: u64,
    /// Closed or reclaimed.
    pub closed: bool,
    /// Current deposit, wei.
    pub balance: BigUint,
    /// Which contract it runs: only [`ChannelVersion::Current`] takes new claims.
    pub version: ChannelVersion,
}

/// Reads a channel; `Ok(None)` when there is no code at `address` (not deployed, or not yet).
/// `Err(NotAccepted)` when the code there is neither this version's contract nor the earlier one.
pub async fn read_channel(
    wallet: &Wallet,
    address: &Address,
) -> Result<Option<ChannelState>, ModuleError> {
    let rpc = wallet.rpc();
    let code = rpc.code(address).await?;
    if code.is_empty() {
        return Ok(None);
    }
    let version = payment_channel_version(&code)?.ok_or_else(|| {
        ModuleError::NotAccepted(format!("{address} is not a PaymentChannel contract"))
    })?;
    let call = |sig: &'static str| async move {
        rpc.eth_call(address, &abi::encode_call(sig, &[])?).await
    };
    let payer = Address::from_word(abi::word(&call("payer()").await?, 0)?)?;
    let payee = Address::from_word(abi::word(&call("payee()").await?, 0)?)?;
    let expires_at = u64::try_from(abi::uint_word(&call("expiresAt()").await?, 0)?)
        .map_err(|_| ModuleError::NotAccepted("channel expiry out of range".into()))?;
    let closed = !abi::uint_word(&call("closed()").await?, 0)?.is_zero();
    let balance = rpc.balance(address).await?;
    Ok(Some(ChannelState {
        address: *address,
        payer,
        payee,
        expires_at,
        closed,
        balance,
        version,
    }))
}

fn log_err(err: TransferLogError) -> ModuleError {
    match err {
        TransferLogError::Store(store) => ModuleError::Store(store),
        other => ModuleError::Ledger(format!("channel tx log: {other}")),
    }
}

fn parse_address(value: &Value) -> Option<Address> {
    value.as_str().and_then(|s| s.parse().ok())
}

fn parse_amount(value: &Value) -> Option<BigUint> {
    value
        .as_str()
        .and_then(|s| crate::iou::parse_amount(s).ok())
}

/// Where `channel` is in a list of claim entries (`{"channel": …}` objects).
fn retired_position(entries: &[Value], channel: &Address) -> Option<usize> {
    entries
        .iter()
        .position(|entry| parse_address(&entry["channel"]) == Some(*channel))
}

/// One signed claim: `amount` wei on `channel`, signed by the channel's payer.
#[derive(Clone, Debug)]
struct SignedClaim {
    channel: Address,
    amount: BigUint,
    signature: RecoverableSignature,
}

impl SignedClaim {
    /// `{"channel", "amount", "signature"}`, as on the wire.
    fn to_json(&self) -> Value {
        json!({
            "channel": self.channel.to_string(),
            "amount": self.amount.to_string(),
            "signature": encode_hex(&self.signature.to_bytes65()),
        })
    }
}

/// A parsed incoming claim: the claim on the payer's current channel and what it says about earlier ones.
struct WireClaim {
    current: SignedClaim,
    /// The payer's `base` (what its earlier channels carried): advisory, not signed.
    base: Option<BigUint>,
    /// The payer's final claims on channels it retired (each signed on its own).
    retired: Vec<SignedClaim>,
}

fn parse_signed_claim(value: &Value, what: &str) -> Result<SignedClaim, ModuleError> {
    let channel = parse_address(&value["channel"])
        .ok_or_else(|| ModuleError::InvalidFields(format!("{what}.channel must be an address")))?;
    let amount = parse_amount(&value["amount"]).ok_or_else(|| {
        ModuleError::InvalidFields(format!("{what}.amount must be a decimal string"))
    })?;
    // A claim is signed and closed as a uint256: a longer amount is the peer's error, not one to retry.
    if amount.bits() > UINT256_BITS {
        return Err(ModuleError::InvalidFields(format!(
            "{what}.amount exceeds {UINT256_BITS} bits"
        )));
    }
    let sig_bytes = value["signature"]
        .as_str()
        .map(decode_hex)
        .transpose()?
        .ok_or_else(|| ModuleError::InvalidFields(format!("{what}.signature missing")))?;
    let signature = RecoverableSignature::from_bytes65(&sig_bytes)?;
    Ok(SignedClaim {
        channel,
        amount,
        signature,
    })
}

fn parse_wire_claim(claim: &Claim) -> Result<WireClaim, ModuleError> {
    let Claim::Json(value) = claim else {
        return Err(ModuleError::InvalidFields(
            "eth-channel claims are JSON".to_owned(),
        ));
    };
    let current = parse_signed_claim(value, "claim")?;
    let base = match value.get("base") {
        None | Some(Value::Null) => None,
        Some(base) => Some(parse_amount(base).ok_or_else(|| {
            ModuleError::InvalidFields("claim.base must be a decimal string".into())
        })?),
    };
    let retired = match value.get("retired") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|entry| parse_signed_claim(entry, "claim.retired[]"))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ModuleError::InvalidFields(
                "claim.retired must be an array".into(),
            ))
        }
    };
    Ok(WireClaim {
        current,
        base,
        retired,
    })
}

/// Module settings beyond the common ones.
#[derive(Clone, Debug)]
struct ChannelSettings {
    deposit: BigUint,
    timeout_secs: u64,
    margin_secs: u64,
    check_interval: Duration,
}

/// A payer transaction to record and send: a deploy (`to: None`) or a top-up.
struct PayerTx {
    kind: &'static str,
    to: Option<Address>,
    value: BigUint,
    data: Vec<u8>,
}

/// Everything the module and its background check share.
#[derive(Debug)]
struct Inner {
    wallet: Wallet,
    common: CommonOptions,
    settings: ChannelSettings,
    peer: PeerAddress,
    settle_lock: tokio::sync::Mutex<()>,
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
        if let Some(handle) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            handle.abort();
        }
    }
}

impl EthChannelModule {
    /// Builds the module from its options (see the README "Module: eth-channel").
    pub fn from_options(options: &Value) -> Result<Self, ModuleError> {
        let common = CommonOptions::parse(options)?;
        let wallet = common.wallet(options)?;
        artifact()?;
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

    /// `Some((incoming fulfilled + prepared, best claim + maxUnsecured))` when the first exceeds the second.
    async fn unsecured_excess(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<(BigUint, BigUint)>, ModuleError> {
        let prepared = BigUint::from(ctx.main_log()?.sums().incoming_fulfilled_and_prepared);
        let secured = ctx
            .max_value_tracker(INCOMING_CLAIM_KEY)?
            .get_max()
            .await?
            .value
            + &self.inner.common.max_unsecured;
        Ok((prepared > secured).then_some((prepared, secured)))
    }

    /// Whether the payer owes us for fulfilled transfers beyond the best claim, so that asking it for its latest
    /// claim ([`RPC_LATEST_CLAIM`]) can raise what is secured.
    async fn claim_can_help(&self, ctx: &ChannelContext) -> Result<bool, ModuleError> {
        let fulfilled = BigUint::from(ctx.main_log()?.sums().incoming_fulfilled);
        let best = ctx
            .max_value_tracker(INCOMING_CLAIM_KEY)?
            .get_max()
            .await?
            .value;
        Ok(fulfilled > best)
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
        Ok(parse_address(&entry.data["address"]))
    }
}

impl Inner {
    async fn chain_now(&self) -> Result<u64, ModuleError> {
        Ok(self.wallet.rpc().latest_timestamp().await?)
    }

    // ---- payer ----

    /// Follows recorded payer transactions to the end; `false` if one is still undecided.
    async fn reconcile(&self, log: &dyn TransferLog) -> Result<bool, ModuleError> {
        let mut all_final = true;
        for record in log.prepared().await.map_err(log_err)? {
            if record.direction != Direction::Outgoing {
                continue;
            }
            let custom = record.transfer.custom.clone().unwrap_or(Value::Null);
            let (Some(hash), Some(raw), Some(nonce)) = (
                custom["txHash"]
                    .as_str()
                    .and_then(|s| s.parse::<TxHash>().ok()),
                custom["raw"].as_str().and_then(|s| decode_hex(s).ok()),
                custom["nonce"].as_u64(),
            ) else {
                return Err(ModuleError::Ledger(
                    "recorded channel tx is unreadable".into(),
                ));
            };
            info!(%hash, nonce, kind = ?custom["kind"], "reconciling channel transaction");
            match self.wallet.follow(&raw, &hash, nonce).await {
                Ok(status) => self.finish(log, &record, &hash, &status).await?,
                Err(err) => {
                    warn!(%hash, %err, "channel transaction still undecided");
                    all_final = false;
                }
            }
        }
        Ok(all_final)
    }

    async fn finish(
        &self,
        log: &dyn TransferLog,
        record: &TransferRecord,
        hash: &TxHash,
        status: &TxStatus,
    ) -> Result<(), ModuleError> {
        match status {
            TxStatus::Confirmed(_) => {
                log.fulfill(&record.transfer.id, &hash.0)
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Reverted(_) | TxStatus::Superseded => {
                warn!(%hash, ?status, "channel transaction did not happen");
                log.cancel(&record.transfer.id, "reverted or superseded")
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Unconfirmed | TxStatus::NotMined => {}
        }
        Ok(())
    }

    /// Signs, records (before broadcast), broadcasts and follows one payer transaction. `before_record`
    /// runs under the sender lock once the transaction is signed (opening writes the new channel there).
    async fn send_recorded(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
        tx: PayerTx,
        mut before_record: Option<(u64, Value)>,
    ) -> Result<(), ModuleError> {
        let PayerTx {
            kind,
            to,
            value,
            data,
        } = tx;
        let amount = u64::try_from(&value)
            .map_err(|_| ModuleError::InvalidFields("one deposit is at most 2^64-1 wei".into()))?;
        let (signed, record) = {
            let guard = self.wallet.lock_sender().await;
            let signed = self.wallet.sign_next(&guard, to, value, data).await?;
            let channel = match to {
                Some(addr) => addr,
                None => create_address(&self.wallet.address(), signed.nonce),
            };
            if let Some((seq, mut entry)) = before_record.take() {
                entry["address"] = json!(channel.to_string());
                let previous = ctx
                    .max_value_tracker(OUTGOING_CHANNEL_KEY)?
                    .set_if_max(MaxValue {
                        value: BigUint::from(seq),
                        data: entry,
                    })
                    .await?;
                if previous.value >= BigUint::from(seq) {
                    return Err(ModuleError::Ledger(
                        "channel record changed concurrently".into(),
                    ));
                }
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&signed.hash.0[..16]);
            let transfer = Transfer {
                id: TransferId(id),
                amount,
                execution_condition: Sha256::digest(signed.hash.0).into(),
                expires_at_ms: i64::MAX,
                ilp: Vec::new(),
                custom: Some(json!({
                    "kind": kind,
                    "channel": channel.to_string(),
                    "txHash": signed.hash.to_string(),
                    "raw": encode_hex(&signed.raw),
                    "nonce": signed.nonce,
                })),
            };
            log.prepare(&transfer, Direction::Outgoing)
                .await
                .map_err(log_err)?;
            info!(hash = %signed.hash, kind, %channel, amount, "channel transaction");
            if let Err(err) = self.wallet.broadcast(&signed.raw, &signed.hash).await {
                warn!(hash = %signed.hash, %err, "broadcast failed; following will retry");
            }
            (
                signed,
                TransferRecord {
                    transfer,
                    direction: Direction::Outgoing,
                    state: crate::store::TransferState::Prepared,
                },
            )
        };
        let status = self
            .wallet
            .follow(&signed.raw, &signed.hash, signed.nonce)
            .await?;
        self.finish(log, &record, &signed.hash, &status).await?;
        match status {
            TxStatus::Confirmed(_) => Ok(()),
            other => Err(ModuleError::Ledger(format!(
                "{kind} transaction {} failed: {other:?}",
                signed.hash
            ))),
        }
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &BigUint,
    ) -> Result<Option<Claim>, ModuleError> {
        let _settling = self.settle_lock.lock().await;
        let log = ctx.transfer_log(CHANNEL_TXS_LOG_KEY)?;
        if !self.reconcile(log.as_ref()).await? {
            return Err(ModuleError::Ledger(
                "an earlier channel transaction is still pending".into(),
            ));
        }
        let claims = ctx.max_value_tracker(OUTGOING_CLAIM_KEY)?;
        let best = claims.get_max().await?;
        if *total <= best.value {
            return Ok(Self::claim_from(&best.data));
        }
        if self.settings.deposit.is_zero() {
            return Err(ModuleError::InvalidFields(format!(
                "{OPT_CHANNEL_DEPOSIT} must be set to pay over eth-channel"
            )));
        }
        let chain_id = self.wallet.chain_id().await?;
        let peer = self.peer.get(ctx, chain_id).await?;
        let channels = ctx.max_value_tracker(OUTGOING_CHANNEL_KEY)?;
        for _ in 0..MAX_FUNDING_ROUNDS {
            let entry = channels.get_max().await?;
            let current = match parse_address(&entry.data["address"]) {
                Some(address) => read_channel(&self.wallet, &address).await?,
                None => None,
            };
            let now = self.chain_now().await?;
            let usable = current.filter(|c| {
                // A channel of the earlier contract takes no claims the payee would accept: open a new one.
                c.version == ChannelVersion::Current
                    && !c.closed
                    && c.payee == peer
                    && c.payer == self.wallet.address()
                    && c.expires_at >= now.saturating_add(self.settings.margin_secs * 2)
            });
            let Some(channel) = usable else {
                // Open a new channel whose claims start after everything signed so far.
                let base = &best.value;
                let needed = total - base;
                // One transaction carries at most 2^64-1 wei (a transfer log amount); the funding loop tops
                // up the rest on its next round.
                let deposit = needed
                    .max(self.settings.deposit.clone())
                    .min(BigUint::from(MAX_DEPOSIT_PER_TX_WEI));
                let mut retired: Vec<Value> = entry.data["retired"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if let Some(old) = entry.data.get("address") {
                    retired.push(old.clone());
                }
                let retired_claims = self.retired_claims_to_carry(&entry, &best, now).await;
                let seq = u64::try_from(&entry.value).unwrap_or(u64::MAX - 1) + 1;
                let expires = now + self.settings.timeout_secs;
                let init = payment_channel_init_code(&peer, expires)?;
                self.send_recorded(
                    ctx,
                    log.as_ref(),
                    PayerTx {
                        kind: "open",
                        to: None,
                        value: deposit,
                        data: init,
                    },
                    Some((
                        seq,
                        json!({
                            "base": base.to_string(),
                            "retired": retired,
                            "expiresAt": expires,
                            "retiredClaims": retired_claims,
                        }),
                    )),
                )
                .await?;
                continue;
            };
            let base = parse_amount(&entry.data["base"])
                .ok_or_else(|| ModuleError::Ledger("channel record lacks base".into()))?;
            let amount = total - &base;
            if amount > channel.balance {
                let top_up = (&amount - &channel.balance).max(self.settings.deposit.clone());
                let top_up = top_up.min(BigUint::from(MAX_DEPOSIT_PER_TX_WEI));
                let data = abi::encode_call("deposit()", &[])?;
                self.send_recorded(
                    ctx,
                    log.as_ref(),
                    PayerTx {
                        kind: "deposit",
                        to: Some(channel.address),
                        value: top_up,
                        data,
                    },
                    None,
                )
                .await?;
                continue;
            }
            let digest = claim_digest(chain_id, &channel.address, &amount)?;
            let signature = self.wallet.key().sign_personal(&digest)?;
            let mut data = json!({
                "channel": channel.address.to_string(),
                "amount": amount.to_string(),
                "signature": encode_hex(&signature.to_bytes65()),
                "base": base.to_string(),
            });
            let retired_claims: Vec<Value> = entry.data["retiredClaims"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|c| c["expiresAt"].as_u64().is_none_or(|at| at > now))
                .map(|c| {
                    json!({
                        "channel": c["channel"],
                        "amount": c["amount"],
                        "signature": c["signature"],
                    })
                })
                .collect();
            if !retired_claims.is_empty() {
                data["retired"] = json!(retired_claims);
            }
            claims
                .set_if_max(MaxValue {
                    value: total.clone(),
                    data: data.clone(),
                })
                .await?;
            return Ok(Some(Claim::Json(data)));
        }
        Err(ModuleError::Ledger(
            "could not fund a channel for this settlement".into(),
        ))
    }

    /// Payer, opening a new channel: the final claims on retired channels that the payee may still close,
    /// to carry on the new channel's claims. Those of the record `entry` (the current channel's) plus the best
    /// claim signed (`best`) if it is on the channel being retired, minus those closed or expired (chain
    /// reads: opening is rare), at most the [`MAX_RETIRED_CLAIMS`] most recent. Each keeps `expiresAt`, so
    /// claims stop carrying it once it expired. A channel that cannot be read is kept: the payee checks.
    async fn retired_claims_to_carry(
        &self,
        entry: &MaxValue,
        best: &MaxValue,
        now: u64,
    ) -> Vec<Value> {
        let mut claims: Vec<Value> = entry.data["retiredClaims"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(old) = parse_address(&entry.data["address"]) {
            let on_old = parse_address(&best.data["channel"]) == Some(old);
            if on_old
                && best.data.get("signature").is_some()
                && retired_position(&claims, &old).is_none()
            {
                claims.push(json!({
                    "channel": old.to_string(),
                    "amount": best.data["amount"],
                    "signature": best.data["signature"],
                    "expiresAt": entry.data["expiresAt"],
                }));
            }
        }
        let mut kept = Vec::new();
        for claim in claims {
            if claim["expiresAt"].as_u64().is_some_and(|at| at <= now) {
                continue;
            }
            let Some(address) = parse_address(&claim["channel"]) else {
                continue;
            };
            match read_channel(&self.wallet, &address).await {
                // The payee refuses claims on the earlier contract's channels: nothing to carry.
                Ok(Some(state)) if state.closed || state.version != ChannelVersion::Current => {}
                Ok(None) => {}
                Ok(Some(_)) => kept.push(claim),
                Err(err) => {
                    warn!(%address, %err, "could not read a retired channel; still carrying its claim");
                    kept.push(claim);
                }
            }
        }
        let skip = kept.len().saturating_sub(MAX_RETIRED_CLAIMS);
        kept.split_off(skip)
    }

    fn claim_from(data: &Value) -> Option<Claim> {
        if data.get("signature").is_some() {
            Some(Claim::Json(data.clone()))
        } else {
            None
        }
    }

    async fn reclaim_expired(&self, ctx: &ChannelContext) -> Result<Vec<TxHash>, ModuleError> {
        let entry = ctx
            .max_value_tracker(OUTGOING_CHANNEL_KEY)?
            .get_max()
            .await?;
        let now = self.chain_now().await?;
        let mut sent = Vec::new();
        for old in entry.data["retired"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(address) = parse_address(old) else {
                continue;
            };
            let Some(state) = read_channel(&self.wallet, &address).await? else {
                continue;
            };
            let reclaimable = !state.balance.is_zero() && (state.closed || now >= state.expires_at);
            if !reclaimable || state.payer != self.wallet.address() {
                continue;
            }
            let status = self
                .wallet
                .send_and_follow(
                    Some(address),
                    BigUint::zero(),
                    abi::encode_call("reclaim()", &[])?,
                )
                .await?;
            match status {
                TxStatus::Confirmed(receipt) => {
                    info!(%address, refunded = %state.balance, "channel reclaimed");
                    sent.push(receipt.transaction_hash);
                }
                other => warn!(%address, ?other, "reclaim failed"),
            }
        }
        Ok(sent)
    }

    // ---- payee ----

    /// Notes a channel whose claims can never count again (closed, or within the margin of its expiry).
    fn remember_dead(&self, channel: Address) {
        let mut dead = self.dead_channels.lock().unwrap_or_else(|p| p.into_inner());
        if dead.len() >= MAX_DEAD_CHANNELS_REMEMBERED {
            dead.clear();
        }
        dead.insert(channel);
    }

    fn is_dead(&self, channel: &Address) -> bool {
        self.dead_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(channel)
    }

    /// Notes a retired claim refused for a lasting reason, so carrying it again costs no chain read.
    fn remember_refused(&self, claim: &SignedClaim) {
        let mut refused = self
            .refused_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if refused.len() >= MAX_REFUSED_CLAIMS_REMEMBERED {
            refused.clear();
        }
        refused.insert((claim.channel, claim.amount.clone()));
    }

    fn was_refused(&self, claim: &SignedClaim) -> bool {
        self.refused_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(claim.channel, claim.amount.clone()))
    }

    /// How long a close waits for an uncommitted raise: [`UNCOMMITTED_RAISE_WINDOW_SECS`], at most half the
    /// close margin (a raised channel had more than the margin left, so the wait ends before its expiry).
    fn uncommitted_window(&self) -> Duration {
        Duration::from_secs(UNCOMMITTED_RAISE_WINDOW_SECS.min(self.settings.margin_secs / 2))
    }

    /// Notes that `amount` was accepted on `channel` and may not be in the tracker yet (call under
    /// `close_lock`). Forgets notes older than the window.
    fn note_uncommitted(&self, channel: Address, amount: &BigUint) {
        let window = self.uncommitted_window();
        let mut notes = self.uncommitted.lock().unwrap_or_else(|p| p.into_inner());
        notes.retain(|_, (_, since)| since.elapsed() < window);
        let now = Instant::now();
        let note = notes
            .entry(channel)
            .or_insert_with(|| (amount.clone(), now));
        if *amount >= note.0 {
            *note = (amount.clone(), now);
        }
    }

    /// Whether `channel` may be closed with `recorded` (what the tracker holds on it): no raise above it was
    /// accepted within the window. A raise the tracker caught up with, or one older than the window (its
    /// request was dropped before the commit), is forgotten.
    fn may_close_with(&self, channel: &Address, recorded: &BigUint) -> bool {
        let window = self.uncommitted_window();
        let mut notes = self.uncommitted.lock().unwrap_or_else(|p| p.into_inner());
        let Some((raised, since)) = notes.get(channel) else {
            return true;
        };
        if recorded >= raised {
            notes.remove(channel);
            return true;
        }
        if since.elapsed() < window {
            return false;
        }
        warn!(%channel, %raised, %recorded, "an accepted claim was never recorded; closing with the recorded one");
        notes.remove(channel);
        true
    }

    /// Refuses (as a ledger error, so the claim is sent or pulled again later) while a transaction of our
    /// wallet is pending: it may be a close of a channel that the chain still shows open.
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

    /// Credits an incoming claim (see the module docs, "Retired claims"). The tracker `incoming_claim` holds
    /// `value` = everything credited, and in its data the current channel's best claim, `base` (what the
    /// retired channels carry: `value = base + amount`) and `retired` (each retired channel's best claim and
    /// the cumulative total through it). Retired claims on the wire raise a retired channel's amount (or add a
    /// channel we never had a claim on), each difference credited once: a claim that is not above what we
    /// hold costs nothing, one refused by a check is skipped, and one that could not be checked (chain
    /// unreachable) fails the whole claim so that it is retried. The base of a new channel is what we can
    /// prove (`value` after the retired claims), never the payer's stated `base`, which is only compared.
    ///
    /// Never closes a channel itself: the context may be staged (an engine commits its tracker writes after
    /// this returns, or never if the request is dropped). It notes each accepted amount (`uncommitted`, so no
    /// close goes below it meanwhile) and wakes the background check, which closes retired channels with what
    /// the committed tracker holds.
    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: &Claim,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let wire = parse_wire_claim(claim)?;
        let claim = &wire.current;
        let chain_id = self.wallet.chain_id().await?;
        let peer = self.peer.get(ctx, chain_id).await?;
        let crediting = self.credit_lock.lock().await;
        let tracker = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?;
        let best = tracker.get_max().await?;
        let best_channel = parse_address(&best.data["channel"]);
        let mut current_amount = parse_amount(&best.data["amount"]).unwrap_or_default();
        let mut current_signature = best.data.get("signature").cloned();
        let mut base = parse_amount(&best.data["base"]).unwrap_or_default();
        let mut retired: Vec<Value> = best.data["retired"].as_array().cloned().unwrap_or_default();
        let mut value = best.value.clone();
        let same_channel = best_channel == Some(claim.channel);
        let current_is_new = !(same_channel && claim.amount <= current_amount);
        // Held from the first chain check of a claim that raises a channel until that amount is noted in
        // `uncommitted`: a close is either seen by the check or sees the note.
        let mut closing = None;
        if current_is_new {
            if retired_position(&retired, &claim.channel).is_some() {
                return Err(ModuleError::NotAccepted(format!(
                    "channel {} is retired",
                    claim.channel
                )));
            }
            self.check_signature(chain_id, &peer, claim)?;
            closing = Some(self.close_lock.lock().await);
            self.ensure_nothing_pending().await?;
            self.check_on_chain(&peer, claim).await?;
        }

        // Claims on the channels the payer retired: what it signed there may never have reached us.
        let mut raised: Vec<(Address, BigUint)> = Vec::new();
        let mut retired_gain = BigUint::zero();
        let mut retired_changed = false;
        if wire.retired.len() > MAX_RETIRED_CLAIMS {
            warn!(
                count = wire.retired.len(),
                max = MAX_RETIRED_CLAIMS,
                "claim carries too many retired claims; checking the first ones only"
            );
        }
        for old in wire.retired.iter().take(MAX_RETIRED_CLAIMS) {
            if old.channel == claim.channel {
                warn!(channel = %old.channel, "retired claim on the claim's own channel ignored");
                continue;
            }
            let on_current = best_channel == Some(old.channel);
            let position = retired_position(&retired, &old.channel);
            // What we hold on that channel: nothing if it is new to us. A record we cannot read is never
            // taken for nothing (that would credit the channel twice): its claims are skipped.
            let held = if on_current {
                // As raised by an earlier entry of this claim, if one was.
                parse_amount(&best.data["amount"]).map(|_| current_amount.clone())
            } else {
                match position {
                    Some(i) => parse_amount(&retired[i]["amount"]),
                    None => Some(BigUint::zero()),
                }
            };
            let Some(held) = held else {
                warn!(channel = %old.channel, "our record of this channel is unreadable; retired claim skipped");
                continue;
            };
            if old.amount <= held || self.is_dead(&old.channel) || self.was_refused(old) {
                continue;
            }
            // A forged entry costs neither a chain read nor a wait for the close lock.
            if let Err(err) = self.check_signature(chain_id, &peer, old) {
                warn!(channel = %old.channel, amount = %old.amount, %err, "retired claim refused");
                continue;
            }
            if closing.is_none() {
                closing = Some(self.close_lock.lock().await);
                self.ensure_nothing_pending().await?;
            }
            match self.check_on_chain(&peer, old).await {
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
            let gain = &old.amount - &held;
            let signature = json!(encode_hex(&old.signature.to_bytes65()));
            if on_current {
                current_amount = old.amount.clone();
                current_signature = Some(signature);
            } else {
                base += &gain;
                retired_changed = true;
                match position {
                    Some(i) => {
                        retired[i]["amount"] = json!(old.amount.to_string());
                        retired[i]["signature"] = signature;
                        // The totals through this channel and every one retired after it grow by the gain.
                        for later in retired.iter_mut().skip(i) {
                            let cumulative =
                                parse_amount(&later["cumulative"]).unwrap_or_default() + &gain;
                            later["cumulative"] = json!(cumulative.to_string());
                        }
                    }
                    None => {
                        let mut entry = old.to_json();
                        entry["cumulative"] = json!((&value + &gain).to_string());
                        retired.push(entry);
                    }
                }
            }
            value += &gain;
            retired_gain += &gain;
            raised.push((old.channel, old.amount.clone()));
            info!(channel = %old.channel, amount = %old.amount, %gain, "retired channel claim accepted");
        }
        if !current_is_new && retired_gain.is_zero() {
            return Ok(None);
        }
        // A close of ours still pending (its follow timed out, or an earlier process sent it, e.g. at
        // disconnect) is invisible to the checks above, which read the latest block: so whenever a channel is
        // read here, `ensure_nothing_pending` ran first, under `close_lock` (no close of ours starts after it,
        // and one mined in between is seen closed by the read).

        let moved = current_is_new && !same_channel;
        if moved {
            if let (Some(old), Some(sig)) = (best_channel, current_signature.clone()) {
                retired.push(json!({
                    "channel": old.to_string(),
                    "amount": current_amount.to_string(),
                    "signature": sig,
                    "cumulative": value.to_string(),
                }));
                retired_changed = true;
            }
            base = value.clone();
        }
        if current_is_new {
            current_amount = claim.amount.clone();
            current_signature = Some(json!(encode_hex(&claim.signature.to_bytes65())));
            raised.push((claim.channel, claim.amount.clone()));
        }
        let cumulative = &base + &current_amount;
        if let Some(stated) = wire.base.as_ref().filter(|stated| **stated != base) {
            // We credit only what we can close: the payer's figure is not ours to trust. Said loudly once per
            // new channel or raise, not on every claim after it.
            if moved || !retired_gain.is_zero() {
                warn!(%stated, proven = %base, channel = %claim.channel,
                    "the payer's base differs from what its retired claims prove");
            } else {
                debug!(%stated, proven = %base, channel = %claim.channel, "payer's base differs");
            }
        }
        if cumulative < best.value {
            return Err(ModuleError::Ledger(
                "incoming claim record is inconsistent (value above base + amount)".into(),
            ));
        }
        let increase = &cumulative - &best.value;
        // The chain reads took a while: the peer's identity may have been taken over meanwhile (an operator
        // assignment, a configured claim by another account). Re-check it right before recording the credit.
        let again = self.peer.get(ctx, chain_id).await?;
        if again != peer {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's address changed from {peer} to {again} while its claim was checked"
            )));
        }
        let mut data = json!({
            // A new claim is on our current channel or moves us to its own; an old one is on the current one.
            "channel": claim.channel.to_string(),
            "amount": current_amount.to_string(),
            "base": base.to_string(),
            "retired": retired,
        });
        if let Some(sig) = current_signature {
            data["signature"] = sig;
        }
        let previous = tracker
            .set_if_max(MaxValue {
                value: cumulative.clone(),
                data,
            })
            .await?;
        if previous.value != best.value {
            return Err(ModuleError::Ledger(
                "incoming claim changed concurrently".into(),
            ));
        }
        for (channel, amount) in &raised {
            self.note_uncommitted(*channel, amount);
        }
        drop(closing);
        drop(crediting);
        info!(channel = %claim.channel, amount = %claim.amount, %increase, %retired_gain, "incoming claim accepted");
        if retired_changed {
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
            amount: increase,
            settlement_id,
        }))
    }

    /// Closes channels with their best claims: the retired ones always, the current one when `all` or when
    /// its expiry is within the margin. Already closed channels are skipped, so repeating is harmless. A
    /// channel with an accepted amount above the recorded one (not committed yet) is put off (`deferred`).
    async fn submit_claims(&self, ctx: &ChannelContext, all: bool) -> Result<Closes, ModuleError> {
        let _closing = self.close_lock.lock().await;
        let best = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?.get_max().await?;
        let mut candidates: Vec<(Value, bool, BigUint)> = Vec::new();
        for r in best.data["retired"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let cumulative = parse_amount(&r["cumulative"]).unwrap_or_default();
            candidates.push((r.clone(), true, cumulative));
        }
        if best.data.get("signature").is_some() {
            candidates.push((best.data.clone(), all, best.value.clone()));
        }
        let now = self.chain_now().await?;
        let submitted = ctx.max_value_tracker(INCOMING_SUBMITTED_KEY)?;
        let mut closes = Closes::default();
        for (entry, force, cumulative) in candidates {
            let (Some(channel), Some(amount)) = (
                parse_address(&entry["channel"]),
                parse_amount(&entry["amount"]),
            ) else {
                continue;
            };
            let Some(state) = read_channel(&self.wallet, &channel).await? else {
                continue;
            };
            if state.closed || amount.is_zero() {
                continue;
            }
            let expiring = now.saturating_add(self.settings.margin_secs) >= state.expires_at;
            if !force && !expiring {
                continue;
            }
            if !self.may_close_with(&channel, &amount) {
                info!(%channel, recorded = %amount, "close put off: a higher accepted claim is not recorded yet");
                closes.deferred = true;
                continue;
            }
            let signature = entry["signature"]
                .as_str()
                .map(decode_hex)
                .transpose()?
                .ok_or_else(|| ModuleError::Ledger("stored claim lacks its signature".into()))?;
            let data = abi::encode_call(
                "close(uint256,bytes)",
                &[Token::Uint(amount.clone()), Token::Bytes(signature)],
            )?;
            match self
                .wallet
                .send_and_follow(Some(channel), BigUint::zero(), data)
                .await?
            {
                TxStatus::Confirmed(receipt) => {
                    info!(%channel, %amount, hash = %receipt.transaction_hash, "channel closed with best claim");
                    submitted
                        .set_if_max(MaxValue {
                            value: cumulative,
                            data: json!({
                                "channel": channel.to_string(),
                                "amount": amount.to_string(),
                                "txHash": receipt.transaction_hash.to_string(),
                            }),
                        })
                        .await?;
                    closes.sent.push(receipt.transaction_hash);
                }
                other => warn!(%channel, ?other, "close transaction failed"),
            }
        }
        Ok(closes)
    }
}

/// What one [`Inner::submit_claims`] run did.
#[derive(Debug, Default)]
struct Closes {
    /// Close transactions confirmed.
    sent: Vec<TxHash>,
    /// A close was put off for an uncommitted raise: look again soon.
    deferred: bool,
}

#[async_trait]
impl ChannelModule for EthChannelModule {
    fn name(&self) -> &str {
        ETH_CHANNEL_MODULE_NAME
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
        // Weak references, so the watcher keeps neither the module nor the host's stores alive.
        let weak_inner = Arc::downgrade(inner);
        let weak_ctx = ctx.downgrade();
        let check_interval = inner.settings.check_interval;
        let recheck = Duration::from_millis(UNCOMMITTED_RAISE_RECHECK_MS);
        let wakeup = Arc::clone(&inner.close_wakeup);
        let handle = tokio::spawn(async move {
            let mut wait = check_interval;
            loop {
                // Woken early when the payer retired or raised a channel (see `handle_incoming_claim`).
                let woken = tokio::select! {
                    () = tokio::time::sleep(wait) => false,
                    () = wakeup.notified() => true,
                };
                let (Some(watcher_inner), Some(watcher_ctx)) =
                    (weak_inner.upgrade(), weak_ctx.upgrade())
                else {
                    return;
                };
                // After a wake-up, look once more shortly: an engine commits the claim's records just after
                // the module returned, possibly after this check read them.
                wait = match watcher_inner.submit_claims(&watcher_ctx, false).await {
                    Ok(closes) if closes.deferred || woken => recheck,
                    Ok(_) => check_interval,
                    Err(err) => {
                        warn!(%err, "expiry check failed");
                        check_interval
                    }
                };
            }
        });
        if let Some(old) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(handle)
        {
            old.abort();
        }
        Ok(())
    }

    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        if let Some(handle) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
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
        total: &BigUint,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_address_matches_known_vector() -> Result<(), EthError> {
        // The first contract deployed by anvil's dev account 0 lands here (widely used in Foundry docs).
        let sender: Address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266".parse()?;
        assert_eq!(
            create_address(&sender, 0).to_string(),
            "0x5fbdb2315678afecb367f032d93f642f64180aa3"
        );
        Ok(())
    }

    #[test]
    fn artifact_parses_and_runtime_check_masks_immutables() -> Result<(), EthError> {
        let a = artifact()?;
        assert!(!a.bytecode.is_empty());
        assert!(!a.immutables.is_empty());
        let mut code = a.runtime.clone();
        let (start, len) = a.immutables[0];
        code[start..start + len].fill(0xaa);
        assert!(is_payment_channel_code(&code)?);
        let mut tampered = code.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(!is_payment_channel_code(&tampered)?);
        assert!(!is_payment_channel_code(&code[1..])?);
        Ok(())
    }

    #[test]
    fn the_earlier_contract_is_recognised_as_v1_and_not_as_current() -> Result<(), EthError> {
        let (current, v1) = (artifact()?, v1_artifact()?);
        assert_ne!(current.runtime, v1.runtime);
        for (a, version) in [(current, ChannelVersion::Current), (v1, ChannelVersion::V1)] {
            let mut code = a.runtime.clone();
            for (start, len) in &a.immutables {
                code[*start..start + len].fill(0x5c);
            }
            assert_eq!(payment_channel_version(&code)?, Some(version));
            assert_eq!(
                is_payment_channel_code(&code)?,
                version == ChannelVersion::Current
            );
        }
        assert_eq!(payment_channel_version(&[0x60, 0x80])?, None);
        Ok(())
    }

    #[test]
    fn claim_digests_commit_to_the_chain_and_differ_from_the_earlier_digest() -> Result<(), EthError>
    {
        let channel: Address = "0xbded0d2bf404bdcba897a74e6657f1f12e5c6fb6".parse()?;
        let amount = BigUint::from(3_000_000u32);
        let on_a = claim_digest(31337, &channel, &amount)?;
        assert_ne!(on_a, claim_digest(31338, &channel, &amount)?);
        assert_ne!(on_a, v1_claim_digest(&channel, &amount)?);
        // The preimage is abi.encodePacked(uint256 chainid, address, uint256 amount): 32 + 20 + 32 bytes.
        let mut preimage = [0u8; 84];
        preimage[24..32].copy_from_slice(&31337u64.to_be_bytes());
        preimage[32..52].copy_from_slice(&channel.0);
        preimage[80..84].copy_from_slice(&3_000_000u32.to_be_bytes());
        assert_eq!(on_a, keccak256(&preimage));
        Ok(())
    }

    #[test]
    fn wire_claims_are_parsed_strictly() {
        let good = json!({
            "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "amount": "10",
            "signature": format!("0x{}1b", "11".repeat(64)),
        });
        assert!(parse_wire_claim(&Claim::Json(good.clone())).is_ok());
        let mut bad = good.clone();
        bad["amount"] = json!(10);
        assert!(parse_wire_claim(&Claim::Json(bad)).is_err());
        let mut bad = good;
        bad["signature"] = json!("0x1234");
        assert!(parse_wire_claim(&Claim::Json(bad)).is_err());
        assert!(parse_wire_claim(&Claim::Text("x".into())).is_err());
    }

    #[test]
    fn a_claim_amount_beyond_256_bits_is_refused_as_invalid_not_retried() {
        // Amount strings may be longer than any uint256 (the shared bound is set by RFC 38 requests); such an
        // amount can never be signed or closed, so it is the peer's error, not a ledger one to retry.
        let claim = |amount: String| {
            Claim::Json(json!({
                "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
                "amount": amount,
                "signature": format!("0x{}1b", "11".repeat(64)),
            }))
        };
        let max = (BigUint::from(1u8) << 256u32) - 1u8;
        assert!(parse_wire_claim(&claim(max.to_string())).is_ok());
        match parse_wire_claim(&claim((max + 1u8).to_string())) {
            Err(ModuleError::InvalidFields(_)) => {}
            Ok(_) => panic!("a claim of 2^256 wei was accepted"),
            Err(other) => panic!("a claim of 2^256 wei was refused as {other:?}"),
        }
    }

    #[test]
    fn base_and_retired_claims_are_optional_and_parsed_strictly() -> Result<(), ModuleError> {
        let entry = json!({
            "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "amount": "100",
            "signature": format!("0x{}1c", "22".repeat(64)),
        });
        let mut claim = json!({
            "channel": "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
            "amount": "10",
            "signature": format!("0x{}1b", "11".repeat(64)),
        });
        let plain = parse_wire_claim(&Claim::Json(claim.clone()))?;
        assert!(plain.base.is_none() && plain.retired.is_empty());
        claim["base"] = json!("100");
        claim["retired"] = json!([entry.clone()]);
        let full = parse_wire_claim(&Claim::Json(claim.clone()))?;
        assert_eq!(full.base, Some(BigUint::from(100u32)));
        assert_eq!(full.retired.len(), 1);
        assert_eq!(full.retired[0].amount, BigUint::from(100u32));
        assert_eq!(full.retired[0].to_json(), entry);
        assert_eq!(full.current.amount, BigUint::from(10u32));
        for (field, bad) in [
            ("base", json!(100)),
            ("retired", json!(entry.clone())),
            (
                "retired",
                json!([{ "channel": "0x12", "amount": "1", "signature": entry["signature"] }]),
            ),
            (
                "retired",
                json!([{ "channel": entry["channel"], "amount": "1" }]),
            ),
        ] {
            let mut bad_claim = claim.clone();
            bad_claim[field] = bad;
            assert!(
                matches!(
                    parse_wire_claim(&Claim::Json(bad_claim)),
                    Err(ModuleError::InvalidFields(_))
                ),
                "{field}"
            );
        }
        Ok(())
    }
}
