//! Key layout and compact binary encodings of the store's records (no JSON on the hot path).
//!
//! Keys (default column family unless noted):
//!
//! | key | value |
//! |--|--|
//! | `meta/format` | the schema version, [`SCHEMA_VERSION`](super::schema::SCHEMA_VERSION) (1 byte, see [`schema`](super::schema)) |
//! | `tl/` ns key `s` | [`Sums`]: four u128 little-endian (64 bytes) |
//! | `tl/` ns key `x` / `n` | maximum / minimum override: [`Limit`] (17 or 1 bytes) |
//! | `tl/` ns key `t` id | a finished (fulfilled or cancelled) [`TransferRecord`] |
//! | `tl/` ns key `p` id, in [`super::db::PENDING_CF`] | a prepared [`TransferRecord`] |
//! | `tl/` ns key `i` | digest of the legacy rows imported into this log (see `legacy_import`) |
//! | `mvt/` ns key | a [`MaxValue`] |
//!
//! `ns` (the namespace, e.g. a peer or account ID) and `key` (legacy alphabet) are each written as a u16
//! big-endian length and their bytes, so no two logs share a prefix. `id` is the raw 16-byte transfer ID.

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{
    Direction, Limit, MaxValue, StoreError, Sums, Transfer, TransferId, TransferRecord,
    TransferState,
};
use num_bigint::BigUint;

/// Longest namespace or key accepted, in bytes.
pub const NAME_MAX_BYTES: usize = 1024;

/// Version byte at the start of every encoded [`TransferRecord`]; changing the record's form raises it and the
/// schema version ([`schema`](super::schema)).
const RECORD_VERSION: u8 = 1;

/// Suffix tags after a log's prefix.
pub mod tag {
    /// Sums.
    pub const SUMS: u8 = b's';
    /// Maximum override.
    pub const MAXIMUM: u8 = b'x';
    /// Minimum override.
    pub const MINIMUM: u8 = b'n';
    /// Finished transfer record.
    pub const FINISHED: u8 = b't';
    /// Prepared transfer record (pending column family).
    pub const PREPARED: u8 = b'p';
    /// Noted fulfillment of a prepared transfer (pending column family): 32-byte preimage, then `ilp`.
    pub const FULFILLING: u8 = b'f';
    /// Legacy import marker.
    pub const IMPORTED: u8 = b'i';
}

fn push_name(out: &mut Vec<u8>, name: &str) -> Result<(), StoreError> {
    let len = u16::try_from(name.len())
        .ok()
        .filter(|_| name.len() <= NAME_MAX_BYTES)
        .ok_or_else(|| StoreError::InvalidKey(name.chars().take(64).collect()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// The prefix of every key of the transfer log `key` in namespace `ns`.
pub fn log_prefix(ns: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut out = b"tl/".to_vec();
    push_name(&mut out, ns)?;
    push_name(&mut out, key)?;
    Ok(out)
}

/// The key of the max-value tracker `key` in namespace `ns`.
pub fn mvt_key(ns: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut out = b"mvt/".to_vec();
    push_name(&mut out, ns)?;
    push_name(&mut out, key)?;
    Ok(out)
}

/// `prefix` + `tag` (+ `id`).
pub fn sub_key(prefix: &[u8], tag: u8, id: Option<&TransferId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 17);
    out.extend_from_slice(prefix);
    out.push(tag);
    if let Some(id) = id {
        out.extend_from_slice(&id.0);
    }
    out
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

/// Reads fields off a byte slice; every short read is a [`StoreError::Corrupt`] naming `key`.
struct Reader<'a> {
    bytes: &'a [u8],
    key: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(corrupt(self.key, "truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn finish(self) -> Result<(), StoreError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.key, "trailing bytes"))
        }
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Overflow)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Encodes a record: version, direction, state, id, amount, condition, expiry, ilp, custom, state data.
pub fn encode_record(record: &TransferRecord) -> Result<Vec<u8>, StoreError> {
    let t = &record.transfer;
    let mut out = Vec::with_capacity(100 + t.ilp.len());
    out.push(RECORD_VERSION);
    out.push(match record.direction {
        Direction::Incoming => 0,
        Direction::Outgoing => 1,
    });
    out.push(match record.state {
        TransferState::Prepared => 0,
        TransferState::Fulfilled { .. } => 1,
        TransferState::Cancelled { .. } => 2,
    });
    out.extend_from_slice(&t.id.0);
    out.extend_from_slice(&t.amount.0.to_le_bytes());
    out.extend_from_slice(&t.execution_condition);
    out.extend_from_slice(&t.expires_at_ms.to_le_bytes());
    push_bytes(&mut out, &t.ilp)?;
    match &t.custom {
        None => out.push(0),
        Some(custom) => {
            out.push(1);
            let json = serde_json::to_vec(custom).map_err(|e| StoreError::Io(e.to_string()))?;
            push_bytes(&mut out, &json)?;
        }
    }
    match &record.state {
        TransferState::Prepared => {}
        TransferState::Fulfilled { fulfillment } => out.extend_from_slice(fulfillment),
        TransferState::Cancelled { reason } => push_bytes(&mut out, reason.as_bytes())?,
    }
    Ok(out)
}

/// Byte offset of `expires_at_ms` in an encoded record: after the version, direction and state bytes, the
/// 16-byte ID, the 8-byte amount and the 32-byte condition.
const RECORD_EXPIRY_OFFSET: usize = 3 + 16 + 8 + 32;

/// The expiry of the transfer in `value`, when `key` is a finished transfer's record (`tl/` ns key `t` id) and
/// `value` one of [`encode_record`]'s of this version; `None` for any other key or value. Reads the 8 bytes it
/// needs and decodes nothing else: RocksDB calls it for every record its compactions rewrite.
pub fn finished_record_expiry(key: &[u8], value: &[u8]) -> Option<i64> {
    fn skip_name(bytes: &[u8]) -> Option<&[u8]> {
        let (len, rest) = bytes.split_at_checked(2)?;
        rest.get(usize::from(u16::from_be_bytes([len[0], len[1]]))..)
    }
    let rest = skip_name(skip_name(key.strip_prefix(b"tl/")?)?)?;
    let (&tag, id) = rest.split_first()?;
    if tag != tag::FINISHED || id.len() != 16 || value.first() != Some(&RECORD_VERSION) {
        return None;
    }
    let expiry = value.get(RECORD_EXPIRY_OFFSET..RECORD_EXPIRY_OFFSET + 8)?;
    Some(i64::from_le_bytes(expiry.try_into().ok()?))
}

/// Decodes [`encode_record`]'s output; `key` names the record in errors.
pub fn decode_record(key: &[u8], bytes: &[u8]) -> Result<TransferRecord, StoreError> {
    let mut r = Reader { bytes, key };
    if r.u8()? != RECORD_VERSION {
        return Err(corrupt(key, "unknown record version"));
    }
    let direction = match r.u8()? {
        0 => Direction::Incoming,
        1 => Direction::Outgoing,
        _ => return Err(corrupt(key, "bad direction")),
    };
    let state_tag = r.u8()?;
    let id = TransferId(r.array()?);
    let amount = LedgerAmount(u64::from_le_bytes(r.array()?));
    let execution_condition = r.array()?;
    let expires_at_ms = i64::from_le_bytes(r.array()?);
    let ilp = r.bytes()?.to_vec();
    let custom = match r.u8()? {
        0 => None,
        1 => Some(
            serde_json::from_slice(r.bytes()?).map_err(|e| corrupt(key, format!("custom: {e}")))?,
        ),
        _ => return Err(corrupt(key, "bad custom flag")),
    };
    let state = match state_tag {
        0 => TransferState::Prepared,
        1 => TransferState::Fulfilled {
            fulfillment: r.array()?,
        },
        2 => TransferState::Cancelled {
            reason: String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| corrupt(key, "reason is not UTF-8"))?,
        },
        _ => return Err(corrupt(key, "bad state")),
    };
    r.finish()?;
    Ok(TransferRecord {
        transfer: Transfer {
            id,
            amount,
            execution_condition,
            expires_at_ms,
            ilp,
            custom,
        },
        direction,
        state,
    })
}

/// Encodes the four sums (64 bytes).
pub fn encode_sums(sums: &Sums) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, v) in [
        sums.incoming_fulfilled,
        sums.incoming_fulfilled_and_prepared,
        sums.outgoing_fulfilled,
        sums.outgoing_fulfilled_and_prepared,
    ]
    .iter()
    .enumerate()
    {
        out[i * 16..(i + 1) * 16].copy_from_slice(&v.0.to_le_bytes());
    }
    out
}

/// Decodes [`encode_sums`]' output.
pub fn decode_sums(key: &[u8], bytes: &[u8]) -> Result<Sums, StoreError> {
    let mut r = Reader { bytes, key };
    let mut v = [LedgerSum::ZERO; 4];
    for slot in &mut v {
        *slot = LedgerSum(u128::from_le_bytes(r.array()?));
        if *slot > LedgerSum::MAX {
            return Err(corrupt(key, "sum above i128::MAX"));
        }
    }
    r.finish()?;
    Ok(Sums {
        incoming_fulfilled: v[0],
        incoming_fulfilled_and_prepared: v[1],
        outgoing_fulfilled: v[2],
        outgoing_fulfilled_and_prepared: v[3],
    })
}

/// Encodes a limit: `0` + i128 LE, or `1` for unbounded.
pub fn encode_limit(limit: Limit) -> Vec<u8> {
    match limit {
        Limit::Finite(v) => {
            let mut out = vec![0u8];
            out.extend_from_slice(&v.0.to_le_bytes());
            out
        }
        Limit::Unbounded => vec![1u8],
    }
}

/// Decodes [`encode_limit`]'s output.
pub fn decode_limit(key: &[u8], bytes: &[u8]) -> Result<Limit, StoreError> {
    let mut r = Reader { bytes, key };
    let limit = match r.u8()? {
        0 => Limit::Finite(LedgerBalance(i128::from_le_bytes(r.array()?))),
        1 => Limit::Unbounded,
        _ => return Err(corrupt(key, "bad limit tag")),
    };
    r.finish()?;
    Ok(limit)
}

/// Encodes a max-value entry: value (big-endian magnitude, length-prefixed), then the data as JSON.
pub fn encode_max_value(entry: &MaxValue) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    push_bytes(&mut out, &entry.value.to_bytes_be())?;
    let json = serde_json::to_vec(&entry.data).map_err(|e| StoreError::Io(e.to_string()))?;
    out.extend_from_slice(&json);
    Ok(out)
}

/// Decodes [`encode_max_value`]'s output.
pub fn decode_max_value(key: &[u8], bytes: &[u8]) -> Result<MaxValue, StoreError> {
    let mut r = Reader { bytes, key };
    let value = BigUint::from_bytes_be(r.bytes()?);
    let data = serde_json::from_slice(r.bytes)
        .map_err(|e| corrupt(key, format!("max value data: {e}")))?;
    Ok(MaxValue { value, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: TransferState, custom: Option<serde_json::Value>) -> TransferRecord {
        TransferRecord {
            transfer: Transfer {
                id: TransferId([7; 16]),
                amount: LedgerAmount(u64::MAX),
                execution_condition: [9; 32],
                expires_at_ms: i64::MAX,
                ilp: vec![1, 2, 3],
                custom,
            },
            direction: Direction::Outgoing,
            state,
        }
    }

    #[test]
    fn records_round_trip_in_every_state() {
        for r in [
            record(TransferState::Prepared, None),
            record(
                TransferState::Fulfilled {
                    fulfillment: [5; 32],
                },
                Some(serde_json::json!({"a": [1, 2.5, "x", null], "b": {"c": -3}})),
            ),
            record(
                TransferState::Cancelled {
                    reason: "expired ✓".to_owned(),
                },
                Some(serde_json::json!("s")),
            ),
        ] {
            let bytes = encode_record(&r).expect("encode");
            assert_eq!(decode_record(b"k", &bytes), Ok(r));
            assert!(decode_record(b"k", &bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn sums_limits_and_max_values_round_trip() {
        let sums = Sums {
            incoming_fulfilled: LedgerSum(1),
            incoming_fulfilled_and_prepared: LedgerSum::MAX,
            outgoing_fulfilled: LedgerSum(3),
            outgoing_fulfilled_and_prepared: LedgerSum(4),
        };
        assert_eq!(decode_sums(b"k", &encode_sums(&sums)), Ok(sums));
        let mut too_big = encode_sums(&sums);
        too_big[31] = 0xff;
        assert!(decode_sums(b"k", &too_big).is_err());
        for l in [
            Limit::Finite(LedgerBalance(i128::MIN)),
            Limit::Finite(LedgerBalance(-5)),
            Limit::Unbounded,
        ] {
            assert_eq!(decode_limit(b"k", &encode_limit(l)), Ok(l));
        }
        let entry = MaxValue {
            value: BigUint::parse_bytes(b"123456789012345678901234567890", 10).expect("digits"),
            data: serde_json::json!({"claim": "abc"}),
        };
        let bytes = encode_max_value(&entry).expect("encode");
        assert_eq!(decode_max_value(b"k", &bytes), Ok(entry));
    }

    #[test]
    fn the_expiry_of_a_finished_record_is_read_from_its_key_and_value() {
        let transfer = Transfer {
            id: TransferId([7; 16]),
            amount: LedgerAmount(5),
            execution_condition: [1; 32],
            expires_at_ms: 1_765_000_000_123,
            ilp: vec![1, 2, 3],
            custom: Some(serde_json::json!({"a": 1})),
        };
        let record = TransferRecord {
            transfer: transfer.clone(),
            direction: Direction::Outgoing,
            state: TransferState::Cancelled {
                reason: "expired".to_owned(),
            },
        };
        let value = encode_record(&record).expect("encode");
        let prefix = log_prefix("peer-t", "tt").expect("prefix");
        let finished = sub_key(&prefix, tag::FINISHED, Some(&transfer.id));
        assert_eq!(
            finished_record_expiry(&finished, &value),
            Some(1_765_000_000_123)
        );
        // Sums, a prepared record's key, another family's key, a short value: not a finished record.
        assert_eq!(
            finished_record_expiry(&sub_key(&prefix, tag::SUMS, None), &value),
            None
        );
        assert_eq!(
            finished_record_expiry(&sub_key(&prefix, tag::PREPARED, Some(&transfer.id)), &value),
            None
        );
        let mvt = mvt_key("peer-t", "incoming_claim").expect("mvt");
        assert_eq!(finished_record_expiry(&mvt, &value), None);
        assert_eq!(finished_record_expiry(&finished, &value[..40]), None);
        assert_eq!(
            finished_record_expiry(&finished[..finished.len() - 1], &value),
            None
        );
    }

    #[test]
    fn prefixes_of_different_logs_never_nest() {
        let a = log_prefix("ns", "a").expect("valid");
        let ab = log_prefix("ns", "ab").expect("valid");
        let other_ns = log_prefix("nsa", "").expect("valid");
        assert!(!ab.starts_with(&a));
        assert!(!other_ns.starts_with(&a) && !a.starts_with(&other_ns));
        assert!(log_prefix("ns", &"x".repeat(NAME_MAX_BYTES + 1)).is_err());
    }
}
