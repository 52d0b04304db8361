//! BTP/1.0 frame decoder: never panics; a decoded frame re-encodes to bytes that decode equal, and the
//! re-encoding is canonical (a fixpoint).
#![no_main]

use btp::packet::{BtpVersion, Frame};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&bytes, BtpVersion::Btp1) {
        let again = frame.to_bytes();
        assert_eq!(again.len(), frame.encoded_len(), "encoded_len is exact");
        let decoded = Frame::decode(&again, BtpVersion::Btp1).expect("a re-encoded frame decodes");
        assert_eq!(decoded, frame);
        assert_eq!(decoded.to_bytes(), again, "encoding is canonical");
    }
});
