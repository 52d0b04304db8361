//! Answering ILQP quote requests (ILP v1 types 2, 4, 6 in a Message's `ilp`, docs/legacy-btp.md §8) for a
//! destination reachable through the bridge, as an ILP v1 connector answers for a ledger it is connected to.

use std::time::Duration;

use btp::ilp_v1::{
    ByDestinationResponse, BySourceResponse, IlpV1Packet, LiquidityPoint, LiquidityResponse,
};
use btp::Timestamp;
use channel_modules::amount::LedgerAmount;
use num_bigint::BigUint;
use num_traits::ToPrimitive;

use super::Router;
use crate::peer::trustline::Trustline;

/// How long a liquidity curve the bridge quotes stays valid (ilp-connector's default quote expiry).
pub const QUOTE_EXPIRY: Duration = Duration::from_secs(45);

impl Router {
    /// Answers an ILQP quote request from `from` for a destination reachable through the bridge, as an ILP v1
    /// connector answers for a ledger it is connected to: the next ledger is found by longest prefix (like a
    /// transfer's), amounts are converted with [`Router::convert`] (by source: rounded down) and
    /// [`Router::convert_back`] (by destination: rounded up), and the source hold duration is the destination's
    /// plus the configured expiry margin (what a forwarded transfer takes off its expiry). A liquidity
    /// request gets a two-point curve (`0 → 0` to the largest convertible amount) for the next ledger's prefix,
    /// valid for [`QUOTE_EXPIRY`].
    ///
    /// `None` leaves the request to the trustline's request handler: the destination is our own account, or
    /// lies on the ledger the request came from. Refusals are ILP v1 Errors: `F02 Unreachable` (no route),
    /// `T01 Ledger Unreachable` (next peer not connected), `F00 Bad Request` (no rate, or an amount or hold
    /// duration out of range).
    pub fn quote(&self, from: &Trustline, request: &IlpV1Packet) -> Option<IlpV1Packet> {
        let destination = match request {
            IlpV1Packet::LiquidityRequest(r) => &r.destination_account,
            IlpV1Packet::BySourceRequest(r) => &r.destination_account,
            IlpV1Packet::ByDestinationRequest(r) => &r.destination_account,
            _ => return None,
        };
        if from
            .account()
            .is_some_and(|own| destination.starts_with(&own))
        {
            return None;
        }
        let me = from.account().unwrap_or_default();
        let Some(next) = self.route(destination, from.name()) else {
            if from.prefix().is_some_and(|p| destination.starts_with(&p)) {
                return None;
            }
            return Some(IlpV1Packet::Error(self.ilp_error(
                b"F02",
                "Unreachable",
                me,
                "no route to destination",
            )));
        };
        let bad_request = |reason: &str| {
            Some(IlpV1Packet::Error(self.ilp_error(
                b"F00",
                "Bad Request",
                from.account().unwrap_or_default(),
                reason,
            )))
        };
        if !next.is_connected() {
            return Some(IlpV1Packet::Error(self.ilp_error(
                b"T01",
                "Ledger Unreachable",
                me,
                "next ledger is not connected",
            )));
        }
        let margin = u32::try_from(self.config.expiry_margin.as_millis()).unwrap_or(u32::MAX);
        let hold = |destination_hold: u32| destination_hold.checked_add(margin);
        tracing::debug!(from = from.name(), to = next.name(), destination = %destination, "answering quote");
        Some(match request {
            IlpV1Packet::BySourceRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                match self.convert(from, &next, LedgerAmount(r.source_amount)) {
                    Ok(destination_amount) => IlpV1Packet::BySourceResponse(BySourceResponse {
                        destination_amount: destination_amount.0,
                        source_hold_duration,
                    }),
                    Err(reason) => return bad_request(&reason.to_string()),
                }
            }
            IlpV1Packet::ByDestinationRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                match self.convert_back(from, &next, LedgerAmount(r.destination_amount)) {
                    Ok(source_amount) => {
                        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
                            source_amount: source_amount.0,
                            source_hold_duration,
                        })
                    }
                    Err(reason) => return bad_request(&reason.to_string()),
                }
            }
            IlpV1Packet::LiquidityRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                let (num, den) = match self.rate_between(from, &next) {
                    Ok(r) => r,
                    Err(reason) => return bad_request(&reason.to_string()),
                };
                // The largest source amount whose conversion still fits in 64 bits.
                let max_x = (BigUint::from(u64::MAX) * &den / &num)
                    .to_u64()
                    .unwrap_or(u64::MAX);
                let max_y = (BigUint::from(max_x) * num / den)
                    .to_u64()
                    .unwrap_or(u64::MAX);
                let expires_at = Timestamp::from_system_time_clamped(self.clock.now())
                    .checked_add(QUOTE_EXPIRY)
                    .unwrap_or(Timestamp::MAX);
                IlpV1Packet::LiquidityResponse(LiquidityResponse {
                    liquidity_curve: vec![
                        LiquidityPoint { x: 0, y: 0 },
                        LiquidityPoint { x: max_x, y: max_y },
                    ],
                    applies_to_prefix: next.prefix().unwrap_or_default(),
                    source_hold_duration,
                    expires_at,
                })
            }
            _ => return None,
        })
    }
}
