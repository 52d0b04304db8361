//! `xrp-paychan` inside a BTP/1.0 trustline between two ilp-bridge nodes (`PeerNode` on RocksDB folders, the
//! module built by name from the peer's legacy options), with a fake rippled on a loopback port.
//!
//! Bob's node listens (payee); Alice's node dials him (payer, with her channel to Bob). Every transfer Bob
//! fulfills is paid by the cumulative claim Alice returns with the Fulfill's Response; Bob redeems his best claim
//! on the ledger when his node stops. The TransferLogs of both sides, the claim trackers and the ledger must agree
//! to the drop, also across restarts of either node.

mod poll_common;
mod xrp_common;

use std::net::{IpAddr, Ipv4Addr};

use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::{LedgerBalance, LedgerSum};
use channel_modules::store::{Transfer, TransferState};
use channel_modules::xrp::crypto::ChannelId;
use channel_modules::xrp::rpc::RippledClient;
use channel_modules::xrp::{
    MVT_INCOMING_CLAIM, MVT_INCOMING_CLAIM_SUBMITTED, MVT_OUTGOING_CLAIM, RPC_CHANNEL_ID,
};
use channel_modules::ModuleError;
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::config::routing::{LocalPayments, RoutingConfig};
use ilp_bridge::peer::{NodeOptions, PeerError, PeerNode, Trustline};
use num_bigint::BigUint;
use serde_json::{json, Value};
use xrp_common::*;

const PREFIX: &str = "test.xrp.";
const INCOMING_SECRET: &str = "s3cret";
/// Drops Bob lets Alice owe him beyond her best claim.
const MAX_UNSECURED_DROPS: u64 = 300;

/// One ilp-bridge node with one peer, on its own RocksDB folder; stopped and started again at will.
struct Bridge {
    /// The peer's name on this node (Bob's node calls its trustline "alice", and Alice's "bob").
    name: &'static str,
    options: Value,
    /// Further peers of this node: `(name, legacy options)`.
    extra_peers: Vec<(&'static str, Value)>,
    dir: tempfile::TempDir,
    node: Option<PeerNode>,
}

impl Bridge {
    fn new(name: &'static str, options: Value) -> Result<Self, BoxError> {
        Ok(Bridge {
            name,
            options,
            extra_peers: Vec::new(),
            dir: tempfile::tempdir()?,
            node: None,
        })
    }

    async fn start(&mut self) -> TestResult {
        let mut configs = vec![PeerConfig::from_legacy_json(self.name, &self.options)?];
        for (name, options) in &self.extra_peers {
            configs.push(PeerConfig::from_legacy_json(name, options)?);
        }
        let db = open_db(self.dir.path()).await?;
        let options = NodeOptions {
            bind_host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            // The test receives the payments for the node itself.
            routing: RoutingConfig {
                local_payments: LocalPayments::Embedder,
                ..RoutingConfig::default()
            },
            ..NodeOptions::default()
        };
        self.node = Some(PeerNode::start(configs, db, options).await?);
        Ok(())
    }

    /// Graceful stop: the module's `disconnect` runs (the payee redeems its best claim).
    async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// The trustline (a handle: drop it before a restart, it keeps the database open).
    fn tl(&self) -> Result<Trustline, BoxError> {
        self.peer_tl(self.name)
    }

    /// The trustline to the peer `name` (a handle, as [`Bridge::tl`]).
    fn peer_tl(&self, name: &str) -> Result<Trustline, BoxError> {
        Ok(self
            .node
            .as_ref()
            .ok_or("node is not running")?
            .trustline(name)
            .ok_or("no trustline")?
            .clone())
    }

    async fn tracker(&self, key: &str) -> Result<BigUint, BoxError> {
        let tl = self.tl()?;
        let value = tl
            .module_context()
            .max_value_tracker(key)?
            .get_max()
            .await?;
        Ok(value.value)
    }

    async fn tracker_data(&self, key: &str) -> Result<Value, BoxError> {
        let tl = self.tl()?;
        let value = tl
            .module_context()
            .max_value_tracker(key)?
            .get_max()
            .await?;
        Ok(value.data)
    }
}

struct Net {
    ledger: Ledger,
    alice: Bridge,
    bob: Bridge,
}

fn free_port() -> Result<u16, BoxError> {
    // The legacy listener option takes a port number; probe a free one so Bob can restart on the same port.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts the ledger and both nodes and waits until the trustline works both ways.
async fn net() -> Result<Net, BoxError> {
    net_on(Ledger::start().await?).await
}

/// [`net`] on a given ledger.
async fn net_on(ledger: Ledger) -> Result<Net, BoxError> {
    let port = free_port()?;
    let bob = json!({
        "listener": {"port": port}, "incomingSecret": INCOMING_SECRET, "maxBalance": "10000000",
        "prefix": PREFIX, "info": {"currencyCode": "XRP", "currencyScale": 6, "connectors": []},
        "store": true, "module": "xrp-paychan",
        "moduleOptions": ledger.bob_options(MAX_UNSECURED_DROPS),
    });
    let alice = json!({
        "server": format!("btp+ws://:{INCOMING_SECRET}@127.0.0.1:{port}"),
        "maxBalance": "10000000", "store": true, "module": "xrp-paychan",
        "moduleOptions": ledger.alice_options(),
    });
    net_with(ledger, bob, alice).await
}

/// Starts Bob's node (its peer "alice") and Alice's node (its peer "bob") with these legacy options.
async fn net_with(ledger: Ledger, bob: Value, alice: Value) -> Result<Net, BoxError> {
    let mut n = Net {
        ledger,
        alice: Bridge::new("bob", alice)?,
        bob: Bridge::new("alice", bob)?,
    };
    n.bob.start().await?;
    n.alice.start().await?;
    n.wait_linked().await?;
    Ok(n)
}

impl Net {
    /// Waits until both trustlines are connected and each side's module RPC reaches the other.
    async fn wait_linked(&self) -> TestResult {
        let alice = self.alice.tl()?;
        let bob = self.bob.tl()?;
        let a_to_b = self.ledger.a_to_b.to_string();
        eventually("both trustlines connected and linked", || {
            let (alice, bob, a_to_b) = (alice.clone(), bob.clone(), a_to_b.clone());
            async move {
                if !(alice.is_connected() && bob.is_connected()) {
                    return false;
                }
                let to_bob = alice.module_rpc(RPC_CHANNEL_ID, json!([])).await;
                let to_alice = bob.module_rpc(RPC_CHANNEL_ID, json!([])).await;
                matches!(to_bob, Ok(Value::Null))
                    && matches!(to_alice, Ok(Value::String(s)) if s == a_to_b)
            }
        })
        .await
    }

    /// Alice sends `drops` to Bob and Bob fulfills; returns once Bob handled the claim in the Response.
    async fn pay(&self, n: u8, drops: u64) -> TestResult {
        let (t, f) = transfer(n, drops);
        self.alice.tl()?.send_transfer(t.clone()).await?;
        self.bob.tl()?.fulfill_condition(t.id, f, None).await?;
        Ok(())
    }

    /// Both TransferLogs, both claim trackers and Bob's best claim (checked with the channel key the ledger holds)
    /// agree with `total` drops paid from Alice to Bob.
    async fn check_agreement(&self, total: u64) -> TestResult {
        let alice = self.alice.tl()?;
        let bob = self.bob.tl()?;
        assert_eq!(
            alice.log().sums().outgoing_fulfilled,
            LedgerSum(u128::from(total))
        );
        assert_eq!(alice.local_balance(), LedgerBalance(-i128::from(total)));
        assert_eq!(
            bob.log().sums().incoming_fulfilled,
            LedgerSum(u128::from(total))
        );
        assert_eq!(bob.local_balance(), LedgerBalance(i128::from(total)));
        assert_eq!(
            self.alice.tracker(MVT_OUTGOING_CLAIM).await?,
            BigUint::from(total)
        );
        assert_eq!(
            self.bob.tracker(MVT_INCOMING_CLAIM).await?,
            BigUint::from(total)
        );
        // Bob's best claim verifies against the channel's key as the ledger knows it.
        let best = self.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
        let on_ledger = self
            .ledger
            .fake
            .channel(&self.ledger.a_to_b)
            .ok_or("channel gone")?;
        let signature = hex::decode(best["signature"].as_str().ok_or("no signature")?)?;
        assert_eq!(best["amount"], json!(total.to_string()));
        assert!(on_ledger
            .public_key
            .verify_claim(&self.ledger.a_to_b, total, &signature));
        Ok(())
    }
}

/// Transfer `n` of `drops` to Bob, with its fulfillment.
fn transfer(n: u8, drops: u64) -> (Transfer, [u8; 32]) {
    transfer_to(n, drops, &format!("{PREFIX}server.bob"))
}

/// Alice's node sends `claim` to Bob's module as a `claim` Message (the trustline's side channel for claims).
async fn send_claim(n: &Net, claim: Value) -> Result<Value, ModuleError> {
    let tl = n.alice.tl().map_err(|e| ModuleError::Rpc(e.to_string()))?;
    tl.module_rpc("claim", claim).await
}

fn refused_with(result: Result<Value, ModuleError>, reason: &str) -> TestResult {
    match result {
        Err(ModuleError::Rpc(message)) => {
            assert!(
                message.contains("NotAcceptedError") && message.contains(reason),
                "refusal {message:?} should name {reason:?}"
            );
            Ok(())
        }
        other => Err(format!("expected a refusal ({reason}), got {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_flow_and_ledger_logs_and_best_claim_agree_to_the_drop() -> TestResult {
    let mut n = net().await?;
    // Nothing was ever redeemed or submitted yet.
    assert_eq!(n.ledger.redeemed()?, 0);

    let amounts = [120u64, 75, 300, 1, 250, 299];
    let mut total = 0;
    for (i, drops) in amounts.iter().enumerate() {
        n.pay(i as u8 + 1, *drops).await?;
        total += drops;
        // After every transfer the claim Bob holds covers exactly what he was paid.
        assert_eq!(
            n.bob.tracker(MVT_INCOMING_CLAIM).await?,
            BigUint::from(total)
        );
    }
    n.check_agreement(total).await?;

    // A transfer leaving more than maxUnsecured drops uncovered by a claim is refused and leaves nothing.
    let (t, _) = transfer(99, MAX_UNSECURED_DROPS + 1);
    match n.alice.tl()?.send_transfer(t.clone()).await {
        Err(PeerError::Remote(e)) => assert_eq!(e.name, "NotAcceptedError", "{}", e.data),
        other => return Err(format!("expected NotAcceptedError, got {other:?}").into()),
    }
    let on_bob = n.bob.tl()?.log().get(&t.id).await?;
    assert!(
        on_bob.is_none_or(|r| matches!(r.state, TransferState::Cancelled { .. })),
        "refused transfer left behind at Bob"
    );
    n.check_agreement(total).await?;
    assert!(
        n.ledger.fake.submissions().is_empty(),
        "nothing redeemed yet"
    );

    // Bob's node stops: his module redeems the best claim on the ledger.
    let bob_ctx = n.bob.tl()?.module_context().clone();
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, total);
    assert_eq!(n.ledger.fake.received(&n.ledger.keys.bob_address()), total);
    let submissions = n.ledger.fake.submissions();
    assert_eq!(submissions.len(), 1);
    assert_eq!(submissions[0]["Balance"], json!(total.to_string()));
    assert_eq!(
        bob_ctx
            .max_value_tracker(MVT_INCOMING_CLAIM_SUBMITTED)?
            .get_max()
            .await?
            .value,
        BigUint::from(total)
    );
    drop(bob_ctx);
    n.alice.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_are_covered_by_one_best_claim() -> TestResult {
    // Claims are handed out per Fulfill and may arrive out of order; the best one must cover everything.
    let mut n = net().await?;
    let mut tasks = Vec::new();
    for i in 1..=24u8 {
        let (alice, bob) = (n.alice.tl()?, n.bob.tl()?);
        tasks.push(tokio::spawn(async move {
            let (t, f) = transfer(i, u64::from(i));
            alice.send_transfer(t.clone()).await?;
            bob.fulfill_condition(t.id, f, None).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let total: u64 = (1..=24u64).sum();
    n.check_agreement(total).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, total);
    assert_eq!(n.ledger.fake.submissions().len(), 1);
    n.alice.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_pay_through_their_own_channels() -> TestResult {
    // Bob has a channel to Alice too: each side pays its gross outgoing total on its own channel and redeems the
    // other's claims; neither nets one direction against the other on the ledger.
    let ledger = Ledger::start().await?;
    let b_to_a = ledger.fake.create_channel(
        &ledger.keys.bob,
        &ledger.keys.alice.public_key().address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    let port = free_port()?;
    let mut bob_module = ledger.bob_options(MAX_UNSECURED_DROPS);
    bob_module["channel"] = json!(b_to_a.to_string());
    let mut alice_module = ledger.alice_options();
    alice_module["maxUnsecured"] = json!(MAX_UNSECURED_DROPS.to_string());
    let bob = json!({
        "listener": {"port": port}, "incomingSecret": INCOMING_SECRET, "maxBalance": "10000000",
        "prefix": PREFIX, "info": {"currencyCode": "XRP", "currencyScale": 6, "connectors": []},
        "store": true, "module": "xrp-paychan", "moduleOptions": bob_module,
    });
    let alice = json!({
        "server": format!("btp+ws://:{INCOMING_SECRET}@127.0.0.1:{port}"),
        "maxBalance": "10000000", "store": true, "module": "xrp-paychan", "moduleOptions": alice_module,
    });
    let ledger_a_to_b = ledger.a_to_b;
    let mut n = Net {
        ledger,
        alice: Bridge::new("bob", alice)?,
        bob: Bridge::new("alice", bob)?,
    };
    n.bob.start().await?;
    n.alice.start().await?;
    let (alice, bob) = (n.alice.tl()?, n.bob.tl()?);
    let (want_a, want_b) = (ledger_a_to_b.to_string(), b_to_a.to_string());
    eventually("each side sees the other's channel", || {
        let (alice, bob, want_a, want_b) =
            (alice.clone(), bob.clone(), want_a.clone(), want_b.clone());
        async move {
            if !(alice.is_connected() && bob.is_connected()) {
                return false;
            }
            let to_bob = alice.module_rpc(RPC_CHANNEL_ID, json!([])).await;
            let to_alice = bob.module_rpc(RPC_CHANNEL_ID, json!([])).await;
            matches!(to_bob, Ok(Value::String(s)) if s == want_b)
                && matches!(to_alice, Ok(Value::String(s)) if s == want_a)
        }
    })
    .await?;

    n.pay(1, 200).await?;
    // Bob pays Alice: a transfer to Alice's account, fulfilled by her.
    let (mut t, f) = transfer(2, 150);
    t.ilp = IlpV1Packet::Payment(Payment {
        amount: 150,
        account: format!("{PREFIX}client.alice"),
        data: Bytes::new(),
    })
    .to_bytes()
    .to_vec();
    bob.send_transfer(t.clone()).await?;
    alice.fulfill_condition(t.id, f, None).await?;
    n.pay(3, 100).await?;

    assert_eq!(alice.log().sums().outgoing_fulfilled, LedgerSum(300));
    assert_eq!(alice.log().sums().incoming_fulfilled, LedgerSum(150));
    assert_eq!(bob.log().sums().outgoing_fulfilled, LedgerSum(150));
    assert_eq!(bob.log().sums().incoming_fulfilled, LedgerSum(300));
    assert_eq!(alice.local_balance(), LedgerBalance(-150));
    assert_eq!(bob.local_balance(), LedgerBalance(150));
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(300u32)
    );
    assert_eq!(
        n.bob.tracker(MVT_OUTGOING_CLAIM).await?,
        BigUint::from(150u32)
    );
    assert_eq!(
        n.alice.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(150u32)
    );
    assert_eq!(
        n.alice.tracker(MVT_OUTGOING_CLAIM).await?,
        BigUint::from(300u32)
    );
    drop((alice, bob));
    n.bob.stop().await;
    n.alice.stop().await;
    assert_eq!(n.ledger.redeemed()?, 300);
    let b_to_a_balance = n.ledger.fake.channel(&b_to_a).ok_or("b_to_a gone")?.balance;
    assert_eq!(b_to_a_balance, 150);
    assert_eq!(n.ledger.fake.received(&n.ledger.keys.bob_address()), 300);
    assert_eq!(
        n.ledger
            .fake
            .received(&n.ledger.keys.alice.public_key().address()),
        150
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_deposit_stops_claims_and_caps_bob_until_topped_up() -> TestResult {
    let mut n = net_on(Ledger::start_with_deposit(500).await?).await?;
    n.pay(1, 250).await?;
    n.pay(2, 200).await?;
    // Fulfilled, but Alice cannot sign for 550 on a 500-drop channel: Bob's best claim stays at 450.
    n.pay(3, 100).await?;
    assert_eq!(n.bob.tl()?.log().sums().incoming_fulfilled, LedgerSum(550));
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(450u32)
    );
    assert_eq!(
        n.alice.tracker(MVT_OUTGOING_CLAIM).await?,
        BigUint::from(450u32)
    );
    // 100 unsecured + 250 would exceed maxUnsecured (300): refused.
    let (t, _) = transfer(4, 250);
    match n.alice.tl()?.send_transfer(t).await {
        Err(PeerError::Remote(e)) => assert_eq!(e.name, "NotAcceptedError", "{}", e.data),
        other => return Err(format!("expected NotAcceptedError, got {other:?}").into()),
    }
    // Alice funds the channel (PaymentChannelFund); the next Fulfill's claim covers everything.
    n.ledger.fake.fund_channel(&n.ledger.a_to_b, 1_000);
    n.pay(5, 50).await?;
    n.check_agreement(600).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 600);
    n.alice.stop().await;
    Ok(())
}

/// Two trustlines of one node are never both credited for one channel (trustline mode's node-wide identity
/// registry, durable in the node's RocksDB): Bob's node has a second peer "alice2", run by the same payer (or by
/// anyone who read Alice's claims off the ledger), which names Alice's channel and replays Alice's genuine
/// claim. The channel becomes contested: neither trustline is credited, also after Bob's node restarts, until
/// Bob's operator configures `peerChannel` on the "alice" peer, which then takes the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trustlines_of_one_node_are_never_both_credited_for_one_channel() -> TestResult {
    const SECOND_SECRET: &str = "s3cret-2";
    let ledger = Ledger::start().await?;
    let (port, second_port) = (free_port()?, free_port()?);
    let bob_peer = |port: u16, secret: &str| {
        json!({
            "listener": {"port": port}, "incomingSecret": secret, "maxBalance": "10000000",
            "prefix": PREFIX, "info": {"currencyCode": "XRP", "currencyScale": 6, "connectors": []},
            "store": true, "module": "xrp-paychan",
            "moduleOptions": ledger.bob_options(MAX_UNSECURED_DROPS),
        })
    };
    let alice_peer = |port: u16, secret: &str| {
        json!({
            "server": format!("btp+ws://:{secret}@127.0.0.1:{port}"),
            "maxBalance": "10000000", "store": true, "module": "xrp-paychan",
            "moduleOptions": ledger.alice_options(),
        })
    };
    let mut bob = Bridge::new("alice", bob_peer(port, INCOMING_SECRET))?;
    bob.extra_peers
        .push(("alice2", bob_peer(second_port, SECOND_SECRET)));
    let mut alice2 = Bridge::new("bob", alice_peer(second_port, SECOND_SECRET))?;
    let mut n = Net {
        alice: Bridge::new("bob", alice_peer(port, INCOMING_SECRET))?,
        bob,
        ledger,
    };
    n.bob.start().await?;
    n.alice.start().await?;
    alice2.start().await?;
    let wait_second_linked = |bob: &Bridge, alice2: &Bridge| -> Result<_, BoxError> {
        let (to_bob, to_alice2) = (alice2.tl()?, bob.peer_tl("alice2")?);
        Ok(eventually("the second trustline connected", move || {
            let (to_bob, to_alice2) = (to_bob.clone(), to_alice2.clone());
            async move {
                to_bob.is_connected()
                    && to_alice2.is_connected()
                    && matches!(
                        to_alice2.module_rpc(RPC_CHANNEL_ID, json!([])).await,
                        Ok(Value::String(_))
                    )
            }
        }))
    };
    n.wait_linked().await?;
    wait_second_linked(&n.bob, &alice2)?.await?;

    n.pay(1, 100).await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(100u32)
    );
    let alices_claim = n.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
    let second_tracker = |bob: &Bridge| -> Result<_, BoxError> {
        let tl = bob.peer_tl("alice2")?;
        Ok(async move {
            Ok::<_, BoxError>(
                tl.module_context()
                    .max_value_tracker(MVT_INCOMING_CLAIM)?
                    .get_max()
                    .await?
                    .value,
            )
        })
    };
    // The replay on Bob's second trustline: refused, and the channel is contested from now on.
    refused_with(
        alice2.tl()?.module_rpc("claim", alices_claim.clone()).await,
        "contested",
    )?;
    assert_eq!(second_tracker(&n.bob)?.await?, BigUint::from(0u32));
    // Bob's first trustline, which held the channel, is refused too: Alice's next claim credits nothing.
    let claim_200 = claim_json(
        &n.ledger.a_to_b,
        200,
        &n.ledger.keys.alice,
        &n.ledger.keys.alice,
    )?;
    refused_with(send_claim(&n, claim_200.clone()).await, "contested")?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(100u32)
    );

    // Durable: after Bob's node restarts, both are still refused.
    n.bob.stop().await;
    n.bob.start().await?;
    n.wait_linked().await?;
    wait_second_linked(&n.bob, &alice2)?.await?;
    refused_with(send_claim(&n, claim_200.clone()).await, "contested")?;
    refused_with(
        alice2.tl()?.module_rpc("claim", claim_200.clone()).await,
        "contested",
    )?;

    // Bob's operator configures the channel on the rightful peer: it takes the channel and is credited again;
    // the second trustline stays refused.
    n.bob.stop().await;
    n.bob.options["moduleOptions"]["peerChannel"] = json!(n.ledger.a_to_b.to_string());
    n.bob.start().await?;
    n.wait_linked().await?;
    wait_second_linked(&n.bob, &alice2)?.await?;
    send_claim(&n, claim_200.clone()).await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(200u32)
    );
    refused_with(
        alice2.tl()?.module_rpc("claim", claim_200).await,
        "another account (peer:alice)",
    )?;
    assert_eq!(second_tracker(&n.bob)?.await?, BigUint::from(0u32));
    alice2.stop().await;
    n.alice.stop().await;
    n.bob.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_claim_at_the_unsecured_limit_does_not_stall_the_trustline() -> TestResult {
    // The Fulfill response of the third transfer carries no claim (Alice's channel could not cover 800 then),
    // leaving Bob exactly maxUnsecured (300) uncovered. Once Alice has funded her channel, the next transfer
    // must not be refused forever: Bob asks Alice for her current claim before refusing.
    let mut n = net_on(Ledger::start_with_deposit(500).await?).await?;
    n.pay(1, 250).await?;
    n.pay(2, 250).await?;
    n.pay(3, 300).await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(500u32)
    );
    // Still unfunded: Bob asks, Alice cannot sign for 800, the transfer is refused.
    let (t, _) = transfer(4, 1);
    match n.alice.tl()?.send_transfer(t).await {
        Err(PeerError::Remote(e)) => assert_eq!(e.name, "NotAcceptedError", "{}", e.data),
        other => return Err(format!("expected NotAcceptedError, got {other:?}").into()),
    }
    n.ledger.fake.fund_channel(&n.ledger.a_to_b, 1_000);
    n.pay(5, 1).await?;
    n.check_agreement(801).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 801);
    n.alice.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_lower_over_deposit_and_foreign_claims_are_refused() -> TestResult {
    let mut n = net().await?;
    n.pay(1, 200).await?;
    n.pay(2, 100).await?;
    let honest = 300u64;
    let best_before = n.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
    let keys = &n.ledger.keys;
    let a_to_b = n.ledger.a_to_b;

    // Forged: Carol signs with her own key and names it.
    let forged = claim_json(&a_to_b, honest + 100, &keys.carol, &keys.carol)?;
    refused_with(send_claim(&n, forged).await, "not the channel's key")?;
    // Forged: Carol's signature presented under Alice's key.
    let forged = claim_json(&a_to_b, honest + 100, &keys.carol, &keys.alice)?;
    refused_with(send_claim(&n, forged).await, "signature is invalid")?;
    // Forged: Alice's signature over another amount than the one claimed.
    let mut tampered = claim_json(&a_to_b, honest + 100, &keys.alice, &keys.alice)?;
    tampered["amount"] = json!((honest + 5_000).to_string());
    refused_with(send_claim(&n, tampered).await, "signature is invalid")?;
    // Above the channel's deposit, properly signed by Alice.
    let over = claim_json(&a_to_b, DEPOSIT_DROPS + 1, &keys.alice, &keys.alice)?;
    refused_with(send_claim(&n, over).await, "exceeds the channel deposit")?;
    // Another channel of Alice's to Bob, properly signed: not the channel this trustline uses.
    let other: ChannelId = n.ledger.fake.create_channel(
        &keys.alice,
        &keys.bob_address(),
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    let foreign = claim_json(&other, honest + 100, &keys.alice, &keys.alice)?;
    refused_with(send_claim(&n, foreign).await, "not the peer's channel")?;
    // Replayed (Bob's current best) and lower: accepted as nothing new.
    send_claim(&n, best_before.clone()).await?;
    let lower = claim_json(&a_to_b, honest - 1, &keys.alice, &keys.alice)?;
    send_claim(&n, lower).await?;

    // None of it moved Bob's best claim or his balance.
    assert_eq!(n.bob.tracker_data(MVT_INCOMING_CLAIM).await?, best_before);
    n.check_agreement(honest).await?;

    // Bob still accepts honest payments afterwards, and redeems exactly what he was paid.
    n.pay(3, 50).await?;
    n.check_agreement(honest + 50).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, honest + 50);
    assert_eq!(
        n.ledger.fake.received(&n.ledger.keys.bob_address()),
        honest + 50
    );
    assert_eq!(
        n.ledger
            .fake
            .channel(&other)
            .ok_or("other channel gone")?
            .balance,
        0
    );
    n.alice.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_in_the_middle_of_a_settlement_pay_exactly_once() -> TestResult {
    let mut n = net().await?;
    n.pay(1, 200).await?;
    n.pay(2, 150).await?;

    // 1. A transfer is prepared when Alice's node restarts; Bob fulfills it afterwards. Alice's claim covers the
    //    cumulative total from her persisted tracker: the earlier drops are not signed over twice.
    let (t3, f3) = transfer(3, 275);
    n.alice.tl()?.send_transfer(t3.clone()).await?;
    n.alice.stop().await;
    n.alice.start().await?;
    n.wait_linked().await?;
    assert_eq!(
        n.alice.tracker(MVT_OUTGOING_CLAIM).await?,
        BigUint::from(350u32),
        "Alice's best claim survived her restart"
    );
    n.bob.tl()?.fulfill_condition(t3.id, f3, None).await?;
    n.check_agreement(625).await?;

    // 2. Another transfer is prepared when Bob's node stops (redeeming 625) and starts again on the same folder;
    //    he fulfills it afterwards and is paid exactly its amount on top.
    let (t4, f4) = transfer(4, 125);
    n.alice.tl()?.send_transfer(t4.clone()).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 625);
    n.bob.start().await?;
    n.wait_linked().await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM_SUBMITTED).await?,
        BigUint::from(625u32)
    );
    // The claim Bob already redeemed, sent again after his restart, is worth nothing.
    let old_best = n.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
    send_claim(&n, old_best).await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM).await?,
        BigUint::from(625u32)
    );
    n.bob.tl()?.fulfill_condition(t4.id, f4, None).await?;
    n.check_agreement(750).await?;

    // 3. Bob's redemption of 750 reached the ledger but his node died before recording it (we submit his best
    //    claim the way his module does, then stop him): at the next stop he must not pay himself again.
    let best = n.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
    let client = RippledClient::new(&n.ledger.fake.url())?;
    let outcome = client
        .submit_with_secret(
            json!({
                "TransactionType": "PaymentChannelClaim",
                "Account": n.ledger.keys.bob_address(),
                "Channel": n.ledger.a_to_b.to_string(),
                "Balance": "750",
                "Amount": "750",
                "Signature": best["signature"],
                "PublicKey": best["publicKey"],
            }),
            BOB_SEED,
        )
        .await?;
    assert!(outcome.is_success(), "{}", outcome.engine_result);
    assert_eq!(n.ledger.redeemed()?, 750);
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 750);
    assert_eq!(n.ledger.fake.received(&n.ledger.keys.bob_address()), 750);
    // Two redemptions by Bob's module (625, then none: already on the ledger) plus the one made for him.
    let balances: Vec<Value> = n
        .ledger
        .fake
        .submissions()
        .iter()
        .map(|s| s["Balance"].clone())
        .collect();
    assert_eq!(balances, vec![json!("625"), json!("750")]);

    // 4. Once more from the same folder: everything adds up, nothing is submitted again.
    n.bob.start().await?;
    n.wait_linked().await?;
    n.check_agreement(750).await?;
    n.bob.stop().await;
    n.alice.stop().await;
    assert_eq!(n.ledger.fake.submissions().len(), 2);
    assert_eq!(n.ledger.fake.received(&n.ledger.keys.bob_address()), 750);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redemption_that_fails_at_stop_is_made_after_the_restart() -> TestResult {
    let mut n = net().await?;
    n.pay(1, 210).await?;
    n.pay(2, 90).await?;
    // rippled is unreachable when Bob's node stops: the redemption fails, the claim stays in his records.
    n.ledger.fake.set_down().await;
    n.bob.stop().await;
    n.ledger.fake.set_up().await?;
    assert_eq!(n.ledger.redeemed()?, 0);
    assert!(n.ledger.fake.submissions().is_empty());
    // Bob's node starts again on its folder, with his best claim intact, and redeems it exactly once.
    n.bob.start().await?;
    n.wait_linked().await?;
    n.check_agreement(300).await?;
    assert_eq!(
        n.bob.tracker(MVT_INCOMING_CLAIM_SUBMITTED).await?,
        BigUint::from(0u32)
    );
    n.bob.stop().await;
    n.alice.stop().await;
    assert_eq!(n.ledger.redeemed()?, 300);
    assert_eq!(n.ledger.fake.submissions().len(), 1);
    assert_eq!(n.ledger.fake.received(&n.ledger.keys.bob_address()), 300);
    Ok(())
}

/// The TOML block of README.md's xrp-paychan section whose first line is `first_line`.
fn readme_block(first_line: &str) -> Result<String, BoxError> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let section = readme
        .split("## Module: xrp-paychan")
        .nth(1)
        .ok_or("README has no xrp-paychan section")?;
    let fence = "```toml\n";
    let start = section
        .find(&format!("{fence}{first_line}"))
        .ok_or_else(|| format!("README has no block starting {first_line:?}"))?
        + fence.len();
    let len = section[start..].find("```").ok_or("unterminated block")?;
    Ok(section[start..start + len].to_owned())
}

/// The only peer's legacy options of a README configuration.
fn readme_peer(first_line: &str) -> Result<Value, BoxError> {
    let config = NodeConfig::parse(&readme_block(first_line)?)?;
    let [peer] = config.peers.as_slice() else {
        return Err("expected one peer".into());
    };
    Ok(peer.raw.clone())
}

/// Points module options at the test ledger and replaces the secret's source with the seed inline.
fn for_test_ledger(module_options: &mut Value, ledger: &Ledger, seed: &str) -> TestResult {
    let o = module_options
        .as_object_mut()
        .ok_or("moduleOptions is not a table")?;
    assert!(
        o.remove("secretEnv").is_some() || o.remove("secretFile").is_some(),
        "the example reads the secret from the environment or a file"
    );
    o.insert("secret".to_owned(), json!(seed));
    o.insert("rippled".to_owned(), json!(ledger.fake.url()));
    if o.contains_key("channel") {
        o.insert("channel".to_owned(), json!(ledger.a_to_b.to_string()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_configurations_run() -> TestResult {
    let ledger = Ledger::start().await?;
    let port = free_port()?;
    // Bob's and Alice's node configurations exactly as in the README, but for the ledger, port and secrets.
    let mut bob = readme_peer("# bob.toml")?;
    bob["listener"]["port"] = json!(port);
    for_test_ledger(&mut bob["moduleOptions"], &ledger, BOB_SEED)?;
    let mut alice = readme_peer("# alice.toml")?;
    let server = alice["server"].as_str().ok_or("no server")?;
    alice["server"] = json!(server.replace(":4195", &format!(":{port}")));
    for_test_ledger(&mut alice["moduleOptions"], &ledger, ALICE_SEED)?;

    let mut n = net_with(ledger, bob, alice).await?;
    n.pay(1, 400_000).await?;
    n.pay(2, 600_000).await?;
    n.check_agreement(1_000_000).await?;
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 1_000_000);
    n.alice.stop().await;

    // The settlement-engine example builds the module once its secret and ledger are filled in.
    let engine = NodeConfig::parse(&readme_block("[settlement-engine]")?)?
        .settlement_engine
        .ok_or("no settlement-engine section")?;
    assert_eq!(engine.module, "xrp-paychan");
    assert_eq!(engine.connector_scale, Some(9));
    let mut options = engine.module_options.clone();
    for_test_ledger(&mut options, &n.ledger, ALICE_SEED)?;
    channel_modules::build_module(&engine.module, &options)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_the_2017_plugins_shape_is_taken_on_the_peers_channel() -> TestResult {
    let mut n = net().await?;
    n.pay(1, 200).await?;
    let keys = &n.ledger.keys;
    let a_to_b = n.ledger.a_to_b;
    // The 2017 ilp-plugin-xrp-paychan sends only the amount and the signature (lowercase hex): the channel is
    // the one it named with ripple_channel_id.
    let forged =
        json!({"amount": "260", "signature": hex::encode(keys.carol.sign_claim(&a_to_b, 260)?)});
    refused_with(send_claim(&n, forged).await, "signature is invalid")?;
    let legacy =
        json!({"amount": "250", "signature": hex::encode(keys.alice.sign_claim(&a_to_b, 250)?)});
    send_claim(&n, legacy).await?;
    let best = n.bob.tracker_data(MVT_INCOMING_CLAIM).await?;
    assert_eq!(best["amount"], json!("250"));
    assert_eq!(best["channel"], json!(a_to_b.to_string()));
    n.bob.stop().await;
    assert_eq!(n.ledger.redeemed()?, 250);
    n.alice.stop().await;
    Ok(())
}
