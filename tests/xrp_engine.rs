//! `xrp-paychan` in settlement-engine mode: connector A → engine A (Alice, payer, her channel to Bob) → claims
//! through the mock connectors → engine B (Bob, payee) → connector B, with a fake rippled on a loopback port.
//! Engines keep their state in RocksDB folders and are restarted in the middle of settlements.
//!
//! Amounts: Alice's connector settles at scale 9 (or 6), the module works in drops (scale 6), Bob's connector is
//! credited at scale 9 or at a coarser scale; whatever does not make a whole unit is kept as a leftover, never
//! rounded up. In most tests Bob redeems his best claim every `claimInterval` ms, so the ledger follows; the
//! others redeem when the channel nears its expiry or when connector B deletes the account.

mod poll_common;
mod se_common;
mod xrp_common;

use std::sync::Arc;
use std::time::Duration;

use channel_modules::xrp::crypto::ChannelId;
use channel_modules::Claim;
use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::host::RocksModuleLogs;
use ilp_bridge::settlement::quantity::{Quantity, Scaled};
use ilp_bridge::settlement::store::RocksSeStore;
use ilp_bridge::settlement::views::AccountView;
use ilp_bridge::settlement::{start, wire, SeHandle};
use ilp_bridge::testing::mock_connector::{MockConnector, SettlePolicy};
use num_bigint::BigUint;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use xrp_common::*;

/// How often Bob's module redeems its best claim in these tests, ms.
const CLAIM_INTERVAL_MS: u64 = 50;

/// One engine with its mock connector and RocksDB folder.
struct Side {
    mock: MockConnector,
    se: Option<SeHandle>,
    dir: tempfile::TempDir,
    account: String,
    options: Value,
    connector_scale: Option<u8>,
}

impl Side {
    async fn new(options: Value, connector_scale: Option<u8>) -> Result<Self, BoxError> {
        let mock = MockConnector::start().await?;
        mock.set_settle_policy(SettlePolicy {
            wait_after_error: Duration::from_millis(50),
            wait_after_connect_error: Duration::from_millis(50),
            ..SettlePolicy::default()
        });
        let mut side = Side {
            mock,
            se: None,
            dir: tempfile::tempdir()?,
            account: String::new(),
            options,
            connector_scale,
        };
        let se = side.start_engine().await?;
        side.account = side.mock.add_account(&url(&se)).await?;
        side.se = Some(se);
        Ok(side)
    }

    fn config(&self) -> SeConfig {
        SeConfig {
            connector: self.mock.url(),
            module: "xrp-paychan".to_owned(),
            module_options: self.options.clone(),
            connector_scale: self.connector_scale,
            retry_initial_ms: 20,
            retry_max_ms: 200,
            ..SeConfig::default()
        }
    }

    async fn start_engine(&self) -> Result<SeHandle, BoxError> {
        let db = open_db(self.dir.path()).await?;
        let store = Arc::new(RocksSeStore::new(Arc::clone(&db)));
        let logs = Arc::new(RocksModuleLogs::new(Arc::clone(&db)));
        let identities = ilp_bridge::identity::IdentityRegistry::on_db(db);
        let api = TcpListener::bind("127.0.0.1:0").await?;
        Ok(start(self.config(), store, logs, identities, api, None).await?)
    }

    /// Stops the engine and starts it again on the same folder (a new port, told to the connector).
    async fn restart(&mut self) -> TestResult {
        self.stop().await;
        let se = self.start_engine().await?;
        self.mock.set_engine_url(&self.account, &url(&se))?;
        self.se = Some(se);
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(se) = self.se.take() {
            se.stop().await;
        }
    }

    fn se(&self) -> Result<&SeHandle, BoxError> {
        Ok(self.se.as_ref().ok_or("engine not running")?)
    }

    fn view(&self) -> Result<AccountView, BoxError> {
        Ok(self.se()?.engine.account_view(&self.account)?)
    }

    /// Connector A asks its engine to settle `amount` at `scale` (201 expected).
    async fn settle(&self, amount: u64, scale: u8) -> TestResult {
        let out = self
            .mock
            .settle(&self.account, &amount.to_string(), scale)
            .await?;
        assert_eq!(out.status, 201, "{}", out.body);
        Ok(())
    }

    fn credited(&self) -> Scaled {
        self.mock.credited_total(&self.account)
    }
}

fn url(handle: &SeHandle) -> String {
    format!("http://{}", handle.addr)
}

struct Pair {
    ledger: Ledger,
    a: Side,
    b: Side,
}

impl Pair {
    async fn stop(mut self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// Engines for Alice (payer) and Bob (payee, redeeming every `CLAIM_INTERVAL_MS`), linked by their connectors.
async fn pair(scale_a: Option<u8>, scale_b: Option<u8>) -> Result<Pair, BoxError> {
    let ledger = Ledger::start().await?;
    let mut bob_options = ledger.bob_options(0);
    bob_options["claimInterval"] = json!(CLAIM_INTERVAL_MS);
    pair_with(ledger, bob_options, scale_a, scale_b).await
}

async fn pair_with(
    ledger: Ledger,
    bob_options: Value,
    scale_a: Option<u8>,
    scale_b: Option<u8>,
) -> Result<Pair, BoxError> {
    let a = Side::new(ledger.alice_options(), scale_a).await?;
    let b = Side::new(bob_options, scale_b).await?;
    MockConnector::link(&a.mock, &a.account, &b.mock, &b.account)?;
    Ok(Pair { ledger, a, b })
}

fn scaled(amount: u64, scale: u8) -> Scaled {
    Scaled::new(BigUint::from(amount), scale)
}

/// A view's quantity has the value `amount` at `scale` (views may normalise the scale).
fn quantity_is(q: &Quantity, amount: u64, scale: u8) -> bool {
    q.amount
        .parse::<BigUint>()
        .is_ok_and(|a| same_value(&Scaled::new(a, q.scale), &scaled(amount, scale)))
}

fn same_value(x: &Scaled, y: &Scaled) -> bool {
    let s = x.scale.max(y.scale);
    x.upscale(s) == y.upscale(s)
}

async fn wait_credited(b: &Side, want: &Scaled) -> TestResult {
    eventually("connector B credited", || async {
        same_value(&b.credited(), want)
    })
    .await
    .map_err(|e| format!("{e}: credited {} want {want}", b.credited()).into())
}

async fn wait_redeemed(p: &Pair, drops: u64) -> TestResult {
    eventually("Bob's best claim redeemed on the ledger", || async {
        p.ledger.redeemed().ok() == Some(drops)
    })
    .await
    .map_err(|e| format!("{e}: redeemed {:?} want {drops}", p.ledger.redeemed()).into())
}

/// Waits a little and checks nothing more was credited (a guard against late double credits).
async fn credited_stays(b: &Side, want: &Scaled) -> TestResult {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        same_value(&b.credited(), want),
        "credited {} want {want}",
        b.credited()
    );
    Ok(())
}

/// Every credit went under its own Idempotency-Key.
fn keys_unique(b: &Side) {
    let credits = b.mock.credits();
    let keys: std::collections::HashSet<_> = credits.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), credits.len(), "a credit key was used twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_at_scale_9_credits_drops_exactly_and_keeps_the_leftover() -> TestResult {
    let p = pair(None, Some(9)).await?;
    // Nano-XRP amounts: 1000 make a drop. Their sum is 4_321_987 (4321 drops and 987 left over).
    let amounts = [1_000_000u64, 2_500_500, 820_487, 1_000];
    let total: u64 = amounts.iter().sum();
    assert_eq!(total, 4_321_987);
    for amt in amounts {
        p.a.settle(amt, 9).await?;
    }
    wait_credited(&p.b, &scaled(4_321_000, 9)).await?;
    wait_redeemed(&p, 4_321).await?;
    credited_stays(&p.b, &scaled(4_321_000, 9)).await?;
    let va = p.a.view()?;
    assert_eq!(va.settled.amount, "4321");
    assert!(quantity_is(&va.leftover, 987, 9), "{:?}", va.leftover);
    assert_eq!(va.in_flight.amount, "0");
    let vb = p.b.view()?;
    assert_eq!(vb.received.amount, "4321");
    assert_eq!(vb.incoming_leftover.amount, "0");
    assert!(vb.uncredited.is_empty());
    assert!(p.b.mock.credits().iter().all(|c| c.amount.scale == 9));
    assert_eq!(p.ledger.fake.received(&p.ledger.keys.bob_address()), 4_321);

    // 13 more nano-XRP make the leftover a whole drop: exactly one more drop everywhere.
    p.a.settle(13, 9).await?;
    wait_credited(&p.b, &scaled(4_322_000, 9)).await?;
    wait_redeemed(&p, 4_322).await?;
    credited_stays(&p.b, &scaled(4_322_000, 9)).await?;
    assert_eq!(p.a.view()?.leftover.amount, "0");
    assert_eq!(p.a.view()?.settled.amount, "4322");
    keys_unique(&p.b);
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coarser_connector_b_gets_whole_units_and_b_keeps_the_rest() -> TestResult {
    // Connector A settles drops (scale 6); connector B counts in units of 100 drops (scale 4).
    let p = pair(Some(6), Some(4)).await?;
    p.a.settle(250, 6).await?;
    p.a.settle(130, 6).await?;
    // 380 drops arrive at Bob (and on the ledger); 3 units of 100 are credited, 80 drops wait at B.
    wait_redeemed(&p, 380).await?;
    wait_credited(&p.b, &scaled(3, 4)).await?;
    credited_stays(&p.b, &scaled(3, 4)).await?;
    let vb = p.b.view()?;
    assert_eq!(vb.received.amount, "380");
    assert!(
        quantity_is(&vb.incoming_leftover, 80, 6),
        "{:?}",
        vb.incoming_leftover
    );
    // 20 more drops complete the fourth unit.
    p.a.settle(20, 6).await?;
    wait_credited(&p.b, &scaled(4, 4)).await?;
    wait_redeemed(&p, 400).await?;
    credited_stays(&p.b, &scaled(4, 4)).await?;
    assert_eq!(p.b.view()?.incoming_leftover.amount, "0");
    assert!(p.b.mock.credits().iter().all(|c| c.amount.scale == 4));
    keys_unique(&p.b);
    p.stop().await;
    Ok(())
}

/// Posts a claim message to B's engine as connector B relays what A's side sends. Returns (status, body).
async fn deliver_claim(b: &Side, claim: Value) -> Result<(u16, String), BoxError> {
    let resp = reqwest::Client::new()
        .post(format!("{}/accounts/{}/messages", url(b.se()?), b.account))
        .header("Content-Type", "application/octet-stream")
        .body(wire::claim_message(&Claim::Json(claim)))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

async fn assert_refused(b: &Side, claim: Value, reason: &str) -> TestResult {
    let (status, body) = deliver_claim(b, claim).await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(reason),
        "refusal {body:?} should name {reason:?}"
    );
    Ok(())
}

async fn assert_nothing_new(b: &Side, claim: Value) -> TestResult {
    let (status, body) = deliver_claim(b, claim).await?;
    assert_eq!(status, 201, "{body}");
    let ack: Value = serde_json::from_str(&body)?;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["credited"], "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_lower_over_deposit_and_foreign_claims_credit_nothing() -> TestResult {
    let p = pair(Some(6), Some(6)).await?;
    p.a.settle(700, 6).await?;
    wait_credited(&p.b, &scaled(700, 6)).await?;
    wait_redeemed(&p, 700).await?;
    let keys = &p.ledger.keys;
    let a_to_b = p.ledger.a_to_b;

    assert_refused(
        &p.b,
        claim_json(&a_to_b, 900, &keys.carol, &keys.carol)?,
        "not the channel's key",
    )
    .await?;
    assert_refused(
        &p.b,
        claim_json(&a_to_b, 900, &keys.carol, &keys.alice)?,
        "signature is invalid",
    )
    .await?;
    let mut tampered = claim_json(&a_to_b, 800, &keys.alice, &keys.alice)?;
    tampered["amount"] = json!("90000");
    assert_refused(&p.b, tampered, "signature is invalid").await?;
    assert_refused(
        &p.b,
        claim_json(&a_to_b, DEPOSIT_DROPS + 1, &keys.alice, &keys.alice)?,
        "exceeds the channel deposit",
    )
    .await?;
    let other: ChannelId = p.ledger.fake.create_channel(
        &keys.alice,
        &keys.bob_address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    assert_refused(
        &p.b,
        claim_json(&other, 900, &keys.alice, &keys.alice)?,
        "not the peer's channel",
    )
    .await?;
    // The claim A's engine sent (700), replayed, and a lower one: acknowledged with nothing credited.
    assert_nothing_new(&p.b, claim_json(&a_to_b, 700, &keys.alice, &keys.alice)?).await?;
    assert_nothing_new(&p.b, claim_json(&a_to_b, 699, &keys.alice, &keys.alice)?).await?;

    credited_stays(&p.b, &scaled(700, 6)).await?;
    assert_eq!(p.b.view()?.received.amount, "700");
    assert_eq!(p.ledger.redeemed()?, 700);
    assert_eq!(p.ledger.fake.received(&keys.bob_address()), 700);
    // Honest settlements still go through afterwards.
    p.a.settle(5, 6).await?;
    wait_credited(&p.b, &scaled(705, 6)).await?;
    wait_redeemed(&p, 705).await?;
    keys_unique(&p.b);
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_in_the_middle_of_settlements_credit_and_pay_exactly_once() -> TestResult {
    let mut p = pair(None, Some(9)).await?;
    let mut drops = 0u64;

    // 1. A accepts while connector B is down: A's module signs claims (its tracker moves) that cannot be
    //    delivered. A restarts on its folder, then B's connector comes back: the cumulative claim is sent again
    //    and credited once.
    p.b.mock.set_down().await;
    p.a.settle(300_000, 9).await?;
    p.a.settle(45_500, 9).await?;
    drops += 345; // 500 nano-XRP stay at A
    eventually("A tried to settle", || async {
        p.a.view().map(|v| v.attempts > 0).unwrap_or(false)
    })
    .await?;
    p.a.restart().await?;
    assert_eq!(
        p.a.view()?.requested.amount,
        "345",
        "accepted requests reloaded"
    );
    p.b.mock.set_up().await?;
    wait_credited(&p.b, &scaled(drops * 1000, 9)).await?;
    wait_redeemed(&p, drops).await?;

    // 2. B receives the next claim but its connector refuses credits (500); B restarts on its folder with the
    //    credit pending; then the connector accepts and the credit goes through once, under its stable key.
    p.b.mock.override_credit_status(Some(500));
    p.a.settle(100_500, 9).await?; // with the 500 left at A: 101 drops
    drops += 101;
    eventually("B received the claim", || async {
        p.b.view()
            .map(|v| v.received.amount == drops.to_string())
            .unwrap_or(false)
    })
    .await?;
    assert_eq!(p.b.view()?.uncredited.len(), 1);
    p.b.restart().await?;
    assert_eq!(p.b.view()?.uncredited.len(), 1, "pending credit reloaded");
    p.b.mock.override_credit_status(None);
    wait_credited(&p.b, &scaled(drops * 1000, 9)).await?;
    // Bob's module redeems again after its restart (its claim task starts with the engine).
    wait_redeemed(&p, drops).await?;

    // 3. Both engines restart with a settlement queued behind A's own connector being down.
    p.a.mock.set_down().await;
    p.a.settle(54_000, 9).await?;
    drops += 54;
    p.a.restart().await?;
    p.b.restart().await?;
    p.a.mock.set_up().await?;
    wait_credited(&p.b, &scaled(drops * 1000, 9)).await?;
    wait_redeemed(&p, drops).await?;

    // Totals: connector B, engine B, engine A and the ledger agree; nothing was credited or paid twice.
    credited_stays(&p.b, &scaled(drops * 1000, 9)).await?;
    keys_unique(&p.b);
    assert_eq!(p.a.view()?.settled.amount, drops.to_string());
    assert_eq!(p.a.view()?.leftover.amount, "0");
    assert_eq!(p.b.view()?.received.amount, drops.to_string());
    assert_eq!(p.ledger.fake.received(&p.ledger.keys.bob_address()), drops);
    let mut redeemed: Vec<u64> = p
        .ledger
        .fake
        .submissions()
        .iter()
        .filter_map(|s| s["Balance"].as_str().and_then(|b| b.parse().ok()))
        .collect();
    let submitted = redeemed.len();
    redeemed.dedup();
    assert_eq!(redeemed.len(), submitted, "a claim was submitted twice");
    assert_eq!(redeemed.last(), Some(&drops));
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_deposit_nothing_is_paid_until_the_channel_is_funded() -> TestResult {
    let p = pair(Some(6), Some(6)).await?;
    p.a.settle(DEPOSIT_DROPS - 10, 6).await?;
    wait_credited(&p.b, &scaled(DEPOSIT_DROPS - 10, 6)).await?;
    // 25 more drops than the channel holds: Alice's module refuses to sign, nothing more reaches Bob.
    p.a.settle(35, 6).await?;
    eventually("A refused to sign beyond the deposit", || async {
        p.a.view()
            .map(|v| {
                v.attempts > 0
                    && v.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("exceeds the channel deposit"))
            })
            .unwrap_or(false)
    })
    .await?;
    credited_stays(&p.b, &scaled(DEPOSIT_DROPS - 10, 6)).await?;
    wait_redeemed(&p, DEPOSIT_DROPS - 10).await?;
    // Alice tops the channel up (PaymentChannelFund): the retry signs the whole total and Bob gets exactly it.
    p.ledger.fake.fund_channel(&p.ledger.a_to_b, 1_000);
    wait_credited(&p.b, &scaled(DEPOSIT_DROPS + 25, 6)).await?;
    wait_redeemed(&p, DEPOSIT_DROPS + 25).await?;
    credited_stays(&p.b, &scaled(DEPOSIT_DROPS + 25, 6)).await?;
    keys_unique(&p.b);
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_near_its_expiry_is_redeemed_at_every_claim() -> TestResult {
    // Alice's channel can be cancelled in 20 minutes, inside Bob's 30-minute expiry margin: Bob (no
    // claimInterval) redeems each claim as it arrives, in engine mode where claims are handled staged.
    let mut ledger = Ledger::start().await?;
    let now = channel_modules::xrp::rpc::system_to_ripple_time(std::time::SystemTime::now());
    ledger.a_to_b = ledger.fake.create_channel(
        &ledger.keys.alice,
        &ledger.keys.bob_address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        Some(now + 1_200),
    );
    let bob_options = ledger.bob_options(0);
    let p = pair_with(ledger, bob_options, Some(6), Some(6)).await?;
    p.a.settle(123, 6).await?;
    wait_credited(&p.b, &scaled(123, 6)).await?;
    wait_redeemed(&p, 123).await?;
    p.a.settle(77, 6).await?;
    wait_credited(&p.b, &scaled(200, 6)).await?;
    wait_redeemed(&p, 200).await?;
    credited_stays(&p.b, &scaled(200, 6)).await?;
    assert_eq!(p.b.view()?.received.amount, "200");
    assert_eq!(p.ledger.fake.received(&p.ledger.keys.bob_address()), 200);
    let balances: Vec<Value> = p
        .ledger
        .fake
        .submissions()
        .iter()
        .map(|s| s["Balance"].clone())
        .collect();
    assert_eq!(balances, vec![json!("123"), json!("200")]);
    p.stop().await;
    Ok(())
}

/// Connector B deletes its account on engine B (`DELETE /accounts/{id}`); returns the status.
async fn delete_account(b: &Side) -> Result<u16, BoxError> {
    let resp = reqwest::Client::new()
        .delete(format!("{}/accounts/{}", url(b.se()?), b.account))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_payee_account_redeems_and_never_drops_an_unredeemed_claim() -> TestResult {
    // No claimInterval: Bob redeems only when his account is closed (the module's disconnect).
    let ledger = Ledger::start().await?;
    let bob_options = ledger.bob_options(0);
    let mut p = pair_with(ledger, bob_options, Some(6), Some(6)).await?;
    p.a.settle(500, 6).await?;
    wait_credited(&p.b, &scaled(500, 6)).await?;
    assert_eq!(p.ledger.redeemed()?, 0);

    // rippled is unreachable when connector B deletes the account: Bob cannot redeem the 500 drops he was
    // credited for, so the engine keeps the account (and the claim) and says so.
    p.ledger.fake.set_down().await;
    assert_eq!(delete_account(&p.b).await?, 503);
    assert!(p.b.view().is_ok(), "the account was kept");
    p.ledger.fake.set_up().await?;
    // The kept account still works.
    p.a.settle(20, 6).await?;
    wait_credited(&p.b, &scaled(520, 6)).await?;
    assert_eq!(p.ledger.redeemed()?, 0);

    // With rippled back, deleting redeems the best claim on the ledger first.
    assert_eq!(delete_account(&p.b).await?, 204);
    assert_eq!(p.ledger.redeemed()?, 520);
    assert_eq!(p.ledger.fake.received(&p.ledger.keys.bob_address()), 520);
    assert!(p.b.view().is_err(), "the account is gone");
    credited_stays(&p.b, &scaled(520, 6)).await?;
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_on_a_channel_already_closed_does_not_block_deletion_forever() -> TestResult {
    // Bob never redeemed; Alice's channel expired and she closed it, taking the deposit back. Bob's claim is
    // worthless now: deleting his account logs the loss and succeeds (there is nothing left to keep).
    let ledger = Ledger::start().await?;
    let bob_options = ledger.bob_options(0);
    let p = pair_with(ledger, bob_options, Some(6), Some(6)).await?;
    p.a.settle(500, 6).await?;
    wait_credited(&p.b, &scaled(500, 6)).await?;
    let now = channel_modules::xrp::rpc::system_to_ripple_time(std::time::SystemTime::now());
    p.ledger
        .fake
        .set_expiration(&p.ledger.a_to_b, Some(now.saturating_sub(10)));
    let client = channel_modules::xrp::rpc::RippledClient::new(&p.ledger.fake.url())?;
    let outcome = client
        .submit_with_secret(
            json!({
                "TransactionType": "PaymentChannelClaim",
                "Account": p.ledger.keys.alice.public_key().address(),
                "Channel": p.ledger.a_to_b.to_string(),
            }),
            ALICE_SEED,
        )
        .await?;
    assert!(outcome.is_success(), "{}", outcome.engine_result);
    assert!(p.ledger.fake.channel(&p.ledger.a_to_b).is_none());
    assert_eq!(delete_account(&p.b).await?, 204);
    assert!(p.b.view().is_err(), "the account is gone");
    assert_eq!(p.ledger.fake.received(&p.ledger.keys.bob_address()), 0);
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_another_channel_is_refused_on_both_sides() -> TestResult {
    // Claims are cumulative over one channel. Alice reconfigured with a second channel would sign it for her
    // whole total (paying again what the first one paid); Bob would credit only the difference and redeem all.
    let mut p = pair(Some(6), Some(6)).await?;
    p.a.settle(300, 6).await?;
    wait_credited(&p.b, &scaled(300, 6)).await?;
    wait_redeemed(&p, 300).await?;
    let keys = &p.ledger.keys;
    let second = p.ledger.fake.create_channel(
        &keys.alice,
        &keys.bob_address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    p.a.options["channel"] = json!(second.to_string());
    p.a.restart().await?;
    p.a.settle(100, 6).await?;
    eventually("Alice's engine refuses the switch", || async {
        p.a.view()
            .ok()
            .and_then(|v| v.last_error)
            .is_some_and(|e| e.contains("another channel"))
    })
    .await?;
    // Bob, restarted, learns the second channel from Alice and refuses a claim on it that would follow the first.
    p.b.restart().await?;
    let claim = claim_json(&second, 400, &keys.alice, &keys.alice)?;
    let refused = eventually("Bob refuses the switch", || {
        let claim = claim.clone();
        let b = &p.b;
        async move {
            matches!(deliver_claim(b, claim).await, Ok((400, body)) if body.contains("another channel"))
        }
    })
    .await;
    credited_stays(&p.b, &scaled(300, 6)).await?;
    refused?;
    let second_balance = p.ledger.fake.channel(&second).ok_or("second gone")?.balance;
    assert_eq!(second_balance, 0);
    assert_eq!(p.ledger.fake.received(&keys.bob_address()), 300);
    p.stop().await;
    Ok(())
}

/// Every account of an engine gets the same module options: with `peerChannel` configured, a second account
/// (or a second peer naming the first one's channel) would take claims on the first account's channel. The
/// channel belongs to the account that claimed it first; the second is refused and credited nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_account_on_the_first_ones_channel_is_refused_and_credited_nothing() -> TestResult
{
    let ledger = Ledger::start().await?;
    let mut bob_options = ledger.bob_options(0);
    bob_options["claimInterval"] = json!(CLAIM_INTERVAL_MS);
    bob_options["peerChannel"] = json!(ledger.a_to_b.to_string());
    let p = pair_with(ledger, bob_options, Some(6), Some(6)).await?;
    p.a.settle(700, 6).await?;
    wait_credited(&p.b, &scaled(700, 6)).await?;

    let second = p.b.mock.add_account(&url(p.b.se()?)).await?;
    assert_ne!(second, p.b.account);
    let keys = &p.ledger.keys;
    let a_to_b = p.ledger.a_to_b;
    let (status, body) = se_common::post_message_once_set_up(
        &url(p.b.se()?),
        &second,
        wire::claim_message(&Claim::Json(claim_json(
            &a_to_b,
            700,
            &keys.alice,
            &keys.alice,
        )?)),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("another account"), "{body}");
    assert_eq!(p.b.se()?.engine.account_view(&second)?.received.amount, "0");
    assert!(same_value(&p.b.mock.credited_total(&second), &scaled(0, 6)));

    // The first account keeps being credited.
    p.a.settle(5, 6).await?;
    wait_credited(&p.b, &scaled(705, 6)).await?;
    p.stop().await;
    Ok(())
}

/// A squatter account on Bob's engine whose peer engine names Alice's channel to Bob (`ripple_channel_id`),
/// before Bob's own account (same module configuration) took any claim: naming the channel proves nothing, so
/// the squatter does not take it (a claim it forges is refused by the channel's key); Bob's account is then
/// credited as usual, and a genuine claim replayed to the squatter is refused (the channel becomes contested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_naming_the_payers_channel_first_cannot_lock_it_out() -> TestResult {
    let ledger = Ledger::start().await?;
    let mut bob_options = ledger.bob_options(0);
    bob_options["claimInterval"] = json!(CLAIM_INTERVAL_MS);
    let mut b = Side::new(bob_options, Some(6)).await?;
    let a_to_b = ledger.a_to_b;
    let mut carol = Side::new(
        json!({
            "rippled": ledger.fake.url(),
            "secret": CAROL_SEED,
            "channel": a_to_b.to_string(),
        }),
        Some(6),
    )
    .await?;
    let squatter = b.mock.add_account(&url(b.se()?)).await?;
    MockConnector::link(&b.mock, &squatter, &carol.mock, &carol.account)?;
    let keys = &ledger.keys;
    let (status, body) = se_common::post_message_once_set_up(
        &url(b.se()?),
        &squatter,
        wire::claim_message(&Claim::Json(claim_json(
            &a_to_b,
            700,
            &keys.carol,
            &keys.carol,
        )?)),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("another account"), "{body}");

    // Bob's account, linked to Alice only now, is credited.
    let mut a = Side::new(ledger.alice_options(), Some(6)).await?;
    MockConnector::link(&a.mock, &a.account, &b.mock, &b.account)?;
    a.settle(700, 6).await?;
    wait_credited(&b, &scaled(700, 6)).await?;

    // The channel is Bob's account's now: a genuine claim replayed to the squatter credits nothing (and makes
    // the channel contested: only Bob's operator can tell which account is rightful, by configuring
    // peerChannel).
    let (status, body) = se_common::post_message_once_set_up(
        &url(b.se()?),
        &squatter,
        wire::claim_message(&Claim::Json(claim_json(
            &a_to_b,
            700,
            &keys.alice,
            &keys.alice,
        )?)),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("contested") && body.contains(&a_to_b.to_string()),
        "{body}"
    );
    assert_eq!(b.se()?.engine.account_view(&squatter)?.received.amount, "0");
    credited_stays(&b, &scaled(700, 6)).await?;
    a.stop().await;
    b.stop().await;
    carol.stop().await;
    Ok(())
}
