//! End to end: connector A → engine A → (messages through the mock connectors) → engine B → connector B, with
//! odd scales, restarts of either engine between accept and credit (RocksDB), and connectors down for a while.

mod poll_common;
mod se_common;

use std::time::Duration;

use ilp_bridge::settlement::quantity::Scaled;
use num_bigint::BigUint;
use rand::{Rng, SeedableRng};
use se_common::*;

const WAIT: Duration = Duration::from_secs(60);

async fn pair(
    module: &'static str,
    options: serde_json::Value,
    scale_b: Option<u8>,
    backing: fn() -> Backing,
) -> Result<(Side, Side), Box<dyn std::error::Error + Send + Sync>> {
    start_pair(
        module,
        [
            (options.clone(), None, backing()),
            (options, scale_b, backing()),
        ],
    )
    .await
}

/// A [`pair`] of in-memory `trustline` engines at module scale 6, connector B at `scale_b`.
async fn trustline_pair(
    scale_b: Option<u8>,
) -> Result<(Side, Side), Box<dyn std::error::Error + Send + Sync>> {
    pair(
        "trustline",
        serde_json::json!({"scale": 6}),
        scale_b,
        Backing::memory,
    )
    .await
}

/// Random amounts at `scale` whose sum is a multiple of `granule` (so the module can settle all of it), each
/// usually not a multiple (so leftovers carry over).
fn amounts(seed: u64, n: usize, granule: u64) -> (Vec<u64>, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v: Vec<u64> = (0..n)
        .map(|_| rng.gen_range(1..10 * granule.max(10)))
        .collect();
    let sum: u64 = v.iter().sum();
    let pad = (granule - sum % granule) % granule;
    if let Some(last) = v.last_mut() {
        *last += pad;
    }
    let total = v.iter().sum();
    (v, total)
}

async fn settle_all(a: &Side, amounts: &[u64], scale: u8) -> TestResult {
    for amt in amounts {
        let out = a.mock.settle(&a.account, &amt.to_string(), scale).await?;
        assert_eq!(out.status, 201, "{}", out.body);
        let q: serde_json::Value = serde_json::from_str(&out.body)?;
        assert_eq!(q["amount"], amt.to_string());
    }
    Ok(())
}

async fn wait_credited(b: &Side, want: &Scaled) -> TestResult {
    eventually("connector B credited", WAIT, || async {
        let got = b.mock.credited_total(&b.account);
        value_eq(&got, want)
    })
    .await
    .map_err(|e| {
        format!(
            "{e}: credited {} want {}",
            b.mock.credited_total(&b.account),
            want
        )
        .into()
    })
}

#[tokio::test]
async fn connector_scale_9_module_scale_6() -> TestResult {
    let (a, b) = trustline_pair(Some(9)).await?;
    let (amts, total) = amounts(1, 60, 1000);
    settle_all(&a, &amts, 9).await?;
    let want = Scaled::new(BigUint::from(total), 9);
    wait_credited(&b, &want).await?;
    // Every credit was at the connector's scale 9 and under its own key.
    let credits = b.mock.credits();
    assert!(credits.iter().all(|c| c.amount.scale == 9));
    let keys: std::collections::HashSet<_> = credits.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), credits.len());
    // Nothing more arrives, nothing is left anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(value_eq(&b.mock.credited_total(&b.account), &want));
    let va = a.se()?.engine.account_view(&a.account)?;
    assert_eq!(va.leftover.amount, "0");
    assert_eq!(va.in_flight.amount, "0");
    assert_eq!(va.settled.amount, (total / 1000).to_string());
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert!(vb.uncredited.is_empty());
    assert_eq!(vb.incoming_leftover.amount, "0");
    // The history names every request by key, settled by a claim.
    let h = a.se()?.engine.account_history(&a.account)?;
    assert_eq!(h.settlements.len(), amts.len());
    assert!(h
        .settlements
        .iter()
        .all(|s| s.state == "settled" && s.claim_id.is_some()));
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn connector_scale_2_module_scale_6_with_leftover_held_back() -> TestResult {
    // B credits at scale 2 while the module works at 6: nothing finer than 0.01 reaches connector B.
    let (a, b) = trustline_pair(Some(2)).await?;
    let (amts, total) = amounts(2, 40, 1);
    settle_all(&a, &amts, 2).await?;
    wait_credited(&b, &Scaled::new(BigUint::from(total), 2)).await?;
    assert!(b.mock.credits().iter().all(|c| c.amount.scale == 2));

    // Now A's connector works at scale 9 with amounts below B's unit: B holds the leftover until it adds up.
    let fine = [4_000_000u64, 3_000_000, 2_999_999, 1]; // 0.004 + 0.003 + 0.002999999 + 0.000000001 = 0.01
    for (i, amt) in fine.iter().enumerate() {
        let out = a.mock.settle(&a.account, &amt.to_string(), 9).await?;
        assert_eq!(out.status, 201);
        if i + 1 < fine.len() {
            // Not a whole 0.01 yet at B (and A cannot settle sub-micro amounts): total unchanged.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(value_eq(
                &b.mock.credited_total(&b.account),
                &Scaled::new(BigUint::from(total), 2)
            ));
        }
    }
    wait_credited(&b, &Scaled::new(BigUint::from(total + 1), 2)).await?;
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn claim_test_module_end_to_end() -> TestResult {
    let opts = serde_json::json!({"scale": 6, "secret": "shared"});
    let (a, b) = pair("claim-test", opts, Some(9), Backing::memory).await?;
    let (amts, total) = amounts(3, 20, 1000);
    settle_all(&a, &amts, 9).await?;
    wait_credited(&b, &Scaled::new(BigUint::from(total), 9)).await?;
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn restarts_of_either_engine_between_accept_and_credit() -> TestResult {
    let (mut a, mut b) = pair(
        "trustline",
        serde_json::json!({"scale": 6}),
        Some(9),
        || Backing::rocks().unwrap_or_else(|_| Backing::memory()),
    )
    .await?;
    assert!(matches!(a.backing, Backing::Rocks(_)));
    let mut expected = 0u64;

    // 1. A accepts while B's connector is down (claims cannot be delivered); A restarts; then B comes back.
    b.mock.set_down().await;
    let (amts, total) = amounts(4, 25, 1000);
    settle_all(&a, &amts, 9).await?;
    expected += total;
    a.restart().await?;
    let view = a.se()?.engine.account_view(&a.account)?;
    assert_ne!(view.requested.amount, "0", "accepted requests reloaded");
    b.mock.set_up().await?;
    wait_credited(&b, &Scaled::new(BigUint::from(expected), 9)).await?;

    // 2. B receives claims but cannot credit (connector B answers 500); B restarts; the credits go through
    //    afterwards with their stable keys.
    b.mock.override_credit_status(Some(500));
    let (amts, total) = amounts(5, 25, 1000);
    settle_all(&a, &amts, 9).await?;
    expected += total;
    eventually("B received everything", WAIT, || async {
        b.se.as_ref()
            .and_then(|se| se.engine.account_view(&b.account).ok())
            .map(|v| v.received.amount == (expected / 1000).to_string())
            .unwrap_or(false)
    })
    .await?;
    let pending = b.se()?.engine.account_view(&b.account)?.uncredited.len();
    assert!(pending > 0);
    b.restart().await?;
    assert_eq!(
        b.se()?.engine.account_view(&b.account)?.uncredited.len(),
        pending
    );
    b.mock.override_credit_status(None);
    wait_credited(&b, &Scaled::new(BigUint::from(expected), 9)).await?;

    // 3. Restart both with requests queued behind a down connector A (sending fails at A's own connector).
    a.mock.set_down().await;
    let (amts, total) = amounts(6, 10, 1000);
    // The mock's settle client still runs while its server is down: engine A accepts, but its claims cannot
    // reach connector A.
    settle_all(&a, &amts, 9).await?;
    expected += total;
    a.restart().await?;
    b.restart().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.mock.set_up().await?;
    wait_credited(&b, &Scaled::new(BigUint::from(expected), 9)).await?;

    // Nothing was credited twice: each credit key is unique, and the total is exact.
    let credits = b.mock.credits();
    let keys: std::collections::HashSet<_> = credits.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), credits.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(value_eq(
        &b.mock.credited_total(&b.account),
        &Scaled::new(BigUint::from(expected), 9)
    ));
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn a_409_on_credit_is_an_alert_not_a_retry() -> TestResult {
    let (a, b) = trustline_pair(Some(9)).await?;
    b.mock.override_credit_status(Some(409));
    settle_all(&a, &[5000], 9).await?;
    eventually("alert raised", WAIT, || async {
        b.se.as_ref()
            .map(|se| !se.engine.alerts().is_empty())
            .unwrap_or(false)
    })
    .await?;
    let alerts = admin_get(b.se()?, "/alerts").await?;
    assert_eq!(alerts[0]["kind"], "credit_conflict");
    assert_eq!(alerts[0]["credit"]["amount"]["amount"], "5000");
    // Not retried: after the override is lifted nothing is credited.
    b.mock.override_credit_status(None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.mock.credits().is_empty());
    // 404 (account unknown at the connector yet) is retried until it works.
    b.mock.override_credit_status(Some(404));
    settle_all(&a, &[7000], 9).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.mock.credits().is_empty());
    b.mock.override_credit_status(None);
    wait_credited(&b, &Scaled::new(BigUint::from(7000u32), 9)).await?;
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn an_account_deleted_and_created_again_resumes_its_totals() -> TestResult {
    // The peer engine keeps its cumulative totals across our delete; had ours restarted from zero, B would
    // ignore every claim until it passed the old best one.
    let (a, b) = trustline_pair(Some(9)).await?;
    settle_all(&a, &[5_000, 7_000], 9).await?;
    wait_credited(&b, &Scaled::new(BigUint::from(12_000u32), 9)).await?;
    let engine = &a.se()?.engine;
    engine.delete_account(&a.account).await?;
    assert!(engine.account_view(&a.account).is_err(), "deleted");
    assert_eq!(
        engine.create_account(Some(a.account.clone())).await?,
        a.account
    );
    let view = engine.account_view(&a.account)?;
    assert_eq!(view.settled.amount, "12", "totals resumed (module scale 6)");
    settle_all(&a, &[3_000], 9).await?;
    wait_credited(&b, &Scaled::new(BigUint::from(15_000u32), 9)).await?;
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test]
async fn a_settle_amount_the_module_cannot_settle_is_refused_before_anything_is_written(
) -> TestResult {
    let (a, b) = trustline_pair(Some(9)).await?;
    // 2^64 units at the module's scale 6.
    let huge = (BigUint::from(u64::MAX) + 1u32).to_string();
    let out = a.mock.settle(&a.account, &huge, 6).await?;
    assert_eq!(out.status, 400, "{}", out.body);
    let view = a.se()?.engine.account_view(&a.account)?;
    assert_eq!(view.queued.amount, "0");
    assert_eq!(view.settled.amount, "0");
    // 2^64 − 1 units is still accepted.
    let max = u64::MAX.to_string();
    let out = a.mock.settle(&a.account, &max, 6).await?;
    assert_eq!(out.status, 201, "{}", out.body);
    stop_all([a, b]).await;
    Ok(())
}

/// A [`MemorySeStore`](ilp_bridge::settlement::store::MemorySeStore) that, while `hold` is set, makes a write
/// recording an incoming settlement (a pending credit) durable only once `release` is set: the write is in the
/// store at once (as a queued RocksDB batch is on disk after a crash), its ticket waits.
#[derive(Clone, Default)]
struct HoldingStore {
    inner: ilp_bridge::settlement::store::MemorySeStore,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Notified when a write is held.
    held: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl ilp_bridge::settlement::store::SeStore for HoldingStore {
    fn submit(
        &self,
        batch: ilp_bridge::settlement::store::SeBatch,
    ) -> Result<ilp_bridge::settlement::store::SeTicket, channel_modules::store::StoreError> {
        use ilp_bridge::settlement::store::{Family, Op};
        let records_a_credit = batch
            .ops()
            .iter()
            .any(|op| matches!(op, Op::Put(Family::Pending, k, _) if k.starts_with(b"se/c/")));
        let ticket = self.inner.submit(batch)?;
        if !(records_a_credit && self.hold.load(std::sync::atomic::Ordering::SeqCst)) {
            return Ok(ticket);
        }
        let mut release = self.release.subscribe();
        self.held.notify_one();
        Ok(Box::pin(async move {
            let _ = release.wait_for(|released| *released).await;
            ticket.await
        }))
    }

    fn scan_prefix(
        &self,
        family: ilp_bridge::settlement::store::Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, channel_modules::store::StoreError> {
        self.inner.scan_prefix(family, prefix)
    }

    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, channel_modules::store::StoreError> {
        self.inner.scan_page(prefix, after, limit)
    }

    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, channel_modules::store::StoreError> {
        self.inner.get_main(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_claim_whose_sender_hangs_up_mid_write_is_credited_once() -> TestResult {
    // Found by tests/kill9_engine.rs: engine A killed while its claim was being handled by engine B. The HTTP
    // server drops a request's future when its client hangs up; engine B's write of the claim (tracker, received
    // total, pending credit) was already queued, but its memory was never updated. The next claim was credited
    // from the old total under another key, and after a restart the stored credit of the first was credited
    // again: connector B was paid twice for the same IOUs.
    let mock = ilp_bridge::testing::mock_connector::MockConnector::start().await?;
    let store = HoldingStore::default();
    let logs = std::sync::Arc::new(ilp_bridge::settlement::host::MemoryModuleLogs::new());
    let identities = ilp_bridge::identity::IdentityRegistry::memory();
    let open = || {
        ilp_bridge::settlement::Engine::open(
            config(&mock.url(), "trustline", serde_json::json!({"scale": 6})),
            std::sync::Arc::new(store.clone()),
            logs.clone(),
            identities.clone(),
        )
    };
    let engine = open().await?;
    let account = "0b6c3f2e-8d51-4a8e-9c57-3f1d2a4b5c6d";
    engine.create_account(Some(account.to_owned())).await?;
    mock.register_account(account, "http://127.0.0.1:9");
    eventually("the account is set up", WAIT, || async {
        engine.account_view(account).is_ok_and(|v| v.connected)
    })
    .await?;
    let iou = |total: u64| {
        bytes::Bytes::from(format!(
            r#"{{"type":"claim","claim":{{"amount":"{total}"}}}}"#
        ))
    };

    // The IOU for 1,000: its sender hangs up while the write is queued.
    store.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::select! {
        answered = engine.handle_message(account, iou(1_000)) => {
            return Err(format!("answered while its write was held: {answered:?}").into());
        }
        () = store.held.notified() => {}
    }
    store.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    // Stored even while nothing waits on it (`send` would drop it then).
    store.release.send_replace(true);
    // The IOU for 3,000 arrives: 3,000 in all.
    engine.handle_message(account, iou(3_000)).await?;
    let want = Scaled::new(BigUint::from(3_000u32), 6);
    // Credited, and the engine has recorded that (a restart before would retry the credit and get 409).
    eventually("connector credited 3,000", WAIT, || async {
        value_eq(&mock.credited_total(account), &want)
            && engine
                .account_view(account)
                .is_ok_and(|v| v.uncredited.is_empty())
    })
    .await?;

    // After a restart nothing more is credited.
    engine.shutdown().await;
    let engine = open().await?;
    eventually("nothing left to credit", WAIT, || async {
        engine
            .account_view(account)
            .is_ok_and(|v| v.uncredited.is_empty())
    })
    .await?;
    assert!(
        value_eq(&mock.credited_total(account), &want),
        "connector credited {} for IOUs totalling 3000e-6: {:?}",
        mock.credited_total(account),
        mock.credits()
    );
    assert_eq!(engine.account_view(account)?.received.amount, "3000");
    engine.shutdown().await;
    Ok(())
}
