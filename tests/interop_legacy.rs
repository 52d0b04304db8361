//! Interop against the REAL legacy JS plugin (`ilp-plugin-payment-channel-framework` 1.3.5 and 1.1.3, npm
//! packages in tests/node/legacy-*/, installed by `.ci/setup`), driven by tests/node/scripts/legacy_peer.js.
//!
//! Each test runs for both versions. Node and the packages must be present; when they are missing the test
//! fails if `CI=true` and is skipped (with a message) otherwise. Every node process is killed by PID when its
//! guard drops, also when the test fails.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use channel_modules::store::{Transfer, TransferId, TransferState};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{
    forward_id, IncomingRequestHandler, NodeOptions, PeerError, PeerEvent, PeerMessage, PeerNode,
    Trustline,
};
use ilp_bridge::store::Db;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, mpsc, Mutex};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const VERSIONS: &[&str] = &["1.3.5", "1.1.3"];
const WAIT: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether node and the legacy packages are installed; `Err` (fail) under CI when they are not.
fn available(version: &str) -> R<bool> {
    let dir = root().join(format!(
        "tests/node/legacy-{version}/node_modules/ilp-plugin-payment-channel-framework"
    ));
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if dir.is_dir() && node_ok {
        return Ok(true);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err(format!(
            "legacy plugin {version} or node missing ({}); run .ci/setup",
            dir.display()
        )
        .into());
    }
    eprintln!("SKIPPED: legacy plugin {version} or node not installed; run .ci/setup");
    Ok(false)
}

/// A running legacy plugin. Killed (by PID) on drop.
struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    replies: Mutex<mpsc::UnboundedReceiver<Value>>,
    events: Mutex<mpsc::UnboundedReceiver<Value>>,
    seen: Mutex<VecDeque<Value>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // Kill exactly this process, by PID.
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

impl JsPeer {
    async fn spawn(version: &str, env: &[(&str, String)]) -> R<JsPeer> {
        let script = root().join("tests/node/scripts/legacy_peer.js");
        let mut cmd = Command::new("node");
        cmd.arg("--unhandled-rejections=warn")
            .arg("--no-deprecation")
            .arg(script)
            .env(
                "LEGACY_DIR",
                root().join(format!("tests/node/legacy-{version}/node_modules")),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = event_tx.send(json!({"event": "ready"}));
                } else if v.get("event").is_some() {
                    let _ = event_tx.send(v);
                } else {
                    let _ = reply_tx.send(v);
                }
            }
        });
        let peer = JsPeer {
            child,
            stdin,
            replies: Mutex::new(reply_rx),
            events: Mutex::new(event_rx),
            seen: Mutex::new(VecDeque::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        };
        peer.event("ready").await?;
        Ok(peer)
    }

    /// Runs a command; `Ok(Ok(result))` or `Ok(Err(error))` as the JS call resolved or threw.
    async fn call(&mut self, cmd: &str, args: Value) -> R<Result<Value, Value>> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut msg = args;
        msg["id"] = json!(id);
        msg["cmd"] = json!(cmd);
        self.stdin.write_all(format!("{msg}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let mut replies = self.replies.lock().await;
        loop {
            let v = tokio::time::timeout(WAIT, replies.recv())
                .await
                .map_err(|_| format!("no reply to {cmd}"))?
                .ok_or("node exited")?;
            if v["id"] == json!(id) {
                return Ok(if v["ok"] == json!(true) {
                    Ok(v["result"].clone())
                } else {
                    Err(v["error"].clone())
                });
            }
        }
    }

    async fn ok(&mut self, cmd: &str, args: Value) -> R<Value> {
        self.call(cmd, args)
            .await?
            .map_err(|e| format!("{cmd} failed: {e}").into())
    }

    /// Waits for the event `name` about transfer `id` (other events of that name are dropped).
    async fn event_for(&self, name: &str, id: &str) -> R<Value> {
        loop {
            let e = self.event(name).await?;
            if e["args"][0]["id"] == json!(id) {
                return Ok(e);
            }
            eprintln!("skipping {name} event for another transfer (waiting for {id}): {e}");
        }
    }

    /// Waits for the next event named `name` (events seen earlier and not consumed count too).
    async fn event(&self, name: &str) -> R<Value> {
        {
            let mut seen = self.seen.lock().await;
            if let Some(pos) = seen.iter().position(|e| e["event"] == json!(name)) {
                return seen.remove(pos).ok_or_else(|| "gone".into());
            }
        }
        let mut events = self.events.lock().await;
        loop {
            let v = tokio::time::timeout(WAIT, events.recv())
                .await
                .map_err(|_| format!("no {name} event"))?
                .ok_or("node exited")?;
            if v["event"] == json!(name) {
                return Ok(v);
            }
            self.seen.lock().await.push_back(v);
        }
    }
}

fn free_port() -> R<u16> {
    // The legacy listener takes a port number (0 means 4195), so probe one.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn b64u(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn uuid_of(id: &TransferId) -> String {
    id.to_uuid_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn iso(ms: i64) -> String {
    ilp_bridge::peer::trustline::iso_time(ms)
}

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
        amount,
        execution_condition: Sha256::digest(fulfillment).into(),
        expires_at_ms: now_ms() + expires_in_ms,
        ilp: payment(dest, amount),
        custom: None,
    }
}

fn js_transfer(
    fulfillment: &[u8; 32],
    amount: u64,
    expires_in_ms: i64,
    ilp: &str,
) -> (String, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let cond = b64u(&Sha256::digest(fulfillment));
    (
        id.clone(),
        json!({"transfer": {"id": id, "amount": amount.to_string(), "executionCondition": cond,
            "expiresAt": iso(now_ms() + expires_in_ms), "ilp": ilp}}),
    )
}

async fn next_event(rx: &mut broadcast::Receiver<PeerEvent>, name: &str) -> R<PeerEvent> {
    loop {
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .map_err(|_| format!("no {name} event"))??;
        if e.name() == name {
            return Ok(e);
        }
    }
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
            return Err(PeerError::Handler("handler failed".to_owned()));
        }
        Ok(PeerMessage {
            ilp: None,
            custom: Some(json!({"echo": request.custom})),
        })
    }
}

fn node_options() -> NodeOptions {
    NodeOptions {
        bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ..NodeOptions::default()
    }
}

async fn start_bridge(configs: Vec<Value>, db_dir: &std::path::Path) -> R<PeerNode> {
    let configs = configs
        .into_iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or("peer").to_owned();
            PeerConfig::from_legacy_json(&name, &c["options"])
        })
        .collect::<Result<Vec<_>, _>>()?;
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
    Ok(PeerNode::start(configs, db, node_options()).await?)
}

const CLAIM_SECRET: &str = "shared-claim-secret";

/// Legacy JS client → ilp-bridge server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_to_bridge_server() -> TestResult {
    for version in VERSIONS {
        if !available(version)? {
            continue;
        }
        js_client_to_bridge_server_for(version)
            .await
            .map_err(|e| format!("legacy {version}: {e}"))?;
    }
    Ok(())
}

async fn js_client_to_bridge_server_for(version: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let node = start_bridge(
        vec![json!({"name": "alice", "options": {
            "listener": {"port": port}, "incomingSecret": "s3cret", "maxBalance": "1000",
            "prefix": "test.alice.", "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
            "store": true, "module": "claim-test", "secret": CLAIM_SECRET, "maxUnsecured": "1000"}})],
        dir.path(),
    )
    .await?;
    let tl = node.trustline("alice").ok_or("no trustline")?.clone();
    tl.register_request_handler(Arc::new(Echo));
    let mut events = tl.subscribe();

    // Wrong secret: the legacy client never authenticates.
    let mut bad = JsPeer::spawn(
        version,
        &[
            ("MODE", "client".into()),
            ("SERVER_URL", format!("btp+ws://:wrong@127.0.0.1:{port}")),
        ],
    )
    .await?;
    let r = tokio::time::timeout(Duration::from_secs(3), bad.call("connect", json!({}))).await;
    assert!(
        !matches!(r, Ok(Ok(Ok(_)))),
        "connect with a wrong secret must not succeed: {r:?}"
    );
    drop(bad);

    // Right secret, stateful client with the JS claim module.
    let mut js = JsPeer::spawn(
        version,
        &[
            ("MODE", "client".into()),
            ("SERVER_URL", format!("btp+ws://:s3cret@127.0.0.1:{port}")),
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
    let ilp = js
        .ok(
            "payment",
            json!({"account": "test.alice.server.bob", "amount": 10}),
        )
        .await?;
    let (id, t) = js_transfer(&f, 10, 10_000, ilp.as_str().unwrap_or_default());
    js.ok("sendTransfer", t).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut events, "incoming_prepare").await? else {
        return Err("unexpected event".into());
    };
    assert_eq!(uuid_of(&got.id), id);
    tl.fulfill_condition(got.id, f, None).await?;
    js.event("outgoing_fulfill").await?;
    let claim = js.event("outgoing_claim").await?;
    assert_eq!(claim["claim"]["amount"], json!("10"));
    assert_eq!(tl.local_balance(), 10);
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
    assert_eq!(tl.local_balance(), 6);
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-6"));

    // Rejects both ways.
    let f3 = [3u8; 32];
    let (id3, t3) = js_transfer(&f3, 5, 10_000, ilp.as_str().unwrap_or_default());
    js.ok("sendTransfer", t3).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut events, "incoming_prepare").await? else {
        return Err("unexpected event".into());
    };
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
    assert_eq!(tl.local_balance(), 6);

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
    let (id6, t6) = js_transfer(&[6u8; 32], 7, 1500, ilp.as_str().unwrap_or_default());
    js.ok("sendTransfer", t6).await?;
    let t7 = rust_transfer(&[7u8; 32], 7, 1500, "test.alice.client.carl");
    tl.send_transfer(t7.clone()).await?;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let id6: TransferId = id6.parse()?;
    for id in [id6, t7.id] {
        let rec = tl.log().get(&id).await?.ok_or("missing")?;
        assert!(
            matches!(rec.state, TransferState::Cancelled { .. }),
            "{rec:?}"
        );
    }
    assert_eq!(tl.local_balance(), 6);
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("-6"));
    assert_eq!(
        tl.log().sums().incoming_fulfilled_and_prepared,
        tl.log().sums().incoming_fulfilled
    );

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
    for version in VERSIONS {
        if !available(version)? {
            continue;
        }
        bridge_client_to_js_server_for(version)
            .await
            .map_err(|e| format!("legacy {version}: {e}"))?;
    }
    Ok(())
}

async fn bridge_client_to_js_server_for(version: &str) -> TestResult {
    let port = free_port()?;
    let mut js = JsPeer::spawn(
        version,
        &[
            ("MODE", "server".into()),
            ("PORT", port.to_string()),
            ("SECRET", "pw".into()),
            ("PREFIX", "test.js.".into()),
            ("STATEFUL", "1".into()),
            ("MAX_BALANCE", "500".into()),
            ("CLAIM_SECRET", CLAIM_SECRET.into()),
            ("AUTO_FULFILL", "1".into()),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Wrong secret: never connects.
    let dir = tempfile::tempdir()?;
    let bad = start_bridge(
        vec![json!({"name": "js", "options": {"server": format!("btp+ws://:nope@127.0.0.1:{port}"), "store": false}})],
        dir.path(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!bad.trustline("js").ok_or("no tl")?.is_connected());
    bad.shutdown().await;

    let dir = tempfile::tempdir()?;
    let node = start_bridge(
        vec![json!({"name": "js", "options": {
            "server": format!("btp+ws://:pw@127.0.0.1:{port}"), "maxBalance": "500", "store": true,
            "prefix": "test.js.", "module": "claim-test", "secret": CLAIM_SECRET, "maxUnsecured": "1000"}})],
        dir.path(),
    )
    .await?;
    let tl = node.trustline("js").ok_or("no trustline")?.clone();
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
    assert_eq!(tl.local_balance(), -10);
    assert_eq!(tl.get_peer_balance().await?, "-10");
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("10"));

    // JS → bridge, fulfilled by the bridge; claim from JS to Rust.
    let f2 = [2u8; 32];
    let ilp = js
        .ok(
            "payment",
            json!({"account": "test.js.client.x", "amount": 3}),
        )
        .await?;
    let (_, t2) = js_transfer(&f2, 3, 10_000, ilp.as_str().unwrap_or_default());
    js.ok("sendTransfer", t2).await?;
    let PeerEvent::IncomingPrepare(got) = next_event(&mut events, "incoming_prepare").await? else {
        return Err("unexpected event".into());
    };
    tl.fulfill_condition(got.id, f2, None).await?;
    let claim = js.event("outgoing_claim").await?;
    assert_eq!(claim["claim"]["amount"], json!("3"));
    assert_eq!(tl.local_balance(), -7);

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
    let rec = tl.log().get(&t4.id).await?.ok_or("missing")?;
    assert!(matches!(rec.state, TransferState::Cancelled { .. }));
    assert_eq!(tl.local_balance(), -7);
    assert_eq!(js.ok("getBalance", json!({})).await?, json!("7"));

    node.shutdown().await;
    Ok(())
}

/// Legacy JS peer → ilp-bridge → legacy JS peer, and a restart of the bridge mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_to_js_through_the_bridge_with_restart() -> TestResult {
    for version in VERSIONS {
        if !available(version)? {
            continue;
        }
        routed_for(version)
            .await
            .map_err(|e| format!("legacy {version}: {e}"))?;
    }
    Ok(())
}

async fn routed_for(version: &str) -> TestResult {
    // Both legacy peers are servers and the bridge dials them: a legacy *client* never redials after the
    // bridge restarts (and 1.1.3's disconnect() keeps the dead socket), while a legacy server accepts the
    // bridge's new socket.
    let dir = tempfile::tempdir()?;
    let (pa, pb) = (free_port()?, free_port()?);
    let server_env = |port: u16, secret: &str, prefix: &str| -> Vec<(&'static str, String)> {
        vec![
            ("MODE", "server".to_owned()),
            ("PORT", port.to_string()),
            ("SECRET", secret.to_owned()),
            ("PREFIX", prefix.to_owned()),
            ("STATEFUL", "1".to_owned()),
            ("MAX_BALANCE", "1000".to_owned()),
            ("AUTO_FULFILL", "1".to_owned()),
        ]
    };
    let mut a = JsPeer::spawn(version, &server_env(pa, "sa", "test.a.")).await?;
    let mut b = JsPeer::spawn(version, &server_env(pb, "sb", "test.b.")).await?;
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

    // Payment 1: A → bridge → B, B fulfills automatically.
    let f1 = [1u8; 32];
    b.ok("preimage", json!({"fulfillment": b64u(&f1)})).await?;
    let ilp = a
        .ok(
            "payment",
            json!({"account": "test.b.server.bob", "amount": 10}),
        )
        .await?;
    let (_, t1) = js_transfer(&f1, 10, 20_000, ilp.as_str().unwrap_or_default());
    a.ok("sendTransfer", t1).await?;
    a.event("outgoing_fulfill").await?;
    assert_eq!(a.ok("getBalance", json!({})).await?, json!("-10"));
    assert_eq!(b.ok("getBalance", json!({})).await?, json!("10"));
    assert_eq!(bridge_a.local_balance(), 10);
    assert_eq!(bridge_b.local_balance(), -10);

    // Payment 2: prepared at B but not fulfilled before the bridge restarts.
    let f2 = [2u8; 32];
    // The Payment asks for exactly the transfer amount (the bridge refuses to deliver less).
    let ilp2 = a
        .ok(
            "payment",
            json!({"account": "test.b.server.bob", "amount": 7}),
        )
        .await?;
    let (id2, t2) = js_transfer(&f2, 7, 30_000, ilp2.as_str().unwrap_or_default());
    a.ok("sendTransfer", t2).await?;
    let b_id = uuid_of(&forward_id("a", &id2.parse()?));
    b.event_for("incoming_prepare", &b_id).await?;
    // Payment 3: prepared, never fulfilled, with an expiry that passes while the bridge is down.
    let ilp3 = a
        .ok(
            "payment",
            json!({"account": "test.b.server.bob", "amount": 5}),
        )
        .await?;
    let (id3, t3) = js_transfer(&[3u8; 32], 5, 2500, ilp3.as_str().unwrap_or_default());
    a.ok("sendTransfer", t3).await?;
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
    assert_eq!(bridge_a.local_balance(), 17);
    assert_eq!(bridge_b.local_balance(), -17);
    // Nothing is left prepared on the bridge; payment 3 expired on both of its legs.
    assert!(bridge_a.log().prepared().await?.is_empty());
    assert!(bridge_b.log().prepared().await?.is_empty());
    node.shutdown().await;
    Ok(())
}
