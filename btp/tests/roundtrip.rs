//! Property tests: for every packet type, `decode(encode(x)) == x`, the encoder's size prediction is exact, and
//! every strict prefix of an encoding fails to decode (never panics).

use btp::ilp_v1::{self, IlpV1Packet, LiquidityPoint};
use btp::ilp_v4::{self, Address, IlpV4Packet};
use btp::packet::{
    BtpError, BtpVersion, ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName,
};
use btp::Timestamp;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.unix_millis()..=Timestamp::MAX.unix_millis())
        .prop_map(|ms| Timestamp::from_unix_millis(ms).expect("strategy stays in range"))
}

fn bytes_up_to(max: usize) -> impl Strategy<Value = Bytes> {
    // Mostly short, sometimes long enough to need the long length form.
    prop_oneof![vec(any::<u8>(), 0..40), vec(any::<u8>(), 0..=max)].prop_map(Bytes::from)
}

fn ascii_string(max: usize) -> impl Strategy<Value = String> {
    vec(0u8..0x80, 0..=max).prop_map(|v| v.into_iter().map(char::from).collect())
}

fn code() -> impl Strategy<Value = [u8; 3]> {
    [0u8..0x80, 0u8..0x80, 0u8..0x80]
}

fn protocol_data() -> impl Strategy<Value = ProtocolData> {
    vec(
        (ascii_string(20), any::<u8>(), bytes_up_to(300)).prop_map(|(name, ct, data)| {
            ProtocolDataEntry::new(
                ProtocolName::new(name).expect("ascii"),
                ContentType(ct),
                data,
            )
        }),
        0..4,
    )
    .prop_map(|entries| entries.into_iter().collect())
}

fn btp_error() -> impl Strategy<Value = BtpError> {
    (
        code(),
        ascii_string(30),
        timestamp(),
        ".{0,40}",
        protocol_data(),
    )
        .prop_map(|(code, name, triggered_at, data, protocol_data)| BtpError {
            code,
            name,
            triggered_at,
            data,
            protocol_data,
        })
}

fn packet(version: BtpVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        protocol_data().prop_map(Packet::Response),
        protocol_data().prop_map(Packet::Message),
        btp_error().prop_map(Packet::Error),
        (any::<u64>(), protocol_data()).prop_map(|(amount, protocol_data)| Packet::Transfer(
            btp::packet::Transfer {
                amount,
                protocol_data
            }
        )),
    ];
    match version {
        BtpVersion::Btp2 => common.boxed(),
        BtpVersion::Btp1 => prop_oneof![
            common,
            (
                any::<[u8; 16]>(),
                any::<u64>(),
                any::<[u8; 32]>(),
                timestamp(),
                protocol_data()
            )
                .prop_map(
                    |(transfer_id, amount, execution_condition, expires_at, protocol_data)| {
                        Packet::Prepare(btp::packet::Prepare {
                            transfer_id,
                            amount,
                            execution_condition,
                            expires_at,
                            protocol_data,
                        })
                    }
                ),
            (any::<[u8; 16]>(), any::<[u8; 32]>(), protocol_data()).prop_map(
                |(transfer_id, fulfillment, protocol_data)| {
                    Packet::Fulfill(btp::packet::Fulfill {
                        transfer_id,
                        fulfillment,
                        protocol_data,
                    })
                }
            ),
            (any::<[u8; 16]>(), protocol_data()).prop_map(|(transfer_id, protocol_data)| {
                Packet::Reject(btp::packet::Reject {
                    transfer_id,
                    protocol_data,
                })
            }),
        ]
        .boxed(),
    }
}

fn address() -> impl Strategy<Value = Address> {
    "[A-Za-z0-9._~-]{1,60}"
        .prop_map(|s| Address::new(&s).expect("strategy matches the address rules"))
}

fn ilp_v4_packet() -> impl Strategy<Value = IlpV4Packet> {
    prop_oneof![
        (
            any::<u64>(),
            timestamp(),
            any::<[u8; 32]>(),
            address(),
            bytes_up_to(ilp_v4::MAX_DATA_BYTES)
        )
            .prop_map(
                |(amount, expires_at, execution_condition, destination, data)| {
                    IlpV4Packet::Prepare(ilp_v4::Prepare {
                        amount,
                        expires_at,
                        execution_condition,
                        destination,
                        data,
                    })
                }
            ),
        (any::<[u8; 32]>(), bytes_up_to(ilp_v4::MAX_DATA_BYTES)).prop_map(|(fulfillment, data)| {
            IlpV4Packet::Fulfill(ilp_v4::Fulfill { fulfillment, data })
        }),
        (
            code(),
            proptest::option::of(address()),
            ".{0,60}",
            bytes_up_to(300)
        )
            .prop_map(|(code, triggered_by, message, data)| {
                IlpV4Packet::Reject(ilp_v4::Reject {
                    code,
                    triggered_by,
                    message,
                    data,
                })
            }),
    ]
}

fn ilp_v1_packet() -> impl Strategy<Value = IlpV1Packet> {
    prop_oneof![
        (any::<u64>(), ascii_string(40), bytes_up_to(300)).prop_map(|(amount, account, data)| {
            IlpV1Packet::Payment(ilp_v1::Payment {
                amount,
                account,
                data,
            })
        }),
        (ascii_string(40), any::<u32>()).prop_map(
            |(destination_account, destination_hold_duration)| {
                IlpV1Packet::LiquidityRequest(ilp_v1::LiquidityRequest {
                    destination_account,
                    destination_hold_duration,
                })
            }
        ),
        (
            vec((any::<u64>(), any::<u64>()), 0..10),
            ascii_string(40),
            any::<u32>(),
            timestamp()
        )
            .prop_map(
                |(points, applies_to_prefix, source_hold_duration, expires_at)| {
                    IlpV1Packet::LiquidityResponse(ilp_v1::LiquidityResponse {
                        liquidity_curve: points
                            .into_iter()
                            .map(|(x, y)| LiquidityPoint { x, y })
                            .collect(),
                        applies_to_prefix,
                        source_hold_duration,
                        expires_at,
                    })
                }
            ),
        (ascii_string(40), any::<u64>(), any::<u32>()).prop_map(
            |(destination_account, source_amount, d)| {
                IlpV1Packet::BySourceRequest(ilp_v1::BySourceRequest {
                    destination_account,
                    source_amount,
                    destination_hold_duration: d,
                })
            }
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(destination_amount, source_hold_duration)| {
            IlpV1Packet::BySourceResponse(ilp_v1::BySourceResponse {
                destination_amount,
                source_hold_duration,
            })
        }),
        (ascii_string(40), any::<u64>(), any::<u32>()).prop_map(
            |(destination_account, destination_amount, d)| {
                IlpV1Packet::ByDestinationRequest(ilp_v1::ByDestinationRequest {
                    destination_account,
                    destination_amount,
                    destination_hold_duration: d,
                })
            }
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(source_amount, source_hold_duration)| {
            IlpV1Packet::ByDestinationResponse(ilp_v1::ByDestinationResponse {
                source_amount,
                source_hold_duration,
            })
        }),
        (
            code(),
            ascii_string(30),
            ascii_string(40),
            vec(ascii_string(20), 0..4),
            timestamp(),
            bytes_up_to(300)
        )
            .prop_map(
                |(code, name, triggered_by, forwarded_by, triggered_at, data)| {
                    IlpV1Packet::Error(ilp_v1::IlpV1Error {
                        code,
                        name,
                        triggered_by,
                        forwarded_by,
                        triggered_at,
                        data,
                    })
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn btp1_frames_round_trip(request_id in any::<u32>(), packet in packet(BtpVersion::Btp1)) {
        let frame = Frame::new(request_id, packet);
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        prop_assert_eq!(&Frame::decode(&bytes, BtpVersion::Btp1).expect("decodes"), &frame);
        for cut in 0..bytes.len() {
            prop_assert!(Frame::decode(&bytes.slice(..cut), BtpVersion::Btp1).is_err(), "prefix {} decoded", cut);
        }
    }

    #[test]
    fn btp2_frames_round_trip(request_id in any::<u32>(), packet in packet(BtpVersion::Btp2)) {
        let frame = Frame::new(request_id, packet);
        let bytes = frame.to_bytes();
        prop_assert_eq!(&Frame::decode(&bytes, BtpVersion::Btp2).expect("decodes"), &frame);
        // Every BTP/2.0 frame is also a BTP/1.0 frame.
        prop_assert_eq!(&Frame::decode(&bytes, BtpVersion::Btp1).expect("decodes"), &frame);
    }

    #[test]
    fn ilp_v4_round_trip(packet in ilp_v4_packet()) {
        let bytes = packet.to_bytes();
        prop_assert_eq!(bytes.len(), packet.encoded_len());
        prop_assert_eq!(&IlpV4Packet::decode(&bytes).expect("decodes"), &packet);
        for cut in 0..bytes.len().min(200) {
            prop_assert!(IlpV4Packet::decode(&bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn ilp_v1_round_trip(packet in ilp_v1_packet()) {
        let bytes = packet.to_bytes();
        prop_assert_eq!(bytes.len(), packet.encoded_len());
        prop_assert_eq!(&IlpV1Packet::decode(&bytes).expect("decodes"), &packet);
        for cut in 0..bytes.len() {
            prop_assert!(IlpV1Packet::decode(&bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn generalized_time_round_trip(t in timestamp()) {
        let gt = t.to_generalized_time();
        prop_assert_eq!(Timestamp::parse_generalized_time(&gt, "t"), Ok(t));
        prop_assert_eq!(Timestamp::parse_ilp_v4(&t.to_ilp_v4(), "t"), Ok(t));
    }

    #[test]
    fn arbitrary_input_never_panics(raw in vec(any::<u8>(), 0..300)) {
        let bytes = Bytes::from(raw);
        for version in [BtpVersion::Btp1, BtpVersion::Btp2] {
            if let Ok(frame) = Frame::decode(&bytes, version) {
                prop_assert_eq!(Frame::decode(&frame.to_bytes(), version).expect("re-decodes"), frame);
            }
        }
        if let Ok(p) = IlpV1Packet::decode(&bytes) {
            prop_assert_eq!(IlpV1Packet::decode(&p.to_bytes()).expect("re-decodes"), p);
        }
        if let Ok(p) = IlpV4Packet::decode(&bytes) {
            prop_assert_eq!(IlpV4Packet::decode(&p.to_bytes()).expect("re-decodes"), p);
        }
    }
}
