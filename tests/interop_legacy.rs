//! Interop against the REAL legacy JS plugin (`ilp-plugin-payment-channel-framework` 1.3.5 and 1.1.3, npm
//! packages in tests/node/legacy-*/, installed by `.ci/setup`), driven by tests/node/scripts/legacy_peer.js.
//!
//! Each test runs for both versions. Node and the packages must be present; when they are missing the test
//! fails if `CI=true` and is skipped (with a message) otherwise. Every node process is killed by PID when its
//! guard drops, also when the test fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{Transfer, TransferId, TransferState};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::routing::{LocalPayments, RoutingConfig};
use ilp_bridge::peer::{
    forward_id, EventReceiver, IncomingRequestHandler, NodeOptions, PeerError, PeerEvent,
    PeerMessage, PeerNode, Trustline,
};
use ilp_bridge::store::Db;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

mod legacy_common;
use legacy_common::*;

/// A hold window (ms) beyond every expiry the differential frames use (legacy has none).
const LEGACY_HOLD_MS: u64 = 50 * 365 * 24 * 3600 * 1000;

fn payment(account: &str, amount: u64) -> Vec<u8> {
    btp::ilp_v1::IlpV1Packet::Payment(btp::ilp_v1::Payment {
        amount,
        account: account.to_owned(),
        data: Bytes::new(),
    })
    .to_bytes()
    .to_vec()
}

fn rust_transfer(fulfillment: &[u8; 32], amount: u64, expires_in_ms: i64, dest: &str) -> Transfer {
    Transfer {
        id: TransferId(*uuid::Uuid::new_v4().as_bytes()),
        amount: LedgerAmount(amount),
        execution_condition: Sha256::digest(fulfillment).into(),
        expires_at_ms: now_ms() + expires_in_ms,
        ilp: payment(dest, amount),
        custom: None,
    }
}

async fn next_event(rx: &mut EventReceiver, name: &str) -> R<PeerEvent> {
    loop {
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .map_err(|_| format!("no {name} event"))??;
        if e.name() == name {
            return Ok(e);
        }
    }
}

/// The transfer of the next `name` event (`incoming_prepare`, `incoming_cancel` or `outgoing_cancel`).
async fn next_transfer(rx: &mut EventReceiver, name: &str) -> R<Transfer> {
    match next_event(rx, name).await? {
        PeerEvent::IncomingPrepare(t)
        | PeerEvent::IncomingCancel(t)
        | PeerEvent::OutgoingCancel(t) => Ok(t),
        _ => Err("unexpected event".into()),
    }
}

/// Waits for the bridge's next incoming Prepare, checks that it is the JS side's transfer `id` and fulfills it.
async fn fulfill_at_bridge(
    tl: &Trustline,
    events: &mut EventReceiver,
    id: &str,
    fulfillment: [u8; 32],
) -> TestResult {
    let got = next_transfer(events, "incoming_prepare").await?;
    assert_eq!(uuid_of(&got.id), id);
    tl.fulfill_condition(got.id, fulfillment, None).await?;
    Ok(())
}

/// Asserts that the trustline's record of transfer `id` ended cancelled.
async fn assert_cancelled(tl: &Trustline, id: &TransferId) -> TestResult {
    let rec = tl.log().get(id).await?.ok_or("missing")?;
    assert!(
        matches!(rec.state, TransferState::Cancelled { .. }),
        "{rec:?}"
    );
    Ok(())
}

async fn wait_connected(tl: &Trustline) -> R<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tl.is_connected() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} never connected", tl.name()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

struct Echo;

#[async_trait::async_trait]
impl IncomingRequestHandler for Echo {
    async fn handle_request(&self, request: PeerMessage) -> Result<PeerMessage, PeerError> {
        if request
            .custom
            .as_ref()
            .and_then(|c| c.get("fail"))
            .is_some()
        {
            return Err(PeerError::handler("handler failed"));
        }
        Ok(PeerMessage {
            ilp: None,
            custom: Some(json!({"echo": request.custom})),
        })
    }
}

/// Loopback listeners, and nothing else changed: as `ilp-bridge run` runs, payments for the node are refused.
fn run_options() -> NodeOptions {
    NodeOptions {
        bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ..NodeOptions::default()
    }
}

/// [`run_options`], with the test as the embedder that receives payments for the node (it fulfills or rejects
/// them itself).
fn node_options() -> NodeOptions {
    NodeOptions {
        routing: RoutingConfig {
            local_payments: LocalPayments::Embedder,
            ..RoutingConfig::default()
        },
        ..run_options()
    }
}

async fn start_bridge(configs: Vec<Value>, db_dir: &std::path::Path) -> R<PeerNode> {
    start_bridge_with(configs, db_dir, node_options()).await
}

async fn start_bridge_with(
    configs: Vec<Value>,
    db_dir: &std::path::Path,
    options: NodeOptions,
) -> R<PeerNode> {
    // `{"name", "options", "max_hold_ms"?}`, as a `[[peer]]` of the node TOML.
    let configs = configs
        .into_iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or("peer").to_owned();
            let mut config = PeerConfig::from_legacy_json(&name, &c["options"])?;
            if let Some(ms) = c["max_hold_ms"].as_u64() {
                config.limits.max_hold = Duration::from_millis(ms);
            }
            Ok(config)
        })
        .collect::<R<Vec<_>>>()?;
    // After a shutdown the previous instance's last handles (closing sockets, finishing tasks) may need a
    // moment to let go of the database lock.
    let mut tries = 0;
    let db = loop {
        match Db::open(db_dir) {
            Ok(db) => break db,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(PeerNode::start(configs, db, options).await?)
}

/// Legacy options of a bridge trustline `name` listening on `port` (USD at scale 9, stored), with the
/// options in `extra` added after these (an option of the same name is replaced in its place).
fn listener_config(
    name: &str,
    port: u16,
    secret: &str,
    max_balance: &str,
    prefix: &str,
    extra: Value,
) -> Value {
    let mut options = json!({
        "listener": {"port": port}, "incomingSecret": secret, "maxBalance": max_balance, "prefix": prefix,
        "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []}, "store": true});
    if let (Some(o), Some(e)) = (options.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({"name": name, "options": options})
}

/// Starts a bridge with the single trustline `config` (its database in `dir`): the node and that trustline.
async fn start_single(
    config: Value,
    dir: &std::path::Path,
    options: NodeOptions,
) -> R<(PeerNode, Trustline)> {
    let name = config["name"]
        .as_str()
        .ok_or("config without a name")?
        .to_owned();
    let node = start_bridge_with(vec![config], dir, options).await?;
    let tl = node.trustline(&name).ok_or("no trustline")?.clone();
    Ok((node, tl))
}

/// Asserts that a legacy client dialing `url` does not connect within 3 s (`what` says why it must not).
async fn assert_js_client_never_connects(version: &str, url: String, what: &str) -> TestResult {
    let mut js = JsPeer::client(version, url, &[]).await?;
    let r = tokio::time::timeout(Duration::from_secs(3), js.call("connect", json!({}))).await;
    assert!(!matches!(r, Ok(Ok(Ok(_)))), "{what}: {r:?}");
    Ok(())
}

/// Asserts that a bridge with the single dialing trustline `config` (named "js") is not connected after 1.5 s.
async fn assert_bridge_never_connects(config: Value) -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = start_bridge(vec![config], dir.path()).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!node.trustline("js").ok_or("no trustline")?.is_connected());
    node.shutdown().await;
    Ok(())
}

const CLAIM_SECRET: &str = "shared-claim-secret";

/// Legacy JS client → ilp-bridge server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_to_bridge_server() -> TestResult {
    for_each_version(js_client_to_bridge_server_for).await
}

async fn js_client_to_bridge_server_for(version: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (node, tl) = start_single(
        listener_config(
            "alice",
            port,
            "s3cret",
            "1000",
            "test.alice.",
            json!({"module": "claim-test", "secret": CLAIM_SECRET, "maxUnsecured": "1000"}),
        ),
        dir.path(),
        node_options(),
    )
    .await?;
    tl.register_request_handler(Arc::new(Echo));
    let mut events = tl.subscribe();

    // Wrong secret: the legacy client never authenticates.
    assert_js_client_never_connects(
        version,
        format!("btp+ws://:wrong@127.0.0.1:{port}"),
        "connect with a wrong secret must not succeed",
    )
    .await?;

    // Right secret, stateful client with the JS claim module.
    let mut js = JsPeer::client(
        version,
        format!("btp+ws://:s3cret@127.0.0.1:{port}"),
        &[
            ("STATEFUL", "1".into()),
            ("MAX_BALANCE", "1000".into()),
            ("PREFIX", "test.alice.".into()),
            ("CLAIM_SECRET", CLAIM_SECRET.into()),
            ("AUTO_FULFILL", "1".into()),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    assert_eq!(js.ok("getPeerBalance", json!({})).await?, json!("-0"));
    assert_eq!(js.ok("getLimit", json!({})).await?, json!("-1000"));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("0"));

    // JS → bridge, fulfilled by the bridge; the JS module's claim reaches the Rust module.
    let f = [1u8; 32];
    let ilp = js.payment("test.alice.server.bob", 10).await?;
    let id = js.send_transfer(&f, 10, 10_000, &ilp).await?;
    fulfill_at_bridge(&tl, &mut events, &id, f).await?;
    js.event("outgoing_fulfill").await?;
    let claim = js.event("outgoing_claim").await?;
    assert_eq!(claim["claim"]["amount"], json!("10"));
    assert_eq!(tl.local_balance(), LedgerBalance(10));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-10"));
    let best = wait_best_claim(&tl, 10).await?;
    assert_eq!(best, 10);

    // Bridge → JS, fulfilled by JS; the Rust module's claim reaches the JS module and verifies.
    let f2 = [2u8; 32];
    js.ok("preimage", json!({"fulfillment": b64u(&f2)})).await?;
    let t2 = rust_transfer(&f2, 4, 10_000, "test.alice.client.carl");
    tl.send_transfer(t2.clone()).await?;
    next_event(&mut events, "outgoing_fulfill").await?;
    let inc = js.event("incoming_claim").await?;
    assert_eq!(inc["valid"], json!(true), "{inc}");
    assert_eq!(inc["claim"]["amount"], json!("4"));
    assert_eq!(tl.local_balance(), LedgerBalance(6));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-6"));

    // Rejects both ways.
    let f3 = [3u8; 32];
    let id3 = js.send_transfer(&f3, 5, 10_000, &ilp).await?;
    let got = next_transfer(&mut events, "incoming_prepare").await?;
    assert_eq!(uuid_of(&got.id), id3);
    tl.reject_incoming_transfer(got.id, ilp_error("F99", "Application Error"))
        .await?;
    let rej = js.event("outgoing_reject").await?;
    assert!(rej.to_string().contains("F99"), "{rej}");
    let t4 = rust_transfer(&[4u8; 32], 5, 10_000, "test.alice.client.carl");
    tl.send_transfer(t4.clone()).await?;
    let jid = uuid_of(&t4.id);
    js.event_for("incoming_prepare", &jid).await?;
    js.ok("rejectIncomingTransfer", json!({"transferId": jid, "reason": {"code": "F99", "name": "Application Error", "triggered_by": "test.alice.server", "additional_info": {"x": 1}}})).await?;
    let PeerEvent::OutgoingReject { reason, .. } =
        next_event(&mut events, "outgoing_reject").await?
    else {
        return Err("unexpected event".into());
    };
    assert_eq!(reason.code, "F99");
    assert_eq!(tl.local_balance(), LedgerBalance(6));

    // Over the limit.
    let (_, t5) = js_transfer(&[5u8; 32], 2000, 10_000, ilp.as_str().unwrap_or_default());
    let err = js
        .call("sendTransfer", t5)
        .await?
        .err()
        .ok_or("over-limit transfer accepted")?;
    assert!(
        err.to_string().contains("F00") && err.to_string().contains("NotAcceptedError"),
        "{err}"
    );

    // Custom requests both ways.
    let r = js
        .ok("sendRequest", json!({"message": {"custom": {"hello": 1}}}))
        .await?;
    assert_eq!(r["custom"], json!({"echo": {"hello": 1}}));
    let r = tl
        .send_request(PeerMessage {
            ilp: None,
            custom: Some(json!({"hi": 2})),
        })
        .await?;
    assert_eq!(r.custom, Some(json!({"echo": {"hi": 2}})));

    // Expiry both ways (both sides are stateful and run timers).
    let id6 = js.send_transfer(&[6u8; 32], 7, 1500, &ilp).await?;
    let t7 = rust_transfer(&[7u8; 32], 7, 1500, "test.alice.client.carl");
    tl.send_transfer(t7.clone()).await?;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let id6: TransferId = id6.parse()?;
    for id in [id6, t7.id] {
        assert_cancelled(&tl, &id).await?;
    }
    assert_eq!(tl.local_balance(), LedgerBalance(6));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-6"));
    assert_eq!(
        tl.log().sums().incoming_fulfilled_and_prepared,
        tl.log().sums().incoming_fulfilled
    );

    js.ok("disconnect", json!({})).await?;
    node.shutdown().await;
    Ok(())
}

/// A payment addressed to the bridge node itself (under its account on the ledger it came from), sent by the
/// real legacy plugin, with nothing on the node that receives payments (as under `ilp-bridge run`): refused at
/// once with F02, so the payer's money is not locked until the transfer expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_for_the_bridge_itself_are_refused_at_once() -> TestResult {
    for_each_version(payments_for_the_bridge_for).await
}

async fn payments_for_the_bridge_for(version: &str) -> TestResult {
    /// Far longer than a refusal takes, and longer than [`WAIT`]: a payment left to expire fails the test.
    const EXPIRY_MS: i64 = 30_000;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (node, tl) = start_single(
        listener_config("kit", port, "s3cret", "1000", "test.kit.", json!({})),
        dir.path(),
        run_options(),
    )
    .await?;
    let mut js = JsPeer::client(
        version,
        format!("btp+ws://:s3cret@127.0.0.1:{port}"),
        &[
            ("STATEFUL", "1".into()),
            ("MAX_BALANCE", "1000".into()),
            ("PREFIX", "test.kit.".into()),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    for n in 1..=5u8 {
        let ilp = js.payment("test.kit.server.bob", 10).await?;
        let sent = tokio::time::Instant::now();
        let id = js.send_transfer(&[n; 32], 10, EXPIRY_MS, &ilp).await?;
        let rejected = js.event_for("outgoing_reject", &id).await?;
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "refused only after {:?}",
            sent.elapsed()
        );
        assert!(rejected.to_string().contains("F02"), "{rejected}");
        assert_cancelled(&tl, &id.parse()?).await?;
    }
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("0"));
    assert_eq!(tl.local_balance(), LedgerBalance::ZERO);
    js.ok("disconnect", json!({})).await?;
    node.shutdown().await;
    Ok(())
}

/// The best incoming claim the Rust module kept (polled: it is handled right after the Fulfill's Response).
async fn wait_best_claim(tl: &Trustline, at_least: u64) -> R<u64> {
    let tracker = tl
        .module_context()
        .max_value_tracker(channel_modules::claim_test::INCOMING_CLAIM_KEY)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = tracker.get_max().await?.value;
        let v = u64::try_from(v).map_err(|_| "claim too large")?;
        if v >= at_least || tokio::time::Instant::now() > deadline {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ilp_error(code: &str, name: &str) -> btp::ilp_v1::IlpV1Error {
    let mut c = [0u8; 3];
    c.copy_from_slice(&code.as_bytes()[..3]);
    btp::ilp_v1::IlpV1Error {
        code: c,
        name: name.to_owned(),
        triggered_by: "test.bridge".to_owned(),
        forwarded_by: vec![],
        triggered_at: btp::Timestamp::now(),
        data: Bytes::from_static(b"{\"why\":\"test\"}"),
    }
}

/// ilp-bridge client → legacy JS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_client_to_js_server() -> TestResult {
    for_each_version(bridge_client_to_js_server_for).await
}

async fn bridge_client_to_js_server_for(version: &str) -> TestResult {
    let port = free_port()?;
    let mut js = JsPeer::server(
        version,
        port,
        "pw",
        "test.js.",
        "500",
        &[
            ("CLAIM_SECRET", CLAIM_SECRET.into()),
            ("AUTO_FULFILL", "1".into()),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Wrong secret: never connects.
    assert_bridge_never_connects(json!({"name": "js", "options": {
        "server": format!("btp+ws://:nope@127.0.0.1:{port}"), "store": false}}))
    .await?;

    let dir = tempfile::tempdir()?;
    let (node, tl) = start_single(
        json!({"name": "js", "options": {
            "server": format!("btp+ws://:pw@127.0.0.1:{port}"), "maxBalance": "500", "store": true,
            "prefix": "test.js.", "module": "claim-test", "secret": CLAIM_SECRET, "maxUnsecured": "1000"}}),
        dir.path(),
        node_options(),
    )
    .await?;
    tl.register_request_handler(Arc::new(Echo));
    wait_connected(&tl).await?;
    let mut events = tl.subscribe();
    let info = tl.get_info().ok_or("no info")?;
    assert_eq!(info["prefix"], json!("test.js."));
    assert_eq!(tl.get_peer_balance().await?, "-0");
    assert_eq!(tl.get_limit().await?, "-500");

    // Bridge → JS (JS auto-fulfills), claim from Rust to the JS module.
    let f = [1u8; 32];
    js.ok("preimage", json!({"fulfillment": b64u(&f)})).await?;
    let t = rust_transfer(&f, 10, 10_000, "test.js.server.bob");
    tl.send_transfer(t.clone()).await?;
    next_event(&mut events, "outgoing_fulfill").await?;
    let inc = js.event("incoming_claim").await?;
    assert_eq!(inc["valid"], json!(true), "{inc}");
    assert_eq!(tl.local_balance(), LedgerBalance(-10));
    assert_eq!(tl.get_peer_balance().await?, "-10");
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("10"));

    // JS → bridge, fulfilled by the bridge; claim from JS to Rust.
    let f2 = [2u8; 32];
    let ilp = js.payment("test.js.client.x", 3).await?;
    js.send_transfer(&f2, 3, 10_000, &ilp).await?;
    let got = next_transfer(&mut events, "incoming_prepare").await?;
    tl.fulfill_condition(got.id, f2, None).await?;
    let claim = js.event("outgoing_claim").await?;
    assert_eq!(claim["claim"]["amount"], json!("3"));
    assert_eq!(tl.local_balance(), LedgerBalance(-7));

    // Over the JS server's limit: the legacy error comes back.
    let t3 = rust_transfer(&[3u8; 32], 600, 10_000, "test.js.server.bob");
    match tl.send_transfer(t3).await {
        Err(PeerError::Remote(e)) => {
            assert_eq!(e.code_str(), "F00");
            assert_eq!(e.name, "NotAcceptedError");
        }
        other => return Err(format!("expected refusal, got {other:?}").into()),
    }

    // Requests both ways.
    let r = tl
        .send_request(PeerMessage {
            ilp: None,
            custom: Some(json!({"q": 1})),
        })
        .await?;
    assert_eq!(r.custom, Some(json!({"echo": {"q": 1}})));
    let r = js
        .ok("sendRequest", json!({"message": {"custom": {"p": 2}}}))
        .await?;
    assert_eq!(r["custom"], json!({"echo": {"p": 2}}));

    // Expiry of a transfer the JS side never fulfills (no preimage registered).
    let t4 = rust_transfer(&[4u8; 32], 5, 1500, "test.js.server.bob");
    tl.send_transfer(t4.clone()).await?;
    let rec_events = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(PeerEvent::OutgoingReject { reason, .. }) => {
                    return Ok::<_, String>(Some(reason))
                }
                Ok(PeerEvent::OutgoingCancel(_)) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await??;
    if let Some(reason) = rec_events {
        assert_eq!(reason.code, "R00");
        assert_eq!(reason.name, "Transfer Timed Out");
        assert_eq!(reason.triggered_by, "test.js.server");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_cancelled(&tl, &t4.id).await?;
    assert_eq!(tl.local_balance(), LedgerBalance(-7));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("7"));

    // The other direction: the JS server prepares a transfer to the bridge that nobody fulfills. A legacy
    // peer refuses a Reject of its own incoming transfer, so the bridge's record can only be cancelled by its
    // own timer, which then sends the R00.
    let ilp5 = js.payment("test.js.client.x", 4).await?;
    let id5 = js.send_transfer(&[5u8; 32], 4, 1500, &ilp5).await?;
    let id5: TransferId = id5.parse()?;
    let cancelled = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(PeerEvent::IncomingCancel(t)) if t.id == id5 => return Ok::<_, String>(t),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await??;
    assert_eq!(cancelled.amount, LedgerAmount(4));
    assert_cancelled(&tl, &id5).await?;
    // The JS sender saw it end (its own timer's cancel, or the bridge's R00 Reject, whichever came first).
    let uuid5 = uuid_of(&id5);
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            let e = js
                .event_any(&["outgoing_cancel", "outgoing_reject"])
                .await?;
            if e["args"][0]["id"] == json!(uuid5) {
                return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(e);
            }
        }
    })
    .await??;
    if ended["event"] == json!("outgoing_reject") {
        assert!(ended.to_string().contains("R00"), "{ended}");
    }
    assert_eq!(tl.local_balance(), LedgerBalance(-7));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("7"));

    node.shutdown().await;
    Ok(())
}

/// Expiry against a stateless legacy client, which runs no timers of its own: whatever expires is expired by
/// the bridge, so this shows the bridge's R00 Reject reaching the real plugin (JS → bridge), and a transfer the
/// JS side lets expire being cancelled by the bridge (bridge → JS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_expires_transfers_of_a_stateless_js_client() -> TestResult {
    for_each_version(stateless_expiry_for).await
}

async fn stateless_expiry_for(version: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (node, tl) = start_single(
        listener_config("alice", port, "s3cret", "1000", "test.alice.", json!({})),
        dir.path(),
        node_options(),
    )
    .await?;
    let mut events = tl.subscribe();
    let mut js = JsPeer::client(version, format!("btp+ws://:s3cret@127.0.0.1:{port}"), &[]).await?;
    js.ok("connect", json!({})).await?;

    // JS → bridge, never fulfilled: the bridge cancels it and its R00 reaches the JS plugin as a rejection.
    let ilp = js.payment("test.alice.server.bob", 9).await?;
    let id = js.send_transfer(&[1u8; 32], 9, 1500, &ilp).await?;
    let rejected = js.event_for("outgoing_reject", &id).await?;
    let reason = &rejected["args"][1];
    assert_eq!(reason["code"], json!("R00"), "{rejected}");
    assert_eq!(reason["name"], json!("Transfer Timed Out"), "{rejected}");
    // 1.3.x hands over a snake_case RejectionMessage, 1.1.3 the camelCase ILP error.
    let by = if version.starts_with("1.1.") {
        &reason["triggeredBy"]
    } else {
        &reason["triggered_by"]
    };
    assert_eq!(by, &json!("test.alice.server"), "{rejected}");
    let c = next_transfer(&mut events, "incoming_cancel").await?;
    assert_eq!(uuid_of(&c.id), id);
    assert_eq!(tl.local_balance(), LedgerBalance::ZERO);
    assert_eq!(
        tl.log().sums().incoming_fulfilled_and_prepared,
        tl.log().sums().incoming_fulfilled
    );

    // Bridge → JS, which lets it expire: the bridge cancels it (the stateless plugin refuses the R00 for its
    // incoming transfer with an Error, which is ignored, as legacy ignores it).
    let t2 = rust_transfer(&[2u8; 32], 6, 1500, "test.alice.client.carl");
    tl.send_transfer(t2.clone()).await?;
    js.event_for("incoming_prepare", &uuid_of(&t2.id)).await?;
    let c = next_transfer(&mut events, "outgoing_cancel").await?;
    assert_eq!(c.id, t2.id);
    assert_cancelled(&tl, &t2.id).await?;
    assert_eq!(tl.local_balance(), LedgerBalance::ZERO);
    assert_eq!(
        tl.log().sums().outgoing_fulfilled_and_prepared,
        LedgerSum::ZERO
    );
    // The stateless plugin's balance is the bridge's, negated.
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-0"));
    node.shutdown().await;
    Ok(())
}

/// Legacy JS peer → ilp-bridge → legacy JS peer, and a restart of the bridge mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_to_js_through_the_bridge_with_restart() -> TestResult {
    for_each_version(routed_for).await
}

async fn routed_for(version: &str) -> TestResult {
    // Both legacy peers are servers and the bridge dials them: a legacy *client* never redials after the
    // bridge restarts (and 1.1.3's disconnect() keeps the dead socket), while a legacy server accepts the
    // bridge's new socket.
    let dir = tempfile::tempdir()?;
    let (pa, pb) = (free_port()?, free_port()?);
    let auto_fulfill = [("AUTO_FULFILL", "1".to_owned())];
    let mut a = JsPeer::server(version, pa, "sa", "test.a.", "1000", &auto_fulfill).await?;
    let mut b = JsPeer::server(version, pb, "sb", "test.b.", "1000", &auto_fulfill).await?;
    a.ok("connect", json!({})).await?;
    b.ok("connect", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let configs = vec![
        json!({"name": "a", "options": {"server": format!("btp+ws://:sa@127.0.0.1:{pa}"), "maxBalance": "1000",
            "prefix": "test.a.", "store": true}}),
        json!({"name": "b", "options": {"server": format!("btp+ws://:sb@127.0.0.1:{pb}"), "maxBalance": "1000",
            "prefix": "test.b.", "store": true}}),
    ];
    let node = start_bridge(configs.clone(), dir.path()).await?;
    let bridge_a = node.trustline("a").ok_or("a")?.clone();
    let bridge_b = node.trustline("b").ok_or("b")?.clone();
    wait_connected(&bridge_a).await?;
    wait_connected(&bridge_b).await?;

    // An ILQP quote from A for a destination behind B: routed by prefix and answered for ledger b (same
    // currency and scale: the same amount; hold duration plus the bridge's 1 s expiry margin).
    let q = a
        .ok(
            "ilqp",
            json!({"kind": "bySource", "request": {"destinationAccount": "test.b.server.bob",
                "sourceAmount": "10", "destinationHoldDuration": 3000}}),
        )
        .await?;
    let reply = a.ok("sendRequest", json!({"message": {"ilp": q}})).await?;
    let parsed = a.ok("parseIlp", json!({"ilp": reply["ilp"]})).await?;
    assert_eq!(
        parsed["typeString"],
        json!("ilqp_by_source_response"),
        "{parsed}"
    );
    assert_eq!(parsed["data"]["destinationAmount"], json!("10"), "{parsed}");
    assert_eq!(
        parsed["data"]["sourceHoldDuration"],
        json!(4000),
        "{parsed}"
    );
    let q = a
        .ok(
            "ilqp",
            json!({"kind": "liquidity", "request": {"destinationAccount": "test.nowhere.bob",
                "destinationHoldDuration": 3000}}),
        )
        .await?;
    let reply = a.ok("sendRequest", json!({"message": {"ilp": q}})).await?;
    let parsed = a.ok("parseIlp", json!({"ilp": reply["ilp"]})).await?;
    assert_eq!(parsed["typeString"], json!("ilp_error"), "{parsed}");
    assert_eq!(parsed["data"]["code"], json!("F02"), "{parsed}");

    // Payment 1: A → bridge → B, B fulfills automatically.
    let f1 = [1u8; 32];
    b.ok("preimage", json!({"fulfillment": b64u(&f1)})).await?;
    let ilp = a.payment("test.b.server.bob", 10).await?;
    a.send_transfer(&f1, 10, 20_000, &ilp).await?;
    a.event("outgoing_fulfill").await?;
    assert_eq!(a.ok("getBalance", json!({})).await?, json!("-10"));
    assert_eq!(b.ok("getBalance", json!({})).await?, json!("10"));
    assert_eq!(bridge_a.local_balance(), LedgerBalance(10));
    assert_eq!(bridge_b.local_balance(), LedgerBalance(-10));

    // Payment 2: prepared at B but not fulfilled before the bridge restarts.
    let f2 = [2u8; 32];
    // The Payment asks for exactly the transfer amount (the bridge refuses to deliver less).
    let ilp2 = a.payment("test.b.server.bob", 7).await?;
    let id2 = a.send_transfer(&f2, 7, 30_000, &ilp2).await?;
    let b_id = uuid_of(&forward_id("a", &id2.parse()?));
    b.event_for("incoming_prepare", &b_id).await?;
    // Payment 3: prepared, never fulfilled, with an expiry that passes while the bridge is down.
    let ilp3 = a.payment("test.b.server.bob", 5).await?;
    let id3 = a.send_transfer(&[3u8; 32], 5, 2500, &ilp3).await?;
    b.event_for(
        "incoming_prepare",
        &uuid_of(&forward_id("a", &id3.parse()?)),
    )
    .await?;

    node.shutdown().await;
    drop((bridge_a, bridge_b));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let node = start_bridge(configs, dir.path()).await?;
    let bridge_a = node.trustline("a").ok_or("a")?.clone();
    let bridge_b = node.trustline("b").ok_or("b")?.clone();
    wait_connected(&bridge_a).await?;
    wait_connected(&bridge_b).await?;
    // B fulfills payment 2 now. A legacy server also writes to the dead socket of the first bridge run, so
    // the call may report an error, but the Fulfill goes out on the live socket too.
    let _ = b
        .call(
            "fulfillCondition",
            json!({"transferId": b_id, "fulfillment": b64u(&f2)}),
        )
        .await?;
    a.event_for("outgoing_fulfill", &id2).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(a.ok("getBalance", json!({})).await?, json!("-17"));
    assert_eq!(b.ok("getBalance", json!({})).await?, json!("17"));
    assert_eq!(bridge_a.local_balance(), LedgerBalance(17));
    assert_eq!(bridge_b.local_balance(), LedgerBalance(-17));
    // Nothing is left prepared on the bridge; payment 3 expired on both of its legs.
    assert!(bridge_a.log().prepared().await?.is_empty());
    assert!(bridge_b.log().prepared().await?.is_empty());
    node.shutdown().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------
// Byte-level differential test: the same raw frames to the real plugin and to ilp-bridge, replies compared.

/// A raw BTP client (tests/node/scripts/raw_btp_client.js) connected to one server. Killed (by PID) on drop.
struct RawClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        kill_by_pid(&mut self.child);
    }
}

impl RawClient {
    async fn connect(version: &str, port: u16, secret: &str) -> R<RawClient> {
        let mut child = Command::new("node")
            .arg("--no-deprecation")
            .arg(root().join("tests/node/scripts/raw_btp_client.js"))
            .env("LEGACY_DIR", legacy_dir(version))
            .env("URL", format!("ws://127.0.0.1:{port}"))
            .env("SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let first = tokio::time::timeout(WAIT, lines.recv())
            .await
            .map_err(|_| "raw client: no ready line")?
            .ok_or("raw client exited")?;
        if first["ready"] != json!(true) {
            return Err(format!("raw client: {first}").into());
        }
        Ok(RawClient {
            child,
            stdin,
            lines,
        })
    }

    /// Sends one frame; the reply frame with its request ID, or `None` when none came.
    async fn send(&mut self, frame: &[u8]) -> R<Option<Vec<u8>>> {
        self.stdin
            .write_all(format!("{}\n", hex::encode(frame)).as_bytes())
            .await?;
        self.stdin.flush().await?;
        let v = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .map_err(|_| "raw client: no answer")?
            .ok_or("raw client exited")?;
        match &v["reply"] {
            Value::Null => Ok(None),
            Value::String(h) => Ok(Some(hex::decode(h)?)),
            _ => Err(format!("raw client: {v}").into()),
        }
    }
}

/// Blanks an Error's `triggeredAt` (the only field that legitimately differs: it is the current time).
fn blank_error_time(frame: Vec<u8>) -> R<Vec<u8>> {
    if frame.first() != Some(&2) {
        return Ok(frame);
    }
    let bytes = Bytes::from(frame.clone());
    let mut r = btp::oer::Reader::new(&bytes);
    r.read_u8("type")?;
    r.read_u32("rid")?;
    r.read_length_prefix("contents")?;
    r.read_slice(3, "code")?;
    r.read_var_octet_slice("name")?;
    let len = r.read_length_prefix("time")?;
    let at = bytes.len() - r.remaining();
    let mut out = frame;
    out[at..at + len].fill(b'0');
    Ok(out)
}

/// A BTP/1.0 Prepare with `time` as its raw expiresAt bytes (so malformed times can be sent).
fn raw_prepare(
    rid: u32,
    id: [u8; 16],
    amount: u64,
    cond: [u8; 32],
    time: &[u8],
    pd: &btp::ProtocolData,
) -> Vec<u8> {
    let mut contents = bytes::BytesMut::new();
    contents.extend_from_slice(&id);
    contents.extend_from_slice(&amount.to_be_bytes());
    contents.extend_from_slice(&cond);
    btp::oer::write_var_octet_string(&mut contents, time);
    pd.encode(&mut contents);
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&[3]);
    out.extend_from_slice(&rid.to_be_bytes());
    btp::oer::write_var_octet_string(&mut out, &contents);
    out.to_vec()
}

fn message_frame(rid: u32, entries: Vec<btp::packet::ProtocolDataEntry>) -> Vec<u8> {
    let mut pd = btp::ProtocolData::new();
    for e in entries {
        pd.push(e);
    }
    btp::Frame::new(rid, btp::Packet::Message(pd))
        .to_bytes()
        .to_vec()
}

fn generalized(ms: i64) -> R<Vec<u8>> {
    Ok(btp::Timestamp::from_unix_millis(ms)
        .ok_or("time out of range")?
        .to_generalized_time()
        .to_vec())
}

/// The frames of the differential test, each with a label.
fn differential_frames() -> R<Vec<(&'static str, Vec<u8>)>> {
    use btp::packet::{ProtocolDataEntry as E, ProtocolName as N};
    let octets = |n: &'static str, d: &'static [u8]| E::octets(N::from_static(n), d);
    let cond: [u8; 32] = Sha256::digest([9u8; 32]).into();
    let in_an_hour = generalized(now_ms() + 3_600_000)?;
    // Tomorrow at 24:00 (legacy rolls it over to the next day's 00:00); within 24.8 days, so the JS timer works.
    let tomorrow = generalized(now_ms() + 86_400_000)?;
    let mut at_24 = tomorrow[..8].to_vec();
    at_24.extend_from_slice(b"240000.000Z");
    let ilp = Bytes::from(payment("test.x.server.bob", 10));
    let with_ilp_custom = |custom: &str| {
        btp::ProtocolData::new()
            .with(E::octets(N::from_static("ilp"), ilp.clone()))
            .with(E::json(N::from_static("custom"), custom.to_owned()))
    };
    let empty = btp::ProtocolData::new();
    let id = |n: u8| {
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[15] = n;
        b[6] = 0x40;
        b[8] = 0x80;
        b
    };
    let ilp_error = btp::ilp_v1::IlpV1Packet::Error(btp::ilp_v1::IlpV1Error {
        code: *b"F99",
        name: "Application Error".to_owned(),
        triggered_by: "test.x.client".to_owned(),
        forwarded_by: vec![],
        triggered_at: btp::Timestamp::from_unix_millis(1_800_000_000_000).ok_or("time")?,
        data: Bytes::from_static(b"{}"),
    })
    .to_bytes();
    let fulfill = |rid: u32, tid: [u8; 16]| {
        btp::Frame::new(
            rid,
            btp::Packet::Fulfill(btp::packet::Fulfill {
                transfer_id: tid,
                fulfillment: [9u8; 32],
                protocol_data: btp::ProtocolData::new(),
            }),
        )
        .to_bytes()
        .to_vec()
    };
    Ok(vec![
        (
            "info (full)",
            message_frame(0x101, vec![octets("info", &[2])]),
        ),
        (
            "info (account)",
            message_frame(0x102, vec![octets("info", &[0])]),
        ),
        (
            "balance",
            message_frame(0x103, vec![octets("balance", &[0])]),
        ),
        ("limit", message_frame(0x104, vec![octets("limit", &[0])])),
        (
            "time without fraction",
            raw_prepare(0x105, id(1), 10, cond, b"20300102030405Z", &empty),
        ),
        (
            "time with 1-digit fraction",
            raw_prepare(0x106, id(2), 10, cond, b"20300102030405.6Z", &empty),
        ),
        (
            "month 13",
            raw_prepare(0x107, id(3), 10, cond, b"20301302030405.678Z", &empty),
        ),
        (
            "garbage time",
            raw_prepare(0x108, id(4), 10, cond, b"garbage", &empty),
        ),
        (
            "empty time",
            raw_prepare(0x109, id(5), 10, cond, b"", &empty),
        ),
        (
            "bad time and amount 0",
            raw_prepare(0x10a, id(6), 0, cond, b"x", &empty),
        ),
        ("bad time, truncated protocol data (no reply)", {
            let mut f = raw_prepare(0x119, id(13), 10, cond, b"x", &empty);
            // Drop the last byte of the protocol data (`01 00` → `01`) and fix the contents length.
            f.truncate(f.len() - 1);
            f[5] -= 1;
            f
        }),
        (
            "amount 0",
            raw_prepare(0x10b, id(7), 0, cond, &in_an_hour, &empty),
        ),
        (
            "over the limit",
            raw_prepare(
                0x10c,
                id(8),
                2000,
                cond,
                &in_an_hour,
                &with_ilp_custom(r#"{"z":1,"a":{"y":[1,"2"],"b":null}}"#),
            ),
        ),
        (
            "prepare",
            raw_prepare(
                0x10d,
                id(9),
                10,
                cond,
                &in_an_hour,
                &with_ilp_custom(r#"{"note":"first","k":1}"#),
            ),
        ),
        (
            "same id, other amount",
            raw_prepare(
                0x10e,
                id(9),
                11,
                cond,
                &in_an_hour,
                &with_ilp_custom(r#"{"note":"first","k":1}"#),
            ),
        ),
        (
            "same id, same contents",
            raw_prepare(
                0x10f,
                id(9),
                10,
                cond,
                &in_an_hour,
                &with_ilp_custom(r#"{"note":"first","k":1}"#),
            ),
        ),
        (
            "24:00 rolls over",
            raw_prepare(0x110, id(10), 5, cond, &at_24, &empty),
        ),
        (
            "limit reached exactly",
            raw_prepare(0x111, id(11), 985, cond, &in_an_hour, &empty),
        ),
        (
            "one more unit",
            raw_prepare(0x112, id(12), 1, cond, &in_an_hour, &empty),
        ),
        ("fulfill unknown", fulfill(0x113, id(99))),
        ("fulfill incoming", fulfill(0x114, id(9))),
        (
            "reject incoming",
            btp::Frame::new(
                0x115,
                btp::Packet::Reject(btp::packet::Reject {
                    transfer_id: id(9),
                    protocol_data: btp::ProtocolData::new()
                        .with(E::octets(N::from_static("ilp"), ilp_error)),
                }),
            )
            .to_bytes()
            .to_vec(),
        ),
        (
            "custom request",
            message_frame(
                0x116,
                vec![E::json(
                    N::from_static("custom"),
                    r#"{"z":[3,{"q":1,"c":2}],"a":"x"}"#,
                )],
            ),
        ),
        (
            "unknown side protocol",
            message_frame(0x117, vec![octets("nope", b"1")]),
        ),
        (
            "balance after",
            message_frame(0x118, vec![octets("balance", &[0])]),
        ),
    ])
}

/// The same raw frames to the real legacy plugin and to ilp-bridge (both stateful servers with the same
/// options): every reply must be byte-identical apart from an Error's `triggeredAt` (the current time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_replies_are_byte_identical_to_legacy() -> TestResult {
    for_each_version(differential_for).await
}

/// The real legacy plugin and ilp-bridge as stateful servers with the same options (limit `max_balance`), and
/// a raw client connected to each.
struct SideBySide {
    js: JsPeer,
    node: PeerNode,
    to_js: RawClient,
    to_bridge: RawClient,
    _dir: tempfile::TempDir,
}

/// Starts a [`SideBySide`]; with `echo`, the bridge answers custom requests with [`Echo`].
async fn side_by_side(version: &str, max_balance: &str, echo: bool) -> R<SideBySide> {
    let js_port = free_port()?;
    let mut js = JsPeer::server(version, js_port, "pw", "test.x.", max_balance, &[]).await?;
    js.ok("connect", json!({})).await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    // The same options as legacy_peer.js builds (info keys in the same order), and a hold window as
    // unbounded as legacy's: the frames prepare transfers expiring up to the year 2030.
    let mut config = listener_config("x", port, "pw", max_balance, "test.x.", json!({}));
    config["max_hold_ms"] = json!(LEGACY_HOLD_MS);
    let node = start_bridge(vec![config], dir.path()).await?;
    if echo {
        node.trustline("x")
            .ok_or("no trustline")?
            .register_request_handler(Arc::new(Echo));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_js = RawClient::connect(version, js_port, "pw").await?;
    let to_bridge = RawClient::connect(version, port, "pw").await?;
    Ok(SideBySide {
        js,
        node,
        to_js,
        to_bridge,
        _dir: dir,
    })
}

async fn differential_for(version: &str) -> TestResult {
    let SideBySide {
        js,
        node,
        mut to_js,
        mut to_bridge,
        _dir,
    } = side_by_side(version, "1000", true).await?;
    let mut seen = Vec::new();
    for (label, frame) in differential_frames()? {
        let legacy = to_js
            .send(&frame)
            .await?
            .map(blank_error_time)
            .transpose()?;
        let ours = to_bridge
            .send(&frame)
            .await?
            .map(blank_error_time)
            .transpose()?;
        let show = |b: &Option<Vec<u8>>| {
            b.as_ref()
                .map(|b| format!("{} = {:?}", hex::encode(b), String::from_utf8_lossy(b)))
                .unwrap_or_else(|| "no reply".to_owned())
        };
        assert_eq!(
            ours,
            legacy,
            "{label}:\n  bridge: {}\n  legacy: {}",
            show(&ours),
            show(&legacy)
        );
        eprintln!("{version} {label}: identical, {}", show(&legacy));
        seen.push((label, legacy));
    }
    // The cases exercise what they are meant to (so equal-but-empty replies cannot pass silently).
    let text = |label: &str| -> String {
        seen.iter()
            .find(|(l, _)| *l == label)
            .and_then(|(_, b)| b.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    assert!(text("garbage time").contains(r#"RangeError"#));
    assert!(text("garbage time").contains(r#"{"message":"Invalid time value"}"#));
    assert!(text("bad time and amount 0").contains("RangeError"));
    assert!(seen
        .iter()
        .any(|(l, b)| l.starts_with("bad time, truncated") && b.is_none()));
    assert!(text("info (full)").contains(
        r#"{"currencyCode":"USD","currencyScale":9,"connectors":[],"prefix":"test.x."}"#
    ));
    assert!(text("limit").contains(r#""1000""#));
    assert!(text("over the limit")
        .contains("balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: "));
    assert!(text("same id, other amount").contains("DuplicateIdError"));
    assert!(text("one more unit").contains("NotAcceptedError"));
    assert_eq!(
        seen.iter()
            .find(|(l, _)| *l == "24:00 rolls over")
            .and_then(|(_, b)| b.as_ref())
            .map(|b| b[0]),
        Some(1)
    );
    node.shutdown().await;
    drop((to_js, js));

    // A limit of 10^21 or more: legacy's bignumber.js prints it in exponent notation.
    for max in [
        "1000000000000000000000",
        "12345678901234567890123",
        "999999999999999999999",
    ] {
        let SideBySide {
            js: _js,
            node,
            mut to_js,
            mut to_bridge,
            _dir,
        } = side_by_side(version, max, false).await?;
        let limit = message_frame(
            0x201,
            vec![btp::packet::ProtocolDataEntry::octets(
                btp::packet::ProtocolName::from_static("limit"),
                &[0u8][..],
            )],
        );
        let legacy = to_js
            .send(&limit)
            .await?
            .ok_or("no limit reply from legacy")?;
        let ours = to_bridge
            .send(&limit)
            .await?
            .ok_or("no limit reply from the bridge")?;
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&legacy),
            "limit {max}"
        );
        if max.len() > 21 {
            assert!(
                String::from_utf8_lossy(&legacy).contains("e+"),
                "limit {max}"
            );
        }
        node.shutdown().await;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------
// TLS (btp+wss) with the real plugin, both directions. Certificates are made at test time with the openssl CLI.

/// A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files in `dir`).
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &std::path::Path) -> R<TestPki> {
    let run = |args: &[&str]| -> R<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            return Err(
                format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=ilp-bridge test CA",
    ];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run(&ca_args)?;
    let mut csr_args = vec!["req", "-new", "-subj", "/CN=localhost"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&csr_args)?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ])?;
    Ok(TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// Legacy JS client → ilp-bridge wss listener, and ilp-bridge wss client → legacy JS wss listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_both_ways() -> TestResult {
    for_each_version(tls_for).await
}

async fn tls_for(version: &str) -> TestResult {
    let pki_dir = tempfile::tempdir()?;
    let pki = make_pki(pki_dir.path())?;
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();

    // 1. JS client (btp+wss, trusting the test CA) → bridge TLS listener.
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let tls_listener =
        json!({"port": port, "cert": path(&pki.cert), "key": path(&pki.key), "ca": path(&pki.ca)});
    let (node, tl) = start_single(
        listener_config(
            "alice",
            port,
            "tls-secret",
            "1000",
            "test.tls.",
            json!({ "listener": tls_listener }),
        ),
        dir.path(),
        node_options(),
    )
    .await?;
    tl.register_request_handler(Arc::new(Echo));
    let mut events = tl.subscribe();
    // Without the CA the JS client cannot connect: the listener really speaks TLS with that certificate.
    assert_js_client_never_connects(
        version,
        format!("btp+wss://:tls-secret@127.0.0.1:{port}"),
        "a client that does not trust the CA must not connect",
    )
    .await?;
    // Plain ws to the TLS port does not work either.
    assert_js_client_never_connects(
        version,
        format!("btp+ws://:tls-secret@127.0.0.1:{port}"),
        "plain ws must not connect",
    )
    .await?;

    let mut js = JsPeer::client(
        version,
        format!("btp+wss://:tls-secret@127.0.0.1:{port}"),
        &[("NODE_EXTRA_CA_CERTS", path(&pki.ca))],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    assert_eq!(
        js.ok("getInfo", json!({})).await?["prefix"],
        json!("test.tls.")
    );
    assert_eq!(js.ok("getLimit", json!({})).await?, json!("-1000"));
    let f = [5u8; 32];
    let ilp = js.payment("test.tls.server.bob", 25).await?;
    let id = js.send_transfer(&f, 25, 10_000, &ilp).await?;
    fulfill_at_bridge(&tl, &mut events, &id, f).await?;
    js.event_for("outgoing_fulfill", &id).await?;
    assert_eq!(tl.local_balance(), LedgerBalance(25));
    // Stateless JS client: its balance is the bridge's, negated.
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-25"));
    let r = js
        .ok(
            "sendRequest",
            json!({"message": {"custom": {"over": "tls"}}}),
        )
        .await?;
    assert_eq!(r["custom"], json!({"echo": {"over": "tls"}}));
    drop(js);
    node.shutdown().await;

    // 2. Bridge client (btp+wss, trusting the test CA) → JS TLS listener.
    let js_port = free_port()?;
    let mut js = JsPeer::server(
        version,
        js_port,
        "pw",
        "test.jstls.",
        "500",
        &[
            ("AUTO_FULFILL", "1".into()),
            ("TLS_CERT", path(&pki.cert)),
            ("TLS_KEY", path(&pki.key)),
            ("TLS_CA", path(&pki.ca)),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let options = NodeOptions {
        client_tls: Some(btp::transport::TlsClientConfig::with_extra_ca_file(
            &pki.ca,
        )?),
        ..node_options()
    };
    let dir = tempfile::tempdir()?;
    let (node, tl) = start_single(
        json!({"name": "js", "options": {
            "server": format!("btp+wss://:pw@127.0.0.1:{js_port}"), "maxBalance": "500", "store": true,
            "prefix": "test.jstls."}}),
        dir.path(),
        options,
    )
    .await?;
    wait_connected(&tl).await?;
    assert_eq!(tl.get_limit().await?, "-500");
    let mut events = tl.subscribe();
    let f = [6u8; 32];
    js.ok("preimage", json!({"fulfillment": b64u(&f)})).await?;
    let t = rust_transfer(&f, 12, 10_000, "test.jstls.server.bob");
    tl.send_transfer(t.clone()).await?;
    next_event(&mut events, "outgoing_fulfill").await?;
    assert_eq!(tl.local_balance(), LedgerBalance(-12));
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("12"));
    node.shutdown().await;

    // The same bridge client without the CA never connects.
    assert_bridge_never_connects(json!({"name": "js", "options": {
        "server": format!("btp+wss://:pw@127.0.0.1:{js_port}"), "maxBalance": "500", "store": true,
        "prefix": "test.jstls."}}))
    .await
}
