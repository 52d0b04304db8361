//! Books of a node between two real legacy peers: `ilp-bridge run` (the binary) routing Alice's payments to Bob,
//! both legacy 1.3.5 servers whose stores (a JSON file each) survive their own restarts; and the checks that the
//! node's RocksDB and the peers' stores agree. Shared by the fault harnesses (tests/kill9_trustline.rs,
//! tests/full_disk.rs).
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use channel_modules::store::{Limit, Sums};
use ilp_bridge::store::{Db, RocksStores};
use serde_json::json;

use crate::legacy_common::*;

/// Limits far above what a run moves.
pub(crate) const MAX_BALANCE: &str = "1000000000000000";

/// `name` from the environment as a number, else `default`.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The node's configuration: its data folder, `extra` (top-level keys and tables, e.g. `[admin]`), and Alice and
/// Bob as legacy servers on `ports` that the node dials.
pub(crate) fn node_toml(data: &Path, ports: (u16, u16), extra: &str) -> String {
    let peer = |name: &str, port: u16, prefix: &str| {
        format!(
            "[[peer]]\nname = \"{name}\"\noptions = {{ server = \"btp+ws://:{name}@127.0.0.1:{port}\", maxBalance = \"{MAX_BALANCE}\", prefix = \"{prefix}\", store = true, info = {{ currencyCode = \"USD\", currencyScale = 9 }} }}\n"
        )
    };
    format!(
        "data_dir = {data:?}\n{extra}\n{}{}",
        peer("alice", ports.0, "test.a."),
        peer("bob", ports.1, "test.b.")
    )
}

/// What Alice's payments met (see [`alice_pays_bob`]).
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// `sendTransfer` succeeded (the node took the Prepare).
    pub(crate) accepted: u64,
    /// `sendTransfer` was refused.
    pub(crate) refused: u64,
    /// The last refusal's error.
    pub(crate) last_refusal: String,
}

/// Alice pays `test.b.bob` through the node (amounts 1,000 + n, fulfilled with [`preimage`], expiring after
/// `expiry_ms`), one transfer at a time, until `stop`; then gives Alice back with what her payments met.
pub(crate) fn alice_pays_bob(
    mut alice: JsPeer,
    expiry_ms: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<R<(JsPeer, Load)>> {
    tokio::spawn(async move {
        let mut seen = Load::default();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let amount = 1_000 + sent;
            let ilp = alice.payment("test.b.bob", amount).await?;
            let (_, t) = js_transfer(
                &preimage(),
                amount,
                expiry_ms,
                ilp.as_str().unwrap_or_default(),
            );
            match alice.call("sendTransfer", t).await? {
                Ok(_) => seen.accepted += 1,
                Err(e) => {
                    seen.refused += 1;
                    seen.last_refusal = e.to_string();
                    // Refused at once (the node is gone or refuses work): do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            sent += 1;
        }
        R::Ok((alice, seen))
    })
}

pub(crate) fn preimage() -> [u8; 32] {
    [7u8; 32]
}

pub(crate) struct Peers {
    pub(crate) alice: JsPeer,
    pub(crate) bob: JsPeer,
}

/// Starts Alice and Bob (legacy 1.3.5 servers on `ports`, stores in `dir`; Bob fulfils every transfer at once).
pub(crate) async fn start_peers(dir: &Path, ports: (u16, u16)) -> R<Peers> {
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
pub(crate) struct Node(tokio::process::Child);

impl Node {
    /// Starts the node; its log is appended to `log`.
    pub(crate) fn start(config: &Path, log: &Path) -> R<Node> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        // The node logs on stderr; both go to the log file.
        let out = log.try_clone()?;
        Ok(Node(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
                .arg("run")
                .arg("--config")
                .arg(config)
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()?,
        ))
    }

    /// The node's process ID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.0.id()
    }

    pub(crate) fn signal(&self, signal: &str) -> R<()> {
        let pid = self.0.id().ok_or("the node has exited")?;
        std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        Ok(())
    }

    pub(crate) async fn kill(mut self) -> R<()> {
        self.signal("KILL")?;
        self.0.wait().await?;
        Ok(())
    }

    pub(crate) async fn stop(mut self) -> R<()> {
        self.signal("TERM")?;
        let status = tokio::time::timeout(WAIT, self.0.wait()).await??;
        if !status.success() {
            return Err(format!("ilp-bridge exited with {status} after SIGTERM").into());
        }
        Ok(())
    }
}

/// Waits until the bridge is connected to both peers (each answers a balance request through it).
pub(crate) async fn wait_connected(peers: &mut Peers) -> R<()> {
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

pub(crate) fn sums(data: &Path, peer: &str) -> R<Sums> {
    let db = Db::open(data)?;
    let stores = RocksStores::new(db, peer, Limit::Unbounded, Limit::Unbounded);
    Ok(stores.transfer_log("")?.sums())
}

/// A transfer the legacy peer and the bridge disagree on: one holds it fulfilled, the other does not (printed with
/// `Debug` in the violation messages).
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Disagreement {
    pub(crate) id: String,
    pub(crate) amount: i128,
    /// Incoming at the legacy peer (the bridge paid it).
    pub(crate) incoming_at_peer: bool,
    /// The legacy peer's state.
    pub(crate) peer_state: String,
    /// The bridge's state (`None`: no record).
    pub(crate) bridge_state: Option<String>,
}

/// Every transfer of the legacy peer's `store` (its JSON file) whose fulfilled-or-not differs from the bridge's
/// record in its log for `peer`.
pub(crate) async fn disagreements(store: &Path, data: &Path, peer: &str) -> R<Vec<Disagreement>> {
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
pub(crate) fn decided_by_sum(log: &Path) -> R<Vec<String>> {
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
pub(crate) fn record_balance(store: &Path) -> R<i128> {
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

pub(crate) fn balance(s: &Sums) -> i128 {
    i128::try_from(s.incoming_fulfilled.0).unwrap_or(i128::MAX)
        - i128::try_from(s.outgoing_fulfilled.0).unwrap_or(i128::MAX)
}

pub(crate) async fn js_balance(p: &mut JsPeer) -> R<i128> {
    Ok(p.ok("getBalance", json!({}))
        .await?
        .as_str()
        .ok_or("balance")?
        .parse()?)
}

/// What [`check_books`] found.
#[derive(Debug, Default)]
pub(crate) struct Books {
    /// Each failed check, described.
    pub(crate) violations: Vec<String>,
    /// Transfers Bob wrote down as fulfilled whose Fulfill never reached the node (it died first): count and
    /// amount, over all rounds (Bob's store keeps every round's).
    pub(crate) lost_in_flight: (u64, i128),
    /// Alice's transfers the node decided by their sum and labelled otherwise than Alice (over all rounds).
    pub(crate) decided_by_sum: usize,
    /// What the node paid Bob beyond what Alice paid it (upstream expiries while it was down).
    pub(crate) bridge_loss: i128,
    /// What the node paid Bob in all.
    pub(crate) paid_to_bob: i128,
    /// A legacy peer's balance rows that disagree with its own transfer records (the legacy store's, not
    /// counted against the node).
    pub(crate) legacy_self_disagreements: Vec<String>,
}

/// Compares the node's books (its RocksDB in `data`, stopped) with Alice's and Bob's (their stores in `dir`,
/// their balances asked live) after the node finished or expired what it had in flight:
///
/// 1. each link's two sides agree: each legacy peer's balance (from its transfer records) is minus the node's
///    balance with it, transfer by transfer, except Fulfills Bob wrote down that never reached the node (the
///    legacy payee commits its Fulfill before sending it, docs/legacy-btp.md §16.22) and Alice's transfers the
///    node decided by their sum (docs/legacy-btp.md §16.23; the balance must still agree);
/// 2. nothing is left prepared at the node;
/// 3. the node was never paid more by Alice than it paid Bob.
pub(crate) async fn check_books(
    dir: &Path,
    data: &Path,
    node_log: &Path,
    peers: &mut Peers,
) -> R<Books> {
    let mut books = Books::default();
    let a = sums(data, "alice")?;
    let b = sums(data, "bob")?;
    let alice_reported = js_balance(&mut peers.alice).await?;
    let bob_reported = js_balance(&mut peers.bob).await?;
    let alice_balance = record_balance(&dir.join("alice.json"))?;
    let bob_balance = record_balance(&dir.join("bob.json"))?;
    for (who, reported, records) in [
        ("Alice", alice_reported, alice_balance),
        ("Bob", bob_reported, bob_balance),
    ] {
        if reported != records {
            books.legacy_self_disagreements.push(format!(
                "{who}'s own store disagrees with itself: balance rows {reported}, records {records} \
                 (legacy; compared by records)"
            ));
        }
    }
    let mut check = |ok: bool, what: String| {
        if !ok {
            books.violations.push(what);
        }
    };
    // Fulfills Bob wrote down that never reached the bridge: the legacy plugin writes its Fulfill down
    // before it sends it, so a payer that dies in between cannot know. Reported apart; anything else is a
    // violation.
    let bob_diff = disagreements(&dir.join("bob.json"), data, "bob").await?;
    let (lost, other): (Vec<_>, Vec<_>) = bob_diff
        .into_iter()
        .partition(|d| d.incoming_at_peer && d.peer_state == "fulfilled");
    let lost_amount: i128 = lost.iter().map(|d| d.amount).sum();
    // Bob's store holds every round's: the figure is cumulative already.
    books.lost_in_flight = (lost.len() as u64, lost_amount);
    let alice_diff = disagreements(&dir.join("alice.json"), data, "alice").await?;
    // Fulfills a restarted legacy peer answered with TypeError whose amounts add up to its balance in several
    // ways are decided by their sum once expired (docs/legacy-btp.md §16.23): the balance must agree, and the
    // bridge must have finished each and said so in its log; which of the alike transfers the peer applied
    // no one can tell.
    let by_sum = decided_by_sum(node_log)?;
    let (excused, alice_diff): (Vec<_>, Vec<_>) = alice_diff.into_iter().partition(|d| {
        !d.incoming_at_peer
            && d.bridge_state
                .as_deref()
                .is_some_and(|s| !s.starts_with("Prepared"))
            && by_sum.iter().any(|line| line.contains(&d.id))
    });
    books.decided_by_sum = excused.len();
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
    books.bridge_loss = paid_to_bob - paid_by_alice;
    books.paid_to_bob = paid_to_bob;
    Ok(books)
}
