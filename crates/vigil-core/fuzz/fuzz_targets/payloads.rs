//! Arbitrary bytes as a payload: decoding must never panic, every metric must
//! be finite, and there are never more than MAX_METRICS_PER_PAYLOAD of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::{decode_payload, MAX_METRICS_PER_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_payload(data);
    assert!(decoded.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
    assert!(decoded.metrics.iter().all(|m| m.value.is_finite()));
});
