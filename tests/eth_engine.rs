//! End to end in settlement-engine mode: connector A (mock) → engine A (`eth-payment` or `eth-channel`) →
//! anvil chain and claims relayed through the mock connectors → engine B → connector B. Connector amounts are
//! at scale 9 (gwei), module amounts at 18 (wei): B's connector must be credited exactly what A's connector
//! asked to settle, and the chain must show exactly that much moved. Also: claims a dishonest peer engine
//! could send (forged, replayed, lower, over the deposit, someone else's payment) are refused and credit
//! nothing, and an engine stopped in the middle of a payment and restarted on its RocksDB pays exactly once.

mod eth_common;
mod poll_common;
mod se_common;

use std::sync::Arc;
use std::time::Duration;

use channel_modules::eth::channel::contract::claim_digest;
use channel_modules::eth::payment::EthPaymentModule;
use channel_modules::eth::testing::{Anvil, ANVIL_DEFAULT_CHAIN_ID};
use channel_modules::eth::types::encode_hex;
use channel_modules::eth::{Address, PrivateKey, TxHash};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{MaxValueTracker, StoreError, TransferLog};
use channel_modules::{ChannelContext, ChannelModule, Claim, ContextHost, ModuleError};
use eth_common::{
    address, anvil, chain_start, fees, foreign_and_misdirected, mine_pending, module_options,
    pending_from, sent_by, wait_until, EthBoxError, GWEI, PAYEE_KEY, PAYER_KEY, STRANGER_KEY,
};
use ilp_bridge::settlement::host::{ModuleLogs, RocksModuleLogs};
use ilp_bridge::settlement::quantity::Scaled;
use ilp_bridge::store::Db;
use num_bigint::BigUint;
use se_common::{post_message_once_set_up, start_pair, stop_all, url, value_eq, Backing, Side};
use serde_json::{json, Value};

type TestResult = Result<(), EthBoxError>;

/// The scale both connectors work at.
const CONNECTOR_SCALE: u8 = 9;

/// `module` engines A (paying with dev key 1) and B (paid, dev key 2) on `anvil`, each behind its own mock
/// connector, linked; `options` gives the module options for a dev key.
async fn pair(
    anvil: &Anvil,
    module: &'static str,
    options: fn(&Anvil, usize) -> Value,
) -> Result<(Side, Side), EthBoxError> {
    start_pair(
        module,
        [
            (
                options(anvil, PAYER_KEY),
                Some(CONNECTOR_SCALE),
                Backing::rocks()?,
            ),
            (
                options(anvil, PAYEE_KEY),
                Some(CONNECTOR_SCALE),
                Backing::rocks()?,
            ),
        ],
    )
    .await
}

async fn settle(a: &Side, amount: u64, scale: u8) -> TestResult {
    let out = a
        .mock
        .settle(&a.account, &amount.to_string(), scale)
        .await?;
    assert_eq!(out.status, 201, "{}", out.body);
    Ok(())
}

async fn wait_credited(b: &Side, want_gwei: u64) -> TestResult {
    let want = Scaled::new(BigUint::from(want_gwei), CONNECTOR_SCALE);
    wait_until("connector B credited", || async {
        value_eq(&b.credited(), &want)
    })
    .await
    .map_err(|e| format!("{e}: credited {} want {want}", b.credited()).into())
}

/// Posts a raw message to engine B as if B's connector relayed it from A's engine. Returns status and body.
async fn post_message(b: &Side, message: &Value) -> Result<(u16, String), EthBoxError> {
    let resp = reqwest::Client::new()
        .post(format!("{}/accounts/{}/messages", url(b.se()?), b.account))
        .header("Content-Type", "application/octet-stream")
        .body(message.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Asserts B's connector holds exactly `gwei` and every credit had its own key, after a pause long enough for
/// a stray duplicate to show up.
async fn assert_credited_exactly(b: &Side, gwei: u64) -> TestResult {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        value_eq(
            &b.credited(),
            &Scaled::new(BigUint::from(gwei), CONNECTOR_SCALE)
        ),
        "credited {} want {gwei}",
        b.credited()
    );
    let credits = b.mock.credits();
    assert!(credits.iter().all(|c| c.amount.scale == CONNECTOR_SCALE));
    let keys: std::collections::HashSet<_> = credits.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), credits.len());
    Ok(())
}

fn wei(gwei: u64) -> BigUint {
    BigUint::from(gwei) * BigUint::from(GWEI)
}

fn payment_options(anvil: &Anvil, key: usize) -> Value {
    module_options(anvil, key, json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_engines_pay_on_chain_and_credit_exactly_across_scales() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let (a, b) = pair(&anvil, "eth-payment", payment_options).await?;

    // Gwei amounts at scale 9, and one at scale 6 (5 µETH = 5,000 gwei).
    let mut total_gwei = 0u64;
    for amount in [1_000_000u64, 2_345_679, 1] {
        settle(&a, amount, 9).await?;
        total_gwei += amount;
    }
    settle(&a, 5, 6).await?;
    total_gwei += 5_000;
    wait_credited(&b, total_gwei).await?;
    assert_credited_exactly(&b, total_gwei).await?;

    // The engines' books, in wei.
    let va = a.se()?.engine.account_view(&a.account)?;
    assert_eq!(va.settled.amount, wei(total_gwei).to_string());
    assert_eq!(va.in_flight.amount, "0");
    assert_eq!(va.leftover.amount, "0");
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, wei(total_gwei).to_string());
    assert!(vb.uncredited.is_empty());

    // The chain: payments from A to B adding up to exactly the settled wei, nothing else.
    let sent = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|t| t.success && t.to == Some(chain.payee)));
    let paid: BigUint = sent.iter().map(|t| t.value.clone()).sum();
    assert_eq!(paid, wei(total_gwei));
    assert_eq!(
        chain.rpc.balance(&chain.payee).await? - &chain.payee_before,
        wei(total_gwei)
    );
    assert_eq!(
        chain.payer_before - chain.rpc.balance(&chain.payer).await?,
        wei(total_gwei) + fees(&sent)
    );

    // A dishonest peer engine: someone else's payment to B, a payment from A to someone else, an unknown hash
    // are refused (HTTP 400) and credit nothing; A's real payment replayed is acknowledged with 0.
    let (foreign, misdirected) = foreign_and_misdirected(&anvil, wei(1_000), wei(1_000)).await?;
    for hash in [foreign, misdirected, TxHash([0x42; 32])] {
        let (status, body) = post_message(
            &b,
            &json!({"type": "claim", "claim": {"txHashes": [hash.to_string()]}}),
        )
        .await?;
        assert_eq!(status, 400, "{hash}: {body}");
    }
    let (status, body) = post_message(
        &b,
        &json!({"type": "claim", "claim": {"txHashes": [sent[0].hash.to_string()]}}),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let ack: Value = serde_json::from_str(&body)?;
    assert_eq!(ack["credited"], "0");
    assert_credited_exactly(&b, total_gwei).await?;
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, wei(total_gwei).to_string());
    stop_all([a, b]).await;
    Ok(())
}

/// Stops engine A once its payment (or channel transaction) is in anvil's pool but not mined, then either
/// mines it or drops it from the pool (as if the broadcast had been lost), and restarts A on its database.
/// Returns the hash that was pending.
async fn crash_after_broadcast(
    anvil: &Anvil,
    a: &mut Side,
    lose_broadcast: bool,
) -> Result<TxHash, EthBoxError> {
    let rpc = anvil.client()?;
    let payer = address(anvil, PAYER_KEY)?;
    let deadline = tokio::time::Instant::now() + eth_common::WAIT_LIMIT;
    let pending = loop {
        let hashes = pending_from(&rpc, &payer).await?;
        if !hashes.is_empty() {
            break hashes;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no transaction from A reached the pool".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    a.stop().await;
    let [hash] = pending[..] else {
        return Err(format!("expected one pending transaction, got {pending:?}").into());
    };
    if lose_broadcast {
        anvil.drop_transaction(&hash).await?;
        assert!(pending_from(&rpc, &payer).await?.is_empty());
    }
    mine_pending(anvil).await?;
    a.restart().await?;
    Ok(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_engine_restarted_mid_payment_pays_exactly_once() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let payer = address(&anvil, PAYER_KEY)?;
    let payee = address(&anvil, PAYEE_KEY)?;
    let payee_before = rpc.balance(&payee).await?;
    let (mut a, b) = pair(&anvil, "eth-payment", payment_options).await?;
    let mut total_gwei = 0u64;
    // Round 1: the payment was broadcast, A stops before it is mined; round 2: the broadcast is lost too
    // (only A's record of the signed transaction survives).
    for (round, lose_broadcast) in [(1u64, false), (2, true)] {
        let first_block = rpc.block_number().await? + 1;
        anvil.set_automine(false).await?;
        let amount = 1_000_000 * round + 7;
        settle(&a, amount, 9).await?;
        total_gwei += amount;
        let hash = crash_after_broadcast(&anvil, &mut a, lose_broadcast).await?;
        wait_credited(&b, total_gwei).await?;
        assert_credited_exactly(&b, total_gwei).await?;
        // Exactly one payment this round: the one recorded before the stop, for exactly the amount.
        let sent = sent_by(&rpc, &payer, first_block).await?;
        assert_eq!(sent.len(), 1, "round {round}: {sent:?}");
        assert_eq!(sent[0].hash, hash);
        assert_eq!(sent[0].to, Some(payee));
        assert_eq!(sent[0].value, wei(amount));
        let va = a.se()?.engine.account_view(&a.account)?;
        assert_eq!(va.settled.amount, wei(total_gwei).to_string());
    }
    assert_eq!(rpc.balance(&payee).await? - payee_before, wei(total_gwei));
    stop_all([a, b]).await;
    Ok(())
}

/// Wei A deposits per channel and per top-up.
const CHANNEL_DEPOSIT_GWEI: u64 = 10_000_000;

fn channel_options(anvil: &Anvil, key: usize) -> Value {
    module_options(
        anvil,
        key,
        json!({
            "channelDeposit": wei(CHANNEL_DEPOSIT_GWEI).to_string(),
            "channelTimeoutSecs": 86_400,
            "closeMarginSecs": 600,
        }),
    )
}

/// The channel A deployed (its first contract creation from `first_block` on).
async fn channel_of(anvil: &Anvil, first_block: u64) -> Result<Address, EthBoxError> {
    let sent = sent_by(&anvil.client()?, &address(anvil, PAYER_KEY)?, first_block).await?;
    Ok(sent
        .iter()
        .find_map(|t| t.contract)
        .ok_or("no channel deployed")?)
}

fn signed_claim(key: &str, channel: &Address, amount: &BigUint) -> Result<Value, EthBoxError> {
    let sig = PrivateKey::from_hex(key)?.sign_personal(&claim_digest(
        ANVIL_DEFAULT_CHAIN_ID,
        channel,
        amount,
    )?)?;
    Ok(json!({"type": "claim", "claim": {
        "channel": channel.to_string(), "amount": amount.to_string(),
        "signature": encode_hex(&sig.to_bytes65()),
    }}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_engines_credit_exactly_refuse_bad_claims_and_close_on_chain() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let (a, b) = pair(&anvil, "eth-channel", channel_options).await?;
    let mut total_gwei = 0u64;
    for amount in [3_000_000u64, 1, 2_999_999] {
        settle(&a, amount, 9).await?;
        total_gwei += amount;
    }
    settle(&a, 2, 3).await?; // 0.002 ETH = 2,000,000 gwei
    total_gwei += 2_000_000;
    wait_credited(&b, total_gwei).await?;
    assert_credited_exactly(&b, total_gwei).await?;
    let channel = channel_of(&anvil, chain.first_block).await?;
    // One deploy with the deposit, no top-up (8 mETH < 10 mETH), nothing paid out yet.
    let payer_txs = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(payer_txs.len(), 1, "{payer_txs:?}");
    assert_eq!(
        chain.rpc.balance(&channel).await?,
        wei(CHANNEL_DEPOSIT_GWEI)
    );
    assert_eq!(chain.rpc.balance(&chain.payee).await?, chain.payee_before);
    let best = wei(total_gwei);

    // Claims a dishonest engine A could send, straight to engine B.
    let payer_key = anvil.dev_key(PAYER_KEY);
    let refused = [
        // Forged: a higher amount signed by someone else than the channel's payer.
        (
            "forged",
            signed_claim(anvil.dev_key(STRANGER_KEY), &channel, &(&best + 1u32))?,
        ),
        // Over the deposit, though signed by the payer.
        (
            "over-deposit",
            signed_claim(payer_key, &channel, &(wei(CHANNEL_DEPOSIT_GWEI) + 1u32))?,
        ),
        // A valid signature over another amount than the one claimed.
        ("tampered", {
            let mut m = signed_claim(payer_key, &channel, &best)?;
            m["claim"]["amount"] = json!((&best + wei(1)).to_string());
            m
        }),
    ];
    for (what, message) in &refused {
        let (status, body) = post_message(&b, message).await?;
        assert_eq!(status, 400, "{what}: {body}");
    }
    // Replayed and lower claims are acknowledged with nothing credited.
    for (what, amount) in [("replayed", best.clone()), ("lower", &best - wei(1))] {
        let (status, body) = post_message(&b, &signed_claim(payer_key, &channel, &amount)?).await?;
        assert_eq!(status, 201, "{what}: {body}");
        let ack: Value = serde_json::from_str(&body)?;
        assert_eq!(ack["credited"], "0", "{what}");
    }
    assert_credited_exactly(&b, total_gwei).await?;
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, best.to_string());

    // B leaves (account deleted: module disconnect): it closes the channel with its best claim.
    b.se()?.engine.delete_account(&b.account).await?;
    let payee_txs = sent_by(&chain.rpc, &chain.payee, chain.first_block).await?;
    assert_eq!(payee_txs.len(), 1, "{payee_txs:?}");
    assert_eq!(payee_txs[0].to, Some(channel));
    assert!(payee_txs[0].success);
    assert_eq!(chain.rpc.balance(&channel).await?, BigUint::default());
    assert_eq!(
        chain.rpc.balance(&chain.payee).await? + fees(&payee_txs) - &chain.payee_before,
        best
    );
    let payer_txs = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(
        chain.payer_before - chain.rpc.balance(&chain.payer).await?,
        &best + fees(&payer_txs)
    );
    stop_all([a, b]).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_engine_restarted_while_opening_deploys_exactly_once() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let payer = address(&anvil, PAYER_KEY)?;
    let first_block = rpc.block_number().await? + 1;
    let (mut a, b) = pair(&anvil, "eth-channel", channel_options).await?;
    // Round 1: the deploy is in the pool when A stops; round 2 (a top-up, the claim exceeds the deposit): its
    // broadcast is lost as well.
    let mut total_gwei = 0u64;
    for (round, amount, lose_broadcast) in [(1, 4_000_000u64, false), (2, 9_000_000, true)] {
        anvil.set_automine(false).await?;
        settle(&a, amount, 9).await?;
        total_gwei += amount;
        let hash = crash_after_broadcast(&anvil, &mut a, lose_broadcast).await?;
        wait_credited(&b, total_gwei).await?;
        assert_credited_exactly(&b, total_gwei).await?;
        let sent = sent_by(&rpc, &payer, first_block).await?;
        assert_eq!(sent.len(), round, "{sent:?}");
        assert_eq!(sent[round - 1].hash, hash);
        assert!(sent.iter().all(|t| t.success));
    }
    let channel = channel_of(&anvil, first_block).await?;
    assert_eq!(rpc.balance(&channel).await?, wei(2 * CHANNEL_DEPOSIT_GWEI));
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, wei(total_gwei).to_string());
    stop_all([a, b]).await;
    Ok(())
}

/// Engine B's state after a crash between the module recording a verified payment in its transfer log and
/// the engine committing the credit: the module's tracker writes are staged with the credit and die with the
/// process. The real module code runs here on B's RocksDB transfer logs; its tracker writes go to memory and
/// are dropped.
struct CrashedHost {
    logs: RocksModuleLogs,
    identities: Arc<ilp_bridge::identity::IdentityRegistry>,
    account: String,
    trackers: MemoryStores,
}

#[async_trait::async_trait]
impl ContextHost for CrashedHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.logs.transfer_log(&self.account, key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        self.trackers.max_value_tracker(key)
    }

    async fn rpc(&self, _method: &str, _args: Value) -> Result<Value, ModuleError> {
        Err(ModuleError::Rpc("the engine is down".to_owned()))
    }

    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        _account_id: &str,
        origin: channel_modules::identity::IdentityOrigin,
    ) -> Result<(), ModuleError> {
        // B's node-wide registry survives the crash: holds go to its database, as the engine's host does.
        self.identities
            .hold_identity(identity, &self.account, origin)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_engine_crashed_between_verifying_and_crediting_still_credits_once(
) -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let payer = address(&anvil, PAYER_KEY)?;
    let (a, mut b) = pair(&anvil, "eth-payment", payment_options).await?;
    settle(&a, 1_000, 9).await?;
    wait_credited(&b, 1_000).await?;

    // B is down while A pays: A's claim cannot be delivered (A keeps retrying).
    b.stop().await;
    let first_block = rpc.block_number().await? + 1;
    settle(&a, 2_000, 9).await?;
    wait_until("A's payment on chain", || async {
        sent_by(&rpc, &payer, first_block)
            .await
            .is_ok_and(|s| !s.is_empty())
    })
    .await?;
    let sent = sent_by(&rpc, &payer, first_block).await?;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let hash = sent[0].hash;

    // B had verified the payment and recorded it when it crashed, before the credit was committed.
    {
        let Backing::Rocks(dir) = &b.backing else {
            return Err("B is not on RocksDB".into());
        };
        let db = Db::open(dir.path())?;
        let mut opts = b.options.clone();
        opts["peerAddress"] = json!(payer.to_string());
        let module = EthPaymentModule::from_options(&opts)?;
        let ctx = ChannelContext::new(
            Arc::new(CrashedHost {
                identities: ilp_bridge::identity::IdentityRegistry::on_db(db.clone()),
                logs: RocksModuleLogs::new(db),
                account: b.account.clone(),
                trackers: MemoryStores::unbounded(),
            }),
            opts,
            b.account.as_str(),
        );
        // (The amount this returns is meaningless here: the throw-away trackers start empty.)
        module
            .handle_incoming_claim(
                &ctx,
                Some(&Claim::Json(json!({ "txHashes": [hash.to_string()] }))),
            )
            .await?
            .ok_or("the payment was not recorded")?;
    }

    // B restarts; A's claim arrives again: the payment must be credited, once.
    b.restart().await?;
    wait_credited(&b, 3_000).await?;
    assert_credited_exactly(&b, 3_000).await?;
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, wei(3_000).to_string());
    stop_all([a, b]).await;
    Ok(())
}

/// eth-payment options with `peerAddress` set to the other side's dev address (engine-wide, so every account
/// of the engine gets it).
fn pinned_payment_options(anvil: &Anvil, key: usize) -> Value {
    let other = if key == PAYER_KEY {
        PAYEE_KEY
    } else {
        PAYER_KEY
    };
    match address(anvil, other) {
        Ok(peer) => module_options(anvil, key, json!({ "peerAddress": peer.to_string() })),
        Err(_) => module_options(anvil, key, json!({})),
    }
}

/// Every account of an engine gets the same module options: with `peerAddress` configured (or a second peer
/// proving the first one's address in `eth_address`), a second account would be credited for the first
/// account's on-chain payments. The address belongs to the account that claimed it first; the second account
/// is refused and credited nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_second_account_on_the_first_ones_peer_is_refused_and_credited_nothing(
) -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let payer = address(&anvil, PAYER_KEY)?;
    let (a, b) = pair(&anvil, "eth-payment", pinned_payment_options).await?;
    let first_block = rpc.block_number().await? + 1;
    settle(&a, 1_000, 9).await?;
    wait_credited(&b, 1_000).await?;
    let sent = sent_by(&rpc, &payer, first_block).await?;
    assert_eq!(sent.len(), 1, "{sent:?}");

    let second = b.mock.add_account(&url(b.se()?)).await?;
    assert_ne!(second, b.account);
    let claim = Claim::Json(json!({ "txHashes": [sent[0].hash.to_string()] }));
    let (status, body) = post_message_once_set_up(
        &url(b.se()?),
        &second,
        ilp_bridge::settlement::wire::claim_message(&claim),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("another account"), "{body}");
    assert_eq!(b.se()?.engine.account_view(&second)?.received.amount, "0");

    // The first account keeps being credited, exactly.
    settle(&a, 2_000, 9).await?;
    wait_credited(&b, 3_000).await?;
    assert_credited_exactly(&b, 3_000).await?;
    stop_all([a, b]).await;
    Ok(())
}

/// An eth-payment engine with dev key `key` and no account yet, behind its own mock connector.
async fn payment_engine_without_accounts(anvil: &Anvil, key: usize) -> Result<Side, EthBoxError> {
    let mock = ilp_bridge::testing::mock_connector::MockConnector::start().await?;
    let mut side = Side {
        mock,
        se: None,
        backing: Backing::rocks()?,
        account: String::new(),
        module: "eth-payment",
        options: payment_options(anvil, key),
        connector_scale: Some(CONNECTOR_SCALE),
    };
    side.se = Some(se_common::start_engine(side.config(), &side.backing).await?);
    Ok(side)
}

/// A squatter account is set up on the payee's engine before the payer's account, and its peer calls
/// `eth_address` naming the payer's address as its own: in the unproven form without a challenge (refused) and
/// with a challenge (answered with the payee's proof). Neither pins the address or takes its identity: the
/// payer's account, set up afterwards on the same engine (same module configuration), is credited exactly,
/// and the squatter cannot be credited with the payer's payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_squatter_naming_the_payers_address_first_cannot_take_it() -> TestResult {
    use channel_modules::eth::peer::{address_request, verify_address_proof, RPC_ETH_ADDRESS};
    use ilp_bridge::settlement::wire;

    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let chain = rpc.chain_id().await?;
    let payer = address(&anvil, PAYER_KEY)?;
    let payee = address(&anvil, PAYEE_KEY)?;
    let mut b = payment_engine_without_accounts(&anvil, PAYEE_KEY).await?;
    let engine_b = url(b.se()?);
    let squatter = b.mock.add_account(&engine_b).await?;

    let (status, body) = post_message_once_set_up(
        &engine_b,
        &squatter,
        wire::rpc_request(RPC_ETH_ADDRESS, json!([payer.to_string()])),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let old_form = wire::parse_rpc_reply(body.as_bytes());
    assert!(
        matches!(&old_form, Err(ModuleError::Rpc(m)) if m.contains("older ilp-bridge")),
        "{old_form:?}"
    );
    let challenge = [5u8; 32];
    let (status, body) = post_message_once_set_up(
        &engine_b,
        &squatter,
        wire::rpc_request(RPC_ETH_ADDRESS, address_request(&payer, &challenge)),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let proof = wire::parse_rpc_reply(body.as_bytes())?;
    assert_eq!(
        verify_address_proof(chain, &payer, &challenge, &proof)?,
        payee
    );

    // The payer's account comes second, on the same engine, and is credited exactly.
    b.account = b.mock.add_account(&engine_b).await?;
    let mut a = payment_engine_without_accounts(&anvil, PAYER_KEY).await?;
    a.account = a.mock.add_account(&url(a.se()?)).await?;
    ilp_bridge::testing::mock_connector::MockConnector::link(
        &a.mock, &a.account, &b.mock, &b.account,
    )?;
    let first_block = rpc.block_number().await? + 1;
    settle(&a, 1_000, 9).await?;
    wait_credited(&b, 1_000).await?;
    assert_credited_exactly(&b, 1_000).await?;

    // The squatter (its peer gone) cannot be credited with that payment.
    let sent = sent_by(&rpc, &payer, first_block).await?;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let claim = Claim::Json(json!({ "txHashes": [sent[0].hash.to_string()] }));
    let refused = reqwest::Client::new()
        .post(format!("{engine_b}/accounts/{squatter}/messages"))
        .header("Content-Type", "application/octet-stream")
        .body(wire::claim_message(&claim))
        .send()
        .await?;
    assert!(!refused.status().is_success(), "{}", refused.status());
    assert_eq!(b.se()?.engine.account_view(&squatter)?.received.amount, "0");
    assert_credited_exactly(&b, 1_000).await?;
    stop_all([a, b]).await;
    Ok(())
}

/// A channel claim message whose claim carries `retired` claims on other channels (the payer's final claims on
/// channels it retired).
fn claim_with_retired(
    key: &str,
    channel: &Address,
    amount: &BigUint,
    retired: &[Value],
) -> Result<Value, EthBoxError> {
    let mut message = signed_claim(key, channel, amount)?;
    message["claim"]["retired"] = json!(retired);
    Ok(message)
}

/// Engine A's payer moved on from channel X while its last claim there never reached engine B: a claim on its
/// new channel Y carrying X's final claim credits X's amount once, under its own settlement ID (B had already
/// credited that very Y claim, so the ID must differ for the connector to take the second credit). Replays and
/// a forged retired claim credit nothing, and the chain pays out exactly what was credited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_engine_credits_a_retired_channels_claim_once_under_its_own_settlement_id(
) -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let (a, b) = pair(&anvil, "eth-channel", channel_options).await?;
    settle(&a, 3_000_000, 9).await?;
    wait_credited(&b, 3_000_000).await?;
    let first = channel_of(&anvil, chain.first_block).await?;

    // Two more channels from the payer to the payee: X (retired, every claim on it lost) and Y (current).
    let payer_key = anvil.dev_key(PAYER_KEY);
    let payer_wallet = channel_modules::eth::wallet::Wallet::new(
        anvil.url(),
        PrivateKey::from_hex(payer_key)?,
        channel_modules::eth::wallet::TxSettings::default(),
    )?;
    let now = chain.rpc.latest_timestamp().await?;
    let mut deployed = Vec::new();
    for _ in 0..2 {
        let init = channel_modules::eth::channel::contract::payment_channel_init_code(
            &chain.payee,
            now + 86_400,
        )?;
        deployed.push(payer_wallet.deploy(init, wei(CHANNEL_DEPOSIT_GWEI)).await?);
    }
    let (x, y) = (deployed[0], deployed[1]);

    // Y's claim alone moves B to Y (closing the first channel): 500,000 gwei.
    let (status, body) = post_message(&b, &signed_claim(payer_key, &y, &wei(500_000))?).await?;
    assert_eq!(status, 201, "{body}");
    wait_credited(&b, 3_500_000).await?;

    // The same Y claim, now carrying X's final claim (1,000,000 gwei) and a forged one: X's amount, once.
    let x_claim = signed_claim(payer_key, &x, &wei(1_000_000))?["claim"].clone();
    let forged = signed_claim(anvil.dev_key(STRANGER_KEY), &x, &wei(2_000_000))?["claim"].clone();
    let with_x = claim_with_retired(payer_key, &y, &wei(500_000), &[forged, x_claim])?;
    let (status, body) = post_message(&b, &with_x).await?;
    assert_eq!(status, 201, "{body}");
    wait_credited(&b, 4_500_000).await?;
    let (status, body) = post_message(&b, &with_x).await?;
    assert_eq!(status, 201, "replay: {body}");
    let ack: Value = serde_json::from_str(&body)?;
    assert_eq!(ack["credited"], "0", "replay");
    assert_credited_exactly(&b, 4_500_000).await?;
    let vb = b.se()?.engine.account_view(&b.account)?;
    assert_eq!(vb.received.amount, wei(4_500_000).to_string());

    // B leaves: every channel is closed, and the payee got exactly what was credited.
    b.se()?.engine.delete_account(&b.account).await?;
    let payee_txs = sent_by(&chain.rpc, &chain.payee, chain.first_block).await?;
    let closed: std::collections::HashSet<_> = payee_txs.iter().filter_map(|t| t.to).collect();
    assert_eq!(closed, [first, x, y].into_iter().collect(), "{payee_txs:?}");
    assert!(payee_txs.iter().all(|t| t.success));
    assert_eq!(
        chain.rpc.balance(&chain.payee).await? + fees(&payee_txs) - &chain.payee_before,
        wei(4_500_000)
    );
    stop_all([a, b]).await;
    Ok(())
}
