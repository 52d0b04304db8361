//! Deduplication of incoming requests: a session hands each request to its handler once, although legacy
//! peers that hold two sockets to us send every request on both with the same ID (docs/legacy-btp.md §4.3,
//! §16).
//!
//! A request is known by its request ID *and* a digest of the whole frame ([`DedupeKey`]): a frame identical
//! to one being handled, or handled within [`DEDUPE_WINDOW`] (at most [`MAX_DEDUPE_ENTRIES`] remembered), is
//! a duplicate. Request IDs are random 32-bit numbers, so two different requests share one now and then (with
//! [`MAX_DEDUPE_ENTRIES`] remembered IDs, about once per 10⁶ requests); keyed on the ID alone, such a request
//! would be dropped as a duplicate and its sender would time out, which for a Fulfill means the payee counted
//! it and the payer did not. A true duplicate (the same frame sent on two sockets) has the same bytes, hence
//! the same digest.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::time::Instant;

use super::limits::{DEDUPE_WINDOW, MAX_DEDUPE_ENTRIES};

/// Request IDs being handled or handled recently.
#[derive(Default)]
pub(crate) struct Dedupe {
    /// Being handled now.
    in_flight: HashSet<DedupeKey>,
    /// Handled, with the time they finished.
    done: HashMap<DedupeKey, Instant>,
    /// `done` in completion order, for expiry.
    order: VecDeque<(DedupeKey, Instant)>,
}

/// What makes two incoming requests "the same request": the request ID and [`frame_digest`] of the frame.
pub(crate) type DedupeKey = (u32, u64);

/// Digest of a received frame for [`DedupeKey`]: SipHash with fixed keys (only accidental collisions matter;
/// a peer that forges one only loses its own request).
pub(crate) fn frame_digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Dedupe {
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if now.duration_since(at) < DEDUPE_WINDOW && self.order.len() <= MAX_DEDUPE_ENTRIES {
                break;
            }
            self.order.pop_front();
            if self.done.get(&key) == Some(&at) {
                self.done.remove(&key);
            }
        }
        if self.order.is_empty() && self.done.capacity() > 64 {
            // Give back memory after a burst: idle sessions should stay small.
            self.done = HashMap::new();
            self.order = VecDeque::new();
        }
    }

    /// True if `key` is new (and marks it in flight).
    pub(crate) fn begin(&mut self, key: DedupeKey, now: Instant) -> bool {
        self.expire(now);
        if self.in_flight.contains(&key) || self.done.contains_key(&key) {
            return false;
        }
        self.in_flight.insert(key);
        true
    }

    /// Marks `key` handled (no longer in flight) at `now`.
    pub(crate) fn complete(&mut self, key: DedupeKey, now: Instant) {
        self.in_flight.remove(&key);
        self.done.insert(key, now);
        self.order.push_back((key, now));
        self.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::packet::{Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};

    #[test]
    fn dedupe_forgets_after_window_and_bound() {
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        let k = |id: u32| (id, 7);
        assert!(d.begin(k(1), t0));
        assert!(!d.begin(k(1), t0), "in flight");
        d.complete(k(1), t0);
        assert!(!d.begin(k(1), t0 + Duration::from_secs(1)), "recently done");
        assert!(
            d.begin(k(1), t0 + DEDUPE_WINDOW + Duration::from_secs(1)),
            "expired"
        );
        d.complete(k(1), t0 + DEDUPE_WINDOW + Duration::from_secs(1));
        let t1 = t0 + DEDUPE_WINDOW * 2;
        for id in 10..(10 + MAX_DEDUPE_ENTRIES as u32 + 5) {
            assert!(d.begin(k(id), t1));
            d.complete(k(id), t1);
        }
        assert!(d.order.len() <= MAX_DEDUPE_ENTRIES);
        assert!(d.begin(k(10), t1), "oldest evicted by the bound");
        assert!(!d.begin(k(10 + MAX_DEDUPE_ENTRIES as u32), t1));
    }

    #[test]
    fn same_id_with_other_contents_is_a_new_request() {
        let a = Frame::new(5, Packet::Message(ProtocolData::new())).to_bytes();
        let mut pd = ProtocolData::new();
        pd.push(ProtocolDataEntry::json(
            ProtocolName::from_static("custom"),
            b"{}".to_vec(),
        ));
        let b = Frame::new(5, Packet::Message(pd)).to_bytes();
        let (ka, kb) = ((5, frame_digest(&a)), (5, frame_digest(&b)));
        assert_ne!(ka, kb);
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        assert!(d.begin(ka, t0));
        d.complete(ka, t0);
        assert!(
            d.begin(kb, t0),
            "a different request that reuses the ID is handled"
        );
        assert!(
            !d.begin((5, frame_digest(&a)), t0),
            "the same frame again is a duplicate"
        );
    }
}
