//! Our Fulfill with an unknown outcome (no reply, socket dropped, no socket) is neither counted nor dropped:
//! the transfer stays prepared with its expiry held, and the Fulfill is re-sent until the peer answers.
//! Legacy counted it at once, so a Fulfill that never arrived left the payee credited and the payer not.
//! Also: the payee's Prepare answer does not wait for a sync, but no preimage goes out unless the note before
//! it is synced.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use btp::ilp_v1::{IlpV1Packet, Payment};
use btp::packet::Packet;
use btp::transport::{Reply, RpcError};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Transfer, TransferId, TransferState};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{MemoryLink, PeerError, PeerLink, PeerStores, Trustline, TrustlineOptions};
use ilp_bridge::store::{Db, RocksStores};
use ilp_bridge::testing::TokioClock;
use serde_json::json;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const FULFILLMENT: [u8; 32] = [7; 32];
const AMOUNT: u64 = 40;
/// Longest a test waits for the re-sends to settle (paused time: advanced automatically).
const SETTLE_WAIT: Duration = Duration::from_secs(600);

/// What [`LossyLink`] does with a request.
const PASS: u8 = 0;
/// The socket drops before the request is written: never delivered, `Disconnected`.
const DROP_REQUEST: u8 = 1;
/// The request is delivered and handled, the socket drops before the reply: `Disconnected`.
const DROP_REPLY: u8 = 2;

/// The payee's link to the payer, with a socket that can drop at either point of a request.
struct LossyLink {
    inner: Arc<MemoryLink>,
    mode: AtomicU8,
    /// Requests the payee tried to send.
    sent: AtomicUsize,
}

#[async_trait]
impl PeerLink for LossyLink {
    async fn request(&self, packet: Packet, timeout: Duration) -> Result<Reply, RpcError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            DROP_REQUEST => Err(RpcError::Disconnected),
            DROP_REPLY => {
                self.inner.request(packet, timeout).await?;
                Err(RpcError::Disconnected)
            }
            _ => self.inner.request(packet, timeout).await,
        }
    }
}

/// The payee (`server`, listening side) and the payer (`client`), linked in memory.
struct Pair {
    server: Trustline,
    client: Trustline,
    /// server → client, client → server.
    links: (Arc<MemoryLink>, Arc<MemoryLink>),
    /// Wraps `links.0`; the server sends through it.
    lossy: Arc<LossyLink>,
    /// The payee's stores (in memory; they outlive a payee "restart" like a database folder would).
    server_stores: MemoryStores,
}

/// The payee's hold window: the transfers here expire an hour ahead, so that re-sends (backing off to 30 s)
/// play out before any expiry.
const HOLD: Duration = Duration::from_secs(2 * 3600);

fn server_config() -> Result<PeerConfig, Box<dyn std::error::Error>> {
    let mut config = PeerConfig::from_legacy_json(
        "server",
        &json!({
            "listener": {"port": 0}, "incomingSecret": "secret", "maxBalance": "1000",
            "prefix": "test.retry.", "info": {"currencyCode": "USD", "currencyScale": 9}
        }),
    )?;
    config.limits.max_hold = HOLD;
    Ok(config)
}

fn options() -> TrustlineOptions {
    TrustlineOptions {
        clock: Arc::new(TokioClock::new()),
        ..TrustlineOptions::default()
    }
}

async fn pair() -> Result<Pair, Box<dyn std::error::Error>> {
    let sc = server_config()?;
    let server_stores = MemoryStores::new(sc.max_balance, sc.min_balance);
    pair_on(Arc::new(server_stores.clone()), server_stores).await
}

/// [`pair`] with the payee on `stores` (`memory` is then unused by the payee).
async fn pair_on(
    stores: Arc<dyn PeerStores>,
    memory: MemoryStores,
) -> Result<Pair, Box<dyn std::error::Error>> {
    let sc = server_config()?;
    let cc = PeerConfig::from_legacy_json(
        "client",
        &json!({"server": "btp+ws://:secret@127.0.0.1:1", "maxBalance": "1000"}),
    )?;
    let options = options();
    let server_stores = memory;
    let server = Trustline::new(&sc, stores, None, options.clone())?;
    let client = Trustline::new(
        &cc,
        Arc::new(MemoryStores::new(cc.max_balance, cc.min_balance)),
        None,
        options,
    )?;
    let links = MemoryLink::pair(&server, &client);
    let lossy = Arc::new(LossyLink {
        inner: links.0.clone(),
        mode: AtomicU8::new(PASS),
        sent: AtomicUsize::new(0),
    });
    server.set_link(lossy.clone());
    server.connect().await?;
    client.connect().await?;
    Ok(Pair {
        server,
        client,
        links,
        lossy,
        server_stores,
    })
}

/// The client pays the server `AMOUNT` in one transfer expiring in `expires_in`; returns its ID once the
/// server has it prepared.
async fn prepared_transfer(
    p: &Pair,
    expires_in: Duration,
) -> Result<TransferId, Box<dyn std::error::Error>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let id = TransferId([3; 16]);
    let transfer = Transfer {
        id,
        amount: LedgerAmount(AMOUNT),
        execution_condition: Sha256::digest(FULFILLMENT).into(),
        expires_at_ms: now_ms + expires_in.as_millis() as i64,
        ilp: IlpV1Packet::Payment(Payment {
            amount: AMOUNT,
            account: "test.retry.server.bob".to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    p.client.send_transfer(transfer).await?;
    assert_eq!(state(&p.server, &id).await?, Some(TransferState::Prepared));
    Ok(id)
}

async fn state(
    tl: &Trustline,
    id: &TransferId,
) -> Result<Option<TransferState>, Box<dyn std::error::Error>> {
    Ok(tl.log().get(id).await?.map(|r| r.state))
}

fn fulfilled(s: &Option<TransferState>) -> bool {
    matches!(s, Some(TransferState::Fulfilled { .. }))
}

fn cancelled(s: &Option<TransferState>) -> bool {
    matches!(s, Some(TransferState::Cancelled { .. }))
}

/// The payee fulfills `id`; the Fulfill reaches the payer, which applies it, but the reply is lost.
async fn fulfill_with_reply_lost(p: &Pair, id: TransferId) -> TestResult {
    p.lossy.mode.store(DROP_REPLY, Ordering::SeqCst);
    let result = p.server.fulfill_condition(id, FULFILLMENT, None).await;
    assert!(
        matches!(result, Err(PeerError::Rpc(RpcError::Disconnected))),
        "{result:?}"
    );
    assert!(fulfilled(&state(&p.client, &id).await?));
    Ok(())
}

/// Waits (paused time) until the server has no unacknowledged Fulfill left.
async fn resends_settled(server: &Trustline) -> TestResult {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    while !server.unacknowledged_fulfills().is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err("the Fulfill was never acknowledged".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_fulfill_that_never_arrived_is_resent_and_counted_once_accepted() -> TestResult {
    let p = pair().await?;
    let id = prepared_transfer(&p, Duration::from_secs(3600)).await?;
    p.lossy.mode.store(DROP_REQUEST, Ordering::SeqCst);
    let result = p.server.fulfill_condition(id, FULFILLMENT, None).await;
    assert!(
        matches!(result, Err(PeerError::Rpc(RpcError::Disconnected))),
        "{result:?}"
    );
    // Not counted while the payer has not seen it.
    assert_eq!(state(&p.server, &id).await?, Some(TransferState::Prepared));
    assert_eq!(p.server.local_balance(), LedgerBalance::ZERO);
    assert_eq!(p.server.unacknowledged_fulfills(), vec![id]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        state(&p.server, &id).await?,
        Some(TransferState::Prepared),
        "still held while the link is down"
    );
    assert_eq!(state(&p.client, &id).await?, Some(TransferState::Prepared));
    // The preimage may be out: the payee may no longer reject the transfer.
    let reject = p
        .server
        .reject_incoming_transfer(id, p.server.expiry_error())
        .await;
    assert!(matches!(reject, Err(PeerError::Refused(_))), "{reject:?}");
    assert_eq!(state(&p.server, &id).await?, Some(TransferState::Prepared));

    p.lossy.mode.store(PASS, Ordering::SeqCst);
    resends_settled(&p.server).await?;
    assert!(fulfilled(&state(&p.server, &id).await?));
    assert!(fulfilled(&state(&p.client, &id).await?));
    assert_eq!(p.server.local_balance(), LedgerBalance(i128::from(AMOUNT)));
    assert_eq!(p.client.local_balance(), LedgerBalance(-i128::from(AMOUNT)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_fulfill_whose_reply_was_lost_is_not_counted_twice() -> TestResult {
    let p = pair().await?;
    let id = prepared_transfer(&p, Duration::from_secs(3600)).await?;
    fulfill_with_reply_lost(&p, id).await?;
    assert_eq!(
        p.server.local_balance(),
        LedgerBalance::ZERO,
        "not counted before the payer confirms"
    );

    p.lossy.mode.store(PASS, Ordering::SeqCst);
    resends_settled(&p.server).await?;
    // The repeat is answered idempotently; each side counts the transfer exactly once.
    assert!(fulfilled(&state(&p.server, &id).await?));
    assert_eq!(p.server.local_balance(), LedgerBalance(i128::from(AMOUNT)));
    assert_eq!(p.client.local_balance(), LedgerBalance(-i128::from(AMOUNT)));
    assert_eq!(
        p.server.log().sums().incoming_fulfilled,
        LedgerSum(u128::from(AMOUNT))
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_resent_fulfill_the_payer_refuses_lets_the_transfer_expire_on_both_sides() -> TestResult {
    // No socket at all (NotConnected) this time, in both directions.
    let p = pair().await?;
    let id = prepared_transfer(&p, Duration::from_secs(2)).await?;
    p.links.0.set_up(false);
    p.links.1.set_up(false);
    assert!(p
        .server
        .fulfill_condition(id, FULFILLMENT, None)
        .await
        .is_err());
    // Past the expiry: the payer expires its transfer; the payee holds its own while it waits for an answer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(cancelled(&state(&p.client, &id).await?));
    assert_eq!(state(&p.server, &id).await?, Some(TransferState::Prepared));

    p.links.0.set_up(true);
    p.links.1.set_up(true);
    resends_settled(&p.server).await?;
    // The payer answers F05 (already cancelled): the payee cancels too, nobody is credited.
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    while !cancelled(&state(&p.server, &id).await?) {
        if tokio::time::Instant::now() > deadline {
            return Err("the payee never expired the refused transfer".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.server.local_balance(), LedgerBalance::ZERO);
    assert_eq!(p.client.local_balance(), LedgerBalance::ZERO);
    assert_eq!(
        p.server.log().sums().incoming_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_payee_restarted_mid_fulfill_resends_it_from_its_noted_fulfillment() -> TestResult {
    let p = pair().await?;
    let id = prepared_transfer(&p, Duration::from_secs(3600)).await?;
    // The payee "crashes" before learning the outcome of its Fulfill.
    fulfill_with_reply_lost(&p, id).await?;
    let noted = p.server.log().noted_fulfillments().await?;
    assert_eq!(noted.len(), 1, "the preimage was noted before it went out");
    let stores = p.server_stores.clone();
    drop(p.server);

    // A new payee on the same (durable) store: `start` resumes the Fulfill instead of letting it expire.
    let sc = server_config()?;
    let server = Trustline::new(&sc, Arc::new(stores), None, options())?;
    p.links.1.retarget(&server);
    server.set_link(p.links.0.clone());
    server.connect().await?;
    assert_eq!(server.start().await?, 1);
    assert_eq!(server.unacknowledged_fulfills(), vec![id]);
    resends_settled(&server).await?;
    assert!(fulfilled(&state(&server, &id).await?));
    assert_eq!(server.local_balance(), LedgerBalance(i128::from(AMOUNT)));
    assert_eq!(p.client.local_balance(), LedgerBalance(-i128::from(AMOUNT)));
    assert_eq!(server.log().noted_fulfillments().await?, vec![]);
    Ok(())
}

/// The payee answers a Prepare before its record is synced (deferred durability). If that write fails, the
/// database is poisoned, so the synced note that must precede any Fulfill fails too: the preimage is never
/// revealed, the payer's transfer just expires, and nobody counts it.
#[tokio::test]
async fn a_payee_whose_prepare_write_fails_never_reveals_the_preimage() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sc = server_config()?;
    {
        let db = Db::open(dir.path())?;
        let stores = RocksStores::new(Arc::clone(&db), "server", sc.max_balance, sc.min_balance);
        let p = pair_on(
            Arc::new(stores),
            MemoryStores::new(sc.max_balance, sc.min_balance),
        )
        .await?;
        db.inject_write_failures(1);
        let id = prepared_transfer(&p, Duration::from_millis(500)).await?;
        let sent_before = p.lossy.sent.load(Ordering::SeqCst);
        let refused = p.server.fulfill_condition(id, FULFILLMENT, None).await;
        assert!(
            refused.is_err(),
            "the note must fail on a poisoned database"
        );
        assert!(db.is_poisoned());
        assert_eq!(
            p.lossy.sent.load(Ordering::SeqCst),
            sent_before,
            "no Fulfill went out"
        );
        // The payer's copy expires; neither side counts the transfer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cancelled(&state(&p.client, &id).await?) {
            if tokio::time::Instant::now() > deadline {
                return Err("the payer never expired the transfer".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(p.client.log().sums().outgoing_fulfilled, LedgerSum::ZERO);
        assert_eq!(p.server.log().sums().incoming_fulfilled, LedgerSum::ZERO);
    }
    // The lost prepare is not on disk: after a restart there is nothing to fulfill.
    let db = Db::open(dir.path())?;
    let log = RocksStores::new(db, "server", sc.max_balance, sc.min_balance).transfer_log("")?;
    assert_eq!(log.get(&TransferId([3; 16])).await?, None);
    Ok(())
}
