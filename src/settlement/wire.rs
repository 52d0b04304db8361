//! The messages two ilp-bridge engines exchange through their connectors (RFC 38 message proxying,
//! docs/modern.md §1.10): JSON in the octet-stream bodies.
//!
//! | message | reply |
//! |--|--|
//! | `{"type":"claim","claim":<JSON>}` (or `"claimText": "<text>"`, `"claimBase64": "<base64>"`) | `{"type":"ack","credited":"<n>","scale":s}` |
//! | `{"type":"rpc","method":"<name>","args":<JSON>}` | `{"type":"rpc-result","result":<JSON>}` or `{"type":"rpc-error","name":"…","message":"…"}` |
//!
//! Any other `type` is handed to the module's `handle_rpc` with the whole message as its argument, so a
//! module can speak a foreign engine's messages (settlement-xrp's `{"type":"paymentDetails"}`, …). A refused
//! claim is answered with an HTTP error, so the sender's connector rejects the relay and the sender retries.

use base64::Engine as _;
use channel_modules::{Claim, ModuleError};

/// A parsed incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A settlement claim.
    Claim(Claim),
    /// A module RPC.
    Rpc {
        /// Method name.
        method: String,
        /// Arguments (JSON).
        args: serde_json::Value,
    },
    /// Another message type, for the module's `handle_rpc`.
    Other {
        /// The `type` field.
        kind: String,
        /// The whole message.
        body: serde_json::Value,
    },
}

/// Why a message from the peer's engine was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not JSON.
    #[error("message is not a JSON object with a \"type\": {0}")]
    NotJson(#[source] serde_json::Error),
    /// No string `type` field.
    #[error("message is not a JSON object with a \"type\": no \"type\"")]
    NoType,
    /// A claim message without `claim`, `claimText` or `claimBase64`.
    #[error("message is not a JSON object with a \"type\": claim message without a claim")]
    NoClaim,
    /// A `claimBase64` that is not base64.
    #[error("message is not a JSON object with a \"type\": claimBase64: {0}")]
    ClaimBase64(#[source] base64::DecodeError),
    /// An RPC without a string `method`.
    #[error("message is not a JSON object with a \"type\": rpc without a \"method\"")]
    NoMethod,
}

/// The message carrying a claim.
pub fn claim_message(claim: &Claim) -> Vec<u8> {
    let v = match claim {
        Claim::Json(v) => serde_json::json!({ "type": "claim", "claim": v }),
        Claim::Text(t) => serde_json::json!({ "type": "claim", "claimText": t }),
        Claim::Binary(b) => serde_json::json!({
            "type": "claim",
            "claimBase64": base64::engine::general_purpose::STANDARD.encode(b),
        }),
    };
    v.to_string().into_bytes()
}

/// An RPC request.
pub fn rpc_request(method: &str, args: serde_json::Value) -> Vec<u8> {
    serde_json::json!({ "type": "rpc", "method": method, "args": args })
        .to_string()
        .into_bytes()
}

/// The reply to an RPC.
pub fn rpc_reply(result: &Result<serde_json::Value, ModuleError>) -> Vec<u8> {
    match result {
        Ok(v) => serde_json::json!({ "type": "rpc-result", "result": v }),
        Err(e) => serde_json::json!({
            "type": "rpc-error",
            "name": e.legacy_name(),
            "message": e.to_string(),
        }),
    }
    .to_string()
    .into_bytes()
}

/// Reads an RPC reply.
pub fn parse_rpc_reply(bytes: &[u8]) -> Result<serde_json::Value, ModuleError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ModuleError::Rpc(format!("reply is not JSON: {e}")))?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("rpc-result") => Ok(v.get("result").cloned().unwrap_or(serde_json::Value::Null)),
        Some("rpc-error") => Err(ModuleError::Rpc(
            v.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("peer module error")
                .to_owned(),
        )),
        _ => Err(ModuleError::Rpc("unexpected reply to an rpc".to_owned())),
    }
}

/// The reply to a claim.
pub fn ack(credited: &str, scale: u8) -> Vec<u8> {
    serde_json::json!({ "type": "ack", "credited": credited, "scale": scale })
        .to_string()
        .into_bytes()
}

/// Parses an incoming message.
pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(MessageError::NotJson)?;
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or(MessageError::NoType)?
        .to_owned();
    match kind.as_str() {
        "claim" => {
            if let Some(c) = v.get("claim") {
                Ok(Message::Claim(Claim::Json(c.clone())))
            } else if let Some(t) = v.get("claimText").and_then(|t| t.as_str()) {
                Ok(Message::Claim(Claim::Text(t.to_owned())))
            } else if let Some(b) = v.get("claimBase64").and_then(|t| t.as_str()) {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map(|b| Message::Claim(Claim::Binary(b)))
                    .map_err(MessageError::ClaimBase64)
            } else {
                Err(MessageError::NoClaim)
            }
        }
        "rpc" => {
            let method = v
                .get("method")
                .and_then(|m| m.as_str())
                .ok_or(MessageError::NoMethod)?
                .to_owned();
            let args = v.get("args").cloned().unwrap_or(serde_json::Value::Null);
            Ok(Message::Rpc { method, args })
        }
        _ => Ok(Message::Other { kind, body: v }),
    }
}

/// The claim or transaction ID of a claim, for the operator view: a `txId`, `id`, `hash` or `txHash` field if the
/// claim has one, else `fallback` (the cumulative total).
pub fn claim_id(claim: &Claim, fallback: &str) -> String {
    if let Claim::Json(v) = claim {
        for field in ["txId", "id", "hash", "txHash", "tx_hash"] {
            if let Some(s) = v.get(field).and_then(|s| s.as_str()) {
                return s.to_owned();
            }
        }
    }
    fallback.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_in_every_content_type() -> Result<(), MessageError> {
        for c in [
            Claim::Json(serde_json::json!({"amount": "5"})),
            Claim::Text("x".to_owned()),
            Claim::Binary(vec![0, 1, 255]),
        ] {
            assert_eq!(parse(&claim_message(&c))?, Message::Claim(c));
        }
        Ok(())
    }

    /// A JSON number is read as JavaScript's `JSON.parse` reads it (the nearest double), so a result relayed
    /// back is the number the peer sent. Found by the `quantity` fuzz target
    /// (fuzz/regressions/quantity/json-number-rounding): this 127-digit integer was read one ulp above 1e127,
    /// and the reply written from it read back as 1e127.
    #[test]
    fn json_numbers_are_read_as_javascript_reads_them() -> Result<(), Box<dyn std::error::Error>> {
        let digits = "9999999999999999919999999999999999999199999999999999999999999000000000\
                      009999999999999999999999000000000009999999999999999999991";
        let reply = format!(r#"{{"type":"rpc-result","result":{{"a":{digits}}}}}"#);
        let result = parse_rpc_reply(reply.as_bytes())?;
        assert_eq!(result, serde_json::json!({ "a": 1e127 }));
        assert_eq!(parse_rpc_reply(&rpc_reply(&Ok(result.clone())))?, result);
        Ok(())
    }

    #[test]
    fn rpc_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            parse(&rpc_request("m", serde_json::json!([1])))?,
            Message::Rpc {
                method: "m".to_owned(),
                args: serde_json::json!([1])
            }
        );
        assert_eq!(
            parse_rpc_reply(&rpc_reply(&Ok(serde_json::json!({"a": 1}))))?,
            serde_json::json!({"a": 1})
        );
        assert!(parse_rpc_reply(&rpc_reply(&Err(ModuleError::UnknownMethod("m".into())))).is_err());
        assert!(parse_rpc_reply(b"nope").is_err());
        Ok(())
    }

    #[test]
    fn malformed_messages() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"type\":1}",
            b"{\"type\":\"claim\"}",
            b"{\"type\":\"rpc\"}",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            parse(br#"{"type":"paymentDetails"}"#),
            Ok(Message::Other { .. })
        ));
        // The messages a refused message is answered with (400 problem details).
        let prefix = "message is not a JSON object with a \"type\": ";
        for (bad, reason) in [
            (&b"[]"[..], "no \"type\""),
            (b"{\"type\":1}", "no \"type\""),
            (b"{\"type\":\"claim\"}", "claim message without a claim"),
            (b"{\"type\":\"rpc\"}", "rpc without a \"method\""),
        ] {
            let message = parse(bad).err().map(|e| e.to_string());
            assert_eq!(message, Some(format!("{prefix}{reason}")));
        }
        let base64 = parse(br#"{"type":"claim","claimBase64":"!"}"#).err();
        assert!(
            matches!(&base64, Some(MessageError::ClaimBase64(_))),
            "{base64:?}"
        );
        assert!(base64
            .map(|e| e.to_string())
            .is_some_and(|m| m.starts_with(&format!("{prefix}claimBase64: "))));
    }
}
