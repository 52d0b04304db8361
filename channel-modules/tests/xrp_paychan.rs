//! `xrp-paychan` module flows: two modules wired through `TestHost`, a fake rippled holding the channels.
//!
//! Alice (ed25519 key) pays Bob (secp256k1 key) through channel `a_to_b` (deposit 1000 drops). Bob learns the
//! channel with the `ripple_channel_id` RPC at connect.

use std::sync::Arc;
use std::time::Duration;

use channel_modules::amount::{LedgerAmount, ModuleUnits};
use channel_modules::identity::IdentityRecord;
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Direction, Transfer, TransferId, TransferRecord};
use channel_modules::testing::{TestClock, TestHost};
use channel_modules::xrp::crypto::{ChannelId, KeyPair};
use channel_modules::xrp::fake_rippled::FakeRippled;
use channel_modules::xrp::rpc::system_to_ripple_time;
use channel_modules::xrp::{
    channel_identity, XrpPaychan, MVT_INCOMING_CLAIM, MVT_INCOMING_CLAIM_SUBMITTED,
    MVT_OUTGOING_CLAIM,
};
use channel_modules::{
    build_module, ChannelContext, ChannelModule, Claim, IncomingCredit, ModuleError,
};
use num_bigint::BigUint;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ALICE_SEED: &str = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
const BOB_SEED: &str = "sp5fghtJtpUorTwvof1NpDXAzNwf5";
const CAROL_SEED: &str = "sEdT7wHTCLzDG7ueaw4hroSTBvH7Mk5";
const DEPOSIT_DROPS: u64 = 1_000;
const SETTLE_DELAY_SECS: u32 = 3_600;

struct Side {
    host: Arc<TestHost>,
    module: Arc<XrpPaychan>,
    ctx: ChannelContext,
}

struct Net {
    fake: FakeRippled,
    clock: TestClock,
    alice: Side,
    bob: Side,
    alice_keys: KeyPair,
    bob_keys: KeyPair,
    a_to_b: ChannelId,
}

fn merge(mut base: Value, extra: &Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// Starts the fake ledger, opens Alice's channel to Bob, builds both modules (options merged with the extras)
/// and wires them. Does not connect.
async fn net(alice_extra: Value, bob_extra: Value) -> Result<Net, Box<dyn std::error::Error>> {
    let clock = TestClock::default();
    let fake_clock = clock.clone();
    let fake = FakeRippled::start_with_clock(Arc::new(move || fake_clock.now())).await?;
    let alice_keys = KeyPair::from_seed(ALICE_SEED)?;
    let bob_keys = KeyPair::from_seed(BOB_SEED)?;
    let a_to_b = fake.create_channel(
        &alice_keys,
        &bob_keys.public_key().address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    let alice_opts = merge(
        json!({ "rippled": fake.url(), "secret": ALICE_SEED, "channel": a_to_b.to_string() }),
        &alice_extra,
    );
    let bob_opts = merge(
        json!({ "rippled": fake.url(), "secret": BOB_SEED, "maxUnsecured": "500" }),
        &bob_extra,
    );
    let alice_module = Arc::new(XrpPaychan::from_options(&alice_opts)?);
    let bob_module = Arc::new(XrpPaychan::from_options(&bob_opts)?);
    let alice_host = TestHost::with_stores(MemoryStores::unbounded(), clock.clone());
    let bob_host = TestHost::with_stores(MemoryStores::unbounded(), clock.clone());
    alice_host.connect_to(
        &bob_host,
        Arc::clone(&bob_module) as Arc<dyn ChannelModule>,
        bob_opts.clone(),
        "b",
    );
    bob_host.connect_to(
        &alice_host,
        Arc::clone(&alice_module) as Arc<dyn ChannelModule>,
        alice_opts.clone(),
        "a",
    );
    Ok(Net {
        fake,
        clock,
        alice: Side {
            ctx: alice_host.context(alice_opts, "a"),
            host: alice_host,
            module: alice_module,
        },
        bob: Side {
            ctx: bob_host.context(bob_opts, "b"),
            host: bob_host,
            module: bob_module,
        },
        alice_keys,
        bob_keys,
        a_to_b,
    })
}

async fn connected(
    alice_extra: Value,
    bob_extra: Value,
) -> Result<Net, Box<dyn std::error::Error>> {
    let n = net(alice_extra, bob_extra).await?;
    n.alice.module.connect(&n.alice.ctx).await?;
    n.bob.module.connect(&n.bob.ctx).await?;
    Ok(n)
}

async fn pay(n: &Net, total: u64) -> Result<Claim, Box<dyn std::error::Error>> {
    let claim = n
        .alice
        .module
        .create_outgoing_claim(&n.alice.ctx, &ModuleUnits::from(total))
        .await?
        .ok_or("no claim produced")?;
    Ok(claim)
}

async fn best(side: &Side, key: &str) -> Result<BigUint, Box<dyn std::error::Error>> {
    Ok(side.ctx.max_value_tracker(key)?.get_max().await?.value)
}

fn claim_json(
    channel: &ChannelId,
    drops: u64,
    signer: &KeyPair,
) -> Result<Claim, Box<dyn std::error::Error>> {
    Ok(Claim::Json(json!({
        "channel": channel.to_string(),
        "amount": drops.to_string(),
        "signature": hex::encode_upper(signer.sign_claim(channel, drops)?),
        "publicKey": signer.public_key().to_hex(),
    })))
}

fn credit(amount: u64, channel: &ChannelId, cumulative: u64) -> IncomingCredit {
    IncomingCredit {
        amount: ModuleUnits::from(amount),
        settlement_id: format!("{channel}:{cumulative}"),
    }
}

#[tokio::test]
async fn claims_move_and_the_payee_keeps_the_best() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    // Bob asked Alice for her channel at connect.
    assert!(n
        .alice
        .host
        .rpc_log()
        .iter()
        .any(|(m, _)| m == "ripple_channel_id"));
    assert_eq!(n.bob.module.peer_channel(), Some(n.a_to_b));
    assert_eq!(
        n.bob.module.peer_account(),
        Some(n.alice_keys.public_key().address())
    );

    let c100 = pay(&n, 100).await?;
    let Claim::Json(ref body) = c100 else {
        return Err("claim is not JSON".into());
    };
    assert_eq!(body["channel"], json!(n.a_to_b.to_string()));
    assert_eq!(body["amount"], json!("100"));
    assert_eq!(body["publicKey"], json!(n.alice_keys.public_key().to_hex()));
    let credited = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c100))
        .await?;
    assert_eq!(credited, Some(credit(100, &n.a_to_b, 100)));

    let c250 = pay(&n, 250).await?;
    let credited = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c250))
        .await?;
    assert_eq!(credited, Some(credit(150, &n.a_to_b, 250)));

    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM).await?,
        BigUint::from(250u32)
    );
    assert_eq!(
        best(&n.alice, MVT_OUTGOING_CLAIM).await?,
        BigUint::from(250u32)
    );

    // A total already covered gives back the best claim, signing nothing new.
    assert_eq!(pay(&n, 100).await?, c250);
    // No claim is no credit.
    assert_eq!(
        n.bob.module.handle_incoming_claim(&n.bob.ctx, None).await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn replayed_and_lower_claims_credit_nothing() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    let c100 = pay(&n, 100).await?;
    let c300 = pay(&n, 300).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c300))
            .await?,
        Some(credit(300, &n.a_to_b, 300))
    );
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c300))
            .await?,
        None,
        "replay"
    );
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c100))
            .await?,
        None,
        "lower"
    );
    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM).await?,
        BigUint::from(300u32)
    );
    Ok(())
}

#[tokio::test]
async fn forged_claims_are_refused_and_credit_nothing() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    let c200 = pay(&n, 200).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c200))
        .await?;

    // Alice's signature for 300, presented as 400.
    let Claim::Json(mut raised) = pay(&n, 300).await? else {
        return Err("claim is not JSON".into());
    };
    raised["amount"] = json!("400");
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&Claim::Json(raised)))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");

    // A flipped signature byte.
    let Claim::Json(mut flipped) = pay(&n, 350).await? else {
        return Err("claim is not JSON".into());
    };
    let mut sig = hex::decode(flipped["signature"].as_str().ok_or("no signature")?)?;
    sig[12] ^= 0x40;
    flipped["signature"] = json!(hex::encode_upper(sig));
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&Claim::Json(flipped)))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");

    // Signed by someone else (Carol) on Alice's channel, with and without her key in the claim.
    let carol = KeyPair::from_seed(CAROL_SEED)?;
    let by_carol = claim_json(&n.a_to_b, 500, &carol)?;
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&by_carol))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    let Claim::Json(mut keyless) = by_carol else {
        return Err("claim is not JSON".into());
    };
    keyless
        .as_object_mut()
        .ok_or("not an object")?
        .remove("publicKey");
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&Claim::Json(keyless)))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");

    // Garbage.
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&Claim::Text("not json".to_owned())))
        .await;
    assert!(matches!(err, Err(ModuleError::InvalidFields(_))), "{err:?}");

    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM).await?,
        BigUint::from(200u32)
    );
    Ok(())
}

#[tokio::test]
async fn claims_above_the_deposit_are_refused_until_the_channel_is_funded() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    let err = n
        .alice
        .module
        .create_outgoing_claim(&n.alice.ctx, &ModuleUnits::from(DEPOSIT_DROPS + 1))
        .await;
    assert!(
        matches!(err, Err(ModuleError::InsufficientBalance(_))),
        "{err:?}"
    );
    assert_eq!(
        best(&n.alice, MVT_OUTGOING_CLAIM).await?,
        BigUint::from(0u32)
    );

    // Alice signs past the deposit by hand: Bob refuses it.
    let over = claim_json(&n.a_to_b, DEPOSIT_DROPS + 500, &n.alice_keys)?;
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&over))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    assert_eq!(best(&n.bob, MVT_INCOMING_CLAIM).await?, BigUint::from(0u32));

    // After a PaymentChannelFund both sides read the new deposit from the ledger.
    n.fake.fund_channel(&n.a_to_b, 1_000);
    let c1500 = pay(&n, 1_500).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c1500))
            .await?,
        Some(credit(1_500, &n.a_to_b, 1_500))
    );
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&over))
            .await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn claims_on_someone_elses_channel_are_refused() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    let carol = KeyPair::from_seed(CAROL_SEED)?;
    // Carol's own channel to Bob: valid for Bob on the ledger, but not the peer's channel.
    let c_to_b = n.fake.create_channel(
        &carol,
        &n.bob_keys.public_key().address(),
        5_000,
        SETTLE_DELAY_SECS,
        None,
    );
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&claim_json(&c_to_b, 100, &carol)?))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    // Alice's channel to Carol, signed by Alice.
    let a_to_c = n.fake.create_channel(
        &n.alice_keys,
        &carol.public_key().address(),
        5_000,
        SETTLE_DELAY_SECS,
        None,
    );
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&claim_json(&a_to_c, 100, &n.alice_keys)?))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    assert_eq!(best(&n.bob, MVT_INCOMING_CLAIM).await?, BigUint::from(0u32));
    Ok(())
}

#[tokio::test]
async fn peer_channel_that_does_not_pay_us_is_refused() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    let carol = KeyPair::from_seed(CAROL_SEED)?;
    let a_to_c = n.fake.create_channel(
        &n.alice_keys,
        &carol.public_key().address(),
        5_000,
        SETTLE_DELAY_SECS,
        None,
    );
    // Configured explicitly: our own misconfiguration, connect fails.
    let opts =
        json!({ "rippled": n.fake.url(), "secret": BOB_SEED, "peerChannel": a_to_c.to_string() });
    let module = XrpPaychan::from_options(&opts)?;
    let err = module.connect(&n.bob.host.context(opts, "b")).await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    // Learned from a peer that names a channel paying someone else: connect goes on, claims are refused.
    let liar_opts =
        json!({ "rippled": n.fake.url(), "secret": ALICE_SEED, "channel": a_to_c.to_string() });
    let liar = Arc::new(XrpPaychan::from_options(&liar_opts)?);
    n.bob.host.connect_to(
        &n.alice.host,
        Arc::clone(&liar) as Arc<dyn ChannelModule>,
        liar_opts,
        "a",
    );
    n.bob.module.connect(&n.bob.ctx).await?;
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&claim_json(&a_to_c, 100, &n.alice_keys)?))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    assert_eq!(best(&n.bob, MVT_INCOMING_CLAIM).await?, BigUint::from(0u32));
    Ok(())
}

#[tokio::test]
async fn disconnect_submits_the_best_claim_to_the_ledger() -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    for total in [100u64, 400, 650] {
        let claim = pay(&n, total).await?;
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&claim))
            .await?;
    }
    // A stale lower claim arriving late changes nothing.
    let c400 = pay(&n, 400).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c400))
            .await?,
        None
    );
    assert!(
        n.fake.submissions().is_empty(),
        "nothing submitted before disconnect"
    );

    n.bob.module.disconnect(&n.bob.ctx).await?;
    let on_ledger = n.fake.channel(&n.a_to_b).ok_or("channel closed")?;
    assert_eq!(on_ledger.balance, 650);
    assert_eq!(n.fake.received(&n.bob_keys.public_key().address()), 650);
    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM_SUBMITTED).await?,
        BigUint::from(650u32)
    );
    let submitted = n.fake.submissions();
    assert_eq!(submitted.len(), 1);
    assert_eq!(
        submitted[0]["TransactionType"],
        json!("PaymentChannelClaim")
    );
    assert_eq!(
        submitted[0]["Account"],
        json!(n.bob_keys.public_key().address())
    );
    assert_eq!(submitted[0]["Balance"], json!("650"));

    // Disconnecting again submits nothing new; the payer's disconnect submits nothing at all.
    n.bob.module.disconnect(&n.bob.ctx).await?;
    n.alice.module.disconnect(&n.alice.ctx).await?;
    assert_eq!(n.fake.submissions().len(), 1);
    Ok(())
}

#[tokio::test]
async fn claims_are_redeemed_early_when_the_channel_is_about_to_expire() -> TestResult {
    let n = connected(json!({}), json!({ "expiryMargin": 1800 })).await?;
    let c100 = pay(&n, 100).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c100))
        .await?;
    assert!(n.fake.submissions().is_empty());
    // Alice asks to close: the channel expires in 10 minutes. Bob's cached facts age out after a minute.
    n.fake.set_expiration(
        &n.a_to_b,
        Some(system_to_ripple_time(
            n.clock.now() + Duration::from_secs(600),
        )),
    );
    n.clock.advance(Duration::from_secs(61));
    let c300 = pay(&n, 300).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c300))
            .await?,
        Some(credit(200, &n.a_to_b, 300))
    );
    assert_eq!(
        n.fake.channel(&n.a_to_b).ok_or("closed")?.balance,
        300,
        "redeemed at once"
    );

    // Once expired, further claims are refused.
    n.clock.advance(Duration::from_secs(600));
    let c400 = pay(&n, 400).await?;
    let err = n
        .bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c400))
        .await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM).await?,
        BigUint::from(300u32)
    );
    Ok(())
}

fn incoming(id: u8, amount: u64) -> Transfer {
    Transfer {
        id: TransferId([id; 16]),
        amount: LedgerAmount(amount),
        execution_condition: [7u8; 32],
        expires_at_ms: 1_506_816_060_000,
        ilp: Vec::new(),
        custom: None,
    }
}

async fn prepare(
    n: &Net,
    id: u8,
    amount: u64,
) -> Result<TransferRecord, Box<dyn std::error::Error>> {
    let log = n.bob.host.stores().transfer_log("")?;
    log.prepare(&incoming(id, amount), Direction::Incoming)
        .await?;
    Ok(log
        .get(&TransferId([id; 16]))
        .await?
        .ok_or("transfer not stored")?)
}

#[tokio::test]
async fn max_unsecured_refuses_unsecured_prepares() -> TestResult {
    let n = connected(json!({}), json!({ "maxUnsecured": "500" })).await?;
    let r1 = prepare(&n, 1, 300).await?;
    n.bob
        .module
        .handle_incoming_prepare(&n.bob.ctx, &r1)
        .await?;
    let r2 = prepare(&n, 2, 200).await?;
    n.bob
        .module
        .handle_incoming_prepare(&n.bob.ctx, &r2)
        .await?; // exactly 500: allowed
    let r3 = prepare(&n, 3, 1).await?;
    let err = n.bob.module.handle_incoming_prepare(&n.bob.ctx, &r3).await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    n.bob
        .host
        .stores()
        .transfer_log("")?
        .cancel(&TransferId([3; 16]), "refused")
        .await?;

    // A claim for 200 secures part of it: 500 − 200 + 150 = 450 ≤ 500.
    let c200 = pay(&n, 200).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c200))
        .await?;
    let r4 = prepare(&n, 4, 150).await?;
    n.bob
        .module
        .handle_incoming_prepare(&n.bob.ctx, &r4)
        .await?;
    let r5 = prepare(&n, 5, 51).await?;
    let err = n.bob.module.handle_incoming_prepare(&n.bob.ctx, &r5).await;
    assert!(matches!(err, Err(ModuleError::NotAccepted(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn both_directions_work_with_a_secp256k1_payer() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    let b_to_a = n.fake.create_channel(
        &n.bob_keys,
        &n.alice_keys.public_key().address(),
        700,
        SETTLE_DELAY_SECS,
        None,
    );
    // Rebuild Bob with his own channel, re-wired to Alice.
    let bob_opts =
        json!({ "rippled": n.fake.url(), "secret": BOB_SEED, "channel": b_to_a.to_string() });
    let bob = Arc::new(XrpPaychan::from_options(&bob_opts)?);
    n.alice.host.connect_to(
        &n.bob.host,
        Arc::clone(&bob) as Arc<dyn ChannelModule>,
        bob_opts.clone(),
        "b",
    );
    let bob_ctx = n.bob.host.context(bob_opts, "b");
    n.alice.module.connect(&n.alice.ctx).await?;
    bob.connect(&bob_ctx).await?;
    assert_eq!(n.alice.module.peer_channel(), Some(b_to_a));
    assert_eq!(bob.peer_channel(), Some(n.a_to_b));

    let from_bob = bob
        .create_outgoing_claim(&bob_ctx, &ModuleUnits::from(70))
        .await?
        .ok_or("no claim")?;
    assert_eq!(
        n.alice
            .module
            .handle_incoming_claim(&n.alice.ctx, Some(&from_bob))
            .await?,
        Some(credit(70, &b_to_a, 70))
    );
    let from_alice = pay(&n, 30).await?;
    assert_eq!(
        bob.handle_incoming_claim(&bob_ctx, Some(&from_alice))
            .await?,
        Some(credit(30, &n.a_to_b, 30))
    );
    let err = bob
        .create_outgoing_claim(&bob_ctx, &ModuleUnits::from(701))
        .await;
    assert!(
        matches!(err, Err(ModuleError::InsufficientBalance(_))),
        "{err:?}"
    );
    n.alice.module.disconnect(&n.alice.ctx).await?;
    assert_eq!(n.fake.channel(&b_to_a).ok_or("closed")?.balance, 70);
    Ok(())
}

#[tokio::test]
async fn periodic_claim_submission_redeems_the_best_claim() -> TestResult {
    let n = connected(json!({}), json!({ "claimInterval": 10 })).await?;
    let c120 = pay(&n, 120).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c120))
        .await?;
    // Wait (bounded) for the background task; the assertion is on the ledger state, not on timing.
    for _ in 0..500 {
        if n.fake.channel(&n.a_to_b).is_some_and(|c| c.balance == 120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n.fake.channel(&n.a_to_b).ok_or("closed")?.balance, 120);
    n.bob.module.disconnect(&n.bob.ctx).await?;
    assert_eq!(
        n.fake.submissions().len(),
        1,
        "disconnect found the claim already redeemed"
    );
    Ok(())
}

#[tokio::test]
async fn payee_with_a_private_key_cannot_submit() -> TestResult {
    let bob_private = KeyPair::from_seed(BOB_SEED)?.private_key_hex();
    let n = connected(json!({}), json!({ "secret": bob_private })).await?;
    let c100 = pay(&n, 100).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c100))
        .await?;
    let err = n.bob.module.disconnect(&n.bob.ctx).await;
    assert!(matches!(err, Err(ModuleError::InvalidFields(_))), "{err:?}");
    assert!(n.fake.submissions().is_empty());
    Ok(())
}

#[tokio::test]
async fn payer_channel_must_be_ours() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    // Bob configures Alice's channel as his own.
    let opts =
        json!({ "rippled": n.fake.url(), "secret": BOB_SEED, "channel": n.a_to_b.to_string() });
    let module = XrpPaychan::from_options(&opts)?;
    let err = module.connect(&n.bob.host.context(opts, "b")).await;
    assert!(matches!(err, Err(ModuleError::InvalidFields(_))), "{err:?}");
    // A module without a channel cannot pay.
    let err = n
        .bob
        .module
        .create_outgoing_claim(&n.bob.ctx, &ModuleUnits::from(1))
        .await;
    assert!(matches!(err, Err(ModuleError::InvalidFields(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn rpc_answers_channel_id_and_refuses_unknown_methods() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    assert_eq!(
        n.alice
            .module
            .handle_rpc(&n.alice.ctx, "ripple_channel_id", json!([]))
            .await?,
        json!(n.a_to_b.to_string())
    );
    assert_eq!(
        n.bob
            .module
            .handle_rpc(&n.bob.ctx, "ripple_channel_id", json!([]))
            .await?,
        Value::Null
    );
    let err = n
        .alice
        .module
        .handle_rpc(&n.alice.ctx, "eth_address", json!([]))
        .await;
    assert!(
        matches!(err, Err(ModuleError::UnknownMethod(ref m)) if m == "eth_address"),
        "{err:?}"
    );
    assert_eq!(n.alice.module.name(), "xrp-paychan");
    assert_eq!(n.alice.module.asset_scale(), 6);
    assert_eq!(
        n.alice.module.account(),
        Some(n.alice_keys.public_key().address())
    );
    Ok(())
}

#[tokio::test]
async fn options_are_validated_and_secrets_come_from_files_or_env() -> TestResult {
    let url = "http://127.0.0.1:9/";
    let bad = |v: Value| {
        matches!(
            XrpPaychan::from_options(&v),
            Err(ModuleError::InvalidFields(_))
        )
    };
    assert!(bad(json!({ "secret": ALICE_SEED })), "rippled is required");
    assert!(bad(json!({ "rippled": url })), "a secret is required");
    assert!(
        bad(json!({ "rippled": url, "secret": ALICE_SEED, "secretEnv": "X" })),
        "only one secret"
    );
    assert!(bad(json!({ "rippled": url, "secret": "snotaseed" })));
    assert!(bad(
        json!({ "rippled": url, "secret": ALICE_SEED, "channel": "1234" })
    ));
    assert!(bad(
        json!({ "rippled": url, "secret": ALICE_SEED, "maxUnsecured": "-1" })
    ));
    assert!(bad(
        json!({ "rippled": url, "secret": ALICE_SEED, "address": "not-an-address" })
    ));
    assert!(bad(
        json!({ "rippled": url, "secretEnv": null, "secretFile": "/nonexistent/xrp-secret" })
    ));

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{BOB_SEED}\n"))?;
    let from_file = XrpPaychan::from_options(&json!({ "rippled": url, "secretFile": path }))?;
    assert_eq!(
        from_file.public_key(),
        KeyPair::from_seed(BOB_SEED)?.public_key()
    );

    let var = "ILP_BRIDGE_XRP_TEST_SECRET_UNIQUE";
    std::env::set_var(var, ALICE_SEED);
    let from_env = XrpPaychan::from_options(&json!({ "rippled": url, "secretEnv": var }))?;
    assert_eq!(
        from_env.public_key(),
        KeyPair::from_seed(ALICE_SEED)?.public_key()
    );
    assert!(!format!("{from_env:?}").contains(ALICE_SEED));

    let built = build_module(
        "xrp-paychan",
        &json!({ "rippled": url, "secret": ALICE_SEED }),
    )?;
    assert_eq!(built.name(), "xrp-paychan");
    assert!(channel_modules::STOCK_MODULES.contains(&"xrp-paychan"));
    Ok(())
}

/// A payer that starts closing its channel and then sends no more claims: the payee's watcher (always on, no
/// `claimInterval`) notices the closing channel on its own and redeems the best claim before it closes.
#[tokio::test]
async fn the_watcher_redeems_when_a_silent_payer_starts_closing() -> TestResult {
    let n = connected(json!({}), json!({ "expiryCheckInterval": 10 })).await?;
    let c150 = pay(&n, 150).await?;
    n.bob
        .module
        .handle_incoming_claim(&n.bob.ctx, Some(&c150))
        .await?;
    assert!(
        n.fake.submissions().is_empty(),
        "not closing: nothing redeemed"
    );
    // Alice starts closing (the channel closes in 10 minutes, within the 30-minute margin) and goes silent.
    n.fake.set_expiration(
        &n.a_to_b,
        Some(system_to_ripple_time(
            n.clock.now() + Duration::from_secs(600),
        )),
    );
    // Wait (bounded) for the background watcher; the assertion is on the ledger state, not on timing.
    for _ in 0..500 {
        if best(&n.bob, MVT_INCOMING_CLAIM_SUBMITTED).await? == BigUint::from(150u32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n.fake.channel(&n.a_to_b).ok_or("closed")?.balance, 150);
    assert_eq!(
        best(&n.bob, MVT_INCOMING_CLAIM_SUBMITTED).await?,
        BigUint::from(150u32)
    );
    Ok(())
}

/// The watcher runs by default every 60 s, and faster when the margins demand it.
#[test]
fn the_watcher_interval_defaults_to_a_minute_and_fits_the_margins() -> TestResult {
    let base = json!({ "rippled": "http://127.0.0.1:1", "secret": BOB_SEED });
    let interval = |extra: Value| -> Result<Duration, ModuleError> {
        Ok(XrpPaychan::from_options(&merge(base.clone(), &extra))?.expiry_check_interval())
    };
    assert_eq!(interval(json!({}))?, Duration::from_secs(60));
    // minSettleDelay − expiryMargin = 20 s: checks every 10 s.
    assert_eq!(
        interval(json!({ "minSettleDelay": 100, "expiryMargin": 80 }))?,
        Duration::from_secs(10)
    );
    assert_eq!(
        interval(json!({ "expiryCheckInterval": 5000 }))?,
        Duration::from_secs(5)
    );
    assert!(interval(json!({ "expiryCheckInterval": 0 })).is_err());
    Ok(())
}

/// Two accounts of one node: the second learns the first one's peer channel (its peer replies with the same
/// channel ID) and presents a genuine claim on it (replayed: claims reach the ledger when redeemed). The channel
/// becomes *contested*: neither account is credited from then on (the first one is re-checked at credit time),
/// with an error naming the channel and both accounts. The operator configures `peerChannel` on the rightful
/// account, which takes the channel over and is credited again; the other stays refused.
#[tokio::test]
async fn a_second_account_proving_the_same_channel_contests_it_until_the_operator_configures_it(
) -> TestResult {
    let n = connected(json!({}), json!({})).await?;
    let c100 = pay(&n, 100).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c100))
            .await?,
        Some(credit(100, &n.a_to_b, 100))
    );

    let other_host = n.bob.host.same_node(MemoryStores::unbounded());
    other_host.connect_to(
        &n.alice.host,
        Arc::clone(&n.alice.module) as Arc<dyn ChannelModule>,
        n.alice.ctx.options().clone(),
        "a",
    );
    let other_opts = n.bob.ctx.options().clone();
    let other = XrpPaychan::from_options(&other_opts)?;
    let other_ctx = other_host.context(other_opts, "b2");
    other.connect(&other_ctx).await?;
    let refused = other.handle_incoming_claim(&other_ctx, Some(&c100)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m))
            if m.contains("contested") && m.contains(&n.a_to_b.to_string()) && m.contains("b, b2")
                && m.contains("peerChannel")),
        "{refused:?}"
    );
    assert_eq!(
        n.bob.host.identity_record(&channel_identity(&n.a_to_b)),
        Some(IdentityRecord::Contested {
            accounts: vec!["b".to_owned(), "b2".to_owned()]
        })
    );
    // The first account is refused too now: a new claim credits nothing.
    let c200 = pay(&n, 200).await?;
    let sides: [(&dyn ChannelModule, &ChannelContext); 2] =
        [(&*n.bob.module, &n.bob.ctx), (&other, &other_ctx)];
    for (module, ctx) in sides {
        let refused = module.handle_incoming_claim(ctx, Some(&c200)).await;
        assert!(
            matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("contested")),
            "{refused:?}"
        );
    }
    let best = |ctx: &ChannelContext| {
        let ctx = ctx.clone();
        async move {
            Ok::<_, ModuleError>(
                ctx.max_value_tracker(MVT_INCOMING_CLAIM)?
                    .get_max()
                    .await?
                    .value,
            )
        }
    };
    assert_eq!(best(&n.bob.ctx).await?, BigUint::from(100u32));
    assert_eq!(best(&other_ctx).await?, BigUint::from(0u32));

    // The operator configures peerChannel on Bob's account (same stores, restarted module): credited again.
    let mut configured_opts = n.bob.ctx.options().clone();
    configured_opts["peerChannel"] = json!(n.a_to_b.to_string());
    let configured = XrpPaychan::from_options(&configured_opts)?;
    let configured_ctx = n.bob.host.context(configured_opts, "b");
    configured.connect(&configured_ctx).await?;
    assert_eq!(
        configured
            .handle_incoming_claim(&configured_ctx, Some(&c200))
            .await?,
        Some(credit(100, &n.a_to_b, 200))
    );
    let refused = other.handle_incoming_claim(&other_ctx, Some(&c200)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("(b)")),
        "{refused:?}"
    );
    assert_eq!(best(&other_ctx).await?, BigUint::from(0u32));
    Ok(())
}

/// A squatter account on Bob's node whose peer names Alice's channel to Bob (`ripple_channel_id`) before Bob's
/// own account took any claim: naming a channel proves nothing, so the squatter does not take the channel's
/// identity (claims it forges are refused by the channel's key); Bob's account, connected afterwards, is
/// credited as usual; and once Bob's account holds the identity, even a genuine claim replayed to the squatter
/// is refused.
/// A second account of Bob's node ("squatter"), connected, whose peer Carol names Alice's channel to Bob as its
/// own (the RPC `ripple_channel_id`); Carol cannot sign for it.
async fn squatter_naming_alices_channel(
    n: &Net,
) -> Result<(XrpPaychan, ChannelContext), Box<dyn std::error::Error>> {
    let carol_opts = json!({
        "rippled": n.fake.url(),
        "secret": CAROL_SEED,
        "channel": n.a_to_b.to_string(),
    });
    let carol = Arc::new(XrpPaychan::from_options(&carol_opts)?);
    let carol_host = TestHost::with_stores(MemoryStores::unbounded(), n.clock.clone());
    let squat_host = n.bob.host.same_node(MemoryStores::unbounded());
    squat_host.connect_to(
        &carol_host,
        carol as Arc<dyn ChannelModule>,
        carol_opts,
        "carol",
    );
    let squat_opts = n.bob.ctx.options().clone();
    let squat = XrpPaychan::from_options(&squat_opts)?;
    let squat_ctx = squat_host.context(squat_opts, "squatter");
    squat.connect(&squat_ctx).await?;
    assert_eq!(squat.peer_channel(), Some(n.a_to_b));
    Ok((squat, squat_ctx))
}

#[tokio::test]
async fn a_claim_already_paid_out_on_the_ledger_contests_nothing() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    n.alice.module.connect(&n.alice.ctx).await?;
    n.bob.module.connect(&n.bob.ctx).await?;
    let c300 = pay(&n, 300).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c300))
            .await?,
        Some(credit(300, &n.a_to_b, 300))
    );
    // Bob redeems it: the claim is now on the ledger, for anyone to read.
    n.bob.module.disconnect(&n.bob.ctx).await?;
    assert_eq!(n.fake.channel(&n.a_to_b).ok_or("closed")?.balance, 300);

    // Another account of Bob's node, whose peer (Carol) names Alice's channel as its own, presents that public
    // claim.
    let (squat, squat_ctx) = squatter_naming_alices_channel(&n).await?;
    let refused = squat.handle_incoming_claim(&squat_ctx, Some(&c300)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("already paid out")),
        "{refused:?}"
    );
    // Nothing contested: Bob's account still holds the channel and is credited for what comes next.
    let identity = channel_modules::xrp::channel_identity(&n.a_to_b);
    assert!(
        matches!(
            n.bob.host.identity_record(&identity),
            Some(channel_modules::identity::IdentityRecord::Held { ref account, .. }) if account == n.bob.ctx.account_id()
        ),
        "{:?}",
        n.bob.host.identity_record(&identity)
    );
    n.bob.module.connect(&n.bob.ctx).await?;
    let c400 = pay(&n, 400).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c400))
            .await?,
        Some(credit(100, &n.a_to_b, 400))
    );
    Ok(())
}

#[tokio::test]
async fn a_squatter_naming_the_victims_channel_cannot_lock_it_out() -> TestResult {
    let n = net(json!({}), json!({})).await?;
    let (squat, squat_ctx) = squatter_naming_alices_channel(&n).await?;
    let forged = claim_json(&n.a_to_b, 100, &KeyPair::from_seed(CAROL_SEED)?)?;
    let refused = squat.handle_incoming_claim(&squat_ctx, Some(&forged)).await;
    assert!(
        matches!(refused, Err(ModuleError::NotAccepted(_))),
        "{refused:?}"
    );

    // Bob's own account comes second and works.
    n.alice.module.connect(&n.alice.ctx).await?;
    n.bob.module.connect(&n.bob.ctx).await?;
    let c100 = pay(&n, 100).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c100))
            .await?,
        Some(credit(100, &n.a_to_b, 100))
    );
    let c300 = pay(&n, 300).await?;
    assert_eq!(
        n.bob
            .module
            .handle_incoming_claim(&n.bob.ctx, Some(&c300))
            .await?,
        Some(credit(200, &n.a_to_b, 300))
    );

    // The identity is Bob's account's: a genuine claim replayed to the squatter credits nothing (the channel
    // becomes contested: only the operator can tell which account is rightful, see the test above).
    let refused = squat.handle_incoming_claim(&squat_ctx, Some(&c300)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("contested")),
        "{refused:?}"
    );
    let squat_best = squat_ctx
        .max_value_tracker(MVT_INCOMING_CLAIM)?
        .get_max()
        .await?;
    assert_eq!(squat_best.value, BigUint::from(0u32));
    Ok(())
}
