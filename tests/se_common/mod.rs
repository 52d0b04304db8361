//! Helpers shared by the settlement-engine integration tests: engines on loopback port 0, pairs of engines
//! behind linked mock connectors, polling.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::identity::IdentityRegistry;
use ilp_bridge::settlement::host::{MemoryModuleLogs, ModuleLogs, RocksModuleLogs};
use ilp_bridge::settlement::quantity::Scaled;
use ilp_bridge::settlement::store::{MemorySeStore, RocksSeStore, SeStore};
use ilp_bridge::settlement::{start, SeHandle};
use ilp_bridge::store::Db;
use ilp_bridge::testing::mock_connector::{MockConnector, SettlePolicy};
use tokio::net::TcpListener;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestResult = Result<(), BoxError>;
type Parts = (Arc<dyn SeStore>, Arc<dyn ModuleLogs>, Arc<IdentityRegistry>);

pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";

/// The `trustLimit` [`config`] gives `trustline` engines whose options set none: more than any test sends.
/// Engine mode's own default is 0 (no IOU credited; tests/se_trust.rs tests it).
pub(crate) const TEST_TRUST_LIMIT: &str = "1000000000000000000000000000000";

/// A config for tests: fast retries, admin on; a `trustline` engine trusts its peer up to [`TEST_TRUST_LIMIT`]
/// unless `options` sets `trustLimit`.
pub(crate) fn config(connector: &str, module: &str, mut options: serde_json::Value) -> SeConfig {
    if module == "trustline" {
        if let Some(o) = options.as_object_mut() {
            o.entry("trustLimit")
                .or_insert_with(|| serde_json::Value::String(TEST_TRUST_LIMIT.to_owned()));
        }
    }
    SeConfig {
        connector: connector.to_owned(),
        module: module.to_owned(),
        module_options: options,
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        retry_initial_ms: 20,
        retry_max_ms: 200,
        ..SeConfig::default()
    }
}

/// Where an engine keeps its state across restarts in a test.
#[derive(Clone)]
pub(crate) enum Backing {
    /// In memory (the same instances survive a restart).
    Memory(MemorySeStore, Arc<MemoryModuleLogs>, Arc<IdentityRegistry>),
    /// A RocksDB folder, reopened at every start.
    Rocks(Arc<tempfile::TempDir>),
}

impl Backing {
    pub(crate) fn memory() -> Self {
        Backing::Memory(
            MemorySeStore::new(),
            Arc::new(MemoryModuleLogs::new()),
            IdentityRegistry::memory(),
        )
    }

    pub(crate) fn rocks() -> Result<Self, std::io::Error> {
        Ok(Backing::Rocks(Arc::new(tempfile::tempdir()?)))
    }

    fn parts(&self) -> Result<Parts, BoxError> {
        Ok(match self {
            Backing::Memory(s, l, i) => (
                Arc::new(s.clone()),
                Arc::clone(l) as Arc<dyn ModuleLogs>,
                Arc::clone(i),
            ),
            Backing::Rocks(dir) => {
                let db = open_db(dir.path())?;
                (
                    Arc::new(RocksSeStore::new(Arc::clone(&db))),
                    Arc::new(RocksModuleLogs::new(Arc::clone(&db))),
                    IdentityRegistry::on_db(db),
                )
            }
        })
    }
}

fn open_db(path: &Path) -> Result<Arc<Db>, Box<dyn std::error::Error + Send + Sync>> {
    // A previous engine on the same folder may still be releasing the database lock for a moment.
    let mut last = None;
    for _ in 0..50 {
        match Db::open(path) {
            Ok(db) => return Ok(db),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("open db: {last:?}").into())
}

/// Starts an engine on 127.0.0.1:0 (API and admin).
pub(crate) async fn start_engine(
    config: SeConfig,
    backing: &Backing,
) -> Result<SeHandle, Box<dyn std::error::Error + Send + Sync>> {
    let (store, logs, identities) = backing.parts()?;
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    Ok(start(config, store, logs, identities, api, Some(admin)).await?)
}

pub(crate) fn url(handle: &SeHandle) -> String {
    format!("http://{}", handle.addr)
}

pub(crate) fn admin_url(handle: &SeHandle) -> String {
    format!(
        "http://{}",
        handle.admin_addr.map(|a| a.to_string()).unwrap_or_default()
    )
}

/// One side of an engine pair: a mock connector, the engine it holds `account` with (when running) on
/// `backing`, and what the engine is started with.
pub(crate) struct Side {
    /// The connector.
    pub mock: MockConnector,
    /// The engine, unless stopped.
    pub se: Option<SeHandle>,
    /// Where the engine keeps its state across restarts.
    pub backing: Backing,
    /// The connector's account with the engine.
    pub account: String,
    /// The engine's module.
    pub module: &'static str,
    /// The module's options.
    pub options: serde_json::Value,
    /// The connector's scale, if set.
    pub connector_scale: Option<u8>,
}

impl Side {
    /// The engine's config.
    pub(crate) fn config(&self) -> SeConfig {
        let mut c = config(&self.mock.url(), self.module, self.options.clone());
        c.connector_scale = self.connector_scale;
        c
    }

    /// The running engine.
    pub(crate) fn se(&self) -> Result<&SeHandle, BoxError> {
        Ok(self.se.as_ref().ok_or("engine not running")?)
    }

    /// Stops the engine (its workers are aborted wherever they are, as in a crash).
    pub(crate) async fn stop(&mut self) {
        if let Some(se) = self.se.take() {
            se.stop().await;
        }
    }

    /// Starts the engine again on the same backing and points the connector at it.
    pub(crate) async fn restart(&mut self) -> TestResult {
        self.stop().await;
        let se = start_engine(self.config(), &self.backing).await?;
        self.mock.set_engine_url(&self.account, &url(&se))?;
        self.se = Some(se);
        Ok(())
    }

    /// What the connector has been credited in all.
    pub(crate) fn credited(&self) -> Scaled {
        self.mock.credited_total(&self.account)
    }
}

/// The options of one side of [`start_pair`]: module options, connector scale and backing.
pub(crate) type SideSpec = (serde_json::Value, Option<u8>, Backing);

/// Engines A and B with `module`, each behind its own mock connector (fast settlement retries), A's
/// connector linked to B's.
pub(crate) async fn start_pair(
    module: &'static str,
    specs: [SideSpec; 2],
) -> Result<(Side, Side), BoxError> {
    let mut sides = Vec::new();
    for (options, connector_scale, backing) in specs {
        let mock = MockConnector::start().await?;
        mock.set_settle_policy(SettlePolicy {
            wait_after_error: Duration::from_millis(50),
            wait_after_connect_error: Duration::from_millis(50),
            ..SettlePolicy::default()
        });
        let mut side = Side {
            mock,
            se: None,
            backing,
            account: String::new(),
            module,
            options,
            connector_scale,
        };
        let se = start_engine(side.config(), &side.backing).await?;
        side.account = side.mock.add_account(&url(&se)).await?;
        side.se = Some(se);
        sides.push(side);
    }
    let b = sides.pop().ok_or("side b")?;
    let a = sides.pop().ok_or("side a")?;
    MockConnector::link(&a.mock, &a.account, &b.mock, &b.account)?;
    Ok((a, b))
}

/// Stops both engines.
pub(crate) async fn stop_all(sides: [Side; 2]) {
    for mut side in sides {
        side.stop().await;
    }
}

/// Whether two amounts are the same value (at whatever scales).
pub(crate) fn value_eq(a: &Scaled, b: &Scaled) -> bool {
    let s = a.scale.max(b.scale);
    a.upscale(s) == b.upscale(s)
}

/// Polls `check` every 20 ms until it returns true; fails after `limit` (a guard against hanging, not a speed
/// assertion).
pub(crate) async fn eventually<F, Fut>(what: &str, limit: Duration, check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Ok(crate::poll_common::poll_until(what, limit, check).await?)
}

/// GET an admin path as JSON.
pub(crate) async fn admin_get(
    handle: &SeHandle,
    path: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", admin_url(handle)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("admin {path}: {}", resp.status()).into());
    }
    Ok(resp.json().await?)
}

/// Posts `body` to `{engine}/accounts/{account}/messages` as a peer engine does, retrying while the account's
/// setup is still running in the background (503), for at most [`SETUP_WAIT`]; returns the status and body.
pub(crate) async fn post_message_once_set_up(
    engine: &str,
    account: &str,
    body: Vec<u8>,
) -> Result<(u16, String), BoxError> {
    let deadline = tokio::time::Instant::now() + SETUP_WAIT;
    loop {
        let resp = reqwest::Client::new()
            .post(format!("{engine}/accounts/{account}/messages"))
            .header("Content-Type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if status != 503 || tokio::time::Instant::now() > deadline {
            return Ok((status, text));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Longest [`post_message_once_set_up`] waits for an account's setup.
pub(crate) const SETUP_WAIT: Duration = Duration::from_secs(30);
