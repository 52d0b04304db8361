//! Decoding errors shared by every codec in this crate.
//!
//! A [`DecodeError`] says *what* was wrong and *where*: every variant carries the name of the field being read
//! (for example `"btp.prepare.expiresAt"`), so a log line or a test failure points at the exact spot in the
//! wire format. Decoders never panic; every malformed input ends in one of these variants.
//!
//! Encoding is infallible: the encoders write whatever the typed values hold. Types that carry invariants
//! ([`crate::time::Timestamp`], [`crate::ilp_v4::Address`], [`crate::packet::ProtocolName`]) check them when
//! they are built, and the decoders check the size limits of each format.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the field was complete.
    #[error("{field}: truncated, needed {needed} bytes but {available} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input (or in the enclosing length-prefixed contents).
        available: usize,
    },
    /// A long-form length prefix announces more length bytes than this decoder supports, or zero length bytes
    /// (the indefinite form, which OER does not allow).
    #[error("{field}: length prefix with {length_bytes} length bytes is not supported")]
    OverlongLengthPrefix {
        /// The field being read.
        field: &'static str,
        /// The number of length bytes the prefix announced.
        length_bytes: usize,
    },
    /// A length prefix that could have been written shorter (OER canonical form; oer-utils refuses these too).
    #[error("{field}: non-minimal length prefix for length {length}")]
    NonMinimalLength {
        /// The field being read.
        field: &'static str,
        /// The length that was encoded.
        length: u64,
    },
    /// The input, or a length declared in it, exceeds a limit of the format or of this crate.
    #[error("{field}: {actual} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The field being read (or `"frame"` for a whole input).
        field: &'static str,
        /// The size found or declared.
        actual: u64,
        /// The limit.
        max: u64,
    },
    /// A variable-length unsigned integer that is empty or wider than 64 bits.
    #[error("{field}: invalid variable-length integer of {length} bytes")]
    InvalidVarUint {
        /// The field being read.
        field: &'static str,
        /// Its encoded width in bytes.
        length: usize,
    },
    /// A timestamp that is not in the expected format or names an impossible date.
    #[error("{field}: invalid time: {reason}")]
    InvalidTime {
        /// The field being read.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The type byte is not one this codec knows.
    #[error("{field}: unknown type {type_id}")]
    UnknownType {
        /// The envelope being read.
        field: &'static str,
        /// The type byte.
        type_id: u8,
    },
    /// The type is known but not allowed in the protocol version being decoded (BTP/2.0 has no Prepare, Fulfill
    /// or Reject).
    #[error("{field}: type {type_id} is not allowed in {version}")]
    TypeNotAllowed {
        /// The envelope being read.
        field: &'static str,
        /// The type byte.
        type_id: u8,
        /// The protocol version, for example `"BTP/2.0"`.
        version: &'static str,
    },
    /// Bytes left over after a complete envelope.
    #[error("{field}: {count} trailing bytes")]
    TrailingBytes {
        /// The envelope being read.
        field: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field that must be UTF-8 is not.
    #[error("{field}: invalid utf-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A field that must be ASCII is not.
    #[error("{field}: invalid ascii")]
    InvalidAscii {
        /// The field being read.
        field: &'static str,
    },
    /// An ILP address with a character outside `[A-Za-z0-9._~-]`, or empty, or too long.
    #[error("{field}: invalid ilp address: {reason}")]
    InvalidAddress {
        /// The field being read.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A field that must hold one specific value does not (a `peer.*` Prepare with another destination or
    /// condition).
    #[error("{field}: expected {expected}")]
    Mismatch {
        /// The field being read.
        field: &'static str,
        /// The value that was required.
        expected: &'static str,
    },
}

impl DecodeError {
    /// The field (or envelope) the error was found in.
    pub fn field(&self) -> &'static str {
        match self {
            DecodeError::Truncated { field, .. }
            | DecodeError::OverlongLengthPrefix { field, .. }
            | DecodeError::NonMinimalLength { field, .. }
            | DecodeError::TooLarge { field, .. }
            | DecodeError::InvalidVarUint { field, .. }
            | DecodeError::InvalidTime { field, .. }
            | DecodeError::UnknownType { field, .. }
            | DecodeError::TypeNotAllowed { field, .. }
            | DecodeError::TrailingBytes { field, .. }
            | DecodeError::InvalidUtf8 { field }
            | DecodeError::InvalidAscii { field }
            | DecodeError::InvalidAddress { field, .. }
            | DecodeError::Mismatch { field, .. } => field,
        }
    }
}
