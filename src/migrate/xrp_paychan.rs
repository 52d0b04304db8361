//! Ledgers of the 2017 `ilp-plugin-xrp-paychan` (built on the payment-channel framework) in ILP Kit: their peer
//! becomes a trustline with the stock `xrp-paychan` module, and the plugin's channel records in its store table
//! become the module's options and trackers ([`channel_modules::xrp::legacy`], which reads the ledger to find
//! what the plugin did not store). The transfer log rows are imported as for any framework ledger.
//!
//! The plugin's options are mapped so: the framework's own (`listener`, `server`, `incomingSecret`,
//! `maxBalance`, `minBalance`, `prefix`, `info`, `token`) are kept; `rippledServer` becomes the module's
//! `rippled` (JSON-RPC over HTTP: `wss://` is read as `https://` on the same host and port, `ws://` as `http://`,
//! unless `--rippled` names the endpoint), `secret`, `address` and `maxUnsecured` are carried, and `info` is
//! what the plugin reported (`XRP`, scale 6) when the options give none. `maxAmount`, `fundThreshold` and
//! `settleDelay` steered channel creation and funding, which the module does not do; `incomingChannel: false`
//! made the plugin refuse every incoming transfer, which the module does through `maxUnsecured` (`0`).

use serde_json::{json, Map, Value};

use channel_modules::store::MaxValue;
use channel_modules::xrp::legacy::{
    convert_legacy_records, LegacyConversion, LegacyTrackers, LEGACY_MVT_INCOMING_CLAIM,
    LEGACY_MVT_INCOMING_CLAIM_SUBMITTED, LEGACY_MVT_OUTGOING_CHANNEL, LEGACY_XRP_PLUGIN_NAME,
};
use channel_modules::xrp::rpc::RippledClient;
use channel_modules::xrp::{DEFAULT_MIN_SETTLE_DELAY_SECS, XRP_PAYCHAN_MODULE_NAME};

use crate::config::ilp_kit::LedgerEntry;
use crate::config::legacy::PeerConfig;
use crate::config::legacy_options::PLUGIN_OPTIONS;

/// Framework options kept as they are: those ilp-bridge applies, and `token`, which it accepts and ignores.
fn kept_option(name: &str) -> bool {
    PLUGIN_OPTIONS.contains(&name) || name == "token"
}

/// Plugin options carried into the module's options, or read by the conversion.
const CARRIED_OPTIONS: &[&str] = &[
    "rippledServer",
    "secret",
    "address",
    "maxUnsecured",
    "peerAddress",
    "incomingChannel",
    "store",
];

/// Plugin options the module has no use for, with the reason.
const DROPPED_OPTIONS: &[(&str, &str)] = &[
    (
        "maxAmount",
        "the deposit of a channel the plugin would create; the module uses existing channels",
    ),
    (
        "fundThreshold",
        "when the plugin topped up its channel; top it up with PaymentChannelFund",
    ),
    (
        "settleDelay",
        "the settle delay of a channel the plugin would create",
    ),
];

/// Whether ILP Kit ran this ledger with the 2017 XRP paychan plugin.
pub fn is_legacy_xrp(entry: &LedgerEntry) -> bool {
    entry.plugin == LEGACY_XRP_PLUGIN_NAME
}

/// The JSON-RPC URL for a `rippledServer` websocket URL: the same host, port and path over HTTP(S).
pub fn rippled_json_rpc_url(websocket: &str) -> String {
    if let Some(rest) = websocket.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = websocket.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        websocket.to_owned()
    }
}

/// What the plugin's options give the conversion.
#[derive(Clone)]
pub struct XrpLedger {
    /// The options to keep (the framework's), without the module.
    kept: Map<String, Value>,
    /// The module's options so far (`rippled`, `secret`, `address`, `maxUnsecured`).
    module: Map<String, Value>,
    /// The rippled JSON-RPC endpoint.
    pub rippled: String,
    /// The account secret.
    secret: String,
    /// The account.
    pub address: String,
    /// The peer's account (empty when the options do not give it).
    pub peer_address: String,
    /// Options not carried, with the reason.
    pub dropped: Vec<String>,
}

impl std::fmt::Debug for XrpLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XrpLedger")
            .field("rippled", &self.rippled)
            .field("address", &self.address)
            .field("peer_address", &self.peer_address)
            .finish_non_exhaustive()
    }
}

fn string_option<'a>(options: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    options.get(name).and_then(Value::as_str)
}

impl XrpLedger {
    /// Reads the plugin's options of `entry`; `rippled` overrides the endpoint derived from `rippledServer`.
    pub fn from_entry(entry: &LedgerEntry, rippled: Option<&str>) -> Result<Self, String> {
        if !entry.store {
            return Err(format!(
                "store is not true: {LEGACY_XRP_PLUGIN_NAME} kept its channel and claims in memory only, so \
                 ILP Kit's database holds none of them to convert"
            ));
        }
        let Value::Object(options) = &entry.options else {
            return Err("options must be an object".to_owned());
        };
        let secret = string_option(options, "secret")
            .ok_or("options.secret (the account's family seed) is missing")?
            .to_owned();
        let keys = channel_modules::xrp::crypto::KeyPair::from_secret(&secret)
            .map_err(|e| format!("options.secret: {e}"))?;
        let address = string_option(options, "address")
            .map(str::to_owned)
            .unwrap_or_else(|| keys.public_key().address());
        let peer_address = string_option(options, "peerAddress")
            .unwrap_or("")
            .to_owned();
        let rippled = match (rippled, string_option(options, "rippledServer")) {
            (Some(url), _) => url.to_owned(),
            (None, Some(ws)) => rippled_json_rpc_url(ws),
            (None, None) => return Err(
                "options.rippledServer is missing; name rippled's JSON-RPC endpoint with --rippled"
                    .to_owned(),
            ),
        };
        let mut kept = Map::new();
        let mut dropped = Vec::new();
        for (name, value) in options {
            if kept_option(name) {
                if !value.is_null() {
                    kept.insert(name.clone(), value.clone());
                }
            } else if CARRIED_OPTIONS.contains(&name.as_str()) {
                continue;
            } else if let Some((_, reason)) = DROPPED_OPTIONS.iter().find(|(n, _)| n == name) {
                dropped.push(format!("{name}: {reason}"));
            } else {
                dropped.push(format!("{name}: not an option ilp-bridge knows"));
            }
        }
        if options.get("incomingChannel") != Some(&Value::Bool(true)) {
            dropped.push(
                "incomingChannel was not true: the plugin refused every incoming transfer; the module accepts \
                 them up to maxUnsecured drops beyond the best claim"
                    .to_owned(),
            );
        }
        let mut module = Map::new();
        module.insert("rippled".to_owned(), json!(rippled));
        module.insert("secret".to_owned(), json!(secret));
        module.insert("address".to_owned(), json!(address));
        let max_unsecured = match options.get("maxUnsecured") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "0".to_owned(),
        };
        module.insert("maxUnsecured".to_owned(), json!(max_unsecured));
        Ok(XrpLedger {
            kept,
            module,
            rippled,
            secret,
            address,
            peer_address,
            dropped,
        })
    }

    /// The peer's legacy options: the framework's options, `store`, the module and its options (with the
    /// conversion's channel options when given).
    pub fn peer_options(&self, prefix: &str, conversion: Option<&LegacyConversion>) -> Value {
        let mut options = self.kept.clone();
        options.insert("prefix".to_owned(), json!(prefix));
        options.insert("store".to_owned(), json!(true));
        if !options.contains_key("info") && options.contains_key("listener") {
            // What the plugin's getInfo reported.
            options.insert(
                "info".to_owned(),
                json!({
                    "currencyCode": "XRP",
                    "currencyScale": 6,
                    "prefix": prefix,
                    "connectors": [format!("{prefix}{}", self.peer_address)],
                }),
            );
        }
        let mut module = self.module.clone();
        if let Some(c) = conversion {
            if let Some(id) = c.channel {
                module.insert("channel".to_owned(), json!(id.to_string()));
            }
            if let Some((_, keys)) = &c.channel_key {
                module.insert("channelSecret".to_owned(), json!(keys.private_key_hex()));
            }
            if let Some(id) = c.peer_channel {
                module.insert("peerChannel".to_owned(), json!(id.to_string()));
            }
            if let Some(delay) = c
                .peer_settle_delay
                .filter(|d| *d < DEFAULT_MIN_SETTLE_DELAY_SECS)
            {
                module.insert("minSettleDelay".to_owned(), json!(delay));
            }
        }
        options.insert("module".to_owned(), json!(XRP_PAYCHAN_MODULE_NAME));
        options.insert("moduleOptions".to_owned(), Value::Object(module));
        Value::Object(options)
    }

    /// The peer before the conversion (for the checks that need no table: names, ports).
    pub fn peer(&self, prefix: &str) -> Result<PeerConfig, String> {
        PeerConfig::from_legacy_json(prefix, &self.peer_options(prefix, None))
            .map_err(|e| format!("{e:#}"))
    }

    /// Converts the plugin's trackers among `trackers` (the table's, by key) into the module's. Returns the
    /// conversion and the trackers to import in place of `trackers`: the plugin's three replaced by the
    /// module's, any other kept as it is.
    pub async fn convert(
        &self,
        trackers: &[(String, MaxValue)],
    ) -> Result<(LegacyConversion, Vec<(String, MaxValue)>), String> {
        let find = |key: &str| {
            trackers
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let legacy = LegacyTrackers {
            outgoing_channel: find(LEGACY_MVT_OUTGOING_CHANNEL),
            incoming_claim: find(LEGACY_MVT_INCOMING_CLAIM),
            incoming_claim_submitted: find(LEGACY_MVT_INCOMING_CLAIM_SUBMITTED),
        };
        let client = RippledClient::new(&self.rippled)
            .map_err(|e| format!("rippled {}: {e}", self.rippled))?;
        let conversion = convert_legacy_records(
            &client,
            &self.secret,
            &self.address,
            &self.peer_address,
            &legacy,
        )
        .await
        .map_err(|e| format!("{LEGACY_XRP_PLUGIN_NAME} records: {e}"))?;
        let legacy_keys = [
            LEGACY_MVT_OUTGOING_CHANNEL,
            LEGACY_MVT_INCOMING_CLAIM,
            LEGACY_MVT_INCOMING_CLAIM_SUBMITTED,
        ];
        let mut out: Vec<(String, MaxValue)> = trackers
            .iter()
            .filter(|(k, _)| !legacy_keys.contains(&k.as_str()))
            .cloned()
            .collect();
        out.extend(conversion.trackers.iter().cloned());
        Ok((conversion, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_map_to_json_rpc_on_the_same_host_and_port() {
        assert_eq!(
            rippled_json_rpc_url("wss://s1.ripple.com:51234/"),
            "https://s1.ripple.com:51234/"
        );
        assert_eq!(
            rippled_json_rpc_url("ws://127.0.0.1:6006"),
            "http://127.0.0.1:6006"
        );
        assert_eq!(
            rippled_json_rpc_url("http://127.0.0.1:5005/"),
            "http://127.0.0.1:5005/"
        );
    }
}
