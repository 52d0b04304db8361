//! IL-DCP (`btp::ildcp`) and CCP (`btp::ccp`): published vectors, round trips and malformed input.
//!
//! Vector sources (used as test data only):
//! * `IRS_*`: the serialized Prepares in interledger-rs `crates/interledger-ccp/src/fixtures.rs`
//!   (`CONTROL_REQUEST_SERIALIZED`, `UPDATE_REQUEST_SIMPLE_SERIALIZED`, `UPDATE_REQUEST_COMPLEX_SERIALIZED`) with the
//!   field values given there; the IL-DCP address `example.connector.ausername` is the one interledger-rs's
//!   `crates/interledger-ildcp/src/server.rs` tests expect (node `example.connector`, username `ausername`).
//! * `JS_*`: bytes produced by the JavaScript packages ilp-connector 23 uses, `ilp-protocol-ildcp` 2.2.3
//!   (`serializeIldcpRequest`, `serializeIldcpResponse`) and `ilp-protocol-ccp` 1.2.3
//!   (`serializeCcpRouteUpdateRequest`, `serializeCcpResponse`), from npm, with the inputs written next to each.

use btp::ccp::{
    ccp_response, Mode, Route, RouteControlRequest, RouteProp, RouteUpdateRequest,
    CCP_CONTROL_DESTINATION, CCP_UPDATE_DESTINATION,
};
use btp::ildcp::{IldcpRequest, IldcpResponse, ILDCP_DESTINATION};
use btp::ilp_v4::{Address, Fulfill, IlpV4Packet, Prepare, MAX_DATA_BYTES};
use btp::peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use btp::{DecodeError, Timestamp};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn hx(s: &str) -> Bytes {
    Bytes::from(hex::decode(s.replace(' ', "")).expect("test hex"))
}

fn prepare_of(bytes: &Bytes) -> Result<Prepare, Box<dyn std::error::Error>> {
    match IlpV4Packet::decode(bytes)? {
        IlpV4Packet::Prepare(p) => Ok(p),
        other => Err(format!("not a Prepare: {other:?}").into()),
    }
}

fn fulfill_of(bytes: &Bytes) -> Result<Fulfill, Box<dyn std::error::Error>> {
    match IlpV4Packet::decode(bytes)? {
        IlpV4Packet::Fulfill(f) => Ok(f),
        other => Err(format!("not a Fulfill: {other:?}").into()),
    }
}

const IRS_CONTROL: &str = "0c6c0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292512706565722e726f7574652e636f6e74726f6c1f0170d1a134a0df4f47964f6e19e2ab379000000020010203666f6f03626172";
const IRS_UPDATE_SIMPLE: &str = "0c7e0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292511706565722e726f7574652e7570646174653221e55f8eabcd4e979ab9bf0ff00a224c000000340000003400000034000075300d6578616d706c652e616c69636501000100";
const IRS_UPDATE_COMPLEX: &str = "0c8201520000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292511706565722e726f7574652e757064617465820104bffbf6ad0ddc4d3ba1e5b4f0537365bd000000340000002e00000032000075300d6578616d706c652e616c69636501020f6578616d706c652e7072656669783101010f6578616d706c652e707265666978317a6c7d85867c46a2fabfad1afa7a4a5e229ce574fcce63f5edeedfc03f8468ea01000f6578616d706c652e707265666978320102126578616d706c652e636f6e6e6563746f72310f6578616d706c652e707265666978322b08e53fbcc17c5f1bd54ae0d9ad7ba39a5f9a7b126ca9b5c0945609a35324cc01025000000b68656c6c6f20776f726c64e0000104a0a0a0a001020f6578616d706c652e707265666978330f6578616d706c652e70726566697834";

/// `serializeIldcpRequest({ expiresAt: 2030-01-02T03:04:05.678Z })`.
const JS_ILDCP_REQUEST: &str = "0c460000000000000000323033303031303230333034303536373866687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f29250b706565722e636f6e66696700";
/// `serializeIldcpResponse({ clientAddress: 'example.connector.ausername', assetScale: 9, assetCode: 'XRP' })`.
const JS_ILDCP_RESPONSE: &str = "0d420000000000000000000000000000000000000000000000000000000000000000211b6578616d706c652e636f6e6e6563746f722e61757365726e616d650903585250";
/// `serializeCcpRouteUpdateRequest` of the update built in [`js_update`].
const JS_UPDATE: &str = "0c81fd0000000000000000323032363132303730343132323431313966687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292511706565722e726f7574652e75706461746581b0bffbf6ad0ddc4d3ba1e5b4f0537365bd000000340000002e00000032000075300d6578616d706c652e616c69636501010f6578616d706c652e707265666978320102126578616d706c652e636f6e6e6563746f72310f6578616d706c652e70726566697832070707070707070707070707070707070707070707070707070707070707070701025000000b68656c6c6f20776f726c64e0000104a0a0a0a001010f6578616d706c652e70726566697833";
/// `serializeCcpResponse()`.
const JS_CCP_RESPONSE: &str =
    "0d21000000000000000000000000000000000000000000000000000000000000000000";

fn complex_props() -> Vec<RouteProp> {
    vec![
        RouteProp {
            is_optional: false,
            is_transitive: true,
            is_partial: false,
            is_utf8: true,
            id: 0,
            value: Bytes::from_static(b"hello world"),
        },
        RouteProp {
            is_optional: true,
            is_transitive: true,
            is_partial: true,
            is_utf8: false,
            id: 1,
            value: Bytes::from_static(&[0xa0, 0xa0, 0xa0, 0xa0]),
        },
    ]
}

#[test]
fn irs_control_request_vector() -> TestResult {
    let prepare = prepare_of(&hx(IRS_CONTROL))?;
    let control = RouteControlRequest::from_prepare(&prepare)?;
    assert_eq!(
        control,
        RouteControlRequest {
            mode: Mode::Sync,
            last_known_routing_table_id: [
                112, 209, 161, 52, 160, 223, 79, 71, 150, 79, 110, 25, 226, 171, 55, 144
            ],
            last_known_epoch: 32,
            features: vec!["foo".to_owned(), "bar".to_owned()],
        }
    );
    assert_eq!(control.to_bytes(), prepare.data);
    assert_eq!(control.encoded_len(), prepare.data.len());
    Ok(())
}

#[test]
fn irs_simple_update_vector() -> TestResult {
    let prepare = prepare_of(&hx(IRS_UPDATE_SIMPLE))?;
    let update = RouteUpdateRequest::from_prepare(&prepare)?;
    assert_eq!(
        update,
        RouteUpdateRequest {
            routing_table_id: [
                33, 229, 95, 142, 171, 205, 78, 151, 154, 185, 191, 15, 240, 10, 34, 76
            ],
            current_epoch_index: 52,
            from_epoch_index: 52,
            to_epoch_index: 52,
            hold_down_time: 30000,
            speaker: Address::new("example.alice")?,
            new_routes: Vec::new(),
            withdrawn_routes: Vec::new(),
        }
    );
    assert_eq!(update.to_bytes(), prepare.data);
    Ok(())
}

#[test]
fn irs_complex_update_vector() -> TestResult {
    let prepare = prepare_of(&hx(IRS_UPDATE_COMPLEX))?;
    let update = RouteUpdateRequest::from_prepare(&prepare)?;
    let expected = RouteUpdateRequest {
        routing_table_id: [
            191, 251, 246, 173, 13, 220, 77, 59, 161, 229, 180, 240, 83, 115, 101, 189,
        ],
        current_epoch_index: 52,
        from_epoch_index: 46,
        to_epoch_index: 50,
        hold_down_time: 30000,
        speaker: Address::new("example.alice")?,
        new_routes: vec![
            Route {
                prefix: "example.prefix1".to_owned(),
                path: vec!["example.prefix1".to_owned()],
                auth: [
                    122, 108, 125, 133, 134, 124, 70, 162, 250, 191, 173, 26, 250, 122, 74, 94, 34,
                    156, 229, 116, 252, 206, 99, 245, 237, 238, 223, 192, 63, 132, 104, 234,
                ],
                props: Vec::new(),
            },
            Route {
                prefix: "example.prefix2".to_owned(),
                path: vec![
                    "example.connector1".to_owned(),
                    "example.prefix2".to_owned(),
                ],
                auth: [
                    43, 8, 229, 63, 188, 193, 124, 95, 27, 213, 74, 224, 217, 173, 123, 163, 154,
                    95, 154, 123, 18, 108, 169, 181, 192, 148, 86, 9, 163, 83, 36, 204,
                ],
                props: complex_props(),
            },
        ],
        withdrawn_routes: vec!["example.prefix3".to_owned(), "example.prefix4".to_owned()],
    };
    assert_eq!(update, expected);
    assert_eq!(expected.to_bytes(), prepare.data);
    assert_eq!(expected.encoded_len(), prepare.data.len());
    Ok(())
}

/// The inputs given to `serializeCcpRouteUpdateRequest` for [`JS_UPDATE`].
fn js_update() -> Result<RouteUpdateRequest, DecodeError> {
    Ok(RouteUpdateRequest {
        routing_table_id: [
            0xbf, 0xfb, 0xf6, 0xad, 0x0d, 0xdc, 0x4d, 0x3b, 0xa1, 0xe5, 0xb4, 0xf0, 0x53, 0x73,
            0x65, 0xbd,
        ],
        current_epoch_index: 52,
        from_epoch_index: 46,
        to_epoch_index: 50,
        hold_down_time: 30000,
        speaker: Address::new("example.alice")?,
        new_routes: vec![Route {
            prefix: "example.prefix2".to_owned(),
            path: vec![
                "example.connector1".to_owned(),
                "example.prefix2".to_owned(),
            ],
            auth: [7; 32],
            props: complex_props(),
        }],
        withdrawn_routes: vec!["example.prefix3".to_owned()],
    })
}

#[test]
fn js_update_vector() -> TestResult {
    let prepare = prepare_of(&hx(JS_UPDATE))?;
    assert_eq!(prepare.destination.as_str(), CCP_UPDATE_DESTINATION);
    let update = RouteUpdateRequest::from_prepare(&prepare)?;
    let expected = js_update()?;
    assert_eq!(update, expected);
    assert_eq!(expected.to_bytes(), prepare.data);
    Ok(())
}

#[test]
fn js_ildcp_request_vector() -> TestResult {
    let bytes = hx(JS_ILDCP_REQUEST);
    let prepare = prepare_of(&bytes)?;
    assert!(IldcpRequest::matches(&prepare));
    // The JS request expires at 2030-01-02T03:04:05.678Z; ours expires 60 s after `now`.
    let expires = prepare.expires_at;
    let now = expires
        .checked_sub(std::time::Duration::from_secs(60))
        .ok_or("time")?;
    let ours = IlpV4Packet::Prepare(IldcpRequest.to_prepare(now)).to_bytes();
    assert_eq!(ours, bytes);
    assert_eq!(prepare.destination.as_str(), ILDCP_DESTINATION);
    Ok(())
}

#[test]
fn js_ildcp_response_vector() -> TestResult {
    let bytes = hx(JS_ILDCP_RESPONSE);
    let fulfill = fulfill_of(&bytes)?;
    let response = IldcpResponse::from_fulfill(&fulfill)?;
    let expected = IldcpResponse {
        address: Address::new("example.connector.ausername")?,
        asset_scale: 9,
        asset_code: "XRP".to_owned(),
    };
    assert_eq!(response, expected);
    assert_eq!(
        IlpV4Packet::Fulfill(expected.to_fulfill()).to_bytes(),
        bytes
    );
    Ok(())
}

#[test]
fn js_ccp_response_vector() {
    assert_eq!(
        IlpV4Packet::Fulfill(ccp_response()).to_bytes(),
        hx(JS_CCP_RESPONSE)
    );
}

#[test]
fn control_prepare_matches_the_irs_vector_but_for_expiry() -> TestResult {
    let published = prepare_of(&hx(IRS_CONTROL))?;
    let control = RouteControlRequest::from_prepare(&published)?;
    let now = published
        .expires_at
        .checked_sub(std::time::Duration::from_secs(60))
        .ok_or("time")?;
    let ours = control.to_prepare(now);
    assert_eq!(ours, published);
    assert_eq!(ours.destination.as_str(), CCP_CONTROL_DESTINATION);
    assert_eq!(ours.execution_condition, PEER_PROTOCOL_CONDITION);
    Ok(())
}

// ---- malformed input -------------------------------------------------------------------------------------

#[test]
fn control_unknown_mode() {
    let mut data = vec![2u8];
    data.extend([0; 16]);
    data.extend([0, 0, 0, 0, 1, 0]);
    assert_eq!(
        RouteControlRequest::decode(&Bytes::from(data)),
        Err(DecodeError::UnknownType {
            field: "ccp.control.mode",
            type_id: 2
        })
    );
}

#[test]
fn control_empty_data_is_truncated_mode() {
    assert!(matches!(
        RouteControlRequest::decode(&Bytes::new()),
        Err(DecodeError::Truncated {
            field: "ccp.control.mode",
            ..
        })
    ));
}

#[test]
fn control_hostile_feature_count() {
    let mut data = vec![1u8];
    data.extend([0; 16]);
    data.extend([0, 0, 0, 0]);
    // 2^32 features announced, three bytes present.
    data.extend([0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x61, 0x00]);
    assert!(matches!(
        RouteControlRequest::decode(&Bytes::from(data)),
        Err(DecodeError::Truncated {
            field: "ccp.control.features.count",
            ..
        })
    ));
}

#[test]
fn control_feature_not_utf8() {
    let mut data = vec![1u8];
    data.extend([0; 16]);
    data.extend([0, 0, 0, 0, 0x01, 0x01, 0x02, 0xc3, 0x28]);
    assert_eq!(
        RouteControlRequest::decode(&Bytes::from(data)),
        Err(DecodeError::InvalidUtf8 {
            field: "ccp.control.feature"
        })
    );
}

#[test]
fn update_bad_speaker() -> TestResult {
    let mut update = js_update()?;
    update.new_routes.clear();
    update.withdrawn_routes.clear();
    let mut data = update.to_bytes().to_vec();
    // The speaker starts after 32 fixed bytes and its one-byte length: make its first character a space.
    data[33] = b' ';
    assert!(matches!(
        RouteUpdateRequest::decode(&Bytes::from(data)),
        Err(DecodeError::InvalidAddress {
            field: "ccp.update.speaker",
            ..
        })
    ));
    Ok(())
}

#[test]
fn update_hostile_route_count() -> TestResult {
    let mut update = js_update()?;
    update.new_routes.clear();
    update.withdrawn_routes.clear();
    let mut data = update.to_bytes().to_vec();
    // Replace the trailing `01 00 01 00` (no routes, no withdrawals) with a count of 1000 routes.
    data.truncate(data.len() - 4);
    data.extend([0x02, 0x03, 0xe8, 0x01, 0x00]);
    assert!(matches!(
        RouteUpdateRequest::decode(&Bytes::from(data)),
        Err(DecodeError::Truncated {
            field: "ccp.update.newRoutes.count",
            ..
        })
    ));
    Ok(())
}

#[test]
fn update_truncated_auth() -> TestResult {
    let bytes = js_update()?.to_bytes();
    // Cut inside the first route's auth (speaker ends at 32 + 1 + 13 = 46; count 2 bytes; prefix 16; path 2 +
    // 19 + 16).
    let cut = 46 + 2 + 16 + 2 + 19 + 16 + 10;
    assert!(matches!(
        RouteUpdateRequest::decode(&bytes.slice(..cut)),
        Err(DecodeError::Truncated {
            field: "ccp.update.route.auth",
            ..
        })
    ));
    Ok(())
}

#[test]
fn oversized_data_is_refused() {
    let big = Bytes::from(vec![0u8; MAX_DATA_BYTES + 1]);
    assert!(matches!(
        RouteUpdateRequest::decode(&big),
        Err(DecodeError::TooLarge {
            field: "ccp.update",
            ..
        })
    ));
    assert!(matches!(
        RouteControlRequest::decode(&big),
        Err(DecodeError::TooLarge {
            field: "ccp.control",
            ..
        })
    ));
    assert!(matches!(
        IldcpResponse::decode(&big),
        Err(DecodeError::TooLarge {
            field: "ildcp.response",
            ..
        })
    ));
}

#[test]
fn ildcp_response_errors_name_the_field() {
    // Address with a space.
    let bad_address = Bytes::from_static(b"\x03a b\x09\x03XRP");
    assert!(matches!(
        IldcpResponse::decode(&bad_address),
        Err(DecodeError::InvalidAddress {
            field: "ildcp.address",
            ..
        })
    ));
    // Empty address.
    assert!(matches!(
        IldcpResponse::decode(&Bytes::from_static(b"\x00\x09\x03XRP")),
        Err(DecodeError::InvalidAddress {
            field: "ildcp.address",
            ..
        })
    ));
    // No scale.
    assert!(matches!(
        IldcpResponse::decode(&Bytes::from_static(b"\x03a.b")),
        Err(DecodeError::Truncated {
            field: "ildcp.assetScale",
            ..
        })
    ));
    // Asset code not UTF-8.
    assert_eq!(
        IldcpResponse::decode(&Bytes::from_static(b"\x03a.b\x09\x02\xc3\x28")),
        Err(DecodeError::InvalidUtf8 {
            field: "ildcp.assetCode"
        })
    );
    // Asset code longer than the bytes present.
    assert!(matches!(
        IldcpResponse::decode(&Bytes::from_static(b"\x03a.b\x09\x05XR")),
        Err(DecodeError::Truncated {
            field: "ildcp.assetCode",
            ..
        })
    ));
}

#[test]
fn trailing_bytes_are_ignored_like_interledger_rs() -> TestResult {
    let response = IldcpResponse {
        address: Address::new("g.a")?,
        asset_scale: 2,
        asset_code: "USD".to_owned(),
    };
    let mut data = response.to_bytes().to_vec();
    data.extend([0xff, 0xee]);
    assert_eq!(IldcpResponse::decode(&Bytes::from(data))?, response);
    let control = RouteControlRequest {
        mode: Mode::Idle,
        last_known_routing_table_id: [9; 16],
        last_known_epoch: 7,
        features: Vec::new(),
    };
    let mut data = control.to_bytes().to_vec();
    data.push(0x00);
    assert_eq!(RouteControlRequest::decode(&Bytes::from(data))?, control);
    Ok(())
}

#[test]
fn fulfillment_of_replies_is_zero() {
    assert_eq!(ccp_response().fulfillment, PEER_PROTOCOL_FULFILLMENT);
}

// ---- round trips -----------------------------------------------------------------------------------------

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        proptest::string::string_regex(&format!(".{{0,{max}}}")).expect("regex")
    ]
}

fn address() -> impl Strategy<Value = Address> {
    "[A-Za-z0-9._~-]{1,60}".prop_map(|s| Address::new(&s).expect("strategy makes valid addresses"))
}

fn prop() -> impl Strategy<Value = RouteProp> {
    (any::<[bool; 4]>(), any::<u16>(), vec(any::<u8>(), 0..200)).prop_map(|(flags, id, value)| {
        RouteProp {
            is_optional: flags[0],
            is_transitive: flags[1],
            is_partial: flags[2],
            is_utf8: flags[3],
            id,
            value: Bytes::from(value),
        }
    })
}

fn route() -> impl Strategy<Value = Route> {
    (
        text(150),
        vec(text(30), 0..4),
        any::<[u8; 32]>(),
        vec(prop(), 0..3),
    )
        .prop_map(|(prefix, path, auth, props)| Route {
            prefix,
            path,
            auth,
            props,
        })
}

fn update() -> impl Strategy<Value = RouteUpdateRequest> {
    (
        any::<[u8; 16]>(),
        any::<[u32; 4]>(),
        address(),
        vec(route(), 0..4),
        vec(text(20), 0..4),
    )
        .prop_map(
            |(routing_table_id, epochs, speaker, new_routes, withdrawn_routes)| {
                RouteUpdateRequest {
                    routing_table_id,
                    current_epoch_index: epochs[0],
                    from_epoch_index: epochs[1],
                    to_epoch_index: epochs[2],
                    hold_down_time: epochs[3],
                    speaker,
                    new_routes,
                    withdrawn_routes,
                }
            },
        )
}

fn control() -> impl Strategy<Value = RouteControlRequest> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u32>(),
        vec(text(200), 0..5),
    )
        .prop_map(|(sync, id, epoch, features)| RouteControlRequest {
            mode: if sync { Mode::Sync } else { Mode::Idle },
            last_known_routing_table_id: id,
            last_known_epoch: epoch,
            features,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn control_round_trip(c in control()) {
        let bytes = c.to_bytes();
        prop_assert_eq!(bytes.len(), c.encoded_len());
        prop_assert_eq!(&RouteControlRequest::decode(&bytes).expect("decodes"), &c);
        for cut in 0..bytes.len() {
            prop_assert!(RouteControlRequest::decode(&bytes.slice(..cut)).is_err(), "prefix {} decoded", cut);
        }
        let now = Timestamp::from_unix_millis(1_700_000_000_000).expect("in range");
        prop_assert_eq!(&RouteControlRequest::from_prepare(&c.to_prepare(now)).expect("decodes"), &c);
    }

    #[test]
    fn update_round_trip(u in update()) {
        let bytes = u.to_bytes();
        prop_assert_eq!(bytes.len(), u.encoded_len());
        prop_assert_eq!(&RouteUpdateRequest::decode(&bytes).expect("decodes"), &u);
        for cut in 0..bytes.len().min(400) {
            prop_assert!(RouteUpdateRequest::decode(&bytes.slice(..cut)).is_err(), "prefix {} decoded", cut);
        }
        let now = Timestamp::from_unix_millis(0).expect("in range");
        let prepare = u.to_prepare(now);
        let wire = IlpV4Packet::Prepare(prepare).to_bytes();
        let back = prepare_of(&wire).expect("prepare");
        prop_assert_eq!(&RouteUpdateRequest::from_prepare(&back).expect("decodes"), &u);
    }

    #[test]
    fn ildcp_response_round_trip(address in address(), scale in any::<u8>(), code in text(40)) {
        let r = IldcpResponse { address, asset_scale: scale, asset_code: code };
        let bytes = r.to_bytes();
        prop_assert_eq!(bytes.len(), r.encoded_len());
        prop_assert_eq!(&IldcpResponse::decode(&bytes).expect("decodes"), &r);
        for cut in 0..bytes.len() {
            prop_assert!(IldcpResponse::decode(&bytes.slice(..cut)).is_err(), "prefix {} decoded", cut);
        }
    }

    #[test]
    fn decoders_never_panic(data in vec(any::<u8>(), 0..300)) {
        let b = Bytes::from(data);
        let _ = RouteControlRequest::decode(&b);
        let _ = RouteUpdateRequest::decode(&b);
        let _ = IldcpResponse::decode(&b);
    }
}
