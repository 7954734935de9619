//! Helpers shared by the unit tests of this crate.

use crate::convention::{Fact, Interpretation, MessageRef};
use crate::decode::Metric;

/// A small deterministic generator (xorshift64) for randomised tests.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Applies one to `max_edits` random byte insertions, replacements or
/// removals to `p`.
pub(crate) fn mutate(p: &mut Vec<u8>, rng: &mut Rng, max_edits: u64) {
    for _ in 0..=(rng.next() % max_edits) {
        let at = (rng.next() as usize) % (p.len() + 1);
        match rng.next() % 3 {
            0 => p.insert(at, rng.next() as u8),
            1 if at < p.len() => p[at] = rng.next() as u8,
            _ if at < p.len() => {
                p.remove(at);
            }
            _ => {}
        }
    }
}

/// A message on `topic` at time 1.
pub(crate) fn msg<'a>(topic: &'a str, payload: &'a [u8]) -> MessageRef<'a> {
    MessageRef {
        at: 1,
        topic,
        payload,
        retain: false,
        client_id: None,
    }
}

/// The reading named `name` among an interpretation's facts.
pub(crate) fn metric<'a>(i: &'a Interpretation, name: &str) -> Option<&'a Metric> {
    i.facts.iter().find_map(|(_, f)| match f {
        Fact::Metric(m) if m.name == name => Some(m),
        _ => None,
    })
}
