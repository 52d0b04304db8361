//! btp+wss as operators deploy it: `ilp-bridge run --config` (the TOML path, `[[peer]] ca_bundle` included) with
//! the real legacy JS plugin on both sides, over a PKI made in the test with rcgen (a CA, a second CA nobody
//! should trust, a good server certificate, an expired one and one for another host name).
//!
//! One node runs every peer. Legacy JS client `A` dials the node's good wss listener and pays through it to the
//! legacy JS wss server `B`, which the node dials trusting the CA from `ca_bundle`: the transfer is fulfilled on
//! both hops. Then every broken case is refused with a clear error and no transfer crosses: the node dialing a
//! server whose certificate is signed by a CA it does not trust, has expired or names another host (the node's
//! `dial failed` log line says which), and the JS client dialing the node's listeners that present an expired
//! certificate, a certificate for another host, or a good one it does not trust (its connect error says which).

mod legacy_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use legacy_common::{b64u, for_each_version, free_port, JsPeer, TestResult, R, WAIT};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A CA (certificate and key) made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn make_ca(name: &str) -> R<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert, key })
}

/// PEM files of a server certificate signed by a CA: `cert`, `key`, and the CA's certificate `ca` (the legacy
/// listener requires all three).
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// Writes a server certificate for `names` signed by `ca` into `dir` as `<stem>.pem` and `<stem>.key`; `expired`
/// makes one whose validity ended in 2021.
fn issue(dir: &Path, stem: &str, ca: &Ca, names: &[&str], expired: bool) -> R<ServerFiles> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    let files = ServerFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        ca: dir.join(format!("{stem}-ca.pem")),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    std::fs::write(&files.ca, ca.cert.pem())?;
    Ok(files)
}

/// The test PKI: the trusted CA's certificate file, the untrusted CA's, and three server certificates.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    good: ServerFiles,
    expired: ServerFiles,
    wrong_host: ServerFiles,
}

fn make_pki() -> R<Pki> {
    let dir = tempfile::tempdir()?;
    let ca = make_ca("ilp-bridge test CA")?;
    let other = make_ca("a CA nobody trusts")?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem())?;
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem())?;
    let names = ["localhost", "127.0.0.1"];
    Ok(Pki {
        good: issue(dir.path(), "good", &ca, &names, false)?,
        expired: issue(dir.path(), "expired", &ca, &names, true)?,
        wrong_host: issue(dir.path(), "wrong-host", &ca, &["wrong.example"], false)?,
        ca: ca_path,
        other_ca,
        _dir: dir,
    })
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `ilp-bridge run` with its JSON log lines collected. Killed by PID on drop.
struct Node {
    child: Child,
    log: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        legacy_common::kill_by_pid(&mut self.child);
    }
}

impl Node {
    fn start(config: &Path) -> R<Node> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
            .args(["run", "--config", &path(config)])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        for out in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(stderr),
        ] {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    if let Ok(mut log) = log.lock() {
                        log.push(v);
                    }
                }
            });
        }
        Ok(Node { child, log })
    }

    /// The first log line `pick` accepts, waiting up to [`WAIT`] for it.
    async fn wait_log(&self, what: &str, pick: impl Fn(&Value) -> bool) -> R<Value> {
        let started = Instant::now();
        loop {
            if let Some(v) = self
                .log
                .lock()
                .map_err(|_| "log lock poisoned")?
                .iter()
                .find(|v| pick(v))
            {
                return Ok(v.clone());
            }
            if started.elapsed() > WAIT {
                let all = self.log.lock().map_err(|_| "log lock poisoned")?.clone();
                return Err(format!("no log line {what}; log: {all:#?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `err` of the node's first `dial failed` line for `peer`.
    async fn dial_error(&self, peer: &str) -> R<String> {
        let line = self
            .wait_log(&format!("dial failed for {peer}"), |v| {
                v["fields"]["message"] == json!("dial failed") && v["span"]["peer"] == json!(peer)
            })
            .await?;
        Ok(line["fields"]["err"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

async fn wait_listening(port: u16) -> TestResult {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > WAIT {
            return Err(format!("nothing listens on {port}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A stateful legacy wss server with prefix `prefix` presenting `files`, fulfilling what it is given preimages
/// for.
async fn js_server(version: &str, port: u16, prefix: &str, files: &ServerFiles) -> R<JsPeer> {
    let mut js = JsPeer::server(
        version,
        port,
        "b-secret",
        prefix,
        "1000000",
        &[
            ("AUTO_FULFILL", "1".into()),
            ("TLS_CERT", path(&files.cert)),
            ("TLS_KEY", path(&files.key)),
            ("TLS_CA", path(&files.ca)),
        ],
    )
    .await?;
    js.ok("connect", json!({})).await?;
    Ok(js)
}

/// A `[[peer]]` the node listens for on `port` with TLS `files`.
fn listener_peer(name: &str, port: u16, files: &ServerFiles) -> String {
    let options = json!({
        "listener": {"port": port, "cert": path(&files.cert), "key": path(&files.key), "ca": path(&files.ca)},
        "incomingSecret": "a-secret", "maxBalance": "1000000", "prefix": format!("test.{name}."),
        "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []}, "store": true});
    format!("[[peer]]\nname = \"{name}\"\noptions_json = '{options}'\n\n")
}

/// A `[[peer]]` the node dials at `btp+wss://…@localhost:<port>` (prefix `test.<name>.`), trusting `ca_bundle`.
fn dialing_peer(name: &str, port: u16, ca_bundle: &Path) -> String {
    let options = json!({"server": format!("btp+wss://:b-secret@localhost:{port}"),
        "maxBalance": "1000000", "store": true, "prefix": format!("test.{name}.")});
    format!(
        "[[peer]]\nname = \"{name}\"\noptions_json = '{options}'\nca_bundle = {:?}\n\n",
        path(ca_bundle)
    )
}

/// Sends `amount` from `from` to `to_account` through the node; true when fulfilled, false when rejected or
/// cancelled.
async fn pay(from: &mut JsPeer, to: &mut JsPeer, to_account: &str, seed: u8) -> R<bool> {
    let f = [seed; 32];
    to.ok("preimage", json!({"fulfillment": b64u(&f)})).await?;
    let ilp = from.payment(to_account, 10).await?;
    let id = from.send_transfer(&f, 10, 4_000, &ilp).await?;
    let e = from
        .event_any(&["outgoing_fulfill", "outgoing_reject", "outgoing_cancel"])
        .await?;
    assert_eq!(e["args"][0]["id"], json!(id), "{e}");
    Ok(e["event"] == json!("outgoing_fulfill"))
}

/// Waits (up to [`WAIT`]) for `js`'s balance to be `expected`. A stateless legacy client asks the node, which
/// applies a Fulfill when the client's answer to it arrives: a `getBalance` sent as soon as the client has seen
/// the Fulfill may reach the node first.
async fn assert_balance(js: &mut JsPeer, expected: &str) -> TestResult {
    let started = Instant::now();
    loop {
        let balance = js.ok("getBalance", json!({})).await?;
        if balance == json!(expected) {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            return Err(format!("balance {balance}, expected {expected}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The message of a JS client's failed `connect` to `url`, trusting `ca` (via `NODE_EXTRA_CA_CERTS`, as the
/// legacy plugin's users did).
async fn js_connect_error(version: &str, url: String, ca: &Path) -> R<String> {
    let mut js = JsPeer::client(version, url, &[("NODE_EXTRA_CA_CERTS", path(ca))]).await?;
    let r = js.call("connect", json!({})).await?;
    let Err(e) = r else {
        return Err(format!("connected, but must not: {r:?}").into());
    };
    // Nothing can be sent over the refused connection.
    let (_, t) = legacy_common::js_transfer(&[1; 32], 1, 4_000, "");
    let sent = js.call("sendTransfer", t).await?;
    assert!(sent.is_err(), "a transfer was sent: {sent:?}");
    Ok(e["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btp_wss_both_ways_through_the_config_and_bad_certificates_refused() -> TestResult {
    for_each_version(wss_for).await
}

async fn wss_for(version: &str) -> TestResult {
    let pki = make_pki()?;
    // The legacy wss servers the node dials: a good one, and ones with an expired and a wrong-host certificate.
    let (b_port, exp_port, host_port) = (free_port()?, free_port()?, free_port()?);
    let mut b = js_server(version, b_port, "test.b.", &pki.good).await?;
    let mut b_exp = js_server(version, exp_port, "test.b-expired.", &pki.expired).await?;
    let mut b_host = js_server(version, host_port, "test.b-host.", &pki.wrong_host).await?;

    // The node: listeners with a good, an expired and a wrong-host certificate; dialing peers trusting the CA,
    // except b-wrong-ca, which trusts only the other CA (and dials the good server).
    let (a_port, a_exp_port, a_host_port) = (free_port()?, free_port()?, free_port()?);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ilp-bridge.toml");
    let mut text = format!(
        "data_dir = {:?}\n\n[log]\nfilter = \"info\"\nformat = \"json\"\n\n",
        path(&dir.path().join("data"))
    );
    text += &listener_peer("a", a_port, &pki.good);
    text += &listener_peer("a-expired", a_exp_port, &pki.expired);
    text += &listener_peer("a-host", a_host_port, &pki.wrong_host);
    text += &dialing_peer("b", b_port, &pki.ca);
    text += &dialing_peer("b-wrong-ca", b_port, &pki.other_ca);
    text += &dialing_peer("b-expired", exp_port, &pki.ca);
    text += &dialing_peer("b-host", host_port, &pki.ca);
    std::fs::write(&config, text)?;
    let node = Node::start(&config)?;
    for port in [a_port, a_exp_port, a_host_port] {
        wait_listening(port).await?;
    }
    node.wait_log("b connected", |v| {
        v["fields"]["message"] == json!("trustline connected") && v["fields"]["peer"] == json!("b")
    })
    .await?;

    // 1. Both ways: JS client → node's wss listener, node → JS wss server (ca_bundle), fulfilled on both hops.
    let mut a = JsPeer::client(
        version,
        format!("btp+wss://:a-secret@127.0.0.1:{a_port}"),
        &[("NODE_EXTRA_CA_CERTS", path(&pki.ca))],
    )
    .await?;
    a.ok("connect", json!({})).await?;
    assert!(pay(&mut a, &mut b, "test.b.server.bob", 1).await?);
    assert_balance(&mut b, "10").await?;
    assert_balance(&mut a, "-10").await?;

    // 2. The node refuses each bad server certificate, saying why, and nothing crosses to that server.
    let wrong_ca = node.dial_error("b-wrong-ca").await?;
    eprintln!("node refuses (wrong CA): {wrong_ca}");
    assert!(
        wrong_ca.contains("tls handshake failed") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    let expired = node.dial_error("b-expired").await?;
    eprintln!("node refuses (expired): {expired}");
    assert!(
        expired.contains("tls handshake failed") && expired.contains("xpired"),
        "{expired}"
    );
    let host = node.dial_error("b-host").await?;
    eprintln!("node refuses (wrong host): {host}");
    assert!(
        host.contains("tls handshake failed") && host.contains("not valid for name"),
        "{host}"
    );
    for (seed, (server, account)) in [
        (&mut b, "test.b-wrong-ca.server.bob"),
        (&mut b_exp, "test.b-expired.server.bob"),
        (&mut b_host, "test.b-host.server.bob"),
    ]
    .into_iter()
    .enumerate()
    {
        let fulfilled = pay(&mut a, server, account, 10 + seed as u8).await?;
        assert!(!fulfilled, "{account}: a transfer crossed");
    }
    assert!(b_exp.take_all("incoming_prepare").await.is_empty());
    assert!(b_host.take_all("incoming_prepare").await.is_empty());
    assert_balance(&mut b_exp, "0").await?;
    assert_balance(&mut b_host, "0").await?;
    // b got only the one good transfer (b-wrong-ca dials the same server and never got in).
    assert_balance(&mut b, "10").await?;
    // a paid only the one good transfer.
    assert_balance(&mut a, "-10").await?;

    // 3. The legacy client refuses each bad listener, saying why; nothing is sent.
    let e = js_connect_error(
        version,
        format!("btp+wss://:a-secret@127.0.0.1:{a_port}"),
        &pki.other_ca,
    )
    .await?;
    eprintln!("legacy client refuses (wrong CA): {e}");
    assert!(
        e.contains("self-signed certificate in certificate chain"),
        "{e}"
    );
    let e = js_connect_error(
        version,
        format!("btp+wss://:a-secret@127.0.0.1:{a_exp_port}"),
        &pki.ca,
    )
    .await?;
    eprintln!("legacy client refuses (expired): {e}");
    assert!(e.contains("certificate has expired"), "{e}");
    let e = js_connect_error(
        version,
        format!("btp+wss://:a-secret@127.0.0.1:{a_host_port}"),
        &pki.ca,
    )
    .await?;
    eprintln!("legacy client refuses (wrong host): {e}");
    assert!(
        e.contains("Hostname/IP does not match certificate's altnames"),
        "{e}"
    );
    drop(node);
    Ok(())
}

/// A `ca_bundle` the node cannot use stops `ilp-bridge run` before anything starts, naming the field.
#[tokio::test]
async fn run_refuses_an_unusable_ca_bundle_by_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, "not a certificate\n")?;
    let config = dir.path().join("ilp-bridge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{}",
            path(&dir.path().join("data")),
            dialing_peer("b", 1, &bundle)
        ),
    )?;
    let out = tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
            .args(["run", "--config", &path(&config)])
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("peer[0].ca_bundle") && stderr.contains("no certificate found"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "the node started");
    Ok(())
}
