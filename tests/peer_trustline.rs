//! Two in-process trustlines wired by a `MemoryLink`: the behaviours of the legacy test suite
//! (docs/legacy-btp.md §17) that apply to a peer, ported to Rust.

use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v1::{IlpV1Error, IlpV1Packet, Payment};
use btp::packet::{
    ContentType, Fulfill, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName, Reject,
};
use btp::transport::Reply;
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{
    Direction, Limit, Transfer, TransferId, TransferRecord, TransferState,
};
use channel_modules::{ChannelModule, ModuleError};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{
    EventReceiver, IncomingRequestHandler, MemoryLink, PeerError, PeerEvent, PeerMessage,
    Trustline, TrustlineOptions,
};
use ilp_bridge::testing::TokioClock;
use serde_json::json;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PREFIX: &str = "test.legacy.";

/// A hold window beyond every expiry used here: legacy puts no bound on how far ahead a transfer may expire,
/// and these tests port its suite (and check timers far ahead). The window itself is tested in
/// tests/peer_prepare_limits.rs.
const LEGACY_HOLD: Duration = Duration::from_secs(50 * 365 * 24 * 3600);

/// `config` with the hold window [`LEGACY_HOLD`].
fn legacy_hold(mut config: PeerConfig) -> PeerConfig {
    config.limits.max_hold = LEGACY_HOLD;
    config
}

struct Pair {
    server: Trustline,
    client: Trustline,
    server_stores: MemoryStores,
    client_stores: MemoryStores,
    #[allow(dead_code)]
    links: (Arc<MemoryLink>, Arc<MemoryLink>),
}

fn options() -> TrustlineOptions {
    TrustlineOptions {
        clock: Arc::new(TokioClock::new()),
        ..TrustlineOptions::default()
    }
}

fn server_config(
    max: &str,
    module: Option<&str>,
) -> Result<PeerConfig, Box<dyn std::error::Error>> {
    let mut o = json!({
        "listener": {"port": 0}, "incomingSecret": "secret", "maxBalance": max,
        "prefix": PREFIX, "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
        "store": true
    });
    if let Some(m) = module {
        // The module reads its options from the whole object (no moduleOptions), as the legacy plugin's do.
        o["module"] = json!(m);
        o["secret"] = json!("claim-secret");
    }
    Ok(legacy_hold(PeerConfig::from_legacy_json("server", &o)?))
}

fn client_config(
    stateful: bool,
    module: Option<&str>,
) -> Result<PeerConfig, Box<dyn std::error::Error>> {
    let mut o = json!({"server": "btp+ws://:secret@127.0.0.1:1", "store": stateful});
    if stateful {
        o["maxBalance"] = json!("1000");
    }
    if let Some(m) = module {
        o["module"] = json!(m);
        o["secret"] = json!("claim-secret");
    }
    Ok(legacy_hold(PeerConfig::from_legacy_json("client", &o)?))
}

fn module(name: Option<&str>) -> Result<Option<Arc<dyn ChannelModule>>, ModuleError> {
    name.map(|n| {
        channel_modules::build_module(n, &json!({"secret": "claim-secret", "maxUnsecured": "100"}))
    })
    .transpose()
}

async fn pair_with(
    max: &str,
    client_stateful: bool,
    module_name: Option<&str>,
) -> Result<Pair, Box<dyn std::error::Error>> {
    let sc = server_config(max, module_name)?;
    let cc = client_config(client_stateful, module_name)?;
    let server_stores = MemoryStores::new(sc.max_balance, sc.min_balance);
    let client_stores = MemoryStores::new(cc.max_balance, cc.min_balance);
    let server = Trustline::new(
        &sc,
        Arc::new(server_stores.clone()),
        module(module_name)?,
        options(),
    )?;
    let client = Trustline::new(
        &cc,
        Arc::new(client_stores.clone()),
        module(module_name)?,
        options(),
    )?;
    let links = MemoryLink::pair(&server, &client);
    server.connect().await?;
    client.connect().await?;
    Ok(Pair {
        server,
        client,
        server_stores,
        client_stores,
        links,
    })
}

async fn pair() -> Result<Pair, Box<dyn std::error::Error>> {
    pair_with("1000", true, None).await
}

fn condition(fulfillment: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(fulfillment).into()
}

fn payment(account: &str, amount: u64) -> Vec<u8> {
    IlpV1Packet::Payment(Payment {
        amount,
        account: account.to_owned(),
        data: Bytes::new(),
    })
    .to_bytes()
    .to_vec()
}

fn transfer(n: u8, amount: u64, fulfillment: &[u8; 32], expires_in: Duration) -> Transfer {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(amount),
        execution_condition: condition(fulfillment),
        expires_at_ms: now + expires_in.as_millis() as i64,
        ilp: payment("test.legacy.server.bob", amount),
        custom: None,
    }
}

async fn next_event(
    rx: &mut EventReceiver,
    name: &str,
) -> Result<PeerEvent, Box<dyn std::error::Error>> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await??;
        if e.name() == name {
            return Ok(e);
        }
    }
}

fn error_of(reply: Option<Reply>) -> Result<(String, String, String), Box<dyn std::error::Error>> {
    match reply {
        Some(Reply::Error(e)) => {
            let data: serde_json::Value = serde_json::from_str(&e.data)?;
            let msg = data["message"].as_str().unwrap_or_default().to_owned();
            Ok((e.code_str().to_owned(), e.name.clone(), msg))
        }
        other => Err(format!("expected an Error, got {other:?}").into()),
    }
}

/// A Fulfill of transfer `id` with `fulfillment`.
fn fulfill_packet(id: [u8; 16], fulfillment: [u8; 32]) -> Packet {
    Packet::Fulfill(Fulfill {
        transfer_id: id,
        fulfillment,
        protocol_data: ProtocolData::new(),
    })
}

/// A Reject of transfer `id`, carrying `error` as its `ilp` entry (no protocol data without one).
fn reject_packet(id: [u8; 16], error: Option<IlpV1Error>) -> Packet {
    let mut protocol_data = ProtocolData::new();
    if let Some(error) = error {
        protocol_data = protocol_data.with(ProtocolDataEntry::octets(
            ProtocolName::from_static("ilp"),
            IlpV1Packet::Error(error).to_bytes(),
        ));
    }
    Packet::Reject(Reject {
        transfer_id: id,
        protocol_data,
    })
}

/// A Message with the single JSON entry `name`.
fn json_message(name: &'static str, json: &'static str) -> Packet {
    Packet::Message(ProtocolData::new().with(ProtocolDataEntry::json(
        ProtocolName::from_static(name),
        json,
    )))
}

/// The entry `name` of `tl`'s Response to a side-protocol Message `name` holding `data`.
async fn side_response(
    tl: &Trustline,
    name: &'static str,
    data: &'static [u8],
) -> Result<ProtocolDataEntry, Box<dyn std::error::Error>> {
    let reply = tl
        .handle_packet(Packet::Message(ProtocolData::new().with(
            ProtocolDataEntry::octets(ProtocolName::from_static(name), Bytes::from_static(data)),
        )))
        .await;
    let Some(Reply::Response(pd)) = reply else {
        return Err(format!("unexpected {reply:?}").into());
    };
    Ok(pd.get(name).ok_or(format!("no {name}"))?.clone())
}

/// `tl`'s record of transfer `id`, asserted to have ended cancelled.
async fn cancelled_record(
    tl: &Trustline,
    id: &TransferId,
) -> Result<TransferRecord, Box<dyn std::error::Error>> {
    let rec = tl.log().get(id).await?.ok_or("missing")?;
    assert!(
        matches!(rec.state, TransferState::Cancelled { .. }),
        "{rec:?}"
    );
    Ok(rec)
}

fn prepare_packet(t: &Transfer) -> Result<Packet, Box<dyn std::error::Error>> {
    Ok(Packet::Prepare(Prepare {
        transfer_id: t.id.0,
        amount: t.amount.0,
        execution_condition: t.execution_condition,
        expires_at: Timestamp::from_unix_millis(t.expires_at_ms).ok_or("time")?,
        protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
            ProtocolName::from_static("ilp"),
            Bytes::from(t.ilp.clone()),
        )),
    }))
}

#[tokio::test]
async fn addresses_info_balance_and_limit() -> TestResult {
    let p = pair().await?;
    assert_eq!(p.server.get_account()?, "test.legacy.server");
    assert_eq!(p.server.get_peer_account()?, "test.legacy.client");
    // Two stateful peers both call themselves "server" (legacy).
    assert_eq!(p.client.get_account()?, "test.legacy.server");
    let info = p.client.get_info().ok_or("no info")?;
    assert_eq!(info["prefix"], "test.legacy.");
    assert_eq!(info["currencyScale"], 9);
    assert_eq!(p.client.get_peer_balance().await?, "-0");
    assert_eq!(p.client.get_limit().await?, "-1000");
    assert_eq!(p.server.get_limit().await?, "-1000");
    assert_eq!(p.server.get_balance().await?, "0");

    // Byte-exact side replies.
    let e = side_response(&p.server, "limit", &[0]).await?;
    assert_eq!(e.content_type, ContentType::APPLICATION_JSON);
    assert_eq!(&e.data[..], b"\"1000\"");
    let e = side_response(&p.server, "info", &[0]).await?;
    assert_eq!(e.content_type, ContentType::TEXT_PLAIN_UTF8);
    assert_eq!(&e.data[..], b"test.legacy.server");
    Ok(())
}

#[tokio::test]
async fn stateless_client_addresses_and_infinite_limit() -> TestResult {
    let p = pair_with("1000", false, None).await?;
    assert_eq!(p.client.get_account()?, "test.legacy.client");
    assert_eq!(p.client.get_peer_account()?, "test.legacy.server");
    assert_eq!(p.server.get_limit().await?, "-Infinity");
    assert_eq!(p.client.get_balance().await?, "-0");
    Ok(())
}

#[tokio::test]
async fn transfer_fulfilled_balances_and_events() -> TestResult {
    let p = pair().await?;
    let mut client_events = p.client.subscribe();
    let mut server_events = p.server.subscribe();
    let f = [7u8; 32];
    let t = transfer(1, 10, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    next_event(&mut client_events, "outgoing_prepare").await?;
    match next_event(&mut server_events, "incoming_prepare").await? {
        PeerEvent::IncomingPrepare(got) => assert_eq!(got, t),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    p.server.fulfill_condition(t.id, f, None).await?;
    next_event(&mut client_events, "outgoing_fulfill").await?;
    next_event(&mut server_events, "incoming_fulfill").await?;
    assert_eq!(p.client.get_balance().await?, "-10");
    assert_eq!(p.server.get_balance().await?, "10");
    assert_eq!(p.client.get_peer_balance().await?, "-10");
    assert_eq!(p.server.get_peer_balance().await?, "10");

    // A repeated Fulfill is applied once and succeeds (legacy bug fixed).
    let again = p.client.handle_packet(fulfill_packet(t.id.0, f)).await;
    assert!(matches!(again, Some(Reply::Response(_))), "{again:?}");
    assert_eq!(p.client.local_balance(), LedgerBalance(-10));
    // A fulfilled transfer cannot be rejected.
    let reject = p
        .client
        .handle_packet(reject_packet(t.id.0, Some(p.server.expiry_error())))
        .await;
    assert_eq!(error_of(reject)?.0, "F06");
    Ok(())
}

#[tokio::test]
async fn concurrent_transfers_sum_exactly() -> TestResult {
    let p = pair().await?;
    let mut handles = Vec::new();
    for n in 1..=10u8 {
        let (c, s) = (p.client.clone(), p.server.clone());
        handles.push(tokio::spawn(async move {
            let f = [n; 32];
            let t = transfer(n, 1, &f, Duration::from_secs(10));
            c.send_transfer(t.clone()).await?;
            s.fulfill_condition(t.id, f, None).await
        }));
    }
    for h in handles {
        h.await??;
    }
    assert_eq!(p.client.get_balance().await?, "-10");
    assert_eq!(p.server.get_balance().await?, "10");
    // Finished transfers leave the expiry schedule on both sides.
    assert_eq!(p.client.armed_expiries(), 0);
    assert_eq!(p.server.armed_expiries(), 0);
    Ok(())
}

#[tokio::test]
async fn incoming_over_limit_is_refused_without_event() -> TestResult {
    let p = pair_with("100", true, None).await?;
    let mut server_events = p.server.subscribe();
    let f = [1u8; 32];
    let t = transfer(2, 101, &f, Duration::from_secs(10));
    let err = p.client.send_transfer(t.clone()).await;
    match err {
        Err(PeerError::Remote(e)) => {
            assert_eq!(e.code_str(), "F00");
            assert_eq!(e.name, "NotAcceptedError");
            assert!(
                e.data.contains(
                    "balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: "
                ),
                "{}",
                e.data
            );
        }
        other => return Err(format!("expected a remote error, got {other:?}").into()),
    }
    assert!(server_events.try_recv().is_err(), "no incoming_prepare");
    // Nothing stays reserved on either side; an identical retry is checked again (legacy bug fixed).
    assert_eq!(
        p.client.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    assert!(p.server.handle_packet(prepare_packet(&t)?).await.is_some());
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    // Exactly at the limit is allowed.
    let t = transfer(3, 100, &f, Duration::from_secs(10));
    p.client.send_transfer(t).await?;
    Ok(())
}

#[tokio::test]
async fn fulfill_checks_in_legacy_order() -> TestResult {
    let p = pair().await?;
    let f = [9u8; 32];
    let t = transfer(4, 5, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    // Unknown ID.
    let (code, name, msg) = error_of(p.client.handle_packet(fulfill_packet([0xee; 16], f)).await)?;
    assert_eq!(
        (code.as_str(), name.as_str()),
        ("F02", "TransferNotFoundError")
    );
    assert!(msg.starts_with("No transfer found with ID "), "{msg}");
    // Fulfilling a transfer that is incoming for us.
    let (code, name, msg) = error_of(p.server.handle_packet(fulfill_packet(t.id.0, f)).await)?;
    assert_eq!((code.as_str(), name.as_str()), ("F00", "Error"));
    assert_eq!(msg, format!("{} is incoming; refusing to fulfill.", t.id));
    // Wrong preimage.
    let (code, name, msg) = error_of(
        p.client
            .handle_packet(fulfill_packet(t.id.0, [8u8; 32]))
            .await,
    )?;
    assert_eq!(
        (code.as_str(), name.as_str(), msg.as_str()),
        (
            "F00",
            "NotAcceptedError",
            "Fulfillment does not match the condition"
        )
    );
    // The payee's own API refuses the wrong preimage too, before sending anything.
    match p.server.fulfill_condition(t.id, [8u8; 32], None).await {
        Err(PeerError::Refused(e)) => assert_eq!(e.name, "NotAcceptedError"),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    // The sender cannot fulfill its own transfer.
    match p.client.fulfill_condition(t.id, f, None).await {
        Err(PeerError::Refused(e)) => {
            assert_eq!(e.message, format!("{} is outgoing; cannot fulfill", t.id))
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    // Rejected, then fulfilled: F05.
    p.server
        .reject_incoming_transfer(t.id, p.server.expiry_error())
        .await?;
    let (code, name, _) = error_of(p.client.handle_packet(fulfill_packet(t.id.0, f)).await)?;
    assert_eq!(
        (code.as_str(), name.as_str()),
        ("F05", "AlreadyRolledBackError")
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn fulfill_after_expiry_by_local_clock_is_refused() -> TestResult {
    let p = pair().await?;
    let f = [3u8; 32];
    let t = transfer(5, 5, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    // Stop the client's timer from firing first: cut the link so its expiry cannot reach the server, and
    // fulfill by hand after the local clock passed expiry. The client must refuse with F05.
    let transfers = p.client.log().prepared().await?;
    assert_eq!(transfers.len(), 1);
    p.links.0.set_up(false);
    p.links.1.set_up(false);
    tokio::time::advance(Duration::from_secs(11)).await;
    tokio::task::yield_now().await;
    let reply = p.client.handle_packet(fulfill_packet(t.id.0, f)).await;
    assert_eq!(error_of(reply)?.0, "F05");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn expiry_rejects_both_ways_with_r00() -> TestResult {
    let p = pair().await?;
    let mut client_events = p.client.subscribe();
    let mut server_events = p.server.subscribe();
    let f = [4u8; 32];
    let t = transfer(6, 5, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    // The client's own timer cancels it (outgoing_cancel), or the server's R00 Reject arrives first.
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(60), client_events.recv()).await?? {
            PeerEvent::OutgoingReject { reason, .. } => break Some(reason),
            PeerEvent::OutgoingCancel(_) => break None,
            _ => {}
        }
    };
    next_event(&mut server_events, "incoming_cancel").await?;
    // Whichever timer fired first, both sides end cancelled and the R00 has the legacy shape.
    for tl in [&p.client, &p.server] {
        cancelled_record(tl, &t.id).await?;
        assert_eq!(tl.local_balance(), LedgerBalance::ZERO);
    }
    if let Some(reason) = reason {
        assert_eq!(reason.code, "R00");
        assert_eq!(reason.name, "Transfer Timed Out");
        assert_eq!(reason.triggered_by, "test.legacy.server");
        assert_eq!(reason.forwarded_by, None);
        assert_eq!(&reason.ilp_error.data[..], b"expired");
        assert_eq!(reason.additional_info, json!("not JSON"));
    }
    // Fulfilled transfers never expire.
    let t2 = transfer(7, 5, &f, Duration::from_secs(3600));
    p.client.send_transfer(t2.clone()).await?;
    p.server.fulfill_condition(t2.id, f, None).await?;
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(p.client.local_balance(), LedgerBalance(-5));
    assert_eq!(p.server.local_balance(), LedgerBalance(5));
    Ok(())
}

#[test]
fn expiry_reject_is_byte_exact_with_the_captured_vector() -> TestResult {
    // docs/legacy-btp.md §2 "Expiry Reject" ilp entry.
    let captured = hex::decode(concat!(
        "0848",
        "523030",
        "12",
        "5472616e736665722054696d6564204f7574",
        "12",
        "746573742e6c65676163792e736572766572",
        "0100",
        "13",
        "32303236313132313135333032352e3831335a",
        "07",
        "65787069726564",
        "00"
    ))?;
    let parsed = IlpV1Packet::decode(&Bytes::from(captured.clone()))?;
    let IlpV1Packet::Error(e) = parsed else {
        return Err("not an error".into());
    };
    let ours = IlpV1Error {
        code: *b"R00",
        name: "Transfer Timed Out".to_owned(),
        triggered_by: "test.legacy.server".to_owned(),
        forwarded_by: vec![],
        triggered_at: e.triggered_at,
        data: Bytes::from_static(b"expired"),
    };
    assert_eq!(IlpV1Packet::Error(ours).to_bytes().to_vec(), captured);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn already_expired_prepare_is_accepted_then_rejected() -> TestResult {
    let p = pair().await?;
    let mut server_events = p.server.subscribe();
    let f = [5u8; 32];
    let mut t = transfer(8, 5, &f, Duration::from_secs(0));
    t.expires_at_ms -= 1000;
    let reply = p.server.handle_packet(prepare_packet(&t)?).await;
    assert!(matches!(reply, Some(Reply::Response(_))), "{reply:?}");
    next_event(&mut server_events, "incoming_cancel").await?;
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

/// One expiry task serves a trustline: a transfer that expires before the one it sleeps for still expires on
/// time, and the later one is not disturbed.
#[tokio::test(start_paused = true)]
async fn an_earlier_expiry_armed_later_fires_on_time() -> TestResult {
    let p = pair().await?;
    let (f1, f2) = ([11u8; 32], [12u8; 32]);
    let far = transfer(11, 5, &f1, Duration::from_secs(3600));
    let near = transfer(12, 5, &f2, Duration::from_secs(2));
    p.client.send_transfer(far.clone()).await?;
    // Let both sides' expiry tasks go to sleep until the far deadline.
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.client.send_transfer(near.clone()).await?;
    assert_eq!(p.client.armed_expiries(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancelled_record(&p.server, &near.id).await?;
    cancelled_record(&p.client, &near.id).await?;
    for tl in [&p.client, &p.server] {
        let rec = tl.log().get(&far.id).await?.ok_or("missing")?;
        assert_eq!(rec.state, TransferState::Prepared);
        assert_eq!(tl.armed_expiries(), 1);
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    cancelled_record(&p.server, &far.id).await?;
    assert_eq!(p.server.armed_expiries(), 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn expiry_beyond_24_8_days_does_not_fire_early() -> TestResult {
    let p = pair().await?;
    let f = [6u8; 32];
    let t = transfer(9, 5, &f, Duration::from_secs(30 * 24 * 3600));
    p.client.send_transfer(t.clone()).await?;
    tokio::time::sleep(Duration::from_secs(25 * 24 * 3600)).await;
    let rec = p.server.log().get(&t.id).await?.ok_or("missing")?;
    assert_eq!(rec.state, TransferState::Prepared);
    tokio::time::sleep(Duration::from_secs(6 * 24 * 3600)).await;
    cancelled_record(&p.server, &t.id).await?;
    Ok(())
}

#[tokio::test]
async fn reject_maps_to_rejection_message_and_bad_rejects_are_refused() -> TestResult {
    let p = pair().await?;
    let mut client_events = p.client.subscribe();
    let f = [2u8; 32];
    let t = transfer(10, 5, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    // Without an ILP error: F00 TypeError, nothing changes.
    let reply = p.client.handle_packet(reject_packet(t.id.0, None)).await;
    let (code, name, _) = error_of(reply)?;
    assert_eq!((code.as_str(), name.as_str()), ("F00", "TypeError"));
    assert_eq!(
        p.client.log().get(&t.id).await?.map(|r| r.state),
        Some(TransferState::Prepared)
    );
    // The sender cannot reject.
    let reply = p
        .server
        .handle_packet(reject_packet(t.id.0, Some(p.client.expiry_error())))
        .await;
    let (code, _, msg) = error_of(reply)?;
    assert_eq!(code, "F00");
    assert_eq!(msg, format!("{} is incoming; peer cannot reject.", t.id));
    // A proper reject.
    let reason = IlpV1Error {
        code: *b"F99",
        name: "Application Error".to_owned(),
        triggered_by: "test.legacy.server.bob".to_owned(),
        forwarded_by: vec!["a.connector".to_owned(), "test.legacy.server".to_owned()],
        triggered_at: Timestamp::now(),
        data: Bytes::from_static(b"{\"foo\":1}"),
    };
    p.server.reject_incoming_transfer(t.id, reason).await?;
    match next_event(&mut client_events, "outgoing_reject").await? {
        PeerEvent::OutgoingReject { reason, .. } => {
            assert_eq!(reason.code, "F99");
            assert_eq!(reason.forwarded_by.as_deref(), Some("test.legacy.server"));
            assert_eq!(reason.additional_info, json!({"foo": 1}));
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    assert_eq!(
        p.client.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn duplicate_ids() -> TestResult {
    let p = pair().await?;
    let f = [1u8; 32];
    let t = transfer(11, 5, &f, Duration::from_secs(10));
    assert!(matches!(
        p.server.handle_packet(prepare_packet(&t)?).await,
        Some(Reply::Response(_))
    ));
    // Same transfer again: applied once.
    assert!(matches!(
        p.server.handle_packet(prepare_packet(&t)?).await,
        Some(Reply::Response(_))
    ));
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum(5)
    );
    // Same ID, other contents: F04.
    let mut other = t.clone();
    other.amount = LedgerAmount(6);
    let (code, name, _) = error_of(p.server.handle_packet(prepare_packet(&other)?).await)?;
    assert_eq!((code.as_str(), name.as_str()), ("F04", "DuplicateIdError"));
    // Zero amount.
    let mut zero = transfer(12, 5, &f, Duration::from_secs(10));
    zero.amount = LedgerAmount(0);
    let (code, name, msg) = error_of(p.server.handle_packet(prepare_packet(&zero)?).await)?;
    assert_eq!(
        (code.as_str(), name.as_str(), msg.as_str()),
        ("F01", "InvalidFieldsError", "amount (0) must be positive")
    );
    Ok(())
}

struct Echo;

#[async_trait::async_trait]
impl IncomingRequestHandler for Echo {
    async fn handle_request(&self, request: PeerMessage) -> Result<PeerMessage, PeerError> {
        if request
            .custom
            .as_ref()
            .and_then(|c| c.get("fail"))
            .is_some()
        {
            return Err(PeerError::handler("handler failed"));
        }
        Ok(PeerMessage {
            ilp: request.ilp,
            custom: Some(json!({"echo": request.custom})),
        })
    }
}

#[tokio::test]
async fn requests_both_ways() -> TestResult {
    let p = pair().await?;
    // No handler registered.
    match p
        .client
        .send_request(PeerMessage {
            ilp: None,
            custom: Some(json!({"a": 1})),
        })
        .await
    {
        Err(PeerError::Remote(e)) => {
            assert_eq!((e.code_str(), e.name.as_str()), ("F00", "NotAcceptedError"));
            assert!(e.data.contains("no request handler registered"));
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    p.server.register_request_handler(Arc::new(Echo));
    p.client.register_request_handler(Arc::new(Echo));
    let r = p
        .client
        .send_request(PeerMessage {
            ilp: Some(Bytes::from_static(b"\x01\x02")),
            custom: Some(json!({"a": 1})),
        })
        .await?;
    assert_eq!(r.custom, Some(json!({"echo": {"a": 1}})));
    assert_eq!(r.ilp.as_deref(), Some(&b"\x01\x02"[..]));
    let r = p
        .server
        .send_request(PeerMessage {
            ilp: None,
            custom: Some(json!({"b": 2})),
        })
        .await?;
    assert_eq!(r.custom, Some(json!({"echo": {"b": 2}})));
    // A failing handler: Response with an ILP v1 Error F00 Bad Request.
    let r = p
        .client
        .send_request(PeerMessage {
            ilp: None,
            custom: Some(json!({"fail": true})),
        })
        .await?;
    let ilp = r.ilp.ok_or("no ilp")?;
    match IlpV1Packet::decode(&ilp)? {
        IlpV1Packet::Error(e) => {
            assert_eq!(e.code_str(), "F00");
            assert_eq!(e.name, "Bad Request");
            assert_eq!(e.triggered_by, "test.legacy.server");
            assert!(e.forwarded_by.is_empty());
            assert_eq!(&e.data[..], br#"{"message":"handler failed"}"#);
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    // Unknown side protocol without a module: F00 TypeError.
    let reply = p.server.handle_packet(json_message("whatever", "[]")).await;
    let (code, name, _) = error_of(reply)?;
    assert_eq!((code.as_str(), name.as_str()), ("F00", "TypeError"));
    Ok(())
}

#[tokio::test]
async fn claims_flow_through_the_modules() -> TestResult {
    let p = pair_with("1000", true, Some("claim-test")).await?;
    for n in 1..=3u8 {
        let f = [n; 32];
        let t = transfer(20 + n, 10, &f, Duration::from_secs(10));
        p.client.send_transfer(t.clone()).await?;
        p.server.fulfill_condition(t.id, f, None).await?;
    }
    // The server (payee) kept the client's best claim: cumulative 30, signed.
    let best = p
        .server_stores
        .max_value_tracker("incoming_claim")?
        .get_max()
        .await?;
    assert_eq!(best.value, num_bigint::BigUint::from(30u32));
    assert!(best.data.get("signature").is_some());
    // Unknown module RPC: legacy message.
    let reply = p.server.handle_packet(json_message("nope", "[]")).await;
    let (code, _, msg) = error_of(reply)?;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("F00", "Unrecognized side protocol: nope")
    );
    let _ = &p.client_stores;
    Ok(())
}

#[tokio::test]
async fn module_refusal_cancels_the_prepare() -> TestResult {
    // claim-test with maxUnsecured 100: a prepare that leaves more than 100 unsecured is refused.
    let p = pair_with("1000", true, Some("claim-test")).await?;
    let mut server_events = p.server.subscribe();
    let f = [1u8; 32];
    let t = transfer(30, 101, &f, Duration::from_secs(10));
    match p.client.send_transfer(t.clone()).await {
        Err(PeerError::Remote(e)) => {
            assert_eq!((e.code_str(), e.name.as_str()), ("F00", "NotAcceptedError"))
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    assert!(server_events.try_recv().is_err());
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    cancelled_record(&p.server, &t.id).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn prepared_transfers_survive_a_restart_and_expire() -> TestResult {
    let p = pair().await?;
    let f = [1u8; 32];
    let t = transfer(40, 5, &f, Duration::from_secs(10));
    p.client.send_transfer(t.clone()).await?;
    // "Restart" the server: drop it and build a new one on the same stores.
    let sc = server_config("1000", None)?;
    drop(p.server);
    let server = Trustline::new(&sc, Arc::new(p.server_stores.clone()), None, options())?;
    // links.1 is the client's link to the server; links.0 the server's link to the client.
    p.links.1.retarget(&server);
    server.set_link(p.links.0.clone());
    server.connect().await?;
    assert_eq!(server.start().await?, 1);
    let mut events = server.subscribe();
    // The client's timer and the restarted server's timer both fire; both end cancelled.
    next_event(&mut events, "incoming_cancel").await.ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rec = cancelled_record(&server, &t.id).await?;
    assert_eq!(rec.direction, Direction::Incoming);
    assert_eq!(
        server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    assert_eq!(
        p.client.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    let _ = Limit::Unbounded;
    Ok(())
}

#[tokio::test]
async fn calls_need_a_connection() -> TestResult {
    let sc = server_config("1000", None)?;
    let server = Trustline::new(
        &sc,
        Arc::new(MemoryStores::new(
            Limit::Finite(LedgerBalance(1000)),
            Limit::Unbounded,
        )),
        None,
        options(),
    )?;
    match server.get_balance().await {
        Err(PeerError::NotConnected(what)) => assert_eq!(what, "getBalance"),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    let f = [1u8; 32];
    assert!(matches!(
        server
            .send_transfer(transfer(50, 1, &f, Duration::from_secs(10)))
            .await,
        Err(PeerError::NotConnected("sendTransfer"))
    ));
    Ok(())
}

#[test]
fn numbers_print_like_legacy_bignumber_js() {
    use ilp_bridge::peer::trustline::legacy_format::{bignumber_string, limit_string};
    // Captured from bignumber.js 2.4.0 (the one the legacy plugin loads) under node 20.
    let ten: i128 = 10;
    for (v, s) in [
        (1000, "1000"),
        (ten.pow(20), "100000000000000000000"),
        (ten.pow(21) - 1, "999999999999999999999"),
        (ten.pow(21), "1e+21"),
        (123 * ten.pow(19), "1.23e+21"),
        (
            12_345_678_901_234_567_890_123,
            "1.2345678901234567890123e+22",
        ),
        (-ten.pow(21), "-1e+21"),
        (-5, "-5"),
        (0, "0"),
    ] {
        assert_eq!(bignumber_string(LedgerBalance(v)), s, "{v}");
    }
    assert_eq!(limit_string(Limit::Unbounded), "Infinity");
    assert_eq!(
        limit_string(Limit::Finite(LedgerBalance(ten.pow(22)))),
        "1e+22"
    );
}

#[tokio::test]
async fn info_keeps_the_configured_key_order_and_big_limits_use_exponents() -> TestResult {
    // The legacy plugin replies JSON.stringify(info): the configured keys in their order, `prefix` appended.
    let cfg = PeerConfig::from_legacy_json(
        "server",
        &serde_json::from_str(
            r#"{"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "1000000000000000000000",
                "prefix": "test.legacy.", "store": true,
                "info": {"currencyScale": 9, "currencyCode": "USD", "connectors": [], "zeta": {"b": 1, "a": 2}}}"#,
        )?,
    )?;
    let stores = MemoryStores::new(cfg.max_balance, cfg.min_balance);
    let server = Trustline::new(&cfg, Arc::new(stores), None, options())?;
    let e = side_response(&server, "info", &[2]).await?;
    assert_eq!(
        std::str::from_utf8(&e.data)?,
        r#"{"currencyScale":9,"currencyCode":"USD","connectors":[],"zeta":{"b":1,"a":2},"prefix":"test.legacy."}"#
    );
    assert_eq!(
        &side_response(&server, "limit", &[0]).await?.data[..],
        b"\"1e+21\""
    );
    // A client reading that limit negates the string, as legacy does.
    let p = pair_with("1000000000000000000000", true, None).await?;
    assert_eq!(p.client.get_limit().await?, "-1e+21");
    Ok(())
}

#[tokio::test]
async fn limit_and_duplicate_id_errors_are_byte_identical_to_legacy() -> TestResult {
    let cfg = legacy_hold(PeerConfig::from_legacy_json(
        "server",
        &json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "1000", "prefix": "test.x.",
                "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []}, "store": true}),
    )?);
    let stores = MemoryStores::new(cfg.max_balance, cfg.min_balance);
    let server = Trustline::new(&cfg, Arc::new(stores), None, options())?;
    let prepare =
        |id_last: u8, amount: u64, custom: &str| -> Result<Packet, Box<dyn std::error::Error>> {
            let mut id = [0u8; 16];
            id[0] = 0xab;
            id[6] = 0x40;
            id[8] = 0x80;
            id[15] = id_last;
            let mut cond = [0u8; 32];
            for (i, c) in cond.iter_mut().enumerate() {
                *c = u8::try_from(i)?;
            }
            Ok(Packet::Prepare(Prepare {
                transfer_id: id,
                amount,
                execution_condition: cond,
                expires_at: Timestamp::parse_generalized_time(b"20300102030405.678Z", "test")?,
                protocol_data: ProtocolData::new()
                    .with(ProtocolDataEntry::octets(
                        ProtocolName::from_static("ilp"),
                        Bytes::from(payment("test.x.server.bob", 10)),
                    ))
                    .with(ProtocolDataEntry::json(
                        ProtocolName::from_static("custom"),
                        custom.to_owned(),
                    )),
            }))
        };
    // The `data` the real 1.3.5 plugin sent for this Prepare (captured with tests/node/scripts/raw_btp_client.js).
    let legacy_over_limit = r#"{"message":"balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {\"transfer\":{\"id\":\"ab000000-0000-4000-8000-000000000042\",\"amount\":\"2000\",\"executionCondition\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\",\"expiresAt\":\"2030-01-02T03:04:05.678Z\",\"to\":\"test.x.server\",\"from\":\"test.x.client\",\"ledger\":\"test.x.\",\"ilp\":\"ARwAAAAAAAAAChF0ZXN0Lnguc2VydmVyLmJvYgAA\",\"custom\":{\"z\":1,\"a\":{\"y\":[1,\"2\"],\"b\":null}}},\"isIncoming\":true,\"state\":\"prepared\"}"}"#;
    let reply = server
        .handle_packet(prepare(
            0x42,
            2000,
            r#"{"z":1,"a":{"y":[1,"2"],"b":null}}"#,
        )?)
        .await;
    let Some(Reply::Error(e)) = reply else {
        return Err(format!("expected an Error, got {reply:?}").into());
    };
    assert_eq!((e.code_str(), e.name.as_str()), ("F00", "NotAcceptedError"));
    assert_eq!(e.data, legacy_over_limit);

    // Same shape for a duplicate ID with other contents (legacy's text; the transfer JSON as above).
    let json_of = |amount: &str| {
        format!(
            r#"{{\"transfer\":{{\"id\":\"ab000000-0000-4000-8000-000000000043\",\"amount\":\"{amount}\",\"executionCondition\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\",\"expiresAt\":\"2030-01-02T03:04:05.678Z\",\"to\":\"test.x.server\",\"from\":\"test.x.client\",\"ledger\":\"test.x.\",\"ilp\":\"ARwAAAAAAAAAChF0ZXN0Lnguc2VydmVyLmJvYgAA\",\"custom\":{{\"z\":1,\"a\":2}}}},\"isIncoming\":true,\"state\":\"prepared\"}}"#
        )
    };
    assert!(matches!(
        server
            .handle_packet(prepare(0x43, 10, r#"{"z":1,"a":2}"#)?)
            .await,
        Some(Reply::Response(_))
    ));
    let reply = server
        .handle_packet(prepare(0x43, 11, r#"{"z":1,"a":2}"#)?)
        .await;
    let Some(Reply::Error(e)) = reply else {
        return Err(format!("expected an Error, got {reply:?}").into());
    };
    assert_eq!((e.code_str(), e.name.as_str()), ("F04", "DuplicateIdError"));
    assert_eq!(
        e.data,
        format!(
            r#"{{"message":"transfer {} matches the id of {} but not the contents."}}"#,
            json_of("11"),
            json_of("10")
        )
    );
    Ok(())
}
