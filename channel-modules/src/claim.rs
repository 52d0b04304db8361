//! What a settlement is worth on the wire and to the host: the [`Claim`] a payer's module hands the payee's
//! (a settlement proof, carried in the legacy `claim` side protocol or in an RFC 38 settlement message) and the
//! [`IncomingCredit`] the payee's module makes of it. Produced and consumed by [`crate::ChannelModule`]s,
//! with the helpers the JSON-claim modules share (`claim_object`, `claim_amount`, `keep_best_claim`).

use serde::{Deserialize, Serialize};

use crate::amount::{parse_amount, ModuleUnits};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::MaxValue;

/// A settlement claim as carried in the legacy `claim` side protocol (content types 2, 1 and 0; docs/legacy-btp.md
/// §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// Content type 2: a JSON value (object in practice).
    Json(serde_json::Value),
    /// Content type 1: UTF-8 text.
    Text(String),
    /// Content type 0: raw bytes.
    Binary(Vec<u8>),
}

/// What an accepted incoming claim or payment is worth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingCredit {
    /// The *increase* newly secured by this claim (claim-based) or the payment's amount (payment-based), in the
    /// module's units ([`crate::ChannelModule::asset_scale`]). Never the claim's cumulative value.
    pub amount: ModuleUnits,
    /// A stable identifier of this settlement (the claim's cumulative value, or the ledger tx id), used as the
    /// idempotency key when crediting the connector. Equal IDs must mean the same settlement.
    pub settlement_id: String,
}

/// Extracts the JSON object of a claim: JSON claims as is, text claims parsed as JSON (legacy peers sometimes
/// send the object as a string).
pub(crate) fn claim_object(claim: &Claim) -> Result<serde_json::Value, ModuleError> {
    match claim {
        Claim::Json(v) => Ok(v.clone()),
        Claim::Text(t) => serde_json::from_str(t)
            .map_err(|e| ModuleError::InvalidFields(format!("claim is not JSON: {e}"))),
        Claim::Binary(b) => serde_json::from_slice(b)
            .map_err(|e| ModuleError::InvalidFields(format!("claim is not JSON: {e}"))),
    }
}

/// Reads the claim's `amount` field, the payer's cumulative total in the module's units (a decimal string; a JSON
/// integer is accepted too, as legacy peers may send small amounts as numbers).
pub(crate) fn claim_amount(obj: &serde_json::Value) -> Result<ModuleUnits, ModuleError> {
    match obj.get("amount") {
        Some(serde_json::Value::String(s)) => parse_amount(s).map(ModuleUnits),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(ModuleUnits::from)
            .ok_or_else(|| ModuleError::InvalidFields(format!("invalid claim amount {n}"))),
        _ => Err(ModuleError::InvalidFields(
            "claim has no \"amount\" string".to_owned(),
        )),
    }
}

/// Stores a claim's cumulative `value` (with `data`) in the tracker `key` if it beats the best so far and returns
/// the increase as a credit, or `None` if it does not beat it.
pub(crate) async fn keep_best_claim(
    ctx: &ChannelContext,
    key: &str,
    value: ModuleUnits,
    data: serde_json::Value,
) -> Result<Option<IncomingCredit>, ModuleError> {
    let tracker = ctx.max_value_tracker(key)?;
    let previous = tracker
        .set_if_max(MaxValue {
            value: value.0.clone(),
            data,
        })
        .await?;
    // `set_if_max` returns the previous entry when it stored ours, or ours unchanged when it did not; in the
    // second case the returned value is equal to ours, so "strictly smaller" means "stored".
    if previous.value < value.0 {
        let amount = ModuleUnits(&value.0 - &previous.value);
        Ok(Some(IncomingCredit {
            amount,
            settlement_id: value.to_string(),
        }))
    } else {
        Ok(None)
    }
}
