use super::*;
use channel_modules::store::TransferId;

const NOW: i64 = 1_800_000_000_000;

fn translation() -> Translation {
    Translation {
        scales: Scales {
            legacy: 9,
            modern: 6,
        },
        expiry_margin: Duration::from_millis(1_000),
        min_window: Duration::from_millis(500),
        legacy_max_hold: Duration::from_secs(60),
        legacy_address: "g.kit.server".to_owned(),
        modern_address: Address::new("g.modern.kit").expect("valid address"),
    }
}

fn payment(account: &str, amount: u64, data: &[u8]) -> Vec<u8> {
    IlpV1Packet::Payment(Payment {
        amount,
        account: account.to_owned(),
        data: Bytes::copy_from_slice(data),
    })
    .to_bytes()
    .to_vec()
}

fn transfer(amount: u64, expires_at_ms: i64, ilp: Vec<u8>) -> Transfer {
    Transfer {
        id: TransferId([7; 16]),
        amount: LedgerAmount(amount),
        execution_condition: [3; 32],
        expires_at_ms,
        ilp,
        custom: None,
    }
}

fn prepare(amount: u64, expires_at_ms: i64) -> ilp_v4::Prepare {
    ilp_v4::Prepare {
        amount,
        expires_at: timestamp(expires_at_ms),
        execution_condition: [5; 32],
        destination: Address::new("g.kit.alice").expect("valid address"),
        data: Bytes::from_static(b"stream"),
    }
}

#[test]
fn a_legacy_transfer_becomes_a_prepare_rounded_down_with_the_margin_taken_off(
) -> Result<(), IlpV1Error> {
    let t = translation();
    let p = t.prepare_to_modern(
        &transfer(1_234_567, NOW + 10_000, payment("g.modern.bob", 5, b"hi")),
        NOW,
    )?;
    assert_eq!(p.amount, 1_234);
    assert_eq!(p.destination.as_str(), "g.modern.bob");
    assert_eq!(p.data, Bytes::from_static(b"hi"));
    assert_eq!(p.execution_condition, [3; 32]);
    assert_eq!(p.expires_at.unix_millis(), NOW + 9_000);
    Ok(())
}

#[test]
fn a_legacy_transfer_that_cannot_cross_is_refused_with_the_right_code() {
    let t = translation();
    let code = |r: Result<ilp_v4::Prepare, IlpV1Error>| r.err().map(|e| (e.code, e.triggered_by));
    let ours = |c: &[u8; 3]| Some((*c, "g.kit.server".to_owned()));
    // Not an ILP v1 payment (an ILQP request, or garbage).
    assert_eq!(
        code(t.prepare_to_modern(&transfer(10_000, NOW + 10_000, vec![2, 1, 0]), NOW)),
        ours(b"F01")
    );
    assert_eq!(
        code(t.prepare_to_modern(&transfer(10_000, NOW + 10_000, Vec::new()), NOW)),
        ours(b"F01")
    );
    // An address ILPv4 refuses.
    assert_eq!(
        code(t.prepare_to_modern(
            &transfer(10_000, NOW + 10_000, payment("g.bad address", 1, b"")),
            NOW
        )),
        ours(b"F01")
    );
    // Too much data for ILPv4.
    let big = vec![0u8; ilp_v4::MAX_DATA_BYTES + 1];
    assert_eq!(
        code(t.prepare_to_modern(
            &transfer(10_000, NOW + 10_000, payment("g.m.b", 1, &big)),
            NOW
        )),
        ours(b"F01")
    );
    // Less than one modern unit.
    assert_eq!(
        code(t.prepare_to_modern(&transfer(999, NOW + 10_000, payment("g.m.b", 1, b"")), NOW)),
        ours(b"R01")
    );
    // Not enough time: 10 s − 1 s margin − 0.5 s window leaves nothing at 8.6 s.
    assert_eq!(
        code(t.prepare_to_modern(
            &transfer(10_000, NOW + 1_400, payment("g.m.b", 1, b"")),
            NOW
        )),
        ours(b"R02")
    );
    let finer = Translation {
        scales: Scales {
            legacy: 0,
            modern: 18,
        },
        ..translation()
    };
    assert_eq!(
        code(finer.prepare_to_modern(&transfer(100, NOW + 10_000, payment("g.m.b", 1, b"")), NOW)),
        ours(b"F03")
    );
}

#[test]
fn a_modern_prepare_becomes_a_transfer_carrying_an_ilp_v1_payment() -> Result<(), ilp_v4::Reject> {
    let t = translation();
    let l = t.prepare_to_legacy(&prepare(1_234, NOW + 10_000), NOW)?;
    assert_eq!(l.amount, LedgerAmount(1_234_000));
    assert_eq!(l.expires_at_ms, NOW + 9_000);
    assert_eq!(l.execution_condition, [5; 32]);
    match IlpV1Packet::decode(&l.ilp) {
        Ok(IlpV1Packet::Payment(p)) => {
            assert_eq!(
                p.amount, 1_234_000,
                "the destination amount is what reaches P"
            );
            assert_eq!(p.account, "g.kit.alice");
            assert_eq!(p.data, Bytes::from_static(b"stream"));
        }
        other => panic!("not a payment: {other:?}"),
    }
    // A far expiry is held to P's hold window.
    let far = t.prepare_to_legacy(&prepare(1, NOW + 3_600_000), NOW)?;
    assert_eq!(far.expires_at_ms, NOW + 60_000);
    Ok(())
}

#[test]
fn a_modern_prepare_that_cannot_cross_is_rejected_with_the_right_code() {
    let t = translation();
    let reject = |r: Result<LegacyPrepare, ilp_v4::Reject>| r.err();
    let zero = reject(t.prepare_to_legacy(&prepare(0, NOW + 10_000), NOW));
    assert_eq!(zero.as_ref().map(|r| r.code), Some(*b"F03"));
    assert_eq!(
        zero.and_then(|r| r.triggered_by)
            .map(|a| a.as_str().to_owned()),
        Some("g.modern.kit".to_owned())
    );
    let late = reject(t.prepare_to_legacy(&prepare(5, NOW + 1_000), NOW));
    assert_eq!(late.map(|r| r.code), Some(*b"R02"));
    let too_large = reject(t.prepare_to_legacy(&prepare(u64::MAX, NOW + 10_000), NOW));
    let Some(too_large) = too_large else {
        panic!("u64::MAX µ-units do not fit in nano-units")
    };
    assert_eq!(too_large.code, *b"F08");
    assert_eq!(&too_large.data[..8], &u64::MAX.to_be_bytes());
    assert_eq!(&too_large.data[8..], &(u64::MAX / 1000).to_be_bytes());
    let coarse = Translation {
        scales: Scales {
            legacy: 2,
            modern: 6,
        },
        ..translation()
    };
    let dust = reject(coarse.prepare_to_legacy(&prepare(9_999, NOW + 10_000), NOW));
    assert_eq!(dust.map(|r| r.code), Some(*b"R01"));
}

#[test]
fn a_reject_becomes_an_ilp_v1_error_forwarded_by_the_bridge() {
    let t = translation();
    let e = t.reject_to_legacy(
        &ilp_v4::Reject {
            code: *b"T01",
            triggered_by: Some(Address::new("g.modern").expect("valid address")),
            message: "peer gone: Zürich".to_owned(),
            data: Bytes::from_static(&[1, 2, 3]),
        },
        NOW,
    );
    assert_eq!(e.code, *b"T01");
    assert_eq!(e.name, "Ledger Unreachable");
    assert_eq!(e.triggered_by, "g.modern");
    assert_eq!(e.forwarded_by, vec!["g.kit.server".to_owned()]);
    assert_eq!(e.triggered_at.unix_millis(), NOW);
    assert!(e.data.is_ascii(), "{:?}", e.data);
    let data: serde_json::Value = serde_json::from_slice(&e.data).expect("JSON");
    assert_eq!(data["message"], "peer gone: Zürich");
    assert_eq!(data["data"], "AQID");
    // No triggeredBy, a code that is no ILP code.
    let e = t.reject_to_legacy(
        &ilp_v4::Reject {
            code: *b"Z9!",
            triggered_by: None,
            message: String::new(),
            data: Bytes::new(),
        },
        NOW,
    );
    assert_eq!((e.code, e.name.as_str()), (*b"F00", "Bad Request"));
    assert_eq!(e.triggered_by, "g.kit.server");
    assert_eq!(&e.data[..], br#"{"message":""}"#);
}

#[test]
fn an_ilp_v1_error_becomes_a_reject_with_name_and_message() {
    let t = translation();
    // The legacy expiry Reject (docs/legacy-btp.md §15): data "expired", not JSON.
    let expiry = IlpV1Error {
        code: *b"R00",
        name: "Transfer Timed Out".to_owned(),
        triggered_by: "g.kit.client".to_owned(),
        forwarded_by: Vec::new(),
        triggered_at: timestamp(NOW),
        data: Bytes::from_static(b"expired"),
    };
    let r = t.error_to_modern(&expiry);
    assert_eq!(r.code, *b"R00");
    assert_eq!(r.message, "Transfer Timed Out: expired");
    assert_eq!(
        r.triggered_by.map(|a| a.as_str().to_owned()),
        Some("g.kit.client".to_owned())
    );
    assert_eq!(r.data, Bytes::from_static(b"expired"));
    let json = IlpV1Error {
        code: *b"F02",
        name: "Unreachable".to_owned(),
        triggered_by: "not an address!".to_owned(),
        data: Bytes::from_static(br#"{"message":"no route"}"#),
        ..expiry
    };
    let r = t.error_to_modern(&json);
    assert_eq!(r.message, "Unreachable: no route");
    assert_eq!(
        r.triggered_by.map(|a| a.as_str().to_owned()),
        Some("g.modern.kit".to_owned())
    );
}

#[test]
fn refusals_of_the_legacy_peer_map_to_liquidity_bad_request_or_internal_error() {
    let t = translation();
    assert_eq!(
        t.refusal_to_modern("NotAcceptedError", "limit").code,
        *b"T04"
    );
    assert_eq!(
        t.refusal_to_modern("InsufficientBalanceError", "deposit")
            .code,
        *b"T04"
    );
    assert_eq!(t.refusal_to_modern("InvalidFieldsError", "x").code, *b"F00");
    assert_eq!(t.refusal_to_modern("TypeError", "x").code, *b"T00");
    let r = t.refusal_to_modern(
        "NotAcceptedError",
        "balanceIncomingFulfilledAndPrepared exceeds",
    );
    assert!(
        r.message
            .contains("NotAcceptedError: balanceIncomingFulfilledAndPrepared"),
        "{}",
        r.message
    );
    assert!(
        r.message.starts_with("Insufficient Liquidity: "),
        "{}",
        r.message
    );
}

#[test]
fn fulfills_carry_their_data_both_ways() {
    let f = ilp_v4::Fulfill {
        fulfillment: [9; 32],
        data: Bytes::from_static(b"receipt"),
    };
    let (fulfillment, ilp) = fulfill_to_legacy(&f);
    assert_eq!(fulfillment, [9; 32]);
    assert_eq!(ilp.as_deref(), Some(&b"receipt"[..]));
    assert_eq!(
        fulfill_to_legacy(&ilp_v4::Fulfill {
            fulfillment,
            data: Bytes::new()
        })
        .1,
        None
    );
    assert_eq!(fulfill_to_modern(fulfillment, ilp.as_ref()), f);
    let huge = Bytes::from(vec![1u8; ilp_v4::MAX_DATA_BYTES + 1]);
    assert!(fulfill_to_modern(fulfillment, Some(&huge)).data.is_empty());
}
