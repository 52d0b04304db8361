//! The mock interledger-rs node (`ilp_bridge::testing::ilp_node`) against the behaviour docs/modern.md records:
//! BTP auth and frame types on the wire (raw websocket client), ILP-over-HTTP, IL-DCP, CCP, `peer.settle`,
//! balances and settlement, and SE account setup. Every peer here is a raw client or a stub server, so each test
//! sees the node's bytes, not another implementation's reading of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use btp::ccp::{Mode, RouteControlRequest, RouteUpdateRequest};
use btp::ildcp::IldcpRequest;
use btp::ilp_v4::{Address, Fulfill, IlpV4Packet, Prepare};
use btp::packet::{BtpVersion, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use btp::Timestamp;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ilp_bridge::testing::ilp_node::{
    AccountDetails, Direction, IlpNode, NodeConfig, NodeError, RoutingRelation, Via,
};
use ilp_bridge::testing::settle_client::SettlePolicy;
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for anything a test waits for (a hang fails instead of blocking the suite).
const WAIT: Duration = Duration::from_secs(10);

fn fast_config(address: Option<&str>) -> NodeConfig {
    NodeConfig {
        ilp_address: address.map(str::to_owned),
        // No CCP timer: broadcasts only when a test asks, so raw clients see no unsolicited route updates.
        route_broadcast_interval: None,
        settle_policy: SettlePolicy {
            timeout: Duration::from_secs(2),
            retries: 2,
            wait_after_error: Duration::from_millis(20),
            wait_after_connect_error: Duration::from_millis(20),
        },
        ..NodeConfig::default()
    }
}

fn condition_of(preimage: [u8; 32]) -> [u8; 32] {
    sha2::Sha256::digest(preimage).into()
}

fn prepare(
    destination: &str,
    amount: u64,
    condition: [u8; 32],
) -> Result<Prepare, btp::DecodeError> {
    Ok(Prepare {
        amount,
        expires_at: Timestamp::now()
            .checked_add(Duration::from_secs(20))
            .unwrap_or(Timestamp::MAX),
        execution_condition: condition,
        destination: Address::new(destination)?,
        data: Bytes::new(),
    })
}

fn ilp_entry(packet: &IlpV4Packet) -> ProtocolData {
    ProtocolData::new().with(ProtocolDataEntry::octets(
        ProtocolName::from_static("ilp"),
        packet.to_bytes(),
    ))
}

fn auth_message(request_id: u32, token: &str) -> Message {
    let pd = ProtocolData::new()
        .with(ProtocolDataEntry::octets(
            ProtocolName::from_static("auth"),
            Bytes::new(),
        ))
        .with(ProtocolDataEntry::text(
            ProtocolName::from_static("auth_username"),
            "whatever",
        ))
        .with(ProtocolDataEntry::text(
            ProtocolName::from_static("auth_token"),
            token,
        ));
    Message::Binary(Frame::new(request_id, Packet::Message(pd)).to_bytes())
}

/// The next binary websocket message, skipping pings; `None` when the socket closed.
async fn next_binary(
    ws: &mut Ws,
) -> Result<Option<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(None),
            Some(Ok(_)) => continue,
        }
    }
}

/// Opens a raw BTP connection to `username` and authenticates, returning the auth reply bytes.
async fn raw_login(
    node: &IlpNode,
    username: &str,
    token: &str,
) -> Result<(Ws, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(node.btp_url(username)).await?;
    ws.send(auth_message(0x0102_0304, token)).await?;
    let reply = next_binary(&mut ws).await?.ok_or("closed after auth")?;
    Ok((ws, reply))
}

fn ilp_of(frame: &Frame) -> Result<IlpV4Packet, Box<dyn std::error::Error + Send + Sync>> {
    let ilp = frame
        .packet
        .protocol_data()
        .data("ilp")
        .ok_or("no ilp entry")?;
    Ok(IlpV4Packet::decode(ilp)?)
}

/// A node `example.node` with a Child account `bridge` (BTP token `secret`, HTTP token `http-secret`) and a
/// local receiver `bob`.
async fn node_with_bridge() -> Result<IlpNode, NodeError> {
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut bridge = AccountDetails::new("bridge", "XRP", 9);
    bridge.routing_relation = Some(RoutingRelation::Child);
    bridge.ilp_over_btp_incoming_token = Some("secret".to_owned());
    bridge.ilp_over_http_incoming_token = Some("http-secret".to_owned());
    node.add_account(bridge).await?;
    node.add_account(AccountDetails::new("bob", "XRP", 9))
        .await?;
    node.register_preimage("bob", [7; 32])?;
    Ok(node)
}

// ---- BTP server: auth --------------------------------------------------------------------------------------

#[tokio::test]
async fn btp_auth_success_is_an_empty_response_with_the_same_request_id() -> TestResult {
    let node = node_with_bridge().await?;
    let (_ws, reply) = raw_login(&node, "bridge", "secret").await?;
    // Response (1), request ID 01020304, contents of 2 bytes: an empty protocol-data list (`01 00`).
    assert_eq!(
        &reply[..],
        &[0x01, 0x01, 0x02, 0x03, 0x04, 0x02, 0x01, 0x00]
    );
    assert!(node.is_connected("bridge"));
    Ok(())
}

#[tokio::test]
async fn btp_auth_with_a_wrong_token_drops_the_socket_without_an_error() -> TestResult {
    let node = node_with_bridge().await?;
    for (user, token) in [("bridge", "wrong"), ("nobody", "secret"), ("bob", "")] {
        let (mut ws, _) = tokio_tungstenite::connect_async(node.btp_url(user)).await?;
        ws.send(auth_message(1, token)).await?;
        assert_eq!(
            next_binary(&mut ws).await?,
            None,
            "{user}/{token}: no frame, just a close"
        );
    }
    assert!(!node.is_connected("bridge"));
    Ok(())
}

#[tokio::test]
async fn btp_auth_skips_pings_and_requires_a_message() -> TestResult {
    let node = node_with_bridge().await?;
    // Pings before the auth frame are skipped.
    let (mut ws, _) = tokio_tungstenite::connect_async(node.btp_url("bridge")).await?;
    ws.send(Message::Ping(Bytes::from_static(b"hi"))).await?;
    ws.send(auth_message(9, "secret")).await?;
    let reply = next_binary(&mut ws).await?.ok_or("closed")?;
    assert_eq!(Frame::decode(&reply, BtpVersion::Btp2)?.request_id, 9);
    // The token in a Response frame does not authenticate.
    let (mut ws, _) = tokio_tungstenite::connect_async(node.btp_url("bridge")).await?;
    let pd = ProtocolData::new().with(ProtocolDataEntry::text(
        ProtocolName::from_static("auth_token"),
        "secret",
    ));
    ws.send(Message::Binary(
        Frame::new(1, Packet::Response(pd)).to_bytes(),
    ))
    .await?;
    assert_eq!(next_binary(&mut ws).await?, None);
    Ok(())
}

// ---- BTP frames --------------------------------------------------------------------------------------------

#[tokio::test]
async fn node_sends_prepares_in_response_frames_and_answers_in_message_frames() -> TestResult {
    let node = Arc::new(node_with_bridge().await?);
    node.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    let (mut ws, _) = raw_login(&node, "bridge", "secret").await?;

    // The node originates a payment to the bridge: it arrives in a frame of type 1 (Response).
    let preimage = [3u8; 32];
    let p = prepare("example.node.bridge.x", 10, condition_of(preimage))?;
    let payer = {
        let node = Arc::clone(&node);
        let p = p.clone();
        tokio::spawn(async move {
            node.pay("alice", Via::Account("bridge".to_owned()), p)
                .await
        })
    };
    let raw = next_binary(&mut ws).await?.ok_or("closed")?;
    assert_eq!(raw[0], 1, "a Prepare travels in a BTP Response frame");
    let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
    let IlpV4Packet::Prepare(got) = ilp_of(&frame)? else {
        return Err("not a Prepare".into());
    };
    assert_eq!(got.amount, 10);
    assert_eq!(got.destination.as_str(), "example.node.bridge.x");
    // Our Fulfill, in a Message frame with the same request ID, completes the payment.
    let fulfill = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: preimage,
        data: Bytes::from_static(b"ok"),
    });
    ws.send(Message::Binary(
        Frame::new(frame.request_id, Packet::Message(ilp_entry(&fulfill))).to_bytes(),
    ))
    .await?;
    let result = tokio::time::timeout(WAIT, payer).await???;
    assert_eq!(
        result.map_err(|r| r.code_str().to_owned())?.data,
        Bytes::from_static(b"ok")
    );

    // A Fulfill whose preimage does not match the condition becomes F09 at the node.
    let payer = {
        let node = Arc::clone(&node);
        let p = prepare("example.node.bridge.y", 1, condition_of(preimage))?;
        tokio::spawn(async move {
            node.pay("alice", Via::Account("bridge".to_owned()), p)
                .await
        })
    };
    let frame = Frame::decode(
        &next_binary(&mut ws).await?.ok_or("closed")?,
        BtpVersion::Btp2,
    )?;
    let wrong = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: [4; 32],
        data: Bytes::new(),
    });
    ws.send(Message::Binary(
        Frame::new(frame.request_id, Packet::Message(ilp_entry(&wrong))).to_bytes(),
    ))
    .await?;
    let Err(r) = tokio::time::timeout(WAIT, payer).await??? else {
        return Err("a wrong fulfillment was accepted".into());
    };
    assert_eq!(
        (r.code_str(), r.message.as_str()),
        ("F09", "Fulfillment did not match condition")
    );

    // Prepares we send in either frame type are answered in Message (6) frames with their request ID.
    for (request_id, as_response) in [(77u32, false), (78u32, true)] {
        let p = IlpV4Packet::Prepare(prepare("example.node.bob", 1, condition_of([7; 32]))?);
        let packet = if as_response {
            Packet::Response(ilp_entry(&p))
        } else {
            Packet::Message(ilp_entry(&p))
        };
        ws.send(Message::Binary(Frame::new(request_id, packet).to_bytes()))
            .await?;
        let raw = next_binary(&mut ws).await?.ok_or("closed")?;
        assert_eq!(raw[0], 6, "the answer travels in a BTP Message frame");
        let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
        assert_eq!(frame.request_id, request_id);
        let IlpV4Packet::Fulfill(f) = ilp_of(&frame)? else {
            return Err("not a Fulfill".into());
        };
        assert_eq!(f.fulfillment, [7; 32]);
    }
    Ok(())
}

#[tokio::test]
async fn transfer_frames_and_undecodable_frames_get_no_answer() -> TestResult {
    let node = node_with_bridge().await?;
    let (mut ws, _) = raw_login(&node, "bridge", "secret").await?;
    let good = IlpV4Packet::Prepare(prepare("example.node.bob", 1, condition_of([7; 32]))?);
    // A Transfer (7).
    let transfer = Frame::new(
        5,
        Packet::Transfer(btp::packet::Transfer {
            amount: 10,
            protocol_data: ilp_entry(&good),
        }),
    );
    ws.send(Message::Binary(transfer.to_bytes())).await?;
    // A Message with one byte after the envelope (the strict codec refuses it).
    let mut trailing = Frame::new(6, Packet::Message(ilp_entry(&good)))
        .to_bytes()
        .to_vec();
    trailing.push(0);
    ws.send(Message::Binary(Bytes::from(trailing))).await?;
    // A BTP Error with a timestamp of four fraction digits (the strict codec refuses it).
    let mut error = vec![0x02, 0, 0, 0, 8];
    let mut contents = b"F00".to_vec();
    contents.extend([0x01, b'x', 0x14]);
    contents.extend(b"20300102030405.1234Z");
    contents.extend([0x00, 0x01, 0x00]);
    error.push(contents.len() as u8);
    error.extend(contents);
    ws.send(Message::Binary(Bytes::from(error))).await?;
    // Then a well-formed Prepare: the first frame back answers it, so nothing answered the three before.
    ws.send(Message::Binary(
        Frame::new(9, Packet::Message(ilp_entry(&good))).to_bytes(),
    ))
    .await?;
    let raw = next_binary(&mut ws).await?.ok_or("closed")?;
    let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
    assert_eq!(frame.request_id, 9);
    assert!(matches!(ilp_of(&frame)?, IlpV4Packet::Fulfill(_)));
    // The Transfer was not treated as a payment either.
    assert_eq!(node.balance("bridge")?.balance, -1);
    Ok(())
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_disconnected() -> TestResult {
    let mut config = fast_config(Some("example.node"));
    config.ping_interval = Duration::from_millis(100);
    let node = IlpNode::start(config).await?;
    let mut bridge = AccountDetails::new("bridge", "XRP", 9);
    bridge.ilp_over_btp_incoming_token = Some("secret".to_owned());
    node.add_account(bridge).await?;
    let (_ws, _) = raw_login(&node, "bridge", "secret").await?;
    assert!(node.is_connected("bridge"));
    // We never read again, so no pong goes out; after the second ping the node gives up.
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.is_connected("bridge") {
        if tokio::time::Instant::now() > deadline {
            return Err("still connected".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---- BTP client mode ---------------------------------------------------------------------------------------

#[tokio::test]
async fn btp_client_sends_auth_without_username_does_not_wait_and_never_reconnects() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut parent = AccountDetails::new("upstream", "XRP", 9);
    parent.ilp_over_btp_url = Some(format!("btp+ws://127.0.0.1:{port}/btp"));
    parent.ilp_over_btp_outgoing_token = Some("tok".to_owned());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let ws = tokio_tungstenite::accept_async(tcp).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((ws, listener))
    });
    node.add_account(parent).await?;
    let (mut ws, listener) = tokio::time::timeout(WAIT, server).await???;
    let raw = tokio::time::timeout(WAIT, ws.next())
        .await?
        .ok_or("closed")??
        .into_data();
    let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
    let Packet::Message(pd) = &frame.packet else {
        return Err("auth is not a Message".into());
    };
    let names: Vec<(&str, u8, &[u8])> = pd
        .iter()
        .map(|e| (e.name.as_str(), e.content_type.0, &e.data[..]))
        .collect();
    assert_eq!(
        names,
        vec![("auth", 0, &b""[..]), ("auth_token", 1, &b"tok"[..])]
    );
    // Without our answering the auth, the node already uses the connection.
    node.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    let mut p = prepare("example.node.upstream.z", 0, [1; 32])?;
    p.expires_at = Timestamp::now()
        .checked_add(Duration::from_secs(2))
        .ok_or("time")?;
    let send = tokio::spawn(async move {
        let r = node
            .pay("alice", Via::Account("upstream".to_owned()), p)
            .await;
        r.map(|r| (r, node))
    });
    let raw = tokio::time::timeout(WAIT, ws.next())
        .await?
        .ok_or("closed")??
        .into_data();
    assert_eq!(raw[0], 1);
    // We close without answering: the request stays pending until its (shortened) expiry, then R00.
    drop(ws);
    let (result, node) = tokio::time::timeout(WAIT, send).await???;
    assert_eq!(
        result.err().map(|r| r.code_str().to_owned()).as_deref(),
        Some("R00")
    );
    // The node never dials again.
    let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(again.is_err(), "the node dialled again");
    assert!(!node.is_connected("upstream"));
    Ok(())
}

// ---- ILP-over-HTTP -----------------------------------------------------------------------------------------

#[tokio::test]
async fn ilp_over_http_auth_and_answers() -> TestResult {
    let node = node_with_bridge().await?;
    let http = reqwest::Client::new();
    let url = node.ilp_over_http_url("bridge");
    let good =
        IlpV4Packet::Prepare(prepare("example.node.bob", 5, condition_of([7; 32]))?).to_bytes();
    let post = |auth: Option<&str>, body: Bytes| {
        let mut r = http.post(&url).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    // 401: wrong token, a value shorter than 7 characters, no header. The prefix itself is not checked.
    for auth in [Some("Bearer wrong"), Some("Bear"), None] {
        assert_eq!(
            post(auth, good.clone()).await?.status(),
            StatusCode::UNAUTHORIZED,
            "{auth:?}"
        );
    }
    let resp = post(Some("xxxxxxxhttp-secret"), good.clone()).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    // 400: not a Prepare.
    let fulfill = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: [0; 32],
        data: Bytes::new(),
    });
    assert_eq!(
        post(Some("Bearer http-secret"), fulfill.to_bytes())
            .await?
            .status(),
        StatusCode::BAD_REQUEST
    );
    // 413 above 40,000 bytes.
    assert_eq!(
        post(Some("Bearer http-secret"), Bytes::from(vec![0u8; 40_001]))
            .await?
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // 200 with a Fulfill, and 200 with a Reject (no route: F02, empty message, triggeredBy the node).
    let resp = post(Some("Bearer http-secret"), good).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert!(matches!(
        IlpV4Packet::decode(&resp.bytes().await?)?,
        IlpV4Packet::Fulfill(_)
    ));
    let nowhere = IlpV4Packet::Prepare(prepare("g.nowhere", 5, [0; 32])?).to_bytes();
    let resp = post(Some("Bearer http-secret"), nowhere).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let IlpV4Packet::Reject(r) = IlpV4Packet::decode(&resp.bytes().await?)? else {
        return Err("expected a Reject".into());
    };
    assert_eq!((r.code_str(), r.message.as_str()), ("F02", ""));
    assert_eq!(
        r.triggered_by.map(|a| a.to_string()).as_deref(),
        Some("example.node")
    );
    Ok(())
}

/// One request a stub saw: method, path and query, headers, body.
type Seen = (Method, String, HeaderMap, Bytes);

/// A stub HTTP server recording every request and answering with a settable status and body.
#[derive(Clone, Default)]
struct Stub {
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
}

impl Stub {
    async fn start(answer: (u16, &[u8])) -> Result<(Stub, String), std::io::Error> {
        let stub = Stub::default();
        *stub.answer.lock().unwrap_or_else(|e| e.into_inner()) = (answer.0, answer.1.to_vec());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(stub_handler)
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((stub, url))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_answer(&self, status: u16, body: &[u8]) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = (status, body.to_vec());
    }
}

async fn stub_handler(
    State(stub): State<Stub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: AxumBytes,
) -> axum::response::Response {
    stub.seen.lock().unwrap_or_else(|e| e.into_inner()).push((
        method,
        uri.to_string(),
        headers,
        body,
    ));
    let (status, body) = stub
        .answer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response()
}

#[tokio::test]
async fn ilp_over_http_client_maps_statuses() -> TestResult {
    let (stub, url) = Stub::start((404, b"")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut peer = AccountDetails::new("peer", "XRP", 9);
    peer.ilp_over_http_url = Some(format!("{url}/ilp"));
    peer.ilp_over_http_outgoing_token = Some("out-tok".to_owned());
    node.add_account(peer).await?;
    node.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    let pay = || async {
        let p = prepare("example.node.peer.a", 0, condition_of([5; 32]))?;
        let r = node.pay("alice", Via::Routed, p).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(r)
    };
    let code = |r: &ilp_bridge::testing::ilp_node::IlpResult| match r {
        Ok(_) => "fulfilled".to_owned(),
        Err(r) => r.code_str().to_owned(),
    };
    assert_eq!(code(&pay().await?), "F02");
    let seen = stub.seen();
    assert_eq!(seen[0].1, "/ilp");
    assert_eq!(seen[0].2["authorization"], "Bearer out-tok");
    assert_eq!(seen[0].2["content-type"], "application/octet-stream");
    assert!(matches!(
        IlpV4Packet::decode(&seen[0].3)?,
        IlpV4Packet::Prepare(_)
    ));
    stub.set_answer(500, b"");
    assert_eq!(code(&pay().await?), "T01");
    stub.set_answer(200, b"not ilp");
    assert_eq!(code(&pay().await?), "T01");
    let fulfill = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: [5; 32],
        data: Bytes::new(),
    });
    stub.set_answer(200, &fulfill.to_bytes());
    assert_eq!(code(&pay().await?), "fulfilled");
    // Unreachable: T01 with interledger-rs's message.
    let mut gone = AccountDetails::new("gone", "XRP", 9);
    gone.ilp_over_http_url = Some("http://127.0.0.1:9/ilp".to_owned());
    node.add_account(gone).await?;
    let p = prepare("example.node.gone", 0, [0; 32])?;
    let Err(r) = node.pay("alice", Via::Routed, p).await? else {
        return Err("expected a Reject".into());
    };
    assert_eq!(r.code_str(), "T01");
    assert!(
        r.message
            .starts_with("Error sending ILP over HTTP request: "),
        "{}",
        r.message
    );
    Ok(())
}

// ---- IL-DCP ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn ildcp_answer_bytes_and_exact_condition() -> TestResult {
    let node = node_with_bridge().await?;
    let (mut ws, _) = raw_login(&node, "bridge", "secret").await?;
    let request = IlpV4Packet::Prepare(IldcpRequest.to_prepare(Timestamp::now()));
    ws.send(Message::Binary(
        Frame::new(1, Packet::Message(ilp_entry(&request))).to_bytes(),
    ))
    .await?;
    let frame = Frame::decode(
        &next_binary(&mut ws).await?.ok_or("closed")?,
        BtpVersion::Btp2,
    )?;
    let ilp = frame
        .packet
        .protocol_data()
        .data("ilp")
        .ok_or("no ilp")?
        .clone();
    // Fulfill: 32 zero bytes, data = var("example.node.bridge") | 09 | var("XRP").
    let mut expected = vec![0x0d, 0x3a];
    expected.extend([0u8; 32]);
    expected.push(0x19);
    expected.push(0x13);
    expected.extend(b"example.node.bridge");
    expected.extend([0x09, 0x03]);
    expected.extend(b"XRP");
    assert_eq!(ilp.to_vec(), expected);
    // Another condition: not IL-DCP, so the router answers (no route for peer.config).
    let mut wrong = IldcpRequest.to_prepare(Timestamp::now());
    wrong.execution_condition[0] ^= 1;
    ws.send(Message::Binary(
        Frame::new(2, Packet::Message(ilp_entry(&IlpV4Packet::Prepare(wrong)))).to_bytes(),
    ))
    .await?;
    let frame = Frame::decode(
        &next_binary(&mut ws).await?.ok_or("closed")?,
        BtpVersion::Btp2,
    )?;
    let IlpV4Packet::Reject(r) = ilp_of(&frame)? else {
        return Err("expected a Reject".into());
    };
    assert_eq!(r.code_str(), "F02");
    Ok(())
}

#[tokio::test]
async fn a_node_without_an_address_takes_it_from_its_parent() -> TestResult {
    let parent = IlpNode::start(fast_config(Some("example.parent"))).await?;
    let mut child = AccountDetails::new("kid", "XRP", 9);
    child.routing_relation = Some(RoutingRelation::Child);
    child.ilp_over_btp_incoming_token = Some("kid-token".to_owned());
    parent.add_account(child).await?;

    let node = IlpNode::start(fast_config(None)).await?;
    assert_eq!(node.ilp_address().as_str(), "local.host");
    node.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    let mut up = AccountDetails::new("up", "XRP", 9);
    up.routing_relation = Some(RoutingRelation::Parent);
    up.ilp_over_btp_url = Some(format!("btp+{}", parent.btp_url("kid")));
    up.ilp_over_btp_outgoing_token = Some("kid-token".to_owned());
    node.add_account(up).await?;
    assert_eq!(node.ilp_address().as_str(), "example.parent.kid");
    // Children and non-routing accounts were renamed; the parent is the default route.
    let alice = node.account("alice").ok_or("no alice")?;
    assert_eq!(alice.ilp_address.as_str(), "example.parent.kid.alice");
    assert_eq!(node.routes().get("").map(String::as_str), Some("up"));
    // (A route update from the parent may replace `routes:current` meanwhile, as in interledger-rs; the next
    // broadcast puts the local accounts back.)
    node.broadcast_routes().await;
    assert_eq!(
        node.routes()
            .get("example.parent.kid.alice")
            .map(String::as_str),
        Some("alice")
    );
    // The parent saw the IL-DCP request, then a Sync route control request, both from `kid`.
    let seen: Vec<String> = parent
        .packets()
        .iter()
        .filter(|p| p.account == "kid" && p.type_id() == 12 && p.direction == Direction::In)
        .filter_map(|p| p.destination())
        .collect();
    assert_eq!(seen, vec!["peer.config", "peer.route.control"]);
    Ok(())
}

// ---- CCP ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn ccp_control_gets_the_ccp_response_and_an_update() -> TestResult {
    let node = node_with_bridge().await?;
    let (mut ws, _) = raw_login(&node, "bridge", "secret").await?;
    let control = RouteControlRequest {
        mode: Mode::Sync,
        last_known_routing_table_id: [0; 16],
        last_known_epoch: 0,
        features: Vec::new(),
    };
    let p = IlpV4Packet::Prepare(control.to_prepare(Timestamp::now()));
    ws.send(Message::Binary(
        Frame::new(3, Packet::Message(ilp_entry(&p))).to_bytes(),
    ))
    .await?;
    let mut got_response = false;
    let mut got_update = None;
    // The node may also broadcast on its own (its timer's first tick): read until both arrived.
    for _ in 0..4 {
        if got_response && got_update.is_some() {
            break;
        }
        let raw = next_binary(&mut ws).await?.ok_or("closed")?;
        let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
        match ilp_of(&frame)? {
            IlpV4Packet::Fulfill(f) if frame.request_id == 3 => {
                // The CCP response, byte for byte: type 13, 33 bytes, zero fulfillment, empty data.
                let mut expected = vec![0x0d, 0x21];
                expected.extend([0u8; 33]);
                assert_eq!(IlpV4Packet::Fulfill(f).to_bytes().to_vec(), expected);
                got_response = true;
            }
            IlpV4Packet::Prepare(p) => {
                assert_eq!(raw[0], 1);
                got_update = Some((frame.request_id, p));
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert!(got_response);
    let (request_id, p) = got_update.ok_or("no route update")?;
    assert_eq!(p.destination.as_str(), "peer.route.update");
    assert_eq!(p.execution_condition, PEER_PROTOCOL_CONDITION);
    assert_eq!(p.amount, 0);
    let update = RouteUpdateRequest::from_prepare(&p)?;
    assert_eq!(update.speaker.as_str(), "example.node");
    assert_eq!(update.hold_down_time, 30_000);
    assert_eq!(update.from_epoch_index, 0);
    assert_eq!(update.new_routes[0].prefix, "example.node");
    assert!(update.new_routes[0].path.is_empty());
    // The node's expiry shortener capped the 60 s peer-protocol expiry at 30 s.
    let left = p
        .expires_at
        .duration_since(Timestamp::now())
        .ok_or("expired")?;
    assert!(left <= Duration::from_secs(30), "{left:?}");
    let ack = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: PEER_PROTOCOL_FULFILLMENT,
        data: Bytes::new(),
    });
    ws.send(Message::Binary(
        Frame::new(request_id, Packet::Message(ilp_entry(&ack))).to_bytes(),
    ))
    .await?;
    Ok(())
}

#[tokio::test]
async fn ccp_relation_rules() -> TestResult {
    let node = node_with_bridge().await?;
    let mut nr = AccountDetails::new("plain", "XRP", 9);
    nr.ilp_over_http_incoming_token = Some("t".to_owned());
    node.add_account(nr).await?;
    let send = |username: &'static str, token: &'static str, p: Prepare| {
        let url = node.ilp_over_http_url(username);
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("authorization", format!("Bearer {token}"))
                .body(IlpV4Packet::Prepare(p).to_bytes())
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(IlpV4Packet::decode(
                &resp.bytes().await?,
            )?)
        }
    };
    let control = RouteControlRequest {
        mode: Mode::Idle,
        last_known_routing_table_id: [0; 16],
        last_known_epoch: 0,
        features: Vec::new(),
    }
    .to_prepare(Timestamp::now());
    let IlpV4Packet::Reject(r) = send("plain", "t", control.clone()).await? else {
        return Err("expected a Reject".into());
    };
    assert_eq!(
        (r.code_str(), r.message.as_str()),
        ("F00", "We are not configured to send routes to you, sorry")
    );
    // A Child gets routes but may not send them.
    let update = RouteUpdateRequest {
        routing_table_id: [1; 16],
        current_epoch_index: 1,
        from_epoch_index: 0,
        to_epoch_index: 1,
        hold_down_time: 30_000,
        speaker: Address::new("example.node.bridge")?,
        new_routes: Vec::new(),
        withdrawn_routes: Vec::new(),
    }
    .to_prepare(Timestamp::now());
    let IlpV4Packet::Reject(r) = send("bridge", "http-secret", update).await? else {
        return Err("expected a Reject".into());
    };
    assert_eq!(
        (r.code_str(), r.message.as_str()),
        ("F00", "Your route broadcasts are not accepted here")
    );
    // Garbage data from an account that may send routes.
    let mut garbage = control;
    garbage.data = Bytes::from_static(&[9]);
    let IlpV4Packet::Reject(r) = send("bridge", "http-secret", garbage).await? else {
        return Err("expected a Reject".into());
    };
    assert_eq!(
        (r.code_str(), r.message.as_str()),
        ("F00", "Invalid route control request")
    );
    Ok(())
}

#[tokio::test]
async fn two_peered_nodes_learn_each_others_routes_and_pay_across() -> TestResult {
    let a = IlpNode::start(fast_config(Some("example.a"))).await?;
    let b = IlpNode::start(fast_config(Some("example.b"))).await?;
    // a and b are Peers over ILP-over-HTTP.
    let mut b_on_a = AccountDetails::new("peer-b", "XRP", 9);
    b_on_a.routing_relation = Some(RoutingRelation::Peer);
    b_on_a.ilp_over_http_url = Some(b.ilp_over_http_url("peer-a"));
    b_on_a.ilp_over_http_outgoing_token = Some("a-to-b".to_owned());
    b_on_a.ilp_over_http_incoming_token = Some("b-to-a".to_owned());
    a.add_account(b_on_a).await?;
    let mut a_on_b = AccountDetails::new("peer-a", "XRP", 9);
    a_on_b.routing_relation = Some(RoutingRelation::Peer);
    a_on_b.ilp_over_http_url = Some(a.ilp_over_http_url("peer-b"));
    a_on_b.ilp_over_http_outgoing_token = Some("b-to-a".to_owned());
    a_on_b.ilp_over_http_incoming_token = Some("a-to-b".to_owned());
    b.add_account(a_on_b).await?;
    a.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    a.register_preimage("alice", [4; 32])?;
    b.add_account(AccountDetails::new("bob", "XRP", 9)).await?;

    // Before any route exchange, b has no route to example.a.
    let p = prepare("example.a.alice", 10, condition_of([4; 32]))?;
    let Err(r) = b.pay("bob", Via::Routed, p.clone()).await? else {
        return Err("routed without a route".into());
    };
    assert_eq!(r.code_str(), "F02");

    a.broadcast_routes().await;
    assert_eq!(
        b.routes().get("example.a").map(String::as_str),
        Some("peer-a")
    );
    let result = b.pay("bob", Via::Routed, p).await?;
    assert_eq!(
        result.map_err(|r| r.code_str().to_owned())?.fulfillment,
        [4; 32]
    );
    // Balances, each from the peer's view: b owes a 10; on a, the peer b owes 10.
    assert_eq!(b.balance("peer-a")?.balance, 10);
    assert_eq!(a.balance("peer-b")?.balance, -10);
    assert_eq!(b.balance("bob")?.balance, -10);
    // A second broadcast from the same epoch sends nothing new and keeps the route.
    a.broadcast_routes().await;
    assert_eq!(
        b.routes().get("example.a").map(String::as_str),
        Some("peer-a")
    );
    Ok(())
}

// ---- peer.settle -------------------------------------------------------------------------------------------

#[tokio::test]
async fn peer_settle_is_relayed_to_the_engine() -> TestResult {
    let (se, se_url) = Stub::start((201, b"engine-reply")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut peer = AccountDetails::new("peer", "XRP", 9);
    peer.ilp_over_http_incoming_token = Some("t".to_owned());
    peer.settlement_engine_url = Some(format!("{se_url}/kit"));
    let peer = node.add_account(peer).await?;
    let send = |data: &'static [u8], condition: [u8; 32]| {
        let url = node.ilp_over_http_url("peer");
        async move {
            let mut p = prepare("peer.settle", 0, condition)?;
            p.data = Bytes::from_static(data);
            let resp = reqwest::Client::new()
                .post(url)
                .header("authorization", "Bearer t")
                .body(IlpV4Packet::Prepare(p).to_bytes())
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(IlpV4Packet::decode(
                &resp.bytes().await?,
            )?)
        }
    };
    // Any condition is accepted (here the RFC's e3b0…).
    let rfc_condition = condition_of_empty();
    let IlpV4Packet::Fulfill(f) = send(b"{\"hello\":1}", rfc_condition).await? else {
        return Err("expected a Fulfill".into());
    };
    assert_eq!(f.fulfillment, [0; 32]);
    assert_eq!(f.data, Bytes::from_static(b"engine-reply"));
    let seen = se.seen();
    // The account-setup POST came first, then the message.
    let (method, path, headers, body) = seen.last().ok_or("no request")?.clone();
    assert_eq!(method, Method::POST);
    assert_eq!(path, format!("/kit/accounts/{}/messages", peer.id));
    assert_eq!(headers["content-type"], "application/octet-stream");
    uuid::Uuid::parse_str(headers["idempotency-key"].to_str()?)?;
    assert_eq!(body, Bytes::from_static(b"{\"hello\":1}"));

    for (status, code) in [(400u16, "F00"), (500, "T00")] {
        se.set_answer(status, b"no");
        let IlpV4Packet::Reject(r) = send(b"x", [0; 32]).await? else {
            return Err("expected a Reject".into());
        };
        assert_eq!(r.code_str(), code);
        assert_eq!(
            r.triggered_by.map(|a| a.to_string()).as_deref(),
            Some("peer.settle")
        );
        assert!(
            r.message
                .starts_with("Settlement engine rejected request with error code: "),
            "{}",
            r.message
        );
    }
    Ok(())
}

fn condition_of_empty() -> [u8; 32] {
    sha2::Sha256::digest(b"").into()
}

// ---- balances, settlement, credits, SE setup ---------------------------------------------------------------

#[tokio::test]
async fn balance_settle_trigger_refund_and_min_balance() -> TestResult {
    let (se, se_url) = Stub::start((201, b"")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut alice = AccountDetails::new("alice", "XRP", 9);
    alice.min_balance = Some(-300);
    node.add_account(alice).await?;
    let mut bob = AccountDetails::new("bob", "XRP", 9);
    bob.settle_threshold = Some(100);
    bob.settle_to = Some(10);
    bob.settlement_engine_url = Some(se_url.clone());
    let bob = node.add_account(bob).await?;
    node.register_preimage("bob", [2; 32])?;
    let pay = |amount: u64| {
        let p = prepare("example.node.bob", amount, condition_of([2; 32]));
        let node = &node;
        async move {
            let r = node.pay("alice", Via::Routed, p?).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(r)
        }
    };

    // 99: below the threshold.
    pay(99).await?.map_err(|r| r.code_str().to_owned())?;
    assert_eq!(node.balance("bob")?.balance, 99);
    assert_eq!(node.balance("alice")?.balance, -99);
    // 51 more: 150 ≥ 100 → settle 140, balance set to 10 first.
    pay(51).await?.map_err(|r| r.code_str().to_owned())?;
    assert_eq!(node.balance("bob")?.balance, 10);
    let settle = wait_for(|| {
        se.seen()
            .into_iter()
            .find(|s| s.1.ends_with("/settlements"))
    })
    .await?;
    assert_eq!(settle.1, format!("/accounts/{}/settlements", bob.id));
    assert_eq!(
        settle.3,
        Bytes::from_static(br#"{"amount":"140","scale":9}"#)
    );
    assert_eq!(settle.2["content-type"], "application/json");
    uuid::Uuid::parse_str(settle.2["idempotency-key"].to_str()?)?;
    let records = node.settle_requests();
    assert_eq!(
        (records[0].amount, records[0].scale, records[0].status),
        (140, 9, Some(201))
    );

    // The engine refuses the next settlement (4xx): the amount comes back.
    se.set_answer(400, b"no");
    pay(100).await?.map_err(|r| r.code_str().to_owned())?;
    wait_until(|| {
        node.balance("bob")
            .map(|b| b.balance == 110)
            .unwrap_or(false)
    })
    .await?;
    assert_eq!(node.settle_requests().len(), 2, "a 4xx is not retried");

    // alice is at -250 with min_balance -300: 60 more is refused with T04, and nothing changes.
    let Err(r) = pay(60).await? else {
        return Err("min_balance not enforced".into());
    };
    assert_eq!((r.code_str(), r.message.as_str()), ("T04", ""));
    assert_eq!(node.balance("alice")?.balance, -250);
    // A Reject refunds the sender: no preimage for this condition, so the destination has no route out.
    let p = prepare("example.node.bob", 20, [9; 32])?;
    let Err(r) = node.pay("alice", Via::Routed, p).await? else {
        return Err("unexpected Fulfill".into());
    };
    assert_eq!(r.code_str(), "F02");
    assert!(
        r.message.starts_with("No outgoing route for account: "),
        "{}",
        r.message
    );
    assert_eq!(node.balance("alice")?.balance, -250);
    Ok(())
}

async fn wait_for<T>(
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = f() {
            return Ok(t);
        }
        if tokio::time::Instant::now() > deadline {
            return Err("timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) -> TestResult {
    wait_for(|| f().then_some(())).await
}

#[tokio::test]
async fn credits_convert_scales_keep_leftovers_and_refuse_reused_keys() -> TestResult {
    let (_se, se_url) = Stub::start((201, b"")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut peer = AccountDetails::new("peer", "XRP", 9);
    peer.settlement_engine_url = Some(se_url);
    let peer = node.add_account(peer).await?;
    node.add_account(AccountDetails::new("nose", "XRP", 9))
        .await?;
    let http = reqwest::Client::new();
    let credit = |id: String, key: Option<&'static str>, body: &'static str| {
        let mut r = http
            .post(format!(
                "{}/accounts/{id}/settlements",
                node.settlement_api_url()
            ))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        async move {
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, resp.text().await?))
        }
    };
    // The account owes 50 (balance -50).
    node.add_account(AccountDetails::new("alice", "XRP", 9))
        .await?;
    node.register_preimage("alice", [1; 32])?;
    let p = prepare("example.node.alice", 50, condition_of([1; 32]))?;
    node.pay("peer", Via::Routed, p)
        .await?
        .map_err(|r| r.code_str().to_owned())?;
    assert_eq!(node.balance("peer")?.balance, -50);

    let id = peer.id.to_string();
    // 905 at scale 11 → 9 units at scale 9 (5 left over).
    assert_eq!(
        credit(id.clone(), Some("k1"), r#"{"amount":"905","scale":11}"#).await?,
        (201, "RECEIVED".to_owned())
    );
    assert_eq!(node.balance("peer")?.balance, -41);
    // 95 at scale 11: 0 units now (the leftover is loaded before this one is saved).
    assert_eq!(
        credit(id.clone(), Some("k2"), r#"{"amount":"95","scale":11}"#)
            .await?
            .0,
        201
    );
    assert_eq!(node.balance("peer")?.balance, -41);
    // 6 at scale 8 → 60 units, plus the unit the leftovers make: 61, of which 41 fill the debt, 20 go prepaid.
    assert_eq!(
        credit(id.clone(), Some("k3"), r#"{"amount":"6","scale":8}"#)
            .await?
            .0,
        201
    );
    let b = node.balance("peer")?;
    assert_eq!((b.balance, b.prepaid_amount), (0, 20));
    assert_eq!(
        node.credits()
            .iter()
            .map(|c| c.credited)
            .collect::<Vec<_>>(),
        vec![9, 0, 61]
    );
    // A reused key: 409, nothing credited (any reuse, interledger-rs defect (a)).
    assert_eq!(
        credit(id.clone(), Some("k3"), r#"{"amount":"6","scale":8}"#)
            .await?
            .0,
        409
    );
    assert_eq!(node.balance("peer")?.prepaid_amount, 20);
    // 400 without a key, for a non-UUID ID, for a numeric amount; 404 unknown account or no SE.
    assert_eq!(
        credit(id.clone(), None, r#"{"amount":"1","scale":9}"#)
            .await?
            .0,
        400
    );
    assert_eq!(
        credit("peer".to_owned(), Some("k4"), r#"{"amount":"1","scale":9}"#)
            .await?
            .0,
        400
    );
    assert_eq!(
        credit(id, Some("k5"), r#"{"amount":1,"scale":9}"#).await?.0,
        400
    );
    assert_eq!(
        credit(
            uuid::Uuid::new_v4().to_string(),
            Some("k6"),
            r#"{"amount":"1","scale":9}"#
        )
        .await?
        .0,
        404
    );
    let nose = node.account("nose").ok_or("no account")?;
    assert_eq!(
        credit(
            nose.id.to_string(),
            Some("k7"),
            r#"{"amount":"1","scale":9}"#
        )
        .await?
        .0,
        404
    );
    Ok(())
}

#[tokio::test]
async fn engine_account_setup_appends_path_segments_and_retries_transport_errors() -> TestResult {
    let (se, se_url) = Stub::start((201, b"{}")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut kit = AccountDetails::new("kit", "XRP", 9);
    kit.settlement_engine_url = Some(format!("{se_url}/bridge/kit"));
    let kit = node.add_account(kit).await?;
    let seen = se.seen();
    assert_eq!(seen.len(), 1);
    let (method, path, headers, body) = &seen[0];
    assert_eq!(
        (method, path.as_str()),
        (&Method::POST, "/bridge/kit/accounts")
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.get("idempotency-key").is_none(),
        "account setup carries no key"
    );
    let json: serde_json::Value = serde_json::from_slice(body)?;
    assert_eq!(json, serde_json::json!({ "id": kit.id.to_string() }));
    assert_eq!(node.engine_setups()[0].status, Some(201));

    // An HTTP error is not retried and the account stays.
    se.set_answer(500, b"");
    let mut twice = AccountDetails::new("twice", "XRP", 9);
    twice.settlement_engine_url = Some(se_url.clone());
    node.add_account(twice).await?;
    assert_eq!(se.seen().len(), 2);
    assert!(node.account("twice").is_some());

    // A transport error is retried (2 retries in the test policy), then the creation fails; the account stays.
    let mut down = AccountDetails::new("down", "XRP", 9);
    down.settlement_engine_url = Some("http://127.0.0.1:9/se".to_owned());
    let err = node
        .add_account(down)
        .await
        .err()
        .ok_or("setup did not fail")?;
    assert!(matches!(err, NodeError::EngineSetup(_)), "{err}");
    let attempts = node
        .engine_setups()
        .iter()
        .filter(|s| s.url == "http://127.0.0.1:9/se/accounts")
        .count();
    assert_eq!(attempts, 3);
    assert!(node.account("down").is_some());
    Ok(())
}

#[tokio::test]
async fn negative_settle_to_prefunds_after_setup() -> TestResult {
    let (se, se_url) = Stub::start((201, b"")).await?;
    let node = IlpNode::start(fast_config(Some("example.node"))).await?;
    let mut pre = AccountDetails::new("pre", "XRP", 6);
    pre.settle_threshold = Some(0);
    pre.settle_to = Some(-1000);
    pre.settlement_engine_url = Some(se_url);
    node.add_account(pre).await?;
    assert_eq!(node.balance("pre")?.balance, -1000);
    let seen = se.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].3,
        Bytes::from_static(br#"{"amount":"1000","scale":6}"#)
    );
    Ok(())
}

#[tokio::test]
async fn settlement_api_messages_travel_as_peer_settle() -> TestResult {
    let (_se, se_url) = Stub::start((201, b"")).await?;
    let node = node_with_bridge().await?;
    let mut peer = AccountDetails::new("peer", "XRP", 9);
    peer.ilp_over_btp_incoming_token = Some("p".to_owned());
    peer.settlement_engine_url = Some(se_url);
    let peer = node.add_account(peer).await?;
    let (mut ws, _) = raw_login(&node, "peer", "p").await?;
    let url = format!(
        "{}/accounts/{}/messages",
        node.settlement_api_url(),
        peer.id
    );
    let post = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .body("to-peer")
            .send()
            .await?;
        let has_type = resp.headers().get("content-type").is_some();
        Ok::<_, reqwest::Error>((resp.status().as_u16(), has_type, resp.bytes().await?))
    });
    let raw = next_binary(&mut ws).await?.ok_or("closed")?;
    let frame = Frame::decode(&raw, BtpVersion::Btp2)?;
    let IlpV4Packet::Prepare(p) = ilp_of(&frame)? else {
        return Err("expected a Prepare".into());
    };
    assert_eq!(p.destination.as_str(), "peer.settle");
    assert_eq!(p.execution_condition, PEER_PROTOCOL_CONDITION);
    assert_eq!(p.data, Bytes::from_static(b"to-peer"));
    let reply = IlpV4Packet::Fulfill(Fulfill {
        fulfillment: [0; 32],
        data: Bytes::from_static(b"from-peer"),
    });
    ws.send(Message::Binary(
        Frame::new(frame.request_id, Packet::Message(ilp_entry(&reply))).to_bytes(),
    ))
    .await?;
    let (status, has_type, body) = tokio::time::timeout(WAIT, post).await???;
    assert_eq!(
        (status, has_type, &body[..]),
        (201, false, &b"from-peer"[..])
    );
    Ok(())
}

#[tokio::test]
async fn max_packet_amount_and_expired_prepares() -> TestResult {
    let node = node_with_bridge().await?;
    let mut small = AccountDetails::new("small", "XRP", 9);
    small.max_packet_amount = Some(100);
    node.add_account(small).await?;
    let p = prepare("example.node.bob", 101, condition_of([7; 32]))?;
    let Err(r) = node.pay("small", Via::Routed, p).await? else {
        return Err("max_packet_amount not enforced".into());
    };
    assert_eq!(r.code_str(), "F08");
    let mut data = 101u64.to_be_bytes().to_vec();
    data.extend(100u64.to_be_bytes());
    assert_eq!(r.data.to_vec(), data);
    let mut expired = prepare("example.node.bob", 1, condition_of([7; 32]))?;
    expired.expires_at = Timestamp::now()
        .checked_sub(Duration::from_secs(1))
        .ok_or("time")?;
    let Err(r) = node.pay("small", Via::Routed, expired).await? else {
        return Err("expired prepare fulfilled".into());
    };
    assert_eq!(r.code_str(), "R00");
    Ok(())
}
