//! SenML packs, in JSON and in CBOR, read as their content types say: never
//! panic, every reading finite, never more than MAX_METRICS_PER_PAYLOAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::{decode_with, MAX_METRICS_PER_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    for content_type in ["application/senml+json", "application/senml+cbor"] {
        let d = decode_with(data, Some(content_type));
        assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
        assert!(d.metrics.iter().all(|m| m.value.is_finite()));
    }
});
