//! What a settlement is worth on the wire and to the host: the [`Claim`] a payer's module hands the payee's
//! (a settlement proof, carried in the legacy `claim` side protocol or in an RFC 38 settlement message) and the
//! [`IncomingCredit`] the payee's module makes of it. Produced and consumed by [`crate::ChannelModule`]s.

use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

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
    pub amount: BigUint,
    /// A stable identifier of this settlement (the claim's cumulative value, or the ledger tx id), used as the
    /// idempotency key when crediting the connector. Equal IDs must mean the same settlement.
    pub settlement_id: String,
}
