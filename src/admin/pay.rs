//! A test payment through one peer (`POST /peers/{name}/pay`, `ilp-bridge pay`): a real transfer with an ILP v1
//! Payment packet, sent through the trustline like any other, whose outcome and round trip are reported.
//!
//! Its condition is the SHA-256 of a random preimage this node keeps to itself, so **no receiver can fulfil
//! it**: a path that works end to end answers with a Reject from the receiver or a connector on the way
//! (legacy receivers answer a condition they cannot meet with an ILP error), and that Reject is the proof the
//! path is up, with its code and the address that triggered it. An expiry means the Prepare went unanswered; a
//! refusal means the peer (or our own limits) refused the Prepare itself. The transfer is cancelled by the
//! Reject or the expiry and moves no money.

use std::time::{Duration, Instant};

use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::BytesMut;
use channel_modules::amount::LedgerAmount;
use channel_modules::store::{Transfer, TransferId};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::views::PayOutcome;
use crate::peer::{PeerError, PeerEvent, Trustline};

/// Longest a test payment may stay prepared: 10 s. Far above a working path's round trip (milliseconds), short
/// enough that a broken path's answer (an expiry) comes while the operator waits. Capped by the peer's
/// `max_hold_ms`.
pub const TEST_PAYMENT_EXPIRY: Duration = Duration::from_secs(10);

/// How long after the expiry an outcome is still waited for before answering `unknown`: 2 s (the expiry
/// timer fires at the expiry; this covers a slow store).
pub const TEST_PAYMENT_GRACE: Duration = Duration::from_secs(2);

/// The address paid when none is given: `<prefix>admin-test` (a name no account holds).
pub const DEFAULT_TEST_ACCOUNT: &str = "admin-test";

/// Why a test payment could not be tried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The amount is not a positive integer.
    #[error("amount {0:?} must be a positive integer in the peer ledger's units")]
    Amount(String),
    /// No destination given and the peer's prefix is not known yet.
    #[error("no --to given and the peer's ledger prefix is not known yet (not connected)")]
    NoDestination,
}

/// Sends `amount` to `to` (default `<prefix>admin-test`) through `trustline` and waits for the outcome.
pub async fn test_payment(
    trustline: &Trustline,
    amount: &str,
    to: Option<String>,
) -> Result<PayOutcome, PayError> {
    let value: u64 = amount
        .trim()
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| PayError::Amount(amount.to_owned()))?;
    let destination = match to {
        Some(t) => t,
        None => format!(
            "{}{DEFAULT_TEST_ACCOUNT}",
            trustline.prefix().ok_or(PayError::NoDestination)?
        ),
    };
    let preimage: [u8; 32] = rand::random();
    let condition: [u8; 32] = Sha256::digest(preimage).into();
    let packet = IlpV1Packet::Payment(Payment {
        amount: value,
        account: destination.clone(),
        data: bytes::Bytes::new(),
    });
    let mut ilp = BytesMut::with_capacity(packet.encoded_len());
    packet.encode(&mut ilp);
    let hold = TEST_PAYMENT_EXPIRY.min(trustline.limits().max_hold);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let id = TransferId(*uuid::Uuid::new_v4().as_bytes());
    let transfer = Transfer {
        id,
        amount: LedgerAmount(value),
        execution_condition: condition,
        expires_at_ms: now_ms + hold.as_millis() as i64,
        ilp: ilp.to_vec(),
        custom: None,
    };
    let mut outcome = PayOutcome {
        peer: trustline.name().to_owned(),
        transfer_id: id.to_uuid_string(),
        destination,
        amount: value.to_string(),
        outcome: "unknown".to_owned(),
        code: None,
        message: None,
        triggered_by: None,
        elapsed_ms: 0,
    };
    // Subscribed before sending, so a fast answer is not missed.
    let mut events = trustline.subscribe();
    let started = Instant::now();
    tracing::info!(peer = trustline.name(), transfer = %id, amount = value, destination = %outcome.destination, "test payment sent");
    if let Err(e) = trustline.send_transfer(transfer).await {
        outcome.elapsed_ms = started.elapsed().as_millis() as u64;
        match e {
            // No reply: the Prepare may be there; its outcome (likely an expiry) is waited for below.
            PeerError::Rpc(_) => outcome.message = Some(e.to_string()),
            PeerError::Remote(ref err) => {
                outcome.outcome = "refused".to_owned();
                outcome.code = Some(err.name.clone());
                outcome.message = Some(e.to_string());
                return Ok(outcome);
            }
            other => {
                outcome.outcome = "refused".to_owned();
                outcome.message = Some(other.to_string());
                return Ok(outcome);
            }
        }
    }
    let deadline = tokio::time::Instant::from_std(started) + hold + TEST_PAYMENT_GRACE;
    loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => break,
            Ok(Ok(e)) => e,
        };
        match event {
            PeerEvent::OutgoingFulfill { transfer, .. } if transfer.id == id => {
                outcome.outcome = "fulfilled".to_owned();
                break;
            }
            PeerEvent::OutgoingReject { transfer, reason } if transfer.id == id => {
                outcome.outcome = "rejected".to_owned();
                outcome.code = Some(reason.code.clone());
                outcome.message = Some(if reason.ilp_error.data.is_empty() {
                    reason.name.clone()
                } else {
                    format!(
                        "{}: {}",
                        reason.name,
                        String::from_utf8_lossy(&reason.ilp_error.data)
                    )
                });
                outcome.triggered_by = Some(reason.triggered_by.clone());
                break;
            }
            PeerEvent::OutgoingCancel(transfer) if transfer.id == id => {
                outcome.outcome = "expired".to_owned();
                break;
            }
            _ => {}
        }
    }
    outcome.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(peer = trustline.name(), transfer = %id, outcome = %outcome.outcome, code = ?outcome.code, elapsed_ms = outcome.elapsed_ms, "test payment done");
    Ok(outcome)
}
