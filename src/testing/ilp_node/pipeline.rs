//! The services a Prepare passes through in interledger-rs 1.0's `ilp-node` (`crates/ilp-node/src/node.rs`,
//! docs/modern.md §5.11), in order.
//!
//! **Incoming** (`handle_incoming`, a Prepare from an account):
//!
//! | step | interledger-rs service | effect |
//! |--|--|--|
//! | 1 | `ValidatorService::incoming` | expired → Reject R00 (empty message, `triggeredBy` = node) |
//! | 2 | `MaxPacketAmountService` | amount > `max_packet_amount` → Reject F08, `data` = received amount u64 ∥ maximum u64 |
//! | 3 | `IldcpService` | `peer.config` with the exact condition → Fulfill with the account's address and asset |
//! | 4 | `SettlementMessageService` | `peer.settle` from an account with an SE → relayed to the SE ([`super::settlement`]) |
//! | 5 | `CcpRouteManager` | `peer.route.control` / `peer.route.update` → [`super::ccp`] |
//! | 6 | `Router` | next hop by [`super::routing`]; none → Reject F02 (empty message, `triggeredBy` = node) |
//!
//! **Outgoing** (`send_outgoing`, a Prepare for an account; also how the node sends its own `peer.*`
//! requests, with `from` = `to`):
//!
//! | step | interledger-rs service | effect |
//! |--|--|--|
//! | 1 | `ExchangeRateService` | amount > 0: rate 1 for the same asset code, else `rate(from)/rate(to)` (none → T00 `No exchange rate available from asset: A to: B`); × (1 − spread); scaled by `10^(to scale − from scale)` in f64; a positive amount that truncates to 0 → R01, a non-finite one → F08 |
//! | 2 | `BalanceService` | skipped for amount 0; `process_prepare` on `from` (refused → T04, empty message); on Fulfill `process_fulfill` on `to` and settle if asked; on Reject `process_reject` on `from` |
//! | 3 | `StreamReceiverService` | the local receiver: a destination under `to`'s address with a registered condition is fulfilled; anything else goes on |
//! | 4 | `ExpiryShortenerService` | expiry − (500 + 500) ms, at most now + 30 s |
//! | 5 | `ValidatorService::outgoing` | already expired → R00; no answer by the expiry → R00; Fulfill whose preimage does not hash to the condition → F09 `Fulfillment did not match condition` |
//! | 6 | `HttpClientService` | `to` has `ilp_over_http_url` → [`super::http`] |
//! | 7 | `BtpOutgoingService` | `to` has a BTP connection → [`super::btp_connection`] |
//! | 8 | fallback | Reject F02 `No outgoing route for account: <uuid> (ILP address of the Prepare packet: <destination>)` |

use std::sync::Arc;
use std::time::Duration;

use btp::ildcp::{IldcpRequest, IldcpResponse};
use btp::ilp_v4::{Address, Fulfill, IlpV4Packet, Prepare, Reject};
use btp::Timestamp;
use bytes::{BufMut, Bytes, BytesMut};
use channel_modules::sync::lock;
use sha2::Digest;
use tracing::warn;

use super::accounts::Account;
use super::balances;
use super::records::{Direction, PacketRecord, Transport};
use super::{btp_connection, ccp, http, settlement, IlpResult, Node};

/// interledger-rs's `DEFAULT_MAX_EXPIRY_DURATION`: no forwarded Prepare expires later than this from now.
pub const MAX_EXPIRY: Duration = Duration::from_millis(30_000);

/// A Reject built as interledger-rs's `RejectBuilder` does.
pub(crate) fn reject(
    code: &[u8; 3],
    message: &str,
    triggered_by: Option<&Address>,
    data: Bytes,
) -> Reject {
    Reject {
        code: *code,
        triggered_by: triggered_by.cloned(),
        message: message.to_owned(),
        data,
    }
}

/// The incoming chain for a Prepare from `from`.
pub(crate) async fn handle_incoming(
    node: &Arc<Node>,
    from: Account,
    prepare: Prepare,
) -> IlpResult {
    let address = node.address();
    // 1. ValidatorService::incoming.
    if prepare.expires_at < Timestamp::now() {
        return Err(reject(b"R00", "", Some(&address), Bytes::new()));
    }
    // 2. MaxPacketAmountService.
    if prepare.amount > from.max_packet_amount {
        let mut data = BytesMut::with_capacity(16);
        data.put_u64(prepare.amount);
        data.put_u64(from.max_packet_amount);
        return Err(reject(b"F08", "", Some(&address), data.freeze()));
    }
    // 3. IldcpService (any relation).
    if IldcpRequest::matches(&prepare) {
        return Ok(IldcpResponse {
            address: from.ilp_address.clone(),
            asset_scale: from.asset_scale,
            asset_code: from.asset_code.clone(),
        }
        .to_fulfill());
    }
    // 4. SettlementMessageService.
    if from.settlement_engine_url.is_some()
        && prepare.destination.as_str() == settlement::SE_ILP_ADDRESS
    {
        return settlement::deliver_to_engine(node, &from, prepare).await;
    }
    // 5. CcpRouteManager.
    match prepare.destination.as_str() {
        btp::ccp::CCP_CONTROL_DESTINATION => return ccp::handle_control(node, &from, &prepare),
        btp::ccp::CCP_UPDATE_DESTINATION => return ccp::handle_update(node, &from, &prepare),
        _ => {}
    }
    // 6. Router.
    let to = {
        let state = lock(&node.state);
        state
            .routing
            .next_hop(prepare.destination.as_str())
            .and_then(|id| state.accounts.get(&id).cloned())
    };
    let Some(to) = to else {
        return Err(reject(b"F02", "", Some(&address), Bytes::new()));
    };
    let amount = prepare.amount;
    send_outgoing(node, &from, &to, prepare, amount).await
}

/// The outgoing chain from `from` to `to`; `original_amount` is the incoming amount (before the exchange rate).
pub(crate) async fn send_outgoing(
    node: &Arc<Node>,
    from: &Account,
    to: &Account,
    mut prepare: Prepare,
    original_amount: u64,
) -> IlpResult {
    let address = node.address();
    // 1. ExchangeRateService.
    if prepare.amount > 0 {
        prepare.amount = exchange(node, from, to, prepare.amount, &address)?;
    }
    // 2. BalanceService.
    if prepare.amount == 0 && original_amount == 0 {
        return after_balance(node, from, to, prepare).await;
    }
    let outgoing_amount = prepare.amount;
    {
        let mut state = lock(&node.state);
        let balance = state.balances.entry(from.id).or_default();
        if let Err(err) = balances::process_prepare(balance, from, original_amount) {
            warn!(account = %from.username, %err, "prepare refused by the balance check");
            return Err(reject(b"T04", "", Some(&address), Bytes::new()));
        }
    }
    let result = after_balance(node, from, to, prepare).await;
    match &result {
        Ok(_) if outgoing_amount > 0 => {
            let to_settle = {
                let mut state = lock(&node.state);
                let balance = state.balances.entry(to.id).or_default();
                balances::process_fulfill(balance, to, outgoing_amount)
            };
            match to_settle {
                Ok(amount) if amount > 0 => settlement::spawn_settlement(node, to, amount),
                Ok(_) => {}
                Err(err) => warn!(account = %to.username, %err, "fulfill balance update failed"),
            }
        }
        Ok(_) => {}
        Err(_) => {
            let mut state = lock(&node.state);
            let balance = state.balances.entry(from.id).or_default();
            if let Err(err) = balances::process_reject(balance, original_amount) {
                warn!(account = %from.username, %err, "reject balance update failed");
            }
        }
    }
    result
}

/// interledger-rs's `ExchangeRateService` for a positive amount.
fn exchange(
    node: &Node,
    from: &Account,
    to: &Account,
    amount: u64,
    address: &Address,
) -> Result<u64, Reject> {
    let rate = if from.asset_code == to.asset_code {
        1.0
    } else {
        let state = lock(&node.state);
        match (
            state.rates.get(&from.asset_code),
            state.rates.get(&to.asset_code),
        ) {
            (Some(f), Some(t)) => f / t,
            _ => {
                return Err(reject(
                    b"T00",
                    &format!(
                        "No exchange rate available from asset: {} to: {}",
                        from.asset_code, to.asset_code
                    ),
                    Some(address),
                    Bytes::new(),
                ))
            }
        }
    };
    let rate = rate * (1.0 - node.config.spread);
    let rate = if rate.is_finite() && rate.is_sign_positive() {
        rate
    } else {
        0.0
    };
    let scaled = scale_f64(amount as f64 * rate, from.asset_scale, to.asset_scale);
    if !scaled.is_finite() {
        return Err(reject(
            b"F08",
            &format!(
                "Could not convert exchange rate from {}:{} to: {}:{}. Got incoming amount: {}",
                from.asset_code, from.asset_scale, to.asset_code, to.asset_scale, amount
            ),
            Some(address),
            Bytes::new(),
        ));
    }
    // `as` saturates, as the cast in interledger-rs does on current Rust.
    let out = scaled as u64;
    if scaled != 0.0 && out == 0 {
        return Err(reject(
            b"R01",
            &format!("Could not cast to f64, amount too small: {scaled}"),
            Some(address),
            Bytes::new(),
        ));
    }
    Ok(out)
}

/// interledger-rs's `Convert::normalize_scale` for f64.
fn scale_f64(amount: f64, from: u8, to: u8) -> f64 {
    if to >= from {
        amount * 10f64.powi(i32::from(to - from))
    } else {
        amount / 10f64.powi(i32::from(from - to))
    }
}

/// Steps 3–8 of the outgoing chain.
async fn after_balance(
    node: &Arc<Node>,
    from: &Account,
    to: &Account,
    prepare: Prepare,
) -> IlpResult {
    // 3. The local receiver (interledger-rs: StreamReceiverService).
    if prepare
        .destination
        .as_str()
        .starts_with(to.ilp_address.as_str())
    {
        let preimage = lock(&node.state)
            .receivers
            .get(&to.id)
            .and_then(|r| r.get(&prepare.execution_condition).copied());
        if let Some(fulfillment) = preimage {
            node.record_packet(PacketRecord {
                account: to.username.clone(),
                direction: Direction::Out,
                transport: Transport::Local,
                packet: IlpV4Packet::Prepare(prepare.clone()),
            });
            return Ok(Fulfill {
                fulfillment,
                data: Bytes::new(),
            });
        }
    }
    // 4. ExpiryShortenerService.
    let mut prepare = prepare;
    let shortened = prepare
        .expires_at
        .checked_sub(Duration::from_millis(u64::from(
            from.round_trip_time_ms + to.round_trip_time_ms,
        )))
        .unwrap_or(Timestamp::MIN);
    let latest = Timestamp::now()
        .checked_add(MAX_EXPIRY)
        .unwrap_or(Timestamp::MAX);
    prepare.expires_at = shortened.min(latest);
    // 5. ValidatorService::outgoing.
    let address = node.address();
    let Some(time_left) = prepare.expires_at.duration_since(Timestamp::now()) else {
        return Err(reject(b"R00", "", Some(&address), Bytes::new()));
    };
    if time_left.is_zero() {
        return Err(reject(b"R00", "", Some(&address), Bytes::new()));
    }
    let condition = prepare.execution_condition;
    let sent = tokio::time::timeout(time_left, transports(node, to, prepare)).await;
    let fulfill = match sent {
        Ok(result) => result?,
        Err(_) => return Err(reject(b"R00", "", Some(&address), Bytes::new())),
    };
    let hash: [u8; 32] = sha2::Sha256::digest(fulfill.fulfillment).into();
    if hash != condition {
        return Err(reject(
            b"F09",
            "Fulfillment did not match condition",
            Some(&address),
            Bytes::new(),
        ));
    }
    Ok(fulfill)
}

/// Steps 6–8: HTTP, BTP, fallback.
async fn transports(node: &Arc<Node>, to: &Account, prepare: Prepare) -> IlpResult {
    if let Some(url) = &to.ilp_over_http_url {
        return http::send_prepare(node, to, url, prepare).await;
    }
    let destination = prepare.destination.clone();
    if let Some(result) = btp_connection::send_prepare(node, to.id, &to.username, prepare).await {
        return result;
    }
    Err(reject(
        b"F02",
        &format!(
            "No outgoing route for account: {} (ILP address of the Prepare packet: {})",
            to.id, destination
        ),
        Some(&node.address()),
        Bytes::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_conversion() {
        assert_eq!(scale_f64(123.0, 2, 4), 12_300.0);
        assert_eq!((scale_f64(1_234.0, 3, 1) as u64), 12);
        assert_eq!(scale_f64(5.0, 9, 9), 5.0);
    }
}
