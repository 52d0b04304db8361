//! Helpers shared by the Ethereum end-to-end tests (`eth_trustline`, `eth_engine`): a throw-away anvil per
//! test (killed by PID on drop), module options for anvil's dev keys, and the on-chain accounting the
//! assertions compare against (what an address sent, to whom, and what it paid in fees).

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use channel_modules::eth::rpc::RpcClient;
use channel_modules::eth::testing::Anvil;
use channel_modules::eth::types::{parse_hex_u64, parse_hex_uint};
use channel_modules::eth::wallet::{TxSettings, TxStatus, Wallet};
use channel_modules::eth::{Address, PrivateKey, TxHash};
use num_bigint::BigUint;
use serde_json::{json, Value};

pub(crate) type EthBoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dev account that pays.
pub(crate) const PAYER_KEY: usize = 1;
/// Dev account that is paid.
pub(crate) const PAYEE_KEY: usize = 2;
/// A third party.
pub(crate) const STRANGER_KEY: usize = 3;
/// How long a test waits for something before failing (a guard against hanging, not a speed assertion).
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// One gwei: a connector unit at scale 9 in wei (module scale 18).
pub(crate) const GWEI: u64 = 1_000_000_000;

/// A fresh anvil, or `None` (test skipped) when the binary is missing outside CI.
pub(crate) fn anvil() -> Option<Anvil> {
    Anvil::for_test()
}

/// The address of dev account `index`.
pub(crate) fn address(anvil: &Anvil, index: usize) -> Result<Address, EthBoxError> {
    Ok(PrivateKey::from_hex(anvil.dev_key(index))?.address())
}

/// The chain as a test finds it before it starts anything: a client, the payer's and the payee's addresses,
/// the first block the test can cause and both balances.
pub(crate) struct ChainStart {
    /// A client of the test's anvil.
    pub rpc: RpcClient,
    /// Address of [`PAYER_KEY`].
    pub payer: Address,
    /// Address of [`PAYEE_KEY`].
    pub payee: Address,
    /// The block after the current head.
    pub first_block: u64,
    /// The payer's balance, wei.
    pub payer_before: BigUint,
    /// The payee's balance, wei.
    pub payee_before: BigUint,
}

/// Reads a [`ChainStart`] from `anvil`.
pub(crate) async fn chain_start(anvil: &Anvil) -> Result<ChainStart, EthBoxError> {
    let rpc = anvil.client()?;
    let payer = address(anvil, PAYER_KEY)?;
    let payee = address(anvil, PAYEE_KEY)?;
    let first_block = rpc.block_number().await? + 1;
    let payer_before = rpc.balance(&payer).await?;
    let payee_before = rpc.balance(&payee).await?;
    Ok(ChainStart {
        rpc,
        payer,
        payee,
        first_block,
        payer_before,
        payee_before,
    })
}

/// Turns automining (back) on and mines one block, so whatever waits in the pool is mined.
pub(crate) async fn mine_pending(anvil: &Anvil) -> Result<(), EthBoxError> {
    anvil.set_automine(true).await?;
    anvil.mine(1).await?;
    Ok(())
}

/// The hash of a confirmed transaction; an error for any other outcome.
pub(crate) fn confirmed(status: TxStatus) -> Result<TxHash, EthBoxError> {
    match status {
        TxStatus::Confirmed(r) => Ok(r.transaction_hash),
        other => Err(format!("transaction failed: {other:?}").into()),
    }
}

/// Two confirmed payments a dishonest payer might claim as its own: the stranger paying the payee
/// `foreign_wei`, then the payer paying the stranger `misdirected_wei`. Returns (foreign, misdirected).
pub(crate) async fn foreign_and_misdirected(
    anvil: &Anvil,
    foreign_wei: BigUint,
    misdirected_wei: BigUint,
) -> Result<(TxHash, TxHash), EthBoxError> {
    let settings = TxSettings {
        poll_interval: Duration::from_millis(20),
        ..TxSettings::default()
    };
    let stranger = Wallet::new(
        anvil.url(),
        PrivateKey::from_hex(anvil.dev_key(STRANGER_KEY))?,
        settings.clone(),
    )?;
    let foreign = confirmed(
        stranger
            .send_and_follow(Some(address(anvil, PAYEE_KEY)?), foreign_wei, Vec::new())
            .await?,
    )?;
    let payer_wallet = Wallet::new(
        anvil.url(),
        PrivateKey::from_hex(anvil.dev_key(PAYER_KEY))?,
        settings,
    )?;
    let misdirected = confirmed(
        payer_wallet
            .send_and_follow(
                Some(address(anvil, STRANGER_KEY)?),
                misdirected_wei,
                Vec::new(),
            )
            .await?,
    )?;
    Ok((foreign, misdirected))
}

/// Module options for dev account `key_index` (fast polling), with `extra` merged over them.
pub(crate) fn module_options(anvil: &Anvil, key_index: usize, extra: Value) -> Value {
    let mut opts = json!({
        "rpcUri": anvil.url(),
        "privateKey": anvil.dev_key(key_index),
        "pollIntervalMs": 20,
        "receiptTimeoutMs": 20_000,
    });
    if let (Some(o), Some(e)) = (opts.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    opts
}

/// One mined transaction sent by the address of interest.
#[derive(Debug, Clone)]
pub(crate) struct SentTx {
    /// Hash.
    pub hash: TxHash,
    /// Recipient (`None`: contract creation).
    pub to: Option<Address>,
    /// Wei sent.
    pub value: BigUint,
    /// Wei paid for gas.
    pub fee: BigUint,
    /// Receipt status.
    pub success: bool,
    /// Created contract, if any.
    pub contract: Option<Address>,
}

/// Every transaction mined from block `first_block` on whose sender is `from`.
pub(crate) async fn sent_by(
    rpc: &RpcClient,
    from: &Address,
    first_block: u64,
) -> Result<Vec<SentTx>, EthBoxError> {
    let head = rpc.block_number().await?;
    let mut out = Vec::new();
    for n in first_block..=head {
        let block = rpc
            .call("eth_getBlockByNumber", json!([format!("0x{n:x}"), true]))
            .await?;
        for tx in block["transactions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let sender: Address = tx["from"].as_str().ok_or("tx without from")?.parse()?;
            if sender != *from {
                continue;
            }
            let hash: TxHash = tx["hash"].as_str().ok_or("tx without hash")?.parse()?;
            let to = match tx["to"].as_str() {
                Some(s) => Some(s.parse::<Address>()?),
                None => None,
            };
            let value = parse_hex_uint(tx["value"].as_str().ok_or("tx without value")?)?;
            let receipt = rpc
                .receipt(&hash)
                .await?
                .ok_or("mined tx without receipt")?;
            out.push(SentTx {
                hash,
                to,
                value,
                fee: receipt.fee(),
                success: receipt.success,
                contract: receipt.contract_address,
            });
        }
    }
    Ok(out)
}

/// Total fees of `txs`.
pub(crate) fn fees(txs: &[SentTx]) -> BigUint {
    txs.iter().map(|t| t.fee.clone()).sum()
}

/// Hashes of the transactions waiting in anvil's pool sent by `from` (automine off).
pub(crate) async fn pending_from(
    rpc: &RpcClient,
    from: &Address,
) -> Result<Vec<TxHash>, EthBoxError> {
    let block = rpc
        .call("eth_getBlockByNumber", json!(["pending", true]))
        .await?;
    let mut out = Vec::new();
    for tx in block["transactions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let sender: Address = tx["from"].as_str().ok_or("tx without from")?.parse()?;
        if sender == *from {
            out.push(tx["hash"].as_str().ok_or("tx without hash")?.parse()?);
        }
    }
    Ok(out)
}

/// The current block number.
pub(crate) async fn head(rpc: &RpcClient) -> Result<u64, EthBoxError> {
    let v = rpc.call("eth_blockNumber", json!([])).await?;
    Ok(parse_hex_u64(v.as_str().ok_or("bad block number")?)?)
}

/// Polls `check` every 20 ms until it returns true; fails after [`WAIT_LIMIT`].
pub(crate) async fn wait_until<F, Fut>(what: &str, check: F) -> Result<(), EthBoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Ok(crate::poll_common::poll_until(what, WAIT_LIMIT, check).await?)
}
