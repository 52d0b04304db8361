//! Known-answer and round-trip tests of the XRPL claim cryptography (`channel_modules::xrp::crypto`).
//!
//! Vectors:
//! * rippled's `channel_verify` documentation: channel `5DB01B7F…`, 1000000 drops, a secp256k1 signature by
//!   the account public key `aB44YfzW…` (the docs redact the seed, so only verification is checked);
//! * xrpl.js `signPaymentChannelClaim` fixture: private key `ACCD3309…`, channel `3E18C05A…`, 10 drops
//!   (`.00001` XRP), public key `02F89EAE…`, exact signature (RFC 6979 makes it reproducible);
//! * ripple-keypairs `api.json`: family seeds → private key, public key, address, and the signature of
//!   "test message", for both key types.

use channel_modules::xrp::crypto::{
    claim_message, decode_address, ChannelId, CryptoError, KeyPair, PublicKey,
    CLAIM_MESSAGE_LEN_BYTES,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DOC_CHANNEL: &str = "5DB01B7FFED6B67E6B0414DED11E051D2EE2B7619CE0EAA6286D67A3A4D5BDB3";
const DOC_SIGNATURE: &str = "304402204EF0AFB78AC23ED1C472E74F4299C0C21F1B21D07EFC0A3838A420F76D783A400220154FB11B6F54320666E4C36CA7F686C16A3A0456800BBC43746F34AF50290064";
const DOC_PUBLIC_KEY_B58: &str = "aB44YfzW24VDEJQ2UuLPV2PvqcPCSoLnL7y5M1EzhdW4LnK5xMS3";
/// The documented PaymentChannelClaim example shows this channel's key in hex (prefix as printed there).
const DOC_PUBLIC_KEY_HEX_PREFIX: &str = "023693F15967AE357D0327974A";

const XRPLJS_CHANNEL: &str = "3E18C05AD40319B809520F1A136370C4075321B285217323396D6FD9EE1E9037";
const XRPLJS_PRIVATE_KEY: &str = "ACCD3309DB14D1A4FC9B1DAE608031F4408C85C73EE05E035B7DC8B25840107A";
const XRPLJS_PUBLIC_KEY: &str =
    "02F89EAEC7667B30F33D0687BBA86C3FE2A08CCA40A9186C5BDE2DAA6FA97A37D8";
const XRPLJS_SIGNATURE: &str = "3045022100B5C54654221F154347679B97AE7791CBEF5E6772A3F894F9C781B8F1B400F89F022021E466D29DC5AEB5DFAFC76E8A88D2E388EBD25A84143B6AC3B647F479CB89B7";

struct SeedVector {
    seed: &'static str,
    private_key: &'static str,
    public_key: &'static str,
    address: &'static str,
    test_message_signature: &'static str,
}

const SEED_VECTORS: &[SeedVector] = &[
    SeedVector {
        seed: "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r",
        private_key: "EDB4C4E046826BD26190D09715FC31F4E6A728204EADD112905B08B14B7F15C4F3",
        public_key: "ED01FA53FA5A7E77798F882ECE20B1ABC00BB358A9E55A202D0D0676BD0CE37A63",
        address: "rLUEXYuLiQptky37CqLcm9USQpPiz5rkpD",
        test_message_signature: "CB199E1BFD4E3DAA105E4832EEDFA36413E1F44205E4EFB9E27E826044C21E3E2E848BBC8195E8959BADF887599B7310AD1B7047EF11B682E0D068F73749750E",
    },
    SeedVector {
        seed: "sp5fghtJtpUorTwvof1NpDXAzNwf5",
        private_key: "00D78B9735C3F26501C7337B8A5727FD53A6EFDBC6AA55984F098488561F985E23",
        public_key: "030D58EB48B4420B1F7B9DF55087E0E29FEF0E8468F9A6825B01CA2C361042D435",
        address: "rU6K7V3Po4snVhBBaU29sesqs2qTQJWDw1",
        test_message_signature: "30440220583A91C95E54E6A651C47BEC22744E0B101E2C4060E7B08F6341657DAD9BC3EE02207D1489C7395DB0188D3A56A977ECBA54B36FA9371B40319655B1B4429E33EF2D",
    },
];

#[test]
fn claim_message_layout_is_clm_channel_drops() -> TestResult {
    let channel: ChannelId = DOC_CHANNEL.parse()?;
    let msg = claim_message(&channel, 1_000_000);
    assert_eq!(msg.len(), CLAIM_MESSAGE_LEN_BYTES);
    assert_eq!(&msg[..4], &[0x43, 0x4C, 0x4D, 0x00]);
    assert_eq!(hex::encode_upper(&msg[4..36]), DOC_CHANNEL);
    assert_eq!(&msg[36..], &1_000_000u64.to_be_bytes());
    assert_eq!(&msg[36..], &[0, 0, 0, 0, 0, 0x0F, 0x42, 0x40]);
    Ok(())
}

#[test]
fn documented_channel_verify_signature_is_accepted() -> TestResult {
    let channel: ChannelId = DOC_CHANNEL.parse()?;
    let key = PublicKey::parse(DOC_PUBLIC_KEY_B58)?;
    assert!(
        key.to_hex().starts_with(DOC_PUBLIC_KEY_HEX_PREFIX),
        "{}",
        key.to_hex()
    );
    let sig = hex::decode(DOC_SIGNATURE)?;
    assert!(key.verify_claim(&channel, 1_000_000, &sig));
    // The same key in hex form verifies too.
    assert!(PublicKey::parse(&key.to_hex())?.verify_claim(&channel, 1_000_000, &sig));
    // Any other amount, channel or signature byte fails.
    assert!(!key.verify_claim(&channel, 1_000_001, &sig));
    assert!(!key.verify_claim(&channel, 999_999, &sig));
    let mut other = channel;
    other.0[31] ^= 1;
    assert!(!key.verify_claim(&other, 1_000_000, &sig));
    let mut bad = sig.clone();
    bad[10] ^= 0x01;
    assert!(!key.verify_claim(&channel, 1_000_000, &bad));
    Ok(())
}

#[test]
fn xrpljs_claim_vector_is_reproduced_exactly() -> TestResult {
    let keys = KeyPair::from_secret(XRPLJS_PRIVATE_KEY)?;
    assert_eq!(keys.public_key().to_hex(), XRPLJS_PUBLIC_KEY);
    let channel: ChannelId = XRPLJS_CHANNEL.parse()?;
    let sig = keys.sign_claim(&channel, 10)?;
    assert_eq!(hex::encode_upper(&sig), XRPLJS_SIGNATURE);
    assert!(PublicKey::parse(XRPLJS_PUBLIC_KEY)?.verify_claim(&channel, 10, &sig));
    assert!(!PublicKey::parse(XRPLJS_PUBLIC_KEY)?.verify_claim(&channel, 11, &sig));
    // The "00"-prefixed form of the same key is accepted.
    let prefixed = KeyPair::from_secret(&format!("00{XRPLJS_PRIVATE_KEY}"))?;
    assert_eq!(prefixed.public_key().to_hex(), XRPLJS_PUBLIC_KEY);
    Ok(())
}

#[test]
fn family_seeds_derive_documented_keys_addresses_and_signatures() -> TestResult {
    for v in SEED_VECTORS {
        let keys = KeyPair::from_seed(v.seed)?;
        assert_eq!(
            keys.private_key_hex(),
            v.private_key,
            "private key of {}",
            v.seed
        );
        assert_eq!(
            keys.public_key().to_hex(),
            v.public_key,
            "public key of {}",
            v.seed
        );
        assert_eq!(
            keys.public_key().address(),
            v.address,
            "address of {}",
            v.seed
        );
        assert_eq!(keys.seed(), Some(v.seed));
        let sig = keys.sign(b"test message")?;
        assert_eq!(
            hex::encode_upper(&sig),
            v.test_message_signature,
            "signature of {}",
            v.seed
        );
        assert!(keys.public_key().verify(b"test message", &sig));
        assert!(!keys.public_key().verify(b"test messagf", &sig));
        // The private key alone (without the seed) gives the same key pair, but no seed.
        let from_private = KeyPair::from_secret(v.private_key)?;
        assert_eq!(from_private.public_key(), keys.public_key());
        assert_eq!(from_private.seed(), None);
        assert!(decode_address(v.address).is_some());
    }
    Ok(())
}

#[test]
fn sign_verify_round_trip_for_both_key_types() -> TestResult {
    let channel: ChannelId = DOC_CHANNEL.parse()?;
    for v in SEED_VECTORS {
        let keys = KeyPair::from_seed(v.seed)?;
        let other = KeyPair::from_seed(
            SEED_VECTORS
                .iter()
                .find(|o| o.seed != v.seed)
                .map(|o| o.seed)
                .unwrap_or(""),
        )?;
        for drops in [1u64, 10, 1_000_000, u64::MAX] {
            let sig = keys.sign_claim(&channel, drops)?;
            assert_eq!(
                sig,
                keys.sign_claim(&channel, drops)?,
                "signatures are deterministic"
            );
            assert!(keys.public_key().verify_claim(&channel, drops, &sig));
            assert!(!keys
                .public_key()
                .verify_claim(&channel, drops.wrapping_sub(1), &sig));
            assert!(!other.public_key().verify_claim(&channel, drops, &sig));
        }
    }
    Ok(())
}

#[test]
fn high_s_secp256k1_signature_is_refused() -> TestResult {
    use k256::ecdsa::Signature;
    let keys = KeyPair::from_secret(XRPLJS_PRIVATE_KEY)?;
    let channel: ChannelId = XRPLJS_CHANNEL.parse()?;
    let low = Signature::from_der(&keys.sign_claim(&channel, 10)?)?;
    assert!(low.normalize_s().is_none(), "we sign with a low S");
    let high = Signature::from_scalars(low.r(), -*low.s())?;
    assert!(high.normalize_s().is_some());
    let key = keys.public_key();
    assert!(key.verify_claim(&channel, 10, low.to_der().as_bytes()));
    assert!(!key.verify_claim(&channel, 10, high.to_der().as_bytes()));
    Ok(())
}

#[test]
fn malformed_inputs_are_refused() {
    assert!(matches!(
        KeyPair::from_secret("zz"),
        Err(CryptoError::InvalidSecret(_))
    ));
    assert!(matches!(
        KeyPair::from_secret("00"),
        Err(CryptoError::InvalidSecret(_))
    ));
    // A seed with one character changed fails its checksum.
    assert!(KeyPair::from_seed("sp5fghtJtpUorTwvof1NpDXAzNwf6").is_err());
    // The order n is not a valid private key.
    assert!(KeyPair::from_secret(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
    )
    .is_err());
    assert!("abc".parse::<ChannelId>().is_err());
    assert!(PublicKey::parse("04".repeat(33).as_str()).is_err());
    assert!(PublicKey::parse("rLUEXYuLiQptky37CqLcm9USQpPiz5rkpD").is_err());
    let key = PublicKey::parse(XRPLJS_PUBLIC_KEY).expect("vector key parses");
    let channel: ChannelId = XRPLJS_CHANNEL.parse().expect("vector channel parses");
    assert!(!key.verify_claim(&channel, 10, &[]));
    assert!(!key.verify_claim(&channel, 10, &[0x30, 0x02, 0x01]));
}

#[test]
fn key_pair_debug_never_shows_the_secret() -> TestResult {
    let keys = KeyPair::from_seed(SEED_VECTORS[1].seed)?;
    let shown = format!("{keys:?}");
    assert!(!shown.contains(SEED_VECTORS[1].seed));
    assert!(!shown.contains(&SEED_VECTORS[1].private_key[2..]));
    assert!(shown.contains("redacted"));
    Ok(())
}
