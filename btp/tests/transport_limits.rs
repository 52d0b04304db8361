//! Listener-side resource limits: the unauthenticated pool (per address, in all, eviction), the separate
//! authenticated pool, the per-peer socket limit (and a legacy peer's redial after a drop), the small
//! pre-auth frame limit, and the delay after failed auth attempts.

mod transport_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use btp::packet::Packet;
use btp::transport::{
    BtpEndpoint, ConnectionLimits, EndpointConfig, ServerConfig, AUTH_PENALTY_BASE,
    MAX_PREAUTH_FRAME_BYTES,
};
use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use transport_support::*;

const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A legacy listener (everyone with [`SECRET`] is "alice") on an endpoint with `limits`.
async fn server_with(limits: ConnectionLimits) -> TestServer {
    let endpoint = BtpEndpoint::new(EndpointConfig {
        limits,
        ..EndpointConfig::default()
    });
    start_server(
        endpoint,
        ServerConfig::default(),
        legacy_auth(),
        Recorder::new(),
    )
    .await
}

fn limits(unauthenticated: usize, per_address: usize) -> ConnectionLimits {
    ConnectionLimits {
        max_unauthenticated: unauthenticated,
        max_unauthenticated_per_address: per_address,
        ..ConnectionLimits::default()
    }
}

/// Whether the server closes `tcp` within 10 s (reads return end of file or an error).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Whether `tcp` is still open after the server has had a moment to act on it.
async fn still_open(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf))
        .await
        .is_err()
}

/// Authenticates a legacy client `ws` and returns the reply (`Packet::Response` when accepted).
async fn auth_reply(ws: &mut RawWs, request_id: u32) -> Option<Packet> {
    send(ws, legacy_auth_frame(request_id, "", SECRET)).await;
    next_binary(ws).await.map(|b| decode(&b).packet)
}

/// The `data` of an Error reply.
fn error_data(reply: Option<Packet>) -> String {
    match reply {
        Some(Packet::Error(e)) => format!("{} {}", e.code_str(), e.data),
        other => format!("not an error: {other:?}"),
    }
}

#[tokio::test]
async fn one_address_may_hold_only_its_share_of_unauthenticated_sockets() -> TestResult {
    let server = server_with(limits(10, 2)).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(server.addr).await?);
    }
    assert!(eventually(|| server.endpoint.unauthenticated_sockets() == 2).await);
    let mut third = TcpStream::connect(server.addr).await?;
    assert!(
        closed_by_server(&mut third).await,
        "a third idle socket from the same address is closed at once"
    );
    for tcp in &mut idle {
        assert!(still_open(tcp).await, "the first two stay");
    }
    // Another host is not affected.
    let mut ws = raw_client_from(OTHER_HOST, server.addr).await;
    assert!(matches!(
        auth_reply(&mut ws, 1).await,
        Some(Packet::Response(_))
    ));
    Ok(())
}

#[tokio::test]
async fn a_full_unauthenticated_pool_evicts_the_flooding_address_not_a_newcomer() -> TestResult {
    let server = server_with(limits(3, 3)).await;
    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.push(TcpStream::connect(server.addr).await?);
    }
    assert!(eventually(|| server.endpoint.unauthenticated_sockets() == 3).await);
    // The pool is full of idle sockets from 127.0.0.1; a peer from another host still gets in.
    let mut ws = raw_client_from(OTHER_HOST, server.addr).await;
    assert!(matches!(
        auth_reply(&mut ws, 1).await,
        Some(Packet::Response(_))
    ));
    assert!(
        closed_by_server(&mut flood[0]).await,
        "the oldest idle socket made room"
    );
    assert!(
        still_open(&mut flood[2]).await,
        "the newest idle one is still open"
    );
    assert!(server.session("alice").is_connected());
    Ok(())
}

#[tokio::test]
async fn the_authenticated_pool_is_separate_and_refuses_when_full() -> TestResult {
    let server = server_with(ConnectionLimits {
        max_authenticated: 1,
        max_unauthenticated: 2,
        ..ConnectionLimits::default()
    })
    .await;
    // Two idle sockets fill the unauthenticated pool; the peer's socket evicts one and authenticates.
    let _idle = [
        TcpStream::connect(server.addr).await?,
        TcpStream::connect(server.addr).await?,
    ];
    assert!(eventually(|| server.endpoint.unauthenticated_sockets() == 2).await);
    let mut first = raw_client_from(OTHER_HOST, server.addr).await;
    assert!(matches!(
        auth_reply(&mut first, 1).await,
        Some(Packet::Response(_))
    ));
    assert_eq!(server.endpoint.authenticated_sockets(), 1);
    let mut second = raw_client_from(OTHER_HOST, server.addr).await;
    assert_eq!(
        error_data(auth_reply(&mut second, 2).await),
        r#"F00 {"message":"too many connections"}"#
    );
    assert_eq!(close_code(&mut second).await, Some(1000));
    Ok(())
}

#[tokio::test]
async fn a_peer_beyond_its_socket_limit_is_refused_but_may_redial_after_a_drop() -> TestResult {
    let server = server_with(ConnectionLimits {
        max_sockets_per_peer: 2,
        ..ConnectionLimits::default()
    })
    .await;
    let mut a = raw_client(server.addr).await;
    let b = raw_client(server.addr).await;
    let mut b = b;
    assert!(matches!(
        auth_reply(&mut a, 1).await,
        Some(Packet::Response(_))
    ));
    assert!(matches!(
        auth_reply(&mut b, 2).await,
        Some(Packet::Response(_))
    ));
    let mut c = raw_client(server.addr).await;
    assert_eq!(
        error_data(auth_reply(&mut c, 3).await),
        r#"F00 {"message":"too many connections for this account"}"#
    );
    assert_eq!(server.session("alice").socket_count(), 2);
    // The peer loses a socket without a close handshake (as after a network drop) and redials at once: the
    // dead socket does not count.
    drop(b);
    let mut redial = raw_client(server.addr).await;
    assert!(
        matches!(auth_reply(&mut redial, 4).await, Some(Packet::Response(_))),
        "the redial after a drop is accepted"
    );
    assert!(eventually(|| server.session("alice").socket_count() == 2).await);
    // Both sockets carry requests.
    for (ws, id) in [(&mut a, 10u32), (&mut redial, 11)] {
        send(ws, btp::packet::Frame::new(id, message(b"hi")).to_bytes()).await;
        assert_eq!(
            decode(&next_binary(ws).await.expect("reply")).request_id,
            id
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_unauthenticated_socket_may_not_send_a_large_frame() -> TestResult {
    let (server, handler) = legacy_server().await;
    let mut ws = raw_client(server.addr).await;
    // A frame just over the pre-auth limit ends the socket before anything else is read from it, so the
    // auth Message behind it is never looked at.
    let big = Bytes::from(vec![0u8; MAX_PREAUTH_FRAME_BYTES + 1]);
    let _ = ws.send(Message::Binary(big)).await;
    let _ = ws
        .send(Message::Binary(legacy_auth_frame(1, "", SECRET)))
        .await;
    assert_eq!(next_binary(&mut ws).await, None, "no auth Response");
    assert_eq!(handler.count(), 0);
    // A small junk frame is ignored as before, and the auth behind it succeeds; after auth, frames up to
    // the BTP limit pass.
    let mut ws = raw_client(server.addr).await;
    send(&mut ws, Bytes::from_static(&[0xff; 100])).await;
    assert!(matches!(
        auth_reply(&mut ws, 2).await,
        Some(Packet::Response(_))
    ));
    let large = message(&vec![7u8; 64 * 1024]);
    send(&mut ws, btp::packet::Frame::new(3, large).to_bytes()).await;
    assert_eq!(
        decode(&next_binary(&mut ws).await.expect("reply")).request_id,
        3
    );
    Ok(())
}

#[tokio::test]
async fn repeated_auth_failures_from_one_address_are_slowed_down() -> TestResult {
    let (server, _handler) = legacy_server().await;
    let wrong = |id| legacy_auth_frame(id, "", "wrong");
    // The first failure is answered without delay; each later one waits longer.
    let mut ws = raw_client(server.addr).await;
    send(&mut ws, wrong(1)).await;
    assert!(error_data(next_binary(&mut ws).await.map(|b| decode(&b).packet)).starts_with("F00"));
    for (attempt, at_least) in [(2u32, AUTH_PENALTY_BASE), (3, AUTH_PENALTY_BASE * 2)] {
        let mut ws = raw_client(server.addr).await;
        let started = std::time::Instant::now();
        send(&mut ws, wrong(attempt)).await;
        let reply = next_binary(&mut ws).await.map(|b| decode(&b).packet);
        assert!(error_data(reply).starts_with("F00"));
        assert!(
            started.elapsed() >= at_least,
            "attempt {attempt} answered after {:?}, before its penalty {at_least:?}",
            started.elapsed()
        );
    }
    // The right secret still gets in, and clears the failures.
    let mut ws = raw_client(server.addr).await;
    assert!(matches!(
        auth_reply(&mut ws, 4).await,
        Some(Packet::Response(_))
    ));
    // Another host was never penalized.
    let mut other = raw_client_from(OTHER_HOST, server.addr).await;
    assert!(matches!(
        auth_reply(&mut other, 5).await,
        Some(Packet::Response(_))
    ));
    Ok(())
}
