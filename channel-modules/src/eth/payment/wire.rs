//! The JSON forms of `eth-payment`: a claim (the payer's transaction hashes), a page of the payer's kept
//! payments ([`super::RPC_PAYMENTS_SINCE`]), and the lists the payer keeps in its trackers.
//!
//! Claims: `{"txHashes": ["0x…", …]}` (at most [`MAX_TX_HASHES_PER_CLAIM`]), `{"txHash": "0x…"}`, or the hash
//! as text. [`RPC_PAYMENTS_SINCE`] request: `[{"after": "<decimal total>"}]`; reply: `{"txHashes": ["0x…", …],
//! "last": "<decimal total>" | null, "more": true | false}`: the payer's kept confirmed payments whose
//! confirmed total after them exceeds `after`, oldest first, at most [`MAX_TX_HASHES_PER_PAYMENTS_REPLY`];
//! `last` is the total after the last one listed (`null` when none is), `more` says whether further payments
//! follow it.

use num_bigint::BigUint;
use serde_json::{json, Value};

use super::super::types::TxHash;
use super::{
    MAX_KEPT_PAYMENTS, MAX_TX_HASHES_PER_CLAIM, MAX_TX_HASHES_PER_PAYMENTS_REPLY,
    RPC_PAYMENTS_SINCE,
};
use crate::amount::parse_amount;
use crate::claim::Claim;
use crate::error::ModuleError;

/// One [`RPC_PAYMENTS_SINCE`] reply, checked.
#[derive(Debug)]
pub(super) struct PaymentsPage {
    /// The payments listed.
    pub(super) hashes: Vec<TxHash>,
    /// The payer's confirmed total after the last listed payment; `None` when none is listed.
    pub(super) last: Option<BigUint>,
    /// Whether further payments follow the last one listed.
    pub(super) more: bool,
}

pub(super) fn parse_payments_page(reply: &Value) -> Result<PaymentsPage, ModuleError> {
    let bad = |why: &str| ModuleError::InvalidFields(format!("{RPC_PAYMENTS_SINCE} reply: {why}"));
    let items = reply
        .get("txHashes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no txHashes"))?;
    let hashes = parse_hash_list(items, MAX_TX_HASHES_PER_PAYMENTS_REPLY)
        .map_err(|e| bad(&e.to_string()))?;
    let last = match reply.get("last") {
        None | Some(Value::Null) => None,
        Some(Value::String(total)) => Some(parse_amount(total)?),
        Some(_) => return Err(bad("last must be a decimal string")),
    };
    if hashes.is_empty() != last.is_none() {
        return Err(bad("last must be given exactly when hashes are listed"));
    }
    Ok(PaymentsPage {
        hashes,
        last,
        more: reply.get("more").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Whether `err` is a peer's answer that it does not know the method (a payer without [`RPC_PAYMENTS_SINCE`]).
pub(super) fn is_unknown_method(err: &ModuleError) -> bool {
    match err {
        ModuleError::UnknownMethod(_) => true,
        ModuleError::Rpc(message) => message.contains("Unrecognized side protocol"),
        _ => false,
    }
}

pub(super) fn parse_claim_hashes(claim: &Claim) -> Result<Vec<TxHash>, ModuleError> {
    let items: Vec<Value> = match claim {
        Claim::Text(text) => vec![json!(text.trim())],
        Claim::Json(value) => match (value.get("txHashes"), value.get("txHash")) {
            (Some(Value::Array(items)), _) => items.clone(),
            (None, Some(one @ Value::String(_))) => vec![one.clone()],
            _ => {
                return Err(ModuleError::InvalidFields(
                    "claim must carry txHashes".to_owned(),
                ))
            }
        },
        Claim::Binary(_) => {
            return Err(ModuleError::InvalidFields(
                "binary claims are not eth-payment claims".to_owned(),
            ))
        }
    };
    if items.is_empty() {
        return Err(ModuleError::InvalidFields(
            "a claim carries at least one transaction hash".to_owned(),
        ));
    }
    parse_hash_list(&items, MAX_TX_HASHES_PER_CLAIM)
}

/// `items` (JSON strings) as transaction hashes, at most `max` of them.
fn parse_hash_list(items: &[Value], max: usize) -> Result<Vec<TxHash>, ModuleError> {
    if items.len() > max {
        return Err(ModuleError::InvalidFields(format!(
            "more than {max} transaction hashes"
        )));
    }
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| ModuleError::InvalidFields("txHashes must be strings".into()))?
                .parse::<TxHash>()
                .map_err(|e| ModuleError::InvalidFields(format!("bad tx hash: {e}")))
        })
        .collect()
}

/// `list` (a JSON array) with `entry` appended unless an element has the same `key`, keeping the last `max`.
fn push_once_bounded(
    list: &Value,
    entry: Value,
    key: impl Fn(&Value) -> &Value,
    max: usize,
) -> Vec<Value> {
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    if !items.iter().any(|item| key(item) == key(&entry)) {
        items.push(entry);
        let excess = items.len().saturating_sub(max);
        items.drain(..excess);
    }
    items
}

/// `amount_settled`'s recent hashes (`previous["txHashes"]`, the last [`MAX_TX_HASHES_PER_CLAIM`]) with the
/// confirmed payment `hash` appended once.
pub(super) fn recent_hashes_with(previous: &Value, hash: &TxHash) -> Vec<Value> {
    push_once_bounded(
        &previous["txHashes"],
        json!(hash.to_string()),
        |h| h,
        MAX_TX_HASHES_PER_CLAIM,
    )
}

/// The kept payments list (a JSON array, the last [`MAX_KEPT_PAYMENTS`], oldest first) with `{txHash, total}`
/// of the confirmed payment `hash`, which brought the confirmed total to `total`, appended once (a payment
/// finished again after a crash is not added twice).
pub(super) fn kept_payments_with(kept: &Value, hash: &TxHash, total: &BigUint) -> Vec<Value> {
    push_once_bounded(
        kept,
        json!({ "txHash": hash.to_string(), "total": total.to_string() }),
        |p| &p["txHash"],
        MAX_KEPT_PAYMENTS,
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::types::keccak256;
    use super::*;

    #[test]
    fn claims_parse_in_all_accepted_forms_and_bound_the_count() -> Result<(), ModuleError> {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_claim_hashes(&Claim::Text(h.clone()))?.len(), 1);
        assert_eq!(
            parse_claim_hashes(&Claim::Json(json!({ "txHash": h.clone() })))?.len(),
            1
        );
        assert_eq!(
            parse_claim_hashes(&Claim::Json(json!({ "txHashes": [h.clone(), h.clone()] })))?.len(),
            2
        );
        let too_many = vec![h.clone(); MAX_TX_HASHES_PER_CLAIM + 1];
        assert!(parse_claim_hashes(&Claim::Json(json!({ "txHashes": too_many }))).is_err());
        assert!(parse_claim_hashes(&Claim::Text("0x1234".into())).is_err());
        assert!(parse_claim_hashes(&Claim::Binary(vec![1])).is_err());
        Ok(())
    }

    #[test]
    fn settled_data_keeps_each_payment_once_and_bounds_both_lists() {
        let (mut recent, mut kept) = (Value::Null, Value::Null);
        let hash = |i: usize| TxHash(keccak256(&i.to_be_bytes()));
        for i in 1..=MAX_KEPT_PAYMENTS + 3 {
            recent = json!({ "txHashes": recent_hashes_with(&recent, &hash(i)) });
            kept = Value::Array(kept_payments_with(&kept, &hash(i), &BigUint::from(i * 10)));
        }
        // Finishing the last payment again (after a crash) adds nothing.
        let last_hash = hash(MAX_KEPT_PAYMENTS + 3);
        assert_eq!(
            json!({ "txHashes": recent_hashes_with(&recent, &last_hash) }),
            recent
        );
        assert_eq!(
            Value::Array(kept_payments_with(&kept, &last_hash, &BigUint::from(1u8))),
            kept
        );
        let recent = recent["txHashes"].as_array().cloned().unwrap_or_default();
        assert_eq!(recent.len(), MAX_TX_HASHES_PER_CLAIM);
        assert_eq!(
            recent[MAX_TX_HASHES_PER_CLAIM - 1],
            json!(last_hash.to_string())
        );
        let kept = kept.as_array().cloned().unwrap_or_default();
        assert_eq!(kept.len(), MAX_KEPT_PAYMENTS);
        // The oldest fell out; the rest are in order, each with its total.
        assert_eq!(kept[0]["txHash"], json!(hash(4).to_string()));
        assert_eq!(kept[0]["total"], json!("40"));
        let last = &kept[MAX_KEPT_PAYMENTS - 1];
        assert_eq!(last["txHash"], json!(last_hash.to_string()));
        assert_eq!(
            last["total"],
            json!(((MAX_KEPT_PAYMENTS + 3) * 10).to_string())
        );
    }

    #[test]
    fn payments_pages_are_checked() -> Result<(), ModuleError> {
        let h = format!("0x{}", "ab".repeat(32));
        let page =
            parse_payments_page(&json!({ "txHashes": [h.clone()], "last": "7", "more": true }))?;
        assert_eq!(page.hashes.len(), 1);
        assert_eq!(page.last, Some(BigUint::from(7u8)));
        assert!(page.more);
        let empty = parse_payments_page(&json!({ "txHashes": [], "last": null, "more": false }))?;
        assert!(empty.hashes.is_empty() && empty.last.is_none() && !empty.more);
        let too_many = vec![h.clone(); MAX_TX_HASHES_PER_PAYMENTS_REPLY + 1];
        for bad in [
            json!({ "txHashes": too_many, "last": "7" }),
            json!({ "txHashes": [h.clone()] }),
            json!({ "txHashes": [], "last": "7" }),
            json!({ "txHashes": [h.clone()], "last": 7 }),
            json!({ "txHashes": [h.clone()], "last": "-7" }),
            json!({ "txHashes": ["0x12"], "last": "7" }),
            json!({ "last": "7" }),
            json!(null),
        ] {
            assert!(parse_payments_page(&bad).is_err(), "{bad}");
        }
        // A full page is accepted: more hashes than a claim may carry.
        let full = vec![h; MAX_TX_HASHES_PER_PAYMENTS_REPLY];
        assert_eq!(
            parse_payments_page(&json!({ "txHashes": full, "last": "9" }))?
                .hashes
                .len(),
            MAX_TX_HASHES_PER_PAYMENTS_REPLY
        );
        Ok(())
    }
}
