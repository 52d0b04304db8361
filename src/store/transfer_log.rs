//! [`RocksTransferLog`]: the durable [`TransferLog`] of one key, on the node's [`Db`].
//!
//! **One write per change.** Every state change is exactly one `WriteBatch` holding the record *and* the
//! updated sums, so no crash point can leave sums and records disagreeing:
//!
//! * prepare: put `p<id>` (pending column family) + put sums (a latest-value put: when one group commit
//!   carries several changes of this log, the sums are written once, see `Db::submit_with_latest`);
//! * fulfill / cancel: delete `p<id>` + put `t<id>` (the finished record) + put sums (+ delete `f<id>` if
//!   a fulfillment was noted);
//! * note a fulfillment (write-ahead of sending our Fulfill): put `f<id>` (pending column family);
//! * set maximum / minimum: put the override.
//!
//! **Start-up** reads the sums, the two overrides and the prepared records only (the pending column family,
//! which holds prepared transfers and nothing else), never the finished history, and checks that the sums
//! agree with the prepared records.
//!
//! **Concurrency.** Each log has one mutex. Under it a call checks, updates the in-memory state (sums, limits,
//! prepared records) and *submits* its batch to the [`Db`] writer, which keeps batches in submission order.
//! It then releases the lock and awaits durability (a group-committed fsync shared with concurrent callers)
//! before returning `Ok`. So racing prepares are checked against each other's reservations and can never exceed
//! a limit, and the lock is never held across an fsync.
//!
//! Why no rollback path is needed: if the write of a change fails, the database is poisoned and refuses every
//! later write, and any batch submitted after the failed one (which is the only kind that can depend on the
//! unpersisted in-memory change) fails too. The caller gets an error; the in-memory view may then show a
//! change that is not on disk, which is why a poisoned node must restart: start-up rebuilds the state from
//! what the disk really holds.
//!
//! **Read-your-writes.** A record whose batch is submitted but not yet durable stays visible in memory (in the
//! prepared map, or the `finishing` overlay for a record just fulfilled or cancelled) until the writer has
//! applied it. An answer that reports such a record as already done (an idempotent repeat) first waits until
//! its batch is durable, so no `Ok` ever rests on an unsynced write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use channel_modules::amount::LedgerSum;
use channel_modules::ledger::{
    check_idempotent_prepare, not_prepared_error, reserve, settle, SettleTo, Settlement,
};
use channel_modules::store::{
    Direction, Limit, NotedFulfillment, PrepareOutcome, StoreError, Sums, Transfer, TransferId,
    TransferLog, TransferLogError, TransferRecord, TransferState,
};
use channel_modules::sync::lock;
use rocksdb::WriteBatch;

use super::codec::{self, tag};
use super::db::Db;

/// A record in memory with the sequence number of the batch that wrote it.
#[derive(Debug, Clone)]
struct Tracked {
    record: TransferRecord,
    seq: u64,
}

#[derive(Debug, Default)]
struct State {
    sums: Sums,
    /// Sequence number of the batch that last changed `sums` (0: loaded at open, durable).
    sums_seq: u64,
    maximum: Option<Limit>,
    minimum: Option<Limit>,
    prepared: HashMap<TransferId, Tracked>,
    /// Records just fulfilled or cancelled whose batch the writer may not have applied yet.
    finishing: HashMap<TransferId, Tracked>,
    /// `finishing` entries in submission order, pruned once durable.
    finishing_order: VecDeque<(u64, TransferId)>,
    /// Noted fulfillments of prepared transfers, with the sequence number of the batch that wrote each.
    notes: HashMap<TransferId, (NotedFulfillment, u64)>,
}

impl State {
    /// Drops overlay entries whose batches are durable (hence readable from the database).
    fn prune(&mut self, durable: u64) {
        while let Some(&(seq, id)) = self.finishing_order.front() {
            if seq > durable {
                break;
            }
            self.finishing_order.pop_front();
            if self.finishing.get(&id).is_some_and(|t| t.seq == seq) {
                self.finishing.remove(&id);
            }
        }
    }
}

/// The durable transfer log of one key. Open it through [`super::RocksStores`], which guarantees one instance
/// per key.
#[derive(Debug)]
pub struct RocksTransferLog {
    db: Arc<Db>,
    prefix: Vec<u8>,
    sums_key: Vec<u8>,
    configured_maximum: Limit,
    configured_minimum: Limit,
    state: Mutex<State>,
}

/// What a caller must wait for after releasing the lock.
enum Pending<T> {
    /// The answer, once the given sequence number is durable.
    After(u64, T),
    /// The answer, once this ticket resolves.
    Ticket(super::db::WriteTicket, T),
}

/// Whether a change's caller waits for its sync ([`Db::submit`]) or not ([`Db::submit_deferred`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    Synced,
    Deferred,
}

impl<T> Pending<T> {
    /// The answer without waiting (deferred durability). A dropped ticket does not cancel its write: the
    /// writer thread still writes and syncs the batch, in order.
    fn deferred(self) -> T {
        match self {
            Pending::After(_, value) | Pending::Ticket(_, value) => value,
        }
    }
}

impl RocksTransferLog {
    /// Loads the log stored under `prefix` (see [`codec::log_prefix`]): sums, overrides and prepared records.
    pub(crate) fn open(
        db: Arc<Db>,
        prefix: Vec<u8>,
        configured_maximum: Limit,
        configured_minimum: Limit,
    ) -> Result<Self, StoreError> {
        let sums_key = codec::sub_key(&prefix, tag::SUMS, None);
        let sums = match db.get(&sums_key)? {
            Some(bytes) => codec::decode_sums(&sums_key, &bytes)?,
            None => Sums::default(),
        };
        let maximum = Self::load_limit(&db, &prefix, tag::MAXIMUM)?;
        let minimum = Self::load_limit(&db, &prefix, tag::MINIMUM)?;
        let mut prepared = HashMap::new();
        let (mut incoming, mut outgoing) = (0u128, 0u128);
        for (key, value) in db.scan_pending_prefix(&codec::sub_key(&prefix, tag::PREPARED, None))? {
            let record = codec::decode_record(&key, &value)?;
            if record.state != TransferState::Prepared {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "finished record in the prepared index".to_owned(),
                });
            }
            match record.direction {
                Direction::Incoming => incoming += u128::from(record.transfer.amount.0),
                Direction::Outgoing => outgoing += u128::from(record.transfer.amount.0),
            }
            prepared.insert(record.transfer.id, Tracked { record, seq: 0 });
        }
        let mut notes = HashMap::new();
        for (key, value) in
            db.scan_pending_prefix(&codec::sub_key(&prefix, tag::FULFILLING, None))?
        {
            let note = decode_note(&key, &value)?;
            if !prepared.contains_key(&note.id) {
                // Notes are removed in the batch that finishes their transfer, so this cannot happen.
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "noted fulfillment of a transfer that is not prepared".to_owned(),
                });
            }
            notes.insert(note.id, (note, 0));
        }
        // Paired check: the sums written with each batch must agree with the prepared records.
        if sums
            .incoming_fulfilled_and_prepared
            .checked_sub(sums.incoming_fulfilled)
            != Some(LedgerSum(incoming))
            || sums
                .outgoing_fulfilled_and_prepared
                .checked_sub(sums.outgoing_fulfilled)
                != Some(LedgerSum(outgoing))
        {
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(&sums_key).into_owned(),
                reason: format!(
                    "sums {sums:?} disagree with prepared records (incoming {incoming}, outgoing {outgoing})"
                ),
            });
        }
        tracing::debug!(prepared = prepared.len(), "transfer log loaded");
        Ok(RocksTransferLog {
            db,
            prefix,
            sums_key,
            configured_maximum,
            configured_minimum,
            state: Mutex::new(State {
                sums,
                maximum,
                minimum,
                prepared,
                notes,
                ..State::default()
            }),
        })
    }

    fn load_limit(db: &Db, prefix: &[u8], which: u8) -> Result<Option<Limit>, StoreError> {
        let key = codec::sub_key(prefix, which, None);
        db.get(&key)?
            .map(|bytes| codec::decode_limit(&key, &bytes))
            .transpose()
    }

    /// Submits a change's batch together with the log's new sums (a latest-value put: concurrent changes of
    /// this log in one group commit write the sums once).
    fn submit(
        &self,
        batch: WriteBatch,
        sums: &Sums,
        sync: Durability,
    ) -> Result<super::db::WriteTicket, StoreError> {
        self.db.submit_with_latest(
            batch,
            self.sums_key.clone(),
            codec::encode_sums(sums).to_vec(),
            sync == Durability::Deferred,
        )
    }

    fn lock_pruned(&self) -> MutexGuard<'_, State> {
        let mut state = lock(&self.state);
        state.prune(self.db.durable_seq());
        state
    }

    /// The finished record of `id`, if there is one. Read without filling the block cache: almost every
    /// lookup is a prepare's check for a re-used ID, whose block (read on a bloom filter's false positive)
    /// holds random IDs nobody looks up again.
    fn load_finished(&self, id: &TransferId) -> Result<Option<TransferRecord>, StoreError> {
        let key = codec::sub_key(&self.prefix, tag::FINISHED, Some(id));
        self.db
            .get_once(&key)?
            .map(|bytes| codec::decode_record(&key, &bytes))
            .transpose()
    }

    async fn resolve<T>(&self, pending: Pending<T>) -> Result<T, TransferLogError> {
        match pending {
            Pending::After(seq, value) => {
                self.db.wait_durable(seq).await?;
                Ok(value)
            }
            Pending::Ticket(ticket, value) => {
                ticket.wait().await?;
                Ok(value)
            }
        }
    }

    fn settle_locked(
        &self,
        id: &TransferId,
        to: SettleTo<'_>,
        sync: Durability,
    ) -> Result<Pending<TransferRecord>, TransferLogError> {
        let mut state = self.lock_pruned();
        if let Some(tracked) = state.finishing.get(id) {
            return match settle(&state.sums, &tracked.record, to)? {
                Settlement::Unchanged(record) => Ok(Pending::After(tracked.seq, record)),
                Settlement::Changed { .. } => Err(corrupt_overlay(id)),
            };
        }
        let Some(tracked) = state.prepared.get(id) else {
            // Finished and durable, or unknown. The database read happens under the lock so that no concurrent
            // change of this ID can slip in between.
            let stored = self
                .load_finished(id)?
                .ok_or(TransferLogError::NotFound(*id))?;
            return match settle(&state.sums, &stored, to)? {
                Settlement::Unchanged(record) => Ok(Pending::After(0, record)),
                Settlement::Changed { .. } => Err(corrupt_overlay(id)),
            };
        };
        match settle(&state.sums, &tracked.record, to)? {
            Settlement::Unchanged(record) => Ok(Pending::After(tracked.seq, record)),
            Settlement::Changed { record, sums } => {
                let pending_cf = self.db.pending_cf()?;
                let mut batch = WriteBatch::default();
                batch.delete_cf(
                    pending_cf,
                    codec::sub_key(&self.prefix, tag::PREPARED, Some(id)),
                );
                batch.put(
                    codec::sub_key(&self.prefix, tag::FINISHED, Some(id)),
                    codec::encode_record(&record)?,
                );
                if state.notes.contains_key(id) {
                    batch.delete_cf(
                        pending_cf,
                        codec::sub_key(&self.prefix, tag::FULFILLING, Some(id)),
                    );
                }
                let ticket = self.submit(batch, &sums, sync)?;
                let seq = ticket.seq();
                state.prepared.remove(id);
                state.notes.remove(id);
                state.sums = sums;
                state.sums_seq = seq;
                state.finishing.insert(
                    *id,
                    Tracked {
                        record: record.clone(),
                        seq,
                    },
                );
                state.finishing_order.push_back((seq, *id));
                Ok(Pending::Ticket(ticket, record))
            }
        }
    }

    /// Checks and applies a prepare under the lock and submits its batch; the caller waits (or not).
    fn prepare_locked(
        &self,
        transfer: &Transfer,
        direction: Direction,
        sync: Durability,
    ) -> Result<Pending<PrepareOutcome>, TransferLogError> {
        let mut state = self.lock_pruned();
        let known = state
            .prepared
            .get(&transfer.id)
            .or_else(|| state.finishing.get(&transfer.id));
        let pending = if let Some(tracked) = known {
            let outcome = check_idempotent_prepare(&tracked.record, transfer, direction)?;
            Pending::After(tracked.seq, outcome)
        } else if let Some(stored) = self.load_finished(&transfer.id)? {
            Pending::After(0, check_idempotent_prepare(&stored, transfer, direction)?)
        } else {
            let maximum = state.maximum.unwrap_or(self.configured_maximum);
            let minimum = state.minimum.unwrap_or(self.configured_minimum);
            // A limit failure returns here, before anything is recorded: a retry is checked again.
            let sums = reserve(&state.sums, direction, transfer.amount, maximum, minimum)?;
            let record = TransferRecord {
                transfer: transfer.clone(),
                direction,
                state: TransferState::Prepared,
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(
                self.db.pending_cf()?,
                codec::sub_key(&self.prefix, tag::PREPARED, Some(&transfer.id)),
                codec::encode_record(&record)?,
            );
            let ticket = self.submit(batch, &sums, sync)?;
            state.sums = sums;
            state.sums_seq = ticket.seq();
            state.prepared.insert(
                transfer.id,
                Tracked {
                    record,
                    seq: ticket.seq(),
                },
            );
            Pending::Ticket(ticket, PrepareOutcome::Prepared)
        };
        Ok(pending)
    }

    async fn set_limit(&self, which: u8, limit: Limit) -> Result<(), TransferLogError> {
        let ticket = {
            let mut state = self.lock_pruned();
            let mut batch = WriteBatch::default();
            batch.put(
                codec::sub_key(&self.prefix, which, None),
                codec::encode_limit(limit),
            );
            let ticket = self.db.submit(batch)?;
            if which == tag::MAXIMUM {
                state.maximum = Some(limit);
            } else {
                state.minimum = Some(limit);
            }
            ticket
        };
        Ok(ticket.wait().await?)
    }

    /// Number of records held in the in-flight overlay (`testing` feature: tests check that it drains).
    #[cfg(any(test, feature = "testing"))]
    pub fn overlay_len(&self) -> usize {
        self.lock_pruned().finishing.len()
    }
}

fn corrupt_overlay(id: &TransferId) -> TransferLogError {
    TransferLogError::Store(StoreError::Corrupt {
        key: id.to_string(),
        reason: "finished record is not final".to_owned(),
    })
}

#[async_trait]
impl TransferLog for RocksTransferLog {
    async fn prepare(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError> {
        let pending = self.prepare_locked(transfer, direction, Durability::Synced)?;
        self.resolve(pending).await
    }

    async fn fulfill(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError> {
        let pending = self.settle_locked(id, SettleTo::Fulfill(fulfillment), Durability::Synced)?;
        self.resolve(pending).await
    }

    async fn prepare_deferred(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError> {
        Ok(self
            .prepare_locked(transfer, direction, Durability::Deferred)?
            .deferred())
    }

    async fn fulfill_deferred(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError> {
        Ok(self
            .settle_locked(id, SettleTo::Fulfill(fulfillment), Durability::Deferred)?
            .deferred())
    }

    async fn cancel(
        &self,
        id: &TransferId,
        reason: &str,
    ) -> Result<TransferRecord, TransferLogError> {
        let pending = self.settle_locked(id, SettleTo::Cancel(reason), Durability::Synced)?;
        self.resolve(pending).await
    }

    async fn get(&self, id: &TransferId) -> Result<Option<TransferRecord>, TransferLogError> {
        {
            let state = self.lock_pruned();
            if let Some(tracked) = state.prepared.get(id).or_else(|| state.finishing.get(id)) {
                return Ok(Some(tracked.record.clone()));
            }
        }
        // Not in memory: finished and durable (a later change of this ID would be a prepare, which finds the
        // finished record and changes nothing), or unknown.
        Ok(self.load_finished(id)?)
    }

    fn sums(&self) -> Sums {
        lock(&self.state).sums
    }

    async fn durable_sums(&self) -> Result<Sums, TransferLogError> {
        let (sums, seq) = {
            let state = lock(&self.state);
            (state.sums, state.sums_seq)
        };
        // Batches become durable in order, so these sums are once their last batch is.
        self.db.wait_durable(seq).await?;
        Ok(sums)
    }

    fn maximum(&self) -> Limit {
        lock(&self.state).maximum.unwrap_or(self.configured_maximum)
    }

    fn minimum(&self) -> Limit {
        lock(&self.state).minimum.unwrap_or(self.configured_minimum)
    }

    async fn set_maximum(&self, maximum: Limit) -> Result<(), TransferLogError> {
        self.set_limit(tag::MAXIMUM, maximum).await
    }

    async fn set_minimum(&self, minimum: Limit) -> Result<(), TransferLogError> {
        self.set_limit(tag::MINIMUM, minimum).await
    }

    async fn prepared(&self) -> Result<Vec<TransferRecord>, TransferLogError> {
        let state = lock(&self.state);
        Ok(state
            .prepared
            .values()
            .map(|tracked| tracked.record.clone())
            .collect())
    }

    async fn note_fulfillment(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
        ilp: &[u8],
    ) -> Result<(), TransferLogError> {
        let pending = {
            let mut state = self.lock_pruned();
            if !state.prepared.contains_key(id) {
                let record = match state.finishing.get(id) {
                    Some(tracked) => Some(tracked.record.clone()),
                    None => self.load_finished(id)?,
                };
                return Err(record
                    .as_ref()
                    .and_then(not_prepared_error)
                    .unwrap_or(TransferLogError::NotFound(*id)));
            }
            let note = NotedFulfillment {
                id: *id,
                fulfillment: *fulfillment,
                ilp: ilp.to_vec(),
            };
            match state.notes.get(id) {
                Some((stored, seq)) if *stored == note => Pending::After(*seq, ()),
                _ => {
                    let mut value = Vec::with_capacity(32 + ilp.len());
                    value.extend_from_slice(fulfillment);
                    value.extend_from_slice(ilp);
                    let mut batch = WriteBatch::default();
                    batch.put_cf(
                        self.db.pending_cf()?,
                        codec::sub_key(&self.prefix, tag::FULFILLING, Some(id)),
                        value,
                    );
                    let ticket = self.db.submit(batch)?;
                    state.notes.insert(*id, (note, ticket.seq()));
                    Pending::Ticket(ticket, ())
                }
            }
        };
        self.resolve(pending).await
    }

    async fn noted_fulfillments(&self) -> Result<Vec<NotedFulfillment>, TransferLogError> {
        let (notes, seq) = {
            let state = lock(&self.state);
            let seq = state.notes.values().map(|(_, s)| *s).max().unwrap_or(0);
            let notes = state.notes.values().map(|(n, _)| n.clone()).collect();
            (notes, seq)
        };
        // Report only what is durable.
        self.db.wait_durable(seq).await?;
        Ok(notes)
    }
}

/// Decodes a noted fulfillment: key `… f <16-byte id>`, value = 32-byte preimage, then the `ilp` data.
fn decode_note(key: &[u8], value: &[u8]) -> Result<NotedFulfillment, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    };
    let id: [u8; 16] = key
        .get(key.len().saturating_sub(16)..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("noted fulfillment key without a transfer id"))?;
    let fulfillment: [u8; 32] = value
        .get(..32)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("noted fulfillment shorter than 32 bytes"))?;
    Ok(NotedFulfillment {
        id: TransferId(id),
        fulfillment,
        ilp: value[32..].to_vec(),
    })
}
