//! channel_modules::amount::parse_decimal (every amount from a peer, a claim or an RFC 38 Quantity goes through
//! it): never panics, accepts exactly the non-empty digit strings of at most MAX_AMOUNT_DIGITS characters, and
//! the value it returns prints back as the input without its leading zeros.
#![no_main]

use channel_modules::amount::{parse_decimal, MAX_AMOUNT_DIGITS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let plain =
        !s.is_empty() && s.len() <= MAX_AMOUNT_DIGITS && s.bytes().all(|b| b.is_ascii_digit());
    match parse_decimal(s) {
        Ok(v) => {
            assert!(plain, "accepted {s:?}");
            let trimmed = s.trim_start_matches('0');
            let expected = if trimmed.is_empty() { "0" } else { trimmed };
            assert_eq!(v.to_string(), expected);
        }
        Err(_) => assert!(!plain, "refused {s:?}"),
    }
});
