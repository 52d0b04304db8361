//! CCP decoders (route control and route update requests): never panic; whatever decodes re-encodes to bytes
//! that decode equal, and the re-encoding is canonical (a fixpoint). The first input byte picks the decoder.
#![no_main]

use btp::ccp::{RouteControlRequest, RouteUpdateRequest};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let bytes = Bytes::copy_from_slice(rest);
    if which & 1 == 0 {
        if let Ok(control) = RouteControlRequest::decode(&bytes) {
            let again = control.to_bytes();
            assert_eq!(again.len(), control.encoded_len(), "encoded_len is exact");
            let decoded =
                RouteControlRequest::decode(&again).expect("a re-encoded request decodes");
            assert_eq!(decoded, control);
            assert_eq!(decoded.to_bytes(), again, "encoding is canonical");
        }
    } else if let Ok(update) = RouteUpdateRequest::decode(&bytes) {
        let again = update.to_bytes();
        assert_eq!(again.len(), update.encoded_len(), "encoded_len is exact");
        let decoded = RouteUpdateRequest::decode(&again).expect("a re-encoded update decodes");
        assert_eq!(decoded, update);
        assert_eq!(decoded.to_bytes(), again, "encoding is canonical");
    }
});
