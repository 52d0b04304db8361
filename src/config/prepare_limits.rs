//! [`PrepareLimits`]: how much one peer can make the node hold, configured per `[[peer]]` in the node TOML.
//!
//! A Prepare within `maxBalance` still costs the node: the transfer stays in memory and on disk until it is
//! finished or expires, is reloaded at every start, and (routed) locks liquidity on the next ledger. Legacy put no
//! bound on any of that, so a peer could prepare 1-unit transfers carrying 1 MiB of data that expire in the year
//! 9999. Per peer, ilp-bridge refuses (legacy Error `NotAcceptedError`, nothing stored) a Prepare that
//! * expires more than [`PrepareLimits::max_hold`] ahead (the router also never forwards a transfer expiring
//!   further ahead than the next peer's window: ilp-connector's `maxHoldTime`);
//! * carries more than [`PrepareLimits::max_prepare_data_bytes`] of `ilp` and `custom` data;
//! * would make more than [`PrepareLimits::max_prepared_transfers`] transfers from that peer prepared at once.
//!
//! Our own transfers to the peer (sent by the router or an embedder) are capped at the same count: the router
//! makes one per incoming transfer from any peer, so one next peer could otherwise collect the sum of every
//! other peer's cap, and a legacy peer keeps each prepared transfer in memory. The defaults are set far above
//! what a 2017 ILP Kit deployment did in normal use. The trustline applies the limits
//! (`crate::peer::trustline`).

use std::time::Duration;

use super::error::ConfigError;

/// Default [`PrepareLimits::max_hold`]: 60 s. ilp-connector (the connector of ILP Kit) held funds at most
/// `CONNECTOR_MAX_HOLD_TIME`, 10 s by default, and ILP v1 senders asked for 5 s at the destination
/// (`DEFAULT_DESTINATION_EXPIRY` in the `ilp` client) plus about 1 s per hop, so ILP Kit payments expired
/// within about 10 s; six times that leaves room for slow paths and skewed clocks and still ends what a peer
/// can lock after a minute.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(60);

/// Default [`PrepareLimits::max_prepare_data_bytes`]: 32 KiB of `ilp` plus `custom` per Prepare. An ILP Kit
/// payment's ILP v1 packet is an address, an amount and PSK data (headers and a memo) of at most a few KiB, and
/// `custom` is rarely used; 32 KiB is also what ILPv4 allows a packet's data. With the default count it bounds
/// one peer's prepared data at about 32 MiB per direction.
pub const DEFAULT_MAX_PREPARE_DATA_BYTES: usize = 32 * 1024;

/// Default [`PrepareLimits::max_prepared_transfers`]: 1000 per peer and direction. At the 60 s window that is
/// more than 16 new transfers per second held for the whole minute, from one peer, while an ILP Kit
/// deployment paid a few per second that were fulfilled in under a second; our own benchmark keeps 50 in
/// flight.
pub const DEFAULT_MAX_PREPARED_TRANSFERS: usize = 1000;

/// How much one peer can make the node hold (see the module docs). A Prepare exactly at a limit is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareLimits {
    /// Farthest ahead a Prepare from the peer may expire; also the farthest ahead the router's Prepares to it
    /// expire.
    pub max_hold: Duration,
    /// Most bytes of `ilp` plus `custom` (as JSON text on the wire) one Prepare from the peer may carry.
    pub max_prepare_data_bytes: usize,
    /// Most transfers prepared at once in each direction with the peer.
    pub max_prepared_transfers: usize,
}

impl Default for PrepareLimits {
    fn default() -> Self {
        PrepareLimits {
            max_hold: DEFAULT_MAX_HOLD,
            max_prepare_data_bytes: DEFAULT_MAX_PREPARE_DATA_BYTES,
            max_prepared_transfers: DEFAULT_MAX_PREPARED_TRANSFERS,
        }
    }
}

impl PrepareLimits {
    /// Refuses a zero limit (it would refuse every Prepare). `field` prefixes the field names.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let zero = [
            ("max_hold_ms", self.max_hold.is_zero()),
            ("max_prepare_data_bytes", self.max_prepare_data_bytes == 0),
            ("max_prepared_transfers", self.max_prepared_transfers == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(ConfigError::field(
                format!("{field}.{name}"),
                "must be at least 1 (0 would refuse every transfer)",
            )),
            None => Ok(()),
        }
    }

    /// `max_hold` in milliseconds, saturating.
    pub fn max_hold_ms(&self) -> i64 {
        i64::try_from(self.max_hold.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_by_name() {
        let zero_hold = PrepareLimits {
            max_hold: Duration::ZERO,
            ..PrepareLimits::default()
        };
        let e = zero_hold.validate("peer[0]").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("peer[0].max_hold_ms")),
            "{e:?}"
        );
        let zero_count = PrepareLimits {
            max_prepared_transfers: 0,
            ..PrepareLimits::default()
        };
        assert!(zero_count.validate("p").is_err());
        assert!(PrepareLimits::default().validate("p").is_ok());
    }
}
