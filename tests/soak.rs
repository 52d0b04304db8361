//! Soak (RELIABILITY.md): `ilp-bridge run` between two real legacy plugins (1.3.5) under mixed traffic for
//! `SOAK_SECS` (default 60; the published run is 1,800), restarted every `SOAK_LIFETIME_SECS` (default 30):
//!
//! - Alice pays Bob (fulfilled), Bob pays Alice (fulfilled), Alice pays an address nobody routes (rejected by the
//!   node, F02) and Alice pays Bob with a condition nobody can fulfil (expires after `EXPIRING_MS`);
//! - in the middle of each lifetime the node drops Bob's connection and dials again (admin API `disconnect`,
//!   `reconnect`);
//! - at the end of each lifetime the load stops, everything finishes or expires, the books are compared (each
//!   peer's balance over the lifetime is minus what the node's balance with it moved), and the node is stopped
//!   with SIGTERM; the peers, whose stores are in memory, are started again with it (a legacy server keeps a dead
//!   peer's socket, docs/legacy-btp.md §16.14).
//!
//! With `SOAK_KEEP_FINISHED_SECS` set the node drops finished transfers that long after they expired
//! (`keep_finished_secs`), so its data folder stops growing with the history.
//!
//! Every `SAMPLE_EVERY` the node's resident memory, open file descriptors, data folder size and RocksDB memory (block
//! cache, memtables, table readers, from its `/metrics`) are sampled; the block cache must stay near empty. Within
//! each lifetime, after its warm-up (the first third), memory and descriptors must stay flat; the samples are
//! written to `SOAK_OUT/soak.csv` when `SOAK_OUT` is set (bench/soak_plot.py draws them).

mod legacy_books;
mod legacy_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use legacy_books::*;
use legacy_common::*;
use serde_json::json;

/// Expiry of the transfers meant to expire.
const EXPIRING_MS: i64 = 1_000;
/// Expiry of the others.
const TRANSFER_EXPIRY_MS: i64 = 5_000;
/// Longest wait, once the load stops, for the node to hold nothing prepared (every transfer finished or
/// expired); then a short quiet time for the peers' last answers.
const QUIESCE_LIMIT: Duration = Duration::from_secs(30);
/// See [`QUIESCE_LIMIT`].
const QUIESCE: Duration = Duration::from_millis(500);
/// How often the node's resources are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Resident memory may grow this much over a lifetime after its warm-up: the memtables' saw-tooth (8 + 4 MiB
/// of write buffers, filled and flushed) and the allocator's noise.
const RSS_SLACK_KIB: u64 = 16 << 10;
/// Most the block cache may hold at any sample. Nothing in this traffic reads a block twice: the only blocks
/// read are those a prepare's duplicate-ID lookup reads on a bloom filter's false positive, which are not
/// cached. (Cached, they grew resident memory by ≈ 190 bytes per payment, towards the cache's 64 MiB.)
const BLOCK_CACHE_LIMIT_KIB: u64 = 1 << 10;
/// Open descriptors may vary this much (WAL and table files come and go).
const FD_SLACK: u64 = 16;
/// Admin token of the node.
const TOKEN: &str = "soak-admin-token";

/// One sample of the node process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    lifetime: u64,
    rss_kib: u64,
    fds: u64,
    store_bytes: u64,
    /// RocksDB's block cache, memtables and table readers, from the node's `/metrics`.
    cache_kib: u64,
    memtable_kib: u64,
    table_reader_kib: u64,
    fulfilled: u64,
}

fn rss_kib(pid: u32) -> R<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("VmRSS value")?
        .parse()?)
}

fn fds(pid: u32) -> R<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The store's memory by part (`block_cache`, `memtables`, `table_readers`), in KiB, from the node's metrics.
async fn store_memory_kib(http: &reqwest::Client, admin: &str) -> R<(u64, u64, u64)> {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let part = |name: &str| -> R<u64> {
        let series = format!("ilp_bridge_store_memory_bytes{{part=\"{name}\"}} ");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .ok_or_else(|| format!("no {series} in the metrics"))?;
        Ok(line.trim().parse::<f64>()? as u64 / 1024)
    };
    Ok((
        part("block_cache")?,
        part("memtables")?,
        part("table_readers")?,
    ))
}

/// Starts Alice and Bob with their stores in memory, each fulfilling what is paid with [`preimage`].
async fn start_memory_peers(ports: (u16, u16)) -> R<Peers> {
    let peer = |name: &'static str, port: u16, prefix: &'static str| async move {
        let mut p = JsPeer::server(
            "1.3.5",
            port,
            name,
            prefix,
            MAX_BALANCE,
            &[
                ("AUTO_FULFILL", "1".to_owned()),
                ("FIXED_PREIMAGE", b64u(&preimage())),
            ],
        )
        .await?;
        p.ok("connect", json!({})).await?;
        R::Ok(p)
    };
    Ok(Peers {
        alice: peer("alice", ports.0, "test.a.").await?,
        bob: peer("bob", ports.1, "test.b.").await?,
    })
}

/// Transfers the node holds prepared with either peer, from the admin API.
async fn node_prepared(http: &reqwest::Client, admin: &str) -> R<u64> {
    let peers: serde_json::Value = http
        .get(format!("{admin}/peers"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(peers
        .as_array()
        .ok_or("peers")?
        .iter()
        .map(|p| {
            p["prepared_incoming"].as_u64().unwrap_or(0)
                + p["prepared_outgoing"].as_u64().unwrap_or(0)
        })
        .sum())
}

/// The node's balance with each peer, from the admin API.
async fn node_balances(http: &reqwest::Client, admin: &str) -> R<(i128, i128)> {
    let peers: serde_json::Value = http
        .get(format!("{admin}/peers"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let balance = |name: &str| -> R<i128> {
        let p = peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == json!(name)))
            .ok_or_else(|| format!("no peer {name} in {peers}"))?;
        Ok(p["balance"].as_str().ok_or("balance")?.parse()?)
    };
    Ok((balance("alice")?, balance("bob")?))
}

/// Sends `what` from `from` until `stop`; counts fulfilled transfers.
fn load(
    mut from: JsPeer,
    to: &'static str,
    mix: bool,
    stop: Arc<AtomicBool>,
    fulfilled: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<R<JsPeer>> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let fulfilment = preimage();
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let amount = 100 + n % 900;
            // Alice's mix: 1 in 8 to nobody (rejected), 1 in 8 with a condition nobody can fulfil (expires).
            let (to, condition_of, expiry) = match (mix, n % 8) {
                (true, 3) => ("test.c.nobody", fulfilment, TRANSFER_EXPIRY_MS),
                (true, 6) => (to, [n as u8; 32], EXPIRING_MS),
                _ => (to, fulfilment, TRANSFER_EXPIRY_MS),
            };
            let ilp = from.payment(to, amount).await?;
            let (_, t) = js_transfer(
                &condition_of,
                amount,
                expiry,
                ilp.as_str().unwrap_or_default(),
            );
            if from.call("sendTransfer", t).await?.is_ok() && condition_of == fulfilment {
                fulfilled.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        R::Ok(from)
    })
}

#[tokio::test]
async fn mixed_traffic_with_restarts_keeps_memory_descriptors_and_books_steady() -> TestResult {
    if !available("1.3.5")? {
        return Ok(());
    }
    let total = env_u64("SOAK_SECS", 60);
    let lifetime = env_u64("SOAK_LIFETIME_SECS", 30).max(6);
    let lifetimes = (total / lifetime).max(1);
    // SOAK_KEEP_FINISHED_SECS: the node drops finished transfers this long after they expired, so its data folder
    // stops growing with the history (`keep_finished_secs`; absent, it keeps them all).
    let keep_finished = std::env::var("SOAK_KEEP_FINISHED_SECS")
        .map(|secs| format!("keep_finished_secs = {secs}"))
        .unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let node_log = dir.path().join("bridge.log");
    let ports = (free_port()?, free_port()?);
    let admin_port = free_port()?;
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        node_toml(
            &data,
            ports,
            &format!("{keep_finished}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n"),
        ),
    )?;
    let http = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let fulfilled = Arc::new(AtomicU64::new(0));
    eprintln!("soak: {lifetimes} lifetimes of {lifetime} s");

    for life in 0..lifetimes {
        let mut peers = start_memory_peers(ports).await?;
        let node = Node::start(&config, &node_log)?;
        let pid = node.pid().ok_or("the node has exited")?;
        wait_connected(&mut peers).await?;
        let (alice_before, bob_before) = node_balances(&http, &admin).await?;
        let Peers { alice, bob } = peers;
        let stop = Arc::new(AtomicBool::new(false));
        let a = load(alice, "test.b.bob", true, stop.clone(), fulfilled.clone());
        let b = load(bob, "test.a.alice", false, stop.clone(), fulfilled.clone());
        let fulfilled_at_start = fulfilled.load(Ordering::Relaxed);
        let began = Instant::now();
        let mut reconnected = false;
        let mut warm: Option<Sample> = None;
        let mut last: Option<Sample> = None;
        while began.elapsed() < Duration::from_secs(lifetime) {
            tokio::time::sleep(SAMPLE_EVERY).await;
            let (cache_kib, memtable_kib, table_reader_kib) =
                store_memory_kib(&http, &admin).await?;
            let s = Sample {
                at_s: started.elapsed().as_secs_f64(),
                lifetime: life,
                rss_kib: rss_kib(pid)?,
                fds: fds(pid)?,
                store_bytes: dir_bytes(&data),
                cache_kib,
                memtable_kib,
                table_reader_kib,
                fulfilled: fulfilled.load(Ordering::Relaxed),
            };
            samples.push(s);
            if s.cache_kib > BLOCK_CACHE_LIMIT_KIB {
                problems.push(format!(
                    "lifetime {life}: the block cache holds {} KiB at {:.0} s",
                    s.cache_kib, s.at_s
                ));
            }
            if warm.is_none() && began.elapsed() >= Duration::from_secs(lifetime / 3) {
                warm = Some(s);
            }
            last = Some(s);
            if !reconnected && began.elapsed() >= Duration::from_secs(lifetime / 2) {
                for step in ["disconnect", "reconnect"] {
                    http.post(format!("{admin}/peers/bob/{step}"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await?
                        .error_for_status()?;
                }
                reconnected = true;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut alice = tokio::time::timeout(WAIT, a).await???;
        let mut bob = tokio::time::timeout(WAIT, b).await???;
        let deadline = Instant::now() + QUIESCE_LIMIT;
        while node_prepared(&http, &admin).await? > 0 {
            if Instant::now() > deadline {
                problems.push(format!(
                    "lifetime {life}: transfers still prepared {} s after the load stopped",
                    QUIESCE_LIMIT.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(QUIESCE).await;
        let (alice_after, bob_after) = node_balances(&http, &admin).await?;
        let alice_js = js_balance(&mut alice).await?;
        let bob_js = js_balance(&mut bob).await?;
        if alice_js != -(alice_after - alice_before) || bob_js != -(bob_after - bob_before) {
            problems.push(format!(
                "lifetime {life}: books disagree: Alice {alice_js} against the node's {alice_before} → \
                 {alice_after}, Bob {bob_js} against {bob_before} → {bob_after}"
            ));
        }
        let went_through = fulfilled.load(Ordering::Relaxed) - fulfilled_at_start;
        if went_through == 0 {
            problems.push(format!("lifetime {life}: no payment went through"));
        }
        if let (Some(w), Some(l)) = (warm, last) {
            if l.rss_kib > w.rss_kib + RSS_SLACK_KIB {
                problems.push(format!(
                    "lifetime {life}: resident memory grew from {} KiB to {} KiB",
                    w.rss_kib, l.rss_kib
                ));
            }
            if l.fds > w.fds + FD_SLACK {
                problems.push(format!(
                    "lifetime {life}: open descriptors grew from {} to {}",
                    w.fds, l.fds
                ));
            }
        }
        eprintln!(
            "lifetime {life}: {went_through} fulfilled, Alice {alice_js}, Bob {bob_js}, last sample {last:?}"
        );
        node.stop().await?;
        drop((alice, bob));
    }

    if let Ok(out) = std::env::var("SOAK_OUT") {
        std::fs::create_dir_all(&out)?;
        let mut csv = String::from(
            "seconds,lifetime,rss_kib,fds,store_bytes,block_cache_kib,memtable_kib,table_reader_kib,fulfilled\n",
        );
        for s in &samples {
            csv.push_str(&format!(
                "{:.1},{},{},{},{},{},{},{},{}\n",
                s.at_s,
                s.lifetime,
                s.rss_kib,
                s.fds,
                s.store_bytes,
                s.cache_kib,
                s.memtable_kib,
                s.table_reader_kib,
                s.fulfilled
            ));
        }
        std::fs::write(Path::new(&out).join("soak.csv"), csv)?;
    }
    let first = samples.first().map_or(0, |s| s.store_bytes);
    let end = samples.last().map_or(0, |s| s.store_bytes);
    let n = fulfilled.load(Ordering::Relaxed);
    eprintln!(
        "soak done: {:.0} s, {n} fulfilled, store {first} → {end} bytes ({:.0} bytes per fulfilled transfer), \
         {} problems",
        started.elapsed().as_secs_f64(),
        (end.saturating_sub(first)) as f64 / n.max(1) as f64,
        problems.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}
