//! Routing through the bridge, in memory: A ⇄ [X1 | router | X2] ⇄ C, all trustlines in one process.

use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v1::{IlpV1Error, IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::clock::{Clock, SystemClock};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Transfer, TransferId, TransferState};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::routing::{LocalPayments, Rate, RoutingConfig};
use ilp_bridge::peer::{
    forward_id, EventReceiver, MemoryLink, PeerEvent, Router, Trustline, TrustlineOptions,
};
use serde_json::json;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Net {
    a: Trustline,
    x1: Trustline,
    x2: Trustline,
    c: Trustline,
    router: Arc<Router>,
}

/// A trustline `name` with the legacy options `options`, on fresh in-memory stores.
fn trustline(
    name: &str,
    options: &serde_json::Value,
) -> Result<Trustline, Box<dyn std::error::Error>> {
    let cfg = PeerConfig::from_legacy_json(name, options)?;
    let stores = MemoryStores::new(cfg.max_balance, cfg.min_balance);
    trustline_on(name, options, stores)
}

/// A trustline `name` on `stores` (kept by the caller to "restart" it on the same data).
fn trustline_on(
    name: &str,
    options: &serde_json::Value,
    stores: MemoryStores,
) -> Result<Trustline, Box<dyn std::error::Error>> {
    let cfg = PeerConfig::from_legacy_json(name, options)?;
    Ok(Trustline::new(
        &cfg,
        Arc::new(stores),
        None,
        TrustlineOptions::default(),
    )?)
}

fn server(
    name: &str,
    prefix: &str,
    code: &str,
    scale: u8,
) -> Result<Trustline, Box<dyn std::error::Error>> {
    trustline(
        name,
        &json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "100000", "prefix": prefix,
                "info": {"currencyCode": code, "currencyScale": scale}, "store": true}),
    )
}

fn client(name: &str) -> Result<Trustline, Box<dyn std::error::Error>> {
    trustline(
        name,
        &json!({"server": "btp+ws://:s@127.0.0.1:1", "maxBalance": "100000", "store": true}),
    )
}

async fn net(
    scale_b: u8,
    code_b: &str,
    rates: &[(&str, &str, &str)],
) -> Result<Net, Box<dyn std::error::Error>> {
    let mut config = RoutingConfig::default();
    for (from, to, r) in rates {
        config
            .rates
            .insert(((*from).to_owned(), (*to).to_owned()), Rate::parse(r)?);
    }
    net_with(scale_b, code_b, config).await
}

/// [`net`] with the routing settings `config`.
async fn net_with(
    scale_b: u8,
    code_b: &str,
    config: RoutingConfig,
) -> Result<Net, Box<dyn std::error::Error>> {
    net_on_clock(scale_b, code_b, config, Arc::new(SystemClock)).await
}

/// [`net_with`], the router reading the time from `clock`.
async fn net_on_clock(
    scale_b: u8,
    code_b: &str,
    config: RoutingConfig,
    clock: Arc<dyn Clock>,
) -> Result<Net, Box<dyn std::error::Error>> {
    let x1 = server("x1", "test.a.", "USD", 9)?;
    let x2 = server("x2", "test.b.", code_b, scale_b)?;
    let a = client("a")?;
    let c = client("c")?;
    MemoryLink::pair(&x1, &a);
    MemoryLink::pair(&x2, &c);
    let router = Router::new(config, clock);
    router.add_peer(&x1);
    router.add_peer(&x2);
    for t in [&x1, &x2, &a, &c] {
        t.connect().await?;
    }
    Ok(Net {
        a,
        x1,
        x2,
        c,
        router,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn transfer(
    n: u8,
    amount: u64,
    dest: &str,
    dest_amount: u64,
    f: &[u8; 32],
    expires_in_ms: i64,
) -> Transfer {
    Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(amount),
        execution_condition: Sha256::digest(f).into(),
        expires_at_ms: now_ms() + expires_in_ms,
        ilp: IlpV1Packet::Payment(Payment {
            amount: dest_amount,
            account: dest.to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    }
}

async fn next_event(
    rx: &mut EventReceiver,
    name: &str,
) -> Result<PeerEvent, Box<dyn std::error::Error>> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await??;
        if e.name() == name {
            return Ok(e);
        }
    }
}

async fn rejection(a: &Trustline, t: Transfer) -> Result<IlpV1Error, Box<dyn std::error::Error>> {
    let mut events = a.subscribe();
    a.send_transfer(t).await?;
    match next_event(&mut events, "outgoing_reject").await? {
        PeerEvent::OutgoingReject { reason, .. } => Ok(reason.ilp_error),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

#[tokio::test]
async fn payment_is_forwarded_and_fulfilled_backwards() -> TestResult {
    let n = net(9, "USD", &[]).await?;
    let mut c_events = n.c.subscribe();
    let mut a_events = n.a.subscribe();
    let f = [7u8; 32];
    let t = transfer(1, 10, "test.b.server.carl", 10, &f, 10_000);
    n.a.send_transfer(t.clone()).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut c_events, "incoming_prepare").await?
    else {
        return Err("unexpected event".into());
    };
    // Same condition and ILP packet, derived ID, earlier expiry, same amount (same currency and scale).
    assert_eq!(got.id, forward_id("x1", &t.id));
    assert_eq!(got.ilp, t.ilp);
    assert_eq!(got.execution_condition, t.execution_condition);
    assert_eq!(got.amount, LedgerAmount(10));
    assert_eq!(got.expires_at_ms, t.expires_at_ms - 1000);
    n.c.fulfill_condition(got.id, f, None).await?;
    next_event(&mut a_events, "outgoing_fulfill").await?;
    assert_eq!(n.a.local_balance(), LedgerBalance(-10));
    assert_eq!(n.x1.local_balance(), LedgerBalance(10));
    assert_eq!(n.x2.local_balance(), LedgerBalance(-10));
    assert_eq!(n.c.local_balance(), LedgerBalance(10));
    Ok(())
}

#[tokio::test]
async fn reject_travels_back_with_forwarded_by() -> TestResult {
    let n = net(9, "USD", &[]).await?;
    let mut c_events = n.c.subscribe();
    let f = [1u8; 32];
    let t = transfer(2, 10, "test.b.server.carl", 10, &f, 10_000);
    let a = n.a.clone();
    let pending = tokio::spawn({
        let t = t.clone();
        async move { rejection(&a, t).await.map_err(|e| e.to_string()) }
    });
    let PeerEvent::IncomingPrepare(got) = next_event(&mut c_events, "incoming_prepare").await?
    else {
        return Err("unexpected event".into());
    };
    let reason = IlpV1Error {
        code: *b"F99",
        name: "Application Error".to_owned(),
        triggered_by: "test.b.server.carl".to_owned(),
        forwarded_by: vec![],
        triggered_at: btp::Timestamp::now(),
        data: Bytes::from_static(b"{}"),
    };
    n.c.reject_incoming_transfer(got.id, reason).await?;
    let err = pending.await??;
    assert_eq!(err.code_str(), "F99");
    assert_eq!(err.triggered_by, "test.b.server.carl");
    assert_eq!(err.forwarded_by, vec!["test.a.server".to_owned()]);
    for tl in [&n.a, &n.x1, &n.x2, &n.c] {
        assert_eq!(tl.local_balance(), LedgerBalance::ZERO);
        assert_eq!(
            tl.log().sums().incoming_fulfilled_and_prepared,
            LedgerSum::ZERO
        );
        assert_eq!(
            tl.log().sums().outgoing_fulfilled_and_prepared,
            LedgerSum::ZERO
        );
    }
    let rec = n.x1.log().get(&t.id).await?.ok_or("missing")?;
    assert!(matches!(rec.state, TransferState::Cancelled { .. }));
    Ok(())
}

#[tokio::test]
async fn refusals() -> TestResult {
    let n = net(9, "USD", &[]).await?;
    let f = [2u8; 32];
    // No route.
    let e = rejection(&n.a, transfer(3, 10, "test.zzz.bob", 10, &f, 10_000)).await?;
    assert_eq!((e.code_str(), e.name.as_str()), ("F02", "Unreachable"));
    assert_eq!(e.triggered_by, "test.a.server");
    // Not enough time to forward.
    let e = rejection(&n.a, transfer(4, 10, "test.b.server.carl", 10, &f, 1200)).await?;
    assert_eq!(e.code_str(), "R02");
    // Delivering less than the payment asks for.
    let e = rejection(&n.a, transfer(5, 10, "test.b.server.carl", 11, &f, 10_000)).await?;
    assert_eq!(e.code_str(), "R01");
    assert_eq!(n.a.local_balance(), LedgerBalance::ZERO);
    assert_eq!(
        n.x2.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn amounts_are_converted_between_scales_and_currencies() -> TestResult {
    // Same currency, scale 9 → 6: divide by 1000, rounding down.
    let n = net(6, "USD", &[]).await?;
    assert_eq!(
        n.router.convert(&n.x1, &n.x2, LedgerAmount(10_000))?,
        LedgerAmount(10)
    );
    assert_eq!(
        n.router.convert(&n.x1, &n.x2, LedgerAmount(10_999))?,
        LedgerAmount(10)
    );
    assert_eq!(
        n.router.convert(&n.x2, &n.x1, LedgerAmount(10))?,
        LedgerAmount(10_000)
    );
    assert_eq!(
        n.router.convert(&n.x1, &n.x2, LedgerAmount(999))?,
        LedgerAmount(0)
    );
    // A payment whose conversion is 0 is refused.
    let e = rejection(
        &n.a,
        transfer(6, 999, "test.b.server.carl", 0, &[1u8; 32], 10_000),
    )
    .await?;
    assert_eq!(e.code_str(), "R01");
    // Forwarded with the converted amount.
    let mut c_events = n.c.subscribe();
    n.a.send_transfer(transfer(
        7,
        5_000,
        "test.b.server.carl",
        5,
        &[1u8; 32],
        10_000,
    ))
    .await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut c_events, "incoming_prepare").await?
    else {
        return Err("unexpected event".into());
    };
    assert_eq!(got.amount, LedgerAmount(5));

    // Other currency: refused without a rate, converted with one.
    let n = net(9, "EUR", &[]).await?;
    assert!(n.router.convert(&n.x1, &n.x2, LedgerAmount(10)).is_err());
    let e = rejection(
        &n.a,
        transfer(8, 10, "test.b.server.carl", 1, &[1u8; 32], 10_000),
    )
    .await?;
    assert_eq!(e.code_str(), "F00");
    let n = net(9, "EUR", &[("x1", "x2", "0.5")]).await?;
    assert_eq!(
        n.router.convert(&n.x1, &n.x2, LedgerAmount(11))?,
        LedgerAmount(5)
    );
    assert!(Rate::parse("abc").is_err());
    assert!(Rate::parse("0").is_err());
    Ok(())
}

/// Sends an ILQP request from A and decodes the `ilp` of the Response.
async fn quote(
    a: &Trustline,
    request: IlpV1Packet,
) -> Result<IlpV1Packet, Box<dyn std::error::Error>> {
    let reply = a
        .send_request(ilp_bridge::peer::PeerMessage {
            ilp: Some(request.to_bytes()),
            custom: None,
        })
        .await?;
    Ok(IlpV1Packet::decode(
        &reply.ilp.ok_or("response has no ilp")?,
    )?)
}

/// A clock stopped at one instant.
struct StoppedClock(std::time::SystemTime);

impl Clock for StoppedClock {
    fn now(&self) -> std::time::SystemTime {
        self.0
    }
}

/// The router stamps what it answers with the clock it is given: a quote's expiry and an ILP v1 Error's
/// `triggeredAt`.
#[tokio::test]
async fn the_router_reads_the_time_from_its_clock() -> TestResult {
    use btp::ilp_v1::{BySourceRequest, LiquidityRequest};
    // 2017-10-01T00:00:00Z: far from the system clock, so a time read from it would show.
    const AT_MS: i64 = 1_506_816_000_000;
    let at = std::time::UNIX_EPOCH + Duration::from_millis(AT_MS as u64);
    let n = net_on_clock(
        6,
        "USD",
        RoutingConfig::default(),
        Arc::new(StoppedClock(at)),
    )
    .await?;
    let IlpV1Packet::LiquidityResponse(curve) = quote(
        &n.a,
        IlpV1Packet::LiquidityRequest(LiquidityRequest {
            destination_account: "test.b.server.carl".to_owned(),
            destination_hold_duration: 2000,
        }),
    )
    .await?
    else {
        return Err("expected a liquidity response".into());
    };
    let quote_expiry_ms = i64::try_from(ilp_bridge::peer::routing::QUOTE_EXPIRY.as_millis())?;
    assert_eq!(curve.expires_at.unix_millis(), AT_MS + quote_expiry_ms);
    let IlpV1Packet::Error(e) = quote(
        &n.a,
        IlpV1Packet::BySourceRequest(BySourceRequest {
            destination_account: "test.zzz.bob".to_owned(),
            source_amount: 10,
            destination_hold_duration: 3000,
        }),
    )
    .await?
    else {
        return Err("expected an ILP error".into());
    };
    assert_eq!(e.code_str(), "F02");
    assert_eq!(e.triggered_at.unix_millis(), AT_MS);
    Ok(())
}

#[tokio::test]
async fn quotes_are_routed_and_answered_for_the_next_ledger() -> TestResult {
    use btp::ilp_v1::{
        ByDestinationRequest, ByDestinationResponse, BySourceRequest, BySourceResponse,
        LiquidityRequest,
    };
    // Scale 9 → 6 on the same currency: divide by 1000.
    let n = net(6, "USD", &[]).await?;
    let by_source = |amount: u64, dest: &str| {
        IlpV1Packet::BySourceRequest(BySourceRequest {
            destination_account: dest.to_owned(),
            source_amount: amount,
            destination_hold_duration: 3000,
        })
    };
    // By source: rounded down; hold duration plus the 1 s expiry margin.
    assert_eq!(
        quote(&n.a, by_source(10_999, "test.b.server.carl")).await?,
        IlpV1Packet::BySourceResponse(BySourceResponse {
            destination_amount: 10,
            source_hold_duration: 4000,
        })
    );
    // By destination: rounded up, so the quoted source amount always delivers enough.
    let by_destination = |amount: u64| {
        IlpV1Packet::ByDestinationRequest(ByDestinationRequest {
            destination_account: "test.b.server.carl".to_owned(),
            destination_amount: amount,
            destination_hold_duration: 5000,
        })
    };
    assert_eq!(
        quote(&n.a, by_destination(10)).await?,
        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
            source_amount: 10_000,
            source_hold_duration: 6000,
        })
    );
    // And the quote holds: a transfer of the quoted source amount delivers the asked amount.
    assert_eq!(
        n.router.convert(&n.x1, &n.x2, LedgerAmount(10_000))?,
        LedgerAmount(10)
    );
    // Liquidity: a curve for the next ledger's prefix.
    let IlpV1Packet::LiquidityResponse(curve) = quote(
        &n.a,
        IlpV1Packet::LiquidityRequest(LiquidityRequest {
            destination_account: "test.b.server.carl".to_owned(),
            destination_hold_duration: 2000,
        }),
    )
    .await?
    else {
        return Err("expected a liquidity response".into());
    };
    assert_eq!(curve.applies_to_prefix, "test.b.");
    assert_eq!(curve.source_hold_duration, 3000);
    assert_eq!(curve.liquidity_curve.len(), 2);
    assert_eq!(
        (curve.liquidity_curve[0].x, curve.liquidity_curve[0].y),
        (0, 0)
    );
    let top = curve.liquidity_curve[1];
    assert_eq!((top.x, top.y), (u64::MAX, u64::MAX / 1000));
    assert!(curve.expires_at > btp::Timestamp::now());

    // No route: the ILP v1 Error a connector sends.
    let IlpV1Packet::Error(e) = quote(&n.a, by_source(10, "test.zzz.bob")).await? else {
        return Err("expected an ILP error".into());
    };
    assert_eq!((e.code_str(), e.name.as_str()), ("F02", "Unreachable"));
    assert_eq!(e.triggered_by, "test.a.server");
    // A destination on the source ledger is not routed: it goes to the request handler (none here).
    let err =
        n.a.send_request(ilp_bridge::peer::PeerMessage {
            ilp: Some(by_source(10, "test.a.client.zed").to_bytes()),
            custom: None,
        })
        .await;
    assert!(
        matches!(&err, Err(ilp_bridge::peer::PeerError::Remote(e)) if e.data.contains("no request handler registered")),
        "{err:?}"
    );
    // Other currency without a rate: refused, as transfers are.
    let n = net(9, "EUR", &[]).await?;
    let IlpV1Packet::Error(e) = quote(&n.a, by_source(10, "test.b.server.carl")).await? else {
        return Err("expected an ILP error".into());
    };
    assert_eq!((e.code_str(), e.name.as_str()), ("F00", "Bad Request"));
    // With a rate: 0.5 EUR per USD.
    let n = net(9, "EUR", &[("x1", "x2", "0.5")]).await?;
    assert_eq!(
        quote(&n.a, by_source(11, "test.b.server.carl")).await?,
        IlpV1Packet::BySourceResponse(BySourceResponse {
            destination_amount: 5,
            source_hold_duration: 4000,
        })
    );
    assert_eq!(
        quote(&n.a, by_destination(5)).await?,
        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
            source_amount: 10,
            source_hold_duration: 6000,
        })
    );
    assert_eq!(
        quote(&n.a, by_destination(6)).await?,
        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
            source_amount: 12,
            source_hold_duration: 6000,
        })
    );
    Ok(())
}

/// A fake peer ledger that lies in its `info` reply (currencyScale 300) and records whether it ever got a
/// Prepare.
struct LyingPeer {
    prepares: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ilp_bridge::peer::PeerLink for LyingPeer {
    async fn request(
        &self,
        packet: btp::Packet,
        _timeout: Duration,
    ) -> Result<btp::transport::Reply, btp::transport::RpcError> {
        use btp::packet::{ProtocolDataEntry, ProtocolName};
        Ok(btp::transport::Reply::Response(match packet {
            btp::Packet::Message(pd) if pd.get("info").is_some() => btp::ProtocolData::new().with(
                ProtocolDataEntry::json(
                    ProtocolName::from_static("info"),
                    r#"{"prefix":"test.b.","currencyCode":"USD","currencyScale":300,"connectors":[]}"#,
                ),
            ),
            btp::Packet::Prepare(_) => {
                self.prepares
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                btp::ProtocolData::new()
            }
            _ => btp::ProtocolData::new(),
        }))
    }
}

#[tokio::test]
async fn a_peer_claiming_a_scale_above_255_is_refused() -> TestResult {
    let x1 = server("x1", "test.a.", "USD", 9)?;
    let a = client("a")?;
    MemoryLink::pair(&x1, &a);
    // The bridge's side of ledger b learns prefix and info from the (lying) peer at connect.
    let x2 = client("x2")?;
    let liar = Arc::new(LyingPeer {
        prepares: std::sync::atomic::AtomicUsize::new(0),
    });
    x2.set_link(liar.clone());
    let router = Router::new(RoutingConfig::default(), Arc::new(SystemClock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    for t in [&x1, &x2, &a] {
        t.connect().await?;
    }
    assert_eq!(x2.prefix().as_deref(), Some("test.b."));
    assert_eq!(
        x2.get_info().and_then(|i| i["currencyScale"].as_u64()),
        Some(300)
    );
    // Conversion is refused (and cheap: no 10^291 is built).
    let err = router
        .convert(&x1, &x2, LedgerAmount(10))
        .err()
        .ok_or("conversion accepted")?;
    assert!(
        err.to_string().contains("currencyScale 300, above 255"),
        "{err}"
    );
    // A payment towards it is rejected back with F00 and never prepared on the lying ledger.
    let e = rejection(&a, transfer(9, 10, "test.b.bob", 1, &[3u8; 32], 10_000)).await?;
    assert_eq!((e.code_str(), e.name.as_str()), ("F00", "Bad Request"));
    assert!(
        String::from_utf8_lossy(&e.data).contains("above 255"),
        "{:?}",
        e.data
    );
    assert_eq!(liar.prepares.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        x2.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    assert_eq!(a.local_balance(), LedgerBalance::ZERO);
    // A quote towards it is refused too.
    let IlpV1Packet::Error(e) = quote(
        &a,
        IlpV1Packet::BySourceRequest(btp::ilp_v1::BySourceRequest {
            destination_account: "test.b.bob".to_owned(),
            source_amount: 10,
            destination_hold_duration: 1000,
        }),
    )
    .await?
    else {
        return Err("expected an ILP error".into());
    };
    assert_eq!(e.code_str(), "F00");
    Ok(())
}

#[tokio::test]
async fn recovery_fulfills_a_paid_source_before_any_peer_has_connected() -> TestResult {
    // X2 dials C and learns its prefix only when it connects; after a restart the router must still find
    // the fulfilled forwarded transfer (by its ID, not by routing) and get the source fulfilled.
    let server_b = json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "100000",
        "prefix": "test.b.", "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true});
    let x1_options = json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "100000",
        "prefix": "test.a.", "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true});
    let x2_options =
        json!({"server": "btp+ws://:s@127.0.0.1:1", "maxBalance": "100000", "store": true});
    let limits = |o: &serde_json::Value| -> Result<MemoryStores, Box<dyn std::error::Error>> {
        let cfg = PeerConfig::from_legacy_json("x", o)?;
        Ok(MemoryStores::new(cfg.max_balance, cfg.min_balance))
    };
    let (x1_stores, x2_stores) = (limits(&x1_options)?, limits(&x2_options)?);
    let x1 = trustline_on("x1", &x1_options, x1_stores.clone())?;
    let x2 = trustline_on("x2", &x2_options, x2_stores.clone())?;
    let a = client("a")?;
    let c = trustline("c", &server_b)?;
    let (a_link, _) = MemoryLink::pair(&a, &x1);
    let (c_link, _) = MemoryLink::pair(&c, &x2);
    let router = Router::new(RoutingConfig::default(), Arc::new(SystemClock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    for t in [&x1, &x2, &a, &c] {
        t.connect().await?;
    }
    let mut c_events = c.subscribe();
    let f = [9u8; 32];
    let t = transfer(1, 10, "test.b.server.carl", 10, &f, 60_000);
    a.send_transfer(t.clone()).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut c_events, "incoming_prepare").await?
    else {
        return Err("unexpected event".into());
    };
    // The bridge "crashes" right after paying C: its router never hears of the Fulfill.
    x2.clear_hook();
    c.fulfill_condition(got.id, f, None).await?;
    assert!(matches!(
        x2.log().get(&got.id).await?.map(|r| r.state),
        Some(TransferState::Fulfilled { .. })
    ));
    drop((router, x1, x2));

    // Restart on the same stores; recovery runs before any peer has connected.
    let x1 = trustline_on("x1", &x1_options, x1_stores)?;
    let x2 = trustline_on("x2", &x2_options, x2_stores)?;
    x1.start().await?;
    x2.start().await?;
    let router = Router::new(RoutingConfig::default(), Arc::new(SystemClock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    assert_eq!(router.recover().await?, 1);
    let mut a_events = a.subscribe();
    a_link.retarget(&x1);
    x1.set_link(MemoryLink::new(&a));
    c_link.retarget(&x2);
    x1.connect().await?;
    next_event(&mut a_events, "outgoing_fulfill").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while x1.local_balance() != LedgerBalance(10) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("x1 balance {}", x1.local_balance()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.local_balance(), LedgerBalance(-10));
    assert_eq!(x1.log().noted_fulfillments().await?, vec![]);
    Ok(())
}

/// The next `outgoing_reject` of `rx` within `wait`, or an error naming what happened instead.
async fn reject_within(
    rx: &mut EventReceiver,
    wait: Duration,
) -> Result<IlpV1Error, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| format!("no outgoing_reject within {wait:?}"))??;
        if let PeerEvent::OutgoingReject { reason, .. } = e {
            return Ok(reason.ilp_error);
        }
    }
}

#[tokio::test]
async fn a_payment_for_the_node_is_refused_at_once_when_nothing_receives_it() -> TestResult {
    let n = net(9, "USD", &[]).await?;
    let mut a_events = n.a.subscribe();
    // Under the node's own address on the ledger it came from (x1 is `test.a.server` there), and on that
    // ledger but for no one the node can reach: both used to stay prepared until they expired.
    for (i, destination) in [(20u8, "test.a.server.bob"), (21, "test.a.client.zed")] {
        let t = transfer(i, 10, destination, 10, &[i; 32], 30_000);
        n.a.send_transfer(t.clone()).await?;
        let e = reject_within(&mut a_events, Duration::from_secs(5)).await?;
        assert_eq!((e.code_str(), e.name.as_str()), ("F02", "Unreachable"));
        assert_eq!(e.triggered_by, "test.a.server");
        let rec = n.x1.log().get(&t.id).await?.ok_or("missing")?;
        assert!(
            matches!(rec.state, TransferState::Cancelled { .. }),
            "{rec:?}"
        );
    }
    assert_eq!(n.a.local_balance(), LedgerBalance::ZERO);
    assert_eq!(
        n.x1.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    assert_eq!(
        n.x2.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn an_embedder_that_receives_payments_gets_them_prepared() -> TestResult {
    let n = net_with(
        9,
        "USD",
        RoutingConfig {
            local_payments: LocalPayments::Embedder,
            ..RoutingConfig::default()
        },
    )
    .await?;
    let mut x1_events = n.x1.subscribe();
    let mut a_events = n.a.subscribe();
    let f = [22u8; 32];
    let t = transfer(22, 10, "test.a.server.bob", 10, &f, 30_000);
    n.a.send_transfer(t.clone()).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut x1_events, "incoming_prepare").await?
    else {
        return Err("unexpected event".into());
    };
    // Not refused: the embedder decides.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rec = n.x1.log().get(&t.id).await?.ok_or("missing")?;
    assert_eq!(rec.state, TransferState::Prepared);
    n.x1.fulfill_condition(got.id, f, None).await?;
    next_event(&mut a_events, "outgoing_fulfill").await?;
    assert_eq!(n.x1.local_balance(), LedgerBalance(10));
    assert_eq!(
        n.x2.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn a_payment_for_the_node_left_prepared_before_a_restart_is_refused_after_it() -> TestResult {
    // Prepared while an embedder received payments (a schema version-1 database may also hold such transfers,
    // left prepared by builds that did not refuse them); restarted without a receiver, the router refuses it
    // once its peer is back instead of letting it expire.
    let x1_options = json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "100000",
        "prefix": "test.a.", "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true});
    let cfg = PeerConfig::from_legacy_json("x1", &x1_options)?;
    let x1_stores = MemoryStores::new(cfg.max_balance, cfg.min_balance);
    let x1 = trustline_on("x1", &x1_options, x1_stores.clone())?;
    let a = client("a")?;
    let (a_link, _) = MemoryLink::pair(&a, &x1);
    let router = Router::new(
        RoutingConfig {
            local_payments: LocalPayments::Embedder,
            ..RoutingConfig::default()
        },
        Arc::new(SystemClock),
    );
    router.add_peer(&x1);
    x1.connect().await?;
    a.connect().await?;
    let t = transfer(23, 10, "test.a.server.bob", 10, &[23u8; 32], 30_000);
    a.send_transfer(t.clone()).await?;
    drop((router, x1));

    let x1 = trustline_on("x1", &x1_options, x1_stores)?;
    x1.start().await?;
    let router = Router::new(RoutingConfig::default(), Arc::new(SystemClock));
    router.add_peer(&x1);
    assert_eq!(router.recover().await?, 1);
    let mut a_events = a.subscribe();
    a_link.retarget(&x1);
    x1.set_link(MemoryLink::new(&a));
    x1.connect().await?;
    let e = reject_within(&mut a_events, Duration::from_secs(5)).await?;
    assert_eq!(e.code_str(), "F02");
    let rec = x1.log().get(&t.id).await?.ok_or("missing")?;
    assert!(
        matches!(rec.state, TransferState::Cancelled { .. }),
        "{rec:?}"
    );
    assert_eq!(a.local_balance(), LedgerBalance::ZERO);
    Ok(())
}
