//! The records the engine stores, as JSON, under the keys of [`super::keys`].

use channel_modules::amount::ModuleUnits;
use serde::{Deserialize, Serialize};

use crate::settlement::quantity::{decimal_string, Scaled};

/// `se/a/<acct>`: an account known to the engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account ID (the connector's; a UUID for interledger-rs).
    pub id: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

/// `se/o/<acct>`: the settle path's state. Only the account's settle worker writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct OutgoingRecord {
    /// Cumulative amount to have settled, in module units (sum of every request taken, converted).
    #[serde(with = "decimal_string")]
    pub target_total: ModuleUnits,
    /// Cumulative amount whose claim the peer engine acknowledged (or the module reported paid), module units.
    #[serde(with = "decimal_string")]
    pub settled_total: ModuleUnits,
    /// Part of the requests worth less than one module unit, not settled yet.
    pub leftover: Scaled,
    /// The connector's scale, learned from its latest settle request.
    pub connector_scale: Option<u8>,
    /// Settle requests taken so far.
    pub requests_taken: u64,
    /// The last failure of the settle path, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Claim or transaction ID of the last settlement sent.
    pub last_claim_id: Option<String>,
}

/// `se/i/<acct>`: the incoming side's state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct IncomingRecord {
    /// Part of incoming settlements worth less than one connector unit, not credited yet.
    pub leftover: Scaled,
    /// Cumulative increase the module reported, module units.
    #[serde(with = "decimal_string")]
    pub received_total: ModuleUnits,
}

/// The stored response of a settle request, for replays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 (hex) of the account and the normalized Quantity.
    pub input_hash: String,
    /// HTTP status of the stored response.
    pub status: u16,
    /// Body of the stored response (JSON).
    pub body: String,
    /// First request with this key, ms since the epoch.
    pub first_ms: u64,
    /// Latest request with this key, ms since the epoch (the key is kept ≥ 24 h after it).
    pub last_ms: u64,
}

/// `se/q/<acct>/<seq>`: a settle request accepted and durable, not yet taken by the worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedRequest {
    /// Sequence number (acceptance order).
    pub seq: u64,
    /// The request's Idempotency-Key, if it had one.
    pub key: Option<String>,
    /// The amount at the connector's scale.
    pub amount: Scaled,
    /// Acceptance time, ms since the epoch.
    pub accepted_ms: u64,
}

/// `se/h/<acct>/<seq>`: a settle request after the worker took it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The request.
    pub request: QueuedRequest,
    /// Whole module units it contributed (after leftovers).
    #[serde(with = "decimal_string")]
    pub module_units: ModuleUnits,
    /// The cumulative target total once it was taken: the request is settled once `settled_total` reaches this.
    #[serde(with = "decimal_string")]
    pub target_total_after: ModuleUnits,
}

/// `se/s/<acct>/<seq>`: a claim (or payment) the peer acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SentRecord {
    /// Cumulative total it covers, module units.
    #[serde(with = "decimal_string")]
    pub total: ModuleUnits,
    /// Claim or transaction ID (a `txId`/`id`/`hash` field of the claim, else the total).
    pub claim_id: String,
    /// When it was acknowledged, ms since the epoch.
    pub sent_ms: u64,
}

/// Where an incoming settlement stands with the connector.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreditStatus {
    /// Not acknowledged yet; retried with backoff.
    Pending,
    /// The connector answered 409 (key already used): not retried; an operator must reconcile.
    Conflict,
    /// The connector acknowledged it (any 2xx).
    Credited,
}

/// An incoming settlement to credit to the connector.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreditRecord {
    /// The module's settlement ID (claim value or ledger tx id).
    pub settlement_id: String,
    /// The Idempotency-Key used for every attempt (derived from the account and settlement ID).
    pub idempotency_key: String,
    /// Amount at the connector's scale.
    pub amount: Scaled,
    /// Status.
    pub status: CreditStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Last failure.
    pub last_error: Option<String>,
    /// When the module reported it, ms since the epoch.
    pub received_ms: u64,
    /// When it was acknowledged (or refused), ms since the epoch.
    pub done_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Module-unit totals are stored as decimal strings, whatever their size, and read back the same.
    #[test]
    fn module_unit_totals_keep_their_stored_form() -> Result<(), serde_json::Error> {
        let out = OutgoingRecord {
            target_total: ModuleUnits(num_bigint::BigUint::from(u64::MAX) + 1u8),
            settled_total: ModuleUnits::from(5),
            leftover: Scaled::new(7u8.into(), 9),
            connector_scale: Some(2),
            requests_taken: 3,
            ..OutgoingRecord::default()
        };
        let stored = r#"{"target_total":"18446744073709551616","settled_total":"5","leftover":{"amount":"7","scale":9},"connector_scale":2,"requests_taken":3,"last_error":null,"attempts":0,"last_claim_id":null}"#;
        assert_eq!(serde_json::to_string(&out)?, stored);
        assert_eq!(serde_json::from_str::<OutgoingRecord>(stored)?, out);
        let incoming = IncomingRecord {
            leftover: Scaled::zero(6),
            received_total: ModuleUnits::from(42),
        };
        let stored = r#"{"leftover":{"amount":"0","scale":6},"received_total":"42"}"#;
        assert_eq!(serde_json::to_string(&incoming)?, stored);
        assert_eq!(serde_json::from_str::<IncomingRecord>(stored)?, incoming);
        let sent = SentRecord {
            total: ModuleUnits::from(9),
            claim_id: "c".to_owned(),
            sent_ms: 1,
        };
        let stored = r#"{"total":"9","claim_id":"c","sent_ms":1}"#;
        assert_eq!(serde_json::to_string(&sent)?, stored);
        assert_eq!(serde_json::from_str::<SentRecord>(stored)?, sent);
        Ok(())
    }
}
