//! Bridge mode against REAL peers on both sides: the legacy JS plugin (1.3.5 and 1.1.3) as P, and the JS
//! `ilp-connector` 23 with `ilp-plugin-btp` 1.5 (tests/node/connector, driven by
//! tests/node/scripts/modern_connector.js) as the modern connector M, with ilp-bridge between them over
//! BTP/2.0 both ways:
//! * the bridge dials the connector, which has it as a `child` (the bridge asks it for its address with IL-DCP;
//!   a static route brings P's prefix to it);
//! * the connector dials the bridge, which it has as a `peer` (routes go both ways with CCP).

mod bridge_common;
mod legacy_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bridge_common::{wait_until, Bridge};
use legacy_common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Mutex};

/// Payments each way per variant and legacy version.
const PAYMENTS: u64 = 25;

fn connector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/connector/node_modules")
}

/// Whether the connector's packages are installed; `Err` (fail) under CI when they are not.
fn connector_available() -> R<bool> {
    if connector_dir().join("ilp-connector").is_dir() {
        return Ok(true);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err("ilp-connector is not installed in tests/node/connector; run .ci/setup".into());
    }
    eprintln!("SKIPPED: ilp-connector not installed; run .ci/setup");
    Ok(false)
}

/// The running connector. Killed by PID on drop.
struct Connector {
    child: Child,
    stdin: ChildStdin,
    lines: Mutex<mpsc::UnboundedReceiver<Value>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Drop for Connector {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

impl Connector {
    /// Starts it; it is ready once [`Connector::ready`] returns (its `listen` waits for the bridge account).
    fn spawn(env: &[(&str, String)]) -> R<Connector> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/node/scripts/modern_connector.js");
        let mut cmd = Command::new("node");
        cmd.arg("--unhandled-rejections=warn")
            .arg("--no-deprecation")
            .arg(script)
            .env("CONNECTOR_DIR", connector_dir())
            .env("DEBUG", "")
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
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Ok(Connector {
            child,
            stdin,
            lines: Mutex::new(rx),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    async fn ready(&self) -> R<()> {
        let mut lines = self.lines.lock().await;
        loop {
            let v = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .map_err(|_| "the connector never got ready")?
                .ok_or("the connector exited")?;
            if v.get("ready").is_some() {
                return Ok(());
            }
        }
    }

    async fn ok(&mut self, cmd: &str, mut args: Value) -> R<Value> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        args["id"] = json!(id);
        args["cmd"] = json!(cmd);
        self.stdin.write_all(format!("{args}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let mut lines = self.lines.lock().await;
        loop {
            let v = tokio::time::timeout(WAIT, lines.recv())
                .await
                .map_err(|_| format!("no reply to {cmd}"))?
                .ok_or("the connector exited")?;
            if v["id"] == json!(id) {
                return if v["ok"] == json!(true) {
                    Ok(v["result"].clone())
                } else {
                    Err(format!("{cmd} failed: {}", v["error"]).into())
                };
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// The bridge dials; the connector has it as a child.
    BridgeDialsChild,
    /// The connector dials; it has the bridge as a peer.
    ConnectorDialsPeer,
}

#[tokio::test]
async fn a_legacy_peer_and_ilp_connector_pay_each_other_through_the_bridge_dialing_either_way(
) -> TestResult {
    if !connector_available()? {
        return Ok(());
    }
    for variant in [Variant::BridgeDialsChild, Variant::ConnectorDialsPeer] {
        for_each_version(|version| async move { run(version, variant).await }).await?;
    }
    Ok(())
}

async fn run(version: &str, variant: Variant) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (p_port, bridge_port, alice_port) = (free_port()?, free_port()?, free_port()?);
    let mut p = JsPeer::server(
        version,
        p_port,
        "sp",
        "test.kit.",
        "100000000000000",
        &[("AUTO_FULFILL", "1".to_owned())],
    )
    .await?;
    p.ok("connect", json!({})).await?;

    let legacy = format!(
        r#"
        [[peer]]
        name = "kit"
        options = {{ server = "btp+ws://:sp@127.0.0.1:{p_port}", maxBalance = "100000000000000", prefix = "test.kit.", store = true, info = {{ currencyCode = "USD", currencyScale = 9 }} }}
        [peer.modern]
        asset_scale = 6
        "#
    );
    let (env, modern) = match variant {
        Variant::BridgeDialsChild => (
            vec![
                ("BRIDGE_PORT", bridge_port.to_string()),
                ("BRIDGE_SECRET", "bsecret".to_owned()),
                ("BRIDGE_RELATION", "child".to_owned()),
                ("ROUTES", json!([{"targetPrefix": "test.kit", "peerId": "bridge"}]).to_string()),
            ],
            format!(
                "link = \"btp-client\"\nurl = \"btp+ws://:bsecret@127.0.0.1:{bridge_port}\"\nrelation = \"parent\"\n"
            ),
        ),
        Variant::ConnectorDialsPeer => (
            vec![
                ("BRIDGE_URL", format!("btp+ws://:bsecret@127.0.0.1:{bridge_port}")),
                ("BRIDGE_RELATION", "peer".to_owned()),
            ],
            format!(
                "link = \"btp-server\"\nlisten = \"127.0.0.1:{bridge_port}\"\nincoming_token = \"bsecret\"\nrelation = \"peer\"\nilp_address = \"test.kit.bridge\"\n"
            ),
        ),
    };
    let mut env = env;
    env.push(("ALICE_PORT", alice_port.to_string()));
    let mut m = Connector::spawn(&env)?;
    let b = Bridge::start(&format!("{legacy}{modern}"), dir.path()).await?;
    let (node, bridge) = (&b.node, &b.bridge);
    m.ready().await?;
    let kit = node.trustline("kit").ok_or("kit")?.clone();
    let pair = bridge.pair("kit").ok_or("pair")?.clone();
    wait_until("the bridge is connected to P", || kit.is_connected()).await?;
    if variant == Variant::BridgeDialsChild {
        // IL-DCP: the connector gave the bridge its address as its child.
        wait_until("the bridge learned its address", || {
            pair.settings().modern_address.as_str() == "test.conn.bridge"
        })
        .await?;
    }

    // M → P: alice pays an address on P's ledger; retried while routes settle (CCP runs every second here).
    let mut m_paid = 0u64;
    for i in 0..PAYMENTS {
        let f = [0x40 + (i as u8 % 100); 32];
        p.ok("preimage", json!({"fulfillment": b64u(&f)})).await?;
        let amount = 1 + i * 37;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = m
                .ok("pay", json!({"destination": "test.kit.alice", "amount": amount, "fulfillment": hex(&f)}))
                .await?;
            if r["type"] == json!("fulfill") {
                assert_eq!(r["fulfillment"], json!(hex(&f)));
                break;
            }
            // Only the first payments may meet a route not learned yet.
            if i > 0 || r["code"] != json!("F02") || tokio::time::Instant::now() > deadline {
                return Err(format!("payment {i} to P: {r}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        m_paid += amount;
    }

    // P → M: P pays alice on the connector.
    let mut p_paid = 0u64;
    for i in 0..PAYMENTS {
        let f = [0x80 + (i as u8 % 100); 32];
        m.ok("preimage", json!({"fulfillment": hex(&f)})).await?;
        let amount = 1_000 * (1 + i * 11);
        let ilp = p.payment("test.conn.alice", amount).await?;
        let id = p.send_transfer(&f, amount, 20_000, &ilp).await?;
        let e = p
            .event_any(&["outgoing_fulfill", "outgoing_reject"])
            .await?;
        assert_eq!(e["event"], json!("outgoing_fulfill"), "payment {i}: {e}");
        assert_eq!(e["args"][0]["id"], json!(id));
        p_paid += amount;
    }
    // A reject from alice (no preimage): F06 comes back to P, forwarded by the bridge.
    let ilp = p.payment("test.conn.alice", 5_000).await?;
    let id = p.send_transfer(&[0xee; 32], 5_000, 20_000, &ilp).await?;
    let e = p.event_for("outgoing_reject", &id).await?;
    assert_eq!(e["args"][1]["code"], json!("F06"), "{e}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let p_balance: i128 = p
        .ok("getBalance", json!({}))
        .await?
        .as_str()
        .ok_or("balance")?
        .parse()?;
    assert_eq!(p_balance, i128::from(m_paid) * 1_000 - i128::from(p_paid));
    assert_eq!(kit.local_balance().0, -p_balance);
    let books = pair.books();
    assert_eq!(books.modern.incoming_fulfilled.0, u128::from(m_paid));
    assert_eq!(
        books.modern.outgoing_fulfilled.0,
        u128::from(p_paid / 1_000)
    );
    let _ = m.ok("exit", json!({})).await;
    b.stop().await;
    Ok(())
}
