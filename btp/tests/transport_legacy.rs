//! The auth handshake and request/response against the REAL legacy JS RPC layer (node 20 and the legacy 1.3.5
//! packages in tests/node/legacy-1.3.5, installed by `.ci/setup`), driven by
//! tests/node/scripts/transport_legacy_rpc.js:
//! * a legacy client authenticates against our listener and gets its Message answered;
//! * our dialer authenticates against a legacy listener, and requests flow both ways.
//!
//! Without node or the packages the tests are skipped with a message, except under `CI=true`, where they fail.
//! Every node process is killed by PID when the test ends.

mod transport_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use btp::transport::{BtpEndpoint, BtpUrl, ClientOptions, EndpointConfig, PeerKey, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use transport_support::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn legacy_dir() -> PathBuf {
    repo_root().join("tests/node/legacy-1.3.5/node_modules")
}

/// Whether node and the legacy packages are there; `Err` under CI when they are not.
fn available() -> Result<bool, String> {
    let plugin = legacy_dir().join("ilp-plugin-payment-channel-framework");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if plugin.is_dir() && node {
        return Ok(true);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err(format!(
            "node or {} missing; run .ci/setup",
            plugin.display()
        ));
    }
    eprintln!("SKIPPED: node or the legacy 1.3.5 packages are not installed; run .ci/setup");
    Ok(false)
}

/// A node process, killed on drop.
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    fn spawn(envs: &[(&str, String)]) -> Node {
        let mut cmd = Command::new("node");
        cmd.arg("--unhandled-rejections=warn")
            .arg(repo_root().join("tests/node/scripts/transport_legacy_rpc.js"))
            .env("LEGACY_DIR", legacy_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn node");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        Node {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next JSON line with `key`, skipping others; panics after 20 s or when node exits.
    async fn expect(&mut self, key: &str) -> serde_like::Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .expect("node output within 20 s")
                .expect("read node output")
                .expect("node exited");
            let value = serde_like::parse(&line);
            if let Some(err) = value.get("error") {
                panic!("node reported an error: {err}");
            }
            if value.get(key).is_some() {
                return value;
            }
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        stdin.flush().await.expect("flush");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Just enough JSON for the script's flat one-line objects of strings, numbers and booleans.
mod serde_like {
    use std::collections::HashMap;

    pub(crate) struct Value(HashMap<String, String>);

    impl Value {
        pub(crate) fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
    }

    pub(crate) fn parse(line: &str) -> Value {
        let inner = line.trim().trim_start_matches('{').trim_end_matches('}');
        let mut map = HashMap::new();
        for pair in inner.split(',') {
            if let Some((k, v)) = pair.split_once(':') {
                map.insert(
                    k.trim().trim_matches('"').to_owned(),
                    v.trim().trim_matches('"').to_owned(),
                );
            }
        }
        Value(map)
    }
}

#[tokio::test]
async fn legacy_client_authenticates_against_our_listener() -> TestResult {
    if !available()? {
        return Ok(());
    }
    let (server, handler) = legacy_server().await;
    // The secret is percent-encoded in the URL, as legacy users write it.
    let url = format!(
        "btp+ws://:s%40cret@127.0.0.1:{}/anything",
        server.addr.port()
    );
    let mut node = Node::spawn(&[("MODE", "client".into()), ("SERVER_URL", url)]);
    let reply = node.expect("reply").await;
    // Our Recorder echoes the request's entries: `test`, type 0, "legacy says hi".
    let expected = format!("{}00{}", hex::encode("test"), hex::encode("legacy says hi"));
    assert_eq!(reply.get("reply"), Some(expected.as_str()));
    assert_eq!(handler.count(), 1);
    let (_, packet) = handler.seen.lock().expect("lock")[0].clone();
    assert_eq!(
        packet.protocol_data().data("test").map(|d| d.to_vec()),
        Some(b"legacy says hi".to_vec())
    );
    Ok(())
}

#[tokio::test]
async fn our_dialer_authenticates_against_a_legacy_listener() -> TestResult {
    if !available()? {
        return Ok(());
    }
    let mut node = Node::spawn(&[
        ("MODE", "server".into()),
        ("PORT", "0".into()),
        ("SECRET", SECRET.into()),
    ]);
    let ready = node.expect("ready").await;
    let port: u16 = ready.get("port").ok_or("no port")?.parse()?;
    let url = BtpUrl::parse(&format!("btp+ws://:s%40cret@127.0.0.1:{port}"))?;
    let our_handler = Recorder::new();
    let session = BtpEndpoint::new(EndpointConfig::default()).connect(
        PeerKey::new("legacy"),
        &url,
        ClientOptions::default(),
        our_handler.clone(),
    );
    // Our request: the legacy listener answers with an `echo` entry.
    let reply = session
        .request(message(b"bridge says hi"), Duration::from_secs(20))
        .await?;
    let Reply::Response(pd) = reply else {
        panic!("expected a Response, got {reply:?}");
    };
    assert_eq!(
        pd.data("echo").map(|d| d.to_vec()),
        Some(b"bridge says hi".to_vec())
    );
    node.expect("authenticated").await;

    // The legacy side's request reaches our handler and our reply reaches it.
    node.send_line(&format!("send {}", hex::encode("from legacy")))
        .await;
    let sent = node.expect("sent").await;
    let expected = format!("{}00{}", hex::encode("test"), hex::encode("from legacy"));
    assert_eq!(sent.get("sent"), Some(expected.as_str()));
    assert_eq!(our_handler.count(), 1);
    session.close();
    Ok(())
}
