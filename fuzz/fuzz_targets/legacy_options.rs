//! The legacy plugin options (`ilp_bridge::config::legacy`: the `options`/`options_json` of a node TOML peer and
//! each ILP Kit ledger's `options`) on UTF-8 text, taken whole as each of `parse_limit_str` (`maxBalance`,
//! `minBalance`), `parse_server_url` (`server`) and `PeerConfig::from_legacy_str` (the options JSON). Never
//! panics, and:
//! * a limit is accepted exactly when the trimmed text is `Infinity`, `+Infinity`, `-Infinity` or an optional
//!   sign and decimal digits, and then has the value Rust's `i128` parser reads (refused as out of range only
//!   beyond `i128`);
//! * a server URL keeps the text as given, and its websocket URL has the matching scheme (`btp+ws` → `ws`,
//!   `btp+wss` → `wss`) and, whenever it parses, no credentials left in it;
//! * accepted options give the same peer when parsed again from the options kept, their module options can be
//!   read, and the peer survives the migration round trip (`common/migration.rs`).
#![no_main]

use std::path::Path;

use channel_modules::amount::LedgerBalance;
use channel_modules::store::Limit;
use ilp_bridge::config::legacy::{parse_limit_str, parse_server_url, LimitError, PeerConfig};
use libfuzzer_sys::fuzz_target;

#[path = "../common/migration.rs"]
mod migration;

/// The peer name the options are parsed for (a ledger prefix, as ILP Kit's peers are named).
const NAME: &str = "g.fuzz.";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_limit(text);
    check_server_url(text);
    check_options(text);
});

fn check_limit(s: &str) {
    let t = s.trim();
    let infinite = matches!(t, "Infinity" | "+Infinity" | "-Infinity");
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let decimal = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    match parse_limit_str(s) {
        Ok(Limit::Unbounded) => assert!(infinite, "{s:?}"),
        Ok(Limit::Finite(LedgerBalance(v))) => {
            assert!(decimal, "{s:?}");
            assert_eq!(t.parse::<i128>().ok(), Some(v), "{s:?}");
        }
        Err(LimitError::OutOfRange(_)) => {
            assert!(decimal && t.parse::<i128>().is_err(), "{s:?}")
        }
        Err(_) => assert!(!infinite && !decimal, "{s:?}"),
    }
}

fn check_server_url(s: &str) {
    let Ok(u) = parse_server_url(s) else {
        return;
    };
    assert_eq!(u.url.expose(), s);
    // As the URL parser reads the scheme: lower-cased, after white space and control characters are dropped.
    let scheme = url::Url::parse(s).map(|parsed| parsed.scheme().to_owned());
    let expected = match scheme.as_deref() {
        Ok("btp+ws") => "ws://",
        Ok("btp+wss") => "wss://",
        other => panic!("accepted the scheme {other:?}"),
    };
    assert!(u.ws_url.starts_with(expected), "{s:?} -> {:?}", u.ws_url);
    if let Ok(ws) = url::Url::parse(&u.ws_url) {
        assert_eq!(ws.username(), "", "{s:?} -> {:?}", u.ws_url);
        assert_eq!(ws.password(), None, "{s:?} -> {:?}", u.ws_url);
    }
}

fn check_options(s: &str) {
    let Ok(peer) = PeerConfig::from_legacy_str(NAME, s) else {
        return;
    };
    match PeerConfig::from_legacy_json(NAME, &peer.raw) {
        Ok(again) => assert_eq!(again, peer),
        Err(e) => panic!("the options kept are refused: {e}"),
    }
    let _ = peer.module_options();
    migration::assert_round_trip(std::slice::from_ref(&peer), Path::new("ilp-bridge-data"));
}
