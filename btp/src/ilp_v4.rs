//! ILPv4 packets (RFC 27): Prepare (12), Fulfill (13), Reject (14).
//!
//! **Envelope:** `type u8 | contents var-oct`.
//! * Prepare: `amount` u64 · `expiresAt` 17 ASCII digits `YYYYMMDDHHmmSSfff` (UTC) · `executionCondition` 32 ·
//!   `destination` var-oct address · `data` var-oct (≤ 32 767 bytes).
//! * Fulfill: `fulfillment` 32 · `data` var-oct (≤ 32 767).
//! * Reject: `code` 3 ASCII · `triggeredBy` var-oct address (may be empty) · `message` var-oct UTF-8 (≤ 8 191)
//!   · `data` var-oct (≤ 32 767).
//!
//! Addresses use the characters `[A-Za-z0-9._~-]` and are 1 to 1023 bytes long ([`Address`]); the scheme
//! (`g.`, `test.`, `peer.` …) is not checked here.
//!
//! Trailing bytes follow the crate-wide policy (see [`crate::packet`]): refused after the envelope, ignored inside
//! `contents` after the last field. `data` fields are zero-copy slices of the input.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::oer::{self, Reader, MAX_FRAME_BYTES};
use crate::time::{Timestamp, ILP_V4_TIME_LEN};

/// Largest `data` field of any ILPv4 packet, in bytes.
pub const MAX_DATA_BYTES: usize = 32_767;
/// Largest Reject `message`, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8_191;
/// Longest ILP address, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 1_023;

/// Type byte of a Prepare.
pub const TYPE_PREPARE: u8 = 12;
/// Type byte of a Fulfill.
pub const TYPE_FULFILL: u8 = 13;
/// Type byte of a Reject.
pub const TYPE_REJECT: u8 = 14;

/// An ILP address: 1 to 1023 characters from `[A-Za-z0-9._~-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(Bytes);

impl Address {
    /// Checks `raw` and wraps it without copying.
    pub fn from_bytes(raw: Bytes, field: &'static str) -> Result<Address, DecodeError> {
        if raw.is_empty() {
            return Err(DecodeError::InvalidAddress {
                field,
                reason: "empty",
            });
        }
        if raw.len() > MAX_ADDRESS_BYTES {
            return Err(DecodeError::InvalidAddress {
                field,
                reason: "longer than 1023 bytes",
            });
        }
        if !raw
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        {
            return Err(DecodeError::InvalidAddress {
                field,
                reason: "character outside [A-Za-z0-9._~-]",
            });
        }
        Ok(Address(raw))
    }

    /// Wraps a literal the caller knows to be valid (the `peer.*` names), without a fallible check at run time.
    /// Debug builds still check it.
    pub(crate) fn from_static_trusted(address: &'static str) -> Address {
        debug_assert!(
            Address::from_bytes(Bytes::from_static(address.as_bytes()), "ilp.address").is_ok(),
            "not a valid ILP address: {address:?}"
        );
        Address(Bytes::from_static(address.as_bytes()))
    }

    /// Parses an address from a string.
    pub fn new(address: &str) -> Result<Address, DecodeError> {
        Address::from_bytes(Bytes::copy_from_slice(address.as_bytes()), "ilp.address")
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        // Constructors allow only ASCII characters, which are valid UTF-8.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The address bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::str::FromStr for Address {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::new(s)
    }
}

impl core::fmt::Debug for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ILPv4 Prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Amount in the sender's units.
    pub amount: u64,
    /// Expiry.
    pub expires_at: Timestamp,
    /// SHA-256 condition.
    pub execution_condition: [u8; 32],
    /// Destination address.
    pub destination: Address,
    /// End-to-end data (≤ [`MAX_DATA_BYTES`]; the encoder does not check).
    pub data: Bytes,
}

/// ILPv4 Fulfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfill {
    /// Preimage of the condition.
    pub fulfillment: [u8; 32],
    /// End-to-end data (≤ [`MAX_DATA_BYTES`]; the encoder does not check).
    pub data: Bytes,
}

/// ILPv4 Reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Three ASCII characters, for example `F02`, `T00`, `R00`.
    pub code: [u8; 3],
    /// Who produced the Reject; `None` is encoded as an empty string.
    pub triggered_by: Option<Address>,
    /// Human-readable message (≤ [`MAX_MESSAGE_BYTES`]; the encoder does not check).
    pub message: String,
    /// Machine-readable data (≤ [`MAX_DATA_BYTES`]; the encoder does not check).
    pub data: Bytes,
}

impl Reject {
    /// The code as a string.
    pub fn code_str(&self) -> &str {
        core::str::from_utf8(&self.code).unwrap_or_default()
    }
}

/// An ILPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlpV4Packet {
    /// 12
    Prepare(Prepare),
    /// 13
    Fulfill(Fulfill),
    /// 14
    Reject(Reject),
}

impl IlpV4Packet {
    /// The type byte.
    pub fn type_id(&self) -> u8 {
        match self {
            IlpV4Packet::Prepare(_) => TYPE_PREPARE,
            IlpV4Packet::Fulfill(_) => TYPE_FULFILL,
            IlpV4Packet::Reject(_) => TYPE_REJECT,
        }
    }

    fn contents_len(&self) -> usize {
        match self {
            IlpV4Packet::Prepare(p) => {
                8 + ILP_V4_TIME_LEN
                    + 32
                    + oer::var_octet_string_len(p.destination.as_bytes().len())
                    + oer::var_octet_string_len(p.data.len())
            }
            IlpV4Packet::Fulfill(f) => 32 + oer::var_octet_string_len(f.data.len()),
            IlpV4Packet::Reject(r) => {
                3 + oer::var_octet_string_len(
                    r.triggered_by.as_ref().map_or(0, |a| a.as_bytes().len()),
                ) + oer::var_octet_string_len(r.message.len())
                    + oer::var_octet_string_len(r.data.len())
            }
        }
    }

    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + oer::var_octet_string_len(self.contents_len())
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.type_id());
        oer::write_length_prefix(buf, self.contents_len());
        match self {
            IlpV4Packet::Prepare(p) => {
                buf.put_u64(p.amount);
                buf.put_slice(&p.expires_at.to_ilp_v4());
                buf.put_slice(&p.execution_condition);
                oer::write_var_octet_string(buf, p.destination.as_bytes());
                oer::write_var_octet_string(buf, &p.data);
            }
            IlpV4Packet::Fulfill(f) => {
                buf.put_slice(&f.fulfillment);
                oer::write_var_octet_string(buf, &f.data);
            }
            IlpV4Packet::Reject(r) => {
                buf.put_slice(&r.code);
                oer::write_var_octet_string(
                    buf,
                    r.triggered_by.as_ref().map_or(&[][..], Address::as_bytes),
                );
                oer::write_var_octet_string(buf, r.message.as_bytes());
                oer::write_var_octet_string(buf, &r.data);
            }
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one packet.
    pub fn decode(bytes: &Bytes) -> Result<IlpV4Packet, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge {
                field: "ilp.packet",
                actual: bytes.len() as u64,
                max: MAX_FRAME_BYTES as u64,
            });
        }
        let mut outer = Reader::new(bytes);
        let type_id = outer.read_u8("ilp.type")?;
        if !matches!(type_id, TYPE_PREPARE..=TYPE_REJECT) {
            return Err(DecodeError::UnknownType {
                field: "ilp.type",
                type_id,
            });
        }
        let mut r = outer.read_var_octet_reader("ilp.contents")?;
        outer.finish("ilp.packet")?;
        Ok(match type_id {
            TYPE_PREPARE => {
                let amount = r.read_u64("ilp.prepare.amount")?;
                let expires_at = Timestamp::parse_ilp_v4(
                    &r.read_array::<ILP_V4_TIME_LEN>("ilp.prepare.expiresAt")?,
                    "ilp.prepare.expiresAt",
                )?;
                let execution_condition = r.read_array("ilp.prepare.executionCondition")?;
                let destination = Address::from_bytes(
                    r.read_var_octet_string("ilp.prepare.destination")?,
                    "ilp.prepare.destination",
                )?;
                let data = r.read_var_octet_string_max(MAX_DATA_BYTES, "ilp.prepare.data")?;
                IlpV4Packet::Prepare(Prepare {
                    amount,
                    expires_at,
                    execution_condition,
                    destination,
                    data,
                })
            }
            TYPE_FULFILL => IlpV4Packet::Fulfill(Fulfill {
                fulfillment: r.read_array("ilp.fulfill.fulfillment")?,
                data: r.read_var_octet_string_max(MAX_DATA_BYTES, "ilp.fulfill.data")?,
            }),
            _ => {
                let code = r.read_array::<3>("ilp.reject.code")?;
                oer::ascii_str(&code, "ilp.reject.code")?;
                let triggered_by = r.read_var_octet_string("ilp.reject.triggeredBy")?;
                let triggered_by = if triggered_by.is_empty() {
                    None
                } else {
                    Some(Address::from_bytes(triggered_by, "ilp.reject.triggeredBy")?)
                };
                let message = r
                    .read_utf8_str_max(MAX_MESSAGE_BYTES, "ilp.reject.message")?
                    .to_owned();
                let data = r.read_var_octet_string_max(MAX_DATA_BYTES, "ilp.reject.data")?;
                IlpV4Packet::Reject(Reject {
                    code,
                    triggered_by,
                    message,
                    data,
                })
            }
        })
    }
}

impl From<Prepare> for IlpV4Packet {
    fn from(p: Prepare) -> Self {
        IlpV4Packet::Prepare(p)
    }
}

impl From<Fulfill> for IlpV4Packet {
    fn from(f: Fulfill) -> Self {
        IlpV4Packet::Fulfill(f)
    }
}

impl From<Reject> for IlpV4Packet {
    fn from(r: Reject) -> Self {
        IlpV4Packet::Reject(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_rules() {
        assert!(Address::new(
            "g.us-fed.ach.0.acmebank.swx0a0.acmecorp.sales.199.~ipr.cdfa5e16-e759"
        )
        .is_ok());
        assert!(Address::new("peer.settle").is_ok());
        assert!(Address::new("").is_err());
        assert!(Address::new("g.bob space").is_err());
        assert!(Address::new("g.bób").is_err());
        assert!(Address::new(&"a".repeat(1023)).is_ok());
        assert!(Address::new(&"a".repeat(1024)).is_err());
    }
}
