//! Encoding and decoding a BTP/1.0 Prepare that carries a 200-byte ILP packet (the hot path of a legacy peer).
//!
//! Run with `cargo bench -p btp --bench codec`. Figures go to BENCHMARKS.md, section "btp codec".

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use btp::packet::{
    BtpVersion, Frame, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName,
};
use btp::Timestamp;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Size of the ILP packet carried in the `ilp` entry, in bytes.
const ILP_PACKET_BYTES: usize = 200;

fn prepare_frame() -> Frame {
    let ilp: Vec<u8> = (0..ILP_PACKET_BYTES).map(|i| i as u8).collect();
    Frame::new(
        0x0000_000b,
        Packet::Prepare(Prepare {
            transfer_id: [0x11; 16],
            amount: 10,
            execution_condition: [0xcc; 32],
            expires_at: Timestamp::from_unix_millis(1_893_553_445_678).expect("2030 is in range"),
            protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static("ilp"),
                ilp,
            )),
        }),
    )
}

fn codec(c: &mut Criterion) {
    let frame = prepare_frame();
    let bytes: Bytes = frame.to_bytes();
    // Make the buffer shared once, as a received websocket message is after its first slice, so the
    // measurement shows the per-frame cost only.
    let _warm = bytes.slice(0..1);

    let mut group = c.benchmark_group("btp1_prepare_200b_ilp");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| Frame::decode(black_box(&bytes), BtpVersion::Btp1).expect("valid frame"))
    });
    let mut buf = BytesMut::with_capacity(bytes.len());
    group.bench_function("encode_into_reused_buffer", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&frame).encode(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("encode_to_new_bytes", |b| {
        b.iter(|| black_box(&frame).to_bytes())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
