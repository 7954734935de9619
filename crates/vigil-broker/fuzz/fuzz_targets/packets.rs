//! Arbitrary bytes to every MQTT parser in `vigil_broker::codec`: frame
//! headers and `next_frame` on the input as a stream, and CONNECT, PUBLISH,
//! CONNACK, DISCONNECT, SUBSCRIBE and the MQTT 5 property reader on it as a
//! packet body, as MQTT 3.1.1 and as MQTT 5. Whatever parses must encode and
//! parse back to the same value. A crash is a codec bug: parsers must return
//! errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_broker::codec::fuzzing::exercise(data);
});
