//! OER primitives (ITU-T X.696 canonical octet encoding rules, the subset Interledger uses), written by hand.
//!
//! * **Length prefix:** one byte `0..=127` for short lengths; otherwise `0x80 | n` followed by the length as `n`
//!   big-endian bytes. A prefix that could have been written shorter is refused, as oer-utils 1.3 does
//!   ([`DecodeError::NonMinimalLength`]). The indefinite form `0x80` is refused too.
//! * **Variable-length octet string ("var-oct"):** a length prefix, then that many bytes.
//! * **Fixed-width integers:** big-endian, no prefix.
//! * **VarUInt:** a var-oct whose contents are the big-endian integer. The writer emits the minimal width
//!   (`0` is `01 00`); the reader accepts leading zero bytes (oer-utils does) but refuses an empty integer and
//!   anything wider than 8 bytes. The BTP protocol-data count (`01 NN`) and the ILP v1 `forwardedBy` count use
//!   this form.
//!
//! The [`Reader`] walks a [`Bytes`] buffer without copying: octet strings come back as cheap slices of the
//! input. It checks every declared length against the bytes actually present *before* using it, so a
//! hostile length can neither cause a panic nor a large allocation. The writer functions append to any
//! [`BufMut`]; the `*_len` functions give exact encoded sizes so callers can size buffers and write length
//! prefixes without a temporary buffer.

use bytes::{BufMut, Bytes};

use crate::error::DecodeError;

/// Largest input any decoder in this crate accepts: 1 MiB.
///
/// BTP/2.0 and ILPv4 frames are bounded far below this (ILPv4 data is at most 32 767 bytes, BTP/2.0 Error data
/// at most 8 192); BTP/1.0 and ILP v1 set no limit of their own, and legacy peers send frames of a few hundred
/// bytes. One MiB leaves room for any real legacy payload while bounding the memory a peer can make us hold.
/// Transports should set their websocket message limit to this value.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Widest VarUInt the reader accepts, in bytes (a `u64`).
pub const MAX_VAR_UINT_BYTES: usize = 8;

/// Widest long-form length prefix the reader accepts, in length bytes. Any length that fits in 4 bytes is
/// already far beyond [`MAX_FRAME_BYTES`].
pub const MAX_LENGTH_PREFIX_BYTES: usize = 4;

/// A bounds-checked cursor over a region of a [`Bytes`] buffer.
///
/// Every read names the field it is reading so errors say where the input went wrong.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole underlying buffer; slices of it are handed out without copying.
    buf: &'a Bytes,
    /// Next byte to read.
    pos: usize,
    /// One past the last byte this reader may read (a sub-reader stops at the end of its var-oct).
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `buf`.
    pub fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless every byte has been read.
    pub fn finish(&self, field: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { field, count }),
        }
    }

    /// Advances past `len` bytes and returns their range in the underlying buffer.
    fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<core::ops::Range<usize>, DecodeError> {
        let available = self.remaining();
        if len > available {
            return Err(DecodeError::Truncated {
                field,
                needed: len,
                available,
            });
        }
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }

    /// Reads `len` bytes as a slice of the input.
    pub fn read_slice(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let range = self.take(len, field)?;
        let buf: &'a Bytes = self.buf;
        // `take` checked `range.end <= self.end <= buf.len()`; `get` keeps this panic-free regardless.
        buf.get(range).ok_or(DecodeError::Truncated {
            field,
            needed: len,
            available: 0,
        })
    }

    /// Reads `len` bytes as a zero-copy [`Bytes`] slice of the input.
    pub fn read_bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let range = self.take(len, field)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        Ok(self.buf.slice(range))
    }

    /// Reads exactly `N` bytes into an array.
    pub fn read_array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let slice = self.read_slice(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Reads one byte.
    pub fn read_u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.read_array::<1>(field)?;
        Ok(b)
    }

    /// Reads a big-endian `u16`.
    pub fn read_u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.read_array(field)?))
    }

    /// Reads a big-endian `u32`.
    pub fn read_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.read_array(field)?))
    }

    /// Reads a big-endian `u64`.
    pub fn read_u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.read_array(field)?))
    }

    /// Reads an OER length prefix, refusing non-minimal and indefinite forms, and checks that the announced
    /// number of bytes is actually present.
    pub fn read_length_prefix(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let first = self.read_u8(field)?;
        let length = if first & 0x80 == 0 {
            usize::from(first)
        } else {
            let length_bytes = usize::from(first & 0x7f);
            if length_bytes == 0 || length_bytes > MAX_LENGTH_PREFIX_BYTES {
                return Err(DecodeError::OverlongLengthPrefix {
                    field,
                    length_bytes,
                });
            }
            let mut length: u64 = 0;
            for &b in self.read_slice(length_bytes, field)? {
                length = (length << 8) | u64::from(b);
            }
            // Minimal means: the long form only for lengths >= 128, and no leading zero length byte.
            let min_for_width = if length_bytes == 1 {
                128
            } else {
                1u64 << ((length_bytes - 1) * 8)
            };
            if length < min_for_width {
                return Err(DecodeError::NonMinimalLength { field, length });
            }
            usize::try_from(length).map_err(|_| DecodeError::TooLarge {
                field,
                actual: length,
                max: MAX_FRAME_BYTES as u64,
            })?
        };
        let available = self.remaining();
        if length > available {
            if length > MAX_FRAME_BYTES {
                return Err(DecodeError::TooLarge {
                    field,
                    actual: length as u64,
                    max: MAX_FRAME_BYTES as u64,
                });
            }
            return Err(DecodeError::Truncated {
                field,
                needed: length,
                available,
            });
        }
        Ok(length)
    }

    /// Reads a var-oct as a slice of the input.
    pub fn read_var_octet_slice(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.read_length_prefix(field)?;
        self.read_slice(len, field)
    }

    /// Reads a var-oct as a zero-copy [`Bytes`] slice of the input.
    pub fn read_var_octet_string(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.read_length_prefix(field)?;
        self.read_bytes(len, field)
    }

    /// Reads a var-oct whose contents may be at most `max` bytes.
    pub fn read_var_octet_string_max(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<Bytes, DecodeError> {
        let len = self.read_length_prefix(field)?;
        if len > max {
            return Err(DecodeError::TooLarge {
                field,
                actual: len as u64,
                max: max as u64,
            });
        }
        self.read_bytes(len, field)
    }

    /// Reads a var-oct and returns a reader bounded to its contents (no copy).
    pub fn read_var_octet_reader(
        &mut self,
        field: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        let len = self.read_length_prefix(field)?;
        let range = self.take(len, field)?;
        Ok(Reader {
            buf: self.buf,
            pos: range.start,
            end: range.end,
        })
    }

    /// Reads an OER VarUInt (a var-oct holding a big-endian unsigned integer of 1 to 8 bytes).
    pub fn read_var_uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let digits = self.read_var_octet_slice(field)?;
        if digits.is_empty() || digits.len() > MAX_VAR_UINT_BYTES {
            return Err(DecodeError::InvalidVarUint {
                field,
                length: digits.len(),
            });
        }
        Ok(digits
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads a var-oct that must be ASCII and returns it as a `&str` of the input.
    pub fn read_ascii_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let raw = self.read_var_octet_slice(field)?;
        ascii_str(raw, field)
    }

    /// Reads a var-oct that must be UTF-8 (at most `max` bytes) and returns it as a `&str` of the input.
    pub fn read_utf8_str_max(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a str, DecodeError> {
        let len = self.read_length_prefix(field)?;
        if len > max {
            return Err(DecodeError::TooLarge {
                field,
                actual: len as u64,
                max: max as u64,
            });
        }
        let raw = self.read_slice(len, field)?;
        core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
}

/// Checks that `raw` is ASCII and returns it as `&str`.
pub fn ascii_str<'b>(raw: &'b [u8], field: &'static str) -> Result<&'b str, DecodeError> {
    if !raw.is_ascii() {
        return Err(DecodeError::InvalidAscii { field });
    }
    core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidAscii { field })
}

/// Encoded size of the length prefix for a `len`-byte string.
pub fn length_prefix_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + be_width(len as u64)
    }
}

/// Encoded size of a var-oct holding `len` bytes.
pub fn var_octet_string_len(len: usize) -> usize {
    length_prefix_len(len) + len
}

/// Encoded size of a VarUInt holding `value`.
pub fn var_uint_len(value: u64) -> usize {
    1 + be_width(value)
}

/// Minimal number of big-endian bytes for `value` (at least 1).
fn be_width(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(8).max(1)
}

/// Writes the minimal OER length prefix for a `len`-byte string.
pub fn write_length_prefix(buf: &mut impl BufMut, len: usize) {
    if len < 0x80 {
        // Checked just above: fits in 7 bits.
        buf.put_u8(len as u8);
    } else {
        let width = be_width(len as u64);
        buf.put_u8(0x80 | width as u8);
        buf.put_slice(&(len as u64).to_be_bytes()[8 - width..]);
    }
}

/// Writes a var-oct.
pub fn write_var_octet_string(buf: &mut impl BufMut, data: &[u8]) {
    write_length_prefix(buf, data.len());
    buf.put_slice(data);
}

/// Writes a VarUInt in its minimal width (`0` is `01 00`).
pub fn write_var_uint(buf: &mut impl BufMut, value: u64) {
    let width = be_width(value);
    buf.put_u8(width as u8);
    buf.put_slice(&value.to_be_bytes()[8 - width..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn enc_len(len: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_length_prefix(&mut b, len);
        b.to_vec()
    }

    #[test]
    fn length_prefix_forms() {
        assert_eq!(enc_len(0), vec![0x00]);
        assert_eq!(enc_len(127), vec![0x7f]);
        assert_eq!(enc_len(128), vec![0x81, 0x80]);
        assert_eq!(enc_len(0x8f), vec![0x81, 0x8f]);
        assert_eq!(enc_len(256), vec![0x82, 0x01, 0x00]);
        assert_eq!(enc_len(65536), vec![0x83, 0x01, 0x00, 0x00]);
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 1 << 24] {
            assert_eq!(enc_len(len).len(), length_prefix_len(len), "len {len}");
        }
    }

    #[test]
    fn var_uint_forms() {
        let mut b = BytesMut::new();
        write_var_uint(&mut b, 0);
        write_var_uint(&mut b, 2);
        write_var_uint(&mut b, 256);
        write_var_uint(&mut b, u64::MAX);
        assert_eq!(
            b.to_vec(),
            hex::decode("0100010202010008ffffffffffffffff").expect("hex")
        );
        let bytes = b.freeze();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.read_var_uint("a").expect("0"), 0);
        assert_eq!(r.read_var_uint("b").expect("2"), 2);
        assert_eq!(r.read_var_uint("c").expect("256"), 256);
        assert_eq!(r.read_var_uint("d").expect("max"), u64::MAX);
        assert!(r.is_empty());
    }

    #[test]
    fn var_uint_refuses_empty_and_wide() {
        let empty = Bytes::from_static(&[0x00]);
        assert_eq!(
            Reader::new(&empty).read_var_uint("n"),
            Err(DecodeError::InvalidVarUint {
                field: "n",
                length: 0
            })
        );
        let wide = Bytes::from_static(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            Reader::new(&wide).read_var_uint("n"),
            Err(DecodeError::InvalidVarUint {
                field: "n",
                length: 9
            })
        );
        // Leading zeros are tolerated, like oer-utils.
        let padded = Bytes::from_static(&[0x02, 0x00, 0x05]);
        assert_eq!(Reader::new(&padded).read_var_uint("n"), Ok(5));
    }

    #[test]
    fn non_minimal_prefixes_are_refused() {
        for raw in [
            &[0x81u8, 0x05][..],
            &[0x81, 0x7f],
            &[0x82, 0x00, 0x90],
            &[0x83, 0x00, 0x01, 0x00],
        ] {
            let mut data = raw.to_vec();
            data.extend(std::iter::repeat_n(0u8, 300));
            let b = Bytes::from(data);
            assert!(
                matches!(
                    Reader::new(&b).read_length_prefix("x"),
                    Err(DecodeError::NonMinimalLength { field: "x", .. })
                ),
                "{raw:02x?}"
            );
        }
    }

    #[test]
    fn indefinite_and_wide_prefixes_are_refused() {
        let b = Bytes::from_static(&[0x80]);
        assert_eq!(
            Reader::new(&b).read_length_prefix("x"),
            Err(DecodeError::OverlongLengthPrefix {
                field: "x",
                length_bytes: 0
            })
        );
        let b = Bytes::from_static(&[0x85, 1, 0, 0, 0, 0]);
        assert_eq!(
            Reader::new(&b).read_length_prefix("x"),
            Err(DecodeError::OverlongLengthPrefix {
                field: "x",
                length_bytes: 5
            })
        );
    }

    #[test]
    fn huge_declared_length_is_refused_before_use() {
        let b = Bytes::from_static(&[0x84, 0xff, 0xff, 0xff, 0xff, 0x00]);
        assert_eq!(
            Reader::new(&b).read_var_octet_string("x"),
            Err(DecodeError::TooLarge {
                field: "x",
                actual: 0xffff_ffff,
                max: MAX_FRAME_BYTES as u64
            })
        );
        let b = Bytes::from_static(&[0x05, 1, 2]);
        assert_eq!(
            Reader::new(&b).read_var_octet_string("x"),
            Err(DecodeError::Truncated {
                field: "x",
                needed: 5,
                available: 2
            })
        );
    }

    #[test]
    fn var_octet_slices_share_the_input() {
        let b = Bytes::from_static(&[0x03, b'a', b'b', b'c', 0x00]);
        let mut r = Reader::new(&b);
        let s = r.read_var_octet_string("s").expect("string");
        assert_eq!(&s[..], b"abc");
        assert_eq!(s.as_ptr(), b[1..].as_ptr());
        assert_eq!(
            r.finish("env"),
            Err(DecodeError::TrailingBytes {
                field: "env",
                count: 1
            })
        );
        assert_eq!(r.read_var_octet_string("e").expect("empty").len(), 0);
        assert!(r.finish("env").is_ok());
    }

    #[test]
    fn sub_reader_is_bounded() {
        let b = Bytes::from_static(&[0x02, 0xaa, 0xbb, 0xcc]);
        let mut r = Reader::new(&b);
        let mut sub = r.read_var_octet_reader("c").expect("sub");
        assert_eq!(sub.read_u16("v").expect("u16"), 0xaabb);
        assert!(sub.read_u8("w").is_err());
        assert_eq!(r.read_u8("z").expect("tail"), 0xcc);
    }
}
