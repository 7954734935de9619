//! Any CBOR item (as `application/cbor` says) and CBOR guessed from the
//! bytes alone: never panic, every reading finite and bounded, and a guess
//! is only ever made for a map or an array; the readable structure of any
//! of them never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::{
    decode_payload, decode_with, structure, PayloadKind, MAX_METRICS_PER_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    let claimed = decode_with(data, Some("application/cbor"));
    let guessed = decode_payload(data);
    for d in [&claimed, &guessed] {
        assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
        assert!(d.metrics.iter().all(|m| m.value.is_finite()));
        let _ = structure(data, d.kind);
    }
    if matches!(guessed.kind, PayloadKind::Cbor) {
        assert!(std::str::from_utf8(data).is_err(), "text is never guessed as CBOR");
    }
});
