//! What a peer can make the node hold: how far ahead a Prepare may expire, how many bytes
//! of `ilp` and `custom` data it may carry, and how many transfers may be prepared at once, per peer; and the
//! router never forwards a transfer expiring further ahead than the next peer's hold window. Over a cap a
//! Prepare is refused with a legacy Error and nothing is stored; at the cap it is accepted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use btp::ilp_v1::{IlpV1Packet, Payment};
use btp::packet::{Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::Reply;
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerSum};
use channel_modules::clock::{Clock, SystemClock};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Direction, Transfer, TransferId, TransferState};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::prepare_limits::{
    DEFAULT_MAX_HOLD, DEFAULT_MAX_PREPARED_TRANSFERS, DEFAULT_MAX_PREPARE_DATA_BYTES,
};
use ilp_bridge::config::routing::RoutingConfig;
use ilp_bridge::peer::{
    forward_id, MemoryLink, PeerError, PeerEvent, Router, Trustline, TrustlineOptions,
};
use ilp_bridge::testing::TokioClock;
use serde_json::json;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type R<T> = Result<T, Box<dyn std::error::Error>>;

/// The default hold window, in ms.
const MAX_HOLD_MS: i64 = DEFAULT_MAX_HOLD.as_millis() as i64;
/// The default cap on `ilp` + `custom` bytes of one Prepare.
const MAX_DATA_BYTES: usize = DEFAULT_MAX_PREPARE_DATA_BYTES;
/// The default cap on prepared transfers per peer and direction.
const MAX_PREPARED: usize = DEFAULT_MAX_PREPARED_TRANSFERS;

fn server_options(prefix: &str) -> serde_json::Value {
    json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "1000000000", "prefix": prefix,
        "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true})
}

fn client_options() -> serde_json::Value {
    json!({"server": "btp+ws://:s@127.0.0.1:1", "maxBalance": "1000000000", "store": true})
}

fn trustline_with(
    config: &PeerConfig,
    stores: MemoryStores,
    clock: Arc<dyn Clock>,
) -> R<Trustline> {
    Ok(Trustline::new(
        config,
        Arc::new(stores),
        None,
        TrustlineOptions {
            clock,
            ..TrustlineOptions::default()
        },
    )?)
}

fn trustline(name: &str, options: &serde_json::Value, clock: Arc<dyn Clock>) -> R<Trustline> {
    let cfg = PeerConfig::from_legacy_json(name, options)?;
    let stores = MemoryStores::new(cfg.max_balance, cfg.min_balance);
    trustline_with(&cfg, stores, clock)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn id(n: u32) -> TransferId {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    b[6] = 0x40;
    b[8] = 0x80;
    TransferId(b)
}

/// A Prepare of 1 unit for transfer `n`, expiring at `expires_at_ms`, with `ilp` and optional `custom` JSON.
fn prepare(n: u32, expires_at_ms: i64, ilp: &[u8], custom: Option<&str>) -> R<Packet> {
    let mut pd = ProtocolData::new();
    if !ilp.is_empty() {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static("ilp"),
            Bytes::copy_from_slice(ilp),
        ));
    }
    if let Some(c) = custom {
        pd.push(ProtocolDataEntry::json(
            ProtocolName::from_static("custom"),
            c.to_owned(),
        ));
    }
    Ok(Packet::Prepare(Prepare {
        transfer_id: id(n).0,
        amount: 1,
        execution_condition: Sha256::digest([1u8; 32]).into(),
        expires_at: Timestamp::from_unix_millis(expires_at_ms).ok_or("time out of range")?,
        protocol_data: pd,
    }))
}

/// Hands `packet` to `tl` as its peer would and returns the legacy Error's name and data, or `None` for a
/// Response.
async fn refusal(tl: &Trustline, packet: Packet) -> R<Option<(String, String)>> {
    match tl.handle_packet(packet).await.ok_or("no reply")? {
        Reply::Response(_) => Ok(None),
        Reply::Error(e) => Ok(Some((e.name, e.data))),
    }
}

/// Asserts that transfer `n` was never stored by `tl`.
async fn not_stored(tl: &Trustline, n: u32) -> TestResult {
    let rec = tl.log().get(&id(n)).await?;
    assert!(rec.is_none(), "stored: {rec:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_prepare_expiring_beyond_the_hold_window_is_refused_and_not_stored() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let server = trustline("server", &server_options("test.caps."), Arc::clone(&clock))?;
    let now = ms(clock.now());
    // At the window: accepted.
    assert_eq!(
        refusal(&server, prepare(1, now + MAX_HOLD_MS, b"", None)?).await?,
        None
    );
    // One millisecond more, and the year 9999: refused, nothing kept.
    for (n, at) in [(2, now + MAX_HOLD_MS + 1), (3, 253_402_300_799_000)] {
        let (name, data) = refusal(&server, prepare(n, at, b"", None)?)
            .await?
            .ok_or("accepted")?;
        assert_eq!(name, "NotAcceptedError");
        assert!(data.contains("ahead"), "{data}");
        not_stored(&server, n).await?;
    }
    assert_eq!(
        server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum(1)
    );
    assert_eq!(server.armed_expiries(), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_prepare_carrying_more_data_than_the_cap_is_refused_and_not_stored() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let server = trustline("server", &server_options("test.caps."), Arc::clone(&clock))?;
    let at = ms(clock.now()) + 10_000;
    // `custom` is counted as the JSON text on the wire: a string of k characters takes k + 2 bytes.
    let custom = |bytes: usize| format!("\"{}\"", "c".repeat(bytes - 2));
    let half = MAX_DATA_BYTES / 2;
    // Exactly the cap, in ilp alone and split between ilp and custom: accepted.
    assert_eq!(
        refusal(&server, prepare(1, at, &vec![7u8; MAX_DATA_BYTES], None)?).await?,
        None
    );
    let at_cap = prepare(
        2,
        at,
        &vec![7u8; half],
        Some(&custom(MAX_DATA_BYTES - half)),
    )?;
    assert_eq!(refusal(&server, at_cap).await?, None);
    // One byte more, either way, and 1 MiB: refused, nothing kept.
    let over = [
        prepare(3, at, &vec![7u8; MAX_DATA_BYTES + 1], None)?,
        prepare(
            4,
            at,
            &vec![7u8; half],
            Some(&custom(MAX_DATA_BYTES - half + 1)),
        )?,
        prepare(5, at, &vec![7u8; 1 << 20], None)?,
    ];
    for (n, packet) in (3..).zip(over) {
        let (name, data) = refusal(&server, packet).await?.ok_or("accepted")?;
        assert_eq!(name, "NotAcceptedError");
        assert!(data.contains("bytes"), "{data}");
        not_stored(&server, n).await?;
    }
    assert_eq!(
        server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum(2)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn prepared_transfers_from_one_peer_are_capped() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let server = trustline("server", &server_options("test.caps."), Arc::clone(&clock))?;
    let now = ms(clock.now());
    // One of them expires soon, freeing its place.
    assert_eq!(
        refusal(&server, prepare(0, now + 1_000, b"", None)?).await?,
        None
    );
    for n in 1..MAX_PREPARED as u32 {
        assert_eq!(
            refusal(&server, prepare(n, now + 30_000, b"", None)?).await?,
            None,
            "{n}"
        );
    }
    let over = MAX_PREPARED as u32;
    let (name, data) = refusal(&server, prepare(over, now + 30_000, b"", None)?)
        .await?
        .ok_or("accepted")?;
    assert_eq!(name, "NotAcceptedError");
    assert!(data.contains("prepared"), "{data}");
    not_stored(&server, over).await?;
    // A repeat of a prepared one is not a new transfer: still answered as legacy does.
    assert_eq!(
        refusal(&server, prepare(1, now + 30_000, b"", None)?).await?,
        None
    );
    // Once one has expired, there is room again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec = server.log().get(&id(0)).await?.ok_or("missing")?;
    assert!(
        matches!(rec.state, TransferState::Cancelled { .. }),
        "{rec:?}"
    );
    assert_eq!(
        refusal(&server, prepare(over, now + 30_000, b"", None)?).await?,
        None
    );
    assert_eq!(
        server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum(MAX_PREPARED as u128)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn outgoing_prepared_transfers_to_one_peer_are_capped() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let client = trustline("client", &client_options(), Arc::clone(&clock))?;
    let server = trustline("server", &server_options("test.caps."), Arc::clone(&clock))?;
    MemoryLink::pair(&client, &server);
    server.connect().await?;
    client.connect().await?;
    let at = ms(clock.now()) + 30_000;
    let transfer = |n: u32| Transfer {
        id: id(n),
        amount: LedgerAmount(1),
        execution_condition: Sha256::digest([1u8; 32]).into(),
        expires_at_ms: at,
        ilp: Vec::new(),
        custom: None,
    };
    for n in 0..MAX_PREPARED as u32 {
        client.send_transfer(transfer(n)).await?;
    }
    let over = MAX_PREPARED as u32;
    // Refused here (not by the peer): nothing is sent, nothing kept on either side.
    let r = client.send_transfer(transfer(over)).await;
    assert!(
        matches!(&r, Err(PeerError::Refused(e)) if e.name == "NotAcceptedError"),
        "{r:?}"
    );
    not_stored(&client, over).await?;
    not_stored(&server, over).await?;
    assert_eq!(
        client.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum(MAX_PREPARED as u128)
    );
    Ok(())
}

/// A transfer prepared before the caps existed (or with a larger window) expires in the year 9999; after a
/// restart the router forwards it expiring no later than the next peer's hold window from now.
#[tokio::test]
async fn the_router_never_forwards_beyond_the_next_peers_hold_window() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let x1_cfg = PeerConfig::from_legacy_json("x1", &server_options("test.a."))?;
    let x1_stores = MemoryStores::new(x1_cfg.max_balance, x1_cfg.min_balance);
    let far = Transfer {
        id: id(1),
        amount: LedgerAmount(10),
        execution_condition: Sha256::digest([1u8; 32]).into(),
        expires_at_ms: 253_402_300_799_000,
        ilp: IlpV1Packet::Payment(Payment {
            amount: 10,
            account: "test.b.server.carl".to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    let stored = channel_modules::store::TransferLog::prepare(
        &*ilp_bridge::peer::PeerStores::transfer_log(&x1_stores, "")?,
        &far,
        Direction::Incoming,
    )
    .await?;
    assert!(matches!(
        stored,
        channel_modules::store::PrepareOutcome::Prepared
    ));
    let x1 = trustline_with(&x1_cfg, x1_stores, Arc::clone(&clock))?;
    let x2 = trustline("x2", &server_options("test.b."), Arc::clone(&clock))?;
    let a = trustline("a", &client_options(), Arc::clone(&clock))?;
    let c = trustline("c", &client_options(), Arc::clone(&clock))?;
    MemoryLink::pair(&a, &x1);
    MemoryLink::pair(&c, &x2);
    let router = Router::new(RoutingConfig::default(), Arc::clone(&clock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    x1.start().await?;
    x2.start().await?;
    let mut c_events = c.subscribe();
    router.recover().await?;
    for t in [&x1, &x2, &a, &c] {
        t.connect().await?;
    }
    let got = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), c_events.recv()).await??;
        if let PeerEvent::IncomingPrepare(t) = e {
            break t;
        }
    };
    assert_eq!(got.id, forward_id("x1", &far.id));
    let limit = ms(clock.now()) + MAX_HOLD_MS;
    assert!(
        got.expires_at_ms <= limit,
        "forwarded expiring {} ms after the hold window",
        got.expires_at_ms - limit
    );
    assert!(got.expires_at_ms > ms(clock.now()));
    Ok(())
}

/// With the next peer's prepared-transfer cap reached, the router refuses a payment with T04 at once; it is
/// not forwarded, and the payer's transfer is cancelled.
#[tokio::test]
async fn a_payment_towards_a_peer_at_its_prepared_cap_is_refused_with_t04() -> TestResult {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let x1 = trustline("x1", &server_options("test.a."), Arc::clone(&clock))?;
    let mut x2_cfg = PeerConfig::from_legacy_json("x2", &server_options("test.b."))?;
    x2_cfg.limits.max_prepared_transfers = 1;
    let x2_stores = MemoryStores::new(x2_cfg.max_balance, x2_cfg.min_balance);
    let x2 = trustline_with(&x2_cfg, x2_stores, Arc::clone(&clock))?;
    let a = trustline("a", &client_options(), Arc::clone(&clock))?;
    let c = trustline("c", &client_options(), Arc::clone(&clock))?;
    MemoryLink::pair(&a, &x1);
    MemoryLink::pair(&c, &x2);
    let router = Router::new(RoutingConfig::default(), Arc::clone(&clock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    for t in [&x1, &x2, &a, &c] {
        t.connect().await?;
    }
    let payment = |n: u32| Transfer {
        id: id(n),
        amount: LedgerAmount(10),
        execution_condition: Sha256::digest([1u8; 32]).into(),
        expires_at_ms: ms(clock.now()) + 10_000,
        ilp: IlpV1Packet::Payment(Payment {
            amount: 10,
            account: "test.b.server.carl".to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    let mut c_events = c.subscribe();
    let mut a_events = a.subscribe();
    a.send_transfer(payment(1)).await?;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), c_events.recv()).await??;
        if matches!(e, PeerEvent::IncomingPrepare(_)) {
            break;
        }
    }
    a.send_transfer(payment(2)).await?;
    let reason = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), a_events.recv()).await??;
        if let PeerEvent::OutgoingReject { reason, .. } = e {
            break reason.ilp_error;
        }
    };
    assert_eq!(
        (reason.code_str(), reason.name.as_str()),
        ("T04", "Insufficient Liquidity")
    );
    assert!(
        String::from_utf8_lossy(&reason.data).contains("prepared"),
        "{:?}",
        reason.data
    );
    assert!(x2.log().get(&forward_id("x1", &id(2))).await?.is_none());
    assert_eq!(
        x2.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum(10)
    );
    let rec = x1.log().get(&id(2)).await?.ok_or("missing")?;
    assert!(
        matches!(rec.state, TransferState::Cancelled { .. }),
        "{rec:?}"
    );
    Ok(())
}
