//! Malformed input: truncation at every byte, overlong and non-minimal lengths, trailing bytes on both sides of
//! the policy, huge declared lengths, bad times, unknown types and invalid text. Every case must fail with the
//! right [`DecodeError`] and never panic.

use btp::ilp_v1::IlpV1Packet;
use btp::ilp_v4::{self, IlpV4Packet};
use btp::packet::{BtpVersion, Frame, Packet, MAX_BTP2_ERROR_DATA_BYTES};
use btp::{DecodeError, MAX_FRAME_BYTES};
use bytes::Bytes;

fn hx(s: &str) -> Bytes {
    Bytes::from(hex::decode(s.replace(' ', "")).expect("test hex"))
}

/// The RFC 23 Message vector.
fn message() -> Bytes {
    hx("06 00000002 17 0102 04 74657374 00 02 ffff 04 74657874 01 05 68656c6c6f")
}

/// A BTP/1.0 Prepare carrying a small ILP v1 Payment.
fn prepare() -> Bytes {
    let mut v = hex::decode("03 0000000b 59".replace(' ', "")).expect("hex");
    v.extend([0x11; 16]);
    v.extend(10u64.to_be_bytes());
    v.extend([0xcc; 32]);
    v.push(0x13);
    v.extend(b"20300102030405.678Z");
    v.extend([0x01, 0x01, 0x03]);
    v.extend(b"ilp");
    v.extend([0x00, 0x05, 0x01, 0x03, 0xaa, 0xbb, 0xcc]);
    Bytes::from(v)
}

#[test]
fn fixtures_are_valid() -> Result<(), DecodeError> {
    Frame::decode(&message(), BtpVersion::Btp2)?;
    Frame::decode(&prepare(), BtpVersion::Btp1)?;
    Ok(())
}

#[test]
fn truncated_at_every_byte() {
    for bytes in [message(), prepare()] {
        for cut in 0..bytes.len() {
            let err =
                Frame::decode(&bytes.slice(..cut), BtpVersion::Btp1).expect_err("prefix must fail");
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "cut {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn envelope_trailing_bytes_are_refused() {
    let mut v = message().to_vec();
    v.push(0x00);
    assert_eq!(
        Frame::decode(&Bytes::from(v), BtpVersion::Btp2),
        Err(DecodeError::TrailingBytes {
            field: "btp.frame",
            count: 1
        })
    );
}

#[test]
fn trailing_bytes_inside_contents_are_tolerated() -> Result<(), DecodeError> {
    // Message with protocolData `01 00` followed by two extra bytes inside contents.
    let bytes = hx("06 00000009 04 0100 beef");
    let frame = Frame::decode(&bytes, BtpVersion::Btp1)?;
    assert_eq!(frame.packet, Packet::Message(Default::default()));
    // Re-encoding is canonical (the extra bytes are gone) and decodes to the same frame.
    let again = frame.to_bytes();
    assert_eq!(
        &again[..],
        &hex::decode("06000000090201 00".replace(' ', "")).expect("hex")[..]
    );
    assert_eq!(Frame::decode(&again, BtpVersion::Btp1)?, frame);
    Ok(())
}

#[test]
fn non_minimal_lengths_are_refused() {
    // Contents length 0x17 written in long form.
    let bytes = hx("06 00000002 8117 0102 04 74657374 00 02 ffff 04 74657874 01 05 68656c6c6f");
    assert_eq!(
        Frame::decode(&bytes, BtpVersion::Btp2),
        Err(DecodeError::NonMinimalLength {
            field: "btp.contents",
            length: 0x17
        })
    );
    // Entry name length in long form.
    let bytes = hx("06 00000002 0a 0101 8104 74657374 00 00");
    assert_eq!(
        Frame::decode(&bytes, BtpVersion::Btp2),
        Err(DecodeError::NonMinimalLength {
            field: "btp.protocolData.name",
            length: 4
        })
    );
}

#[test]
fn overlong_and_huge_lengths_are_refused() {
    assert_eq!(
        Frame::decode(&hx("06 00000002 80"), BtpVersion::Btp2),
        Err(DecodeError::OverlongLengthPrefix {
            field: "btp.contents",
            length_bytes: 0
        })
    );
    assert_eq!(
        Frame::decode(&hx("06 00000002 89 0000000000000000ff"), BtpVersion::Btp2),
        Err(DecodeError::OverlongLengthPrefix {
            field: "btp.contents",
            length_bytes: 9
        })
    );
    assert_eq!(
        Frame::decode(&hx("06 00000002 84 7fffffff 00"), BtpVersion::Btp2),
        Err(DecodeError::TooLarge {
            field: "btp.contents",
            actual: 0x7fff_ffff,
            max: MAX_FRAME_BYTES as u64
        })
    );
    // A protocol-data count far beyond what the bytes could hold: refused before allocating.
    assert!(matches!(
        Frame::decode(
            &hx("06 00000002 0a 08 ffffffffffffffff 00"),
            BtpVersion::Btp2
        ),
        Err(DecodeError::Truncated {
            field: "btp.protocolData.count",
            ..
        })
    ));
    assert!(matches!(
        Frame::decode(&hx("06 00000002 02 00 00"), BtpVersion::Btp2),
        Err(DecodeError::InvalidVarUint {
            field: "btp.protocolData.count",
            length: 0
        })
    ));
}

#[test]
fn oversized_input_is_refused() {
    let big = Bytes::from(vec![0u8; MAX_FRAME_BYTES + 1]);
    assert!(matches!(
        Frame::decode(&big, BtpVersion::Btp1),
        Err(DecodeError::TooLarge {
            field: "btp.frame",
            ..
        })
    ));
    assert!(matches!(
        IlpV4Packet::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        IlpV1Packet::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn unknown_and_disallowed_types() {
    for t in [0u8, 8, 0xff] {
        let bytes = Bytes::from(vec![t, 0, 0, 0, 1, 2, 1, 0]);
        assert_eq!(
            Frame::decode(&bytes, BtpVersion::Btp1),
            Err(DecodeError::UnknownType {
                field: "btp.type",
                type_id: t
            })
        );
    }
    for t in [3u8, 4, 5] {
        let bytes = Bytes::from(vec![t, 0, 0, 0, 1, 2, 1, 0]);
        assert!(matches!(
            Frame::decode(&bytes, BtpVersion::Btp2),
            Err(DecodeError::TypeNotAllowed { type_id, version: "BTP/2.0", .. }) if type_id == t
        ));
    }
    assert!(matches!(
        IlpV4Packet::decode(&hx("0b 00")),
        Err(DecodeError::UnknownType { type_id: 11, .. })
    ));
    assert!(matches!(
        IlpV1Packet::decode(&hx("09 00")),
        Err(DecodeError::UnknownType { type_id: 9, .. })
    ));
}

#[test]
fn bad_times_are_refused() {
    let mut v = prepare().to_vec();
    // Turn the '.' of the expiry into ',' (offset: 5 header + 1 len + 16 + 8 + 32 + 1 + 14).
    let dot = 5 + 1 + 16 + 8 + 32 + 1 + 14;
    assert_eq!(v[dot], b'.');
    v[dot] = b',';
    assert!(matches!(
        Frame::decode(&Bytes::from(v), BtpVersion::Btp1),
        Err(DecodeError::InvalidTime {
            field: "btp.prepare.expiresAt",
            ..
        })
    ));
    let mut v = prepare().to_vec();
    v[dot - 10] = b'9'; // month 91
    assert!(matches!(
        Frame::decode(&Bytes::from(v), BtpVersion::Btp1),
        Err(DecodeError::InvalidTime {
            field: "btp.prepare.expiresAt",
            ..
        })
    ));
}

#[test]
fn invalid_text_is_refused() {
    // Protocol name with a non-ASCII byte.
    assert_eq!(
        Frame::decode(&hx("06 00000002 06 0101 01 c3 00 00"), BtpVersion::Btp1),
        Err(DecodeError::InvalidAscii {
            field: "btp.protocolData.name"
        })
    );
    // BTP Error data that is not UTF-8.
    let mut v = hex::decode("02000001f51e".replace(' ', "")).expect("hex");
    v.extend(b"T00");
    v.push(0x01);
    v.extend(b"E");
    v.push(0x13);
    v.extend(b"20180831025324.899Z");
    v.extend([0x02, 0xff, 0xfe, 0x01, 0x00]);
    assert_eq!(v.len() - 6, 0x1e);
    assert_eq!(
        Frame::decode(&Bytes::from(v), BtpVersion::Btp1),
        Err(DecodeError::InvalidUtf8 {
            field: "btp.error.data"
        })
    );
}

#[test]
fn btp2_error_data_limit() -> Result<(), DecodeError> {
    let make = |len: usize| {
        let frame = Frame::new(
            1,
            Packet::Error(btp::BtpError {
                code: *b"F00",
                name: "NotAcceptedError".into(),
                triggered_at: btp::Timestamp::UNIX_EPOCH,
                data: "x".repeat(len),
                protocol_data: Default::default(),
            }),
        );
        frame.to_bytes()
    };
    Frame::decode(&make(MAX_BTP2_ERROR_DATA_BYTES), BtpVersion::Btp2)?;
    assert!(matches!(
        Frame::decode(&make(MAX_BTP2_ERROR_DATA_BYTES + 1), BtpVersion::Btp2),
        Err(DecodeError::TooLarge {
            field: "btp.error.data",
            ..
        })
    ));
    // BTP/1.0 sets no such limit.
    Frame::decode(&make(MAX_BTP2_ERROR_DATA_BYTES + 1), BtpVersion::Btp1)?;
    Ok(())
}

#[test]
fn ilp_v4_limits_and_addresses() {
    let prepare = |destination: &[u8], data_len: usize| {
        let mut contents = Vec::new();
        contents.extend(5u64.to_be_bytes());
        contents.extend(b"20261121154053487");
        contents.extend([0u8; 32]);
        let mut b = bytes::BytesMut::new();
        btp::oer::write_var_octet_string(&mut b, destination);
        btp::oer::write_var_octet_string(&mut b, &vec![7u8; data_len]);
        contents.extend_from_slice(&b);
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&[12]);
        btp::oer::write_var_octet_string(&mut out, &contents);
        out.freeze()
    };
    assert!(IlpV4Packet::decode(&prepare(b"g.bob", ilp_v4::MAX_DATA_BYTES)).is_ok());
    assert!(matches!(
        IlpV4Packet::decode(&prepare(b"g.bob", ilp_v4::MAX_DATA_BYTES + 1)),
        Err(DecodeError::TooLarge {
            field: "ilp.prepare.data",
            ..
        })
    ));
    assert!(matches!(
        IlpV4Packet::decode(&prepare(b"g.bob!", 0)),
        Err(DecodeError::InvalidAddress {
            field: "ilp.prepare.destination",
            ..
        })
    ));
    assert!(matches!(
        IlpV4Packet::decode(&prepare(b"", 0)),
        Err(DecodeError::InvalidAddress {
            field: "ilp.prepare.destination",
            ..
        })
    ));
    assert!(matches!(
        IlpV4Packet::decode(&prepare(&[b'a'; 1024], 0)),
        Err(DecodeError::InvalidAddress {
            field: "ilp.prepare.destination",
            ..
        })
    ));
    // Reject message over 8191 bytes.
    let mut contents = b"F00".to_vec();
    let mut b = bytes::BytesMut::new();
    btp::oer::write_var_octet_string(&mut b, b"");
    btp::oer::write_var_octet_string(&mut b, &vec![b'm'; ilp_v4::MAX_MESSAGE_BYTES + 1]);
    btp::oer::write_var_octet_string(&mut b, b"");
    contents.extend_from_slice(&b);
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&[14]);
    btp::oer::write_var_octet_string(&mut out, &contents);
    assert!(matches!(
        IlpV4Packet::decode(&out.freeze()),
        Err(DecodeError::TooLarge {
            field: "ilp.reject.message",
            ..
        })
    ));
}

#[test]
fn ilp_v1_policy() -> Result<(), DecodeError> {
    // Missing extensions byte: tolerated like ilp-packet 1.x.
    let p = IlpV1Packet::decode(&hx("01 0a 000000000000000a 00 00"))?;
    assert_eq!(p.to_bytes(), hx("01 0b 000000000000000a 00 00 00"));
    // Envelope trailing bytes: refused.
    assert_eq!(
        IlpV1Packet::decode(&hx("01 0b 000000000000000a 00 00 00 ff")),
        Err(DecodeError::TrailingBytes {
            field: "ilpv1.packet",
            count: 1
        })
    );
    // forwardedBy count larger than the bytes left.
    let mut v = hex::decode("08").expect("hex");
    let mut body = b"F00".to_vec();
    body.extend([0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff]);
    v.push(body.len() as u8);
    v.extend(body);
    assert!(matches!(
        IlpV1Packet::decode(&Bytes::from(v)),
        Err(DecodeError::Truncated {
            field: "ilpv1.error.forwardedBy",
            ..
        })
    ));
    // Liquidity curve claiming more points than present.
    assert!(matches!(
        IlpV1Packet::decode(&hx("03 03 01 05 00")),
        Err(DecodeError::Truncated {
            field: "ilqp.liquidityResponse.liquidityCurve",
            ..
        })
    ));
    Ok(())
}
