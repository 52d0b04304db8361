//! Socket lifecycle: duplicate requests over two legacy sockets, reconnect after a server restart, and the
//! election between two bridge nodes that both dial and listen.

mod transport_support;

use std::sync::Arc;
use std::time::Duration;

use btp::packet::{Frame, Packet};
use btp::transport::{
    Authenticator, BtpEndpoint, BtpUrl, ClientOptions, ConnectionState, EndpointConfig, PeerKey,
    Reply, ServerConfig,
};
use tokio::net::TcpListener;
use transport_support::*;

#[tokio::test]
async fn a_new_request_that_reuses_an_id_is_handled() -> TestResult {
    // Request IDs are random u32s, so a peer reuses one now and then; only an identical frame is a duplicate.
    let (server, handler) = legacy_server().await;
    let mut a = authed_legacy_client(server.addr, 1).await;
    for body in [&b"first"[..], b"second", b"first"] {
        send(&mut a, Frame::new(77, message(body)).to_bytes()).await;
    }
    let mut replies = replies_before_marker(&mut a, 78, "reply").await;
    replies.sort_unstable();
    assert_eq!(
        replies,
        vec![77, 77],
        "\"first\" and \"second\" answered; the repeated \"first\" dropped as a duplicate"
    );
    let mut seen = handler.ids();
    seen.sort_unstable();
    assert_eq!(seen, vec![77, 77, 78]);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn duplicate_requests_on_two_legacy_sockets_are_handled_once() -> TestResult {
    let (server, handler) = legacy_server().await;
    let mut a = raw_client(server.addr).await;
    let mut b = raw_client(server.addr).await;
    send(&mut a, legacy_auth_frame(1, "", SECRET)).await;
    send(&mut b, legacy_auth_frame(2, "", SECRET)).await;
    assert!(next_binary(&mut a).await.is_some());
    assert!(next_binary(&mut b).await.is_some());
    let session = server.session("alice");
    assert_eq!(
        session.socket_count(),
        2,
        "legacy sockets (no nonce) are kept, not elected away"
    );

    // Legacy sends every request on every socket with the same ID.
    for id in [100u32, 101, 102] {
        let frame = Frame::new(id, message(&id.to_be_bytes())).to_bytes();
        send(&mut a, frame.clone()).await;
        send(&mut b, frame).await;
    }
    // A marker request on `a` only, sent last: once its reply is in, the duplicates have been processed.
    let replies_a = replies_before_marker(&mut a, 999, "reply on a").await;
    // `b` gets replies only for requests that arrived there first; in total each ID is answered once.
    let replies_b = replies_before_marker(&mut b, 998, "reply on b").await;
    let mut all: Vec<u32> = replies_a.iter().chain(&replies_b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        vec![100, 101, 102],
        "each request answered exactly once"
    );
    let mut seen = handler.ids();
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![100, 101, 102, 998, 999],
        "handler saw each request once"
    );
    Ok(())
}

#[tokio::test]
async fn dialer_reconnects_and_reauthenticates_after_server_restart() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (server, first_handler) = legacy_server_on(listener, ServerConfig::default()).await;
    let url = BtpUrl::parse(&format!("btp+ws://:s%40cret@{addr}"))?;
    let opts = ClientOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let session = btp::transport::connect(PeerKey::new("server"), &url, opts, Recorder::new());
    assert!(session
        .request(message(b"one"), Duration::from_secs(10))
        .await
        .is_ok());

    server.shutdown().await;
    assert!(eventually(|| !session.is_connected()).await, "drop noticed");

    // Restart on the same port with a fresh endpoint (a restarted process).
    let listener = TcpListener::bind(addr).await?;
    let (_server, second_handler) = legacy_server_on(listener, ServerConfig::default()).await;
    let reply = session
        .request(message(b"two"), Duration::from_secs(10))
        .await?;
    assert_eq!(
        reply,
        Reply::Response(message(b"two").protocol_data().clone())
    );
    assert_eq!(first_handler.count(), 1);
    assert_eq!(
        second_handler.count(),
        1,
        "re-authenticated on the new server"
    );
    assert_eq!(*session.state().borrow(), ConnectionState::Connected);
    session.close();
    Ok(())
}

/// Each node accepts the other with the shared secret; the peer key is the other node's name.
fn node_auth(peer: &'static str) -> Arc<dyn Authenticator> {
    Arc::new(move |username: &str, token: &str| {
        (username.is_empty() && token == SECRET).then(|| PeerKey::new(peer))
    })
}

#[tokio::test]
async fn election_leaves_one_socket_and_no_double_delivery() -> TestResult {
    for round in 0..3u64 {
        let ep_a = BtpEndpoint::new(EndpointConfig {
            nonce: 1000 + round,
            ..EndpointConfig::default()
        });
        let ep_b = BtpEndpoint::new(EndpointConfig {
            nonce: 2000 - round,
            ..EndpointConfig::default()
        });
        let handler_a = Recorder::new();
        let handler_b = Recorder::new();
        let listener_a = TcpListener::bind("127.0.0.1:0").await?;
        let listener_b = TcpListener::bind("127.0.0.1:0").await?;
        let url_a = BtpUrl::parse(&format!("btp+ws://:s%40cret@{}", listener_a.local_addr()?))?;
        let url_b = BtpUrl::parse(&format!("btp+ws://:s%40cret@{}", listener_b.local_addr()?))?;
        // Both nodes register the session and dial before listening, so both dials race.
        let opts = ClientOptions::default();
        let session_a = ep_a.connect(PeerKey::new("b"), &url_b, opts.clone(), handler_a.clone());
        let session_b = ep_b.connect(PeerKey::new("a"), &url_a, opts, handler_b.clone());
        let _server_a = start_server_on(
            listener_a,
            ep_a.clone(),
            ServerConfig::default(),
            node_auth("b"),
            handler_a.clone(),
        )
        .await;
        let _server_b = start_server_on(
            listener_b,
            ep_b.clone(),
            ServerConfig::default(),
            node_auth("a"),
            handler_b.clone(),
        )
        .await;
        assert!(session_a
            .request(message(b"hello"), Duration::from_secs(10))
            .await
            .is_ok());
        assert!(
            eventually(|| session_a.socket_count() == 1 && session_b.socket_count() == 1).await,
            "round {round}: one socket each, got {} and {}",
            session_a.socket_count(),
            session_b.socket_count()
        );
        // Give a losing socket time to be closed, then check the count is stable.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            (session_a.socket_count(), session_b.socket_count()),
            (1, 1),
            "round {round}"
        );

        for i in 0..50u32 {
            let (from, to) = if i % 2 == 0 {
                (&session_a, &session_b)
            } else {
                (&session_b, &session_a)
            };
            let reply = from
                .request(message(&i.to_be_bytes()), Duration::from_secs(10))
                .await?;
            assert_eq!(
                reply,
                Reply::Response(message(&i.to_be_bytes()).protocol_data().clone())
            );
            assert!(to.is_connected());
        }
        // Every request was delivered exactly once: 1 hello + 25 each way.
        assert_eq!(handler_b.count(), 26, "round {round}");
        assert_eq!(handler_a.count(), 25, "round {round}");
        let mut ids = handler_b.ids();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 26);
        session_a.close();
        session_b.close();
    }
    Ok(())
}

#[tokio::test]
async fn a_bridge_redial_replaces_its_stale_socket() -> TestResult {
    let (server, _handler) = legacy_server().await;
    // A "bridge" peer sends a nonce; its second socket with the same nonce replaces the first.
    let auth_with_nonce = |id: u32| {
        let f = decode(&legacy_auth_frame(id, "", SECRET));
        let Packet::Message(mut pd) = f.packet else {
            unreachable!()
        };
        pd.push(btp::ProtocolDataEntry::octets(
            btp::ProtocolName::from_static("ilp_bridge_nonce"),
            42u64.to_be_bytes().to_vec(),
        ));
        Frame::new(id, Packet::Message(pd)).to_bytes()
    };
    let mut first = raw_client(server.addr).await;
    send(&mut first, auth_with_nonce(1)).await;
    assert!(next_binary(&mut first).await.is_some());
    let mut second = raw_client(server.addr).await;
    send(&mut second, auth_with_nonce(2)).await;
    assert!(next_binary(&mut second).await.is_some());
    assert_eq!(
        close_code(&mut first).await,
        Some(1000),
        "stale socket closed"
    );
    let session = server.session("alice");
    assert!(eventually(|| session.socket_count() == 1).await);
    send(&mut second, Frame::new(5, message(b"x")).to_bytes()).await;
    assert_eq!(
        decode(&next_binary(&mut second).await.expect("reply")).request_id,
        5
    );
    Ok(())
}
