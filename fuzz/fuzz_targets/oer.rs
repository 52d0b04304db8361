//! OER primitives (the building blocks of every ILP and BTP decoder): driven by the input, a sequence of reads
//! (var-uint, length prefix, var-oct string, fixed-width integers) never panics, never reads past the input,
//! and each value read re-encodes with the matching writer to exactly the bytes it was read from (the reader
//! refuses non-minimal length prefixes). VarUInts are the exception: a VarUInt with leading zero bytes is
//! accepted, as the legacy JS oer-utils `readVarUInt` accepts it, so it re-encodes shorter, to the same value.
#![no_main]

use btp::oer::{self, Reader};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&script, rest)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(rest);
    let mut reader = Reader::new(&input);
    // Each pair of bits of the first byte picks the next read, four reads at most.
    for step in 0..4 {
        let before = input.len() - reader.remaining();
        let mut again = BytesMut::new();
        let mut canonical = true;
        let ok = match (script >> (2 * step)) & 3 {
            0 => reader.read_var_uint("fuzz").map(|v| {
                oer::write_var_uint(&mut again, v);
                assert_eq!(again.len(), oer::var_uint_len(v));
                let again = again.clone().freeze();
                assert_eq!(Reader::new(&again).read_var_uint("fuzz").ok(), Some(v));
                canonical = false;
            }),
            1 => reader.read_var_octet_string("fuzz").map(|s| {
                oer::write_var_octet_string(&mut again, &s);
                assert_eq!(again.len(), oer::var_octet_string_len(s.len()));
            }),
            2 => reader.read_length_prefix("fuzz").map(|len| {
                oer::write_length_prefix(&mut again, len);
                assert_eq!(again.len(), oer::length_prefix_len(len));
                assert!(len <= reader.remaining(), "the announced bytes are present");
            }),
            _ => reader
                .read_u32("fuzz")
                .map(|v| again.extend_from_slice(&v.to_be_bytes())),
        };
        if ok.is_err() {
            return;
        }
        let after = input.len() - reader.remaining();
        assert!(after <= input.len());
        if canonical {
            assert_eq!(
                &input[before..after],
                &again[..],
                "re-encodes to the bytes read"
            );
        } else {
            assert!(
                again.len() <= after - before,
                "the minimal form is no longer"
            );
        }
    }
});
