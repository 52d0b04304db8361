//! A Prepare whose expiry legacy cannot read gets legacy's RangeError exactly once, even when legacy sends it on
//! every socket; a rolled-over expiry is handled once, with the canonical time.

mod transport_support;

use btp::packet::{Frame, Packet, Prepare, ProtocolData};
use btp::Timestamp;
use bytes::Bytes;
use transport_support::*;

/// Length of the BTP/1.0 time text.
const TIME_TEXT_BYTES: usize = 19;

/// A Prepare with request ID `id` whose `expiresAt` field holds `raw` (any text, valid or not).
fn prepare_with_time(id: u32, raw: &[u8]) -> Bytes {
    let frame = Frame::new(
        id,
        Packet::Prepare(Prepare {
            transfer_id: [1; 16],
            amount: 5,
            execution_condition: [2; 32],
            expires_at: Timestamp::from_unix_millis(0).expect("epoch"),
            protocol_data: ProtocolData::new(),
        }),
    )
    .to_bytes();
    // type 1 · request ID 4 · contents length 1 (short frame) · transferId 16 · amount 8 · condition 32.
    let fields_at = 1 + 4 + 1;
    let time_at = fields_at + 16 + 8 + 32;
    let mut contents = frame[fields_at..time_at].to_vec();
    contents.push(u8::try_from(raw.len()).expect("short test time"));
    contents.extend_from_slice(raw);
    contents.extend_from_slice(&frame[time_at + 1 + TIME_TEXT_BYTES..]);
    let mut out = frame[..fields_at - 1].to_vec();
    out.push(u8::try_from(contents.len()).expect("short test frame"));
    out.extend_from_slice(&contents);
    Bytes::from(out)
}

/// Sends `frame` on two legacy sockets of one session and returns every reply to `id` (from both sockets).
async fn send_on_both_sockets(frame: Bytes, id: u32) -> (Vec<Frame>, std::sync::Arc<Recorder>) {
    let (server, handler) = legacy_server().await;
    let mut a = authed_legacy_client(server.addr, 1).await;
    let mut b = authed_legacy_client(server.addr, 2).await;
    assert_eq!(server.session("alice").socket_count(), 2);
    send(&mut a, frame.clone()).await;
    send(&mut b, frame).await;
    // Markers, one per socket, sent last: once their replies are in, both copies have been processed.
    let mut replies = Vec::new();
    for (ws, marker) in [(&mut a, 901u32), (&mut b, 902)] {
        send(ws, Frame::new(marker, message(b"marker")).to_bytes()).await;
        loop {
            let f = decode(&next_binary(ws).await.expect("reply"));
            if f.request_id == marker {
                break;
            }
            assert_eq!(f.request_id, id, "unexpected reply");
            replies.push(f);
        }
    }
    server.shutdown().await;
    (replies, handler)
}

fn is_range_error(f: &Frame) -> bool {
    matches!(&f.packet, Packet::Error(e) if e.name == "RangeError" && &e.code == b"F00")
}

#[tokio::test]
async fn a_duplicated_prepare_with_an_unreadable_expiry_gets_one_range_error() -> TestResult {
    // `garbage`: the codec refuses the frame too. `…05Z` (no milliseconds): the codec reads it, legacy does not.
    for (id, raw) in [(40u32, &b"garbage"[..]), (41, b"20300102030405Z")] {
        let (replies, handler) = send_on_both_sockets(prepare_with_time(id, raw), id).await;
        assert_eq!(replies.len(), 1, "{raw:?}: exactly one reply: {replies:?}");
        assert!(is_range_error(&replies[0]), "{raw:?}: {:?}", replies[0]);
        assert!(
            !handler.ids().contains(&id),
            "{raw:?}: the handler never sees it"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_duplicated_prepare_with_a_rolled_over_expiry_is_handled_once() -> TestResult {
    // Feb 30 is read by legacy as Mar 2; the codec refuses it, so it is rewritten to the canonical time.
    let id = 42;
    let (replies, handler) =
        send_on_both_sockets(prepare_with_time(id, b"20300230030405.678Z"), id).await;
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert!(matches!(replies[0].packet, Packet::Response(_)));
    let seen = handler.seen.lock().expect("lock").clone();
    let prepares: Vec<&Prepare> = seen
        .iter()
        .filter_map(|(i, p)| match p {
            Packet::Prepare(p) if *i == id => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(prepares.len(), 1, "handled once");
    assert_eq!(
        &prepares[0].expires_at.to_generalized_time(),
        b"20300302030405.678Z"
    );
    // A valid expiry goes straight to the handler, once.
    let id = 43;
    let (replies, handler) =
        send_on_both_sockets(prepare_with_time(id, b"20300102030405.678Z"), id).await;
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert!(matches!(replies[0].packet, Packet::Response(_)));
    assert_eq!(handler.ids().iter().filter(|&&i| i == id).count(), 1);
    Ok(())
}
