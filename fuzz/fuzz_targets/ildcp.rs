//! IL-DCP response decoder: never panics; a decoded response re-encodes to bytes that decode equal, and the
//! re-encoding is canonical (a fixpoint). Trailing input bytes are ignored by design, so the input itself need
//! not be canonical.
#![no_main]

use btp::ildcp::IldcpResponse;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(response) = IldcpResponse::decode(&bytes) {
        let again = response.to_bytes();
        assert_eq!(again.len(), response.encoded_len(), "encoded_len is exact");
        let decoded = IldcpResponse::decode(&again).expect("a re-encoded response decodes");
        assert_eq!(decoded, response);
        assert_eq!(decoded.to_bytes(), again, "encoding is canonical");
    }
});
