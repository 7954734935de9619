//! Esphome (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Esphome messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Esphome {}

impl Esphome {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = message;
        None
    }
}
