//! Request/response over a dialer session: matching under concurrency, timeouts, disconnects, the
//! interledger-rs frame-type quirks, stray frames, and listener-side sessions.

mod transport_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use btp::packet::{ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::{
    BtpEndpoint, BtpUrl, ClientOptions, ConnectionState, EndpointConfig, PeerKey, Reply, RpcError,
};
use bytes::Bytes;
use transport_support::*;

fn url(server: &TestServer) -> BtpUrl {
    BtpUrl::parse(&format!(
        "btp+ws://:{}@{}/some/path",
        "s%40cret", server.addr
    ))
    .expect("url")
}

async fn pair() -> (
    TestServer,
    Arc<Recorder>,
    btp::transport::BtpSession,
    Arc<Recorder>,
) {
    let (server, server_handler) = legacy_server().await;
    let client_handler = Recorder::new();
    let session = BtpEndpoint::new(EndpointConfig::default()).connect(
        PeerKey::new("server"),
        &url(&server),
        ClientOptions::default(),
        client_handler.clone(),
    );
    (server, server_handler, session, client_handler)
}

fn ilp_entry(data: &[u8]) -> ProtocolDataEntry {
    ProtocolDataEntry::new(
        ProtocolName::from_static("ilp"),
        ContentType::OCTET_STREAM,
        data.to_vec(),
    )
}

#[tokio::test]
async fn many_concurrent_requests_are_matched_by_id() -> TestResult {
    let (server, server_handler, session, _) = pair().await;
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let payload = i.to_be_bytes();
            let reply = session
                .request(message(&payload), Duration::from_secs(20))
                .await;
            (i, reply)
        }));
    }
    for task in tasks {
        let (i, reply) = task.await?;
        let expected = Reply::Response(message(&i.to_be_bytes()).protocol_data().clone());
        assert_eq!(reply, Ok(expected), "request {i}");
    }
    assert_eq!(server_handler.count(), 500);
    let mut ids = server_handler.ids();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 500, "request ids are unique");
    // And the other direction: the listener-side session sends to the dialer.
    let inbound = server.session("alice");
    let reply = inbound
        .request(message(b"back"), Duration::from_secs(10))
        .await?;
    assert_eq!(
        reply,
        Reply::Response(message(b"back").protocol_data().clone())
    );
    Ok(())
}

#[tokio::test]
async fn request_times_out_when_no_reply_comes() -> TestResult {
    let (_server, server_handler, session, _) = pair().await;
    server_handler.silent.store(true, Ordering::SeqCst);
    let result = session
        .request(message(b"x"), Duration::from_millis(300))
        .await;
    assert_eq!(result, Err(RpcError::Timeout));
    assert_eq!(server_handler.count(), 1, "the request was delivered");
    // A BTP Error is a reply, not an RpcError.
    server_handler.silent.store(false, Ordering::SeqCst);
    assert!(session
        .request(message(b"y"), Duration::from_secs(10))
        .await
        .is_ok());
    Ok(())
}

#[tokio::test]
async fn in_flight_requests_fail_with_disconnected_when_the_socket_drops() -> TestResult {
    let (server, server_handler, session, _) = pair().await;
    *server_handler.delay.lock().expect("lock") = Some(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            session
                .request(message(b"slow"), Duration::from_secs(30))
                .await
        }));
    }
    assert!(
        eventually(|| server_handler.count() == 5).await,
        "requests delivered"
    );
    server.shutdown().await;
    for task in tasks {
        assert_eq!(task.await?, Err(RpcError::Disconnected));
    }
    let mut state = session.state();
    assert_ne!(*state.borrow_and_update(), ConnectionState::Connected);
    Ok(())
}

#[tokio::test]
async fn listener_side_session_without_socket_fails_fast() -> TestResult {
    let endpoint = BtpEndpoint::new(EndpointConfig::default());
    let session = endpoint.register(PeerKey::new("nobody"), Recorder::new());
    let result = session
        .request(message(b"x"), Duration::from_secs(30))
        .await;
    assert_eq!(result, Err(RpcError::NotConnected));
    assert_eq!(*session.state().borrow(), ConnectionState::Disconnected);
    session.close();
    assert_eq!(
        session.request(message(b"x"), Duration::from_secs(1)).await,
        Err(RpcError::Closed)
    );
    Ok(())
}

#[tokio::test]
async fn dialer_session_waits_for_its_socket_then_reports_not_connected() -> TestResult {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let url = BtpUrl::parse(&format!("btp+ws://:x@127.0.0.1:{port}"))?;
    let session = btp::transport::connect(
        PeerKey::new("p"),
        &url,
        ClientOptions::default(),
        Recorder::new(),
    );
    let result = session
        .request(message(b"x"), Duration::from_millis(300))
        .await;
    assert_eq!(result, Err(RpcError::NotConnected));
    assert_eq!(*session.state().borrow(), ConnectionState::Connecting);
    session.close();
    Ok(())
}

/// interledger-rs: Prepares arrive in Response frames, Fulfill/Reject replies in Message frames.
#[tokio::test]
async fn interledger_rs_frame_type_quirks() -> TestResult {
    let (server, handler) = legacy_server().await;
    let mut ws = authed_legacy_client(server.addr, 1).await;

    // An unsolicited Response with an `ilp` entry is a request: handled and answered.
    let prepare = ProtocolData::new().with(ilp_entry(&[12, 1, 2, 3]));
    send(
        &mut ws,
        Frame::new(0xdead_beef, Packet::Response(prepare.clone())).to_bytes(),
    )
    .await;
    let reply = decode(&next_binary(&mut ws).await.expect("reply"));
    assert_eq!(
        reply,
        Frame::new(0xdead_beef, Packet::Response(prepare.clone()))
    );
    assert_eq!(
        handler.seen.lock().expect("lock")[0],
        (0xdead_beef, Packet::Response(prepare))
    );

    // Stray Response and Error without `ilp` are ignored (the next reply is for the next request).
    send(
        &mut ws,
        Frame::new(77, Packet::Response(ProtocolData::new())).to_bytes(),
    )
    .await;
    send(&mut ws, Bytes::from_static(&[0xff, 0, 0, 0, 1, 0])).await;
    send(&mut ws, Frame::new(78, message(b"after")).to_bytes()).await;
    assert_eq!(
        decode(&next_binary(&mut ws).await.expect("reply")).request_id,
        78
    );
    assert_eq!(handler.count(), 2);

    // Our request answered by a Message carrying `ilp` (a Fulfill) completes as a Response.
    let session = server.session("alice");
    let request = tokio::spawn(async move {
        session
            .request(message(b"prepare"), Duration::from_secs(10))
            .await
    });
    let sent = decode(&next_binary(&mut ws).await.expect("our request"));
    let fulfill = ProtocolData::new().with(ilp_entry(&[13, 9]));
    send(
        &mut ws,
        Frame::new(sent.request_id, Packet::Message(fulfill.clone())).to_bytes(),
    )
    .await;
    assert_eq!(request.await?, Ok(Reply::Response(fulfill)));
    assert_eq!(
        handler.count(),
        2,
        "the Message reply did not reach the handler"
    );
    Ok(())
}

#[tokio::test]
async fn btp_error_reply_is_returned_as_reply_error() -> TestResult {
    let (server, _handler) = legacy_server().await;
    let mut ws = authed_legacy_client(server.addr, 1).await;
    let session = server.session("alice");
    let request = tokio::spawn(async move {
        session
            .request(message(b"x"), Duration::from_secs(10))
            .await
    });
    let sent = decode(&next_binary(&mut ws).await.expect("our request"));
    let err = btp::BtpError {
        code: *b"F02",
        name: "TransferNotFoundError".into(),
        triggered_at: btp::Timestamp::now(),
        data: r#"{"message":"nope"}"#.into(),
        protocol_data: ProtocolData::new(),
    };
    send(
        &mut ws,
        Frame::new(sent.request_id, Packet::Error(err.clone())).to_bytes(),
    )
    .await;
    assert_eq!(request.await?, Ok(Reply::Error(err)));
    Ok(())
}
