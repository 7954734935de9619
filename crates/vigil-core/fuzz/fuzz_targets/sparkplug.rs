//! Sparkplug B payloads: never panic; every value read is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::decode::sparkplug::decode_sparkplug;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_sparkplug(data) {
        assert!(p.metrics.iter().all(|m| m.value.is_none_or(f64::is_finite)));
    }
});
