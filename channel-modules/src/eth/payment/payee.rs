//! The payee side of `eth-payment`: a claim names the payer's transactions; each is checked on chain
//! (confirmed, from the peer, to us), recorded once in [`PAYMENTS_LOG_KEY`] and credited once.
//!
//! What a claim credits is the log's incoming fulfilled total beyond the tracker [`AMOUNT_RECEIVED_KEY`], so a
//! payment recorded just before a crash that lost its credit (an engine commits trackers with the credit, after
//! the log write) is credited by the next claim, once. Before refusing a transfer over `maxUnsecured`, the
//! payee asks the payer for its latest claim ([`super::super::latest_claim::pull_latest_claim`]) and, while the payer
//! still owes, pages through the payer's kept payments ([`RPC_PAYMENTS_SINCE`]) from the start: payments are
//! credited out of order (a later claim credits the last payments while older ones are missing), so its own
//! credited total is no position in the payer's list. Hashes already recorded cost a store lookup, no chain
//! call; a foreign, failed or unknown hash is refused and the others still count. A payer that does not know
//! the method answers with an unknown-method error and the step is skipped. Payments older than the kept list
//! (more than [`super::MAX_KEPT_PAYMENTS`] back) cannot be listed.

use num_bigint::BigUint;
use num_traits::Zero;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::super::abi;
use super::super::latest_claim::pull_latest_claim;
use super::super::types::{keccak256, Address, TxHash};
use super::wire::{is_unknown_method, parse_payments_page};
use super::{
    condition_of, log_err, transfer_id, EthPaymentModule, AMOUNT_RECEIVED_INIT_KEY,
    AMOUNT_RECEIVED_KEY, MAX_PAYMENTS_SINCE_REQUESTS_PER_PULL, PAYMENTS_LOG_KEY,
    PAYMENTS_SINCE_PULL_MAX_WAIT, RPC_PAYMENTS_SINCE,
};
use crate::amount::{LedgerAmount, ModuleUnits};
use crate::claim::IncomingCredit;
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::{
    Direction, MaxValue, PrepareOutcome, Transfer, TransferLog, TransferLogError, TransferRecord,
    TransferState,
};

/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of ERC-20 transfer events.
fn erc20_transfer_topic() -> [u8; 32] {
    keccak256(b"Transfer(address,address,uint256)")
}

impl EthPaymentModule {
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
                    debug!(%err, "the payer does not list its payments (it does not know the method)");
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
            amount: LedgerAmount(amount),
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
        let prepared =
            ModuleUnits::from_peer_ledger(ctx.main_log()?.sums().incoming_fulfilled_and_prepared).0;
        let received = ModuleUnits::from_own_log(
            ctx.transfer_log(PAYMENTS_LOG_KEY)?
                .sums()
                .incoming_fulfilled,
        );
        let secured = received.0 + &self.common.max_unsecured;
        Ok((prepared > secured).then_some((prepared, secured)))
    }

    /// Whether the payer owes us for fulfilled transfers beyond what it has paid, so that asking it for its
    /// latest claim ([`RPC_LATEST_CLAIM`](super::RPC_LATEST_CLAIM)) can raise what is secured.
    fn claim_can_help(&self, ctx: &ChannelContext) -> Result<bool, ModuleError> {
        let fulfilled = ModuleUnits::from_peer_ledger(ctx.main_log()?.sums().incoming_fulfilled);
        let paid = ModuleUnits::from_own_log(
            ctx.transfer_log(PAYMENTS_LOG_KEY)?
                .sums()
                .incoming_fulfilled,
        );
        Ok(fulfilled > paid)
    }

    /// Makes `amount_received` authoritative once per store (marker [`AMOUNT_RECEIVED_INIT_KEY`]). A store
    /// whose `eth_payments` log holds incoming payments but that has no `amount_received` tracker was kept by a
    /// module that credited each payment as it was recorded: left at 0, the tracker would credit that whole
    /// history again on the first claim. Such a store is seeded with the log's incoming fulfilled total. A
    /// fresh store (empty log) only gets the marker, so a payment recorded later whose credit a crash lost is
    /// still credited by the next claim.
    pub(super) async fn seed_amount_received(
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
        let logged = ModuleUnits::from_own_log(log.sums().incoming_fulfilled).0;
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
                "amount_received seeded from a payments log kept without it"
            );
        }
        init.set_if_max(MaxValue {
            value: BigUint::from(1u8),
            data: json!({ "seededWith": logged.to_string() }),
        })
        .await?;
        Ok(())
    }

    /// Verifies, records and credits the payments `hashes` (from a claim or an [`RPC_PAYMENTS_SINCE`] reply).
    /// The credit is the log's incoming total beyond `amount_received`. Refused hashes are logged; the error of
    /// the first is returned only when nothing is credited.
    pub(super) async fn credit_hashes(
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
        let logged = ModuleUnits::from_own_log(log.sums().incoming_fulfilled).0;
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
            amount: ModuleUnits(increase),
            settlement_id,
        }))
    }

    /// Refuses a prepare that leaves more than `maxUnsecured` unpaid, after asking the payer for what may
    /// have been lost.
    pub(super) async fn check_incoming_prepare(
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
}
