//! Timestamp parsers (ILPv4 17-digit form, BTP/ILP v1 GeneralizedTime): never panic; a parsed time formats
//! back to a form that parses to the same instant, and that form is a fixpoint.
#![no_main]

use btp::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = <&[u8; 17]>::try_from(data) {
        if let Ok(t) = Timestamp::parse_ilp_v4(raw, "fuzz") {
            let again = t.to_ilp_v4();
            assert_eq!(Timestamp::parse_ilp_v4(&again, "fuzz").ok(), Some(t));
            assert_eq!(&again, raw, "the 17-digit form is canonical");
        }
    }
    if let Ok(t) = Timestamp::parse_generalized_time(data, "fuzz") {
        let again = t.to_generalized_time();
        let reparsed =
            Timestamp::parse_generalized_time(&again, "fuzz").expect("formatted time parses");
        assert_eq!(reparsed, t);
        assert_eq!(
            reparsed.to_generalized_time(),
            again,
            "formatting is a fixpoint"
        );
        // The instant is the one written: the same 14 digits, and the fraction as milliseconds (".5" is 500).
        let fraction = data.get(15..data.len() - 1).unwrap_or_default();
        let mut millis = [b'0'; 3];
        millis[..fraction.len()].copy_from_slice(fraction);
        assert_eq!(&again[..14], &data[..14]);
        assert_eq!(
            &again[15..18],
            &millis,
            "fraction {:?}",
            String::from_utf8_lossy(fraction)
        );
    }
});
