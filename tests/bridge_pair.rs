//! A bridged pair in one process: the legacy peer P is a trustline wired to the bridge's by a `MemoryLink`, the
//! modern connector M is a scripted `ModernLink`. Checks the packet flows both ways, what each side's books
//! say, and the answers to M's `peer.*` requests. (End to end over real sockets, with the real legacy plugin and
//! real or mock modern connectors: tests/bridge_*.rs.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Packet, Payment};
use btp::ilp_v4::{self, Address, IlpV4Packet};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::amount::{ConnectorAmount, LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Limit, Transfer, TransferId};
use ilp_bridge::bridge::modern::{IlpHandler, IlpReply, LinkError, ModernLink};
use ilp_bridge::bridge::scale::Scales;
use ilp_bridge::bridge::{BridgedPair, PairSettings, Relation};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{EventReceiver, MemoryLink, PeerEvent, Trustline, TrustlineOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const KIT_PREFIX: &str = "test.kit.";

/// What the scripted connector answers next.
#[derive(Clone)]
enum Script {
    Fulfill([u8; 32]),
    Reject(&'static [u8; 3]),
    NoAnswer,
}

/// M: answers each Prepare as scripted (fulfil by default with the preimage registered for its condition).
#[derive(Default)]
struct ScriptedModern {
    seen: Mutex<Vec<ilp_v4::Prepare>>,
    script: Mutex<VecDeque<Script>>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ModernLink for ScriptedModern {
    async fn send(
        &self,
        prepare: &ilp_v4::Prepare,
        _wait: Duration,
    ) -> Result<IlpReply, LinkError> {
        self.seen
            .lock()
            .map_err(|_| LinkError::NotSent("poisoned".into()))?
            .push(prepare.clone());
        let next = self
            .script
            .lock()
            .map_err(|_| LinkError::NotSent("poisoned".into()))?
            .pop_front()
            .unwrap_or(Script::Reject(b"F99"));
        match next {
            Script::Fulfill(f) => Ok(Ok(ilp_v4::Fulfill {
                fulfillment: f,
                data: Bytes::from_static(b"thanks"),
            })),
            Script::Reject(code) => Ok(Err(ilp_v4::Reject {
                code: *code,
                triggered_by: Some(
                    Address::new("test.m.downstream")
                        .map_err(|e| LinkError::InvalidAnswer(e.to_string()))?,
                ),
                message: "scripted".to_owned(),
                data: Bytes::from_static(b"why"),
            })),
            Script::NoAnswer => Err(LinkError::NoAnswer("scripted silence".to_owned())),
        }
    }

    fn is_connected(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Setup {
    pair: BridgedPair,
    kit: Trustline,
    p: Trustline,
    m: Arc<ScriptedModern>,
    _links: (Arc<MemoryLink>, Arc<MemoryLink>),
}

fn settings(relation: Relation) -> R<PairSettings> {
    Ok(PairSettings {
        scales: Scales {
            legacy: 9,
            modern: 6,
        },
        asset_code: "USD".to_owned(),
        expiry_margin: Duration::from_millis(1_000),
        min_window: Duration::from_millis(500),
        legacy_max_hold: Duration::from_secs(60),
        relation,
        modern_address: Address::new("test.m.kit")?,
        child_address: Some(Address::new("test.m.kit.child")?),
    })
}

async fn setup(relation: Relation) -> R<Setup> {
    let kit_config = PeerConfig::from_legacy_json(
        "kit",
        &json!({
            "listener": {"port": 0}, "incomingSecret": "secret", "maxBalance": "1000000000",
            "prefix": KIT_PREFIX, "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true
        }),
    )?;
    let p_config = PeerConfig::from_legacy_json(
        "p",
        &json!({"server": "btp+ws://:secret@127.0.0.1:1", "store": true, "maxBalance": "1000000000"}),
    )?;
    let kit = Trustline::new(
        &kit_config,
        Arc::new(MemoryStores::new(
            kit_config.max_balance,
            kit_config.min_balance,
        )),
        None,
        TrustlineOptions::default(),
    )?;
    let p = Trustline::new(
        &p_config,
        Arc::new(MemoryStores::new(
            p_config.max_balance,
            p_config.min_balance,
        )),
        None,
        TrustlineOptions::default(),
    )?;
    let modern_log = MemoryStores::new(Limit::Unbounded, Limit::Unbounded).transfer_log("")?;
    let pair = BridgedPair::new(kit.clone(), modern_log, settings(relation)?, None);
    let m = Arc::new(ScriptedModern::default());
    pair.set_link(m.clone());
    let links = MemoryLink::pair(&kit, &p);
    kit.start().await?;
    kit.connect().await?;
    p.connect().await?;
    Ok(Setup {
        pair,
        kit,
        p,
        m,
        _links: links,
    })
}

fn preimage(n: u8) -> ([u8; 32], [u8; 32]) {
    let f = [n; 32];
    (f, Sha256::digest(f).into())
}

fn payment(account: &str, amount: u64) -> Vec<u8> {
    IlpV1Packet::Payment(Payment {
        amount,
        account: account.to_owned(),
        data: Bytes::from_static(b"memo"),
    })
    .to_bytes()
    .to_vec()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest wait for an event of P.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// The next event of `rx` matching `pick`, within [`EVENT_WAIT`].
async fn event<T>(rx: &mut EventReceiver, mut pick: impl FnMut(PeerEvent) -> Option<T>) -> R<T> {
    // A bound on liveness, not a speed check: under the whole suite's load (disk-fault tests filling
    // filesystems, SIGKILL harnesses) a durable write can stall for seconds.
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv()).await??;
        if let Some(t) = pick(e) {
            return Ok(t);
        }
    }
}

/// P pays `legacy_amount` to `destination` through the bridge; returns the transfer's ID.
async fn p_pays(
    s: &Setup,
    destination: &str,
    legacy_amount: u64,
    condition: [u8; 32],
) -> R<TransferId> {
    p_pays_expiring(s, destination, legacy_amount, condition, 10_000).await
}

async fn p_pays_expiring(
    s: &Setup,
    destination: &str,
    legacy_amount: u64,
    condition: [u8; 32],
    expires_in_ms: i64,
) -> R<TransferId> {
    let id = TransferId(*uuid::Uuid::new_v4().as_bytes());
    s.p.send_transfer(Transfer {
        id,
        amount: LedgerAmount(legacy_amount),
        execution_condition: condition,
        expires_at_ms: now_ms() + expires_in_ms,
        ilp: payment(destination, legacy_amount),
        custom: None,
    })
    .await?;
    Ok(id)
}

#[tokio::test]
async fn a_payment_from_the_legacy_peer_crosses_and_its_fulfill_comes_back() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    let (f, c) = preimage(1);
    s.m.script
        .lock()
        .map_err(|_| "poisoned")?
        .push_back(Script::Fulfill(f));
    let id = p_pays(&s, "test.m.bob", 1_234_567, c).await?;
    let fulfilled = event(&mut events, |e| match e {
        PeerEvent::OutgoingFulfill {
            transfer,
            fulfillment,
            ..
        } if transfer.id == id => Some(fulfillment),
        _ => None,
    })
    .await?;
    assert_eq!(fulfilled, f);
    let seen = s.m.seen.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].amount, 1_234,
        "nano-units to micro-units, rounded down"
    );
    assert_eq!(seen[0].destination.as_str(), "test.m.bob");
    assert_eq!(seen[0].data, Bytes::from_static(b"memo"));
    let books = s.pair.books();
    assert_eq!(books.legacy.incoming_fulfilled, LedgerSum(1_234_567));
    assert_eq!(books.modern.outgoing_fulfilled, LedgerSum(1_234));
    assert_eq!(s.p.local_balance(), LedgerBalance(-1_234_567));
    Ok(())
}

#[tokio::test]
async fn a_reject_from_the_modern_connector_reaches_the_legacy_peer_translated() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    s.m.script
        .lock()
        .map_err(|_| "poisoned")?
        .push_back(Script::Reject(b"T04"));
    let (_, c) = preimage(2);
    let id = p_pays(&s, "test.m.bob", 5_000_000, c).await?;
    let reason = event(&mut events, |e| match e {
        PeerEvent::OutgoingReject { transfer, reason } if transfer.id == id => Some(reason),
        _ => None,
    })
    .await?;
    assert_eq!(reason.code, "T04");
    assert_eq!(reason.name, "Insufficient Liquidity");
    assert_eq!(reason.triggered_by, "test.m.downstream");
    assert_eq!(reason.forwarded_by.as_deref(), Some("test.kit.server"));
    let books = s.pair.books();
    assert_eq!(
        books.modern.outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO,
        "the modern record is cancelled"
    );
    assert_eq!(
        books.legacy.incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn without_a_modern_connection_payments_are_refused_t01_and_dust_r01() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    s.m.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, c) = preimage(3);
    let id = p_pays(&s, "test.m.bob", 5_000_000, c).await?;
    let code = event(&mut events, |e| match e {
        PeerEvent::OutgoingReject { transfer, reason } if transfer.id == id => Some(reason.code),
        _ => None,
    })
    .await?;
    assert_eq!(code, "T01");
    s.m.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = p_pays(&s, "test.m.bob", 999, c).await?;
    let code = event(&mut events, |e| match e {
        PeerEvent::OutgoingReject { transfer, reason } if transfer.id == id => Some(reason.code),
        _ => None,
    })
    .await?;
    assert_eq!(code, "R01", "less than one micro-unit cannot cross");
    assert!(
        s.m.seen.lock().map_err(|_| "poisoned")?.is_empty(),
        "nothing was sent to M"
    );
    Ok(())
}

fn modern_prepare(amount: u64, condition: [u8; 32], destination: &str) -> R<ilp_v4::Prepare> {
    Ok(ilp_v4::Prepare {
        amount,
        expires_at: Timestamp::from_unix_millis(now_ms() + 20_000).ok_or("time")?,
        execution_condition: condition,
        destination: Address::new(destination)?,
        data: Bytes::from_static(b"stream"),
    })
}

#[tokio::test]
async fn a_prepare_from_the_modern_connector_crosses_and_the_legacy_fulfill_answers_it() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    let (f, c) = preimage(4);
    let p = s.p.clone();
    // P fulfils what arrives.
    let fulfiller = tokio::spawn(async move {
        let t = event(&mut events, |e| match e {
            PeerEvent::IncomingPrepare(t) => Some(t),
            _ => None,
        })
        .await
        .map_err(|e| e.to_string())?;
        p.fulfill_condition(t.id, f, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<Transfer, String>(t)
    });
    let reply = s
        .pair
        .handle_prepare(modern_prepare(2_500, c, "test.kit.alice")?)
        .await;
    let arrived = fulfiller.await??;
    let fulfill = reply.map_err(|r| format!("rejected: {r:?}"))?;
    assert_eq!(fulfill.fulfillment, f);
    assert_eq!(
        arrived.amount,
        LedgerAmount(2_500_000),
        "micro-units to nano-units, exact"
    );
    match IlpV1Packet::decode(&Bytes::from(arrived.ilp.clone()))? {
        IlpV1Packet::Payment(p) => {
            assert_eq!(p.account, "test.kit.alice");
            assert_eq!(p.amount, 2_500_000);
            assert_eq!(p.data, Bytes::from_static(b"stream"));
        }
        other => return Err(format!("not a payment: {other:?}").into()),
    }
    let books = s.pair.books();
    assert_eq!(books.modern.incoming_fulfilled, LedgerSum(2_500));
    assert_eq!(books.legacy.outgoing_fulfilled, LedgerSum(2_500_000));
    Ok(())
}

#[tokio::test]
async fn the_legacy_peers_reject_and_refusal_answer_the_modern_connector() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    let p = s.p.clone();
    let rejecter = tokio::spawn(async move {
        let t = event(&mut events, |e| match e {
            PeerEvent::IncomingPrepare(t) => Some(t),
            _ => None,
        })
        .await
        .map_err(|e| e.to_string())?;
        let reason = btp::ilp_v1::IlpV1Error {
            code: *b"F06",
            name: "Unexpected Payment".to_owned(),
            triggered_by: "test.kit.alice".to_owned(),
            forwarded_by: Vec::new(),
            triggered_at: Timestamp::now(),
            data: Bytes::from_static(br#"{"message":"nobody here"}"#),
        };
        p.reject_incoming_transfer(t.id, reason)
            .await
            .map_err(|e| e.to_string())
    });
    let (_, c) = preimage(5);
    let reply = s
        .pair
        .handle_prepare(modern_prepare(10, c, "test.kit.alice")?)
        .await;
    rejecter.await??;
    let reject = reply.err().ok_or("fulfilled?")?;
    assert_eq!(reject.code, *b"F06");
    assert_eq!(reject.message, "Unexpected Payment: nobody here");
    assert_eq!(
        reject
            .triggered_by
            .map(|a| a.as_str().to_owned())
            .as_deref(),
        Some("test.kit.alice")
    );
    // Over P's limit: P refuses the transfer itself (a BTP Error), which M sees as T04.
    let reply = s
        .pair
        .handle_prepare(modern_prepare(2_000_000, c, "test.kit.alice")?)
        .await;
    let reject = reply.err().ok_or("fulfilled?")?;
    assert_eq!(reject.code, *b"T04", "{reject:?}");
    assert_eq!(
        s.pair.books().modern.incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn il_dcp_is_answered_to_a_child_and_peer_protocols_never_reach_the_legacy_peer() -> R {
    let s = setup(Relation::Child).await?;
    let now = Timestamp::now();
    let reply = s
        .pair
        .handle_prepare(btp::ildcp::IldcpRequest.to_prepare(now))
        .await;
    let fulfill = reply.map_err(|r| format!("{r:?}"))?;
    let config = btp::ildcp::IldcpResponse::from_fulfill(&fulfill)?;
    assert_eq!(config.address.as_str(), "test.m.kit.child");
    assert_eq!((config.asset_scale, config.asset_code.as_str()), (6, "USD"));
    let settle = btp::peer_protocol::peer_prepare(
        Address::new("peer.settle")?,
        Bytes::from_static(b"{}"),
        now,
        Duration::from_secs(30),
    );
    assert_eq!(
        s.pair.handle_prepare(settle).await.err().map(|r| r.code),
        Some(*b"F00")
    );
    // A parent gets no IL-DCP answer.
    let parent = setup(Relation::Parent).await?;
    let reply = parent
        .pair
        .handle_prepare(btp::ildcp::IldcpRequest.to_prepare(now))
        .await;
    assert_eq!(reply.err().map(|r| r.code), Some(*b"F00"));
    assert_eq!(
        s.kit.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn route_control_from_the_modern_connector_gets_our_route() -> R {
    let s = setup(Relation::Peer).await?;
    let control = btp::ccp::RouteControlRequest {
        mode: btp::ccp::Mode::Sync,
        last_known_routing_table_id: [0; 16],
        last_known_epoch: 0,
        features: Vec::new(),
    };
    s.m.script
        .lock()
        .map_err(|_| "poisoned")?
        .push_back(Script::Fulfill([0; 32]));
    let reply = s
        .pair
        .handle_prepare(control.to_prepare(Timestamp::now()))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    // The update goes out on its own task.
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    let update = loop {
        if let Some(p) = s.m.seen.lock().map_err(|_| "poisoned")?.first().cloned() {
            break p;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no route update sent".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let update = btp::ccp::RouteUpdateRequest::from_prepare(&update)?;
    assert_eq!(update.speaker.as_str(), "test.m.kit");
    assert_eq!(update.new_routes.len(), 1);
    assert_eq!(update.new_routes[0].prefix, "test.kit");
    assert_eq!(update.new_routes[0].path, vec!["test.m.kit".to_owned()]);
    let _ = IlpV4Packet::Prepare(control.to_prepare(Timestamp::now()));
    Ok(())
}

#[tokio::test]
async fn without_an_answer_the_legacy_transfer_expires_and_the_outcome_is_counted_unknown() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    s.m.script
        .lock()
        .map_err(|_| "poisoned")?
        .push_back(Script::NoAnswer);
    let (_, c) = preimage(6);
    let id = p_pays_expiring(&s, "test.m.bob", 7_000_000, c, 2_000).await?;
    // P's transfer expires at the bridge, which sends P the legacy expiry Reject (R00).
    let code = event(&mut events, |e| match e {
        PeerEvent::OutgoingReject { transfer, reason } if transfer.id == id => Some(reason.code),
        _ => None,
    })
    .await?;
    assert_eq!(code, "R00");
    let books = s.pair.books();
    assert_eq!(books.unknown_outcomes, (1, ConnectorAmount(7_000)));
    assert_eq!(books.legacy.incoming_fulfilled, LedgerSum::ZERO);
    Ok(())
}

#[tokio::test]
async fn a_fulfill_from_the_modern_side_written_before_a_crash_is_delivered_by_recovery() -> R {
    let s = setup(Relation::Child).await?;
    let mut events = s.p.subscribe();
    // M takes the Prepare and the answer is lost (a crash of the bridge right after M's Fulfill was written
    // down, before it reached the trustline, looks the same from the logs).
    s.m.script
        .lock()
        .map_err(|_| "poisoned")?
        .push_back(Script::NoAnswer);
    let (f, c) = preimage(7);
    let id = p_pays(&s, "test.m.bob", 3_000_000, c).await?;
    let modern = ilp_bridge::bridge::pair::modern_id("kit", &id);
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    while s.pair.modern_log().get(&modern).await?.is_none() {
        if tokio::time::Instant::now() > deadline {
            return Err("the modern record was never written".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.pair.modern_log().fulfill(&modern, &f).await?;
    let found = s.pair.recover().await?;
    assert_eq!(found.fulfills_resumed, 1);
    let fulfilled = event(&mut events, |e| match e {
        PeerEvent::OutgoingFulfill {
            transfer,
            fulfillment,
            ..
        } if transfer.id == id => Some(fulfillment),
        _ => None,
    })
    .await?;
    assert_eq!(fulfilled, f);
    assert_eq!(s.pair.books().legacy.incoming_fulfilled.0, 3_000_000);
    Ok(())
}

#[tokio::test]
async fn recovery_closes_modern_records_whose_legacy_side_finished() -> R {
    let s = setup(Relation::Child).await?;
    // A record of a transfer M sent us, whose legacy counterpart does not exist (lost before it was written).
    let legacy = TransferId([9; 16]);
    let modern = ilp_bridge::bridge::pair::modern_id("kit", &legacy);
    s.pair
        .modern_log()
        .prepare(
            &Transfer {
                id: modern,
                amount: LedgerAmount(5),
                execution_condition: [1; 32],
                expires_at_ms: now_ms() + 60_000,
                ilp: b"test.kit.alice".to_vec(),
                custom: Some(json!({ "legacy": legacy.to_uuid_string() })),
            },
            channel_modules::store::Direction::Incoming,
        )
        .await?;
    let found = s.pair.recover().await?;
    assert_eq!(found.closed, 1);
    assert!(matches!(
        s.pair.modern_log().get(&modern).await?.map(|r| r.state),
        Some(channel_modules::store::TransferState::Cancelled { .. })
    ));
    assert_eq!(s.kit.log().sums().outgoing_fulfilled_and_prepared.0, 0);
    Ok(())
}
