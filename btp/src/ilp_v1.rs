//! ILP v1 packets, as carried in the `ilp` entry of BTP/1.0 frames by the legacy framework (ilp-packet 1.x).
//!
//! **Envelope:** `type u8 | body var-oct`; every body ends with an extensions byte `00`.
//!
//! | type | packet | body |
//! |--|--|--|
//! | 1 | Payment | `amount` u64 · `account` var-oct ASCII · `data` var-oct |
//! | 2 | ILQP liquidity request | `destinationAccount` · `destinationHoldDuration` u32 |
//! | 3 | ILQP liquidity response | VarUInt point count · points (two u64 each) · `appliesToPrefix` · `sourceHoldDuration` u32 · `expiresAt` GeneralizedTime |
//! | 4 | ILQP by-source request | `destinationAccount` · `sourceAmount` u64 · `destinationHoldDuration` u32 |
//! | 5 | ILQP by-source response | `destinationAmount` u64 · `sourceHoldDuration` u32 |
//! | 6 | ILQP by-destination request | `destinationAccount` · `destinationAmount` u64 · `destinationHoldDuration` u32 |
//! | 7 | ILQP by-destination response | `sourceAmount` u64 · `sourceHoldDuration` u32 |
//! | 8 | Error | `code` 3 ASCII · `name` · `triggeredBy` · `forwardedBy` (VarUInt count, then addresses) · `triggeredAt` GeneralizedTime · `data` |
//!
//! All strings are var-oct ASCII. The encoder always writes the `00` extensions byte; the decoder, like
//! ilp-packet 1.x, ignores whatever follows the last field inside the body (including a missing or non-zero
//! extensions byte). Bytes after the envelope are refused, as everywhere in this crate.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::oer::{self, Reader, MAX_FRAME_BYTES};
use crate::time::{Timestamp, GENERALIZED_TIME_LEN};

/// Payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Amount to deliver, in the destination ledger's units.
    pub amount: u64,
    /// Destination ILP v1 address.
    pub account: String,
    /// End-to-end data (the legacy JavaScript API shows it as base64url).
    pub data: Bytes,
}

/// ILQP liquidity request (type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquidityRequest {
    /// Destination address.
    pub destination_account: String,
    /// Hold duration at the destination, in milliseconds.
    pub destination_hold_duration: u32,
}

/// One point of a liquidity curve: `x` source amount, `y` destination amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiquidityPoint {
    /// Source amount.
    pub x: u64,
    /// Destination amount.
    pub y: u64,
}

/// ILQP liquidity response (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquidityResponse {
    /// The curve's points in wire order.
    pub liquidity_curve: Vec<LiquidityPoint>,
    /// Prefix the curve applies to.
    pub applies_to_prefix: String,
    /// Hold duration at the source, in milliseconds.
    pub source_hold_duration: u32,
    /// When the curve expires.
    pub expires_at: Timestamp,
}

/// ILQP quote by source amount, request (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BySourceRequest {
    /// Destination address.
    pub destination_account: String,
    /// Amount to send.
    pub source_amount: u64,
    /// Hold duration at the destination, in milliseconds.
    pub destination_hold_duration: u32,
}

/// ILQP quote by source amount, response (type 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BySourceResponse {
    /// Amount that would arrive.
    pub destination_amount: u64,
    /// Hold duration at the source, in milliseconds.
    pub source_hold_duration: u32,
}

/// ILQP quote by destination amount, request (type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByDestinationRequest {
    /// Destination address.
    pub destination_account: String,
    /// Amount to deliver.
    pub destination_amount: u64,
    /// Hold duration at the destination, in milliseconds.
    pub destination_hold_duration: u32,
}

/// ILQP quote by destination amount, response (type 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByDestinationResponse {
    /// Amount that would have to be sent.
    pub source_amount: u64,
    /// Hold duration at the source, in milliseconds.
    pub source_hold_duration: u32,
}

/// ILP v1 Error (type 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IlpV1Error {
    /// Three ASCII characters, for example `R00`.
    pub code: [u8; 3],
    /// Error name, for example `Transfer Timed Out`.
    pub name: String,
    /// Address of the node that produced the error.
    pub triggered_by: String,
    /// Addresses of the nodes that forwarded it, in order.
    pub forwarded_by: Vec<String>,
    /// When the error happened.
    pub triggered_at: Timestamp,
    /// Details (the legacy framework sends ASCII, often JSON).
    pub data: Bytes,
}

impl IlpV1Error {
    /// The code as a string.
    pub fn code_str(&self) -> &str {
        core::str::from_utf8(&self.code).unwrap_or_default()
    }
}

/// Type bytes of ILP v1 packets.
pub mod types {
    /// Payment.
    pub const PAYMENT: u8 = 1;
    /// ILQP liquidity request.
    pub const LIQUIDITY_REQUEST: u8 = 2;
    /// ILQP liquidity response.
    pub const LIQUIDITY_RESPONSE: u8 = 3;
    /// ILQP by-source request.
    pub const BY_SOURCE_REQUEST: u8 = 4;
    /// ILQP by-source response.
    pub const BY_SOURCE_RESPONSE: u8 = 5;
    /// ILQP by-destination request.
    pub const BY_DESTINATION_REQUEST: u8 = 6;
    /// ILQP by-destination response.
    pub const BY_DESTINATION_RESPONSE: u8 = 7;
    /// Error.
    pub const ERROR: u8 = 8;
}

/// An ILP v1 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlpV1Packet {
    /// 1
    Payment(Payment),
    /// 2
    LiquidityRequest(LiquidityRequest),
    /// 3
    LiquidityResponse(LiquidityResponse),
    /// 4
    BySourceRequest(BySourceRequest),
    /// 5
    BySourceResponse(BySourceResponse),
    /// 6
    ByDestinationRequest(ByDestinationRequest),
    /// 7
    ByDestinationResponse(ByDestinationResponse),
    /// 8
    Error(IlpV1Error),
}

/// Size of one liquidity-curve point in bytes.
const POINT_BYTES: usize = 16;

fn str_len(s: &str) -> usize {
    oer::var_octet_string_len(s.len())
}

impl IlpV1Packet {
    /// The type byte.
    pub fn type_id(&self) -> u8 {
        match self {
            IlpV1Packet::Payment(_) => types::PAYMENT,
            IlpV1Packet::LiquidityRequest(_) => types::LIQUIDITY_REQUEST,
            IlpV1Packet::LiquidityResponse(_) => types::LIQUIDITY_RESPONSE,
            IlpV1Packet::BySourceRequest(_) => types::BY_SOURCE_REQUEST,
            IlpV1Packet::BySourceResponse(_) => types::BY_SOURCE_RESPONSE,
            IlpV1Packet::ByDestinationRequest(_) => types::BY_DESTINATION_REQUEST,
            IlpV1Packet::ByDestinationResponse(_) => types::BY_DESTINATION_RESPONSE,
            IlpV1Packet::Error(_) => types::ERROR,
        }
    }

    /// Body size, including the extensions byte.
    fn body_len(&self) -> usize {
        1 + match self {
            IlpV1Packet::Payment(p) => {
                8 + str_len(&p.account) + oer::var_octet_string_len(p.data.len())
            }
            IlpV1Packet::LiquidityRequest(q) => str_len(&q.destination_account) + 4,
            IlpV1Packet::LiquidityResponse(q) => {
                oer::var_uint_len(q.liquidity_curve.len() as u64)
                    + POINT_BYTES * q.liquidity_curve.len()
                    + str_len(&q.applies_to_prefix)
                    + 4
                    + oer::var_octet_string_len(GENERALIZED_TIME_LEN)
            }
            IlpV1Packet::BySourceRequest(q) => str_len(&q.destination_account) + 8 + 4,
            IlpV1Packet::ByDestinationRequest(q) => str_len(&q.destination_account) + 8 + 4,
            IlpV1Packet::BySourceResponse(_) | IlpV1Packet::ByDestinationResponse(_) => 8 + 4,
            IlpV1Packet::Error(e) => {
                3 + str_len(&e.name)
                    + str_len(&e.triggered_by)
                    + oer::var_uint_len(e.forwarded_by.len() as u64)
                    + e.forwarded_by.iter().map(|a| str_len(a)).sum::<usize>()
                    + oer::var_octet_string_len(GENERALIZED_TIME_LEN)
                    + oer::var_octet_string_len(e.data.len())
            }
        }
    }

    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + oer::var_octet_string_len(self.body_len())
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.type_id());
        oer::write_length_prefix(buf, self.body_len());
        match self {
            IlpV1Packet::Payment(p) => {
                buf.put_u64(p.amount);
                oer::write_var_octet_string(buf, p.account.as_bytes());
                oer::write_var_octet_string(buf, &p.data);
            }
            IlpV1Packet::LiquidityRequest(q) => {
                oer::write_var_octet_string(buf, q.destination_account.as_bytes());
                buf.put_u32(q.destination_hold_duration);
            }
            IlpV1Packet::LiquidityResponse(q) => {
                oer::write_var_uint(buf, q.liquidity_curve.len() as u64);
                for point in &q.liquidity_curve {
                    buf.put_u64(point.x);
                    buf.put_u64(point.y);
                }
                oer::write_var_octet_string(buf, q.applies_to_prefix.as_bytes());
                buf.put_u32(q.source_hold_duration);
                oer::write_var_octet_string(buf, &q.expires_at.to_generalized_time());
            }
            IlpV1Packet::BySourceRequest(q) => {
                oer::write_var_octet_string(buf, q.destination_account.as_bytes());
                buf.put_u64(q.source_amount);
                buf.put_u32(q.destination_hold_duration);
            }
            IlpV1Packet::BySourceResponse(q) => {
                buf.put_u64(q.destination_amount);
                buf.put_u32(q.source_hold_duration);
            }
            IlpV1Packet::ByDestinationRequest(q) => {
                oer::write_var_octet_string(buf, q.destination_account.as_bytes());
                buf.put_u64(q.destination_amount);
                buf.put_u32(q.destination_hold_duration);
            }
            IlpV1Packet::ByDestinationResponse(q) => {
                buf.put_u64(q.source_amount);
                buf.put_u32(q.source_hold_duration);
            }
            IlpV1Packet::Error(e) => {
                buf.put_slice(&e.code);
                oer::write_var_octet_string(buf, e.name.as_bytes());
                oer::write_var_octet_string(buf, e.triggered_by.as_bytes());
                oer::write_var_uint(buf, e.forwarded_by.len() as u64);
                for address in &e.forwarded_by {
                    oer::write_var_octet_string(buf, address.as_bytes());
                }
                oer::write_var_octet_string(buf, &e.triggered_at.to_generalized_time());
                oer::write_var_octet_string(buf, &e.data);
            }
        }
        // Extensions: none.
        buf.put_u8(0);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one packet.
    pub fn decode(bytes: &Bytes) -> Result<IlpV1Packet, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge {
                field: "ilpv1.packet",
                actual: bytes.len() as u64,
                max: MAX_FRAME_BYTES as u64,
            });
        }
        let mut outer = Reader::new(bytes);
        let type_id = outer.read_u8("ilpv1.type")?;
        if !(types::PAYMENT..=types::ERROR).contains(&type_id) {
            return Err(DecodeError::UnknownType {
                field: "ilpv1.type",
                type_id,
            });
        }
        let mut r = outer.read_var_octet_reader("ilpv1.body")?;
        outer.finish("ilpv1.packet")?;
        let ascii = |r: &mut Reader<'_>, field| r.read_ascii_str(field).map(str::to_owned);
        Ok(match type_id {
            types::PAYMENT => IlpV1Packet::Payment(Payment {
                amount: r.read_u64("ilpv1.payment.amount")?,
                account: ascii(&mut r, "ilpv1.payment.account")?,
                data: r.read_var_octet_string("ilpv1.payment.data")?,
            }),
            types::LIQUIDITY_REQUEST => IlpV1Packet::LiquidityRequest(LiquidityRequest {
                destination_account: ascii(&mut r, "ilqp.liquidityRequest.destinationAccount")?,
                destination_hold_duration: r
                    .read_u32("ilqp.liquidityRequest.destinationHoldDuration")?,
            }),
            types::LIQUIDITY_RESPONSE => {
                const FIELD: &str = "ilqp.liquidityResponse.liquidityCurve";
                let count = r.read_var_uint(FIELD)?;
                let max_points = r.remaining() / POINT_BYTES;
                if count > max_points as u64 {
                    return Err(DecodeError::Truncated {
                        field: FIELD,
                        needed: usize::try_from(count)
                            .unwrap_or(usize::MAX)
                            .saturating_mul(POINT_BYTES),
                        available: r.remaining(),
                    });
                }
                // Bounded by the bytes present (checked above).
                let mut liquidity_curve = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    liquidity_curve.push(LiquidityPoint {
                        x: r.read_u64(FIELD)?,
                        y: r.read_u64(FIELD)?,
                    });
                }
                IlpV1Packet::LiquidityResponse(LiquidityResponse {
                    liquidity_curve,
                    applies_to_prefix: ascii(&mut r, "ilqp.liquidityResponse.appliesToPrefix")?,
                    source_hold_duration: r
                        .read_u32("ilqp.liquidityResponse.sourceHoldDuration")?,
                    expires_at: Timestamp::parse_generalized_time(
                        r.read_var_octet_slice("ilqp.liquidityResponse.expiresAt")?,
                        "ilqp.liquidityResponse.expiresAt",
                    )?,
                })
            }
            types::BY_SOURCE_REQUEST => IlpV1Packet::BySourceRequest(BySourceRequest {
                destination_account: ascii(&mut r, "ilqp.bySourceRequest.destinationAccount")?,
                source_amount: r.read_u64("ilqp.bySourceRequest.sourceAmount")?,
                destination_hold_duration: r
                    .read_u32("ilqp.bySourceRequest.destinationHoldDuration")?,
            }),
            types::BY_SOURCE_RESPONSE => IlpV1Packet::BySourceResponse(BySourceResponse {
                destination_amount: r.read_u64("ilqp.bySourceResponse.destinationAmount")?,
                source_hold_duration: r.read_u32("ilqp.bySourceResponse.sourceHoldDuration")?,
            }),
            types::BY_DESTINATION_REQUEST => {
                IlpV1Packet::ByDestinationRequest(ByDestinationRequest {
                    destination_account: ascii(
                        &mut r,
                        "ilqp.byDestinationRequest.destinationAccount",
                    )?,
                    destination_amount: r
                        .read_u64("ilqp.byDestinationRequest.destinationAmount")?,
                    destination_hold_duration: r
                        .read_u32("ilqp.byDestinationRequest.destinationHoldDuration")?,
                })
            }
            types::BY_DESTINATION_RESPONSE => {
                IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
                    source_amount: r.read_u64("ilqp.byDestinationResponse.sourceAmount")?,
                    source_hold_duration: r
                        .read_u32("ilqp.byDestinationResponse.sourceHoldDuration")?,
                })
            }
            _ => {
                let code = r.read_array::<3>("ilpv1.error.code")?;
                oer::ascii_str(&code, "ilpv1.error.code")?;
                let name = ascii(&mut r, "ilpv1.error.name")?;
                let triggered_by = ascii(&mut r, "ilpv1.error.triggeredBy")?;
                const FIELD: &str = "ilpv1.error.forwardedBy";
                let count = r.read_var_uint(FIELD)?;
                // Each address takes at least its one-byte length prefix.
                if count > r.remaining() as u64 {
                    return Err(DecodeError::Truncated {
                        field: FIELD,
                        needed: usize::try_from(count).unwrap_or(usize::MAX),
                        available: r.remaining(),
                    });
                }
                let mut forwarded_by = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    forwarded_by.push(ascii(&mut r, FIELD)?);
                }
                let triggered_at = Timestamp::parse_generalized_time(
                    r.read_var_octet_slice("ilpv1.error.triggeredAt")?,
                    "ilpv1.error.triggeredAt",
                )?;
                let data = r.read_var_octet_string("ilpv1.error.data")?;
                IlpV1Packet::Error(IlpV1Error {
                    code,
                    name,
                    triggered_by,
                    forwarded_by,
                    triggered_at,
                    data,
                })
            }
        })
    }
}

impl From<Payment> for IlpV1Packet {
    fn from(p: Payment) -> Self {
        IlpV1Packet::Payment(p)
    }
}

impl From<IlpV1Error> for IlpV1Packet {
    fn from(e: IlpV1Error) -> Self {
        IlpV1Packet::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ilp-packet 1.x README vector: amount 123000000, account g.us.nexus.bob, data base64 "BBBB".
    #[test]
    fn readme_payment_vector() -> Result<(), DecodeError> {
        let raw = Bytes::from(
            hex::decode("011c000000000754d4c00e672e75732e6e657875732e626f620304104100")
                .expect("hex"),
        );
        let packet = IlpV1Packet::decode(&raw)?;
        let IlpV1Packet::Payment(p) = &packet else {
            panic!("not a payment: {packet:?}");
        };
        assert_eq!(p.amount, 123_000_000);
        assert_eq!(p.account, "g.us.nexus.bob");
        assert_eq!(&p.data[..], &[0x04, 0x10, 0x41]);
        assert_eq!(packet.to_bytes(), raw);
        Ok(())
    }
}
