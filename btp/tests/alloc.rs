//! Heap allocations made by the decoders on the hot path, counted by an instrumented global allocator.
//!
//! Decoding never copies payload bytes: entry data, names and ILPv4 addresses are slices of the received
//! buffer. Decoding a BTP/1.0 Prepare therefore allocates exactly once (the protocol-data entry list), and an
//! ILPv4 Prepare not at all.
//!
//! The input buffers are shared before measuring (`slice` once), as a received websocket message is: the first
//! slice of a `Vec`-backed [`Bytes`] moves it to shared storage, a one-off allocation per message that is not
//! the decoder's. Everything runs in a single `#[test]` so no other test thread allocates while we count.

use std::alloc::System;

use btp::ilp_v4::{self, Address, IlpV4Packet};
use btp::packet::{
    BtpVersion, Frame, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName,
};
use btp::Timestamp;
use bytes::Bytes;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Size of the ILP packet in the Prepare's `ilp` entry, in bytes (the benchmark's case).
const ILP_PACKET_BYTES: usize = 200;

fn expires_at() -> Timestamp {
    Timestamp::from_unix_millis(1_893_553_445_678).expect("2030 is in range")
}

fn btp1_prepare() -> Bytes {
    let ilp: Vec<u8> = (0..ILP_PACKET_BYTES).map(|i| i as u8).collect();
    Frame::new(
        11,
        Packet::Prepare(Prepare {
            transfer_id: [0x11; 16],
            amount: 10,
            execution_condition: [0xcc; 32],
            expires_at: expires_at(),
            protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static("ilp"),
                ilp,
            )),
        }),
    )
    .to_bytes()
}

fn ilp_v4_prepare() -> Bytes {
    IlpV4Packet::Prepare(ilp_v4::Prepare {
        amount: 10,
        expires_at: expires_at(),
        execution_condition: [0xcc; 32],
        destination: Address::new("g.legacy.bob").expect("valid address"),
        data: Bytes::from(vec![7u8; ILP_PACKET_BYTES]),
    })
    .to_bytes()
}

#[test]
fn decoders_allocate_only_the_entry_list() {
    let btp1 = btp1_prepare();
    let v4 = ilp_v4_prepare();
    // Move both buffers to shared storage before measuring (see the module docs).
    let _shared = (btp1.slice(0..1), v4.slice(0..1));

    let region = Region::new(GLOBAL);
    let frame = Frame::decode(&btp1, BtpVersion::Btp1).expect("valid prepare");
    let btp1_stats = region.change();

    let region = Region::new(GLOBAL);
    let packet = IlpV4Packet::decode(&v4).expect("valid ILPv4 prepare");
    let v4_stats = region.change();

    // Assertions after measuring: formatting a failure message allocates.
    let Packet::Prepare(prepare) = &frame.packet else {
        panic!("not a prepare: {frame:?}")
    };
    let ilp = prepare.protocol_data.data("ilp").expect("ilp entry");
    assert_eq!(ilp.len(), ILP_PACKET_BYTES);
    assert_eq!(
        ilp.as_ptr(),
        btp1[btp1.len() - ILP_PACKET_BYTES..].as_ptr(),
        "the ILP packet is a slice of the frame"
    );
    assert_eq!(btp1_stats.allocations, 1, "BTP/1.0 Prepare: {btp1_stats:?}");
    assert_eq!(
        btp1_stats.reallocations, 0,
        "BTP/1.0 Prepare: {btp1_stats:?}"
    );
    assert_eq!(
        btp1_stats.bytes_allocated,
        std::mem::size_of::<ProtocolDataEntry>(),
        "only the one-entry list: {btp1_stats:?}"
    );

    let IlpV4Packet::Prepare(p) = &packet else {
        panic!("not a prepare: {packet:?}")
    };
    assert_eq!(p.data.as_ptr(), v4[v4.len() - ILP_PACKET_BYTES..].as_ptr());
    assert_eq!(v4_stats.allocations, 0, "ILPv4 Prepare: {v4_stats:?}");
    assert_eq!(v4_stats.reallocations, 0, "ILPv4 Prepare: {v4_stats:?}");
}
