//! How the legacy plugin reads a Prepare's `expiresAt`, so the transport answers the same way.
//!
//! btp-packet 1.x turns `YYYYMMDDHHMMSS.fffZ` into `YYYY-MM-DDTHH:MM:SS.fffZ` with a regex and hands the result
//! (or, when the regex does not match, the raw text) to JavaScript's `new Date`; the plugin then calls
//! `toISOString()` on it, which throws `RangeError: Invalid time value` for an invalid date. So a Prepare whose
//! expiry is not a valid time gets `Error F00 "RangeError" {"message":"Invalid time value"}`
//! (docs/legacy-btp.md §1.5, §16.9), checked before any other field of the transfer. Measured on the real
//! 1.3.5 plugin (node 20):
//!
//! | expiresAt | legacy |
//! |--|--|
//! | `20300102030405.678Z` | accepted |
//! | `20300230030405.678Z` (Feb 30), `20300102240000.000Z` (24:00) | accepted, rolled over (Mar 2, next day 00:00) |
//! | `20300102030405Z`, `…05.6Z`, `…05.678` (no Z), month 13, day 32, 24:00:00.001, `garbage`, empty | RangeError |
//!
//! This module applies exactly those rules to the 19-character form: valid ones pass (rolled-over dates are
//! rewritten to their canonical time before decoding), invalid ones are answered with the RangeError. Two
//! differences are left, and no legacy sender produces either (btp-packet always writes the 19-character form of
//! a real time): a time that is not in the 19-character form at all but that JavaScript's `Date` parser still
//! understands (ISO-8601 with dashes, RFC 2822 text, …), and `99991231240000.000Z`, which rolls over into the
//! year 10000; legacy accepts both, this module answers them with the RangeError.
//!
//! A Prepare whose other fields do not decode gets no reply at all, as in legacy.

use bytes::{Bytes, BytesMut};

use crate::oer::Reader;
use crate::packet::{BtpError, Frame, Packet, ProtocolData};
use crate::time::{DateTimeParts, Timestamp, GENERALIZED_TIME_LEN};

/// BTP/1.0 type code of a Prepare.
const PREPARE_TYPE: u8 = 3;

/// Bytes of a Prepare before its `expiresAt`: transferId 16 · amount 8 · executionCondition 32.
const PREPARE_FIELDS_BEFORE_EXPIRY_BYTES: usize = 16 + 8 + 32;

/// Milliseconds per day.
const MILLIS_PER_DAY: i64 = 86_400_000;

/// The `data` of legacy's RangeError reply.
pub(crate) const INVALID_TIME_DATA: &str = r#"{"message":"Invalid time value"}"#;

/// What to do with one incoming frame, as far as a Prepare's expiry goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PrepareTime {
    /// Not a Prepare, or a Prepare whose expiry is fine (or whose frame is broken anyway): decode as is.
    Keep,
    /// A Prepare whose expiry legacy rolls over (Feb 30, 24:00): decode these bytes instead, which hold the
    /// canonical time.
    Rewritten(Bytes),
    /// A well-formed Prepare whose expiry legacy refuses: answer request `request_id` with [`range_error`].
    Refuse {
        /// The request ID to answer.
        request_id: u32,
    },
}

/// The time legacy reads from `raw` (milliseconds since the Unix epoch), or `None` when its `Date` is invalid
/// (see the module docs for the rules).
pub(crate) fn legacy_expiry_millis(raw: &[u8]) -> Option<i64> {
    if raw.len() != GENERALIZED_TIME_LEN || raw[14] != b'.' || raw[18] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        raw[range].iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let year = u16::try_from(digits(0..4)?).ok()?;
    let month = u8::try_from(digits(4..6)?).ok()?;
    let day = i64::from(digits(6..8)?);
    let hour = i64::from(digits(8..10)?);
    let minute = i64::from(digits(10..12)?);
    let second = i64::from(digits(12..14)?);
    let milli = i64::from(digits(15..18)?);
    let end_of_day = hour == 24 && minute == 0 && second == 0 && milli == 0;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || (hour > 23 && !end_of_day)
        || minute > 59
        || second > 59
    {
        return None;
    }
    let first_of_month = Timestamp::from_parts(DateTimeParts {
        year,
        month,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        millisecond: 0,
    })?;
    let ms = first_of_month.unix_millis()
        + (day - 1) * MILLIS_PER_DAY
        + ((hour * 60 + minute) * 60 + second) * 1000
        + milli;
    Timestamp::from_unix_millis(ms).map(Timestamp::unix_millis)
}

/// The start of a Prepare frame, read without parsing the time.
struct PrepareHeader<'a> {
    request_id: u32,
    /// The raw `expiresAt` field.
    raw: &'a [u8],
    /// Offset of `raw` in the frame.
    time_start: usize,
    /// The contents after `expiresAt` (the protocol data).
    rest: Reader<'a>,
    /// The frame after the contents (empty in a well-formed frame).
    after: Reader<'a>,
}

/// Reads a Prepare frame up to its `expiresAt`; `None` if `bytes` is not a Prepare or too broken to get there.
fn prepare_header(bytes: &Bytes) -> Option<PrepareHeader<'_>> {
    if bytes.first() != Some(&PREPARE_TYPE) {
        return None;
    }
    let total = bytes.len();
    let mut r = Reader::new(bytes);
    let header = (|| {
        r.read_u8("btp.type")?;
        let request_id = r.read_u32("btp.requestId")?;
        let mut contents = r.read_var_octet_reader("btp.contents")?;
        contents.read_slice(PREPARE_FIELDS_BEFORE_EXPIRY_BYTES, "btp.prepare")?;
        let raw = contents.read_var_octet_slice("btp.prepare.expiresAt")?;
        // Offsets into `bytes`: the contents end where the outer reader resumes.
        let contents_end = total - r.remaining();
        let time_start = contents_end - contents.remaining() - raw.len();
        Ok::<_, crate::DecodeError>((request_id, raw, time_start, contents))
    })();
    let (request_id, raw, time_start, rest) = header.ok()?;
    Some(PrepareHeader {
        request_id,
        raw,
        time_start,
        rest,
        after: r,
    })
}

/// Whether a Prepare frame the codec decoded carried its expiry in legacy's form; `parsed` is the time the codec
/// read. The codec also takes `YYYYMMDDHHMMSSZ` and one or two fraction digits, which legacy refuses; anything
/// else legacy refuses or rolls over the codec refuses too (see [`check_prepare_time`]). So the field is
/// legacy's iff it is the canonical 19-character text of `parsed`: a comparison, not a second parse.
pub(crate) fn decoded_expiry_is_legacy(bytes: &Bytes, parsed: Timestamp) -> bool {
    prepare_header(bytes).is_some_and(|h| h.raw == parsed.to_generalized_time())
}

/// Classifies one incoming frame the codec refused (cheap for anything but a Prepare).
pub(crate) fn check_prepare_time(bytes: &Bytes) -> PrepareTime {
    let Some(PrepareHeader {
        request_id,
        raw,
        time_start,
        mut rest,
        after: r,
    }) = prepare_header(bytes)
    else {
        return PrepareTime::Keep;
    };
    match legacy_expiry_millis(raw).and_then(Timestamp::from_unix_millis) {
        None => {
            // Only a frame that is otherwise well-formed gets the RangeError; a broken one is refused by the
            // codec and gets nothing, as in legacy. (Decoded only on this rare path, so valid Prepares pay for
            // one protocol-data decode, not two.)
            if ProtocolData::decode(&mut rest).is_ok() && r.is_empty() {
                PrepareTime::Refuse { request_id }
            } else {
                PrepareTime::Keep
            }
        }
        Some(t) => {
            let canonical = t.to_generalized_time();
            if raw == canonical {
                PrepareTime::Keep
            } else {
                let mut out = BytesMut::from(&bytes[..]);
                out[time_start..time_start + GENERALIZED_TIME_LEN].copy_from_slice(&canonical);
                PrepareTime::Rewritten(out.freeze())
            }
        }
    }
}

/// Legacy's reply to a Prepare with an invalid expiry: `Error F00 RangeError {"message":"Invalid time value"}`.
pub(crate) fn range_error(request_id: u32, now: Timestamp) -> Bytes {
    Frame::new(
        request_id,
        Packet::Error(BtpError {
            code: *b"F00",
            name: "RangeError".to_owned(),
            triggered_at: now,
            data: INVALID_TIME_DATA.to_owned(),
            protocol_data: ProtocolData::new(),
        }),
    )
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Prepare;
    use crate::BtpVersion;

    fn iso(ms: i64) -> String {
        let p = Timestamp::from_unix_millis(ms)
            .map(Timestamp::to_parts)
            .expect("test times are in range");
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second, p.millisecond
        )
    }

    #[test]
    fn legacy_time_rules() {
        // Each case was run through the real plugin (see the module docs).
        let ok = |s: &str| legacy_expiry_millis(s.as_bytes()).map(iso);
        assert_eq!(
            ok("20300102030405.678Z").as_deref(),
            Some("2030-01-02T03:04:05.678Z")
        );
        assert_eq!(
            ok("20300230030405.678Z").as_deref(),
            Some("2030-03-02T03:04:05.678Z")
        );
        assert_eq!(
            ok("20300231030405.678Z").as_deref(),
            Some("2030-03-03T03:04:05.678Z")
        );
        assert_eq!(
            ok("20300102240000.000Z").as_deref(),
            Some("2030-01-03T00:00:00.000Z")
        );
        for bad in [
            "20300102030405Z",
            "20300102030405.6Z",
            "20300102030405.678",
            "20301302030405.678Z",
            "20300132030405.678Z",
            "20300100030405.678Z",
            "20300102240000.001Z",
            "20300102236000.000Z",
            "20300102030460.000Z",
            "2030010203040a.678Z",
            "2030-01-02T03:04:05.678Z",
            "garbage",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    fn prepare_with_time(raw: &[u8]) -> Bytes {
        // A valid Prepare, then its 19-byte time swapped for `raw` (re-encoding the lengths by hand).
        let frame = Frame::new(
            7,
            Packet::Prepare(Prepare {
                transfer_id: [1; 16],
                amount: 5,
                execution_condition: [2; 32],
                expires_at: Timestamp::from_unix_millis(0).expect("epoch"),
                protocol_data: ProtocolData::new(),
            }),
        )
        .to_bytes();
        let time_at = 1 + 4 + 1 + PREPARE_FIELDS_BEFORE_EXPIRY_BYTES;
        let mut contents = frame[time_at - PREPARE_FIELDS_BEFORE_EXPIRY_BYTES..time_at].to_vec();
        contents.push(u8::try_from(raw.len()).expect("short test time"));
        contents.extend_from_slice(raw);
        contents.extend_from_slice(&frame[time_at + 1 + GENERALIZED_TIME_LEN..]);
        let mut out = frame[..5].to_vec();
        out.push(u8::try_from(contents.len()).expect("short test frame"));
        out.extend_from_slice(&contents);
        Bytes::from(out)
    }

    #[test]
    fn classifies_prepares() {
        assert_eq!(
            check_prepare_time(&prepare_with_time(b"20300102030405.678Z")),
            PrepareTime::Keep
        );
        assert_eq!(
            check_prepare_time(&prepare_with_time(b"20300102030405Z")),
            PrepareTime::Refuse { request_id: 7 }
        );
        assert_eq!(
            check_prepare_time(&prepare_with_time(b"")),
            PrepareTime::Refuse { request_id: 7 }
        );
        // Rolled over: rewritten, and the codec then reads the canonical time.
        let PrepareTime::Rewritten(b) =
            check_prepare_time(&prepare_with_time(b"20300230030405.678Z"))
        else {
            panic!("expected a rewrite");
        };
        let Ok(Frame {
            packet: Packet::Prepare(p),
            ..
        }) = Frame::decode(&b, BtpVersion::Btp1)
        else {
            panic!("rewritten frame must decode");
        };
        assert_eq!(iso(p.expires_at.unix_millis()), "2030-03-02T03:04:05.678Z");
        // A broken remainder gets nothing (the codec refuses the frame), like legacy.
        let mut broken = prepare_with_time(b"garbage").to_vec();
        broken.truncate(broken.len() - 1);
        let n = broken.len();
        broken[5] = u8::try_from(n - 6).expect("short");
        assert_eq!(check_prepare_time(&Bytes::from(broken)), PrepareTime::Keep);
        // Other types are not looked at.
        let msg = Frame::new(1, Packet::Message(ProtocolData::new())).to_bytes();
        assert_eq!(check_prepare_time(&msg), PrepareTime::Keep);
    }

    #[test]
    fn decoded_prepares_are_checked_against_the_codecs_time() {
        let expiry_ok = |raw: &[u8]| {
            let bytes = prepare_with_time(raw);
            match Frame::decode(&bytes, BtpVersion::Btp1) {
                Ok(Frame {
                    packet: Packet::Prepare(p),
                    ..
                }) => Some(decoded_expiry_is_legacy(&bytes, p.expires_at)),
                _ => None,
            }
        };
        assert_eq!(expiry_ok(b"20300102030405.678Z"), Some(true));
        // The codec reads these; legacy does not.
        assert_eq!(expiry_ok(b"20300102030405Z"), Some(false));
        assert_eq!(expiry_ok(b"20300102030405.6Z"), Some(false));
        assert_eq!(expiry_ok(b"20300102030405.67Z"), Some(false));
        // The codec refuses these (and `check_prepare_time` decides).
        assert_eq!(expiry_ok(b"20300230030405.678Z"), None);
        assert_eq!(expiry_ok(b"garbage"), None);
    }

    #[test]
    fn range_error_bytes() {
        let t = Timestamp::from_unix_millis(1_795_275_025_813).expect("in range");
        let b = range_error(0x0d, t);
        let mut expected = vec![2, 0, 0, 0, 0x0d];
        let mut contents = b"F00".to_vec();
        contents.push(10);
        contents.extend_from_slice(b"RangeError");
        contents.push(19);
        contents.extend_from_slice(&t.to_generalized_time());
        contents.push(u8::try_from(INVALID_TIME_DATA.len()).expect("short"));
        contents.extend_from_slice(INVALID_TIME_DATA.as_bytes());
        contents.extend_from_slice(&[1, 0]);
        expected.push(u8::try_from(contents.len()).expect("short"));
        expected.extend_from_slice(&contents);
        assert_eq!(&b[..], &expected[..]);
    }
}
