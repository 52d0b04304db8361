//! The accounts' lifecycle: loading them at start-up, creating and deleting them (`POST /accounts`,
//! `DELETE /accounts/{id}`), and reading back an account a failed delete kept.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use channel_modules::store::MaxValue;
use channel_modules::sync::lock;
use channel_modules::{ChannelContext, ContextHost};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::account::{
    push_bounded, validate_account_id, AcceptedTotal, Account, PendingCredit, HISTORY_IN_MEMORY,
};
use super::engine::Engine;
use super::error::EngineError;
use super::host::AccountHost;
use super::quantity::Scaled;
use super::store::{
    decode, keys, AccountRecord, CreditRecord, Family, IncomingRecord, OutgoingRecord,
    QueuedRequest, SeBatch,
};
use super::workers::{backoff, credit_worker, settle_worker, wait};

/// An account a failed delete kept but could not read back (see [`Engine::delete_account`]).
pub(super) struct KeptAccount {
    /// The account's record, to read the rest back from the store with.
    rec: AccountRecord,
    /// A reload from the store is running.
    reloading: bool,
}

impl Engine {
    /// Loads every stored account and starts its workers; sets the sequence counter above every stored one.
    pub(super) fn load(&self) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let mut max_seq = 0u64;
        let mut accounts = Vec::new();
        for (key, bytes) in store.scan_prefix(Family::Main, &keys::kind_prefix('a'))? {
            let rec: AccountRecord = decode(&key, &bytes)?;
            accounts.push(rec);
        }
        // Idempotency keys are not loaded: each is read from the store when it is used again.
        for rec in accounts {
            let acct = self.load_account(rec, &mut max_seq)?;
            self.start_account(acct);
        }
        // Time-based floor as well, so sequence numbers keep growing even if old records were purged.
        let floor = self.now_ms().saturating_mul(1000);
        self.inner
            .seq
            .store(max_seq.max(floor) + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Builds account `rec` from what the store holds for it (totals, leftovers, module trackers, queued
    /// requests, pending credits, recent history): at start-up, when an account is created again after a
    /// delete, and when a failed delete puts the account back. Raises `max_seq` to the highest sequence seen.
    fn load_account(
        &self,
        rec: AccountRecord,
        max_seq: &mut u64,
    ) -> Result<Arc<Account>, EngineError> {
        let store = &self.inner.store;
        let id = rec.id.clone();
        let out: OutgoingRecord = match store
            .scan_prefix(Family::Main, &keys::outgoing(&id))?
            .into_iter()
            .find(|(k, _)| *k == keys::outgoing(&id))
        {
            Some((k, v)) => decode(&k, &v)?,
            None => OutgoingRecord::default(),
        };
        let incoming: IncomingRecord = match store
            .scan_prefix(Family::Main, &keys::incoming(&id))?
            .into_iter()
            .find(|(k, _)| *k == keys::incoming(&id))
        {
            Some((k, v)) => decode(&k, &v)?,
            None => IncomingRecord::default(),
        };
        let mprefix = keys::account_prefix('m', &id);
        let mut trackers = Vec::new();
        for (k, v) in store.scan_prefix(Family::Main, &mprefix)? {
            let value: MaxValue = decode(&k, &v)?;
            trackers.push((keys::suffix(&k, &mprefix).to_owned(), value));
        }
        let mut queued = Vec::new();
        for (k, v) in store.scan_prefix(Family::Pending, &keys::account_prefix('q', &id))? {
            let q: QueuedRequest = decode(&k, &v)?;
            *max_seq = (*max_seq).max(q.seq);
            queued.push(q);
        }
        let mut credits = Vec::new();
        for (k, v) in store.scan_prefix(Family::Pending, &keys::account_prefix('c', &id))? {
            let c: CreditRecord = decode(&k, &v)?;
            credits.push(c);
        }
        let acct = self.build_account(&id, rec.created_ms, trackers)?;
        let module_scale = acct.module.asset_scale();
        let mut accepted = AcceptedTotal {
            units: out.target_total.clone(),
            leftover: Scaled::zero(module_scale),
        }
        .plus(&out.leftover, module_scale);
        for q in &queued {
            accepted = accepted.plus(&q.amount, module_scale);
        }
        *lock(&acct.accepted) = accepted;
        *lock(&acct.out) = out;
        *acct.incoming.try_lock()? = incoming.clone();
        *lock(&acct.incoming_view) = incoming;
        *lock(&acct.queue) = queued;
        {
            let mut map = lock(&acct.credits);
            for c in credits {
                map.insert(
                    c.idempotency_key.clone(),
                    PendingCredit {
                        record: c,
                        due: Instant::now(),
                    },
                );
            }
        }
        for (kind, ring) in [('h', 0u8), ('s', 1), ('r', 2)] {
            let rows = store.scan_prefix(Family::Main, &keys::account_prefix(kind, &id))?;
            let start = rows.len().saturating_sub(HISTORY_IN_MEMORY);
            for (k, v) in rows.iter().skip(start) {
                if let Some(seq) = keys::split_account(k).and_then(|(_, s)| keys::parse_seq(s)) {
                    *max_seq = (*max_seq).max(seq);
                }
                match ring {
                    0 => push_bounded(&acct.history, decode(k, v)?),
                    1 => push_bounded(&acct.sent, decode(k, v)?),
                    _ => push_bounded(&acct.credited, decode(k, v)?),
                }
            }
        }
        Ok(acct)
    }

    /// A new in-memory account `id` with its module and host (trackers as loaded).
    fn build_account(
        &self,
        id: &str,
        created_ms: u64,
        trackers: Vec<(String, MaxValue)>,
    ) -> Result<Arc<Account>, EngineError> {
        let cfg = &self.inner.config;
        let module = (self.inner.modules)(&cfg.module, &cfg.module_options).map_err(|source| {
            EngineError::ModuleConfig {
                module: cfg.module.clone(),
                source,
            }
        })?;
        let host = Arc::new(AccountHost::new(
            id,
            Arc::clone(&self.inner.store),
            Arc::clone(&self.inner.logs),
            self.inner.client.clone(),
            Arc::clone(&self.inner.clock),
            Arc::clone(&self.inner.identities),
            trackers,
        ));
        let ctx = ChannelContext::new(
            Arc::clone(&host) as Arc<dyn ContextHost>,
            cfg.module_options.clone(),
            id,
        );
        let connector_scale_config = cfg
            .account_connector_scales
            .get(id)
            .copied()
            .or(cfg.connector_scale);
        Ok(Arc::new(Account::new(
            id,
            created_ms,
            module,
            host,
            ctx,
            connector_scale_config,
        )))
    }

    /// Starts the account's workers and lists it as running.
    fn start_account(&self, acct: Arc<Account>) {
        acct.wake_settle.notify_one();
        acct.wake_credit.notify_one();
        let s = tokio::spawn(settle_worker(self.clone(), Arc::clone(&acct)));
        let c = tokio::spawn(credit_worker(self.clone(), Arc::clone(&acct)));
        lock(&acct.tasks).extend([s, c]);
        self.inner
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(acct.id.clone(), acct);
    }

    /// The account `id`: a running one, or one a failed delete kept, read back now.
    pub(super) fn account(&self, id: &str) -> Result<Arc<Account>, EngineError> {
        match self.live_account(id) {
            Some(acct) => Ok(acct),
            None => self.reload_kept_account(id),
        }
    }

    /// The running account `id`, if any.
    pub(super) fn live_account(&self, id: &str) -> Option<Arc<Account>> {
        self.inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Tries again to read back an account a failed delete kept but could not read back (see
    /// [`Engine::delete_account`]); starts it on success, fails with [`EngineError::KeptAccountUnreadable`]
    /// while the store does. [`EngineError::AccountNotFound`] for any other ID. One reload per account at a
    /// time: a caller that finds one running gets [`EngineError::Unavailable`] at once. The store is read without holding the engine-wide `broken` lock, so lookups of other IDs do not
    /// wait for it.
    fn reload_kept_account(&self, id: &str) -> Result<Arc<Account>, EngineError> {
        let rec = {
            let mut broken = lock(&self.inner.broken);
            let Some(kept) = broken.get_mut(id) else {
                drop(broken);
                return self
                    .live_account(id)
                    .ok_or_else(|| EngineError::AccountNotFound(id.to_owned()));
            };
            if kept.reloading {
                return Err(EngineError::Unavailable(format!(
                    "account {id} was kept by a failed delete and is being read back from the store"
                )));
            }
            kept.reloading = true;
            kept.rec.clone()
        };
        let loaded = self.load_account(rec, &mut 0);
        let mut broken = lock(&self.inner.broken);
        match loaded {
            Ok(acct) => {
                broken.remove(id);
                // Started under the lock, so no caller finds the account neither kept nor live.
                self.start_account(Arc::clone(&acct));
                drop(broken);
                tracing::info!(account = %id, "kept account read back from the store");
                Ok(acct)
            }
            Err(error) => {
                if let Some(kept) = broken.get_mut(id) {
                    kept.reloading = false;
                }
                Err(EngineError::KeptAccountUnreadable {
                    account: id.to_owned(),
                    source: Box::new(error),
                })
            }
        }
    }

    /// Retries [`Engine::reload_kept_account`] with backoff until it succeeds, the account is no longer waiting
    /// for it, or the engine shuts down.
    fn spawn_reload(&self, id: &str) {
        let engine = self.clone();
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            let mut shutdown = engine.inner.shutdown.subscribe();
            let mut attempts = 0u32;
            loop {
                let d = backoff(
                    attempts,
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                attempts = attempts.saturating_add(1);
                if !wait(&Notify::new(), Some(d), &mut shutdown).await {
                    return;
                }
                if !lock(&engine.inner.broken).contains_key(&id) {
                    return;
                }
                match engine.reload_kept_account(&id) {
                    Ok(_) => return,
                    Err(error) => {
                        tracing::warn!(account = %id, %error, attempts, "reading a kept account back failed")
                    }
                }
            }
        });
        lock(&self.inner.tasks).push(task);
    }

    /// IDs of every account (also those a failed delete kept and that are still being read back).
    pub fn account_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.extend(lock(&self.inner.broken).keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// `POST /accounts`: creates the account (a UUID if `id` is `None`) and returns its ID. Creating an existing
    /// account succeeds and changes nothing. The module's setup runs in the background and is retried.
    ///
    /// The work runs in its own task, so a client that hangs up mid-request cannot leave the account stored but
    /// not started.
    pub async fn create_account(&self, id: Option<String>) -> Result<String, EngineError> {
        let engine = self.clone();
        tokio::spawn(async move { engine.create_account_inner(id).await })
            .await
            .map_err(|source| EngineError::Task {
                task: "create",
                source,
            })?
    }

    async fn create_account_inner(&self, id: Option<String>) -> Result<String, EngineError> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
        validate_account_id(&id)?;
        let _guard = self.inner.create_lock.lock().await;
        match self.account(&id) {
            Ok(_) => return Ok(id),
            Err(EngineError::AccountNotFound(_)) => {}
            // Kept by a failed delete and not readable yet: creating it again would read the same records.
            Err(e) => return Err(e),
        }
        let rec = AccountRecord {
            id: id.clone(),
            created_ms: self.now_ms(),
        };
        // An ID deleted earlier keeps its cumulative totals and module records (see `delete_account`), so
        // it resumes where it stopped instead of restarting from zero against a peer that did not.
        let acct = self.load_account(rec.clone(), &mut 0)?;
        let mut batch = SeBatch::new();
        batch.put_json(Family::Main, keys::account(&id), &rec)?;
        self.inner.store.submit(batch)?.await?;
        tracing::info!(account = %id, "settlement account created");
        self.start_account(acct);
        Ok(id)
    }

    /// `DELETE /accounts/{id}`: stops the account's workers, disconnects the module and deletes the account,
    /// its queued requests, pending credits, idempotency keys and history. Amounts still queued or uncredited
    /// are logged and dropped. The cumulative totals, leftovers and module records stay: the peer's engine
    /// keeps its own, so an account created again under this ID resumes from them (starting again from zero
    /// would make the peer ignore our new claims, or make an eth-payment payee credit old payments twice).
    ///
    /// If the module's `disconnect` fails (e.g. a payee cannot redeem its best claim because the ledger is
    /// unreachable), nothing is deleted: the module's records may be money not yet collected. The account is
    /// rebuilt from the store and keeps running, and the call fails with [`EngineError::DisconnectFailed`];
    /// deleting again later retries. If even reading the account back fails (the store failing), the account
    /// stays listed and every call for it reads it back first (failing with
    /// [`EngineError::KeptAccountUnreadable`] while the store does), and a background task retries with backoff;
    /// the error says so (its `reload`).
    ///
    /// The work runs in its own task: a client that hangs up while the module disconnects (which may wait on
    /// a ledger) cannot leave the account half deleted, unreachable but still stored.
    pub async fn delete_account(&self, id: &str) -> Result<(), EngineError> {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.delete_account_inner(&id).await })
            .await
            .map_err(|source| EngineError::Task {
                task: "delete",
                source,
            })?
    }

    async fn delete_account_inner(&self, id: &str) -> Result<(), EngineError> {
        let _guard = self.inner.create_lock.lock().await;
        let acct = self.account(id)?;
        // No settle request is between its `deleted` check and its queue while we hold this.
        let gate = acct.gate.write().await;
        acct.deleted.store(true, Ordering::SeqCst);
        self.inner
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        let tasks: Vec<JoinHandle<()>> = lock(&acct.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        // An incoming claim being handled finishes first (later ones see `deleted`), so the module closes with
        // the latest best claim.
        let incoming_guard = acct.incoming.lock().await;
        // Barrier: a stopped worker may have left a write in the queue; once this empty batch is durable, so
        // is every earlier one, and the store holds the account's true state.
        self.inner.store.submit(SeBatch::new())?.await?;
        if let Err(error) = acct.module.disconnect(&acct.ctx).await {
            tracing::error!(account = %id, %error, "module disconnect failed; account kept");
            drop(incoming_guard);
            drop(gate);
            // The old instance stays `deleted` (late callers holding it are refused); the account goes on from
            // what the store holds, not from memory a stopped worker may have left behind.
            let rec = AccountRecord {
                id: id.to_owned(),
                created_ms: acct.created_ms,
            };
            match self.load_account(rec.clone(), &mut 0) {
                Ok(fresh) => self.start_account(fresh),
                Err(reload_error) => {
                    tracing::error!(account = %id, error = %reload_error,
                        "reading the kept account back from the store failed; retrying in the background");
                    lock(&self.inner.broken).insert(
                        id.to_owned(),
                        KeptAccount {
                            rec,
                            reloading: false,
                        },
                    );
                    self.spawn_reload(id);
                    return Err(EngineError::DisconnectFailed {
                        source: error,
                        reload: Some(Box::new(reload_error)),
                    });
                }
            }
            return Err(EngineError::DisconnectFailed {
                source: error,
                reload: None,
            });
        }
        let view = self.view(&acct);
        if view.queued.amount != "0" || view.in_flight.amount != "0" || !view.uncredited.is_empty()
        {
            tracing::warn!(account = %id, queued = %view.queued.amount, in_flight = %view.in_flight.amount,
                uncredited = view.uncredited.len(), "account deleted with unsettled or uncredited amounts");
        }
        let mut batch = SeBatch::new();
        batch.delete(Family::Main, keys::account(id));
        for kind in ['k', 'h', 's', 'r'] {
            for (k, _) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix(kind, id))?
            {
                batch.delete(Family::Main, k);
            }
        }
        for kind in ['q', 'c'] {
            for (k, _) in self
                .inner
                .store
                .scan_prefix(Family::Pending, &keys::account_prefix(kind, id))?
            {
                batch.delete(Family::Pending, k);
            }
        }
        self.inner.store.submit(batch)?.await?;
        self.inner.idem.retain(|(a, _), _| a != id);
        tracing::info!(account = %id, "settlement account deleted");
        Ok(())
    }
}
