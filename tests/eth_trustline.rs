//! End to end over BTP/1.0: two ilp-bridge nodes (`PeerNode`, each on its own RocksDB folder) joined by one
//! trustline whose module is `eth-payment` or `eth-channel` (built by name from the peer's legacy options), on
//! a throw-away anvil chain. Transfers from the payer node to the payee node are fulfilled; the payer's module
//! settles on chain; the trustline balances on both sides (local records and the `balance` side protocol), the
//! modules' records and the chain must agree to the wei.

mod eth_common;
mod poll_common;

use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::eth::channel::contract::claim_digest;
use channel_modules::eth::channel::{INCOMING_CLAIM_KEY, OUTGOING_CHANNEL_KEY, OUTGOING_CLAIM_KEY};
use channel_modules::eth::payment::PAYMENTS_LOG_KEY;
use channel_modules::eth::testing::{Anvil, ANVIL_DEFAULT_CHAIN_ID};
use channel_modules::eth::types::encode_hex;
use channel_modules::eth::{Address, PrivateKey, TxHash};
use channel_modules::store::{MaxValue, Transfer, TransferId, TransferLog};
use eth_common::{
    address, anvil, chain_start, fees, foreign_and_misdirected, mine_pending, module_options,
    sent_by, wait_until, EthBoxError, PAYEE_KEY, PAYER_KEY, STRANGER_KEY,
};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::routing::{LocalPayments, RoutingConfig};
use ilp_bridge::peer::{NodeOptions, PeerEvent, PeerNode, Trustline};
use ilp_bridge::store::Db;
use num_bigint::BigUint;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

type TestResult = Result<(), EthBoxError>;

const PREFIX: &str = "test.eth.";
const BTP_SECRET: &str = "btp-secret";
/// Trustline limit, wei (both sides).
const MAX_BALANCE: &str = "1000000000000000000";
/// Name of the peer on the payee node (the payer) and on the payer node (the payee).
const PAYER_PEER: &str = "payer";
const PAYEE_PEER: &str = "payee";

/// A node, the folder its RocksDB lives in and its one peer's configuration.
struct Node {
    node: Option<PeerNode>,
    dir: tempfile::TempDir,
    name: String,
    options: Value,
}

impl Node {
    fn trustline(&self, name: &str) -> Result<Trustline, EthBoxError> {
        Ok(self
            .node
            .as_ref()
            .and_then(|n| n.trustline(name))
            .ok_or("no such trustline")?
            .clone())
    }

    async fn shutdown(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Starts the node (again) on its folder.
    async fn start(&mut self) -> TestResult {
        self.shutdown().await;
        let config = PeerConfig::from_legacy_json(&self.name, &self.options)?;
        let db = open_db(self.dir.path()).await?;
        let node = PeerNode::start(
            vec![config],
            db,
            NodeOptions {
                bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                // The test receives the payments for the node itself.
                routing: RoutingConfig {
                    local_payments: LocalPayments::Embedder,
                    ..RoutingConfig::default()
                },
                ..NodeOptions::default()
            },
        )
        .await?;
        self.node = Some(node);
        Ok(())
    }
}

async fn open_db(path: &std::path::Path) -> Result<Arc<Db>, EthBoxError> {
    // A node that just shut down may need a moment to let go of the database lock.
    let mut last = None;
    for _ in 0..50 {
        match Db::open(path) {
            Ok(db) => return Ok(db),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("open db: {last:?}").into())
}

async fn start_node(name: &str, options: &Value) -> Result<Node, EthBoxError> {
    let mut node = Node {
        node: None,
        dir: tempfile::tempdir()?,
        name: name.to_owned(),
        options: options.clone(),
    };
    node.start().await?;
    Ok(node)
}

/// The payee node listens, the payer node dials it; returns once both trustlines are connected.
struct Pair {
    payee: Node,
    payer: Node,
}

impl Pair {
    /// The payee node's trustline to the payer (a handle keeps the node's database open: drop it before a
    /// restart).
    fn payee_tl(&self) -> Result<Trustline, EthBoxError> {
        self.payee.trustline(PAYER_PEER)
    }

    /// The payer node's trustline to the payee.
    fn payer_tl(&self) -> Result<Trustline, EthBoxError> {
        self.payer.trustline(PAYEE_PEER)
    }

    /// The payee module's log of payments (`eth-payment`).
    fn payee_payments(&self) -> Result<Arc<dyn TransferLog>, EthBoxError> {
        Ok(self
            .payee_tl()?
            .module_context()
            .transfer_log(PAYMENTS_LOG_KEY)?)
    }

    /// Stops the payer node, mines what waits in the pool and starts the payer again on its database; its
    /// trustline once reconnected.
    async fn restart_payer_once_mined(&mut self, anvil: &Anvil) -> Result<Trustline, EthBoxError> {
        self.payer.shutdown().await;
        mine_pending(anvil).await?;
        self.payer.start().await?;
        let payer_tl = self.payer_tl()?;
        wait_until("payer reconnected", || async { payer_tl.is_connected() }).await?;
        Ok(payer_tl)
    }
}

async fn pair(module: &str, payee_opts: Value, payer_opts: Value) -> Result<Pair, EthBoxError> {
    let payee = start_node(
        PAYER_PEER,
        &json!({
            "listener": {"port": 0}, "incomingSecret": BTP_SECRET, "maxBalance": MAX_BALANCE,
            "prefix": PREFIX, "info": {"currencyCode": "ETH", "currencyScale": 18, "connectors": []},
            "store": true, "module": module, "moduleOptions": payee_opts,
        }),
    )
    .await?;
    let addr = payee
        .node
        .as_ref()
        .and_then(|n| n.listen_addr(0))
        .ok_or("payee node has no listener")?;
    let payer = start_node(
        PAYEE_PEER,
        &json!({
            "server": format!("btp+ws://:{BTP_SECRET}@127.0.0.1:{}", addr.port()),
            "maxBalance": MAX_BALANCE, "store": true, "module": module, "moduleOptions": payer_opts,
        }),
    )
    .await?;
    let p = Pair { payee, payer };
    let (payee_tl, payer_tl) = (p.payee_tl()?, p.payer_tl()?);
    wait_until("both trustlines connected", || async {
        payee_tl.is_connected() && payer_tl.is_connected()
    })
    .await?;
    Ok(p)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A transfer paying the payee node itself (not routed further).
fn transfer(n: u8, amount: u64) -> (Transfer, [u8; 32]) {
    let fulfillment = [n; 32];
    let t = Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(amount),
        execution_condition: Sha256::digest(fulfillment).into(),
        expires_at_ms: now_ms() + 30_000,
        ilp: IlpV1Packet::Payment(Payment {
            amount,
            account: format!("{PREFIX}server"),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    (t, fulfillment)
}

/// Sends transfer `n` from the payer and fulfills it at the payee. Returns when the payee has handled the
/// claim that came back with its Fulfill (the payer settled on chain before answering).
async fn pay(p: &Pair, n: u8, amount: u64) -> TestResult {
    let mut events = p.payee_tl()?.subscribe();
    let (t, fulfillment) = transfer(n, amount);
    p.payer_tl()?.send_transfer(t.clone()).await?;
    let got = tokio::time::timeout(eth_common::WAIT_LIMIT, async {
        loop {
            match events.recv().await {
                Ok(PeerEvent::IncomingPrepare(got)) if got.id == t.id => return Ok(got),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    p.payee_tl()?
        .fulfill_condition(got.id, fulfillment, None)
        .await?;
    Ok(())
}

/// The best value held by the tracker `key` of `tl`'s module.
async fn best(tl: &Trustline, key: &str) -> Result<MaxValue, EthBoxError> {
    Ok(tl
        .module_context()
        .max_value_tracker(key)?
        .get_max()
        .await?)
}

/// Both trustline views agree: the payer owes `total`, the payee is owed `total`, locally and as each
/// peer reports it through the `balance` side protocol.
async fn assert_trustline_balances(p: &Pair, total: u64) -> TestResult {
    let total = i128::from(total);
    assert_eq!(p.payer_tl()?.local_balance(), LedgerBalance(-total));
    assert_eq!(p.payee_tl()?.local_balance(), LedgerBalance(total));
    assert_eq!(p.payer_tl()?.get_balance().await?, (-total).to_string());
    assert_eq!(p.payee_tl()?.get_balance().await?, total.to_string());
    assert_eq!(
        p.payer_tl()?.get_peer_balance().await?,
        (-total).to_string()
    );
    assert_eq!(p.payee_tl()?.get_peer_balance().await?, total.to_string());
    Ok(())
}

fn payment_options(anvil: &Anvil, key: usize) -> Value {
    module_options(anvil, key, json!({ "maxUnsecured": "5000000000000000" }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_trustline_settles_on_chain_and_balances_agree_to_the_wei() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let p = pair(
        "eth-payment",
        payment_options(&anvil, PAYEE_KEY),
        payment_options(&anvil, PAYER_KEY),
    )
    .await?;

    let amounts = [1_000_000_000_000_000u64, 2_500_000_000_000_001, 777];
    let mut total = 0u64;
    for (i, amount) in amounts.iter().enumerate() {
        pay(&p, i as u8 + 1, *amount).await?;
        total += amount;
        // After every settlement: both logs and the trustline agree.
        let payee_log = p.payee_payments()?;
        assert_eq!(
            payee_log.sums().incoming_fulfilled,
            LedgerSum(u128::from(total))
        );
        let payer_log = p
            .payer_tl()?
            .module_context()
            .transfer_log(PAYMENTS_LOG_KEY)?;
        assert_eq!(
            payer_log.sums().outgoing_fulfilled,
            LedgerSum(u128::from(total))
        );
        assert_eq!(
            payer_log.sums().outgoing_fulfilled_and_prepared,
            LedgerSum(u128::from(total))
        );
        assert_trustline_balances(&p, total).await?;
    }

    // The chain: one payment per settlement, each of exactly the increase, all to the payee.
    let sent = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(sent.len(), amounts.len(), "{sent:?}");
    for (tx, amount) in sent.iter().zip(amounts) {
        assert!(tx.success);
        assert_eq!(tx.to, Some(chain.payee));
        assert_eq!(tx.value, BigUint::from(amount));
    }
    assert!(sent_by(&chain.rpc, &chain.payee, chain.first_block)
        .await?
        .is_empty());
    let payer_after = chain.rpc.balance(&chain.payer).await?;
    let payee_after = chain.rpc.balance(&chain.payee).await?;
    assert_eq!(&payee_after - &chain.payee_before, BigUint::from(total));
    assert_eq!(
        &chain.payer_before - &payer_after,
        BigUint::from(total) + fees(&sent)
    );

    // maxUnsecured: a transfer above what is paid plus 0.005 ETH unsecured is refused by the payee's module.
    let (too_big, _) = transfer(50, 5_000_000_000_000_001);
    assert!(p.payer_tl()?.send_transfer(too_big).await.is_err());
    assert_trustline_balances(&p, total).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_trustline_refuses_foreign_misdirected_forged_and_replayed_hashes() -> TestResult
{
    let Some(anvil) = anvil() else { return Ok(()) };
    let rpc = anvil.client()?;
    let p = pair(
        "eth-payment",
        payment_options(&anvil, PAYEE_KEY),
        payment_options(&anvil, PAYER_KEY),
    )
    .await?;
    let amount = 3_000_000_000_000u64;
    pay(&p, 1, amount).await?;
    let payee_log = p.payee_payments()?;
    assert_eq!(
        payee_log.sums().incoming_fulfilled,
        LedgerSum(u128::from(amount))
    );
    let honest: TxHash = sent_by(&rpc, &address(&anvil, PAYER_KEY)?, 0)
        .await?
        .first()
        .ok_or("no payment on chain")?
        .hash;

    // A stranger pays the payee: the payer must not be able to claim it as its own. And the payer pays
    // someone else, then claims it.
    let (foreign, misdirected) =
        foreign_and_misdirected(&anvil, BigUint::from(9_000u32), BigUint::from(7_000u32)).await?;
    let forged = TxHash([0x42; 32]);
    // Each arrives as a `claim` Message over the trustline, as a payer's claim would.
    for hash in [foreign, misdirected, forged] {
        let result = p
            .payer_tl()?
            .module_rpc("claim", json!({ "txHashes": [hash.to_string()] }))
            .await;
        assert!(result.is_err(), "{hash} was accepted: {result:?}");
        assert_eq!(
            payee_log.sums().incoming_fulfilled,
            LedgerSum(u128::from(amount)),
            "{hash}"
        );
    }
    // The honest payment again, alone or next to a refused one: nothing more is credited.
    for claim in [
        json!({ "txHashes": [honest.to_string()] }),
        json!({ "txHash": honest.to_string() }),
    ] {
        p.payer_tl()?.module_rpc("claim", claim).await?;
        assert_eq!(
            payee_log.sums().incoming_fulfilled,
            LedgerSum(u128::from(amount))
        );
    }
    let mixed = p
        .payer_tl()?
        .module_rpc(
            "claim",
            json!({ "txHashes": [honest.to_string(), foreign.to_string()] }),
        )
        .await;
    assert!(mixed.is_err(), "{mixed:?}");
    assert_eq!(
        payee_log.sums().incoming_fulfilled,
        LedgerSum(u128::from(amount))
    );
    // The trustline balance never moved because of the claims.
    assert_trustline_balances(&p, amount).await?;
    // The refused hashes really are on chain and really did pay (the refusal is about who/whom, not existence).
    assert!(rpc.receipt(&foreign).await?.is_some());
    assert!(rpc.receipt(&misdirected).await?.is_some());
    Ok(())
}

/// Wei the payer deposits per channel and per top-up.
const CHANNEL_DEPOSIT: u64 = 10_000_000_000_000_000;

fn channel_options(anvil: &Anvil, key: usize) -> Value {
    module_options(
        anvil,
        key,
        json!({
            "maxUnsecured": CHANNEL_DEPOSIT.to_string(),
            "channelDeposit": CHANNEL_DEPOSIT.to_string(),
            "channelTimeoutSecs": 86_400,
            "closeMarginSecs": 600,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_trustline_claims_then_close_and_balances_agree_to_the_wei() -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let mut p = pair(
        "eth-channel",
        channel_options(&anvil, PAYEE_KEY),
        channel_options(&anvil, PAYER_KEY),
    )
    .await?;

    // The third transfer takes the cumulative claim above the first deposit: the payer tops up.
    let amounts = [
        2_000_000_000_000_000u64,
        3_000_000_000_000_003,
        7_000_000_000_000_000,
    ];
    let mut total = 0u64;
    for (i, amount) in amounts.iter().enumerate() {
        pay(&p, i as u8 + 1, *amount).await?;
        total += amount;
        let best_in = best(&p.payee_tl()?, INCOMING_CLAIM_KEY).await?;
        assert_eq!(best_in.value, BigUint::from(total));
        let best_out = best(&p.payer_tl()?, OUTGOING_CLAIM_KEY).await?;
        assert_eq!(best_out.value, BigUint::from(total));
        assert_trustline_balances(&p, total).await?;
    }
    let channel: Address = best(&p.payer_tl()?, OUTGOING_CHANNEL_KEY).await?.data["address"]
        .as_str()
        .ok_or("no channel recorded")?
        .parse()?;
    // On chain so far: one deploy and one top-up by the payer, 2 × deposit locked, nothing to the payee yet.
    let payer_txs = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(payer_txs.len(), 2, "{payer_txs:?}");
    assert_eq!(payer_txs[0].contract, Some(channel));
    assert_eq!(payer_txs[1].to, Some(channel));
    assert_eq!(
        chain.rpc.balance(&channel).await?,
        BigUint::from(2 * CHANNEL_DEPOSIT)
    );
    assert_eq!(chain.rpc.balance(&chain.payee).await?, chain.payee_before);

    // Claims sent as `claim` Messages over the trustline: forged (signed by a stranger) and over the deposit
    // (signed by the payer) are refused; lower and replayed ones are accepted and credit nothing.
    let claim = |key: &str, amount: u64| -> Result<Value, EthBoxError> {
        let amount = BigUint::from(amount);
        let sig = PrivateKey::from_hex(key)?.sign_personal(&claim_digest(
            ANVIL_DEFAULT_CHAIN_ID,
            &channel,
            &amount,
        )?)?;
        Ok(
            json!({ "channel": channel.to_string(), "amount": amount.to_string(),
                   "signature": encode_hex(&sig.to_bytes65()) }),
        )
    };
    let payer_key = anvil.dev_key(PAYER_KEY);
    let cases = [
        (
            "forged",
            claim(anvil.dev_key(STRANGER_KEY), total + 1)?,
            false,
        ),
        (
            "over-deposit",
            claim(payer_key, 2 * CHANNEL_DEPOSIT + 1)?,
            false,
        ),
        ("lower", claim(payer_key, total - 1)?, true),
        ("replayed", claim(payer_key, total)?, true),
    ];
    for (what, message, accepted) in cases {
        let result = p.payer_tl()?.module_rpc("claim", message).await;
        assert_eq!(result.is_ok(), accepted, "{what}: {result:?}");
        let best_in = best(&p.payee_tl()?, INCOMING_CLAIM_KEY).await?;
        assert_eq!(best_in.value, BigUint::from(total), "{what}");
    }
    assert_trustline_balances(&p, total).await?;

    // The payee disconnects (node shutdown): it closes the channel with its best claim.
    p.payee.shutdown().await;
    let payee_txs = sent_by(&chain.rpc, &chain.payee, chain.first_block).await?;
    assert_eq!(payee_txs.len(), 1, "one close: {payee_txs:?}");
    assert_eq!(payee_txs[0].to, Some(channel));
    assert!(payee_txs[0].success);
    assert_eq!(chain.rpc.balance(&channel).await?, BigUint::default());
    let payee_after = chain.rpc.balance(&chain.payee).await?;
    let payer_after = chain.rpc.balance(&chain.payer).await?;
    // The payee got exactly the claimed total (less the gas of its close); the payer lost exactly that (plus
    // its gas): the unclaimed deposit came back.
    assert_eq!(
        &payee_after + fees(&payee_txs) - &chain.payee_before,
        BigUint::from(total)
    );
    let payer_txs = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(
        &chain.payer_before - &payer_after,
        BigUint::from(total) + fees(&payer_txs)
    );
    p.payer.shutdown().await;
    Ok(())
}

/// The payer's payment for transfer `n` is broadcast but not mined while the payer answers the Fulfill, so
/// the payee gets no claim with it. Returns the pending payment.
async fn pay_while_chain_stalls(
    anvil: &Anvil,
    p: &Pair,
    n: u8,
    amount: u64,
) -> Result<TxHash, EthBoxError> {
    let rpc = anvil.client()?;
    let payee_log = p.payee_payments()?;
    let credited = payee_log.sums().incoming_fulfilled;
    anvil.set_automine(false).await?;
    pay(p, n, amount).await?;
    let pending = eth_common::pending_from(&rpc, &address(anvil, PAYER_KEY)?).await?;
    let [hash] = pending[..] else {
        return Err(format!("expected one pending payment, got {pending:?}").into());
    };
    assert_eq!(
        payee_log.sums().incoming_fulfilled,
        credited,
        "no claim yet"
    );
    Ok(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_trustline_lost_claims_and_payer_restart_pay_once_and_credit_once() -> TestResult
{
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let unsecured = 1_000_000_000_000_000u64;
    // The payer follows a payment for at most 500 ms per call, well within the BTP request timeout: on a
    // slow chain its Fulfill response goes out without a claim while the payment is still pending.
    let mut p = pair(
        "eth-payment",
        module_options(
            &anvil,
            PAYEE_KEY,
            json!({ "maxUnsecured": unsecured.to_string() }),
        ),
        module_options(&anvil, PAYER_KEY, json!({ "receiptTimeoutMs": 500 })),
    )
    .await?;
    let payee_log = p.payee_payments()?;
    let mut total = 0u64;
    let mut expected = Vec::new();

    // 1. The whole unsecured allowance is used and the claim is lost; the chain then mines the payment. The
    //    next transfer must not be refused for lack of that claim: the payee asks for it, credits the payment
    //    once, and the new transfer is settled in turn.
    let hash = pay_while_chain_stalls(&anvil, &p, 1, unsecured).await?;
    expected.push((hash, unsecured));
    total += unsecured;
    mine_pending(&anvil).await?;
    pay(&p, 2, 1_234).await?;
    total += 1_234;
    assert_eq!(
        payee_log.sums().incoming_fulfilled,
        LedgerSum(u128::from(total))
    );
    assert_trustline_balances(&p, total).await?;

    // 2. Again, but the payer node stops with the payment in flight and restarts on its database after the
    //    chain mined it: it finds its recorded payment confirmed (no second payment), and the payee gets it.
    let hash = pay_while_chain_stalls(&anvil, &p, 3, unsecured).await?;
    expected.push((hash, unsecured));
    total += unsecured;
    let payer_tl = p.restart_payer_once_mined(&anvil).await?;
    let payer_log = payer_tl.module_context().transfer_log(PAYMENTS_LOG_KEY)?;
    assert_eq!(
        payer_log.sums().outgoing_fulfilled,
        LedgerSum(u128::from(total))
    );
    assert_eq!(
        payer_log.sums().outgoing_fulfilled_and_prepared,
        LedgerSum(u128::from(total))
    );
    drop((payer_tl, payer_log));
    pay(&p, 4, 5_678).await?;
    total += 5_678;
    assert_eq!(
        payee_log.sums().incoming_fulfilled,
        LedgerSum(u128::from(total))
    );
    assert_trustline_balances(&p, total).await?;

    // Exactly one payment per settlement, in order, and the chain agrees with both sides.
    let sent = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    let values: Vec<BigUint> = sent.iter().map(|t| t.value.clone()).collect();
    assert_eq!(
        values,
        [unsecured, 1_234, unsecured, 5_678]
            .map(BigUint::from)
            .to_vec()
    );
    assert_eq!(sent[0].hash, expected[0].0);
    assert_eq!(sent[2].hash, expected[1].0);
    assert!(sent.iter().all(|t| t.success && t.to == Some(chain.payee)));
    assert_eq!(
        chain.rpc.balance(&chain.payee).await? - chain.payee_before,
        BigUint::from(total)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_trustline_lost_claims_and_payer_restart_fund_once_and_credit_once(
) -> TestResult {
    let Some(anvil) = anvil() else { return Ok(()) };
    let chain = chain_start(&anvil).await?;
    let mut payer_opts = channel_options(&anvil, PAYER_KEY);
    payer_opts["receiptTimeoutMs"] = json!(500);
    // The payee trusts half a deposit, so each step below goes over its limit before the claim arrives.
    let half = CHANNEL_DEPOSIT / 2;
    let mut payee_opts = channel_options(&anvil, PAYEE_KEY);
    payee_opts["maxUnsecured"] = json!(half.to_string());
    let mut p = pair("eth-channel", payee_opts, payer_opts).await?;
    let best_in = |p: &Pair| -> Result<_, EthBoxError> {
        Ok(p.payee_tl()?
            .module_context()
            .max_value_tracker(INCOMING_CLAIM_KEY)?)
    };
    let payee_best = best_in(&p)?;
    let mut total = 0u64;

    // 1. The channel's deployment is not mined while the payer answers the Fulfill: no claim. Once mined, the
    //    payee asks for the claim before refusing the next transfer.
    anvil.set_automine(false).await?;
    pay(&p, 1, half).await?;
    total += half;
    assert_eq!(payee_best.get_max().await?.value, BigUint::default());
    mine_pending(&anvil).await?;
    pay(&p, 2, 1).await?;
    total += 1;
    assert_eq!(payee_best.get_max().await?.value, BigUint::from(total));

    // 2. A top-up (the claim goes past the deposit) is in flight when the payer node stops; it is mined; the
    //    payer restarts, finds it confirmed (no second top-up), and the payee gets the claim.
    anvil.set_automine(false).await?;
    pay(&p, 3, half).await?;
    total += half;
    assert_eq!(
        payee_best.get_max().await?.value,
        BigUint::from(total - half)
    );
    let payer_tl = p.restart_payer_once_mined(&anvil).await?;
    drop(payer_tl);
    pay(&p, 4, 2).await?;
    total += 2;
    assert_eq!(payee_best.get_max().await?.value, BigUint::from(total));
    assert_trustline_balances(&p, total).await?;

    let payer_txs = sent_by(&chain.rpc, &chain.payer, chain.first_block).await?;
    assert_eq!(payer_txs.len(), 2, "one deploy, one top-up: {payer_txs:?}");
    let channel = payer_txs[0].contract.ok_or("first tx is not the deploy")?;
    assert_eq!(payer_txs[1].to, Some(channel));
    assert_eq!(
        chain.rpc.balance(&channel).await?,
        BigUint::from(2 * CHANNEL_DEPOSIT)
    );

    // The payee closes with the best claim and receives exactly the total.
    drop(payee_best);
    p.payee.shutdown().await;
    let payee_txs = sent_by(&chain.rpc, &chain.payee, chain.first_block).await?;
    assert_eq!(payee_txs.len(), 1, "{payee_txs:?}");
    assert_eq!(
        chain.rpc.balance(&chain.payee).await? + fees(&payee_txs) - chain.payee_before,
        BigUint::from(total)
    );
    p.payer.shutdown().await;
    Ok(())
}
