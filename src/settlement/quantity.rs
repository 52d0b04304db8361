//! Connector amounts (RFC 38 Quantities) and their conversion into and out of the module's units.
//!
//! RFC 38 amounts are non-negative integers at a scale (`{"amount":"254","scale":2}` = 2.54 units): a
//! [`Scaled`] carries its scale with it, so it cannot be taken for the module's [`ModuleUnits`], whose scale is
//! the module's `asset_scale`. An amount changes side only through [`to_module_units`] (a settle request into
//! the module's units), [`module_units_to_scale`] (a module's credit into the connector's scale) and
//! [`Scaled::of_module_units`] (module units written with their scale). Converting to a coarser scale floors
//! and keeps the remainder as a *leftover* (a [`Scaled`] worth less than one unit of the target scale), which
//! is added to the next amount; converting to a finer scale is exact. So for any sequence of amounts, the
//! units produced plus the final leftover are worth exactly the sum of the inputs: no unit is lost or invented
//! (docs/modern.md §1.2 Quantity, §1.8 leftovers).

use std::fmt;

use channel_modules::amount::{AmountError, ModuleUnits, MAX_AMOUNT_DIGITS};
use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::Zero;
use serde::{Deserialize, Serialize};

/// An amount at a scale: worth `amount × 10^-scale` units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Scaled {
    /// The integer amount.
    #[serde(with = "decimal_string")]
    pub amount: BigUint,
    /// Its scale (0..=255).
    pub scale: u8,
}

impl Scaled {
    /// An amount at a scale.
    pub fn new(amount: BigUint, scale: u8) -> Self {
        Scaled { amount, scale }
    }

    /// `units` of a module whose `asset_scale` is `module_scale`, written with that scale. Exact: the same
    /// integer, its scale made explicit.
    pub fn of_module_units(units: &ModuleUnits, module_scale: u8) -> Self {
        Scaled::new(units.0.clone(), module_scale)
    }

    /// Zero at `scale`.
    pub fn zero(scale: u8) -> Self {
        Scaled {
            amount: BigUint::zero(),
            scale,
        }
    }

    /// True if worth nothing.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The same value at a finer-or-equal scale `to` (exact). `None` if `to` is coarser than `self.scale`.
    pub fn upscale(&self, to: u8) -> Option<BigUint> {
        let diff = to.checked_sub(self.scale)?;
        Some(&self.amount * pow10(diff))
    }

    /// The sum of two amounts, at the finer of the two scales (exact).
    pub fn add(&self, other: &Scaled) -> Scaled {
        let scale = self.scale.max(other.scale);
        // Both upscales are to a scale ≥ their own, so they are `Some`.
        let a = self.upscale(scale).unwrap_or_default();
        let b = other.upscale(scale).unwrap_or_default();
        Scaled {
            amount: a + b,
            scale,
        }
    }

    /// `self − other` at the finer of the two scales (exact), or `None` if `other` is worth more.
    pub fn checked_sub(&self, other: &Scaled) -> Option<Scaled> {
        let scale = self.scale.max(other.scale);
        let a = self.upscale(scale)?;
        let b = other.upscale(scale)?;
        (a >= b).then(|| Scaled {
            amount: a - b,
            scale,
        })
    }

    /// The wire form.
    pub fn to_quantity(&self) -> Quantity {
        Quantity {
            amount: self.amount.to_string(),
            scale: self.scale,
        }
    }
}

impl fmt::Display for Scaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e-{}", self.amount, self.scale)
    }
}

/// `10^exp`.
pub fn pow10(exp: u8) -> BigUint {
    num_traits::pow(BigUint::from(10u8), usize::from(exp))
}

/// A connector's amount (a settle request's Quantity, at any scale) in whole units of a module whose
/// `asset_scale` is `module_scale`, with the `leftover` of earlier amounts added first. Returns the units and
/// the new leftover.
///
/// Rounds down to a whole module unit and keeps the rest, worth less than one module unit, as the new
/// leftover, so nothing is lost: `units × 10^-module_scale + new_leftover == leftover + amount`. Exact (no
/// leftover) when `module_scale` is at least as fine as the amount's.
pub fn to_module_units(
    leftover: &Scaled,
    amount: &Scaled,
    module_scale: u8,
) -> (ModuleUnits, Scaled) {
    let (units, leftover) = convert_with_leftover(leftover, amount, module_scale);
    (ModuleUnits(units), leftover)
}

/// A module's `units` (a credit, at the module's `module_scale`) at the connector's `scale`, with the
/// `leftover` of earlier credits added first. Returns the whole units at `scale` and the new leftover.
///
/// Rounds down to a whole unit at `scale` and keeps the rest, worth less than one such unit, as the new
/// leftover, so the connector is never credited more than the module reported: `credited + new_leftover ==
/// leftover + units × 10^-module_scale`. Exact when `scale` is at least as fine as `module_scale`.
pub fn module_units_to_scale(
    leftover: &Scaled,
    units: &ModuleUnits,
    module_scale: u8,
    scale: u8,
) -> (Scaled, Scaled) {
    let (whole, leftover) = convert_with_leftover(
        leftover,
        &Scaled::of_module_units(units, module_scale),
        scale,
    );
    (Scaled::new(whole, scale), leftover)
}

/// Adds `amount` to `leftover` and converts the sum to scale `target`: returns the whole units at `target` and
/// the new leftover (worth less than one unit at `target`; zero leftovers are at scale `target`).
///
/// Invariant (checked by the property tests): `units × 10^-target + new_leftover == leftover + amount`.
fn convert_with_leftover(leftover: &Scaled, amount: &Scaled, target: u8) -> (BigUint, Scaled) {
    let sum = leftover.add(amount);
    if sum.scale <= target {
        // Finer target: exact, no leftover.
        let units = sum.upscale(target).unwrap_or_default();
        return (units, Scaled::zero(target));
    }
    let divisor = pow10(sum.scale - target);
    let (units, rem) = sum.amount.div_rem(&divisor);
    (units, normalize(Scaled::new(rem, sum.scale), target))
}

/// Strips trailing zeros of a leftover down to scale `floor`, so leftovers do not carry needless precision.
fn normalize(mut s: Scaled, floor: u8) -> Scaled {
    if s.amount.is_zero() {
        return Scaled::zero(floor);
    }
    let ten = BigUint::from(10u8);
    while s.scale > floor {
        let (q, r) = s.amount.div_rem(&ten);
        if !r.is_zero() {
            break;
        }
        s.amount = q;
        s.scale -= 1;
    }
    s
}

/// True if `s` is worth less than one unit at `scale`.
pub fn below_one_unit(s: &Scaled, scale: u8) -> bool {
    match s.scale.checked_sub(scale) {
        None | Some(0) => s.amount.is_zero(),
        Some(diff) => s.amount < pow10(diff),
    }
}

/// An RFC 38 Quantity on the wire: `{"amount": "<decimal string>", "scale": n}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantity {
    /// Non-negative integer as a decimal string.
    pub amount: String,
    /// Scale, 0..=255.
    pub scale: u8,
}

impl Default for Quantity {
    /// Zero at scale 0.
    fn default() -> Self {
        Quantity {
            amount: "0".to_owned(),
            scale: 0,
        }
    }
}

/// Why a Quantity was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityError {
    /// The body is not JSON.
    #[error("body is not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON, but not an object.
    #[error("body is not a JSON object: not an object")]
    NotObject,
    /// `amount` is missing or not a string (interledger-rs also refuses JSON numbers).
    #[error("\"amount\" must be a string of decimal digits")]
    AmountNotString,
    /// `amount` is not a non-negative decimal integer (holds the start of it).
    #[error("\"amount\" must be a non-negative integer in decimal digits, got {0:?}")]
    AmountNotInteger(String),
    /// `amount` is refused by the amount parser for another reason.
    #[error("\"amount\" must be a non-negative integer in decimal digits, got {:?}", .0.to_string())]
    Amount(#[source] AmountError),
    /// `amount` has more than [`MAX_AMOUNT_DIGITS`] digits.
    #[error("\"amount\" has more than {MAX_AMOUNT_DIGITS} digits")]
    AmountTooLong,
    /// `scale` is missing or not an integer in 0..=255.
    #[error("\"scale\" must be an integer from 0 to 255")]
    BadScale,
}

/// Parses a Quantity body strictly: a JSON object with `amount` a string of decimal digits and `scale` an
/// integer 0..=255. Unknown fields are ignored.
pub fn parse_quantity(body: &[u8]) -> Result<Scaled, QuantityError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(QuantityError::NotJson)?;
    let obj = value.as_object().ok_or(QuantityError::NotObject)?;
    let amount = match obj.get("amount") {
        Some(serde_json::Value::String(s)) => parse_amount(s)?,
        _ => return Err(QuantityError::AmountNotString),
    };
    let scale = obj
        .get("scale")
        .and_then(|v| v.as_u64())
        .and_then(|v| u8::try_from(v).ok())
        .ok_or(QuantityError::BadScale)?;
    Ok(Scaled { amount, scale })
}

/// Parses `amount` with the modules' decimal parser and its digit bound ([`MAX_AMOUNT_DIGITS`]: an RFC 38
/// Quantity has no bound of its own).
fn parse_amount(s: &str) -> Result<BigUint, QuantityError> {
    channel_modules::amount::parse_decimal(s).map_err(|e| match e {
        AmountError::TooLong(_) => QuantityError::AmountTooLong,
        AmountError::NotDecimal(quoted) => QuantityError::AmountNotInteger(quoted),
        other => QuantityError::Amount(other),
    })
}

/// Serde helper: an integer of any size ([`BigUint`], or [`ModuleUnits`] in the engine's records) as a decimal
/// string.
pub mod decimal_string {
    use std::fmt::Display;

    use num_bigint::BigUint;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a decimal string.
    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Deserializes from a decimal string.
    pub fn deserialize<'de, T: From<BigUint>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<BigUint>()
            .map(T::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(a: u64, scale: u8) -> Scaled {
        Scaled::new(BigUint::from(a), scale)
    }

    #[test]
    fn downscale_keeps_the_leftover() {
        // interledger-rs's example: 905 at scale 11 → scale 9 gives 9 and a loss of 5 (at scale 11).
        let (units, left) = convert_with_leftover(&Scaled::zero(9), &s(905, 11), 9);
        assert_eq!(units, BigUint::from(9u8));
        assert_eq!(left, s(5, 11));
        // The next 95 completes a unit.
        let (units, left) = convert_with_leftover(&left, &s(95, 11), 9);
        assert_eq!(units, BigUint::from(1u8));
        assert_eq!(left, Scaled::zero(9));
    }

    #[test]
    fn upscale_is_exact() {
        let (units, left) = convert_with_leftover(&Scaled::zero(6), &s(254, 2), 6);
        assert_eq!(units, BigUint::from(2_540_000u32));
        assert!(left.is_zero());
        // A leftover from an earlier finer request is carried over a coarser request.
        let (units, left) = convert_with_leftover(&s(7, 9), &s(3, 2), 6);
        assert_eq!(units, BigUint::from(30_000u32));
        assert_eq!(left, s(7, 9));
    }

    #[test]
    fn leftovers_are_normalized() {
        let (units, left) = convert_with_leftover(&Scaled::zero(6), &s(1_500, 9), 6);
        assert_eq!(units, BigUint::from(1u8));
        assert_eq!(left, s(5, 7));
        assert!(below_one_unit(&left, 6));
        assert!(!below_one_unit(&s(1_000, 9), 6));
    }

    #[test]
    fn quantity_parsing_is_strict() {
        assert_eq!(
            parse_quantity(br#"{"amount":"254","scale":2}"#).ok(),
            Some(s(254, 2))
        );
        assert!(matches!(
            parse_quantity(br#"{"amount":254,"scale":2}"#),
            Err(QuantityError::AmountNotString)
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"-1","scale":2}"#),
            Err(QuantityError::AmountNotInteger(_))
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"1.5","scale":2}"#),
            Err(QuantityError::AmountNotInteger(_))
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"","scale":2}"#),
            Err(QuantityError::AmountNotInteger(_))
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"1","scale":256}"#),
            Err(QuantityError::BadScale)
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"1","scale":-1}"#),
            Err(QuantityError::BadScale)
        ));
        assert!(matches!(
            parse_quantity(br#"{"amount":"1"}"#),
            Err(QuantityError::BadScale)
        ));
        assert!(matches!(
            parse_quantity(b"{"),
            Err(QuantityError::NotJson(_))
        ));
        let not_object = parse_quantity(b"[]");
        assert!(
            matches!(&not_object, Err(QuantityError::NotObject)),
            "{not_object:?}"
        );
        assert_eq!(
            not_object.map_err(|e| e.to_string()).err().as_deref(),
            Some("body is not a JSON object: not an object")
        );
        let long = format!(
            r#"{{"amount":"{}","scale":0}}"#,
            "9".repeat(MAX_AMOUNT_DIGITS + 1)
        );
        assert!(matches!(
            parse_quantity(long.as_bytes()),
            Err(QuantityError::AmountTooLong)
        ));
    }

    /// The engine (RFC 38 Quantities) and the modules (amounts in peers' claims) read amounts with one bound:
    /// the longest is accepted by both, one digit more refused by both.
    #[tokio::test]
    async fn the_engine_and_the_modules_accept_the_same_longest_amount(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use channel_modules::iou::IouModule;
        use channel_modules::testing::TestHost;
        use channel_modules::{ChannelModule, Claim, ModuleError};

        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        let module = IouModule::new(0);
        let iou = |amount: &str| Claim::Json(serde_json::json!({ "amount": amount }));
        let quantity = |amount: &str| format!(r#"{{"amount":"{amount}","scale":0}}"#);

        let longest = "9".repeat(MAX_AMOUNT_DIGITS);
        let engine = parse_quantity(quantity(&longest).as_bytes());
        assert!(engine.is_ok(), "engine: {engine:?}");
        let modules = module
            .handle_incoming_claim(&ctx, Some(&iou(&longest)))
            .await;
        assert!(
            matches!(modules, Ok(Some(_))),
            "module refused {MAX_AMOUNT_DIGITS} digits the engine accepts: {modules:?}"
        );

        let over = format!("1{longest}");
        assert!(matches!(
            parse_quantity(quantity(&over).as_bytes()),
            Err(QuantityError::AmountTooLong)
        ));
        let modules = module.handle_incoming_claim(&ctx, Some(&iou(&over))).await;
        assert!(
            matches!(modules, Err(ModuleError::InvalidFields(_))),
            "module took {} digits: {modules:?}",
            over.len()
        );
        Ok(())
    }

    #[test]
    fn a_settle_request_for_the_most_units_at_the_finest_scale_is_read() -> Result<(), QuantityError>
    {
        // 2^64 − 1 units of a scale-0 module, written at scale 255, plus the finest leftover below one unit.
        let units = BigUint::from(u64::MAX);
        let amount = &units * pow10(255) + (pow10(255) - 1u8);
        let body = format!(r#"{{"amount":"{amount}","scale":255}}"#);
        let read = parse_quantity(body.as_bytes())?;
        let (converted, leftover) = convert_with_leftover(&Scaled::zero(0), &read, 0);
        assert_eq!(converted, units);
        assert!(below_one_unit(&leftover, 0) && !leftover.is_zero());
        Ok(())
    }

    #[test]
    fn a_settle_request_becomes_whole_module_units_and_a_leftover() {
        let (units, left) = to_module_units(&Scaled::zero(9), &s(905, 11), 9);
        assert_eq!((units, left.clone()), (ModuleUnits::from(9), s(5, 11)));
        let (units, left) = to_module_units(&left, &s(95, 11), 9);
        assert_eq!((units, left), (ModuleUnits::from(1), Scaled::zero(9)));
        // A module finer than the request: exact.
        let (units, left) = to_module_units(&Scaled::zero(6), &s(254, 2), 6);
        assert_eq!(
            (units, left.is_zero()),
            (ModuleUnits::from(2_540_000), true)
        );
    }

    #[test]
    fn a_credit_reaches_the_connector_rounded_down_and_the_rest_follows() {
        // 1.999 module units at scale 3, credited at scale 2: 1.99 now, 0.009 kept.
        let (credited, left) =
            module_units_to_scale(&Scaled::zero(2), &ModuleUnits::from(1_999), 3, 2);
        assert_eq!((credited, left.clone()), (s(199, 2), s(9, 3)));
        // The next 0.001 completes a unit at scale 2.
        let (credited, left) = module_units_to_scale(&left, &ModuleUnits::from(1), 3, 2);
        assert_eq!((credited, left), (s(1, 2), Scaled::zero(2)));
        // A finer connector: exact.
        let (credited, left) = module_units_to_scale(&Scaled::zero(9), &ModuleUnits::from(7), 6, 9);
        assert_eq!((credited, left.is_zero()), (s(7_000, 9), true));
        assert_eq!(
            Scaled::of_module_units(&ModuleUnits::from(254), 2),
            s(254, 2)
        );
    }

    #[test]
    fn checked_sub_is_exact_across_scales() {
        // 1.5 − 0.25 = 1.25, at the finer scale.
        assert_eq!(s(15, 1).checked_sub(&s(25, 2)), Some(s(125, 2)));
        assert_eq!(s(3, 0).checked_sub(&s(300, 2)), Some(s(0, 2)));
        assert_eq!(s(3, 0).checked_sub(&s(301, 2)), None);
    }

    proptest! {
        /// Module units and the leftover from a connector's amounts, or a connector's credits and the leftover
        /// from module units, are worth exactly what went in.
        #[test]
        fn the_conversions_between_sides_never_lose_or_invent(
            amount in 0u64..u64::MAX, amount_scale in 0u8..20, module_scale in 0u8..20,
        ) {
            let (units, left) = to_module_units(&Scaled::zero(module_scale), &s(amount, amount_scale), module_scale);
            prop_assert!(below_one_unit(&left, module_scale));
            let back = Scaled::of_module_units(&units, module_scale).add(&left);
            let common = back.scale.max(amount_scale);
            prop_assert_eq!(back.upscale(common), s(amount, amount_scale).upscale(common));

            let credit = ModuleUnits::from(amount);
            let (credited, left) = module_units_to_scale(&Scaled::zero(amount_scale), &credit, module_scale, amount_scale);
            prop_assert!(below_one_unit(&left, amount_scale));
            let back = credited.add(&left);
            let common = back.scale.max(module_scale);
            prop_assert_eq!(back.upscale(common), Scaled::of_module_units(&credit, module_scale).upscale(common));
        }

        /// Units plus the final leftover are worth exactly the sum of all inputs, for any scales.
        #[test]
        fn conversion_never_loses_or_invents(
            inputs in proptest::collection::vec((0u64..u64::MAX, 0u8..20), 1..40),
            target in 0u8..20,
        ) {
            let mut left = Scaled::zero(target);
            let mut units_total = BigUint::zero();
            let mut input_sum = Scaled::zero(0);
            for (a, sc) in inputs {
                let (u, l) = convert_with_leftover(&left, &s(a, sc), target);
                prop_assert!(below_one_unit(&l, target));
                units_total += u;
                left = l;
                input_sum = input_sum.add(&s(a, sc));
            }
            let produced = Scaled::new(units_total, target).add(&left);
            let common = produced.scale.max(input_sum.scale);
            prop_assert_eq!(produced.upscale(common), input_sum.upscale(common));
        }
    }
}
