//! The engine's key layout. Every key is under `se/`; `<acct>` is an account ID, which never contains `/`;
//! `<seq>` is a 16-digit hex sequence number, so keys sort in acceptance order.
//!
//! | key | family | value (JSON) |
//! |--|--|--|
//! | `se/a/<acct>` | main | [`AccountRecord`] |
//! | `se/o/<acct>` | main | [`OutgoingRecord`]: totals, leftover, last error of the settle path |
//! | `se/i/<acct>` | main | [`IncomingRecord`]: incoming leftover and totals |
//! | `se/m/<acct>/<key>` | main | a module max-value tracker ([`channel_modules::store::MaxValue`]) |
//! | `se/k/<acct>/<idempotency key>` | main | [`IdempotencyRecord`] (kept ≥ 24 h after the last request) |
//! | `se/q/<acct>/<seq>` | pending | [`QueuedRequest`]: accepted, not yet taken by the settle worker |
//! | `se/h/<acct>/<seq>` | main | [`HistoryRecord`]: an accepted settle request, once taken |
//! | `se/s/<acct>/<seq>` | main | [`SentRecord`]: a claim sent (cumulative total) |
//! | `se/c/<acct>/<settlement id>` | pending | [`CreditRecord`]: an incoming settlement not yet credited (or refused with 409) |
//! | `se/r/<acct>/<seq>` | main | [`CreditRecord`]: an incoming settlement credited |
//! | `se/pin/<identity>` | main | a ledger identity record, kept by the node's registry ([`crate::identity`]), not the engine |
//!
//! [`AccountRecord`]: super::AccountRecord
//! [`OutgoingRecord`]: super::OutgoingRecord
//! [`IncomingRecord`]: super::IncomingRecord
//! [`IdempotencyRecord`]: super::IdempotencyRecord
//! [`QueuedRequest`]: super::QueuedRequest
//! [`HistoryRecord`]: super::HistoryRecord
//! [`SentRecord`]: super::SentRecord
//! [`CreditRecord`]: super::CreditRecord

/// Prefix of every settlement-engine key.
pub const SE_PREFIX: &str = "se/";

/// `se/a/<acct>`.
pub fn account(acct: &str) -> String {
    format!("se/a/{acct}")
}
/// `se/o/<acct>`.
pub fn outgoing(acct: &str) -> String {
    format!("se/o/{acct}")
}
/// `se/i/<acct>`.
pub fn incoming(acct: &str) -> String {
    format!("se/i/{acct}")
}
/// `se/m/<acct>/<key>`.
pub fn tracker(acct: &str, key: &str) -> String {
    format!("se/m/{acct}/{key}")
}
/// `se/k/<acct>/<idempotency key>`.
pub fn idempotency(acct: &str, key: &str) -> String {
    format!("se/k/{acct}/{key}")
}
/// `se/q/<acct>/<seq>`.
pub fn queued(acct: &str, seq: u64) -> String {
    format!("se/q/{acct}/{seq:016x}")
}
/// `se/h/<acct>/<seq>`.
pub fn history(acct: &str, seq: u64) -> String {
    format!("se/h/{acct}/{seq:016x}")
}
/// `se/s/<acct>/<seq>`.
pub fn sent(acct: &str, seq: u64) -> String {
    format!("se/s/{acct}/{seq:016x}")
}
/// `se/c/<acct>/<settlement id>`.
pub fn credit(acct: &str, settlement_id: &str) -> String {
    format!("se/c/{acct}/{settlement_id}")
}
/// `se/r/<acct>/<seq>`.
pub fn credited(acct: &str, seq: u64) -> String {
    format!("se/r/{acct}/{seq:016x}")
}
/// Prefix of every record kind `kind` (one letter) of every account: `se/<kind>/`.
pub fn kind_prefix(kind: char) -> String {
    format!("se/{kind}/")
}
/// Prefix of the records of kind `kind` of one account: `se/<kind>/<acct>/`.
pub fn account_prefix(kind: char, acct: &str) -> String {
    format!("se/{kind}/{acct}/")
}
/// The part of `key` after `prefix`.
pub fn suffix<'a>(key: &'a str, prefix: &str) -> &'a str {
    key.get(prefix.len()..).unwrap_or("")
}
/// The account and the rest of a `se/<kind>/<acct>/<rest>` key.
pub fn split_account(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("se/")?.get(2..)?;
    rest.split_once('/')
}
/// Parses a 16-digit hex sequence number.
pub fn parse_seq(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}
