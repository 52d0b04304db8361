//! The legacy side protocols of a BTP/1.0 trustline (src/peer/trustline/side_protocols.rs and the dispatch of
//! src/peer/trustline/incoming.rs), driven through the public request handler `Trustline::handle_packet`, as a
//! connected legacy peer drives it: the `custom` JSON of Messages and Prepares, the built-in `info`, `balance`
//! and `limit` requests, `claim` Messages handed to the module (`iou`), every other entry taken as a module RPC
//! with JSON arguments, and the `ilp` of Messages and Rejects. The readers (`parse_entry`, `entry_json`,
//! `entry_claim`) are internal to the trustline; this reaches all of them without widening their visibility.
//!
//! Each input is a short session with a fresh trustline (stateful server peer, `maxBalance` 1000, `minBalance`
//! -1000, at most 4 prepared transfers, in-memory stores, a fixed clock) and an echo request handler. Input:
//! up to 8 packets separated by the byte 0xFE; in a packet, the header bytes below (missing ones read as 0),
//! then protocol data entries separated by 0xFF, each a selector byte and the entry's data. 0xFE and 0xFF
//! never occur in UTF-8, so text and JSON entries are written as they are.
//! * header: kind (`% 4`: Message, Prepare, Fulfill, Reject); then for a Prepare the transfer ID byte (the ID
//!   is 16 of it), the amount, and the expiry (`(b − 64)` seconds from now); for a Fulfill the ID byte and the
//!   fulfillment byte (32 of it); for a Reject the ID byte;
//! * entry selector: bits 0–2 the name (`ilp`, `custom`, `info`, `balance`, `limit`, `claim`, or the RPC
//!   names `paymentChannelId` and `f`), bits 3–4 the content type (octet stream, text, JSON, or 3 + bits 5–7).
//!
//! Properties: never panics; every request gets a reply; a Message whose first `custom` entry is JSON that
//! does not parse is refused with a `SyntaxError`, as legacy's `JSON.parse` throws; a Prepare of 0 is refused
//! with `InvalidFieldsError`; and after every packet the log's sums hold (IF ≤ IFP, OF ≤ OFP) and the peer
//! cannot hold more than `maxBalance` (IFP − OF ≤ 1000), nor more prepared transfers than allowed.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use btp::packet::{
    ContentType, Fulfill, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName, Reject,
};
use btp::transport::Reply;
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::amount::LedgerBalance;
use channel_modules::clock::Clock;
use channel_modules::memory::MemoryStores;
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{
    IncomingRequestHandler, PeerError, PeerMessage, Trustline, TrustlineOptions,
};
use libfuzzer_sys::fuzz_target;

/// Most packets taken from one input.
const MAX_PACKETS: usize = 8;
/// Most transfers the peer may have prepared at once.
const MAX_PREPARED: usize = 4;
/// The peer's `maxBalance`.
const MAX_BALANCE: i128 = 1000;
/// The names an entry selector picks from.
const NAMES: [&str; 8] = [
    "ilp",
    "custom",
    "info",
    "balance",
    "limit",
    "claim",
    "paymentChannelId",
    "f",
];
/// The fixed "now" of every session (2026-01-01T00:00:00Z), so an input always does the same.
const NOW_UNIX_MS: u64 = 1_767_225_600_000;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_UNIX_MS)
    }
}

/// Answers every `ilp`/`custom` request with the request itself.
struct Echo;

#[async_trait]
impl IncomingRequestHandler for Echo {
    async fn handle_request(&self, request: PeerMessage) -> Result<PeerMessage, PeerError> {
        Ok(request)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fn config() -> &'static PeerConfig {
    static CONFIG: OnceLock<PeerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let options = serde_json::json!({
            "listener": {"port": 0}, "incomingSecret": "secret", "maxBalance": MAX_BALANCE.to_string(),
            "minBalance": (-MAX_BALANCE).to_string(), "prefix": "test.fuzz.",
            "info": {"currencyCode": "USD", "currencyScale": 9}, "store": true, "module": "iou"
        });
        let mut config =
            PeerConfig::from_legacy_json("fuzz", &options).expect("the session's peer options");
        config.limits.max_prepared_transfers = MAX_PREPARED;
        config
    })
}

fn entries(bytes: &[u8]) -> ProtocolData {
    let mut pd = ProtocolData::new();
    for raw in bytes.split(|&b| b == 0xFF) {
        let Some((&selector, data)) = raw.split_first() else {
            continue;
        };
        let name = ProtocolName::from_static(NAMES[usize::from(selector & 7)]);
        let content_type = match (selector >> 3) & 3 {
            0 => ContentType::OCTET_STREAM,
            1 => ContentType::TEXT_PLAIN_UTF8,
            2 => ContentType::APPLICATION_JSON,
            _ => ContentType(3 + (selector >> 5)),
        };
        pd.push(ProtocolDataEntry::new(
            name,
            content_type,
            Bytes::copy_from_slice(data),
        ));
    }
    pd
}

fn packet(raw: &[u8]) -> Packet {
    let at = |i: usize| raw.get(i).copied().unwrap_or(0);
    let rest = |from: usize| entries(raw.get(from..).unwrap_or_default());
    match at(0) % 4 {
        0 => Packet::Message(rest(1)),
        1 => {
            let ahead_ms = (i64::from(at(3)) - 64) * 1000;
            let expires_ms = NOW_UNIX_MS as i64 + ahead_ms;
            Packet::Prepare(Prepare {
                transfer_id: [at(1); 16],
                amount: u64::from(at(2)),
                execution_condition: [at(1); 32],
                expires_at: Timestamp::from_unix_millis(expires_ms).expect("a time near now"),
                protocol_data: rest(4),
            })
        }
        2 => Packet::Fulfill(Fulfill {
            transfer_id: [at(1); 16],
            fulfillment: [at(2); 32],
            protocol_data: rest(3),
        }),
        _ => Packet::Reject(Reject {
            transfer_id: [at(1); 16],
            protocol_data: rest(2),
        }),
    }
}

fn check_sums(tl: &Trustline) {
    let sums = tl.log().sums();
    assert!(sums.incoming_fulfilled <= sums.incoming_fulfilled_and_prepared);
    assert!(sums.outgoing_fulfilled <= sums.outgoing_fulfilled_and_prepared);
    let held = sums
        .incoming_fulfilled_and_prepared
        .minus(sums.outgoing_fulfilled);
    assert!(
        held <= LedgerBalance(MAX_BALANCE),
        "the peer holds {held:?}"
    );
    let (incoming, outgoing) = tl.prepared_counts();
    assert!(incoming <= MAX_PREPARED && outgoing <= MAX_PREPARED);
}

async fn session(data: &[u8]) {
    let config = config();
    let stores = MemoryStores::new(config.max_balance, config.min_balance);
    let module =
        channel_modules::build_module("iou", &config.module_options()).expect("the iou module");
    let options = TrustlineOptions {
        clock: Arc::new(FixedClock),
        ..TrustlineOptions::default()
    };
    let tl = Trustline::new(config, Arc::new(stores), Some(module), options).expect("a trustline");
    tl.register_request_handler(Arc::new(Echo));
    for raw in data.split(|&b| b == 0xFE).take(MAX_PACKETS) {
        let packet = packet(raw);
        let bad_custom = match &packet {
            Packet::Message(pd) => pd.get("custom").is_some_and(|e| {
                e.content_type == ContentType::APPLICATION_JSON
                    && serde_json::from_slice::<serde_json::Value>(&e.data).is_err()
            }),
            _ => false,
        };
        let zero_prepare = matches!(&packet, Packet::Prepare(p) if p.amount == 0);
        let reply = tl.handle_packet(packet).await;
        let Some(reply) = reply else {
            panic!("a request got no reply");
        };
        if bad_custom {
            assert!(
                matches!(&reply, Reply::Error(e) if e.name == "SyntaxError"),
                "{reply:?}"
            );
        }
        if zero_prepare {
            assert!(
                matches!(&reply, Reply::Error(e) if e.name == "InvalidFieldsError"),
                "{reply:?}"
            );
        }
        check_sums(&tl);
    }
    drop(tl);
    // Let the tasks the session spawned (expiry timers) see the trustline gone.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(session(data));
});
