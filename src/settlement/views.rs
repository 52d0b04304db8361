//! What the operator (admin) API shows: an account's state ([`AccountView`]) and history ([`HistoryView`]),
//! the ledger identities ([`IdentityView`]) and the alerts ([`AlertView`]); and the operator's assignment of an
//! identity.

use std::sync::Arc;

use channel_modules::sync::lock;
use serde::Serialize;

use super::account::Account;
use super::engine::Engine;
use super::error::EngineError;
use super::quantity::{Quantity, Scaled};
use super::store::{CreditRecord, CreditStatus, SentRecord};

impl Engine {
    /// Admin: the operator view of one account.
    pub fn account_view(&self, id: &str) -> Result<AccountView, EngineError> {
        let acct = self.account(id)?;
        Ok(self.view(&acct))
    }

    /// Admin: the history of one account (most recent last).
    pub fn account_history(&self, id: &str) -> Result<HistoryView, EngineError> {
        let acct = self.account(id)?;
        // The queue lock first, held throughout: the worker moves taken requests from the queue to the history
        // under it, so this view sees each request in exactly one of them.
        let queue = lock(&acct.queue);
        let out = lock(&acct.out).clone();
        let sent: Vec<SentRecord> = lock(&acct.sent).iter().cloned().collect();
        let mut settlements: Vec<SettlementView> = lock(&acct.history)
            .iter()
            .map(|h| {
                let state = if h.target_total_after <= out.settled_total {
                    "settled"
                } else {
                    "in_flight"
                };
                let claim_id = if state == "settled" {
                    sent.iter()
                        .find(|s| s.total >= h.target_total_after)
                        .map(|s| s.claim_id.clone())
                } else {
                    None
                };
                SettlementView {
                    seq: h.request.seq,
                    idempotency_key: h.request.key.clone(),
                    amount: h.request.amount.to_quantity(),
                    accepted_ms: h.request.accepted_ms,
                    module_units: h.module_units.to_string(),
                    cumulative_target: Some(h.target_total_after.to_string()),
                    state,
                    claim_id,
                }
            })
            .collect();
        settlements.extend(queue.iter().map(|q| SettlementView {
            seq: q.seq,
            idempotency_key: q.key.clone(),
            amount: q.amount.to_quantity(),
            accepted_ms: q.accepted_ms,
            module_units: "0".to_owned(),
            cumulative_target: None,
            state: "queued",
            claim_id: None,
        }));
        drop(queue);
        let mut credits: Vec<CreditRecord> = lock(&acct.credited).iter().cloned().collect();
        credits.extend(lock(&acct.credits).values().map(|p| p.record.clone()));
        Ok(HistoryView {
            account: acct.id.clone(),
            settlements,
            claims_sent: sent,
            credits,
        })
    }

    /// `GET /identities` (admin): every ledger identity the engine's accounts hold or contest.
    pub fn identities(&self) -> Result<Vec<IdentityView>, EngineError> {
        let records = self.inner.identities.records()?;
        Ok(records
            .into_iter()
            .map(|(identity, record)| IdentityView {
                identity,
                record: record.to_json(),
            })
            .collect())
    }

    /// `PUT /identities/{identity}` (admin): gives `identity` (one some account holds or contests) to account
    /// `id` as if configured for it, whatever held or contested it (see `README.md`, ledger identities). Only
    /// `id` is credited on its behalf from its next claim on; any other account is refused.
    pub async fn assign_identity(&self, identity: &str, id: &str) -> Result<(), EngineError> {
        if identity.is_empty() || identity.len() > IDENTITY_MAX_BYTES || identity.contains('/') {
            return Err(EngineError::BadRequest(format!(
                "identity must be 1..={IDENTITY_MAX_BYTES} bytes without '/'"
            )));
        }
        self.account(id)?;
        // Only an identity some account holds or contests: a mistyped one (an Ethereum address in mixed case,
        // say) would otherwise be recorded, answered 204, and settle nothing.
        if self.inner.identities.record(identity)?.is_none() {
            return Err(EngineError::BadRequest(format!(
                "no account holds or contests {identity:?}; use an identity exactly as GET /identities lists it"
            )));
        }
        Ok(self.inner.identities.assign(identity, id).await?)
    }

    /// Admin: every 409 alert (incoming settlements the connector refused as already credited).
    pub fn alerts(&self) -> Vec<AlertView> {
        let accounts: Vec<Arc<Account>> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for a in accounts {
            for p in lock(&a.credits).values() {
                if p.record.status == CreditStatus::Conflict {
                    out.push(AlertView {
                        account: a.id.clone(),
                        kind: "credit_conflict",
                        credit: p.record.clone(),
                    });
                }
            }
        }
        out
    }

    /// The operator view of `acct`.
    pub(super) fn view(&self, acct: &Account) -> AccountView {
        // The queue before the totals, under one lock (see `account_history`): a request being taken counts in
        // `queued` or in `requested`, never in neither nor both.
        let (out, queued_amounts) = {
            let queue = lock(&acct.queue);
            let out = lock(&acct.out).clone();
            (
                out,
                queue.iter().map(|q| q.amount.clone()).collect::<Vec<_>>(),
            )
        };
        let status = lock(&acct.status);
        let module_scale = acct.module.asset_scale();
        let mut queued = out.leftover.clone();
        let mut queued_requests = 0;
        for amount in &queued_amounts {
            queued = queued.add(amount);
            queued_requests += 1;
        }
        let in_flight = out
            .target_total
            .checked_sub(&out.settled_total)
            .unwrap_or_default();
        let incoming = lock(&acct.incoming_view).clone();
        let uncredited: Vec<CreditRecord> = lock(&acct.credits)
            .values()
            .map(|p| p.record.clone())
            .collect();
        AccountView {
            id: acct.id.clone(),
            created_ms: acct.created_ms,
            module: acct.module.name().to_owned(),
            module_scale,
            connector_scale: acct.connector_scale_config.or(out.connector_scale),
            connected: status.connected,
            settled: Scaled::of_module_units(&out.settled_total, module_scale).to_quantity(),
            requested: Scaled::of_module_units(&out.target_total, module_scale).to_quantity(),
            queued: queued.to_quantity(),
            queued_requests,
            in_flight: Scaled::of_module_units(&in_flight, module_scale).to_quantity(),
            leftover: out.leftover.to_quantity(),
            received: Scaled::of_module_units(&incoming.received_total, module_scale).to_quantity(),
            incoming_leftover: incoming.leftover.to_quantity(),
            uncredited,
            last_error: out
                .last_error
                .clone()
                .or_else(|| status.connect_error.clone()),
            attempts: out.attempts,
            next_retry_ms: status.next_settle_retry_ms,
            last_claim_id: out.last_claim_id.clone(),
            requests_accepted: out.requests_taken.saturating_add(queued_requests),
            since_start: CountersView {
                claims_sent: load(&acct.counters.claims_sent),
                settle_failures: load(&acct.counters.settle_failures),
                credits_done: load(&acct.counters.credits_done),
                credit_retries: load(&acct.counters.credit_retries),
            },
        }
    }
}

/// Operator view of one account. Module amounts are at the module's scale; `queued` and `leftover` at the
/// connector's.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// Account ID.
    pub id: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Module name.
    pub module: String,
    /// Module's scale.
    pub module_scale: u8,
    /// Connector's scale (configured, else learned from settle requests).
    pub connector_scale: Option<u8>,
    /// Module setup done.
    pub connected: bool,
    /// Cumulative amount settled (acknowledged by the peer engine).
    pub settled: Quantity,
    /// Cumulative amount taken from settle requests (settled + in flight).
    pub requested: Quantity,
    /// Accepted but not yet converted (queue plus leftover), at the finest scale involved.
    pub queued: Quantity,
    /// Number of accepted requests not yet taken.
    pub queued_requests: u64,
    /// Taken but not yet acknowledged by the peer.
    pub in_flight: Quantity,
    /// Outgoing leftover below one module unit.
    pub leftover: Quantity,
    /// Cumulative incoming increase reported by the module.
    pub received: Quantity,
    /// Incoming leftover below one connector unit.
    pub incoming_leftover: Quantity,
    /// Incoming settlements not yet credited (pending or refused with 409).
    pub uncredited: Vec<CreditRecord>,
    /// The last failure of the settle path or setup.
    pub last_error: Option<String>,
    /// Failed settle attempts since the last success.
    pub attempts: u32,
    /// Next settle retry, ms since the epoch.
    pub next_retry_ms: Option<u64>,
    /// Claim or transaction ID of the last settlement sent.
    pub last_claim_id: Option<String>,
    /// Settle requests accepted in the account's life (taken by the settle worker, plus still queued).
    pub requests_accepted: u64,
    /// What the account's workers did since the process started.
    pub since_start: CountersView,
}

/// Counts of an account's worker events since the process started (they restart from zero with it).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CountersView {
    /// Settlements the peer's engine acknowledged.
    pub claims_sent: u64,
    /// Failed settle attempts (each retried with backoff).
    pub settle_failures: u64,
    /// Incoming settlements credited to the connector.
    pub credits_done: u64,
    /// Failed credit attempts (each retried with backoff).
    pub credit_retries: u64,
}

/// The value of one of an account's counters.
fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// One settle request in the history.
#[derive(Debug, Clone, Serialize)]
pub struct SettlementView {
    /// Acceptance order.
    pub seq: u64,
    /// Its Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// The amount requested.
    pub amount: Quantity,
    /// Acceptance time, ms since the epoch.
    pub accepted_ms: u64,
    /// Whole module units it contributed.
    pub module_units: String,
    /// Cumulative module total it is part of.
    pub cumulative_target: Option<String>,
    /// `queued`, `in_flight` or `settled`.
    pub state: &'static str,
    /// The claim or transaction that settled it.
    pub claim_id: Option<String>,
}

/// History of one account.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Account ID.
    pub account: String,
    /// Settle requests, oldest first.
    pub settlements: Vec<SettlementView>,
    /// Claims acknowledged by the peer, oldest first.
    pub claims_sent: Vec<SentRecord>,
    /// Incoming settlements: credited, then pending or refused.
    pub credits: Vec<CreditRecord>,
}

/// Longest ledger identity the admin API accepts, in bytes (`eth:<chainId>:0x…` and `xrp:<64 hex>` are far
/// shorter).
const IDENTITY_MAX_BYTES: usize = 256;

/// One ledger identity record (admin view).
#[derive(Debug, Clone, Serialize)]
pub struct IdentityView {
    /// The identity, e.g. `eth:1:0x…` or `xrp:<channel id>`.
    pub identity: String,
    /// `{"account", "origin": "proven"|"configured"}` or `{"contested": [accounts]}`.
    pub record: serde_json::Value,
}

/// A reconciliation alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Account ID.
    pub account: String,
    /// `credit_conflict`: the connector answered 409 to a credit.
    pub kind: &'static str,
    /// The credit concerned.
    pub credit: CreditRecord,
}
