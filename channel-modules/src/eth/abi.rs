//! The slice of the Solidity contract ABI this crate needs: function selectors and head/tail encoding of
//! `uint256`, `address` and `bytes` arguments, and reading 32-byte words from return data.

use num_bigint::BigUint;

use super::types::{keccak256, u256_word, Address};
use super::EthError;

/// One ABI argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// `uint256`.
    Uint(BigUint),
    /// `address`.
    Address(Address),
    /// `bytes` (dynamic).
    Bytes(Vec<u8>),
}

/// The 4-byte selector of a function signature such as `"transfer(address,uint256)"`.
pub fn selector(signature: &str) -> [u8; 4] {
    let hash = keccak256(signature.as_bytes());
    [hash[0], hash[1], hash[2], hash[3]]
}

/// ABI-encodes `tokens` as a tuple (head words, then the tails of dynamic values).
pub fn encode(tokens: &[Token]) -> Result<Vec<u8>, EthError> {
    let head_len = 32 * tokens.len();
    let mut head = Vec::with_capacity(head_len);
    let mut tail = Vec::new();
    for token in tokens {
        match token {
            Token::Uint(value) => head.extend_from_slice(&u256_word(value)?),
            Token::Address(address) => head.extend_from_slice(&address.to_word()),
            Token::Bytes(bytes) => {
                let offset = BigUint::from(head_len + tail.len());
                head.extend_from_slice(&u256_word(&offset)?);
                tail.extend_from_slice(&u256_word(&BigUint::from(bytes.len()))?);
                tail.extend_from_slice(bytes);
                let padding = (32 - bytes.len() % 32) % 32;
                tail.extend(std::iter::repeat_n(0u8, padding));
            }
        }
    }
    head.extend(tail);
    Ok(head)
}

/// Call data for `signature` with `tokens`.
pub fn encode_call(signature: &str, tokens: &[Token]) -> Result<Vec<u8>, EthError> {
    let mut out = selector(signature).to_vec();
    out.extend(encode(tokens)?);
    Ok(out)
}

/// The `index`-th 32-byte word of return data.
pub fn word(data: &[u8], index: usize) -> Result<&[u8], EthError> {
    data.get(32 * index..32 * (index + 1))
        .ok_or_else(|| EthError::BadResponse(format!("return data too short for word {index}")))
}

/// The `index`-th word as an unsigned integer.
pub fn uint_word(data: &[u8], index: usize) -> Result<BigUint, EthError> {
    Ok(BigUint::from_bytes_be(word(data, index)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_selectors() {
        assert_eq!(
            hex::encode(selector("transfer(address,uint256)")),
            "a9059cbb"
        );
        assert_eq!(hex::encode(selector("balanceOf(address)")), "70a08231");
    }

    #[test]
    fn dynamic_bytes_use_offset_length_and_padding() -> Result<(), EthError> {
        let out = encode(&[
            Token::Uint(BigUint::from(5u8)),
            Token::Bytes(vec![0xab; 33]),
        ])?;
        // head: 2 words; tail: length word + 2 data words
        assert_eq!(out.len(), 32 * 5);
        assert_eq!(uint_word(&out, 0)?, BigUint::from(5u8));
        assert_eq!(uint_word(&out, 1)?, BigUint::from(64u8));
        assert_eq!(uint_word(&out, 2)?, BigUint::from(33u8));
        assert_eq!(out[96..129], [0xab; 33]);
        assert!(out[129..].iter().all(|b| *b == 0));
        Ok(())
    }
}
