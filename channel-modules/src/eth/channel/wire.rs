//! The JSON forms of `eth-channel`, each parsed once into a typed value: the claim on the wire
//! ([`WireClaim`], and the payer's [`OutgoingClaim`] that becomes one) and the records the module keeps in its
//! max-value trackers and transfer log ([`OutgoingChannelRecord`], [`ChannelTx`], [`IncomingRecord`],
//! [`SubmittedClose`]).
//!
//! A claim from the peer is parsed strictly: a field that is missing or malformed refuses the claim
//! ([`ModuleError::InvalidFields`]). A record is read leniently, field by field, the way the module has always
//! read it: a field that is absent or does not parse reads as `None` (or empty), and each user decides what
//! that means. Every writer emits its fields in one fixed order, the order the JSON object literals this module
//! wrote them with, so a record written through these types has the same bytes as before (the root crate keeps
//! JSON key order).
//!
//! Claims on the wire: `{"channel": "0x…", "amount": "<wei on this channel>", "signature": "0x…", "base":
//! "<wei>", "retired": [{"channel", "amount", "signature"}, …]}`. `signature` is the payer's over `channel`
//! and `amount` only ([`super::contract::claim_digest`]); `base` (what the payer's earlier channels carried, so
//! its cumulative total is `base + amount`) is advisory and unsigned; `retired` (absent when empty) holds the
//! payer's final claim on each channel it retired that may still be closed, at most
//! [`super::MAX_RETIRED_CLAIMS`], each signed on its own. Both are optional: a peer that sends neither is
//! understood, and one that ignores them still works.

use num_bigint::BigUint;
use serde_json::{json, Map, Value};

use super::super::key::RecoverableSignature;
use super::super::types::{decode_hex, encode_hex, Address, TxHash};
use crate::claim::Claim;
use crate::error::ModuleError;

/// Width of a claim's amount in the contract (`uint256`), in bits.
const UINT256_BITS: u64 = 256;

/// An address field, if it is a string that parses.
fn address_field(value: &Value) -> Option<Address> {
    value.as_str().and_then(|s| s.parse().ok())
}

/// A decimal amount field ([`crate::amount::parse_decimal`]), if it is a string that parses.
fn amount_field(value: &Value) -> Option<BigUint> {
    value
        .as_str()
        .and_then(|s| crate::amount::parse_amount(s).ok())
}

/// A string field, if it is one.
fn string_field(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// Inserts `value` under `key` when it is `Some`.
fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

/// One signed claim: `amount` wei on `channel`, signed by the channel's payer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignedClaim {
    /// The channel contract.
    pub(crate) channel: Address,
    /// Wei on this channel, cumulative.
    pub(crate) amount: BigUint,
    /// The payer's signature over [`super::contract::claim_digest`].
    pub(crate) signature: RecoverableSignature,
}

impl SignedClaim {
    /// The signature as written on the wire and in records: `0x` + 65 bytes of lowercase hex.
    pub(crate) fn signature_hex(&self) -> String {
        encode_hex(&self.signature.to_bytes65())
    }

    /// `{"channel", "amount", "signature"}`, as on the wire.
    #[cfg(test)]
    fn to_json(&self) -> Value {
        json!({
            "channel": self.channel.to_string(),
            "amount": self.amount.to_string(),
            "signature": self.signature_hex(),
        })
    }

    /// Parses one claim object; `what` names it in refusals (`claim`, `claim.retired[]`).
    fn parse(value: &Value, what: &str) -> Result<Self, ModuleError> {
        let channel = address_field(&value["channel"]).ok_or_else(|| {
            ModuleError::InvalidFields(format!("{what}.channel must be an address"))
        })?;
        let amount = amount_field(&value["amount"]).ok_or_else(|| {
            ModuleError::InvalidFields(format!("{what}.amount must be a decimal string"))
        })?;
        // A claim is signed and closed as a uint256: a longer amount is the peer's error, not one to retry.
        if amount.bits() > UINT256_BITS {
            return Err(ModuleError::InvalidFields(format!(
                "{what}.amount exceeds {UINT256_BITS} bits"
            )));
        }
        let sig_bytes = value["signature"]
            .as_str()
            .map(decode_hex)
            .transpose()?
            .ok_or_else(|| ModuleError::InvalidFields(format!("{what}.signature missing")))?;
        let signature = RecoverableSignature::from_bytes65(&sig_bytes)?;
        Ok(SignedClaim {
            channel,
            amount,
            signature,
        })
    }
}

/// An incoming claim: the claim on the payer's current channel and what it says about earlier ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WireClaim {
    /// The claim on the payer's current channel.
    pub(crate) current: SignedClaim,
    /// The payer's `base` (what its earlier channels carried): advisory, not signed.
    pub(crate) base: Option<BigUint>,
    /// The payer's final claims on channels it retired (each signed on its own).
    pub(crate) retired: Vec<SignedClaim>,
}

impl WireClaim {
    /// Parses a claim from the peer, strictly.
    pub(crate) fn parse(claim: &Claim) -> Result<Self, ModuleError> {
        let Claim::Json(value) = claim else {
            return Err(ModuleError::InvalidFields(
                "eth-channel claims are JSON".to_owned(),
            ));
        };
        let current = SignedClaim::parse(value, "claim")?;
        let base = match value.get("base") {
            None | Some(Value::Null) => None,
            Some(base) => Some(amount_field(base).ok_or_else(|| {
                ModuleError::InvalidFields("claim.base must be a decimal string".into())
            })?),
        };
        let retired = match value.get("retired") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries
                .iter()
                .map(|entry| SignedClaim::parse(entry, "claim.retired[]"))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ModuleError::InvalidFields(
                    "claim.retired must be an array".into(),
                ))
            }
        };
        Ok(WireClaim {
            current,
            base,
            retired,
        })
    }
}

/// A claim the payer signed, as it sends it and keeps it (the `outgoing_claim` tracker's data):
/// `{"channel", "amount", "signature", "base", "retired"?}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutgoingClaim {
    /// The channel it is on.
    pub(crate) channel: Address,
    /// Wei on that channel.
    pub(crate) amount: BigUint,
    /// The signature, `0x` hex.
    pub(crate) signature: String,
    /// What the payer's earlier channels carried.
    pub(crate) base: BigUint,
    /// The final claims on retired channels it carries (omitted from the JSON when empty).
    pub(crate) retired: Vec<CarriedClaim>,
}

impl OutgoingClaim {
    /// The claim's JSON.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("channel".into(), json!(self.channel.to_string()));
        map.insert("amount".into(), json!(self.amount.to_string()));
        map.insert("signature".into(), json!(self.signature));
        map.insert("base".into(), json!(self.base.to_string()));
        if !self.retired.is_empty() {
            let retired = self.retired.iter().map(CarriedClaim::to_wire).collect();
            map.insert("retired".into(), Value::Array(retired));
        }
        Value::Object(map)
    }
}

/// What the payer reads of its best signed claim (the `outgoing_claim` tracker's data): enough to resend it and
/// to carry it once its channel is retired. Every field is `None` when nothing was signed yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutgoingClaimRecord {
    /// The channel it is on.
    pub(crate) channel: Option<Address>,
    /// Wei on that channel.
    pub(crate) amount: Option<BigUint>,
    /// The signature, as stored.
    pub(crate) signature: Option<String>,
}

impl OutgoingClaimRecord {
    /// Reads the tracker's data.
    pub(crate) fn read(data: &Value) -> Self {
        OutgoingClaimRecord {
            channel: address_field(&data["channel"]),
            amount: amount_field(&data["amount"]),
            signature: string_field(&data["signature"]),
        }
    }
}

/// A final claim on a retired channel as the payer keeps it (in [`OutgoingChannelRecord::retired_claims`]) with
/// the channel's expiry, so claims stop carrying it once it expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CarriedClaim {
    /// The retired channel.
    pub(crate) channel: Address,
    /// Wei signed on it.
    pub(crate) amount: BigUint,
    /// The signature, as stored.
    pub(crate) signature: String,
    /// The channel's expiry (Unix seconds), if the record knew it.
    pub(crate) expires_at: Option<u64>,
}

impl CarriedClaim {
    /// Reads one entry; `None` when its channel, amount or signature is unreadable.
    fn read(value: &Value) -> Option<Self> {
        Some(CarriedClaim {
            channel: address_field(&value["channel"])?,
            amount: amount_field(&value["amount"])?,
            signature: string_field(&value["signature"])?,
            expires_at: value["expiresAt"].as_u64(),
        })
    }

    /// `{"channel", "amount", "signature", "expiresAt"}` (`expiresAt` `null` when unknown), as kept.
    fn to_record(&self) -> Value {
        json!({
            "channel": self.channel.to_string(),
            "amount": self.amount.to_string(),
            "signature": self.signature,
            "expiresAt": self.expires_at,
        })
    }

    /// `{"channel", "amount", "signature"}`, as carried on the wire.
    fn to_wire(&self) -> Value {
        json!({
            "channel": self.channel.to_string(),
            "amount": self.amount.to_string(),
            "signature": self.signature,
        })
    }
}

/// The payer's current channel (the `outgoing_channel` tracker's data; value: the channel's sequence number):
/// `{"base", "retired", "expiresAt", "retiredClaims", "address"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutgoingChannelRecord {
    /// What the claims on earlier channels carried: a claim on this one is for `total − base`.
    pub(crate) base: Option<BigUint>,
    /// Every channel retired before this one, oldest first (to reclaim once expired).
    pub(crate) retired: Vec<Address>,
    /// This channel's expiry, Unix seconds.
    pub(crate) expires_at: Option<u64>,
    /// Final claims on retired channels that the payee may still close, carried on this channel's claims.
    pub(crate) retired_claims: Vec<CarriedClaim>,
    /// The channel contract (`None` before the first channel was opened).
    pub(crate) address: Option<Address>,
}

impl OutgoingChannelRecord {
    /// Reads the tracker's data. Unreadable entries of the lists are left out.
    pub(crate) fn read(data: &Value) -> Self {
        let list = |key: &str| data[key].as_array().map(Vec::as_slice).unwrap_or_default();
        OutgoingChannelRecord {
            base: amount_field(&data["base"]),
            retired: list("retired").iter().filter_map(address_field).collect(),
            expires_at: data["expiresAt"].as_u64(),
            retired_claims: list("retiredClaims")
                .iter()
                .filter_map(CarriedClaim::read)
                .collect(),
            address: address_field(&data["address"]),
        }
    }

    /// The tracker's data.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        insert_some(
            &mut map,
            "base",
            self.base.as_ref().map(|b| json!(b.to_string())),
        );
        let retired = self.retired.iter().map(|a| json!(a.to_string())).collect();
        map.insert("retired".into(), Value::Array(retired));
        map.insert("expiresAt".into(), json!(self.expires_at));
        let carried = self
            .retired_claims
            .iter()
            .map(CarriedClaim::to_record)
            .collect();
        map.insert("retiredClaims".into(), Value::Array(carried));
        insert_some(
            &mut map,
            "address",
            self.address.map(|a| json!(a.to_string())),
        );
        Value::Object(map)
    }
}

/// A payer transaction (deploy or top-up) as recorded in the `eth_channel_txs` log before its broadcast (the
/// record's `custom`): `{"kind", "channel", "txHash", "raw", "nonce"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChannelTx {
    /// `open` or `deposit`.
    pub(crate) kind: String,
    /// The channel it opens or funds.
    pub(crate) channel: Address,
    /// Its hash.
    pub(crate) tx_hash: TxHash,
    /// The signed transaction, to broadcast again while it is not mined.
    pub(crate) raw: Vec<u8>,
    /// Its nonce.
    pub(crate) nonce: u64,
}

impl ChannelTx {
    /// The record's `custom` JSON.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "channel": self.channel.to_string(),
            "txHash": self.tx_hash.to_string(),
            "raw": encode_hex(&self.raw),
            "nonce": self.nonce,
        })
    }

    /// Reads a record's `custom` JSON: the hash, raw bytes and nonce to follow the transaction with, and its
    /// kind for the log (`None` when any of the three is unreadable).
    pub(crate) fn read_to_follow(custom: &Value) -> Option<(TxHash, Vec<u8>, u64, Option<String>)> {
        let hash = custom["txHash"].as_str()?.parse().ok()?;
        let raw = decode_hex(custom["raw"].as_str()?).ok()?;
        let nonce = custom["nonce"].as_u64()?;
        Some((hash, raw, nonce, string_field(&custom["kind"])))
    }
}

/// A retired channel in the payee's record (an entry of [`IncomingRecord::retired`]):
/// `{"channel", "amount", "signature", "cumulative"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetiredChannel {
    /// The channel.
    pub(crate) channel: Option<Address>,
    /// The best claim's amount on it.
    pub(crate) amount: Option<BigUint>,
    /// That claim's signature, as stored.
    pub(crate) signature: Option<String>,
    /// The cumulative total credited through this channel (every channel before it included).
    pub(crate) cumulative: Option<BigUint>,
}

impl RetiredChannel {
    fn read(value: &Value) -> Self {
        RetiredChannel {
            channel: address_field(&value["channel"]),
            amount: amount_field(&value["amount"]),
            signature: string_field(&value["signature"]),
            cumulative: amount_field(&value["cumulative"]),
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        insert_some(
            &mut map,
            "channel",
            self.channel.map(|c| json!(c.to_string())),
        );
        insert_some(
            &mut map,
            "amount",
            self.amount.as_ref().map(|a| json!(a.to_string())),
        );
        insert_some(
            &mut map,
            "signature",
            self.signature.clone().map(Value::from),
        );
        insert_some(
            &mut map,
            "cumulative",
            self.cumulative.as_ref().map(|c| json!(c.to_string())),
        );
        Value::Object(map)
    }
}

/// The payee's record of what it was paid (the `incoming_claim` tracker's data; value: everything credited,
/// `base + amount`): `{"channel", "amount", "base", "retired", "signature"?}`. `channel`, `amount` and
/// `signature` are the best claim on the payer's current channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IncomingRecord {
    /// The payer's current channel.
    pub(crate) channel: Option<Address>,
    /// The best claim's amount on it (`None`: none yet, or unreadable).
    pub(crate) amount: Option<BigUint>,
    /// What the retired channels carry.
    pub(crate) base: Option<BigUint>,
    /// Each retired channel's best claim and the cumulative total through it.
    pub(crate) retired: Vec<RetiredChannel>,
    /// The best claim's signature, as stored.
    pub(crate) signature: Option<String>,
}

impl IncomingRecord {
    /// Reads the tracker's data.
    pub(crate) fn read(data: &Value) -> Self {
        IncomingRecord {
            channel: address_field(&data["channel"]),
            amount: amount_field(&data["amount"]),
            base: amount_field(&data["base"]),
            retired: data["retired"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(RetiredChannel::read)
                .collect(),
            signature: string_field(&data["signature"]),
        }
    }

    /// Where `channel` is in [`IncomingRecord::retired`].
    pub(crate) fn retired_position(&self, channel: &Address) -> Option<usize> {
        self.retired
            .iter()
            .position(|entry| entry.channel == Some(*channel))
    }

    /// The tracker's data.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        insert_some(
            &mut map,
            "channel",
            self.channel.map(|c| json!(c.to_string())),
        );
        insert_some(
            &mut map,
            "amount",
            self.amount.as_ref().map(|a| json!(a.to_string())),
        );
        insert_some(
            &mut map,
            "base",
            self.base.as_ref().map(|b| json!(b.to_string())),
        );
        let retired = self.retired.iter().map(RetiredChannel::to_json).collect();
        map.insert("retired".into(), Value::Array(retired));
        insert_some(
            &mut map,
            "signature",
            self.signature.clone().map(Value::from),
        );
        Value::Object(map)
    }
}

/// The payee's record of its last close (the `incoming_claim_submitted` tracker's data; value: the cumulative
/// total through the closed channel): `{"channel", "amount", "txHash"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubmittedClose {
    /// The channel closed.
    pub(crate) channel: Address,
    /// The amount it was closed with.
    pub(crate) amount: BigUint,
    /// The close transaction.
    pub(crate) tx_hash: TxHash,
}

impl SubmittedClose {
    /// The tracker's data.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "channel": self.channel.to_string(),
            "amount": self.amount.to_string(),
            "txHash": self.tx_hash.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
