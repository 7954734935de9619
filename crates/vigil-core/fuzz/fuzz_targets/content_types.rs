//! Payloads with a content type (JSON, SenML in JSON and CBOR, CBOR): never
//! panic, every metric finite and bounded. The first byte picks the type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::{decode_with, MAX_METRICS_PER_PAYLOAD};

const TYPES: &[&str] = &[
    "application/json",
    "application/senml+json",
    "application/cbor",
    "application/senml+cbor",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let d = decode_with(payload, Some(TYPES[pick as usize % TYPES.len()]));
    assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
    assert!(d.metrics.iter().all(|m| m.value.is_finite()));
});
