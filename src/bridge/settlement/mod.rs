//! Settlement in bridge mode (docs/bridge.md §7): the pair's legacy module pays P and is paid by P over
//! BTP/1.0 exactly as the legacy flow does, and the pair stands in for P's settlement engine towards the modern
//! connector M, through the RFC 38 API (`api`):
//!
//! * **M → P.** M's settle requests for P's account are recorded, durably and once (`requested`). The legacy
//!   flow has already paid P for every Fulfill P sent (a claim-based module puts a claim for the total paid on
//!   each Fulfill's Response, whatever M's threshold), so the requests are reconciled against what the module
//!   paid: what it paid beyond them is `paid_ahead`; what they ask beyond it is `owed`, and the module is asked
//!   to pay it: the trustline's claim floor ([`Trustline::raise_claim_floor`]) is raised to `requested`, a
//!   payment-based module pays at once, a claim-based one's claim rides on P's next Fulfill. Without a module
//!   (a plain trustline) nothing can pay P: `owed` is out-of-band debt, shown to the operator.
//! * **P → M.** What P's module paid us (the module's [`ChannelModule::incoming_total`], read from its durable
//!   state) beyond what M acknowledged is credited to M's account through M's settlement API (`credit`), one
//!   credit at a time, each written down with its `Idempotency-Key` before it is sent and retried with the same
//!   key until M acknowledges it.
//!
//! What is kept: [`record`]. What the operator sees: [`SettlementView`] (`GET /ledger` on the pair's settlement
//! listener).
//!
//! [`ChannelModule::incoming_total`]: channel_modules::ChannelModule::incoming_total

pub mod api;
mod credit;
pub mod record;

use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use channel_modules::amount::ModuleUnits;
use channel_modules::clock::Clock;
use channel_modules::store::StoreError;
use channel_modules::sync::lock;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use self::record::{KeptAnswer, SettlementRecord, SettlementStore, IDEMPOTENCY_KEEP_MS};
use crate::peer::trustline::Trustline;
use crate::settlement::client::{ClientError, ConnectorClient};
use crate::settlement::quantity::{
    decimal_string, parse_quantity, to_module_units, Quantity, Scaled,
};

/// Longest account ID the connector may give, in bytes (interledger-rs: a UUID, 36).
pub const ACCOUNT_ID_MAX_BYTES: usize = 128;

/// Why a settlement call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettlementError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The account is not this pair's (404).
    #[error("no account {0:?} here: this pair's account is {1:?}")]
    UnknownAccount(String, Option<String>),
    /// The idempotency key was used with another request (409).
    #[error("Idempotency-Key {0:?} was used with another request")]
    KeyConflict(String),
    /// The store refused the write; nothing changed (503).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The connector's settlement API could not be used.
    #[error("connector settlement API: {0}")]
    Connector(#[from] ClientError),
    /// The module could not say what P paid.
    #[error("module: {0}")]
    Module(#[from] channel_modules::ModuleError),
    /// The task running the request ended without an answer (503).
    #[error("request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SettlementError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            SettlementError::BadRequest(_) => 400,
            SettlementError::UnknownAccount(..) => 404,
            SettlementError::KeyConflict(_) => 409,
            SettlementError::Store(_)
            | SettlementError::Connector(_)
            | SettlementError::Module(_)
            | SettlementError::Task(_) => 503,
        }
    }
}

/// Runs `work` on a task of its own and waits for it: the work finishes even if the caller's future is dropped.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, SettlementError>> + Send + 'static,
) -> Result<T, SettlementError> {
    tokio::spawn(work).await?
}

/// The pair's reconciliation ledger as the operator sees it. Amounts are legacy ledger units (decimal strings in
/// JSON) at `legacy_scale`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementView {
    /// The pair (the legacy peer's name).
    pub pair: String,
    /// The modern connector's account ID for P, once it set it up.
    pub account: Option<String>,
    /// The legacy module paying and being paid (`None`: a plain trustline, settled out of band).
    pub module: Option<String>,
    /// The scale of every amount here.
    pub legacy_scale: u8,
    /// Everything M asked to settle, whole legacy units.
    #[serde(with = "decimal_string")]
    pub requested: ModuleUnits,
    /// Below one legacy unit, kept from the requests.
    pub requested_leftover: Quantity,
    /// Settle requests accepted.
    pub requests: u64,
    /// What the module has paid P: the larger of the trustline's outgoing fulfilled total (the legacy flow
    /// settles it on every Fulfill) and the highest total settled since the start
    /// ([`Trustline::settled_total`]); 0 without a module.
    #[serde(with = "decimal_string")]
    pub paid: ModuleUnits,
    /// `paid − requested` when positive: paid to P before M asked (the legacy flow pays on every Fulfill).
    #[serde(with = "decimal_string")]
    pub paid_ahead: ModuleUnits,
    /// `requested − paid` when positive: asked by M and not yet paid to P by the module.
    #[serde(with = "decimal_string")]
    pub owed: ModuleUnits,
    /// What is owed with no module to pay it: to be settled with P out of band.
    #[serde(with = "decimal_string")]
    pub out_of_band: ModuleUnits,
    /// What P's module has paid us, if the module can tell.
    pub received: Option<String>,
    /// What M acknowledged as credited.
    #[serde(with = "decimal_string")]
    pub credited: ModuleUnits,
    /// The credit being reported to M, not yet acknowledged.
    pub pending_credit: Option<String>,
    /// Credits M acknowledged.
    pub credits: u64,
}

struct Inner {
    name: String,
    trustline: Trustline,
    legacy_scale: u8,
    store: SettlementStore,
    client: ConnectorClient,
    clock: Arc<dyn Clock>,
    /// The record as stored; held across each change and its write, so changes are made one at a time.
    record: tokio::sync::Mutex<SettlementRecord>,
    /// A copy of `record` for views, updated after each write.
    shown: Mutex<SettlementRecord>,
    /// Wakes the credit task.
    wake: Notify,
}

/// One pair's settlement (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PairSettlement {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PairSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairSettlement")
            .field("pair", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Checks a connector account ID: 1..=[`ACCOUNT_ID_MAX_BYTES`] bytes of `[A-Za-z0-9._~-]` (URL-safe).
fn check_account_id(id: &str) -> Result<(), SettlementError> {
    let ok = !id.is_empty()
        && id.len() <= ACCOUNT_ID_MAX_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SettlementError::BadRequest(format!(
            "account id must be 1 to {ACCOUNT_ID_MAX_BYTES} bytes of [A-Za-z0-9._~-]"
        )))
    }
}

fn request_hash(account: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(account.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}

fn leftover_of(q: &Quantity) -> Scaled {
    Scaled::new(q.amount.parse().unwrap_or_default(), q.scale)
}

impl PairSettlement {
    /// Opens the settlement of pair `name` (its record in `store`), crediting M through its settlement API at
    /// `connector_url`. Raises the trustline's claim floor to what M has asked so far, so the first Fulfill after
    /// a restart already carries it. Call it before the trustline is launched.
    ///
    /// The first time (no record yet), what P's module has already received is history: it was paid to the node
    /// before M stood in for it (an ILP Kit migration imports it with the module's trackers), so it is written
    /// down as credited and only what P pays from now on is credited to M. M's account takes over the balance
    /// from before as its opening balance (the migration report says how to set it).
    pub async fn open(
        name: &str,
        trustline: Trustline,
        legacy_scale: u8,
        store: SettlementStore,
        connector_url: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<PairSettlement, SettlementError> {
        let client = ConnectorClient::new(connector_url)?;
        let record = match store.load(name)? {
            Some(record) => record,
            None => {
                let history = match trustline.module() {
                    Some(m) => m
                        .incoming_total(trustline.module_context())
                        .await?
                        .unwrap_or_default(),
                    None => ModuleUnits::zero(),
                };
                let record = SettlementRecord {
                    credited: history,
                    ..SettlementRecord::default()
                };
                store.save(name, &record, None).await?;
                if !record.credited.is_zero() {
                    tracing::info!(pair = %name, received_before = %record.credited, "what P paid before the bridge stood in for it is not credited to the modern connector");
                }
                record
            }
        };
        trustline.raise_claim_floor(record.requested.clone());
        Ok(PairSettlement {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                trustline,
                legacy_scale,
                store,
                client,
                clock,
                shown: Mutex::new(record.clone()),
                record: tokio::sync::Mutex::new(record),
                wake: Notify::new(),
            }),
        })
    }

    /// The pair's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn now_ms(&self) -> u64 {
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Starts the pair's work after a (re)start: forgets idempotency keys past their time, asks the module to
    /// pay what M asked beyond what was paid, and runs the credit task until `stop`.
    pub fn start(&self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let before = s.now_ms().saturating_sub(IDEMPOTENCY_KEEP_MS);
            match s.inner.store.purge_answers(&s.inner.name, before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(pair = %s.inner.name, keys = n, "old settle-request keys forgotten")
                }
                Err(error) => {
                    tracing::warn!(pair = %s.inner.name, %error, "forgetting old settle-request keys failed")
                }
            }
            s.pay_owed().await;
            credit::credit_task(s, stop).await;
        })
    }

    /// M set up its account for P (`POST /accounts`): the newest ID wins, as a connector re-creates an account
    /// under a new ID.
    pub async fn set_up_account(&self, id: &str) -> Result<(), SettlementError> {
        let this = self.clone();
        let id = id.to_owned();
        detached(async move { this.set_up_account_now(&id).await }).await
    }

    async fn set_up_account_now(&self, id: &str) -> Result<(), SettlementError> {
        check_account_id(id)?;
        let mut rec = self.inner.record.lock().await;
        if rec.account.as_deref() == Some(id) {
            return Ok(());
        }
        let mut next = rec.clone();
        if let Some(old) = next.account.replace(id.to_owned()) {
            tracing::warn!(pair = %self.inner.name, %old, new = %id, "the modern connector set up a new account for P; it replaces the old one");
        } else {
            tracing::info!(pair = %self.inner.name, account = %id, "the modern connector set up its account for P");
        }
        self.inner.store.save(&self.inner.name, &next, None).await?;
        *rec = next;
        *lock(&self.inner.shown) = rec.clone();
        drop(rec);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// M deleted its account (`DELETE /accounts/:id`). The ledger stays (it is the pair's, not the account's).
    pub async fn delete_account(&self, id: &str) -> Result<(), SettlementError> {
        let this = self.clone();
        let id = id.to_owned();
        detached(async move { this.delete_account_now(&id).await }).await
    }

    async fn delete_account_now(&self, id: &str) -> Result<(), SettlementError> {
        let mut rec = self.inner.record.lock().await;
        if rec.account.as_deref() != Some(id) {
            return Err(SettlementError::UnknownAccount(
                id.to_owned(),
                rec.account.clone(),
            ));
        }
        let mut next = rec.clone();
        next.account = None;
        self.inner.store.save(&self.inner.name, &next, None).await?;
        tracing::info!(pair = %self.inner.name, account = %id, "the modern connector deleted its account for P");
        *rec = next;
        *lock(&self.inner.shown) = rec.clone();
        Ok(())
    }

    /// A settle request from M (`POST /accounts/:id/settlements`): recorded durably (with its key, when it has
    /// one) before it is answered, then the module is asked to pay what is owed. Returns the status and body to
    /// answer; a repeated key with the same request gets the same answer and changes nothing.
    ///
    /// Each of these calls runs on its own task: M's HTTP client hangs up on a slow answer, the server then
    /// drops the request's future, and a call dropped after its record was queued for writing would leave the
    /// write on disk and the totals in memory behind it (the next request would be computed from the old
    /// totals, losing this one while its key answers M's retry with 201).
    pub async fn settle(
        &self,
        account: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, String), SettlementError> {
        let this = self.clone();
        let account = account.to_owned();
        let key = key.map(str::to_owned);
        let body = body.to_vec();
        detached(async move { this.settle_now(&account, key.as_deref(), &body).await }).await
    }

    async fn settle_now(
        &self,
        account: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, String), SettlementError> {
        let amount =
            parse_quantity(body).map_err(|e| SettlementError::BadRequest(e.to_string()))?;
        let hash = request_hash(account, body);
        let mut rec = self.inner.record.lock().await;
        match &rec.account {
            Some(a) if a == account => {}
            Some(_) => {
                return Err(SettlementError::UnknownAccount(
                    account.to_owned(),
                    rec.account.clone(),
                ))
            }
            // The setup call may have been lost (interledger-rs does not retry an HTTP error): the first
            // settle request names the account.
            None => check_account_id(account)?,
        }
        if let Some(k) = key {
            if let Some(kept) = self.inner.store.answer(&self.inner.name, k)? {
                if kept.request_hash != hash {
                    return Err(SettlementError::KeyConflict(k.to_owned()));
                }
                return Ok((kept.status, kept.body));
            }
        }
        let (units, leftover) = to_module_units(
            &leftover_of(&rec.requested_leftover),
            &amount,
            self.inner.legacy_scale,
        );
        let mut next = rec.clone();
        next.account = Some(account.to_owned());
        next.requested = &next.requested + &units;
        next.requested_leftover = leftover.to_quantity();
        next.requests += 1;
        let answer_body = serde_json::to_string(&amount.to_quantity())
            .map_err(|e| SettlementError::BadRequest(e.to_string()))?;
        let kept = key.map(|k| {
            (
                k,
                KeptAnswer {
                    request_hash: hash,
                    status: 201,
                    body: answer_body.clone(),
                    used_ms: self.now_ms(),
                },
            )
        });
        self.inner
            .store
            .save(&self.inner.name, &next, kept.as_ref().map(|(k, a)| (*k, a)))
            .await?;
        tracing::info!(
            pair = %self.inner.name,
            amount = %amount.amount,
            scale = amount.scale,
            legacy_units = %units,
            requested = %next.requested,
            "settle request from the modern connector recorded"
        );
        *rec = next;
        *lock(&self.inner.shown) = rec.clone();
        drop(rec);
        self.pay_owed().await;
        Ok((201, answer_body))
    }

    /// Raises the trustline's claim floor to what M asked and, if that is beyond what the module paid, asks
    /// the module to pay it now (a payment-based module pays; a claim-based one's claim rides on P's next
    /// Fulfill). Failures are logged: the floor stays, so the next Fulfill asks again.
    async fn pay_owed(&self) {
        let requested = self.inner.record.lock().await.requested.clone();
        let trustline = &self.inner.trustline;
        trustline.raise_claim_floor(requested.clone());
        if trustline.module().is_none() {
            if !requested.is_zero() {
                tracing::info!(pair = %self.inner.name, %requested, "no module pays P: the requested total is out-of-band debt");
            }
            return;
        }
        let of = match trustline.log().durable_sums().await {
            Ok(s) => ModuleUnits::from_peer_ledger(s.outgoing_fulfilled),
            Err(error) => {
                tracing::warn!(pair = %self.inner.name, %error, "reading what the module paid failed");
                return;
            }
        };
        if requested <= of.max(trustline.settled_total()) {
            return;
        }
        match trustline.settle_now(&requested).await {
            Ok(Some(_)) => {
                tracing::info!(pair = %self.inner.name, total = %requested, "claim for the requested total made; it travels on P's next Fulfill")
            }
            Ok(None) => {
                tracing::info!(pair = %self.inner.name, total = %requested, "module paid P up to the requested total")
            }
            Err(error) => {
                tracing::warn!(pair = %self.inner.name, %error, total = %requested, "module could not pay the requested total; asked again on the next Fulfill")
            }
        }
    }

    /// The reconciliation ledger now.
    pub async fn view(&self) -> SettlementView {
        let rec = lock(&self.inner.shown).clone();
        let trustline = &self.inner.trustline;
        let module = trustline.module();
        let paid = match module {
            Some(_) => ModuleUnits::from_peer_ledger(trustline.log().sums().outgoing_fulfilled)
                .max(trustline.settled_total()),
            None => ModuleUnits::zero(),
        };
        let received = match module {
            Some(m) => match m.incoming_total(trustline.module_context()).await {
                Ok(t) => t.map(|t| t.to_string()),
                Err(error) => {
                    tracing::warn!(pair = %self.inner.name, %error, "reading what P's module paid failed");
                    None
                }
            },
            None => None,
        };
        let owed = rec.requested.checked_sub(&paid).unwrap_or_default();
        SettlementView {
            pair: self.inner.name.clone(),
            account: rec.account.clone(),
            module: module.map(|m| m.name().to_owned()),
            legacy_scale: self.inner.legacy_scale,
            paid_ahead: paid.checked_sub(&rec.requested).unwrap_or_default(),
            out_of_band: if module.is_none() {
                owed.clone()
            } else {
                ModuleUnits::zero()
            },
            owed,
            paid,
            requested: rec.requested,
            requested_leftover: rec.requested_leftover,
            requests: rec.requests,
            received,
            credited: rec.credited,
            pending_credit: rec.pending.map(|p| p.amount.to_string()),
            credits: rec.credits,
        }
    }
}
