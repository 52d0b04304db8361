//! The settlement engine's parsers of what a connector and the peer's engine send (`ilp_bridge::settlement`),
//! all on the same input bytes:
//! * `quantity::parse_quantity` (an RFC 38 settle request's Quantity body): an accepted Quantity's wire form
//!   (`Scaled::to_quantity`) parses back to the same value; converted into a module's units
//!   (`to_module_units`) at several module scales, and those units back to the Quantity's scale
//!   (`module_units_to_scale`), nothing is lost or invented: units plus leftover are worth exactly what went in,
//!   each leftover is worth less than one unit (`below_one_unit`), and a second conversion that carries the first
//!   one's leftover adds up too (the property quantity.rs documents);
//! * `Scaled`'s serde form (the decimal-string amounts of the engine's records): what deserializes serializes
//!   and deserializes again to the same value;
//! * `wire::parse` (a message from the peer's engine): a claim or RPC message parsed is the one its own encoder
//!   (`claim_message`, `rpc_request`) writes back; any other type is handed on with the whole message;
//! * `wire::parse_rpc_reply`: a result read is the one `rpc_reply` writes back.
//!
//! Never panics (debug assertions on).
#![no_main]

use channel_modules::amount::ModuleUnits;
use ilp_bridge::settlement::quantity::{
    below_one_unit, module_units_to_scale, parse_quantity, to_module_units, Scaled,
};
use ilp_bridge::settlement::wire::{
    claim_id, claim_message, parse, parse_rpc_reply, rpc_reply, rpc_request, Message,
};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;

fuzz_target!(|data: &[u8]| {
    check_quantity(data);
    check_scaled_serde(data);
    check_message(data);
    check_rpc_reply(data);
});

/// The worth of `a` and `b` compared exactly, at the finer of their scales.
fn same_worth(a: &Scaled, b: &Scaled) -> bool {
    let scale = a.scale.max(b.scale);
    a.upscale(scale) == b.upscale(scale)
}

fn check_quantity(body: &[u8]) {
    let Ok(q) = parse_quantity(body) else {
        return;
    };
    let wire = serde_json::to_vec(&q.to_quantity()).expect("a Quantity serializes");
    assert_eq!(parse_quantity(&wire).ok(), Some(q.clone()));

    // The input's length picks one more scale, so every scale is reached.
    let picked = (body.len() % 256) as u8;
    for module_scale in [
        0,
        9,
        u8::MAX,
        q.scale,
        q.scale.saturating_add(1),
        q.scale.saturating_sub(1),
        picked,
    ] {
        let (units, left) = to_module_units(&Scaled::zero(module_scale), &q, module_scale);
        assert!(
            below_one_unit(&left, module_scale),
            "{q} at {module_scale}: leftover {left}"
        );
        let produced = Scaled::of_module_units(&units, module_scale).add(&left);
        assert!(
            same_worth(&produced, &q),
            "{q} at {module_scale}: {produced}"
        );

        // A second request of the same amount, carrying the first one's leftover.
        let (more, left_after) = to_module_units(&left, &q, module_scale);
        assert!(below_one_unit(&left_after, module_scale));
        let total = ModuleUnits(&units.0 + &more.0);
        let twice = Scaled::new(&q.amount * BigUint::from(2u8), q.scale);
        let produced = Scaled::of_module_units(&total, module_scale).add(&left_after);
        assert!(
            same_worth(&produced, &twice),
            "2 x {q} at {module_scale}: {produced}"
        );

        // The module's units credited back at the Quantity's scale.
        let (credited, back_left) =
            module_units_to_scale(&Scaled::zero(q.scale), &units, module_scale, q.scale);
        assert_eq!(credited.scale, q.scale);
        assert!(below_one_unit(&back_left, q.scale));
        let module_worth = Scaled::of_module_units(&units, module_scale);
        assert!(same_worth(&credited.add(&back_left), &module_worth));
        assert!(
            credited.amount <= q.amount,
            "credited more than was settled"
        );
        if module_scale >= q.scale {
            assert_eq!(credited, q, "exact at a module scale at least as fine");
        }
    }
}

fn check_scaled_serde(data: &[u8]) {
    let Ok(s) = serde_json::from_slice::<Scaled>(data) else {
        return;
    };
    let again = serde_json::to_vec(&s).expect("a Scaled serializes");
    assert_eq!(serde_json::from_slice::<Scaled>(&again).ok(), Some(s));
}

fn check_message(data: &[u8]) {
    let Ok(message) = parse(data) else {
        return;
    };
    match &message {
        Message::Claim(claim) => {
            assert_eq!(parse(&claim_message(claim)).ok().as_ref(), Some(&message));
            let _ = claim_id(claim, "fallback");
        }
        Message::Rpc { method, args } => {
            let again = parse(&rpc_request(method, args.clone())).ok();
            assert_eq!(again.as_ref(), Some(&message));
        }
        Message::Other { kind, body } => {
            assert!(kind != "claim" && kind != "rpc", "{kind:?}");
            assert_eq!(
                body.get("type").and_then(|t| t.as_str()),
                Some(kind.as_str())
            );
        }
    }
}

fn check_rpc_reply(data: &[u8]) {
    if let Ok(result) = parse_rpc_reply(data) {
        let again = parse_rpc_reply(&rpc_reply(&Ok(result.clone()))).ok();
        assert_eq!(again, Some(result));
    }
}
