//! The wire claim is parsed strictly; every record round-trips, and is written with the same bytes as the JSON
//! literals the module wrote it with before these types (compared through `serde_json::to_string`, so both key
//! orders are checked: sorted, and insertion order when serde_json's `preserve_order` is on, as in the root
//! crate's build).

use super::*;

const CHANNEL_A: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
const CHANNEL_B: &str = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";

fn sig(byte: &str, v: &str) -> String {
    format!("0x{}{v}", byte.repeat(64))
}

fn same_bytes(written: &Value, literal: &Value) -> Result<(), serde_json::Error> {
    assert_eq!(
        serde_json::to_string(written)?,
        serde_json::to_string(literal)?
    );
    Ok(())
}

#[test]
fn wire_claims_are_parsed_strictly() {
    let good = json!({
        "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "amount": "10",
        "signature": format!("0x{}1b", "11".repeat(64)),
    });
    assert!(WireClaim::parse(&Claim::Json(good.clone())).is_ok());
    let mut bad = good.clone();
    bad["amount"] = json!(10);
    assert!(WireClaim::parse(&Claim::Json(bad)).is_err());
    let mut bad = good;
    bad["signature"] = json!("0x1234");
    assert!(WireClaim::parse(&Claim::Json(bad)).is_err());
    assert!(WireClaim::parse(&Claim::Text("x".into())).is_err());
}

#[test]
fn a_claim_amount_beyond_256_bits_is_refused_as_invalid_not_retried() {
    // Amount strings may be longer than any uint256 (the shared bound is set by RFC 38 requests); such an
    // amount can never be signed or closed, so it is the peer's error, not a ledger one to retry.
    let claim = |amount: String| {
        Claim::Json(json!({
            "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "amount": amount,
            "signature": format!("0x{}1b", "11".repeat(64)),
        }))
    };
    let max = (BigUint::from(1u8) << 256u32) - 1u8;
    assert!(WireClaim::parse(&claim(max.to_string())).is_ok());
    match WireClaim::parse(&claim((max + 1u8).to_string())) {
        Err(ModuleError::InvalidFields(_)) => {}
        Ok(_) => panic!("a claim of 2^256 wei was accepted"),
        Err(other) => panic!("a claim of 2^256 wei was refused as {other:?}"),
    }
}

#[test]
fn base_and_retired_claims_are_optional_and_parsed_strictly() -> Result<(), ModuleError> {
    let entry = json!({
        "channel": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "amount": "100",
        "signature": format!("0x{}1c", "22".repeat(64)),
    });
    let mut claim = json!({
        "channel": "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
        "amount": "10",
        "signature": format!("0x{}1b", "11".repeat(64)),
    });
    let plain = WireClaim::parse(&Claim::Json(claim.clone()))?;
    assert!(plain.base.is_none() && plain.retired.is_empty());
    claim["base"] = json!("100");
    claim["retired"] = json!([entry.clone()]);
    let full = WireClaim::parse(&Claim::Json(claim.clone()))?;
    assert_eq!(full.base, Some(BigUint::from(100u32)));
    assert_eq!(full.retired.len(), 1);
    assert_eq!(full.retired[0].amount, BigUint::from(100u32));
    assert_eq!(full.retired[0].to_json(), entry);
    assert_eq!(full.current.amount, BigUint::from(10u32));
    for (field, bad) in [
        ("base", json!(100)),
        ("retired", json!(entry.clone())),
        (
            "retired",
            json!([{ "channel": "0x12", "amount": "1", "signature": entry["signature"] }]),
        ),
        (
            "retired",
            json!([{ "channel": entry["channel"], "amount": "1" }]),
        ),
    ] {
        let mut bad_claim = claim.clone();
        bad_claim[field] = bad;
        assert!(
            matches!(
                WireClaim::parse(&Claim::Json(bad_claim)),
                Err(ModuleError::InvalidFields(_))
            ),
            "{field}"
        );
    }
    Ok(())
}

#[test]
fn outgoing_claims_are_written_as_before() -> Result<(), Box<dyn std::error::Error>> {
    let carried = CarriedClaim {
        channel: CHANNEL_A.parse()?,
        amount: BigUint::from(100u32),
        signature: sig("22", "1c"),
        expires_at: Some(1_700_000_000),
    };
    let mut claim = OutgoingClaim {
        channel: CHANNEL_B.parse()?,
        amount: BigUint::from(10u32),
        signature: sig("11", "1b"),
        base: BigUint::from(100u32),
        retired: Vec::new(),
    };
    let mut literal = json!({
        "channel": CHANNEL_B,
        "amount": "10",
        "signature": sig("11", "1b"),
        "base": "100",
    });
    same_bytes(&claim.to_json(), &literal)?;
    claim.retired.push(carried);
    literal["retired"] =
        json!([{ "channel": CHANNEL_A, "amount": "100", "signature": sig("22", "1c") }]);
    same_bytes(&claim.to_json(), &literal)?;
    // It parses as a wire claim, and the payer reads back what it carries.
    let wire = WireClaim::parse(&Claim::Json(claim.to_json()))?;
    assert_eq!(
        (wire.base, wire.retired.len()),
        (Some(BigUint::from(100u32)), 1)
    );
    let read = OutgoingClaimRecord::read(&claim.to_json());
    assert_eq!(read.channel, Some(claim.channel));
    assert_eq!(read.amount, Some(claim.amount));
    assert_eq!(read.signature, Some(claim.signature));
    assert_eq!(
        OutgoingClaimRecord::read(&Value::Null),
        OutgoingClaimRecord::default()
    );
    Ok(())
}

#[test]
fn the_payers_channel_record_is_written_as_before() -> Result<(), Box<dyn std::error::Error>> {
    // As `create_outgoing_claim` wrote it: the object literal, then "address" set on it.
    let mut literal = json!({
        "base": "100",
        "retired": [CHANNEL_A],
        "expiresAt": 1_700_000_000u64,
        "retiredClaims": [{
            "channel": CHANNEL_A, "amount": "100", "signature": sig("22", "1c"), "expiresAt": 1_600_000_000u64
        }],
    });
    literal["address"] = json!(CHANNEL_B);
    let record = OutgoingChannelRecord::read(&literal);
    assert_eq!(record.address, Some(CHANNEL_B.parse()?));
    assert_eq!(record.base, Some(BigUint::from(100u32)));
    assert_eq!(record.retired, vec![CHANNEL_A.parse::<Address>()?]);
    assert_eq!(record.retired_claims[0].expires_at, Some(1_600_000_000));
    same_bytes(&record.to_json(), &literal)?;
    // A carried claim whose record knew no expiry keeps `"expiresAt": null`.
    let mut literal = literal.clone();
    literal["retiredClaims"][0]["expiresAt"] = Value::Null;
    let record = OutgoingChannelRecord::read(&literal);
    assert_eq!(record.retired_claims[0].expires_at, None);
    same_bytes(&record.to_json(), &literal)?;
    // No channel yet: an empty record.
    assert_eq!(
        OutgoingChannelRecord::read(&Value::Null),
        OutgoingChannelRecord::default()
    );
    Ok(())
}

#[test]
fn channel_transactions_are_recorded_as_before() -> Result<(), Box<dyn std::error::Error>> {
    let hash: TxHash = format!("0x{}", "ab".repeat(32)).parse()?;
    let tx = ChannelTx {
        kind: "open".to_owned(),
        channel: CHANNEL_A.parse()?,
        tx_hash: hash,
        raw: vec![1, 2, 3],
        nonce: 7,
    };
    let literal = json!({
        "kind": "open",
        "channel": CHANNEL_A,
        "txHash": hash.to_string(),
        "raw": "0x010203",
        "nonce": 7,
    });
    same_bytes(&tx.to_json(), &literal)?;
    assert_eq!(
        ChannelTx::read_to_follow(&literal),
        Some((hash, vec![1, 2, 3], 7, Some("open".to_owned())))
    );
    let mut unreadable = literal;
    unreadable["nonce"] = json!("7");
    assert_eq!(ChannelTx::read_to_follow(&unreadable), None);
    Ok(())
}

#[test]
fn the_payees_records_are_written_as_before() -> Result<(), Box<dyn std::error::Error>> {
    let literal = json!({
        "channel": CHANNEL_B,
        "amount": "10",
        "base": "100",
        "retired": [{
            "channel": CHANNEL_A, "amount": "100", "signature": sig("22", "1c"), "cumulative": "100"
        }],
        "signature": sig("11", "1b"),
    });
    let record = IncomingRecord::read(&literal);
    assert_eq!(record.retired_position(&CHANNEL_A.parse()?), Some(0));
    assert_eq!(record.retired_position(&CHANNEL_B.parse()?), None);
    assert_eq!(record.retired[0].cumulative, Some(BigUint::from(100u32)));
    same_bytes(&record.to_json(), &literal)?;
    // Without a signature (a record holding only retired channels' claims), the key is absent.
    let mut unsigned = literal.clone();
    unsigned
        .as_object_mut()
        .ok_or("object")?
        .remove("signature");
    same_bytes(&IncomingRecord::read(&unsigned).to_json(), &unsigned)?;
    // Unreadable fields read as None; nothing is taken for zero.
    let odd = IncomingRecord::read(
        &json!({"channel": CHANNEL_B, "amount": 5, "retired": [{"amount": "x"}]}),
    );
    assert_eq!((odd.amount, odd.retired[0].amount.clone()), (None, None));
    let hash: TxHash = format!("0x{}", "cd".repeat(32)).parse()?;
    let close = SubmittedClose {
        channel: CHANNEL_A.parse()?,
        amount: BigUint::from(100u32),
        tx_hash: hash,
    };
    same_bytes(
        &close.to_json(),
        &json!({ "channel": CHANNEL_A, "amount": "100", "txHash": hash.to_string() }),
    )?;
    Ok(())
}
