//! A minimal Ethereum JSON-RPC 2.0 client over HTTP (reqwest): only the `eth_*` calls the modules use.
//!
//! Every call is bounded by [`RPC_REQUEST_TIMEOUT`]. Results are parsed into small typed structs; fields the
//! modules do not use are ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use num_bigint::BigUint;
use serde_json::{json, Value};

use super::types::{
    decode_hex, encode_hex, format_hex_uint, parse_hex_u64, parse_hex_uint, Address, TxHash,
};
use super::EthError;

/// Upper bound on one JSON-RPC request.
pub const RPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON-RPC endpoint.
#[derive(Debug)]
pub struct RpcClient {
    url: String,
    http: reqwest::Client,
    next_id: AtomicU64,
}

/// The parts of a transaction the modules check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxInfo {
    /// Hash.
    pub hash: TxHash,
    /// Sender.
    pub from: Address,
    /// Recipient (`None` for contract creation).
    pub to: Option<Address>,
    /// Wei sent.
    pub value: BigUint,
    /// Call data.
    pub input: Vec<u8>,
    /// Nonce.
    pub nonce: u64,
}

/// One event log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Emitting contract.
    pub address: Address,
    /// Indexed topics (topic 0 is the event signature hash).
    pub topics: Vec<[u8; 32]>,
    /// Non-indexed data.
    pub data: Vec<u8>,
}

/// A transaction receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Hash of the transaction.
    pub transaction_hash: TxHash,
    /// Block that included it.
    pub block_number: u64,
    /// `true` when execution succeeded (status 1).
    pub success: bool,
    /// Gas used.
    pub gas_used: BigUint,
    /// Price paid per gas, wei.
    pub effective_gas_price: BigUint,
    /// Address of a created contract.
    pub contract_address: Option<Address>,
    /// Emitted logs.
    pub logs: Vec<LogEntry>,
}

impl Receipt {
    /// Wei paid for gas: `gas_used × effective_gas_price`.
    pub fn fee(&self) -> BigUint {
        &self.gas_used * &self.effective_gas_price
    }
}

fn field<'a>(obj: &'a Value, name: &str) -> Result<&'a str, EthError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| EthError::BadResponse(format!("missing field {name}")))
}

fn opt_address(obj: &Value, name: &str) -> Result<Option<Address>, EthError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.parse()?)),
        Some(other) => Err(EthError::BadResponse(format!("bad {name}: {other}"))),
    }
}

impl RpcClient {
    /// A client for `url` (e.g. `http://127.0.0.1:8545`).
    pub fn new(url: &str) -> Result<Self, EthError> {
        let http = reqwest::Client::builder()
            .timeout(RPC_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| EthError::Transport(e.to_string()))?;
        Ok(RpcClient {
            url: url.to_owned(),
            http,
            next_id: AtomicU64::new(1),
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A raw call: `method` with positional `params`; returns `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, EthError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| EthError::Transport(e.to_string()))?;
        let reply: Value = response
            .json()
            .await
            .map_err(|e| EthError::Transport(e.to_string()))?;
        if let Some(error) = reply.get("error") {
            return Err(EthError::Rpc {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| EthError::BadResponse(format!("{method}: no result")))
    }

    async fn quantity(&self, method: &str, params: Value) -> Result<BigUint, EthError> {
        let result = self.call(method, params).await?;
        parse_hex_uint(
            result
                .as_str()
                .ok_or_else(|| EthError::BadResponse(format!("{method}: not a string")))?,
        )
    }

    async fn quantity_u64(&self, method: &str, params: Value) -> Result<u64, EthError> {
        let value = self.quantity(method, params).await?;
        u64::try_from(&value).map_err(|_| EthError::Range(format!("{method} result too large")))
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, EthError> {
        self.quantity_u64("eth_chainId", json!([])).await
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, EthError> {
        self.quantity_u64("eth_blockNumber", json!([])).await
    }

    /// `eth_getBalance` at the latest block.
    pub async fn balance(&self, address: &Address) -> Result<BigUint, EthError> {
        self.quantity("eth_getBalance", json!([address.to_string(), "latest"]))
            .await
    }

    /// `eth_getTransactionCount` at `block` (`"latest"` or `"pending"`).
    pub async fn transaction_count(&self, address: &Address, block: &str) -> Result<u64, EthError> {
        self.quantity_u64(
            "eth_getTransactionCount",
            json!([address.to_string(), block]),
        )
        .await
    }

    /// Base fee of the latest block (0 on pre-London chains).
    pub async fn base_fee(&self) -> Result<BigUint, EthError> {
        let block = self
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        match block.get("baseFeePerGas").and_then(Value::as_str) {
            Some(fee) => parse_hex_uint(fee),
            None => Ok(BigUint::default()),
        }
    }

    /// Timestamp (seconds) of the latest block.
    pub async fn latest_timestamp(&self) -> Result<u64, EthError> {
        let block = self
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        parse_hex_u64(field(&block, "timestamp")?)
    }

    /// `eth_maxPriorityFeePerGas`.
    pub async fn max_priority_fee(&self) -> Result<BigUint, EthError> {
        self.quantity("eth_maxPriorityFeePerGas", json!([])).await
    }

    /// `eth_estimateGas` for a call from `from`.
    pub async fn estimate_gas(
        &self,
        from: &Address,
        to: Option<&Address>,
        value: &BigUint,
        data: &[u8],
    ) -> Result<u64, EthError> {
        let mut call = json!({
            "from": from.to_string(),
            "value": format_hex_uint(value),
            "data": encode_hex(data),
        });
        if let Some(to) = to {
            call["to"] = json!(to.to_string());
        }
        self.quantity_u64("eth_estimateGas", json!([call])).await
    }

    /// `eth_call` at the latest block; returns the return data.
    pub async fn eth_call(&self, to: &Address, data: &[u8]) -> Result<Vec<u8>, EthError> {
        let result = self
            .call(
                "eth_call",
                json!([{ "to": to.to_string(), "data": encode_hex(data) }, "latest"]),
            )
            .await?;
        decode_hex(
            result
                .as_str()
                .ok_or_else(|| EthError::BadResponse("eth_call: not a string".to_owned()))?,
        )
    }

    /// `eth_getCode` at the latest block.
    pub async fn code(&self, address: &Address) -> Result<Vec<u8>, EthError> {
        let result = self
            .call("eth_getCode", json!([address.to_string(), "latest"]))
            .await?;
        decode_hex(
            result
                .as_str()
                .ok_or_else(|| EthError::BadResponse("eth_getCode: not a string".to_owned()))?,
        )
    }

    /// `eth_sendRawTransaction`; returns the hash the node computed.
    pub async fn send_raw_transaction(&self, raw: &[u8]) -> Result<TxHash, EthError> {
        let result = self
            .call("eth_sendRawTransaction", json!([encode_hex(raw)]))
            .await?;
        result
            .as_str()
            .ok_or_else(|| {
                EthError::BadResponse("eth_sendRawTransaction: not a string".to_owned())
            })?
            .parse()
    }

    /// `eth_getTransactionByHash` (`None` when the node does not know it).
    pub async fn transaction(&self, hash: &TxHash) -> Result<Option<TxInfo>, EthError> {
        let tx = self
            .call("eth_getTransactionByHash", json!([hash.to_string()]))
            .await?;
        if tx.is_null() {
            return Ok(None);
        }
        Ok(Some(TxInfo {
            hash: field(&tx, "hash")?.parse()?,
            from: field(&tx, "from")?.parse()?,
            to: opt_address(&tx, "to")?,
            value: parse_hex_uint(field(&tx, "value")?)?,
            input: decode_hex(field(&tx, "input")?)?,
            nonce: parse_hex_u64(field(&tx, "nonce")?)?,
        }))
    }

    /// `eth_getTransactionReceipt` (`None` while not mined).
    pub async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, EthError> {
        let r = self
            .call("eth_getTransactionReceipt", json!([hash.to_string()]))
            .await?;
        if r.is_null() {
            return Ok(None);
        }
        let mut logs = Vec::new();
        for log in r
            .get("logs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let mut topics = Vec::new();
            for topic in log
                .get("topics")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let text = topic
                    .as_str()
                    .ok_or_else(|| EthError::BadResponse("topic not a string".to_owned()))?;
                topics.push(super::types::decode_fixed_hex::<32>(text)?);
            }
            logs.push(LogEntry {
                address: field(log, "address")?.parse()?,
                topics,
                data: decode_hex(field(log, "data")?)?,
            });
        }
        Ok(Some(Receipt {
            transaction_hash: field(&r, "transactionHash")?.parse()?,
            block_number: parse_hex_u64(field(&r, "blockNumber")?)?,
            success: parse_hex_u64(field(&r, "status")?)? == 1,
            gas_used: parse_hex_uint(field(&r, "gasUsed")?)?,
            effective_gas_price: parse_hex_uint(field(&r, "effectiveGasPrice")?)?,
            contract_address: opt_address(&r, "contractAddress")?,
            logs,
        }))
    }
}
