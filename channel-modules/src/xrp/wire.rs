//! The claim of `xrp-paychan` on the wire and in its trackers: `{"channel": "<channel id>", "amount": "<drops>",
//! "signature": "<hex>", "publicKey": "<hex>"}`, the cumulative drops on the channel signed by its key
//! ([`super::crypto`]). The payer keeps the best claim it signed (tracker [`super::MVT_OUTGOING_CLAIM`]), the
//! payee the best it received ([`super::MVT_INCOMING_CLAIM`]), both in this form.

use serde_json::{json, Value};

use super::crypto::ChannelId;
use super::invalid;
use crate::claim::Claim;
use crate::error::ModuleError;
use crate::store::MaxValue;

/// A claim's JSON: `channel`, `amount` (decimal drops), `signature` (uppercase hex), `publicKey` (hex).
pub(super) fn claim_json(
    channel: &ChannelId,
    drops: u64,
    signature: &[u8],
    public_key: &str,
) -> Value {
    json!({
        "channel": channel.to_string(),
        "amount": drops.to_string(),
        "signature": hex::encode_upper(signature),
        "publicKey": public_key,
    })
}

/// Claims so far are on another channel than the one asked for: the module supports one channel per direction
/// for the life of a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "xrp-paychan: claims so far are on channel {before}; moving to another channel ({now}) is not supported \
     (fund {before} with PaymentChannelFund instead)"
)]
pub(super) struct ChannelMoved {
    /// The channel of the claims kept so far.
    before: ChannelId,
    /// The channel asked for.
    now: ChannelId,
}

/// Checks that `channel` is the channel of the claims a tracker already holds (`best`), if any: the module
/// supports one channel per direction for the life of a peer (top it up with `PaymentChannelFund`).
pub(super) fn same_channel_as_before(
    best: &MaxValue,
    channel: &ChannelId,
) -> Result<(), ChannelMoved> {
    let before = best
        .data
        .get("channel")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<ChannelId>().ok());
    match before {
        Some(before) if before != *channel => Err(ChannelMoved {
            before,
            now: *channel,
        }),
        _ => Ok(()),
    }
}

/// A claim as carried on the wire: `{"channel","amount","signature","publicKey"}`. The 2017
/// `ilp-plugin-xrp-paychan` sends only `{"amount","signature"}` (the channel is the one it named with
/// `ripple_channel_id`): such a claim is read against the channel the reader expects.
pub(super) struct IncomingClaim {
    /// The channel.
    pub(super) channel: ChannelId,
    /// Cumulative drops.
    pub(super) drops: u64,
    /// The signature bytes.
    pub(super) signature: Vec<u8>,
    /// The key the claim names, if any (checked against the channel's).
    pub(super) public_key: Option<String>,
}

impl IncomingClaim {
    /// Reads a claim object, strictly. A claim without `channel` is taken as one on `default_channel`, and
    /// refused when there is none.
    pub(super) fn from_json(
        value: &Value,
        default_channel: Option<ChannelId>,
    ) -> Result<Self, ModuleError> {
        let field = |name: &str| -> Result<&str, ModuleError> {
            value
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("claim has no string field {name}")))
        };
        let channel = match (value.get("channel"), default_channel) {
            (None | Some(Value::Null), Some(channel)) => channel,
            _ => field("channel")?
                .parse()
                .map_err(|e| invalid(format!("claim channel: {e}")))?,
        };
        Ok(IncomingClaim {
            channel,
            drops: field("amount")?
                .parse()
                .map_err(|_| invalid("claim amount is not a drops integer"))?,
            signature: hex::decode(field("signature")?)
                .map_err(|_| invalid("claim signature is not hex"))?,
            public_key: value
                .get("publicKey")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Reads a claim in any content type (a text or binary claim holds the JSON); see [`Self::from_json`].
    pub(super) fn from_claim(
        claim: &Claim,
        default_channel: Option<ChannelId>,
    ) -> Result<Self, ModuleError> {
        match claim {
            Claim::Json(v) => Self::from_json(v, default_channel),
            Claim::Text(t) => {
                let v: Value =
                    serde_json::from_str(t).map_err(|_| invalid("claim text is not JSON"))?;
                Self::from_json(&v, default_channel)
            }
            Claim::Binary(b) => {
                let v: Value =
                    serde_json::from_slice(b).map_err(|_| invalid("claim bytes are not JSON"))?;
                Self::from_json(&v, default_channel)
            }
        }
    }
}
