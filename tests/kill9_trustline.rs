//! kill -9 under load (RELIABILITY.md): `ilp-bridge run` between two REAL legacy JS plugins (1.3.5),
//! routing Alice's payments to Bob, is killed with SIGKILL at a random moment while payments are in flight, then
//! restarted; after each round the books are compared.
//!
//! Each round: Alice and Bob (legacy servers, their stores in a file that survives their own restarts) are
//! started; the bridge dials both; Alice sends transfers to `test.b.bob` (Bob fulfils each at once); after a
//! random delay (seeded) the bridge is killed with SIGKILL. Alice and Bob are restarted on their stores (a legacy
//! server keeps a dead peer's socket and fails its own requests on it, docs/legacy-btp.md §16.14), the bridge is
//! restarted, finishes or expires what it had in flight, and is stopped (SIGTERM). Then:
//!
//! 1. each link's two sides agree: Alice's balance is minus the bridge's balance with Alice, Bob's likewise;
//!    Each legacy peer's balance is taken from its transfer records; where its own balance rows disagree with
//!    them (the plugin writes them apart), that is reported as the legacy store's, not counted against the
//!    bridge;
//! 2. nothing is left prepared at the bridge;
//! 3. the bridge was never paid more by Alice than it paid Bob (what it paid Bob beyond what Alice paid it is the
//!    bridge's own loss: upstream transfers that expired while it was down, reported apart);
//!
//! `KILL9_ROUNDS` (default 20) rounds, `KILL9_SEED` (default: from the clock, printed) for the delays.

mod legacy_books;
mod legacy_common;

use std::path::PathBuf;
use std::time::Duration;

use legacy_books::*;
use legacy_common::*;
use rand::{Rng, SeedableRng};

/// How long each transfer lives: long enough to cross a restart of the bridge, short enough to keep rounds short.
const TRANSFER_EXPIRY_MS: i64 = 2_500;
/// Quiet time after the restart: every transfer of the round has finished or expired by then.
const QUIESCE: Duration = Duration::from_millis(3_500);
#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    sent: u64,
    violations: Vec<String>,
    /// What the bridge paid Bob beyond what Alice paid it (upstream expiries while it was down).
    bridge_loss: i128,
    /// Transfers Bob wrote down as fulfilled whose Fulfill never reached the bridge (it died first): count and
    /// amount, over the whole campaign (read from Bob's store, which keeps every round's).
    lost_in_flight: (u64, i128),
    /// Rounds after which a legacy peer's balance rows disagreed with its own transfer records.
    legacy_self_disagreements: u64,
    /// Alice's transfers the bridge decided by their sum and labelled otherwise than Alice (cumulative: Alice's
    /// store keeps every round's).
    decided_by_sum: usize,
}

#[tokio::test]
async fn killed_with_sigkill_under_load_the_books_still_agree() -> TestResult {
    if !available("1.3.5")? {
        return Ok(());
    }
    let rounds = env_u64("KILL9_ROUNDS", 20);
    let seed = env_u64("KILL9_SEED", now_ms() as u64);
    eprintln!("kill -9 campaign: {rounds} rounds, KILL9_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    let ports = (free_port()?, free_port()?);
    let config = dir.path().join("bridge.toml");
    let node_log = dir.path().join("bridge.log");
    std::fs::write(&config, node_toml(&data, ports, ""))?;
    let mut tally = Tally::default();

    for round in 0..rounds {
        let mut peers = start_peers(dir.path(), ports).await?;
        let node = Node::start(&config, &node_log)?;
        wait_connected(&mut peers).await?;
        // Alice pays Bob through the bridge until the kill.
        let Peers { alice, bob } = peers;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = alice_pays_bob(alice, TRANSFER_EXPIRY_MS, stop.clone());
        let delay = rng.gen_range(50..800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        node.kill().await?;
        tally.kills += 1;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The legacy plugin writes a change as several store rows one after the other (the transfer, then the
        // balance): the peers finish what they started before they are stopped, so each store is one the plugin
        // itself could have left (the bridge is the one under test).
        let (alice, _) = tokio::time::timeout(WAIT, load).await???;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop((alice, bob));

        // Restart the peers on their stores, then the bridge; let everything finish or expire; stop it.
        let mut peers = start_peers(dir.path(), ports).await?;
        let node = Node::start(&config, &node_log)?;
        wait_connected(&mut peers).await?;
        tokio::time::sleep(QUIESCE).await;
        node.stop().await?;

        let books = check_books(dir.path(), &data, &node_log, &mut peers).await?;
        for line in &books.legacy_self_disagreements {
            eprintln!("round {round}: {line}");
        }
        if !books.legacy_self_disagreements.is_empty() {
            tally.legacy_self_disagreements += 1;
        }
        for v in books.violations {
            eprintln!("round {round} (seed {seed}): VIOLATION {v}");
            tally.violations.push(format!("round {round}: {v}"));
        }
        tally.lost_in_flight = books.lost_in_flight;
        tally.decided_by_sum = books.decided_by_sum;
        tally.bridge_loss = books.bridge_loss;
        tally.sent = books.paid_to_bob.try_into().unwrap_or(u64::MAX);
        drop(peers);
    }
    eprintln!(
        "kill -9 campaign done: seed {seed}, {} kills, {} units paid to Bob, bridge's own loss {} units, \
         Fulfills Bob wrote down that never reached the bridge: {} ({} units), legacy stores disagreeing with \
         themselves after {} rounds, Alice's transfers decided by their sum and labelled otherwise than hers: {}, \
         {} violations",
        tally.kills,
        tally.sent,
        tally.bridge_loss,
        tally.lost_in_flight.0,
        tally.lost_in_flight.1,
        tally.legacy_self_disagreements,
        tally.decided_by_sum,
        tally.violations.len()
    );
    assert!(tally.violations.is_empty(), "{:#?}", tally.violations);
    Ok(())
}
