//! The protocolData entries a trustline reads and writes: their names, and how legacy encodes values in them
//! (content type 2 JSON, 1 text, 0 bytes; docs/legacy-btp.md §5).

use btp::packet::{ContentType, ProtocolData, ProtocolDataEntry, ProtocolName};
use bytes::Bytes;
use channel_modules::Claim;
use serde_json::Value;

use super::legacy_format::b64url;
use crate::peer::error::WireError;

/// Names of the built-in side protocols.
pub(super) mod names {
    /// The ILP v1 packet.
    pub(crate) const ILP: &str = "ilp";
    /// The LPI `custom` JSON.
    pub(crate) const CUSTOM: &str = "custom";
    /// Ledger info, or our account.
    pub(crate) const INFO: &str = "info";
    /// The responder's fulfilled balance.
    pub(crate) const BALANCE: &str = "balance";
    /// The responder's `maxBalance`.
    pub(crate) const LIMIT: &str = "limit";
    /// A settlement claim, in the Response to a Fulfill.
    pub(crate) const CLAIM: &str = "claim";
}

/// `info` request byte asking for the full LedgerInfo (anything else asks for the account).
pub(super) const INFO_REQUEST_FULL: u8 = 2;

/// Legacy `protocolDataToIlpAndCustom` for one entry: JSON for type 2, text for type 1, bytes otherwise.
enum EntryValue {
    Json(Value),
    Text(String),
    Bytes(Bytes),
}

fn entry_value(e: &ProtocolDataEntry) -> Result<EntryValue, serde_json::Error> {
    match e.content_type {
        ContentType::APPLICATION_JSON => serde_json::from_slice(&e.data).map(EntryValue::Json),
        ContentType::TEXT_PLAIN_UTF8 => Ok(EntryValue::Text(
            String::from_utf8_lossy(&e.data).into_owned(),
        )),
        _ => Ok(EntryValue::Bytes(e.data.clone())),
    }
}

/// An entry's value as JSON: parsed JSON, text as a string, bytes as a base64url string; a JSON entry that
/// does not parse is the parser's error.
pub(super) fn parse_entry(e: &ProtocolDataEntry) -> Result<Value, serde_json::Error> {
    Ok(match entry_value(e)? {
        EntryValue::Json(v) => v,
        EntryValue::Text(t) => Value::String(t),
        EntryValue::Bytes(b) => Value::String(b64url(&b)),
    })
}

/// [`parse_entry`] of an entry the peer sent us: a JSON entry that does not parse is refused as legacy's
/// `JSON.parse` refuses it, with a `SyntaxError`.
pub(super) fn entry_json(e: &ProtocolDataEntry) -> Result<Value, WireError> {
    parse_entry(e).map_err(|err| WireError::from_json(&err))
}

/// The `claim` entry carrying `claim`, its content type following the claim's kind.
pub(super) fn claim_entry(claim: &Claim) -> ProtocolDataEntry {
    let name = ProtocolName::from_static(names::CLAIM);
    match claim {
        Claim::Json(v) => ProtocolDataEntry::json(name, v.to_string()),
        Claim::Text(t) => ProtocolDataEntry::text(name, t.clone()),
        Claim::Binary(b) => ProtocolDataEntry::octets(name, b.clone()),
    }
}

/// The claim in a `claim` entry; `None` for JSON that does not parse.
pub(super) fn entry_claim(e: &ProtocolDataEntry) -> Option<Claim> {
    match e.content_type {
        ContentType::APPLICATION_JSON => serde_json::from_slice(&e.data).ok().map(Claim::Json),
        ContentType::TEXT_PLAIN_UTF8 => {
            Some(Claim::Text(String::from_utf8_lossy(&e.data).into_owned()))
        }
        _ => Some(Claim::Binary(e.data.to_vec())),
    }
}

/// `ilp` first, then `custom` (legacy `ilpAndCustomToProtocolData`).
pub(super) fn ilp_and_custom(ilp: Option<&[u8]>, custom: Option<&Value>) -> ProtocolData {
    let mut pd = ProtocolData::new();
    if let Some(ilp) = ilp.filter(|i| !i.is_empty()) {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::ILP),
            Bytes::copy_from_slice(ilp),
        ));
    }
    if let Some(c) = custom {
        pd.push(ProtocolDataEntry::json(
            ProtocolName::from_static(names::CUSTOM),
            c.to_string(),
        ));
    }
    pd
}
