//! Differential tests against an independent OER implementation (`rasn`'s canonical OER codec): our
//! var-octet-strings, length prefixes, fixed-width integers and VarUInts must produce the same bytes as rasn's
//! `OCTET STRING`, `INTEGER (0..4294967295)`, `INTEGER (0..18446744073709551615)` and semi-constrained
//! `INTEGER (0..MAX)`, and both decoders must accept and refuse the same length prefixes.

use btp::oer::{self, Reader};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rasn::prelude::*;

/// `INTEGER (0..MAX)`: OER writes a length determinant and the minimal unsigned octets, our VarUInt.
#[derive(AsnType, Debug, Clone, Encode, Decode, PartialEq, Eq)]
#[rasn(delegate, value("0.."))]
struct SemiConstrained(Integer);

fn ours_var_oct(data: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    oer::write_var_octet_string(&mut b, data);
    b.to_vec()
}

fn ours_var_uint(v: u64) -> Vec<u8> {
    let mut b = BytesMut::new();
    oer::write_var_uint(&mut b, v);
    b.to_vec()
}

fn lengths() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..300,
        60_000usize..70_000,
        Just(127),
        Just(128),
        Just(255),
        Just(256),
        Just(65_535),
        Just(65_536)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn var_octet_string_matches_rasn(len in lengths(), fill in any::<u8>()) {
        let data = vec![fill; len];
        let theirs = rasn::coer::encode(&OctetString::from(data.clone())).expect("rasn encodes");
        let ours = ours_var_oct(&data);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.len(), oer::var_octet_string_len(len));
        // Each side decodes the other's bytes.
        let decoded: OctetString = rasn::coer::decode(&ours).expect("rasn decodes ours");
        prop_assert_eq!(&decoded[..], &data[..]);
        let theirs = Bytes::from(theirs);
        let mut r = Reader::new(&theirs);
        prop_assert_eq!(&r.read_var_octet_string("x").expect("we decode rasn's")[..], &data[..]);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn fixed_integers_match_rasn(a in any::<u32>(), b in any::<u64>()) {
        prop_assert_eq!(rasn::coer::encode(&a).expect("u32"), a.to_be_bytes().to_vec());
        prop_assert_eq!(rasn::coer::encode(&b).expect("u64"), b.to_be_bytes().to_vec());
        let mut buf = BytesMut::new();
        bytes::BufMut::put_u64(&mut buf, b);
        let frozen = buf.freeze();
        prop_assert_eq!(Reader::new(&frozen).read_u64("x").expect("u64"), b);
    }

    #[test]
    fn var_uint_matches_rasn(v in prop_oneof![any::<u64>(), 0u64..300, Just(0u64), Just(u64::MAX)]) {
        let theirs = rasn::coer::encode(&SemiConstrained(Integer::from(v))).expect("rasn encodes");
        let ours = ours_var_uint(v);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.len(), oer::var_uint_len(v));
        let back: SemiConstrained = rasn::coer::decode(&ours).expect("rasn decodes ours");
        prop_assert_eq!(back, SemiConstrained(Integer::from(v)));
    }

    /// Both decoders agree on which length prefixes are acceptable (canonical OER), for arbitrary input.
    #[test]
    fn length_prefix_acceptance_matches_rasn(
        head in prop_oneof![any::<u8>(), 0x80u8..0x84],
        rest in vec(any::<u8>(), 0..400),
    ) {
        let mut input = vec![head];
        input.extend(rest);
        let ours = {
            let b = Bytes::from(input.clone());
            let mut r = Reader::new(&b);
            r.read_var_octet_string("x").map(|s| (s.to_vec(), r.remaining()))
        };
        let theirs = rasn::coer::decode_with_remainder::<OctetString>(&input).map(|(s, rest)| (s.to_vec(), rest.len()));
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "disagreement on {:02x?}: ours {:?}, rasn {:?}", &input[..input.len().min(6)], ours, theirs.map_err(|e| e.to_string())),
        }
    }
}

#[test]
fn rasn_agrees_on_known_prefix_refusals() {
    // Non-minimal forms that oer-utils and this crate refuse; canonical OER refuses them too.
    for raw in [&[0x81u8, 0x05, 1, 2, 3, 4, 5][..], &[0x82, 0x00, 0x01, 9]] {
        let ours = Reader::new(&Bytes::copy_from_slice(raw))
            .read_var_octet_string("x")
            .is_err();
        let theirs = rasn::coer::decode::<OctetString>(raw).is_err();
        assert!(ours, "we accepted {raw:02x?}");
        assert_eq!(ours, theirs, "rasn disagrees on {raw:02x?}");
    }
}
