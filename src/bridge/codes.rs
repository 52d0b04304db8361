//! The names of ILP error codes in both generations (docs/legacy-btp.md §8, docs/modern.md §3.5): a code is the
//! same three characters in ILP v1 and ILPv4, and only a few names differ (ILP v1 says "Ledger", ILPv4 "Peer").

/// The ILP v1 name of `code` (RFC 0003), or the class's "Application Error" name for a code ILP v1 does not
/// define (e.g. ILPv4's F08), so an ILP v1 Error always carries a name a legacy connector can show.
pub fn ilp_v1_name(code: &[u8; 3]) -> &'static str {
    match code {
        b"F00" => "Bad Request",
        b"F01" => "Invalid Packet",
        b"F02" => "Unreachable",
        b"F03" => "Invalid Amount",
        b"F04" => "Insufficient Destination Amount",
        b"F05" => "Wrong Condition",
        b"F06" => "Unexpected Payment",
        b"F07" => "Cannot Receive",
        b"T00" => "Internal Error",
        b"T01" => "Ledger Unreachable",
        b"T02" => "Ledger Busy",
        b"T03" => "Connector Busy",
        b"T04" => "Insufficient Liquidity",
        b"T05" => "Rate Limited",
        b"R00" => "Transfer Timed Out",
        b"R01" => "Insufficient Source Amount",
        b"R02" => "Insufficient Timeout",
        _ => "Application Error",
    }
}

/// The ILPv4 name of `code` (RFC 0027, plus interledger-rs's F09), or the class's "Application Error" name.
pub fn ilp_v4_name(code: &[u8; 3]) -> &'static str {
    match code {
        b"T01" => "Peer Unreachable",
        b"T02" => "Peer Busy",
        b"F08" => "Amount Too Large",
        b"F09" => "Invalid Peer Response",
        other => ilp_v1_name(other),
    }
}

/// Whether `code` has the form of an ILP error code: a class letter `F`, `T` or `R` and two digits. Anything
/// else from a peer is replaced (by the class-less `F00`) before it is passed on.
pub fn is_error_code(code: &[u8; 3]) -> bool {
    matches!(code[0], b'F' | b'T' | b'R') && code[1].is_ascii_digit() && code[2].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_differ_only_where_the_generations_do() {
        for code in [b"F00", b"F02", b"T04", b"R00", b"R02"] {
            assert_eq!(ilp_v1_name(code), ilp_v4_name(code));
        }
        assert_eq!(ilp_v1_name(b"T01"), "Ledger Unreachable");
        assert_eq!(ilp_v4_name(b"T01"), "Peer Unreachable");
        assert_eq!(ilp_v1_name(b"F08"), "Application Error");
        assert_eq!(ilp_v4_name(b"F08"), "Amount Too Large");
        assert_eq!(ilp_v1_name(b"T42"), "Application Error");
    }

    #[test]
    fn codes_are_a_class_and_two_digits() {
        assert!(is_error_code(b"F00") && is_error_code(b"T99") && is_error_code(b"R02"));
        assert!(!is_error_code(b"X00") && !is_error_code(b"F0A") && !is_error_code(b"f00"));
    }
}
