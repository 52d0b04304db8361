//! ILP v1 ⇄ ILPv4: how a packet crosses the bridge, in one place. The table below is the contract (also in
//! docs/bridge.md); `P` is the legacy peer, `M` the modern connector, `B` this node.
//!
//! | legacy (BTP/1.0 transfer + ILP v1) | modern (ILPv4) |
//! |--|--|
//! | transfer `amount` (P's ledger units) | Prepare `amount`: converted by [`Scales`], rounded down; below one unit → R01, above 2^64 − 1 → F08 (to M) / F03 (to P) |
//! | ILP v1 Payment `account` | Prepare `destination` (an invalid address → F01) |
//! | ILP v1 Payment `amount` (destination amount) | none: ILPv4 has no destination amount. Towards P it is set to the transfer's amount |
//! | ILP v1 Payment `data` | Prepare `data` (over 32,767 bytes → F01) |
//! | `executionCondition` | `executionCondition` |
//! | `expiresAt` | `expiresAt` minus the expiry margin; towards P also at most P's hold window ahead; less than the minimum window left → R02 |
//! | Fulfill `fulfillment`, its `ilp` entry | Fulfill `fulfillment`, `data` |
//! | ILP v1 Error `code` | Reject `code` (a malformed code → F00) |
//! | ILP v1 Error `name` | the name of the code in the receiving generation ([`codes`](super::codes)) |
//! | ILP v1 Error `triggeredBy` | Reject `triggeredBy` (empty or invalid → B's address) |
//! | ILP v1 Error `forwardedBy` | towards P: B's legacy address appended; towards M: dropped (ILPv4 has none) |
//! | ILP v1 Error `data` `{"message": m, …}` | Reject `message` = "`name`: `m`", `data` = the ILP v1 data bytes |
//! | Reject `message`, `data` | ILP v1 Error `data` = `{"message": message[, "data": base64url(data)]}`, ASCII |
//! | a BTP Error refusing B's Prepare | Reject T04 (`NotAcceptedError`, `InsufficientBalanceError`: limits), F00 (`InvalidFieldsError`), T00 (anything else) |
//!
//! Errors the bridge itself makes: no answer before expiry → R00; the other side unreachable → T01; not an ILP v1
//! Payment → F01; a zero amount towards P (BTP/1.0 transfers are positive) → F03.

use std::time::Duration;

use base64::Engine as _;
use btp::ilp_v1::{IlpV1Error, IlpV1Packet, Payment};
use btp::ilp_v4::{self, Address};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::amount::{ConnectorAmount, LedgerAmount};
use channel_modules::store::Transfer;

use super::codes::{ilp_v1_name, ilp_v4_name, is_error_code};
use super::scale::{ScaleError, Scales};

/// The settings of one bridged pair that translation needs.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The two sides' scales.
    pub scales: Scales,
    /// Taken off a packet's expiry when it crosses, so the side it came from hears the outcome before its own
    /// transfer expires.
    pub expiry_margin: Duration,
    /// Least time a crossing packet must have left after the margin; less is refused with R02.
    pub min_window: Duration,
    /// Farthest ahead a transfer to the legacy peer may expire (its hold window).
    pub legacy_max_hold: Duration,
    /// B's address on the legacy ledger (`<prefix>server` or `<prefix>client`), for errors towards P.
    pub legacy_address: String,
    /// B's ILPv4 address, for Rejects towards M.
    pub modern_address: Address,
}

/// A transfer to send to the legacy peer: everything but its ID, which the caller chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPrepare {
    /// In legacy ledger units.
    pub amount: LedgerAmount,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: i64,
    /// The condition.
    pub execution_condition: [u8; 32],
    /// The ILP v1 Payment.
    pub ilp: Bytes,
}

impl Translation {
    /// The ILPv4 Prepare for a transfer P prepared to B, or the ILP v1 Error to reject it with.
    pub fn prepare_to_modern(
        &self,
        transfer: &Transfer,
        now_ms: i64,
    ) -> Result<ilp_v4::Prepare, IlpV1Error> {
        let now = timestamp(now_ms);
        let payment = match IlpV1Packet::decode(&Bytes::copy_from_slice(&transfer.ilp)) {
            Ok(IlpV1Packet::Payment(p)) => p,
            Ok(_) | Err(_) => {
                return Err(self.legacy_error(
                    b"F01",
                    "the transfer does not carry an ILP v1 payment",
                    now,
                ))
            }
        };
        let destination = Address::new(&payment.account).map_err(|e| {
            self.legacy_error(b"F01", &format!("invalid destination address: {e}"), now)
        })?;
        if payment.data.len() > ilp_v4::MAX_DATA_BYTES {
            return Err(self.legacy_error(
                b"F01",
                &format!(
                    "payment data is {} bytes, more than the {} an ILPv4 packet carries",
                    payment.data.len(),
                    ilp_v4::MAX_DATA_BYTES
                ),
                now,
            ));
        }
        let amount = self
            .scales
            .to_modern(transfer.amount)
            .map_err(|e| match e {
                ScaleError::BelowOneUnit => self.legacy_error(b"R01", &e.to_string(), now),
                ScaleError::TooLarge { .. } => self.legacy_error(b"F03", &e.to_string(), now),
            })?;
        let expires_at_ms = transfer
            .expires_at_ms
            .saturating_sub(millis(self.expiry_margin));
        if expires_at_ms < now_ms.saturating_add(millis(self.min_window)) {
            return Err(self.legacy_error(b"R02", "not enough time left to forward", now));
        }
        Ok(ilp_v4::Prepare {
            amount: amount.0,
            expires_at: timestamp(expires_at_ms),
            execution_condition: transfer.execution_condition,
            destination,
            data: payment.data,
        })
    }

    /// The transfer to prepare to P for an ILPv4 Prepare from M, or the Reject to answer M with.
    pub fn prepare_to_legacy(
        &self,
        prepare: &ilp_v4::Prepare,
        now_ms: i64,
    ) -> Result<LegacyPrepare, ilp_v4::Reject> {
        if prepare.amount == 0 {
            return Err(self.modern_reject(
                b"F03",
                "a zero amount cannot cross to a BTP/1.0 ledger (its transfers are positive)",
                Bytes::new(),
            ));
        }
        let amount = self
            .scales
            .to_legacy(ConnectorAmount(prepare.amount))
            .map_err(|e| match e {
                ScaleError::BelowOneUnit => {
                    self.modern_reject(b"R01", &e.to_string(), Bytes::new())
                }
                ScaleError::TooLarge { max } => {
                    // RFC 0027: F08's data is the amount received and the largest allowed, as UInt64s.
                    let mut data = Vec::with_capacity(16);
                    data.extend_from_slice(&prepare.amount.to_be_bytes());
                    data.extend_from_slice(&max.to_be_bytes());
                    self.modern_reject(b"F08", &e.to_string(), Bytes::from(data))
                }
            })?;
        let latest_ms = now_ms.saturating_add(millis(self.legacy_max_hold));
        let expires_at_ms = prepare
            .expires_at
            .unix_millis()
            .saturating_sub(millis(self.expiry_margin))
            .min(latest_ms);
        if expires_at_ms < now_ms.saturating_add(millis(self.min_window)) {
            return Err(self.modern_reject(
                b"R02",
                "not enough time left to forward",
                Bytes::new(),
            ));
        }
        let payment = IlpV1Packet::Payment(Payment {
            amount: amount.0,
            account: prepare.destination.as_str().to_owned(),
            data: prepare.data.clone(),
        });
        Ok(LegacyPrepare {
            amount,
            expires_at_ms,
            execution_condition: prepare.execution_condition,
            ilp: payment.to_bytes(),
        })
    }

    /// The ILP v1 Error P gets for M's Reject.
    pub fn reject_to_legacy(&self, reject: &ilp_v4::Reject, now_ms: i64) -> IlpV1Error {
        let code = valid_code(&reject.code);
        let mut data = serde_json::Map::new();
        data.insert("message".to_owned(), reject.message.clone().into());
        if !reject.data.is_empty() {
            data.insert(
                "data".to_owned(),
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(&reject.data)
                    .into(),
            );
        }
        IlpV1Error {
            code,
            name: ilp_v1_name(&code).to_owned(),
            triggered_by: reject
                .triggered_by
                .as_ref()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_else(|| self.legacy_address.clone()),
            forwarded_by: vec![self.legacy_address.clone()],
            triggered_at: timestamp(now_ms),
            data: Bytes::from(ascii_json(&serde_json::Value::Object(data))),
        }
    }

    /// The Reject M gets for P's ILP v1 Error.
    pub fn error_to_modern(&self, error: &IlpV1Error) -> ilp_v4::Reject {
        let code = valid_code(&error.code);
        let detail = legacy_message(&error.data);
        let message = if detail.is_empty() {
            error.name.clone()
        } else {
            format!("{}: {detail}", error.name)
        };
        let data = if error.data.len() <= ilp_v4::MAX_DATA_BYTES {
            error.data.clone()
        } else {
            Bytes::new()
        };
        ilp_v4::Reject {
            code,
            triggered_by: Some(
                Address::new(&error.triggered_by).unwrap_or_else(|_| self.modern_address.clone()),
            ),
            message: truncate(message, ilp_v4::MAX_MESSAGE_BYTES),
            data,
        }
    }

    /// The Reject M gets when P refused the transfer with a BTP Error named `name` (a legacy JavaScript error
    /// name, docs/legacy-btp.md §7).
    pub fn refusal_to_modern(&self, name: &str, message: &str) -> ilp_v4::Reject {
        let code: &[u8; 3] = match name {
            // Balance limits and a module's unsecured limit: retry once settlement catches up.
            "NotAcceptedError" | "InsufficientBalanceError" => b"T04",
            "InvalidFieldsError" => b"F00",
            _ => b"T00",
        };
        self.modern_reject(
            code,
            &format!("the legacy peer refused the transfer: {name}: {message}"),
            Bytes::new(),
        )
    }

    /// An ILP v1 Error made by B (triggered by B's legacy address), with `{"message": message}` as data.
    pub fn legacy_error(&self, code: &[u8; 3], message: &str, now: Timestamp) -> IlpV1Error {
        IlpV1Error {
            code: *code,
            name: ilp_v1_name(code).to_owned(),
            triggered_by: self.legacy_address.clone(),
            forwarded_by: Vec::new(),
            triggered_at: now,
            data: Bytes::from(ascii_json(&serde_json::json!({ "message": message }))),
        }
    }

    /// A Reject made by B (triggered by B's ILPv4 address).
    pub fn modern_reject(&self, code: &[u8; 3], message: &str, data: Bytes) -> ilp_v4::Reject {
        ilp_v4::Reject {
            code: *code,
            triggered_by: Some(self.modern_address.clone()),
            message: truncate(
                format!("{}: {message}", ilp_v4_name(code)),
                ilp_v4::MAX_MESSAGE_BYTES,
            ),
            data,
        }
    }
}

/// The fulfillment and the `ilp` entry of the BTP/1.0 Fulfill for M's Fulfill (no entry for empty data).
pub fn fulfill_to_legacy(fulfill: &ilp_v4::Fulfill) -> ([u8; 32], Option<Bytes>) {
    let ilp = (!fulfill.data.is_empty()).then(|| fulfill.data.clone());
    (fulfill.fulfillment, ilp)
}

/// M's Fulfill for P's Fulfill; data over what ILPv4 carries is dropped (the fulfillment is what pays).
pub fn fulfill_to_modern(fulfillment: [u8; 32], ilp: Option<&Bytes>) -> ilp_v4::Fulfill {
    let data = ilp
        .filter(|d| d.len() <= ilp_v4::MAX_DATA_BYTES)
        .cloned()
        .unwrap_or_default();
    ilp_v4::Fulfill { fulfillment, data }
}

fn valid_code(code: &[u8; 3]) -> [u8; 3] {
    if is_error_code(code) {
        *code
    } else {
        *b"F00"
    }
}

/// The message of a legacy error's data: its `message` field when it is JSON (what the legacy framework and
/// ilp-bridge send), else the data as text.
fn legacy_message(data: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(serde_json::Value::String(m)) = obj.get("message") {
            return m.clone();
        }
    }
    String::from_utf8_lossy(data).into_owned()
}

/// JSON text with every non-ASCII character escaped (`\uXXXX`), since ILP v1 Error data is ASCII.
fn ascii_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
mod tests;
