//! `eth-channel`: a claim-based module on one-way payment channel contracts
//! (`channel-modules/contracts/PaymentChannel.sol`, one contract per channel).
//!
//! Payer side: the first settlement deploys a channel to the peer with `channelDeposit` wei and an expiry
//! `channelTimeoutSecs` ahead; each settlement signs a cumulative claim (EIP-191 over
//! `keccak256(contract ‖ amount)`), topping the deposit up first when the claim would exceed it, and moving to
//! a new channel when the current one is closed or has less than two `closeMarginSecs` left. Expired old
//! channels are reclaimed (`reclaimExpired`, also run at connect). Every payer transaction (deploy, top-up) is
//! recorded in the transfer log `eth_channel_txs` with its signed raw bytes *before* it is broadcast, and
//! followed to the end at the next call or connect, so a crash never deposits twice.
//!
//! Payee side: a claim counts only if the contract's runtime code is our `PaymentChannel` (immutables
//! masked), its payer is the peer and its payee is us, it is open with at least `closeMarginSecs` left, the
//! amount is within the deposit, and the signature recovers to the payer. The best claim is kept in the
//! max-value tracker `incoming_claim` (value: the cumulative amount credited over all channels). The payee
//! closes the channel with it on disconnect, when the payer moves to a new channel, and (a background check
//! every `expiryCheckIntervalMs`) when the expiry comes within `closeMarginSecs`. Before refusing a transfer
//! over `maxUnsecured`, the payee asks the payer for its current claim (RPC `eth_latest_claim`, see
//! [`super::peer`]): a claim lost with a Fulfill response or a payer restart does not block the trustline. It
//! asks only when fulfilled transfers exceed the best claim, rate-limited per account
//! ([`super::peer::PullLimiter`]). The peer's address is configured or proven (`eth_address`, [`super::peer`]).
//!
//! Claims on the wire: `Claim::Json({"channel": "0x…", "amount": "<wei on this channel>", "signature": "0x…"})`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::abi::{self, Token};
use super::key::{eip191_hash, recover_address, RecoverableSignature};
use super::options::{amount_option, u64_option, CommonOptions};
use super::peer::{latest_claim_reply, pull_latest_claim, PeerAddress, PullLimiter};
use super::rlp::{self, Item};
use super::types::{decode_hex, encode_hex, keccak256, Address, TxHash};
use super::wallet::{TxStatus, Wallet};
use super::EthError;
use crate::context::ChannelContext;
use crate::module::{ChannelModule, Claim, IncomingCredit, ModuleError};
use crate::store::{
    Direction, Limit, MaxValue, Transfer, TransferId, TransferLog, TransferLogError, TransferRecord,
};

/// Stock name.
pub const ETH_CHANNEL_MODULE_NAME: &str = "eth-channel";
/// The compiled contract (`contracts/build.sh` regenerates it from `PaymentChannel.sol`).
pub const PAYMENT_CHANNEL_ARTIFACT: &str = include_str!("../../contracts/PaymentChannel.json");
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
/// Default payee expiry check interval: 1 minute.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL_MS: u64 = 60_000;
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

/// The compiled contract, parsed once.
struct Artifact {
    bytecode: Vec<u8>,
    runtime: Vec<u8>,
    immutables: Vec<(usize, usize)>,
}

fn artifact() -> Result<&'static Artifact, EthError> {
    static ARTIFACT: OnceLock<Result<Artifact, EthError>> = OnceLock::new();
    ARTIFACT
        .get_or_init(|| {
            let json: Value = serde_json::from_str(PAYMENT_CHANNEL_ARTIFACT)
                .map_err(|e| EthError::BadResponse(format!("artifact: {e}")))?;
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
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether `code` is our contract's runtime code with some values in the immutable slots.
pub fn is_payment_channel_code(code: &[u8]) -> Result<bool, EthError> {
    let artifact = artifact()?;
    if code.len() != artifact.runtime.len() {
        return Ok(false);
    }
    let mut masked = code.to_vec();
    for (start, length) in &artifact.immutables {
        if let Some(slot) = masked.get_mut(*start..start + length) {
            slot.fill(0);
        }
    }
    Ok(masked == artifact.runtime)
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

/// The digest a claim signs (before the EIP-191 prefix): `keccak256(channel ‖ uint256 amount)`.
pub fn claim_digest(channel: &Address, amount: &BigUint) -> Result<[u8; 32], EthError> {
    let mut data = channel.0.to_vec();
    data.extend_from_slice(&super::types::u256_word(amount)?);
    Ok(keccak256(&data))
}

/// Init code deploying a channel to `payee` expiring at `expires_at` (Unix seconds): bytecode ‖ arguments.
pub fn payment_channel_init_code(payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    let mut init = artifact()?.bytecode.clone();
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
}

/// Reads a channel; `Ok(None)` when there is no code at `address` (not deployed, or not yet).
/// `Err(NotAccepted)` when the code there is not our contract.
pub async fn read_channel(
    wallet: &Wallet,
    address: &Address,
) -> Result<Option<ChannelState>, ModuleError> {
    let rpc = wallet.rpc();
    let code = rpc.code(address).await?;
    if code.is_empty() {
        return Ok(None);
    }
    if !is_payment_channel_code(&code)? {
        return Err(ModuleError::NotAccepted(format!(
            "{address} is not a PaymentChannel contract"
        )));
    }
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
    value.as_str().and_then(|s| s.parse().ok())
}

/// A parsed incoming claim.
struct WireClaim {
    channel: Address,
    amount: BigUint,
    signature: RecoverableSignature,
}

fn parse_wire_claim(claim: &Claim) -> Result<WireClaim, ModuleError> {
    let Claim::Json(value) = claim else {
        return Err(ModuleError::InvalidFields(
            "eth-channel claims are JSON".to_owned(),
        ));
    };
    let channel = parse_address(&value["channel"])
        .ok_or_else(|| ModuleError::InvalidFields("claim.channel must be an address".into()))?;
    let amount = parse_amount(&value["amount"]).ok_or_else(|| {
        ModuleError::InvalidFields("claim.amount must be a decimal string".into())
    })?;
    let sig_bytes = value["signature"]
        .as_str()
        .map(decode_hex)
        .transpose()?
        .ok_or_else(|| ModuleError::InvalidFields("claim.signature missing".into()))?;
    let signature = RecoverableSignature::from_bytes65(&sig_bytes)?;
    Ok(WireClaim {
        channel,
        amount,
        signature,
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
    pub async fn submit_if_expiring(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Vec<TxHash>, ModuleError> {
        self.inner.submit_claims(ctx, false).await
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
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let channels = ctx.max_value_tracker(OUTGOING_CHANNEL_KEY)?;
        for _ in 0..MAX_FUNDING_ROUNDS {
            let entry = channels.get_max().await?;
            let current = match parse_address(&entry.data["address"]) {
                Some(address) => read_channel(&self.wallet, &address).await?,
                None => None,
            };
            let now = self.chain_now().await?;
            let usable = current.filter(|c| {
                !c.closed
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
                        json!({ "base": base.to_string(), "retired": retired, "expiresAt": expires }),
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
            let digest = claim_digest(&channel.address, &amount)?;
            let signature = self.wallet.key().sign_personal(&digest)?;
            let data = json!({
                "channel": channel.address.to_string(),
                "amount": amount.to_string(),
                "signature": encode_hex(&signature.to_bytes65()),
            });
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

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: &Claim,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let claim = parse_wire_claim(claim)?;
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let _crediting = self.credit_lock.lock().await;
        let tracker = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?;
        let best = tracker.get_max().await?;
        let best_channel = parse_address(&best.data["channel"]);
        let best_amount = parse_amount(&best.data["amount"]).unwrap_or_default();
        let mut retired: Vec<Value> = best.data["retired"].as_array().cloned().unwrap_or_default();
        let same_channel = best_channel == Some(claim.channel);
        if same_channel && claim.amount <= best_amount {
            return Ok(None);
        }
        if retired
            .iter()
            .any(|r| parse_address(&r["channel"]) == Some(claim.channel))
        {
            return Err(ModuleError::NotAccepted(format!(
                "channel {} is retired",
                claim.channel
            )));
        }
        let state = read_channel(&self.wallet, &claim.channel)
            .await?
            .ok_or_else(|| ModuleError::NotAccepted(format!("no channel at {}", claim.channel)))?;
        if state.payer != peer || state.payee != self.wallet.address() {
            return Err(ModuleError::NotAccepted(
                "channel is not from the peer to us".to_owned(),
            ));
        }
        if state.closed {
            return Err(ModuleError::NotAccepted("channel is closed".to_owned()));
        }
        let now = self.chain_now().await?;
        if now.saturating_add(self.settings.margin_secs) > state.expires_at {
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
        let digest = claim_digest(&claim.channel, &claim.amount)?;
        let signer = recover_address(&eip191_hash(&digest), &claim.signature)?;
        if signer != state.payer {
            return Err(ModuleError::NotAccepted(
                "claim is not signed by the channel's payer".to_owned(),
            ));
        }
        let base = if same_channel {
            parse_amount(&best.data["base"]).unwrap_or_default()
        } else {
            if let (Some(old), Some(sig)) = (best_channel, best.data.get("signature")) {
                retired.push(json!({
                    "channel": old.to_string(),
                    "amount": best_amount.to_string(),
                    "signature": sig,
                    "cumulative": best.value.to_string(),
                }));
            }
            best.value.clone()
        };
        let cumulative = &base + &claim.amount;
        let increase = &cumulative - &best.value;
        let data = json!({
            "channel": claim.channel.to_string(),
            "amount": claim.amount.to_string(),
            "signature": encode_hex(&claim.signature.to_bytes65()),
            "base": base.to_string(),
            "retired": retired,
        });
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
        info!(channel = %claim.channel, amount = %claim.amount, %increase, "incoming claim accepted");
        if !same_channel && best_channel.is_some() {
            // The payer moved on: close the old channel now rather than at its expiry.
            drop(_crediting);
            if let Err(err) = self.submit_claims(ctx, false).await {
                warn!(%err, "closing the retired channel failed; will retry");
            }
        }
        Ok(Some(IncomingCredit {
            amount: increase,
            settlement_id: format!("{}:{}", claim.channel, claim.amount),
        }))
    }

    /// Closes channels with their best claims: the retired ones always, the current one when `all` or when
    /// its expiry is within the margin. Already closed channels are skipped, so repeating is harmless.
    async fn submit_claims(
        &self,
        ctx: &ChannelContext,
        all: bool,
    ) -> Result<Vec<TxHash>, ModuleError> {
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
        let mut sent = Vec::new();
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
                    sent.push(receipt.transaction_hash);
                }
                other => warn!(%channel, ?other, "close transaction failed"),
            }
        }
        Ok(sent)
    }
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
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(check_interval).await;
                let (Some(watcher_inner), Some(watcher_ctx)) =
                    (weak_inner.upgrade(), weak_ctx.upgrade())
                else {
                    return;
                };
                if let Err(err) = watcher_inner.submit_claims(&watcher_ctx, false).await {
                    warn!(%err, "expiry check failed");
                }
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
        self.inner.submit_claims(ctx, true).await.map(|_| ())
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
}
