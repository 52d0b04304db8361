//! Benchmark: settle requests accepted per second and latency percentiles at 32 connections, durable (RocksDB
//! WAL synced before every 201).
//!
//! `cargo run --release --example se_bench -- [seconds] [connections]`
//!
//! Engine A (RocksDB in a temporary folder, trustline module at scale 6) is linked through two mock connectors
//! to engine B (in memory), so the settle worker and the claims run during the measurement as in production.
//! Every request carries a fresh Idempotency-Key (as interledger-rs sends them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::host::{MemoryModuleLogs, ModuleLogs, RocksModuleLogs};
use ilp_bridge::settlement::start;
use ilp_bridge::settlement::store::{MemorySeStore, RocksSeStore, SeStore};
use ilp_bridge::store::Db;
use ilp_bridge::testing::mock_connector::MockConnector;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);

    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let mock_a = MockConnector::start().await?;
    let mock_b = MockConnector::start().await?;
    let cfg = |connector: String| SeConfig {
        connector,
        module: "trustline".to_owned(),
        // B credits every IOU the run sends (engine mode's default trustLimit is 0: no credit).
        module_options: serde_json::json!({"scale": 6, "trustLimit": "1000000000000000000000000000000"}),
        ..SeConfig::default()
    };
    let store_a: Arc<dyn SeStore> = Arc::new(RocksSeStore::new(Arc::clone(&db)));
    let logs_a: Arc<dyn ModuleLogs> = Arc::new(RocksModuleLogs::new(Arc::clone(&db)));
    let se_a = start(
        cfg(mock_a.url()),
        store_a,
        logs_a,
        ilp_bridge::identity::IdentityRegistry::on_db(Arc::clone(&db)),
        TcpListener::bind("127.0.0.1:0").await?,
        None,
    )
    .await?;
    let se_b = start(
        cfg(mock_b.url()),
        Arc::new(MemorySeStore::new()),
        Arc::new(MemoryModuleLogs::new()),
        ilp_bridge::identity::IdentityRegistry::memory(),
        TcpListener::bind("127.0.0.1:0").await?,
        None,
    )
    .await?;
    let url_a = format!("http://{}", se_a.addr);
    let acct_a = mock_a.add_account(&url_a).await?;
    let acct_b = mock_b.add_account(&format!("http://{}", se_b.addr)).await?;
    MockConnector::link(&mock_a, &acct_a, &mock_b, &acct_b)?;

    let settle_url = format!("{url_a}/accounts/{acct_a}/settlements");
    let warmup = Duration::from_secs(1);
    let run = Duration::from_secs(seconds);
    let start_at = Instant::now();
    let groups_before = db.group_writes();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let url = settle_url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0.duration_since(start_at) > warmup + run {
                    break;
                }
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .body(r#"{"amount":"1234567","scale":9}"#)
                    .send()
                    .await;
                let ok = match resp {
                    Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let dt = t0.elapsed();
                if t0.duration_since(start_at) >= warmup {
                    if ok {
                        lat.push(dt);
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, BoxError>((lat, errors))
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        lat.extend(l);
        errors += e;
    }
    let groups = db.group_writes() - groups_before;
    lat.sort();
    let n = lat.len();
    let pct = |p: f64| {
        lat.get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("settle requests: {n} accepted (201) in {seconds} s at {connections} connections, {errors} errors");
    println!("throughput: {:.0} /s", n as f64 / run.as_secs_f64());
    println!(
        "latency: p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or_default()
    );
    println!(
        "synced group writes during the run: {groups} ({:.1} requests per fsync)",
        n as f64 / groups.max(1) as f64
    );
    let view = se_a.engine.account_view(&acct_a)?;
    println!(
        "engine A: requested {} settled {} (module units, scale 6)",
        view.requested.amount, view.settled.amount
    );
    se_a.stop().await;
    se_b.stop().await;
    Ok(())
}
