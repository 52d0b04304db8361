//! Timestamps in the two wire forms Interledger uses, held as milliseconds since the Unix epoch (UTC).
//!
//! * **GeneralizedTime** (BTP Error `triggeredAt`, BTP/1.0 Prepare `expiresAt`, ILP v1 Error `triggeredAt`, ILQP
//!   `expiresAt`): `YYYYMMDDHHMMSS.fffZ`, 19 ASCII characters, carried in a var-oct.
//! * **ILPv4 timestamp** (RFC 27 Prepare `expiresAt`): `YYYYMMDDHHmmSSfff`, exactly 17 ASCII digits, fixed width,
//!   UTC, no separators and no `Z`.
//!
//! **Input policy for GeneralizedTime.** We accept `YYYYMMDDHHMMSS` optionally followed by `.` and 1 to 3
//! fraction digits, then a mandatory `Z`: the same set interledger-rs accepts (`.f{1,3}`). The legacy
//! framework (btp-packet 1.x) only ever *sends* three digits and fails a Prepare carrying any other form, so we
//! always *write* exactly three digits. Local-time offsets, a missing `Z`, a comma, missing seconds, more than
//! three fraction digits and leap seconds (`60`) are refused. The digit fields are parsed by `asn1-rs`
//! ([`asn1_rs::GeneralizedTime::from_bytes`]) after this crate's stricter shape check; the calendar check
//! (day within the month) and the epoch conversion are done here.
//!
//! A [`Timestamp`] always lies in years 0000–9999, the range both forms can express, so encoding never fails.

use core::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::DecodeError;

/// Length of a GeneralizedTime as this crate writes it (`YYYYMMDDHHMMSS.fffZ`).
pub const GENERALIZED_TIME_LEN: usize = 19;

/// Length of an ILPv4 timestamp (`YYYYMMDDHHmmSSfff`).
pub const ILP_V4_TIME_LEN: usize = 17;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Milliseconds from the Unix epoch to 0000-01-01T00:00:00.000Z (proleptic Gregorian calendar).
const MIN_UNIX_MILLIS: i64 = -62_167_219_200_000;

/// Milliseconds from the Unix epoch to 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MILLIS: i64 = 253_402_300_799_999;

/// An instant with millisecond precision, between 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
///
/// `Display` renders RFC 3339 / ISO 8601 with milliseconds (`2030-01-02T03:04:05.678Z`), the form the legacy
/// framework stores in its transfer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Milliseconds since 1970-01-01T00:00:00Z; always within `MIN_UNIX_MILLIS..=MAX_UNIX_MILLIS`.
    unix_millis: i64,
}

/// Calendar fields of a [`Timestamp`], all in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeParts {
    /// Year, 0–9999.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
    /// Millisecond, 0–999.
    pub millisecond: u16,
}

impl Timestamp {
    /// The earliest representable instant, 0000-01-01T00:00:00.000Z.
    pub const MIN: Timestamp = Timestamp {
        unix_millis: MIN_UNIX_MILLIS,
    };
    /// The latest representable instant, 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp {
        unix_millis: MAX_UNIX_MILLIS,
    };
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp { unix_millis: 0 };

    /// The instant `unix_millis` milliseconds after the Unix epoch, or `None` outside years 0000–9999.
    pub const fn from_unix_millis(unix_millis: i64) -> Option<Timestamp> {
        if unix_millis < MIN_UNIX_MILLIS || unix_millis > MAX_UNIX_MILLIS {
            None
        } else {
            Some(Timestamp { unix_millis })
        }
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub const fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// Converts a [`SystemTime`], truncating to whole milliseconds; `None` outside years 0000–9999.
    pub fn from_system_time(time: SystemTime) -> Option<Timestamp> {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok()?,
            Err(before) => {
                // Round towards the past so truncation never moves an instant later.
                let d = before.duration();
                let whole = i64::try_from(d.as_millis()).ok()?;
                let has_fraction = d.as_nanos() % 1_000_000 != 0;
                -(whole + i64::from(has_fraction))
            }
        };
        Timestamp::from_unix_millis(millis)
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_millis(self.unix_millis.unsigned_abs());
        if self.unix_millis >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// The current time from the system clock (clamped into the representable range).
    ///
    /// Code with timing logic should take its clock as a parameter instead of calling this, and convert what
    /// the clock says with [`Timestamp::from_system_time_clamped`].
    pub fn now() -> Timestamp {
        Timestamp::from_system_time_clamped(SystemTime::now())
    }

    /// [`Timestamp::from_system_time`], clamped into the representable range ([`Timestamp::MIN`] before year
    /// 0000, [`Timestamp::MAX`] after 9999) for a time that must be stamped whatever it is.
    pub fn from_system_time_clamped(time: SystemTime) -> Timestamp {
        Timestamp::from_system_time(time).unwrap_or(if time < UNIX_EPOCH {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    }

    /// `self + d`, or `None` past 9999-12-31.
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        let ms = i64::try_from(d.as_millis()).ok()?;
        Timestamp::from_unix_millis(self.unix_millis.checked_add(ms)?)
    }

    /// `self - d`, or `None` before year 0.
    pub fn checked_sub(self, d: Duration) -> Option<Timestamp> {
        let ms = i64::try_from(d.as_millis()).ok()?;
        Timestamp::from_unix_millis(self.unix_millis.checked_sub(ms)?)
    }

    /// Time from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Option<Duration> {
        let diff = self.unix_millis.checked_sub(earlier.unix_millis)?;
        u64::try_from(diff).ok().map(Duration::from_millis)
    }

    /// Builds a timestamp from calendar fields, checking each (including the day against the month).
    pub fn from_parts(parts: DateTimeParts) -> Option<Timestamp> {
        let DateTimeParts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millisecond,
        } = parts;
        if year > 9999
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
            || millisecond > 999
        {
            return None;
        }
        let days = days_from_civil(i64::from(year), u32::from(month), u32::from(day));
        let ms_of_day = ((i64::from(hour) * 60 + i64::from(minute)) * 60 + i64::from(second))
            * 1000
            + i64::from(millisecond);
        Timestamp::from_unix_millis(days * MILLIS_PER_DAY + ms_of_day)
    }

    /// The calendar fields of this instant in UTC.
    pub fn to_parts(self) -> DateTimeParts {
        let days = self.unix_millis.div_euclid(MILLIS_PER_DAY);
        let ms_of_day = self.unix_millis.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // The type's range keeps every field within its narrow type; the casts cannot truncate.
        DateTimeParts {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: (ms_of_day / 3_600_000) as u8,
            minute: (ms_of_day / 60_000 % 60) as u8,
            second: (ms_of_day / 1000 % 60) as u8,
            millisecond: (ms_of_day % 1000) as u16,
        }
    }

    /// Parses a GeneralizedTime under the input policy in the module docs.
    pub fn parse_generalized_time(
        raw: &[u8],
        field: &'static str,
    ) -> Result<Timestamp, DecodeError> {
        let bad = |reason| DecodeError::InvalidTime { field, reason };
        // Shape: 14 digits, optional '.' + 1..=3 digits, 'Z'.
        let (body, last) = match raw.split_last() {
            Some((last, body)) => (body, *last),
            None => return Err(bad("empty")),
        };
        if last != b'Z' {
            return Err(bad("must end in Z (UTC)"));
        }
        let (whole, fraction) = match body.get(14..) {
            None => return Err(bad("expected YYYYMMDDHHMMSS")),
            Some([]) => (body, None),
            Some([b'.', digits @ ..]) if (1..=3).contains(&digits.len()) => {
                (body.get(..14).unwrap_or(body), Some(digits))
            }
            Some(_) => return Err(bad("expected . and 1 to 3 fraction digits")),
        };
        if whole.len() != 14 || !whole.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected YYYYMMDDHHMMSS digits"));
        }
        if let Some(digits) = fraction {
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad("fraction must be digits"));
            }
        }
        let parsed =
            asn1_rs::GeneralizedTime::from_bytes(raw).map_err(|_| bad("out-of-range field"))?;
        let dt = parsed.0;
        if dt.tz != asn1_rs::ASN1TimeZone::Z {
            return Err(bad("must be UTC"));
        }
        let year = u16::try_from(dt.year).map_err(|_| bad("year out of range"))?;
        Timestamp::from_parts(DateTimeParts {
            year,
            month: dt.month,
            day: dt.day,
            hour: dt.hour,
            minute: dt.minute,
            second: dt.second,
            millisecond: dt.millisecond.unwrap_or(0),
        })
        .ok_or(bad("no such date"))
    }

    /// This instant as `YYYYMMDDHHMMSS.fffZ`.
    pub fn to_generalized_time(self) -> [u8; GENERALIZED_TIME_LEN] {
        let mut out = [0u8; GENERALIZED_TIME_LEN];
        let digits = self.digits();
        out[..14].copy_from_slice(&digits[..14]);
        out[14] = b'.';
        out[15..18].copy_from_slice(&digits[14..]);
        out[18] = b'Z';
        out
    }

    /// Parses an ILPv4 timestamp: exactly 17 ASCII digits `YYYYMMDDHHmmSSfff`, UTC.
    pub fn parse_ilp_v4(
        raw: &[u8; ILP_V4_TIME_LEN],
        field: &'static str,
    ) -> Result<Timestamp, DecodeError> {
        if !raw.iter().all(u8::is_ascii_digit) {
            return Err(DecodeError::InvalidTime {
                field,
                reason: "expected 17 digits YYYYMMDDHHmmSSfff",
            });
        }
        let num = |range: core::ops::Range<usize>| {
            raw[range]
                .iter()
                .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'))
        };
        // Each two-digit field is at most 99, so the narrowing casts are lossless.
        Timestamp::from_parts(DateTimeParts {
            year: num(0..4),
            month: num(4..6) as u8,
            day: num(6..8) as u8,
            hour: num(8..10) as u8,
            minute: num(10..12) as u8,
            second: num(12..14) as u8,
            millisecond: num(14..17),
        })
        .ok_or(DecodeError::InvalidTime {
            field,
            reason: "no such date",
        })
    }

    /// This instant as the 17-digit ILPv4 form.
    pub fn to_ilp_v4(self) -> [u8; ILP_V4_TIME_LEN] {
        self.digits()
    }

    /// `YYYYMMDDHHmmSSfff` as ASCII digits.
    fn digits(self) -> [u8; ILP_V4_TIME_LEN] {
        let p = self.to_parts();
        let mut out = [0u8; ILP_V4_TIME_LEN];
        put_digits(&mut out[0..4], u32::from(p.year));
        put_digits(&mut out[4..6], u32::from(p.month));
        put_digits(&mut out[6..8], u32::from(p.day));
        put_digits(&mut out[8..10], u32::from(p.hour));
        put_digits(&mut out[10..12], u32::from(p.minute));
        put_digits(&mut out[12..14], u32::from(p.second));
        put_digits(&mut out[14..17], u32::from(p.millisecond));
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.to_parts();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second, p.millisecond
        )
    }
}

/// Writes `value` as zero-padded decimal filling `out`.
fn put_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn is_leap_year(year: u16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(s: &str) -> Result<Timestamp, DecodeError> {
        Timestamp::parse_generalized_time(s.as_bytes(), "t")
    }

    #[test]
    fn range_constants_match_the_calendar() {
        let min = Timestamp::from_parts(DateTimeParts {
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millisecond: 0,
        });
        assert_eq!(min, Some(Timestamp::MIN));
        let max = Timestamp::from_parts(DateTimeParts {
            year: 9999,
            month: 12,
            day: 31,
            hour: 23,
            minute: 59,
            second: 59,
            millisecond: 999,
        });
        assert_eq!(max, Some(Timestamp::MAX));
        assert_eq!(Timestamp::from_unix_millis(MAX_UNIX_MILLIS + 1), None);
        assert_eq!(Timestamp::from_unix_millis(MIN_UNIX_MILLIS - 1), None);
    }

    #[test]
    fn generalized_time_vectors() -> Result<(), DecodeError> {
        let t = gt("20300102030405.678Z")?;
        assert_eq!(t.unix_millis(), 1_893_553_445_678);
        assert_eq!(&t.to_generalized_time(), b"20300102030405.678Z");
        assert_eq!(t.to_string(), "2030-01-02T03:04:05.678Z");
        let t = gt("20180831025324.899Z")?;
        assert_eq!(t.unix_millis(), 1_535_684_004_899);
        assert_eq!(gt("19700101000000.000Z")?, Timestamp::UNIX_EPOCH);
        assert_eq!(gt("19691231235959.999Z")?.unix_millis(), -1);
        Ok(())
    }

    #[test]
    fn generalized_time_lenient_fractions() -> Result<(), DecodeError> {
        assert_eq!(gt("20300102030405Z")?.unix_millis(), 1_893_553_445_000);
        assert_eq!(gt("20300102030405.6Z")?.unix_millis(), 1_893_553_445_600);
        assert_eq!(gt("20300102030405.67Z")?.unix_millis(), 1_893_553_445_670);
        assert_eq!(
            &gt("20300102030405.6Z")?.to_generalized_time(),
            b"20300102030405.600Z"
        );
        Ok(())
    }

    #[test]
    fn generalized_time_refusals() {
        for bad in [
            "",
            "Z",
            "20300102030405.678",
            "20300102030405.6789Z",
            "20300102030405.Z",
            "20300102030405,678Z",
            "203001020304Z",
            "20300102030405.678+0100",
            "20300102030405.678z",
            "2030010203040a.678Z",
            "20300102030405.6a8Z",
            "20301302030405.678Z",
            "20300230030405.678Z",
            "20300102240405.678Z",
            "20300102036005.678Z",
            "20300102030460.678Z",
            "20300100030405.678Z",
            "2030-01-02T03:04:05.678Z",
            " 20300102030405.678Z",
        ] {
            assert!(
                matches!(gt(bad), Err(DecodeError::InvalidTime { field: "t", .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn leap_days() -> Result<(), DecodeError> {
        assert!(gt("20240229000000.000Z").is_ok());
        assert!(gt("20000229000000.000Z").is_ok());
        assert!(gt("21000229000000.000Z").is_err());
        assert!(gt("20230229000000.000Z").is_err());
        Ok(())
    }

    #[test]
    fn ilp_v4_vectors() -> Result<(), DecodeError> {
        let t = Timestamp::parse_ilp_v4(b"20261121154053487", "t")?;
        assert_eq!(t, gt("20261121154053.487Z")?);
        assert_eq!(&t.to_ilp_v4(), b"20261121154053487");
        assert!(Timestamp::parse_ilp_v4(b"2026112115405348Z", "t").is_err());
        assert!(Timestamp::parse_ilp_v4(b"20261131154053487", "t").is_err());
        Ok(())
    }

    #[test]
    fn system_time_round_trip() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123).expect("in range");
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), Some(t));
        let before = Timestamp::from_unix_millis(-5).expect("in range");
        assert_eq!(
            Timestamp::from_system_time(before.to_system_time()),
            Some(before)
        );
        let sub_ms_before = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(
            Timestamp::from_system_time(sub_ms_before).map(Timestamp::unix_millis),
            Some(-2)
        );
        assert_eq!(
            t.checked_add(Duration::from_millis(877))
                .map(Timestamp::unix_millis),
            Some(1_700_000_001_000)
        );
        assert_eq!(Timestamp::MAX.checked_add(Duration::from_millis(1)), None);
        assert_eq!(
            t.checked_add(Duration::from_secs(2))
                .and_then(|l| l.duration_since(t)),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn parts_round_trip_over_the_whole_range() {
        let mut ms = MIN_UNIX_MILLIS;
        // Steps of a prime number of milliseconds visit many different dates and times of day.
        while ms <= MAX_UNIX_MILLIS {
            let t = Timestamp::from_unix_millis(ms).expect("in range");
            assert_eq!(Timestamp::from_parts(t.to_parts()), Some(t));
            let gt_bytes = t.to_generalized_time();
            assert_eq!(Timestamp::parse_generalized_time(&gt_bytes, "t"), Ok(t));
            assert_eq!(Timestamp::parse_ilp_v4(&t.to_ilp_v4(), "t"), Ok(t));
            ms += 9_999_999_967;
        }
    }
}
