//! Listener-side authentication: the legacy handshake, the five legacy auth Errors byte for byte, the close
//! after a failure, the auth timeout, and interledger-rs style clients.

mod transport_support;

use std::time::Duration;

use btp::packet::{ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::{PeerKey, ServerConfig};
use btp::Timestamp;
use bytes::Bytes;
use transport_support::*;

fn oct(name: &'static str, ct: u8, data: &[u8]) -> ProtocolDataEntry {
    ProtocolDataEntry::new(
        ProtocolName::from_static(name),
        ContentType(ct),
        data.to_vec(),
    )
}

fn msg(request_id: u32, entries: Vec<ProtocolDataEntry>) -> Bytes {
    Frame::new(request_id, Packet::Message(entries.into_iter().collect())).to_bytes()
}

/// The legacy Error bytes: `02 | id | len | code | var name | var triggeredAt | var data | 01 00`, with the
/// `triggeredAt` taken from the received frame (it is the server's clock).
fn expected_error(
    request_id: u32,
    code: &str,
    name: &str,
    data: &str,
    triggered_at: &[u8],
) -> Vec<u8> {
    let mut contents = Vec::new();
    contents.extend_from_slice(code.as_bytes());
    contents.push(name.len() as u8);
    contents.extend_from_slice(name.as_bytes());
    contents.push(triggered_at.len() as u8);
    contents.extend_from_slice(triggered_at);
    contents.push(data.len() as u8);
    contents.extend_from_slice(data.as_bytes());
    contents.extend_from_slice(&[0x01, 0x00]);
    let mut out = vec![0x02];
    out.extend_from_slice(&request_id.to_be_bytes());
    assert!(
        contents.len() < 128,
        "test vectors use the short length form"
    );
    out.push(contents.len() as u8);
    out.extend_from_slice(&contents);
    out
}

/// Sends `frame` on a fresh socket and checks the exact Error reply and the close code 1000.
async fn assert_refused(server: &TestServer, frame: Bytes, code: &str, name: &str, data: &str) {
    let mut ws = raw_client(server.addr).await;
    let request_id = Frame::peek_header(&frame).expect("header").1;
    send(&mut ws, frame).await;
    let reply = next_binary(&mut ws).await.expect("an error reply");
    let decoded = decode(&reply);
    let Packet::Error(err) = &decoded.packet else {
        panic!("expected an Error, got {decoded:?}");
    };
    let time = err.triggered_at.to_generalized_time();
    assert_eq!(
        hex::encode(&reply),
        hex::encode(expected_error(request_id, code, name, data, &time)),
        "error bytes for {data}"
    );
    let age = Timestamp::now()
        .duration_since(err.triggered_at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "triggeredAt is the current time"
    );
    assert_eq!(
        close_code(&mut ws).await,
        Some(1000),
        "socket closed with 1000 after {data}"
    );
}

#[tokio::test]
async fn legacy_auth_succeeds_with_exact_response() -> TestResult {
    let (server, handler) = legacy_server().await;
    let mut ws = raw_client(server.addr).await;
    send(&mut ws, legacy_auth_frame(0x49f6_8f8a, "", SECRET)).await;
    let reply = next_binary(&mut ws).await.expect("auth response");
    assert_eq!(hex::encode(&reply), "0149f68f8a020100");
    // The socket now carries requests.
    send(&mut ws, Frame::new(7, message(b"hi")).to_bytes()).await;
    let reply = decode(&next_binary(&mut ws).await.expect("reply"));
    assert_eq!(reply.request_id, 7);
    assert_eq!(
        reply.packet,
        Packet::Response(message(b"hi").protocol_data().clone())
    );
    assert_eq!(handler.ids(), vec![7]);
    let session = server.session("alice");
    assert!(session.is_connected());
    Ok(())
}

#[tokio::test]
async fn the_five_legacy_auth_errors_are_byte_exact() -> TestResult {
    let (server, handler) = legacy_server().await;
    let auth = || oct("auth", 0, b"");
    let user = || oct("auth_username", 1, b"");
    let token = |t: &[u8]| oct("auth_token", 1, t);
    const F01: &str = "InvalidFieldsError";

    // 1. Not a Message.
    let prepare_like = Frame::new(0x0102_0304, Packet::Response(ProtocolData::new())).to_bytes();
    assert_refused(
        &server,
        prepare_like,
        "F01",
        F01,
        r#"{"message":"invalid method on unauthenticated socket"}"#,
    )
    .await;
    // 2. First entry is not `auth` (even though it is present later).
    assert_refused(
        &server,
        msg(11, vec![user(), auth(), token(SECRET.as_bytes())]),
        "F01",
        F01,
        r#"{"message":"auth must be primary protocol on unauthenticated message"}"#,
    )
    .await;
    // 3. No auth_token.
    assert_refused(
        &server,
        msg(12, vec![auth(), user()]),
        "F01",
        F01,
        r#"{"message":"missing \"auth_token\" secondary protocol"}"#,
    )
    .await;
    // 4. No auth_username.
    assert_refused(
        &server,
        msg(13, vec![auth(), token(SECRET.as_bytes())]),
        "F01",
        F01,
        r#"{"message":"missing \"auth_username\" secondary protocol"}"#,
    )
    .await;
    // 5a. Wrong token.
    let not_accepted = r#"{"message":"invalid auth token and/or username"}"#;
    assert_refused(
        &server,
        msg(14, vec![auth(), user(), token(b"wrong")]),
        "F00",
        "NotAcceptedError",
        not_accepted,
    )
    .await;
    // 5b. Right token with the wrong content type.
    assert_refused(
        &server,
        msg(
            15,
            vec![auth(), user(), oct("auth_token", 0, SECRET.as_bytes())],
        ),
        "F00",
        "NotAcceptedError",
        not_accepted,
    )
    .await;
    // 5c. Non-empty username (the legacy default check wants it empty).
    assert_refused(
        &server,
        msg(
            16,
            vec![
                auth(),
                oct("auth_username", 1, b"bob"),
                token(SECRET.as_bytes()),
            ],
        ),
        "F00",
        "NotAcceptedError",
        not_accepted,
    )
    .await;
    assert_eq!(handler.count(), 0, "no auth attempt reaches the handler");
    assert!(server.endpoint.session(&PeerKey::new("alice")).is_none());
    Ok(())
}

#[tokio::test]
async fn undecodable_frames_before_auth_get_no_reply() -> TestResult {
    let (server, _handler) = legacy_server().await;
    let mut ws = raw_client(server.addr).await;
    send(&mut ws, Bytes::from_static(&[0x06, 0, 0, 0, 1, 0x7f])).await;
    send(
        &mut ws,
        Bytes::from_static(&[0x09, 0, 0, 0, 2, 0x02, 0x01, 0x00]),
    )
    .await;
    send(&mut ws, legacy_auth_frame(3, "", SECRET)).await;
    // The first reply is the auth Response: nothing was sent for the two bad frames.
    let reply = decode(&next_binary(&mut ws).await.expect("auth response"));
    assert_eq!(reply, Frame::new(3, Packet::Response(ProtocolData::new())));
    Ok(())
}

#[tokio::test]
async fn silent_socket_is_closed_after_the_auth_timeout_and_others_keep_working() -> TestResult {
    let config = ServerConfig {
        auth_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (server, handler) = legacy_server_with(config).await;
    let mut good = authed_legacy_client(server.addr, 1).await;

    let mut silent = raw_client(server.addr).await;
    // The silent socket gets no BTP frame, just the close.
    assert_eq!(
        next_binary(&mut silent).await,
        None,
        "silent socket closed without a frame"
    );

    // The authenticated socket is unaffected, before and after.
    for id in [10u32, 11] {
        send(&mut good, Frame::new(id, message(b"x")).to_bytes()).await;
        let reply = decode(&next_binary(&mut good).await.expect("reply"));
        assert_eq!(reply.request_id, id);
    }
    // A socket that stays silent after the timeout does not affect new sockets either.
    let mut late = raw_client(server.addr).await;
    send(&mut late, legacy_auth_frame(2, "", SECRET)).await;
    assert!(matches!(
        decode(&next_binary(&mut late).await.expect("auth response")).packet,
        Packet::Response(_)
    ));
    assert_eq!(handler.ids(), vec![10, 11]);
    Ok(())
}

#[tokio::test]
async fn interledger_rs_client_without_username_is_accepted_when_allowed() -> TestResult {
    let config = ServerConfig {
        require_username: false,
        ..ServerConfig::default()
    };
    let (server, handler) = legacy_server_with(config).await;
    let mut ws = raw_client(server.addr).await;
    // interledger-rs: auth + auth_token only, and it does not wait for the Response before sending.
    send(
        &mut ws,
        msg(
            5,
            vec![oct("auth", 0, b""), oct("auth_token", 1, SECRET.as_bytes())],
        ),
    )
    .await;
    send(&mut ws, Frame::new(6, message(b"fast")).to_bytes()).await;
    assert_eq!(
        decode(&next_binary(&mut ws).await.expect("auth response")),
        Frame::new(5, Packet::Response(ProtocolData::new()))
    );
    assert_eq!(
        decode(&next_binary(&mut ws).await.expect("reply")).request_id,
        6
    );
    assert_eq!(handler.ids(), vec![6]);

    // Still refused with a wrong token.
    let mut bad = raw_client(server.addr).await;
    send(
        &mut bad,
        msg(7, vec![oct("auth", 0, b""), oct("auth_token", 1, b"nope")]),
    )
    .await;
    let reply = decode(&next_binary(&mut bad).await.expect("error"));
    assert!(matches!(reply.packet, Packet::Error(ref e) if e.code_str() == "F00"));
    Ok(())
}
