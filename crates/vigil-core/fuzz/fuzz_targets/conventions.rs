//! The conventions' interpreter: a stream of (topic, payload) pairs taken
//! from the input never panics, and every reading is finite. The first byte
//! picks a topic prefix so that every convention's parser is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::{Conventions, ConventionsConfig, Fact, MessageRef};

const PREFIXES: &[&str] = &[
    "homie/d/", "homie/5/d/", "homeassistant/sensor/n/", "tele/t/", "stat/t/",
    "tasmota/discovery/AA/", "shellies/s/", "s2/", "zigbee2mqtt/", "spBv1.0/g/", "n/", "",
];

fuzz_target!(|data: &[u8]| {
    let mut c = Conventions::new(ConventionsConfig::default());
    // Messages separated by 0xff; in each, topic and payload by 0x00.
    for (k, chunk) in data.split(|b| *b == 0xff).enumerate().take(64) {
        let (topic, payload) = match chunk.iter().position(|b| *b == 0) {
            Some(at) => (&chunk[..at], &chunk[at + 1..]),
            None => (chunk, &[][..]),
        };
        let prefix = PREFIXES[topic.first().copied().unwrap_or(0) as usize % PREFIXES.len()];
        let topic = format!("{prefix}{}", String::from_utf8_lossy(topic.get(1..).unwrap_or(&[])));
        let i = c.interpret(MessageRef { at: k as i64, topic: &topic, payload, retain: k % 2 == 0, client_id: None });
        for (_, f) in &i.facts {
            if let Fact::Metric(m) = f {
                assert!(m.value.is_finite());
            }
        }
    }
});
