//! Helpers shared by the Ethereum end-to-end tests (`eth_trustline`, `eth_engine`): a throw-away anvil per
//! test (killed by PID on drop), module options for anvil's dev keys, and the on-chain accounting the
//! assertions compare against (what an address sent, to whom, and what it paid in fees).

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use channel_modules::eth::rpc::RpcClient;
use channel_modules::eth::testing::Anvil;
use channel_modules::eth::types::{parse_quantity, parse_quantity_u64};
use channel_modules::eth::{Address, PrivateKey, TxHash};
use num_bigint::BigUint;
use serde_json::{json, Value};

pub type EthBoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dev account that pays.
pub const PAYER_KEY: usize = 1;
/// Dev account that is paid.
pub const PAYEE_KEY: usize = 2;
/// A third party.
pub const STRANGER_KEY: usize = 3;
/// How long a test waits for something before failing (a guard against hanging, not a speed assertion).
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// One gwei: a connector unit at scale 9 in wei (module scale 18).
pub const GWEI: u64 = 1_000_000_000;

/// A fresh anvil, or `None` (test skipped) when the binary is missing outside CI.
pub fn anvil() -> Option<Anvil> {
    Anvil::for_test()
}

/// The address of dev account `index`.
pub fn address(anvil: &Anvil, index: usize) -> Result<Address, EthBoxError> {
    Ok(PrivateKey::from_hex(anvil.dev_key(index))?.address())
}

/// Module options for dev account `key_index` (fast polling), with `extra` merged over them.
pub fn module_options(anvil: &Anvil, key_index: usize, extra: Value) -> Value {
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
pub struct SentTx {
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
pub async fn sent_by(
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
            let value = parse_quantity(tx["value"].as_str().ok_or("tx without value")?)?;
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
pub fn fees(txs: &[SentTx]) -> BigUint {
    txs.iter().map(|t| t.fee.clone()).sum()
}

/// Hashes of the transactions waiting in anvil's pool sent by `from` (automine off).
pub async fn pending_from(rpc: &RpcClient, from: &Address) -> Result<Vec<TxHash>, EthBoxError> {
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
pub async fn head(rpc: &RpcClient) -> Result<u64, EthBoxError> {
    let v = rpc.call("eth_blockNumber", json!([])).await?;
    Ok(parse_quantity_u64(v.as_str().ok_or("bad block number")?)?)
}

/// Polls `check` every 20 ms until it returns true; fails after [`WAIT_LIMIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<(), EthBoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("gave up waiting for: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
