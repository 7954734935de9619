//! Zigbee2mqtt (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Zigbee2mqtt messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Zigbee2mqtt {
    prefix: String,
}

impl Zigbee2mqtt {
    pub(super) fn new(prefix: &str) -> Zigbee2mqtt {
        Zigbee2mqtt {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = (&self.prefix, message);
        None
    }
}
