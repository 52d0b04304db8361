//! ILQP quote requests from P (docs/legacy-btp.md §8): ILPv4 has no quoting, so the bridge answers for its own
//! hop, as an ILP v1 connector answers for the ledger it is connected to: what arrives at M for a source amount
//! (rounded down), what P must send for an amount to arrive at M (rounded up), and the source hold duration (the
//! destination's plus the expiry margin). Beyond M, connectors take their own fees; a sender quoting by
//! destination for a far destination gets what reaches M. Never silence: a request that cannot be answered gets
//! an ILP v1 Error.

use std::time::Duration;

use btp::ilp_v1::{
    ByDestinationResponse, BySourceResponse, IlpV1Packet, LiquidityPoint, LiquidityResponse,
};
use btp::Timestamp;
use channel_modules::amount::{ConnectorAmount, LedgerAmount};

use super::pair::BridgedPair;
use super::scale::ScaleError;

/// How long a liquidity curve the bridge quotes stays valid (ilp-connector's default quote expiry).
pub const QUOTE_EXPIRY: Duration = Duration::from_secs(45);

impl BridgedPair {
    /// The answer to an ILQP request from P.
    pub fn quote(&self, request: &IlpV1Packet) -> IlpV1Packet {
        let translation = self.translation();
        let now = Timestamp::from_system_time_clamped(self.now());
        let error = |code: &[u8; 3], message: &str| {
            IlpV1Packet::Error(translation.legacy_error(code, message, now))
        };
        let margin = u32::try_from(translation.expiry_margin.as_millis()).unwrap_or(u32::MAX);
        let hold = |destination_hold: u32| destination_hold.checked_add(margin);
        let scales = translation.scales;
        match request {
            IlpV1Packet::BySourceRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return error(b"F00", "hold duration too long");
                };
                match scales.to_modern(LedgerAmount(r.source_amount)) {
                    Ok(destination_amount) => IlpV1Packet::BySourceResponse(BySourceResponse {
                        destination_amount: destination_amount.0,
                        source_hold_duration,
                    }),
                    Err(e @ ScaleError::BelowOneUnit) => error(b"R01", &e.to_string()),
                    Err(e) => error(b"F03", &e.to_string()),
                }
            }
            IlpV1Packet::ByDestinationRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return error(b"F00", "hold duration too long");
                };
                match scales.least_legacy_for(ConnectorAmount(r.destination_amount)) {
                    Some(source_amount) => {
                        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
                            source_amount: source_amount.0,
                            source_hold_duration,
                        })
                    }
                    None => error(b"F03", "the amount does not fit in 64 bits on this ledger"),
                }
            }
            IlpV1Packet::LiquidityRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return error(b"F00", "hold duration too long");
                };
                // The largest source amount that converts, and what it converts to.
                let max_x = scales.largest_convertible_legacy();
                let max_y = scales.to_modern(max_x).unwrap_or_default();
                IlpV1Packet::LiquidityResponse(LiquidityResponse {
                    liquidity_curve: vec![
                        LiquidityPoint { x: 0, y: 0 },
                        LiquidityPoint {
                            x: max_x.0,
                            y: max_y.0,
                        },
                    ],
                    applies_to_prefix: r.destination_account.clone(),
                    source_hold_duration,
                    expires_at: now.checked_add(QUOTE_EXPIRY).unwrap_or(Timestamp::MAX),
                })
            }
            _ => error(b"F01", "not an ILQP request"),
        }
    }
}
