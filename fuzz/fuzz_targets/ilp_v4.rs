//! ILP v4 packet decoder: never panics; a decoded packet re-encodes to bytes that decode equal, and the
//! re-encoding is canonical (a fixpoint).
#![no_main]

use btp::ilp_v4::IlpV4Packet;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(packet) = IlpV4Packet::decode(&bytes) {
        let again = packet.to_bytes();
        assert_eq!(again.len(), packet.encoded_len(), "encoded_len is exact");
        let decoded = IlpV4Packet::decode(&again).expect("a re-encoded packet decodes");
        assert_eq!(decoded, packet);
        assert_eq!(decoded.to_bytes(), again, "encoding is canonical");
    }
});
