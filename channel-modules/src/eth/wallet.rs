//! [`Wallet`]: our account on the chain. Builds, signs (locally), broadcasts and follows transactions.
//!
//! Nonces: every wallet on the same endpoint and address shares one async lock (a process-wide registry), held
//! from "read the pending nonce" through "the node accepted the broadcast". Callers record their intent (the
//! signed raw transaction) durably while holding it, so two modules sharing a key never sign two transactions
//! with one nonce, and a crash before the broadcast leaves a recorded transaction that [`Wallet::follow`]
//! can rebroadcast or declare superseded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use num_bigint::BigUint;
use tokio::sync::{OnceCell, OwnedMutexGuard};
use tracing::{debug, warn};

use super::key::PrivateKey;
use super::rpc::{Receipt, RpcClient};
use super::tx::{Eip1559Tx, SignedTx};
use super::types::{Address, TxHash};
use super::EthError;

/// Gas estimates are raised by this percentage to absorb state changes between estimate and inclusion.
pub const GAS_ESTIMATE_MARGIN_PERCENT: u64 = 20;
/// Tip used when the node does not implement `eth_maxPriorityFeePerGas` (1 gwei).
pub const FALLBACK_PRIORITY_FEE_WEI: u64 = 1_000_000_000;

/// How transactions are followed.
#[derive(Clone, Debug)]
pub struct TxSettings {
    /// Blocks (including the one that mined it) before a transaction counts; at least 1.
    pub confirmations: u64,
    /// Delay between receipt polls.
    pub poll_interval: Duration,
    /// Give up following (the transaction stays recorded and is followed again later) after this long.
    pub receipt_timeout: Duration,
}

impl Default for TxSettings {
    fn default() -> Self {
        TxSettings {
            confirmations: 1,
            poll_interval: Duration::from_millis(200),
            receipt_timeout: Duration::from_secs(120),
        }
    }
}

/// Where a recorded transaction stands on chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Mined, succeeded, with enough confirmations.
    Confirmed(Receipt),
    /// Mined with enough confirmations, but execution failed: the value did not move.
    Reverted(Receipt),
    /// Mined but not yet confirmed enough.
    Unconfirmed,
    /// Not mined, and its nonce was used by another transaction: it can never be mined.
    Superseded,
    /// Not mined and its nonce is still free (pending, dropped, or never broadcast).
    NotMined,
}

type LockKey = (String, Address);

fn sender_locks() -> &'static Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>> {
    static LOCKS: OnceLock<Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    LOCKS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Proof that the caller holds the sender lock of a wallet (see the module docs).
#[derive(Debug)]
pub struct SenderGuard {
    _guard: OwnedMutexGuard<()>,
}

/// A key on an endpoint.
#[derive(Debug)]
pub struct Wallet {
    rpc: RpcClient,
    key: PrivateKey,
    settings: TxSettings,
    chain_id: OnceCell<u64>,
}

impl Wallet {
    /// A wallet for `key` on the endpoint `rpc_url`.
    pub fn new(rpc_url: &str, key: PrivateKey, settings: TxSettings) -> Result<Self, EthError> {
        Ok(Wallet {
            rpc: RpcClient::new(rpc_url)?,
            key,
            settings,
            chain_id: OnceCell::new(),
        })
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The signing key (for off-ledger claims).
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The endpoint.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// How transactions are followed.
    pub fn settings(&self) -> &TxSettings {
        &self.settings
    }

    /// The endpoint's chain ID (asked once).
    pub async fn chain_id(&self) -> Result<u64, EthError> {
        self.chain_id
            .get_or_try_init(|| self.rpc.chain_id())
            .await
            .copied()
    }

    /// Takes the process-wide sender lock for this address and endpoint.
    pub async fn lock_sender(&self) -> SenderGuard {
        let lock = {
            let mut locks = sender_locks()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                locks
                    .entry((self.rpc.url().to_owned(), self.address()))
                    .or_default(),
            )
        };
        SenderGuard {
            _guard: lock.lock_owned().await,
        }
    }

    /// Builds and signs a transaction with the next pending nonce, estimated gas and current fees. Does not
    /// broadcast: the caller records it first.
    pub async fn sign_next(
        &self,
        _guard: &SenderGuard,
        to: Option<Address>,
        value: BigUint,
        data: Vec<u8>,
    ) -> Result<SignedTx, EthError> {
        let chain_id = self.chain_id().await?;
        let nonce = self
            .rpc
            .transaction_count(&self.address(), "pending")
            .await?;
        let estimate = self
            .rpc
            .estimate_gas(&self.address(), to.as_ref(), &value, &data)
            .await?;
        let gas_limit = estimate.saturating_mul(100 + GAS_ESTIMATE_MARGIN_PERCENT) / 100;
        let priority = match self.rpc.max_priority_fee().await {
            Ok(fee) => fee,
            Err(err) => {
                debug!(%err, "eth_maxPriorityFeePerGas unavailable; using fallback tip");
                BigUint::from(FALLBACK_PRIORITY_FEE_WEI)
            }
        };
        let base = self.rpc.base_fee().await?;
        // Twice the base fee survives six consecutive full blocks (+12.5% each) before the tx stalls.
        let max_fee = base * 2u8 + &priority;
        let tx = Eip1559Tx {
            chain_id,
            nonce,
            max_priority_fee_per_gas: priority,
            max_fee_per_gas: max_fee,
            gas_limit,
            to,
            value,
            data,
        };
        tx.sign(&self.key)
    }

    /// Broadcasts a signed transaction. Idempotent: a node that already has it, or already mined it, is
    /// success.
    pub async fn broadcast(&self, raw: &[u8], hash: &TxHash) -> Result<(), EthError> {
        match self.rpc.send_raw_transaction(raw).await {
            Ok(reported) if reported == *hash => Ok(()),
            Ok(reported) => Err(EthError::BadResponse(format!(
                "node reports hash {reported} for our transaction {hash}"
            ))),
            Err(err @ EthError::Rpc { .. }) => {
                // "already known", "nonce too low" (mined already) and the like: fine if the node has it.
                if self.rpc.transaction(hash).await?.is_some() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Where the transaction `hash` with `nonce` stands now.
    pub async fn status(&self, hash: &TxHash, nonce: u64) -> Result<TxStatus, EthError> {
        // Read the mined nonce before the receipt: if the nonce is used and there is still no receipt
        // afterwards, ours was not the transaction that used it.
        let mined_nonce = self
            .rpc
            .transaction_count(&self.address(), "latest")
            .await?;
        match self.rpc.receipt(hash).await? {
            Some(receipt) => {
                let head = self.rpc.block_number().await?;
                let confirmations = head.saturating_sub(receipt.block_number) + 1;
                if confirmations < self.settings.confirmations.max(1) {
                    Ok(TxStatus::Unconfirmed)
                } else if receipt.success {
                    Ok(TxStatus::Confirmed(receipt))
                } else {
                    Ok(TxStatus::Reverted(receipt))
                }
            }
            // A node may count a block's nonces before it serves that block's receipts: only a transaction
            // the node does not know at all is superseded.
            None if mined_nonce > nonce => match self.rpc.transaction(hash).await? {
                Some(_) => Ok(TxStatus::Unconfirmed),
                None => Ok(TxStatus::Superseded),
            },
            None => Ok(TxStatus::NotMined),
        }
    }

    /// Follows a recorded transaction until it is final: rebroadcasts it while it is not mined, waits for
    /// the confirmations. Returns the final status ([`TxStatus::Confirmed`], [`TxStatus::Reverted`] or
    /// [`TxStatus::Superseded`]), or [`EthError::Timeout`] after the receipt timeout.
    pub async fn follow(
        &self,
        raw: &[u8],
        hash: &TxHash,
        nonce: u64,
    ) -> Result<TxStatus, EthError> {
        let deadline = tokio::time::Instant::now() + self.settings.receipt_timeout;
        let mut broadcast_done = false;
        loop {
            match self.status(hash, nonce).await? {
                status
                @ (TxStatus::Confirmed(_) | TxStatus::Reverted(_) | TxStatus::Superseded) => {
                    return Ok(status)
                }
                TxStatus::NotMined if !broadcast_done => {
                    if let Err(err) = self.broadcast(raw, hash).await {
                        warn!(%hash, %err, "rebroadcast failed; will retry");
                    } else {
                        broadcast_done = true;
                    }
                }
                TxStatus::NotMined | TxStatus::Unconfirmed => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EthError::Timeout(format!("transaction {hash}")));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Signs, broadcasts and follows a transaction with no durable record (for calls whose replay is
    /// harmless, e.g. a payee closing a channel).
    pub async fn send_and_follow(
        &self,
        to: Option<Address>,
        value: BigUint,
        data: Vec<u8>,
    ) -> Result<TxStatus, EthError> {
        let signed = {
            let guard = self.lock_sender().await;
            let signed = self.sign_next(&guard, to, value, data).await?;
            self.broadcast(&signed.raw, &signed.hash).await?;
            signed
        };
        self.follow(&signed.raw, &signed.hash, signed.nonce).await
    }

    /// Deploys a contract (`init_code` = bytecode ‖ ABI-encoded constructor arguments) with `value` wei, and
    /// returns its address once confirmed.
    pub async fn deploy(&self, init_code: Vec<u8>, value: BigUint) -> Result<Address, EthError> {
        match self.send_and_follow(None, value, init_code).await? {
            TxStatus::Confirmed(receipt) => receipt.contract_address.ok_or_else(|| {
                EthError::BadResponse("deployment receipt has no address".to_owned())
            }),
            other => Err(EthError::BadResponse(format!(
                "deployment failed: {other:?}"
            ))),
        }
    }
}
