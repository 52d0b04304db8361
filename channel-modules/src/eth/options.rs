//! Options shared by the Ethereum modules (legacy-style camelCase JSON keys), parsed with clear errors.

use std::time::Duration;

use num_bigint::BigUint;
use serde_json::Value;

use super::key::PrivateKey;
use super::types::Address;
use super::wallet::{TxSettings, Wallet};
use crate::error::ModuleError;

/// JSON-RPC endpoint URL (required).
pub(crate) const OPT_RPC_URI: &str = "rpcUri";
/// Confirmations before a transaction counts (default 1).
pub(crate) const OPT_CONFIRMATIONS: &str = "confirmations";
/// Receipt poll interval, milliseconds (default 200).
pub(crate) const OPT_POLL_INTERVAL_MS: &str = "pollIntervalMs";
/// How long one call waits for a receipt, milliseconds (default 120000).
pub(crate) const OPT_RECEIPT_TIMEOUT_MS: &str = "receiptTimeoutMs";
/// Most the peer may owe us unsecured, in module units (default "0").
pub(crate) const OPT_MAX_UNSECURED: &str = "maxUnsecured";
/// The peer's address, if known in advance (else learned through the `eth_address` RPC).
pub(crate) const OPT_PEER_ADDRESS: &str = "peerAddress";

/// Options every Ethereum module reads.
#[derive(Clone, Debug)]
pub(crate) struct CommonOptions {
    /// Endpoint URL.
    pub(crate) rpc_uri: String,
    /// Transaction following.
    pub(crate) tx: TxSettings,
    /// Unsecured limit.
    pub(crate) max_unsecured: BigUint,
    /// Configured peer address.
    pub(crate) peer_address: Option<Address>,
}

impl CommonOptions {
    /// Parses the common options.
    pub(crate) fn parse(options: &Value) -> Result<Self, ModuleError> {
        let rpc_uri = str_option(options, OPT_RPC_URI)?
            .ok_or_else(|| ModuleError::InvalidFields(format!("{OPT_RPC_URI} is required")))?
            .to_owned();
        let defaults = TxSettings::default();
        let confirmations = u64_option(options, OPT_CONFIRMATIONS)?.unwrap_or(1);
        if confirmations == 0 {
            return Err(ModuleError::InvalidFields(format!(
                "{OPT_CONFIRMATIONS} must be at least 1"
            )));
        }
        let tx = TxSettings {
            confirmations,
            poll_interval: u64_option(options, OPT_POLL_INTERVAL_MS)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.poll_interval),
            receipt_timeout: u64_option(options, OPT_RECEIPT_TIMEOUT_MS)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.receipt_timeout),
        };
        let peer_address = match str_option(options, OPT_PEER_ADDRESS)? {
            Some(text) => Some(
                text.parse::<Address>()
                    .map_err(|e| ModuleError::InvalidFields(format!("{OPT_PEER_ADDRESS}: {e}")))?,
            ),
            None => None,
        };
        Ok(CommonOptions {
            rpc_uri,
            tx,
            max_unsecured: amount_option(options, OPT_MAX_UNSECURED)?.unwrap_or_default(),
            peer_address,
        })
    }

    /// The wallet these options and the configured key describe.
    pub(crate) fn wallet(&self, options: &Value) -> Result<Wallet, ModuleError> {
        let key = PrivateKey::from_options(options)?;
        Ok(Wallet::new(&self.rpc_uri, key, self.tx.clone())?)
    }
}

/// A string option.
pub(crate) fn str_option<'a>(
    options: &'a Value,
    name: &str,
) -> Result<Option<&'a str>, ModuleError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ModuleError::InvalidFields(format!(
            "{name} must be a string, got {other}"
        ))),
    }
}

/// A non-negative integer option given as a JSON number or a decimal string.
pub(crate) fn u64_option(options: &Value, name: &str) -> Result<Option<u64>, ModuleError> {
    match amount_option(options, name)? {
        None => Ok(None),
        Some(value) => u64::try_from(&value)
            .map(Some)
            .map_err(|_| ModuleError::InvalidFields(format!("{name} is too large"))),
    }
}

/// An amount option: a decimal string (legacy style) or a JSON integer.
pub(crate) fn amount_option(options: &Value, name: &str) -> Result<Option<BigUint>, ModuleError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse::<BigUint>().map(Some).map_err(|_| {
            ModuleError::InvalidFields(format!("{name} must be a non-negative integer"))
        }),
        Some(Value::Number(n)) => n.as_u64().map(|v| Some(BigUint::from(v))).ok_or_else(|| {
            ModuleError::InvalidFields(format!("{name} must be a non-negative integer"))
        }),
        Some(other) => Err(ModuleError::InvalidFields(format!(
            "{name} must be an integer, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_defaults_and_refuses_bad_values() -> Result<(), ModuleError> {
        let opts = CommonOptions::parse(
            &json!({ "rpcUri": "http://127.0.0.1:1", "maxUnsecured": "500" }),
        )?;
        assert_eq!(opts.tx.confirmations, 1);
        assert_eq!(opts.max_unsecured, BigUint::from(500u32));
        assert!(opts.peer_address.is_none());
        assert!(CommonOptions::parse(&json!({})).is_err());
        assert!(CommonOptions::parse(&json!({ "rpcUri": "x", "confirmations": 0 })).is_err());
        assert!(CommonOptions::parse(&json!({ "rpcUri": "x", "maxUnsecured": "-1" })).is_err());
        assert!(CommonOptions::parse(&json!({ "rpcUri": "x", "peerAddress": "0x12" })).is_err());
        Ok(())
    }
}
