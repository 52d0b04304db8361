//! The real legacy JS plugin as a test peer: `JsPeer` runs tests/node/scripts/legacy_peer.js with one of the
//! installed legacy versions (tests/node/legacy-*/, installed by `.ci/setup`) and speaks its JSON lines. Shared by
//! the interop tests (tests/interop_legacy.rs) and the bridge-mode tests (tests/bridge_*.rs). Every node process
//! is killed by PID when its guard drops, also when the test fails.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use channel_modules::store::TransferId;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Mutex};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub(crate) type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The legacy plugin versions the tests run against.
pub(crate) const VERSIONS: &[&str] = &["1.3.5", "1.1.3"];
/// How long a test waits for a reply or an event of the JS side.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `node_modules` folder of legacy plugin `version`.
pub(crate) fn legacy_dir(version: &str) -> PathBuf {
    root().join(format!("tests/node/legacy-{version}/node_modules"))
}

/// Whether node and the legacy packages are installed; `Err` (fail) under CI when they are not.
pub(crate) fn available(version: &str) -> R<bool> {
    let dir = legacy_dir(version).join("ilp-plugin-payment-channel-framework");
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

/// Runs `run` for each installed legacy version (see [`available`]), naming the version in a failure.
pub(crate) async fn for_each_version<F, Fut>(run: F) -> TestResult
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    for version in VERSIONS {
        if !available(version)? {
            continue;
        }
        run(version)
            .await
            .map_err(|e| format!("legacy {version}: {e}"))?;
    }
    Ok(())
}

/// Kills exactly this node process, by PID (and through tokio as a fallback).
pub(crate) fn kill_by_pid(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    let _ = child.start_kill();
}

/// A running legacy plugin. Killed (by PID) on drop.
pub(crate) struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    replies: Mutex<mpsc::UnboundedReceiver<Value>>,
    events: Mutex<mpsc::UnboundedReceiver<Value>>,
    seen: Mutex<VecDeque<Value>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        kill_by_pid(&mut self.child);
    }
}

impl JsPeer {
    pub(crate) async fn spawn(version: &str, env: &[(&str, String)]) -> R<JsPeer> {
        let script = root().join("tests/node/scripts/legacy_peer.js");
        let mut cmd = Command::new("node");
        cmd.arg("--unhandled-rejections=warn")
            .arg("--no-deprecation")
            .arg(script)
            .env("LEGACY_DIR", legacy_dir(version))
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

    /// A legacy client dialing `url` (`MODE=client`), with `extra` settings for legacy_peer.js.
    pub(crate) async fn client(version: &str, url: String, extra: &[(&str, String)]) -> R<JsPeer> {
        let mut env = vec![("MODE", "client".to_owned()), ("SERVER_URL", url)];
        env.extend(extra.iter().cloned());
        JsPeer::spawn(version, &env).await
    }

    /// A stateful legacy server (`MODE=server`) on `port` with `secret`, `prefix` and `max_balance`, with `extra`
    /// settings for legacy_peer.js.
    pub(crate) async fn server(
        version: &str,
        port: u16,
        secret: &str,
        prefix: &str,
        max_balance: &str,
        extra: &[(&str, String)],
    ) -> R<JsPeer> {
        let mut env = vec![
            ("MODE", "server".to_owned()),
            ("PORT", port.to_string()),
            ("SECRET", secret.to_owned()),
            ("PREFIX", prefix.to_owned()),
            ("STATEFUL", "1".to_owned()),
            ("MAX_BALANCE", max_balance.to_owned()),
        ];
        env.extend(extra.iter().cloned());
        JsPeer::spawn(version, &env).await
    }

    /// Runs a command; `Ok(Ok(result))` or `Ok(Err(error))` as the JS call resolved or threw.
    pub(crate) async fn call(&mut self, cmd: &str, args: Value) -> R<Result<Value, Value>> {
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

    /// The legacy ILP Payment packet for `amount` to `account`, as the JS side encodes it.
    pub(crate) async fn payment(&mut self, account: &str, amount: u64) -> R<Value> {
        self.ok("payment", json!({"account": account, "amount": amount}))
            .await
    }

    /// Sends a transfer of `amount` carrying the ILP packet `ilp` (a JSON string), conditioned on `fulfillment`
    /// and expiring in `expires_in_ms`; its id.
    pub(crate) async fn send_transfer(
        &mut self,
        fulfillment: &[u8; 32],
        amount: u64,
        expires_in_ms: i64,
        ilp: &Value,
    ) -> R<String> {
        let (id, t) = js_transfer(
            fulfillment,
            amount,
            expires_in_ms,
            ilp.as_str().unwrap_or_default(),
        );
        self.ok("sendTransfer", t).await?;
        Ok(id)
    }

    pub(crate) async fn ok(&mut self, cmd: &str, args: Value) -> R<Value> {
        self.call(cmd, args)
            .await?
            .map_err(|e| format!("{cmd} failed: {e}").into())
    }

    /// Waits for the event `name` about transfer `id` (other events of that name are dropped).
    pub(crate) async fn event_for(&self, name: &str, id: &str) -> R<Value> {
        loop {
            let e = self.event(name).await?;
            if e["args"][0]["id"] == json!(id) {
                return Ok(e);
            }
            eprintln!("skipping {name} event for another transfer (waiting for {id}): {e}");
        }
    }

    /// Waits for the next event with any of `names` (events seen earlier and not consumed count too).
    pub(crate) async fn event_any(&self, names: &[&str]) -> R<Value> {
        {
            let mut seen = self.seen.lock().await;
            if let Some(pos) = seen
                .iter()
                .position(|e| names.iter().any(|n| e["event"] == json!(n)))
            {
                return seen.remove(pos).ok_or_else(|| "gone".into());
            }
        }
        let mut events = self.events.lock().await;
        loop {
            let v = tokio::time::timeout(WAIT, events.recv())
                .await
                .map_err(|_| format!("none of {names:?}"))?
                .ok_or("node exited")?;
            if names.iter().any(|n| v["event"] == json!(n)) {
                return Ok(v);
            }
            self.seen.lock().await.push_back(v);
        }
    }

    /// Takes every event named `name` received so far and not consumed, oldest first (others stay).
    pub(crate) async fn take_all(&self, name: &str) -> Vec<Value> {
        let mut events = self.events.lock().await;
        let mut seen = self.seen.lock().await;
        while let Ok(v) = events.try_recv() {
            seen.push_back(v);
        }
        let (taken, kept): (VecDeque<Value>, VecDeque<Value>) =
            seen.drain(..).partition(|e| e["event"] == json!(name));
        *seen = kept;
        taken.into_iter().collect()
    }

    /// Waits for the next event named `name` (events seen earlier and not consumed count too).
    pub(crate) async fn event(&self, name: &str) -> R<Value> {
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

pub(crate) fn free_port() -> R<u16> {
    // The legacy listener takes a port number (0 means 4195), so probe one.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn b64u(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn uuid_of(id: &TransferId) -> String {
    id.to_uuid_string()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn iso(ms: i64) -> String {
    ilp_bridge::peer::trustline::legacy_format::iso_time(ms)
}

pub(crate) fn js_transfer(
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
