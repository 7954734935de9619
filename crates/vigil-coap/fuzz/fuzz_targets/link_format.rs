//! Any bytes as a `/.well-known/core` answer: links or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match vigil_coap::link::parse(data) {
        Ok(links) => {
            for link in &links {
                let r = link.resource();
                assert!(r.path.starts_with('/'));
            }
        }
        Err(e) => assert!(e.at <= data.len()),
    }
});
