//! Accepting a settle request (`POST /accounts/{id}/settlements`): checked, deduplicated by its
//! Idempotency-Key, held to the module's limit, made durable, and only then answered and queued for the
//! account's settle worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use channel_modules::amount::ModuleUnits;
use channel_modules::sync::lock;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::account::Account;
use super::engine::Engine;
use super::error::EngineError;
use super::idempotency::{validate_idempotency_key, IdemEntry, IDEMPOTENCY_REFRESH};
use super::quantity::{parse_quantity, to_module_units, Scaled};
use super::store::{keys, Family, IdempotencyRecord, QueuedRequest, SeBatch};

impl Engine {
    /// `POST /accounts/{id}/settlements`: validates, dedupes by Idempotency-Key, persists the request and
    /// returns the response to send (status and JSON body). Settlement happens asynchronously.
    ///
    /// The work runs in its own task, so a client that hangs up mid-request cannot leave a key half-recorded.
    pub async fn accept_settlement(
        &self,
        id: &str,
        key: Option<String>,
        body: Bytes,
    ) -> Result<(u16, String), EngineError> {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.accept_settlement_inner(&id, key, &body).await })
            .await
            .map_err(|source| EngineError::Task {
                task: "settle",
                source,
            })?
    }

    async fn accept_settlement_inner(
        &self,
        id: &str,
        key: Option<String>,
        body: &[u8],
    ) -> Result<(u16, String), EngineError> {
        let acct = self.account(id)?;
        let amount = parse_quantity(body)?;
        let module_scale = acct.module.asset_scale();
        let (units, _) = to_module_units(&Scaled::zero(module_scale), &amount, module_scale);
        if units > ModuleUnits::from(u64::MAX) {
            // Modules settle at most 2^64 − 1 units at once; a larger amount would be accepted and then block
            // every later settlement of the account.
            return Err(EngineError::BadRequest(format!(
                "amount {} at scale {} is more than the module can settle (2^64 - 1 units at scale {module_scale})",
                amount.amount, amount.scale
            )));
        }
        let quantity = amount.to_quantity();
        let response_body = serde_json::to_string(&quantity).map_err(EngineError::Encode)?;
        let Some(key) = key else {
            self.enqueue(&acct, None, amount, None).await?;
            return Ok((201, response_body));
        };
        validate_idempotency_key(&key)?;
        let hash = {
            let mut h = Sha256::new();
            h.update(id.as_bytes());
            h.update(b"\n");
            h.update(quantity.amount.as_bytes());
            h.update(b"\n");
            h.update([quantity.scale]);
            hex::encode(h.finalize())
        };
        let map_key = (id.to_owned(), key.clone());
        let done_tx = loop {
            let mut wait = {
                let mut shard = lock(self.inner.idem.shard(id, &key));
                if shard.get_mut(&map_key).is_none() {
                    // Not in memory: answered long enough ago to have left the cache, or new. Read under the
                    // shard lock, so no request with this key can start in between.
                    if let Some(rec) = self.stored_idempotency(id, &key)? {
                        shard.insert(map_key.clone(), IdemEntry::Done(rec));
                    }
                }
                match shard.get_mut(&map_key) {
                    Some(IdemEntry::Done(rec)) => {
                        if rec.input_hash != hash {
                            return Err(EngineError::KeyConflict(key));
                        }
                        let now = self.now_ms();
                        let refresh = now.saturating_sub(rec.last_ms)
                            > IDEMPOTENCY_REFRESH.as_millis() as u64;
                        rec.last_ms = now;
                        let reply = (rec.status, rec.body.clone());
                        // Not while the account is being deleted, or after: the refresh would outlive the
                        // delete's removal of the account's keys (a try: a delete holds the gate throughout).
                        let gate = acct
                            .gate
                            .try_read()
                            .ok()
                            .filter(|_| !acct.deleted.load(Ordering::SeqCst));
                        if refresh && gate.is_some() {
                            let mut batch = SeBatch::new();
                            batch.put_json(Family::Main, keys::idempotency(id, &key), &*rec)?;
                            // Best effort: the replay is answered either way; the write keeps the key alive
                            // across restarts.
                            drop(self.inner.store.submit(batch));
                        }
                        return Ok(reply);
                    }
                    Some(IdemEntry::Pending { hash: h, done }) => {
                        if *h != hash {
                            return Err(EngineError::KeyConflict(key));
                        }
                        done.clone()
                    }
                    None => {
                        let (tx, rx) = watch::channel(false);
                        shard.insert(
                            map_key.clone(),
                            IdemEntry::Pending {
                                hash: hash.clone(),
                                done: rx,
                            },
                        );
                        break tx;
                    }
                }
            };
            // Another request with the same key is being written: wait for it, then look again.
            let _ = wait.wait_for(|done| *done).await;
        };
        let now = self.now_ms();
        let rec = IdempotencyRecord {
            input_hash: hash,
            status: 201,
            body: response_body.clone(),
            first_ms: now,
            last_ms: now,
        };
        let result = self
            .enqueue(&acct, Some(key.clone()), amount, Some(&rec))
            .await;
        {
            let mut shard = lock(self.inner.idem.shard(id, &key));
            match &result {
                Ok(()) => {
                    shard.insert(map_key, IdemEntry::Done(rec));
                }
                Err(_) => {
                    shard.remove(&map_key);
                }
            }
        }
        let _ = done_tx.send(true);
        result.map(|()| (201, response_body))
    }

    async fn enqueue(
        &self,
        acct: &Arc<Account>,
        key: Option<String>,
        amount: Scaled,
        idem: Option<&IdempotencyRecord>,
    ) -> Result<(), EngineError> {
        let req = QueuedRequest {
            seq: self.next_seq(),
            key: key.clone(),
            amount,
            accepted_ms: self.now_ms(),
        };
        let _gate = acct.gate.read().await;
        if acct.deleted.load(Ordering::SeqCst) {
            // Checked before anything is written: a request the connector is told failed is never settled.
            return Err(EngineError::AccountNotFound(acct.id.clone()));
        }
        let mut batch = SeBatch::new();
        batch.put_json(Family::Pending, keys::queued(&acct.id, req.seq), &req)?;
        if let (Some(key), Some(rec)) = (&key, idem) {
            batch.put_json(Family::Main, keys::idempotency(&acct.id, key), rec)?;
        }
        let module_scale = acct.module.asset_scale();
        {
            // Checked and counted in one step, before anything is written: concurrent requests of the account
            // each see the ones before them (replays of an accepted key never get here).
            let mut accepted = lock(&acct.accepted);
            let after = accepted.plus(&req.amount, module_scale);
            if let Some(limit) = acct.module.max_cumulative_settlement() {
                if after.units > limit {
                    return Err(EngineError::BadRequest(format!(
                        "amount {} at scale {} would take the account's cumulative settlements to {} units at \
                         scale {module_scale}, more than the module can ever settle ({limit}); {} are already \
                         settled, in flight or queued",
                        req.amount.amount, req.amount.scale, after.units, accepted.units
                    )));
                }
            }
            *accepted = after;
        }
        let written: Result<(), EngineError> = match self.inner.store.submit(batch) {
            Ok(ticket) => ticket.await.map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            // Not accepted: give the share back, so that a retry is answered with the store's error (503), not
            // with a limit this request never used. A write that failed after it was queued may still be on
            // disk, but a failed write poisons the store: nothing else is written before the restart, which
            // rebuilds the total from what is stored.
            let mut accepted = lock(&acct.accepted);
            if let Some(before) = accepted.minus(&req.amount, module_scale) {
                *accepted = before;
            }
            return Err(e);
        }
        lock(&acct.queue).push(req);
        acct.wake_settle.notify_one();
        Ok(())
    }
}
