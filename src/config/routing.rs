//! The `[routing]` settings of the node TOML: [`RoutingConfig`] (how forwarded transfers expire, [`Rate`]s
//! between peers' currencies, who receives payments for the node itself), their defaults and their checks. The
//! router that applies them is `crate::peer::routing`.

use std::collections::HashMap;
use std::time::Duration;

use num_bigint::BigUint;
use num_traits::Zero;
use serde::Deserialize;

use super::error::ConfigError;
use super::legacy::PeerConfig;

/// Default time the forwarded transfer expires before the incoming one.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// Least time a forwarded transfer must have before it expires, or the payment is refused.
pub const DEFAULT_MIN_FORWARD_WINDOW: Duration = Duration::from_millis(500);

/// An exchange rate from one peer's ledger to another's: `1` unit of the source currency (at scale 0) is
/// worth `numerator/denominator` units of the destination currency (at scale 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Numerator.
    pub numerator: BigUint,
    /// Denominator (non-zero).
    pub denominator: BigUint,
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not digits with at most one `.` (the text as given).
    #[error("rate {0:?} is not a positive decimal number")]
    NotDecimal(String),
    /// Zero (the text as given).
    #[error("rate {0:?} must be positive")]
    Zero(String),
}

impl Rate {
    /// Parses a positive decimal rate like `"1.25"`.
    pub fn parse(s: &str) -> Result<Rate, RateError> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(RateError::NotDecimal(s.to_owned()));
        }
        let digits = format!("{int}{frac}");
        let numerator: BigUint = digits
            .parse()
            .map_err(|_| RateError::NotDecimal(s.to_owned()))?;
        if numerator.is_zero() {
            return Err(RateError::Zero(s.to_owned()));
        }
        let denominator = BigUint::from(10u32).pow(u32::try_from(frac.len()).unwrap_or(u32::MAX));
        Ok(Rate {
            numerator,
            denominator,
        })
    }
}

/// What the router does with an incoming transfer that is not routed onwards because it is local: its
/// destination lies under the node's own account on the ledger it came from (it pays the node itself), or on
/// that ledger with no other peer to take it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalPayments {
    /// Nothing on this node receives payments (`ilp-bridge run`): refuse them at once with `F02 Unreachable`,
    /// so the payer's money is not held until the transfer expires.
    #[default]
    Refuse,
    /// A library embedder receives them (it watches `incoming_prepare` and fulfills or rejects each one):
    /// leave them prepared.
    Embedder,
}

/// Routing settings.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// How much earlier the forwarded transfer expires.
    pub expiry_margin: Duration,
    /// Least time the forwarded transfer must have left.
    pub min_forward_window: Duration,
    /// Rates by (from peer name, to peer name).
    pub rates: HashMap<(String, String), Rate>,
    /// Who receives payments for the node itself.
    pub local_payments: LocalPayments,
}

impl RoutingConfig {
    /// Refuses settings that would lose money: a zero `expiry_margin` leaves no time to pass a Fulfill back
    /// (the source would expire together with the transfer we forwarded, and our Fulfill to the payer could
    /// lose the race with its expiry), and a zero `min_forward_window` forwards transfers already due.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.expiry_margin.is_zero() {
            return Err(ConfigError::field(
                "routing.expiry_margin_ms",
                "must be at least 1: a forwarded transfer must expire before the one it was forwarded from",
            ));
        }
        if self.min_forward_window.is_zero() {
            return Err(ConfigError::field(
                "routing.min_forward_window_ms",
                "must be at least 1: a forwarded transfer needs time to be fulfilled",
            ));
        }
        Ok(())
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            min_forward_window: DEFAULT_MIN_FORWARD_WINDOW,
            rates: HashMap::new(),
            local_payments: LocalPayments::default(),
        }
    }
}

/// One entry of `rates` in the TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    from: String,
    to: String,
    rate: String,
}

/// The `[routing]` table as written in the TOML.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRouting {
    expiry_margin_ms: Option<u64>,
    min_forward_window_ms: Option<u64>,
    rates: Vec<RawRate>,
}

impl RawRouting {
    /// The validated settings; every rate must name configured `peers`.
    pub(super) fn into_config(self, peers: &[PeerConfig]) -> Result<RoutingConfig, ConfigError> {
        let mut routing = RoutingConfig::default();
        if let Some(ms) = self.expiry_margin_ms {
            routing.expiry_margin = Duration::from_millis(ms);
        }
        if let Some(ms) = self.min_forward_window_ms {
            routing.min_forward_window = Duration::from_millis(ms);
        }
        routing.validate()?;
        let mut rates = HashMap::new();
        for (i, r) in self.rates.iter().enumerate() {
            for name in [&r.from, &r.to] {
                if !peers.iter().any(|p| &p.name == name) {
                    return Err(ConfigError::field(
                        format!("routing.rates[{i}]"),
                        format!("no peer named {name:?}"),
                    ));
                }
            }
            let rate = Rate::parse(&r.rate)
                .map_err(|e| ConfigError::value(format!("routing.rates[{i}].rate"), e))?;
            rates.insert((r.from.clone(), r.to.clone()), rate);
        }
        routing.rates = rates;
        Ok(routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_exact_fractions_and_refuse_what_is_not_a_positive_decimal(
    ) -> Result<(), RateError> {
        let r = Rate::parse("1.25")?;
        assert_eq!(
            (r.numerator, r.denominator),
            (BigUint::from(125u32), BigUint::from(100u32))
        );
        assert_eq!(
            Rate::parse("abc"),
            Err(RateError::NotDecimal("abc".to_owned()))
        );
        assert_eq!(Rate::parse("."), Err(RateError::NotDecimal(".".to_owned())));
        assert_eq!(Rate::parse("0.0"), Err(RateError::Zero("0.0".to_owned())));
        assert_eq!(
            RateError::Zero("0".to_owned()).to_string(),
            "rate \"0\" must be positive"
        );
        Ok(())
    }
}
