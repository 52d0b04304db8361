//! `ilp-bridge run` with an `[admin]` table, as an operator starts it: the probes, the metrics and the token-guarded
//! peer API are served by the binary itself (not only by the library calls it makes), and `ilp-bridge status`
//! reads them. The node is stopped by PID with SIGTERM and must exit cleanly.

use std::time::Duration;

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "admin-secret";

fn free_port() -> R<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The node process, killed by PID if the test ends early.
struct Node(tokio::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_probes_metrics_and_the_peer_api_on_its_admin_listener() -> R<()> {
    let dir = tempfile::tempdir()?;
    let admin_port = free_port()?;
    let peer_port = free_port()?;
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[[peer]]
name = "kit"
options = {{ listener = {{ port = {peer_port} }}, incomingSecret = "s", maxBalance = "1000", prefix = "test.kit.", store = true, info = {{ currencyCode = "USD", currencyScale = 9 }} }}
"#,
            data = dir.path().join("data"),
        ),
    )?;
    let mut node = Node(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?,
    );
    // Read as the node writes (a full pipe would block it); kept for the checks after it exits.
    let drain = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
            }
            text
        })
    };
    let stdout = drain(node.0.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(node.0.stderr.take().map(|p| Box::new(p) as _));
    let base = format!("http://127.0.0.1:{admin_port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match http.get(format!("{base}/health")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return Err(format!("/health never answered 200: {other:?}").into()),
        }
    }
    let ready = http.get(format!("{base}/ready")).send().await?;
    assert_eq!(ready.status(), 200, "{}", ready.text().await?);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("peer=\"kit\""), "{metrics}");
    // A client with a wrong secret is refused and counted.
    let auth_failures = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("ilp_bridge_btp_auth_failures_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(auth_failures(&metrics), Some(0.0), "{metrics}");
    let endpoint = btp::transport::BtpEndpoint::new(btp::transport::EndpointConfig::default());
    struct Nothing;
    #[async_trait::async_trait]
    impl btp::transport::RequestHandler for Nothing {
        async fn handle_request(
            &self,
            _: &btp::transport::BtpSession,
            _: u32,
            _: btp::packet::Packet,
        ) -> Option<btp::transport::Reply> {
            None
        }
    }
    let _intruder = endpoint.connect(
        btp::transport::PeerKey::new("intruder"),
        &btp::transport::BtpUrl::parse(&format!("btp+ws://:wrong@127.0.0.1:{peer_port}"))?,
        btp::transport::ClientOptions::default(),
        std::sync::Arc::new(Nothing),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if auth_failures(&m).is_some_and(|n| n >= 1.0) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("no auth failure counted: {m}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The peer API needs the token.
    assert_eq!(
        http.get(format!("{base}/peers")).send().await?.status(),
        401
    );
    let peers: serde_json::Value = http
        .get(format!("{base}/peers"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert!(peers.to_string().contains("\"kit\""), "{peers}");
    // The CLI reads the same API, from the node's own configuration.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
        .arg("status")
        .arg("--config")
        .arg(&config)
        .output()
        .await?;
    assert!(status.status.success(), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("kit"),
        "{status:?}"
    );

    let pid = node.0.id().ok_or("exited")?;
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    let exit = tokio::time::timeout(WAIT, node.0.wait()).await??;
    assert!(exit.success(), "exited with {exit}");
    // Logs go to stderr; stdout is left to what a command prints.
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    assert_eq!(stdout, "", "the node wrote on stdout");
    assert!(stderr.contains("INFO"), "no log lines on stderr: {stderr}");
    Ok(())
}
