//! Small Ethereum value types: [`Address`], [`TxHash`], Keccak-256, and the `0x`-hex / 256-bit integer
//! conversions the JSON-RPC API (quantities and data, Ethereum JSON-RPC spec "Hex value encoding") uses.

use std::fmt;
use std::str::FromStr;

use num_bigint::BigUint;
use num_traits::Zero;
use sha3::{Digest, Keccak256};

use super::EthError;

/// Keccak-256 (the pre-standard SHA-3 variant Ethereum uses everywhere).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(data);
    hasher.finalize().into()
}

/// Decodes `0x`-prefixed (or bare) hex of exactly `N` bytes.
pub fn decode_fixed_hex<const N: usize>(s: &str) -> Result<[u8; N], EthError> {
    let bytes = decode_hex(s)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| EthError::InvalidHex(format!("expected {N} bytes, got {}", b.len())))
}

/// Decodes `0x`-prefixed (or bare) hex data of any length.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, EthError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(digits).map_err(|e| EthError::InvalidHex(format!("{e}")))
}

/// `0x`-prefixed lowercase hex of `bytes` (JSON-RPC "data").
pub fn encode_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// An Ethereum JSON-RPC quantity (`0x`-prefixed hex, no leading zeros) as an unbounded integer. (Not an RFC 38
/// Quantity, which is JSON `{amount, scale}`: that one is parsed by the settlement engine.)
pub fn parse_hex_uint(s: &str) -> Result<BigUint, EthError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| EthError::InvalidHex(format!("quantity {s:?} lacks 0x")))?;
    if digits.is_empty() {
        return Err(EthError::InvalidHex("empty quantity".to_owned()));
    }
    BigUint::parse_bytes(digits.as_bytes(), 16)
        .ok_or_else(|| EthError::InvalidHex(format!("bad quantity {s:?}")))
}

/// An Ethereum JSON-RPC quantity that must fit a `u64` (block numbers, nonces, chain IDs).
pub fn parse_hex_u64(s: &str) -> Result<u64, EthError> {
    let value = parse_hex_uint(s)?;
    u64::try_from(&value).map_err(|_| EthError::Range(format!("{s} does not fit 64 bits")))
}

/// An unbounded integer as an Ethereum JSON-RPC quantity.
pub fn format_hex_uint(value: &BigUint) -> String {
    format!("0x{}", value.to_str_radix(16))
}

/// A 256-bit big-endian word (ABI `uint256`); errors when `value` needs more than 256 bits.
pub(crate) fn u256_word(value: &BigUint) -> Result<[u8; 32], EthError> {
    let bytes = value.to_bytes_be();
    if value.is_zero() {
        return Ok([0u8; 32]);
    }
    if bytes.len() > 32 {
        return Err(EthError::Range(format!("{value} exceeds 256 bits")));
    }
    let mut word = [0u8; 32];
    word[32 - bytes.len()..].copy_from_slice(&bytes);
    Ok(word)
}

/// A 20-byte Ethereum account address. Displays as `0x` + lowercase hex; parses with or without `0x`, any
/// case (the EIP-55 checksum is not enforced: addresses come from our own options and the peer's module).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address as a 32-byte ABI word (left-padded with zeros).
    pub fn to_word(&self) -> [u8; 32] {
        let mut word = [0u8; 32];
        word[12..].copy_from_slice(&self.0);
        word
    }

    /// Reads an address from an ABI word (the low 20 bytes); errors if the high 12 bytes are not zero.
    pub fn from_word(word: &[u8]) -> Result<Self, EthError> {
        if word.len() != 32 || word[..12].iter().any(|b| *b != 0) {
            return Err(EthError::InvalidHex("not an address word".to_owned()));
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(&word[12..]);
        Ok(Address(out))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = EthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_fixed_hex::<20>(s).map(Address)
    }
}

/// A 32-byte transaction hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHash(pub [u8; 32]);

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxHash({self})")
    }
}

impl FromStr for TxHash {
    type Err = EthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_fixed_hex::<32>(s).map(TxHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_of_empty_input_matches_known_vector() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn quantities_round_trip_and_reject_garbage() -> Result<(), EthError> {
        assert_eq!(parse_hex_u64("0x7a69")?, 31337);
        assert_eq!(format_hex_uint(&BigUint::from(0u8)), "0x0");
        assert_eq!(format_hex_uint(&BigUint::from(255u32)), "0xff");
        assert!(parse_hex_uint("7a69").is_err());
        assert!(parse_hex_uint("0x").is_err());
        assert!(parse_hex_uint("0xzz").is_err());
        Ok(())
    }

    #[test]
    fn words_are_left_padded_and_bounded() -> Result<(), EthError> {
        let word = u256_word(&BigUint::from(0x0102u32))?;
        assert_eq!(word[30..], [1, 2]);
        assert!(word[..30].iter().all(|b| *b == 0));
        let too_big = BigUint::from(1u8) << 256;
        assert!(u256_word(&too_big).is_err());
        let addr: Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse()?;
        assert_eq!(Address::from_word(&addr.to_word())?, addr);
        assert_eq!(
            addr.to_string(),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
        Ok(())
    }
}
