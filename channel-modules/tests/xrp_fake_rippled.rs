//! The fake rippled applies `PaymentChannelClaim` like rippled: these tests drive it through the module's own
//! JSON-RPC client, so both sides of the wire are checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use channel_modules::xrp::crypto::{ChannelId, KeyPair};
use channel_modules::xrp::fake_rippled::FakeRippled;
use channel_modules::xrp::rpc::{system_to_ripple_time, RippledClient, RippledError};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAYER_SEED: &str = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
const PAYEE_SEED: &str = "sp5fghtJtpUorTwvof1NpDXAzNwf5";
/// A third key: the xrpl.js fixture's secp256k1 private key (no seed, so it cannot submit).
const OTHER_PRIVATE_KEY: &str = "ACCD3309DB14D1A4FC9B1DAE608031F4408C85C73EE05E035B7DC8B25840107A";
/// Seed of a third account, neither source nor destination of the channel.
const THIRD_SEED: &str = "sEdT7wHTCLzDG7ueaw4hroSTBvH7Mk5";

struct Setup {
    fake: FakeRippled,
    client: RippledClient,
    payer: KeyPair,
    payee: KeyPair,
    channel: ChannelId,
}

async fn setup() -> Result<Setup, Box<dyn std::error::Error>> {
    let fake = FakeRippled::start().await?;
    let client = RippledClient::new(&fake.url())?;
    let payer = KeyPair::from_seed(PAYER_SEED)?;
    let payee = KeyPair::from_seed(PAYEE_SEED)?;
    let channel = fake.create_channel(&payer, &payee.public_key().address(), 1_000, 3_600, None);
    Ok(Setup {
        fake,
        client,
        payer,
        payee,
        channel,
    })
}

fn claim_tx(
    s: &Setup,
    sender: &KeyPair,
    balance: u64,
    amount: u64,
    signer: &KeyPair,
) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(json!({
        "TransactionType": "PaymentChannelClaim",
        "Account": sender.public_key().address(),
        "Channel": s.channel.to_string(),
        "Balance": balance.to_string(),
        "Amount": amount.to_string(),
        "Signature": hex::encode_upper(signer.sign_claim(&s.channel, amount)?),
        "PublicKey": signer.public_key().to_hex(),
    }))
}

async fn submit(s: &Setup, tx: Value, seed: &str) -> Result<String, Box<dyn std::error::Error>> {
    Ok(s.client.submit_with_secret(tx, seed).await?.engine_result)
}

#[tokio::test]
async fn ledger_entry_returns_channel_facts_or_none() -> TestResult {
    let s = setup().await?;
    let facts = s
        .client
        .payment_channel(&s.channel)
        .await?
        .ok_or("channel missing")?;
    assert_eq!(facts.id, s.channel);
    assert_eq!(facts.account, s.payer.public_key().address());
    assert_eq!(facts.destination, s.payee.public_key().address());
    assert_eq!(facts.amount, 1_000);
    assert_eq!(facts.balance, 0);
    assert_eq!(facts.public_key, s.payer.public_key());
    assert_eq!(facts.settle_delay, 3_600);
    assert_eq!(facts.expiration, None);
    let mut missing = s.channel;
    missing.0[0] ^= 0xFF;
    assert_eq!(s.client.payment_channel(&missing).await?, None);
    // Raw shape: an unknown entry is rippled's `entryNotFound` error.
    let err = s
        .client
        .call(
            "ledger_entry",
            json!({ "payment_channel": missing.to_string() }),
        )
        .await
        .err()
        .ok_or("expected an error")?;
    assert!(
        matches!(err, RippledError::Rpc { ref code, .. } if code == "entryNotFound"),
        "{err:?}"
    );
    // account_channels lists the source's channels in rippled's field names.
    let listed = s
        .client
        .call(
            "account_channels",
            json!({ "account": s.payer.public_key().address() }),
        )
        .await?;
    let channels = listed["channels"].as_array().ok_or("no channels array")?;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["channel_id"], json!(s.channel.to_string()));
    assert_eq!(channels[0]["amount"], json!("1000"));
    assert_eq!(
        channels[0]["destination_account"],
        json!(s.payee.public_key().address())
    );
    assert_eq!(
        channels[0]["public_key_hex"],
        json!(s.payer.public_key().to_hex())
    );
    Ok(())
}

#[tokio::test]
async fn valid_claim_moves_the_balance_once() -> TestResult {
    let s = setup().await?;
    let payee_address = s.payee.public_key().address();
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 400, 400, &s.payer)?, PAYEE_SEED).await?,
        "tesSUCCESS"
    );
    assert_eq!(s.fake.channel(&s.channel).ok_or("closed")?.balance, 400);
    assert_eq!(s.fake.received(&payee_address), 400);
    // The same balance again requests nothing: tecUNFUNDED_PAYMENT, and nothing moves.
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 400, 400, &s.payer)?, PAYEE_SEED).await?,
        "tecUNFUNDED_PAYMENT"
    );
    // A lower one too.
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 300, 300, &s.payer)?, PAYEE_SEED).await?,
        "tecUNFUNDED_PAYMENT"
    );
    // A higher one moves only the difference.
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 700, 700, &s.payer)?, PAYEE_SEED).await?,
        "tesSUCCESS"
    );
    assert_eq!(s.fake.received(&payee_address), 700);
    assert_eq!(s.fake.submissions().len(), 4);
    assert!(s
        .fake
        .submissions()
        .iter()
        .all(|tx| tx.get("secret").is_none()));
    Ok(())
}

#[tokio::test]
async fn bad_claims_get_ripples_result_codes_and_move_nothing() -> TestResult {
    let s = setup().await?;
    let other = KeyPair::from_secret(OTHER_PRIVATE_KEY)?;
    let third = KeyPair::from_seed(THIRD_SEED)?;

    // Signature over another amount than the one claimed.
    let mut forged = claim_tx(&s, &s.payee, 500, 500, &s.payer)?;
    forged["Amount"] = json!("600");
    forged["Balance"] = json!("600");
    assert_eq!(submit(&s, forged, PAYEE_SEED).await?, "temBAD_SIGNATURE");

    // Valid signature, but by a key that is not the channel's.
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 500, 500, &other)?, PAYEE_SEED).await?,
        "temBAD_SIGNER"
    );

    // More than the deposit.
    assert_eq!(
        submit(
            &s,
            claim_tx(&s, &s.payee, 1_001, 1_001, &s.payer)?,
            PAYEE_SEED
        )
        .await?,
        "tecUNFUNDED_PAYMENT"
    );

    // Balance above the signed amount.
    assert_eq!(
        submit(&s, claim_tx(&s, &s.payee, 600, 500, &s.payer)?, PAYEE_SEED).await?,
        "temBAD_AMOUNT"
    );

    // Neither source nor destination.
    assert_eq!(
        submit(&s, claim_tx(&s, &third, 500, 500, &s.payer)?, THIRD_SEED).await?,
        "tecNO_PERMISSION"
    );

    // Unknown channel.
    let mut unknown = claim_tx(&s, &s.payee, 500, 500, &s.payer)?;
    let mut missing = s.channel;
    missing.0[5] ^= 1;
    unknown["Channel"] = json!(missing.to_string());
    unknown["Signature"] = json!(hex::encode_upper(s.payer.sign_claim(&missing, 500)?));
    assert_eq!(submit(&s, unknown, PAYEE_SEED).await?, "tecNO_TARGET");

    // The destination must present a signature.
    let mut unsigned = claim_tx(&s, &s.payee, 500, 500, &s.payer)?;
    if let Some(obj) = unsigned.as_object_mut() {
        obj.remove("Signature");
        obj.remove("PublicKey");
    }
    assert_eq!(submit(&s, unsigned, PAYEE_SEED).await?, "temBAD_SIGNATURE");

    // A secret that does not match the account is refused before anything is applied.
    let err = s
        .client
        .submit_with_secret(claim_tx(&s, &s.payee, 500, 500, &s.payer)?, THIRD_SEED)
        .await
        .err()
        .ok_or("expected badSecret")?;
    assert!(
        matches!(err, RippledError::Rpc { ref code, .. } if code == "badSecret"),
        "{err:?}"
    );

    let channel = s.fake.channel(&s.channel).ok_or("closed")?;
    assert_eq!(channel.balance, 0);
    assert_eq!(s.fake.received(&s.payee.public_key().address()), 0);
    Ok(())
}

#[tokio::test]
async fn claim_on_an_expired_channel_closes_it() -> TestResult {
    let now = SystemTime::now();
    let fake = FakeRippled::start_with_clock(Arc::new(move || now)).await?;
    let client = RippledClient::new(&fake.url())?;
    let payer = KeyPair::from_seed(PAYER_SEED)?;
    let payee = KeyPair::from_seed(PAYEE_SEED)?;
    let channel = fake.create_channel(&payer, &payee.public_key().address(), 1_000, 3_600, None);
    fake.set_expiration(
        &channel,
        Some(system_to_ripple_time(now - Duration::from_secs(1))),
    );
    let tx = json!({
        "TransactionType": "PaymentChannelClaim",
        "Account": payee.public_key().address(),
        "Channel": channel.to_string(),
        "Balance": "100",
        "Amount": "100",
        "Signature": hex::encode_upper(payer.sign_claim(&channel, 100)?),
        "PublicKey": payer.public_key().to_hex(),
    });
    assert_eq!(
        client
            .submit_with_secret(tx, PAYEE_SEED)
            .await?
            .engine_result,
        "tesSUCCESS"
    );
    assert_eq!(
        fake.channel(&channel),
        None,
        "the expired channel is closed"
    );
    assert_eq!(
        fake.received(&payee.public_key().address()),
        0,
        "and the claim paid nothing"
    );
    assert_eq!(
        fake.received(&payer.public_key().address()),
        1_000,
        "the deposit went back to the source"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_method_is_unknown_cmd_and_server_stops_on_drop() -> TestResult {
    let s = setup().await?;
    let err = s
        .client
        .call("wallet_propose", json!({}))
        .await
        .err()
        .ok_or("expected error")?;
    assert!(
        matches!(err, RippledError::Rpc { ref code, .. } if code == "unknownCmd"),
        "{err:?}"
    );
    let url = s.fake.url();
    drop(s);
    let after = RippledClient::new(&url)?
        .call("ledger_entry", json!({}))
        .await;
    assert!(
        matches!(after, Err(RippledError::Transport(_))),
        "{after:?}"
    );
    Ok(())
}
