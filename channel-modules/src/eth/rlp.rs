//! Recursive Length Prefix encoding (Ethereum Yellow Paper, appendix B), encode side only: all this crate
//! ever RLP-encodes is the transactions it signs.

use num_bigint::BigUint;
use num_traits::Zero;

/// One RLP item: a byte string or a list of items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Item>),
}

impl Item {
    /// An unsigned integer: its minimal big-endian bytes (zero is the empty string).
    pub fn uint(value: &BigUint) -> Item {
        if value.is_zero() {
            Item::Bytes(Vec::new())
        } else {
            Item::Bytes(value.to_bytes_be())
        }
    }

    /// A `u64` integer.
    pub fn u64(value: u64) -> Item {
        Item::uint(&BigUint::from(value))
    }
}

/// Encodes one item.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(item, &mut out);
    out
}

fn encode_into(item: &Item, out: &mut Vec<u8>) {
    match item {
        Item::Bytes(bytes) => {
            if bytes.len() == 1 && bytes[0] < 0x80 {
                out.push(bytes[0]);
            } else {
                encode_length(bytes.len(), 0x80, out);
                out.extend_from_slice(bytes);
            }
        }
        Item::List(items) => {
            let mut payload = Vec::new();
            for inner in items {
                encode_into(inner, &mut payload);
            }
            encode_length(payload.len(), 0xc0, out);
            out.extend_from_slice(&payload);
        }
    }
}

/// Short payloads (≤ 55 bytes) put their length in the prefix; longer ones put the length of the length.
fn encode_length(len: usize, offset: u8, out: &mut Vec<u8>) {
    const SHORT_PAYLOAD_MAX_BYTES: usize = 55;
    if len <= SHORT_PAYLOAD_MAX_BYTES {
        // len ≤ 55 so the sum stays below 0xf8.
        out.push(offset + len as u8);
    } else {
        let len_bytes = (len as u64).to_be_bytes();
        let first = len_bytes.iter().position(|b| *b != 0).unwrap_or(7);
        let len_bytes = &len_bytes[first..];
        // At most 8 length bytes, so offset + 55 + 8 ≤ 0xff.
        out.push(offset + SHORT_PAYLOAD_MAX_BYTES as u8 + len_bytes.len() as u8);
        out.extend_from_slice(len_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Item {
        Item::Bytes(text.as_bytes().to_vec())
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(&s("dog")), vec![0x83, b'd', b'o', b'g']);
        assert_eq!(
            encode(&Item::List(vec![s("cat"), s("dog")])),
            vec![0xc8, 0x83, b'c', b'a', b't', 0x83, b'd', b'o', b'g']
        );
        assert_eq!(encode(&s("")), vec![0x80]);
        assert_eq!(encode(&Item::List(vec![])), vec![0xc0]);
        assert_eq!(encode(&Item::u64(0)), vec![0x80]);
        assert_eq!(encode(&Item::u64(15)), vec![0x0f]);
        assert_eq!(encode(&Item::u64(1024)), vec![0x82, 0x04, 0x00]);
        // The set-theoretical representation of three.
        let three = Item::List(vec![
            Item::List(vec![]),
            Item::List(vec![Item::List(vec![])]),
            Item::List(vec![
                Item::List(vec![]),
                Item::List(vec![Item::List(vec![])]),
            ]),
        ]);
        assert_eq!(
            encode(&three),
            vec![0xc7, 0xc0, 0xc1, 0xc0, 0xc3, 0xc0, 0xc1, 0xc0]
        );
        let lorem = "Lorem ipsum dolor sit amet, consectetur adipisicing elit";
        let mut expected = vec![0xb8, 0x38];
        expected.extend_from_slice(lorem.as_bytes());
        assert_eq!(encode(&s(lorem)), expected);
    }

    #[test]
    fn long_list_uses_length_of_length() {
        let item = Item::List(vec![Item::Bytes(vec![0xaa; 60])]);
        let out = encode(&item);
        // payload = 0xb8 0x3c + 60 bytes = 62 bytes → 0xf8 0x3e
        assert_eq!(&out[..4], &[0xf8, 62, 0xb8, 60]);
        assert_eq!(out.len(), 64);
    }
}
