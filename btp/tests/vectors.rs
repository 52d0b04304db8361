//! Every captured vector in the docs (docs/legacy-btp.md §2, docs/modern.md §2–§4): each decodes to the
//! documented fields and encodes back to the same bytes. Where the docs elide bytes (`<32-byte cond>`,
//! `<time>`, `rid`), the full bytes are built here from the documented structure.

use btp::ilp_v1::{IlpV1Error, IlpV1Packet, Payment};
use btp::ilp_v4::{self, Address, IlpV4Packet};
use btp::packet::{
    BtpError, BtpVersion, ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName,
};
use btp::{DecodeError, Timestamp};
use bytes::Bytes;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Builds bytes from a list of pieces: hex strings (`h`) and ASCII strings (`a`).
enum Piece<'a> {
    H(&'a str),
    A(&'a str),
    B(&'a [u8]),
}
use Piece::{A, B, H};

fn build(pieces: &[Piece<'_>]) -> Bytes {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            H(h) => out.extend(hex::decode(h.replace(' ', "")).expect("test hex")),
            A(s) => out.extend_from_slice(s.as_bytes()),
            B(b) => out.extend_from_slice(b),
        }
    }
    Bytes::from(out)
}

/// Decodes under both versions where allowed, checks the re-encoding is byte-identical, and returns the frame.
fn decode_exact(bytes: &Bytes, version: BtpVersion) -> Result<Frame, DecodeError> {
    let frame = Frame::decode(bytes, version)?;
    assert_eq!(frame.to_bytes(), *bytes, "re-encoding differs");
    assert_eq!(frame.encoded_len(), bytes.len());
    Ok(frame)
}

fn name(s: &'static str) -> ProtocolName {
    ProtocolName::from_static(s)
}

fn ts(gt: &str) -> Timestamp {
    Timestamp::parse_generalized_time(gt.as_bytes(), "test").expect("test time")
}

const RID: &str = "1a2b3c4d";

#[test]
fn client_auth_message_and_reply() -> TestResult {
    let bytes = build(&[
        H("06 49f68f8a 2c 0103"),
        H("04"),
        A("auth"),
        H("00 00"),
        H("0d"),
        A("auth_username"),
        H("01 00"),
        H("0a"),
        A("auth_token"),
        H("01 06"),
        A("s@cret"),
    ]);
    for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
        let frame = decode_exact(&bytes, version)?;
        assert_eq!(frame.request_id, 0x49f6_8f8a);
        let Packet::Message(pd) = &frame.packet else {
            panic!("not a message: {frame:?}")
        };
        assert_eq!(pd.len(), 3);
        assert_eq!(pd.primary().map(|e| e.name.as_str()), Some("auth"));
        assert_eq!(
            pd.get("auth").map(|e| (e.content_type, e.data.len())),
            Some((ContentType::OCTET_STREAM, 0))
        );
        let user = pd.get("auth_username").expect("username entry");
        assert_eq!(user.content_type, ContentType::TEXT_PLAIN_UTF8);
        assert_eq!(user.data_str()?, "");
        let token = pd.get("auth_token").expect("token entry");
        assert_eq!(token.content_type, ContentType::TEXT_PLAIN_UTF8);
        assert_eq!(token.data_str()?, "s@cret");
    }
    // The same frame built from typed values.
    let built = Frame::new(
        0x49f6_8f8a,
        Packet::Message(
            ProtocolData::new()
                .with(ProtocolDataEntry::octets(name("auth"), Bytes::new()))
                .with(ProtocolDataEntry::text(name("auth_username"), ""))
                .with(ProtocolDataEntry::text(name("auth_token"), "s@cret")),
        ),
    );
    assert_eq!(built.to_bytes(), bytes);

    let reply = build(&[H("01 49f68f8a 02 0100")]);
    let frame = decode_exact(&reply, BtpVersion::Btp1)?;
    assert_eq!(
        frame,
        Frame::new(0x49f6_8f8a, Packet::Response(ProtocolData::new()))
    );
    Ok(())
}

#[test]
fn side_requests_info_balance_limit() -> TestResult {
    let info = build(&[H("06"), H(RID), H("0a 0101 04"), A("info"), H("00 01 02")]);
    let balance = build(&[
        H("06"),
        H(RID),
        H("0d 0101 07"),
        A("balance"),
        H("00 01 00"),
    ]);
    let limit = build(&[H("06"), H(RID), H("0b 0101 05"), A("limit"), H("00 01 00")]);
    for (bytes, proto, payload) in [
        (&info, "info", 2u8),
        (&balance, "balance", 0),
        (&limit, "limit", 0),
    ] {
        let frame = decode_exact(bytes, BtpVersion::Btp1)?;
        assert_eq!(frame.request_id, 0x1a2b_3c4d);
        let Packet::Message(pd) = &frame.packet else {
            panic!("not a message")
        };
        assert_eq!(pd.len(), 1);
        let e = pd.primary().expect("entry");
        assert_eq!(e.name, proto);
        assert_eq!(e.content_type, ContentType::OCTET_STREAM);
        assert_eq!(&e.data[..], &[payload]);
        let built = Frame::new(
            0x1a2b_3c4d,
            Packet::Message(
                ProtocolData::new().with(ProtocolDataEntry::octets(name(proto), vec![payload])),
            ),
        );
        assert_eq!(built.to_bytes(), *bytes);
    }
    Ok(())
}

#[test]
fn side_replies_balance_and_limit() -> TestResult {
    let balance = build(&[
        H("01"),
        H(RID),
        H("14 0101 07"),
        A("balance"),
        H("00 08 fffffffffffffb2e"),
    ]);
    let frame = decode_exact(&balance, BtpVersion::Btp1)?;
    let Packet::Response(pd) = &frame.packet else {
        panic!("not a response")
    };
    let data = pd.data("balance").expect("balance entry");
    let raw: [u8; 8] = data[..].try_into()?;
    assert_eq!(i64::from_be_bytes(raw), -1234);

    let limit = build(&[
        H("01"),
        H(RID),
        H("10 0101 05"),
        A("limit"),
        H("02 06"),
        A("\"5000\""),
    ]);
    let frame = decode_exact(&limit, BtpVersion::Btp1)?;
    let Packet::Response(pd) = &frame.packet else {
        panic!("not a response")
    };
    let e = pd.get("limit").expect("limit entry");
    assert_eq!(e.content_type, ContentType::APPLICATION_JSON);
    assert_eq!(e.data_str()?, "\"5000\"");
    Ok(())
}

fn condition() -> [u8; 32] {
    core::array::from_fn(|i| 0xc0 ^ i as u8)
}

#[test]
fn prepare_with_ilp_v1_payment() -> TestResult {
    let ilp = build(&[
        H("0121 000000000000000a 16"),
        A("test.legacy.server.bob"),
        H("00 00"),
    ]);
    assert_eq!(ilp.len(), 0x23);
    let bytes = build(&[
        H("03 0000000b 77 11111111222243338444555555555555 000000000000000a"),
        B(&condition()),
        H("13"),
        A("20300102030405.678Z"),
        H("0101 03"),
        A("ilp"),
        H("00 23"),
        B(&ilp),
    ]);
    let frame = decode_exact(&bytes, BtpVersion::Btp1)?;
    assert_eq!(frame.request_id, 11);
    let Packet::Prepare(p) = &frame.packet else {
        panic!("not a prepare")
    };
    assert_eq!(
        hex::encode(p.transfer_id),
        "11111111222243338444555555555555"
    );
    assert_eq!(p.amount, 10);
    assert_eq!(p.execution_condition, condition());
    assert_eq!(p.expires_at, ts("20300102030405.678Z"));
    assert_eq!(p.expires_at.to_string(), "2030-01-02T03:04:05.678Z");
    let entry = p.protocol_data.get("ilp").expect("ilp entry");
    assert_eq!(entry.content_type, ContentType::OCTET_STREAM);
    assert_eq!(entry.data, ilp);
    // Zero copy: the ILP packet is a slice of the frame.
    assert_eq!(
        entry.data.as_ptr(),
        bytes[bytes.len() - ilp.len()..].as_ptr()
    );

    let payment = IlpV1Packet::decode(&entry.data)?;
    assert_eq!(
        payment,
        IlpV1Packet::Payment(Payment {
            amount: 10,
            account: "test.legacy.server.bob".into(),
            data: Bytes::new(),
        })
    );
    assert_eq!(payment.to_bytes(), ilp);

    // BTP/2.0 has no Prepare.
    assert_eq!(
        Frame::decode(&bytes, BtpVersion::Btp2),
        Err(DecodeError::TypeNotAllowed {
            field: "btp.type",
            type_id: 3,
            version: "BTP/2.0"
        })
    );
    Ok(())
}

#[test]
fn long_envelope_uses_long_length_form() -> TestResult {
    // "envelopes over 127 bytes use the long length form (e.g. 81 8f)": a Prepare with ilp + custom entries.
    let ilp = build(&[
        H("0121 000000000000000a 16"),
        A("test.legacy.server.bob"),
        H("00 00"),
    ]);
    // Contents: 76 fixed bytes (16 id + 8 amount + 32 condition + 20 expiry) + 2 (count) + 41 (`ilp` entry:
    // 1 + 3 name, 1 type, 1 + 35 data) + 9 + 15 (`custom` entry: 1 + 6 name, 1 type, 1 + 15 data) = 143 = 0x8f.
    let custom = "{\"k\":\"0123456\"}";
    assert_eq!(custom.len(), 15);
    let frame = Frame::new(
        7,
        Packet::Prepare(btp::packet::Prepare {
            transfer_id: [0x11; 16],
            amount: 10,
            execution_condition: condition(),
            expires_at: ts("20300102030405.678Z"),
            protocol_data: ProtocolData::new()
                .with(ProtocolDataEntry::octets(name("ilp"), ilp))
                .with(ProtocolDataEntry::json(
                    name("custom"),
                    custom.as_bytes().to_vec(),
                )),
        }),
    );
    let bytes = frame.to_bytes();
    assert_eq!(&bytes[5..7], &[0x81, 0x8f]);
    assert_eq!(bytes.len(), 7 + 0x8f);
    // `ilp` first, then `custom` as JSON (type 2), as a legacy sender writes them.
    let mut tail = vec![0x06];
    tail.extend_from_slice(b"custom");
    tail.extend([0x02, 0x0f]);
    tail.extend_from_slice(custom.as_bytes());
    assert!(bytes.ends_with(&tail));
    assert_eq!(Frame::decode(&bytes, BtpVersion::Btp1)?, frame);
    Ok(())
}

#[test]
fn fulfill() -> TestResult {
    let id = [0x11u8; 16];
    let preimage: [u8; 32] = core::array::from_fn(|i| i as u8);
    let bytes = build(&[H("04"), H(RID), H("32"), B(&id), B(&preimage), H("0100")]);
    let frame = decode_exact(&bytes, BtpVersion::Btp1)?;
    assert_eq!(
        frame.packet,
        Packet::Fulfill(btp::packet::Fulfill {
            transfer_id: id,
            fulfillment: preimage,
            protocol_data: ProtocolData::new()
        })
    );
    assert!(matches!(
        Frame::decode(&bytes, BtpVersion::Btp2),
        Err(DecodeError::TypeNotAllowed { type_id: 4, .. })
    ));
    Ok(())
}

#[test]
fn expiry_reject_with_ilp_v1_error() -> TestResult {
    let id = hex::decode("11111111222243338444555555555555")?;
    let ilp = build(&[
        H("08 48"),
        A("R00"),
        H("12"),
        A("Transfer Timed Out"),
        H("12"),
        A("test.legacy.server"),
        H("0100 13"),
        A("20261121153025.813Z"),
        H("07"),
        A("expired"),
        H("00"),
    ]);
    assert_eq!(ilp.len(), 0x4a);
    let bytes = build(&[
        H("05"),
        H(RID),
        H("62"),
        B(&id),
        H("0101 03"),
        A("ilp"),
        H("00 4a"),
        B(&ilp),
    ]);
    let frame = decode_exact(&bytes, BtpVersion::Btp1)?;
    let Packet::Reject(r) = &frame.packet else {
        panic!("not a reject")
    };
    assert_eq!(&r.transfer_id[..], &id[..]);
    let error = IlpV1Packet::decode(r.protocol_data.data("ilp").expect("ilp entry"))?;
    let expected = IlpV1Packet::Error(IlpV1Error {
        code: *b"R00",
        name: "Transfer Timed Out".into(),
        triggered_by: "test.legacy.server".into(),
        forwarded_by: vec![],
        triggered_at: ts("20261121153025.813Z"),
        data: Bytes::from_static(b"expired"),
    });
    assert_eq!(error, expected);
    assert_eq!(expected.to_bytes(), ilp);
    assert!(matches!(
        Frame::decode(&bytes, BtpVersion::Btp2),
        Err(DecodeError::TypeNotAllowed { type_id: 5, .. })
    ));
    Ok(())
}

#[test]
fn ilp_v1_error_with_forwarders() -> TestResult {
    let e = IlpV1Packet::Error(IlpV1Error {
        code: *b"F00",
        name: "Bad Request".into(),
        triggered_by: "a.b".into(),
        forwarded_by: vec!["c.d".into(), "e".into()],
        triggered_at: ts("20261121153025.813Z"),
        data: Bytes::from_static(b"{\"message\":\"x\"}"),
    });
    let bytes = e.to_bytes();
    let expect = build(&[
        H("08 40"),
        A("F00"),
        H("0b"),
        A("Bad Request"),
        H("03"),
        A("a.b"),
        H("0102 03"),
        A("c.d"),
        H("01"),
        A("e"),
        H("13"),
        A("20261121153025.813Z"),
        H("0f"),
        A("{\"message\":\"x\"}"),
        H("00"),
    ]);
    assert_eq!(bytes, expect);
    assert_eq!(IlpV1Packet::decode(&bytes)?, e);
    Ok(())
}

#[test]
fn legacy_f02_error() -> TestResult {
    let data = "{\"message\":\"No transfer found with ID 11111111-2222-4333-8444-555555555555\"}";
    assert_eq!(data.len(), 0x4c);
    let bytes = build(&[
        H("02 0000000d 7c"),
        A("F02"),
        H("15"),
        A("TransferNotFoundError"),
        H("13"),
        A("20261121153025.813Z"),
        H("4c"),
        A(data),
        H("0100"),
    ]);
    for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
        let frame = decode_exact(&bytes, version)?;
        assert_eq!(frame.request_id, 13);
        let expected = BtpError {
            code: btp::legacy_error_code("TransferNotFoundError"),
            name: "TransferNotFoundError".into(),
            triggered_at: ts("20261121153025.813Z"),
            data: data.into(),
            protocol_data: ProtocolData::new(),
        };
        assert_eq!(frame.packet, Packet::Error(expected));
    }
    Ok(())
}

#[test]
fn rfc23_message_vector() -> TestResult {
    let bytes = build(&[
        H("06 00000002 17 01 02 04"),
        A("test"),
        H("00 02 ffff 04"),
        A("text"),
        H("01 05"),
        A("hello"),
    ]);
    for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
        let frame = decode_exact(&bytes, version)?;
        let expected = Frame::new(
            2,
            Packet::Message(
                ProtocolData::new()
                    .with(ProtocolDataEntry::octets(name("test"), vec![0xff, 0xff]))
                    .with(ProtocolDataEntry::text(name("text"), "hello")),
            ),
        );
        assert_eq!(frame, expected);
    }
    Ok(())
}

#[test]
fn rfc23_error_vector() -> TestResult {
    let bytes = build(&[
        H("02 000001f5 2f"),
        A("T00"),
        H("10"),
        A("UnreachableError"),
        H("13"),
        A("20180831025324.899Z"),
        H("04"),
        A("oops"),
        H("0100"),
    ]);
    for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
        let frame = decode_exact(&bytes, version)?;
        assert_eq!(frame.request_id, 501);
        let Packet::Error(e) = &frame.packet else {
            panic!("not an error")
        };
        assert_eq!(e.code_str(), "T00");
        assert_eq!(e.name, "UnreachableError");
        assert_eq!(e.triggered_at.unix_millis(), 1_535_684_004_899);
        assert_eq!(e.data, "oops");
        assert!(e.protocol_data.is_empty());
    }
    Ok(())
}

#[test]
fn transfer_type_7_in_both_versions() -> TestResult {
    let bytes = build(&[H("07"), H(RID), H("0a 00000000000003e8 0100")]);
    for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
        let frame = decode_exact(&bytes, version)?;
        assert_eq!(
            frame.packet,
            Packet::Transfer(btp::packet::Transfer {
                amount: 1000,
                protocol_data: ProtocolData::new()
            })
        );
    }
    Ok(())
}

const PEER_SETTLE_CONDITION: &str =
    "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";

#[test]
fn ilp_v4_prepare_with_17_digit_expiry() -> TestResult {
    let cond: [u8; 32] = hex::decode(PEER_SETTLE_CONDITION)?
        .try_into()
        .map_err(|_| "len")?;
    let bytes = build(&[
        H("0c 4b 0000000000000000"),
        A("20261121154053487"),
        B(&cond),
        H("0b"),
        A("peer.settle"),
        H("05"),
        A("hello"),
    ]);
    assert_eq!(bytes.len(), 2 + 0x4b);
    let packet = IlpV4Packet::decode(&bytes)?;
    let IlpV4Packet::Prepare(p) = &packet else {
        panic!("not a prepare")
    };
    assert_eq!(p.amount, 0);
    assert_eq!(p.expires_at, ts("20261121154053.487Z"));
    assert_eq!(p.execution_condition, cond);
    assert_eq!(p.destination.as_str(), "peer.settle");
    assert_eq!(&p.data[..], b"hello");
    assert_eq!(packet.to_bytes(), bytes);
    assert_eq!(packet.encoded_len(), bytes.len());
    // Carried in a BTP/2.0 frame the way interledger-rs does it (in a Response).
    let frame = Frame::new(
        0xdead_beef,
        Packet::Response(
            ProtocolData::new().with(ProtocolDataEntry::octets(name("ilp"), bytes.clone())),
        ),
    );
    let decoded = Frame::decode(&frame.to_bytes(), BtpVersion::Btp2)?;
    assert_eq!(
        IlpV4Packet::decode(decoded.packet.protocol_data().data("ilp").expect("ilp"))?,
        packet
    );
    Ok(())
}

#[test]
fn ilp_v4_fulfill_and_reject() -> TestResult {
    // IL-DCP reply: fulfillment of zeros, data = var(address) | u8 scale | var(asset code).
    let fulfill_bytes = build(&[
        H("0d 31"),
        B(&[0u8; 32]),
        H("10 0a"),
        A("test.alice"),
        H("09 03"),
        A("XRP"),
    ]);
    let fulfill = IlpV4Packet::decode(&fulfill_bytes)?;
    assert_eq!(
        fulfill,
        IlpV4Packet::Fulfill(ilp_v4::Fulfill {
            fulfillment: [0; 32],
            data: build(&[H("0a"), A("test.alice"), H("09 03"), A("XRP")])
        })
    );
    assert_eq!(fulfill.to_bytes(), fulfill_bytes);

    let reject_bytes = build(&[
        H("0e 1b"),
        A("T00"),
        H("0b"),
        A("peer.settle"),
        H("0a"),
        A("SE is down"),
        H("00"),
    ]);
    let reject = IlpV4Packet::decode(&reject_bytes)?;
    assert_eq!(
        reject,
        IlpV4Packet::Reject(ilp_v4::Reject {
            code: *b"T00",
            triggered_by: Some(Address::new("peer.settle")?),
            message: "SE is down".into(),
            data: Bytes::new(),
        })
    );
    assert_eq!(reject.to_bytes(), reject_bytes);

    let anonymous = build(&[H("0e 06"), A("F99"), H("00 00 00")]);
    let IlpV4Packet::Reject(r) = IlpV4Packet::decode(&anonymous)? else {
        panic!("not a reject")
    };
    assert_eq!(r.triggered_by, None);
    assert_eq!(IlpV4Packet::Reject(r).to_bytes(), anonymous);
    Ok(())
}
