//! A routed payment A → [X1 | router | X2] → C whose next hop (C) fulfilled it: the bridge has paid C, so it
//! must collect from A. Whether our Fulfill to A is late is A's decision, not our clock's, and the source
//! transfer's own expiry timer must not cancel it while the bridge holds C's fulfillment (also across a
//! restart).
//!
//! The bridge's trustlines (X1, X2) run on an injected clock; A runs on its own clock, behind the bridge's, so
//! it still accepts a Fulfill that is late by the bridge's clock. X2's store is slow to apply C's Fulfill
//! (a slow disk sync), which is how the bridge's clock passes the source's expiry after C was paid.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance};
use channel_modules::clock::{Clock, SystemClock};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{
    Direction, Limit, MaxValueTracker, NotedFulfillment, PrepareOutcome, StoreError, Sums,
    Transfer, TransferId, TransferLog, TransferLogError, TransferRecord, TransferState,
};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::routing::RoutingConfig;
use ilp_bridge::peer::{
    forward_id, EventReceiver, MemoryLink, PeerEvent, PeerStores, Router, Trustline,
    TrustlineOptions,
};
use ilp_bridge::testing::TokioClock;
use serde_json::json;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type R<T> = Result<T, Box<dyn std::error::Error>>;

const FULFILLMENT: [u8; 32] = [5; 32];
const AMOUNT: u64 = 10;

/// A clock that reads `base` plus an offset the test (or a slow store) moves.
struct ShiftedClock {
    base: Arc<dyn Clock>,
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    fn new(base: Arc<dyn Clock>, offset_ms: i64) -> Arc<ShiftedClock> {
        Arc::new(ShiftedClock {
            base,
            offset_ms: AtomicI64::new(offset_ms),
        })
    }

    fn jump(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::SeqCst);
        let base = self.base.now();
        if offset >= 0 {
            base + Duration::from_millis(offset as u64)
        } else {
            base - Duration::from_millis(offset.unsigned_abs())
        }
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How X2's store delays applying a Fulfill of an outgoing transfer (the synced `fulfill`).
#[derive(Clone)]
enum Slowness {
    /// The bridge's clock jumps forward while the write is under way (no time passes for timers).
    ClockJump(Arc<ShiftedClock>, Duration),
    /// The write takes this long (tokio time) before it applies.
    Sleep(Duration),
}

/// A transfer log whose synced `fulfill` is slow (see [`Slowness`]); everything else is `inner`'s.
struct SlowFulfillLog {
    inner: Arc<dyn TransferLog>,
    slowness: Slowness,
}

#[async_trait]
impl TransferLog for SlowFulfillLog {
    async fn prepare(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError> {
        self.inner.prepare(transfer, direction).await
    }
    async fn fulfill(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError> {
        match &self.slowness {
            Slowness::ClockJump(clock, by) => clock.jump(*by),
            Slowness::Sleep(d) => tokio::time::sleep(*d).await,
        }
        self.inner.fulfill(id, fulfillment).await
    }
    async fn cancel(
        &self,
        id: &TransferId,
        reason: &str,
    ) -> Result<TransferRecord, TransferLogError> {
        self.inner.cancel(id, reason).await
    }
    async fn get(&self, id: &TransferId) -> Result<Option<TransferRecord>, TransferLogError> {
        self.inner.get(id).await
    }
    fn sums(&self) -> Sums {
        self.inner.sums()
    }
    fn maximum(&self) -> Limit {
        self.inner.maximum()
    }
    fn minimum(&self) -> Limit {
        self.inner.minimum()
    }
    async fn set_maximum(&self, maximum: Limit) -> Result<(), TransferLogError> {
        self.inner.set_maximum(maximum).await
    }
    async fn set_minimum(&self, minimum: Limit) -> Result<(), TransferLogError> {
        self.inner.set_minimum(minimum).await
    }
    async fn prepared(&self) -> Result<Vec<TransferRecord>, TransferLogError> {
        self.inner.prepared().await
    }
    async fn note_fulfillment(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
        ilp: &[u8],
    ) -> Result<(), TransferLogError> {
        self.inner.note_fulfillment(id, fulfillment, ilp).await
    }
    async fn noted_fulfillments(&self) -> Result<Vec<NotedFulfillment>, TransferLogError> {
        self.inner.noted_fulfillments().await
    }
}

/// X2's stores: [`MemoryStores`] whose main log is a [`SlowFulfillLog`] (one instance, as the trait requires).
struct SlowStores {
    inner: MemoryStores,
    main: Arc<dyn TransferLog>,
}

impl SlowStores {
    fn new(inner: MemoryStores, slowness: Slowness) -> R<Arc<SlowStores>> {
        let main = Arc::new(SlowFulfillLog {
            inner: PeerStores::transfer_log(&inner, "")?,
            slowness,
        });
        Ok(Arc::new(SlowStores { inner, main }))
    }
}

impl PeerStores for SlowStores {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        if key.is_empty() {
            Ok(Arc::clone(&self.main))
        } else {
            PeerStores::transfer_log(&self.inner, key)
        }
    }
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        PeerStores::max_value_tracker(&self.inner, key)
    }
}

fn server_options(prefix: &str) -> serde_json::Value {
    json!({"listener": {"port": 0}, "incomingSecret": "s", "maxBalance": "100000", "prefix": prefix,
        "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true})
}

fn client_options() -> serde_json::Value {
    json!({"server": "btp+ws://:s@127.0.0.1:1", "maxBalance": "100000", "store": true})
}

fn memory_stores(options: &serde_json::Value) -> R<MemoryStores> {
    let cfg = PeerConfig::from_legacy_json("x", options)?;
    Ok(MemoryStores::new(cfg.max_balance, cfg.min_balance))
}

fn trustline(
    name: &str,
    options: &serde_json::Value,
    stores: Arc<dyn PeerStores>,
    clock: Arc<dyn Clock>,
) -> R<Trustline> {
    let cfg = PeerConfig::from_legacy_json(name, options)?;
    Ok(Trustline::new(
        &cfg,
        stores,
        None,
        TrustlineOptions {
            clock,
            ..TrustlineOptions::default()
        },
    )?)
}

/// The payment network; `x1_stores` and `x2_stores` outlive a bridge "restart".
struct Net {
    a: Trustline,
    c: Trustline,
    x1: Trustline,
    x2: Trustline,
    router: Arc<Router>,
    x1_stores: MemoryStores,
    x2_stores: MemoryStores,
    a_link: Arc<MemoryLink>,
}

/// A and C on `payer_clock` and `payee_clock`, X1 and X2 on `bridge_clock`, X2's store slow as `slowness`.
async fn net(
    bridge_clock: Arc<dyn Clock>,
    payer_clock: Arc<dyn Clock>,
    payee_clock: Arc<dyn Clock>,
    slowness: Slowness,
) -> R<Net> {
    let (x1_options, x2_options) = (server_options("test.a."), server_options("test.b."));
    let x1_stores = memory_stores(&x1_options)?;
    let x2_stores = memory_stores(&x2_options)?;
    let x1 = trustline(
        "x1",
        &x1_options,
        Arc::new(x1_stores.clone()),
        Arc::clone(&bridge_clock),
    )?;
    let x2 = trustline(
        "x2",
        &x2_options,
        SlowStores::new(x2_stores.clone(), slowness)?,
        Arc::clone(&bridge_clock),
    )?;
    let a = trustline(
        "a",
        &client_options(),
        Arc::new(memory_stores(&client_options())?),
        payer_clock,
    )?;
    let c = trustline(
        "c",
        &client_options(),
        Arc::new(memory_stores(&client_options())?),
        payee_clock,
    )?;
    let (a_link, _) = MemoryLink::pair(&a, &x1);
    MemoryLink::pair(&c, &x2);
    let router = Router::new(RoutingConfig::default(), bridge_clock);
    router.add_peer(&x1);
    router.add_peer(&x2);
    for t in [&x1, &x2, &a, &c] {
        t.connect().await?;
    }
    Ok(Net {
        a,
        c,
        x1,
        x2,
        router,
        x1_stores,
        x2_stores,
        a_link,
    })
}

/// A's payment of [`AMOUNT`] to C, expiring at `expires_at_ms`.
fn payment(expires_at_ms: i64) -> Transfer {
    Transfer {
        id: TransferId([1; 16]),
        amount: LedgerAmount(AMOUNT),
        execution_condition: Sha256::digest(FULFILLMENT).into(),
        expires_at_ms,
        ilp: IlpV1Packet::Payment(Payment {
            amount: AMOUNT,
            account: "test.b.server.carl".to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    }
}

/// The next event named `name` within `wait`; every other event seen meanwhile is named in the error.
async fn event_within(rx: &mut EventReceiver, name: &str, wait: Duration) -> R<PeerEvent> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut others = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(e) => {
                let e = e?;
                if e.name() == name {
                    return Ok(e);
                }
                others.push(e.name());
            }
            Err(_) => return Err(format!("no {name} within {wait:?}; saw {others:?}").into()),
        }
    }
}

/// A sends its payment; C gets the forwarded transfer and fulfills it (X2 accepts, slowly).
async fn pay_and_fulfill_at_c(n: &Net, t: &Transfer) -> TestResult {
    let mut c_events = n.c.subscribe();
    n.a.send_transfer(t.clone()).await?;
    let PeerEvent::IncomingPrepare(got) =
        event_within(&mut c_events, "incoming_prepare", Duration::from_secs(5)).await?
    else {
        return Err("unexpected event".into());
    };
    assert_eq!(got.id, forward_id("x1", &t.id));
    n.c.fulfill_condition(got.id, FULFILLMENT, None).await?;
    Ok(())
}

/// Every balance shows A paid C through the bridge, which got as much as it paid.
fn assert_paid(n: &Net) {
    assert_eq!(n.a.local_balance(), LedgerBalance(-(AMOUNT as i128)));
    assert_eq!(n.x1.local_balance(), LedgerBalance(AMOUNT as i128));
    assert_eq!(n.x2.local_balance(), LedgerBalance(-(AMOUNT as i128)));
    assert_eq!(n.c.local_balance(), LedgerBalance(AMOUNT as i128));
}

/// C's Fulfill is accepted in time, then (a slow store) the bridge's clock passes the source's expiry before
/// the router fulfills the source. The payer's clock says the source is still live, so it accepts the
/// Fulfill: the router must send it instead of judging it late by its own clock.
#[tokio::test]
async fn the_source_is_fulfilled_when_our_clock_says_it_expired_but_the_payer_accepts() -> TestResult
{
    let bridge = ShiftedClock::new(Arc::new(SystemClock), 0);
    let n = net(
        bridge.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemClock),
        // Past the source's expiry by the bridge's clock, with no time passing for any timer.
        Slowness::ClockJump(bridge.clone(), Duration::from_secs(30)),
    )
    .await?;
    let t = payment(ms(SystemTime::now()) + 20_000);
    let mut a_events = n.a.subscribe();
    pay_and_fulfill_at_c(&n, &t).await?;
    assert!(ms(bridge.now()) > t.expires_at_ms);
    event_within(&mut a_events, "outgoing_fulfill", Duration::from_secs(5)).await?;
    assert_paid(&n);
    Ok(())
}

/// C's Fulfill is accepted in time, but applying it takes longer than the expiry margin, so the source's own
/// expiry timer fires while the bridge is paying C. It must not cancel the source: once C's Fulfill is applied
/// the source is fulfilled (the payer, whose clock is behind, accepts).
#[tokio::test(start_paused = true)]
async fn the_source_does_not_expire_while_the_next_hops_fulfill_is_being_applied() -> TestResult {
    let tokio_clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let payer = ShiftedClock::new(Arc::clone(&tokio_clock), -10_000);
    let n = net(
        Arc::clone(&tokio_clock),
        payer,
        Arc::clone(&tokio_clock),
        // The forwarded transfer expires 1 s before the source (the margin); this write takes 3 s.
        Slowness::Sleep(Duration::from_secs(3)),
    )
    .await?;
    let t = payment(ms(tokio_clock.now()) + 2_000);
    let mut a_events = n.a.subscribe();
    pay_and_fulfill_at_c(&n, &t).await?;
    assert!(ms(tokio_clock.now()) > t.expires_at_ms);
    event_within(&mut a_events, "outgoing_fulfill", Duration::from_secs(30)).await?;
    assert_paid(&n);
    Ok(())
}

/// The bridge stops right after C's Fulfill is applied (the router never hears of it) and starts again after
/// the source's expiry by its clock. The expiry timers re-armed at start must not cancel the source before the
/// router recovers C's fulfillment: the source is fulfilled once A is back.
#[tokio::test(start_paused = true)]
async fn a_source_past_its_expiry_whose_forward_was_fulfilled_is_fulfilled_after_a_restart(
) -> TestResult {
    let tokio_clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let payer = ShiftedClock::new(Arc::clone(&tokio_clock), -10_000);
    let n = net(
        Arc::clone(&tokio_clock),
        payer,
        Arc::clone(&tokio_clock),
        Slowness::Sleep(Duration::ZERO),
    )
    .await?;
    let t = payment(ms(tokio_clock.now()) + 2_000);
    // The "crash": the router is not told of C's Fulfill.
    n.x2.clear_hook();
    pay_and_fulfill_at_c(&n, &t).await?;
    let out = forward_id("x1", &t.id);
    assert!(matches!(
        n.x2.log().get(&out).await?.map(|r| r.state),
        Some(TransferState::Fulfilled { .. })
    ));
    let Net {
        a,
        c,
        x1,
        x2,
        router,
        x1_stores,
        x2_stores,
        a_link,
    } = n;
    router.clear();
    drop((router, x1, x2));
    // Down for 3 s: the source's expiry (2 s) passes by the bridge's clock.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ms(tokio_clock.now()) > t.expires_at_ms);

    let x1 = trustline(
        "x1",
        &server_options("test.a."),
        Arc::new(x1_stores),
        Arc::clone(&tokio_clock),
    )?;
    let x2 = trustline(
        "x2",
        &server_options("test.b."),
        Arc::new(x2_stores),
        Arc::clone(&tokio_clock),
    )?;
    let router = Router::new(RoutingConfig::default(), Arc::clone(&tokio_clock));
    router.add_peer(&x1);
    router.add_peer(&x2);
    x1.start().await?;
    x2.start().await?;
    // Let the expiry re-armed for the source fire before recovery runs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    router.recover().await?;
    let mut a_events = a.subscribe();
    a_link.retarget(&x1);
    x1.set_link(MemoryLink::new(&a));
    x1.connect().await?;
    event_within(&mut a_events, "outgoing_fulfill", Duration::from_secs(60)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while x1.local_balance() != LedgerBalance(AMOUNT as i128) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("x1 balance {}", x1.local_balance()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.local_balance(), LedgerBalance(-(AMOUNT as i128)));
    assert_eq!(c.local_balance(), LedgerBalance(AMOUNT as i128));
    Ok(())
}
