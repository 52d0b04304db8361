//! The engine's two HTTP servers as exposed to a network: the engine API's optional bearer token, the refusal of
//! a non-loopback `listen` without one, empty secrets refused at load, and the limits every client is held to
//! (a request head and a body must arrive in time; a bounded number of requests and connections at once).

mod poll_common;
mod se_common;

use std::net::SocketAddr;
use std::time::Duration;

use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::http::{
    serve, HttpLimits, ADMIN_MAX_CONCURRENT_REQUESTS, BODY_READ_TIMEOUT,
    ENGINE_MAX_CONCURRENT_REQUESTS, HEADER_READ_TIMEOUT,
};
use ilp_bridge::settlement::{start, SeHandle};
use ilp_bridge::testing::mock_connector::MockConnector;
use se_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `[settlement-engine]` section of `toml`, parsed as the node's loader does.
fn engine_section(toml: &str) -> Result<SeConfig, BoxError> {
    let node = NodeConfig::parse(&format!("[settlement-engine]\n{toml}"))?;
    Ok(node.settlement_engine.ok_or("no engine section")?)
}

fn load_error(toml: &str) -> String {
    match NodeConfig::parse(toml) {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// An engine with `config` on loopback port 0 (memory store), its connector pointed nowhere.
async fn engine(config: SeConfig) -> Result<SeHandle, BoxError> {
    start_engine(
        SeConfig {
            connector: "http://127.0.0.1:9".to_owned(),
            ..config
        },
        &Backing::memory(),
    )
    .await
}

#[tokio::test]
async fn the_engine_api_needs_its_token_when_one_is_set() -> TestResult {
    let mock = MockConnector::start().await?;
    let mut cfg = engine_section("api_token = \"engine-token-3b9a\"")?;
    cfg.connector = mock.url();
    let se = engine(cfg).await?;
    let c = reqwest::Client::new();
    let accounts = format!("{}/accounts", url(&se));
    for token in [None, Some("wrong"), Some("")] {
        let mut req = c
            .post(&accounts)
            .header("Content-Type", "application/json")
            .body(r#"{"id":"acct"}"#);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), 401, "token {token:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
    // Every route is protected, and a refused request changed nothing.
    let resp = c.delete(format!("{accounts}/acct")).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(se.engine.account_ids().is_empty());
    let resp = c
        .post(&accounts)
        .bearer_auth("engine-token-3b9a")
        .header("Content-Type", "application/json")
        .body(r#"{"id":"acct"}"#)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(se.engine.account_ids(), vec!["acct".to_owned()]);
    se.stop().await;

    // Without a token (the default, on loopback) the API stays open, as interledger-rs and the Java connector
    // send no Authorization header to an engine.
    let se = engine(SeConfig::default()).await?;
    let resp = c
        .post(format!("{}/accounts", url(&se)))
        .header("Content-Type", "application/json")
        .body(r#"{"id":"acct"}"#)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    se.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_non_loopback_listen_needs_a_token_or_the_override() -> TestResult {
    let refused = load_error("[settlement-engine]\nlisten = \"0.0.0.0:3000\"\n");
    for word in ["listen", "api_token", "allow_unauthenticated = true"] {
        assert!(refused.contains(word), "{word} not in {refused:?}");
    }
    let refused = load_error("[settlement-engine]\nlisten = \"192.0.2.7:3000\"\n");
    assert!(refused.contains("listen"), "{refused}");
    engine_section("listen = \"0.0.0.0:3000\"\napi_token = \"t\"")?;
    engine_section("listen = \"0.0.0.0:3000\"\nallow_unauthenticated = true")?;
    engine_section("listen = \"[::1]:3000\"")?;

    // The check is made again on the address actually bound, for callers that bind the listener themselves.
    let wide = TcpListener::bind("0.0.0.0:0").await?;
    let started = start(
        SeConfig::default(),
        std::sync::Arc::new(ilp_bridge::settlement::store::MemorySeStore::new()),
        std::sync::Arc::new(ilp_bridge::settlement::host::MemoryModuleLogs::new()),
        ilp_bridge::identity::IdentityRegistry::memory(),
        wide,
        None,
    )
    .await;
    match started {
        Ok(se) => {
            se.stop().await;
            return Err("an unauthenticated engine API started on 0.0.0.0".into());
        }
        Err(e) => assert!(e.to_string().contains("api_token"), "{e}"),
    }
    Ok(())
}

#[test]
fn empty_secrets_are_refused_at_load() {
    for (toml, field) in [
        ("[settlement-engine]\nadmin_token = \"\"\n", "admin_token"),
        ("[settlement-engine]\nadmin_token = \"  \"\n", "admin_token"),
        ("[settlement-engine]\napi_token = \"\"\n", "api_token"),
    ] {
        let e = load_error(toml);
        assert!(e.contains(field), "{toml:?}: {e}");
    }
    let peer = PeerConfig::from_legacy_json(
        "p",
        &serde_json::json!({"listener": {"port": 1}, "incomingSecret": "", "prefix": "a.", "info": {}}),
    );
    assert!(
        matches!(&peer, Err(e) if e.to_string().contains("incomingSecret")),
        "{peer:?}"
    );
    let e = load_error(
        "[[peer]]\nname = \"p\"\noptions = { listener = { port = 1 }, incomingSecret = \"\", prefix = \"a.\", info = {} }\n",
    );
    assert!(e.contains("incomingSecret"), "{e}");
}

/// Guard of the timeout tests: far past any timeout the servers have (virtual time, paused clock).
const GUARD: Duration = Duration::from_secs(600);

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Result<String, BoxError> {
    let mut got = Vec::new();
    match tokio::time::timeout(GUARD, stream.read_to_end(&mut got)).await {
        Err(_) => Err(format!(
            "still open after {GUARD:?}; got {:?}",
            String::from_utf8_lossy(&got)
        )
        .into()),
        // A reset after the server gave up is a close too.
        Ok(Ok(_)) | Ok(Err(_)) => Ok(String::from_utf8_lossy(&got).into_owned()),
    }
}

async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Result<TcpStream, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    Ok(stream)
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() -> TestResult {
    let se = engine(config(
        "http://127.0.0.1:9",
        "trustline",
        serde_json::json!({}),
    ))
    .await?;
    for addr in [Some(se.addr), se.admin_addr] {
        let addr = addr.ok_or("admin API not running")?;
        let started = tokio::time::Instant::now();
        let mut slow = send_raw(
            addr,
            b"POST /accounts HTTP/1.1\r\nHost: engine\r\nX-Slow: 1",
        )
        .await?;
        read_to_close(&mut slow).await?;
        let waited = started.elapsed();
        assert!(
            waited >= HEADER_READ_TIMEOUT,
            "{addr}: closed after {waited:?}"
        );
    }
    se.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_is_cut_off() -> TestResult {
    let se = engine(config(
        "http://127.0.0.1:9",
        "trustline",
        serde_json::json!({}),
    ))
    .await?;
    let mut slow = send_raw(
        se.addr,
        b"POST /accounts HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"id\":",
    )
    .await?;
    let started = tokio::time::Instant::now();
    let answer = read_to_close(&mut slow).await?;
    assert!(
        started.elapsed() >= BODY_READ_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(se.engine.account_ids().is_empty());
    se.stop().await;
    Ok(())
}

/// Opens `n` requests that hold the server (their bodies never finish), then probes `probe` until it is refused
/// with 503 (the `n` requests reach the server in their own time); after the slow requests go away, the probe is
/// served again.
async fn fill_and_probe(addr: SocketAddr, n: usize, probe: &str, served: u16) -> TestResult {
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        slow.push(
            send_raw(
                addr,
                b"POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{",
            )
            .await?,
        );
    }
    let c = reqwest::Client::new();
    let url = format!("http://{addr}{probe}");
    let last = std::cell::Cell::new(0u16);
    let full = poll_common::poll_until("503 over the limit", Duration::from_secs(5), || async {
        let status = match c.get(&url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        last.set(status);
        status == 503
    })
    .await;
    full.map_err(|e| format!("{e}: last status {}", last.get()))?;
    drop(slow);
    poll_common::poll_until("served again", Duration::from_secs(5), || async {
        matches!(c.get(&url).send().await, Ok(r) if r.status().as_u16() == served)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_get_503() -> TestResult {
    let se = engine(config(
        "http://127.0.0.1:9",
        "trustline",
        serde_json::json!({}),
    ))
    .await?;
    fill_and_probe(se.addr, ENGINE_MAX_CONCURRENT_REQUESTS, "/nothing", 404).await?;
    let admin = se.admin_addr.ok_or("admin API not running")?;
    fill_and_probe(admin, ADMIN_MAX_CONCURRENT_REQUESTS, "/openapi.yaml", 200).await?;
    se.stop().await;
    Ok(())
}

/// Past `max_connections` the server stops accepting: a further client waits (in the kernel's backlog) until a
/// connection closes, here the idle ones when their head timeout runs out, and is then served.
#[tokio::test(start_paused = true)]
async fn connections_past_the_limit_wait_to_be_accepted() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let limits = HttpLimits {
        max_connections: 2,
        ..HttpLimits::ADMIN
    };
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router, limits, "test", async move {
        let _ = stop_rx.await;
    }));
    let idle = [
        TcpStream::connect(addr).await?,
        TcpStream::connect(addr).await?,
    ];
    let started = tokio::time::Instant::now();
    let mut third = send_raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let answer = read_to_close(&mut third).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= limits.header_read_timeout,
        "served after {waited:?}"
    );
    drop(idle);
    let _ = stop_tx.send(());
    server.await?;
    Ok(())
}
