//! Purging what the engine keeps only for a while: answered idempotency keys past their TTL and history past
//! its retention, once an hour.

use std::time::Duration;

use channel_modules::sync::lock;

use super::engine::Engine;
use super::error::EngineError;
use super::idempotency::{IdemEntry, IDEMPOTENCY_TTL};
use super::store::{
    decode, keys, CreditRecord, Family, HistoryRecord, IdempotencyRecord, SeBatch, SentRecord,
};

/// How long settle and credit history records are kept.
pub(super) const HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often expired idempotency keys and old history are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Idempotency records read from the store per page when purging.
const PURGE_PAGE: usize = 4096;

impl Engine {
    /// Purges idempotency keys past their time to live (25 h after their latest request; RFC 38 asks for at
    /// least 24 h) and settle and credit history older than 7 days.
    pub async fn purge_expired(&self) -> Result<(), EngineError> {
        let now = self.now_ms();
        let ttl = IDEMPOTENCY_TTL.as_millis() as u64;
        self.inner
            .idem
            .retain(|_, e| !matches!(e, IdemEntry::Done(rec) if rec.last_ms + ttl < now));
        // The store holds every answered key (memory only the recent ones): page through it, so keys that
        // expired while the engine was down go too, without reading them all into memory at once.
        let prefix = keys::kind_prefix('k');
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .scan_page(&prefix, after.as_deref(), PURGE_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == PURGE_PAGE;
            let mut tickets = Vec::new();
            for (k, v) in page {
                let rec: IdempotencyRecord = match decode(&k, &v) {
                    Ok(rec) => rec,
                    Err(error) => {
                        // One bad row must not stop the purge of every key after it.
                        tracing::warn!(key = %k, %error, "undecodable idempotency record skipped by the purge");
                        continue;
                    }
                };
                if rec.last_ms + ttl >= now {
                    continue;
                }
                let Some((acct, idem_key)) = keys::split_account(&k) else {
                    continue;
                };
                // Decide and delete under the key's shard lock: a request reusing the key holds an entry
                // there (it is skipped) or starts after the delete is queued (its write lands after it), and
                // the re-read sees any newer answer that has already left the cache.
                let shard = lock(self.inner.idem.shard(acct, idem_key));
                if shard.contains(&(acct.to_owned(), idem_key.to_owned()))
                    || self.stored_idempotency(acct, idem_key)?.is_some()
                {
                    continue;
                }
                let mut delete = SeBatch::new();
                delete.delete(Family::Main, k.clone());
                tickets.push(self.inner.store.submit(delete)?);
                drop(shard);
            }
            for ticket in tickets {
                ticket.await?;
            }
            if !full {
                break;
            }
        }
        let mut batch = SeBatch::new();
        let horizon = now.saturating_sub(HISTORY_RETENTION.as_millis() as u64);
        for id in self.account_ids() {
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('h', &id))?
            {
                let h: HistoryRecord = decode(&k, &v)?;
                if h.request.accepted_ms >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('s', &id))?
            {
                let s: SentRecord = decode(&k, &v)?;
                if s.sent_ms >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
            for (k, v) in self
                .inner
                .store
                .scan_prefix(Family::Main, &keys::account_prefix('r', &id))?
            {
                let r: CreditRecord = decode(&k, &v)?;
                if r.done_ms.unwrap_or(0) >= horizon {
                    break;
                }
                batch.delete(Family::Main, k);
            }
        }
        if !batch.is_empty() {
            self.inner.store.submit(batch)?.await?;
        }
        Ok(())
    }
}

/// Runs [`Engine::purge_expired`] every [`PURGE_INTERVAL`] until the engine shuts down.
pub(super) async fn purge_task(engine: Engine) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = engine.purge_expired().await {
            tracing::warn!(%error, "settlement engine purge failed");
        }
    }
}
