//! kill -9 under load, settlement-engine mode (RELIABILITY.md): two engines, A and B, each the real binary
//! (`ilp-bridge run --config` with a `[settlement-engine]` section, `trustline` module, its own RocksDB folder),
//! each behind a mock interledger-rs connector (`ilp_bridge::testing::MockConnector`) in this process; the two
//! connectors are linked, so engine A's IOUs reach engine B and B credits connector B.
//!
//! Each round: both engines start on their folders; connector A sends settle requests for its account to engine A
//! from several tasks at once (varied amounts at scale 9, the module works at scale 6, so leftovers carry over),
//! each with interledger-rs's client behaviour (a fresh Idempotency-Key per attempt, retries); after a random delay
//! A, B or both get **SIGKILL** (which, and when, from the seed), are restarted (mostly within 300 ms; one round
//! in ten after 3.5–4.5 s, longer than connector A retries), the settle requests in flight finish (retried by
//! the connector, or given up), everything is left to settle and be credited, and both are stopped with
//! SIGTERM. Then, from the engines' databases and what the connectors saw:
//!
//! 1. every settle request connector A got a 2xx for is in engine A's records (under the key of the attempt that
//!    got it); every request engine A recorded is one connector A sent; no key is recorded twice;
//! 2. what engine A recorded adds up to what it settled (module units plus leftover), nothing queued or in flight;
//! 3. engine B received what A settled, connector B was credited exactly that, each credit under its own key, every
//!    credit known to engine B; nothing left pending at B;
//! 4. requests that got no 2xx were paid once or not at all (which one is counted).
//!
//! Reported apart (the mock connector's documented interledger-rs behaviour, not the engine's): a request paid
//! twice because the answer to an attempt the engine had accepted was lost (killed before answering) and the
//! connector retried under a **fresh** key (in a round where engine A was not killed, a violation: a live engine
//! owes every answer); and a credit refused with 409 because engine B was killed after
//! connector B took it and before B recorded that (interledger-rs answers 409 to a retried key; the engine raises
//! an alert and does not retry; the credit was made once).
//!
//! `KILL9_ROUNDS` (default 20) rounds, `KILL9_SEED` (default: from the clock, printed). The engines' folders
//! and logs are kept after a failure, or always with `KILL9_KEEP=1`.

mod poll_common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ilp_bridge::settlement::quantity::Scaled;
use ilp_bridge::settlement::store::{
    keys, CreditRecord, CreditStatus, Family, HistoryRecord, IncomingRecord, OutgoingRecord,
    QueuedRequest, RocksSeStore, SeStore,
};
use ilp_bridge::store::Db;
use ilp_bridge::testing::mock_connector::{MockConnector, SettlePolicy};
use ilp_bridge::testing::settle_client::{settle_with_fresh_keys, SettleAttempt};
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type R<T> = Result<T, BoxError>;

/// Scale of connector A's settle requests and of connector B's credits.
const CONNECTOR_SCALE: u8 = 9;
/// The module's scale: 1,000 connector units make one module unit.
const MODULE_SCALE: u8 = 6;
const UNITS_PER_MODULE_UNIT: u128 = 1_000;
/// Each engine trusts its peer far beyond what a campaign moves.
const TRUST_LIMIT: &str = "1000000000000000000000000000000";
const ADMIN_TOKEN: &str = "kill9-engine-admin";
/// How long an engine may take to answer its admin API after it is started (a guard against hanging).
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long the settle requests in flight at the kill may take to finish, retries included (a guard).
const LOAD_LIMIT: Duration = Duration::from_secs(120);
/// How long everything may take to settle and be credited after the restart (a guard, not a speed assertion).
const QUIET_LIMIT: Duration = Duration::from_secs(30);
/// How long an engine may take to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// interledger-rs's settle client (a fresh key per attempt, 5 s timeout, 10 retries), with short waits between
/// attempts so that a round stays short: 10 retries 300 ms apart cover an engine down for 3 s.
fn settle_policy() -> SettlePolicy {
    SettlePolicy {
        wait_after_error: Duration::from_millis(300),
        wait_after_connect_error: Duration::from_millis(300),
        ..SettlePolicy::default()
    }
}

fn free_port() -> R<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// `s` at the connector's scale, as an integer (the harness's amounts fit in u128).
fn at_connector_scale(s: &Scaled) -> R<u128> {
    let v = s
        .upscale(CONNECTOR_SCALE)
        .ok_or_else(|| format!("{s} is finer than scale {CONNECTOR_SCALE}"))?;
    Ok(u128::try_from(v)?)
}

/// `now − before`, signed: a total that went down shows as a negative change, not an overflow.
fn delta(now: u128, before: u128) -> i128 {
    now as i128 - before as i128
}

fn module_units(u: &channel_modules::amount::ModuleUnits) -> R<u128> {
    Ok(u128::try_from(u.0.clone())?)
}

/// One engine: its configuration, folder, log and addresses.
struct EngineSpec {
    name: &'static str,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    api: u16,
    admin: u16,
}

impl EngineSpec {
    fn new(dir: &Path, name: &'static str, connector: &str) -> R<EngineSpec> {
        let spec = EngineSpec {
            name,
            config: dir.join(format!("{name}.toml")),
            data: dir.join(format!("{name}-data")),
            log: dir.join(format!("{name}.log")),
            api: free_port()?,
            admin: free_port()?,
        };
        std::fs::write(
            &spec.config,
            format!(
                "data_dir = {:?}\n\n[settlement-engine]\nlisten = \"127.0.0.1:{}\"\nconnector = \"{connector}\"\n\
                 admin_listen = \"127.0.0.1:{}\"\nadmin_token = \"{ADMIN_TOKEN}\"\nmodule = \"trustline\"\n\
                 module_options = {{ scale = {MODULE_SCALE}, trustLimit = \"{TRUST_LIMIT}\" }}\n\
                 connector_scale = {CONNECTOR_SCALE}\nretry_initial_ms = 20\nretry_max_ms = 200\n",
                spec.data, spec.api, spec.admin
            ),
        )?;
        Ok(spec)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    /// Starts the engine (its log, stdout and stderr, appended to its log file) and waits until its admin API
    /// answers, which it does once the stored accounts are loaded.
    async fn start(&self) -> R<EngineProc> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // The node logs on stderr; both go to the log file.
        let out = log.try_clone()?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut proc = EngineProc { child };
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/accounts", self.admin);
        let started = poll_common::poll_until(self.name, START_LIMIT, || async {
            http.get(&url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if let Err(e) = started {
            let exited = proc.child.try_wait()?;
            return Err(format!(
                "engine {} did not start ({e}; exit status {exited:?}); see {}",
                self.name,
                self.log.display()
            )
            .into());
        }
        Ok(proc)
    }

    /// The account's operator view (`GET /accounts/{id}` on the admin API).
    async fn view(&self, account: &str) -> R<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/accounts/{account}",
                self.admin
            ))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("engine {} view: {}", self.name, resp.status()).into());
        }
        Ok(resp.json().await?)
    }
}

/// A running engine process.
struct EngineProc {
    child: tokio::process::Child,
}

impl EngineProc {
    fn signal(&self, signal: &str) -> R<()> {
        let pid = self.child.id().ok_or("the engine has exited")?;
        std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        Ok(())
    }

    async fn kill(mut self) -> R<()> {
        self.signal("KILL")?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM; `Err` if it does not exit cleanly in time.
    async fn stop(mut self) -> R<()> {
        self.signal("TERM")?;
        let status = tokio::time::timeout(STOP_LIMIT, self.child.wait()).await??;
        if !status.success() {
            return Err(format!("exited with {status} after SIGTERM").into());
        }
        Ok(())
    }
}

/// How a settle request ended at connector A.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A 2xx: the engine took it.
    Accepted,
    /// A 4xx (not retried by interledger-rs: refunded).
    Refused(u16, String),
    /// No 2xx or 4xx after every retry (refunded).
    GaveUp(String),
}

/// One settle request of connector A, with every attempt (each under its own key).
#[derive(Debug, Clone)]
struct Request {
    amount: u64,
    attempts: Vec<SettleAttempt>,
    /// The key of the attempt that got the final answer (for `Accepted` and `Refused`).
    final_key: Option<String>,
    outcome: Outcome,
}

/// Connector A's settle load: `workers` tasks sending requests one after the other until `stop`.
fn start_load(
    http: reqwest::Client,
    url: String,
    workers: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Request>>> {
    (0..workers)
        .map(|w| {
            let http = http.clone();
            let url = url.clone();
            let stop = stop.clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            tokio::spawn(async move {
                let mut done = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    // 0.000000001 to 0.003 units: most leave a leftover below the module's unit.
                    let amount: u64 = rng.gen_range(1..=3_000_000);
                    let body = format!(r#"{{"amount":"{amount}","scale":{CONNECTOR_SCALE}}}"#);
                    let seen = Arc::new(Mutex::new(Vec::new()));
                    let record = {
                        let seen = seen.clone();
                        move |a: SettleAttempt| {
                            if let Ok(mut s) = seen.lock() {
                                s.push(a);
                            }
                        }
                    };
                    let result =
                        settle_with_fresh_keys(&http, &url, &body, settle_policy(), true, &record)
                            .await;
                    let attempts = seen.lock().map(|s| s.clone()).unwrap_or_default();
                    let (final_key, outcome) = match result {
                        Ok(o) if (200..300).contains(&o.status) => (Some(o.key), Outcome::Accepted),
                        Ok(o) => (Some(o.key), Outcome::Refused(o.status, o.body)),
                        Err(e) => (None, Outcome::GaveUp(e.last_error)),
                    };
                    done.push(Request {
                        amount,
                        attempts,
                        final_key,
                        outcome,
                    });
                }
                done
            })
        })
        .collect()
}

/// Engine A's records of the account, read from its database.
struct BooksA {
    queued: Vec<QueuedRequest>,
    history: Vec<HistoryRecord>,
    idempotency_keys: HashSet<String>,
    out: OutgoingRecord,
}

/// Engine B's records of the account.
struct BooksB {
    incoming: IncomingRecord,
    /// Not credited yet, or refused with 409.
    pending: Vec<CreditRecord>,
    credited: Vec<CreditRecord>,
}

fn open_store(data: &Path) -> R<RocksSeStore> {
    Ok(RocksSeStore::new(Db::open(data)?))
}

fn decode<T: serde::de::DeserializeOwned>(rows: Vec<(String, Vec<u8>)>) -> R<Vec<T>> {
    rows.into_iter()
        .map(|(k, v)| serde_json::from_slice(&v).map_err(|e| format!("{k}: {e}").into()))
        .collect()
}

fn read_a(data: &Path, account: &str) -> R<BooksA> {
    let store = open_store(data)?;
    let queued = decode(store.scan_prefix(Family::Pending, &keys::account_prefix('q', account))?)?;
    let history = decode(store.scan_prefix(Family::Main, &keys::account_prefix('h', account))?)?;
    let kprefix = keys::account_prefix('k', account);
    let idempotency_keys = store
        .scan_prefix(Family::Main, &kprefix)?
        .into_iter()
        .map(|(k, _)| keys::suffix(&k, &kprefix).to_owned())
        .collect();
    let out = match store.get_main(&keys::outgoing(account))? {
        Some(v) => serde_json::from_slice(&v)?,
        None => OutgoingRecord::default(),
    };
    Ok(BooksA {
        queued,
        history,
        idempotency_keys,
        out,
    })
}

fn read_b(data: &Path, account: &str) -> R<BooksB> {
    let store = open_store(data)?;
    let incoming = match store.get_main(&keys::incoming(account))? {
        Some(v) => serde_json::from_slice(&v)?,
        None => IncomingRecord::default(),
    };
    let pending = decode(store.scan_prefix(Family::Pending, &keys::account_prefix('c', account))?)?;
    let credited = decode(store.scan_prefix(Family::Main, &keys::account_prefix('r', account))?)?;
    Ok(BooksB {
        incoming,
        pending,
        credited,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    A,
    B,
    Both,
}

#[derive(Default, Debug)]
struct Tally {
    kills_a: u64,
    kills_b: u64,
    requests: u64,
    accepted: u64,
    /// Requests that got no 2xx: paid once, not paid.
    unanswered_paid: u64,
    unanswered_unpaid: u64,
    /// Paid more than once: the answer to an accepted attempt was lost and the retry came under a fresh key (the
    /// connector's behaviour): requests, and the amount paid beyond once.
    fresh_key_duplicates: u64,
    fresh_key_duplicate_amount: u128,
    /// Credits refused with 409 after engine B's restart, each made once before it (the connector's behaviour).
    credit_conflicts: u64,
    /// Module units engine A settled, all rounds.
    settled: u128,
    violations: Vec<String>,
}

/// What the previous round left, to check this round's changes against.
#[derive(Default)]
struct Seen {
    /// Engine A's recorded settle requests, by key.
    history_keys: HashSet<String>,
    /// Engine A's settled total (module units) and accepted total (connector units).
    settled: u128,
    accepted_total: u128,
    /// Engine B's received total (module units).
    received: u128,
    /// Connector B's credits so far.
    credits: usize,
    /// 409 credits already counted.
    conflicts: HashSet<String>,
    /// Violations already reported (a lasting fault is reported once).
    reported: HashSet<String>,
}

#[tokio::test]
async fn engines_killed_with_sigkill_under_load_pay_and_credit_each_request_once() -> R<()> {
    let rounds: u64 = std::env::var("KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("kill -9 engine campaign: {rounds} rounds, KILL9_SEED={seed}");
    let dir = tempfile::tempdir()?;
    let outcome = campaign(dir.path(), rounds, seed).await;
    let clean = matches!(&outcome, Ok(tally) if tally.violations.is_empty());
    if !clean || std::env::var_os("KILL9_KEEP").is_some() {
        // Keep the engines' logs and databases for a look.
        let kept = dir.keep();
        eprintln!("logs and databases kept in {}", kept.display());
    }
    let tally = outcome?;
    assert!(tally.violations.is_empty(), "{:#?}", tally.violations);
    Ok(())
}

/// Runs the rounds with the engines' folders and logs in `dir`; returns the tally (violations included).
async fn campaign(dir: &Path, rounds: u64, seed: u64) -> R<Tally> {
    eprintln!("engines' folders and logs: {}", dir.display());
    let started = std::time::Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mock_a = MockConnector::start().await?;
    let mock_b = MockConnector::start().await?;
    let spec_a = EngineSpec::new(dir, "engine-a", &mock_a.url())?;
    let spec_b = EngineSpec::new(dir, "engine-b", &mock_b.url())?;
    // The accounts, created as interledger-rs does, once; the engines keep them across restarts.
    let (account_a, account_b) = {
        let a = spec_a.start().await?;
        let b = spec_b.start().await?;
        let ids = (
            mock_a.add_account(&spec_a.url()).await?,
            mock_b.add_account(&spec_b.url()).await?,
        );
        a.stop().await?;
        b.stop().await?;
        ids
    };
    MockConnector::link(&mock_a, &account_a, &mock_b, &account_b)?;
    let settle_url = format!("{}/accounts/{account_a}/settlements", spec_a.url());
    let http = reqwest::Client::new();

    let mut tally = Tally::default();
    let mut seen = Seen::default();
    // Every request connector A sent, and every key it sent them under.
    let mut all: Vec<Request> = Vec::new();
    let mut sent_keys: HashSet<String> = HashSet::new();

    for round in 0..rounds {
        let mut a = Some(spec_a.start().await?);
        let mut b = Some(spec_b.start().await?);
        let stop = Arc::new(AtomicBool::new(false));
        let workers = rng.gen_range(1..=6);
        let load = start_load(
            http.clone(),
            settle_url.clone(),
            workers,
            rng.gen(),
            stop.clone(),
        );
        let delay = rng.gen_range(50..800);
        let victim = match rng.gen_range(0..20) {
            0..=11 => Victim::A,
            12..=16 => Victim::B,
            _ => Victim::Both,
        };
        // Mostly back before connector A's retries run out; one round in ten down longer than they last
        // (`settle_policy`), so that requests in flight get no answer at all.
        let down_ms = if rng.gen_range(0..10) == 0 {
            rng.gen_range(3_500..4_500)
        } else {
            rng.gen_range(0..300)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if matches!(victim, Victim::A | Victim::Both) {
            a.take().ok_or("engine A not running")?.kill().await?;
            tally.kills_a += 1;
        }
        if matches!(victim, Victim::B | Victim::Both) {
            b.take().ok_or("engine B not running")?.kill().await?;
            tally.kills_b += 1;
        }
        stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        if a.is_none() {
            a = Some(spec_a.start().await?);
        }
        if b.is_none() {
            b = Some(spec_b.start().await?);
        }
        // The requests in flight at the kill finish (retried under fresh keys).
        let first_of_round = all.len();
        for task in load {
            for req in tokio::time::timeout(LOAD_LIMIT, task).await?? {
                sent_keys.extend(req.attempts.iter().map(|at| at.key.clone()));
                all.push(req);
            }
        }
        let mut violations = Vec::new();
        // Everything settles and is credited: A has nothing queued or in flight, B has received what A settled
        // and has no credit pending.
        let quiet = poll_common::poll_until("quiet", QUIET_LIMIT, || async {
            let (Ok(va), Ok(vb)) = (spec_a.view(&account_a).await, spec_b.view(&account_b).await)
            else {
                return false;
            };
            // B answers a claim once its credit is recorded, and forgets a credit once connector B took it.
            va["queued_requests"] == 0
                && va["in_flight"]["amount"] == "0"
                && vb["received"]["amount"] == va["settled"]["amount"]
                && vb["uncredited"]
                    .as_array()
                    .is_some_and(|u| u.iter().all(|c| c["status"] != "pending"))
        })
        .await;
        if let Err(e) = quiet {
            let va = spec_a.view(&account_a).await.ok();
            let vb = spec_b.view(&account_b).await.ok();
            violations.push(format!(
                "not settled and credited after {QUIET_LIMIT:?} ({e}): A {va:?}, B {vb:?}, connector B credited {}",
                mock_b.credited_total(&account_b)
            ));
        }
        for (name, engine) in [("A", a.take()), ("B", b.take())] {
            if let Some(engine) = engine {
                if let Err(e) = engine.stop().await {
                    violations.push(format!("engine {name} did not stop cleanly: {e}"));
                }
            }
        }

        let round_requests = &all[first_of_round..];
        let observed = Observed {
            requests: round_requests,
            a_killed: victim != Victim::B,
            sent_keys: &sent_keys,
            books_a: read_a(&spec_a.data, &account_a)?,
            books_b: read_b(&spec_b.data, &account_b)?,
            credits: mock_b.credits(),
        };
        let sent = round_requests.len();
        let accepted = round_requests
            .iter()
            .filter(|r| r.outcome == Outcome::Accepted)
            .count();
        eprintln!(
            "round {round}: {workers} senders, killed {victim:?} after {delay} ms, down {down_ms} ms; \
             {sent} requests, {accepted} accepted"
        );
        violations.extend(check_round(&observed, &mut seen, &mut tally)?);
        for v in violations {
            if seen.reported.insert(v.clone()) {
                eprintln!("round {round} (seed {seed}): VIOLATION {v}");
                tally.violations.push(format!("round {round}: {v}"));
            }
        }
    }
    tally.settled = seen.settled;
    eprintln!(
        "kill -9 engine campaign done: seed {seed}, {rounds} rounds, {:.0} s, SIGKILLs: engine A {}, engine B {}; \
         {} settle requests, {} accepted, of the others {} paid once and {} not paid; {} module units settled \
         and credited; connector behaviour: {} requests paid twice after a lost answer (fresh key on retry, {} \
         units beyond once), {} credits refused with 409 after B's restart (made once); {} violations",
        started.elapsed().as_secs_f64(),
        tally.kills_a,
        tally.kills_b,
        tally.requests,
        tally.accepted,
        tally.unanswered_paid,
        tally.unanswered_unpaid,
        tally.settled,
        tally.fresh_key_duplicates,
        tally.fresh_key_duplicate_amount,
        tally.credit_conflicts,
        tally.violations.len()
    );
    Ok(tally)
}

/// What a round left: connector A's requests, the engines' records, connector B's credits.
struct Observed<'a> {
    /// The round's settle requests.
    requests: &'a [Request],
    /// Engine A was killed this round.
    a_killed: bool,
    /// Every key connector A ever sent.
    sent_keys: &'a HashSet<String>,
    books_a: BooksA,
    books_b: BooksB,
    /// Every credit connector B took, in order.
    credits: Vec<ilp_bridge::testing::mock_connector::MockCredit>,
}

/// The checks after a round (see the module doc). Returns the violations found.
fn check_round(observed: &Observed<'_>, seen: &mut Seen, tally: &mut Tally) -> R<Vec<String>> {
    let Observed {
        requests,
        a_killed,
        sent_keys,
        books_a,
        books_b,
        credits,
    } = observed;
    let a_killed = *a_killed;
    let mut v = Vec::new();

    // Engine A: what it recorded.
    if !books_a.queued.is_empty() {
        v.push(format!(
            "{} settle requests left queued at engine A",
            books_a.queued.len()
        ));
    }
    let mut history_keys: HashSet<String> = HashSet::new();
    let mut new_history = Vec::new();
    for h in &books_a.history {
        let Some(key) = &h.request.key else {
            v.push(format!(
                "engine A recorded request seq {} without a key (connector A always sends one)",
                h.request.seq
            ));
            continue;
        };
        if !history_keys.insert(key.clone()) {
            v.push(format!("engine A recorded key {key} twice"));
        }
        if !books_a.idempotency_keys.contains(key) {
            v.push(format!(
                "engine A settled key {key} without its idempotency record"
            ));
        }
        if !seen.history_keys.contains(key) {
            new_history.push(h);
        }
    }
    for key in &books_a.idempotency_keys {
        if !history_keys.contains(key)
            && !books_a.queued.iter().any(|q| q.key.as_ref() == Some(key))
        {
            v.push(format!(
                "engine A answered key {key} but neither queued nor settled it"
            ));
        }
    }
    let mut new_accepted: u128 = 0;
    for h in &new_history {
        let key = h.request.key.clone().unwrap_or_default();
        new_accepted += at_connector_scale(&h.request.amount)?;
        if !sent_keys.contains(&key) {
            v.push(format!(
                "engine A settled key {key} that connector A never sent"
            ));
        }
    }

    // Each request of the round: paid how many times.
    let mut paid_total: u128 = 0;
    for r in requests.iter() {
        tally.requests += 1;
        let paid = r
            .attempts
            .iter()
            .filter(|a| history_keys.contains(&a.key))
            .count() as u128;
        paid_total += paid * u128::from(r.amount);
        match &r.outcome {
            Outcome::Accepted => {
                tally.accepted += 1;
                let key = r.final_key.clone().unwrap_or_default();
                if !history_keys.contains(&key) {
                    v.push(format!(
                        "settle request of {} answered 2xx under key {key} is not in engine A's records",
                        r.amount
                    ));
                }
            }
            Outcome::Refused(status, body) => {
                v.push(format!(
                    "settle request of {} refused with {status}: {body}",
                    r.amount
                ));
            }
            Outcome::GaveUp(_) if paid == 0 => tally.unanswered_unpaid += 1,
            Outcome::GaveUp(_) => tally.unanswered_paid += 1,
        }
        if paid > 1 && !a_killed {
            // Only an engine that dies between its write and its answer loses an answer it owes.
            v.push(format!(
                "a settle request of {} was paid {paid} times though engine A was not killed: attempts {:?}",
                r.amount, r.attempts
            ));
        } else if paid > 1 {
            tally.fresh_key_duplicates += 1;
            tally.fresh_key_duplicate_amount += (paid - 1) * u128::from(r.amount);
            eprintln!(
                "  connector behaviour: a request of {} ({:?}) paid {paid} times: attempts {:?}",
                r.amount, r.outcome, r.attempts
            );
        }
    }
    if paid_total != new_accepted {
        v.push(format!(
            "the round's requests were paid {paid_total} by their keys, engine A recorded {new_accepted} new"
        ));
    }

    // Engine A's totals: what it recorded adds up to what it settled.
    let out = &books_a.out;
    let settled = module_units(&out.settled_total)?;
    let target = module_units(&out.target_total)?;
    let accepted_total = target * UNITS_PER_MODULE_UNIT + at_connector_scale(&out.leftover)?;
    if target != settled {
        v.push(format!(
            "engine A has {} module units in flight (target {target}, settled {settled})",
            target.saturating_sub(settled)
        ));
    }
    let moved = delta(accepted_total, seen.accepted_total);
    if moved != new_accepted as i128 {
        v.push(format!(
            "engine A's accepted total moved by {moved} (units and leftover), its new records add up to {new_accepted}"
        ));
    }

    // Engine B and connector B.
    let received = module_units(&books_b.incoming.received_total)?;
    let settled_now = delta(settled, seen.settled);
    if delta(received, seen.received) != settled_now {
        v.push(format!(
            "engine B received {} module units this round, engine A settled {settled_now}",
            delta(received, seen.received),
        ));
    }
    if !books_b.incoming.leftover.is_zero() {
        v.push(format!(
            "engine B holds an incoming leftover {} (cannot be: the connector's scale is finer)",
            books_b.incoming.leftover
        ));
    }
    let mut b_keys: HashMap<String, u128> = HashMap::new();
    for c in &books_b.credited {
        b_keys.insert(c.idempotency_key.clone(), at_connector_scale(&c.amount)?);
    }
    let mock_keys: HashMap<String, u128> = credits
        .iter()
        .map(|c| Ok((c.key.clone(), at_connector_scale(&c.amount)?)))
        .collect::<R<_>>()?;
    if mock_keys.len() != credits.len() {
        v.push("connector B took two credits under one key".to_owned());
    }
    for c in &books_b.pending {
        match c.status {
            CreditStatus::Conflict => {
                match mock_keys.get(&c.idempotency_key) {
                    Some(amount) if *amount == at_connector_scale(&c.amount)? => {
                        if seen.conflicts.insert(c.idempotency_key.clone()) {
                            tally.credit_conflicts += 1;
                            eprintln!(
                                "  connector behaviour: credit {} of {} refused with 409 after engine B's \
                                 restart, made once before it",
                                c.idempotency_key, c.amount
                            );
                        }
                    }
                    _ => v.push(format!(
                        "credit {} of {} refused with 409 but connector B never took it",
                        c.idempotency_key, c.amount
                    )),
                }
                b_keys.insert(c.idempotency_key.clone(), at_connector_scale(&c.amount)?);
            }
            _ => v.push(format!(
                "credit {} of {} left {:?} at engine B",
                c.idempotency_key, c.amount, c.status
            )),
        }
    }
    for c in &books_b.credited {
        if mock_keys.get(&c.idempotency_key) != Some(&at_connector_scale(&c.amount)?) {
            v.push(format!(
                "engine B recorded credit {} of {} that connector B does not have",
                c.idempotency_key, c.amount
            ));
        }
    }
    let mut new_credited: u128 = 0;
    for c in credits.iter().skip(seen.credits) {
        let amount = at_connector_scale(&c.amount)?;
        new_credited += amount;
        if b_keys.get(&c.key) != Some(&amount) {
            v.push(format!(
                "connector B was credited {} under key {} that engine B has no record of",
                c.amount, c.key
            ));
        }
    }
    if new_credited as i128 != settled_now * UNITS_PER_MODULE_UNIT as i128 {
        v.push(format!(
            "connector B was credited {new_credited} this round, engine A settled {settled_now} module units"
        ));
    }

    seen.history_keys = history_keys;
    seen.settled = settled;
    seen.accepted_total = accepted_total;
    seen.received = received;
    seen.credits = credits.len();
    Ok(v)
}
