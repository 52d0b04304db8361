//! `eth-payment`: a payment-based module. Each settlement is an on-chain transfer of ETH (or of an ERC-20
//! token, option `tokenAddress`) from our address to the peer's; the claim handed to the peer names the
//! transaction hashes, and the peer checks them on chain before crediting.
//!
//! Durable state (all in the context's stores):
//! * transfer log `eth_payments`: one record per on-chain payment, keyed by the first 16 bytes of its
//!   transaction hash (the full hash is the record's fulfillment and sits in `custom`). Outgoing records are
//!   written *before* the broadcast, holding the signed raw transaction: the intent. They are fulfilled once
//!   the transaction is confirmed, or cancelled if it reverted or its nonce went to another transaction. So
//!   OFP (fulfilled + prepared) is everything paid or possibly being paid, and `total − OFP` is exactly what
//!   is left to pay: a crash at any point neither pays twice nor forgets. Incoming records are the peer's
//!   payments we verified; a hash already in the log is never verified again.
//! * max-value tracker `amount_received`: value = incoming total credited. A claim credits the log's incoming
//!   fulfilled total minus this value, so a payment recorded just before a crash that lost its credit (the
//!   engine commits trackers with the credit, after the log write) is credited by the next claim, once.
//! * max-value tracker `amount_settled`: value = outgoing confirmed total (OF), data =
//!   `{"txHashes": [the last MAX_TX_HASHES_PER_CLAIM hashes]}`, re-sent in every claim, so a payment confirmed
//!   after a crash still reaches the peer.
//! * max-value tracker `amount_settled_payments` ([`KEPT_PAYMENTS_KEY`]): value = the same total, data =
//!   `{"payments": [{"txHash", "total"}, …]}`, the last [`MAX_KEPT_PAYMENTS`] confirmed payments, oldest first,
//!   each with the confirmed total after it (a decimal string), for [`RPC_PAYMENTS_SINCE`]; written before
//!   `amount_settled`, and kept apart from it because every claim reads `amount_settled`.
//! * max-value tracker `amount_received_init`: set by the first `connect` that keeps `amount_received`, which
//!   seeds `amount_received` from the log when the store predates it (see `seed_amount_received`).
//! * max-value tracker `peer_address`: the peer's address, pinned the first time it is proven (see
//!   [`super::peer`]).
//!
//! Before refusing a transfer over `maxUnsecured`, the payee asks the payer for its current claim (RPC
//! `eth_latest_claim`, see [`super::peer`]), so a claim lost with a Fulfill response or a payer restart does
//! not block the trustline: only when the payer owes for fulfilled transfers beyond what it paid, and
//! rate-limited per account ([`super::peer::PullLimiter`]).
//!
//! A claim names only the last [`MAX_TX_HASHES_PER_CLAIM`] payments, so when the claims of more consecutive
//! payments are lost (a slow chain while settlements keep going), the latest claim cannot bring the older ones.
//! So when the payer still owes after the latest claim, the payee also asks for the payer's kept list (module
//! RPC [`RPC_PAYMENTS_SINCE`]):
//! * request: `[{"after": "<decimal total>"}]`;
//! * reply: `{"txHashes": ["0x…", …], "last": "<decimal total>" | null, "more": true | false}`: the payer's
//!   kept confirmed payments whose confirmed total after them exceeds `after`, oldest first, at most
//!   [`MAX_TX_HASHES_PER_PAYMENTS_REPLY`]; `last` is the total after the last one listed (`null` when none is),
//!   `more` says whether further payments follow it.
//!
//! The payee starts at `after = "0"` and asks again from `last` while `more` is set and it is still owed
//! (at most [`MAX_PAYMENTS_SINCE_REQUESTS_PER_PULL`] requests per pull; one pull in flight per account, and
//! after a pull that credited nothing no new one for `LATEST_CLAIM_PULL_MIN_INTERVAL_MS`). It does not start
//! from its own credited total: payments are credited out of order (a later claim credits the last payments
//! while older ones are missing), so that total is no position in the payer's list. Hashes it already recorded
//! cost a store lookup, no chain call. Every listed hash is handled exactly like a claim's: verified on chain
//! (sender = peer, recipient = us, confirmations), recorded once, credited once; a foreign, failed or unknown
//! hash is refused and the others still count. A reply may list more hashes than a claim may
//! ([`MAX_TX_HASHES_PER_CLAIM`] bounds only unsolicited claims; a reply answers our own request and has its own
//! bound). A payer of an earlier version answers with an unknown-method error: the payee skips the step.
//! Payments older than the kept list (more than [`MAX_KEPT_PAYMENTS`] back) cannot be listed. A store written
//! before the list was kept gets it seeded at its next confirmed payment with the recent hashes it held (their
//! totals walked back from the confirmed total); payments older than those cannot be listed.
//!
//! Amounts are in the module's unit (wei, or the token's base unit). One transaction pays at most
//! `u64::MAX` units (a transfer log amount); a larger debt is paid over successive settlements.

use async_trait::async_trait;
use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::abi::{self, Token};
use super::options::{str_option, u64_option, CommonOptions};
use super::peer::{latest_claim_reply, pull_latest_claim, PeerAddress, PullLimiter};
use super::types::{keccak256, Address, TxHash};
use super::wallet::{TxStatus, Wallet};
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::iou::parse_amount;
use crate::module::ChannelModule;
use crate::store::{
    Direction, Limit, MaxValue, PrepareOutcome, Transfer, TransferId, TransferLog,
    TransferLogError, TransferRecord, TransferState,
};

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
/// written by the first `connect` of a version that keeps `amount_received` (see
/// `EthPaymentModule::seed_amount_received`).
pub const AMOUNT_RECEIVED_INIT_KEY: &str = "amount_received_init";
pub use super::peer::{PEER_ADDRESS_KEY, RPC_ETH_ADDRESS, RPC_LATEST_CLAIM};
/// Module RPC listing the payer's kept confirmed payments after a confirmed total (see the module docs).
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

/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of ERC-20 transfer events.
fn erc20_transfer_topic() -> [u8; 32] {
    keccak256(b"Transfer(address,address,uint256)")
}

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

    /// Follows every outgoing payment still prepared (recorded, maybe not broadcast) to its end. Returns
    /// `false` when one is still undecided after the receipt timeout.
    async fn reconcile(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
    ) -> Result<bool, ModuleError> {
        let mut all_final = true;
        for record in log.prepared().await.map_err(log_err)? {
            if record.direction != Direction::Outgoing {
                continue;
            }
            let custom = record.transfer.custom.clone().unwrap_or(Value::Null);
            let hash: TxHash = custom["txHash"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks txHash".into()))?;
            let raw = custom["raw"]
                .as_str()
                .and_then(|s| super::types::decode_hex(s).ok())
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks raw tx".into()))?;
            let nonce = custom["nonce"]
                .as_u64()
                .ok_or_else(|| ModuleError::Ledger("pending payment lacks nonce".into()))?;
            info!(%hash, nonce, "reconciling pending payment");
            match self.wallet.follow(&raw, &hash, nonce).await {
                Ok(status) => self.finish(ctx, log, &record, &hash, status).await?,
                Err(err) => {
                    warn!(%hash, %err, "pending payment still undecided");
                    all_final = false;
                }
            }
        }
        Ok(all_final)
    }

    /// Records the final status of an outgoing payment.
    async fn finish(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
        record: &TransferRecord,
        hash: &TxHash,
        status: TxStatus,
    ) -> Result<(), ModuleError> {
        let id = record.transfer.id;
        match status {
            TxStatus::Confirmed(_) => {
                // The kept list, then the claim data, then the log: a crash in between leaves the record
                // prepared, so `reconcile` finishes it (each hash is kept and carried once, so nothing is added
                // twice). The other order could leave the payment fulfilled with its hash never reaching the
                // peer.
                let settled = ctx.max_value_tracker(AMOUNT_SETTLED_KEY)?;
                let listed = ctx.max_value_tracker(KEPT_PAYMENTS_KEY)?;
                let previous = settled.get_max().await?;
                let kept = match listed.get_max().await?.data.get("payments") {
                    Some(list) => list.clone(),
                    None => seed_kept_payments(log, &previous)
                        .await?
                        .unwrap_or_else(|| json!([])),
                };
                // Settle lock held: no other outgoing payment is fulfilled concurrently.
                let paid = BigUint::from(log.sums().outgoing_fulfilled) + record.transfer.amount;
                listed
                    .set_if_max(MaxValue {
                        value: paid.clone(),
                        data: json!({ "payments": kept_payments_with(&kept, hash, &paid) }),
                    })
                    .await?;
                settled
                    .set_if_max(MaxValue {
                        value: paid.clone(),
                        data: json!({ "txHashes": recent_hashes_with(&previous.data, hash) }),
                    })
                    .await?;
                log.fulfill(&id, &hash.0).await.map_err(log_err)?;
                info!(%hash, amount = record.transfer.amount, %paid, "payment confirmed");
            }
            TxStatus::Reverted(_) | TxStatus::Superseded => {
                warn!(%hash, ?status, "payment did not happen; releasing its amount");
                log.cancel(&id, "transaction reverted or superseded")
                    .await
                    .map_err(log_err)?;
            }
            TxStatus::Unconfirmed | TxStatus::NotMined => {}
        }
        Ok(())
    }

    /// Payer side of [`RPC_PAYMENTS_SINCE`] (see the module docs): the kept confirmed payments whose total
    /// exceeds `after`, oldest first, at most [`MAX_TX_HASHES_PER_PAYMENTS_REPLY`].
    async fn payments_since_reply(
        &self,
        ctx: &ChannelContext,
        args: &Value,
    ) -> Result<Value, ModuleError> {
        let after = args
            .get(0)
            .and_then(|request| request.get("after"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModuleError::InvalidFields(format!(
                    "{RPC_PAYMENTS_SINCE} needs [{{\"after\": \"<decimal total>\"}}]"
                ))
            })?;
        let after = parse_amount(after)?;
        let listed = ctx.max_value_tracker(KEPT_PAYMENTS_KEY)?.get_max().await?;
        let kept = listed.data["payments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut hashes = Vec::new();
        let mut last = None;
        let mut more = false;
        for entry in kept {
            let total = entry["total"]
                .as_str()
                .and_then(|t| t.parse::<BigUint>().ok())
                .ok_or_else(|| ModuleError::Ledger("kept payment lacks its total".to_owned()))?;
            let hash = entry["txHash"]
                .as_str()
                .ok_or_else(|| ModuleError::Ledger("kept payment lacks its hash".to_owned()))?;
            if total <= after {
                continue;
            }
            if hashes.len() == MAX_TX_HASHES_PER_PAYMENTS_REPLY {
                more = true;
                break;
            }
            hashes.push(json!(hash));
            last = Some(total);
        }
        debug!(account = ctx.account_id(), %after, listed = hashes.len(), more, "listing payments");
        Ok(json!({
            "txHashes": hashes,
            "last": last.map(|t| t.to_string()),
            "more": more,
        }))
    }

    /// Payee side of [`RPC_PAYMENTS_SINCE`] (see the module docs): pages through the payer's kept payments
    /// from the start, crediting each one not recorded yet, while the payer still owes. Rate-limited like the
    /// latest-claim pull. Failures are logged. Returns whether something was credited.
    async fn pull_payments_since(&self, ctx: &ChannelContext) -> bool {
        let Some(permit) = self.since_pulls.try_start(ctx.now()) else {
            debug!(
                account = ctx.account_id(),
                "payments pull skipped (one in flight or too recent)"
            );
            return false;
        };
        let mut after = BigUint::zero();
        let mut credited = false;
        for _ in 0..MAX_PAYMENTS_SINCE_REQUESTS_PER_PULL {
            let request = json!([{ "after": after.to_string() }]);
            let reply = match ctx.rpc(RPC_PAYMENTS_SINCE, request).await {
                // An empty reply (no entry for the method in a legacy reply): nothing listed.
                Ok(Value::Object(map)) if map.is_empty() => break,
                Ok(reply) => reply,
                Err(err) if is_unknown_method(&err) => {
                    debug!(%err, "the payer does not list its payments (an earlier version)");
                    break;
                }
                Err(err) => {
                    warn!(%err, "could not ask the payer for its payments");
                    break;
                }
            };
            let page = match parse_payments_page(&reply) {
                Ok(page) => page,
                Err(err) => {
                    warn!(%err, "the payer's list of payments is malformed");
                    break;
                }
            };
            let Some(last) = page.last else { break };
            match self.credit_hashes(ctx, &page.hashes).await {
                Ok(Some(credit)) => {
                    info!(amount = %credit.amount, settlement_id = %credit.settlement_id, "credited payments the payer listed");
                    credited = true;
                }
                Ok(None) => {}
                Err(err) => warn!(%err, "payments the payer listed were refused"),
            }
            // Done when the list ends, a page does not move forward (a broken payer), or nothing is owed.
            if !page.more || last <= after || !self.claim_can_help(ctx).unwrap_or(false) {
                break;
            }
            after = last;
        }
        if credited {
            permit.productive();
        }
        credited
    }

    async fn latest_claim(&self, ctx: &ChannelContext) -> Result<Option<Claim>, ModuleError> {
        let settled = ctx.max_value_tracker(AMOUNT_SETTLED_KEY)?.get_max().await?;
        match settled.data.get("txHashes") {
            Some(Value::Array(hashes)) if !hashes.is_empty() => {
                Ok(Some(Claim::Json(json!({ "txHashes": hashes }))))
            }
            _ => Ok(None),
        }
    }

    /// Checks one claimed payment on chain: success, confirmations, from the peer, to us. Returns its amount.
    async fn verify_payment(&self, hash: &TxHash, peer: &Address) -> Result<BigUint, ModuleError> {
        let rpc = self.wallet.rpc();
        let settings = self.wallet.settings();
        let deadline = tokio::time::Instant::now() + settings.receipt_timeout;
        let receipt = loop {
            if let Some(receipt) = rpc.receipt(hash).await? {
                let head = rpc.block_number().await?;
                if head.saturating_sub(receipt.block_number) + 1 >= settings.confirmations {
                    break receipt;
                }
            } else if rpc.transaction(hash).await?.is_none() {
                return Err(ModuleError::NotAccepted(format!(
                    "unknown transaction {hash}"
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ModuleError::Ledger(format!(
                    "transaction {hash} not confirmed in time"
                )));
            }
            tokio::time::sleep(settings.poll_interval).await;
        };
        if !receipt.success {
            return Err(ModuleError::NotAccepted(format!(
                "transaction {hash} failed"
            )));
        }
        let tx = rpc
            .transaction(hash)
            .await?
            .ok_or_else(|| ModuleError::Ledger(format!("transaction {hash} vanished")))?;
        if tx.from != *peer {
            return Err(ModuleError::NotAccepted(format!(
                "transaction {hash} is from {}, not the peer",
                tx.from
            )));
        }
        let us = self.wallet.address();
        match self.token {
            None => {
                if tx.to != Some(us) {
                    return Err(ModuleError::NotAccepted(format!(
                        "transaction {hash} does not pay us"
                    )));
                }
                Ok(tx.value)
            }
            Some(token) => {
                if tx.to != Some(token) {
                    return Err(ModuleError::NotAccepted(format!(
                        "transaction {hash} is not a call to the token"
                    )));
                }
                let topic = erc20_transfer_topic();
                let mut total = BigUint::zero();
                for log in &receipt.logs {
                    if log.address == token
                        && log.topics.len() == 3
                        && log.topics[0] == topic
                        && log.topics[1] == peer.to_word()
                        && log.topics[2] == us.to_word()
                    {
                        total += abi::uint_word(&log.data, 0)?;
                    }
                }
                Ok(total)
            }
        }
    }

    /// Verifies and records one incoming payment. `Ok(Some(amount))` when newly recorded, `Ok(None)` for a
    /// payment already recorded (what is credited comes from the log's total, see `handle_incoming_claim`).
    async fn credit_payment(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
        hash: &TxHash,
        peer: &Address,
    ) -> Result<Option<u64>, ModuleError> {
        let id = transfer_id(hash);
        if let Some(existing) = log.get(&id).await.map_err(log_err)? {
            if existing.direction == Direction::Incoming
                && matches!(existing.state, TransferState::Fulfilled { .. })
            {
                return Ok(None);
            }
        }
        let amount = self.verify_payment(hash, peer).await?;
        if amount.is_zero() {
            return Err(ModuleError::NotAccepted(format!(
                "transaction {hash} pays us nothing"
            )));
        }
        let amount = u64::try_from(&amount).map_err(|_| {
            ModuleError::NotAccepted(format!("payment {hash} exceeds 2^64-1 units"))
        })?;
        // The identity may have been taken over while the payment was checked on the ledger (an operator's
        // assignment, a configured claim, a contest): ask the registry again before anything is recorded for this
        // account, since recorded payments count (and are credited by a later claim) from then on.
        self.ensure_peer_still(ctx, peer).await?;
        let transfer = Transfer {
            id,
            amount,
            execution_condition: condition_of(hash),
            expires_at_ms: i64::MAX,
            ilp: Vec::new(),
            custom: Some(json!({ "txHash": hash.to_string() })),
        };
        match log.prepare(&transfer, Direction::Incoming).await {
            Ok(PrepareOutcome::Prepared) => {}
            Ok(PrepareOutcome::AlreadyExists(record)) => {
                if matches!(record.state, TransferState::Fulfilled { .. }) {
                    return Ok(None);
                }
            }
            Err(TransferLogError::DuplicateId(_)) => {
                return Err(ModuleError::NotAccepted(format!(
                    "transaction {hash} collides with another recorded payment"
                )))
            }
            Err(err) => return Err(log_err(err)),
        }
        log.fulfill(&id, &hash.0).await.map_err(log_err)?;
        Ok(Some(amount))
    }

    /// Refuses (`NotAccepted`) unless the node's registry still gives this account the peer address `peer`
    /// (one registry read).
    async fn ensure_peer_still(
        &self,
        ctx: &ChannelContext,
        peer: &Address,
    ) -> Result<(), ModuleError> {
        let holder = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        if holder != *peer {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's address changed from {peer} to {holder} while its payments were checked"
            )));
        }
        Ok(())
    }

    /// `Some((incoming fulfilled + prepared, paid + maxUnsecured))` when the first exceeds the second.
    fn unsecured_excess(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<(BigUint, BigUint)>, ModuleError> {
        let prepared = BigUint::from(ctx.main_log()?.sums().incoming_fulfilled_and_prepared);
        let received = BigUint::from(
            ctx.transfer_log(PAYMENTS_LOG_KEY)?
                .sums()
                .incoming_fulfilled,
        );
        let secured = received + &self.common.max_unsecured;
        Ok((prepared > secured).then_some((prepared, secured)))
    }

    /// Whether the payer owes us for fulfilled transfers beyond what it has paid, so that asking it for its
    /// latest claim ([`RPC_LATEST_CLAIM`]) can raise what is secured.
    fn claim_can_help(&self, ctx: &ChannelContext) -> Result<bool, ModuleError> {
        let fulfilled = ctx.main_log()?.sums().incoming_fulfilled;
        let paid = ctx
            .transfer_log(PAYMENTS_LOG_KEY)?
            .sums()
            .incoming_fulfilled;
        Ok(fulfilled > paid)
    }

    /// Makes `amount_received` authoritative once per store (marker [`AMOUNT_RECEIVED_INIT_KEY`]). A store
    /// written before that tracker existed holds incoming payments in `eth_payments` that were credited as
    /// they were recorded (the earlier code credited exactly the newly recorded payments), with the tracker
    /// absent: left at 0 it would credit that whole history again on the first claim. Such a store is seeded
    /// with the log's incoming fulfilled total. A fresh store (empty log) only gets the marker, so a payment
    /// recorded later whose credit a crash lost is still credited by the next claim.
    async fn seed_amount_received(
        &self,
        ctx: &ChannelContext,
        log: &dyn TransferLog,
    ) -> Result<(), ModuleError> {
        let init = ctx.max_value_tracker(AMOUNT_RECEIVED_INIT_KEY)?;
        if !init.get_max().await?.value.is_zero() {
            return Ok(());
        }
        let _crediting = self.credit_lock.lock().await;
        let received = ctx.max_value_tracker(AMOUNT_RECEIVED_KEY)?;
        let logged = BigUint::from(log.sums().incoming_fulfilled);
        if received.get_max().await?.value.is_zero() && !logged.is_zero() {
            received
                .set_if_max(MaxValue {
                    value: logged.clone(),
                    data: json!({ "settlementId": format!("seeded:{logged}") }),
                })
                .await?;
            warn!(
                account = ctx.account_id(),
                credited = %logged,
                "amount_received seeded from the payments log of an earlier version"
            );
        }
        init.set_if_max(MaxValue {
            value: BigUint::from(1u8),
            data: json!({ "seededWith": logged.to_string() }),
        })
        .await?;
        Ok(())
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

/// `list` (a JSON array) with `entry` appended unless an element has the same `key`, keeping the last `max`.
fn push_once_bounded(
    list: &Value,
    entry: Value,
    key: impl Fn(&Value) -> &Value,
    max: usize,
) -> Vec<Value> {
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    if !items.iter().any(|item| key(item) == key(&entry)) {
        items.push(entry);
        let excess = items.len().saturating_sub(max);
        items.drain(..excess);
    }
    items
}

/// `amount_settled`'s recent hashes (`previous["txHashes"]`, the last [`MAX_TX_HASHES_PER_CLAIM`]) with the
/// confirmed payment `hash` appended once.
fn recent_hashes_with(previous: &Value, hash: &TxHash) -> Vec<Value> {
    push_once_bounded(
        &previous["txHashes"],
        json!(hash.to_string()),
        |h| h,
        MAX_TX_HASHES_PER_CLAIM,
    )
}

/// The kept payments list (a JSON array, the last [`MAX_KEPT_PAYMENTS`], oldest first) with `{txHash, total}`
/// of the confirmed payment `hash`, which brought the confirmed total to `total`, appended once (a payment
/// finished again after a crash is not added twice).
fn kept_payments_with(kept: &Value, hash: &TxHash, total: &BigUint) -> Vec<Value> {
    push_once_bounded(
        kept,
        json!({ "txHash": hash.to_string(), "total": total.to_string() }),
        |p| &p["txHash"],
        MAX_KEPT_PAYMENTS,
    )
}

/// The kept payments list for a store written before it was kept (only `txHashes`): those
/// recent hashes, each with its total, walked back from the confirmed total with each payment's amount from the
/// log (stopping at a hash the log does not hold as outgoing). `None` when there is nothing to seed from.
async fn seed_kept_payments(
    log: &dyn TransferLog,
    previous: &MaxValue,
) -> Result<Option<Value>, ModuleError> {
    let Some(recent) = previous.data.get("txHashes").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut total = previous.value.clone();
    let mut seeded = Vec::new();
    for text in recent.iter().rev() {
        let Some(hash) = text.as_str().and_then(|t| t.parse::<TxHash>().ok()) else {
            break;
        };
        let Some(record) = log.get(&transfer_id(&hash)).await.map_err(log_err)? else {
            break;
        };
        let amount = BigUint::from(record.transfer.amount);
        if record.direction != Direction::Outgoing || amount > total {
            break;
        }
        seeded.push(json!({ "txHash": hash.to_string(), "total": total.to_string() }));
        total -= amount;
    }
    seeded.reverse();
    Ok(Some(Value::Array(seeded)))
}

/// One [`RPC_PAYMENTS_SINCE`] reply, checked.
#[derive(Debug)]
struct PaymentsPage {
    hashes: Vec<TxHash>,
    /// The payer's confirmed total after the last listed payment; `None` when none is listed.
    last: Option<BigUint>,
    more: bool,
}

fn parse_payments_page(reply: &Value) -> Result<PaymentsPage, ModuleError> {
    let bad = |why: &str| ModuleError::InvalidFields(format!("{RPC_PAYMENTS_SINCE} reply: {why}"));
    let items = reply
        .get("txHashes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no txHashes"))?;
    let hashes = parse_hash_list(items, MAX_TX_HASHES_PER_PAYMENTS_REPLY)
        .map_err(|e| bad(&e.to_string()))?;
    let last = match reply.get("last") {
        None | Some(Value::Null) => None,
        Some(Value::String(total)) => Some(parse_amount(total)?),
        Some(_) => return Err(bad("last must be a decimal string")),
    };
    if hashes.is_empty() != last.is_none() {
        return Err(bad("last must be given exactly when hashes are listed"));
    }
    Ok(PaymentsPage {
        hashes,
        last,
        more: reply.get("more").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Whether `err` is a peer's answer that it does not know the method (an earlier version).
fn is_unknown_method(err: &ModuleError) -> bool {
    match err {
        ModuleError::UnknownMethod(_) => true,
        ModuleError::Rpc(message) => message.contains("Unrecognized side protocol"),
        _ => false,
    }
}

fn parse_claim_hashes(claim: &Claim) -> Result<Vec<TxHash>, ModuleError> {
    let items: Vec<Value> = match claim {
        Claim::Text(text) => vec![json!(text.trim())],
        Claim::Json(value) => match (value.get("txHashes"), value.get("txHash")) {
            (Some(Value::Array(items)), _) => items.clone(),
            (None, Some(one @ Value::String(_))) => vec![one.clone()],
            _ => {
                return Err(ModuleError::InvalidFields(
                    "claim must carry txHashes".to_owned(),
                ))
            }
        },
        Claim::Binary(_) => {
            return Err(ModuleError::InvalidFields(
                "binary claims are not eth-payment claims".to_owned(),
            ))
        }
    };
    if items.is_empty() {
        return Err(ModuleError::InvalidFields(
            "a claim carries at least one transaction hash".to_owned(),
        ));
    }
    parse_hash_list(&items, MAX_TX_HASHES_PER_CLAIM)
}

/// `items` (JSON strings) as transaction hashes, at most `max` of them.
fn parse_hash_list(items: &[Value], max: usize) -> Result<Vec<TxHash>, ModuleError> {
    if items.len() > max {
        return Err(ModuleError::InvalidFields(format!(
            "more than {max} transaction hashes"
        )));
    }
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| ModuleError::InvalidFields("txHashes must be strings".into()))?
                .parse::<TxHash>()
                .map_err(|e| ModuleError::InvalidFields(format!("bad tx hash: {e}")))
        })
        .collect()
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
        if self.unsecured_excess(ctx)?.is_none() {
            return Ok(());
        }
        // Before refusing: the peer may have paid without its claim reaching us. Asking can help only if it
        // owes for fulfilled transfers beyond what it has paid (prepared ones are not owed yet).
        if self.claim_can_help(ctx)? {
            pull_latest_claim(self, ctx, &self.pulls).await;
            // Still owed: payments older than the latest claim's may have lost their claims too.
            if self.claim_can_help(ctx)? {
                // Bounded as a whole: a payer listing hashes that never confirm would otherwise hold this
                // prepare for up to `receiptTimeoutMs` per hash. Dropping the pull midway is safe: a payment
                // recorded but not yet credited is credited by the next claim or pull.
                if tokio::time::timeout(PAYMENTS_SINCE_PULL_MAX_WAIT, self.pull_payments_since(ctx))
                    .await
                    .is_err()
                {
                    warn!(
                        account = ctx.account_id(),
                        "payments pull stopped after its time limit"
                    );
                }
            }
        }
        if let Some((prepared, secured)) = self.unsecured_excess(ctx)? {
            warn!(id = %record.transfer.id, %prepared, %secured, "incoming prepare over maxUnsecured");
            return Err(ModuleError::NotAccepted(format!(
                "incoming total {prepared} would exceed what is paid plus maxUnsecured ({secured})"
            )));
        }
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &BigUint,
    ) -> Result<Option<Claim>, ModuleError> {
        let _settling = self.settle_lock.lock().await;
        let log = ctx.transfer_log(PAYMENTS_LOG_KEY)?;
        if !self.reconcile(ctx, log.as_ref()).await? {
            return Err(ModuleError::Ledger(
                "an earlier payment is still pending".to_owned(),
            ));
        }
        let committed = BigUint::from(log.sums().outgoing_fulfilled_and_prepared);
        if *total <= committed {
            return self.latest_claim(ctx).await;
        }
        let owed = total - &committed;
        let amount = u64::try_from(&owed).unwrap_or(u64::MAX);
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let (to, value, data) = match self.token {
            None => (peer, BigUint::from(amount), Vec::new()),
            Some(token) => (
                token,
                BigUint::zero(),
                abi::encode_call(
                    "transfer(address,uint256)",
                    &[Token::Address(peer), Token::Uint(BigUint::from(amount))],
                )?,
            ),
        };
        let (signed, record) = {
            let guard = self.wallet.lock_sender().await;
            let signed = self.wallet.sign_next(&guard, Some(to), value, data).await?;
            let transfer = Transfer {
                id: transfer_id(&signed.hash),
                amount,
                execution_condition: condition_of(&signed.hash),
                expires_at_ms: i64::MAX,
                ilp: Vec::new(),
                custom: Some(json!({
                    "txHash": signed.hash.to_string(),
                    "raw": super::types::encode_hex(&signed.raw),
                    "nonce": signed.nonce,
                    "to": peer.to_string(),
                })),
            };
            // The intent is durable before anything reaches the chain.
            log.prepare(&transfer, Direction::Outgoing)
                .await
                .map_err(log_err)?;
            info!(hash = %signed.hash, amount, %peer, "paying peer");
            if let Err(err) = self.wallet.broadcast(&signed.raw, &signed.hash).await {
                warn!(hash = %signed.hash, %err, "broadcast failed; following will retry");
            }
            let record = TransferRecord {
                transfer,
                direction: Direction::Outgoing,
                state: TransferState::Prepared,
            };
            (signed, record)
        };
        let status = self
            .wallet
            .follow(&signed.raw, &signed.hash, signed.nonce)
            .await?;
        let confirmed = matches!(status, TxStatus::Confirmed(_));
        self.finish(ctx, log.as_ref(), &record, &signed.hash, status)
            .await?;
        if !confirmed {
            return Err(ModuleError::Ledger(format!(
                "payment {} did not go through",
                signed.hash
            )));
        }
        self.latest_claim(ctx).await
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

impl EthPaymentModule {
    /// Verifies, records and credits the payments `hashes` (from a claim or an [`RPC_PAYMENTS_SINCE`] reply).
    /// The credit is the log's incoming total beyond `amount_received`. Refused hashes are logged; the error of
    /// the first is returned only when nothing is credited.
    async fn credit_hashes(
        &self,
        ctx: &ChannelContext,
        hashes: &[TxHash],
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let log = ctx.transfer_log(PAYMENTS_LOG_KEY)?;
        let _crediting = self.credit_lock.lock().await;
        let received = ctx.max_value_tracker(AMOUNT_RECEIVED_KEY)?;
        let before = received.get_max().await?;
        let mut ids = Vec::new();
        let mut first_error = None;
        for hash in hashes {
            match self.credit_payment(ctx, log.as_ref(), hash, &peer).await {
                Ok(Some(amount)) => {
                    info!(%hash, amount, "incoming payment verified");
                    ids.push(hash.to_string());
                }
                Ok(None) => {}
                Err(err) => {
                    warn!(%hash, %err, "incoming payment refused");
                    first_error.get_or_insert(err);
                }
            }
        }
        // The credit is what the log holds beyond what was credited: the new payments, plus any recorded by an
        // earlier call whose credit was lost (engine mode commits this tracker with the credit, after the log
        // write; a crash in between leaves the log ahead).
        let logged = BigUint::from(log.sums().incoming_fulfilled);
        if logged <= before.value {
            return match first_error {
                Some(err) if ids.is_empty() => Err(err),
                _ => Ok(None),
            };
        }
        // Recorded payments are credited only while the identity is still this account's.
        self.ensure_peer_still(ctx, &peer).await?;
        let increase = &logged - &before.value;
        let settlement_id = if ids.is_empty() {
            format!("received:{logged}")
        } else {
            ids.join(",")
        };
        let previous = received
            .set_if_max(MaxValue {
                value: logged.clone(),
                data: json!({ "settlementId": settlement_id }),
            })
            .await?;
        if previous.value != before.value {
            return Err(ModuleError::Ledger(
                "incoming payments changed concurrently".to_owned(),
            ));
        }
        info!(%increase, total = %logged, %settlement_id, "incoming payments credited");
        Ok(Some(IncomingCredit {
            amount: increase,
            settlement_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parse_in_all_accepted_forms_and_bound_the_count() -> Result<(), ModuleError> {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_claim_hashes(&Claim::Text(h.clone()))?.len(), 1);
        assert_eq!(
            parse_claim_hashes(&Claim::Json(json!({ "txHash": h.clone() })))?.len(),
            1
        );
        assert_eq!(
            parse_claim_hashes(&Claim::Json(json!({ "txHashes": [h.clone(), h.clone()] })))?.len(),
            2
        );
        let too_many = vec![h.clone(); MAX_TX_HASHES_PER_CLAIM + 1];
        assert!(parse_claim_hashes(&Claim::Json(json!({ "txHashes": too_many }))).is_err());
        assert!(parse_claim_hashes(&Claim::Text("0x1234".into())).is_err());
        assert!(parse_claim_hashes(&Claim::Binary(vec![1])).is_err());
        Ok(())
    }

    #[test]
    fn settled_data_keeps_each_payment_once_and_bounds_both_lists() {
        let (mut recent, mut kept) = (Value::Null, Value::Null);
        let hash = |i: usize| TxHash(keccak256(&i.to_be_bytes()));
        for i in 1..=MAX_KEPT_PAYMENTS + 3 {
            recent = json!({ "txHashes": recent_hashes_with(&recent, &hash(i)) });
            kept = Value::Array(kept_payments_with(&kept, &hash(i), &BigUint::from(i * 10)));
        }
        // Finishing the last payment again (after a crash) adds nothing.
        let last_hash = hash(MAX_KEPT_PAYMENTS + 3);
        assert_eq!(
            json!({ "txHashes": recent_hashes_with(&recent, &last_hash) }),
            recent
        );
        assert_eq!(
            Value::Array(kept_payments_with(&kept, &last_hash, &BigUint::from(1u8))),
            kept
        );
        let recent = recent["txHashes"].as_array().cloned().unwrap_or_default();
        assert_eq!(recent.len(), MAX_TX_HASHES_PER_CLAIM);
        assert_eq!(
            recent[MAX_TX_HASHES_PER_CLAIM - 1],
            json!(last_hash.to_string())
        );
        let kept = kept.as_array().cloned().unwrap_or_default();
        assert_eq!(kept.len(), MAX_KEPT_PAYMENTS);
        // The oldest fell out; the rest are in order, each with its total.
        assert_eq!(kept[0]["txHash"], json!(hash(4).to_string()));
        assert_eq!(kept[0]["total"], json!("40"));
        let last = &kept[MAX_KEPT_PAYMENTS - 1];
        assert_eq!(last["txHash"], json!(last_hash.to_string()));
        assert_eq!(
            last["total"],
            json!(((MAX_KEPT_PAYMENTS + 3) * 10).to_string())
        );
    }

    #[test]
    fn payments_pages_are_checked() -> Result<(), ModuleError> {
        let h = format!("0x{}", "ab".repeat(32));
        let page =
            parse_payments_page(&json!({ "txHashes": [h.clone()], "last": "7", "more": true }))?;
        assert_eq!(page.hashes.len(), 1);
        assert_eq!(page.last, Some(BigUint::from(7u8)));
        assert!(page.more);
        let empty = parse_payments_page(&json!({ "txHashes": [], "last": null, "more": false }))?;
        assert!(empty.hashes.is_empty() && empty.last.is_none() && !empty.more);
        let too_many = vec![h.clone(); MAX_TX_HASHES_PER_PAYMENTS_REPLY + 1];
        for bad in [
            json!({ "txHashes": too_many, "last": "7" }),
            json!({ "txHashes": [h.clone()] }),
            json!({ "txHashes": [], "last": "7" }),
            json!({ "txHashes": [h.clone()], "last": 7 }),
            json!({ "txHashes": [h.clone()], "last": "-7" }),
            json!({ "txHashes": ["0x12"], "last": "7" }),
            json!({ "last": "7" }),
            json!(null),
        ] {
            assert!(parse_payments_page(&bad).is_err(), "{bad}");
        }
        // A full page is accepted: more hashes than a claim may carry.
        let full = vec![h; MAX_TX_HASHES_PER_PAYMENTS_REPLY];
        assert_eq!(
            parse_payments_page(&json!({ "txHashes": full, "last": "9" }))?
                .hashes
                .len(),
            MAX_TX_HASHES_PER_PAYMENTS_REPLY
        );
        Ok(())
    }

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
