//! Sparkplug B payloads: never panic; every value read is finite, and the
//! message inspector's view of them is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::sparkplug::decode_sparkplug;
use vigil_core::decode::{decode_message, MAX_METRICS_PER_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_sparkplug(data) {
        assert!(p.metrics.iter().all(|m| m.value.is_none_or(f64::is_finite)));
        let _ = p.to_json();
    }
    let d = decode_message("spBv1.0/g/NDATA/e", data, None);
    assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
    assert!(d.metrics.iter().all(|m| m.value.is_finite()));
});
