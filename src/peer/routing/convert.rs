//! Converting amounts between two peers' ledgers: the same amount for the same currency and scale; for the
//! same currency at another scale, multiplied or divided by a power of ten; for another currency, only with a
//! configured [`Rate`](crate::config::routing::Rate). Divisions round **down** (the bridge keeps the dust),
//! except [`Router::convert_back`], which rounds up so a quote by destination amount never promises too little.

use channel_modules::amount::LedgerAmount;
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};

use super::Router;
use crate::peer::trustline::Trustline;

/// Why an amount cannot be converted between two peers' ledgers. The text goes to the payer in an ILP v1
/// `F00 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The converted amount is above `u64::MAX`.
    #[error("converted amount does not fit in 64 bits")]
    Overflow,
    /// The currencies differ and no rate is configured between the peers.
    #[error("no rate configured from {from} ({from_currency}) to {to} ({to_currency})")]
    NoRate {
        /// Source peer.
        from: String,
        /// Its currency code (empty if unknown).
        from_currency: String,
        /// Next peer.
        to: String,
        /// Its currency code (empty if unknown).
        to_currency: String,
    },
    /// A ledger's `currencyScale` (possibly from the peer's info reply) is above 255.
    #[error("ledger {ledger} has currencyScale {scale}, above 255")]
    ScaleTooLarge {
        /// The peer.
        ledger: String,
        /// Its scale.
        scale: u64,
    },
}

impl Router {
    /// Converts `amount` from `from`'s ledger to `to`'s. Rounds down; `Err` names the reason.
    pub fn convert(
        &self,
        from: &Trustline,
        to: &Trustline,
        amount: LedgerAmount,
    ) -> Result<LedgerAmount, ConvertError> {
        let (num, den) = self.rate_between(from, to)?;
        (BigUint::from(amount.0) * num / den)
            .to_u64()
            .map(LedgerAmount)
            .ok_or(ConvertError::Overflow)
    }

    /// The least amount on `from`'s ledger that [`Router::convert`] turns into at least `amount_to` on `to`'s
    /// (so a quote by destination amount never promises too little). `Err` names the reason.
    pub fn convert_back(
        &self,
        from: &Trustline,
        to: &Trustline,
        amount_to: LedgerAmount,
    ) -> Result<LedgerAmount, ConvertError> {
        let (num, den) = self.rate_between(from, to)?;
        let scaled = BigUint::from(amount_to.0) * den;
        let (q, r) = (&scaled / &num, &scaled % &num);
        let up = if r.is_zero() { q } else { q + 1u32 };
        up.to_u64().map(LedgerAmount).ok_or(ConvertError::Overflow)
    }

    /// Numerator and denominator (both non-zero) turning `from`'s units into `to`'s: the configured rate (or 1
    /// for the same currency) times 10^(scale difference).
    pub(super) fn rate_between(
        &self,
        from: &Trustline,
        to: &Trustline,
    ) -> Result<(BigUint, BigUint), ConvertError> {
        let info = |t: &Trustline| {
            let i = t.get_info().unwrap_or(serde_json::Value::Null);
            (
                i.get("currencyCode")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned),
                i.get("currencyScale").and_then(|s| s.as_u64()).unwrap_or(0),
            )
        };
        let (code_in, scale_in) = info(from);
        let (code_out, scale_out) = info(to);
        let rate = self
            .config
            .rates
            .get(&(from.name().to_owned(), to.name().to_owned()));
        let (mut num, mut den) = match rate {
            Some(r) => (r.numerator.clone(), r.denominator.clone()),
            None if code_in == code_out => (BigUint::from(1u32), BigUint::from(1u32)),
            None => {
                return Err(ConvertError::NoRate {
                    from: from.name().to_owned(),
                    from_currency: code_in.unwrap_or_default(),
                    to: to.name().to_owned(),
                    to_currency: code_out.unwrap_or_default(),
                })
            }
        };
        // Scales may come from the peer's info reply: bound them before raising 10 to their difference, so a
        // bad value is refused instead of building a huge number.
        for (name, scale) in [(from.name(), scale_in), (to.name(), scale_out)] {
            if scale > u64::from(u8::MAX) {
                return Err(ConvertError::ScaleTooLarge {
                    ledger: name.to_owned(),
                    scale,
                });
            }
        }
        let ten = BigUint::from(10u32);
        if scale_out >= scale_in {
            num *= ten.pow((scale_out - scale_in) as u32);
        } else {
            den *= ten.pow((scale_in - scale_out) as u32);
        }
        Ok((num, den))
    }
}
