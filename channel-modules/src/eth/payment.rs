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
//! * max-value tracker `amount_settled`: value = outgoing confirmed total (OF), data = the most recent
//!   payment hashes, re-sent in every claim so a payment confirmed after a crash still reaches the peer.
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
//! Amounts are in the module's unit (wei, or the token's base unit). One transaction pays at most
//! `u64::MAX` units (a transfer log amount); a larger debt is paid over successive settlements.

use async_trait::async_trait;
use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::abi::{self, Token};
use super::options::{str_option, u64_option, CommonOptions};
use super::peer::{latest_claim_reply, pull_latest_claim, PeerAddress, PullLimiter};
use super::types::{keccak256, Address, TxHash};
use super::wallet::{TxStatus, Wallet};
use crate::context::ChannelContext;
use crate::module::{ChannelModule, Claim, IncomingCredit, ModuleError};
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
/// Tracker of the incoming total credited (value), always at most the log's incoming fulfilled total.
pub const AMOUNT_RECEIVED_KEY: &str = "amount_received";
/// Tracker marking `amount_received` as authoritative for this store (value 1; data: what it was seeded with):
/// written by the first `connect` of a version that keeps `amount_received` (see
/// `EthPaymentModule::seed_amount_received`).
pub const AMOUNT_RECEIVED_INIT_KEY: &str = "amount_received_init";
pub use super::peer::{PEER_ADDRESS_KEY, RPC_ETH_ADDRESS, RPC_LATEST_CLAIM};
/// ERC-20 token contract to pay in instead of ETH.
pub const OPT_TOKEN_ADDRESS: &str = "tokenAddress";
/// Decimals of the token (the module's asset scale); default 18.
pub const OPT_TOKEN_DECIMALS: &str = "tokenDecimals";
/// Scale of wei.
pub const WEI_SCALE: u8 = 18;
/// Most payment hashes one claim carries (and the payee checks).
pub const MAX_TX_HASHES_PER_CLAIM: usize = 8;

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
                // The claim data first, the log second: a crash in between leaves the record prepared, so
                // `reconcile` finishes it (the hash is already carried, so it is not added twice). The other
                // order could leave the payment fulfilled with its hash never reaching the peer.
                let tracker = ctx.max_value_tracker(AMOUNT_SETTLED_KEY)?;
                let previous = tracker.get_max().await?;
                let mut recent: Vec<Value> = previous.data["txHashes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let text = hash.to_string();
                if !recent.iter().any(|h| h.as_str() == Some(text.as_str())) {
                    recent.push(json!(text));
                    let excess = recent.len().saturating_sub(MAX_TX_HASHES_PER_CLAIM);
                    recent.drain(..excess);
                }
                // Settle lock held: no other outgoing payment is fulfilled concurrently.
                let paid = BigUint::from(log.sums().outgoing_fulfilled) + record.transfer.amount;
                tracker
                    .set_if_max(MaxValue {
                        value: paid.clone(),
                        data: json!({ "txHashes": recent }),
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

fn parse_claim_hashes(claim: &Claim) -> Result<Vec<TxHash>, ModuleError> {
    let texts: Vec<String> = match claim {
        Claim::Text(text) => vec![text.trim().to_owned()],
        Claim::Json(value) => match (value.get("txHashes"), value.get("txHash")) {
            (Some(Value::Array(items)), _) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ModuleError::InvalidFields("txHashes must be strings".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, Some(Value::String(one))) => vec![one.clone()],
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
    if texts.is_empty() || texts.len() > MAX_TX_HASHES_PER_CLAIM {
        return Err(ModuleError::InvalidFields(format!(
            "a claim carries 1 to {MAX_TX_HASHES_PER_CLAIM} transaction hashes"
        )));
    }
    texts
        .iter()
        .map(|t| {
            t.parse::<TxHash>()
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
        let peer = self.peer.get(ctx, self.wallet.chain_id().await?).await?;
        let log = ctx.transfer_log(PAYMENTS_LOG_KEY)?;
        let _crediting = self.credit_lock.lock().await;
        let received = ctx.max_value_tracker(AMOUNT_RECEIVED_KEY)?;
        let before = received.get_max().await?;
        let mut ids = Vec::new();
        let mut first_error = None;
        for hash in &hashes {
            match self.credit_payment(log.as_ref(), hash, &peer).await {
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
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
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
