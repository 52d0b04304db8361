//! Settlement engine edge cases driven through the engine with a test module: a module's limit on an account's
//! cumulative settlements (refused with 400 before anything is written, race-free, replays still replay), and
//! an account kept by a failed delete whose state cannot be read back at once.

mod poll_common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use bytes::Bytes;
use channel_modules::amount::ModuleUnits;
use channel_modules::store::{StoreError, TransferRecord};
use channel_modules::{ChannelContext, ChannelModule, Claim, IncomingCredit, ModuleError};
use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::api;
use ilp_bridge::settlement::engine::{Engine, ModuleFactory};
use ilp_bridge::settlement::error::EngineError;
use ilp_bridge::settlement::host::MemoryModuleLogs;
use ilp_bridge::settlement::store::{Family, MemorySeStore, Op, SeBatch, SeStore, SeTicket};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

/// The HTTP status the engine API answers `error` with.
fn status_of(error: EngineError) -> StatusCode {
    api::Problem::from(error).status
}

/// Longest wait for the engine's workers (a guard against hanging, not a speed assertion).
const WAIT: Duration = Duration::from_secs(30);
/// How long a slow sync takes (see `FlakyStore::slow_sync`).
const SLOW_SYNC: Duration = Duration::from_millis(50);
/// How long a slow `disconnect` waits before it answers.
const SLOW_DISCONNECT: Duration = Duration::from_secs(1);

/// Switches shared by every instance the factory builds.
#[derive(Clone, Default)]
struct Knobs {
    /// `max_cumulative_settlement`, in module units (scale 0).
    limit: Option<u64>,
    /// `disconnect` fails while set.
    fail_disconnect: Arc<AtomicBool>,
    /// `disconnect` first waits [`SLOW_DISCONNECT`] while set (a ledger that does not answer).
    slow_disconnect: Arc<AtomicBool>,
    /// Successful `connect` calls (each account start makes one).
    connects: Arc<AtomicUsize>,
}

/// A module that settles "on its ledger" (no claim to send: a settlement is done once asked for), at scale 0.
struct TestModule {
    knobs: Knobs,
}

#[async_trait]
impl ChannelModule for TestModule {
    fn name(&self) -> &str {
        "se-test"
    }

    fn asset_scale(&self) -> u8 {
        0
    }

    async fn connect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        self.knobs.connects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        if self.knobs.slow_disconnect.load(Ordering::SeqCst) {
            tokio::time::sleep(SLOW_DISCONNECT).await;
        }
        if self.knobs.fail_disconnect.load(Ordering::SeqCst) {
            return Err(ModuleError::Ledger("ledger unreachable (test)".to_owned()));
        }
        Ok(())
    }

    async fn handle_incoming_prepare(
        &self,
        _ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        _ctx: &ChannelContext,
        _total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        Ok(None)
    }

    async fn handle_incoming_claim(
        &self,
        _ctx: &ChannelContext,
        _claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        Ok(None)
    }

    fn max_cumulative_settlement(&self) -> Option<ModuleUnits> {
        self.knobs.limit.map(ModuleUnits::from)
    }
}

/// A [`MemorySeStore`] whose reads fail while `fail_reads` is set (writes still work).
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemorySeStore,
    fail_reads: Arc<AtomicBool>,
    /// The next accepted write fails when awaited (after it was queued), once.
    fail_next_ticket: Arc<AtomicBool>,
    /// Every write becomes durable only after [`SLOW_SYNC`] while set: concurrent requests are then all
    /// between their write and its sync at once, the window a racy limit check would miss.
    slow_sync: Arc<AtomicBool>,
    /// While set, a write that moves queued requests out of the pending family (the settle worker taking the
    /// queue) becomes durable only once `release` is notified; `held` counts such writes.
    hold_takes: Arc<AtomicBool>,
    release: Arc<tokio::sync::Notify>,
    held: Arc<AtomicUsize>,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected read failure".to_owned()));
        }
        Ok(())
    }
}

impl SeStore for FlakyStore {
    fn submit(&self, batch: SeBatch) -> Result<SeTicket, StoreError> {
        if self.fail_next_ticket.swap(false, Ordering::SeqCst) {
            return Ok(Box::pin(async {
                Err(StoreError::Io("injected sync failure".to_owned()))
            }));
        }
        let takes_queue = batch
            .ops()
            .iter()
            .any(|op| matches!(op, Op::Delete(Family::Pending, _)));
        let ticket = self.inner.submit(batch)?;
        if takes_queue && self.hold_takes.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            let release = Arc::clone(&self.release);
            return Ok(Box::pin(async move {
                release.notified().await;
                ticket.await
            }));
        }
        if !self.slow_sync.load(Ordering::SeqCst) {
            return Ok(ticket);
        }
        Ok(Box::pin(async move {
            tokio::time::sleep(SLOW_SYNC).await;
            ticket.await
        }))
    }

    fn scan_prefix(
        &self,
        family: Family,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.check()?;
        self.inner.scan_prefix(family, prefix)
    }

    fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.check()?;
        self.inner.scan_page(prefix, after, limit)
    }

    fn get_main(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        self.inner.get_main(key)
    }
}

fn config() -> SeConfig {
    SeConfig {
        // Nothing is sent to the connector in these tests (no claims, no credits); a closed port if it were.
        connector: "http://127.0.0.1:9".to_owned(),
        module: "se-test".to_owned(),
        retry_initial_ms: 20,
        retry_max_ms: 200,
        ..SeConfig::default()
    }
}

async fn open(store: &FlakyStore, knobs: &Knobs) -> Result<Engine, BoxError> {
    let knobs = knobs.clone();
    let modules: ModuleFactory = Arc::new(move |_name: &str, _options: &serde_json::Value| {
        Ok(Arc::new(TestModule {
            knobs: knobs.clone(),
        }) as Arc<dyn ChannelModule>)
    });
    Ok(Engine::builder(
        config(),
        Arc::new(store.clone()),
        Arc::new(MemoryModuleLogs::new()),
        ilp_bridge::identity::IdentityRegistry::memory(),
    )
    .modules(modules)
    .open()
    .await?)
}

fn quantity(amount: u64, scale: u8) -> Bytes {
    Bytes::from(format!(r#"{{"amount":"{amount}","scale":{scale}}}"#))
}

async fn settle(
    engine: &Engine,
    account: &str,
    key: &str,
    amount: u64,
    scale: u8,
) -> Result<(u16, String), EngineError> {
    engine
        .accept_settlement(account, Some(key.to_owned()), quantity(amount, scale))
        .await
}

/// Waits until the account's settled total (module units, scale 0) is `total`.
async fn wait_settled(engine: &Engine, account: &str, total: &str) -> TestResult {
    poll_common::poll_until(&format!("{account} settled {total}"), WAIT, || async {
        engine
            .account_view(account)
            .is_ok_and(|v| v.settled.amount == total)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_requests_past_the_modules_cumulative_limit_are_refused() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs {
        limit: Some(1000),
        ..Knobs::default()
    };
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("capped".to_owned())).await?;

    assert_eq!(settle(&engine, &acct, "k1", 600, 0).await?.0, 201);
    wait_settled(&engine, &acct, "600").await?;
    // Settled 600 + 400 = the limit exactly: accepted.
    assert_eq!(settle(&engine, &acct, "k2", 400, 0).await?.0, 201);
    // One more unit would go past it: refused, whether settled already or still queued.
    let refused = settle(&engine, &acct, "k3", 1, 0).await;
    let Err(EngineError::BadRequest(message)) = refused else {
        panic!("expected 400, got {refused:?}");
    };
    assert!(
        message.contains("cumulative") && message.contains("1000"),
        "{message}"
    );
    // Over HTTP: 400 with the message as problem JSON.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, api::router(engine.clone())).into_future());
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/accounts/{acct}/settlements"))
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "k3")
        .body(quantity(1, 0))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    server.abort();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cumulative"), "{body}");
    // Less than one module unit on top still fits (the account's total in whole units stays 1000) …
    assert_eq!(settle(&engine, &acct, "k4", 5, 1).await?.0, 201);
    // … and another half unit makes a whole one: refused.
    assert!(matches!(
        settle(&engine, &acct, "k5", 5, 1).await,
        Err(EngineError::BadRequest(_))
    ));
    // An accepted key still replays at the limit, with its original answer.
    assert_eq!(
        settle(&engine, &acct, "k1", 600, 0).await?,
        (201, r#"{"amount":"600","scale":0}"#.to_owned())
    );
    // A refused request wrote nothing: not even its key (the same key may come back with a smaller amount).
    wait_settled(&engine, &acct, "1000").await?;
    let expected = vec![Some("k1".into()), Some("k2".into()), Some("k4".into())];
    poll_common::poll_until("every accepted request taken", WAIT, || async {
        engine.account_history(&acct).is_ok_and(|h| {
            h.settlements.iter().all(|s| s.state == "settled")
                && h.settlements
                    .iter()
                    .map(|s| s.idempotency_key.clone())
                    .collect::<Vec<Option<String>>>()
                    == expected
        })
    })
    .await?;
    assert_eq!(settle(&engine, &acct, "k3", 0, 0).await?.0, 201);

    // After a restart the total is rebuilt from the store (settled 1000 plus a half-unit leftover).
    engine.shutdown().await;
    let engine = open(&store, &knobs).await?;
    assert!(matches!(
        settle(&engine, &acct, "k6", 5, 1).await,
        Err(EngineError::BadRequest(_))
    ));
    assert_eq!(settle(&engine, &acct, "k7", 4, 1).await?.0, 201);
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_settle_requests_cannot_pass_the_limit_together() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs {
        limit: Some(1000),
        ..Knobs::default()
    };
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("raced".to_owned())).await?;
    store.slow_sync.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let engine = engine.clone();
        let acct = acct.clone();
        tasks.push(tokio::spawn(async move {
            settle(&engine, &acct, &format!("key-{i}"), 30, 0).await
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        match t.await? {
            Ok((201, _)) => accepted += 1,
            Err(EngineError::BadRequest(_)) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // 33 × 30 = 990 fits; a 34th would make 1020.
    assert_eq!((accepted, refused), (33, 17));
    wait_settled(&engine, &acct, "990").await?;
    engine.shutdown().await;
    Ok(())
}

/// Found by the API fuzzing (RELIABILITY.md): while the settle worker wrote the queue it had taken into the
/// history, an accepted request was in neither, so the admin views left it out (and its amount from `queued`
/// and `requested`) for the length of that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_request_stays_visible_while_the_worker_takes_it() -> TestResult {
    let store = FlakyStore::default();
    let engine = open(&store, &Knobs::default()).await?;
    let acct = engine.create_account(Some("visible".to_owned())).await?;
    store.hold_takes.store(true, Ordering::SeqCst);
    assert_eq!(settle(&engine, &acct, "k1", 7, 0).await?.0, 201);
    poll_common::poll_until(
        "the worker's take written, not yet durable",
        WAIT,
        || async { store.held.load(Ordering::SeqCst) == 1 },
    )
    .await?;
    let history = engine.account_history(&acct)?;
    let keys: Vec<Option<String>> = history
        .settlements
        .iter()
        .map(|s| s.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys,
        vec![Some("k1".to_owned())],
        "{:?}",
        history.settlements
    );
    let view = engine.account_view(&acct)?;
    assert!(
        view.queued.amount == "7" || view.requested.amount == "7",
        "queued {:?}, requested {:?}",
        view.queued,
        view.requested
    );
    store.hold_takes.store(false, Ordering::SeqCst);
    store.release.notify_one();
    wait_settled(&engine, &acct, "7").await?;
    let history = engine.account_history(&acct)?;
    assert_eq!(history.settlements.len(), 1, "{:?}", history.settlements);
    assert_eq!(history.settlements[0].state, "settled");
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_write_fails_gives_its_share_of_the_limit_back() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs {
        limit: Some(100),
        ..Knobs::default()
    };
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("retried".to_owned())).await?;
    store.inner.fail_next_writes(1);
    assert!(matches!(
        settle(&engine, &acct, "k1", 100, 0).await,
        Err(EngineError::Store(_))
    ));
    // The connector retries: the whole limit is still free.
    assert_eq!(settle(&engine, &acct, "k1", 100, 0).await?.0, 201);
    wait_settled(&engine, &acct, "100").await?;
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_sync_fails_gives_its_share_of_the_limit_back() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs {
        limit: Some(100),
        ..Knobs::default()
    };
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("unsynced".to_owned())).await?;
    // Queued, then the sync fails: the answer is the store's error...
    store.fail_next_ticket.store(true, Ordering::SeqCst);
    assert!(matches!(
        settle(&engine, &acct, "k1", 100, 0).await,
        Err(EngineError::Store(_))
    ));
    // ...and the retry is not refused for a limit the failed request never used.
    assert_eq!(settle(&engine, &acct, "k1", 100, 0).await?.0, 201);
    wait_settled(&engine, &acct, "100").await?;
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_abandoned_by_its_client_still_runs_to_its_end() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs::default();
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("abandoned".to_owned())).await?;
    assert_eq!(settle(&engine, &acct, "k1", 5, 0).await?.0, 201);
    wait_settled(&engine, &acct, "5").await?;
    // The ledger does not answer, and the client hangs up long before the module gives up (the HTTP server
    // drops the request's future).
    knobs.slow_disconnect.store(true, Ordering::SeqCst);
    knobs.fail_disconnect.store(true, Ordering::SeqCst);
    let abandoned = tokio::time::timeout(SLOW_DISCONNECT / 10, engine.delete_account(&acct)).await;
    assert!(abandoned.is_err(), "the delete should still be running");
    // The delete still ends as a failed delete does: the account is kept and keeps working.
    poll_common::poll_until("the kept account answers again", WAIT, || async {
        engine.account_view(&acct).is_ok()
    })
    .await?;
    assert_eq!(engine.account_ids(), vec![acct.clone()]);
    knobs.slow_disconnect.store(false, Ordering::SeqCst);
    knobs.fail_disconnect.store(false, Ordering::SeqCst);
    assert_eq!(settle(&engine, &acct, "k2", 1, 0).await?.0, 201);
    wait_settled(&engine, &acct, "6").await?;
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_kept_by_a_failed_delete_is_read_back_once_the_store_recovers() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs::default();
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("kept".to_owned())).await?;
    assert_eq!(settle(&engine, &acct, "k1", 5, 0).await?.0, 201);
    wait_settled(&engine, &acct, "5").await?;

    // The ledger is down (disconnect fails) and so is the store's read side: the account is kept but cannot
    // be read back.
    knobs.fail_disconnect.store(true, Ordering::SeqCst);
    store.fail_reads.store(true, Ordering::SeqCst);
    let refused = engine.delete_account(&acct).await;
    let Err(
        error @ EngineError::DisconnectFailed {
            reload: Some(_), ..
        },
    ) = refused
    else {
        panic!("the delete must fail with 503: {refused:?}");
    };
    let message = error.to_string();
    assert!(
        message.contains("disconnect failed") && message.contains("read"),
        "{message}"
    );
    assert_eq!(status_of(error), StatusCode::SERVICE_UNAVAILABLE);
    // Still there, and retryable: 503 (not 404) while the store fails.
    assert!(engine.account_ids().contains(&acct));
    let view = engine.account_view(&acct).map(|_| ());
    assert_eq!(
        view.map_err(status_of).err(),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let settled = settle(&engine, &acct, "k2", 3, 0).await.map(|_| ());
    assert_eq!(
        settled.map_err(status_of).err(),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );

    // The store recovers: the account is read back and works again, with its state.
    store.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(engine.account_view(&acct)?.settled.amount, "5");
    assert_eq!(settle(&engine, &acct, "k2", 3, 0).await?.0, 201);
    wait_settled(&engine, &acct, "8").await?;
    // With the ledger back, the delete goes through.
    knobs.fail_disconnect.store(false, Ordering::SeqCst);
    engine.delete_account(&acct).await?;
    assert!(matches!(
        engine.account_view(&acct),
        Err(EngineError::AccountNotFound(_))
    ));
    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_account_is_read_back_in_the_background() -> TestResult {
    let store = FlakyStore::default();
    let knobs = Knobs::default();
    let engine = open(&store, &knobs).await?;
    let acct = engine.create_account(Some("kept".to_owned())).await?;
    assert_eq!(settle(&engine, &acct, "k1", 5, 0).await?.0, 201);
    wait_settled(&engine, &acct, "5").await?;
    knobs.fail_disconnect.store(true, Ordering::SeqCst);
    store.fail_reads.store(true, Ordering::SeqCst);
    assert!(engine.delete_account(&acct).await.is_err());
    let connects = knobs.connects.load(Ordering::SeqCst);
    store.fail_reads.store(false, Ordering::SeqCst);
    // Nobody calls for the account: the engine reads it back on its own and starts it (its module connects).
    poll_common::poll_until("account started again", WAIT, || async {
        knobs.connects.load(Ordering::SeqCst) > connects
    })
    .await?;
    assert_eq!(engine.account_view(&acct)?.settled.amount, "5");
    engine.shutdown().await;
    Ok(())
}
