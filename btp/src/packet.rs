//! BTP frames: BTP/1.0 (RFC 23 draft 2, btp-packet 1.x, the legacy framework) and BTP/2.0 (RFC 23 draft 9).
//!
//! **Envelope:** `type u8 | requestId u32 | contents var-oct`.
//!
//! | type | packet | contents |
//! |--|--|--|
//! | 1 | Response | protocolData |
//! | 2 | Error | `code` 3 ASCII · `name` var-oct ASCII · `triggeredAt` var-oct GeneralizedTime · `data` var-oct UTF-8 · protocolData |
//! | 3 | Prepare (1.0 only) | `transferId` 16 · `amount` u64 · `executionCondition` 32 · `expiresAt` var-oct GeneralizedTime · protocolData |
//! | 4 | Fulfill (1.0 only) | `transferId` 16 · `fulfillment` 32 · protocolData |
//! | 5 | Reject (1.0 only) | `transferId` 16 · protocolData |
//! | 6 | Message | protocolData |
//! | 7 | Transfer (1.1, 2.0) | `amount` u64 · protocolData |
//!
//! **protocolData:** a VarUInt count (`01 NN` in practice), then per entry `name` var-oct ASCII · `contentType` u8
//! · `data` var-oct.
//!
//! **Versions.** [`BtpVersion::Btp1`] decodes types 1–7 (BTP/1.0 plus the type 7 that btp-packet 1.2 added);
//! [`BtpVersion::Btp2`] refuses types 3–5 with [`DecodeError::TypeNotAllowed`] and limits Error `data` to
//! [`MAX_BTP2_ERROR_DATA_BYTES`]. Encoding is the same for both versions.
//!
//! **Trailing bytes.** Bytes after the envelope's `contents` are refused ([`DecodeError::TrailingBytes`]): no
//! real encoder produces them and a strict peer (interledger-rs) would refuse our re-encoding of them anyway.
//! Bytes *inside* `contents` after the protocol data are ignored, as btp-packet 1.x / oer-utils ignore them, so
//! a future extension of a packet type does not make us drop it. Re-encoding a decoded frame therefore yields
//! the canonical bytes, which decode to an equal [`Frame`].
//!
//! **Unusual but accepted input:** unknown content types are kept as raw bytes ([`ContentType`] is a `u8`), and a
//! non-minimal protocol-data count (`02 00 01`) is accepted; both re-encode canonically.
//!
//! Payload data is never copied: entry `data` fields are [`Bytes`] slices of the decoded frame, so decoding a
//! Prepare allocates only the entry list.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::oer::{self, Reader, MAX_FRAME_BYTES};
use crate::time::{Timestamp, GENERALIZED_TIME_LEN};

/// Largest BTP/2.0 Error `data` (RFC 23 draft 9), in bytes.
pub const MAX_BTP2_ERROR_DATA_BYTES: usize = 8192;

/// Which BTP version a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BtpVersion {
    /// BTP/1.0 as the legacy framework speaks it, plus type 7 Transfer (BTP/1.1): types 1–7.
    Btp1,
    /// BTP/2.0: Response, Error, Message and Transfer only.
    Btp2,
}

impl BtpVersion {
    /// `"BTP/1.0"` or `"BTP/2.0"`.
    pub fn name(self) -> &'static str {
        match self {
            BtpVersion::Btp1 => "BTP/1.0",
            BtpVersion::Btp2 => "BTP/2.0",
        }
    }
}

/// BTP packet type bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 1
    Response = 1,
    /// 2
    Error = 2,
    /// 3 (BTP/1.0 only)
    Prepare = 3,
    /// 4 (BTP/1.0 only)
    Fulfill = 4,
    /// 5 (BTP/1.0 only)
    Reject = 5,
    /// 6
    Message = 6,
    /// 7 (BTP/1.1 and BTP/2.0)
    Transfer = 7,
}

impl PacketType {
    /// The type for a type byte, if known.
    pub fn from_u8(type_id: u8) -> Option<PacketType> {
        Some(match type_id {
            1 => PacketType::Response,
            2 => PacketType::Error,
            3 => PacketType::Prepare,
            4 => PacketType::Fulfill,
            5 => PacketType::Reject,
            6 => PacketType::Message,
            7 => PacketType::Transfer,
            _ => return None,
        })
    }

    /// True for the types that expect a Response or Error (Prepare, Fulfill, Reject, Message, Transfer).
    pub fn is_request(self) -> bool {
        !matches!(self, PacketType::Response | PacketType::Error)
    }
}

/// A protocol-data entry's content type. Known values: [`ContentType::OCTET_STREAM`],
/// [`ContentType::TEXT_PLAIN_UTF8`], [`ContentType::APPLICATION_JSON`]; other bytes are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentType(pub u8);

impl ContentType {
    /// 0: `application/octet-stream`.
    pub const OCTET_STREAM: ContentType = ContentType(0);
    /// 1: `text/plain; charset=utf-8`.
    pub const TEXT_PLAIN_UTF8: ContentType = ContentType(1);
    /// 2: `application/json`.
    pub const APPLICATION_JSON: ContentType = ContentType(2);
}

/// A protocol name: ASCII, checked when built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProtocolName(Bytes);

impl ProtocolName {
    /// A name from a static string.
    ///
    /// # Panics
    /// If `name` is not ASCII (a programming error, like [`Bytes::from_static`] misuse).
    pub fn from_static(name: &'static str) -> ProtocolName {
        assert!(name.is_ascii(), "protocol names are ASCII: {name:?}");
        ProtocolName(Bytes::from_static(name.as_bytes()))
    }

    /// A name from any string; fails if it is not ASCII.
    pub fn new(name: impl Into<String>) -> Result<ProtocolName, DecodeError> {
        let name = name.into();
        if !name.is_ascii() {
            return Err(DecodeError::InvalidAscii {
                field: "btp.protocolData.name",
            });
        }
        Ok(ProtocolName(Bytes::from(name.into_bytes())))
    }

    /// A name from raw bytes; fails if they are not ASCII.
    pub fn from_bytes(raw: Bytes, field: &'static str) -> Result<ProtocolName, DecodeError> {
        if !raw.is_ascii() {
            return Err(DecodeError::InvalidAscii { field });
        }
        Ok(ProtocolName(raw))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Every constructor checked the bytes are ASCII, which is always valid UTF-8.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for ProtocolName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl core::fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ProtocolName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ProtocolName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// One protocol-data entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolDataEntry {
    /// Sub-protocol name, for example `ilp`, `auth_token`, `balance`.
    pub name: ProtocolName,
    /// How `data` is to be read.
    pub content_type: ContentType,
    /// The payload (a slice of the received frame when decoded).
    pub data: Bytes,
}

impl ProtocolDataEntry {
    /// An entry with any content type.
    pub fn new(name: ProtocolName, content_type: ContentType, data: impl Into<Bytes>) -> Self {
        ProtocolDataEntry {
            name,
            content_type,
            data: data.into(),
        }
    }

    /// An `application/octet-stream` entry.
    pub fn octets(name: ProtocolName, data: impl Into<Bytes>) -> Self {
        Self::new(name, ContentType::OCTET_STREAM, data)
    }

    /// A `text/plain; charset=utf-8` entry.
    pub fn text(name: ProtocolName, text: impl Into<String>) -> Self {
        Self::new(
            name,
            ContentType::TEXT_PLAIN_UTF8,
            Bytes::from(text.into().into_bytes()),
        )
    }

    /// An `application/json` entry holding already-serialised JSON.
    pub fn json(name: ProtocolName, json: impl Into<Bytes>) -> Self {
        Self::new(name, ContentType::APPLICATION_JSON, json)
    }

    /// `data` as UTF-8, whatever the content type says.
    pub fn data_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(&self.data)
    }

    fn encoded_len(&self) -> usize {
        oer::var_octet_string_len(self.name.as_bytes().len())
            + 1
            + oer::var_octet_string_len(self.data.len())
    }
}

/// The protocol data of a BTP packet: an ordered list of entries; the first is the primary protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtocolData {
    /// The entries in wire order.
    pub entries: Vec<ProtocolDataEntry>,
}

impl ProtocolData {
    /// Empty protocol data (encoded `01 00`).
    pub fn new() -> Self {
        ProtocolData::default()
    }

    /// Builder: appends an entry.
    pub fn with(mut self, entry: ProtocolDataEntry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: ProtocolDataEntry) {
        self.entries.push(entry);
    }

    /// The first entry with this name.
    pub fn get(&self, name: &str) -> Option<&ProtocolDataEntry> {
        self.entries.iter().find(|e| e.name == *name)
    }

    /// The data of the first entry with this name.
    pub fn data(&self, name: &str) -> Option<&Bytes> {
        self.get(name).map(|e| &e.data)
    }

    /// The primary (first) entry.
    pub fn primary(&self) -> Option<&ProtocolDataEntry> {
        self.entries.first()
    }

    /// Iterates over the entries in wire order.
    pub fn iter(&self) -> core::slice::Iter<'_, ProtocolDataEntry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        oer::var_uint_len(self.entries.len() as u64)
            + self
                .entries
                .iter()
                .map(ProtocolDataEntry::encoded_len)
                .sum::<usize>()
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        oer::write_var_uint(buf, self.entries.len() as u64);
        for entry in &self.entries {
            oer::write_var_octet_string(buf, entry.name.as_bytes());
            buf.put_u8(entry.content_type.0);
            oer::write_var_octet_string(buf, &entry.data);
        }
    }

    /// Reads protocol data from `reader`.
    pub fn decode(reader: &mut Reader<'_>) -> Result<ProtocolData, DecodeError> {
        const FIELD_COUNT: &str = "btp.protocolData.count";
        /// Smallest possible entry: empty name, content type, empty data.
        const MIN_ENTRY_BYTES: usize = 3;
        let count = reader.read_var_uint(FIELD_COUNT)?;
        let max_count = reader.remaining() / MIN_ENTRY_BYTES;
        if count > max_count as u64 {
            return Err(DecodeError::Truncated {
                field: FIELD_COUNT,
                needed: usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(MIN_ENTRY_BYTES),
                available: reader.remaining(),
            });
        }
        // Bounded by the bytes present (checked above), so the allocation is proportional to the input.
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = reader.read_var_octet_string("btp.protocolData.name")?;
            let name = ProtocolName::from_bytes(name, "btp.protocolData.name")?;
            let content_type = ContentType(reader.read_u8("btp.protocolData.contentType")?);
            let data = reader.read_var_octet_string("btp.protocolData.data")?;
            entries.push(ProtocolDataEntry {
                name,
                content_type,
                data,
            });
        }
        Ok(ProtocolData { entries })
    }
}

impl<'a> IntoIterator for &'a ProtocolData {
    type Item = &'a ProtocolDataEntry;
    type IntoIter = core::slice::Iter<'a, ProtocolDataEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl FromIterator<ProtocolDataEntry> for ProtocolData {
    fn from_iter<I: IntoIterator<Item = ProtocolDataEntry>>(iter: I) -> Self {
        ProtocolData {
            entries: iter.into_iter().collect(),
        }
    }
}

/// BTP Error (type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtpError {
    /// Three ASCII characters, for example `F02` (see [`legacy_error_code`]).
    pub code: [u8; 3],
    /// Error name, ASCII, for example `TransferNotFoundError`.
    pub name: String,
    /// When the error happened.
    pub triggered_at: Timestamp,
    /// Details, UTF-8; the legacy framework sends `{"message":…}`.
    pub data: String,
    /// Extra entries (usually empty).
    pub protocol_data: ProtocolData,
}

impl BtpError {
    /// The code as a string.
    pub fn code_str(&self) -> &str {
        // Decoding checks ASCII; a hand-built non-ASCII code shows as empty rather than panicking.
        core::str::from_utf8(&self.code).unwrap_or_default()
    }

    fn encoded_len(&self) -> usize {
        3 + oer::var_octet_string_len(self.name.len())
            + oer::var_octet_string_len(GENERALIZED_TIME_LEN)
            + oer::var_octet_string_len(self.data.len())
            + self.protocol_data.encoded_len()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.code);
        oer::write_var_octet_string(buf, self.name.as_bytes());
        oer::write_var_octet_string(buf, &self.triggered_at.to_generalized_time());
        oer::write_var_octet_string(buf, self.data.as_bytes());
        self.protocol_data.encode(buf);
    }

    fn decode(r: &mut Reader<'_>, version: BtpVersion) -> Result<BtpError, DecodeError> {
        let code = r.read_array::<3>("btp.error.code")?;
        oer::ascii_str(&code, "btp.error.code")?;
        let name = r.read_ascii_str("btp.error.name")?.to_owned();
        let triggered_at = Timestamp::parse_generalized_time(
            r.read_var_octet_slice("btp.error.triggeredAt")?,
            "btp.error.triggeredAt",
        )?;
        let max_data = match version {
            BtpVersion::Btp1 => MAX_FRAME_BYTES,
            BtpVersion::Btp2 => MAX_BTP2_ERROR_DATA_BYTES,
        };
        let data = r.read_utf8_str_max(max_data, "btp.error.data")?.to_owned();
        let protocol_data = ProtocolData::decode(r)?;
        Ok(BtpError {
            code,
            name,
            triggered_at,
            data,
            protocol_data,
        })
    }
}

/// BTP/1.0 Prepare (type 3): a conditional transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Transfer ID: the 16 bytes of a UUID.
    pub transfer_id: [u8; 16],
    /// Amount in ledger units.
    pub amount: u64,
    /// SHA-256 condition.
    pub execution_condition: [u8; 32],
    /// Expiry.
    pub expires_at: Timestamp,
    /// Entries; `ilp` holds the ILP v1 packet.
    pub protocol_data: ProtocolData,
}

/// BTP/1.0 Fulfill (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfill {
    /// Transfer ID of the Prepare being fulfilled.
    pub transfer_id: [u8; 16],
    /// Preimage of the condition.
    pub fulfillment: [u8; 32],
    /// Entries (the legacy framework sends none, or `ilp` since 1.3.0).
    pub protocol_data: ProtocolData,
}

/// BTP/1.0 Reject (type 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Transfer ID of the Prepare being rejected.
    pub transfer_id: [u8; 16],
    /// Entries; the reason is an ILP v1 Error in `ilp`.
    pub protocol_data: ProtocolData,
}

/// BTP/1.1 and BTP/2.0 Transfer (type 7): an unconditional transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Amount in ledger units.
    pub amount: u64,
    /// Entries.
    pub protocol_data: ProtocolData,
}

/// A BTP packet (the part of a frame after the request ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// 1
    Response(ProtocolData),
    /// 2
    Error(BtpError),
    /// 3 (BTP/1.0 only)
    Prepare(Prepare),
    /// 4 (BTP/1.0 only)
    Fulfill(Fulfill),
    /// 5 (BTP/1.0 only)
    Reject(Reject),
    /// 6
    Message(ProtocolData),
    /// 7
    Transfer(Transfer),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Response(_) => PacketType::Response,
            Packet::Error(_) => PacketType::Error,
            Packet::Prepare(_) => PacketType::Prepare,
            Packet::Fulfill(_) => PacketType::Fulfill,
            Packet::Reject(_) => PacketType::Reject,
            Packet::Message(_) => PacketType::Message,
            Packet::Transfer(_) => PacketType::Transfer,
        }
    }

    /// The packet's protocol data.
    pub fn protocol_data(&self) -> &ProtocolData {
        match self {
            Packet::Response(pd) | Packet::Message(pd) => pd,
            Packet::Error(e) => &e.protocol_data,
            Packet::Prepare(p) => &p.protocol_data,
            Packet::Fulfill(f) => &f.protocol_data,
            Packet::Reject(r) => &r.protocol_data,
            Packet::Transfer(t) => &t.protocol_data,
        }
    }

    /// Size of the `contents` var-oct's payload.
    fn contents_len(&self) -> usize {
        match self {
            Packet::Response(pd) | Packet::Message(pd) => pd.encoded_len(),
            Packet::Error(e) => e.encoded_len(),
            Packet::Prepare(p) => {
                16 + 8
                    + 32
                    + oer::var_octet_string_len(GENERALIZED_TIME_LEN)
                    + p.protocol_data.encoded_len()
            }
            Packet::Fulfill(f) => 16 + 32 + f.protocol_data.encoded_len(),
            Packet::Reject(r) => 16 + r.protocol_data.encoded_len(),
            Packet::Transfer(t) => 8 + t.protocol_data.encoded_len(),
        }
    }

    fn encode_contents(&self, buf: &mut impl BufMut) {
        match self {
            Packet::Response(pd) | Packet::Message(pd) => pd.encode(buf),
            Packet::Error(e) => e.encode(buf),
            Packet::Prepare(p) => {
                buf.put_slice(&p.transfer_id);
                buf.put_u64(p.amount);
                buf.put_slice(&p.execution_condition);
                oer::write_var_octet_string(buf, &p.expires_at.to_generalized_time());
                p.protocol_data.encode(buf);
            }
            Packet::Fulfill(f) => {
                buf.put_slice(&f.transfer_id);
                buf.put_slice(&f.fulfillment);
                f.protocol_data.encode(buf);
            }
            Packet::Reject(r) => {
                buf.put_slice(&r.transfer_id);
                r.protocol_data.encode(buf);
            }
            Packet::Transfer(t) => {
                buf.put_u64(t.amount);
                t.protocol_data.encode(buf);
            }
        }
    }

    fn decode_contents(
        packet_type: PacketType,
        r: &mut Reader<'_>,
        version: BtpVersion,
    ) -> Result<Packet, DecodeError> {
        Ok(match packet_type {
            PacketType::Response => Packet::Response(ProtocolData::decode(r)?),
            PacketType::Message => Packet::Message(ProtocolData::decode(r)?),
            PacketType::Error => Packet::Error(BtpError::decode(r, version)?),
            PacketType::Prepare => {
                let transfer_id = r.read_array("btp.prepare.transferId")?;
                let amount = r.read_u64("btp.prepare.amount")?;
                let execution_condition = r.read_array("btp.prepare.executionCondition")?;
                let expires_at = Timestamp::parse_generalized_time(
                    r.read_var_octet_slice("btp.prepare.expiresAt")?,
                    "btp.prepare.expiresAt",
                )?;
                Packet::Prepare(Prepare {
                    transfer_id,
                    amount,
                    execution_condition,
                    expires_at,
                    protocol_data: ProtocolData::decode(r)?,
                })
            }
            PacketType::Fulfill => Packet::Fulfill(Fulfill {
                transfer_id: r.read_array("btp.fulfill.transferId")?,
                fulfillment: r.read_array("btp.fulfill.fulfillment")?,
                protocol_data: ProtocolData::decode(r)?,
            }),
            PacketType::Reject => Packet::Reject(Reject {
                transfer_id: r.read_array("btp.reject.transferId")?,
                protocol_data: ProtocolData::decode(r)?,
            }),
            PacketType::Transfer => Packet::Transfer(Transfer {
                amount: r.read_u64("btp.transfer.amount")?,
                protocol_data: ProtocolData::decode(r)?,
            }),
        })
    }
}

/// A BTP frame: request ID plus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request ID; a Response or Error carries the ID of the request it answers.
    pub request_id: u32,
    /// The packet.
    pub packet: Packet,
}

impl Frame {
    /// A frame.
    pub fn new(request_id: u32, packet: Packet) -> Self {
        Frame { request_id, packet }
    }

    /// Decodes one frame (one websocket binary message) under `version`'s rules.
    pub fn decode(bytes: &Bytes, version: BtpVersion) -> Result<Frame, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge {
                field: "btp.frame",
                actual: bytes.len() as u64,
                max: MAX_FRAME_BYTES as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let type_id = r.read_u8("btp.type")?;
        let packet_type = PacketType::from_u8(type_id).ok_or(DecodeError::UnknownType {
            field: "btp.type",
            type_id,
        })?;
        if version == BtpVersion::Btp2
            && matches!(
                packet_type,
                PacketType::Prepare | PacketType::Fulfill | PacketType::Reject
            )
        {
            return Err(DecodeError::TypeNotAllowed {
                field: "btp.type",
                type_id,
                version: version.name(),
            });
        }
        let request_id = r.read_u32("btp.requestId")?;
        let mut contents = r.read_var_octet_reader("btp.contents")?;
        r.finish("btp.frame")?;
        // Bytes left in `contents` after the packet are ignored (see the module docs).
        let packet = Packet::decode_contents(packet_type, &mut contents, version)?;
        Ok(Frame { request_id, packet })
    }

    /// Reads only the type byte and request ID, without decoding the rest (for logging and for answering
    /// undecodable requests). `None` if the input is shorter than 5 bytes.
    pub fn peek_header(bytes: &[u8]) -> Option<(u8, u32)> {
        let (&type_id, rest) = bytes.split_first()?;
        let id: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        Some((type_id, u32::from_be_bytes(id)))
    }

    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + 4 + oer::var_octet_string_len(self.packet.contents_len())
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.packet.packet_type() as u8);
        buf.put_u32(self.request_id);
        oer::write_length_prefix(buf, self.packet.contents_len());
        self.packet.encode_contents(buf);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// The error code the legacy framework sends for a JavaScript error name (docs/legacy-btp.md §7): the
/// framework's own table, which differs from RFC 23's. Unknown names (`Error`, `TypeError`, …) map to `F00`.
pub fn legacy_error_code(name: &str) -> [u8; 3] {
    match name {
        "UnreachableError" => *b"T00",
        "NotAcceptedError" => *b"F00",
        "InvalidFieldsError" => *b"F01",
        "TransferNotFoundError" => *b"F02",
        "InvalidFulfillmentError" => *b"F03",
        "DuplicateIdError" => *b"F04",
        "AlreadyRolledBackError" => *b"F05",
        "AlreadyFulfilledError" => *b"F06",
        "InsufficientBalanceError" => *b"F07",
        _ => *b"F00",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_error_codes() {
        assert_eq!(&legacy_error_code("TransferNotFoundError"), b"F02");
        assert_eq!(&legacy_error_code("InsufficientBalanceError"), b"F07");
        assert_eq!(&legacy_error_code("UnreachableError"), b"T00");
        assert_eq!(&legacy_error_code("RangeError"), b"F00");
    }

    #[test]
    fn peek_header_reads_type_and_id() {
        assert_eq!(Frame::peek_header(&[6, 0, 0, 1, 2, 9]), Some((6, 258)));
        assert_eq!(Frame::peek_header(&[6, 0, 0, 1]), None);
    }

    #[test]
    fn empty_response_is_canonical() -> Result<(), DecodeError> {
        let f = Frame::new(0x49f6_8f8a, Packet::Response(ProtocolData::new()));
        let bytes = f.to_bytes();
        assert_eq!(
            &bytes[..],
            &[0x01, 0x49, 0xf6, 0x8f, 0x8a, 0x02, 0x01, 0x00]
        );
        assert_eq!(f.encoded_len(), bytes.len());
        assert_eq!(Frame::decode(&bytes, BtpVersion::Btp2)?, f);
        Ok(())
    }
}
