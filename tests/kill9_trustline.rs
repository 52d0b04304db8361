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

mod legacy_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use channel_modules::store::{Limit, Sums};
use ilp_bridge::store::{Db, RocksStores};
use legacy_common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// How long each transfer lives: long enough to cross a restart of the bridge, short enough to keep rounds short.
const TRANSFER_EXPIRY_MS: i64 = 2_500;
/// Quiet time after the restart: every transfer of the round has finished or expired by then.
const QUIESCE: Duration = Duration::from_millis(3_500);
/// Limits far above what a run moves.
const MAX_BALANCE: &str = "1000000000000000";

fn preimage() -> [u8; 32] {
    [7u8; 32]
}

struct Peers {
    alice: JsPeer,
    bob: JsPeer,
}

async fn start_peers(dir: &Path, ports: (u16, u16)) -> R<Peers> {
    let peer = |name: &'static str, port: u16, prefix: &'static str| {
        let store = dir.join(format!("{name}.json"));
        async move {
            let mut p = JsPeer::server(
                "1.3.5",
                port,
                name,
                prefix,
                MAX_BALANCE,
                &[
                    ("STORE_FILE", store.display().to_string()),
                    ("AUTO_FULFILL", "1".to_owned()),
                    ("FIXED_PREIMAGE", b64u(&preimage())),
                ],
            )
            .await?;
            p.ok("connect", json!({})).await?;
            R::Ok(p)
        }
    };
    Ok(Peers {
        alice: peer("alice", ports.0, "test.a.").await?,
        bob: peer("bob", ports.1, "test.b.").await?,
    })
}

/// `ilp-bridge run`, stopped by PID.
struct Node(tokio::process::Child);

impl Node {
    /// Starts the node; its log is appended to `log`.
    fn start(config: &Path, log: &Path) -> R<Node> {
        let log = std::fs::File::options().create(true).append(true).open(log)?;
        Ok(Node(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
                .arg("run")
                .arg("--config")
                .arg(config)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()?,
        ))
    }

    fn signal(&self, signal: &str) -> R<()> {
        let pid = self.0.id().ok_or("the node has exited")?;
        std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        Ok(())
    }

    async fn kill(mut self) -> R<()> {
        self.signal("KILL")?;
        self.0.wait().await?;
        Ok(())
    }

    async fn stop(mut self) -> R<()> {
        self.signal("TERM")?;
        let status = tokio::time::timeout(WAIT, self.0.wait()).await??;
        if !status.success() {
            return Err(format!("ilp-bridge exited with {status} after SIGTERM").into());
        }
        Ok(())
    }
}

/// Waits until the bridge is connected to both peers (each answers a balance request through it).
async fn wait_connected(peers: &mut Peers) -> R<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    for p in [&mut peers.alice, &mut peers.bob] {
        loop {
            match p.call("getPeerBalance", json!({})).await? {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("the bridge did not connect: {e}").into()),
            }
        }
    }
    Ok(())
}

fn sums(data: &Path, peer: &str) -> R<Sums> {
    let db = Db::open(data)?;
    let stores = RocksStores::new(db, peer, Limit::Unbounded, Limit::Unbounded);
    Ok(stores.transfer_log("")?.sums())
}

/// A transfer the legacy peer and the bridge disagree on: one holds it fulfilled, the other does not (printed with
/// `Debug` in the violation messages).
#[allow(dead_code)]
#[derive(Debug)]
struct Disagreement {
    id: String,
    amount: i128,
    /// Incoming at the legacy peer (the bridge paid it).
    incoming_at_peer: bool,
    /// The legacy peer's state.
    peer_state: String,
    /// The bridge's state (`None`: no record).
    bridge_state: Option<String>,
}

/// Every transfer of the legacy peer's `store` (its JSON file) whose fulfilled-or-not differs from the bridge's
/// record in its log for `peer`.
async fn disagreements(store: &Path, data: &Path, peer: &str) -> R<Vec<Disagreement>> {
    let rows: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(store)?)?;
    let db = Db::open(data)?;
    let log = RocksStores::new(db, peer, Limit::Unbounded, Limit::Unbounded).transfer_log("")?;
    let mut out = Vec::new();
    for (key, value) in rows {
        let Some(id) = key.strip_prefix(":tl:transfer:") else {
            continue;
        };
        let record: serde_json::Value = match value {
            serde_json::Value::String(s) => serde_json::from_str(&s)?,
            v => v,
        };
        let peer_fulfilled = record["state"] == json!("fulfilled");
        let ours = log.get(&id.parse()?).await?.map(|r| r.state);
        let bridge_fulfilled = matches!(
            ours,
            Some(channel_modules::store::TransferState::Fulfilled { .. })
        );
        if peer_fulfilled != bridge_fulfilled {
            out.push(Disagreement {
                id: id.to_owned(),
                amount: record["transfer"]["amount"]
                    .as_str()
                    .ok_or("amount")?
                    .parse()?,
                incoming_at_peer: record["isIncoming"] == json!(true),
                peer_state: record["state"].as_str().unwrap_or("?").to_owned(),
                bridge_state: ours.map(|s| format!("{s:?}")),
            });
        }
    }
    Ok(out)
}

/// The lines of the bridge's log that report Fulfills decided by their sum (see `unsure_fulfill`).
fn decided_by_sum(log: &Path) -> R<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| l.contains("decided by their sum"))
        .map(str::to_owned)
        .collect())
}

/// The legacy peer's balance from its transfer records (incoming fulfilled − outgoing fulfilled), beside the one
/// its balance rows hold. The plugin keeps the two in separate rows written one after the other, and they can
/// drift apart (observed after its restarts: a balance row counting a transfer whose record is still
/// prepared); the records are what the bridge's books are compared with.
fn record_balance(store: &Path) -> R<i128> {
    let rows: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(store)?)?;
    let mut balance = 0i128;
    for (key, value) in rows {
        if !key.starts_with(":tl:transfer:") {
            continue;
        }
        let record: serde_json::Value = match value {
            serde_json::Value::String(s) => serde_json::from_str(&s)?,
            v => v,
        };
        if record["state"] != json!("fulfilled") {
            continue;
        }
        let amount: i128 = record["transfer"]["amount"]
            .as_str()
            .ok_or("amount")?
            .parse()?;
        balance += if record["isIncoming"] == json!(true) {
            amount
        } else {
            -amount
        };
    }
    Ok(balance)
}

fn balance(s: &Sums) -> i128 {
    i128::try_from(s.incoming_fulfilled.0).unwrap_or(i128::MAX)
        - i128::try_from(s.outgoing_fulfilled.0).unwrap_or(i128::MAX)
}

async fn js_balance(p: &mut JsPeer) -> R<i128> {
    Ok(p.ok("getBalance", json!({}))
        .await?
        .as_str()
        .ok_or("balance")?
        .parse()?)
}

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
    let rounds: u64 = std::env::var("KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("kill -9 campaign: {rounds} rounds, KILL9_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    let ports = (free_port()?, free_port()?);
    let config = dir.path().join("bridge.toml");
    let node_log = dir.path().join("bridge.log");
    let peer = |name: &str, port: u16, prefix: &str| {
        format!(
            "[[peer]]\nname = \"{name}\"\noptions = {{ server = \"btp+ws://:{name}@127.0.0.1:{port}\", maxBalance = \"{MAX_BALANCE}\", prefix = \"{prefix}\", store = true, info = {{ currencyCode = \"USD\", currencyScale = 9 }} }}\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n{}{}",
            peer("alice", ports.0, "test.a."),
            peer("bob", ports.1, "test.b.")
        ),
    )?;
    let condition_fulfillment = preimage();
    let mut tally = Tally::default();

    for round in 0..rounds {
        let mut peers = start_peers(dir.path(), ports).await?;
        let node = Node::start(&config, &node_log)?;
        wait_connected(&mut peers).await?;
        // Alice pays Bob through the bridge until the kill.
        let Peers { mut alice, bob } = peers;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let amount = 1_000 + sent;
                    let ilp = alice.payment("test.b.bob", amount).await?;
                    let (_, t) = js_transfer(
                        &condition_fulfillment,
                        amount,
                        TRANSFER_EXPIRY_MS,
                        ilp.as_str().unwrap_or_default(),
                    );
                    let _ = alice.call("sendTransfer", t).await?;
                    sent += 1;
                }
                R::Ok(alice)
            })
        };
        let delay = rng.gen_range(50..800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        node.kill().await?;
        tally.kills += 1;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The legacy plugin writes a change as several store rows one after the other (the transfer, then the
        // balance): the peers finish what they started before they are stopped, so each store is one the plugin
        // itself could have left (the bridge is the one under test).
        let alice = tokio::time::timeout(WAIT, load).await???;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop((alice, bob));

        // Restart the peers on their stores, then the bridge; let everything finish or expire; stop it.
        let mut peers = start_peers(dir.path(), ports).await?;
        let node = Node::start(&config, &node_log)?;
        wait_connected(&mut peers).await?;
        tokio::time::sleep(QUIESCE).await;
        node.stop().await?;

        let a = sums(&data, "alice")?;
        let b = sums(&data, "bob")?;
        let alice_reported = js_balance(&mut peers.alice).await?;
        let bob_reported = js_balance(&mut peers.bob).await?;
        let alice_balance = record_balance(&dir.path().join("alice.json"))?;
        let bob_balance = record_balance(&dir.path().join("bob.json"))?;
        for (who, reported, records) in [
            ("Alice", alice_reported, alice_balance),
            ("Bob", bob_reported, bob_balance),
        ] {
            if reported != records {
                eprintln!(
                    "round {round}: {who}'s own store disagrees with itself: balance rows {reported}, records \
                     {records} (legacy; compared by records)"
                );
                tally.legacy_self_disagreements += 1;
            }
        }
        let mut check = |ok: bool, what: String| {
            if !ok {
                eprintln!("round {round} (seed {seed}): VIOLATION {what}");
                tally.violations.push(format!("round {round}: {what}"));
            }
        };
        // Fulfills Bob wrote down that never reached the bridge: the legacy plugin writes its Fulfill down
        // before it sends it, so a payer that dies in between cannot know. Reported apart; anything else is a
        // violation.
        let bob_diff = disagreements(&dir.path().join("bob.json"), &data, "bob").await?;
        let (lost, other): (Vec<_>, Vec<_>) = bob_diff
            .into_iter()
            .partition(|d| d.incoming_at_peer && d.peer_state == "fulfilled");
        let lost_amount: i128 = lost.iter().map(|d| d.amount).sum();
        // Bob's store holds every round's: the figure is cumulative already.
        tally.lost_in_flight = (lost.len() as u64, lost_amount);
        let alice_diff = disagreements(&dir.path().join("alice.json"), &data, "alice").await?;
        // Fulfills a restarted legacy peer answered with TypeError whose amounts add up to its balance in several
        // ways are decided by their sum once expired (docs/legacy-btp.md §16.23): the balance must agree, and the
        // bridge must have finished each and said so in its log; which of the alike transfers the peer applied
        // no one can tell.
        let by_sum = decided_by_sum(&node_log)?;
        let (excused, alice_diff): (Vec<_>, Vec<_>) = alice_diff.into_iter().partition(|d| {
            !d.incoming_at_peer
                && d.bridge_state.as_deref().is_some_and(|s| !s.starts_with("Prepared"))
                && by_sum.iter().any(|line| line.contains(&d.id))
        });
        tally.decided_by_sum = excused.len();
        check(
            alice_balance == -balance(&a) && alice_diff.is_empty(),
            format!(
                "Alice's balance {alice_balance} is not minus the bridge's {}: {alice_diff:?}",
                balance(&a)
            ),
        );
        check(
            bob_balance == -balance(&b) + lost_amount && other.is_empty(),
            format!(
                "Bob's balance {bob_balance} is not minus the bridge's {} plus the {lost_amount} Bob wrote down \
                 and never got to the bridge: {other:?}",
                balance(&b)
            ),
        );
        check(
            a.incoming_fulfilled_and_prepared == a.incoming_fulfilled
                && a.outgoing_fulfilled_and_prepared == a.outgoing_fulfilled
                && b.incoming_fulfilled_and_prepared == b.incoming_fulfilled
                && b.outgoing_fulfilled_and_prepared == b.outgoing_fulfilled,
            format!("transfers left prepared at the bridge: alice {a:?}, bob {b:?}"),
        );
        let paid_by_alice = i128::try_from(a.incoming_fulfilled.0)?;
        let paid_to_bob = i128::try_from(b.outgoing_fulfilled.0)?;
        check(
            paid_by_alice <= paid_to_bob,
            format!("the bridge was paid {paid_by_alice} by Alice and paid Bob only {paid_to_bob}"),
        );
        tally.bridge_loss = paid_to_bob - paid_by_alice;
        tally.sent = paid_to_bob.try_into().unwrap_or(u64::MAX);
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
