//! How the legacy plugin writes values in its rows: integers as BigNumber.js prints them, binary fields in
//! base64url, times as JavaScript's `Date#toISOString`; the parsers and why each refuses a value.

use num_bigint::BigUint;

/// Largest year magnitude a JavaScript `Date` can hold (`new Date(8.64e15)` is in +275760).
pub const JS_MAX_YEAR: i64 = 275_760;

/// Largest distance from the epoch a JavaScript `Date` can hold, in milliseconds (ECMA-262 "Time Values").
pub const JS_MAX_DATE_MS: i64 = 8_640_000_000_000_000;

/// Most zeros a BigNumber exponent may append to an integer (far beyond any amount; bounds the work per row).
const MAX_EXPONENT_ZEROS: usize = 4096;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Why [`parse_legacy_integer`] or [`parse_legacy_natural`] refused a number (the text as given, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyNumberError {
    /// The exponent is not an integer.
    #[error("{0:?}: bad exponent")]
    BadExponent(String),
    /// Not digits with at most one `.`.
    #[error("{0:?} is not a decimal integer")]
    NotDecimal(String),
    /// The exponent is beyond what can be applied.
    #[error("{0:?}: exponent out of range")]
    ExponentOutOfRange(String),
    /// Larger than the target type, or an exponent appending more zeros than any amount needs.
    #[error("{0:?} is too large")]
    TooLarge(String),
    /// A value with a fraction.
    #[error("{0:?} is not an integer")]
    NotInteger(String),
    /// Digits that do not make a number.
    #[error("{0:?} is not a number")]
    NotANumber(String),
}

/// Why a base64url field of 32 bytes (a condition or fulfillment) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Base64Error {
    /// Not base64url.
    #[error(transparent)]
    Decode(#[from] base64::DecodeError),
    /// Decoded to another length than 32 bytes.
    #[error("{0} bytes, expected 32")]
    Length(usize),
}

/// Why [`parse_iso_ms`] refused a time (the text as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IsoTimeError {
    /// Not `YYYY-MM-DDTHH:MM:SS[.sss]Z` (or `±YYYYYY-…`), or a day or time that does not exist.
    #[error("{0:?} is not an ISO 8601 UTC time")]
    NotIso(String),
    /// A year beyond ±[`JS_MAX_YEAR`].
    #[error("{0:?}: year outside the JavaScript date range")]
    YearOutOfRange(String),
    /// Further than [`JS_MAX_DATE_MS`] from the epoch.
    #[error("{0:?}: outside the JavaScript date range")]
    OutOfRange(String),
}

/// Parses an integer as BigNumber.js prints it: `[-]digits`, or exponent notation `[-]d[.ddd]e[+|-]n` (used
/// from 1e21 on). A fractional value is an error.
pub fn parse_legacy_integer(s: &str) -> Result<i128, LegacyNumberError> {
    let s = s.trim();
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = parse_legacy_natural(body)?;
    let magnitude =
        i128::try_from(magnitude).map_err(|_| LegacyNumberError::TooLarge(s.to_owned()))?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Parses a non-negative integer (plain digits or BigNumber exponent notation) of any size.
pub fn parse_legacy_natural(s: &str) -> Result<BigUint, LegacyNumberError> {
    let s = s.trim();
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (
            m,
            e.strip_prefix('+')
                .unwrap_or(e)
                .parse::<i64>()
                .map_err(|_| LegacyNumberError::BadExponent(s.to_owned()))?,
        ),
        None => (s, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(LegacyNumberError::NotDecimal(s.to_owned()));
    }
    let digits = format!("{int_part}{frac_part}");
    // value = digits × 10^(exponent − len(frac))
    let shift = i64::try_from(frac_part.len())
        .ok()
        .and_then(|frac_len| exponent.checked_sub(frac_len))
        .ok_or_else(|| LegacyNumberError::ExponentOutOfRange(s.to_owned()))?;
    let digits = if shift >= 0 {
        let zeros = usize::try_from(shift)
            .ok()
            .filter(|z| *z <= MAX_EXPONENT_ZEROS)
            .ok_or_else(|| LegacyNumberError::TooLarge(s.to_owned()))?;
        format!("{digits}{}", "0".repeat(zeros))
    } else {
        let dropped_len = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
        let cut = digits.len().saturating_sub(dropped_len);
        let (keep, dropped) = digits.split_at(cut);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(LegacyNumberError::NotInteger(s.to_owned()));
        }
        if keep.is_empty() {
            "0".to_owned()
        } else {
            keep.to_owned()
        }
    };
    BigUint::parse_bytes(digits.as_bytes(), 10)
        .ok_or_else(|| LegacyNumberError::NotANumber(s.to_owned()))
}

pub(super) fn decode_b64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let trimmed = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed)
}

pub(super) fn decode_b64url_32(s: &str) -> Result<[u8; 32], Base64Error> {
    decode_b64url(s)?
        .try_into()
        .map_err(|v: Vec<u8>| Base64Error::Length(v.len()))
}

/// Parses a JavaScript `Date#toISOString` value (`YYYY-MM-DDTHH:MM:SS.sssZ`, or `±YYYYYY-…` for far years) to
/// milliseconds since the epoch. Fractional digits beyond milliseconds are ignored; a missing fraction is 0.
///
/// Only instants a JavaScript `Date` can hold are accepted: years within ±[`JS_MAX_YEAR`] and at most
/// [`JS_MAX_DATE_MS`] from the epoch either way. The day must exist in its month (`2017-02-31` is refused, where
/// `Date.parse` would roll it over).
///
/// `btp::Timestamp::from_parts` is not used: it only holds years 0000–9999, while a legacy `expiresAt` may be any
/// JavaScript date.
pub fn parse_iso_ms(s: &str) -> Result<i64, IsoTimeError> {
    let err = || IsoTimeError::NotIso(s.to_owned());
    let body = s.strip_suffix('Z').ok_or_else(err)?;
    let (date, time) = body.split_once('T').ok_or_else(err)?;
    let (year_sign, date) = match date.as_bytes().first() {
        Some(b'+') => (1i64, &date[1..]),
        Some(b'-') => (-1i64, &date[1..]),
        _ => (1i64, date),
    };
    let mut parts = date.split('-');
    let num = |p: Option<&str>| -> Result<i64, IsoTimeError> {
        let p = p.ok_or_else(err)?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        p.parse::<i64>().map_err(|_| err())
    };
    let year = year_sign * num(parts.next())?;
    if year.abs() > JS_MAX_YEAR {
        return Err(IsoTimeError::YearOutOfRange(s.to_owned()));
    }
    let month = num(parts.next())?;
    let day = num(parts.next())?;
    if parts.next().is_some() {
        return Err(err());
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms_parts = hms.split(':');
    let hour = num(hms_parts.next())?;
    let minute = num(hms_parts.next())?;
    let second = num(hms_parts.next())?;
    if hms_parts.next().is_some()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let millis = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    let ms = days_from_civil(year, month, day)
        .and_then(|days| days.checked_mul(MILLIS_PER_DAY))
        .and_then(|ms| ms.checked_add(((hour * 60 + minute) * 60 + second) * 1000 + millis))
        .ok_or_else(err)?;
    if ms.abs() > JS_MAX_DATE_MS {
        return Err(IsoTimeError::OutOfRange(s.to_owned()));
    }
    Ok(ms)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1–12) of `year`; 0 for any other month.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm); `None` on overflow.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_as_javascript_prints_them() {
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00.000Z"), Ok(0));
        assert_eq!(
            parse_iso_ms("2017-10-01T00:00:00.123Z"),
            Ok(1_506_816_000_123)
        );
        assert_eq!(
            parse_iso_ms("2000-02-29T23:59:59.999Z"),
            Ok(951_868_799_999)
        );
        // new Date(8.64e15).toISOString(), the largest JS date
        assert_eq!(
            parse_iso_ms("+275760-09-13T00:00:00.000Z"),
            Ok(8_640_000_000_000_000)
        );
        assert_eq!(parse_iso_ms("1969-12-31T23:59:59.000Z"), Ok(-1000));
        assert!(parse_iso_ms("2017-13-01T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("2017-10-01 00:00:00Z").is_err());
        assert!(parse_iso_ms("2017-10-01T00:00:00.000").is_err());
    }

    #[test]
    fn iso_times_outside_the_calendar_or_the_javascript_range_are_refused() {
        // Days that do not exist in their month (Date.parse would roll them over).
        assert!(parse_iso_ms("2017-02-31T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("2017-02-29T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("1900-02-29T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("2017-04-31T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("2017-01-00T00:00:00.000Z").is_err());
        assert_eq!(
            parse_iso_ms("2016-02-29T00:00:00.000Z"),
            Ok(1_456_704_000_000)
        );
        // Huge years: an error, not an overflow panic.
        assert!(parse_iso_ms("+9223372036854775807-01-01T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("-9223372036854775807-01-01T00:00:00.000Z").is_err());
        assert!(parse_iso_ms("+275761-01-01T00:00:00.000Z").is_err());
        // The JavaScript range ends at ±8.64e15 ms, inside year ±275760.
        assert_eq!(
            parse_iso_ms("-271821-04-20T00:00:00.000Z"),
            Ok(-JS_MAX_DATE_MS)
        );
        assert!(parse_iso_ms("+275760-09-13T00:00:00.001Z").is_err());
        assert!(parse_iso_ms("-271821-04-19T23:59:59.999Z").is_err());
    }

    #[test]
    fn extreme_exponents_are_errors_not_panics() {
        assert!(parse_legacy_natural("1.5e-9223372036854775808").is_err());
        assert!(parse_legacy_natural("1e9223372036854775807").is_err());
        assert!(parse_legacy_natural("1e-9223372036854775808").is_err());
        assert_eq!(
            parse_legacy_natural("0e-9223372036854775808").map(|v| v.to_string()),
            Ok("0".to_owned())
        );
        assert_eq!(
            parse_legacy_natural("1500e-2").map(|v| v.to_string()),
            Ok("15".to_owned())
        );
    }

    #[test]
    fn bignumber_notation() {
        assert_eq!(parse_legacy_integer("13"), Ok(13));
        assert_eq!(parse_legacy_integer("-50"), Ok(-50));
        assert_eq!(
            parse_legacy_integer("1.2345e+21"),
            Ok(1_234_500_000_000_000_000_000)
        );
        assert_eq!(
            parse_legacy_integer("-1e+21"),
            Ok(-1_000_000_000_000_000_000_000)
        );
        assert!(parse_legacy_integer("1.5").is_err());
        assert!(parse_legacy_integer("abc").is_err());
        assert!(parse_legacy_integer("1e+60").is_err());
        assert_eq!(
            parse_legacy_natural("12345678901234567890123").map(|v| v.to_string()),
            Ok("12345678901234567890123".to_owned())
        );
    }
}
