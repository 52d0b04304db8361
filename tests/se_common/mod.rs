//! Helpers shared by the settlement-engine integration tests: engines on loopback port 0, polling.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ilp_bridge::se::host::{MemoryModuleLogs, ModuleLogs, RocksModuleLogs};
use ilp_bridge::se::store::{MemorySeStore, RocksSeStore, SeStore};
use ilp_bridge::se::{start, SeConfig, SeHandle};
use ilp_bridge::store::Db;
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), BoxError>;
type Parts = (Arc<dyn SeStore>, Arc<dyn ModuleLogs>);

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A config for tests: fast retries, admin on.
pub fn config(connector: &str, module: &str, options: serde_json::Value) -> SeConfig {
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
pub enum Backing {
    /// In memory (the same instances survive a restart).
    Memory(MemorySeStore, Arc<MemoryModuleLogs>),
    /// A RocksDB folder, reopened at every start.
    Rocks(Arc<tempfile::TempDir>),
}

impl Backing {
    pub fn memory() -> Self {
        Backing::Memory(MemorySeStore::new(), Arc::new(MemoryModuleLogs::new()))
    }

    pub fn rocks() -> Result<Self, std::io::Error> {
        Ok(Backing::Rocks(Arc::new(tempfile::tempdir()?)))
    }

    fn parts(&self) -> Result<Parts, BoxError> {
        Ok(match self {
            Backing::Memory(s, l) => (Arc::new(s.clone()), Arc::clone(l) as Arc<dyn ModuleLogs>),
            Backing::Rocks(dir) => {
                let db = open_db(dir.path())?;
                (
                    Arc::new(RocksSeStore::new(Arc::clone(&db))),
                    Arc::new(RocksModuleLogs::new(db)),
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
pub async fn start_engine(
    config: SeConfig,
    backing: &Backing,
) -> Result<SeHandle, Box<dyn std::error::Error + Send + Sync>> {
    let (store, logs) = backing.parts()?;
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    Ok(start(config, store, logs, api, Some(admin)).await?)
}

pub fn url(handle: &SeHandle) -> String {
    format!("http://{}", handle.addr)
}

pub fn admin_url(handle: &SeHandle) -> String {
    format!(
        "http://{}",
        handle.admin_addr.map(|a| a.to_string()).unwrap_or_default()
    )
}

/// Polls `check` every 20 ms until it returns true; fails after `limit` (a guard against hanging, not a speed
/// assertion).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("gave up waiting for: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET an admin path as JSON.
pub async fn admin_get(
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
