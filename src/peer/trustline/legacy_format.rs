//! Text as the legacy JavaScript plugin writes it: base64url, `toISOString` times, bignumber.js numbers, negated
//! balance strings, the `balance` reply's int64, and the `transferWithInfo` JSON its error messages embed.
//! Peers and operators compare these strings, so each follows the JavaScript output exactly.

use base64::Engine as _;
use btp::Timestamp;
use channel_modules::amount::LedgerBalance;
use channel_modules::store::{Direction, Limit, TransferRecord, TransferState};
use serde_json::Value;

use super::Trustline;

/// Base64url without padding (legacy's representation of conditions, fulfillments and ILP packets).
pub fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// ISO-8601 with milliseconds (`2030-01-02T03:04:05.678Z`), as JavaScript's `toISOString`.
pub fn iso_time(ms: i64) -> String {
    match Timestamp::from_unix_millis(ms) {
        Some(t) => {
            let p = t.to_parts();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                p.year, p.month, p.day, p.hour, p.minute, p.second, p.millisecond
            )
        }
        None => ms.to_string(),
    }
}

/// Negates a decimal string as legacy `_stringNegate` does (`"0"` becomes `"-0"`).
pub fn string_negate(s: &str) -> String {
    match s.strip_prefix('-') {
        Some(rest) => rest.to_owned(),
        None => format!("-{s}"),
    }
}

/// Digits from which bignumber.js (legacy's number type) switches to exponent notation: its `EXPONENTIAL_AT`
/// upper bound is 20, so 10^21 prints as `1e+21`.
const BIGNUMBER_EXPONENT_FROM_DIGITS: usize = 22;

/// A whole number as legacy's bignumber.js `toString()` prints it: plain decimal below 10^21, else exponent
/// notation with every significant digit (`1e+21`, `1.23e+21`, `-1.2345678901234567890123e+22`).
pub fn bignumber_string(v: LedgerBalance) -> String {
    let v = v.0;
    let digits = v.unsigned_abs().to_string();
    if digits.len() < BIGNUMBER_EXPONENT_FROM_DIGITS {
        return v.to_string();
    }
    let sign = if v < 0 { "-" } else { "" };
    let exponent = digits.len() - 1;
    let significant = digits.trim_end_matches('0');
    let (first, rest) = significant.split_at(1);
    if rest.is_empty() {
        format!("{sign}{first}e+{exponent}")
    } else {
        format!("{sign}{first}.{rest}e+{exponent}")
    }
}

/// A limit as legacy prints it (`"Infinity"` when unbounded).
pub fn limit_string(limit: Limit) -> String {
    match limit {
        Limit::Finite(v) => bignumber_string(v),
        Limit::Unbounded => "Infinity".to_owned(),
    }
}

/// Encodes a balance as the `balance` reply: 8-byte big-endian two's complement.
pub fn balance_to_int64(balance: LedgerBalance) -> Option<[u8; 8]> {
    i64::try_from(balance.0).ok().map(i64::to_be_bytes)
}

impl Trustline {
    /// A JSON rendering of a record shaped like the legacy `transferWithInfo`, for error messages.
    pub(super) fn legacy_json(&self, rec: &TransferRecord) -> String {
        let (to, from) = match rec.direction {
            Direction::Incoming => (self.account(), self.peer_account()),
            Direction::Outgoing => (self.peer_account(), self.account()),
        };
        let t = &rec.transfer;
        let mut transfer = serde_json::json!({
            "id": t.id.to_uuid_string(),
            "amount": t.amount.to_string(),
            "executionCondition": b64url(&t.execution_condition),
            "expiresAt": iso_time(t.expires_at_ms),
            "to": to,
            "from": from,
            "ledger": self.prefix(),
        });
        if !t.ilp.is_empty() {
            transfer["ilp"] = Value::String(b64url(&t.ilp));
        }
        if let Some(c) = &t.custom {
            transfer["custom"] = c.clone();
        }
        let mut v = serde_json::json!({
            "transfer": transfer,
            "isIncoming": rec.direction == Direction::Incoming,
            "state": match rec.state {
                TransferState::Prepared => "prepared",
                TransferState::Fulfilled { .. } => "fulfilled",
                TransferState::Cancelled { .. } => "cancelled",
            },
        });
        if let TransferState::Fulfilled { fulfillment } = &rec.state {
            v["fulfillment"] = Value::String(b64url(fulfillment));
        }
        v.to_string()
    }
}
