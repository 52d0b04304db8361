//! Messages from the peer's engine (`POST /accounts/{id}/messages`): a claim is handed to the module and what
//! it is worth recorded for the credit worker; an RPC or another message type goes to the module.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use channel_modules::sync::lock;
use channel_modules::{ChannelContext, ContextHost, ModuleError};
use tokio::time::Instant;

use super::account::{Account, PendingCredit};
use super::engine::Engine;
use super::error::EngineError;
use super::host::StagingHost;
use super::idempotency::credit_idempotency_key;
use super::quantity::module_units_to_scale;
use super::store::{keys, CreditRecord, CreditStatus, Family, IncomingRecord, SeBatch};
use super::wire::{self, Message};

impl Engine {
    /// `POST /accounts/{id}/messages`: handles a message from the peer engine and returns the reply bytes.
    ///
    /// The work runs in its own task: the HTTP server drops a request's future when its client hangs up (the
    /// peer's engine killed, a connector's timeout), and a claim dropped after its write was queued would leave
    /// the write on disk and memory behind it; the next claim would then be credited from the old total under
    /// another key, and the stored credit credited again after a restart.
    pub async fn handle_message(&self, id: &str, body: Bytes) -> Result<Vec<u8>, EngineError> {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.handle_message_inner(&id, body).await })
            .await
            .map_err(|source| EngineError::Task {
                task: "message",
                source,
            })?
    }

    async fn handle_message_inner(&self, id: &str, body: Bytes) -> Result<Vec<u8>, EngineError> {
        let acct = self.account(id)?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let msg = wire::parse(&body)?;
        match msg {
            Message::Claim(claim) => self.handle_claim(&acct, claim).await,
            Message::Rpc { method, args } => {
                let result = acct.module.handle_rpc(&acct.ctx, &method, args).await;
                if let Err(error) = &result {
                    tracing::debug!(account = %acct.id, %method, %error, "module rpc failed");
                }
                Ok(wire::rpc_reply(&result))
            }
            Message::Other { kind, body } => {
                match acct.module.handle_rpc(&acct.ctx, &kind, body).await {
                    Ok(v) => Ok(v.to_string().into_bytes()),
                    Err(ModuleError::UnknownMethod(_)) => Err(EngineError::UnknownMessage(kind)),
                    Err(e) => Err(EngineError::Refused(e)),
                }
            }
        }
    }

    async fn handle_claim(
        &self,
        acct: &Arc<Account>,
        claim: channel_modules::Claim,
    ) -> Result<Vec<u8>, EngineError> {
        if !lock(&acct.status).connected {
            return Err(EngineError::Unavailable(
                "account setup has not finished; retry later".to_owned(),
            ));
        }
        // One incoming claim per account at a time: the module's tracker and our records move together.
        let mut incoming = acct.incoming.lock().await;
        if acct.deleted.load(Ordering::SeqCst) {
            return Err(EngineError::AccountNotFound(acct.id.clone()));
        }
        let staging = Arc::new(StagingHost::new(Arc::clone(&acct.host)));
        let ctx = ChannelContext::new(
            Arc::clone(&staging) as Arc<dyn ContextHost>,
            self.inner.config.module_options.clone(),
            acct.id.as_str(),
        );
        let credit = match acct.module.handle_incoming_claim(&ctx, Some(&claim)).await {
            Ok(c) => c,
            Err(e @ (ModuleError::NotAccepted(_) | ModuleError::InvalidFields(_))) => {
                tracing::warn!(account = %acct.id, error = %e, "incoming claim refused");
                return Err(EngineError::Refused(e));
            }
            Err(e) => {
                tracing::warn!(account = %acct.id, error = %e, "incoming claim failed");
                return Err(EngineError::Module(e));
            }
        };
        let Some(credit) = credit else {
            staging.commit(SeBatch::new(), &*self.inner.store).await?;
            return Ok(wire::ack("0", acct.credit_scale()));
        };
        let scale = acct.credit_scale();
        let (credited, leftover) = module_units_to_scale(
            &incoming.leftover,
            &credit.amount,
            acct.module.asset_scale(),
            scale,
        );
        let new_incoming = IncomingRecord {
            leftover,
            received_total: &incoming.received_total + &credit.amount,
        };
        let mut batch = SeBatch::new();
        batch.put_json(Family::Main, keys::incoming(&acct.id), &new_incoming)?;
        let mut record = None;
        if !credited.is_zero() {
            let key = credit_idempotency_key(&acct.id, &credit.settlement_id);
            if lock(&acct.credits).contains_key(&key) {
                // Equal settlement IDs must mean the same settlement; a module reporting a second increase
                // under one ID is a module bug. Refuse rather than merge two credits under one key.
                return Err(EngineError::Unavailable(format!(
                    "settlement id {:?} is already pending",
                    credit.settlement_id
                )));
            }
            let rec = CreditRecord {
                settlement_id: credit.settlement_id.clone(),
                idempotency_key: key.clone(),
                amount: credited.clone(),
                status: CreditStatus::Pending,
                attempts: 0,
                last_error: None,
                received_ms: self.now_ms(),
                done_ms: None,
            };
            batch.put_json(Family::Pending, keys::credit(&acct.id, &key), &rec)?;
            record = Some(rec);
        }
        staging.commit(batch, &*self.inner.store).await?;
        *lock(&acct.incoming_view) = new_incoming.clone();
        *incoming = new_incoming;
        tracing::info!(account = %acct.id, increase = %credit.amount, settlement_id = %credit.settlement_id,
            credit = %credited.amount, scale, "incoming settlement");
        if let Some(rec) = record {
            lock(&acct.credits).insert(
                rec.idempotency_key.clone(),
                PendingCredit {
                    record: rec,
                    due: Instant::now(),
                },
            );
            acct.wake_credit.notify_one();
        }
        Ok(wire::ack(&credited.amount.to_string(), scale))
    }
}
